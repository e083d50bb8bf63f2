#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ostream>
#include <set>

#include "flopwise/calibrate.hpp"
#include "flopwise/error.hpp"

namespace flopwise {
namespace {

// theta = (1 / efficiency.matmul, 1 / efficiency.memory, 1 / efficiency.attention,
// overheads.per_layer_pass, 1 / efficiency.matmul_fp8): the step time's compute terms are linear
// in these. The last only for a device with fp8 (rows without fp8 GEMMs then leave it
// under-determined, and so kept).
constexpr int kFp8 = 4;
const char* const kFields[] = {"efficiency.matmul", "efficiency.memory", "efficiency.attention",
                               "overheads.per_layer_pass", "efficiency.matmul_fp8"};

int parameters_of(const HardwareProfile& p) { return p.device.fp8 ? kFp8 + 1 : kFp8; }

std::vector<double> theta_of(const HardwareProfile& p) {
  std::vector<double> theta{1.0 / p.efficiency.matmul, 1.0 / p.efficiency.memory, 1.0 / p.efficiency.attention,
                            p.overheads.per_layer_pass, 1.0 / p.efficiency.matmul_of(Precision::kFp8)};
  theta.resize(parameters_of(p));
  return theta;
}

HardwareProfile with_theta(HardwareProfile p, const std::vector<double>& theta) {
  p.efficiency.matmul = 1.0 / theta[0];
  p.efficiency.memory = 1.0 / theta[1];
  p.efficiency.attention = 1.0 / theta[2];
  p.overheads.per_layer_pass = theta[3];
  if (theta.size() > kFp8) p.efficiency.matmul_fp8 = 1.0 / theta[kFp8];
  return p;
}

Seconds step_time(const PublishedRun& run, const HardwareProfile& profile) {
  return CostModel(run.model, run.run, profile).evaluate(run.layout).step_time_s;
}

// The step times linearised around `theta`: slope by a forward difference per parameter, and the
// part no parameter scales (communication, bubble's share of it) as the offset.
LinearSystem linearised(const std::vector<const PublishedRun*>& rows, const HardwareProfile& base,
                        const std::vector<double>& theta) {
  LinearSystem system;
  for (const PublishedRun* run : rows) {
    const Seconds at = step_time(*run, with_theta(base, theta));
    std::vector<double> slope(theta.size());
    double offset = at;
    for (size_t j = 0; j < theta.size(); ++j) {
      std::vector<double> moved = theta;
      const double h = theta[j] > 0 ? 1e-4 * theta[j] : 1e-7;
      moved[j] += h;
      slope[j] = (step_time(*run, with_theta(base, moved)) - at) / h;
      offset -= slope[j] * theta[j];
    }
    system.add(slope, run->measured_step_s, offset);
  }
  return system;
}

struct RowsFit {
  HardwareProfile after;
  FitGroup group;
};

// Gauss-Newton: the max() of overlap and the slowest stage make the step time piecewise linear, so
// relinearise at each solution until it stops moving.
RowsFit fit_rows(const HardwareProfile& profile, const std::vector<const PublishedRun*>& rows) {
  std::vector<double> theta = theta_of(profile);
  std::vector<Unknown> unknowns;
  SolveResult result;
  for (int round = 0; round < 8; ++round) {
    unknowns.clear();
    for (size_t j = 0; j < theta.size(); ++j) {
      const bool efficiency = j != 3;
      unknowns.push_back({kFields[j], theta[j], efficiency ? 1.0 : 0.0, efficiency ? 1000.0 : 1.0});
    }
    result = solve(linearised(rows, profile, theta), unknowns);
    double moved = 0;
    for (size_t j = 0; j < theta.size(); ++j) {
      moved = std::max(moved, std::abs(result.theta[j] - theta[j]) / std::max(std::abs(theta[j]), 1e-9));
    }
    theta = result.theta;
    if (moved < 1e-6) break;
  }
  // Undetermined parameters keep the profile's value.
  const std::vector<double> prior = theta_of(profile);
  for (size_t j = 0; j < theta.size(); ++j) {
    if (!result.determined[j]) theta[j] = prior[j];
  }
  RowsFit fit{with_theta(profile, theta), {}};
  auto inverse = [](int j) { return [j](const std::vector<double>& t) { return 1.0 / t[j]; }; };
  // (Fields past the profile's parameters are never read: the group has one per unknown.)
  fit.group = make_fit_group("published step times", unknowns, result,
                             {inverse(0), inverse(1), inverse(2), [](const std::vector<double>& t) { return t[3]; },
                              inverse(kFp8)},
                             {profile.efficiency.matmul, profile.efficiency.memory, profile.efficiency.attention,
                              profile.overheads.per_layer_pass, profile.efficiency.matmul_of(Precision::kFp8)});
  // The residual of the real (not linearised) model at the fitted values.
  double squares = 0;
  for (const PublishedRun* run : rows) {
    const double relative = step_time(*run, fit.after) / run->measured_step_s - 1.0;
    squares += relative * relative;
  }
  fit.group.rms_relative_residual = std::sqrt(squares / rows.size());
  return fit;
}

std::vector<const PublishedRun*> runs_on(const HardwareProfile& profile, const std::vector<PublishedRun>& runs) {
  std::vector<const PublishedRun*> on;
  for (const PublishedRun& run : runs) {
    if (run.profile == profile.name) on.push_back(&run);
  }
  if (on.empty()) {
    std::set<std::string> profiles;
    for (const PublishedRun& run : runs) profiles.insert(run.profile);
    std::string names;
    for (const std::string& name : profiles) names += (names.empty() ? "" : ", ") + name;
    throw input_error("--profile", "", "no published run uses profile '" + profile.name + "' (they use: " + names + ")");
  }
  return on;
}

}  // namespace

PublishedFit fit_published_runs(const HardwareProfile& profile, const std::vector<PublishedRun>& runs,
                                const std::vector<std::string>& held_out) {
  const std::vector<const PublishedRun*> on = runs_on(profile, runs);
  for (const std::string& name : held_out) {
    if (std::none_of(on.begin(), on.end(), [&](const PublishedRun* r) { return r->name == name; })) {
      throw input_error("--hold-out", "", "no published run on " + profile.name + " is named '" + name + "'");
    }
  }
  auto is_held_out = [&](const PublishedRun* r) {
    return std::find(held_out.begin(), held_out.end(), r->name) != held_out.end();
  };
  std::vector<const PublishedRun*> fitted;
  for (const PublishedRun* r : on) {
    if (!is_held_out(r)) fitted.push_back(r);
  }
  if (fitted.empty()) throw input_error("--hold-out", "", "holds out every run: nothing left to fit");
  PublishedFit fit;
  fit.leave_one_out = held_out.empty() && on.size() > 1;
  const RowsFit all = fit_rows(profile, fitted);
  Calibration& c = fit.calibration;
  c.before = profile;
  c.after = all.after;
  c.groups = {all.group};
  for (const PublishedRun* r : fitted) c.sources.push_back(r->name + ": " + r->source);
  for (const PublishedRun* r : on) {
    PublishedFitRow row{r->name, is_held_out(r), r->measured_step_s, step_time(*r, profile), 0};
    if (fit.leave_one_out) {
      std::vector<const PublishedRun*> others;
      for (const PublishedRun* o : on) {
        if (o != r) others.push_back(o);
      }
      row.after = step_time(*r, fit_rows(profile, others).after);
    } else {
      row.after = step_time(*r, c.after);
    }
    if (row.held_out || fit.leave_one_out) {
      char text[200];
      std::snprintf(text, sizeof text, "%s: measured %.4g s, predicted %.4g s (%+.1f%%, %s)", row.name.c_str(),
                    row.measured, row.after, 100 * (row.after / row.measured - 1.0),
                    fit.leave_one_out ? "fitted to the other runs" : "held out of the fit");
      c.held_out.push_back(text);
    }
    fit.rows.push_back(row);
  }
  // How far the fit strays on runs it never saw: 1.96 x their rms relative error.
  double sum = 0;
  int scored = 0;
  for (const PublishedFitRow& row : fit.rows) {
    if (!row.held_out && !fit.leave_one_out) continue;
    sum += (row.after / row.measured - 1) * (row.after / row.measured - 1);
    ++scored;
  }
  c.after.step_time_interval = scored > 0 ? 1.96 * std::sqrt(sum / scored) : 0;
  return fit;
}

void print_published_fit(std::ostream& out, const PublishedFit& fit) {
  print_fit(out, fit.calibration);
  char line[200];
  std::snprintf(line, sizeof line, "%-24s %-9s %10s %10s %8s %10s %8s\n", "run", "role", "measured", "before", "error",
                "after", "error");
  out << line;
  double before = 0, after = 0;
  int scored = 0;
  for (const PublishedFitRow& row : fit.rows) {
    const char* role = fit.leave_one_out ? "left out" : row.held_out ? "held out" : "fitted";
    std::snprintf(line, sizeof line, "%-24s %-9s %9.2fs %9.2fs %+7.1f%% %9.2fs %+7.1f%%\n", row.name.c_str(), role,
                  row.measured, row.before, 100 * (row.before / row.measured - 1), row.after,
                  100 * (row.after / row.measured - 1));
    out << line;
    if (fit.leave_one_out || row.held_out) {
      before += std::abs(row.before / row.measured - 1);
      after += std::abs(row.after / row.measured - 1);
      ++scored;
    }
  }
  if (scored == 0) {
    out << "no run held out: the fitted rows' errors say how well the fit reproduces them, not how it predicts\n";
    return;
  }
  std::snprintf(line, sizeof line, "%s mean |error| over %d run(s): before %.1f%%, after %.1f%%\n",
                fit.leave_one_out ? "leave-one-out" : "held-out", scored, 100 * before / scored, 100 * after / scored);
  out << line;
}

}  // namespace flopwise
