#include "flopwise/model_import.hpp"

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "flopwise/catalog.hpp"
#include "flopwise/error.hpp"

namespace flopwise {
namespace {

using nlohmann::json;

// Reads config.json fields with errors that name the file and the key.
class ConfigReader {
 public:
  ConfigReader(const json& config, std::string source) : config_(config), source_(std::move(source)) {
    if (!config_.is_object()) throw input_error(source_, "", "expected a JSON object");
  }

  bool has(const std::string& key) const { return config_.contains(key) && !config_[key].is_null(); }

  int integer(const std::string& key) const {
    if (!has(key)) throw input_error(source_, key, "missing field");
    const json& value = config_[key];
    if (!value.is_number_integer()) throw input_error(source_, key, "expected an integer, got " + value.dump());
    const long long number = value.get<long long>();
    if (number < 0 || number > 1'000'000'000) {
      throw input_error(source_, key, "out of range: " + value.dump());
    }
    return static_cast<int>(number);
  }

  // Fields that Hugging Face itself defaults when absent (its config classes' defaults).
  int integer_or(const std::string& key, int hf_default) const { return has(key) ? integer(key) : hf_default; }

  bool boolean_or(const std::string& key, bool hf_default) const {
    if (!has(key)) return hf_default;
    if (!config_[key].is_boolean()) throw input_error(source_, key, "expected true or false");
    return config_[key].get<bool>();
  }

  bool boolean(const std::string& key) const {
    if (!has(key)) throw input_error(source_, key, "missing field");
    return boolean_or(key, false);
  }

  // The first of several spellings of one field (Ling-Lite and Ling-Plus name experts differently).
  int integer_any(const std::vector<std::string>& keys) const {
    for (const auto& key : keys) {
      if (has(key)) return integer(key);
    }
    std::string list;
    for (const auto& key : keys) list += (list.empty() ? "" : " or ") + key;
    throw input_error(source_, list, "missing field");
  }

  std::string text(const std::string& key) const {
    if (!has(key)) throw input_error(source_, key, "missing field");
    if (!config_[key].is_string()) throw input_error(source_, key, "expected a string");
    return config_[key].get<std::string>();
  }

  const json& raw(const std::string& key) const { return config_[key]; }
  const std::string& source() const { return source_; }

 private:
  const json& config_;
  std::string source_;
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

std::string read_text_file(const std::string& path, const std::string& what) {
  std::ifstream in(path);
  if (!in) throw input_error(path, "", "cannot open " + what);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace

json parse_json(const std::string& text, const std::string& source) {
  try {
    return json::parse(text);
  } catch (const json::parse_error& e) {
    throw input_error(source, "", std::string("malformed JSON: ") + e.what());
  }
}

json load_json_file(const std::string& path) { return parse_json(read_text_file(path, "JSON file"), path); }

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

// Plans carry the model in flopwise's own field names, not HF's, so they read back exactly.
#define FLOPWISE_MODEL_FIELDS(X)                                                                 \
  X(layers) X(hidden) X(heads) X(kv_heads) X(head_dim) X(vocab) X(seq_len) X(q_lora_rank)        \
  X(kv_lora_rank) X(rope_head_dim) X(v_head_dim) X(routed_experts) X(top_k) X(expert_ffn)        \
  X(shared_experts) X(shared_expert_ffn) X(dense_ffn) X(first_dense_layers)

json model_to_json(const ModelConfig& m) {
  json j;
  j["name"] = m.name;
  j["family"] = m.family;
#define X(field) j[#field] = m.field;
  FLOPWISE_MODEL_FIELDS(X)
#undef X
  j["qkv_bias"] = m.qkv_bias;
  j["tied_embeddings"] = m.tied_embeddings;
  return j;
}

ModelConfig model_from_json(const json& j, const std::string& source) {
  const ConfigReader r(j, source + ": model");
  ModelConfig m;
  m.name = r.text("name");
  m.family = r.text("family");
#define X(field) m.field = r.integer(#field);
  FLOPWISE_MODEL_FIELDS(X)
#undef X
  m.qkv_bias = r.boolean("qkv_bias");
  m.tied_embeddings = r.boolean("tied_embeddings");
  validate(m, source + ": model");
  return m;
}

}  // namespace flopwise
