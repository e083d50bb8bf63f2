// The executor's torch-free parts: plan reading, scaling, rank groups, recipe, anomaly guard,
// checkpoint store, progress and loss log, data order.
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include <cmath>
#include <filesystem>
#include <functional>
#include <fstream>
#include <set>

#include "executor_test_plans.hpp"
#include "flopwise/executor/anomaly_guard.hpp"
#include "flopwise/executor/checkpoint_store.hpp"
#include "flopwise/executor/data.hpp"
#include "flopwise/executor/mixed_run.hpp"
#include "flopwise/executor/progress.hpp"
#include "flopwise/executor/recipe.hpp"
#include "flopwise/executor/spec.hpp"

namespace flopwise::executor {

TEST(ExecutorSpec, ScalingKeepsGroupsExpertsAndTopK) {
  const ModelConfig lite = testing::ling_lite_shape();
  const ModelConfig s = scale_model(lite, 1.0 / 16, 256, 2);
  EXPECT_EQ(s.heads / s.kv_heads, 4);
  EXPECT_EQ(s.kv_heads, 2);  // at least two, so TP = 2 can split them
  EXPECT_EQ(s.expert_ffn % 8, 0);
  EXPECT_EQ(s.routed_experts, 64);
  EXPECT_EQ(s.top_k, 6);
  EXPECT_EQ(s.hidden, 128);
  EXPECT_EQ(s.layers % 2, 0);
  EXPECT_EQ(s.vocab, 256);
  EXPECT_THROW(scale_model(lite, 0.0, 256, 1), InputError);
}

TEST(ExecutorSpec, LayoutsTooBigForTheMachineAreScaledWithAMessage) {
  const ModelConfig m = testing::ling_lite_shape();
  Layout l{2, 4, 1, 8, 64, 1, Recompute::kNone, false};
  int batch = 8960;
  const std::string note = fit_layout(l, batch, m, 4);
  EXPECT_LE(l.devices(), 4);
  EXPECT_EQ(l.dp % l.ep, 0);
  EXPECT_NE(note.find("scaled to"), std::string::npos) << note;
  // A plan's uneven pipeline ends are rebalanced when the pipeline shrinks.
  Layout uneven{1, 16, 1, 1, 1, 1, Recompute::kNone, false};
  ModelConfig eighty_eight = m;
  eighty_eight.layers = 88;
  uneven.first_stage_layers = uneven.last_stage_layers = 2;
  int uneven_batch = 16;
  const std::string rebalanced = fit_layout(uneven, uneven_batch, eighty_eight, 4);
  EXPECT_TRUE(stages_fit(88, uneven));
  EXPECT_NE(rebalanced.find("pipeline split ends2/2 -> even"), std::string::npos) << rebalanced;
  Layout fits{1, 1, 1, 1, 2, 1, Recompute::kNone, false};
  int same = 16;
  EXPECT_EQ(fit_layout(fits, same, m, 4), "");
  // Folded experts (EP over TP ranks) are planned, not executed: they run at the attention's TP.
  Layout folded{2, 1, 1, 2, 1, 1, Recompute::kNone, false};
  folded.etp = 1;
  int folded_batch = 16;
  const std::string unfolded = fit_layout(folded, folded_batch, m, 4);
  EXPECT_EQ(folded.etp, 0);
  EXPECT_EQ(folded.dp % folded.ep, 0);
  EXPECT_NE(unfolded.find("experts run at the attention's tp2 (etp1"), std::string::npos) << unfolded;
  // Context parallelism is planned, not executed: each sequence runs whole, the CP ranks as
  // replicas (the world size kept, the micro-batches per replica too, so the batch grows).
  Layout context{1, 1, 1, 1, 2, 1, Recompute::kNone, false};
  context.cp = 2;
  int context_batch = 16;
  const std::string whole = fit_layout(context, context_batch, m, 4);
  EXPECT_EQ(context.cp, 1);
  EXPECT_EQ(context.dp, 4);
  EXPECT_EQ(context_batch, 32);
  EXPECT_NE(whole.find("each sequence runs whole on one rank: cp2 runs as data parallelism"), std::string::npos) << whole;
  EXPECT_NE(whole.find("global batch 16 -> 32"), std::string::npos) << whole;
}

// What the executor trains differently from the plan is said, not silently dropped.
TEST(ExecutorSpec, FeaturesItDoesNotRunAreNamed) {
  ModelConfig m = testing::ling_lite_shape();
  TrainingRun run;
  EXPECT_EQ(features_not_run(m, run), "");
  m.mtp_layers = 1;
  m.attention_window = 128;
  m.windowed_layers = 2;
  run.moe_capacity_factor = 1.25;
  m.learned_positions = true;
  run.ep_dispatcher = EpDispatcher::kFlex;
  run.grad_reduce_in_bf16 = true;
  run.adam_moments_in_bf16 = true;  // trained as the plan says: no note
  run.hidden_dropout = 0.1;
  run.router_fusion = true;
  run.router_balancing = RouterBalancing::none();
  EXPECT_EQ(features_not_run(m, run),
            "1 multi-token-prediction depth(s) are not trained (next-token loss only); local attention (windows of 128 "
            "in 2 layers, chunks of 0 in 0) runs as full causal attention; learned positions run as rotary embeddings "
            "(RoPE); gradients are reduced in fp32, as the fp32 training here keeps them; the flex dispatcher runs as a plain all-to-all (a copy per expert); "
            "dropout is not applied; the router runs in plain torch ops with the load-balance loss and z-loss "
            "(aux_loss,z_loss), not fused none; the capacity factor 1.25 is not applied: dispatch is dropless");
}

// Every layout the executor tests train (test_executor_training.cpp, test_executor_calibration.cpp),
// and the larger ones fit_layout shrinks plans from: the executor's process groups are the core
// rank grid's groups, and each kind of group partitions the world.
TEST(ExecutorSpec, GroupsAreTheCoreRankGridsForEveryTestedLayout) {
  const std::vector<Layout> layouts = {
      {1, 1, 1, 1, 1, 1}, {1, 1, 1, 1, 2, 1}, {1, 1, 1, 2, 2, 1}, {1, 2, 1, 1, 1, 1}, {2, 1, 1, 1, 1, 1},
      {2, 1, 1, 2, 2, 1}, {1, 2, 1, 2, 2, 1}, {1, 1, 1, 1, 4, 1}, {1, 2, 1, 1, 2, 1}, {2, 4, 1, 8, 64, 1}};
  for (const Layout& l : layouts) {
    const RankGrid grid(l, 8);
    for (int rank = 0; rank < l.devices(); ++rank) {
      const GroupMembers g = group_members(l, rank);
      EXPECT_EQ(g.tp, grid.group(GroupKind::kTp, rank));
      EXPECT_EQ(g.dp, grid.group(GroupKind::kDp, rank));
      EXPECT_EQ(g.ep, grid.group(GroupKind::kEp, rank));
      EXPECT_EQ(g.expert_dp, grid.group(GroupKind::kExpertDp, rank));
      const RankCoords me = grid.coords(rank);
      for (int other : g.tp) EXPECT_TRUE(grid.coords(other).dp == me.dp && grid.coords(other).pp == me.pp);
      for (int other : g.dp) EXPECT_TRUE(grid.coords(other).tp == me.tp && grid.coords(other).pp == me.pp);
      for (int other : g.ep) EXPECT_EQ(grid.coords(other).expert_dp, me.expert_dp);
      for (int other : g.expert_dp) EXPECT_EQ(grid.coords(other).ep, me.ep);
      EXPECT_EQ(static_cast<int>(g.tp.size() * g.dp.size()) * l.pp, l.devices());
      EXPECT_EQ(g.ep.size() * g.expert_dp.size(), g.dp.size());
    }
  }
  // Hand-checked: tp1 pp2 ep2 dp4, rank 5 is stage 1, DP rank 1.
  const GroupMembers g = group_members({1, 2, 1, 2, 4, 1}, 5);
  EXPECT_EQ(g.dp, (std::vector<int>{4, 5, 6, 7}));
  EXPECT_EQ(g.ep, (std::vector<int>{4, 5}));
  EXPECT_EQ(g.expert_dp, (std::vector<int>{5, 7}));
}

TEST(ExecutorSpec, PlansAreReadByTheCorePlanReader) {
  const std::string path = ::testing::TempDir() + "/executor_bad_plan.json";
  std::ofstream(path) << R"({"schema": "flopwise.plan/1", "model": {"name": "x"}})";
  try {
    load_plan(path);
    FAIL();
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("model.family: missing field"), std::string::npos) << e.what();
  }
  EXPECT_THROW(load_plan("/no/such/plan.json"), InputError);
  const std::string good = testing::write_ling_lite_plan(::testing::TempDir() + "/executor_good_plan.json", 2, 2, 2, 4, true);
  const Plan plan = load_plan(good);
  EXPECT_EQ(plan.layout, (Layout{2, 2, 1, 2, 4, 1, Recompute::kNone, true}));
  EXPECT_EQ(plan.model.routed_experts, 64);
}

