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

Bracket bracket(const std::vector<double>& points, double x) {
  if (points.size() < 2 || x <= points.front()) return {0, 0, 0.0};
  if (x >= points.back()) return {points.size() - 1, points.size() - 1, 0.0};
  std::size_t upper = 1;
  while (points[upper] < x) ++upper;
  return {upper - 1, upper, (x - points[upper - 1]) / (points[upper] - points[upper - 1])};
}

double blend(double a, double b, double weight) { return a + weight * (b - a); }

AttentionSpeed row_speed(const AttentionKernelRow& row, const Bracket& s) {
  auto at = [&](const std::vector<double>& v) { return blend(v[s.lower], v[s.upper], s.weight); };
  const double forward_causal = at(row.forward_causal);
  return {forward_causal, at(row.backward) * forward_causal / at(row.forward)};
}

}  // namespace

AttentionSpeed attention_speed(const AttentionKernelTable& table, double head_dim, double seq_len) {
  std::vector<double> logs, dims;
  for (double s : table.seq_lens) logs.push_back(std::log2(s));
  for (const AttentionKernelRow& r : table.rows) dims.push_back(r.head_dim);
  const Bracket s = bracket(logs, std::log2(seq_len));
  const Bracket d = bracket(dims, head_dim);
  const AttentionSpeed lower = row_speed(table.rows[d.lower], s);
  const AttentionSpeed upper = row_speed(table.rows[d.upper], s);
  return {blend(lower.forward, upper.forward, d.weight), blend(lower.backward, upper.backward, d.weight)};
}

AttentionSpeed relative_attention_speed(const AttentionKernelTable& table, double head_dim, double seq_len,
                                        double backward_passes) {
  if (table.empty()) return {};
  const AttentionSpeed anchor = attention_speed(table, kAttentionAnchorHeadDim, kAttentionAnchorSeqLen);
  // The anchor's forward and backward together, as the profile's scalar efficiency counts them.
  const double anchor_rate = (1.0 + backward_passes) / (1.0 / anchor.forward + backward_passes / anchor.backward);
  const AttentionSpeed here = attention_speed(table, head_dim, seq_len);
  return {here.forward / anchor_rate, here.backward / anchor_rate};
}

}  // namespace flopwise
