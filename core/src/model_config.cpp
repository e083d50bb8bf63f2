#include "flopwise/model_config.hpp"

#include <cmath>

#include "flopwise/error.hpp"
#include "flopwise/json_reader.hpp"

namespace flopwise {
namespace {

void require_positive(int value, const std::string& source, const std::string& field) {
  if (value <= 0) {
    throw input_error(source, field, "must be a positive integer, got " + std::to_string(value));
  }
}

void require_non_negative(int value, const std::string& source, const std::string& field) {
  if (value < 0) {
    throw input_error(source, field, "must not be negative, got " + std::to_string(value));
  }
}

// SwiGLU MLP: gate and up (hidden -> ffn) and down (ffn -> hidden), no biases.
double swiglu_params(double hidden, double ffn) { return 3.0 * hidden * ffn; }

double attention_params(const ModelConfig& m) {
  const double h = m.hidden, heads = m.heads;
  if (!m.is_mla()) {
    // Fused QKV of (heads + 2 kv_heads) * head_dim outputs, then the output projection.
    const double qkv = h * (heads + 2.0 * m.kv_heads) * m.head_dim;
    const double bias = m.qkv_bias ? (heads + 2.0 * m.kv_heads) * m.head_dim : 0.0;
    return qkv + bias + heads * m.head_dim * h;
  }
  // MLA (DeepSeek-V2 section 2.1): low-rank Q (optional) and a shared compressed KV with a
  // decoupled rotary key; the LoRA ranks carry their own RMSNorm weights.
  const double qk = m.qk_head_dim();
  const double q = m.q_lora_rank > 0 ? h * m.q_lora_rank + m.q_lora_rank + m.q_lora_rank * heads * qk
                                     : h * heads * qk;
  const double kv_down = h * (m.kv_lora_rank + m.rope_head_dim) + m.kv_lora_rank;
  const double kv_up = static_cast<double>(m.kv_lora_rank) * heads * (m.head_dim + m.v_head_dim);
  return q + kv_down + kv_up + heads * m.v_head_dim * h;
}

void add_swiglu(std::vector<WeightMatrix>& to, double hidden, double ffn) {
  to.push_back({hidden, 2.0 * ffn, TpSplit::kOutputs});  // gate and up, fused
  to.push_back({ffn, hidden, TpSplit::kInputs});          // down
}

}  // namespace

std::vector<WeightMatrix> mla_up_projections(const ModelConfig& m) {
  const double heads = m.heads;
  const double q_from = m.q_lora_rank > 0 ? m.q_lora_rank : m.hidden;  // without a query latent, from h
  return {{q_from, heads * m.qk_head_dim(), TpSplit::kOutputs},
          {static_cast<double>(m.kv_lora_rank), heads * (m.head_dim + m.v_head_dim), TpSplit::kOutputs}};
}

std::vector<WeightMatrix> dense_mlp_matrices(const ModelConfig& m) {
  std::vector<WeightMatrix> mlp;
  add_swiglu(mlp, m.hidden, m.dense_ffn);
  return mlp;
}

std::vector<WeightMatrix> attention_matrices(const ModelConfig& m) {
  const double h = m.hidden, heads = m.heads;
  if (!m.is_mla()) {
    return {{h, (heads + 2.0 * m.kv_heads) * m.head_dim, TpSplit::kOutputs}, {heads * m.head_dim, h, TpSplit::kInputs}};
  }
  std::vector<WeightMatrix> to;
  if (m.q_lora_rank > 0) to.push_back({h, static_cast<double>(m.q_lora_rank), TpSplit::kSequence});
  to.push_back({h, static_cast<double>(m.kv_lora_rank + m.rope_head_dim), TpSplit::kSequence});
  for (const WeightMatrix& up : mla_up_projections(m)) to.push_back(up);
  to.push_back({heads * m.v_head_dim, h, TpSplit::kInputs});
  return to;
}

// Megatron-Core's router is a plain parameter multiplied outside fp8 autocast
// (moe_utils.py, RouterGatingLinearFunction: te_general_gemm on the bf16 weight and input, output
// in the router dtype), so an fp8 run neither quantizes its input nor runs it at the fp8 rate.
WeightMatrix router_matrix(const ModelConfig& m) {
  return {static_cast<double>(m.hidden), static_cast<double>(m.routed_experts), TpSplit::kSequence, false};
}

std::vector<WeightMatrix> shared_expert_matrices(const ModelConfig& m) {
  std::vector<WeightMatrix> shared;
  if (m.shared_experts > 0) add_swiglu(shared, m.hidden, static_cast<double>(m.shared_experts) * m.shared_expert_ffn);
  return shared;
}

std::vector<std::vector<WeightMatrix>> tensor_parallel_blocks(const ModelConfig& m, bool moe_layer) {
  std::vector<std::vector<WeightMatrix>> blocks{attention_matrices(m)};
  std::vector<WeightMatrix> mlp = moe_layer ? shared_expert_matrices(m) : dense_mlp_matrices(m);
  if (!mlp.empty()) blocks.push_back(std::move(mlp));
  return blocks;
}

LayerMatrices layer_matrices(const ModelConfig& m, bool moe_layer) {
  LayerMatrices l;
  l.shared = attention_matrices(m);
  if (!moe_layer) {
    for (const WeightMatrix& w : dense_mlp_matrices(m)) l.shared.push_back(w);
    return l;
  }
  l.shared.push_back(router_matrix(m));
  for (const WeightMatrix& w : shared_expert_matrices(m)) l.shared.push_back(w);
  add_swiglu(l.routed_expert, m.hidden, m.expert_ffn);
  return l;
}

void validate(const ModelConfig& m, const std::string& source) {
  require_positive(m.layers, source, "layers");
  require_positive(m.hidden, source, "hidden");
  require_positive(m.heads, source, "heads");
  require_positive(m.kv_heads, source, "kv_heads");
  require_positive(m.head_dim, source, "head_dim");
  require_positive(m.vocab, source, "vocab");
  require_positive(m.seq_len, source, "seq_len");
  require_non_negative(m.routed_experts, source, "routed_experts");
  require_non_negative(m.shared_experts, source, "shared_experts");
  require_non_negative(m.first_dense_layers, source, "first_dense_layers");
  require_non_negative(m.attention_window, source, "attention_window");
  require_non_negative(m.mtp_layers, source, "mtp_layers");
  require_non_negative(m.qk_norm_weights, source, "qk_norm_weights");
  require_non_negative(m.attention_chunk, source, "attention_chunk");
  if (m.moe_layer_step < 1) throw input_error(source, "moe_layer_step", "must be at least 1");
  // The windowed layers alone first, so a count past the model names its own field.
  require_non_negative(m.windowed_layers, source, "windowed_layers");
  if (m.windowed_layers > m.layers) {
    throw input_error(source, "windowed_layers", "exceeds layers (" + std::to_string(m.layers) + ")");
  }
  if (m.windowed_layers + m.chunked_layers > m.layers) {
    throw input_error(source, "chunked_layers", "windowed and chunked layers exceed layers (" + std::to_string(m.layers) + ")");
  }
  if (m.chunked_layers > 0 && m.attention_chunk == 0) {
    throw input_error(source, "attention_chunk", "chunked layers need a chunk of at least 1 token");
  }
  if (m.windowed_layers > 0 && m.attention_window == 0) {
    throw input_error(source, "attention_window", "windowed layers need a window of at least 1 token");
  }
  if (m.heads % m.kv_heads != 0) {
    throw input_error(source, "kv_heads", "must divide heads (" + std::to_string(m.heads) + ")");
  }
  if (m.is_mla()) require_positive(m.v_head_dim, source, "v_head_dim");
  if (m.is_moe()) {
    require_positive(m.top_k, source, "top_k");
    require_positive(m.expert_ffn, source, "expert_ffn");
    if (m.top_k > m.routed_experts) {
      throw input_error(source, "top_k", "exceeds routed_experts (" + std::to_string(m.routed_experts) + ")");
    }
    if (m.shared_experts > 0) require_positive(m.shared_expert_ffn, source, "shared_expert_ffn");
    if (m.first_dense_layers > m.layers) {
      throw input_error(source, "first_dense_layers", "exceeds layers (" + std::to_string(m.layers) + ")");
    }
  }
  if (m.dense_layers() > 0) require_positive(m.dense_ffn, source, "dense_ffn");
}

LayerParams layer_params(const ModelConfig& m) {
  LayerParams p;
  p.attention = attention_params(m);
  p.norms = 2.0 * m.hidden + m.qk_norm_weights;  // before attention and MLP, and QK-norm
  if (m.is_moe()) {
    p.router = static_cast<double>(m.hidden) * m.routed_experts;
    p.routed_expert = swiglu_params(m.hidden, m.expert_ffn);
    p.shared_experts = m.shared_experts * swiglu_params(m.hidden, m.shared_expert_ffn);
  }
  if (m.dense_layers() > 0) p.dense_mlp = swiglu_params(m.hidden, m.dense_ffn);
  return p;
}

ParamCounts param_counts(const ModelConfig& m) {
  const LayerParams p = layer_params(m);
  ParamCounts c;
  c.embedding = static_cast<double>(m.vocab) * m.hidden;
  c.lm_head = m.tied_embeddings ? 0.0 : c.embedding;
  const double final_norm = m.hidden;
  const double moe_shared_part = p.attention + p.norms + p.router + p.shared_experts;
  const double dense_layer = p.attention + p.norms + p.dense_mlp;
  c.expert = m.moe_layers() * m.routed_experts * p.routed_expert;
  c.non_expert = m.moe_layers() * moe_shared_part + m.dense_layers() * dense_layer + c.embedding +
                 c.lm_head + final_norm;
  c.total = c.expert + c.non_expert;
  c.active = c.non_expert + m.moe_layers() * m.top_k * p.routed_expert;
  const double last_layer = m.mtp_layer_is_moe() ? moe_shared_part + m.routed_experts * p.routed_expert : dense_layer;
  c.mtp = m.mtp_layers * (last_layer + mtp_projection_params(m));
  return c;
}

namespace {

// QK^T and PV for one query token: 2 FLOPs per multiply-add over heads * (qk + v) dims and the
// keys it sees; a causal mask lets a token see (seq_len + 1) / 2 keys on average, and fused
// attention kernels skip the masked half (FlashAttention-2, Dao 2023, section 3.1) and, for a
// sliding window, the blocks outside it. Windowed and full layers are averaged over the model.
Flops attention_core_flops(const ModelConfig& m, int seq_len) {
  return 2.0 * m.heads * (m.qk_head_dim() + m.value_head_dim()) * mean_keys_seen(m, seq_len);
}

}  // namespace

std::vector<AttentionSpan> attention_spans(const ModelConfig& m, int seq_len) {
  const double s = seq_len, layers = m.layers;
  const double w = m.attention_window, c = m.attention_chunk;
  std::vector<AttentionSpan> spans;
  double local = 0;
  if (m.windowed_layers > 0 && w > 0 && w < s) {
    spans.push_back({m.windowed_layers / layers, (w * (w + 1.0) / 2.0 + (s - w) * w) / s, std::min(s, 2.0 * w)});
    local += m.windowed_layers;
  }
  if (m.chunked_layers > 0 && c > 0 && c < s) {
    const double whole = std::floor(s / c), rest = s - whole * c;
    spans.push_back({m.chunked_layers / layers, (whole * c * (c + 1.0) / 2.0 + rest * (rest + 1.0) / 2.0) / s, c});
    local += m.chunked_layers;
  }
  if (local < layers) spans.push_back({(layers - local) / layers, (s + 1.0) / 2.0, s});
  return spans;
}

double mean_keys_seen(const ModelConfig& m, int seq_len) {
  double keys = 0;
  for (const AttentionSpan& span : attention_spans(m, seq_len)) keys += span.layer_share * span.mean_keys;
  return keys;
}

namespace {

// A matmul costs 2 FLOPs per weight per token (one multiply, one add).
Flops matmul_flops(const std::vector<WeightMatrix>& matrices) {
  Flops f = 0;
  for (const WeightMatrix& w : matrices) f += 2.0 * w.inputs * w.outputs;
  return f;
}

}  // namespace

LayerFlops moe_layer_flops(const ModelConfig& m, int seq_len) {
  const LayerMatrices w = layer_matrices(m, true);
  LayerFlops f;
  f.dense_matmul = matmul_flops(w.shared);
  f.expert_matmul = m.top_k * matmul_flops(w.routed_expert);
  f.attention_core = attention_core_flops(m, seq_len);
  return f;
}

LayerFlops dense_layer_flops(const ModelConfig& m, int seq_len) {
  LayerFlops f;
  f.dense_matmul = matmul_flops(layer_matrices(m, false).shared);
  f.attention_core = attention_core_flops(m, seq_len);
  return f;
}

Flops lm_head_flops(const ModelConfig& m) { return 2.0 * m.vocab * static_cast<double>(m.hidden); }

double mtp_projection_params(const ModelConfig& m) {
  const double h = m.hidden;
  return 2.0 * h * h + 2.0 * h;
}

Flops training_flops_per_token(const ModelConfig& m, int seq_len) {
  const LayerFlops moe = moe_layer_flops(m, seq_len);
  const LayerFlops dense = dense_layer_flops(m, seq_len);
  const Flops moe_layer = moe.dense_matmul + moe.expert_matmul + moe.attention_core;
  const Flops dense_layer = dense.dense_matmul + dense.attention_core;
  const Flops mtp_depth = (m.mtp_layer_is_moe() ? moe_layer : dense_layer) + 2.0 * 2.0 * m.hidden * m.hidden + lm_head_flops(m);
  const Flops forward = m.moe_layers() * moe_layer + m.dense_layers() * dense_layer + lm_head_flops(m) +
                        m.mtp_layers * mtp_depth;
  return 3.0 * forward;
}

// Every integer field of the JSON form; one list, so writer and reader cannot drift.
#define FLOPWISE_MODEL_FIELDS(X)                                                                 \
  X(layers) X(hidden) X(heads) X(kv_heads) X(head_dim) X(vocab) X(seq_len) X(q_lora_rank)        \
  X(kv_lora_rank) X(rope_head_dim) X(v_head_dim) X(routed_experts) X(top_k) X(expert_ffn)        \
  X(shared_experts) X(shared_expert_ffn) X(dense_ffn) X(first_dense_layers)
// Integer fields added after plans and traces were first written: optional on reading, an absent
// one keeping ModelConfig's default (full attention, no MTP, every layer MoE after the dense ones).
#define FLOPWISE_MODEL_LATER_FIELDS(X)                                                           \
  X(attention_window, 0, 1'000'000'000) X(windowed_layers, 0, 1'000'000'000) X(mtp_layers, 0, 1'000) \
  X(moe_layer_step, 1, 1'000) X(attention_chunk, 0, 1'000'000'000) X(chunked_layers, 0, 1'000'000'000) \
  X(qk_norm_weights, 0, 1'000'000'000)

nlohmann::json model_to_json(const ModelConfig& m) {
  nlohmann::json j;
  j["name"] = m.name;
  j["family"] = m.family;
#define X(field) j[#field] = m.field;
  FLOPWISE_MODEL_FIELDS(X)
#undef X
  j["qkv_bias"] = m.qkv_bias;
  j["tied_embeddings"] = m.tied_embeddings;
#define X(field, min, max) j[#field] = m.field;
  FLOPWISE_MODEL_LATER_FIELDS(X)
#undef X
  j["learned_positions"] = m.learned_positions;
  if (!m.omitted.empty()) j["omitted"] = m.omitted;
  return j;
}

ModelConfig model_from_json(const nlohmann::json& j, const std::string& source, const std::string& path) {
  const JsonFields r(j, source, path);
  ModelConfig m;
  m.name = r.text("name");
  m.family = r.text("family");
#define X(field) m.field = r.integer(#field, 0, 1'000'000'000);
  FLOPWISE_MODEL_FIELDS(X)
#undef X
  m.qkv_bias = r.boolean("qkv_bias");
  m.tied_embeddings = r.boolean("tied_embeddings");
#define X(field, min, max) \
  if (r.has(#field)) m.field = r.integer(#field, min, max);
  FLOPWISE_MODEL_LATER_FIELDS(X)
#undef X
  // Added later too: plans and traces written before it were of rotary models or costed as such.
  if (r.has("learned_positions")) m.learned_positions = r.boolean("learned_positions");
  if (r.has("omitted")) m.omitted = r.text("omitted");
  validate(m, source + ": " + path);
  return m;
}

}  // namespace flopwise