TEST(ExecutorRecipe, WarmupStableDecayAndBatchWarmup) {
  Recipe r;
  r.steps = 100, r.peak_lr = 1e-3, r.warmup_steps = 4, r.batch_warmup_steps = 10;
  EXPECT_DOUBLE_EQ(learning_rate(r, 0), 0.25e-3);  // (0 + 1) / 4 of peak
  EXPECT_DOUBLE_EQ(learning_rate(r, 3), 1e-3);
  EXPECT_DOUBLE_EQ(learning_rate(r, 59), 1e-3);
  EXPECT_DOUBLE_EQ(learning_rate(r, 60), 0.5e-3);   // halved at 60%
  EXPECT_DOUBLE_EQ(learning_rate(r, 90), 0.5e-3);   // annealing starts at 90%
  EXPECT_NEAR(learning_rate(r, 99), 0.5e-3 * 1e-4, 1e-12);  // 1e-4 of the halved rate at the end
  EXPECT_EQ(micro_batches_at(r, 0, 35), 10);  // 2,560 / 8,960 of 35
  EXPECT_EQ(micro_batches_at(r, 10, 35), 35);
}

TEST(ExecutorAnomalyGuard, SpikesAreSkippedAndReinjectedThenAppliedAtHalfRate) {
  const AnomalyGuard guard(SpikeRule{}, 7);
  RunState state;
  for (int step = 0; step < 4; ++step, ++state.step) {
    EXPECT_TRUE(guard.judge(state, 2.0 + 0.01 * step, 0, 1, {1}).apply);
  }
  const StepVerdict spike = guard.judge(state, 3.0, 0, 1, {40, 41});  // mean 2.015: 3.0 > 2.015 x 1.25
  EXPECT_FALSE(spike.apply);
  ASSERT_EQ(state.reinject.size(), 1u);
  EXPECT_GT(state.reinject.front().first, state.step);
  ++state.step;
  const StepVerdict again = guard.judge(state, 3.0, 0, 1, {42});
  EXPECT_TRUE(again.apply);
  EXPECT_EQ(again.lr_factor, 0.5);
  EXPECT_FALSE(guard.judge(state, NAN, 0, 1, {43}).apply);
  // The re-injected batch comes back when due.
  state.step = state.reinject.front().first;
  EXPECT_EQ(AnomalyGuard::positions_for(state, 2), (std::vector<uint64_t>{40, 41}));
  const RunState back = RunState::from_json(state.to_json(), "state");
  EXPECT_EQ(back.to_json(), state.to_json());
  EXPECT_THROW(RunState::from_json({{"step", "x"}}, "state.json"), InputError);
}

