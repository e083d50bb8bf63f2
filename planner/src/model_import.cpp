#include "flopwise/model_import.hpp"

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

void read_mixtral(const ConfigReader& r, ModelConfig& m) {
  m.routed_experts = r.integer("num_local_experts");
  m.top_k = r.integer("num_experts_per_tok");
  m.expert_ffn = r.integer("intermediate_size");
}

void read_qwen2_moe(const ConfigReader& r, ModelConfig& m) {
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
  m.qkv_bias = true;  // Qwen2 attention has Q, K and V biases
}

void read_deepseek(const ConfigReader& r, ModelConfig& m) {
  if (r.integer_or("moe_layer_freq", 1) != 1) {
    throw input_error(r.source(), "moe_layer_freq", "only 1 (every layer after the dense ones) is supported");
  }
  m.routed_experts = r.integer("n_routed_experts");
  m.top_k = r.integer("num_experts_per_tok");
  m.expert_ffn = r.integer("moe_intermediate_size");
  m.shared_experts = r.integer_or("n_shared_experts", 0);
  m.shared_expert_ffn = m.expert_ffn;
  m.first_dense_layers = r.integer_or("first_k_dense_replace", 0);
  m.dense_ffn = r.integer("intermediate_size");
  m.q_lora_rank = r.integer_or("q_lora_rank", 0);  // null in V2-Lite: Q is a full projection
  m.kv_lora_rank = r.integer("kv_lora_rank");
  m.head_dim = r.integer("qk_nope_head_dim");
  m.rope_head_dim = r.integer("qk_rope_head_dim");
  m.v_head_dim = r.integer("v_head_dim");
  m.kv_heads = m.heads;
}

void read_llama(const ConfigReader& r, ModelConfig& m) {
  m.dense_ffn = r.integer("intermediate_size");
  m.qkv_bias = r.boolean_or("attention_bias", false);
}

}  // namespace

ModelConfig import_hf_config(const json& config, const std::string& source, const std::string& name) {
  const ConfigReader r(config, source);
  ModelConfig m;
  m.name = name;
  m.family = r.text("model_type");
  using Reader = void (*)(const ConfigReader&, ModelConfig&);
  const std::map<std::string, Reader> families = {{"bailing_moe", read_bailing_moe}, {"mixtral", read_mixtral},
                                                  {"qwen2_moe", read_qwen2_moe},     {"deepseek_v2", read_deepseek},
                                                  {"deepseek_v3", read_deepseek},    {"llama", read_llama}};
  const auto family = families.find(m.family);
  if (family == families.end()) {
    throw input_error(source, "model_type", "unknown model type '" + m.family +
                                                "' (supported: bailing_moe, deepseek_v2, deepseek_v3, llama, "
                                                "mixtral, qwen2_moe)");
  }
  read_common(r, m);
  family->second(r, m);
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
