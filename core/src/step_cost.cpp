#include "flopwise/step_cost.hpp"

#include "flopwise/json_reader.hpp"

namespace flopwise {

const std::array<StepTimePart, kStepTimeParts>& step_time_parts() {
  static const std::array<StepTimePart, kStepTimeParts> parts = {{
      {"", "", "compute_s", "compute", "forward and backward passes of the slowest pipeline rank", &StepCost::compute_s, nullptr},
      {"exposed_comm_s", "exposed comm", "tp", "tp", "tensor-parallel collectives not hidden behind compute", nullptr, &CommBreakdown::tp},
      {"exposed_comm_s", "exposed comm", "cp", "cp", "context-parallel key-value ring not hidden behind attention", nullptr, &CommBreakdown::cp},
      {"exposed_comm_s", "exposed comm", "ep", "ep", "expert-parallel all-to-all not hidden behind compute", nullptr, &CommBreakdown::ep},
      {"exposed_comm_s", "exposed comm", "pp", "pp", "pipeline sends and receives not hidden behind compute", nullptr, &CommBreakdown::pp},
      {"exposed_comm_s", "exposed comm", "dp", "dp", "data-parallel gradient and weight synchronisation not hidden", nullptr, &CommBreakdown::dp},
      {"", "", "bubble_s", "bubble", "pipeline fill and drain", &StepCost::bubble_s, nullptr},
      {"", "", "optimizer_s", "optimizer", "AdamW update, memory-bound", &StepCost::optimizer_s, nullptr},
      {"", "", "overhead_s", "overhead", "the profile's per-step overhead (data, norms, logging)", &StepCost::overhead_s, nullptr},
  }};
  return parts;
}

const std::array<MemoryPart, kMemoryParts>& memory_parts() {
  static const std::array<MemoryPart, kMemoryParts> parts = {{
      {"weights", "model weights held by the device", &MemoryBreakdown::weights},
      {"grads", "gradients", &MemoryBreakdown::grads},
      {"optimizer", "AdamW state and master weights", &MemoryBreakdown::optimizer},
      {"activations", "activations kept for the backward pass", &MemoryBreakdown::activations},
      {"buffers", "logits, MoE dispatch and communication buffers, runtime reservation", &MemoryBreakdown::buffers},
  }};
  return parts;
}

Seconds sum_of_parts(const StepCost& cost) {
  Seconds total = 0;
  for (const StepTimePart& part : step_time_parts()) total += part.of(cost);
  return total;
}

std::string step_time_line(const StepCost& cost) {
  std::string line = "step time " + format_seconds(cost.step_time_s) + " =";
  const auto& parts = step_time_parts();
  for (size_t i = 0; i < parts.size(); ++i) {
    const std::string group = parts[i].group_label;
    const bool opens = !group.empty() && (i == 0 || group != parts[i - 1].group_label);
    const bool inside = !group.empty() && !opens;
    line += i == 0 ? " " : inside ? ", " : " + ";
    if (opens) line += group + " (";
    line += std::string(parts[i].label) + " " + format_seconds(parts[i].of(cost));
    const bool closes = !group.empty() && (i + 1 == parts.size() || group != parts[i + 1].group_label);
    if (closes) line += ")";
  }
  return line + "  [slowest stage " + std::to_string(cost.slowest_stage) + "]";
}

std::string memory_line(const StepCost& cost) {
  std::string line = "memory per device (pipeline rank " + std::to_string(cost.busiest_memory_rank) + "):";
  const char* separator = " ";
  for (const MemoryPart& part : memory_parts()) {
    line += separator + std::string(part.key) + " " + format_bytes(cost.memory_bytes.*part.field);
    separator = ", ";
  }
  return line + " = " + format_bytes(cost.memory_bytes.total()) + " of " + format_bytes(cost.usable_memory_bytes) +
         " usable";
}

nlohmann::json step_cost_to_json(const StepCost& c) {
  nlohmann::json j = {{"step_time_s", c.step_time_s},   {"tokens_per_s", c.tokens_per_s},
                      {"mfu", c.mfu},                   {"days", c.days},
                      {"device_hours", c.device_hours}, {"cost", c.cost},
                      {"currency", c.currency},         {"model_flops_per_step", c.model_flops_per_step},
                      {"slowest_stage", c.slowest_stage}};
  nlohmann::json breakdown = nlohmann::json::object();
  for (const StepTimePart& part : step_time_parts()) {
    nlohmann::json& holder = *part.group ? breakdown[part.group] : breakdown;
    holder[part.key] = part.of(c);
  }
  j["breakdown"] = breakdown;
  nlohmann::json memory = nlohmann::json::object();
  for (const MemoryPart& part : memory_parts()) memory[part.key] = c.memory_bytes.*part.field;
  memory["total"] = c.memory_bytes.total();
  memory["usable"] = c.usable_memory_bytes;
  memory["rank"] = c.busiest_memory_rank;
  j["memory_bytes"] = memory;
  j["goodput"] = to_json(c.goodput);
  return j;
}

StepCost step_cost_from_json(const nlohmann::json& json, const std::string& source, const std::string& path) {
  const JsonFields r(json, source, path);
  StepCost c;
  c.step_time_s = r.number("step_time_s", 0);
  c.tokens_per_s = r.number("tokens_per_s", 0);
  c.mfu = r.number("mfu", 0);
  c.days = r.number("days", 0);
  c.device_hours = r.number("device_hours", 0);
  c.cost = r.number("cost", 0);
  c.currency = r.text("currency");
  c.model_flops_per_step = r.number("model_flops_per_step", 0);
  c.slowest_stage = r.integer("slowest_stage", 0);
  const JsonFields breakdown = r.child("breakdown");
  for (const StepTimePart& part : step_time_parts()) {
    const JsonFields holder = *part.group ? breakdown.child(part.group) : breakdown;
    // Plans written before profiles carried overheads, or before context parallelism, have none.
    const bool optional = std::string(part.key) == "overhead_s" || std::string(part.key) == "cp";
    part.of(c) = optional && !holder.has(part.key) ? 0.0 : holder.number(part.key, 0);
  }
  const JsonFields memory = r.child("memory_bytes");
  for (const MemoryPart& part : memory_parts()) c.memory_bytes.*part.field = memory.number(part.key, 0);
  c.usable_memory_bytes = memory.number("usable", 0);
  c.busiest_memory_rank = memory.integer("rank", 0);
  if (r.has("goodput")) {
    c.goodput = goodput_from_json(r.get("goodput"), source, (path.empty() ? "" : path + ".") + "goodput");
  } else {  // plans written before goodput was priced: ideal figures, nothing known of failures
    c.goodput.ideal_days = c.days, c.goodput.ideal_device_hours = c.device_hours, c.goodput.ideal_cost = c.cost;
  }
  return c;
}

}  // namespace flopwise
