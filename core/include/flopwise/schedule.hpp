#pragma once
// The order in which one pipeline rank runs forward and backward passes.
#include <vector>

namespace flopwise {

struct PipelineOp {
  bool forward = true;
  int micro_batch = 0;
  int chunk = 0;  // model chunk on this rank (0..vpp-1); virtual stage = chunk * pp + rank
  bool operator==(const PipelineOp&) const = default;
};

// Megatron-LM's schedules: 1F1B (vpp = 1; pp - rank - 1 warm-up forwards) and interleaved 1F1B
// (warm-up 2 (pp - rank - 1) + (vpp - 1) pp; chunks cycle every pp micro-batches).
// Interleaving needs micro_batches % pp == 0, which Layout validation enforces.
// Forward passes pipeline rank `rank` runs before its first backward (before capping at the
// micro-batch count): pp - rank - 1 for 1F1B, 2 (pp - rank - 1) + (vpp - 1) pp interleaved.
int warmup_forwards(int pp, int vpp, int rank);
std::vector<PipelineOp> pipeline_schedule(int pp, int vpp, int micro_batches, int rank);

// The pipeline's idle time beyond m micro-batches on its slowest stage: the fill and drain take
// one micro-batch through each other stage, over vpp with interleaving. Identical micro-batches
// through stages in series take sum_s T_s + (m - 1) max_s T_s (the flow-shop makespan); with equal
// stages this is Narayanan et al. 2021's (pp - 1) / vpp micro-batch times (section 2.2), and a
// light first or last stage (embedding, few layers) adds less than the slowest stage's time.
// `all_stages`: one micro-batch's time summed over the pp stages; `slowest`: the largest of them.
inline double pipeline_bubble_seconds(double all_stages, double slowest, int vpp) { return (all_stages - slowest) / vpp; }

}  // namespace flopwise
