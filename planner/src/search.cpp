#include "flopwise/search.hpp"

#include <algorithm>
#include <cmath>
#include <set>

#include "flopwise/error.hpp"

namespace flopwise {

void validate(const SearchOptions& o, const std::string& source) {
  if (o.devices.min < 1 || o.devices.max < o.devices.min) {
    throw input_error(source, "devices", "expected N or MIN:MAX with 1 <= MIN <= MAX");
  }
  if (o.objective == Objective::kMinCostDeadline && !(o.deadline_days > 0)) {
    throw input_error(source, "deadline-days", "objective cost-deadline needs a positive deadline in days");
  }
  if (o.objective == Objective::kMinTimeBudget && !(o.budget > 0)) {
    throw input_error(source, "budget", "objective time-budget needs a positive budget");
  }
  if (o.top_k < 1) throw input_error(source, "top", "must be at least 1");
}

bool better(const StepCost& a, const StepCost& b, Objective objective) {
  const bool by_cost = objective == Objective::kMinCost || objective == Objective::kMinCostDeadline;
  if (by_cost && a.cost != b.cost) return a.cost < b.cost;
  if (a.days != b.days) return a.days < b.days;
  return a.cost < b.cost;
}

std::string objective_violation(const StepCost& c, const SearchOptions& o) {
  char text[160];
  if (o.objective == Objective::kMinCostDeadline && c.days > o.deadline_days) {
    std::snprintf(text, sizeof text, "takes %.1f days, over the %.1f-day deadline", c.days, o.deadline_days);
    return text;
  }
  if (o.objective == Objective::kMinTimeBudget && c.cost > o.budget) {
    std::snprintf(text, sizeof text, "costs %.0f %s, over the budget of %.0f", c.cost, c.currency.c_str(), o.budget);
    return text;
  }
  return "";
}

namespace {

std::vector<int> powers_of_two_up_to(int limit) {
  std::vector<int> values;
  for (int v = 1; v <= limit; v *= 2) values.push_back(v);
  return values;
}

std::vector<int> divisors_up_to(int n, int limit) {
  std::vector<int> values;
  for (int v = 1; v <= std::min(n, limit); ++v) {
    if (n % v == 0) values.push_back(v);
  }
  return values;
}

std::vector<int> merged(std::vector<int> a, const std::vector<int>& b) {
  std::set<int> all(a.begin(), a.end());
  all.insert(b.begin(), b.end());
  return {all.begin(), all.end()};
}

template <typename T>
std::vector<T> fixed_or(const std::optional<T>& fixed, std::vector<T> candidates) {
  if (fixed) return {*fixed};
  return candidates;
}

// The space the planner walks: the values each degree may take before the rules prune them.
struct Space {
  std::vector<int> tp, cp, pp, vpp, ep, dp, micro_batch;
  std::vector<Recompute> recompute;
  std::vector<bool> sharding;
  bool moe = false;
  std::optional<int> etp;

  // Expert TP degrees to try under attention TP `tp`, as Layout::etp values: Megatron-Core's
  // default (the same tp) and full folding (etp 1, EP spread over the TP ranks), the two the
  // MoE parallel folding paper trains with (Liu et al. 2025, arXiv 2504.14960).
  std::vector<int> expert_tp(int tp) const {
    if (etp) return {fold_expert_tp(*etp, tp)};
    if (!moe || tp == 1) return {0};
    return {0, 1};
  }
};

Space candidate_space(const CostModel& cost, const SearchOptions& o) {
  const ModelConfig& m = cost.model();
  const int node = cost.profile().node.devices;
  const int max_devices = std::min(o.devices.max, cost.profile().cluster.max_devices);
  Space s;
  s.tp = fixed_or(o.tp, powers_of_two_up_to(node));
  s.cp = fixed_or(o.cp, powers_of_two_up_to(std::max(1, cost.run().seq_len / kMinCpShardTokens)));
  s.pp = fixed_or(o.pp, merged(powers_of_two_up_to(std::min(128, m.layers)), divisors_up_to(m.layers, 128)));
  s.vpp = fixed_or(o.vpp, {1, 2, 3, 4, 6, 8});
  s.ep = fixed_or(o.ep, powers_of_two_up_to(m.is_moe() ? m.routed_experts : 1));
  // DP sizes that divide the global batch, plus the powers of two people actually rent.
  std::vector<int> dp = merged(divisors_up_to(cost.run().global_batch, max_devices), powers_of_two_up_to(max_devices));
  if (o.devices.min == o.devices.max) dp = merged(dp, divisors_up_to(o.devices.min, o.devices.min));
  s.dp = fixed_or(o.dp, dp);
  s.micro_batch = fixed_or(o.micro_batch, {1, 2, 4, 8});
  s.recompute = fixed_or(o.recompute, {Recompute::kFull, Recompute::kSelective, Recompute::kNone});
  s.sharding = fixed_or(o.optimizer_sharding, {true, false});
  s.moe = m.is_moe();
  s.etp = o.etp;
  return s;
}

class Ranker {
 public:
  Ranker(const SearchOptions& options, SearchResult& result) : options_(options), result_(result) {}

  // `message` is only worded for the first rejection of each kind.
  template <typename Message>
  void reject(Constraint constraint, const Message& message, long long layouts = 1) {
    const auto index = static_cast<size_t>(constraint);
    if (result_.rejected[index] == 0) result_.example[index] = message();
    result_.rejected[index] += layouts;
  }

