#include "flopwise/attention_kernel.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>

namespace flopwise {

namespace {

// The segment [i, i + 1] of ascending `points` that holds x, and x's weight on its upper end;
// outside the points, the edge point with full weight.
struct Bracket {
  std::size_t lower = 0, upper = 0;
  double weight = 0;
};

// Over `count` ascending points read through `at` (no copy: this runs inside the layout search).
template <typename At>
Bracket bracket(std::size_t count, At at, double x) {
  if (count < 2 || x <= at(0)) return {0, 0, 0.0};
  if (x >= at(count - 1)) return {count - 1, count - 1, 0.0};
  std::size_t upper = 1;
  while (at(upper) < x) ++upper;
  return {upper - 1, upper, (x - at(upper - 1)) / (at(upper) - at(upper - 1))};
}

double blend(double a, double b, double weight) { return a + weight * (b - a); }

AttentionSpeed row_speed(const AttentionKernelRow& row, const Bracket& s) {
  auto at = [&](const std::vector<double>& v) { return blend(v[s.lower], v[s.upper], s.weight); };
  const double forward_causal = at(row.forward_causal);
  return {forward_causal, at(row.backward) * forward_causal / at(row.forward)};
}

}  // namespace

AttentionSpeed attention_speed(const AttentionKernelTable& table, double head_dim, double seq_len) {
  const Bracket s = bracket(table.seq_lens.size(), [&](std::size_t i) { return std::log2(table.seq_lens[i]); },
                            std::log2(seq_len));
  const Bracket d = bracket(table.rows.size(), [&](std::size_t i) { return table.rows[i].head_dim; }, head_dim);
  const AttentionSpeed lower = row_speed(table.rows[d.lower], s);
  const AttentionSpeed upper = row_speed(table.rows[d.upper], s);
  return {blend(lower.forward, upper.forward, d.weight), blend(lower.backward, upper.backward, d.weight)};
}

double attention_anchor_speed(const AttentionKernelTable& table, double backward_passes) {
  if (table.empty()) return 0.0;
  const AttentionSpeed anchor = attention_speed(table, kAttentionAnchorHeadDim, kAttentionAnchorSeqLen);
  return (1.0 + backward_passes) / (1.0 / anchor.forward + backward_passes / anchor.backward);
}

AttentionSpeed relative_attention_speed(const AttentionKernelTable& table, double head_dim, double seq_len,
                                        double anchor_speed) {
  if (table.empty()) return {};
  const AttentionSpeed here = attention_speed(table, head_dim, seq_len);
  return {here.forward / anchor_speed, here.backward / anchor_speed};
}

}  // namespace flopwise
