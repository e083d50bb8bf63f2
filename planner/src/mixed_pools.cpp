#include "flopwise/mixed_pools.hpp"

#include <algorithm>
#include <chrono>
#include <functional>
#include <map>
#include <cmath>
#include <numeric>
#include <set>

#include "flopwise/catalog.hpp"
#include "flopwise/error.hpp"
#include "flopwise/schedule.hpp"
#include "flopwise/plan_builder.hpp"

namespace flopwise {

// DiLoCo (Douillard et al. 2023, arXiv 2311.08105, section 3): 8 workers synchronising every 500
// inner steps reached the perplexity of fully synchronous training on C4 with 500x less
// communication, for models up to 400M parameters. EDiT (arXiv 2412.07210, the Ling report's
// cross-cluster trainer) uses the same outer step. Nothing published measures the quality cost at a
// 300B MoE; the note says so.
static const char* kLocalSgdNote =
    "changes the optimisation: each pool trains its own replica and the replicas average their parameters "
    "every H steps (outer Nesterov step). DiLoCo (arXiv 2311.08105) matched synchronous perplexity with 8 "
    "workers at H = 500 on models up to 400M parameters; the quality cost at this model's scale is unmeasured.";

void derive_mixed_totals(StepCost& cost, const ModelConfig& model, const TrainingRun& run,
                         const std::vector<PlanPool>& pools, const std::string& currency, const Reliability& reliability) {
  Fleet fleet;
  double price = 0;
  for (const PlanPool& p : pools) {
    fleet.devices += p.devices();
    fleet.nodes += (p.devices() + p.hardware.devices_per_node - 1) / p.hardware.devices_per_node;
    fleet.peak += p.devices() * p.hardware.peak_tflops * 1e12;
    price += p.devices() * p.hardware.price_per_device_hour;
  }
  fleet.price_per_device_hour = price / fleet.devices;
  fleet.currency = currency;
  fleet.reliability = &reliability;
  derive_run_totals(cost, model, run, param_counts(model), fleet);
}

PoolSet resolve_pools(const PoolsSpec& spec, Precision precision) {
  validate(spec);
  const std::string source = spec.source.empty() ? "--pool" : spec.source;
  PoolSet set;
  set.links = spec.links;
  for (const PoolSpec& p : spec.pools) {
    Pool pool;
    pool.name = p.name;
    pool.max_devices = p.max_devices;
    try {
      pool.profile = resolve_profile(p.profile);
    } catch (const InputError& e) {
      throw input_error(source, p.name + ".profile", e.what());
    }
    if (auto why = precision_unsupported(pool.profile, precision)) throw input_error(source, p.name, *why);
    set.pools.push_back(std::move(pool));
  }
  set.currency = spec.currency.empty() ? set.pools.front().profile.device.currency : spec.currency;
  for (Pool& pool : set.pools) {
    std::string& currency = pool.profile.device.currency;
    if (currency == set.currency) continue;
    const auto rate = spec.exchange_rates.find(currency);
    if (rate == spec.exchange_rates.end()) {
      throw input_error(source, pool.name + ".currency",
                        "prices in " + currency + ", the plan in " + set.currency + ": give --exchange-rate " +
                            currency + "=RATE (" + set.currency + " per " + currency + ")");
    }
    pool.profile.device.price_per_device_hour *= rate->second;
    currency = set.currency;
  }
  return set;
}

PlanLink link_between(const PoolSet& set, const Pool& a, int devices_a, const Pool& b, int devices_b) {
  const Network na = Network::from(a.profile), nb = Network::from(b.profile);
  for (const PoolLinkSpec& l : set.links) {
    if ((l.a == a.name && l.b == b.name) || (l.a == b.name && l.b == a.name)) {
      const double efficiency = std::min(a.profile.efficiency.inter_node_comm, b.profile.efficiency.inter_node_comm);
      return {a.name, b.name, l.bandwidth * efficiency, l.latency, true};
    }
  }
  const BytesPerSecond per_device = std::min(na.inter.bandwidth, nb.inter.bandwidth);
  return {a.name, b.name, per_device * std::min(devices_a, devices_b), std::max(na.inter.latency, nb.inter.latency),
          false};
}

Seconds cross_pool_all_reduce_seconds(Bytes bytes, const std::vector<PlanLink>& links) {
  if (links.empty()) return 0;
  BytesPerSecond slowest = links.front().bandwidth;
  Seconds latency = 0;
  for (const PlanLink& l : links) {
    slowest = std::min(slowest, l.bandwidth);
    latency += 2 * l.latency;
  }
  return bytes / slowest + latency;
}

int local_sgd_interval(Seconds sync_s, Seconds inner_step_s) {
  for (int h : {10, 20, 50, 100, 200, 500}) {
    if (sync_s / h <= 0.05 * inner_step_s) return h;
  }
  return 500;
}

namespace {

// Sequences a replica of `layout` adds to its pool's share at a time: whole micro-batches on every
// DP rank, and with interleaving whole rounds of pp micro-batches.
int batch_unit(const Layout& layout) {
  return layout.dp * layout.micro_batch * (layout.vpp > 1 ? layout.pp : 1);
}

const Pool& pool_named(const PoolSet& set, const std::string& name) {
  for (const Pool& p : set.pools) {
    if (p.name == name) return p;
  }
  throw InputError("no pool named " + name);
}

std::vector<PlanLink> chain_links(const PoolSet& set, const std::vector<PlanPool>& pools) {
  std::vector<PlanLink> links;
  for (size_t i = 0; i + 1 < pools.size(); ++i) {
    links.push_back(link_between(set, pool_named(set, pools[i].name), pools[i].devices(),
                                 pool_named(set, pools[i + 1].name), pools[i + 1].devices()));
  }
  return links;
}

// The pools in the chain order whose slowest link is fastest (the order given on a tie), ranks
// renumbered in that order: a reduction across pools crosses every link of the chain.
void order_chain(const PoolSet& set, std::vector<PlanPool>& pools) {
  if (pools.size() > 6) return;  // 720 orders at most
  std::vector<int> order(pools.size()), best;
  std::iota(order.begin(), order.end(), 0);
  BytesPerSecond best_bandwidth = -1;
  do {
    std::vector<PlanPool> chain;
    for (int i : order) chain.push_back(pools[i]);
    BytesPerSecond slowest = INFINITY;
    for (const PlanLink& l : chain_links(set, chain)) slowest = std::min(slowest, l.bandwidth);
    if (slowest > best_bandwidth) {
      best_bandwidth = slowest;
      best = order;
    }
  } while (std::next_permutation(order.begin(), order.end()));
  std::vector<PlanPool> chain;
  int first_rank = 0;
  for (int i : best) {
    chain.push_back(pools[i]);
    chain.back().first_rank = first_rank;
    first_rank += chain.back().devices();
  }
  pools = std::move(chain);
}

}  // namespace

std::optional<MixedCandidate> evaluate_shares(const ModelConfig& model, const TrainingRun& run, const PoolSet& set,
                                              const std::vector<PoolShare>& shares, PoolStrategy strategy) {
  MixedCandidate out;
  out.plan.strategy = strategy;
  int sequences = 0, first_rank = 0, critical = 0;
  std::vector<StepCost> costs;
  for (const PoolShare& share : shares) {
    const Pool& pool = set.pools.at(share.pool);
    TrainingRun own = run;
    own.global_batch = share.sequences;
    if (share.sequences < 1 || share.sequences % batch_unit(share.layout) != 0) return std::nullopt;
    if (violated_constraint(model, own, pool.profile, {1, pool.max_devices}, share.layout)) return std::nullopt;
    const CostModel cost(model, own, pool.profile);
    costs.push_back(cost.evaluate(share.layout));
    if (!costs.back().fits_memory()) return std::nullopt;
    if (costs.back().step_time_s > costs[critical].step_time_s) critical = static_cast<int>(costs.size()) - 1;
    PlanPool p;
    p.name = pool.name;
    p.hardware = plan_hardware(pool.profile, run.precision);
    p.layout = share.layout;
    p.first_rank = first_rank;
    p.sequences = share.sequences;
    p.step_time_s = costs.back().step_time_s;
    first_rank += p.devices();
    sequences += share.sequences;
    out.plan.pools.push_back(p);
  }
  if (sequences != run.global_batch) return std::nullopt;
  order_chain(set, out.plan.pools);
  out.plan.links = chain_links(set, out.plan.pools);
  const ParamCounts params = param_counts(model);
  StepCost c = costs[critical];
  if (strategy == PoolStrategy::kLocalSgd) {
    // The outer step averages fp32 parameter deltas (DiLoCo, Algorithm 1), once every H steps.
    out.plan.sync_s = cross_pool_all_reduce_seconds(4.0 * (params.total + params.mtp), out.plan.links);
    out.plan.cross_pool_bytes = 4.0 * (params.total + params.mtp);
    out.plan.sync_every_steps = local_sgd_interval(out.plan.sync_s, c.step_time_s);
    out.plan.cross_pool_s = out.plan.sync_s / out.plan.sync_every_steps;
    out.plan.optimisation_note = kLocalSgdNote;
  } else {
    // Each pool first reduces over its own replicas (inside its step); the pools' sums then meet
    // over the links. The step waits for it: the backward window already hides the pool's own reduction.
    out.plan.cross_pool_bytes = PrecisionBytes::of(run).grad * (params.total + params.mtp);
    out.plan.cross_pool_s = cross_pool_all_reduce_seconds(out.plan.cross_pool_bytes, out.plan.links);
  }
  c.exposed_comm_s.dp += out.plan.cross_pool_s;
  c.step_time_s += out.plan.cross_pool_s;
  derive_mixed_totals(c, model, run, out.plan.pools, set.currency, set.pools.front().profile.reliability);
  out.cost = c;
  return out;
}

namespace {

Layout pipeline_layout(const Layout& common, int pp) {
  Layout l = common;
  l.pp = pp;
  l.vpp = 1;
  l.even_split();
  return l;
}

}  // namespace

std::optional<MixedCandidate> evaluate_pipeline(const ModelConfig& model, const TrainingRun& run, const PoolSet& set,
                                                const Layout& common, const std::vector<int>& order,
                                                const std::vector<int>& stages, const std::vector<int>& stage_layers) {
  const int total_pp = std::accumulate(stages.begin(), stages.end(), 0);
  if (static_cast<int>(stage_layers.size()) != total_pp ||
      std::accumulate(stage_layers.begin(), stage_layers.end(), 0) != model.layers) {
    return std::nullopt;
  }
  if (run.global_batch % (common.dp * common.micro_batch) != 0) return std::nullopt;
  const Layout whole = pipeline_layout(common, total_pp);
  const int m = whole.micro_batches(run.global_batch);
  MixedCandidate out;
  out.plan.strategy = PoolStrategy::kHeteroPipeline;
  std::vector<CostModel::RankTime> times;
  std::vector<StagePasses> passes;
  Seconds dp_and_optimizer = 0, intra_message = 0, overhead = 0;
  Bytes boundary_bytes = 0;
  double tightest = -1;
  int r = 0, layer = 0, first_rank = 0;
  StepCost c;
  for (size_t i = 0; i < order.size(); ++i) {
    const Pool& pool = set.pools.at(order[i]);
    const Layout own = pipeline_layout(common, stages[i]);
    if (stages[i] < 1 || own.devices() > pool.max_devices) return std::nullopt;
    if (violated_degrees(model, pool.profile, {1, pool.max_devices}, pipeline_layout(common, 1))) return std::nullopt;
    const CostModel cost(model, run, pool.profile);
    PlanPool p{pool.name, plan_hardware(pool.profile, run.precision), own, first_rank, run.global_batch, {}, 0};
    for (int s = 0; s < stages[i]; ++s, ++r) {
      const StageContents stage = range_contents(model, layer, stage_layers[r], r == 0, r == total_pp - 1);
      layer += stage_layers[r];
      p.stage_layers.push_back(stage_layers[r]);
      const CostModel::RankTime t = cost.micro_batch_time(stage, whole);
      const MemoryBreakdown mem = cost.rank_memory(stage, r, whole);
      if (mem.total() > cost.usable_memory_bytes()) return std::nullopt;
      if (mem.total() / cost.usable_memory_bytes() > tightest) {
        tightest = mem.total() / cost.usable_memory_bytes();
        c.memory_bytes = mem;
        c.usable_memory_bytes = cost.usable_memory_bytes();
        c.busiest_memory_rank = r;
      }
      times.push_back(t);
      passes.push_back(t.passes());
      p.step_time_s = std::max(p.step_time_s, t.total());
      const Seconds dp = cost.data_parallel_exposed_seconds(stage, whole, t.backward, t.forward);
      const Seconds optimizer = cost.optimizer_seconds(stage, whole);
      if (dp + optimizer > dp_and_optimizer) {
        dp_and_optimizer = dp + optimizer;
        c.exposed_comm_s.dp = dp;
        c.optimizer_s = optimizer;
      }
    }
    if (stages[i] > 1) intra_message = std::max(intra_message, cost.pp_message_seconds(whole));
    boundary_bytes = cost.pp_boundary_bytes(whole);  // the model's and layout's, the same on every pool
    overhead = std::max(overhead, pool.profile.overheads.per_step);
    first_rank += own.devices();
    out.plan.pools.push_back(p);
  }
  out.plan.links = chain_links(set, out.plan.pools);
  // Every TP x DP rank of a boundary stage sends its activations over the link at once.
  const int senders = common.tp * common.dp;
  Seconds link_message = 0;
  for (PlanLink& link : out.plan.links) {
    link = link_between(set, pool_named(set, link.a), senders, pool_named(set, link.b), senders);
    out.plan.cross_pool_bytes = senders * boundary_bytes;
    link_message = std::max(link_message, out.plan.cross_pool_bytes / link.bandwidth + link.latency);
  }
  c.slowest_stage = static_cast<int>(busiest_stage(passes));
  const CostModel::RankTime& slowest = times[c.slowest_stage];
  c.compute_s = m * slowest.compute();
  c.exposed_comm_s.tp = m * slowest.tp;
  c.exposed_comm_s.cp = m * slowest.cp;
  c.exposed_comm_s.ep = m * slowest.ep;
  c.bubble_s = pipeline_bubble_seconds(passes, 1);
  // Paired blocking sends, as in the single-pool model: the slowest boundary sets the pace.
  c.exposed_comm_s.pp = m * 2.0 * std::max(intra_message, link_message);
  out.plan.cross_pool_s = m * 2.0 * std::max(0.0, link_message - intra_message);
  c.overhead_s = overhead;
  c.step_time_s = c.compute_s + c.exposed_comm_s.total() + c.bubble_s + c.optimizer_s + c.overhead_s;
  derive_mixed_totals(c, model, run, out.plan.pools, set.currency, set.pools.front().profile.reliability);
  out.cost = c;
  return out;
}


namespace {

// One pool's fastest layout on exactly `devices` devices at the whole global batch, and its speed.
struct Recipe {
  int pool = 0;
  Layout layout;
  double sequences_per_s = 0;
};

// Device counts tried per pool: whole nodes times a power of two and 1, 3, 5 or 7 (DP widths that
// divide usual batch sizes), and the pool's whole size.
std::vector<int> device_counts(const Pool& pool) {
  const int node = pool.profile.node.devices;
  const int most = std::min(pool.max_devices, pool.profile.cluster.max_devices);
  std::set<int> counts;
  for (int odd : {1, 3, 5, 7}) {
    for (long long n = odd; n <= most; n *= 2) {
      if (n >= node || most < node) counts.insert(static_cast<int>(n));
    }
  }
  counts.insert(most >= node ? most / node * node : most);
  return {counts.begin(), counts.end()};
}


std::vector<Recipe> pool_recipes(const ModelConfig& model, const TrainingRun& run, const PoolSet& set, int index) {
  const Pool& pool = set.pools[index];
  const CostModel cost(model, run, pool.profile);
  std::vector<Recipe> recipes;
  for (int n : device_counts(pool)) {
    SearchOptions o;
    o.devices = {n, n};
    o.objective = Objective::kMinTime;
    o.top_k = 1;
    const SearchResult r = search(cost, o);
    if (r.best.empty()) continue;
    const double speed = run.global_batch / r.best.front().cost.step_time_s;
    // More devices that are not faster never help a mixed plan.
    if (!recipes.empty() && speed <= recipes.back().sequences_per_s) continue;
    recipes.push_back({index, r.best.front().layout, speed});
  }
  return recipes;
}

// The global batch in whole micro-batch rounds per replica (`units`), as near to proportional to
// `rates` as they allow; nullopt when the units cannot add up to the batch.
std::optional<std::vector<int>> split_batch(int batch, const std::vector<double>& rates, const std::vector<int>& units) {
  const double total_rate = std::accumulate(rates.begin(), rates.end(), 0.0);
  std::vector<int> share(rates.size());
  int sum = 0;
  for (size_t i = 0; i < rates.size(); ++i) {
    share[i] = std::max(1, static_cast<int>(batch * rates[i] / total_rate / units[i])) * units[i];
    sum += share[i];
  }
  // Too much: take a round from the pool that would finish last; too little: give one to the pool
  // that would finish first with it.
  while (sum > batch) {
    int worst = -1;
    for (size_t i = 0; i < share.size(); ++i) {
      if (share[i] > units[i] && (worst < 0 || share[i] / rates[i] > share[worst] / rates[worst])) worst = static_cast<int>(i);
    }
    if (worst < 0) return std::nullopt;
    share[worst] -= units[worst];
    sum -= units[worst];
  }
  while (sum < batch) {
    int best = -1;
    for (size_t i = 0; i < share.size(); ++i) {
      if (units[i] > batch - sum) continue;
      if (best < 0 || (share[i] + units[i]) / rates[i] < (share[best] + units[best]) / rates[best]) best = static_cast<int>(i);
    }
    if (best < 0) return std::nullopt;
    share[best] += units[best];
    sum += units[best];
  }
  return share;
}

class MixedRanking {
 public:
  MixedRanking(const SearchOptions& options, PoolSearchResult& result) : options_(options), result_(result) {}

