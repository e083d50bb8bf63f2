// flopwise-studio's logic without a display: scenarios, the Pareto front, money formatting.
#include <gtest/gtest.h>

#include "flopwise/catalog.hpp"
#include "flopwise/cost_model.hpp"
#include "flopwise/error.hpp"
#include "flopwise/gui/axis_scale.hpp"
#include "flopwise/gui/scenario.hpp"
#include "fuzz_mutations.hpp"
#include "test_helpers.hpp"

#include <fstream>

namespace flopwise::gui {

TEST(Scenario, RoundTripsThroughItsFile) {
  Scenario s;
  s.model = "ling-lite";
  s.profiles = {"h100-sxm", "a100-80gb"};
  s.devices = {8, 512};
  s.objective = Objective::kMinTimeBudget;
  s.budget = 2e6;
  const std::string path = ::testing::TempDir() + "/flopwise_gui_scenario.json";
  save_scenario(s, path);
  EXPECT_EQ(load_scenario(path), s);
}

TEST(Scenario, BadFilesNameTheField) {
  nlohmann::json j = to_json(Scenario{});
  j.erase("tokens");
  try {
    scenario_from_json(j, "s.json");
    FAIL();
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("s.json: tokens: missing field"), std::string::npos) << e.what();
  }
  j = to_json(Scenario{});
  j["devices"]["min"] = "few";
  EXPECT_THROW(scenario_from_json(j, "s.json"), InputError);
  j = to_json(Scenario{});
  j["objective"] = "vibes";
  EXPECT_THROW(scenario_from_json(j, "s.json"), InputError);
}

TEST(Scenario, RunsEveryProfileAndReportsProgress) {
  Scenario s;
  s.model = "ling-lite";
  s.profiles = {"device-C", "device-E"};
  s.devices = {8, 256};
  s.objective = Objective::kMinCost;
  int calls = 0;
  const ScenarioResult result = run_scenario(s, [&](int done, int total) {
    ++calls;
    EXPECT_EQ(total, 2);
    EXPECT_EQ(done, calls);
  });
  const auto& outcomes = result.outcomes;
  ASSERT_EQ(outcomes.size(), 2u);
  EXPECT_TRUE(outcomes[0].plan.has_value());
  EXPECT_EQ(calls, 2);
  std::atomic<bool> cancel{true};
  EXPECT_TRUE(run_scenario(s, {}, &cancel).outcomes.empty());
}

// Ling-Lite on 64 H100s at the fastest layout: a run-option scenario's base.
Scenario ling_lite_on_64_h100() {
  Scenario s;
  s.model = "ling-lite";
  s.profiles = {"h100-sxm"};
  s.devices = {64, 64};
  s.objective = Objective::kMinTime;
  return s;
}

// The fp8 recipe travels with the scenario into the run it prices; older files priced tensorwise.
TEST(Scenario, Fp8RecipeRoundTripsAndPricesTheRun) {
  Scenario s = ling_lite_on_64_h100();
  s.precision = Precision::kFp8;
  s.fp8_recipe = Fp8Recipe::kDelayed;
  const std::string path = ::testing::TempDir() + "/flopwise_gui_fp8.json";
  save_scenario(s, path);
  EXPECT_EQ(load_scenario(path), s);
  const ScenarioResult delayed = run_scenario(s);
  ASSERT_TRUE(delayed.outcomes.at(0).plan.has_value());
  EXPECT_EQ(delayed.outcomes[0].plan->run.fp8_recipe, Fp8Recipe::kDelayed);
  // Delayed scaling's casts move 4 bytes a value, tensorwise's 6: the same search finds it faster.
  s.fp8_recipe = Fp8Recipe::kTensorwise;
  const ScenarioResult tensorwise = run_scenario(s);
  ASSERT_TRUE(tensorwise.outcomes.at(0).plan.has_value());
  EXPECT_LT(delayed.outcomes[0].plan->predicted.step_time_s, tensorwise.outcomes[0].plan->predicted.step_time_s);
  s.fp8_recipe = Fp8Recipe::kDelayed;
  nlohmann::json v2 = to_json(s);
  v2["schema"] = "flopwise.scenario/2";
  v2.erase("fp8_recipe");
  EXPECT_EQ(scenario_from_json(v2, "v2.json").fp8_recipe, Fp8Recipe::kTensorwise);
  nlohmann::json bf16 = to_json(s);
  bf16["precision"] = "bf16";
  try {
    scenario_from_json(bf16, "s.json");
    FAIL();
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("s.json: fp8_recipe: applies to fp8 runs only"), std::string::npos) << e.what();
  }
}

