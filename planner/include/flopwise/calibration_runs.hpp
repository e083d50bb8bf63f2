#pragma once
// Measuring instead of guessing: short flopwise-train runs that `flopwise calibrate --plan-runs`
// makes itself (a designed set, repeated until the fitted intervals are tight or the time budget is
// spent), and the repeatability benchmark of issue 15's protocol (`flopwise bench --calibration`).
// The planner starts flopwise-train as a program: it never links LibTorch.
#include <filesystem>
#include <iosfwd>
#include <string>
#include <vector>

#include "flopwise/calibrate.hpp"

namespace flopwise {

// One short traced run: a layout of the scaled-down model at one sequence length.
struct ShortRun {
  std::string name;  // "dp2-s128", also the trace's file name
  Layout layout;
  int seq_len = 0;
  double scale = 0.0625;  // flopwise-train --scale: model width and depth
};

// How to run flopwise-train for calibration.
struct Trainer {
  std::filesystem::path program;    // flopwise-train
  std::filesystem::path trace_dir;  // plans, traces and logs go here
  std::string model = "ling-lite";
  int steps = 6;
  int micro_batches = 4;
};

// Trains `run` (seed `seed`) and loads its trace; InputError naming the log when the run fails.
TracedRun run_traced(const Trainer& trainer, const HardwareProfile& profile, const ShortRun& run, int seed);

// Runs on `ranks` ranks in which every parameter `calibrate` fits varies on its own: sequence
// lengths 32..256 (matmul against attention against per-pass overhead), a second width (weights
// per row, and a second size of gradient all-reduce), TP and EP runs at two sizes each
// (collective bandwidth against latency).
std::vector<ShortRun> designed_runs(int ranks);

struct RunBudget {
  Seconds seconds = 300;           // stop starting runs past this
  double target_relative = 0.10;   // every fitted parameter's 95% half-interval within this of its value
  int max_rounds = 10;
};

struct PlannedCalibration {
  Calibration calibration;
  int rounds = 0, runs = 0;
  bool tight = false;  // every fitted parameter met the target
  std::string widest;  // the parameter with the widest relative interval, and its width
  Seconds wall = 0;
};

// Repeats `designed` rounds (a new seed each) and refits after each, until every fitted
// parameter's interval is within the target or the budget runs out; a progress bar goes to
// `progress`.
PlannedCalibration calibrate_with_runs(const HardwareProfile& profile, const Trainer& trainer,
                                       const std::vector<ShortRun>& designed, const RunBudget& budget,
                                       std::ostream& progress);

// Issue 15's protocol `repetitions` times: fit on dp2 at sequence 64 and 128, predict a pp2 and an
// ep2 run; prints each repetition's held-out error and whether the interval held the measured
// steps. With `busy`, a second process keeps one core busy throughout.
void bench_calibration(const HardwareProfile& profile, const Trainer& trainer, int repetitions, bool busy,
                       std::ostream& out);

}  // namespace flopwise
