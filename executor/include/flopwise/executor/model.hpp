#pragma once
// The Ling (bailing_moe) architecture in LibTorch: one pipeline stage of it.
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#include <torch/torch.h>

#include "flopwise/executor/data.hpp"
#include "flopwise/executor/spec.hpp"
#include "flopwise/executor/trace_recorder.hpp"

namespace flopwise::executor {

// Report section 3.2: auxiliary load-balance and router z-loss coefficients.
inline constexpr double kLoadBalanceCoefficient = 0.015;
inline constexpr double kZLossCoefficient = 1e-4;
inline constexpr double kRopeTheta = 600000.0;

// Megatron-style tensor parallelism without sequence parallelism: attention heads and MLP columns
// are split over the TP group; activations entering a split block are replicated, and the partial
// outputs leaving it are all-reduced.
struct TensorParallel {
  c10::intrusive_ptr<c10d::ProcessGroup> group;  // null when TP = 1
  int size = 1;
  int rank = 0;
  // Identity forward, all-reduce of the gradient backward (Megatron's f).
  torch::Tensor enter(const torch::Tensor& x) const;
  // All-reduce forward, identity backward (Megatron's g).
  torch::Tensor leave(const torch::Tensor& x) const;
};

// What routing needs beyond the hidden states, set by the trainer for each micro-batch.
struct RoutingContext {
  int64_t step = 0;          // global step, for Stochastic Routing Warmup
  int64_t warmup_steps = 0;  // W; 0 disables the warmup
  uint64_t noise_seed = 0;   // fixes eps for this micro-batch, the same however the batch is split
  bool training = true;
  c10::intrusive_ptr<c10d::ProcessGroup> ep_group;  // null when EP = 1
  int ep_size = 1;
  TraceRecorder* trace = nullptr;
  torch::Tensor aux_loss;  // load-balance + z-loss of the MoE layers run so far
};

struct RMSNormImpl : torch::nn::Module {
  explicit RMSNormImpl(int hidden, double eps = 1e-6);
  torch::Tensor forward(const torch::Tensor& x);
  torch::Tensor weight;
  double eps;
};
TORCH_MODULE(RMSNorm);

// Rotary position embedding (rotate-half form) applied to [batch, heads, seq, head_dim].
torch::Tensor apply_rope(const torch::Tensor& x, double theta);

struct AttentionImpl : torch::nn::Module {
  AttentionImpl(const ModelConfig& shape, const TensorParallel& tp);
  torch::Tensor forward(const torch::Tensor& x);  // [batch, seq, hidden]
  TensorParallel tp;
  int heads, kv_heads, head_dim;  // this rank's share
  torch::nn::Linear qkv{nullptr}, out{nullptr};
};
TORCH_MODULE(Attention);

struct SwiGLUImpl : torch::nn::Module {
  SwiGLUImpl(int hidden, int ffn, const TensorParallel& tp);
  torch::Tensor forward(const torch::Tensor& x);  // whole output, all-reduced over TP
  torch::Tensor partial(const torch::Tensor& x);  // this rank's columns' share, input already entered
  TensorParallel tp;
  torch::nn::Linear gate{nullptr}, up{nullptr}, down{nullptr};
};
TORCH_MODULE(SwiGLU);

// Softmax router with top-k renormalised weights, Stochastic Routing Warmup, aux losses.
struct RouterImpl : torch::nn::Module {
  RouterImpl(int hidden, int experts, int top_k);
  struct Choice {
    torch::Tensor experts;  // [tokens, k] int64
    torch::Tensor weights;  // [tokens, k], renormalised over the k chosen
    torch::Tensor aux_loss; // scalar
  };
  Choice forward(const torch::Tensor& x, RoutingContext& context);
  // Folds this step's logit statistics (summed over `group`, if any) into the running mean and std.
  void update_statistics(const c10::intrusive_ptr<c10d::ProcessGroup>& group);
  torch::Tensor weight, running_mean, running_std;
  torch::Tensor step_sum, step_sum_sq, step_count;
  int experts, top_k;
  int layer_id = 0;  // global layer index: keeps warmup noise distinct per layer
};
TORCH_MODULE(Router);

// This rank's share of the routed experts (experts / ep of them), SwiGLU each.
struct ExpertBankImpl : torch::nn::Module {
  ExpertBankImpl(int hidden, int ffn, int local_experts);
  // Rows of `x` grouped by local expert, `counts[j]` rows for expert j.
  torch::Tensor forward(const torch::Tensor& x, const std::vector<int64_t>& counts);
  torch::Tensor gate, up, down;  // [local, hidden, ffn], [local, hidden, ffn], [local, ffn, hidden]
};
TORCH_MODULE(ExpertBank);

struct MoEImpl : torch::nn::Module {
  MoEImpl(const ModelConfig& shape, int ep_size, const TensorParallel& tp);
  torch::Tensor forward(const torch::Tensor& x, RoutingContext& context);  // [tokens, hidden]
  TensorParallel tp;
  Router router{nullptr};
  ExpertBank experts{nullptr};
  SwiGLU shared{nullptr};
  int total_experts, local_experts;
};
TORCH_MODULE(MoE);

struct LayerImpl : torch::nn::Module {
  LayerImpl(const ModelConfig& shape, bool dense, int ep_size, const TensorParallel& tp);
  torch::Tensor forward(const torch::Tensor& x, RoutingContext& context);
  RMSNorm attention_norm{nullptr}, mlp_norm{nullptr};
  Attention attention{nullptr};
  SwiGLU mlp{nullptr};
  MoE moe{nullptr};
};
TORCH_MODULE(Layer);

// One pipeline stage: layers [first_layer, first_layer + count), with the embedding on the first
// stage and the final norm plus NormHead on the last.
struct StageImpl : torch::nn::Module {
  StageImpl(const ModelConfig& shape, int first_layer, int count, bool first, bool last, int ep_size,
            const TensorParallel& tp = {});
  // First stage: int64 tokens [batch, seq]; later stages: hidden [batch, seq, hidden].
  // Last stage returns logits [batch, seq, vocab], others hidden states.
  torch::Tensor forward(const torch::Tensor& input, RoutingContext& context);
  void update_routing_statistics(const c10::intrusive_ptr<c10d::ProcessGroup>& group);
  bool first, last;
  torch::nn::Embedding embedding{nullptr};
  torch::nn::ModuleList layers;
  RMSNorm final_norm{nullptr};
  torch::Tensor head;  // [vocab, hidden], L2-normalised per output row at use (NormHead)
};
TORCH_MODULE(Stage);

// Logits with NormHead: each output row of the head divided by its (detached) L2 norm.
torch::Tensor norm_head_logits(const torch::Tensor& hidden, const torch::Tensor& head);

// Fills every parameter from a generator keyed by (seed, global parameter name, global expert):
// a stage, an EP shard or a whole model built from the same seed hold identical weights.
// TP shards are the matching slices of the full tensors.
void initialize_parameters(StageImpl& stage, int first_layer, int ep_rank, uint64_t seed, const TensorParallel& tp = {});

// Parameters split over TP (the rest is replicated on every TP rank).
bool is_tensor_parallel_parameter(const std::string& name);


// All-to-all with per-rank row counts that autograd can run backwards.
torch::Tensor all_to_all_rows(const torch::Tensor& input, const c10::intrusive_ptr<c10d::ProcessGroup>& group,
                              const std::vector<int64_t>& send_rows, const std::vector<int64_t>& receive_rows);

bool is_expert_parameter(const std::string& name);

// Records every TP all-reduce and EP all-to-all, forward and backward, as a span in `trace`
// (null: none).
void trace_collectives(TraceRecorder* trace);

}  // namespace flopwise::executor
