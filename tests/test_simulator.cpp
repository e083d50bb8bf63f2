#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "flopwise/error.hpp"
#include "flopwise/schedule.hpp"
#include "flopwise/step_simulation.hpp"
#include "flopwise/topology.hpp"
#include "flopwise/trace.hpp"
#include "test_helpers.hpp"

namespace flopwise {
namespace {

using testing::round_profile_with;

// The round profile with every link so fast that only compute is left.
HardwareProfile compute_only_profile() {
  return testing::round_profile_edited({{"\"100 GB/s\"", "\"1000000 TB/s\""},
                                        {"\"10 GB/s\"", "\"1000000 TB/s\""},
                                        {"\"1 us\"", "\"0 us\""},
                                        {"\"10 us\"", "\"0 us\""}},
                                       "fast.yaml");
}

TrainingRun run_of(int global_batch) { return testing::tiny_run(global_batch); }

}  // namespace

TEST(Topology, FatTreeHasDevicesSwitchesAndRoutes) {
  const Topology t = Topology::build(testing::round_profile(), 32);  // 4 nodes, 16 NICs per leaf
  EXPECT_EQ(t.devices(), 32);
  EXPECT_EQ(t.leaves(), 2);
  EXPECT_EQ(t.route(0, 1).size(), 2u);    // device, node switch, device
  EXPECT_EQ(t.route(0, 8).size(), 2u);    // same leaf: device, leaf, device
  EXPECT_EQ(t.route(0, 16).size(), 4u);   // device, leaf, spine, leaf, device
  double latency = 0;
  for (const RouteHop& hop : t.route(0, 16)) latency += t.graph()[hop.edge].latency;
  EXPECT_NEAR(latency, 10e-6, 1e-15);  // the profile's inter-node latency, end to end
  t.check_connected("round.yaml");
}

TEST(Topology, RailOptimisedLeavesJoinEqualLocalRanks) {
  const HardwareProfile p = parse_hardware_profile(round_profile_with("fat-tree", "rail-optimized"), "rail.yaml");
  const Topology t = Topology::build(p, 32);
  EXPECT_EQ(t.leaves(), 8);               // one rail leaf per local rank, 16 nodes per rail group
  EXPECT_EQ(t.route(0, 8).size(), 2u);    // rail 0 of node 0 to rail 0 of node 1
  EXPECT_EQ(t.route(0, 9).size(), 4u);    // different rails meet at the spine
}

TEST(Topology, MalformedTopologiesAreReported) {
  try {
    parse_hardware_profile(round_profile_with("leaf_ports: 16", "leaf_ports: 12"), "bad.yaml");
    FAIL();
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("bad.yaml: cluster.leaf_ports"), std::string::npos) << e.what();
  }
  const HardwareProfile isolated =
      parse_hardware_profile(round_profile_with("\"10 GB/s\"", "\"0 GB/s\""), "isolated.yaml");
  EXPECT_NO_THROW(Topology::build(isolated, 8).check_connected("isolated.yaml"));
  EXPECT_THROW(Topology::build(isolated, 16).check_connected("isolated.yaml"), InputError);
}

TEST(Schedule, EveryPassRunsOnceForwardBeforeBackward) {
  for (const auto& [pp, vpp, m] : std::vector<std::tuple<int, int, int>>{{4, 1, 8}, {4, 2, 8}, {2, 3, 4}, {4, 1, 2}}) {
    for (int rank = 0; rank < pp; ++rank) {
      const auto ops = pipeline_schedule(pp, vpp, m, rank);
      EXPECT_EQ(ops.size(), static_cast<size_t>(2 * m * vpp));
      std::set<std::tuple<bool, int, int>> seen;
      for (size_t i = 0; i < ops.size(); ++i) {
        EXPECT_TRUE(seen.insert({ops[i].forward, ops[i].micro_batch, ops[i].chunk}).second);
        if (!ops[i].forward) EXPECT_TRUE(seen.count({true, ops[i].micro_batch, ops[i].chunk}));
      }
    }
  }
  // 1F1B: the first stage warms up with pp - 1 forwards, the last alternates from the start.
  const auto first = pipeline_schedule(4, 1, 8, 0);
  EXPECT_TRUE(first[0].forward && first[1].forward && first[2].forward && first[3].forward && !first[4].forward);
  const auto last = pipeline_schedule(4, 1, 8, 3);
  EXPECT_TRUE(last[0].forward && !last[1].forward);
}