TEST(ExecutorCheckpointStore, TornFilesAreNotIntact) {
  const std::string root = ::testing::TempDir() + "/executor_store";
  std::filesystem::remove_all(root);
  CheckpointStore store(root, 0);
  store.save_in_background(2, "tensors", {{"step", 2}});
  store.save_in_background(10, "tensors", {{"step", 10}});  // waits for step 2's write first
  EXPECT_EQ(store.finish().step, 10);
  EXPECT_EQ(store.steps_newest_first(), (std::vector<int>{10, 2}));
  EXPECT_TRUE(store.intact(2));
  EXPECT_TRUE(store.intact(10));
  EXPECT_EQ(store.state(2)["step"], 2);
  std::ofstream(store.tensors_path(10), std::ios::app) << "torn";
  EXPECT_FALSE(store.intact(10));
  EXPECT_FALSE(CheckpointStore(root, 1).intact(2));  // no files of rank 1
}

TEST(ExecutorCheckpointStore, ABackgroundWriteIsNotIntactUntilItsManifest) {
  const std::string root = ::testing::TempDir() + "/executor_store_async";
  std::filesystem::remove_all(root);
  CheckpointStore store(root, 0);
  store.save_in_background(4, "tensors", {{"step", 4}}, 300);  // slow storage: 300 ms after the tensors
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!std::filesystem::exists(store.tensors_path(4)) && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ASSERT_TRUE(std::filesystem::exists(store.tensors_path(4)));
  EXPECT_FALSE(store.intact(4));  // a run killed now resumes from an older checkpoint
  const BackgroundWrite done = store.finish();
  EXPECT_EQ(done.step, 4);
  EXPECT_GE(done.seconds, 0.3);
  EXPECT_TRUE(store.intact(4));
  EXPECT_EQ(store.finish().step, -1);  // nothing in flight
}

