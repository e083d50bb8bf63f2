#pragma once
// What the executor reads from a plan (flopwise.plan/1) and how it scales it to this machine.
// The executor depends on the plan format only, never on the planner's code.
#include <stdexcept>
#include <string>
#include <vector>

namespace flopwise::executor {

// Bad plan files, options or environments: one line, exit code 2.
class SpecError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct ModelShape {
  std::string name;
  int layers = 0, hidden = 0, heads = 0, kv_heads = 0, head_dim = 0, vocab = 0;
  int experts = 0, top_k = 0, expert_ffn = 0, shared_experts = 0, shared_expert_ffn = 0;
  int dense_ffn = 0, first_dense_layers = 0;
  bool tied_embeddings = false;
  bool is_moe() const { return experts > 0; }
  bool is_dense_layer(int layer) const { return !is_moe() || layer < first_dense_layers; }
  // Model FLOPs per token of forward + backward (MFU numerator): 6 per matmul weight used by a
  // token, plus causal attention scores.
  double training_flops_per_token(int seq_len) const;
};

struct ParallelLayout {
  int tp = 1, pp = 1, vpp = 1, ep = 1, dp = 1, micro_batch = 1;
  bool optimizer_sharding = false;
  int world() const { return tp * pp * dp; }
};

struct RunSpec {
  ModelShape model;
  ParallelLayout layout;
  int global_batch = 0;
  int seq_len = 0;
  std::string source;
};

RunSpec read_plan(const std::string& path);

// Keeps the architecture's ratios (GQA groups, expert count, top-k) while shrinking width by
// `fraction` and depth to a multiple of pp; the vocabulary becomes the tokenizer's.
ModelShape scale_model(const ModelShape& model, double fraction, int vocab, int pp);

// Shrinks a layout to at most `max_ranks` ranks (DP first, then PP, EP and TP), and the global
// batch with it; returns what changed, in words, or "" when nothing did.
std::string fit_layout(ParallelLayout& layout, int& global_batch, const ModelShape& model, int max_ranks);

// Rank order tp-ep-dp-pp, as the plan's rank_map states: TP ranks adjacent, then DP (EP inside
// it), then pipeline stages.
struct RankPosition {
  int tp = 0, dp = 0, pp = 0, ep = 0, expert_dp = 0;
};
RankPosition position_of(const ParallelLayout& layout, int rank);
int rank_at(const ParallelLayout& layout, int tp, int dp, int pp);
// Members of this rank's group of each kind, in group order.
std::vector<int> dp_group(const ParallelLayout& layout, int rank);
std::vector<int> ep_group(const ParallelLayout& layout, int rank);
std::vector<int> expert_dp_group(const ParallelLayout& layout, int rank);
std::vector<int> tp_group(const ParallelLayout& layout, int rank);

}  // namespace flopwise::executor
