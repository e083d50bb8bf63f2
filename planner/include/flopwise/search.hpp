#pragma once
// Layout search: enumerate the degrees, drop what breaks a rule, rank what is left.
#include <array>
#include <optional>
#include <string>
#include <vector>

#include "flopwise/cost_model.hpp"
#include "flopwise/plan.hpp"

namespace flopwise {

struct SearchOptions {
  DeviceRange devices{1, 8192};
  Objective objective = Objective::kMinCost;
  double deadline_days = 0;  // for kMinCostDeadline
  double budget = 0;         // for kMinTimeBudget, in the profile's currency
  int top_k = 5;
  // Dimensions the user fixed; the rest are searched.
  std::optional<int> tp, pp, vpp, ep, dp, micro_batch;
  std::optional<Recompute> recompute;
  // Selective recompute's modules (with recompute fixed to selective); unset: core_attn.
  std::optional<RecomputeModules> recompute_modules;
  std::optional<bool> optimizer_sharding;
  // Layers of the first and last pipeline rank; unset: the search balances them (balance_stages).
  std::optional<int> first_stage_layers, last_stage_layers;
  // The embedding and the loss counted as layers in the split (Megatron-Core's
  // --account-for-embedding/loss-in-pipeline-split); unset with the above: balance_stages decides.
  std::optional<bool> embedding_in_split, loss_in_split;
  // The experts' TP degree; unset: the search tries the attention's tp and 1 (MoE parallel folding).
  // A fixed layout without it runs the experts at the attention's tp, Megatron-Core's default.
  std::optional<int> etp;
  // Context parallel degree; unset: 1, or for long sequences the powers of two that leave each CP
  // rank at least kMinCpShardTokens of a sequence. A fixed layout without it runs cp 1.
  std::optional<int> cp;
};

// The shortest share of a sequence the search gives a CP rank. A search bound, not a rule of
// Megatron's: ring attention hides each step's key-value exchange behind the attention of the
// shard it holds, which shrinks with the square of the shard while the exchange shrinks linearly.
inline constexpr int kMinCpShardTokens = 4096;

void validate(const SearchOptions& options, const std::string& source);

struct Candidate {
  Layout layout;
  StepCost cost;
  std::optional<StepCost> simulated;  // set when the step simulation refined this candidate
  // What ranking uses: the simulation's opinion when there is one.
  const StepCost& best_estimate() const { return simulated ? *simulated : cost; }
};

struct SearchResult {
  std::vector<Candidate> best;  // ranked, best first, at most top_k
  std::array<long long, static_cast<size_t>(Constraint::kCount)> rejected{};
  long long considered = 0;  // layouts enumerated
  long long evaluated = 0;   // layouts that reached the cost model
  // One example rejection per constraint, so an empty result can say why.
  std::array<std::string, static_cast<size_t>(Constraint::kCount)> example{};
};

SearchResult search(const CostModel& model, const SearchOptions& options);

// The layout the options fix completely (every degree, recompute and sharding), or nullopt; its
// pipeline ends are the options' or balanced over the model's `layers`.
std::optional<Layout> fixed_layout(const SearchOptions& options, int layers);
// What a structurally valid layout misses, in words: device memory, the deadline, the budget.
std::vector<std::string> shortfalls(const CostModel& model, const StepCost& cost, const SearchOptions& options);

// What a cost misses of the options' deadline or budget, in words; "" when it meets them.
std::string objective_violation(const StepCost& cost, const SearchOptions& options);

// True when `a` ranks before `b` under `objective`.
bool better(const StepCost& a, const StepCost& b, Objective objective);

}  // namespace flopwise
