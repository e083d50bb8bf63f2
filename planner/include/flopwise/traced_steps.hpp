#pragma once
// Executor traces in the cost model's terms: measured time per step and category, the cost
// model's prediction of the same step, and the span arguments and groups the fits read.
#include <map>
#include <string>
#include <vector>

#include "flopwise/collectives.hpp"
#include "flopwise/cost_model.hpp"
#include "flopwise/trace.hpp"

namespace flopwise {

// Step time by category on one rank. `pp` holds time blocked in pipeline receives, which is the
// transfer and the bubble together (a trace cannot tell them apart); predictions add pp and bubble.
// With a common clock, tp, ep and dp hold the collectives' transfers and `wait` the time their
// ranks spent waiting for the group's last member (load imbalance and jitter, which the cost model
// does not predict); without one, the waits stay in the collectives.
struct CategoryTimes {
  Seconds compute = 0, tp = 0, ep = 0, pp = 0, dp = 0, wait = 0, optimizer = 0, other = 0, step = 0;
};
inline constexpr const char* kCategoryNames[] = {"compute", "tp", "ep", "pp+bubble", "dp", "peer wait", "optimizer", "other", "step"};
std::vector<Seconds> as_list(const CategoryTimes& times);

struct MeasuredStep {
  int step = 0;
  int micro_batches = 0;
  int rank = 0;  // the busiest rank (most compute plus TP and EP), as the cost model reports
  bool warmup = false;  // the trace's first step: allocations and first-touch, kept out of fits
  // More than kOutlierFactor x the median step of its run (after warm-up, with at least three
  // steps): the machine had other work then (a shared core, a busy neighbour), kept out of fits.
  bool outlier = false;
  CategoryTimes times;
  double of_median = 0;  // step time over the run's median step (0: too few steps to say)
  // The busiest EP rank's expert rows over its group's mean in this step, as the executor counted
  // them (1 without EP or without counts): an input of the step, like its micro-batch count.
  double routing_skew = 1;
  // The slowest stage's pacing rank's speed-probe rate in this step (0: the trace has no probes): with a
  // calibrated profile's reference rate, the machine's speed in this step, an input like the skew.
  FlopsPerSecond probe_rate = 0;
  // The same per pipeline stage (its critical rank's, see cpu_shares; its slowest rank's in a trace
  // without CPU times): a pipeline's stages may run on cores of different speeds, and its bubble
  // follows each stage's own.
  std::vector<FlopsPerSecond> stage_probe_rates;
  // The paced share of a core (cpu_shares) of each pipeline stage's critical rank, and of the
  // slowest stage's (1 when the trace has no CPU times).
  double cpu_share = 1;
  std::vector<double> stage_cpu_shares;
};
inline constexpr double kOutlierFactor = 1.5;
std::vector<MeasuredStep> measured_steps(const TracedRun& run);

// Per (step, rank): the rank's expert rows over its EP group's mean (from the executor's counts;
// absent without EP). A rank's compute follows its own load; the step follows the busiest.
std::map<std::pair<int, int>, double> expert_loads(const TracedRun& run);

// Per (step, rank): the FLOP rate of the executor's speed probes in that step (a trimmed mean).
std::map<std::pair<int, int>, FlopsPerSecond> probe_rates(const TracedRun& run);
// How fast the machine ran, relative to the speed `profile` was calibrated at: a probe rate over
// the profile's reference rate; 1 when either is missing.
double machine_speed(const HardwareProfile& profile, FlopsPerSecond probe_rate);
// Per (step, rank): the share of its core a rank ran at in its compute passes, their CPU time over
// their wall time, the TP and EP transfers inside them left out (the rank waits there rather than
// runs). Another process on a core takes time slices of milliseconds, which a short speed probe
// seldom meets; this sees them. `paced` also counts the rank's waits for its peers in the step (TP,
// EP and DP): a rank synchronised with a slowed one runs at its pace. Absent for spans without CPU
// times (older traces).
struct CoreShare {
  double own = 1, paced = 1;
};
std::map<std::pair<int, int>, CoreShare> cpu_shares(const TracedRun& run);
// The TP and EP collectives the executor runs inside each compute pass, indexed by rank and start
// so that a pass finds its own without scanning the whole trace.
class PassCollectives {
 public:
  explicit PassCollectives(const TracedRun& run);
  struct Time {
    Seconds wall = 0, cpu = 0;  // cpu < 0: one of them lacks its CPU time
  };
  Time inside(const TraceSpan& pass) const;

 private:
  std::map<int, std::vector<const TraceSpan*>> by_rank_;  // each rank's, by start
};
// A compute pass's own wall and CPU time, the collectives inside it left out (cpu < 0: the trace
// has no CPU times).
struct PassTime {
  Seconds wall = 0, cpu = -1;
};
PassTime own_pass_time(const PassCollectives& nested, const TraceSpan& pass);
// The profile with its compute peaks scaled by `speed` (memory and links as they are: a busy
// neighbour on the core slows a matmul about 2x and a memory copy about 1.25x on this project's VMs),
// and everything the rank itself runs (compute, memory-bound kernels, per-pass and per-step
// overheads) stretched by a core shared at `share`.
HardwareProfile at_speed(const HardwareProfile& profile, double speed, double share = 1.0);

// The cost model's figures for one step of the traced run (its micro-batches per replica and its
// routing skew) on `profile`, with the node size set to the ranks the run had per node and the
// compute at the step's machine speed.
CategoryTimes predicted_step(const HardwareProfile& profile, const TracedRun& run, const MeasuredStep& step);

// Mean absolute relative error of predicted step time over a run's steps after warm-up.
double step_time_error(const HardwareProfile& profile, const TracedRun& run);

// A span's argument, or `fallback` when it is absent or of another type.
std::string text_arg(const TraceSpan& span, const char* key);
double number_arg(const TraceSpan& span, const char* key, double fallback = -1);
// True when `inner` starts inside `outer` on the same rank.
bool in_span(const TraceSpan& inner, const TraceSpan& outer);
// A profile for predicting a traced run: the machine as the run had it (its ranks per node).
HardwareProfile as_run(const HardwareProfile& profile, const TracedRun& run);
// The run of one traced step: its micro-batches per replica and its routing skew.
TrainingRun step_run(const TracedRun& run, const MeasuredStep& step);
// Per span of run.spans: how long a collective waited for the last member of its group to start
// it (its transfer is the rest). Spans of one group are matched by step and by their order among
// the rank's spans of that kind. Zero for other spans and for traces without a common clock.
std::vector<Seconds> peer_waits(const TracedRun& run);
// Which of the cost model's groups a measured collective span ran over.
GroupSpan group_of(const TracedRun& run, const TraceSpan& span);

}  // namespace flopwise
