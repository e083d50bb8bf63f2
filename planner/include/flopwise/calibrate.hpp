#pragma once
// Calibration: fit a profile's efficiencies to executor traces (Eigen least squares), and compare
// what the cost model predicts for each traced step with what was measured.
#include <iosfwd>
#include <string>
#include <vector>

#include "flopwise/cost_model.hpp"
#include "flopwise/trace.hpp"

namespace flopwise {

// Step time by category on one rank. `pp` holds time blocked in pipeline receives, which is the
// transfer and the bubble together (a trace cannot tell them apart); predictions add pp and bubble.
struct CategoryTimes {
  Seconds compute = 0, tp = 0, ep = 0, pp = 0, dp = 0, optimizer = 0, other = 0, step = 0;
};
inline constexpr const char* kCategoryNames[] = {"compute", "tp", "ep", "pp+bubble", "dp", "optimizer", "other", "step"};
std::vector<Seconds> as_list(const CategoryTimes& times);

struct MeasuredStep {
  int step = 0;
  int micro_batches = 0;
  int rank = 0;  // the busiest rank (most compute plus TP and EP), as the cost model reports
  bool warmup = false;  // the trace's first step: allocations and first-touch, kept out of fits
  CategoryTimes times;
};
std::vector<MeasuredStep> measured_steps(const TracedRun& run);

// The cost model's figures for one step of the traced run (`micro_batches` per replica) on
// `profile`, with the node size set to the ranks the run had per node.
CategoryTimes predicted_step(const HardwareProfile& profile, const TracedRun& run, int micro_batches);

// One profile parameter a fit touched.
struct ParameterFit {
  std::string field;  // YAML path in the profile, e.g. "efficiency.matmul"
  double before = 0, after = 0;
  bool determined = false;
  std::string note;  // why it was kept, when it was
};

// One least-squares system: its parameters, points and relative residual.
struct FitGroup {
  std::string name;
  int points = 0;
  double rms_relative_residual = 0;
  std::vector<ParameterFit> parameters;
};

struct Calibration {
  HardwareProfile before, after;
  std::vector<FitGroup> groups;
  std::vector<std::string> sources;
};

Calibration calibrate(const HardwareProfile& profile, const std::vector<TracedRun>& runs);

// The input profile's YAML with the fitted figures written in and a `calibration` section saying
// what they were fitted from, the residuals and the date (YYYY-MM-DD).
std::string calibrated_profile_yaml(const std::string& original_yaml, const std::string& source,
                                    const Calibration& calibration, const std::string& date);

void print_fit(std::ostream& out, const Calibration& calibration);
// Per traced step and category: measured, predicted before and after the fit, relative errors.
void print_report(std::ostream& out, const std::vector<TracedRun>& runs, const Calibration& calibration);

// Mean absolute relative error of predicted step time over a run's steps after warm-up.
double step_time_error(const HardwareProfile& profile, const TracedRun& run);

}  // namespace flopwise
