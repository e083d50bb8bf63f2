#pragma once
// How a plan over several device pools trains scaled down on this machine: which ranks stand for
// which pool, how the global batch is split between them, how much slower each pool's ranks
// compute, and which ranks meet across pools. Torch-free, so it is unit-tested without LibTorch.
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "flopwise/plan.hpp"

namespace flopwise::executor {

// One pool of a mixed plan as it trains here.
struct PoolRun {
  std::string name;
  int micro_batches = 0;            // per DP rank per step at the full batch
  int first_layer = 0, layers = 0;  // the heterogeneous pipeline: its stage's layers
  double slowdown = 1.0;            // its compute is padded to this many times its own time
};

// Data-parallel strategies (hetero DP, local SGD): every pool runs one model partition (tp, pp,
// ep) as pool_dp DP ranks, pools one after another along DP (a rank's pool is its DP coordinate
// over pool_dp), each with its own share of the batch. The pipeline: one stage per pool, in order,
// each with its own layers.
struct MixedRun {
  PoolStrategy strategy = PoolStrategy::kHeteroDp;
  std::vector<PoolRun> pools;
  int pool_dp = 0;            // DP ranks per pool (DP strategies)
  int sync_every_steps = 0;   // local SGD's H

  bool data_parallel() const { return strategy != PoolStrategy::kHeteroPipeline; }
  // The pool of the rank at these coordinates.
  int pool_of(const RankCoords& coords) const;
  // Per DP coordinate, its micro-batches per step at the full batch.
  std::vector<int> micro_batches_per_dp(int dp) const;
  // The DP coordinates whose gradients are averaged together (local SGD: the pool's; else all).
  std::vector<int> averaged_with(int dp_coordinate, int dp) const;
};

struct MixedRunOptions {
  int max_ranks = 4;
  int micro_batches = 4;                      // per DP rank on average; 0: 4
  std::map<std::string, double> slowdowns;    // pool name -> factor >= 1
  int sync_every_steps = 0;                   // 0: the plan's H
};

// "POOL=FACTOR" options of --slowdown; one-line InputError naming --slowdown when malformed.
std::map<std::string, double> parse_slowdowns(const std::vector<std::string>& texts);

struct FittedMixedRun {
  MixedRun run;
  ModelConfig model;  // scaled
  Layout layout;      // the whole world's
  int global_batch = 0;
  std::string notes;
};

// Scales `plan` to at most max_ranks ranks; `scale(pp)` scales the planned model to a depth that
// pp divides. InputError for a pool named by --slowdown that the plan lacks, a factor below 1,
// or more pools than ranks.
FittedMixedRun fit_mixed_run(const MixedPlan& plan, const ModelConfig& planned, const MixedRunOptions& options,
                             const std::function<ModelConfig(int pp)>& scale);

}  // namespace flopwise::executor
