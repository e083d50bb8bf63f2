#pragma once
// How fast a device's fused attention kernel runs by shape: head dimension and sequence length.
#include <vector>

namespace flopwise {

// A device's measured fused-attention speeds (TFLOPS, FLOPs counted over the keys each query
// sees) at each of `seq_lens`, for one head dimension: the forward with the causal mask and
// without it, and the backward without it (benchmarks rarely chart a causal backward).
struct AttentionKernelRow {
  double head_dim = 0;
  std::vector<double> forward_causal, forward, backward;
  bool operator==(const AttentionKernelRow&) const = default;
};

struct AttentionKernelTable {
  std::vector<double> seq_lens;          // ascending
  std::vector<AttentionKernelRow> rows;  // ascending head_dim
  bool empty() const { return rows.empty(); }
  bool operator==(const AttentionKernelTable&) const = default;
};

// The shape at which a profile's scalar efficiency.attention is measured; a table must hold it.
inline constexpr double kAttentionAnchorHeadDim = 128;
inline constexpr double kAttentionAnchorSeqLen = 4096;

struct AttentionSpeed {
  double forward = 1.0;
  double backward = 1.0;
};

// Causal speeds at (head_dim, seq_len): linear in head dimension and in log2(sequence) between
// measured points, held at the table's edges. The causal backward is the backward without the
// mask times the forward's causal-to-full ratio at the same shape: both lose the same diagonal
// tiles and the same per-block start-up over fewer key tiles.
AttentionSpeed attention_speed(const AttentionKernelTable& table, double head_dim, double seq_len);

// The anchor shape's speed over a forward and its `backward_passes` forward-equivalents of
// backward, as the profile's scalar efficiency counts them (0 for an empty table).
double attention_anchor_speed(const AttentionKernelTable& table, double backward_passes);

// The causal speeds at (head_dim, seq_len) over `anchor_speed` (1 and 1 for an empty table): the
// factors that turn the profile's one attention efficiency into the one for this shape and pass.
AttentionSpeed relative_attention_speed(const AttentionKernelTable& table, double head_dim, double seq_len,
                                        double anchor_speed);

}  // namespace flopwise
