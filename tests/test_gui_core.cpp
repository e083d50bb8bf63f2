// flopwise-studio's logic without a display: scenarios, the Pareto front, money formatting.
#include <gtest/gtest.h>

#include "flopwise/error.hpp"
#include "flopwise/gui/scenario.hpp"
#include "fuzz_mutations.hpp"

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
