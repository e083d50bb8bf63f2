#pragma once
// Compute-optimal batch size and learning rate as power laws of the compute budget.
#include <string>
#include <vector>

namespace flopwise {

struct PowerLaw {
  double coefficient = 0;
  double exponent = 0;
  double at(double compute_flops) const;
};

// One grid-search run: its compute budget, batch (tokens), peak learning rate and final loss.
struct GridPoint {
  double compute_flops = 0;
  double batch_tokens = 0;
  double learning_rate = 0;
  double loss = 0;
};

struct ScalingFit {
  std::string name;
  std::string source;
  PowerLaw batch_tokens;
  PowerLaw learning_rate;
  // Filled when fitted from grid points: the best run per budget and the fit's log10 residuals.
  std::vector<GridPoint> optima;
  std::vector<double> batch_residuals, learning_rate_residuals;
};

// Least squares of log y = log a + b log x (Eigen): y = a x^b. Needs two distinct x values.
PowerLaw fit_power_law(const std::vector<double>& x, const std::vector<double>& y, const std::string& what);

// The lowest-loss run of each compute budget, fitted in log space.
ScalingFit fit_scaling(const std::vector<GridPoint>& points, const std::string& name, const std::string& source);

// A YAML file with either `fit:` coefficients or grid `points:`; errors name the file and field.
ScalingFit load_scaling(const std::string& path);
ScalingFit parse_scaling(const std::string& yaml_text, const std::string& source);
// The shipped default (planner/scaling/deepseek-llm.yaml, embedded).
const ScalingFit& default_scaling();

}  // namespace flopwise
