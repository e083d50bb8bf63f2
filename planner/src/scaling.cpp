#include "flopwise/scaling.hpp"

#include <Eigen/Dense>
#include <cmath>
#include <map>

#include "flopwise/error.hpp"
#include "flopwise/json_reader.hpp"
#include "flopwise/yaml_reader.hpp"

namespace flopwise {

const std::vector<std::pair<std::string, std::string>>& builtin_scaling_texts();

double PowerLaw::at(double compute_flops) const { return coefficient * std::pow(compute_flops, exponent); }

PowerLaw fit_power_law(const std::vector<double>& x, const std::vector<double>& y, const std::string& what) {
  const Eigen::Index n = static_cast<Eigen::Index>(x.size());
  Eigen::MatrixXd design(n, 2);
  Eigen::VectorXd target(n);
  for (Eigen::Index i = 0; i < n; ++i) {
    if (!(x[i] > 0) || !(y[i] > 0)) throw input_error(what, "", "power-law fits need positive values");
    design(i, 0) = 1.0;
    design(i, 1) = std::log(x[i]);
    target(i) = std::log(y[i]);
  }
  const auto qr = design.colPivHouseholderQr();
  if (n < 2 || qr.rank() < 2) {
    throw input_error(what, "", "cannot fit a power law: need runs at two or more different compute budgets");
  }
  const Eigen::Vector2d solution = qr.solve(target);
  return PowerLaw{std::exp(solution(0)), solution(1)};
}

ScalingFit fit_scaling(const std::vector<GridPoint>& points, const std::string& name, const std::string& source) {
  std::map<double, GridPoint> best;  // per compute budget, the run with the lowest loss
  for (const GridPoint& p : points) {
    auto it = best.find(p.compute_flops);
    if (it == best.end() || p.loss < it->second.loss) best[p.compute_flops] = p;
  }
  ScalingFit fit;
  fit.name = name;
  fit.source = source;
  std::vector<double> c, b, lr;
  for (const auto& [budget, p] : best) {
    fit.optima.push_back(p);
    c.push_back(budget);
    b.push_back(p.batch_tokens);
    lr.push_back(p.learning_rate);
  }
  fit.batch_tokens = fit_power_law(c, b, source + ": points (batch)");
  fit.learning_rate = fit_power_law(c, lr, source + ": points (learning rate)");
  for (const GridPoint& p : fit.optima) {
    fit.batch_residuals.push_back(std::log10(p.batch_tokens / fit.batch_tokens.at(p.compute_flops)));
    fit.learning_rate_residuals.push_back(std::log10(p.learning_rate / fit.learning_rate.at(p.compute_flops)));
  }
  return fit;
}

namespace {

constexpr double kHuge = 1e300;

PowerLaw read_law(const YamlFields& f) {
  return PowerLaw{f.number("coefficient", -kHuge, kHuge), f.number("exponent", -kHuge, kHuge)};
}

}  // namespace

ScalingFit parse_scaling(const std::string& yaml_text, const std::string& source) {
  const YamlFields root(parse_yaml(yaml_text, source), source, "");
  const std::string name = root.has("name") ? root.text("name") : source;
  if (!root.has("source")) throw input_error(source, "source", "missing field (say where the numbers come from)");
  const std::string origin = root.text("source");
  if (root.has("points")) {
    std::vector<GridPoint> points;
    for (const YamlFields& p : root.list("points")) {
      points.push_back({p.number("compute_flops", 0, kHuge), p.number("batch_tokens", 0, kHuge),
                        p.number("learning_rate", 0, kHuge), p.number("loss", -kHuge, kHuge)});
    }
    return fit_scaling(points, name, origin);
  }
  if (!root.has("fit")) throw input_error(source, "fit", "missing: give fit coefficients or grid points");
  const YamlFields fit = root.section("fit");
  ScalingFit s;
  s.name = name;
  s.source = origin;
  s.batch_tokens = read_law(fit.section("batch_tokens"));
  s.learning_rate = read_law(fit.section("learning_rate"));
  return s;
}

ScalingFit load_scaling(const std::string& path) {
  return parse_scaling(read_text_file(path, "scaling file"), path);
}

const ScalingFit& default_scaling() {
  static const ScalingFit fit = [] {
    const auto& [name, text] = builtin_scaling_texts().front();
    return parse_scaling(text, "built-in scaling " + name);
  }();
  return fit;
}

}  // namespace flopwise
