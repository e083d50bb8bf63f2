#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "flopwise/cli.hpp"
#include "test_helpers.hpp"
#include "flopwise/model_import.hpp"
#include "flopwise/plan_builder.hpp"

namespace flopwise {
namespace {

using Outcome = testing::CliOutcome;

Outcome run(std::vector<std::string> args) { return testing::run_flopwise(std::move(args)); }

std::string write_temp(const std::string& name, const std::string& text) {
  const std::string path = ::testing::TempDir() + "/" + name;
  std::ofstream(path) << text;
  return path;
}

// One line, starting with the program name, ending the run with code 2.
void expect_one_line_error(const Outcome& o, const std::string& fragment) {
  EXPECT_EQ(o.code, 2) << o.err;
  EXPECT_EQ(std::count(o.err.begin(), o.err.end(), '\n'), 1) << o.err;
  EXPECT_EQ(o.err.rfind("flopwise: error: ", 0), 0u) << o.err;
  EXPECT_NE(o.err.find(fragment), std::string::npos) << o.err;
}

}  // namespace

TEST(Cli, ModelJsonHasParameterCounts) {
  const Outcome o = run({"model", "ling-lite", "--json"});
  ASSERT_EQ(o.code, 0) << o.err;
  const auto j = nlohmann::json::parse(o.out);
  EXPECT_NEAR(j["total_params"].get<double>() / 1e9, 16.8, 0.05);
  EXPECT_NEAR(j["active_params"].get<double>() / 1e9, 2.75, 0.01);
  EXPECT_LT(j["active_params_without_embeddings"].get<double>(), j["active_params"].get<double>());
  EXPECT_GT(j["training_flops_per_token"].get<double>(), 0);
}

TEST(Cli, PlanJsonCarriesScriptFields) {
  const std::string out = ::testing::TempDir() + "/cli_plan.json";
  const Outcome o = run({"plan", "--model", "ling-lite", "--profile", "h100-sxm", "--devices", "8:256",
                         "--tokens", "1e11", "--json", "--out", out});
  ASSERT_EQ(o.code, 0) << o.err;
  const auto j = nlohmann::json::parse(o.out);
  for (const char* key : {"hardware", "devices", "layout", "step_time_s", "tokens_per_s", "mfu", "days",
                          "device_hours", "cost", "currency"}) {
    EXPECT_TRUE(j.contains(key)) << key;
  }
  for (const char* key : {"tp", "pp", "vpp", "ep", "dp", "micro_batch", "recompute"}) {
    EXPECT_TRUE(j["layout"].contains(key)) << key;
  }
  EXPECT_EQ(load_plan(out).layout.devices(), j["devices"].get<int>());
}

TEST(Cli, PlanEvaluatesTheUsersLayoutBesideTheBest) {
  const Outcome o = run({"plan", "--model", "ling-lite", "--profile", "device-C", "--devices", "64", "--tp", "2",
                         "--pp", "2", "--ep", "8", "--micro-batch", "1", "--recompute", "full", "--objective", "cost",
                         "--json"});
  ASSERT_EQ(o.code, 0) << o.err;
  const auto j = nlohmann::json::parse(o.out);
  EXPECT_EQ(j["layout"]["tp"], 2);
  EXPECT_EQ(j["layout"]["recompute"], "full");
  ASSERT_TRUE(j.contains("unconstrained_best"));
  EXPECT_LE(j["unconstrained_best"]["cost"].get<double>(), j["cost"].get<double>() * 1.0000001);
}

// A run costing thousands reads in thousands: the table's cost columns take the unit the figure
// needs (1230 device-hours at 2.99 USD is 3.7K USD, not 0.00M), the JSON keeps the whole figure.
TEST(Cli, PlanTableShowsASmallCostInThousands) {
  const Outcome table = run({"plan", "--model", "ling-lite", "--profile", "h100-sxm", "--devices", "64", "--tokens", "1e11"});
  ASSERT_EQ(table.code, 0) << table.err;
  const Outcome json = run({"plan", "--model", "ling-lite", "--profile", "h100-sxm", "--devices", "64", "--tokens", "1e11",
                            "--json"});
  ASSERT_EQ(json.code, 0) << json.err;
  const double cost = nlohmann::json::parse(json.out)["cost"].get<double>();
  ASSERT_GT(cost, 1e3);
  ASSERT_LT(cost, 1e6);
  EXPECT_NE(table.out.find(format_count(cost) + " USD"), std::string::npos) << table.out;
  EXPECT_EQ(table.out.find("0.00M"), std::string::npos) << table.out;
}

// 88 layers on 16 stages run in public with lighter ends (2 + 14 x 6 + 2): evaluated, not refused.
TEST(Cli, PlanBalancesUnevenPipelineEnds) {
  const Outcome o = run({"plan", "--model", "ling-plus", "--profile", "h800-sxm", "--devices", "2048", "--tp", "2",
                         "--pp", "16", "--vpp", "1", "--ep", "8", "--dp", "64", "--micro-batch", "1", "--recompute",
                         "selective", "--optimizer-sharding", "true", "--objective", "time", "--json"});
  ASSERT_EQ(o.code, 0) << o.err;
  const auto j = nlohmann::json::parse(o.out);
  EXPECT_EQ(j["layout"]["first_stage_layers"], 2);
  EXPECT_EQ(j["layout"]["last_stage_layers"], 2);
  const Outcome given = run({"plan", "--model", "ling-plus", "--profile", "h800-sxm", "--devices", "2048", "--tp", "2",
                             "--pp", "16", "--vpp", "1", "--ep", "8", "--micro-batch", "1", "--recompute", "selective",
                             "--optimizer-sharding", "true", "--objective", "time", "--first-stage-layers", "3"});
  EXPECT_NE(given.code, 0);
  EXPECT_NE(given.err.find("first/last stage layers 3/0"), std::string::npos) << given.err;
}

// --recompute-modules fixes selective recompute and its modules: Ling-Plus's MoE activation and
// pre-MLP norm recomputed on top of the core attention; with another recompute it is refused.
TEST(Cli, PlanTakesSelectiveRecomputeModules) {
  const std::vector<std::string> fixed = {"plan", "--model", "ling-plus", "--profile", "h800-sxm", "--devices", "2048",
                                          "--tp", "2", "--pp", "16", "--vpp", "1", "--ep", "8", "--dp", "64",
                                          "--micro-batch", "1", "--optimizer-sharding", "true", "--objective", "time"};
  std::vector<std::string> args = fixed;
  args.insert(args.end(), {"--recompute-modules", "moe_act,layernorm", "--json"});
  const Outcome o = run(args);
  ASSERT_EQ(o.code, 0) << o.err;
  const auto j = nlohmann::json::parse(o.out);
  EXPECT_EQ(j["layout"]["recompute"], "selective");
  EXPECT_EQ(j["layout"]["recompute_modules"], nlohmann::json::array({"moe_act", "layernorm"}));
  std::vector<std::string> text = fixed;
  text.insert(text.end(), {"--recompute-modules", "core_attn,moe_act"});
  const Outcome table = run(text);
  ASSERT_EQ(table.code, 0) << table.err;
  EXPECT_NE(table.out.find("sel(attn,act)"), std::string::npos) << table.out;
  std::vector<std::string> clash = fixed;
  clash.insert(clash.end(), {"--recompute", "full", "--recompute-modules", "moe_act"});
  const Outcome refused = run(clash);
  EXPECT_NE(refused.code, 0);
  EXPECT_NE(refused.err.find("--recompute-modules: only with --recompute selective (given full)"), std::string::npos)
      << refused.err;
}

TEST(Cli, CalibrateNeedsTracesOrPublishedRuns) {
  const Outcome none = run({"calibrate", "--profile", "a100-80gb"});
  EXPECT_EQ(none.code, 2);
  EXPECT_NE(none.err.find("calibrate: give trace files, --plan-runs or --published"), std::string::npos) << none.err;
  const Outcome planned = run({"calibrate", "trace.json", "--plan-runs", "--profile", "cpu-core"});
  EXPECT_EQ(planned.code, 2);
  EXPECT_NE(planned.err.find("--plan-runs: makes its own traces; give no trace files with it"), std::string::npos) << planned.err;
  const Outcome budget = run({"calibrate", "--plan-runs", "--budget", "0", "--profile", "cpu-core"});
  EXPECT_EQ(budget.code, 2);
  EXPECT_NE(budget.err.find("--budget: must be a positive number of seconds"), std::string::npos) << budget.err;
  const Outcome report = run({"calibrate", "--plan-runs", "--report", "--profile", "cpu-core"});
  EXPECT_EQ(report.code, 2);
  EXPECT_NE(report.err.find("--report: reports given trace files"), std::string::npos) << report.err;
  const Outcome ranks = run({"calibrate", "--plan-runs", "--ranks", "3", "--profile", "cpu-core"});
  EXPECT_EQ(ranks.code, 2);
  EXPECT_NE(ranks.err.find("--ranks: designed runs need an even rank count of at least 2"), std::string::npos) << ranks.err;
  const Outcome both = run({"calibrate", "trace.json", "--published", "--profile", "a100-80gb"});
  EXPECT_EQ(both.code, 2);
  EXPECT_NE(both.err.find("--published: fits published runs; give no trace files with it"), std::string::npos) << both.err;
  const Outcome held = run({"calibrate", "--published", "--profile", "a100-80gb", "--hold-out", "megatron-1T full"});
  ASSERT_EQ(held.code, 0) << held.err;
  EXPECT_NE(held.out.find("held-out mean |error| over 1 run(s)"), std::string::npos) << held.out;
}

TEST(Cli, CompareJsonHasAnEntryPerProfile) {
  const Outcome o = run({"compare", "--model", "ling-lite", "--profiles", "device-C,device-E", "--devices", "8:512",
                         "--json"});
  ASSERT_EQ(o.code, 0) << o.err;
  const auto j = nlohmann::json::parse(o.out);
  ASSERT_EQ(j["entries"].size(), 2u);
  EXPECT_EQ(j["entries"][0]["hardware"], "device-C");
  EXPECT_TRUE(j["entries"][1].contains("cost"));
}

// A profile with no feasible layout gets a row of its own, however long the search's reasons (a
// fixed buffer once cut them, newline and all, running the next profile's row into it).
TEST(Cli, CompareGivesAnInfeasibleProfileItsWholeRow) {
  const Outcome o = run({"compare", "--profiles", "device-A,device-C,device-D", "--devices", "1:600",
                         "--deadline-days", "15"});
  ASSERT_EQ(o.code, 0) << o.err;
  std::istringstream lines(o.out);
  std::string line;
  int rows = 0;
  while (std::getline(lines, line)) {
    for (const char* device : {"device-A ", "device-C ", "device-D "}) rows += line.rfind(device, 0) == 0;
  }
  EXPECT_EQ(rows, 3) << o.out;
  EXPECT_NE(o.out.find("outside 1..600)\n"), std::string::npos) << o.out;
}

TEST(Cli, DefaultCompareIsTheLingPlusReportScenario) {
  const Outcome o = run({"compare"});
  ASSERT_EQ(o.code, 0) << o.err;
  EXPECT_NE(o.out.find("ling-plus pre-training, 1.00T tokens"), std::string::npos) << o.out;
  for (const char* device : {"device-A", "device-B", "device-C", "device-D", "device-E"}) {
    EXPECT_NE(o.out.find(device), std::string::npos) << device;
  }
  EXPECT_NE(o.out.find("<- best"), std::string::npos);
}

TEST(Cli, BadInputEndsWithOneLineAndCodeTwo) {
  expect_one_line_error(run({"plan", "--profile", "device-Z"}), "device-Z");
  expect_one_line_error(run({"plan", "--profile", "device-D", "--devices", "lots"}), "--devices");
  expect_one_line_error(run({"plan", "--profile", "device-D", "--precision", "fp4"}), "unknown precision");
  expect_one_line_error(run({"plan", "--profile", "device-D", "--comm-overlap", "grad,p2p"}), "--comm-overlap");
  expect_one_line_error(run({"plan", "--profile", "device-D", "--comm-overlap", ""}), "--comm-overlap");
  expect_one_line_error(run({"plan", "--profile", "device-C", "--precision", "fp8"}), "device.fp8");
  expect_one_line_error(run({"plan", "--profile", "device-D", "--objective", "vibes"}), "unknown objective");
  expect_one_line_error(run({"plan", "--profile", "device-D", "--fp8-recipe", "hybrid"}), "--fp8-recipe: unknown fp8 recipe");
  expect_one_line_error(run({"plan", "--profile", "device-D", "--fp8-recipe", "mxfp8"}), "fp8_recipe: applies to fp8 runs only");
  expect_one_line_error(run({"plan", "--profile", "device-D", "--tokens", "-5"}), "tokens");
  expect_one_line_error(run({"plan", "--profile", "device-D", "--tp", "3", "--devices", "1024"}), "tp=3");
  expect_one_line_error(run({"plan", "--profile", "device-D", "--devices", "8"}), "memory");
  expect_one_line_error(run({"plan", "--profile", "device-D", "--frobnicate"}), "frobnicate");
  expect_one_line_error(run({"model", "no-such-model"}), "no-such-model");
  expect_one_line_error(run({"compare", "--profiles", "device-D,h100-sxm"}), "currencies");
  const std::string yaml = write_temp("broken.yaml", "name: x\ndevice: {name: y\n");
  expect_one_line_error(run({"plan", "--profile", yaml}), "broken.yaml:");
  const std::string config = write_temp("config.json", "{\"model_type\": \"bert\"}");
  expect_one_line_error(run({"model", config}), "model_type");
  const std::string bad_json = write_temp("bad.json", "{\"model_type\": ");
  expect_one_line_error(run({"model", bad_json}), "malformed JSON");
  expect_one_line_error(run({"plan", "--profile", "cpu-core"}), "cpu-core: device.peak_tflops.bf16: missing");
  expect_one_line_error(run({"calibrate", "nowhere.json", "--profile", "cpu-core"}), "nowhere.json: cannot open trace file");
  expect_one_line_error(run({"calibrate", bad_json, "--profile", "cpu-core"}), "malformed JSON");
  const std::string simulator_trace = write_temp("sim-trace.json", "{\"traceEvents\": []}");
  expect_one_line_error(run({"calibrate", simulator_trace, "--profile", "cpu-core"}), "otherData.flopwise_run: missing");
}

TEST(Cli, NoSubcommandIsAnError) { EXPECT_EQ(run({}).code, 2); }

}  // namespace flopwise

