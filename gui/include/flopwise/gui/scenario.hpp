#pragma once
// What flopwise-studio compares, independent of Qt: scenarios, their results, the Pareto front.
#include <atomic>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "flopwise/plan_builder.hpp"

namespace flopwise::gui {

// One comparison the user sets up: a model on several hardware offers, one training run; with
// pools, also the mixed plans over them (flopwise plan --pool).
struct Scenario {
  std::string model = "ling-plus";  // preset name or path to a HF config.json
  std::vector<std::string> profiles = {"device-A", "device-B", "device-C", "device-D", "device-E"};
  DeviceRange devices{1, 8192};
  double tokens = 1e12;
  int global_batch = 8960;
  int seq_len = 4096;
  Objective objective = Objective::kMinCostDeadline;
  double deadline_days = 30;
  double budget = 0;
  Precision precision = Precision::kBf16;
  Fp8Recipe fp8_recipe = Fp8Recipe::kTensorwise;  // how an fp8 run scales its casts; fp8 runs only
  bool adam_moments_in_bf16 = false;  // TrainingRun's option of the same name; bf16 and fp8 runs only
  std::vector<std::string> pools;       // "[NAME=]PROFILE:COUNT", as --pool takes them
  std::vector<std::string> pool_links;  // "A-B:BANDWIDTH,LATENCY", as --pool-link takes them
  bool operator==(const Scenario&) const = default;
};

// Schema flopwise.scenario/4 (adam_moments_in_bf16 added); /3 files (fp8_recipe added), /2 files
// (pools and pool_links added) and /1 files still read: without the moments option they kept fp32
// moments, without the recipe they priced fp8 as tensorwise, and /1 without pools.
nlohmann::json to_json(const Scenario& scenario);
// Every field is required; errors name the file and the field, the run's rules (training_run's
// validate) included.
Scenario scenario_from_json(const nlohmann::json& json, const std::string& source);
// The training run a scenario describes: its batch, sequence, tokens, precision and fp8 recipe.
TrainingRun run_of(const Scenario& scenario);
void save_scenario(const Scenario& scenario, const std::string& path);
Scenario load_scenario(const std::string& path);

// The best layout of one profile, or why there is none; or the best mixed plan of one strategy
// over the scenario's pools (`profile` then names the strategy and the pools it uses).
struct ProfileOutcome {
  std::string profile;
  std::optional<Plan> plan;
  std::string error;
};

struct ScenarioResult {
  std::vector<ProfileOutcome> outcomes;  // the profiles planned, in the scenario's order
  int best = -1;                         // the winner, as flopwise compare picks it
};

// Plans the comparison (planner's compare_profiles) and, with pools, the mixed plans over them
// (plan_pools), one row per strategy after the profiles; `progress(done, total)` after each
// profile and after the pools, and a set `cancel` stops before the next. Input errors (unknown
// model, bad profile or pool, currencies that differ) throw.
ScenarioResult run_scenario(const Scenario& scenario, const std::function<void(int, int)>& progress = {},
                            const std::atomic<bool>* cancel = nullptr);

// Indices of the points no other point beats on both coordinates (both minimised), sorted by x.
std::vector<size_t> pareto_front(const std::vector<std::pair<double, double>>& points);

// "4.39M RMB", "1.2K USD".
std::string format_money(double amount, const std::string& currency);

// Which pool does what in a mixed plan (ranks, layout, batch share or layers, links, step and
// memory), as `flopwise plan --pool` prints it; "" for a single-pool plan.
std::string pools_detail(const Plan& plan);

}  // namespace flopwise::gui
