#include "flopwise/model_import.hpp"

#include <algorithm>
#include <filesystem>
#include <map>

#include "flopwise/catalog.hpp"
#include "flopwise/error.hpp"
#include "flopwise/json_reader.hpp"

namespace flopwise {
namespace {

using nlohmann::json;

// config.json fields: counts between 0 and 1e9, and the fields HF itself defaults when absent.
class ConfigReader : public JsonFields {
 public:
  using JsonFields::JsonFields;
  int integer(const std::string& key) const { return JsonFields::integer(key, 0, 1'000'000'000); }
  int integer_or(const std::string& key, int hf_default) const { return has(key) ? integer(key) : hf_default; }
  // The first of several spellings of one field (Ling-Lite and Ling-Plus name experts differently).
  int integer_any(const std::vector<std::string>& keys) const {
    for (const auto& key : keys) {
      if (has(key)) return integer(key);
    }
    std::string list;
    for (const auto& key : keys) list += (list.empty() ? "" : " or ") + key;
    throw error(list, "missing field");
  }
  const nlohmann::json& raw(const std::string& key) const { return node()[key]; }
};

void read_common(const ConfigReader& r, ModelConfig& m) {
  m.layers = r.integer("num_hidden_layers");
  m.hidden = r.integer("hidden_size");
  m.heads = r.integer("num_attention_heads");
  m.kv_heads = r.integer_or("num_key_value_heads", m.heads);  // HF: absent means multi-head attention
  if (m.heads <= 0) throw input_error(r.source(), "num_attention_heads", "must be positive");
  m.head_dim = r.integer_or("head_dim", m.hidden / m.heads);
  m.vocab = r.integer("vocab_size");
  m.tied_embeddings = r.boolean_or("tie_word_embeddings", false);
  // DeepSeek-V3's name for its multi-token-prediction depths, kept by Kimi K2, GLM-4.5 and Ling 2.0.
  m.mtp_layers = r.integer_or("num_nextn_predict_layers", 0);
}

// Local attention: `sliding_window` tokens in the layers `layer_types` marks "sliding_attention"
// (newer HF configs), or else in the family's own pattern (`windowed` layers).
void read_window(const ConfigReader& r, ModelConfig& m, int windowed) {
  if (!r.has("sliding_window")) return;  // null: full attention everywhere
  m.attention_window = r.integer("sliding_window");
  m.windowed_layers = windowed;
  if (!r.has("layer_types")) return;
  const nlohmann::json& types = r.raw("layer_types");
  if (!types.is_array() || static_cast<int>(types.size()) != m.layers) {
    throw input_error(r.source(), "layer_types", "expected one entry per hidden layer");
  }
  m.windowed_layers = static_cast<int>(std::count(types.begin(), types.end(), "sliding_attention"));
}

// Qwen's optional sliding window (use_sliding_window) leaves the first max_window_layers full.
void read_qwen_window(const ConfigReader& r, ModelConfig& m) {
  if (!r.boolean_or("use_sliding_window", false)) return;
  read_window(r, m, std::max(0, m.layers - r.integer_or("max_window_layers", m.layers)));
}

void read_bailing_moe(const ConfigReader& r, ModelConfig& m) {
  m.routed_experts = r.integer_any({"num_experts", "n_routed_experts"});
  m.top_k = r.integer("num_experts_per_tok");
  m.expert_ffn = r.integer("moe_intermediate_size");
  // Ling's shared expert is one MLP of n_shared x moe_intermediate_size: the same weights and
  // FLOPs as n_shared MLPs of moe_intermediate_size.
  m.shared_experts = r.integer_any({"num_shared_experts", "n_shared_experts"});
  m.shared_expert_ffn = m.expert_ffn;
  m.first_dense_layers = r.integer_or("first_k_dense_replace", 0);
  m.dense_ffn = r.integer("intermediate_size");
  m.qkv_bias = r.boolean_or("use_qkv_bias", false);
}

// Qwen's MoE layout (qwen2_moe, qwen3_moe): every layer MoE, an optional gated shared expert.
void read_qwen_experts(const ConfigReader& r, ModelConfig& m) {
  if (r.integer_or("decoder_sparse_step", 1) != 1) {
    throw input_error(r.source(), "decoder_sparse_step", "only 1 (every layer MoE) is supported");
  }
  if (r.has("mlp_only_layers") && !r.raw("mlp_only_layers").empty()) {
    throw input_error(r.source(), "mlp_only_layers", "dense layers between MoE layers are not supported");
  }
  m.routed_experts = r.integer("num_experts");
  m.top_k = r.integer("num_experts_per_tok");
  m.expert_ffn = r.integer("moe_intermediate_size");
  const int shared_ffn = r.integer_or("shared_expert_intermediate_size", 0);
  m.shared_experts = shared_ffn > 0 ? 1 : 0;
  m.shared_expert_ffn = shared_ffn;
}

void read_qwen2_moe(const ConfigReader& r, ModelConfig& m) {
  read_qwen_experts(r, m);
  m.qkv_bias = true;  // Qwen2 attention has Q, K and V biases
  read_qwen_window(r, m);
}

// Qwen3-MoE: no attention biases.
void read_qwen3_moe(const ConfigReader& r, ModelConfig& m) {
  read_qwen_experts(r, m);
  m.qkv_bias = r.boolean_or("attention_bias", false);
  read_qwen_window(r, m);
}

// Routed experts named as Mixtral names them (mixtral, phimoe, granitemoe), or OLMoE's num_experts;
// the expert width is intermediate_size.
void read_routed_experts(const ConfigReader& r, ModelConfig& m) {
  m.routed_experts = r.integer_any({"num_local_experts", "num_experts"});
  m.top_k = r.integer("num_experts_per_tok");
  m.expert_ffn = r.integer("intermediate_size");
  m.qkv_bias = r.boolean_or("attention_bias", false);
  read_window(r, m, m.layers);  // Mixtral's and Phi-MoE's window, where set, is every layer's
}

// gpt-oss: Mixtral's expert naming, biased attention, and (layer_types) banded sliding-window
// layers alternating with full ones; its per-head attention sinks are too few weights to count.
void read_gpt_oss(const ConfigReader& r, ModelConfig& m) {
  read_routed_experts(r, m);
  m.qkv_bias = r.boolean_or("attention_bias", true);
  read_window(r, m, (m.layers + 1) / 2);
}

// DeepSeek's expert layout (deepseek_v2/v3, kimi_k2, glm4_moe): leading dense layers of
// intermediate_size, then MoE layers with shared experts as wide as the routed ones.
void read_deepseek_experts(const ConfigReader& r, ModelConfig& m) {
  m.routed_experts = r.integer("n_routed_experts");
  m.top_k = r.integer("num_experts_per_tok");
  m.expert_ffn = r.integer("moe_intermediate_size");
  m.shared_experts = r.integer_or("n_shared_experts", 0);
  m.shared_expert_ffn = m.expert_ffn;
  m.first_dense_layers = r.integer_or("first_k_dense_replace", 0);
  m.dense_ffn = r.integer("intermediate_size");
}

// GLM-4.5 (glm4_moe): DeepSeek's expert layout with GQA attention and Q/K/V biases.
void read_glm4_moe(const ConfigReader& r, ModelConfig& m) {
  read_deepseek_experts(r, m);
  m.qkv_bias = r.boolean_or("attention_bias", true);
}

void read_deepseek(const ConfigReader& r, ModelConfig& m) {
  if (r.integer_or("moe_layer_freq", 1) != 1) {
    throw input_error(r.source(), "moe_layer_freq", "only 1 (every layer after the dense ones) is supported");
  }
  read_deepseek_experts(r, m);
  m.q_lora_rank = r.integer_or("q_lora_rank", 0);  // null in V2-Lite: Q is a full projection
  m.kv_lora_rank = r.integer("kv_lora_rank");
  m.head_dim = r.integer("qk_nope_head_dim");
  m.rope_head_dim = r.integer("qk_rope_head_dim");
  m.v_head_dim = r.integer("v_head_dim");
  m.kv_heads = m.heads;
}

// Dense decoders with a gated MLP: llama, mistral (a sliding window, where set, in every layer).
void read_llama(const ConfigReader& r, ModelConfig& m) {
  m.dense_ffn = r.integer("intermediate_size");
  m.qkv_bias = r.boolean_or("attention_bias", false);
  read_window(r, m, m.layers);
}

// Qwen2 (Q, K and V biases) and Qwen3 (none).
void read_qwen_dense(const ConfigReader& r, ModelConfig& m) {
  m.dense_ffn = r.integer("intermediate_size");
  m.qkv_bias = r.boolean_or("attention_bias", m.family == "qwen2");
  read_qwen_window(r, m);
}

// Gemma 2 and 3: GeGLU (the weights of a gated MLP) and, as HF defaults them, tied embeddings.
// Local layers: Gemma 2 alternates them with global ones (even layers local); Gemma 3 makes
// every sliding_window_pattern-th layer global (default 6).
void read_gemma(const ConfigReader& r, ModelConfig& m) {
  m.dense_ffn = r.integer("intermediate_size");
  m.tied_embeddings = r.boolean_or("tie_word_embeddings", true);
  const int pattern = m.family == "gemma2" ? 2 : r.integer_or("sliding_window_pattern", 6);
  if (pattern < 1) throw input_error(r.source(), "sliding_window_pattern", "must be at least 1");
  read_window(r, m, m.layers - m.layers / pattern);
}

// Llama 4: routed experts of intermediate_size plus one shared expert, MoE every
// interleave_moe_layer_step-th layer and dense layers of intermediate_size_mlp between; chunked
// attention in the layers that use RoPE (no_rope_layers 1; by default all but every 4th).
void read_llama4(const ConfigReader& r, ModelConfig& m) {
  m.routed_experts = r.integer("num_local_experts");
  m.top_k = r.integer("num_experts_per_tok");
  m.expert_ffn = r.integer("intermediate_size");
  m.shared_experts = 1;
  m.shared_expert_ffn = m.expert_ffn;
  m.moe_layer_step = r.integer_or("interleave_moe_layer_step", 1);
  if (m.moe_layer_step < 1) throw input_error(r.source(), r.where("interleave_moe_layer_step"), "must be at least 1");
  if (m.moe_layer_step > 1) m.dense_ffn = r.integer("intermediate_size_mlp");
  if (!r.has("attention_chunk_size")) return;
  m.attention_chunk = r.integer("attention_chunk_size");
  m.chunked_layers = m.layers - m.layers / 4;
  if (!r.has("no_rope_layers")) return;
  const nlohmann::json& rope = r.raw("no_rope_layers");
  if (!rope.is_array() || static_cast<int>(rope.size()) != m.layers) {
    throw input_error(r.source(), r.where("no_rope_layers"), "expected one entry per hidden layer");
  }
  m.chunked_layers = static_cast<int>(std::count(rope.begin(), rope.end(), 1));
}

// DBRX names everything its own way: d_model, n_layers, n_heads, and nested attn_config and
// ffn_config; its experts are gated MLPs of ffn_hidden_size.
void read_dbrx(const ConfigReader& r, ModelConfig& m) {
  m.layers = r.integer("n_layers");
  m.hidden = r.integer("d_model");
  m.heads = r.integer("n_heads");
  if (m.heads <= 0) throw input_error(r.source(), "n_heads", "must be positive");
  m.head_dim = m.hidden / m.heads;
  m.vocab = r.integer("vocab_size");
  m.tied_embeddings = r.boolean_or("tie_word_embeddings", false);
  const ConfigReader attention(r.raw("attn_config"), r.source(), "attn_config");
  m.kv_heads = attention.integer_or("kv_n_heads", m.heads);
  const ConfigReader ffn(r.raw("ffn_config"), r.source(), "ffn_config");
  m.routed_experts = ffn.integer("moe_num_experts");
  m.top_k = ffn.integer("moe_top_k");
  m.expert_ffn = ffn.integer("ffn_hidden_size");
}

// QK-norm's weights per layer, by family: Qwen3 and Gemma 3 norm each head's query and key
// (q_norm, k_norm of head_dim), GLM-4.5 the same when use_qk_norm is set, OLMoE the whole query
// and key projections; Llama 4's QK-norm is a weightless L2 norm.
int qk_norm_weights(const ConfigReader& r, const ModelConfig& m) {
  if (m.family == "qwen3" || m.family == "qwen3_moe" || m.family == "gemma3_text") return 2 * m.head_dim;
  if (m.family == "glm4_moe" && r.boolean_or("use_qk_norm", false)) return 2 * m.head_dim;
  if (m.family == "olmoe") return m.hidden + m.kv_heads * m.head_dim;
  return 0;
}

}  // namespace

ModelConfig import_hf_config(const json& config, const std::string& source, const std::string& name) {
  // Multimodal checkpoints (Llama 4, Gemma 3) nest the language model in text_config; flopwise
  // plans the language model and says what it left out.
  const bool nested = config.is_object() && config.contains("text_config") && config["text_config"].is_object();
  const ConfigReader r(nested ? config["text_config"] : config, source, nested ? "text_config" : "");
  ModelConfig m;
  m.name = name;
  m.family = r.has("model_type") || !nested ? r.text("model_type") : JsonFields(config, source).text("model_type") + "_text";
  if (nested) m.omitted = "the vision tower and projector of " + JsonFields(config, source).text("model_type");
  using Reader = void (*)(const ConfigReader&, ModelConfig&);
  const std::map<std::string, Reader> families = {
      {"bailing_moe", read_bailing_moe}, {"dbrx", read_dbrx},           {"deepseek_v2", read_deepseek},
      {"deepseek_v3", read_deepseek},    {"gemma2", read_gemma},         {"gemma3_text", read_gemma},
      {"glm4_moe", read_glm4_moe},       {"gpt_oss", read_gpt_oss},       {"granitemoe", read_routed_experts}, {"kimi_k2", read_deepseek},
      {"llama", read_llama},             {"mistral", read_llama},        {"mixtral", read_routed_experts},
      {"olmoe", read_routed_experts},    {"phimoe", read_routed_experts}, {"qwen2", read_qwen_dense},
      {"qwen2_moe", read_qwen2_moe},     {"qwen3", read_qwen_dense},          {"qwen3_moe", read_qwen3_moe},
      {"llama4_text", read_llama4}};
  const auto family = families.find(m.family);
  if (family == families.end()) {
    std::string supported;
    for (const auto& [name, reader] : families) supported += (supported.empty() ? "" : ", ") + name;
    throw input_error(source, "model_type", "unknown model type '" + m.family + "' (supported: " + supported + ")");
  }
  if (m.family != "dbrx") read_common(r, m);
  family->second(r, m);
  m.qk_norm_weights = qk_norm_weights(r, m);
  validate(m, source);
  return m;
}

ModelConfig load_hf_config(const std::string& path) {
  // Hugging Face checkouts hold "<model>/config.json": the folder names the model.
  const std::filesystem::path file(path);
  const std::string folder = std::filesystem::absolute(file).parent_path().filename().string();
  const std::string name = file.filename() == "config.json" && !folder.empty() ? folder : file.stem().string();
  return import_hf_config(load_json_file(path), path, name);
}

ModelConfig resolve_model(const std::string& name_or_path) {
  for (const auto& [name, text] : builtin_preset_texts()) {
    if (name == name_or_path) return import_hf_config(parse_json(text, "preset " + name), "preset " + name, name);
  }
  if (std::filesystem::exists(name_or_path)) return load_hf_config(name_or_path);
  std::string presets;
  for (const auto& name : builtin_preset_names()) presets += (presets.empty() ? "" : ", ") + name;
  throw input_error(name_or_path, "", "no such config.json or preset (presets: " + presets + ")");
}

}  // namespace flopwise