  void offer(const Layout& layout, const StepCost& cost) {
    auto& best = result_.best;
    if (static_cast<int>(best.size()) == options_.top_k && !better(cost, best.back().cost, options_.objective)) {
      return;
    }
    const auto at = std::upper_bound(best.begin(), best.end(), cost, [&](const StepCost& c, const Candidate& x) {
      return better(c, x.cost, options_.objective);
    });
    best.insert(at, Candidate{layout, cost});
    if (static_cast<int>(best.size()) > options_.top_k) best.pop_back();
  }

 private:
  const SearchOptions& options_;
  SearchResult& result_;
};

std::string memory_violation(const MemoryBreakdown& mem, Bytes usable) {
  return "needs " + format_bytes(mem.total()) + " per device, " + format_bytes(usable) + " usable";
}

}  // namespace

namespace {

// The pipeline ends a layout of pp x vpp stages gets: the user's, or the most balanced split.
void set_stage_ends(const SearchOptions& o, int layers, Layout& l) {
  if (!o.first_stage_layers && !o.last_stage_layers && !o.embedding_in_split && !o.loss_in_split) {
    balance_stages(layers, l);
    return;
  }
  l.first_stage_layers = o.first_stage_layers.value_or(0);
  l.last_stage_layers = o.last_stage_layers.value_or(0);
  l.embedding_in_split = o.embedding_in_split.value_or(false);
  l.loss_in_split = o.loss_in_split.value_or(false);
}

}  // namespace

SearchResult search(const CostModel& cost, const SearchOptions& o) {
  SearchResult result;
  Ranker ranker(o, result);
  const Space s = candidate_space(cost, o);
  Layout l;
  for (int tp : s.tp) for (int pp : s.pp) for (int vpp : s.vpp) {
  Layout ends{1, pp, vpp};
  set_stage_ends(o, cost.model().layers, ends);
  // What each pipeline rank holds depends on pp, vpp and the ends alone.
  const std::vector<StageContents> stages =
      stages_fit(cost.model().layers, ends) ? stage_contents(cost.model(), ends) : std::vector<StageContents>{};
  for (int cp : s.cp) for (int dp : s.dp) for (int ep : s.ep) for (int etp : s.expert_tp(tp)) {
  l = Layout{tp, pp, vpp, ep, dp};
  l.copy_split(ends);
  l.etp = etp;
  l.cp = cp;
  // Degrees that break a rule do so whatever the micro-batch, recompute and sharding: counted
  // once for all of them, which keeps the five-device comparison's enumeration cheap.
  if (const auto v = violated_degrees(cost.model(), cost.profile(), o.devices, l)) {
    const long long inner = static_cast<long long>(s.micro_batch.size() * s.recompute.size() * s.sharding.size());
    result.considered += inner;
    ranker.reject(*v, [&] { return explain(*v, cost.model(), cost.run(), cost.profile(), o.devices, l); }, inner);
    continue;
  }
  for (int mb : s.micro_batch) for (Recompute rc : s.recompute) for (bool shard : s.sharding) {
    l.micro_batch = mb;
    l.recompute = rc;
    l.recompute_modules = rc == Recompute::kSelective ? o.recompute_modules.value_or(RecomputeModules{}) : RecomputeModules{};
    l.optimizer_sharding = shard;
    ++result.considered;
    if (const auto v = violated_constraint(cost.model(), cost.run(), cost.profile(), o.devices, l)) {
      ranker.reject(*v, [&] { return explain(*v, cost.model(), cost.run(), cost.profile(), o.devices, l); });
      continue;
    }
    const MemoryBreakdown mem = cost.memory(l, stages);
    if (mem.total() > cost.usable_memory_bytes()) {
      ranker.reject(Constraint::kMemory, [&] { return memory_violation(mem, cost.usable_memory_bytes()); });
      continue;
    }
    ++result.evaluated;
    const StepCost c = cost.evaluate(l, stages);
    if (const std::string why = objective_violation(c, o); !why.empty()) {
      ranker.reject(Constraint::kObjective, [&] { return why; });
      continue;
    }
    ranker.offer(l, c);
  }
  }
  }
  return result;
}

std::optional<Layout> fixed_layout(const SearchOptions& o, int layers) {
  if (!o.tp || !o.pp || !o.vpp || !o.ep || !o.dp || !o.micro_batch || !o.recompute || !o.optimizer_sharding) {
    return std::nullopt;
  }
  Layout l{*o.tp, *o.pp, *o.vpp, *o.ep, *o.dp, *o.micro_batch, *o.recompute, *o.optimizer_sharding};
  if (o.recompute_modules) l.recompute_modules = *o.recompute_modules;
  if (o.etp) l.etp = fold_expert_tp(*o.etp, l.tp);
  l.cp = o.cp.value_or(1);
  set_stage_ends(o, layers, l);
  return l;
}

std::vector<std::string> shortfalls(const CostModel& model, const StepCost& c, const SearchOptions& o) {
  std::vector<std::string> missed;
  if (!c.fits_memory()) missed.push_back("memory: " + memory_violation(c.memory_bytes, model.usable_memory_bytes()));
  if (const std::string why = objective_violation(c, o); !why.empty()) missed.push_back(why);
  return missed;
}

}  // namespace flopwise
