#include <gtest/gtest.h>

#include "flopwise/layout.hpp"
#include "test_helpers.hpp"

namespace flopwise {
namespace {

std::optional<Constraint> violated(const Layout& l, int global_batch = 64, DeviceRange range = {1, 4096}) {
  TrainingRun run;
  run.global_batch = global_batch;
  return violated_constraint(testing::tiny_moe(), run, testing::round_profile(), range, l);
}

}  // namespace

TEST(Layout, ValidLayoutPasses) { EXPECT_FALSE(violated(Layout{2, 2, 1, 2, 4, 1, Recompute::kNone, false})); }

TEST(Layout, EachRuleRemovesWhatBreaksIt) {
  EXPECT_EQ(violated(Layout{4, 1, 1, 1, 1, 1}), Constraint::kTpHeads);  // 2 KV heads
  ModelConfig wide = testing::tiny_moe();
  wide.heads = wide.kv_heads = 16;
  EXPECT_EQ(violated_constraint(wide, TrainingRun{}, testing::round_profile(), {1, 4096}, Layout{16, 1, 1, 1, 1, 1}),
            Constraint::kTpNode);  // 16 > 8 devices per node
  EXPECT_EQ(violated(Layout{1, 3, 1, 1, 1, 1}), Constraint::kPpLayers);
  EXPECT_EQ(violated(Layout{1, 2, 4, 1, 1, 1}), Constraint::kPpLayers);  // 2 x 4 > 4 layers
  EXPECT_EQ(violated(Layout{1, 1, 2, 1, 1, 1}), Constraint::kVirtualStages);  // interleaving without a pipeline
  EXPECT_EQ(violated(Layout{1, 2, 2, 3, 3, 1}), Constraint::kEpExperts);
  EXPECT_EQ(violated(Layout{1, 1, 1, 4, 2, 1}), Constraint::kExpertGrid);
  EXPECT_EQ(violated(Layout{1, 1, 1, 1, 3, 1}), Constraint::kGlobalBatch);
  EXPECT_EQ(violated(Layout{1, 2, 2, 1, 64, 1}), Constraint::kVirtualStages);  // 1 micro-batch, pp 2
  EXPECT_EQ(violated(Layout{1, 4, 1, 1, 1, 1}, 64, {8, 4096}), Constraint::kDevices);
}

TEST(Layout, VirtualStagesNeedPipelineAndGroupsOfPp) {
  ModelConfig deep = testing::tiny_moe();
  deep.layers = 8;
  TrainingRun run;
  run.global_batch = 6;
  const HardwareProfile p = testing::round_profile();
  EXPECT_EQ(violated_constraint(deep, run, p, {1, 64}, Layout{1, 1, 2, 1, 1, 1}), Constraint::kVirtualStages);
  EXPECT_EQ(violated_constraint(deep, run, p, {1, 64}, Layout{1, 4, 2, 1, 1, 1}), Constraint::kVirtualStages);  // 6 % 4
  EXPECT_FALSE(violated_constraint(deep, run, p, {1, 64}, Layout{1, 2, 2, 1, 1, 1}));
}

TEST(Layout, ExplanationsNameTheFactors) {
  const TrainingRun run;
  const auto v = check_structure(testing::tiny_moe(), run, testing::round_profile(), {1, 4096}, Layout{4, 1, 1, 1, 1, 1});
  ASSERT_TRUE(v);
  EXPECT_EQ(v->message, "tp=4 must divide heads (8) and KV heads (2)");
}

// tp=2, ep=2, dp=4, pp=2 on 8-device nodes: rank = tp + 2 (dp + 4 pp).
TEST(RankGrid, GroupsFollowTheExportedOrder) {
  const RankGrid grid(Layout{2, 2, 1, 2, 4, 1}, 8);
  const RankCoords c = grid.coords(5);
  EXPECT_EQ(c.tp, 1);
  EXPECT_EQ(c.dp, 2);
  EXPECT_EQ(c.pp, 0);
  EXPECT_EQ(c.ep, 0);
  EXPECT_EQ(c.expert_dp, 1);
  EXPECT_EQ(grid.rank_of(c), 5);
  EXPECT_EQ(grid.group(GroupKind::kTp, 5), (std::vector<int>{4, 5}));
  EXPECT_EQ(grid.group(GroupKind::kEp, 5), (std::vector<int>{5, 7}));
  EXPECT_EQ(grid.group(GroupKind::kDp, 5), (std::vector<int>{1, 3, 5, 7}));
  EXPECT_EQ(grid.group(GroupKind::kExpertDp, 5), (std::vector<int>{1, 5}));
  EXPECT_EQ(grid.group(GroupKind::kPp, 5), (std::vector<int>{5, 13}));
  EXPECT_EQ(grid.members_per_node(GroupKind::kDp), 4);
  EXPECT_EQ(grid.members_per_node(GroupKind::kPp), 1);  // stages sit on different nodes
}

// Context parallelism sits between TP and DP (Megatron-Core's "tp-cp-ep-dp-pp"): tp 2, cp 2,
// dp 2, pp 2 on 8-device nodes. Rank 5 is tp 1, cp 0, dp 1; its gradients reduce over the dp x cp
// ranks holding its weights.
TEST(RankGrid, ContextParallelRanksSitBetweenTpAndDp) {
  Layout l{2, 2, 1, 1, 2, 1};
  l.cp = 2;
  const RankGrid grid(l, 8);
  const RankCoords c = grid.coords(5);
  EXPECT_EQ(c.tp, 1);
  EXPECT_EQ(c.cp, 0);
  EXPECT_EQ(c.dp, 1);
  EXPECT_EQ(c.pp, 0);
  EXPECT_EQ(grid.rank_of(c), 5);
  EXPECT_EQ(l.devices(), 16);
  EXPECT_EQ(grid.group(GroupKind::kCp, 5), (std::vector<int>{5, 7}));
  EXPECT_EQ(grid.group(GroupKind::kDp, 5), (std::vector<int>{1, 5}));
  EXPECT_EQ(grid.group(GroupKind::kDpCp, 5), (std::vector<int>{1, 3, 5, 7}));
  EXPECT_EQ(grid.group(GroupKind::kPp, 5), (std::vector<int>{5, 13}));
  EXPECT_EQ(grid.members_per_node(GroupKind::kDpCp), 4);
  // The experts fold over all tp x cp x dp = 8 ranks of a stage.
  l.ep = 8;
  l.etp = 1;
  EXPECT_EQ(l.expert_dp(), 1);
  EXPECT_EQ(RankGrid(l, 8).group(GroupKind::kEp, 5), (std::vector<int>{0, 1, 2, 3, 4, 5, 6, 7}));
}

// Megatron-Core cuts each sequence into 2 x cp chunks: 4,096 tokens take cp 4, not 3.
TEST(Layout, ContextParallelNeedsTwiceItsDegreeToDivideTheSequence) {
  Layout l{1, 1, 1, 1, 1, 1, Recompute::kNone, false};
  l.cp = 4;
  EXPECT_FALSE(violated(l));
  l.cp = 3;
  ASSERT_EQ(violated(l), Constraint::kCpSequence);
  EXPECT_EQ(explain(Constraint::kCpSequence, testing::tiny_moe(), TrainingRun{}, testing::round_profile(), {1, 4096}, l),
            "2 x cp = 6 must divide the sequence (4096 tokens)");
}

// Megatron's module names, comma-separated, kept in Megatron's order whatever order they were
// given in; unknown names and empty lists are refused naming the field.
TEST(Layout, RecomputeModulesParseByMegatronsNames) {
  const RecomputeModules m = parse_recompute_modules("mlp,moe_act,core_attn", "x.yaml", "layout.recompute_modules");
  EXPECT_EQ(to_string(m), "core_attn,moe_act,mlp");
  EXPECT_EQ(abbreviated(m), "attn,act,mlp");
  EXPECT_EQ(module_names(m), (std::vector<std::string>{"core_attn", "moe_act", "mlp"}));
  EXPECT_TRUE(m.has(RecomputeModule::kMoeAct));
  EXPECT_FALSE(m.has(RecomputeModule::kLayernorm));
  EXPECT_TRUE(RecomputeModules{}.is_default());
  EXPECT_EQ(to_string(RecomputeModules{}), "core_attn");
  EXPECT_EQ(testing::error_of([] { parse_recompute_modules("core_attn,attn", "x.yaml", "layout.recompute_modules"); }),
            "x.yaml: layout.recompute_modules: unknown recompute module 'attn' (expected core_attn, moe_act, "
            "layernorm, mla_up_proj or mlp)");
  EXPECT_EQ(testing::error_of([] { parse_recompute_modules(",", "x.yaml", "layout.recompute_modules"); }),
            "x.yaml: layout.recompute_modules: names no module");
}

// Modules other than the default need selective recompute, and a model that has them (Megatron-Core
// refuses moe_act without experts and mla_up_proj without latent attention; mlp recomputes dense
// layers, which tiny_moe has none of).
TEST(Layout, RecomputeModulesNeedSelectiveRecomputeAndTheirParts) {
  Layout l{1, 1, 1, 1, 1, 1, Recompute::kSelective, false};
  l.recompute_modules = parse_recompute_modules("core_attn,moe_act,layernorm", "t", "");
  EXPECT_FALSE(violated(l));
  l.recompute = Recompute::kNone;
  ASSERT_EQ(violated(l), Constraint::kRecomputeModules);
  EXPECT_EQ(explain(Constraint::kRecomputeModules, testing::tiny_moe(), TrainingRun{}, testing::round_profile(), {1, 4096}, l),
            "recompute modules core_attn,moe_act,layernorm need selective recompute (the layout has none)");
  l.recompute = Recompute::kSelective;
  for (const char* module : {"mla_up_proj", "mlp"}) {
    l.recompute_modules = parse_recompute_modules(module, "t", "");
    EXPECT_EQ(violated(l), Constraint::kRecomputeModules) << module;
  }
  ModelConfig dense = testing::tiny_moe();
  dense.routed_experts = 0;
  dense.dense_ffn = 2048;
  l.recompute_modules = parse_recompute_modules("moe_act", "t", "");
  EXPECT_EQ(explain(Constraint::kRecomputeModules, dense, TrainingRun{}, testing::round_profile(), {1, 4096}, l),
            "moe_act needs a model with routed experts");
}

TEST(RankGrid, EveryRankIsInExactlyOneGroupOfEachKind) {
  Layout folded{4, 3, 1, 4, 2, 1};
  folded.etp = 2;
  for (const Layout& l : {Layout{2, 3, 1, 2, 4, 1}, folded}) {
    const RankGrid grid(l, 8);
    for (GroupKind kind : kGroupKinds) {
      std::vector<int> seen(l.devices(), 0);
      for (int rank = 0; rank < l.devices(); ++rank) {
        const auto members = grid.group(kind, rank);
        EXPECT_NE(std::find(members.begin(), members.end(), rank), members.end());
        for (int m : members) seen[m] += 1;
      }
      for (int count : seen) EXPECT_EQ(count, grid.size(kind)) << to_string(kind);
    }
  }
}

// MoE parallel folding: tp=2, dp=4 on a stage's 8 ranks; the experts regroup them as etp=1 x ep=4
// x expert_dp=2 (Megatron-Core's expert rank generator, etp adjacent, then EP): EP spans the TP
// pairs, so an EP group of 4 needs only 4 adjacent ranks where ep over DP would stride by tp.
TEST(RankGrid, FoldedExpertGroupsSpanTensorParallelRanks) {
  Layout l{2, 2, 1, 4, 4, 1};
  l.etp = 1;
  EXPECT_EQ(l.expert_dp(), 2);
  const RankGrid grid(l, 8);
  const RankCoords c = grid.coords(13);  // stage 1, in-stage rank 5
  EXPECT_EQ(c.tp, 1);
  EXPECT_EQ(c.dp, 2);
  EXPECT_EQ(c.expert_tp, 0);
  EXPECT_EQ(c.ep, 1);
  EXPECT_EQ(c.expert_dp, 1);
  EXPECT_EQ(grid.group(GroupKind::kEp, 13), (std::vector<int>{12, 13, 14, 15}));
  EXPECT_EQ(grid.group(GroupKind::kExpertDp, 13), (std::vector<int>{9, 13}));
  EXPECT_EQ(grid.group(GroupKind::kExpertTp, 13), (std::vector<int>{13}));
  EXPECT_EQ(grid.group(GroupKind::kTp, 13), (std::vector<int>{12, 13}));
  EXPECT_EQ(grid.members_per_node(GroupKind::kEp), 4);
  // The default (etp = tp) is the unfolded grid: EP inside DP, stride tp.
  l.etp = 0;
  EXPECT_EQ(RankGrid(l, 8).group(GroupKind::kEp, 13), (std::vector<int>{9, 11, 13, 15}));
}

TEST(Layout, ExpertGridMustDivideTheStage) {
  const HardwareProfile p = testing::round_profile();
  const TrainingRun run;
  Layout l{2, 1, 1, 8, 2, 1};  // tp x dp = 4 ranks cannot hold 8 EP ranks of etp 1
  l.etp = 1;
  EXPECT_EQ(violated_constraint(testing::tiny_moe(), run, p, {1, 4096}, l), Constraint::kExpertGrid);
  EXPECT_EQ(explain(Constraint::kExpertGrid, testing::tiny_moe(), run, p, {1, 4096}, l),
            "etp x ep = 8 must divide tp x dp = 4");
  l.dp = 4;
  EXPECT_FALSE(violated_constraint(testing::tiny_moe(), run, p, {1, 4096}, l));
  l.etp = 3;  // 3 does not divide the 8 devices of a node
  EXPECT_EQ(violated_constraint(testing::tiny_moe(), run, p, {1, 4096}, l), Constraint::kExpertGrid);
}

}  // namespace flopwise

