// Calibration against synthetic executor traces whose every span follows known efficiencies.
#include <gtest/gtest.h>

#include <unistd.h>

#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <sstream>

#include "flopwise/calibrate.hpp"
#include "flopwise/error.hpp"
#include "flopwise/least_squares.hpp"
#include "flopwise/model_import.hpp"
#include "test_helpers.hpp"

namespace flopwise {
namespace {

using nlohmann::json;

struct RunShape {
  Layout layout;
  int seq_len = 0;
  int micro_batches = 0;
  // With it, each step and pass starts with the executor's speed probe, and each rank's compute
  // runs at speed(step, rank) of the truth profile's peaks.
  std::function<double(int step, int rank)> speed = nullptr;
  // With it, every span carries its CPU time (cpu_s) and each rank runs share(step, rank) of the
  // wall time of its passes, optimizer and step overhead: another process holds its core the rest.
  std::function<double(int step, int rank)> share = nullptr;
};

// The speed probe's FLOPs and its rate at full speed in the synthetic traces.
constexpr double kProbeFlops = 4.2e6, kProbeRate = 5e9;

// The profile the synthetic spans are generated from: every figure calibration fits, and none
// equal to the round profile's, which the fit starts from.
HardwareProfile truth() {
  return testing::round_profile_edited(
      {{"matmul: 0.5, attention: 0.5,", "matmul: 0.4, matmul_half_rows: 64, attention: 0.3, memory: 0.7,"},
       {"runtime_reserved",
        "overheads: {per_layer_pass: \"20 us\", per_step: \"3 ms\"}\n"
        "collectives:\n"
        "  ring: {intra_node: {efficiency: 0.6, latency: \"4 us\"}}\n"
        "  all_to_all: {intra_node: {efficiency: 0.45, latency: \"7 us\"}}\n"
        "runtime_reserved"}},
      "truth.yaml");
}

struct SpanWriter {
  json events = json::array();
  void add(const std::string& category, const std::string& name, int rank, double start, double duration, json args) {
    events.push_back({{"name", name}, {"cat", category}, {"ph", "X"}, {"ts", start * 1e6}, {"dur", duration * 1e6},
                      {"pid", 0}, {"tid", rank}, {"args", args}});
  }
};

// A trace in the executor's shape for `shape` on the truth profile: per step and rank, the passes
// (with the TP all-reduces and EP all-to-alls the cost model counts nested inside), the DP
// all-reduces, the optimizer and the step, each exactly as long as the cost model says.
std::string synthetic_trace(const std::string& name, const RunShape& shape, int steps = 3) {
  const ModelConfig model = testing::tiny_moe();
  const HardwareProfile p = truth();
  const Layout& l = shape.layout;
  TrainingRun run = testing::tiny_run(shape.micro_batches * l.dp * l.micro_batch);
  run.seq_len = shape.seq_len;
  const CostModel cost(model, run, p);
  const Network net = Network::from(p);
  const auto probe = [&](SpanWriter& w, int step, int rank, double& t) {
    if (!shape.speed) return;
    const double d = kProbeFlops / (kProbeRate * shape.speed(step, rank));
    w.add("probe", "speed probe", rank, t, d, {{"step", step}, {"flops", kProbeFlops}});
    t += d;
  };
  const RankGrid grid(l, p.node.devices);
  SpanWriter w;
  for (int step = 0; step < steps; ++step) {
    for (int rank = 0; rank < l.devices(); ++rank) {
      const StageContents stage = stage_contents(model, l)[grid.coords(rank).pp];
      double t = step * 100.0;
      const double step_start = t;
      const CostModel at_rank_speed(model, run, at_speed(p, shape.speed ? shape.speed(step, rank) : 1.0));
      probe(w, step, rank, t);
      const double share = shape.share ? shape.share(step, rank) : 1.0;
      // A span's arguments, with its CPU time when the trace has CPU times.
      const auto with_cpu = [&](json args, double cpu) {
        if (shape.share) args["cpu_s"] = cpu;
        return args;
      };
      auto collective = [&](const std::string& category, const std::string& kind, double bytes, int size) {
        if (size < 2 || bytes <= 0) return;
        const double d = kind == "all_reduce" ? all_reduce_time(GroupSpan{size, size}, bytes, net)
                                              : all_to_all_time(GroupSpan{size, size}, bytes, net);
        // Gloo moves the bytes on the ranks' cores: at their share of them.
        w.add(category, kind, rank, t, d / share,
              with_cpu({{"step", step}, {"collective", kind}, {"bytes", bytes}, {"group_size", size}}, 0.0));
        t += d / share;
      };
      const int layers = stage.dense_layers + stage.moe_layers;
      for (int micro = 0; micro < shape.micro_batches; ++micro) {
        for (const std::string pass : {"forward", "backward"}) {
          probe(w, step, rank, t);
          const double start = t;
          const CostModel& c = at_rank_speed;
          const double cpu = c.compute_seconds(pass == "forward" ? c.forward_work(stage, l) : c.backward_work(stage, l));
          t += cpu / share;
          // Two all-reduces per layer and pass move what the model's four reduce-scatters move.
          for (int i = 0; i < 2 * layers; ++i) collective("tp", "all_reduce", cost.tp_collective_bytes(l), l.tp);
          for (int i = 0; i < 2 * stage.moe_layers; ++i) collective("ep", "all_to_all", cost.ep_payload_bytes(l), l.ep);
          w.add("compute", pass, rank, start, t - start, with_cpu({{"step", step}, {"pass", pass}, {"micro_batch", micro}}, cpu));
        }
      }
      collective("dp", "all_reduce", 4 * cost.dense_params_per_device(stage, l), l.dp);
      collective("dp", "all_reduce", 4 * cost.expert_params_per_device(stage, l), l.expert_dp());
      const double optimizer = cost.optimizer_seconds(stage, l);
      w.add("compute", "optimizer", rank, t, optimizer / share, with_cpu({{"step", step}, {"pass", "optimizer"}}, optimizer));
      t += (optimizer + p.overheads.per_step) / share;
      w.add("step", "step", rank, step_start, t - step_start, {{"step", step}, {"micro_batches", shape.micro_batches}});
    }
  }
  json layout = {{"tp", l.tp}, {"pp", l.pp}, {"vpp", 1}, {"ep", l.ep}, {"dp", l.dp}, {"micro_batch", l.micro_batch},
                 {"recompute", "none"}, {"optimizer_sharding", false}, {"sequence_parallel", false},
                 {"first_stage_layers", 0}, {"last_stage_layers", 0}};
  json meta = {{"model", model_to_json(model)}, {"layout", layout}, {"seq_len", shape.seq_len},
               {"global_batch", run.global_batch}, {"precision", "bf16"}, {"ranks", l.devices()},
               {"ranks_per_node", p.node.devices}, {"comm_overlap", "none"}};
  // One file per test process: ctest runs tests in parallel, each writing the same shapes.
  const std::string path = ::testing::TempDir() + "/flopwise_calibrate_" + std::to_string(::getpid()) + "_" + name + ".json";
  std::ofstream(path) << json{{"traceEvents", w.events}, {"otherData", {{"flopwise_run", meta}}}}.dump();
  return path;
}

Layout layout(int tp, int pp, int ep, int dp, int micro_batch) {
  return Layout{tp, pp, 1, ep, dp, micro_batch, Recompute::kNone, false, false};
}

const ParameterFit& find(const Calibration& c, const std::string& field) {
  for (const FitGroup& g : c.groups) {
    for (const ParameterFit& p : g.parameters) {
      if (p.field == field) return p;
    }
  }
  throw std::runtime_error("no fit of " + field);
}

std::vector<TracedRun> varied_runs() {
  return {load_traced_run(synthetic_trace("dp", {layout(1, 1, 1, 2, 1), 256, 2})),
          load_traced_run(synthetic_trace("ep", {layout(1, 1, 2, 2, 2), 1024, 2})),
          load_traced_run(synthetic_trace("ep-short", {layout(1, 1, 2, 2, 1), 512, 2})),
          load_traced_run(synthetic_trace("pp", {layout(1, 2, 1, 1, 1), 512, 3})),
          load_traced_run(synthetic_trace("tp", {layout(2, 1, 1, 1, 1), 512, 2}))};
}

}  // namespace

TEST(Calibrate, SyntheticTracesGiveBackTheirEfficienciesWithinOnePercent) {
  const Calibration c = calibrate(testing::round_profile(), varied_runs());
  const std::vector<std::pair<std::string, double>> expected = {
      {"efficiency.matmul", 0.4},
      {"efficiency.matmul_half_rows", 64},
      {"efficiency.attention", 0.3},
      {"efficiency.memory", 0.7},
      {"overheads.per_layer_pass", 20e-6},
      {"overheads.per_step", 3e-3},
      {"collectives.ring.intra_node.efficiency", 0.6},
      {"collectives.ring.intra_node.latency", 4e-6},
      {"collectives.all_to_all.intra_node.efficiency", 0.45},
      {"collectives.all_to_all.intra_node.latency", 7e-6},
  };
  for (const auto& [field, value] : expected) {
    const ParameterFit& fit = find(c, field);
    EXPECT_TRUE(fit.determined) << field << ": " << fit.note;
    EXPECT_NEAR(fit.after, value, 0.01 * value) << field;
  }
  for (const FitGroup& g : c.groups) EXPECT_LT(g.rms_relative_residual, 1e-6) << g.name;
  // The fitted profile predicts the traced steps; the starting one does not.
  const TracedRun ep = load_traced_run(synthetic_trace("ep", {layout(1, 1, 2, 2, 2), 1024, 2}));
  EXPECT_LT(step_time_error(c.after, ep), 1e-6);
  EXPECT_GT(step_time_error(c.before, ep), 0.05);
}

// A profile that measured its optimizer's kernels on their own (efficiency.memory_optimizer) has
// that figure fitted to the optimizer spans, not efficiency.memory: the traces' optimizer ran at
// the truth profile's 0.7.
TEST(Calibrate, AProfilesOwnOptimizerFigureIsTheOneTheOptimizerSpansFit) {
  HardwareProfile start = testing::round_profile();
  start.efficiency.memory_optimizer = 0.9;
  const Calibration c = calibrate(start, varied_runs());
  const ParameterFit& fit = find(c, "efficiency.memory_optimizer");
  EXPECT_TRUE(fit.determined) << fit.note;
  EXPECT_NEAR(fit.before, 0.9, 1e-12);
  EXPECT_NEAR(fit.after, 0.7, 0.007);
  EXPECT_NEAR(c.after.efficiency.optimizer_memory(), 0.7, 0.007);
  EXPECT_THROW(find(c, "efficiency.memory"), std::runtime_error);
}

// Checkpoint spans as flopwise-train writes them: a node's ranks write (and load) at once.
TEST(Calibrate, CheckpointSpansGiveBackTheStorageBandwidthPerNode) {
  std::vector<TracedRun> runs = varied_runs();
  TracedRun& dp = runs.front();
  // 100 MB per rank in 0.4 s, loads in 0.1 s, the node's ranks all at once: a node writes
  // ranks_per_node x 100 MB / 0.4 s and reads four times as fast.
  for (int rank = 0; rank < 2; ++rank) {
    dp.spans.push_back({rank, "checkpoint", "write", 10.0, 0.4, {{"pass", "write"}, {"bytes", 100e6}}});
    dp.spans.push_back({rank, "checkpoint", "load", 0.0, 0.1, {{"pass", "load"}, {"bytes", 100e6}}});
  }
  const double write = dp.ranks_per_node * 100e6 / 0.4;
  const Calibration c = calibrate(testing::round_profile(), runs);
  EXPECT_NEAR(find(c, "reliability.node_write_bandwidth").after, write, 1e-6 * write);
  EXPECT_NEAR(find(c, "reliability.node_read_bandwidth").after, 4 * write, 4e-6 * write);
  EXPECT_NEAR(c.after.reliability.node_write_bytes_per_s, write, 1e-6 * write);
  const std::string yaml = calibrated_profile_yaml(testing::round_profile_yaml(), "round.yaml", c, "2026-11-22");
  EXPECT_NEAR(parse_hardware_profile(yaml, "fitted.yaml").reliability.node_read_bytes_per_s, 4 * write, 1e-5 * write);
}

// A step taken while the machine had other work (every span of it 2x slower) is left out and
// named; the fit still gives back the true figures, each within its reported interval.
TEST(Calibrate, AnOutlierStepIsLeftOutAndTheFitStillRecoversTheProfile) {
  std::vector<TracedRun> runs = varied_runs();
  runs.front() = load_traced_run(synthetic_trace("dp-long", {layout(1, 1, 1, 2, 1), 256, 2}, 6));
  for (TraceSpan& span : runs.front().spans) {
    if (number_arg(span, "step") == 3) span.duration *= 2;
  }
  const Calibration c = calibrate(testing::round_profile(), runs);
  ASSERT_EQ(c.dropped.size(), 1u);
  EXPECT_NE(c.dropped[0].find("step 3: 2.0x the median step"), std::string::npos) << c.dropped[0];
  for (const auto& [field, value] : std::vector<std::pair<std::string, double>>{
           {"efficiency.matmul", 0.4}, {"efficiency.attention", 0.3}, {"overheads.per_step", 3e-3}}) {
    const ParameterFit& fit = find(c, field);
    ASSERT_TRUE(fit.determined) << field << ": " << fit.note;
    EXPECT_NEAR(fit.after, value, 0.01 * value) << field;
    EXPECT_LE(std::fabs(fit.after - value), fit.half_interval + 1e-9 * value) << field;
  }
}

// The calibrated profile says how far its step-time predictions stray: 1.96 x the rms relative
// error over the fitted steps, written into the profile and read back.
TEST(Calibrate, TheFittedProfileCarriesItsStepTimeInterval) {
  // The synthetic pp run has no bubble to match the model's: some scatter even without jitter.
  std::vector<TracedRun> runs = varied_runs();
  runs.front() = load_traced_run(synthetic_trace("dp-jitter", {layout(1, 1, 1, 2, 1), 256, 2}, 6));
  const double steady = calibrate(testing::round_profile(), runs).after.step_time_interval;
  EXPECT_GT(steady, 0.0);
  for (TraceSpan& span : runs.front().spans) {
    if (number_arg(span, "step") == 4) span.duration *= 1.2;  // jitter, below the outlier cut
  }
  const Calibration c = calibrate(testing::round_profile(), runs);
  EXPECT_TRUE(c.dropped.empty());
  EXPECT_GT(c.after.step_time_interval, steady);  // the jittery step widens it
  EXPECT_LT(c.after.step_time_interval, 1.0);
  const std::string yaml = calibrated_profile_yaml(testing::round_profile_yaml(), "round.yaml", c, "2026-11-22");
  EXPECT_NEAR(parse_hardware_profile(yaml, "fitted.yaml").step_time_interval, c.after.step_time_interval, 1e-5);
}

// At 1,024 tokens every GEMM but the router's is compute-bound forward and backward, so the
// backward is the forward twice over in every term but the router's input gradient (0.05% of it)
// and the fused attention core (2.5 times: its backward recomputes the scores). Matmul and
// attention separate; the per-pass overhead and the per-row GEMM cost do not.
TEST(Calibrate, OneRunShapeCannotSeparateTermsAndKeepsThem) {
  const Calibration c = calibrate(testing::round_profile(), {load_traced_run(synthetic_trace("one", {layout(1, 1, 1, 2, 1), 1024, 2}))});
  EXPECT_TRUE(find(c, "efficiency.matmul").determined);
  EXPECT_TRUE(find(c, "efficiency.attention").determined);
  EXPECT_NEAR(c.after.efficiency.attention, 0.3, 0.01 * 0.3);  // the truth profile's
  for (const std::string field : {"overheads.per_layer_pass", "efficiency.matmul_half_rows"}) {
    const ParameterFit& fit = find(c, field);
    EXPECT_FALSE(fit.determined) << field;
    EXPECT_NE(fit.note.find("under-determined"), std::string::npos) << fit.note;
    EXPECT_DOUBLE_EQ(fit.after, fit.before) << field;
  }
  EXPECT_DOUBLE_EQ(c.after.overheads.per_layer_pass, 0.0);
  // The written profile records both the fit and what was kept, and reads back.
  const std::string yaml = calibrated_profile_yaml(testing::round_profile_yaml(), "round.yaml", c, "2026-11-22");
  const HardwareProfile written = parse_hardware_profile(yaml, "written.yaml");
  EXPECT_EQ(written.name, "round-calibrated");
  EXPECT_NEAR(written.efficiency.matmul, c.after.efficiency.matmul, 1e-5 * c.after.efficiency.matmul);
  EXPECT_DOUBLE_EQ(written.overheads.per_layer_pass, 0.0);
  EXPECT_NE(yaml.find("date: 2026-11-22"), std::string::npos);
  EXPECT_NE(yaml.find("_one.json"), std::string::npos);  // the trace it was fitted from
  EXPECT_NE(yaml.find("kept: under-determined"), std::string::npos);
  EXPECT_NE(yaml.find("rms_relative_residual"), std::string::npos);
}

TEST(Calibrate, ReportShowsEachStepBeforeAndAfter) {
  const Calibration c = calibrate(testing::round_profile(), varied_runs());
  // A run without pipeline stages: the synthetic passes have no bubble to match the model's.
  const std::vector<TracedRun> runs = {load_traced_run(synthetic_trace("ep", {layout(1, 1, 2, 2, 2), 1024, 2}))};
  std::ostringstream out;
  print_report(out, runs, c);
  const std::string text = out.str();
  EXPECT_NE(text.find("step 0 (2 micro-batches, rank 0, warm-up: not fitted)"), std::string::npos) << text;
  EXPECT_NE(text.find("pp+bubble"), std::string::npos);
  EXPECT_NE(text.find("after 0.0%"), std::string::npos) << text;
}

TEST(Calibrate, TracesWithoutRunMetadataOrStepsAreRefusedByField) {
  const std::string plain = ::testing::TempDir() + "/flopwise_calibrate_plain.json";
  std::ofstream(plain) << R"({"traceEvents": [{"name": "F", "cat": "compute", "ph": "X", "ts": 0, "dur": 5, "tid": 0}]})";
  try {
    load_traced_run(plain);
    FAIL();
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("otherData.flopwise_run: missing"), std::string::npos) << e.what();
  }
  std::string text;
  {
    std::ifstream in(synthetic_trace("broken", {layout(1, 1, 1, 2, 1), 256, 2}));
    std::stringstream s;
    s << in.rdbuf();
    text = s.str();
  }
  json j = json::parse(text);
  j["traceEvents"][3]["args"].erase("step");
  const std::string no_step = ::testing::TempDir() + "/flopwise_calibrate_nostep.json";
  std::ofstream(no_step) << j.dump();
  try {
    load_traced_run(no_step);
    FAIL();
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("traceEvents[3].args.step: missing"), std::string::npos) << e.what();
  }
  j = json::parse(text);
  j["otherData"]["flopwise_run"]["layout"].erase("ep");
  std::ofstream(no_step) << j.dump();
  try {
    load_traced_run(no_step);
    FAIL();
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("otherData.flopwise_run.layout.ep: missing"), std::string::npos) << e.what();
  }
}

