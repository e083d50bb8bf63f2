#pragma once
// How a GEMM library lays one GEMM (or a batch of equal GEMMs) over a device's compute units.
#include "flopwise/units.hpp"

namespace flopwise {

// A GEMM library splits the output into tiles, one per compute unit (SM) at a time; the last
// wave of tiles leaves units idle and partial tiles compute padding (NVIDIA, "Matrix
// Multiplication Background User's Guide": tile and wave quantization). compute_units == 0 means
// the device does not work in tiles (CPUs, unknown accelerators): every FLOP counts as useful.
struct GemmTiling {
  int compute_units = 0;
  int tile_rows = 0;  // the library's largest tile
  int tile_cols = 0;
  bool half_tiles = false;     // it also runs tile_rows x tile_cols / 2 tiles at the same rate per unit
  Seconds launch_latency = 0;  // per GEMM kernel: launch, pipeline fill and drain
  bool operator==(const GemmTiling&) const = default;
};

struct GemmShape {
  double rows = 0;
  double cols = 0;
  double inner = 0;
  double count = 1;  // equal GEMMs launched together (a grouped GEMM over experts shares its waves)
};

// What the library runs: the fraction of the issued tile work that is useful, in (0, 1], and how
// many ways it splits the inner dimension. Split-K partial sums go through memory in fp32.
struct GemmSchedule {
  double busy_fraction = 1.0;
  int k_splits = 1;
  Bytes partial_bytes = 0;
};

// The schedule a library's heuristic would pick: of the tile (either way round), its half tile
// where the library has one, and, for an output of fewer tiles than units, of 1 to 16 splits of
// the inner dimension, the one whose main loop (at `matmul_rate` over the busy fraction) plus
// partial sums (at `memory_rate`) takes least time.
GemmSchedule schedule_gemm(const GemmTiling& tiling, const GemmShape& shape, FlopsPerSecond matmul_rate,
                           BytesPerSecond memory_rate);

}  // namespace flopwise
