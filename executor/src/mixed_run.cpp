#include "flopwise/executor/mixed_run.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <sstream>

#include "flopwise/error.hpp"
#include "flopwise/executor/spec.hpp"

namespace flopwise::executor {

int MixedRun::pool_of(const RankCoords& c) const { return data_parallel() ? c.dp / pool_dp : c.pp; }

std::vector<int> MixedRun::micro_batches_per_dp(int dp) const {
  std::vector<int> m(dp);
  for (int d = 0; d < dp; ++d) m[d] = data_parallel() ? pools.at(d / pool_dp).micro_batches : pools.front().micro_batches;
  return m;
}

std::vector<int> MixedRun::averaged_with(int d, int dp) const {
  const bool own_pool = strategy == PoolStrategy::kLocalSgd;
  const int first = own_pool ? d / pool_dp * pool_dp : 0;
  std::vector<int> members(own_pool ? pool_dp : dp);
  std::iota(members.begin(), members.end(), first);
  return members;
}

std::map<std::string, double> parse_slowdowns(const std::vector<std::string>& texts) {
  std::map<std::string, double> out;
  for (const std::string& text : texts) {
    const auto eq = text.find('=');
    if (eq == std::string::npos || eq == 0) throw input_error("--slowdown", text, "expected POOL=FACTOR, e.g. device-C=3");
    const std::string name = text.substr(0, eq);
    double factor = 0;
    std::istringstream in(text.substr(eq + 1));
    if (!(in >> factor) || !in.eof()) throw input_error("--slowdown", name, "expected a number after '='");
    if (!(factor >= 1)) throw input_error("--slowdown", name, "must be at least 1 (a slowdown pads compute)");
    out[name] = factor;
  }
  return out;
}

namespace {

// fit_layout's notes without its batch arithmetic: a mixed run sets its batch from the pools' shares.
std::string layout_notes(const std::string& notes) {
  std::string kept;
  std::istringstream parts(notes);
  for (std::string part; std::getline(parts, part, ';');) {
    part.erase(0, part.find_first_not_of(' '));
    if (!part.empty() && part.rfind("global batch", 0) != 0) add_note(kept, part);
  }
  return kept;
}

std::string pool_names(const MixedPlan& plan) {
  std::string names;
  for (const PlanPool& p : plan.pools) names += (names.empty() ? "" : ", ") + p.name;
  return names;
}

// `total` split over `weights`, at least one each, by largest remainder.
std::vector<int> proportional(int total, const std::vector<double>& weights) {
  const double sum = std::accumulate(weights.begin(), weights.end(), 0.0);
  const int n = static_cast<int>(weights.size());
  std::vector<int> share(n, 1);
  std::vector<double> remainder(n);
  int left = total - n;
  for (int i = 0; i < n; ++i) {
    const double exact = left * weights[i] / sum;
    share[i] += static_cast<int>(exact);
    remainder[i] = exact - static_cast<int>(exact);
  }
  left = total - std::accumulate(share.begin(), share.end(), 0);
  for (; left > 0; --left) {
    const int most = static_cast<int>(std::max_element(remainder.begin(), remainder.end()) - remainder.begin());
    ++share[most];
    remainder[most] = -1;
  }
  return share;
}

// Each pool's replicas take its plan's share of the world's micro-batches.
void split_batch(FittedMixedRun& f, const MixedPlan& plan, int micro_batches) {
  std::vector<double> sequences;
  for (const PlanPool& p : plan.pools) sequences.push_back(p.sequences);
  const double total = std::accumulate(sequences.begin(), sequences.end(), 0.0);
  const int world_micro_batches = micro_batches * f.layout.dp;
  for (size_t p = 0; p < plan.pools.size(); ++p) {
    f.run.pools[p].micro_batches =
        std::max(1, static_cast<int>(std::lround(world_micro_batches * sequences[p] / total / f.run.pool_dp)));
  }
}

// The pipeline's layers over its stages in proportion to the plan's layers per pool.
void split_layers(FittedMixedRun& f, const MixedPlan& plan) {
  std::vector<double> layers;
  for (const PlanPool& p : plan.pools) layers.push_back(std::accumulate(p.stage_layers.begin(), p.stage_layers.end(), 0));
  const std::vector<int> share = proportional(f.model.layers, layers);
  int first = 0;
  for (size_t p = 0; p < plan.pools.size(); ++p) {
    f.run.pools[p].first_layer = first;
    f.run.pools[p].layers = share[p];
    first += share[p];
  }
}

}  // namespace

FittedMixedRun fit_mixed_run(const MixedPlan& plan, const ModelConfig& planned, const MixedRunOptions& o,
                             const std::function<ModelConfig(int pp)>& scale) {
  const int n = static_cast<int>(plan.pools.size());
  if (n > o.max_ranks) {
    throw input_error("--max-ranks", "", "the plan has " + std::to_string(n) + " pools: give at least one rank each");
  }
  FittedMixedRun f;
  f.run.strategy = plan.strategy;
  f.run.sync_every_steps = o.sync_every_steps > 0 ? o.sync_every_steps : plan.sync_every_steps;
  for (const PlanPool& p : plan.pools) f.run.pools.push_back({p.name, 0, 0, 0, 1.0});
  for (const auto& [name, factor] : o.slowdowns) {
    auto it = std::find_if(f.run.pools.begin(), f.run.pools.end(), [&](const PoolRun& p) { return p.name == name; });
    if (it == f.run.pools.end()) throw input_error("--slowdown", name, "no such pool in the plan (pools: " + pool_names(plan) + ")");
    it->slowdown = factor;
  }
  // One model partition for every pool: the first pool's, fitted to each pool's share of the ranks.
  const int budget = o.max_ranks / n;
  Layout part = plan.pools.front().layout;
  part.recompute = Recompute::kNone;
  part.recompute_modules = RecomputeModules{};
  if (!f.run.data_parallel()) part.pp = 1, part.even_split();
  int batch = part.dp * part.micro_batch;
  std::string notes = fit_layout(part, batch, planned, budget);
  f.model = scale(f.run.data_parallel() ? part.pp : n);
  add_note(notes, fit_layout(part, batch, f.model, budget));
  f.layout = part;
  if (f.run.data_parallel()) {
    f.run.pool_dp = part.dp;
    f.layout.dp = n * part.dp;
    split_batch(f, plan, o.micro_batches > 0 ? o.micro_batches : 4);
  } else {
    f.layout.pp = n;
    f.layout.vpp = 1;
    f.run.pool_dp = part.dp;
    for (PoolRun& p : f.run.pools) p.micro_batches = o.micro_batches > 0 ? o.micro_batches : 4;
    split_layers(f, plan);
  }
  for (int m : f.run.micro_batches_per_dp(f.layout.dp)) f.global_batch += m * f.layout.micro_batch;
  add_note(f.notes, "each pool: " + layout_notes(notes));
  if (f.notes == "each pool: ") f.notes.clear();
  return f;
}

}  // namespace flopwise::executor