// Ranks on one host line up on its monotonic clock; a rank on another host keeps its own origin
// (the executor restarts every clock on leaving one barrier); a part without a clock stays put.
TEST(Calibrate, RankTracesMergeOntoTheFirstRanksTimeAxis) {
  auto part = [](int rank, const std::string& host, double origin) {
    TraceFile f;
    f.spans.push_back({rank, "compute", "F", 1.0, 0.5, json::object()});
    if (!host.empty()) f.other_data = rank_clock_to_json({host, origin});
    return f;
  };
  const std::vector<TraceSpan> merged =
      merge_rank_traces({part(0, "a", 100.0), part(1, "a", 100.25), part(2, "b", 7.0), part(3, "", 0)});
  ASSERT_EQ(merged.size(), 4u);
  EXPECT_DOUBLE_EQ(merged[0].start, 1.0);
  EXPECT_DOUBLE_EQ(merged[1].start, 1.25);  // started 0.25 s later on the same clock
  EXPECT_DOUBLE_EQ(merged[2].start, 1.0);
  EXPECT_DOUBLE_EQ(merged[3].start, 1.0);
}

// Rank 1 reaches every DP all-reduce `late` after rank 0, which waits for it: with a common clock
// the waits are told apart from the transfers and the ring figures come back; without one, the
// waits inflate the fitted transfer time.
TEST(Calibrate, PeerWaitsAreNotFittedAsTransferTime) {
  auto with_waits = [](bool common_clock) {
    std::vector<TracedRun> runs = varied_runs();
    for (TracedRun& run : runs) {
      run.common_clock = common_clock;
      for (TraceSpan& s : run.spans) {
        if (s.category != "dp") continue;
        const double late = 2 * s.duration;
        if (s.rank % 2) s.start += late;  // arrives late, transfers as long as before
        else s.duration += late;          // arrives on time and waits
      }
    }
    return runs;
  };
  const Calibration c = calibrate(testing::round_profile(), with_waits(true));
  const ParameterFit& efficiency = find(c, "collectives.ring.intra_node.efficiency");
  ASSERT_TRUE(efficiency.determined) << efficiency.note;
  EXPECT_NEAR(efficiency.after, 0.6, 0.01 * 0.6);
  const std::vector<TracedRun> blind = with_waits(false);
  const double blind_efficiency = find(calibrate(testing::round_profile(), blind), "collectives.ring.intra_node.efficiency").after;
  EXPECT_LT(blind_efficiency, 0.55);
  // The report counts the waits as their own category; the DP transfer stays the model's.
  std::vector<Seconds> waits = peer_waits(with_waits(true).front());
  double total = 0;
  for (Seconds w : waits) total += w;
  EXPECT_GT(total, 0.0);
  EXPECT_EQ(peer_waits(blind.front()), std::vector<Seconds>(blind.front().spans.size(), 0.0));
}

