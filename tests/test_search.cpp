#include <gtest/gtest.h>

#include <numeric>

#include "flopwise/catalog.hpp"
#include "flopwise/comparison.hpp"
#include "flopwise/model_import.hpp"
#include "flopwise/search.hpp"
#include "test_helpers.hpp"

namespace flopwise {
namespace {

TrainingRun run_of(int global_batch) { return testing::tiny_run(global_batch, 1e10); }

long long total_rejected(const SearchResult& r) { return std::accumulate(r.rejected.begin(), r.rejected.end(), 0LL); }

// Every layout of `devices` ranked by time, none cut off by top-k.
SearchOptions all_layouts(DeviceRange devices) {
  SearchOptions o;
  o.devices = devices;
  o.objective = Objective::kMinTime;
  o.top_k = 1000000;
  return o;
}

}  // namespace

TEST(Search, FullyFixedLayoutIsEvaluatedAlone) {
  const CostModel cost(testing::tiny_moe(), run_of(64), testing::round_profile());
  SearchOptions o;
  o.devices = {8, 8};
  o.tp = 2, o.pp = 2, o.vpp = 1, o.ep = 2, o.etp = 2, o.dp = 2, o.micro_batch = 1;
  o.recompute = Recompute::kSelective;
  o.optimizer_sharding = true;
  const SearchResult r = search(cost, o);
  ASSERT_EQ(r.best.size(), 1u);
  EXPECT_EQ(r.best[0].layout, (Layout{2, 2, 1, 2, 2, 1, Recompute::kSelective, true}));
  EXPECT_EQ(r.considered, 1);
}

// Context parallelism is searched where each rank keeps at least 4,096 tokens of a sequence:
// 1,024-token sequences only at cp 1, 16,384-token ones at cp 1, 2 and 4; a fixed --cp alone.
TEST(Search, TriesContextParallelismForLongSequences) {
  SearchOptions o;
  o.devices = {1, 64};
  o.tp = 1, o.pp = 1, o.vpp = 1, o.ep = 1, o.etp = 1, o.dp = 1, o.micro_batch = 1;
  o.recompute = Recompute::kSelective;
  o.optimizer_sharding = true;
  EXPECT_EQ(search(CostModel(testing::tiny_moe(), run_of(64), testing::round_profile()), o).considered, 1);
  TrainingRun long_run = run_of(64);
  long_run.seq_len = 16384;
  const CostModel long_cost(testing::tiny_moe(), long_run, testing::round_profile());
  const SearchResult r = search(long_cost, o);
  EXPECT_EQ(r.considered, 3);
  std::set<int> cps;
  for (const Candidate& c : r.best) cps.insert(c.layout.cp);
  EXPECT_EQ(cps, (std::set<int>{1, 2, 4}));
  o.cp = 2;
  EXPECT_EQ(search(long_cost, o).considered, 1);
}

// With tp > 1 a MoE model's experts are tried at the attention's TP and folded (etp 1); a fixed
// --etp is the only value tried.
TEST(Search, TriesFoldedExpertsForMoeModels) {
  const CostModel cost(testing::tiny_moe(), run_of(64), testing::round_profile());
  SearchOptions o = all_layouts({8, 8});
  o.tp = 2;
  const SearchResult searched = search(cost, o);
  bool folded = false;
  for (const Candidate& c : searched.best) {
    EXPECT_TRUE(c.layout.etp == 0 || c.layout.etp == 1) << c.layout.etp;
    folded |= c.layout.etp == 1;
  }
  EXPECT_TRUE(folded);
  o.etp = 2;
  const SearchResult fixed = search(cost, o);
  EXPECT_EQ(2 * fixed.considered, searched.considered);
  for (const Candidate& c : fixed.best) EXPECT_EQ(c.layout.expert_tp(), 2);
}

TEST(Search, EveryEnumeratedLayoutIsCountedOnce) {
  const CostModel cost(testing::tiny_moe(), run_of(64), testing::round_profile());
  const SearchResult r = search(cost, all_layouts({1, 64}));
  EXPECT_EQ(r.considered, total_rejected(r) + static_cast<long long>(r.best.size()));
  EXPECT_GT(r.rejected[static_cast<size_t>(Constraint::kGlobalBatch)], 0);
  EXPECT_GT(r.rejected[static_cast<size_t>(Constraint::kPpLayers)], 0);
  EXPECT_GT(r.rejected[static_cast<size_t>(Constraint::kDevices)], 0);
  for (size_t i = 1; i < r.best.size(); ++i) EXPECT_LE(r.best[i - 1].cost.days, r.best[i].cost.days);
}

// With bf16 Adam moments every layout the search keeps shards its optimizer; the others are
// counted under their own rule.
TEST(Search, Bf16MomentsKeepOnlyShardedOptimizers) {
  TrainingRun run = run_of(64);
  run.adam_moments_in_bf16 = true;
  const CostModel cost(testing::tiny_moe(), run, testing::round_profile());
  const SearchResult r = search(cost, all_layouts({1, 64}));
  ASSERT_FALSE(r.best.empty());
  for (const Candidate& c : r.best) EXPECT_TRUE(c.layout.optimizer_sharding);
  EXPECT_GT(r.rejected[static_cast<size_t>(Constraint::kShardedMoments)], 0);
  EXPECT_EQ(r.considered, total_rejected(r) + static_cast<long long>(r.best.size()));
}

TEST(Search, ObjectivesPickDifferentEnds) {
  const CostModel cost(testing::tiny_moe(), run_of(64), testing::round_profile());
  SearchOptions o;
  o.devices = {1, 64};
  o.objective = Objective::kMinTime;
  const StepCost fastest = search(cost, o).best.front().cost;
  o.objective = Objective::kMinCost;
  const StepCost cheapest = search(cost, o).best.front().cost;
  EXPECT_LE(fastest.days, cheapest.days);
  EXPECT_LE(cheapest.cost, fastest.cost);
  EXPECT_LT(fastest.days, cheapest.days);  // more devices buy time, not savings
}

TEST(Search, DeadlineAndBudgetRemoveLayouts) {
  const CostModel cost(testing::tiny_moe(), run_of(64), testing::round_profile());
  SearchOptions o;
  o.devices = {1, 64};
  o.objective = Objective::kMinCost;
  const StepCost cheapest = search(cost, o).best.front().cost;
  o.objective = Objective::kMinCostDeadline;
  o.deadline_days = cheapest.days / 2;
  const SearchResult r = search(cost, o);
  ASSERT_FALSE(r.best.empty());
  EXPECT_LE(r.best.front().cost.days, o.deadline_days);
  EXPECT_GT(r.rejected[static_cast<size_t>(Constraint::kObjective)], 0);
  o.objective = Objective::kMinTimeBudget;
  o.budget = cheapest.cost * 1.0001;
  const SearchResult b = search(cost, o);
  ASSERT_FALSE(b.best.empty());
  EXPECT_LE(b.best.front().cost.cost, o.budget);
}

TEST(Search, MemoryRemovesLayoutsThatDoNotFit) {
  // Ling-Plus cannot train on 8 devices of 80 GB: weights alone are 580 GB in bf16.
  const CostModel cost(resolve_model("ling-plus"), run_of(64), testing::round_profile());
  SearchOptions o;
  o.devices = {1, 8};
  const SearchResult r = search(cost, o);
  EXPECT_TRUE(r.best.empty());
  EXPECT_GT(r.rejected[static_cast<size_t>(Constraint::kMemory)], 0);
  EXPECT_NE(r.example[static_cast<size_t>(Constraint::kMemory)].find("usable"), std::string::npos);
}

TEST(Search, BestLayoutsFitMemory) {
  TrainingRun run;  // the report's 8,960 x 4,096 batch
  const CostModel cost(resolve_model("ling-plus"), run, resolve_profile("device-D"));
  SearchOptions o;
  o.devices = {64, 2048};
  const SearchResult r = search(cost, o);
  ASSERT_FALSE(r.best.empty());
  for (const Candidate& c : r.best) {
    EXPECT_TRUE(c.cost.fits_memory());
    EXPECT_EQ(run.global_batch % (c.layout.dp * c.layout.micro_batch), 0);
  }
}

}  // namespace flopwise

