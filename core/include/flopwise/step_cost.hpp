#pragma once
// What one training step of a layout costs, and the one list of its parts: the plan JSON, the
// CLI's tables and "step time = ..." line and the studio's charts are all made from these lists,
// so a part added here shows up everywhere and the printed parts add up to the total.
#include <array>
#include <string>

#include <nlohmann/json.hpp>

#include "flopwise/goodput.hpp"
#include "flopwise/units.hpp"

namespace flopwise {

struct CommBreakdown {
  Seconds tp = 0, ep = 0, pp = 0, dp = 0, cp = 0;  // cp last: positional initialisers predate it
  Seconds total() const { return tp + cp + ep + pp + dp; }
};

struct MemoryBreakdown {
  Bytes weights = 0, grads = 0, optimizer = 0, activations = 0, buffers = 0;
  Bytes total() const { return weights + grads + optimizer + activations + buffers; }
};

struct StepCost {
  Seconds step_time_s = 0;
  double tokens_per_s = 0;
  double mfu = 0;
  // Expected with failures, restarts and checkpoints (the goodput's ideal_* are failure-free).
  double days = 0;
  double device_hours = 0;
  double cost = 0;
  Goodput goodput;
  std::string currency;
  // Where the step time goes, on the slowest pipeline rank (the parts of step_time_parts()).
  Seconds compute_s = 0;
  CommBreakdown exposed_comm_s;
  Seconds bubble_s = 0;
  Seconds optimizer_s = 0;
  Seconds overhead_s = 0;  // the profile's per-step overhead
  // Memory of the most loaded pipeline rank, and what the device offers after headroom.
  MemoryBreakdown memory_bytes;
  Bytes usable_memory_bytes = 0;
  int busiest_memory_rank = 0;
  int slowest_stage = 0;
  Flops model_flops_per_step = 0;

  bool fits_memory() const { return memory_bytes.total() <= usable_memory_bytes; }
};

// One additive part of the step time. `group` is the JSON object inside "breakdown" that holds
// it ("" for none), `key` its JSON name, `label` what the line and charts call it.
struct StepTimePart {
  const char* group;
  const char* group_label;  // how the line and charts name the group ("" for none)
  const char* key;
  const char* label;
  const char* meaning;
  Seconds StepCost::* direct;       // set for parts held in StepCost itself
  Seconds CommBreakdown::* exposed; // set for exposed communication by kind
  Seconds of(const StepCost& cost) const { return direct ? cost.*direct : cost.exposed_comm_s.*exposed; }
  Seconds& of(StepCost& cost) const { return direct ? cost.*direct : cost.exposed_comm_s.*exposed; }
};
inline constexpr int kStepTimeParts = 9;
const std::array<StepTimePart, kStepTimeParts>& step_time_parts();

// One additive part of the device memory.
struct MemoryPart {
  const char* key;
  const char* meaning;
  Bytes MemoryBreakdown::* field;
};
inline constexpr int kMemoryParts = 5;
const std::array<MemoryPart, kMemoryParts>& memory_parts();

// Sum of the parts; equals step_time_s for every cost the cost model or simulation produced.
Seconds sum_of_parts(const StepCost& cost);
// "step time 12.0 s = compute 9.0 s + exposed comm (tp 1.0 s, ...) + ... + overhead 0 s  [slowest stage 3]"
std::string step_time_line(const StepCost& cost);
// "memory per device (pipeline rank 0): weights ..., ... = total of usable usable"
std::string memory_line(const StepCost& cost);

// The "predicted" / "simulated" object of a plan, and its reader (errors name source and path).
nlohmann::json step_cost_to_json(const StepCost& cost);
StepCost step_cost_from_json(const nlohmann::json& json, const std::string& source, const std::string& path);

}  // namespace flopwise