namespace flopwise {

TEST(Cli, SimulateAPlanAndWriteItsTrace) {
  const std::string plan = ::testing::TempDir() + "/cli_sim_plan.json";
  const std::string trace = ::testing::TempDir() + "/cli_sim_trace.json";
  ASSERT_EQ(run({"plan", "--model", "ling-lite", "--profile", "device-C", "--devices", "32", "--objective", "cost",
                 "--out", plan})
                .code,
            0);
  const Outcome o = run({"simulate", plan, "--trace", trace, "--json"});
  ASSERT_EQ(o.code, 0) << o.err;
  const auto j = nlohmann::json::parse(o.out);
  EXPECT_GT(j["step_time_s"].get<double>(), 0);
  EXPECT_NEAR(j["step_time_s"].get<double>() / j["analytic"]["step_time_s"].get<double>(), 1.0, 0.25);
  EXPECT_EQ(j["trace"], trace);
  std::ifstream in(trace);
  EXPECT_TRUE(nlohmann::json::parse(in).contains("traceEvents"));
  expect_one_line_error(run({"simulate", "/no/such/plan.json"}), "/no/such/plan.json");
}

TEST(Cli, CompareCanRefineEachProfile) {
  const Outcome o = run({"compare", "--model", "ling-lite", "--profiles", "device-C,device-E", "--devices", "16:64",
                         "--objective", "cost", "--refine", "2", "--json"});
  ASSERT_EQ(o.code, 0) << o.err;
  const auto j = nlohmann::json::parse(o.out);
  for (const auto& entry : j["entries"]) {
    ASSERT_TRUE(entry.contains("simulated")) << entry.dump();
    EXPECT_GT(entry["simulated"]["step_time_s"].get<double>(), 0);
  }
}

TEST(Cli, RefineReRanksBySimulatedStepTime) {
  const std::string plan = ::testing::TempDir() + "/cli_refined.json";
  const Outcome o = run({"plan", "--model", "ling-lite", "--profile", "device-C", "--devices", "32", "--objective",
                         "time", "--refine", "3", "--top", "3", "--json", "--out", plan});
  ASSERT_EQ(o.code, 0) << o.err;
  const auto j = nlohmann::json::parse(o.out);
  ASSERT_EQ(j["candidates"].size(), 3u);
  double previous = 0;
  for (const auto& c : j["candidates"]) {
    ASSERT_TRUE(c.contains("simulated"));
    EXPECT_GE(c["simulated"]["step_time_s"].get<double>(), previous);
    previous = c["simulated"]["step_time_s"].get<double>();
  }
  const Plan loaded = load_plan(plan);
  ASSERT_TRUE(loaded.simulated.has_value());
  EXPECT_EQ(to_json(plan_from_json(to_json(loaded), "again")), to_json(loaded));
}

// A layout fixed in every dimension is evaluated and its shortfalls named; only broken rules refuse.
TEST(Cli, FullyFixedLayoutIsEvaluatedEvenWhenItMissesTheDeadline) {
  const std::vector<std::string> fixed = {"plan", "--model", "ling-lite", "--profile", "device-C", "--devices", "8",
                                          "--tp", "1", "--pp", "1", "--vpp", "1", "--ep", "2", "--dp", "8",
                                          "--micro-batch", "1", "--recompute", "full", "--optimizer-sharding", "true"};
  std::vector<std::string> as_json = fixed;
  as_json.push_back("--json");
  const Outcome o = run(as_json);
  ASSERT_EQ(o.code, 0) << o.err;
  const nlohmann::json j = nlohmann::json::parse(o.out);
  EXPECT_EQ(j["devices"], 8);
  ASSERT_EQ(j["misses"].size(), 2u);
  EXPECT_NE(j["misses"][0].get<std::string>().find("memory: needs"), std::string::npos);
  EXPECT_NE(j["misses"][1].get<std::string>().find("over the 30.0-day deadline"), std::string::npos);
  EXPECT_GT(j["days"].get<double>(), 30.0);
  EXPECT_NE(run(fixed).out.find("<- misses memory"), std::string::npos);
  std::vector<std::string> broken = fixed;
  broken[std::find(broken.begin(), broken.end(), "--tp") - broken.begin() + 1] = "3";  // 16 heads over 3 ranks
  expect_one_line_error(run(broken), "no feasible layout");
}

}  // namespace flopwise

