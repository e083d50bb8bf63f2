#include "flopwise/executor/recipe.hpp"

#include <algorithm>
#include <cmath>

namespace flopwise::executor {

double learning_rate(const Recipe& r, int step) {
  const int total = r.steps;
  if (step < r.warmup_steps) return r.peak_lr * (step + 1) / r.warmup_steps;
  const int halve_at = static_cast<int>(0.6 * total), anneal_from = static_cast<int>(0.9 * total);
  if (step < halve_at) return r.peak_lr;
  const double stable = r.peak_lr / 2;
  if (step < anneal_from || total - anneal_from < 1) return stable;
  // Inverse square root from `stable` down to stable x 1e-4 at the last step.
  const double t = static_cast<double>(step - anneal_from) / std::max(1, total - 1 - anneal_from);
  const double k = (1.0 / std::pow(1e-4, 2) - 1.0);
  return stable / std::sqrt(1.0 + k * t);
}

int micro_batches_at(const Recipe& r, int step, int full) {
  if (r.batch_warmup_steps <= 0 || step >= r.batch_warmup_steps) return full;
  const double start = 2560.0 / 8960.0;
  const double fraction = start + (1.0 - start) * step / r.batch_warmup_steps;
  return std::max(1, static_cast<int>(std::lround(full * fraction)));
}

}  // namespace flopwise::executor
