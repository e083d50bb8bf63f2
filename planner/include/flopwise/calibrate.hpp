#pragma once
// Calibration: fit a profile's efficiencies to executor traces (Eigen least squares; calibrate.cpp)
// and report the fit and the predicted against measured steps (calibration_report.cpp). Reading the
// traces into steps is traced_steps.hpp's; reading the trace files is the core's.
#include <iosfwd>
#include <string>
#include <vector>

#include "flopwise/cost_model.hpp"
#include "flopwise/least_squares.hpp"
#include "flopwise/trace.hpp"
#include "flopwise/traced_steps.hpp"
#include "flopwise/validation.hpp"

namespace flopwise {

struct Calibration {
  HardwareProfile before, after;
  std::vector<FitGroup> groups;
  std::vector<std::string> sources;
  // Measurements kept out of the fit, with how well the fitted profile predicts them.
  std::vector<std::string> held_out;
  // Outlier steps left out of the fit ("trace.json step 4: 1.7x the median step").
  std::vector<std::string> dropped;
};

Calibration calibrate(const HardwareProfile& profile, const std::vector<TracedRun>& runs);

// The input profile's YAML with the fitted figures written in and a `calibration` section saying
// what they were fitted from, the residuals and the date (YYYY-MM-DD).
std::string calibrated_profile_yaml(const std::string& original_yaml, const std::string& source,
                                    const Calibration& calibration, const std::string& date);

void print_fit(std::ostream& out, const Calibration& calibration);

// One published run in a fit to published step times: fitted or held out, its step time measured
// and predicted before and after the fit (held out: by a fit that never saw it).
struct PublishedFitRow {
  std::string name;
  bool held_out = false;
  Seconds measured = 0, before = 0, after = 0;
};

struct PublishedFit {
  Calibration calibration;  // fitted to every row not held out
  std::vector<PublishedFitRow> rows;
  bool leave_one_out = false;  // each row's `after` from the fit to all the others
};

// Fits a profile's efficiencies (matmul, memory, attention) and per-layer overhead to the measured
// step times of the published runs on that profile (their `hardware` names it), with the same
// least squares as the trace fit: the cost model's step time, linearised in the parameters by
// finite differences, Gauss-Newton until it settles. Rows named in `held_out` stay out of the fit;
// with none named, every row is predicted by a fit to all the others (leave-one-out). InputError
// when no run uses the profile or a held-out name matches no run.
PublishedFit fit_published_runs(const HardwareProfile& profile, const std::vector<PublishedRun>& runs,
                                 const std::vector<std::string>& held_out);
void print_published_fit(std::ostream& out, const PublishedFit& fit);
// Per traced step and category: measured, predicted before and after the fit, relative errors.
void print_report(std::ostream& out, const std::vector<TracedRun>& runs, const Calibration& calibration);


}  // namespace flopwise