// One stretched span (a preempted core during one micro-batch) is outvoted by the step's other
// spans of the same kind: the fit takes their median.
TEST(Calibrate, OneStretchedSpanDoesNotPullTheFit) {
  std::vector<TracedRun> runs = varied_runs();
  for (TraceSpan& s : runs.front().spans) {
    if (s.category == "compute" && text_arg(s, "pass") == "forward" && s.rank == 0 && number_arg(s, "step") == 1) {
      s.duration *= 1.4;  // below the outlier cut for the whole step
      break;
    }
  }
  const Calibration c = calibrate(testing::round_profile(), runs);
  EXPECT_TRUE(c.dropped.empty());
  EXPECT_NEAR(find(c, "efficiency.matmul").after, 0.4, 0.01 * 0.4);
}

// A collective that now and then takes twice its time (a woken rank waiting a scheduler slice)
// costs its steps its mean: with every ring all-reduce of the last step at 2x, the ring's fitted
// bandwidth comes out about 1.5x slower (efficiency near 0.6 / 1.5: its latency, fitted at 1.5 x
// 4 us, has an interval wider than the value under the 2x scatter and keeps the round profile's,
// which moves the efficiency by a few percent). Weighing each point by its own time instead
// favours the quick steps: 1 / e_fit = 1 / e x (1 + 2 / 4) / (1 + 1 / 4) = 1.2 / e, efficiency 0.5.
TEST(Calibrate, ACollectivesLongTailCostsItsMean) {
  std::vector<TracedRun> runs = varied_runs();
  for (TracedRun& run : runs) {
    for (TraceSpan& s : run.spans) {
      if ((s.category == "dp" || s.category == "tp") && number_arg(s, "step") == 2) s.duration *= 2;
    }
  }
  const Calibration c = calibrate(testing::round_profile(), runs);
  EXPECT_TRUE(c.dropped.empty());
  const ParameterFit& efficiency = find(c, "collectives.ring.intra_node.efficiency");
  ASSERT_TRUE(efficiency.determined) << efficiency.note;
  EXPECT_NEAR(efficiency.after, 0.6 / 1.5, 0.05 * 0.4);
  EXPECT_NE(find(c, "collectives.ring.intra_node.latency").note.find("fit gave 6e-06"), std::string::npos);
  EXPECT_NEAR(find(c, "collectives.all_to_all.intra_node.efficiency").after, 0.45, 0.01 * 0.45);
}

