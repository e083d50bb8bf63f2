#include "flopwise/gui/scenario.hpp"

#include <algorithm>
#include <fstream>
#include <sstream>

#include "flopwise/catalog.hpp"
#include "flopwise/comparison.hpp"
#include "flopwise/error.hpp"
#include "flopwise/json_reader.hpp"
#include "flopwise/mixed_pools.hpp"
#include "flopwise/model_import.hpp"
#include "flopwise/pools_report.hpp"

namespace flopwise::gui {

using nlohmann::json;

json to_json(const Scenario& s) {
  return {{"schema", "flopwise.scenario/4"},
          {"pools", s.pools},
          {"pool_links", s.pool_links},
          {"model", s.model},
          {"profiles", s.profiles},
          {"devices", {{"min", s.devices.min}, {"max", s.devices.max}}},
          {"tokens", s.tokens},
          {"global_batch", s.global_batch},
          {"seq_len", s.seq_len},
          {"objective", to_string(s.objective)},
          {"deadline_days", s.deadline_days},
          {"budget", s.budget},
          {"precision", to_string(s.precision)},
          {"fp8_recipe", to_string(s.fp8_recipe)},
          {"adam_moments_in_bf16", s.adam_moments_in_bf16}};
}

TrainingRun run_of(const Scenario& s) {
  TrainingRun run;
  run.global_batch = s.global_batch;
  run.seq_len = s.seq_len;
  run.tokens = s.tokens;
  run.precision = s.precision;
  run.fp8_recipe = s.fp8_recipe;
  run.adam_moments_in_bf16 = s.adam_moments_in_bf16;
  return run;
}

Scenario scenario_from_json(const json& j, const std::string& source) {
  const JsonFields f(j, source);
  const std::string schema = f.text("schema");
  const int version = schema == "flopwise.scenario/1"   ? 1
                      : schema == "flopwise.scenario/2" ? 2
                      : schema == "flopwise.scenario/3" ? 3
                      : schema == "flopwise.scenario/4" ? 4
                                                        : 0;
  if (version == 0) throw f.error("schema", "expected flopwise.scenario/4 (or /3, /2, /1)");
  Scenario s;
  if (version >= 2) {
    s.pools = f.texts("pools");
    s.pool_links = f.texts("pool_links");
  }
  s.model = f.text("model");
  s.profiles = f.texts("profiles");
  if (s.profiles.empty()) throw f.error("profiles", "name at least one profile");
  const JsonFields devices = f.child("devices");
  s.devices.min = devices.integer("min", 1);
  s.devices.max = devices.integer("max", 1);
  s.tokens = f.number("tokens", 0);
  s.global_batch = f.integer("global_batch", 1);
  s.seq_len = f.integer("seq_len", 1);
  s.objective = parse_objective(f.text("objective"), source, "objective");
  s.deadline_days = f.number("deadline_days", 0);
  s.budget = f.number("budget", 0);
  s.precision = parse_precision(f.text("precision"), source, "precision");
  if (version >= 3) s.fp8_recipe = parse_fp8_recipe(f.text("fp8_recipe"), source, "fp8_recipe");
  if (version >= 4) s.adam_moments_in_bf16 = f.boolean("adam_moments_in_bf16");
  validate(run_of(s), source);
  return s;
}

void save_scenario(const Scenario& scenario, const std::string& path) {
  std::ofstream out(path);
  if (!out) throw input_error(path, "", "cannot write scenario file");
  out << to_json(scenario).dump(2) << "\n";
}

Scenario load_scenario(const std::string& path) { return scenario_from_json(load_json_file(path), path); }

namespace {

std::string strategy_row(const MixedPlan& m) { return to_string(m.strategy) + ": " + pools_label(m); }

// The mixed plans over the scenario's pools, one per strategy that meets the objective.
std::vector<ProfileOutcome> pool_outcomes(const Scenario& s, const ModelConfig& model, const TrainingRun& run,
                                          const SearchOptions& options) {
  PoolsSpec spec;
  spec.source = "scenario";
  try {
    add_pool_options(spec, s.pools, s.pool_links);
  } catch (const InputError& e) {
    throw input_error("scenario", "pools", e.what());
  }
  const PoolSet set = resolve_pools(spec, run.precision);
  SearchOptions pooled = options;
  pooled.devices = {1, 1 << 30};  // each pool's own count bounds it
  std::vector<ProfileOutcome> outcomes;
  for (const MixedCandidate& c : plan_pools(model, run, pooled, set).mixed) {
    outcomes.push_back({strategy_row(c.plan), make_mixed_plan(model, run, c, options.objective), ""});
  }
  if (outcomes.empty()) outcomes.push_back({"mixed pools", std::nullopt, "no mixed plan meets the objective"});
  return outcomes;
}

}  // namespace

ScenarioResult run_scenario(const Scenario& s, const std::function<void(int, int)>& progress,
                            const std::atomic<bool>* cancel) {
  const ModelConfig model = resolve_model(s.model);
  const TrainingRun run = run_of(s);
  SearchOptions options;
  options.devices = s.devices;
  options.objective = s.objective;
  options.deadline_days = s.deadline_days;
  options.budget = s.budget;
  options.top_k = 1;
  const int steps = static_cast<int>(s.profiles.size()) + (s.pools.empty() ? 0 : 1);
  const auto profile_progress = [&](int done, int) {
    if (progress) progress(done, steps);
  };
  const Comparison c = compare_profiles(model, run, options, s.profiles, 0, {profile_progress, cancel});
  ScenarioResult result;
  result.best = c.best;
  for (const ProfileResult& e : c.entries) {
    if (!e.searched) break;  // cancelled before this profile
    ProfileOutcome outcome{e.profile.name, std::nullopt, e.unsupported};
    if (e.top()) {
      outcome.plan = make_plan(*e.cost, *e.top(), s.objective);
    } else if (outcome.error.empty()) {
      outcome.error = "no feasible layout";
    }
    result.outcomes.push_back(std::move(outcome));
  }
  const bool finished = static_cast<int>(result.outcomes.size()) == static_cast<int>(s.profiles.size());
  if (s.pools.empty() || !finished || (cancel && *cancel)) return result;
  for (ProfileOutcome& mixed : pool_outcomes(s, model, run, options)) {
    if (mixed.plan && result.best >= 0 && result.outcomes[result.best].plan &&
        mixed.plan->predicted.currency != result.outcomes[result.best].plan->predicted.currency) {
      throw input_error("scenario", "pools", "priced in " + mixed.plan->predicted.currency + ", the profiles in " +
                                                 result.outcomes[result.best].plan->predicted.currency);
    }
    const bool wins = mixed.plan && (result.best < 0 || !result.outcomes[result.best].plan ||
                                     better(mixed.plan->predicted, result.outcomes[result.best].plan->predicted, s.objective));
    result.outcomes.push_back(std::move(mixed));
    if (wins) result.best = static_cast<int>(result.outcomes.size()) - 1;
  }
  if (progress) progress(steps, steps);
  return result;
}

std::vector<size_t> pareto_front(const std::vector<std::pair<double, double>>& points) {
  std::vector<size_t> order(points.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return points[a] < points[b]; });
  // Sweep by x: a point is on the front when its y beats every point with a smaller x.
  std::vector<size_t> front;
  double best_y = std::numeric_limits<double>::infinity();
  for (size_t i : order) {
    if (points[i].second < best_y) {
      front.push_back(i);
      best_y = points[i].second;
    }
  }
  return front;
}

std::string format_money(double amount, const std::string& currency) {
  return format_count(amount) + " " + currency;
}

std::string pools_detail(const Plan& plan) {
  if (!plan.mixed) return "";
  std::ostringstream text;
  print_mixed_detail(text, MixedCandidate{*plan.mixed, plan.predicted});
  return text.str();
}

}  // namespace flopwise::gui