TEST(StepSimulation, ComputeOnlyAgreesWithTheAnalyticModel) {
  const CostModel cost(testing::tiny_moe(), run_of(64), compute_only_profile());
  const Layout l{1, 4, 1, 1, 1, 1, Recompute::kSelective, false};
  const StepCost analytic = cost.evaluate(l);
  const SimulationResult sim = simulate_step(cost, l, {});
  EXPECT_NEAR(sim.step_time_s / analytic.step_time_s, 1.0, 0.02);
  EXPECT_EQ(sim.simulated_devices, 4);
}

// TP 2 with Megatron-LM's hidden input-gradient collectives (tp_grad): NCCL's channels, here 27 of
// 108 SMs, cost the GEMMs beside them a quarter of the hidden time, in the simulated step as in
// the analytic one (one source: CostModel::hidden_tp_sm_share).
TEST(StepSimulation, NcclChannelsBesideHiddenTpCollectivesSlowTheStepAsAnalysed) {
  HardwareProfile p = parse_hardware_profile(
      round_profile_with("fp8: true", "fp8: true\n  gemm: {compute_units: 108, tile_rows: 128, tile_cols: 256}"), "p.yaml");
  auto step = [&](int channels) {
    p.node.collective_channels = channels;
    TrainingRun run = run_of(4);
    run.overlap = parse_comm_overlap("tp_grad", "test", "comm_overlap");
    const CostModel cost(testing::tiny_moe(), run, p);
    const Layout l{2, 1, 1, 1, 1, 4, Recompute::kSelective, false};
    return std::pair{simulate_step(cost, l, {}).step_time_s, cost.evaluate(l).step_time_s};
  };
  const auto [simulated_free, analytic_free] = step(0);
  const auto [simulated_held, analytic_held] = step(27);
  EXPECT_GT(analytic_held - analytic_free, 0);
  EXPECT_NEAR(simulated_held - simulated_free, analytic_held - analytic_free, 0.02 * (analytic_held - analytic_free));
}

// DP 2 with the gradient reduction overlapped (grad_reduce): the ring, over a 10 GB/s path,
// outlasts the last micro-batch's backward, which runs beside it on the SMs NCCL's channels (27
// of 108) leave, a quarter of that backward longer, in the simulated step as in the analytic one
// (one source: CostModel::data_parallel_traffic's sm_share).
TEST(StepSimulation, NcclChannelsBesideTheHiddenGradientReductionSlowTheStepAsAnalysed) {
  HardwareProfile p = testing::round_profile_edited(
      {{"fp8: true", "fp8: true\n  gemm: {compute_units: 108, tile_rows: 128, tile_cols: 256}"},
       {"intra_bandwidth: \"100 GB/s\"", "intra_bandwidth: \"10 GB/s\""}},
      "p.yaml");
  const Layout l{1, 1, 1, 1, 2, 1, Recompute::kSelective, false};
  TrainingRun run = run_of(4);
  run.overlap = parse_comm_overlap("grad_reduce", "test", "comm_overlap");
  auto step = [&](int channels) {
    p.node.collective_channels = channels;
    const CostModel cost(testing::tiny_moe(), run, p);
    return std::pair{simulate_step(cost, l, {}).step_time_s, cost.evaluate(l).step_time_s};
  };
  const auto [simulated_free, analytic_free] = step(0);
  const auto [simulated_held, analytic_held] = step(27);
  const CostModel cost(testing::tiny_moe(), run, p);
  const Seconds backward = cost.backward_seconds(stage_contents(testing::tiny_moe(), l)[0], l);
  EXPECT_NEAR(analytic_held - analytic_free, 0.25 * backward, 1e-12);
  EXPECT_NEAR(simulated_held - simulated_free, analytic_held - analytic_free, 0.02 * (analytic_held - analytic_free));
}