// Relative least squares of one constant over 1, 1, 1 and 5 (mean 2): weighed by a common scale it
// is the mean; weighed by each point's own value, sum (p - y) / y^2 = 0 gives p = 3.2 / 3.04 = 1.053.
TEST(LeastSquares, ACommonScaleFitsTheMeanWhereOwnValuesFavourTheSmall) {
  const std::vector<Unknown> constant = {{"c", 1.0, 0.0, 100.0}};
  LinearSystem own, common;
  for (double y : {1.0, 1.0, 1.0, 5.0}) {
    own.add({1.0}, y);
    common.add({1.0}, y, 0.0, 2.0);
  }
  EXPECT_NEAR(solve(common, constant).theta[0], 2.0, 1e-12);
  EXPECT_NEAR(solve(own, constant).theta[0], 3.2 / 3.04, 1e-12);
}

// Expert rows counted by the executor give each rank's load over its EP group's mean; a step's
// routing skew is its busiest rank's, and the prediction prices that skew.
TEST(Calibrate, ExpertRowsGiveEachStepsRoutingSkew) {
  TracedRun run = load_traced_run(synthetic_trace("skew", {layout(1, 1, 2, 2, 1), 512, 2}));
  auto counts = [&](int rank, int step, double rows) {
    run.spans.push_back({rank, "ep", "all_to_all", 0, 0, {{"step", step}, {"collective", "all_to_all"}, {"bytes", 8},
                                                          {"group_size", 2}, {"expert_rows", rows}}});
  };
  counts(0, 1, 200), counts(0, 1, 100), counts(1, 1, 100);  // rank 0: 300 rows, rank 1: 100
  counts(0, 2, 100), counts(1, 2, 100);
  const auto loads = expert_loads(run);
  EXPECT_DOUBLE_EQ(loads.at({1, 0}), 1.5);
  EXPECT_DOUBLE_EQ(loads.at({1, 1}), 0.5);
  EXPECT_DOUBLE_EQ(loads.at({2, 1}), 1.0);
  const std::vector<MeasuredStep> steps = measured_steps(run);
  EXPECT_DOUBLE_EQ(steps[1].routing_skew, 1.5);
  EXPECT_DOUBLE_EQ(steps[2].routing_skew, 1.0);
  EXPECT_DOUBLE_EQ(steps[0].routing_skew, 1.0);  // no counts: balanced
  EXPECT_GT(predicted_step(truth(), run, steps[1]).compute, predicted_step(truth(), run, steps[2]).compute);
}

