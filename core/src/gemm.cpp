#include "flopwise/gemm.hpp"

#include <algorithm>
#include <cmath>

namespace flopwise {
namespace {

double efficiency_with(const GemmTiling& t, double rows, double cols, double count, int tile_rows, int tile_cols) {
  const double tiles = count * std::ceil(rows / tile_rows) * std::ceil(cols / tile_cols);
  const double waves = std::ceil(tiles / t.compute_units);
  return rows * cols * count / (waves * t.compute_units * static_cast<double>(tile_rows) * tile_cols);
}

}  // namespace

double wave_efficiency(const GemmTiling& t, double rows, double cols, double count) {
  if (t.compute_units <= 0 || rows <= 0 || cols <= 0 || count <= 0) return 1.0;
  return std::max(efficiency_with(t, rows, cols, count, t.tile_rows, t.tile_cols),
                  efficiency_with(t, rows, cols, count, t.tile_cols, t.tile_rows));
}

}  // namespace flopwise
