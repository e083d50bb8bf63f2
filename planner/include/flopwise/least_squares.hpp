#pragma once
// Relative linear least squares over a profile's parameters, the machinery every calibration
// (executor traces, published runs) shares.
#include <functional>
#include <string>
#include <vector>

namespace flopwise {

// One profile parameter a fit touched.
struct ParameterFit {
  std::string field;  // YAML path in the profile, e.g. "efficiency.matmul"
  double before = 0, after = 0;
  bool determined = false;
  std::string note;  // why it was kept, when it was
  double half_interval = 0;  // 95% confidence half-width of `after`, in the field's unit; NaN: no spare points
};

// One least-squares system: its parameters, points and relative residual.
struct FitGroup {
  std::string name;
  int points = 0;
  double rms_relative_residual = 0;
  std::vector<ParameterFit> parameters;
};

// A linear model y = offset + X theta in which some parameters may stay at their prior values.
struct LinearSystem {
  std::vector<std::vector<double>> rows;
  std::vector<double> measured;
  std::vector<double> offsets;  // the part of each point no parameter scales
  std::vector<double> scales;   // what each point's residual is relative to (by default its measurement)
  void add(std::vector<double> row, double y, double offset = 0, double scale = 0) {
    rows.push_back(std::move(row));
    measured.push_back(y);
    offsets.push_back(offset);
    scales.push_back(scale > 0 ? scale : y);
  }
};

// How one unknown maps to a profile field, and what values make sense.
struct Unknown {
  std::string field;
  double prior = 0;         // theta from the profile before the fit
  double min = 0, max = 0;  // physical range of theta
};

struct SolveResult {
  std::vector<double> theta;
  std::vector<double> theta_sd;  // standard deviation of each determined theta (NaN: as many points as unknowns)
  std::vector<bool> determined;
  std::vector<std::string> notes;
  double rms_relative = 0;
  int points = 0;
};

// Relative least squares (each point weighted by 1/scale, its measurement unless the caller knows
// a steadier scale, so short points count as much as long ones); points measured at zero or less
// are left out. Parameters join in `unknowns` order while they add rank; the rest, any whose fitted
// value leaves its physical range, and any whose 95% interval (1.96 standard deviations from the
// residual variance and (X^T X)^-1) is wider than the value itself, keep their prior and say why.
SolveResult solve(const LinearSystem& system, const std::vector<Unknown>& unknowns);

// The fit as the report and the written profile show it: each unknown's field value before and
// after (`to_field` maps theta to it).
FitGroup make_fit_group(const std::string& name, const std::vector<Unknown>& unknowns, const SolveResult& result,
                        const std::vector<std::function<double(const std::vector<double>&)>>& to_field,
                        const std::vector<double>& field_before);

}  // namespace flopwise