namespace flopwise {

// Megatron-Core's uneven pipeline: first and last rank hold their own counts, the middle ranks an
// equal share of the rest, each rank's layers split over its vpp chunks in chunk order.
TEST(PipelineStages, UnevenEndsSplitTheLayersByHand) {
  Layout l{1, 16, 2, 1, 1, 1};
  EXPECT_FALSE(stages_fit(126, l));  // 32 chunks do not divide 126 layers
  ASSERT_TRUE(balance_stages(126, l));
  EXPECT_EQ(l.first_stage_layers, 6);  // 6 + 14 x 8 + 8 = 126
  EXPECT_EQ(l.last_stage_layers, 8);
  EXPECT_EQ(split_label(l), "ends6/8");
  EXPECT_EQ(rank_layer_count(126, l, 0), 6);
  EXPECT_EQ(rank_layer_count(126, l, 7), 8);
  EXPECT_EQ(chunk_layers(126, l, 0).count, 3);    // rank 0, round 0: layers 0-2
  EXPECT_EQ(chunk_layers(126, l, 1).first, 3);    // rank 1 starts after rank 0's 3
  EXPECT_EQ(chunk_layers(126, l, 15).first, 3 + 14 * 4);
  EXPECT_EQ(chunk_layers(126, l, 15).count, 4);   // the last rank's 8 over 2 chunks
  EXPECT_EQ(chunk_layers(126, l, 16).first, 63);  // round 1 starts half-way
  EXPECT_EQ(chunk_layers(126, l, 31).first + chunk_layers(126, l, 31).count, 126);

  Layout plus{1, 16, 1, 1, 1, 1};
  ASSERT_TRUE(balance_stages(88, plus));  // Ling-Plus: 2 + 14 x 6 + 2
  EXPECT_EQ(plus.first_stage_layers, 2);
  EXPECT_EQ(plus.last_stage_layers, 2);
  Layout even{1, 4, 1, 1, 1, 1};
  ASSERT_TRUE(balance_stages(8, even));
  EXPECT_EQ(even.first_stage_layers + even.last_stage_layers, 0);
}

// End ranks whose layers do not divide over their chunks (Megatron-Core's layout string):
// DeepSeek-V3's 61 layers on 8 x 4 chunks with 7 on the first rank and 6 on the last, as
// Megatron-Bridge's "Et|(tt|)*30mL" has them; the first rank's extra layers go to its later chunks
// (1, 2, 2, 2: the embedding's chunk lightest), the other ranks' to their earlier ones.
TEST(PipelineStages, EndsThatDoNotDivideOverTheirChunksSplitByHand) {
  Layout l{1, 8, 4, 1, 1, 1};
  l.first_stage_layers = 7;
  l.last_stage_layers = 6;
  ASSERT_TRUE(stages_fit(61, l));  // 7 + 6 x 8 + 6
  EXPECT_EQ(chunk_layers(61, l, 0).count, 1);   // E t
  EXPECT_EQ(chunk_layers(61, l, 1).first, 1);   // rank 1's 2 of round 0
  EXPECT_EQ(chunk_layers(61, l, 7).first, 13);  // 1 + 6 x 2
  EXPECT_EQ(chunk_layers(61, l, 7).count, 2);   // the last rank's 6: 2, 2, 1, 1
  EXPECT_EQ(chunk_layers(61, l, 8).first, 15);  // round 1: 1 + 12 + 2
  EXPECT_EQ(chunk_layers(61, l, 8).count, 2);
  EXPECT_EQ(chunk_layers(61, l, 31).count, 1);
  EXPECT_EQ(chunk_layers(61, l, 31).first + 1, 61);
  int total = 0;
  for (int c = 0; c < 32; ++c) total += chunk_layers(61, l, c).count;
  EXPECT_EQ(total, 61);
  // Llama 3 405B's 126 layers on 16 ranks with one layer fewer on each end (7 + 14 x 8 + 7),
  // interleaved 4 ways.
  Layout meta{1, 16, 4, 1, 1, 1};
  meta.first_stage_layers = meta.last_stage_layers = 7;
  EXPECT_TRUE(stages_fit(126, meta));
  meta.first_stage_layers = 3;  // fewer layers than chunks
  EXPECT_FALSE(stages_fit(126, meta));
}

TEST(PipelineStages, BrokenEndsAreRefusedWithTheirFigures) {
  Layout odd{1, 2, 2, 1, 1, 1};
  odd.first_stage_layers = 1;  // leaves one of vpp = 2 chunks without a layer
  EXPECT_FALSE(stages_fit(4, odd));
  Layout l{1, 2, 1, 1, 1, 1};
  l.first_stage_layers = 1;
  EXPECT_TRUE(stages_fit(4, l));  // 1 + 3
  EXPECT_EQ(violated(l), std::nullopt);
  l.last_stage_layers = 2;  // 1 + 2 leaves one of tiny_moe's 4 layers on no rank
  EXPECT_EQ(violated(l), Constraint::kPpLayers);
  TrainingRun run;
  run.global_batch = 64;
  const std::string why = explain(Constraint::kPpLayers, testing::tiny_moe(), run, testing::round_profile(), {1, 4096}, l);
  EXPECT_NE(why.find("first/last stage layers 1/2"), std::string::npos) << why;
}

// Megatron-Core's --account-for-embedding/loss-in-pipeline-split: 94 + 2 slots on 8 x 4 chunks
// of 3, the embedding taking slot 0 and the loss the last one (Qwen3-235B-A22B's split).
TEST(PipelineStages, EndsCountedAsLayersSplitTheLayersByHand) {
  Layout l{1, 8, 4, 1, 1, 1};
  ASSERT_FALSE(stages_fit(94, l));
  // No lighter-ends split: middle ranks of 12 leave 22 to the ends, 8 + 14 (14 > 12), and of 8
  // leave 46 (> 2 x 8).
  ASSERT_TRUE(balance_stages(94, l));
  EXPECT_TRUE(l.embedding_in_split);
  EXPECT_TRUE(l.loss_in_split);
  EXPECT_EQ(l.first_stage_layers + l.last_stage_layers, 0);
  EXPECT_EQ(split_label(l), "+emb +loss");
  EXPECT_EQ(chunk_slots(94, l), 3);
  EXPECT_EQ(chunk_layers(94, l, 0).first, 0);  // embedding + layers 0-1
  EXPECT_EQ(chunk_layers(94, l, 0).count, 2);
  EXPECT_EQ(chunk_layers(94, l, 1).first, 2);  // slots 3-5: layers 2-4
  EXPECT_EQ(chunk_layers(94, l, 1).count, 3);
  EXPECT_EQ(chunk_layers(94, l, 8).first, 23);  // round 1 on rank 0: slots 24-26
  EXPECT_EQ(chunk_layers(94, l, 31).first, 92);  // layers 92-93 + loss
  EXPECT_EQ(chunk_layers(94, l, 31).count, 2);
  EXPECT_EQ(rank_layer_count(94, l, 0), 11);
  EXPECT_EQ(rank_layer_count(94, l, 3), 12);
  EXPECT_EQ(rank_layer_count(94, l, 7), 11);
  int total = 0;
  for (int r = 0; r < l.pp; ++r) total += rank_layer_count(94, l, r);
  EXPECT_EQ(total, 94);

  // The loss alone when that is what divides (two ranks have no middle for lighter ends): 7 + 1
  // on 2 x 2 chunks of 2, the last holding layer 6 and the loss.
  Layout loss{1, 2, 2, 1, 1, 1};
  ASSERT_TRUE(balance_stages(7, loss));
  EXPECT_FALSE(loss.embedding_in_split);
  EXPECT_TRUE(loss.loss_in_split);
  EXPECT_EQ(chunk_layers(7, loss, 3).first, 6);
  EXPECT_EQ(chunk_layers(7, loss, 3).count, 1);

  // Not with first/last stage layers.
  Layout both = l;
  both.first_stage_layers = 8;
  EXPECT_FALSE(stages_fit(94, both));
  Layout thin{1, 4, 1, 1, 1, 1};
  thin.embedding_in_split = thin.loss_in_split = true;
  EXPECT_TRUE(stages_fit(6, thin));   // 8 slots: 1 + 2 + 2 + 1
  EXPECT_FALSE(stages_fit(3, thin));  // 5 slots on 4 chunks

  // An end chunk may hold the embedding or the loss alone, as Megatron-Core builds it: Llama 3
  // 405B's 126 layers + 2 on 16 x 8 chunks of one slot (Llama 3 paper, section 3.3.2).
  Layout meta{8, 16, 8, 1, 64, 1};
  meta.embedding_in_split = meta.loss_in_split = true;
  ASSERT_TRUE(stages_fit(126, meta));
  EXPECT_EQ(chunk_layers(126, meta, 0).count, 0);     // the embedding alone
  EXPECT_EQ(chunk_layers(126, meta, 1).first, 0);     // slot 1: layer 0
  EXPECT_EQ(chunk_layers(126, meta, 127).first, 126);  // the loss alone
  EXPECT_EQ(chunk_layers(126, meta, 127).count, 0);
  EXPECT_EQ(chunk_layers(126, meta, 126).first, 125);
  EXPECT_EQ(rank_layer_count(126, meta, 0), 7);
  EXPECT_EQ(rank_layer_count(126, meta, 1), 8);
  EXPECT_EQ(rank_layer_count(126, meta, 15), 7);
  TrainingRun run;
  run.global_batch = 64;
  Layout refused{1, 2, 1, 1, 1, 1};
  refused.loss_in_split = true;  // tiny_moe's 4 layers + 1 on 2 chunks
  EXPECT_EQ(violated(refused), Constraint::kPpLayers);
  const std::string why = explain(Constraint::kPpLayers, testing::tiny_moe(), run, testing::round_profile(), {1, 4096}, refused);
  EXPECT_NE(why.find("with the embedding and loss counted (5)"), std::string::npos) << why;
}

}  // namespace flopwise
