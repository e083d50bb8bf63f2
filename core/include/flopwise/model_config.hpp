#pragma once
// The shape of a decoder-only transformer, dense or Mixture-of-Experts, and what it costs per token.
#include <algorithm>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "flopwise/units.hpp"

namespace flopwise {

struct ModelConfig {
  std::string name;
  std::string family;  // HF model_type it came from ("bailing_moe", "llama", ...) or "preset"
  int layers = 0;
  int hidden = 0;
  int heads = 0;
  int kv_heads = 0;
  int head_dim = 0;  // GQA: per-head dim of Q, K and V; MLA: the non-rotary part of Q and K
  int vocab = 0;
  int seq_len = 4096;  // default training sequence length
  bool qkv_bias = false;
  // Multi-head latent attention (DeepSeek-V2/V3); kv_lora_rank == 0 means plain GQA.
  int q_lora_rank = 0;
  int kv_lora_rank = 0;
  int rope_head_dim = 0;
  int v_head_dim = 0;
  // Mixture of experts; routed_experts == 0 means a dense model.
  int routed_experts = 0;
  int top_k = 0;
  int expert_ffn = 0;
  int shared_experts = 0;
  int shared_expert_ffn = 0;
  // Dense MLP, used by dense models and by the first `first_dense_layers` layers of an MoE.
  int dense_ffn = 0;
  int first_dense_layers = 0;
  // After the first dense layers, layer i is MoE when (i + 1) % moe_layer_step == 0 (Llama 4's
  // interleave_moe_layer_step; 1: every layer), the others dense.
  int moe_layer_step = 1;
  bool tied_embeddings = false;
  // Learned absolute positions (GPT-2/3, Megatron-LM's default --position-embedding-type) instead
  // of rotary embeddings on the queries and keys, which every family flopwise imports uses.
  bool learned_positions = false;
  // Local attention (Mistral's and Gemma's sliding windows, gpt-oss's banded layers): in
  // `windowed_layers` of the layers a token sees at most the last `attention_window` tokens;
  // 0 / 0 is full causal attention everywhere.
  int attention_window = 0;
  int windowed_layers = 0;
  // Chunked attention (Llama 4): in `chunked_layers` a token sees only the earlier tokens of its
  // own chunk of `attention_chunk` tokens.
  int attention_chunk = 0;
  int chunked_layers = 0;
  // What of the checkpoint is not modelled (a multimodal config's vision tower), for the reader.
  std::string omitted;
  // Multi-token prediction (DeepSeek-V3, section 2.2; also GLM-4.5 and Ling 2.0): per depth one
  // more transformer layer of the model's last kind, fed through a 2h x h projection of the
  // normed hidden state and next token's embedding, with the shared LM head run again.
  int mtp_layers = 0;
  // Per layer, the RMSNorm weights of QK-norm (Qwen3, Gemma 3: per head, 2 x head_dim; OLMoE:
  // over the whole query and key projections). Counted in the parameters; the norms' time and
  // kept inputs are CostModel::qk_norm_work's.
  int qk_norm_weights = 0;

