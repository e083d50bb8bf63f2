#include "flopwise/scaling.hpp"

#include <yaml-cpp/yaml.h>

#include <Eigen/Dense>
#include <cmath>
#include <fstream>
#include <map>
#include <sstream>

#include "flopwise/error.hpp"

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

double positive(const YAML::Node& node, const std::string& key, const std::string& source, const std::string& where) {
  const YAML::Node v = node[key];
  if (!v || !v.IsScalar()) throw input_error(source, where + key, "missing field");
  double value = 0;
  try {
    value = v.as<double>();
  } catch (const YAML::Exception&) {
    throw input_error(source, where + key, "expected a number, got '" + v.as<std::string>() + "'");
  }
  return value;
}

PowerLaw read_law(const YAML::Node& node, const std::string& source, const std::string& where) {
  if (!node || !node.IsMap()) throw input_error(source, where, "missing section");
  return PowerLaw{positive(node, "coefficient", source, where + "."), positive(node, "exponent", source, where + ".")};
}

}  // namespace

ScalingFit parse_scaling(const std::string& yaml_text, const std::string& source) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    throw InputError(source + ":" + std::to_string(e.mark.line + 1) + ": malformed YAML: " + e.msg);
  }
  if (!root.IsMap()) throw input_error(source, "", "expected a map with name, source and fit or points");
  const std::string name = root["name"] ? root["name"].as<std::string>() : source;
  if (!root["source"]) throw input_error(source, "source", "missing field (say where the numbers come from)");
  const std::string origin = root["source"].as<std::string>();
  if (root["points"]) {
    std::vector<GridPoint> points;
    for (size_t i = 0; i < root["points"].size(); ++i) {
      const YAML::Node p = root["points"][i];
      const std::string where = "points[" + std::to_string(i) + "].";
      points.push_back({positive(p, "compute_flops", source, where), positive(p, "batch_tokens", source, where),
                        positive(p, "learning_rate", source, where), positive(p, "loss", source, where)});
    }
    return fit_scaling(points, name, origin);
  }
  const YAML::Node fit = root["fit"];
  if (!fit) throw input_error(source, "fit", "missing: give fit coefficients or grid points");
  ScalingFit s;
  s.name = name;
  s.source = origin;
  s.batch_tokens = read_law(fit["batch_tokens"], source, "fit.batch_tokens");
  s.learning_rate = read_law(fit["learning_rate"], source, "fit.learning_rate");
  return s;
}

ScalingFit load_scaling(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw input_error(path, "", "cannot open scaling file");
  std::ostringstream text;
  text << in.rdbuf();
  return parse_scaling(text.str(), path);
}

const ScalingFit& default_scaling() {
  static const ScalingFit fit = [] {
    const auto& [name, text] = builtin_scaling_texts().front();
    return parse_scaling(text, "built-in scaling " + name);
  }();
  return fit;
}

}  // namespace flopwise