// A core slowed to half speed for a whole run (a neighbour on its physical core) is seen by its
// speed probes: the fit still gives back the truth's efficiencies, the slowed steps are predicted
// at their own speed, and the profile records the reference rate its figures hold at. Without the
// probes the same spans pull the matmul efficiency down.
TEST(Calibrate, SpeedProbesTellASlowCoreFromTheEfficiencies) {
  std::vector<TracedRun> runs = varied_runs();
  RunShape slowed{layout(1, 1, 1, 2, 1), 256, 2, [](int, int rank) { return rank == 1 ? 0.5 : 1.0; }};
  runs.front() = load_traced_run(synthetic_trace("dp-slowed", slowed, 4));
  const auto unslowed = [](int, int) { return 1.0; };
  runs.back() = load_traced_run(synthetic_trace("tp-probed", {layout(2, 1, 1, 1, 1), 512, 2, unslowed}, 4));
  const Calibration c = calibrate(testing::round_profile(), runs);
  EXPECT_NEAR(c.after.reference_probe_rate, kProbeRate, 1e-6 * kProbeRate);  // most probed steps ran at full speed
  EXPECT_NEAR(find(c, "efficiency.matmul").after, 0.4, 0.01 * 0.4);
  EXPECT_NEAR(find(c, "efficiency.attention").after, 0.3, 0.01 * 0.3);
  const std::vector<MeasuredStep> steps = measured_steps(runs.front());
  EXPECT_DOUBLE_EQ(steps[1].probe_rate, kProbeRate / 2);  // the slowest rank's
  EXPECT_DOUBLE_EQ(machine_speed(c.after, steps[1].probe_rate), 0.5);
  EXPECT_NEAR(step_time_error(c.after, runs.front()), 0.0, 0.01);
  // Written into the profile and read back.
  const std::string yaml = calibrated_profile_yaml(testing::round_profile_yaml(), "round.yaml", c, "2026-11-22");
  EXPECT_NEAR(parse_hardware_profile(yaml, "fitted.yaml").reference_probe_rate, kProbeRate, 1e-5 * kProbeRate);
  // The same spans without their probes: the slow core's time is taken for the device's.
  for (TracedRun& run : runs) {
    run.spans.erase(std::remove_if(run.spans.begin(), run.spans.end(), [](const TraceSpan& s) { return s.category == "probe"; }),
                    run.spans.end());
  }
  const Calibration blind = calibrate(testing::round_profile(), runs);
  EXPECT_EQ(blind.after.reference_probe_rate, 0.0);
  EXPECT_GT(std::abs(find(blind, "efficiency.matmul").after - 0.4), 0.02);
  EXPECT_GT(step_time_error(blind.after, runs.front()), 0.1);
}

