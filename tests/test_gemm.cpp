#include <gtest/gtest.h>

#include <cmath>

#include "flopwise/cost_model.hpp"
#include "flopwise/gemm.hpp"
#include "flopwise/hardware_profile.hpp"
#include "test_helpers.hpp"

namespace flopwise {
namespace {

// An H100-like device: 132 units, 128 x 256 tiles.
GemmTiling hopper(bool half_tiles) { return GemmTiling{132, 128, 256, half_tiles, 0.0}; }

constexpr double kFree = 1e30;  // memory so fast that split-K partial sums cost nothing

}  // namespace

// 4,096 x 4,096 outputs make 512 tiles of 128 x 256 (or 256 x 128): 4 waves of 132 units, the last
// one 116 busy, 512 / 528 useful. Half tiles fill the same fraction; splitting K only adds partials.
TEST(GemmSchedule, ALargeGemmLosesOnlyItsLastWave) {
  const GemmSchedule s = schedule_gemm(hopper(true), GemmShape{4096, 4096, 4096, 1}, 1e15, 3e12);
  EXPECT_DOUBLE_EQ(s.busy_fraction, 512.0 / 528.0);
  EXPECT_EQ(s.k_splits, 1);
  EXPECT_EQ(s.partial_bytes, 0.0);
}

// A 256 x 256 output is 2 big tiles (4 half tiles) for 132 units. With free partial sums the
// library splits K 16 ways: 32 big tiles (32 / 132 busy) or 64 half tiles (64 / 132), each slice
// writing a 256 x 256 fp32 partial and the reduction reading it: 8 x 16 x 65,536 bytes.
TEST(GemmSchedule, AThinOutputSplitsItsInnerDimension) {
  const GemmSchedule big = schedule_gemm(hopper(false), GemmShape{256, 256, 4096, 1}, 1e15, kFree);
  EXPECT_EQ(big.k_splits, 16);
  EXPECT_DOUBLE_EQ(big.busy_fraction, 32.0 / 132.0);
  const GemmSchedule half = schedule_gemm(hopper(true), GemmShape{256, 256, 4096, 1}, 1e15, kFree);
  EXPECT_EQ(half.k_splits, 16);
  EXPECT_DOUBLE_EQ(half.busy_fraction, 64.0 / 132.0);
  EXPECT_DOUBLE_EQ(half.partial_bytes, 8.0 * 16 * 65536);
}

// When partial sums cost more than idle units, no split: 4 half tiles busy of 132 (2 big ones).
TEST(GemmSchedule, CostlyPartialSumsKeepOneSlice) {
  const GemmSchedule half = schedule_gemm(hopper(true), GemmShape{256, 256, 4096, 1}, 1e15, 1.0);
  EXPECT_EQ(half.k_splits, 1);
  EXPECT_DOUBLE_EQ(half.busy_fraction, 4.0 / 132.0);
  EXPECT_DOUBLE_EQ(schedule_gemm(hopper(false), GemmShape{256, 256, 4096, 1}, 1e15, 1.0).busy_fraction, 2.0 / 132.0);
}

// Eight experts' 256 x 256 GEMMs launched together share their waves: 16 big tiles, split 8 ways
// to 128 of 132 units.
TEST(GemmSchedule, AGroupedGemmSharesItsWaves) {
  const GemmSchedule s = schedule_gemm(hopper(false), GemmShape{256, 256, 4096, 8}, 1e15, kFree);
  EXPECT_EQ(s.k_splits, 8);
  EXPECT_DOUBLE_EQ(s.busy_fraction, 128.0 / 132.0);
}

TEST(GemmSchedule, AnUntiledDeviceUsesEveryFlop) {
  const GemmSchedule s = schedule_gemm(GemmTiling{}, GemmShape{3, 5, 7, 1}, 1e12, 1e12);
  EXPECT_EQ(s.busy_fraction, 1.0);
  EXPECT_EQ(s.k_splits, 1);
}

// The shipped H100 profile against XLA's measured sm_90 bf16 matmul table (openxla/xla,
// xla/service/gpu/model/matmul_interpolator_data.h): batch x m x n x k, the TFLOPS measured and,
// in the comment, the model's. Over the table's 181 shapes the mean error is 10.6% (35% with the
// big tile alone, no split-K and no launch latency); these eight span it: large and square, short
// inner dimension, thin output, grouped. Thin outputs over a long inner dimension come out fast.
TEST(GemmSchedule, ShippedH100ProfileFollowsXlasMeasuredTable) {
  struct Entry {
    double batch, m, n, k, tflops;
  };
  const Entry table[] = {
      {1, 4096, 4096, 4096, 783.3},  // 708
      {1, 4096, 4096, 256, 392.2},   // 327
      {1, 4096, 1024, 256, 216.5},   // 224
      {1, 2048, 2048, 2048, 632.0},  // 589
      {2, 1024, 1024, 1024, 373.9},  // 391
      {1, 4096, 512, 4096, 650.0},   // 619
      {4, 256, 256, 4096, 171.6},    // 221
      {1, 256, 256, 2048, 31.1},     // 39
  };
  const HardwareProfile h100 = load_hardware_profile(std::string(FLOPWISE_PROFILES_DIR) + "/h100-sxm.yaml");
  const CostModel cost(testing::tiny_moe(), testing::tiny_run(4), h100);
  double total_error = 0;
  for (const Entry& e : table) {
    const double predicted = 2 * e.batch * e.m * e.n * e.k / cost.gemm_seconds(e.m, e.k, e.n, e.batch) / 1e12;
    EXPECT_NEAR(predicted / e.tflops, 1.0, 0.3) << e.batch << " x " << e.m << " x " << e.n << " x " << e.k;
    total_error += std::fabs(predicted / e.tflops - 1.0);
  }
  EXPECT_LT(total_error / 8, 0.13);
}

}  // namespace flopwise