// 1F1B with p stages and m micro-batches: every stage idles (p - 1) / (m + p - 1) of the step.
TEST(StepSimulation, OneFOneBBubble) {
  ModelConfig model = testing::tiny_moe();
  model.vocab = 8;  // a negligible LM head keeps the stages equal
  const CostModel cost(model, run_of(16), compute_only_profile());
  const SimulationResult sim = simulate_step(cost, Layout{1, 4, 1, 1, 1, 1, Recompute::kSelective, false}, {});
  const Seconds optimizer = cost.optimizer_seconds(stage_contents(model, Layout{1, 4, 1, 1, 1, 1})[0], Layout{1, 4, 1, 1, 1, 1});
  for (const DeviceTimes& d : sim.devices) {
    const double idle = 1.0 - (d.busy_s - optimizer) / (sim.step_time_s - optimizer);
    // The LM head's 1,024 x 8 GEMMs are memory-bound (they read the 1,024 x 1,024 input) and make
    // the last stage about 1% slower than the others.
    EXPECT_NEAR(idle, 3.0 / (16 + 3), 5e-3) << "rank " << d.rank;
  }
}

// DP = 2 in one node: ring all-reduce of fp32 gradients, 2 (n-1) steps of bytes / n over the
// 100 GB/s NVLink-class path (1 us end to end), once for dense and once for expert parameters.
TEST(StepSimulation, RingAllReduceMatchesHandComputedTime) {
  const CostModel cost(testing::tiny_moe(), run_of(4), testing::round_profile());
  const Layout l{1, 1, 1, 1, 2, 1, Recompute::kSelective, false};
  const double dense = 4 * (2621440.0 + 2048 + 8192 + 1572864) + 2 * 1024000.0 + 1024;
  const double expert = 4 * 8 * 1572864.0;
  auto ring = [](double params) { return 2 * 1 * (4 * params / 2) / 100e9 + 2 * 1e-6; };
  const SimulationResult sim = simulate_step(cost, l, {});
  EXPECT_NEAR(sim.exposed_comm_s.dp, ring(dense) + ring(expert), 1e-9);
}

// With the distributed optimizer, reduce-scatter of gradients then all-gather of weights, each
// (n-1) steps of bytes / n, at the precision's bytes: bf16 runs gather 2-byte weights, fp32 runs
// 4-byte ones (the simulation used to hard-code 2 and so simulated half an fp32 all-gather).
TEST(StepSimulation, ShardedOptimizerMovesThePrecisionsBytes) {
  const HardwareProfile profile = testing::round_profile_edited({{"{bf16: 100, fp8: 200}", "{bf16: 100, fp8: 200, fp32: 50}"}}, "round.yaml");
  const Layout l{1, 1, 1, 1, 2, 1, Recompute::kSelective, true};
  const double dense = 4 * (2621440.0 + 2048 + 8192 + 1572864) + 2 * 1024000.0 + 1024;
  const double expert = 4 * 8 * 1572864.0;
  auto sharded = [](double params, double grad_bytes, double weight_bytes) {
    return (grad_bytes * params / 2) / 100e9 + 1e-6 + (weight_bytes * params / 2) / 100e9 + 1e-6;
  };
  for (const Precision precision : {Precision::kBf16, Precision::kFp32}) {
    TrainingRun run = run_of(4);
    run.precision = precision;
    const CostModel cost(testing::tiny_moe(), run, profile);
    const double weight_bytes = precision == Precision::kFp32 ? 4 : 2;
    const SimulationResult sim = simulate_step(cost, l, {});
    EXPECT_NEAR(sim.exposed_comm_s.dp, sharded(dense, 4, weight_bytes) + sharded(expert, 4, weight_bytes), 1e-9)
        << to_string(precision);
  }
}

