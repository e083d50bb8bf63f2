#include "flopwise/search.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <set>
#include <stdexcept>

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

// None, all modules together, each of the five alone, full: try_recompute_choices keeps its
// per-choice state in arrays of this size, off the heap on the search's hottest path.
constexpr size_t kMaxRecomputeChoices = 8;

struct RecomputeChoice {
  Recompute recompute = Recompute::kNone;
  RecomputeModules modules{};
  // Whether this setting repeats all the work `other` repeats (and so takes at least its time).
  bool repeats_all_of(const RecomputeChoice& other) const {
    if (other.recompute == Recompute::kNone || recompute == Recompute::kFull) return true;
    if (recompute == Recompute::kNone || other.recompute == Recompute::kFull) return false;
    return (other.modules.bits & ~modules.bits) == 0;
  }
};

// Selective recompute of `modules` keeps fewer activations than none in a layer kind the model has.
// With a fused attention kernel core_attn keeps as much as none (the kernel stores no scores).
bool drops_activations(const CostModel& cost, RecomputeModules modules) {
  const ModelConfig& m = cost.model();
  Layout none, selective;
  selective.recompute = Recompute::kSelective;
  selective.recompute_modules = modules;
  if (recompute_modules_problem(m, selective)) return false;
  for (bool moe_layer : {true, false}) {
    if (moe_layer ? m.moe_layers() == 0 : m.dense_layers() == 0) continue;
    if (cost.layer_activation_bytes(moe_layer, selective) < cost.layer_activation_bytes(moe_layer, none)) return true;
  }
  return false;
}

std::string recompute_label(const RecomputeChoice& c) {
  return c.recompute == Recompute::kSelective ? "selective " + to_string(c.modules) : to_string(c.recompute);
}

// Recompute settings to try: none, all selective modules that drop activations of this model
// together, each of them alone, and full (try_recompute_choices walks them in this order). Fixed
// by the user: that one (selective without modules is Megatron's core_attn).
std::vector<RecomputeChoice> recompute_choices(const CostModel& cost, const SearchOptions& o) {
  if (o.recompute) {
    return {{*o.recompute, *o.recompute == Recompute::kSelective ? o.recompute_modules.value_or(RecomputeModules{})
                                                                  : RecomputeModules{}}};
  }
  std::vector<RecomputeChoice> singles;
  RecomputeModules all{0};
  for (RecomputeModule module : all_recompute_modules()) {
    const RecomputeModules one{static_cast<unsigned>(module)};
    if (!drops_activations(cost, one)) continue;
    singles.push_back({Recompute::kSelective, one});
    all.bits |= one.bits;
  }
  std::vector<RecomputeChoice> choices{{Recompute::kNone, {}}};
  if (singles.size() > 1) choices.push_back({Recompute::kSelective, all});
  choices.insert(choices.end(), singles.begin(), singles.end());
  choices.push_back({Recompute::kFull, {}});
  if (choices.size() > kMaxRecomputeChoices) throw std::logic_error("more recompute choices than the search holds");
  return choices;
}

// The space the planner walks: the values each degree may take before the rules prune them.
struct Space {
  std::vector<int> tp, cp, pp, vpp, ep, dp, micro_batch;
  std::vector<RecomputeChoice> recompute;
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
  s.recompute = recompute_choices(cost, o);
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

// One layout under each recompute choice (ordered none, all selective modules, each alone, full).
// A choice is not costed when one it repeats all the work of fits (it can only be slower), nor
// sized when one that repeats all of its work does not fit (it keeps at least as much).
void try_recompute_choices(const CostModel& cost, const SearchOptions& o, const std::vector<RecomputeChoice>& choices,
                           const std::vector<StageContents>& stages, Layout& l, SearchResult& result, Ranker& ranker) {
  enum class Fit { kNo, kYes, kSkipped };
  std::array<Fit, kMaxRecomputeChoices> fit;
  std::array<MemoryBreakdown, kMaxRecomputeChoices> needs;  // put into words only when reported
  fit.fill(Fit::kSkipped);
  auto with = [&](const RecomputeChoice& rc) {
    l.recompute = rc.recompute;
    l.recompute_modules = rc.modules;
    return l;
  };
  auto less_fits = [&](size_t i, size_t j) {
    ranker.reject(Constraint::kLessRecomputeFits, [&] {
      return "recompute " + recompute_label(choices[i]) + " is not needed: " + recompute_label(choices[j]) +
             " fits the same layout and repeats less";
    });
  };
  // The first choice in `fit` state `state` that `i` relates to by `related(i, j)`.
  auto find = [&](size_t i, Fit state, auto related) {
    for (size_t j = 0; j < choices.size(); ++j) {
      if (j != i && fit[j] == state && related(i, j)) return j;
    }
    return choices.size();
  };
  auto repeats = [&](size_t i, size_t j) { return choices[i].repeats_all_of(choices[j]); };
  auto repeated_by = [&](size_t i, size_t j) { return choices[j].repeats_all_of(choices[i]); };
  for (size_t i = 0; i < choices.size(); ++i) {
    ++result.considered;
    with(choices[i]);
    if (const size_t j = find(i, Fit::kYes, repeats); j < choices.size()) {
      less_fits(i, j);
      continue;
    }
    if (const size_t j = find(i, Fit::kNo, repeated_by); j < choices.size()) {
      fit[i] = Fit::kNo;
      needs[i] = needs[j];
      ranker.reject(Constraint::kMemory, [&] { return memory_violation(needs[i], cost.usable_memory_bytes()); });
      continue;
    }
    if (const auto v = violated_constraint(cost.model(), cost.run(), cost.profile(), o.devices, l)) {
      ranker.reject(*v, [&] { return explain(*v, cost.model(), cost.run(), cost.profile(), o.devices, l); });
      continue;
    }
    needs[i] = cost.memory(l, stages);
    fit[i] = needs[i].total() <= cost.usable_memory_bytes() ? Fit::kYes : Fit::kNo;
    if (fit[i] == Fit::kNo) {
      ranker.reject(Constraint::kMemory, [&] { return memory_violation(needs[i], cost.usable_memory_bytes()); });
    }
  }
  for (size_t i = 0; i < choices.size(); ++i) {
    if (fit[i] != Fit::kYes) continue;
    if (const size_t j = find(i, Fit::kYes, repeats); j < choices.size()) {
      less_fits(i, j);  // all modules together, where one alone fits
      continue;
    }
    ++result.evaluated;
    const StepCost c = cost.evaluate(with(choices[i]), stages);
    if (const std::string why = objective_violation(c, o); !why.empty()) {
      ranker.reject(Constraint::kObjective, [&] { return why; });
      continue;
    }
    ranker.offer(l, c);
  }
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
  for (int mb : s.micro_batch) for (bool shard : s.sharding) {
    l.micro_batch = mb;
    l.optimizer_sharding = shard;
    try_recompute_choices(cost, o, s.recompute, stages, l, result, ranker);
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
