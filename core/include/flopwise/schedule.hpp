#pragma once
// The order in which one pipeline rank runs forward and backward passes.
#include <vector>

#include "flopwise/units.hpp"

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

// One micro-batch on one pipeline stage: its forward and its backward pass.
struct StagePasses {
  Seconds forward = 0, backward = 0;
  Seconds total() const { return forward + backward; }
};

// The stage that paces a pipeline: the first with the largest forward plus backward time.
size_t busiest_stage(const std::vector<StagePasses>& stages);

// The busiest stage's idle time in a 1F1B step beyond its own m micro-batches: the fill, one forward
// through each stage before it, and the drain, one backward through each; and, for the stages
// after it (together D, forward and backward), the wait for the first micro-batch's gradient
// beyond its k = pp - s - 1 warm-up forwards, D - k f, and for the last one's beyond its k
// cool-down backwards, D - k b. With equal stages this is Narayanan et al. 2021's (pp - 1)
// micro-batch times (section 2.2); a light stage after the busiest one fills partly in the
// busiest one's own passes (measured: a pp2 CPU run whose second stage took 59 ms a micro-batch
// against the first's 86 ms waited 33 ms a step; 2 x 59 - 86 = 32). Interleaving divides it by vpp,
// exact for equal stages. Empty `stages`: no bubble.
Seconds pipeline_bubble_seconds(const std::vector<StagePasses>& stages, int vpp);

}  // namespace flopwise
