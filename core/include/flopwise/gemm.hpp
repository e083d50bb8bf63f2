#pragma once
// How fully a GEMM's output tiles occupy a device's compute units.

namespace flopwise {

// A GEMM library splits the output into tiles, one per compute unit (SM) at a time; the last
// wave of tiles leaves units idle and partial tiles compute padding (NVIDIA, "Matrix
// Multiplication Background User's Guide": tile and wave quantization). compute_units == 0 means
// the device does not work in tiles (CPUs, unknown accelerators): every FLOP counts as useful.
struct GemmTiling {
  int compute_units = 0;
  int tile_rows = 0;
  int tile_cols = 0;
  bool operator==(const GemmTiling&) const = default;
};

// Useful over issued work of `count` GEMMs of rows x cols outputs launched together (a grouped
// GEMM over experts shares its waves), in (0, 1]. The library may lay its tile either way round;
// the better one is taken.
double wave_efficiency(const GemmTiling& tiling, double rows, double cols, double count = 1.0);

}  // namespace flopwise
