#include "flopwise/gemm.hpp"

#include <cmath>

namespace flopwise {
namespace {

constexpr int kMaxKSplits = 16;

struct Tile {
  double rows, cols;
};

double output_tiles(const GemmShape& s, Tile tile) {
  return s.count * std::ceil(s.rows / tile.rows) * std::ceil(s.cols / tile.cols);
}

// Useful over issued work when `splits` slices of the inner dimension each take a tile.
double busy_fraction(const GemmTiling& t, const GemmShape& s, Tile tile, int splits) {
  const double waves = std::ceil(output_tiles(s, tile) * splits / t.compute_units);
  return s.rows * s.cols * s.count * splits / (waves * t.compute_units * tile.rows * tile.cols);
}

// Split-K (cuBLASLt's CUBLASLT_ALGO_CONFIG_SPLITK_NUM) fills idle units when the output has
// fewer tiles than the device has units; a fuller output would gain at most its last wave.
int max_k_splits(const GemmTiling& t, const GemmShape& s, Tile tile) {
  return output_tiles(s, tile) < t.compute_units ? kMaxKSplits : 1;
}

}  // namespace

// Each split-K slice writes an fp32 partial of the whole output and a reduction reads it back: 8
// bytes per output element per slice.
GemmSchedule schedule_gemm(const GemmTiling& t, const GemmShape& s, FlopsPerSecond matmul_rate,
                           BytesPerSecond memory_rate) {
  GemmSchedule best;
  if (t.compute_units <= 0 || s.rows <= 0 || s.cols <= 0 || s.count <= 0 || s.inner <= 0) return best;
  const Tile tiles[] = {{static_cast<double>(t.tile_rows), static_cast<double>(t.tile_cols)},
                        {static_cast<double>(t.tile_cols), static_cast<double>(t.tile_rows)},
                        {static_cast<double>(t.tile_rows), t.tile_cols / 2.0}};
  const Flops useful = 2.0 * s.rows * s.cols * s.inner * s.count;
  Seconds best_time = INFINITY;
  for (int i = 0; i < (t.half_tiles ? 3 : 2); ++i) {
    const int most = max_k_splits(t, s, tiles[i]);
    for (int splits = 1; splits <= most && s.inner / splits >= 1.0; ++splits) {
      const double busy = busy_fraction(t, s, tiles[i], splits);
      const Bytes partials = splits > 1 ? 8.0 * splits * s.rows * s.cols * s.count : 0.0;
      const Seconds time = useful / busy / matmul_rate + partials / memory_rate;
      if (time < best_time) {
        best_time = time;
        best = {busy, splits, partials};
      }
    }
  }
  return best;
}

}  // namespace flopwise
