// Calibration on real CPU runs: fit the cpu-core profile to traces of one layout, then predict
// another layout's measured step time better than the uncalibrated profile does.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <fstream>
#include <iostream>
#include <sstream>

#include "flopwise/calibrate.hpp"
#include "flopwise/calibration_runs.hpp"
#include "flopwise/catalog.hpp"
#include "executor_test_plans.hpp"

namespace flopwise {
namespace {

std::string temp(const std::string& name) { return ::testing::TempDir() + "/flopwise_calib_" + name; }

std::string plan_file(const std::string& name, int tp, int pp, int ep, int dp) {
  return testing::write_ling_lite_plan(temp(name + ".plan.json"), tp, pp, ep, dp, false);
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

// --plan-runs' loop on one real run: it always makes at least one run, reports it on the progress
// bar, refits, and stops when the next run would pass the budget. The trace it fits has the
// common clock that peer waits need.
TEST(ExecutorCalibration, PlannedRunsStopAtTheBudget) {
  const Trainer trainer{FLOPWISE_TRAIN_BINARY, temp("planned")};
  const ShortRun first = designed_runs(2).front();
  ASSERT_EQ(first.name, "dp2-s32");
  std::ostringstream progress;
  const PlannedCalibration planned =
      calibrate_with_runs(resolve_profile("cpu-core"), trainer, {first}, RunBudget{0.5, 0.1, 3}, progress);
  EXPECT_EQ(planned.runs, 1);
  EXPECT_EQ(planned.rounds, 1);
  EXPECT_NE(progress.str().find("round 1, run 1/1 dp2-s32"), std::string::npos) << progress.str();
  EXPECT_NE(progress.str().find("round 1: widest interval"), std::string::npos) << progress.str();
  const TracedRun run = load_traced_run(trainer.trace_dir / "dp2-s32-seed1.trace.json");
  EXPECT_TRUE(run.common_clock);
  EXPECT_EQ(run.run.attention, AttentionKernel::kUnfused);
  EXPECT_EQ(run.run.seq_len, 32);
}

}  // namespace flopwise
