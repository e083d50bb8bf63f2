#pragma once
// How the executor fits a plan (read with the core's plan reader) to this machine, and which
// process groups a rank joins (from the core's rank grid).
#include <string>
#include <vector>

#include "flopwise/error.hpp"
#include "flopwise/executor/mixed_run.hpp"
#include "flopwise/layout.hpp"

namespace flopwise::executor {

// Keeps the architecture's ratios (GQA groups, expert count, top-k) while shrinking width by
// `fraction` and depth to a multiple of pp; the vocabulary becomes the tokenizer's.
ModelConfig scale_model(const ModelConfig& model, double fraction, int vocab, int pp);

// Shrinks a layout to at most `max_ranks` ranks (DP first, then PP, EP and TP), and the global
// batch with it; returns what changed, in words, or "" when nothing did.
std::string fit_layout(Layout& layout, int& global_batch, const ModelConfig& model, int max_ranks);

// What of a planned model and run the executor trains differently (multi-token prediction, local
// attention, a capacity factor), in words joined by "; ", or "".
std::string features_not_run(const ModelConfig& model, const TrainingRun& run);

// Appends `note` to a "; "-joined list of notes.
void add_note(std::string& notes, const std::string& note);

// The members of each group one rank joins, in group order: exactly the core RankGrid's groups,
// which the plan's rank_map describes.
// With a plan over pools (`mixed`), DP and expert-DP stay inside the rank's pool; `cross_pool`
// joins the ranks holding the same shard in every pool (tp, pp and DP place inside the pool), and
// `replica` the ranks that train one copy of the model together (local SGD: the pool; else all).
struct GroupMembers {
  std::vector<int> tp, dp, ep, expert_dp, cross_pool, replica;
};
GroupMembers group_members(const Layout& layout, int rank, const MixedRun* mixed = nullptr);

}  // namespace flopwise::executor
