#pragma once
// Plans the executor tests train: Ling-Lite's shape (flopwise-train scales it down) with a layout.
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

namespace flopwise::testing {

// Writes the plan to `path` and returns `path`.
inline std::string write_ling_lite_plan(const std::string& path, int tp, int pp, int ep, int dp, bool sharding) {
  const nlohmann::json model = {{"name", "ling-lite"}, {"family", "bailing_moe"}, {"layers", 28}, {"hidden", 2048},
                                {"heads", 16}, {"kv_heads", 4}, {"head_dim", 128}, {"vocab", 126464}, {"seq_len", 4096},
                                {"q_lora_rank", 0}, {"kv_lora_rank", 0}, {"rope_head_dim", 0}, {"v_head_dim", 0},
                                {"routed_experts", 64}, {"top_k", 6}, {"expert_ffn", 1408}, {"shared_experts", 2},
                                {"shared_expert_ffn", 1408}, {"dense_ffn", 5632}, {"first_dense_layers", 0},
                                {"qkv_bias", false}, {"tied_embeddings", false}};
  const nlohmann::json plan = {{"schema", "flopwise.plan/1"}, {"model", model}, {"global_batch", 8960}, {"seq_len", 4096},
                               {"devices", tp * pp * dp},
                               {"layout", {{"tp", tp}, {"pp", pp}, {"vpp", 1}, {"ep", ep}, {"dp", dp}, {"micro_batch", 1},
                                           {"recompute", "none"}, {"optimizer_sharding", sharding}}},
                               {"rank_map", {{"order", "tp-ep-dp-pp"}}}};
  std::ofstream(path) << plan.dump();
  return path;
}

}  // namespace flopwise::testing
