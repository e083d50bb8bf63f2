#include <gtest/gtest.h>

#include <cmath>

#include "flopwise/attention_kernel.hpp"
#include "flopwise/cost_model.hpp"
#include "test_helpers.hpp"

namespace flopwise {
namespace {

// Two head dimensions, three lengths; head dim 128 at 4K is the anchor.
AttentionKernelTable small_table() {
  AttentionKernelTable t;
  t.seq_lens = {2048, 4096, 8192};
  t.rows = {{64, {300, 360, 380}, {400, 400, 400}, {400, 420, 440}},
            {128, {480, 520, 530}, {600, 600, 600}, {480, 500, 520}}};
  return t;
}

}  // namespace

// At a measured point the causal forward is read as it stands; the causal backward is the
// backward without mask times the forward's causal/full ratio: 500 x 520 / 600 = 433.33.
TEST(AttentionKernel, MeasuredPointAndCausalBackward) {
  const AttentionSpeed s = attention_speed(small_table(), 128, 4096);
  EXPECT_DOUBLE_EQ(s.forward, 520.0);
  EXPECT_DOUBLE_EQ(s.backward, 500.0 * 520.0 / 600.0);
}

// Halfway in log2(sequence) (2^11.5 = 2896.3) and halfway in head dimension (96) blend linearly;
// outside the table the edge points hold.
TEST(AttentionKernel, InterpolatesInLogSequenceAndHeadDimension) {
  const AttentionKernelTable t = small_table();
  EXPECT_NEAR(attention_speed(t, 128, std::pow(2.0, 11.5)).forward, 500.0, 1e-9);
  EXPECT_NEAR(attention_speed(t, 96, 4096).forward, 440.0, 1e-9);
  // Backward at head dim 96: (420 x 360 / 400 + 433.33) / 2 = (378 + 433.33) / 2.
  EXPECT_NEAR(attention_speed(t, 96, 4096).backward, (378.0 + 500.0 * 520.0 / 600.0) / 2.0, 1e-9);
  EXPECT_DOUBLE_EQ(attention_speed(t, 256, 65536).forward, 530.0);
  EXPECT_DOUBLE_EQ(attention_speed(t, 32, 512).forward, 300.0);
}

// Relative to the anchor's forward and 2.5 backward passes together:
// 3.5 / (1 / 520 + 2.5 / 433.33) = 455.0 TFLOPS, so its forward runs 1.143x and its backward
// 0.952x the profile's one figure, and the two together take exactly the scalar's time.
TEST(AttentionKernel, RelativeSpeedKeepsTheAnchorsTotal) {
  const AttentionKernelTable t = small_table();
  EXPECT_NEAR(attention_anchor_speed(t, 2.5), 455.0, 1e-9);
  const AttentionSpeed r = relative_attention_speed(t, 128, 4096, attention_anchor_speed(t, 2.5));
  EXPECT_NEAR(r.forward, 520.0 / 455.0, 1e-12);
  EXPECT_NEAR(r.backward, 500.0 * 520.0 / 600.0 / 455.0, 1e-12);
  EXPECT_NEAR(1.0 / r.forward + 2.5 / r.backward, 3.5, 1e-12);
  const AttentionSpeed none = relative_attention_speed(AttentionKernelTable{}, 64, 512, 0.0);
  EXPECT_DOUBLE_EQ(none.forward, 1.0);
  EXPECT_DOUBLE_EQ(none.backward, 1.0);
}

// A layer kind's kernel runs the whole causal sequence, a chunk, or twice a window.
TEST(AttentionKernel, SpansGiveEachLayerKindItsKernelSequence) {
  ModelConfig m = testing::tiny_moe();
  m.layers = 4;
  m.windowed_layers = 2;
  m.attention_window = 128;
  const std::vector<AttentionSpan> spans = attention_spans(m, 4096);
  ASSERT_EQ(spans.size(), 2u);
  EXPECT_DOUBLE_EQ(spans[0].layer_share, 0.5);
  EXPECT_DOUBLE_EQ(spans[0].kernel_seq_len, 256.0);
  EXPECT_DOUBLE_EQ(spans[1].kernel_seq_len, 4096.0);
  EXPECT_DOUBLE_EQ(spans[1].mean_keys, 2048.5);
}

// In the cost model: a 4K, head-dim-128 model's forward and backward attention together take what
// the scalar efficiency alone gives; a CP of 2 runs 2K kernels, slower by the table.
TEST(AttentionKernel, CostModelScalesFusedAttentionByShape) {
  HardwareProfile with_table = testing::round_profile();
  with_table.efficiency.attention_by_shape = small_table();
  ModelConfig m = testing::tiny_moe();
  TrainingRun run;
  run.seq_len = 4096;
  run.global_batch = 8;
  const Layout l{};  // every degree 1, no recompute
  const CostModel plain(m, run, testing::round_profile()), shaped(m, run, with_table);
  const double flops = plain.attention_core_work(l).attention;
  const double anchor = attention_anchor_speed(small_table(), 2.5);
  const AttentionSpeed r = relative_attention_speed(small_table(), 128, 4096, anchor);
  EXPECT_NEAR(shaped.attention_core_work(l).attention, flops / r.forward, 1e-6 * flops);
  Layout cp2 = l;
  cp2.cp = 2;
  const AttentionSpeed at_2k = relative_attention_speed(small_table(), 128, 2048, anchor);
  EXPECT_NEAR(shaped.attention_core_work(cp2).attention, plain.attention_core_work(cp2).attention / at_2k.forward,
              1e-6 * flops);
  EXPECT_LT(at_2k.forward, r.forward);
}

}  // namespace flopwise