TEST(StepSimulation, HalvingSpineBandwidthSlowsOnlyCrossLeafAllToAll) {
  auto ep_seconds = [](const std::string& oversubscription, const Layout& l) {
    const HardwareProfile p = testing::round_profile_edited(
        {{"leaf_ports: 16", "leaf_ports: 8"}, {"oversubscription: 1.0", "oversubscription: " + oversubscription}},
        "spine.yaml");
    const CostModel cost(testing::tiny_moe(), run_of(64), p);
    return simulate_step(cost, l, {}).exposed_comm_s.ep;
  };
  const Layout across{2, 1, 1, 8, 8, 1, Recompute::kSelective, false};  // EP group spans two nodes, two leaves
  const Layout inside{1, 1, 1, 8, 8, 1, Recompute::kSelective, false};  // EP group inside one node
  EXPECT_GT(ep_seconds("4.0", across), 1.3 * ep_seconds("2.0", across));
  EXPECT_NEAR(ep_seconds("4.0", inside), ep_seconds("2.0", inside), 1e-12);
}

// Folded experts: the simulated slice closes every TP, expert-TP and EP group of its ranks, and the
// expert-TP gathers and EP all-to-alls it runs cost what the analytic model says.
TEST(StepSimulation, FoldedExpertLayoutsAgreeWithTheAnalyticModel) {
  ModelConfig model = testing::tiny_moe();
  model.kv_heads = 8;  // lets TP 4 split the KV heads
  const CostModel cost(model, run_of(8), testing::round_profile());
  Layout unfolded{2, 1, 1, 2, 4, 1, Recompute::kSelective, false};
  Layout inside_tp{4, 1, 1, 2, 2, 1, Recompute::kSelective, false};
  inside_tp.etp = 1;  // EP pairs inside each TP group of 4: the slice is one TP group
  Layout across_tp{2, 1, 1, 8, 4, 1, Recompute::kSelective, false};
  across_tp.etp = 1;  // one EP group over all 8 ranks of the stage
  for (const Layout& l : {unfolded, inside_tp, across_tp}) {
    const StepCost analytic = cost.evaluate(l);
    const SimulationResult sim = simulate_step(cost, l, {});
    EXPECT_NEAR(sim.exposed_comm_s.ep / analytic.exposed_comm_s.ep, 1.0, 0.02) << "etp " << l.expert_tp() << " ep " << l.ep;
    EXPECT_NEAR(sim.step_time_s / analytic.step_time_s, 1.0, 0.05);
  }
  EXPECT_EQ(simulate_step(cost, inside_tp, {}).simulated_devices, 4);
  EXPECT_EQ(simulate_step(cost, across_tp, {}).simulated_devices, 8);
  EXPECT_GT(cost.evaluate(unfolded).exposed_comm_s.ep, 0);
}

// Under combined 1F1B the paired passes' all-to-alls run beside compute. On a slow network, where
// every all-to-all outlasts its phase, the simulation hides what the analytic model hides, and
// waits less than without it. It hides a little less (4% here): its all-to-alls cross the network
// beside the pass's own compute and are waited for when they outlast it, where the analytic model
// pairs them only with the partner's phases, and a forward is shorter than its partner's.
TEST(StepSimulation, CombinedOneFOneBHidesAllToAllsLikeTheAnalyticModel) {
  const HardwareProfile pairs = testing::round_profile_edited(
      {{"devices: 8", "devices: 2"}, {"inter_bandwidth: \"10 GB/s\"", "inter_bandwidth: \"2 GB/s\""}}, "pairs.yaml");
  TrainingRun run = run_of(16);
  run.overlap.ep_a2a = true;
  const CostModel combined(testing::tiny_moe(), run, pairs), waited(testing::tiny_moe(), run_of(16), pairs);
  const Layout l{1, 1, 1, 4, 4, 1, Recompute::kSelective, false};
  const SimulationResult sim = simulate_step(combined, l, {});
  const StepCost analytic = combined.evaluate(l);
  EXPECT_LT(sim.exposed_comm_s.ep, simulate_step(waited, l, {}).exposed_comm_s.ep);
  EXPECT_GE(sim.exposed_comm_s.ep, analytic.exposed_comm_s.ep * (1 - 1e-9));
  EXPECT_NEAR(sim.exposed_comm_s.ep / analytic.exposed_comm_s.ep, 1.0, 0.05);
}

