#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>

#include "flopwise/catalog.hpp"
#include "flopwise/error.hpp"
#include "flopwise/model_import.hpp"
#include "flopwise/plan_builder.hpp"
#include "test_helpers.hpp"

namespace flopwise {
namespace {

Plan ling_plus_plan() {
  TrainingRun run;
  run.routing_skew = 1.2;
  const CostModel cost(resolve_model("ling-plus"), run, resolve_profile("device-D"));
  const Layout l{2, 8, 1, 8, 64, 1, Recompute::kSelective, true};
  return make_plan(cost, Candidate{l, cost.evaluate(l)}, Objective::kMinCostDeadline);
}

// The value after `flag` in Megatron's arguments, or "<absent>".
std::string value_of(const std::vector<std::string>& args, const std::string& flag) {
  const auto it = std::find(args.begin(), args.end(), flag);
  return it == args.end() || it + 1 == args.end() ? std::string("<absent>") : *(it + 1);
}

std::string error_of(const nlohmann::json& j) {
  return testing::error_of([&] { plan_from_json(j, "plan.json"); });
}

}  // namespace

TEST(Plan, JsonRoundTripsExactly) {
  const Plan plan = ling_plus_plan();
  const nlohmann::json first = to_json(plan);
  const Plan back = plan_from_json(first, "plan.json");
  EXPECT_EQ(to_json(back), first);
  EXPECT_EQ(back.layout, plan.layout);
  EXPECT_EQ(back.hardware, plan.hardware);
  EXPECT_EQ(back.run.routing_skew, 1.2);
  EXPECT_TRUE(back.run.grad_accumulation_fusion);
  // An unfused run travels; a plan written before the switch existed fuses.
  Plan unfused = plan;
  unfused.run.grad_accumulation_fusion = false;
  EXPECT_FALSE(plan_from_json(to_json(unfused), "plan.json").run.grad_accumulation_fusion);
  nlohmann::json older = first;
  older.erase("grad_accumulation_fusion");
  EXPECT_TRUE(plan_from_json(older, "plan.json").run.grad_accumulation_fusion);
  // bf16 main gradients travel and reach Megatron's arguments; an older plan kept fp32 ones.
  Plan bf16_grads = plan;
  bf16_grads.run.grad_reduce_in_bf16 = true;
  EXPECT_TRUE(plan_from_json(to_json(bf16_grads), "plan.json").run.grad_reduce_in_bf16);
  const std::vector<std::string> bf16_args = megatron_args(bf16_grads);
  EXPECT_NE(std::find(bf16_args.begin(), bf16_args.end(), "--grad-reduce-in-bf16"), bf16_args.end());
  const std::vector<std::string> fp32_grad_args = megatron_args(plan);
  EXPECT_EQ(std::find(fp32_grad_args.begin(), fp32_grad_args.end(), "--grad-reduce-in-bf16"), fp32_grad_args.end());
  older.erase("grad_reduce_in_bf16");
  EXPECT_FALSE(plan_from_json(older, "plan.json").run.grad_reduce_in_bf16);
  // bf16 Adam moments travel and become Megatron's precision-aware optimizer; older plans kept fp32.
  Plan bf16_moments = plan;
  bf16_moments.run.adam_moments_in_bf16 = true;
  EXPECT_TRUE(plan_from_json(to_json(bf16_moments), "plan.json").run.adam_moments_in_bf16);
  const std::vector<std::string> moment_args = megatron_args(bf16_moments);
  const std::vector<std::string> precision_aware = {"--use-precision-aware-optimizer", "--exp-avg-dtype", "bf16",
                                                    "--exp-avg-sq-dtype", "bf16"};
  EXPECT_NE(std::search(moment_args.begin(), moment_args.end(), precision_aware.begin(), precision_aware.end()),
            moment_args.end());
  EXPECT_EQ(std::find(fp32_grad_args.begin(), fp32_grad_args.end(), "--use-precision-aware-optimizer"),
            fp32_grad_args.end());
  older.erase("adam_moments_in_bf16");
  EXPECT_FALSE(plan_from_json(older, "plan.json").run.adam_moments_in_bf16);
  // The EP all-to-all overlap travels in comm_overlap and becomes Megatron's switch where it applies.
  Plan combined = plan;
  combined.run.overlap.ep_a2a = true;
  EXPECT_EQ(to_string(combined.run.overlap), "grad_reduce,param_gather,tp_grad,p2p,ep_a2a");
  EXPECT_TRUE(plan_from_json(to_json(combined), "plan.json").run.overlap.ep_a2a);
  const std::vector<std::string> combined_args = megatron_args(combined);
  EXPECT_EQ(std::find(combined_args.begin(), combined_args.end(), "--overlap-moe-expert-parallel-comm") !=
                combined_args.end(),
            ep_overlap_applies(combined.model, combined.run, combined.layout));
  combined.layout.vpp = 1;
  combined.layout.pp = 2;  // PP without interleaving: Megatron-Core refuses the overlap there
  const std::vector<std::string> refused = megatron_args(combined);
  EXPECT_EQ(std::find(refused.begin(), refused.end(), "--overlap-moe-expert-parallel-comm"), refused.end());
  // Context parallelism travels and becomes Megatron's argument; an older plan had none.
  Plan context = plan;
  context.layout.cp = 2;
  EXPECT_EQ(plan_from_json(to_json(context), "plan.json").layout.cp, 2);
  const std::vector<std::string> context_args = megatron_args(context);
  const auto cp_flag = std::find(context_args.begin(), context_args.end(), "--context-parallel-size");
  ASSERT_NE(cp_flag, context_args.end());
  EXPECT_EQ(*(cp_flag + 1), "2");
  EXPECT_EQ(std::find(fp32_grad_args.begin(), fp32_grad_args.end(), "--context-parallel-size"), fp32_grad_args.end());
  nlohmann::json no_cp = first;
  no_cp["layout"].erase("cp");
  EXPECT_EQ(plan_from_json(no_cp, "plan.json").layout.cp, 1);
  // The SMs of TP overlap travel; a plan written before they were costed ran TE's default 16.
  Plan tuned = plan;
  tuned.run.tp_comm_sms = 24;
  EXPECT_EQ(plan_from_json(to_json(tuned), "plan.json").run.tp_comm_sms, 24);
  older.erase("tp_comm_sms");
  EXPECT_EQ(plan_from_json(older, "plan.json").run.tp_comm_sms, 16);
  // The EP dispatcher travels; a plan written before the choice dispatched all-to-all.
  Plan flex = plan;
  flex.run.ep_dispatcher = EpDispatcher::kFlex;
  EXPECT_EQ(plan_from_json(to_json(flex), "plan.json").run.ep_dispatcher, EpDispatcher::kFlex);
  older.erase("ep_dispatcher");
  EXPECT_EQ(plan_from_json(older, "plan.json").run.ep_dispatcher, EpDispatcher::kAllToAll);
  // So do its SMs; a plan written before they were a choice held DeepEP's 20.
  flex.run.flex_dispatcher_sms = 32;
  EXPECT_EQ(plan_from_json(to_json(flex), "plan.json").run.flex_dispatcher_sms, 32);
  older.erase("flex_dispatcher_sms");
  EXPECT_EQ(plan_from_json(older, "plan.json").run.flex_dispatcher_sms, 20);
  nlohmann::json unknown = first;
  unknown["ep_dispatcher"] = "deepep";
  EXPECT_EQ(error_of(unknown), "plan.json: ep_dispatcher: unknown EP dispatcher 'deepep' (expected alltoall or flex)");
  // The fp8 recipe travels and reaches Megatron's arguments; a plan written before the choice
  // priced current (tensorwise) scaling.
  Plan delayed = plan;
  delayed.run.precision = Precision::kFp8;
  delayed.run.fp8_recipe = Fp8Recipe::kDelayed;
  EXPECT_EQ(plan_from_json(to_json(delayed), "plan.json").run.fp8_recipe, Fp8Recipe::kDelayed);
  const std::vector<std::string> fp8_args = megatron_args(delayed);
  const auto recipe_flag = std::find(fp8_args.begin(), fp8_args.end(), "--fp8-recipe");
  ASSERT_NE(recipe_flag, fp8_args.end());
  EXPECT_EQ(*(recipe_flag + 1), "delayed");
  EXPECT_EQ(std::find(bf16_args.begin(), bf16_args.end(), "--fp8-recipe"), bf16_args.end());
  older.erase("fp8_recipe");
  EXPECT_EQ(plan_from_json(older, "plan.json").run.fp8_recipe, Fp8Recipe::kTensorwise);
  // Learned positions travel with the model; a plan written before the field rotates (RoPE).
  Plan learned = plan;
  learned.model.learned_positions = true;
  EXPECT_TRUE(plan_from_json(to_json(learned), "plan.json").model.learned_positions);
  older["model"].erase("learned_positions");
  EXPECT_FALSE(plan_from_json(older, "plan.json").model.learned_positions);
  EXPECT_EQ(back.predicted.step_time_s, plan.predicted.step_time_s);
  EXPECT_EQ(back.predicted.memory_bytes.total(), plan.predicted.memory_bytes.total());
  EXPECT_EQ(param_counts(back.model).total, param_counts(plan.model).total);
  // The ends counted as layers travel too; a plan without the fields splits the layers alone.
  Plan counted = plan;
  counted.layout.pp = 9;
  counted.layout.vpp = 2;
  counted.layout.dp = 64 * 8 / 9 / 8 * 8;
  counted.layout.embedding_in_split = counted.layout.loss_in_split = true;
  nlohmann::json j = to_json(counted);
  j["devices"] = counted.devices();
  EXPECT_EQ(plan_from_json(j, "plan.json").layout, counted.layout);
  j["layout"].erase("embedding_in_split");
  j["layout"].erase("loss_in_split");
  const std::string why = error_of(j);  // 88 layers on 18 chunks without the ends: refused
  EXPECT_NE(why.find("does not fit the model's 88 layers"), std::string::npos) << why;
}

TEST(Plan, SavedFileLoadsBack) {
  const Plan plan = ling_plus_plan();
  const std::string path = ::testing::TempDir() + "/flopwise_plan.json";
  save_plan(plan, path);
  EXPECT_EQ(to_json(load_plan(path)), to_json(plan));
  std::remove(path.c_str());
}

TEST(Plan, CarriesTheSketchedFields) {
  const nlohmann::json j = to_json(ling_plus_plan());
  EXPECT_EQ(j["schema"], "flopwise.plan/2");
  EXPECT_EQ(j["devices"], 1024);
  EXPECT_EQ(j["layout"]["ep"], 8);
  EXPECT_EQ(j["rank_map"]["order"], "tp-cp-ep-dp-pp");
  EXPECT_EQ(j["rank_map"]["strides"]["pp"], 128);
  EXPECT_TRUE(j["predicted"]["breakdown"]["exposed_comm_s"].contains("ep"));
  EXPECT_TRUE(j["predicted"]["memory_bytes"].contains("activations"));
  EXPECT_EQ(j["predicted"]["currency"], "RMB");
}

// MoE parallel folding and token dropping travel in the plan, and reach Megatron's arguments.
// Selective recompute's modules travel in the plan (an older plan's selective recompute was the
// core attention, Megatron's default) and become Megatron's --recompute-modules where they differ
// from that default.
TEST(Plan, RecomputeModulesRoundTripAndBecomeArguments) {
  Plan plan = ling_plus_plan();
  EXPECT_EQ(to_json(plan)["layout"]["recompute_modules"], nlohmann::json::array({"core_attn"}));
  EXPECT_EQ(value_of(megatron_args(plan), "--recompute-modules"), "<absent>");
  plan.layout.recompute_modules = parse_recompute_modules("moe_act,layernorm", "test", "");
  const Plan back = plan_from_json(to_json(plan), "plan.json");
  EXPECT_EQ(back.layout, plan.layout);
  const std::vector<std::string> args = megatron_args(plan);
  const auto at = std::find(args.begin(), args.end(), "--recompute-modules");
  ASSERT_NE(at, args.end());
  ASSERT_LT(at + 2, args.end());
  EXPECT_EQ(*(at + 1), "moe_act");
  EXPECT_EQ(*(at + 2), "layernorm");
  nlohmann::json older = to_json(ling_plus_plan());
  older["layout"].erase("recompute_modules");
  EXPECT_EQ(plan_from_json(older, "old.json").layout.recompute_modules, RecomputeModules{});
  nlohmann::json unknown = to_json(ling_plus_plan());
  unknown["layout"]["recompute_modules"] = {"core_attn", "attention"};
  EXPECT_NE(error_of(unknown).find("unknown recompute module 'attention'"), std::string::npos) << error_of(unknown);
}

TEST(Plan, FoldedExpertsAndCapacityRoundTripAndBecomeArguments) {
  Plan plan = ling_plus_plan();
  plan.layout.etp = 1;
  plan.run.moe_capacity_factor = 1.25;
  const nlohmann::json j = to_json(plan);
  EXPECT_EQ(j["layout"]["etp"], 1);
  EXPECT_EQ(j["moe_capacity_factor"], 1.25);
  EXPECT_EQ(j["rank_map"]["strides"]["ep"], 1);
  EXPECT_EQ(j["rank_map"]["sizes"]["expert_dp"], 16);  // 2 x 64 ranks of a stage over 8 EP ranks
  const Plan back = plan_from_json(j, "plan.json");
  EXPECT_EQ(back.layout, plan.layout);
  EXPECT_EQ(back.run.moe_capacity_factor, 1.25);
  const std::vector<std::string> args = megatron_args(plan);
  EXPECT_EQ(value_of(args, "--expert-tensor-parallel-size"), "1");
  EXPECT_EQ(value_of(args, "--moe-expert-capacity-factor"), "1.25");
  EXPECT_EQ(value_of(args, "--moe-token-dispatcher-type"), "alltoall");
  Plan flex = plan;
  flex.run.ep_dispatcher = EpDispatcher::kFlex;
  EXPECT_EQ(value_of(megatron_args(flex), "--moe-token-dispatcher-type"), "flex");
  EXPECT_EQ(value_of(megatron_args(flex), "--moe-flex-dispatcher-backend"), "deepep");
  // DeepEP's default SMs go unwritten; another count reaches Megatron.
  EXPECT_EQ(value_of(megatron_args(flex), "--moe-deepep-num-sms"), "<absent>");
  flex.run.flex_dispatcher_sms = 32;
  EXPECT_EQ(value_of(megatron_args(flex), "--moe-deepep-num-sms"), "32");
  // The router the plan priced reaches Megatron at the Ling report's coefficients, and travels in
  // the plan: by default plain torch, the aux_loss and the z-loss.
  EXPECT_EQ(value_of(args, "--moe-router-load-balancing-type"), "aux_loss");
  EXPECT_EQ(value_of(args, "--moe-aux-loss-coeff"), "0.015");
  EXPECT_EQ(value_of(args, "--moe-z-loss-coeff"), "1e-4");
  EXPECT_EQ(std::count(args.begin(), args.end(), "--moe-router-fusion"), 0);
  Plan routed = plan;
  routed.run.router_fusion = true;
  routed.run.router_balancing = parse_router_balancing("seq_aux_loss,expert_bias", "test", "router_balancing");
  const std::vector<std::string> routed_args = megatron_args(routed);
  EXPECT_EQ(std::count(routed_args.begin(), routed_args.end(), "--moe-router-fusion"), 1);
  EXPECT_EQ(value_of(routed_args, "--moe-router-load-balancing-type"), "seq_aux_loss");
  EXPECT_EQ(std::count(routed_args.begin(), routed_args.end(), "--moe-router-enable-expert-bias"), 1);
  EXPECT_EQ(value_of(routed_args, "--moe-z-loss-coeff"), "<absent>");
  routed.run.router_balancing = RouterBalancing::none();
  EXPECT_EQ(value_of(megatron_args(routed), "--moe-router-load-balancing-type"), "none");
  const Plan routed_back = plan_from_json(to_json(routed), "plan.json");
  EXPECT_TRUE(routed_back.run.router_fusion);
  EXPECT_EQ(routed_back.run.router_balancing, RouterBalancing::none());
  nlohmann::json before_router = to_json(routed);
  before_router.erase("router_fusion");
  before_router.erase("router_balancing");
  EXPECT_FALSE(plan_from_json(before_router, "plan.json").run.router_fusion);
  EXPECT_EQ(plan_from_json(before_router, "plan.json").run.router_balancing, RouterBalancing{});
  before_router["router_balancing"] = "auxiliary";
  EXPECT_EQ(error_of(before_router),
            "plan.json: router_balancing: unknown router balancing 'auxiliary' (expected none or a comma list of "
            "aux_loss, seq_aux_loss, global_aux_loss, z_loss, expert_bias)");
  // Megatron-LM's dropouts default to 0.1, so the plan's always reach it; they travel in the plan.
  EXPECT_EQ(value_of(args, "--hidden-dropout"), "0");
  EXPECT_EQ(value_of(args, "--attention-dropout"), "0");
  Plan dropped = plan;
  dropped.run.hidden_dropout = 0.1;
  dropped.run.attention_dropout = 0.05;
  EXPECT_EQ(value_of(megatron_args(dropped), "--hidden-dropout"), "0.1");
  EXPECT_EQ(value_of(megatron_args(dropped), "--attention-dropout"), "0.05");
  EXPECT_EQ(plan_from_json(to_json(dropped), "plan.json").run.hidden_dropout, 0.1);
  EXPECT_EQ(plan_from_json(to_json(dropped), "plan.json").run.attention_dropout, 0.05);
  nlohmann::json before_dropout = to_json(dropped);
  before_dropout.erase("hidden_dropout");
  before_dropout.erase("attention_dropout");
  EXPECT_EQ(plan_from_json(before_dropout, "plan.json").run.hidden_dropout, 0.0);
  before_dropout["attention_dropout"] = 1.5;
  EXPECT_NE(error_of(before_dropout).find("attention_dropout"), std::string::npos) << error_of(before_dropout);
  EXPECT_EQ(value_of(args, "--mtp-num-layers"), "<absent>");
  Plan mtp = plan;
  mtp.model.mtp_layers = 1;
  EXPECT_EQ(value_of(megatron_args(mtp), "--mtp-num-layers"), "1");
  EXPECT_EQ(plan_from_json(to_json(mtp), "mtp.json").model.mtp_layers, 1);
  // Interleaved dense and MoE layers become Megatron's per-layer pattern.
  Plan interleaved = plan;
  interleaved.model.layers = 4;
  interleaved.model.moe_layer_step = 2;
  EXPECT_EQ(value_of(megatron_args(interleaved), "--moe-layer-freq"), "[0,1,0,1]");
  const std::vector<std::string> once = megatron_args(plan);
  EXPECT_EQ(std::count(once.begin(), once.end(), "--moe-token-dispatcher-type"), 1);
  // A plan written before folding has no etp: its experts ran at the attention's TP.
  nlohmann::json old = to_json(ling_plus_plan());
  old["layout"].erase("etp");
  old.erase("moe_capacity_factor");
  const Plan read = plan_from_json(old, "old.json");
  EXPECT_EQ(read.layout.expert_tp(), 2);
  EXPECT_EQ(read.run.moe_capacity_factor, 0);
  EXPECT_EQ(value_of(megatron_args(read), "--expert-tensor-parallel-size"), "2");
  nlohmann::json bad = j;
  bad["layout"]["ep"] = 256;
  EXPECT_NE(error_of(bad).find("layout.ep"), std::string::npos) << error_of(bad);
  bad = j;
  bad["moe_capacity_factor"] = -1;
  EXPECT_NE(error_of(bad).find("moe_capacity_factor"), std::string::npos) << error_of(bad);
}

TEST(Plan, BadPlansNameTheField) {
  nlohmann::json j = to_json(ling_plus_plan());
  nlohmann::json missing = j;
  missing["layout"].erase("tp");
  EXPECT_NE(error_of(missing).find("plan.json: layout.tp: missing field"), std::string::npos);
  nlohmann::json wrong = j;
  wrong["predicted"]["breakdown"]["bubble_s"] = "slow";
  EXPECT_NE(error_of(wrong).find("predicted.breakdown.bubble_s: expected a number"), std::string::npos);
  nlohmann::json schema = j;
  schema["schema"] = "flopwise.plan/99";
  EXPECT_NE(error_of(schema).find("unsupported plan schema"), std::string::npos);
  nlohmann::json devices = j;
  devices["devices"] = 7;
  EXPECT_NE(error_of(devices).find("devices: does not equal"), std::string::npos);
  nlohmann::json overlap = j;
  overlap["comm_overlap"] = "grad_reduce,sometimes";
  EXPECT_NE(error_of(overlap).find("comm_overlap: unknown overlap 'sometimes'"), std::string::npos);
  nlohmann::json recompute = j;
  recompute["layout"]["recompute"] = "sometimes";
  EXPECT_NE(error_of(recompute).find("layout.recompute"), std::string::npos);
  EXPECT_THROW(load_plan("/no/such/plan.json"), InputError);
}

TEST(Plan, MegatronArgumentsCarryTheLayout) {
  const std::vector<std::string> args = megatron_args(ling_plus_plan());
  auto value_of = [&](const std::string& flag) { return flopwise::value_of(args, flag); };
  EXPECT_EQ(value_of("--tensor-model-parallel-size"), "2");
  EXPECT_EQ(value_of("--pipeline-model-parallel-size"), "8");
  EXPECT_EQ(value_of("--expert-model-parallel-size"), "8");
  EXPECT_EQ(value_of("--global-batch-size"), "8960");
  EXPECT_EQ(value_of("--num-experts"), "64");
  EXPECT_EQ(value_of("--moe-router-topk"), "4");
  EXPECT_EQ(value_of("--num-query-groups"), "8");
  EXPECT_EQ(value_of("--recompute-granularity"), "selective");
  EXPECT_NE(std::find(args.begin(), args.end(), "--use-distributed-optimizer"), args.end());
  EXPECT_EQ(value_of("--decoder-first-pipeline-num-layers"), "<absent>");  // 88 layers split evenly on 8
  EXPECT_EQ(value_of("--attention-backend"), "flash");
  // The run's communication overlap, each switch where it applies (sharded optimizer, TP > 1).
  auto has = [](const std::vector<std::string>& a, const std::string& flag) {
    return std::find(a.begin(), a.end(), flag) != a.end();
  };
  EXPECT_TRUE(has(args, "--overlap-grad-reduce"));
  EXPECT_TRUE(has(args, "--overlap-param-gather"));
  EXPECT_FALSE(has(args, "--tp-comm-overlap"));
  Plan blocking = ling_plus_plan();
  blocking.run.overlap = parse_comm_overlap("none", "test", "comm_overlap");
  const std::vector<std::string> blocking_args = megatron_args(blocking);
  EXPECT_FALSE(has(blocking_args, "--overlap-grad-reduce"));
  EXPECT_TRUE(has(blocking_args, "--no-async-tensor-model-parallel-allreduce"));
  blocking.run.overlap = parse_comm_overlap("tp_comm", "test", "comm_overlap");
  EXPECT_TRUE(has(megatron_args(blocking), "--tp-comm-overlap"));
  // Megatron-LM takes other SM counts from a file flopwise does not write: refused, not dropped.
  blocking.run.tp_comm_sms = 24;
  EXPECT_THROW(megatron_args(blocking), InputError);
  Plan uneven = ling_plus_plan();
  uneven.layout.pp = 16;
  uneven.layout.first_stage_layers = uneven.layout.last_stage_layers = 2;
  const std::vector<std::string> uneven_args = megatron_args(uneven);
  auto uneven_value = [&](const std::string& flag) { return *(std::find(uneven_args.begin(), uneven_args.end(), flag) + 1); };
  EXPECT_EQ(uneven_value("--decoder-first-pipeline-num-layers"), "2");
  EXPECT_EQ(uneven_value("--decoder-last-pipeline-num-layers"), "2");
  // Interleaving an uneven split: Megatron-LM's arguments check wants virtual stages per rank.
  uneven.layout.pp = 8;
  uneven.layout.vpp = 2;
  uneven.layout.first_stage_layers = 6;
  uneven.layout.last_stage_layers = 10;  // 6 + 6 x 12 + 10 = 88
  const std::vector<std::string> interleaved = megatron_args(uneven);
  EXPECT_EQ(flopwise::value_of(interleaved, "--num-virtual-stages-per-pipeline-rank"), "2");
  EXPECT_EQ(flopwise::value_of(interleaved, "--num-layers-per-virtual-pipeline-stage"), "<absent>");
  // Ends that do not divide over their chunks: Megatron-Core's layout string, chunk by chunk (6 + 6
  // x 12 + 10 on 8 x 4: the first rank's 1, 1, 2, 2, the middle ranks' 3 each, the last rank's 3,
  // 3, 2, 2), no other split flags.
  uneven.layout.vpp = 4;
  const std::vector<std::string> layout_args = megatron_args(uneven);
  const std::string round = "|ttt|ttt|ttt|ttt|ttt|ttt|";
  EXPECT_EQ(flopwise::value_of(layout_args, "--pipeline-model-parallel-layout"),
            "Et" + round + "ttt|t" + round + "ttt|tt" + round + "tt|tt" + round + "ttL");
  EXPECT_EQ(flopwise::value_of(layout_args, "--decoder-first-pipeline-num-layers"), "<absent>");
  EXPECT_EQ(flopwise::value_of(layout_args, "--num-virtual-stages-per-pipeline-rank"), "<absent>");
  uneven.layout.vpp = 2;
  // The ends counted as layers: 88 + 2 on 9 x 2 chunks of 5 slots.
  uneven.layout.even_split();
  uneven.layout.pp = 9;
  uneven.layout.embedding_in_split = uneven.layout.loss_in_split = true;
  const std::vector<std::string> counted = megatron_args(uneven);
  EXPECT_TRUE(has(counted, "--account-for-embedding-in-pipeline-split"));
  EXPECT_TRUE(has(counted, "--account-for-loss-in-pipeline-split"));
  EXPECT_EQ(flopwise::value_of(counted, "--num-layers-per-virtual-pipeline-stage"), "5");
  EXPECT_EQ(flopwise::value_of(counted, "--decoder-first-pipeline-num-layers"), "<absent>");
  EXPECT_NE(std::find(args.begin(), args.end(), "--sequence-parallel"), args.end());
  EXPECT_EQ(std::find(args.begin(), args.end(), "--num-layers-per-virtual-pipeline-stage"), args.end());
  EXPECT_NE(std::find(args.begin(), args.end(), "--bf16"), args.end());
  Plan fp32 = ling_plus_plan();
  fp32.run.precision = Precision::kFp32;
  const std::vector<std::string> fp32_args = megatron_args(fp32);
  EXPECT_EQ(std::find(fp32_args.begin(), fp32_args.end(), "--bf16"), fp32_args.end());
  Plan fp16 = ling_plus_plan();
  fp16.run.precision = Precision::kFp16;
  const std::vector<std::string> fp16_args = megatron_args(fp16);
  EXPECT_NE(std::find(fp16_args.begin(), fp16_args.end(), "--fp16"), fp16_args.end());
  EXPECT_EQ(std::find(fp16_args.begin(), fp16_args.end(), "--bf16"), fp16_args.end());
  EXPECT_EQ(std::find(fp16_args.begin(), fp16_args.end(), "--no-gradient-accumulation-fusion"), fp16_args.end());
  fp16.run.grad_accumulation_fusion = false;
  const std::vector<std::string> unfused = megatron_args(fp16);
  EXPECT_NE(std::find(unfused.begin(), unfused.end(), "--no-gradient-accumulation-fusion"), unfused.end());
}

}  // namespace flopwise
