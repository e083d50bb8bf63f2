#pragma once
// Model descriptions from Hugging Face config.json files and the built-in presets.
#include <string>

#include <nlohmann/json.hpp>

#include "flopwise/json_reader.hpp"
#include "flopwise/model_config.hpp"

namespace flopwise {

// Understands bailing_moe (both key spellings), mixtral, qwen2_moe, deepseek_v2/v3 and llama.
// `source` names the file in errors; `name` becomes ModelConfig::name.
ModelConfig import_hf_config(const nlohmann::json& config, const std::string& source, const std::string& name);
ModelConfig load_hf_config(const std::string& path);

// A preset name ("ling-lite", "ling-plus") or a path to a config.json.
ModelConfig resolve_model(const std::string& name_or_path);

}  // namespace flopwise
