#include <gtest/gtest.h>

#include "flopwise/catalog.hpp"
#include "flopwise/error.hpp"
#include "flopwise/mixed_pools.hpp"
#include "flopwise/model_import.hpp"
#include "flopwise/plan_builder.hpp"
#include "test_helpers.hpp"

namespace flopwise {
namespace {

using testing::error_of;

PoolsSpec two_pools(int a, int c) {
  PoolsSpec spec;
  spec.pools = {parse_pool_option("device-A:" + std::to_string(a)), parse_pool_option("device-C:" + std::to_string(c))};
  return spec;
}

// Ling-Lite on 1e11 tokens: device-A alone takes 3.9 days at best on 32 devices, device-C 4.0 days
// (flopwise plan --objective time); together they can take about half.
TrainingRun lite_run() {
  TrainingRun run;
  run.tokens = 1e11;
  return run;
}

SearchOptions deadline(double days) {
  SearchOptions o;
  o.objective = Objective::kMinCostDeadline;
  o.deadline_days = days;
  return o;
}

const MixedCandidate* strategy(const PoolSearchResult& r, PoolStrategy s) {
  for (const MixedCandidate& c : r.mixed) {
    if (c.plan.strategy == s) return &c;
  }
  return nullptr;
}

// Devices A and C: 200 Gb/s NICs at 75% efficiency, non-blocking, 10 us (their profiles).
constexpr double kNicBytesPerS = 200e9 / 8 * 0.75;

}  // namespace

TEST(Pools, OptionsNamePoolsAndLinks) {
  const PoolSpec a = parse_pool_option("device-A:600");
  EXPECT_EQ(a, (PoolSpec{"device-A", "device-A", 600}));
  EXPECT_EQ(parse_pool_option("fast=device-D:256"), (PoolSpec{"fast", "device-D", 256}));
  const std::vector<PoolSpec> pools = {a, parse_pool_option("device-C:400")};
  const PoolLinkSpec link = parse_pool_link_option("A-C:100Gb/s,2ms", pools);
  EXPECT_EQ(link.a, "device-A");
  EXPECT_EQ(link.b, "device-C");
  EXPECT_DOUBLE_EQ(link.bandwidth, 12.5e9);
  EXPECT_DOUBLE_EQ(link.latency, 2e-3);
  EXPECT_EQ(parse_pool_link_option("device-A-device-C:1 Gb/s,1 ms", pools).b, "device-C");
  EXPECT_EQ(parse_exchange_rate_option("USD=7.2"), (std::pair<std::string, double>{"USD", 7.2}));
}

TEST(Pools, BadPoolsAreOneLineErrorsNamingTheField) {
  EXPECT_NE(error_of([] { parse_pool_option("device-A"); }).find("PROFILE:COUNT"), std::string::npos);
  EXPECT_NE(error_of([] { parse_pool_option("device-A:0"); }).find("must be positive"), std::string::npos);
  EXPECT_NE(error_of([] { parse_pool_option("device-A:-4"); }).find("must be positive"), std::string::npos);
  EXPECT_NE(error_of([] { parse_pool_option("device-A:many"); }).find("expected a device count"), std::string::npos);
  const std::vector<PoolSpec> pools = {parse_pool_option("device-A:8"), parse_pool_option("device-C:8")};
  EXPECT_NE(error_of([&] { parse_pool_link_option("A-D:1Gb/s,1ms", pools); }).find("A-D: does not name two"), std::string::npos);
  EXPECT_NE(error_of([&] { parse_pool_link_option("A-C:fast,1ms", pools); }).find("A-C"), std::string::npos);
  EXPECT_NE(error_of([&] { parse_pool_link_option("A-C:1 GHz,1ms", pools); }).find("unknown unit 'GHz'"), std::string::npos);
  EXPECT_NE(error_of([] { parse_exchange_rate_option("USD=-1"); }).find("positive rate"), std::string::npos);
  PoolsSpec same = two_pools(8, 8);
  same.links = {{"device-A", "device-A", 1e9, 0}};
  EXPECT_NE(error_of([&] { validate(same); }).find("links a pool to itself"), std::string::npos);
  PoolsSpec ghost = two_pools(8, 8);
  ghost.links = {{"device-A", "device-Q", 1e9, 0}};
  EXPECT_NE(error_of([&] { validate(ghost); }).find("does not exist"), std::string::npos);
  PoolsSpec twice = two_pools(8, 8);
  twice.pools[1].name = "device-A";
  EXPECT_NE(error_of([&] { validate(twice); }).find("two pools have this name"), std::string::npos);
  PoolsSpec unknown = two_pools(8, 8);
  unknown.pools[1].profile = "device-Z";
  EXPECT_NE(error_of([&] { resolve_pools(unknown, Precision::kBf16); }).find("device-C.profile"), std::string::npos);
}

TEST(Pools, FileListsPoolsLinksAndRates) {
  const PoolsSpec spec = parse_pools_yaml(
      "pools:\n  - {name: A, profile: device-A, devices: 600}\n  - {name: H, profile: a100-80gb, devices: 64}\n"
      "links:\n  - {between: [A, H], bandwidth: 100 Gb/s, latency: 2 ms}\nexchange_rates: {USD: 7.2}\n",
      "pools.yaml");
  ASSERT_EQ(spec.pools.size(), 2u);
  EXPECT_EQ(spec.links.front().b, "H");
  const PoolSet set = resolve_pools(spec, Precision::kBf16);
  EXPECT_EQ(set.currency, "RMB");
  EXPECT_DOUBLE_EQ(set.pools[1].profile.device.price_per_device_hour,
                   resolve_profile("a100-80gb").device.price_per_device_hour * 7.2);
  EXPECT_NE(error_of([] { parse_pools_yaml("pools:\n  - {profile: device-A, devices: 0}\n", "p.yaml"); })
                .find("p.yaml: pools[0].devices"),
            std::string::npos);
  EXPECT_NE(error_of([] { parse_pools_yaml("pools:\n  - {profile: device-A, devices: 8, colour: red}\n", "p.yaml"); })
                .find("pools[0].colour: unknown field"),
            std::string::npos);
  PoolsSpec no_rate = spec;
  no_rate.exchange_rates.clear();
  EXPECT_NE(error_of([&] { resolve_pools(no_rate, Precision::kBf16); }).find("H.currency: prices in USD"),
            std::string::npos);
}

TEST(Pools, CrossPoolReductionByHand) {
  // 1 GB over links of 1 and 2 GB/s, latencies 1 and 2 ms: 1 GB / 1 GB/s + 2 x (1 + 2) ms.
  const std::vector<PlanLink> links = {{"a", "b", 1e9, 1e-3, true}, {"b", "c", 2e9, 2e-3, true}};
  EXPECT_DOUBLE_EQ(cross_pool_all_reduce_seconds(1e9, links), 1.006);
  EXPECT_DOUBLE_EQ(cross_pool_all_reduce_seconds(1e9, {}), 0);
  // A 10 s sync over 1 s steps stays within 5% from H = 200; a 100 s one never does below 500.
  EXPECT_EQ(local_sgd_interval(10, 1), 200);
  EXPECT_EQ(local_sgd_interval(0.1, 1), 10);
  EXPECT_EQ(local_sgd_interval(100, 1), 500);
  // Stated link: 100 Gb/s at the lower inter-node efficiency (0.75); shared: 8 NICs of the smaller pool.
  PoolsSpec spec = two_pools(64, 8);
  const PoolSet shared = resolve_pools(spec, Precision::kBf16);
  const PlanLink s = link_between(shared, shared.pools[0], 64, shared.pools[1], 8);
  EXPECT_DOUBLE_EQ(s.bandwidth, 8 * kNicBytesPerS);
  EXPECT_DOUBLE_EQ(s.latency, 10e-6);
  EXPECT_FALSE(s.stated);
  spec.links = {{"device-A", "device-C", 12.5e9, 2e-3}};
  const PoolSet linked = resolve_pools(spec, Precision::kBf16);
  EXPECT_DOUBLE_EQ(link_between(linked, linked.pools[1], 8, linked.pools[0], 64).bandwidth, 12.5e9 * 0.75);
}

TEST(Pools, MixedPlanMeetsADeadlineNoSinglePoolMeets) {
  const ModelConfig model = resolve_model("ling-lite");
  const PoolSet set = resolve_pools(two_pools(32, 32), Precision::kBf16);
  const PoolSearchResult r = plan_pools(model, lite_run(), deadline(3.5), set);
  EXPECT_EQ(r.best_single, -1) << "neither pool alone makes 3.5 days";
  ASSERT_FALSE(r.mixed.empty());
  EXPECT_LE(r.mixed.front().cost.days, 3.5);
  const MixedCandidate* dp = strategy(r, PoolStrategy::kHeteroDp);
  ASSERT_NE(dp, nullptr);
  // Its step by hand: the slower pool's own step at its share, then the fp32 gradients of every
  // parameter once over the shared network (NICs of the smaller pool) and one latency each way.
  const ParamCounts params = param_counts(model);
  const PlanPool& a = dp->plan.pools[0];
  const PlanPool& c = dp->plan.pools[1];
  EXPECT_EQ(a.sequences + c.sequences, lite_run().global_batch);
  const double cross = 4.0 * (params.total + params.mtp) / (std::min(a.devices(), c.devices()) * kNicBytesPerS) + 2 * 10e-6;
  EXPECT_NEAR(dp->plan.cross_pool_s, cross, 1e-9 * cross);
  EXPECT_NEAR(dp->cost.step_time_s, std::max(a.step_time_s, c.step_time_s) + cross, 1e-9);
  const double tokens_per_step = 1.0 * lite_run().global_batch * lite_run().seq_len;
  const double ideal_days = 1e11 / tokens_per_step * dp->cost.step_time_s / 86400;
  EXPECT_NEAR(dp->cost.goodput.ideal_days, ideal_days, 1e-9 * ideal_days);
  EXPECT_NEAR(dp->cost.goodput.ideal_cost, ideal_days * 24 * (a.devices() * 7.00 + c.devices() * 10.00), 1e-6);
  // The balance the split aims for: neither pool waits long for the other.
  EXPECT_LT(std::abs(a.step_time_s - c.step_time_s) / std::max(a.step_time_s, c.step_time_s), 0.1);
}

TEST(Pools, SingleCheapestPoolWinsOverASlowLink) {
  const ModelConfig model = resolve_model("ling-lite");
  PoolsSpec spec = two_pools(32, 32);
  spec.links = {{"device-A", "device-C", 1e6 / 8, 2e-3}};  // 1 Mb/s
  const PoolSet set = resolve_pools(spec, Precision::kBf16);
  SearchOptions cost;
  cost.objective = Objective::kMinCost;
  const PoolSearchResult r = plan_pools(model, lite_run(), cost, set);
  ASSERT_GE(r.best_single, 0);
  for (const MixedCandidate& m : r.mixed) EXPECT_TRUE(better(r.single[r.best_single].cost, m.cost, Objective::kMinCost));
  const MixedCandidate* dp = strategy(r, PoolStrategy::kHeteroDp);
  ASSERT_NE(dp, nullptr);
  // 4 bytes x every parameter over 1 Mb/s at 75%, plus 2 x 2 ms: hours per step.
  const ParamCounts params = param_counts(model);
  const double cross = 4.0 * (params.total + params.mtp) / (1e6 / 8 * 0.75) + 4e-3;
  EXPECT_NEAR(dp->plan.cross_pool_s, cross, 1e-9 * cross);
  EXPECT_GT(dp->cost.step_time_s, cross);
}

TEST(Pools, MixedPlanJsonRoundTripsAndVersionOnePlansStillRead) {
  const ModelConfig model = resolve_model("ling-lite");
  const PoolSet set = resolve_pools(two_pools(32, 32), Precision::kBf16);
  const PoolSearchResult r = plan_pools(model, lite_run(), deadline(3.5), set);
  ASSERT_FALSE(r.mixed.empty());
  for (const MixedCandidate& c : r.mixed) {
    const Plan plan = make_mixed_plan(model, lite_run(), c, Objective::kMinCostDeadline);
    const nlohmann::json j = to_json(plan);
    EXPECT_EQ(j["schema"], "flopwise.plan/2");
    EXPECT_EQ(j["devices"], c.plan.devices());
    const Plan back = plan_from_json(j, "mixed.json");
    ASSERT_TRUE(back.mixed);
    EXPECT_EQ(*back.mixed, c.plan);
    EXPECT_EQ(to_json(back), j);
    nlohmann::json lost = j;
    lost["pools"][0]["first_rank"] = 5;
    EXPECT_NE(error_of([&] { plan_from_json(lost, "mixed.json"); }).find("mixed.json: pools[0].first_rank"),
              std::string::npos);
  }
  // A plan written before pools existed reads as a single-pool plan.
  const CostModel cost(model, lite_run(), set.pools[0].profile);
  const Layout l{1, 1, 1, 8, 32, 1, Recompute::kNone, true};
  nlohmann::json v1 = to_json(make_plan(cost, Candidate{l, cost.evaluate(l), std::nullopt}, Objective::kMinCost));
  v1["schema"] = "flopwise.plan/1";
  const Plan old = plan_from_json(v1, "v1.json");
  EXPECT_FALSE(old.mixed);
  EXPECT_EQ(old.devices(), 32);
}

}  // namespace flopwise