// A pipeline's stages can run on cores of different speeds: each stage is priced at its own, so the
// bubble behind a fast stage stays short while the slow stage paces the micro-batches.
TEST(Calibrate, EachPipelineStageIsPredictedAtItsOwnCoresSpeed) {
  const RunShape shape{layout(1, 2, 1, 1, 1), 512, 3, [](int, int rank) { return rank == 1 ? 0.5 : 1.0; }};
  const TracedRun run = load_traced_run(synthetic_trace("pp-probed", shape));
  HardwareProfile calibrated = truth();
  calibrated.reference_probe_rate = kProbeRate;
  const MeasuredStep step = measured_steps(run)[1];
  ASSERT_EQ(step.stage_probe_rates, (std::vector<FlopsPerSecond>{kProbeRate, kProbeRate / 2}));
  EXPECT_DOUBLE_EQ(step.probe_rate, kProbeRate / 2);
  const Layout& l = run.layout;
  const std::vector<StageContents> stages = stage_contents(run.model, l);
  const TrainingRun as_ran = step_run(run, step);
  const HardwareProfile machine = as_run(truth(), run);
  const CostModel::RankTime fast = CostModel(run.model, as_ran, machine).micro_batch_time(stages[0], l);
  const CostModel::RankTime slow = CostModel(run.model, as_ran, at_speed(machine, 0.5)).micro_batch_time(stages[1], l);
  const CategoryTimes t = predicted_step(calibrated, run, step);
  EXPECT_NEAR(t.compute, 3 * std::max(fast, slow, [](auto& a, auto& b) { return a.total() < b.total(); }).compute(), 1e-12);
  const StepCost by_hand = CostModel(run.model, as_ran, at_speed(machine, 0.5)).evaluate(l, stages, {fast, slow});
  EXPECT_NEAR(by_hand.bubble_s, pipeline_bubble_seconds({fast.passes(), slow.passes()}, 1), 1e-15);
  EXPECT_NEAR(t.step, by_hand.step_time_s, 1e-12);
  // Both stages at the slow core's speed would make the bubble, and the step, longer.
  EXPECT_GT(predicted_step(at_speed(truth(), 0.5), run, step).step, t.step);
}