  bool is_moe() const { return routed_experts > 0; }
  bool is_mla() const { return kv_lora_rank > 0; }
  // MoE layers among layers [first, first + count).
  int moe_layers_in(int first, int count) const {
    if (!is_moe() || count <= 0) return 0;
    const int from = std::max(first, first_dense_layers), to = first + count;
    return from >= to ? 0 : to / moe_layer_step - from / moe_layer_step;
  }
  int moe_layers() const { return moe_layers_in(0, layers); }
  int dense_layers() const { return layers - moe_layers(); }
  // Dense layers come first (DeepSeek's first_k_dense_replace), then every moe_layer_step-th is MoE.
  bool is_dense_layer(int layer) const {
    return !is_moe() || layer < first_dense_layers || (layer + 1) % moe_layer_step != 0;
  }
  // An MTP depth's layer is of the model's last layer's kind.
  bool mtp_layer_is_moe() const { return !is_dense_layer(layers - 1); }
  int qk_head_dim() const { return head_dim + (is_mla() ? rope_head_dim : 0); }
  int value_head_dim() const { return is_mla() ? v_head_dim : head_dim; }
};

// Keys one query attends to on average over a causal sequence of `seq_len`, across the layers:
// (s + 1) / 2 in full layers; with a window w < s, (w (w + 1) / 2 + (s - w) w) / s; in chunks of
// c, (s / c) c (c + 1) / 2 + r (r + 1) / 2 over s, r the last chunk's length.
double mean_keys_seen(const ModelConfig& model, int seq_len);

// One kind of attention layer (full, windowed, chunked): its share of the layers, the keys a query
// sees on average, and the causal sequence a fused kernel runs: the whole sequence, a chunk, or
// twice a window (a block of queries then meets as many key tiles as in the window).
struct AttentionSpan {
  double layer_share = 0;
  double mean_keys = 0;
  double kernel_seq_len = 0;
};
std::vector<AttentionSpan> attention_spans(const ModelConfig& model, int seq_len);

// Throws InputError (naming `source` and the field) for shapes that cannot describe a model.
void validate(const ModelConfig& model, const std::string& source);

// The JSON form of a ModelConfig inside plans and traces (flopwise's own field names, not HF's,
// so it reads back exactly). Errors name `source` and the field under `path`.
nlohmann::json model_to_json(const ModelConfig& model);
ModelConfig model_from_json(const nlohmann::json& json, const std::string& source, const std::string& path = "model");

// Parameters of each part of one layer (counts, not bytes).
struct LayerParams {
  double attention = 0;       // QKV (or MLA projections), output projection, biases
  double norms = 0;           // the two RMSNorm weights of a pre-norm block
  double router = 0;          // expert gate
  double routed_expert = 0;   // one routed expert (SwiGLU: gate, up, down)
  double shared_experts = 0;  // all shared experts together
  double dense_mlp = 0;       // SwiGLU MLP of a dense layer
};

struct ParamCounts {
  double total = 0;
  double active = 0;      // used by one token: attention, top-k + shared experts, embeddings
  double embedding = 0;   // input embedding
  double lm_head = 0;     // output projection (0 when tied)
  double expert = 0;      // all routed-expert weights (sharded by EP)
  double non_expert = 0;  // everything else (replicated across EP)
  double mtp = 0;         // the multi-token-prediction modules, outside `total` as makers count it
  // Makers publish activated counts both ways (Qwen3-30B-A3B's 3.3B with embeddings,
  // Granite-3.0-3B-A800M's 800M without): the count without the input embedding and output head.
  double active_without_embeddings() const { return active - embedding - lm_head; }
};

LayerParams layer_params(const ModelConfig& model);

// How Megatron-LM's tensor parallelism splits the GEMM of a weight matrix: column-parallel
// layers split its outputs, row-parallel ones its inputs; the router and MLA's down-projections
// keep whole weights and run on each rank's sequence shard.
enum class TpSplit { kOutputs, kInputs, kSequence };

struct WeightMatrix {
  double inputs = 0;   // the GEMM's inner dimension
  double outputs = 0;  // its columns
  TpSplit split = TpSplit::kOutputs;
  // A Transformer Engine module, which an fp8 run quantizes; the router is not (router_matrix).
  bool quantized = true;
};

// MLA's up-projections from the latents to the heads (Megatron-Core's linear_q_up_proj, or
// linear_q_proj from h without a query latent, and linear_kv_up_proj).
std::vector<WeightMatrix> mla_up_projections(const ModelConfig& model);
// A dense layer's MLP: the fused gate and up projection, and the down projection.
std::vector<WeightMatrix> dense_mlp_matrices(const ModelConfig& model);
// What a layer runs before its MLP: the attention's projections, and in an MoE layer the router.
std::vector<WeightMatrix> attention_matrices(const ModelConfig& model);
WeightMatrix router_matrix(const ModelConfig& model);
// An MoE layer's shared experts, run as one MLP of their summed width (none without them).
std::vector<WeightMatrix> shared_expert_matrices(const ModelConfig& model);
// A layer's tensor-parallel blocks, each a column-parallel GEMM's all-gather and a row-parallel
// GEMM's reduce-scatter apart: the attention, then the dense MLP or the shared experts.
std::vector<std::vector<WeightMatrix>> tensor_parallel_blocks(const ModelConfig& model, bool moe_layer);

// The weight matrices every token of a layer multiplies (attention, router, shared experts, dense
// MLP), and those of one routed expert (each token meets top_k of them). Biases and norms are not
// GEMMs; everything else in layer_params is here, so FLOPs and GEMM shapes share one source.
struct LayerMatrices {
  std::vector<WeightMatrix> shared;
  std::vector<WeightMatrix> routed_expert;
};
LayerMatrices layer_matrices(const ModelConfig& model, bool moe_layer);
ParamCounts param_counts(const ModelConfig& model);

// Forward FLOPs for one token of one layer, split so that each part can go to its own
// efficiency (matmul vs attention core) and its own scaling (experts stretch under routing skew).
struct LayerFlops {
  Flops dense_matmul = 0;   // attention projections, router, shared experts, dense MLP
  Flops expert_matmul = 0;  // top-k routed experts
  Flops attention_core = 0; // QK^T and PV with causal masking
};

LayerFlops moe_layer_flops(const ModelConfig& model, int seq_len);
LayerFlops dense_layer_flops(const ModelConfig& model, int seq_len);
Flops lm_head_flops(const ModelConfig& model);
// An MTP depth's own weights: the 2h x h projection and the RMSNorms of its two inputs.
double mtp_projection_params(const ModelConfig& model);

// Model FLOPs per token of one training step (forward + backward, no recompute), the numerator
// of MFU. Backward costs twice the forward (gradients w.r.t. inputs and weights).
Flops training_flops_per_token(const ModelConfig& model, int seq_len);

}  // namespace flopwise