// bf16 AdamW moments travel with the scenario into the run (8 bytes of optimizer state a
// parameter, not 12); /3 files kept fp32 moments; an fp32 scenario cannot ask for them.
TEST(Scenario, Bf16MomentsRoundTripAndShrinkTheOptimizer) {
  Scenario s = ling_lite_on_64_h100();
  s.adam_moments_in_bf16 = true;
  const std::string path = ::testing::TempDir() + "/flopwise_gui_moments.json";
  save_scenario(s, path);
  EXPECT_EQ(load_scenario(path), s);
  EXPECT_TRUE(run_of(s).adam_moments_in_bf16);
  const ScenarioResult bf16 = run_scenario(s);
  ASSERT_TRUE(bf16.outcomes.at(0).plan.has_value());
  EXPECT_TRUE(bf16.outcomes[0].plan->run.adam_moments_in_bf16);
  EXPECT_TRUE(bf16.outcomes[0].plan->layout.optimizer_sharding);
  const Plan& plan = *bf16.outcomes[0].plan;
  Scenario fp32_moments = s;
  fp32_moments.adam_moments_in_bf16 = false;
  const CostModel without(plan.model, run_of(fp32_moments), resolve_profile("h100-sxm"));
  EXPECT_NEAR(plan.predicted.memory_bytes.optimizer, without.memory(plan.layout).optimizer * 8 / 12, 1.0);
  nlohmann::json v3 = to_json(s);
  v3["schema"] = "flopwise.scenario/3";
  v3.erase("adam_moments_in_bf16");
  EXPECT_FALSE(scenario_from_json(v3, "v3.json").adam_moments_in_bf16);
  nlohmann::json fp32 = to_json(s);
  fp32["precision"] = "fp32";
  EXPECT_NE(testing::error_of([&] { scenario_from_json(fp32, "s.json"); })
                .find("s.json: adam_moments_in_bf16: applies to bf16 and fp8 runs only"),
            std::string::npos);
}

TEST(Scenario, PoolsRoundTripAndVersionOneFilesStillRead) {
  Scenario s;
  s.pools = {"device-A:600", "slow=device-C:400"};
  s.pool_links = {"A-C:100Gb/s,2ms"};
  const std::string path = ::testing::TempDir() + "/flopwise_gui_pools.json";
  save_scenario(s, path);
  EXPECT_EQ(load_scenario(path), s);
  nlohmann::json v1 = to_json(Scenario{});
  v1["schema"] = "flopwise.scenario/1";
  v1.erase("pools");
  v1.erase("pool_links");
  EXPECT_TRUE(scenario_from_json(v1, "v1.json").pools.empty());
}

// Ling-Lite on 1e11 tokens in 3.5 days: neither 32 device-A nor 32 device-C alone makes it (the
// planner's pool tests), both pools together do, so the mixed row is the winner.
TEST(Scenario, PoolsAddTheirMixedPlansBesideTheProfiles) {
  Scenario s;
  s.model = "ling-lite";
  s.profiles = {"device-A", "device-C"};
  s.devices = {1, 32};
  s.tokens = 1e11;
  s.objective = Objective::kMinCostDeadline;
  s.deadline_days = 3.5;
  s.pools = {"device-A:32", "device-C:32"};
  int last_total = 0;
  const ScenarioResult r = run_scenario(s, [&](int, int total) { last_total = total; });
  EXPECT_EQ(last_total, 3);
  ASSERT_GT(r.outcomes.size(), 2u);
  ASSERT_GE(r.best, 2);
  const ProfileOutcome& best = r.outcomes[r.best];
  ASSERT_TRUE(best.plan && best.plan->mixed);
  EXPECT_LE(best.plan->predicted.days, 3.5);
  EXPECT_EQ(best.profile.rfind(to_string(best.plan->mixed->strategy) + ": device-", 0), 0u) << best.profile;
  EXPECT_NE(pools_detail(*best.plan).find("ranks"), std::string::npos);
  for (const ProfileOutcome& o : r.outcomes) {
    if (o.plan && !o.plan->mixed) EXPECT_TRUE(pools_detail(*o.plan).empty()) << o.profile;
  }
  s.pools = {"device-Q:8"};
  try {
    run_scenario(s);
    FAIL();
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("device-Q"), std::string::npos) << e.what();
  }
}

TEST(ParetoFront, KeepsOnlyUnbeatenPoints) {
  // (days, cost): B is beaten by A on both; D is fastest, A cheapest, C between them.
  const std::vector<std::pair<double, double>> points = {{24, 2.5}, {25, 4.2}, {10, 3.0}, {3.8, 4.4}};
  EXPECT_EQ(pareto_front(points), (std::vector<size_t>{3, 2, 0}));
  EXPECT_TRUE(pareto_front({}).empty());
}

TEST(Formatting, MoneyCarriesItsCurrency) {
  EXPECT_EQ(format_money(4.39e6, "RMB"), "4.39M RMB");
  EXPECT_EQ(format_money(1200, "USD"), "1.2K USD");
}