// A step's speed is the trimmed mean of its probes (one preempted probe does not count), and the
// probes' own time is taken out of the measured step.
TEST(Calibrate, ProbesGiveEachStepsSpeedAndLeaveItsTime) {
  TracedRun run = load_traced_run(synthetic_trace("probes", {layout(1, 1, 1, 2, 1), 256, 2}));
  const Seconds step_before = measured_steps(run)[1].times.step;
  for (double us : {10.0, 10.0, 20.0, 20.0, 500.0}) {  // the 500 us one was preempted
    for (int rank : {0, 1}) run.spans.push_back({rank, "probe", "speed probe", 100, us * 1e-6, {{"step", 1}, {"flops", 3e6}}});
  }
  const auto rates = probe_rates(run);
  EXPECT_DOUBLE_EQ(rates.at({1, 0}), 3e6 / (50e-6 / 3));  // 10, 20, 20 us kept
  const MeasuredStep step = measured_steps(run)[1];
  EXPECT_NEAR(step.times.step, step_before - 560e-6, 1e-12);
  EXPECT_DOUBLE_EQ(step.probe_rate, rates.at({1, 0}));
  EXPECT_DOUBLE_EQ(measured_steps(run)[0].probe_rate, 0.0);  // no probes in step 0
  HardwareProfile uncalibrated = truth();
  EXPECT_DOUBLE_EQ(machine_speed(uncalibrated, step.probe_rate), 1.0);  // no reference: as profiled
  uncalibrated.reference_probe_rate = 2 * step.probe_rate;
  EXPECT_DOUBLE_EQ(machine_speed(uncalibrated, step.probe_rate), 0.5);
  EXPECT_NEAR(predicted_step(uncalibrated, run, step).compute, predicted_step(at_speed(truth(), 0.5), run, step).compute, 1e-12);
}

// Another process on a core takes time slices that a short probe seldom meets: the passes' CPU
// times say how much of their wall time the rank ran. Fitted on CPU time, a run whose cores were
// both shared half the time in its later steps still gives back the truth, and each step is
// predicted at its measured share.
TEST(Calibrate, CpuTimesTellASharedCoreFromTheEfficiencies) {
  std::vector<TracedRun> runs = varied_runs();
  const auto half_after_first = [](int step, int) { return step >= 2 ? 0.5 : 1.0; };
  RunShape shared{layout(1, 1, 1, 2, 1), 256, 2, nullptr, half_after_first};
  runs.front() = load_traced_run(synthetic_trace("dp-shared", shared, 4));
  const auto whole = [](int, int) { return 1.0; };
  runs.back() = load_traced_run(synthetic_trace("tp-timed", {layout(2, 1, 1, 1, 1), 512, 2, nullptr, whole}, 4));
  const Calibration c = calibrate(testing::round_profile(), runs);
  EXPECT_NEAR(find(c, "efficiency.matmul").after, 0.4, 0.01 * 0.4);
  EXPECT_NEAR(find(c, "efficiency.attention").after, 0.3, 0.01 * 0.3);
  const std::vector<MeasuredStep> steps = measured_steps(runs.front());
  EXPECT_NEAR(steps[1].cpu_share, 1.0, 1e-9);
  EXPECT_NEAR(steps[2].cpu_share, 0.5, 1e-9);
  EXPECT_NEAR(step_time_error(c.after, runs.front()), 0.0, 0.01);
  // The same spans without their CPU times: the shared core's time is taken for the device's.
  for (TracedRun& run : runs) {
    for (TraceSpan& span : run.spans) span.args.erase("cpu_s");
  }
  const Calibration blind = calibrate(testing::round_profile(), runs);
  EXPECT_GT(step_time_error(blind.after, runs.front()), 0.1);
}

