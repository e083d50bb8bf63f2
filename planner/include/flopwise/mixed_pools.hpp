#pragma once
// Planning one training run over several device pools: heterogeneous data parallelism,
// heterogeneous pipelines and local SGD across clusters, each costed from every pool's own cost
// model and the links between the pools, ranked beside the best single-pool plans.
#include <memory>
#include <string>
#include <vector>

#include "flopwise/cost_model.hpp"
#include "flopwise/plan.hpp"
#include "flopwise/pools.hpp"
#include "flopwise/search.hpp"

namespace flopwise {

struct Pool {
  std::string name;
  HardwareProfile profile;  // prices converted to the plan's currency
  int max_devices = 0;
};

struct PoolSet {
  std::vector<Pool> pools;
  std::vector<PoolLinkSpec> links;
  std::string currency;
};

// The run's totals (throughput, MFU, days, cost with goodput) over the pools' devices, from
// cost.step_time_s: prices are the pools' own (already in `currency`).
void derive_mixed_totals(StepCost& cost, const ModelConfig& model, const TrainingRun& run,
                         const std::vector<PlanPool>& pools, const std::string& currency, const Reliability& reliability);

// Resolves each pool's profile and prices it in one currency. InputError for an unknown profile
// (naming the pool), a profile that cannot run `precision`, and a currency without an exchange rate.
PoolSet resolve_pools(const PoolsSpec& spec, Precision precision);

// The link traffic between pools `a` and `b` crosses when each uses the given devices: the stated
// link (its bandwidth at the lower of the two pools' inter-node efficiencies), or else their shared
// cluster network, each device's achievable NIC share times the smaller pool.
PlanLink link_between(const PoolSet& set, const Pool& a, int devices_a, const Pool& b, int devices_b);

// All-reduce of `bytes` across pools joined in a chain by `links`: every link carries the sum
// each way once (reduce one way, broadcast the other, pipelined in chunks), so the slowest link
// sets the pace; one latency per hop each way. Zero for a single pool.
Seconds cross_pool_all_reduce_seconds(Bytes bytes, const std::vector<PlanLink>& links);

// Local SGD's sync interval: the smallest H in {10, 20, 50, 100, 200, 500} whose amortised sync
// stays within 5% of the inner step, else 500 (the interval DiLoCo trains with).
int local_sgd_interval(Seconds sync_s, Seconds inner_step_s);

// One pool's part of a DP strategy: its layout and its share of the global batch.
struct PoolShare {
  int pool = 0;  // index into PoolSet::pools
  Layout layout;
  int sequences = 0;
};

struct MixedCandidate {
  MixedPlan plan;
  StepCost cost;  // totals of the whole run; breakdown and memory of its critical pool
};

// A DP strategy (hetero DP or local SGD) over the given shares, costed; nullopt when a share does
// not fit its pool's memory or the batch split is not whole micro-batches.
std::optional<MixedCandidate> evaluate_shares(const ModelConfig& model, const TrainingRun& run, const PoolSet& set,
                                              const std::vector<PoolShare>& shares, PoolStrategy strategy);

// The heterogeneous pipeline: `common` gives tp, ep, etp, dp, micro-batch, recompute and sharding
// (its pp and vpp are ignored); pool `order[i]` holds `stages[i]` pipeline stages, with
// `stage_layers` transformer layers each, in pipeline order. nullopt when a stage does not fit.
std::optional<MixedCandidate> evaluate_pipeline(const ModelConfig& model, const TrainingRun& run, const PoolSet& set,
                                                const Layout& common, const std::vector<int>& order,
                                                const std::vector<int>& stages, const std::vector<int>& stage_layers);

struct PoolSearchResult {
  std::vector<Candidate> single;        // each pool's best plan alone (empty layout when none)
  std::vector<bool> single_found;
  int best_single = -1;                 // index of the best single-pool plan
  std::vector<MixedCandidate> mixed;    // the best plan of each strategy that found one, ranked
  long long mixed_costed = 0;           // mixed plans costed
  double seconds = 0;                   // the search's wall time
};

PoolSearchResult plan_pools(const ModelConfig& model, const TrainingRun& run, const SearchOptions& options,
                            const PoolSet& set);

// The best plan overall (mixed or single pool) as a Plan.
Plan make_mixed_plan(const ModelConfig& model, const TrainingRun& run, const MixedCandidate& candidate,
                     Objective objective);

}  // namespace flopwise
