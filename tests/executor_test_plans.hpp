#pragma once
// Plans the executor tests train: Ling-Lite's shape (flopwise-train scales it down) with a layout,
// written by the core's plan writer, exactly as `flopwise plan --out` writes them.
#include <string>

#include "flopwise/plan.hpp"

namespace flopwise::testing {

inline ModelConfig ling_lite_shape() {
  ModelConfig m;
  m.name = "ling-lite", m.family = "bailing_moe";
  m.layers = 28, m.hidden = 2048, m.heads = 16, m.kv_heads = 4, m.head_dim = 128, m.vocab = 126464;
  m.routed_experts = 64, m.top_k = 6, m.expert_ffn = 1408, m.shared_experts = 2, m.shared_expert_ffn = 1408;
  m.dense_ffn = 5632;
  return m;
}

// Writes the plan to `path` and returns `path`.
inline std::string write_ling_lite_plan(const std::string& path, int tp, int pp, int ep, int dp, bool sharding) {
  Plan plan;
  plan.model = ling_lite_shape();
  plan.hardware = {"cpu-core", "one CPU core", 8, 0.134, 8e9, 0, "USD"};
  plan.run.global_batch = 8960;
  plan.run.seq_len = 4096;
  plan.layout = Layout{tp, pp, 1, ep, dp, 1, Recompute::kNone, sharding};
  save_plan(plan, path);
  return path;
}

// A plan of Ling-Lite's shape over two pools, "fast" and "slow", each ep2 dp4: hetero DP and local
// SGD give "fast" three quarters of the batch (local SGD syncs every 50 steps); the pipeline puts
// 12 layers on "fast"'s stage and 16 on "slow"'s.
inline std::string write_two_pool_plan(const std::string& path, PoolStrategy strategy) {
  Plan plan;
  plan.model = ling_lite_shape();
  plan.hardware = {"cpu-core", "one CPU core", 8, 0.134, 8e9, 0, "USD"};
  plan.run.global_batch = 8960;
  plan.run.seq_len = 4096;
  plan.layout = Layout{1, 1, 1, 2, 4, 1, Recompute::kNone, false};
  MixedPlan m;
  m.strategy = strategy;
  const bool pipeline = strategy == PoolStrategy::kHeteroPipeline;
  m.pools = {PlanPool{"fast", plan.hardware, plan.layout, 0, pipeline ? 8960 : 6720, {}, 0},
             PlanPool{"slow", plan.hardware, plan.layout, 4, pipeline ? 8960 : 2240, {}, 0}};
  if (pipeline) m.pools[0].stage_layers = {12}, m.pools[1].stage_layers = {16};
  m.links = {PlanLink{"fast", "slow", 1.25e9, 2e-3, true}};
  if (strategy == PoolStrategy::kLocalSgd) m.sync_every_steps = 50;
  plan.mixed = m;
  save_plan(plan, path);
  return path;
}

}  // namespace flopwise::testing