namespace flopwise {

// With a fused kernel the search tries none, each module that drops a MoE layer's activations
// (moe_act, layernorm) alone and together, and full; with device memory between what moe_act
// and none need, moe_act wins, and the settings that only add recompute to a fitting one are
// removed as such, never costed.
TEST(Search, TriesRecomputeModulesOnlyWhereLessRecomputeDoesNotFit) {
  TrainingRun run = run_of(64);
  ModelConfig model = testing::tiny_moe();
  model.expert_ffn = 768;  // moe_act then drops more (2 copies x 768) than layernorm (1,024)
  SearchOptions o = all_layouts({8, 8});
  o.tp = 2, o.pp = 2, o.vpp = 1, o.ep = 2, o.etp = 2, o.dp = 2, o.micro_batch = 1;
  o.optimizer_sharding = true;
  const CostModel sizing(model, run, testing::round_profile());
  Layout l = *fixed_layout([&] { SearchOptions f = o; f.recompute = Recompute::kNone; return f; }(), model.layers);
  const std::vector<StageContents> stages = stage_contents(model, l);
  const Bytes none = sizing.memory(l, stages).total();
  l.recompute = Recompute::kSelective;
  l.recompute_modules = RecomputeModules{static_cast<unsigned>(RecomputeModule::kMoeAct)};
  const Bytes act = sizing.memory(l, stages).total();
  l.recompute_modules = RecomputeModules{static_cast<unsigned>(RecomputeModule::kLayernorm)};
  const Bytes norm = sizing.memory(l, stages).total();
  ASSERT_LT(act, norm);
  ASSERT_LT(norm, none);
  run.memory_headroom = 1.0 - (act + norm) / 2.0 / testing::round_profile().device.memory_bytes;
  const SearchResult r = search(CostModel(model, run, testing::round_profile()), o);
  // none, both modules, moe_act, layernorm, full.
  EXPECT_EQ(r.considered, 5);
  ASSERT_EQ(r.best.size(), 1u);
  EXPECT_EQ(r.best.front().layout.recompute, Recompute::kSelective);
  EXPECT_EQ(to_string(r.best.front().layout.recompute_modules), "moe_act");
  EXPECT_EQ(r.rejected[static_cast<size_t>(Constraint::kMemory)], 2);             // none, layernorm
  EXPECT_EQ(r.rejected[static_cast<size_t>(Constraint::kLessRecomputeFits)], 2);  // both, full
  EXPECT_EQ(r.evaluated, 1);
  EXPECT_NE(r.example[static_cast<size_t>(Constraint::kLessRecomputeFits)].find("fits the same layout"), std::string::npos);

  // Memory for none: nothing else is sized or costed.
  run.memory_headroom = 0.1;
  const SearchResult roomy = search(CostModel(model, run, testing::round_profile()), o);
  ASSERT_EQ(roomy.best.size(), 1u);
  EXPECT_EQ(roomy.best.front().layout.recompute, Recompute::kNone);
  EXPECT_EQ(roomy.rejected[static_cast<size_t>(Constraint::kLessRecomputeFits)], 4);
  EXPECT_EQ(roomy.evaluated, 1);
  // The unfused kernel keeps its s x s scores, which core_attn drops: one more module, alone and
  // in the union.
  run.attention = AttentionKernel::kUnfused;
  EXPECT_EQ(search(CostModel(model, run, testing::round_profile()), o).considered, 6);
}

// The profiles of a comparison search side by side; each must come out as its own search alone,
// and the winner as if they had run one after another.
TEST(Comparison, ProfilesSearchedSideBySideMatchTheirOwnSearches) {
  const ModelConfig model = resolve_model("ling-lite");
  const TrainingRun run = run_of(512);
  SearchOptions o;
  o.devices = DeviceRange{8, 256};
  o.objective = Objective::kMinTime;
  const std::vector<std::string> names{"device-A", "device-B", "device-C", "device-D", "device-E", "h100-sxm"};
  std::vector<int> reported;
  const Comparison c = compare_profiles(model, run, o, names, 0, {[&](int done, int) { reported.push_back(done); }});
  EXPECT_EQ(reported, (std::vector<int>{1, 2, 3, 4, 5, 6}));
  ASSERT_EQ(c.entries.size(), names.size());
  int best = -1;
  for (size_t i = 0; i < names.size(); ++i) {
    const ProfileResult& e = c.entries[i];
    ASSERT_TRUE(e.searched);
    ASSERT_NE(e.top(), nullptr) << names[i];
    const SearchResult alone = search(CostModel(model, run, resolve_profile(names[i])), o);
    EXPECT_EQ(e.result.considered, alone.considered) << names[i];
    EXPECT_EQ(e.top()->layout, alone.best.front().layout) << names[i];
    EXPECT_DOUBLE_EQ(e.top()->cost.step_time_s, alone.best.front().cost.step_time_s) << names[i];
    if (best < 0 || e.top()->cost.step_time_s < c.entries[best].top()->cost.step_time_s) best = static_cast<int>(i);
  }
  EXPECT_EQ(c.best, best);
}

// A cancel keeps the profiles before the first one it skipped, and the winner among them.
TEST(Comparison, CancelKeepsTheSearchedPrefix) {
  const ModelConfig model = resolve_model("ling-lite");
  SearchOptions o;
  o.devices = DeviceRange{8, 64};
  std::atomic<bool> cancel{false};
  const std::vector<std::string> names{"device-A", "device-B", "device-C", "device-D", "device-E"};
  const Comparison c = compare_profiles(model, run_of(512), o, names, 0, {[&](int, int) { cancel = true; }, &cancel});
  EXPECT_TRUE(c.cancelled);
  ASSERT_TRUE(c.entries.front().searched);
  EXPECT_FALSE(c.entries.back().searched);
  for (size_t i = 1; i < c.entries.size(); ++i) {
    if (c.entries[i].searched) EXPECT_TRUE(c.entries[i - 1].searched) << i;
    if (!c.entries[i].searched) EXPECT_EQ(c.entries[i].cost, nullptr) << i;
  }
  ASSERT_GE(c.best, 0);
  EXPECT_TRUE(c.entries[c.best].searched);
}

}  // namespace flopwise
