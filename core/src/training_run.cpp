#include "flopwise/training_run.hpp"

#include <sstream>
#include <utility>
#include <vector>

#include "flopwise/error.hpp"

namespace flopwise {

std::string to_string(AttentionKernel kernel) { return kernel == AttentionKernel::kUnfused ? "unfused" : "fused"; }

AttentionKernel parse_attention_kernel(const std::string& text, const std::string& source, const std::string& field) {
  if (text == "fused") return AttentionKernel::kFused;
  if (text == "unfused") return AttentionKernel::kUnfused;
  throw input_error(source, field, "unknown attention kernel '" + text + "' (expected fused or unfused)");
}

std::string to_string(EpDispatcher dispatcher) { return dispatcher == EpDispatcher::kFlex ? "flex" : "alltoall"; }

EpDispatcher parse_ep_dispatcher(const std::string& text, const std::string& source, const std::string& field) {
  if (text == "alltoall") return EpDispatcher::kAllToAll;
  if (text == "flex") return EpDispatcher::kFlex;
  throw input_error(source, field, "unknown EP dispatcher '" + text + "' (expected alltoall or flex)");
}

namespace {

constexpr std::pair<Fp8Recipe, const char*> kFp8Recipes[] = {
    {Fp8Recipe::kDelayed, "delayed"}, {Fp8Recipe::kTensorwise, "tensorwise"}, {Fp8Recipe::kMxfp8, "mxfp8"},
    {Fp8Recipe::kBlockwise, "blockwise"}};

}  // namespace

std::string to_string(Fp8Recipe recipe) {
  for (const auto& [r, name] : kFp8Recipes) {
    if (r == recipe) return name;
  }
  return "delayed";
}

Fp8Recipe parse_fp8_recipe(const std::string& text, const std::string& source, const std::string& field) {
  for (const auto& [r, name] : kFp8Recipes) {
    if (text == name) return r;
  }
  throw input_error(source, field, "unknown fp8 recipe '" + text + "' (expected delayed, tensorwise, mxfp8 or blockwise)");
}

namespace {

// One home for the names of the switches, in the order they print.
std::vector<std::pair<const char*, bool CommOverlap::*>> overlap_switches() {
  return {{"grad_reduce", &CommOverlap::grad_reduce},
          {"param_gather", &CommOverlap::param_gather},
          {"tp_grad", &CommOverlap::tp_grad},
          {"tp_comm", &CommOverlap::tp_comm},
          {"p2p", &CommOverlap::p2p},
          {"ep_a2a", &CommOverlap::ep_a2a}};
}

std::vector<std::pair<const char*, bool RouterBalancing::*>> balancing_switches() {
  return {{"aux_loss", &RouterBalancing::aux_loss},
          {"seq_aux_loss", &RouterBalancing::seq_aux_loss},
          {"global_aux_loss", &RouterBalancing::global_aux_loss},
          {"z_loss", &RouterBalancing::z_loss},
          {"expert_bias", &RouterBalancing::expert_bias}};
}

// A set of named switches written as "none" or a comma list of the names of those that are on.
template <typename Set>
std::string switch_names(const std::vector<std::pair<const char*, bool Set::*>>& switches) {
  std::string names;
  for (const auto& [name, flag] : switches) names += (names.empty() ? "" : ", ") + std::string(name);
  return names;
}

template <typename Set>
std::string switch_list(const Set& set, const std::vector<std::pair<const char*, bool Set::*>>& switches) {
  std::string text;
  for (const auto& [name, flag] : switches) {
    if (set.*flag) text += (text.empty() ? "" : ",") + std::string(name);
  }
  return text.empty() ? "none" : text;
}

template <typename Set>
Set parse_switch_list(const std::string& text, const std::vector<std::pair<const char*, bool Set::*>>& switches,
                      const char* what, const std::string& source, const std::string& field) {
  Set set = Set::none();
  if (text == "none") return set;
  if (text.empty()) throw input_error(source, field, std::string("is empty (expected none or a comma list of ") + what + "s)");
  std::stringstream items(text);
  std::string item;
  while (std::getline(items, item, ',')) {
    bool known = false;
    for (const auto& [name, flag] : switches) {
      if (item != name) continue;
      set.*flag = true;
      known = true;
    }
    if (!known) {
      throw input_error(source, field, std::string("unknown ") + what + " '" + item + "' (expected none or a comma list of " +
                                           switch_names(switches) + ")");
    }
  }
  return set;
}

}  // namespace

std::string overlap_names() { return switch_names(overlap_switches()); }

std::string to_string(const CommOverlap& overlap) { return switch_list(overlap, overlap_switches()); }

CommOverlap parse_comm_overlap(const std::string& text, const std::string& source, const std::string& field) {
  return parse_switch_list(text, overlap_switches(), "overlap", source, field);
}

std::string router_balancing_names() { return switch_names(balancing_switches()); }

std::string to_string(const RouterBalancing& balancing) { return switch_list(balancing, balancing_switches()); }

RouterBalancing parse_router_balancing(const std::string& text, const std::string& source, const std::string& field) {
  return parse_switch_list(text, balancing_switches(), "router balancing", source, field);
}

void validate(const TrainingRun& run, const std::string& source) {
  if (run.global_batch <= 0) throw input_error(source, "global_batch", "must be a positive integer");
  if (run.seq_len <= 0) throw input_error(source, "seq_len", "must be a positive integer");
  if (!(run.tokens > 0)) throw input_error(source, "tokens", "must be a positive number of tokens");
  if (!(run.routing_skew >= 1.0)) {
    throw input_error(source, "routing_skew", "must be >= 1 (busiest EP rank's tokens over the mean)");
  }
  if (!(run.moe_capacity_factor == 0 || (run.moe_capacity_factor > 0 && run.moe_capacity_factor <= 1e3))) {
    throw input_error(source, "moe_capacity_factor", "must be 0 (dropless) or a positive factor of an expert's balanced share");
  }
  // Options of Megatron's mixed-precision optimizer (bf16 model weights, fp32 main weights).
  const bool mixed = run.precision == Precision::kBf16 || run.precision == Precision::kFp8;
  for (const auto& [set, field] : {std::pair{run.grad_reduce_in_bf16, "grad_reduce_in_bf16"},
                                   std::pair{run.adam_moments_in_bf16, "adam_moments_in_bf16"}}) {
    if (set && !mixed) {
      throw input_error(source, field, "applies to bf16 and fp8 runs only (this run is " + to_string(run.precision) + ")");
    }
  }
  if (run.fp8_recipe != TrainingRun{}.fp8_recipe && run.precision != Precision::kFp8) {
    throw input_error(source, "fp8_recipe", "applies to fp8 runs only (this run is " + to_string(run.precision) + ")");
  }
  if (run.tp_comm_sms < 0) throw input_error(source, "tp_comm_sms", "must be a count of SMs, 0 or more");
  if (run.flex_dispatcher_sms < 1) throw input_error(source, "flex_dispatcher_sms", "must be a count of SMs, 1 or more");
  if (run.flex_dispatcher_sms != TrainingRun{}.flex_dispatcher_sms && run.ep_dispatcher != EpDispatcher::kFlex) {
    throw input_error(source, "flex_dispatcher_sms", "applies to the flex dispatcher only (this run's is " +
                                                         to_string(run.ep_dispatcher) + ")");
  }
  for (const auto& [p, field] : {std::pair{run.hidden_dropout, "hidden_dropout"},
                                 std::pair{run.attention_dropout, "attention_dropout"}}) {
    if (!(p >= 0.0 && p < 1.0)) throw input_error(source, field, "must be a probability in [0, 1)");
  }
  if (!(run.memory_headroom >= 0.0 && run.memory_headroom < 1.0)) {
    throw input_error(source, "memory_headroom", "must be a fraction in [0, 1)");
  }
}

}  // namespace flopwise
