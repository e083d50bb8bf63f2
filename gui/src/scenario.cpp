#include "flopwise/gui/scenario.hpp"

#include <algorithm>
#include <fstream>

#include "flopwise/catalog.hpp"
#include "flopwise/comparison.hpp"
#include "flopwise/error.hpp"
#include "flopwise/json_reader.hpp"
#include "flopwise/model_import.hpp"

namespace flopwise::gui {

using nlohmann::json;

json to_json(const Scenario& s) {
  return {{"schema", "flopwise.scenario/1"},
          {"model", s.model},
          {"profiles", s.profiles},
          {"devices", {{"min", s.devices.min}, {"max", s.devices.max}}},
          {"tokens", s.tokens},
          {"global_batch", s.global_batch},
          {"seq_len", s.seq_len},
          {"objective", to_string(s.objective)},
          {"deadline_days", s.deadline_days},
          {"budget", s.budget},
          {"precision", to_string(s.precision)}};
}

Scenario scenario_from_json(const json& j, const std::string& source) {
  const JsonFields f(j, source);
  if (f.text("schema") != "flopwise.scenario/1") throw f.error("schema", "expected flopwise.scenario/1");
  Scenario s;
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
  return s;
}

void save_scenario(const Scenario& scenario, const std::string& path) {
  std::ofstream out(path);
  if (!out) throw input_error(path, "", "cannot write scenario file");
  out << to_json(scenario).dump(2) << "\n";
}

Scenario load_scenario(const std::string& path) { return scenario_from_json(load_json_file(path), path); }

ScenarioResult run_scenario(const Scenario& s, const std::function<void(int, int)>& progress,
                            const std::atomic<bool>* cancel) {
  const ModelConfig model = resolve_model(s.model);
  TrainingRun run;
  run.global_batch = s.global_batch;
  run.seq_len = s.seq_len;
  run.tokens = s.tokens;
  run.precision = s.precision;
  SearchOptions options;
  options.devices = s.devices;
  options.objective = s.objective;
  options.deadline_days = s.deadline_days;
  options.budget = s.budget;
  options.top_k = 1;
  const Comparison c = compare_profiles(model, run, options, s.profiles, 0, {progress, cancel});
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

}  // namespace flopwise::gui