namespace flopwise {

TEST(Cli, BadPoolsEndWithOneLineAndCodeTwo) {
  expect_one_line_error(run({"plan", "--pool", "device-A:8", "--pool", "device-Z:8"}), "device-Z.profile");
  expect_one_line_error(run({"plan", "--pool", "device-A:0"}), "must be positive");
  expect_one_line_error(run({"plan", "--pool", "device-A:8", "--pool", "device-C:8", "--pool-link", "A-D:1Gb/s,1ms"}),
                        "A-D: does not name two");
  expect_one_line_error(run({"plan", "--pool", "device-A:8", "--pool", "a100-80gb:8"}), "a100-80gb.currency: prices in USD");
  expect_one_line_error(run({"plan", "--pool", "device-A:8", "--profile", "device-A"}), "not both");
  expect_one_line_error(run({"plan", "--profile", "device-A", "--pool-link", "A-C:1Gb/s,1ms"}), "need --pool");
  expect_one_line_error(run({"plan", "--pool", "device-A:8", "--pool", "device-C:8", "--tp", "2"}), "fixed dimensions");
}

TEST(Cli, PlanOverPoolsWritesAMixedPlanThatSimulateRuns) {
  const std::string plan = ::testing::TempDir() + "/mixed.json";
  const Outcome o = run({"plan", "--model", "ling-lite", "--tokens", "1e11", "--deadline-days", "3.5", "--pool",
                         "device-A:32", "--pool", "device-C:32", "--out", plan});
  ASSERT_EQ(o.code, 0) << o.err;
  EXPECT_NE(o.out.find("single pool device-A"), std::string::npos) << o.out;
  EXPECT_NE(o.out.find("hetero DP"), std::string::npos) << o.out;
  EXPECT_NE(o.out.find("mixed plans costed: "), std::string::npos) << o.out;
  const Plan written = load_plan(plan);
  ASSERT_TRUE(written.mixed);
  const Outcome sim = run({"simulate", plan});
  ASSERT_EQ(sim.code, 0) << sim.err;
  EXPECT_NE(sim.out.find("over 2 pools (hetero-dp)"), std::string::npos) << sim.out;
  EXPECT_NE(sim.out.find("cross-pool gradient reduction after the last pool arrived"), std::string::npos) << sim.out;
  expect_one_line_error(run({"simulate", plan, "--profile", "device-D"}), "applies to single-pool plans");
  expect_one_line_error(run({"plan", "--model", "ling-lite", "--pool", "device-A:32", "--pool", "device-C:32",
                             "--strategy", "ring"}),
                        "unknown strategy 'ring'");
  expect_one_line_error(run({"plan", "--profile", "device-A", "--strategy", "local-sgd"}), "need --pool");
  // A pool whose profile nobody knows: the plan's field is named.
  std::ifstream in(plan);
  nlohmann::json j = nlohmann::json::parse(in);
  j["pools"][1]["hardware"]["profile"] = "device-Q";
  const std::string edited = write_temp("mixed-unknown.json", j.dump());
  expect_one_line_error(run({"simulate", edited}), "pools[1].hardware.profile");
}

}  // namespace flopwise