  void offer(std::optional<MixedCandidate> candidate) {
    ++result_.mixed_costed;
    if (!candidate || !objective_violation(candidate->cost, options_).empty()) return;
    auto& slot = best_[static_cast<int>(candidate->plan.strategy)];
    if (!slot || better(candidate->cost, slot->cost, options_.objective)) slot = std::move(candidate);
  }

  void finish() {
    for (auto& slot : best_) {
      if (slot) result_.mixed.push_back(std::move(*slot));
    }
    std::stable_sort(result_.mixed.begin(), result_.mixed.end(), [&](const MixedCandidate& a, const MixedCandidate& b) {
      return better(a.cost, b.cost, options_.objective);
    });
  }

 private:
  const SearchOptions& options_;
  PoolSearchResult& result_;
  std::optional<MixedCandidate> best_[3];
};

const PlanPool& pool_part(const MixedCandidate& c, const std::string& name) {
  for (const PlanPool& p : c.plan.pools) {
    if (p.name == name) return p;
  }
  throw std::logic_error("mixed plan without pool " + name);
}

// Hetero DP and local SGD over one recipe per pool: the batch split by measured speed, twice
// (the second time at the speeds the first split really reached).
void cost_dp_strategies(const ModelConfig& model, const TrainingRun& run, const PoolSet& set,
                        const std::vector<const Recipe*>& combo, MixedRanking& ranking) {
  std::vector<double> rates;
  std::vector<int> units;
  for (const Recipe* r : combo) {
    rates.push_back(r->sequences_per_s);
    units.push_back(batch_unit(r->layout));
  }
  std::optional<MixedCandidate> last;
  for (int round = 0; round < 2; ++round) {
    const auto split = split_batch(run.global_batch, rates, units);
    if (!split) return;
    std::vector<PoolShare> shares;
    for (size_t i = 0; i < combo.size(); ++i) shares.push_back({combo[i]->pool, combo[i]->layout, (*split)[i]});
    last = evaluate_shares(model, run, set, shares, PoolStrategy::kHeteroDp);
    ranking.offer(last);
    if (!last) return;
    // Local SGD changes the optimisation: worth it only where synchronous reduction across the
    // pools costs more than 5% of the step.
    if (last->plan.cross_pool_s <= 0.05 * last->cost.step_time_s) return;
    if (round == 0) ranking.offer(evaluate_shares(model, run, set, shares, PoolStrategy::kLocalSgd));
    for (size_t i = 0; i < combo.size(); ++i) {
      const PlanPool& own = pool_part(*last, set.pools[combo[i]->pool].name);
      rates[i] = own.sequences / own.step_time_s;
    }
  }
  std::vector<PoolShare> shares;
  for (const Recipe* r : combo) shares.push_back({r->pool, r->layout, pool_part(*last, set.pools[r->pool].name).sequences});
  ranking.offer(evaluate_shares(model, run, set, shares, PoolStrategy::kLocalSgd));
}

// Every choice of one recipe (or none) per pool that uses two pools or more.
void each_combo(const std::vector<std::vector<Recipe>>& recipes, size_t pool, std::vector<const Recipe*>& chosen,
                const std::function<void(const std::vector<const Recipe*>&)>& visit) {
  if (pool == recipes.size()) {
    if (chosen.size() >= 2) visit(chosen);
    return;
  }
  each_combo(recipes, pool + 1, chosen, visit);
  for (const Recipe& r : recipes[pool]) {
    chosen.push_back(&r);
    each_combo(recipes, pool + 1, chosen, visit);
    chosen.pop_back();
  }
}

}  // namespace

namespace {

// A pipeline stage's time and memory as linear functions of its layers, for placing layers fast;
// the chosen placement is then costed exactly by evaluate_pipeline.
struct StageModel {
  Seconds moe = 0, dense = 0, embedding = 0, head = 0;
  Bytes base = 0, per_layer = 0, embedding_bytes = 0, head_bytes = 0, usable = 0;
  Seconds ends(bool first, bool last) const { return (first ? embedding : 0) + (last ? head : 0); }
  Seconds layer(const ModelConfig& model, int index) const { return model.is_dense_layer(index) ? dense : moe; }
};

struct PoolStageModel {
  const CostModel* cost = nullptr;
  Layout layout;  // the common layout, pp of its own
  StageModel unit;
  std::map<int, StageModel> by_in_flight;