// Under Transformer Engine's TP overlap the simulated passes wait for what each collective
// outlasts of the GEMM it is paired with, as the analytic model does (on 5 GB/s links they do).
TEST(StepSimulation, TeTpOverlapWaitsWhatTheAnalyticModelWaits) {
  const HardwareProfile slow = testing::round_profile_edited({{"intra_bandwidth: \"100 GB/s\"", "intra_bandwidth: \"5 GB/s\""}}, "slow.yaml");
  TrainingRun run = run_of(16);
  run.overlap.tp_comm = true;
  run.tp_comm_sms = 0;
  const CostModel cost(testing::tiny_moe(), run, slow);
  const Layout l{2, 1, 1, 1, 1, 1, Recompute::kNone, true};
  const StepCost analytic = cost.evaluate(l);
  ASSERT_GT(analytic.exposed_comm_s.tp, 0);
  EXPECT_NEAR(simulate_step(cost, l, {}).exposed_comm_s.tp / analytic.exposed_comm_s.tp, 1.0, 0.05);
}

// In the trace, a paired pass's all-to-alls run beside its compute ("ep (overlapped)", inside the
// compute span) and what they leave to wait for follows the compute ("ep (after compute)").
TEST(StepSimulation, OverlappedAllToAllsSitBesideAndAfterTheirComputeInTheTrace) {
  const HardwareProfile pairs = testing::round_profile_edited(
      {{"devices: 8", "devices: 2"}, {"inter_bandwidth: \"10 GB/s\"", "inter_bandwidth: \"2 GB/s\""}}, "pairs.yaml");
  TrainingRun run = run_of(16);
  run.overlap.ep_a2a = true;
  const CostModel combined(testing::tiny_moe(), run, pairs);
  const std::string path = ::testing::TempDir() + "/flopwise_ep_trace.json";
  simulate_step(combined, Layout{1, 1, 1, 4, 4, 1, Recompute::kSelective, false}, {path});
  const std::vector<TraceSpan> spans = read_trace(path);
  auto span_named = [&](const std::string& name) {
    for (const TraceSpan& s : spans) {
      if (s.rank == 0 && s.name == name) return s;
    }
    ADD_FAILURE() << "no span " << name;
    return TraceSpan{};
  };
  // The second micro-batch's forward pairs with the first's backward (one stage: every pass pairs
  // but the first forward and the last backward).
  const TraceSpan compute = span_named("F mb1 c0");
  const TraceSpan beside = span_named("F mb1 c0 ep (overlapped)");
  const TraceSpan after = span_named("F mb1 c0 ep (after compute)");
  const double end = compute.start + compute.duration;
  EXPECT_LE(beside.start, compute.start + 1e-9);
  EXPECT_GT(beside.duration, compute.duration);  // the slow network outlasts the compute
  EXPECT_GE(after.start, end - 1e-9);
  EXPECT_GT(after.duration, 0);
}

// The context-parallel ring, sent rank to rank beside the attention in the simulated step, costs
// what the analytic model says (no pipeline, whose sends would share the slow links with it);
// the slice takes the CP pair with its TP group.
TEST(StepSimulation, ContextParallelRingAgreesWithTheAnalyticModel) {
  const HardwareProfile slow = testing::round_profile_edited({{"intra_bandwidth: \"100 GB/s\"", "intra_bandwidth: \"1 GB/s\""}}, "slow.yaml");
  const CostModel cost(testing::tiny_moe(), run_of(8), slow);
  Layout l{1, 1, 1, 1, 2, 1, Recompute::kSelective, false};
  l.cp = 2;
  const StepCost analytic = cost.evaluate(l);
  const SimulationResult sim = simulate_step(cost, l, {});
  EXPECT_GT(analytic.exposed_comm_s.cp, 0);
  EXPECT_NEAR(sim.exposed_comm_s.cp / analytic.exposed_comm_s.cp, 1.0, 0.02);
  EXPECT_NEAR(sim.step_time_s / analytic.step_time_s, 1.0, 0.05);
  EXPECT_EQ(sim.simulated_devices, 2);  // one CP pair
}