// Shares by hand: rank 0's pass ran 4 of its 10 ms, 2 ms of them in an all-to-all that waited 1 ms
// for rank 1; rank 1 ran 6 of its 8 ms. Rank 1 is the stage's critical rank: rank 0 went at its pace.
TEST(Calibrate, CpuSharesByHand) {
  TracedRun run = load_traced_run(synthetic_trace("shares", {layout(1, 1, 2, 2, 1), 256, 1}, 1));
  run.common_clock = true;  // the spans below share one time axis
  run.spans.clear();
  const json a2a = {{"step", 1}, {"collective", "all_to_all"}, {"bytes", 1e3}, {"group_size", 2}, {"cpu_s", 1e-4}};
  run.spans.push_back({0, "compute", "forward", 0.0, 10e-3, {{"step", 1}, {"pass", "forward"}, {"cpu_s", 4e-3}}});
  run.spans.push_back({0, "ep", "all_to_all", 2e-3, 2e-3, a2a});
  run.spans.push_back({1, "compute", "forward", 0.0, 8e-3, {{"step", 1}, {"pass", "forward"}, {"cpu_s", 6e-3}}});
  run.spans.push_back({1, "ep", "all_to_all", 3e-3, 1e-3, a2a});
  for (int rank : {0, 1}) run.spans.push_back({rank, "step", "step", 0.0, 12e-3, {{"step", 1}, {"micro_batches", 1}}});
  const auto shares = cpu_shares(run);
  EXPECT_NEAR(shares.at({1, 0}).own, 3.9e-3 / 8e-3, 1e-12);
  EXPECT_NEAR(shares.at({1, 0}).paced, 3.9e-3 / 9e-3, 1e-12);  // its 1 ms wait for rank 1 counts
  EXPECT_NEAR(shares.at({1, 1}).own, 5.9e-3 / 7e-3, 1e-12);
  EXPECT_NEAR(shares.at({1, 1}).paced, 5.9e-3 / 7e-3, 1e-12);
  const MeasuredStep step = measured_steps(run).back();
  EXPECT_NEAR(step.cpu_share, 5.9e-3 / 7e-3, 1e-12);
  EXPECT_EQ(step.stage_cpu_shares.size(), 1u);
  // A span without its CPU time leaves the rank's share unknown.
  run.spans[2].args.erase("cpu_s");
  EXPECT_EQ(cpu_shares(run).count({1, 1}), 0u);
}

// A share stretches everything the rank runs; a probe's speed only its compute.
TEST(Calibrate, AtSpeedScalesWhatEachSlowdownSlows) {
  HardwareProfile p = truth();
  const HardwareProfile slowed = at_speed(p, 0.5, 0.25);
  EXPECT_DOUBLE_EQ(slowed.device.peak_tflops.at("bf16"), p.device.peak_tflops.at("bf16") * 0.125);
  EXPECT_DOUBLE_EQ(slowed.device.memory_bandwidth, p.device.memory_bandwidth * 0.25);
  EXPECT_DOUBLE_EQ(slowed.overheads.per_layer_pass, p.overheads.per_layer_pass * 4);
  EXPECT_DOUBLE_EQ(slowed.overheads.per_step, p.overheads.per_step * 4);
  EXPECT_DOUBLE_EQ(slowed.node.intra_bandwidth, p.node.intra_bandwidth * 0.25);
  EXPECT_DOUBLE_EQ(slowed.collectives.at(CollectiveAlgorithm::kRing).intra_node->latency, 4 * 4e-6);
  const HardwareProfile probed = at_speed(p, 0.5);
  EXPECT_DOUBLE_EQ(probed.device.memory_bandwidth, p.device.memory_bandwidth);
  EXPECT_DOUBLE_EQ(probed.overheads.per_step, p.overheads.per_step);
}

// Runs without all-to-alls leave its figures to the link: it takes the ring's fitted ones (the same
// transport carries it), unless the profile has its own.
TEST(Calibrate, ACollectiveWithoutFiguresTakesTheRingsFitted) {
  const std::vector<TracedRun> dp_only = {load_traced_run(synthetic_trace("dp-ring", {layout(1, 1, 1, 2, 1), 256, 2})),
                                          load_traced_run(synthetic_trace("dp-ring-long", {layout(1, 1, 1, 2, 1), 1024, 2}))};
  const Calibration c = calibrate(testing::round_profile(), dp_only);
  const LinkFigures& ring = *c.after.collectives.at(CollectiveAlgorithm::kRing).intra_node;
  EXPECT_NEAR(ring.latency, 4e-6, 1e-9);
  for (CollectiveAlgorithm other : {CollectiveAlgorithm::kAllToAll, CollectiveAlgorithm::kSendRecv}) {
    const LinkFigures& inherited = *c.after.collectives.at(other).intra_node;
    EXPECT_DOUBLE_EQ(inherited.latency, ring.latency);
    EXPECT_DOUBLE_EQ(inherited.efficiency, ring.efficiency);
    EXPECT_FALSE(c.after.collectives.at(other).inter_node);  // no ring fitted across nodes
  }
  const Calibration own = calibrate(truth(), dp_only);
  EXPECT_DOUBLE_EQ(own.after.collectives.at(CollectiveAlgorithm::kAllToAll).intra_node->latency, 7e-6);
}

}  // namespace flopwise
