#pragma once
// Calibration: fit a profile's efficiencies to executor traces (Eigen least squares; calibrate.cpp)
// and report the fit and the predicted against measured steps (calibration_report.cpp). Reading the
// traces into steps is traced_steps.hpp's; reading the trace files is the core's.
#include <iosfwd>
#include <string>
#include <vector>

#include "flopwise/cost_model.hpp"
#include "flopwise/trace.hpp"
#include "flopwise/traced_steps.hpp"

namespace flopwise {

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


}  // namespace flopwise