StepReport report_of(int step, double loss) {
  StepReport r;
  r.step = step;
  r.steps = 6;
  r.loss = loss;
  return r;
}

TEST(ExecutorProgress, LossLogKeepsEachStepOnceAfterAResume) {
  const std::string path = ::testing::TempDir() + "/executor_loss.log";
  {
    LossLog log(path, 0);
    for (int step = 1; step <= 6; ++step) log.append(report_of(step, 1.0 * step));
  }
  LossLog resumed(path, 4);  // checkpoint of step 4: steps 5 and 6 are trained again
  for (int step = 5; step <= 6; ++step) resumed.append(report_of(step, 10.0 * step));
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  EXPECT_EQ(lines, (std::vector<std::string>{"1 1", "2 2", "3 3", "4 4", "5 50", "6 60"}));
  const StepReport report = report_of(3, 2.5);
  EXPECT_EQ(report.to_json()["loss"], 2.5);
  EXPECT_EQ(nlohmann::json::parse(report.to_json().dump())["schema"], "flopwise.progress/1");
  EXPECT_NE(report.human_line().find("step    3/6  loss 2.5000"), std::string::npos) << report.human_line();
}

TEST(ExecutorData, SampleOrderIsAFunctionOfSeedAndPosition) {
  TokenCorpus corpus;
  for (int i = 0; i < 1000; ++i) corpus.tokens.push_back(i % 251);
  corpus.source = "synthetic";
  const SampleOrder a(corpus, 9, 42), b(corpus, 9, 42), other(corpus, 9, 43);
  std::set<int32_t> firsts;
  bool differs = false;
  for (uint64_t p = 0; p < a.windows(); ++p) {
    EXPECT_EQ(a.sample(p), b.sample(p));
    firsts.insert(a.sample(p)[0]);
    differs |= a.sample(p) != other.sample(p);
    EXPECT_EQ(a.sample(p).size(), 10u);
  }
  EXPECT_EQ(firsts.size(), a.windows());  // an epoch visits every window once
  EXPECT_TRUE(differs);
  EXPECT_NE(a.sample(0), a.sample(a.windows()));  // the next epoch is shuffled anew
}

TEST(ExecutorData, TextIsBytesAndBinIsUint16) {
  const std::string text = ::testing::TempDir() + "/executor_corpus.txt";
  const std::string bin = ::testing::TempDir() + "/executor_corpus.bin";
  std::ofstream(text) << "Ab";
  {
    std::ofstream out(bin, std::ios::binary);
    const unsigned char bytes[] = {0x01, 0x02, 0xFF, 0x00};
    out.write(reinterpret_cast<const char*>(bytes), 4);
  }
  EXPECT_EQ(TokenCorpus::load({text}).tokens, (std::vector<int32_t>{'A', 'b'}));
  const TokenCorpus tokens = TokenCorpus::load({bin});
  EXPECT_EQ(tokens.tokens, (std::vector<int32_t>{0x0201, 0x00FF}));
  EXPECT_EQ(tokens.vocab, 0x0202);
  EXPECT_THROW(SampleOrder(tokens, 8, 1), InputError);  // shorter than a sequence
}

namespace {

FittedMixedRun fit_two_pools(PoolStrategy strategy, const MixedRunOptions& options) {
  const std::string path = ::testing::TempDir() + "/two-pools-" + to_string(strategy) + ".json";
  const Plan plan = load_plan(testing::write_two_pool_plan(path, strategy));
  return fit_mixed_run(*plan.mixed, plan.model, options,
                       [&](int pp) { return scale_model(plan.model, 1.0 / 16, 256, pp); });
}

}  // namespace