// Seeded mutations of a scenario file: each loads, or fails with one InputError line naming the
// file; nothing else escapes (the studio shows that line in its status bar).
TEST(Scenario, MutatedFilesLoadOrNameTheFile) {
  std::mt19937 rng(6);
  const nlohmann::json seed = to_json(Scenario{});
  const std::string path = ::testing::TempDir() + "/flopwise_gui_fuzz.scenario.json";
  int rejected = 0;
  for (int i = 0; i < 600; ++i) {
    const std::string text = testing::mutate_json(seed, rng);
    std::ofstream(path) << text;
    try {
      load_scenario(path);
    } catch (const InputError& e) {
      ++rejected;
      const std::string message = e.what();
      ASSERT_EQ(message.rfind(path, 0), 0u) << message;
    } catch (const std::exception& e) {
      FAIL() << "mutation " << i << ": " << e.what() << "\n" << text;
    }
  }
  EXPECT_GT(rejected, 150);
}

}  // namespace flopwise::gui

namespace flopwise::gui {
namespace {

std::vector<std::string> labels(const AxisScale& scale) {
  std::vector<std::string> out;
  for (const AxisTick& tick : scale.ticks) out.push_back(tick.label);
  return out;
}

}  // namespace

TEST(AxisScale, ThousandsSeparatorsGroupByThree) {
  EXPECT_EQ(with_thousands(0), "0");
  EXPECT_EQ(with_thousands(999), "999");
  EXPECT_EQ(with_thousands(1000), "1,000");
  EXPECT_EQ(with_thousands(1792), "1,792");
  EXPECT_EQ(with_thousands(1234567), "1,234,567");
  EXPECT_EQ(with_thousands(-12345), "-12,345");
}

TEST(AxisScale, CountsGetIntegerTicksWithSeparators) {
  // Devices 448..1,792 from zero: 1,792 / 5 = 358 -> step 500.
  const AxisScale devices = axis_scale(0, 1792, AxisQuantity::kCount);
  EXPECT_EQ(labels(devices), (std::vector<std::string>{"0", "500", "1,000", "1,500", "2,000"}));
  EXPECT_EQ(devices.max, 2000);
  // Training steps 0..8: step 2, never "2.0".
  EXPECT_EQ(labels(axis_scale(0, 8, AxisQuantity::kCount)), (std::vector<std::string>{"0", "2", "4", "6", "8"}));
  // Three steps: 3 / 5 = 0.6 would be a fractional step; counts step by 1.
  EXPECT_EQ(labels(axis_scale(0, 3, AxisQuantity::kCount)), (std::vector<std::string>{"0", "1", "2", "3"}));
  // Tokens/s 879.3..1,767.7: 888.4 / 5 = 178 -> step 200 from 800 to 1,800.
  EXPECT_EQ(labels(axis_scale(879.3, 1767.7, AxisQuantity::kCount)),
            (std::vector<std::string>{"800", "1,000", "1,200", "1,400", "1,600", "1,800"}));
}

TEST(AxisScale, MoneyCarriesItsCurrencyAndSuffix) {
  // 0..5.38M: 1.08M -> step 2M.
  EXPECT_EQ(labels(axis_scale(0, 5.38e6, AxisQuantity::kMoney, "RMB")),
            (std::vector<std::string>{"0", "2M RMB", "4M RMB", "6M RMB"}));
  // 0..2.39M: 0.478M -> step 0.5M, one decimal in millions.
  EXPECT_EQ(labels(axis_scale(0, 2.39e6, AxisQuantity::kMoney, "RMB")),
            (std::vector<std::string>{"0", "0.5M RMB", "1.0M RMB", "1.5M RMB", "2.0M RMB", "2.5M RMB"}));
  EXPECT_EQ(labels(axis_scale(0, 45000, AxisQuantity::kMoney, "USD")),
            (std::vector<std::string>{"0", "10K USD", "20K USD", "30K USD", "40K USD", "50K USD"}));
  EXPECT_EQ(labels(axis_scale(0, 900, AxisQuantity::kMoney, "USD")),
            (std::vector<std::string>{"0", "200 USD", "400 USD", "600 USD", "800 USD", "1,000 USD"}));
}

TEST(AxisScale, DecimalsFollowTheStep) {
  EXPECT_EQ(labels(axis_scale(3.5, 6.0, AxisQuantity::kDecimal)),
            (std::vector<std::string>{"3.5", "4.0", "4.5", "5.0", "5.5", "6.0"}));
  EXPECT_EQ(labels(axis_scale(0, 32, AxisQuantity::kDecimal)), (std::vector<std::string>{"0", "10", "20", "30", "40"}));
  EXPECT_EQ(labels(axis_scale(0, 0.12, AxisQuantity::kDecimal)),
            (std::vector<std::string>{"0.00", "0.05", "0.10", "0.15"}));  // 0.024 -> step 0.05
  // One point: a range around it rather than an empty axis.
  const AxisScale one = axis_scale(5, 5, AxisQuantity::kDecimal);
  EXPECT_LE(one.min, 5);
  EXPECT_GT(one.max, 5);
}

}  // namespace flopwise::gui
