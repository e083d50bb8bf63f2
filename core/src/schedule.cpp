#include "flopwise/schedule.hpp"

#include <algorithm>

namespace flopwise {
namespace {

// The k-th forward (or backward) pass of an interleaved rank: micro-batches go in groups of pp
// through chunk 0, then the same group through chunk 1, ... (Megatron's get_model_chunk_id).
PipelineOp nth_pass(int k, int pp, int vpp, bool forward) {
  const int group = k / (pp * vpp);
  const int in_group = k % (pp * vpp);
  const int chunk = in_group / pp;
  PipelineOp op;
  op.forward = forward;
  op.chunk = forward ? chunk : vpp - 1 - chunk;
  op.micro_batch = group * pp + in_group % pp;
  return op;
}

}  // namespace

int warmup_forwards(int pp, int vpp, int rank) {
  return vpp == 1 ? pp - rank - 1 : 2 * (pp - rank - 1) + (vpp - 1) * pp;
}

std::vector<PipelineOp> pipeline_schedule(int pp, int vpp, int micro_batches, int rank) {
  const int total = micro_batches * vpp;
  const int warmup = std::min(warmup_forwards(pp, vpp, rank), total);
  std::vector<PipelineOp> ops;
  int forwards = 0, backwards = 0;
  for (; forwards < warmup; ++forwards) ops.push_back(nth_pass(forwards, pp, vpp, true));
  while (forwards < total) {  // steady state: one forward, one backward
    ops.push_back(nth_pass(forwards++, pp, vpp, true));
    ops.push_back(nth_pass(backwards++, pp, vpp, false));
  }
  while (backwards < total) ops.push_back(nth_pass(backwards++, pp, vpp, false));
  return ops;
}

size_t busiest_stage(const std::vector<StagePasses>& stages) {
  size_t busiest = 0;
  for (size_t s = 1; s < stages.size(); ++s) {
    if (stages[s].total() > stages[busiest].total()) busiest = s;
  }
  return busiest;
}

Seconds pipeline_bubble_seconds(const std::vector<StagePasses>& stages, int vpp) {
  if (stages.empty()) return 0;
  const size_t busiest = busiest_stage(stages);
  Seconds before = 0, after = 0;
  for (size_t s = 0; s < stages.size(); ++s) {
    if (s < busiest) before += stages[s].total();
    if (s > busiest) after += stages[s].total();
  }
  const double k = static_cast<double>(stages.size() - busiest - 1);
  const StagePasses& own = stages[busiest];
  return (before + std::max(0.0, after - k * own.forward) + std::max(0.0, after - k * own.backward)) / vpp;
}

}  // namespace flopwise
