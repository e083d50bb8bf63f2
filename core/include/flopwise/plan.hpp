#pragma once
// A Plan (flopwise.plan/2): the chosen layout with everything needed to run it and to check what
// was predicted. Written by the planner, read by the simulator, the executor and the studio.
// Schema 2 added mixed device pools ("strategy", "pools"); schema 1 plans still read.
#include <optional>
#include <string>
#include <vector>

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

// How a plan spreads one training run over pools of different devices.
enum class PoolStrategy {
  kHeteroDp,        // each pool its own layout as DP replicas; batch split by speed; gradients reduced across pools
  kHeteroPipeline,  // pipeline stages on different pools, layers per stage by speed and memory
  kLocalSgd,        // each cluster its own replica; parameters synchronised every H steps (DiLoCo / EDiT)
};
std::string to_string(PoolStrategy strategy);
PoolStrategy parse_pool_strategy(const std::string& text, const std::string& source, const std::string& field);

// One pool's part of a mixed plan. Its ranks are first_rank .. first_rank + devices() - 1, ordered
// inside by its own layout's rank grid.
struct PlanPool {
  std::string name;
  PlanHardware hardware;
  Layout layout;  // DP strategies: the pool's replicas; pipeline: its stages (pp) of the common layout
  int first_rank = 0;
  int sequences = 0;                // global-batch sequences it trains per step (the pipeline: all of them)
  std::vector<int> stage_layers;    // pipeline: transformer layers of each of its stages, in order
  Seconds step_time_s = 0;          // DP strategies: its own step at its share; pipeline: slowest stage per micro-batch
  int devices() const { return layout.devices(); }
  bool operator==(const PlanPool&) const = default;
};

// The link traffic between two consecutive pools crosses.
struct PlanLink {
  std::string a, b;
  BytesPerSecond bandwidth = 0;  // the whole link, one direction
  Seconds latency = 0;
  bool stated = false;           // false: the pools share a cluster network (bandwidth: its share)
  bool operator==(const PlanLink&) const = default;
};

struct MixedPlan {
  PoolStrategy strategy = PoolStrategy::kHeteroDp;
  std::vector<PlanPool> pools;
  std::vector<PlanLink> links;     // pools[i] to pools[i + 1]
  Seconds cross_pool_s = 0;        // per step, what crossing pools adds to the step (local SGD: amortised sync)
  Bytes cross_pool_bytes = 0;      // per step over each link (local SGD: per sync)
  int sync_every_steps = 0;        // local SGD's H; 0 for the others
  Seconds sync_s = 0;              // local SGD: one parameter synchronisation
  std::string optimisation_note;   // what the strategy changes in the optimisation, with its source
  int devices() const;
  bool operator==(const MixedPlan&) const = default;
};

struct Plan {
  static constexpr const char* kSchema = "flopwise.plan/2";
  ModelConfig model;
  PlanHardware hardware;
  TrainingRun run;
  Layout layout;
  Objective objective = Objective::kMinCost;
  StepCost predicted;                 // analytic cost model
  std::optional<StepCost> simulated;  // step simulation, when the plan was refined or simulated
  Recommendation recommended;
  // Set for plans over several pools; then `hardware` and `layout` are the first pool's.
  std::optional<MixedPlan> mixed;
  int devices() const { return mixed ? mixed->devices() : layout.devices(); }
};

nlohmann::json to_json(const Plan& plan);
// Reads a plan written by to_json; every missing or mistyped field is an InputError naming it.
Plan plan_from_json(const nlohmann::json& json, const std::string& source);
void save_plan(const Plan& plan, const std::string& path);
// InputError when `plan` spreads over several pools and `consumer` runs one device type only.
void require_single_pool(const Plan& plan, const std::string& source, const std::string& consumer);
Plan load_plan(const std::string& path);

// A plan's "layout" object (also in executor traces); errors name `source` and `path`.
nlohmann::json layout_to_json(const Layout& layout);
Layout layout_from_json(const nlohmann::json& json, const std::string& source, const std::string& path);

// The fields scripts read from `plan --json` and each `compare --json` entry.
nlohmann::json summary_json(const std::string& hardware, const Layout& layout, const StepCost& cost);

}  // namespace flopwise