// 4 ranks for 2 pools: each pool's ep2 dp4 shrinks to ep2 dp2; 2 micro-batches per DP rank on
// average make 8 for the world, split 6720 : 2240 = 3 : 1, so 6 and 2, i.e. 3 and 1 per DP rank.
TEST(ExecutorMixedRun, HeteroDpSplitsTheBatchByThePlansShares) {
  MixedRunOptions o;
  o.max_ranks = 4;
  o.micro_batches = 2;
  o.slowdowns = parse_slowdowns({"slow=3"});
  const FittedMixedRun f = fit_two_pools(PoolStrategy::kHeteroDp, o);
  EXPECT_EQ(f.layout.devices(), 4);
  EXPECT_EQ(f.layout.dp, 4);
  EXPECT_EQ(f.layout.ep, 2);
  EXPECT_EQ(f.run.pool_dp, 2);
  EXPECT_EQ(f.run.micro_batches_per_dp(4), (std::vector<int>{3, 3, 1, 1}));
  EXPECT_EQ(f.global_batch, 8);
  EXPECT_DOUBLE_EQ(f.run.pools[1].slowdown, 3.0);
  EXPECT_DOUBLE_EQ(f.run.pools[0].slowdown, 1.0);
  EXPECT_EQ(f.run.averaged_with(3, 4), (std::vector<int>{0, 1, 2, 3}));
  // DP and expert DP stay in the pool; the same shard in the other pool is two DP places on.
  const GroupMembers g = group_members(f.layout, 3, &f.run);
  EXPECT_EQ(g.dp, (std::vector<int>{2, 3}));
  EXPECT_EQ(g.cross_pool, (std::vector<int>{1, 3}));
  EXPECT_EQ(g.replica.size(), 4u);
  EXPECT_EQ(g.ep, (std::vector<int>{2, 3}));
}

TEST(ExecutorMixedRun, LocalSgdAveragesInsideEachPool) {
  MixedRunOptions o;
  o.max_ranks = 4;
  o.micro_batches = 2;
  o.sync_every_steps = 2;
  const FittedMixedRun f = fit_two_pools(PoolStrategy::kLocalSgd, o);
  EXPECT_EQ(f.run.sync_every_steps, 2);
  EXPECT_EQ(f.run.averaged_with(3, 4), (std::vector<int>{2, 3}));
  const GroupMembers g = group_members(f.layout, 0, &f.run);
  EXPECT_EQ(g.replica, (std::vector<int>{0, 1}));
  EXPECT_EQ(g.cross_pool, (std::vector<int>{0, 2}));
  o.sync_every_steps = 0;
  EXPECT_EQ(fit_two_pools(PoolStrategy::kLocalSgd, o).run.sync_every_steps, 50);  // the plan's H
}

// The pipeline: one stage per pool; the scaled model's 2 layers split 12 : 16 with at least one each.
TEST(ExecutorMixedRun, PipelineGivesEachPoolAStageWithItsShareOfLayers) {
  MixedRunOptions o;
  o.max_ranks = 4;
  o.micro_batches = 4;
  const FittedMixedRun f = fit_two_pools(PoolStrategy::kHeteroPipeline, o);
  EXPECT_EQ(f.layout.pp, 2);
  EXPECT_EQ(f.layout.devices(), 4);
  EXPECT_EQ(f.model.layers, 2);
  EXPECT_EQ(f.run.pools[0].first_layer, 0);
  EXPECT_EQ(f.run.pools[0].layers, 1);
  EXPECT_EQ(f.run.pools[1].first_layer, 1);
  EXPECT_EQ(f.run.pools[1].layers, 1);
  EXPECT_EQ(f.global_batch, 8);  // 4 micro-batches on each of dp 2
  RankCoords second_stage;
  second_stage.pp = 1;
  EXPECT_EQ(f.run.pool_of(second_stage), 1);
  const GroupMembers g = group_members(f.layout, 2, &f.run);
  EXPECT_EQ(g.cross_pool, (std::vector<int>{2}));
}

TEST(ExecutorMixedRun, BadSlowdownsAndTooFewRanksAreOneLineErrors) {
  auto message = [](const std::function<void()>& f) {
    try {
      f();
    } catch (const InputError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message([] { parse_slowdowns({"slow"}); }).find("expected POOL=FACTOR"), std::string::npos);
  EXPECT_NE(message([] { parse_slowdowns({"slow=fast"}); }).find("--slowdown"), std::string::npos);
  EXPECT_NE(message([] { parse_slowdowns({"slow=0.5"}); }).find("at least 1"), std::string::npos);
  MixedRunOptions o;
  o.slowdowns = parse_slowdowns({"medium=2"});
  EXPECT_NE(message([&] { fit_two_pools(PoolStrategy::kHeteroDp, o); }).find("pools: fast, slow"), std::string::npos);
  MixedRunOptions one;
  one.max_ranks = 1;
  EXPECT_NE(message([&] { fit_two_pools(PoolStrategy::kHeteroDp, one); }).find("2 pools"), std::string::npos);
}

}  // namespace flopwise::executor
