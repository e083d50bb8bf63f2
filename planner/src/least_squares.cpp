#include "flopwise/least_squares.hpp"

#include <Eigen/Dense>
#include <algorithm>
#include <cmath>
#include <cstdio>

namespace flopwise {
namespace {

// Columns (normalised) that a combination of the others matches to within 1% are not measured
// independently: measured step times scatter by percents, so such a difference is noise, and an
// exact fit through it trades one term for another (a tiny GEMM's epilogue did so once).
int rank_of(const Eigen::MatrixXd& m) {
  Eigen::ColPivHouseholderQR<Eigen::MatrixXd> qr(m);
  qr.setThreshold(1e-2);
  return static_cast<int>(qr.rank());
}

// Standard deviations of the least-squares solution of a x = b: residual variance over the spare
// points times the diagonal of (a^T a)^-1; NaN without spare points.
Eigen::VectorXd standard_deviations(const Eigen::MatrixXd& a, const Eigen::VectorXd& b, const Eigen::VectorXd& x) {
  const Eigen::Index p = a.cols(), m = a.rows();
  if (p == 0) return Eigen::VectorXd();
  if (m <= p) return Eigen::VectorXd::Constant(p, std::nan(""));
  const double variance = (a * x - b).squaredNorm() / static_cast<double>(m - p);
  const Eigen::MatrixXd inverse = (a.transpose() * a).inverse();
  return (variance * inverse.diagonal()).cwiseSqrt();
}

}  // namespace

SolveResult solve(const LinearSystem& system, const std::vector<Unknown>& unknowns) {
  const int n = static_cast<int>(unknowns.size());
  std::vector<int> usable;
  for (size_t i = 0; i < system.measured.size(); ++i) {
    if (system.measured[i] > 0) usable.push_back(static_cast<int>(i));
  }
  SolveResult r;
  r.points = static_cast<int>(usable.size());
  r.determined.assign(n, false);
  r.notes.assign(n, "");
  r.theta.resize(n);
  r.theta_sd.assign(n, 0.0);
  for (int j = 0; j < n; ++j) r.theta[j] = unknowns[j].prior;
  Eigen::MatrixXd x(r.points, n);
  Eigen::VectorXd y(r.points);
  for (int i = 0; i < r.points; ++i) {
    const int row = usable[i];
    const double scale = system.scales[row];
    y(i) = (system.measured[row] - system.offsets[row]) / scale;
    for (int j = 0; j < n; ++j) x(i, j) = system.rows[row][j] / scale;
  }
  if (r.points == 0) {
    for (int j = 0; j < n; ++j) r.notes[j] = "no measured points";
    return r;
  }
  Eigen::VectorXd scale(n);
  for (int j = 0; j < n; ++j) scale(j) = x.col(j).norm();
  std::vector<bool> excluded(n, false);  // fitted outside their physical range once
  std::vector<int> chosen;
  for (;;) {
    // Take parameters in order while each adds rank to the (column-normalised) system.
    chosen.clear();
    for (int j = 0; j < n; ++j) {
      if (excluded[j]) continue;
      if (scale(j) == 0) {
        r.notes[j] = "no measured point exercises work of this kind";
        continue;
      }
      std::vector<int> trial = chosen;
      trial.push_back(j);
      Eigen::MatrixXd sub(r.points, trial.size());
      for (size_t k = 0; k < trial.size(); ++k) sub.col(k) = x.col(trial[k]) / scale(trial[k]);
      if (rank_of(sub) == static_cast<int>(trial.size())) {
        chosen.push_back(j);
        r.notes[j].clear();
      } else {
        r.notes[j] = "under-determined: the measurements do not vary it independently (add runs of other sizes)";
      }
    }
    Eigen::VectorXd rhs = y;
    for (int j = 0; j < n; ++j) {
      r.theta[j] = unknowns[j].prior;
      if (std::find(chosen.begin(), chosen.end(), j) == chosen.end()) rhs -= x.col(j) * unknowns[j].prior;
    }
    Eigen::MatrixXd sub(r.points, chosen.size());
    for (size_t k = 0; k < chosen.size(); ++k) sub.col(k) = x.col(chosen[k]) / scale(chosen[k]);
    const Eigen::VectorXd solution = chosen.empty() ? Eigen::VectorXd() : Eigen::VectorXd(sub.colPivHouseholderQr().solve(rhs));
    const Eigen::VectorXd sd = standard_deviations(sub, rhs, solution);
    bool dropped = false;
    for (size_t k = 0; k < chosen.size() && !dropped; ++k) {
      const int j = chosen[k];
      const double value = solution(k) / scale(j);
      r.theta[j] = value;
      r.theta_sd[j] = sd(k) / scale(j);
      char note[160];
      if (!(value >= unknowns[j].min && value <= unknowns[j].max)) {
        std::snprintf(note, sizeof note, "fit gave %.4g, outside its physical range", value);
        r.notes[j] = note;
        excluded[j] = dropped = true;
      } else if (!std::isfinite(r.theta_sd[j])) {
        // As many unknowns as points fit any data exactly; a near-collinear pair then trades
        // one term for another unseen, so a figure without an interval is not a measurement.
        r.notes[j] = "under-determined: no measured point to spare for its interval (add runs of other sizes)";
        excluded[j] = dropped = true;
      } else if (1.96 * r.theta_sd[j] > std::fabs(value)) {
        std::snprintf(note, sizeof note, "fit gave %.4g +- %.2g (95%%): the interval is wider than the value", value,
                      1.96 * r.theta_sd[j]);
        r.notes[j] = note;
        excluded[j] = dropped = true;
      }
    }
    if (!dropped) break;
  }
  for (int j : chosen) r.determined[j] = true;
  Eigen::VectorXd theta(n);
  for (int j = 0; j < n; ++j) theta(j) = r.theta[j];
  r.rms_relative = std::sqrt((x * theta - y).squaredNorm() / r.points);
  return r;
}

FitGroup make_fit_group(const std::string& name, const std::vector<Unknown>& unknowns, const SolveResult& r,
                        const std::vector<std::function<double(const std::vector<double>&)>>& to_field,
                        const std::vector<double>& field_before) {
  FitGroup g{name, r.points, r.rms_relative, {}};
  for (size_t j = 0; j < unknowns.size(); ++j) {
    ParameterFit fit{unknowns[j].field, field_before[j], to_field[j](r.theta), r.determined[j], r.notes[j]};
    if (r.determined[j]) {
      // The interval in the field's own unit: the field at theta +- 1.96 sd (fields are 1/theta,
      // theta x constant, ...: monotonic), half the spread.
      std::vector<double> low = r.theta, high = r.theta;
      low[j] -= 1.96 * r.theta_sd[j];
      high[j] += 1.96 * r.theta_sd[j];
      fit.half_interval = std::isnan(r.theta_sd[j]) ? std::nan("") : std::fabs(to_field[j](high) - to_field[j](low)) / 2;
    }
    g.parameters.push_back(fit);
  }
  return g;
}

}  // namespace flopwise