  const StageModel& at(const ModelConfig& model, int in_flight) {
    auto it = by_in_flight.find(in_flight);
    if (it != by_in_flight.end()) return it->second;
    Layout l = layout;
    l.pp = in_flight;  // rank 0 of `in_flight` stages holds that many micro-batches (vpp 1)
    auto bytes = [&](int layers, bool embedding, bool head) {
      return cost->rank_memory(range_contents(model, model.layers - layers, layers, embedding, head), 0, l).total();
    };
    StageModel s = unit;
    s.per_layer = bytes(2, false, false) - bytes(1, false, false);
    s.base = bytes(1, false, false) - s.per_layer;
    s.embedding_bytes = bytes(1, true, false) - bytes(1, false, false);
    s.head_bytes = bytes(1, false, true) - bytes(1, false, false);
    s.usable = cost->usable_memory_bytes();
    return by_in_flight.emplace(in_flight, s).first->second;
  }
};

// Contiguous layers per stage, each stage filled as far as `limit` and its memory allow (the
// greedy fill is optimal for a bottleneck partition); nullopt when the layers do not all fit.
std::optional<std::vector<int>> place_layers(const ModelConfig& model, const std::vector<const StageModel*>& stages,
                                             Seconds limit) {
  std::vector<int> counts(stages.size(), 0);
  int layer = 0;
  const int n = static_cast<int>(stages.size());
  for (int r = 0; r < n; ++r) {
    const StageModel& s = *stages[r];
    const bool first = r == 0, last = r == n - 1;
    Seconds time = s.ends(first, last);
    Bytes bytes = s.base + (first ? s.embedding_bytes : 0) + (last ? s.head_bytes : 0);
    const int most = model.layers - layer - (n - 1 - r);
    int k = 0;
    while (k < most) {
      const Seconds t = time + s.layer(model, layer + k);
      if (t > limit || bytes + s.per_layer > s.usable) break;
      time = t;
      bytes += s.per_layer;
      ++k;
    }
    if (k == 0 || (last && k != most) || time > limit) return std::nullopt;
    counts[r] = k;
    layer += k;
  }
  return counts;
}

std::optional<std::vector<int>> balanced_layers(const ModelConfig& model, const std::vector<const StageModel*>& stages) {
  Seconds high = 0;
  for (const StageModel* s : stages) high = std::max(high, s->embedding + s->head + model.layers * std::max(s->moe, s->dense));
  std::optional<std::vector<int>> best = place_layers(model, stages, high);
  if (!best) return std::nullopt;
  Seconds low = 0;
  for (int i = 0; i < 40; ++i) {
    const Seconds mid = (low + high) / 2;
    if (auto counts = place_layers(model, stages, mid)) {
      best = std::move(counts);
      high = mid;
    } else {
      low = mid;
    }
  }
  return best;
}

// Stage counts tried per pool: powers of two and the most that fit.
std::vector<int> stage_counts(int cap, int layers) {
  std::vector<int> counts;
  cap = std::min(cap, layers);
  for (int n = 1; n <= cap; n *= 2) counts.push_back(n);
  if (cap >= 1 && counts.back() != cap) counts.push_back(cap);
  return counts;
}

struct PipelineIdea {
  std::vector<int> stages, layers;
  StepCost estimate;
};

// Pipelines over the pools of `order` with the common layout `common` (its dp set): each choice of
// stage counts gets its layers placed; the best few by estimated step go to the exact costing.
void cost_pipelines(const ModelConfig& model, const TrainingRun& run, const PoolSet& set, const SearchOptions& options,
                    const Layout& common, const std::vector<int>& order, MixedRanking& ranking) {
  if (run.global_batch % (common.dp * common.micro_batch) != 0) return;
  const int m = run.global_batch / (common.dp * common.micro_batch);
  std::vector<std::unique_ptr<CostModel>> costs;
  std::vector<PoolStageModel> models;
  std::vector<std::vector<int>> options_per_pool;
  for (int index : order) {
    const Pool& pool = set.pools[index];
    const Layout one = pipeline_layout(common, 1);
    if (violated_degrees(model, pool.profile, {1, pool.max_devices}, one)) return;
    const int cap = pool.max_devices / (common.tp * common.dp);
    if (cap < 1) return;
    costs.push_back(std::make_unique<CostModel>(model, run, pool.profile));
    PoolStageModel psm;
    psm.cost = costs.back().get();
    psm.layout = one;
    auto time = [&](const StageContents& s) { return psm.cost->micro_batch_time(s, one).total(); };
    StageContents moe, dense;
    moe.moe_layers = 1;
    dense.dense_layers = 1;
    psm.unit.moe = time(moe) - time(StageContents{});
    psm.unit.dense = time(dense) - time(StageContents{});
    psm.unit.embedding = time(range_contents(model, 0, 0, true, false));
    psm.unit.head = time(range_contents(model, 0, 0, false, true));
    models.push_back(std::move(psm));
    options_per_pool.push_back(stage_counts(cap, model.layers));
  }
  std::vector<PipelineIdea> ideas;
  std::vector<int> stages(order.size());
  std::function<void(size_t)> choose = [&](size_t i) {
    if (i < order.size()) {
      for (int n : options_per_pool[i]) {
        stages[i] = n;
        choose(i + 1);
      }
      return;
    }
    const int total = std::accumulate(stages.begin(), stages.end(), 0);
    if (total > model.layers) return;
    std::vector<const StageModel*> per_stage;
    for (size_t p = 0; p < order.size(); ++p) {
      for (int s = 0; s < stages[p]; ++s) {
        per_stage.push_back(&models[p].at(model, std::min(m, total - static_cast<int>(per_stage.size()))));
      }
    }
    const auto layers = balanced_layers(model, per_stage);
    if (!layers) return;
    // Estimate: the slowest stage every micro-batch, the others once.
    Seconds slowest = 0, sum = 0;
    int layer = 0;
    for (size_t r = 0; r < per_stage.size(); ++r) {
      Seconds t = per_stage[r]->ends(r == 0, r + 1 == per_stage.size());
      for (int k = 0; k < (*layers)[r]; ++k, ++layer) t += per_stage[r]->layer(model, layer);
      slowest = std::max(slowest, t);
      sum += t;
    }
    PipelineIdea idea{stages, *layers, {}};
    idea.estimate.step_time_s = (m - 1) * slowest + sum;
    std::vector<PlanPool> pools;
    for (size_t p = 0; p < order.size(); ++p) {
      pools.push_back({set.pools[order[p]].name, plan_hardware(set.pools[order[p]].profile, run.precision),
                       pipeline_layout(common, stages[p]), 0, 0, {}, 0});
    }
    derive_mixed_totals(idea.estimate, model, run, pools, set.currency, set.pools.front().profile.reliability);
    if (!objective_violation(idea.estimate, options).empty() && options.objective != Objective::kMinCostDeadline) return;
    ideas.push_back(std::move(idea));
  };
  choose(0);
  std::stable_sort(ideas.begin(), ideas.end(), [&](const PipelineIdea& a, const PipelineIdea& b) {
    const bool a_ok = objective_violation(a.estimate, options).empty(), b_ok = objective_violation(b.estimate, options).empty();
    if (a_ok != b_ok) return a_ok;
    return better(a.estimate, b.estimate, options.objective);
  });
  for (size_t i = 0; i < std::min<size_t>(ideas.size(), 4); ++i) {
    ranking.offer(evaluate_pipeline(model, run, set, common, order, ideas[i].stages, ideas[i].layers));
  }
}

// The tensor, expert and micro-batch choices of each pool's best single-pool plan, with every DP
// width, over every ordered subset of two pools or more (more memory first: early stages hold
// the most micro-batches in flight).
void search_pipelines(const ModelConfig& model, const TrainingRun& run, const SearchOptions& options,
                      const PoolSet& set, const std::vector<Layout>& seeds, MixedRanking& ranking) {
  std::vector<int> by_memory(set.pools.size());
  std::iota(by_memory.begin(), by_memory.end(), 0);
  std::stable_sort(by_memory.begin(), by_memory.end(), [&](int a, int b) {
    return set.pools[a].profile.device.memory_bytes > set.pools[b].profile.device.memory_bytes;
  });
  const int subsets = 1 << set.pools.size();
  for (const Layout& seed : seeds) {
    for (int mask = 1; mask < subsets; ++mask) {
      std::vector<int> order;
      for (int index : by_memory) {
        if (mask & (1 << index)) order.push_back(index);
      }
      if (order.size() < 2) continue;
      int smallest = set.pools[order.front()].max_devices;
      for (int index : order) smallest = std::min(smallest, set.pools[index].max_devices);
      for (int dp = 1; seed.tp * dp <= smallest; dp *= 2) {
        Layout common = seed;
        common.dp = dp;
        if ((common.tp * dp) % (common.expert_tp() * common.ep) != 0) continue;
        cost_pipelines(model, run, set, options, common, order, ranking);
      }
    }
  }
}

}  // namespace

PoolSearchResult plan_pools(const ModelConfig& model, const TrainingRun& run, const SearchOptions& options,
                            const PoolSet& set) {
  const auto start = std::chrono::steady_clock::now();
  PoolSearchResult result;
  std::vector<Layout> seeds;
  for (const Pool& pool : set.pools) {
    const CostModel cost(model, run, pool.profile);
    SearchOptions alone;
    alone.devices = {1, pool.max_devices};
    alone.objective = options.objective;
    alone.deadline_days = options.deadline_days;
    alone.budget = options.budget;
    alone.top_k = 1;
    const SearchResult r = search(cost, alone);
    result.single_found.push_back(!r.best.empty());
    result.single.push_back(r.best.empty() ? Candidate{} : r.best.front());
    if (r.best.empty()) continue;
    const int i = static_cast<int>(result.single.size()) - 1;
    if (result.best_single < 0 || better(r.best.front().cost, result.single[result.best_single].cost, options.objective)) {
      result.best_single = i;
    }
    Layout seed = r.best.front().layout;
    seed.pp = seed.vpp = 1;
    seed.even_split();
    // A pool's recompute is what its own stages needed alone; a pipeline over pools spreads the
    // layers, so its stages may fit without recompute.
    Layout without_recompute = seed;
    without_recompute.recompute = Recompute::kNone;
    without_recompute.recompute_modules = RecomputeModules{};
    for (const Layout& s : {seed, without_recompute}) {
      if (std::find(seeds.begin(), seeds.end(), s) == seeds.end()) seeds.push_back(s);
    }
  }
  MixedRanking ranking(options, result);
  if (set.pools.size() >= 2) {
    std::vector<std::vector<Recipe>> recipes;
    for (size_t i = 0; i < set.pools.size(); ++i) recipes.push_back(pool_recipes(model, run, set, static_cast<int>(i)));
    std::vector<const Recipe*> chosen;
    each_combo(recipes, 0, chosen, [&](const std::vector<const Recipe*>& combo) {
      cost_dp_strategies(model, run, set, combo, ranking);
    });
    search_pipelines(model, run, options, set, seeds, ranking);
  }
  ranking.finish();
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

Plan make_mixed_plan(const ModelConfig& model, const TrainingRun& run, const MixedCandidate& candidate,
                     Objective objective) {
  Plan plan;
  plan.model = model;
  plan.run = run;
  plan.hardware = candidate.plan.pools.front().hardware;
  plan.layout = candidate.plan.pools.front().layout;
  plan.objective = objective;
  plan.predicted = candidate.cost;
  plan.recommended = recommend(model, run, default_scaling());
  plan.mixed = candidate.plan;
  return plan;
}

}  // namespace flopwise
