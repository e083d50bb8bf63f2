#pragma once
// A Plan: the chosen layout with everything needed to run it and to check what was predicted.
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "flopwise/cost_model.hpp"
#include "flopwise/scaling.hpp"
#include "flopwise/search.hpp"
#include "flopwise/step_simulation.hpp"

namespace flopwise {

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

Plan make_plan(const CostModel& cost, const Candidate& candidate, Objective objective);
// Batch and learning rate for the run's compute budget (training FLOPs per token x tokens).
Recommendation recommend(const ModelConfig& model, const TrainingRun& run, const ScalingFit& fit);

nlohmann::json to_json(const Plan& plan);
// Reads a plan written by to_json; every missing or mistyped field is an InputError naming it.
Plan plan_from_json(const nlohmann::json& json, const std::string& source);
// A plan's "layout" object (also in executor traces); errors name `source` and `path`.
Layout layout_from_json(const nlohmann::json& json, const std::string& source, const std::string& path);
void save_plan(const Plan& plan, const std::string& path);
Plan load_plan(const std::string& path);

// Re-ranks the first `k` candidates by simulated step time (SimGrid); the rest keep their order.
void refine(const CostModel& cost, std::vector<Candidate>& candidates, int k, Objective objective);
// A StepCost whose step time and breakdown come from the simulation, the rest from `analytic`.
StepCost simulated_cost(const CostModel& cost, const Layout& layout, const StepCost& analytic,
                        const SimulationResult& simulation);

// The fields scripts read from `plan --json` and each `compare --json` entry.
nlohmann::json summary_json(const std::string& hardware, const Layout& layout, const StepCost& cost);

// The same layout as Megatron-LM (Megatron-Core) pretrain_gpt.py arguments.
std::vector<std::string> megatron_args(const Plan& plan);

}  // namespace flopwise