// The round profile's node as a full mesh of 20 GB/s links: TP 2 meets over one link, TP 4 over
// three, EP 8 over seven, and DP rings over the links to the node's other members; the simulated
// step pays what the analytic one does, and TP 2 pays far more than on the switch.
TEST(StepSimulation, FullMeshNodeAgreesWithTheAnalyticModel) {
  const HardwareProfile mesh = testing::round_profile_edited(
      {{"intra_bandwidth: \"100 GB/s\"", "fabric: full-mesh\n  peer_bandwidth: \"20 GB/s\""}}, "mesh.yaml");
  ModelConfig model = testing::tiny_moe();
  model.kv_heads = 8;  // lets TP 4 split the KV heads
  const CostModel cost(model, run_of(8), mesh);
  const Layout tp2{2, 1, 1, 1, 4, 1, Recompute::kSelective, false};
  Layout tp4{4, 1, 1, 2, 2, 1, Recompute::kSelective, false};
  tp4.etp = 1;
  const Layout ep8{1, 1, 1, 8, 8, 1, Recompute::kSelective, false};
  for (const Layout& l : {tp2, tp4, ep8}) {
    const StepCost analytic = cost.evaluate(l);
    const SimulationResult sim = simulate_step(cost, l, {});
    EXPECT_NEAR(sim.exposed_comm_s.total() / analytic.exposed_comm_s.total(), 1.0, 0.03) << "tp" << l.tp << " ep" << l.ep;
    EXPECT_NEAR(sim.step_time_s / analytic.step_time_s, 1.0, 0.02) << "tp" << l.tp << " ep" << l.ep;
  }
  const CostModel switched(model, run_of(8), testing::round_profile());
  EXPECT_GT(simulate_step(cost, tp2, {}).exposed_comm_s.tp, 4 * simulate_step(switched, tp2, {}).exposed_comm_s.tp);
}

// The flex dispatcher's sends, fewer across the network than the all-to-all's, cost the simulated
// step what they cost the analytic one.
TEST(StepSimulation, FlexDispatchAgreesWithTheAnalyticModel) {
  const HardwareProfile pairs = testing::round_profile_edited({{"devices: 8", "devices: 2"}}, "pairs.yaml");
  TrainingRun run = run_of(8);
  run.ep_dispatcher = EpDispatcher::kFlex;
  const CostModel flex(testing::tiny_moe(), run, pairs);
  const CostModel all_to_all(testing::tiny_moe(), run_of(8), pairs);
  const Layout l{1, 1, 1, 4, 4, 1, Recompute::kSelective, false};
  const SimulationResult sim = simulate_step(flex, l, {});
  EXPECT_NEAR(sim.exposed_comm_s.ep / flex.evaluate(l).exposed_comm_s.ep, 1.0, 0.02);
  EXPECT_LT(sim.exposed_comm_s.ep, 0.9 * simulate_step(all_to_all, l, {}).exposed_comm_s.ep);
}

TEST(StepSimulation, WritesAChromeTrace) {
  const CostModel cost(testing::tiny_moe(), run_of(8), testing::round_profile());
  const std::string path = ::testing::TempDir() + "/flopwise_trace.json";
  simulate_step(cost, Layout{2, 2, 1, 2, 2, 1, Recompute::kSelective, false}, {path});
  const std::vector<TraceSpan> spans = read_trace(path);
  std::set<std::string> categories;
  for (const TraceSpan& s : spans) {
    categories.insert(s.category);
    EXPECT_GE(s.duration, 0);
  }
  for (const char* c : {"compute", "tp", "ep", "pp", "dp"}) EXPECT_TRUE(categories.count(c)) << c;
  std::ifstream in(path);
  const auto j = nlohmann::json::parse(in);
  EXPECT_EQ(j["traceEvents"][0]["ph"], "X");
}

TEST(StepSimulation, InvalidLayoutIsAnInputError) {
  const CostModel cost(testing::tiny_moe(), run_of(8), testing::round_profile());
  EXPECT_THROW(simulate_step(cost, Layout{3, 1, 1, 1, 1, 1}, {}), InputError);
}

}  // namespace flopwise
