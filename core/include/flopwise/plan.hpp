#pragma once
// A Plan (flopwise.plan/1): the chosen layout with everything needed to run it and to check what
// was predicted. Written by the planner, read by the simulator, the executor and the studio.
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "flopwise/layout.hpp"
#include "flopwise/step_cost.hpp"

namespace flopwise {

enum class Objective { kMinCost, kMinTime, kMinCostDeadline, kMinTimeBudget };
std::string to_string(Objective objective);
Objective parse_objective(const std::string& text, const std::string& source, const std::string& field);

// The hardware facts a plan's consumers need without the profile file at hand.
struct PlanHardware {
  std::string profile;  // profile name
  std::string device;
  int devices_per_node = 0;
  double peak_tflops = 0;  // at the plan's precision
  Bytes memory_bytes = 0;
  double price_per_device_hour = 0;
  std::string currency;
  bool operator==(const PlanHardware&) const = default;
};

// Compute-optimal hyper-parameters for the plan's budget, from a scaling fit.
struct Recommendation {
  double compute_flops = 0;
  double batch_tokens = 0;
  int global_batch = 0;  // sequences of the plan's length
  double peak_lr = 0;
  std::string source;
  bool operator==(const Recommendation&) const = default;
};

struct Plan {
  static constexpr const char* kSchema = "flopwise.plan/1";
  ModelConfig model;
  PlanHardware hardware;
  TrainingRun run;
  Layout layout;
  Objective objective = Objective::kMinCost;
  StepCost predicted;                 // analytic cost model
  std::optional<StepCost> simulated;  // step simulation, when the plan was refined or simulated
  Recommendation recommended;
  int devices() const { return layout.devices(); }
};

nlohmann::json to_json(const Plan& plan);
// Reads a plan written by to_json; every missing or mistyped field is an InputError naming it.
Plan plan_from_json(const nlohmann::json& json, const std::string& source);
void save_plan(const Plan& plan, const std::string& path);
Plan load_plan(const std::string& path);

// A plan's "layout" object (also in executor traces); errors name `source` and `path`.
nlohmann::json layout_to_json(const Layout& layout);
Layout layout_from_json(const nlohmann::json& json, const std::string& source, const std::string& path);

// The fields scripts read from `plan --json` and each `compare --json` entry.
nlohmann::json summary_json(const std::string& hardware, const Layout& layout, const StepCost& cost);

}  // namespace flopwise
