// Calibration on real CPU runs: fit the cpu-core profile to traces of one layout, then predict
// another layout's measured step time better than the uncalibrated profile does.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "flopwise/calibrate.hpp"
#include "flopwise/catalog.hpp"

namespace flopwise {
namespace {

std::string temp(const std::string& name) { return ::testing::TempDir() + "/flopwise_calib_" + name; }

std::string plan_file(const std::string& name, int tp, int pp, int ep, int dp) {
  nlohmann::json model = {{"name", "ling-lite"}, {"family", "bailing_moe"}, {"layers", 28}, {"hidden", 2048},
                          {"heads", 16}, {"kv_heads", 4}, {"head_dim", 128}, {"vocab", 126464}, {"seq_len", 4096},
                          {"q_lora_rank", 0}, {"kv_lora_rank", 0}, {"rope_head_dim", 0}, {"v_head_dim", 0},
                          {"routed_experts", 64}, {"top_k", 6}, {"expert_ffn", 1408}, {"shared_experts", 2},
                          {"shared_expert_ffn", 1408}, {"dense_ffn", 5632}, {"first_dense_layers", 0},
                          {"qkv_bias", false}, {"tied_embeddings", false}};
  nlohmann::json plan = {{"schema", "flopwise.plan/1"}, {"model", model}, {"global_batch", 8960}, {"seq_len", 4096},
                         {"devices", tp * pp * dp},
                         {"layout", {{"tp", tp}, {"pp", pp}, {"vpp", 1}, {"ep", ep}, {"dp", dp}, {"micro_batch", 1},
                                     {"recompute", "none"}, {"optimizer_sharding", false}}},
                         {"rank_map", {{"order", "tp-ep-dp-pp"}}}};
  const std::string path = temp(name + ".plan.json");
  std::ofstream(path) << plan.dump();
  return path;
}

// Trains 5 steps of the 1/16-width Ling-Lite on two ranks and returns the trace.
TracedRun traced(const std::string& name, const std::string& plan, int seq_len) {
  const std::string trace = temp(name + ".trace.json"), out = temp(name + ".out");
  const std::string command = std::string(FLOPWISE_TRAIN_BINARY) + " " + plan +
                              " --scale 0.0625 --steps 5 --micro-batches 4 --seed 5 --seq-len " + std::to_string(seq_len) +
                              " --trace " + trace + " > " + out + " 2>&1";
  const int status = std::system(command.c_str());
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << command;
  return load_traced_run(trace);
}

}  // namespace

TEST(ExecutorCalibration, FittingOneLayoutImprovesThePredictionOfAnother) {
  const std::string dp2 = plan_file("dp2", 1, 1, 1, 2);
  const std::vector<TracedRun> fitted_on = {traced("dp2-s64", dp2, 64), traced("dp2-s128", dp2, 128)};
  const TracedRun other = traced("pp2-s128", plan_file("pp2", 1, 2, 1, 1), 128);
  const HardwareProfile cpu = resolve_profile("cpu-core");
  const Calibration calibration = calibrate(cpu, fitted_on);
  std::ostringstream fit;
  print_fit(fit, calibration);
  const double before = step_time_error(cpu, other), after = step_time_error(calibration.after, other);
  std::cout << fit.str() << "pp2 step-time error: uncalibrated " << 100 * before << "%, calibrated on dp2 " << 100 * after
            << "%\n";
  RecordProperty("error_before_percent", std::to_string(100 * before));
  RecordProperty("error_after_percent", std::to_string(100 * after));
  // Typically 88% -> 2-17% here; the bound leaves room for this VM's cores, one of which now and
  // then runs a whole trace 1.7x slower.
  EXPECT_LT(after, 0.5 * before) << fit.str();
  // The report covers every traced step of the held-out run.
  std::ostringstream report;
  print_report(report, {other}, calibration);
  EXPECT_NE(report.str().find("step 4 (4 micro-batches"), std::string::npos) << report.str();
}

}  // namespace flopwise
