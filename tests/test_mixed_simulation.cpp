// The step simulation of plans over several device pools: the pools' topologies joined by their
// links, stragglers waiting at the reduction across pools, and agreement with the analytic plan.
#include <gtest/gtest.h>

#include <map>
#include <set>

#include "flopwise/catalog.hpp"
#include "flopwise/mixed_pools.hpp"
#include "flopwise/mixed_simulation.hpp"
#include "flopwise/model_import.hpp"
#include "flopwise/step_simulation.hpp"
#include "flopwise/topology.hpp"
#include "flopwise/trace.hpp"
#include "test_helpers.hpp"

namespace flopwise {
namespace {

// The round profile with links so fast that only compute and the link between pools are left;
// `peak` sets the device's speed.
HardwareProfile compute_only(const std::string& peak, const std::string& name) {
  return testing::round_profile_edited({{"{bf16: 100, fp8: 200}", peak},
                                        {"\"100 GB/s\"", "\"1000000 TB/s\""},
                                        {"\"10 GB/s\"", "\"1000000 TB/s\""},
                                        {"\"1 us\"", "\"0 us\""},
                                        {"\"10 us\"", "\"0 us\""}},
                                       name);
}

PlanPool one_device_pool(const std::string& name, int first_rank, int sequences) {
  PlanPool p;
  p.name = name;
  p.layout = Layout{1, 1, 1, 1, 1, 1, Recompute::kSelective, false};
  p.first_rank = first_rank;
  p.sequences = sequences;
  return p;
}

// Two one-device pools, the slow one first in the chain, 1 GB crossing a 1 GB/s, 2 ms link.
MixedPlan two_pool_plan(PoolStrategy strategy) {
  MixedPlan m;
  m.strategy = strategy;
  m.pools = {one_device_pool("slow", 0, 2), one_device_pool("fast", 1, 2)};
  m.links = {{"slow", "fast", 1e9, 2e-3, true}};
  m.cross_pool_bytes = 1e9;
  if (strategy == PoolStrategy::kLocalSgd) m.sync_every_steps = 10;
  return m;
}

// The reduction streams 64 chunks: the first gateway sends them at the link's rate, the last turns
// each around on arrival, so 1 GB / 1 GB/s, plus the stream's last chunk (1/64 s), plus one 2 ms
// latency each way.
constexpr double kChainSeconds = 1.0 + 1.0 / 64 + 2 * 2e-3;

const PoolTimes& pool(const SimulationResult& r, const std::string& name) {
  for (const PoolTimes& p : r.pools) {
    if (p.name == name) return p;
  }
  throw std::logic_error("no pool " + name);
}

}  // namespace

TEST(Topology, PoolsJoinAtTheirTopSwitches) {
  const HardwareProfile round = testing::round_profile();
  const Topology t = Topology::build_pools({{"a", &round, 16}, {"b", &round, 8}}, {{0, 1, 1e9, 2e-3}});
  ASSERT_EQ(t.devices(), 24);
  EXPECT_EQ(t.graph()[t.device(16)].name, "b/dev16");
  auto latency = [&](const std::vector<RouteHop>& route) {
    double s = 0;
    for (const RouteHop& hop : route) s += t.graph()[hop.edge].latency;
    return s;
  };
  auto crosses_link = [&](const std::vector<RouteHop>& route) {
    for (const RouteHop& hop : route) {
      if (t.graph()[hop.edge].bandwidth == 1e9) return true;
    }
    return false;
  };
  // Inside a node: NVLink class, 1 us; between pools: NIC, leaf, spine, the link, and back down.
  EXPECT_NEAR(latency(t.route(0, 1)), 1e-6, 1e-15);
  EXPECT_FALSE(crosses_link(t.route(0, 8)));
  EXPECT_TRUE(crosses_link(t.route(0, 16)));
  EXPECT_NEAR(latency(t.route(0, 16)), 10e-6 + 2e-3, 1e-15);
  const auto gateways = t.route_between(t.gateway(0), t.gateway(1));
  EXPECT_EQ(gateways.size(), 3u);
  EXPECT_TRUE(crosses_link(gateways));
  EXPECT_NO_THROW(t.check_connected("pools"));
}

// Hetero DP: the fast pool finishes its own step, waits for the slow one at the reduction, and
// then both wait for the stream over the link; the step is the slow pool's plus the reduction.
TEST(MixedSimulation, HeteroDpStragglerAndTheLinkByHand) {
  const HardwareProfile slow = compute_only("{bf16: 50, fp8: 100}", "slow.yaml");
  const HardwareProfile fast = compute_only("{bf16: 100, fp8: 200}", "fast.yaml");
  const CostModel slow_cost(testing::tiny_moe(), testing::tiny_run(2), slow);
  const CostModel fast_cost(testing::tiny_moe(), testing::tiny_run(2), fast);
  const MixedPlan m = two_pool_plan(PoolStrategy::kHeteroDp);
  const SimulationResult r = simulate_mixed_step(m, {&slow_cost, &fast_cost}, {});
  const Layout& l = m.pools[0].layout;
  ASSERT_EQ(r.pools.size(), 2u);
  // Each pool's own step is its own analytic step: the pools do not slow each other down.
  EXPECT_NEAR(pool(r, "slow").step_time_s / slow_cost.evaluate(l).step_time_s, 1.0, 0.02);
  EXPECT_NEAR(pool(r, "fast").step_time_s / fast_cost.evaluate(l).step_time_s, 1.0, 0.02);
  EXPECT_GT(pool(r, "slow").step_time_s, 1.5 * pool(r, "fast").step_time_s);
  EXPECT_NEAR(r.cross_pool_s, kChainSeconds, 1e-6);
  const Seconds optimizer = slow_cost.optimizer_seconds(stage_contents(slow_cost.model(), l)[0], l);
  EXPECT_NEAR(r.step_time_s, pool(r, "slow").step_time_s + kChainSeconds, 1e-6 + optimizer);
  // The fast device's wait at the reduction: the slow pool's lead plus the reduction itself.
  const DeviceTimes& fast_device = r.devices.at(1);
  ASSERT_EQ(fast_device.rank, 1);
  EXPECT_NEAR(fast_device.cross_pool_s,
              (pool(r, "slow").step_time_s - pool(r, "fast").step_time_s) + kChainSeconds, 2 * optimizer + 1e-6);
}

// The timeline shows the straggler's wait on the fast device and each gateway on a lane after the
// devices: the slow pool's gateway (first in the chain) is busy for the stream's whole length.
TEST(MixedSimulation, TraceShowsTheWaitAndTheGateways) {
  const HardwareProfile slow = compute_only("{bf16: 50, fp8: 100}", "slow.yaml");
  const HardwareProfile fast = compute_only("{bf16: 100, fp8: 200}", "fast.yaml");
  const CostModel slow_cost(testing::tiny_moe(), testing::tiny_run(2), slow);
  const CostModel fast_cost(testing::tiny_moe(), testing::tiny_run(2), fast);
  const std::string path = ::testing::TempDir() + "/flopwise_mixed_trace.json";
  simulate_mixed_step(two_pool_plan(PoolStrategy::kHeteroDp), {&slow_cost, &fast_cost}, {path});
  std::map<int, double> cross;  // lane -> seconds in cross-pool spans
  for (const TraceSpan& s : read_trace(path)) {
    const bool crossing = s.name.find("cross-pool") != std::string::npos || s.name.find("across pools") != std::string::npos;
    if (crossing) cross[s.rank] += s.duration;
  }
  ASSERT_TRUE(cross.count(1) && cross.count(2) && cross.count(3)) << "fast device 1, gateways on lanes 2 and 3";
  EXPECT_NEAR(cross[2], kChainSeconds, 1e-6);  // the slow pool arrives last: its gateway's span is the stream
  EXPECT_GT(cross[3], cross[2]);               // the fast pool's gateway also waited for the slow pool
  EXPECT_GT(cross[1], cross[2]);
}

// Local SGD: no reduction inside the step; one parameter sync over the link, amortised over H.
TEST(MixedSimulation, LocalSgdAmortisesOneSyncOverItsInterval) {
  const HardwareProfile slow = compute_only("{bf16: 50, fp8: 100}", "slow.yaml");
  const HardwareProfile fast = compute_only("{bf16: 100, fp8: 200}", "fast.yaml");
  const CostModel slow_cost(testing::tiny_moe(), testing::tiny_run(2), slow);
  const CostModel fast_cost(testing::tiny_moe(), testing::tiny_run(2), fast);
  const SimulationResult r = simulate_mixed_step(two_pool_plan(PoolStrategy::kLocalSgd), {&slow_cost, &fast_cost}, {});
  EXPECT_NEAR(r.sync_s, kChainSeconds, 1e-6);
  EXPECT_EQ(r.sync_every_steps, 10);
  EXPECT_NEAR(r.cross_pool_s, kChainSeconds / 10, 1e-7);
  EXPECT_NEAR(r.step_time_s, pool(r, "slow").step_time_s + kChainSeconds / 10, 1e-6);
  for (const DeviceTimes& d : r.devices) EXPECT_EQ(d.cross_pool_s, 0) << "rank " << d.rank;
}

// The planner's mixed plans of Ling-Lite on 32 device-A + 32 device-C, simulated: within 15% of
// their analytic step for every strategy (the bound).
TEST(MixedSimulation, AgreesWithTheAnalyticPlans) {
  const ModelConfig model = resolve_model("ling-lite");
  TrainingRun run;
  run.tokens = 1e11;
  SearchOptions fastest;
  fastest.objective = Objective::kMinTime;
  PoolsSpec spec;
  spec.pools = {parse_pool_option("device-A:32"), parse_pool_option("device-C:32")};
  std::vector<MixedCandidate> plans = plan_pools(model, run, fastest, resolve_pools(spec, Precision::kBf16)).mixed;
  // A slow link between the clusters brings in local SGD.
  spec.links = {parse_pool_link_option("A-C:10Gb/s,2ms", spec.pools)};
  for (MixedCandidate& c : plan_pools(model, run, fastest, resolve_pools(spec, Precision::kBf16)).mixed) {
    if (c.plan.strategy == PoolStrategy::kLocalSgd) plans.push_back(std::move(c));
  }
  std::set<PoolStrategy> seen;
  for (const MixedCandidate& c : plans) {
    const Plan plan = make_mixed_plan(model, run, c, Objective::kMinTime);
    const MixedSimulation sim = simulate_mixed_plan(plan, "lite.json", "");
    seen.insert(c.plan.strategy);
    EXPECT_NEAR(sim.simulated.step_time_s / plan.predicted.step_time_s, 1.0, 0.15) << to_string(c.plan.strategy);
    EXPECT_EQ(sim.result.pools.size(), c.plan.pools.size());
    if (c.plan.strategy == PoolStrategy::kLocalSgd) {
      EXPECT_NEAR(sim.result.sync_s / c.plan.sync_s, 1.0, 0.05);
    }
    // The simulated totals follow the simulated step.
    EXPECT_NEAR(sim.simulated.days / plan.predicted.days,
                sim.simulated.step_time_s / plan.predicted.step_time_s, 0.01);
  }
  EXPECT_EQ(seen.size(), 3u);
}

}  // namespace flopwise
