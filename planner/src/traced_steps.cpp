#include "flopwise/traced_steps.hpp"

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <set>
#include <tuple>

#include "flopwise/error.hpp"

namespace flopwise {

bool in_span(const TraceSpan& inner, const TraceSpan& outer) {
  return inner.rank == outer.rank && inner.start >= outer.start && inner.start < outer.start + outer.duration;
}

std::string text_arg(const TraceSpan& s, const char* key) {
  const auto it = s.args.find(key);
  return it != s.args.end() && it->is_string() ? it->get<std::string>() : "";
}

double number_arg(const TraceSpan& s, const char* key, double fallback) {
  const auto it = s.args.find(key);
  return it != s.args.end() && it->is_number() ? it->get<double>() : fallback;
}

// A profile for predicting a traced run: the machine as the run had it (its ranks per node).
HardwareProfile as_run(const HardwareProfile& profile, const TracedRun& run) {
  HardwareProfile p = profile;
  p.node.devices = run.ranks_per_node;
  p.cluster.leaf_ports = std::max(p.cluster.leaf_ports / std::max(1, profile.node.devices), 1) * run.ranks_per_node;
  p.cluster.max_devices = std::max(p.cluster.max_devices, run.ranks);
  return p;
}

TrainingRun step_run(const TracedRun& run, const MeasuredStep& step) {
  TrainingRun r = run.run;
  r.global_batch = step.micro_batches * run.layout.dp * run.layout.micro_batch;
  r.routing_skew = step.routing_skew;
  return r;
}

std::map<std::pair<int, int>, double> expert_loads(const TracedRun& run) {
  std::map<int, std::map<int, double>> rows;  // step -> rank -> expert rows
  for (const TraceSpan& s : run.spans) {
    const double expert_rows = number_arg(s, "expert_rows");
    if (s.category == "ep" && expert_rows >= 0) rows[static_cast<int>(number_arg(s, "step"))][s.rank] += expert_rows;
  }
  std::map<std::pair<int, int>, double> loads;
  const RankGrid grid(run.layout, run.ranks_per_node);
  for (const auto& [step, by_rank] : rows) {
    for (const auto& [rank, own] : by_rank) {
      double total = 0;
      int members = 0;
      for (int member : grid.group(GroupKind::kEp, rank)) {
        const auto it = by_rank.find(member);
        if (it != by_rank.end()) total += it->second, ++members;
      }
      if (total > 0) loads[{step, rank}] = own * members / total;
    }
  }
  return loads;
}

std::map<std::pair<int, int>, FlopsPerSecond> probe_rates(const TracedRun& run) {
  std::map<std::pair<int, int>, std::vector<Seconds>> seconds;
  double flops = 0;
  for (const TraceSpan& s : run.spans) {
    if (s.category != kProbeCategory || number_arg(s, "flops") <= 0 || s.duration <= 0) continue;
    flops = number_arg(s, "flops");
    // Its CPU time where the trace has it: how fast the core ran while it ran the probe, apart from
    // the time slices another process took (cpu_shares).
    const Seconds cpu = number_arg(s, "cpu_s", -1);
    seconds[{static_cast<int>(number_arg(s, "step")), s.rank}].push_back(cpu > 0 ? cpu : s.duration);
  }
  // The step's work runs at the mean of its probes' speeds over time; the slowest and the fastest
  // probe are dropped first, so that one preempted probe does not count.
  std::map<std::pair<int, int>, FlopsPerSecond> rates;
  for (auto& [key, t] : seconds) {
    std::sort(t.begin(), t.end());
    const size_t trim = t.size() >= 5 ? 1 : 0;
    const Seconds sum = std::accumulate(t.begin() + trim, t.end() - trim, 0.0);
    rates[key] = flops * (t.size() - 2 * trim) / sum;
  }
  return rates;
}

double machine_speed(const HardwareProfile& profile, FlopsPerSecond probe_rate) {
  return profile.reference_probe_rate > 0 && probe_rate > 0 ? probe_rate / profile.reference_probe_rate : 1.0;
}

HardwareProfile at_speed(const HardwareProfile& profile, double speed, double share) {
  HardwareProfile p = profile;
  for (auto& [dtype, tflops] : p.device.peak_tflops) tflops *= speed * share;
  p.device.memory_bandwidth *= share;
  p.overheads.per_layer_pass /= share;
  p.overheads.per_step /= share;
  // Gloo moves a collective's bytes on the ranks' own cores.
  p.node.intra_bandwidth *= share;
  p.cluster.inter_bandwidth *= share;
  p.node.intra_latency /= share;
  p.cluster.inter_latency /= share;
  for (auto& [algorithm, figures] : p.collectives) {
    if (figures.intra_node) figures.intra_node->latency /= share;
    if (figures.inter_node) figures.inter_node->latency /= share;
  }
  return p;
}

namespace {

bool is_pass(const TraceSpan& s) {
  const std::string pass = text_arg(s, "pass");
  return s.category == "compute" && (pass == "forward" || pass == "backward");
}

}  // namespace

PassCollectives::PassCollectives(const TracedRun& run) {
  for (const TraceSpan& s : run.spans) {
    if (s.category == "tp" || s.category == "ep") by_rank_[s.rank].push_back(&s);
  }
  for (auto& [rank, spans] : by_rank_) {
    std::sort(spans.begin(), spans.end(), [](const TraceSpan* a, const TraceSpan* b) { return a->start < b->start; });
  }
}

PassCollectives::Time PassCollectives::inside(const TraceSpan& pass) const {
  Time t;
  const auto rank = by_rank_.find(pass.rank);
  if (rank == by_rank_.end()) return t;
  const std::vector<const TraceSpan*>& spans = rank->second;
  auto it = std::lower_bound(spans.begin(), spans.end(), pass.start,
                             [](const TraceSpan* s, Seconds start) { return s->start < start; });
  for (; it != spans.end() && in_span(**it, pass); ++it) {
    const Seconds cpu = number_arg(**it, "cpu_s", -1);
    t.wall += (*it)->duration;
    t.cpu = t.cpu < 0 || cpu < 0 ? -1 : t.cpu + cpu;
  }
  return t;
}

PassTime own_pass_time(const PassCollectives& nested, const TraceSpan& pass) {
  const PassCollectives::Time inside = nested.inside(pass);
  const Seconds cpu = number_arg(pass, "cpu_s", -1);
  return {pass.duration - inside.wall, cpu < 0 || inside.cpu < 0 ? -1 : cpu - inside.cpu};
}

namespace {

// cpu_shares, given the run's peer waits (measured_steps has them already).
std::map<std::pair<int, int>, CoreShare> shares_given(const TracedRun& run, const std::vector<Seconds>& waits) {
  struct Sums {
    Seconds wall = 0, cpu = 0, waits = 0;
    bool complete = true;
  };
  std::map<std::pair<int, int>, Sums> sums;
  const PassCollectives nested(run);
  for (size_t i = 0; i < run.spans.size(); ++i) {
    const TraceSpan& s = run.spans[i];
    Sums& sum = sums[{static_cast<int>(number_arg(s, "step")), s.rank}];
    sum.waits += waits[i];
    if (!is_pass(s)) continue;
    const PassTime own = own_pass_time(nested, s);
    sum.complete = sum.complete && own.cpu >= 0;
    sum.wall += own.wall;
    sum.cpu += std::max(0.0, own.cpu);
  }
  std::map<std::pair<int, int>, CoreShare> shares;
  for (const auto& [key, sum] : sums) {
    if (!sum.complete || sum.wall <= 0 || sum.cpu <= 0) continue;
    shares[key] = {std::min(1.0, sum.cpu / sum.wall), std::min(1.0, sum.cpu / (sum.wall + sum.waits))};
  }
  return shares;
}

}  // namespace

std::map<std::pair<int, int>, CoreShare> cpu_shares(const TracedRun& run) { return shares_given(run, peer_waits(run)); }

namespace {

// The group a collective span ran over: TP, EP, or DP (the expert DP group when its size differs).
GroupKind kind_of(const RankGrid& grid, const TraceSpan& s) {
  if (s.category == "tp") return GroupKind::kTp;
  if (s.category == "ep") return GroupKind::kEp;
  const int size = static_cast<int>(number_arg(s, "group_size", 1));
  return size == grid.size(GroupKind::kDp) ? GroupKind::kDp : GroupKind::kExpertDp;
}

}  // namespace

// Which of the cost model's groups a measured collective span ran over.
GroupSpan group_of(const TracedRun& run, const TraceSpan& s) {
  const RankGrid grid(run.layout, run.ranks_per_node);
  const int size = static_cast<int>(number_arg(s, "group_size", 1));
  return GroupSpan{size, std::min(size, grid.members_per_node(kind_of(grid, s)))};
}

std::vector<Seconds> as_list(const CategoryTimes& t) {
  return {t.compute, t.tp, t.ep, t.pp, t.dp, t.wait, t.optimizer, t.other, t.step};
}

namespace {

bool is_group_collective(const TraceSpan& s) {
  return (s.category == "tp" || s.category == "ep" || s.category == "dp") && !text_arg(s, "collective").empty();
}

}  // namespace

std::vector<Seconds> peer_waits(const TracedRun& run) {
  std::vector<Seconds> waits(run.spans.size(), 0);
  if (!run.common_clock) return waits;
  const RankGrid grid(run.layout, run.ranks_per_node);
  // One instance of a collective: its group (lowest member), step, kind and order in the step.
  using Instance = std::tuple<int, int, std::string, std::string, int>;
  std::vector<size_t> order;
  for (size_t i = 0; i < run.spans.size(); ++i) {
    if (is_group_collective(run.spans[i])) order.push_back(i);
  }
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return run.spans[a].start < run.spans[b].start; });
  std::map<std::tuple<int, int, std::string, std::string>, int> seen;  // per rank and step: instances so far
  std::map<Instance, Seconds> last_arrival;
  std::vector<Instance> instance_of(run.spans.size());
  for (size_t i : order) {
    const TraceSpan& s = run.spans[i];
    const int step = static_cast<int>(number_arg(s, "step"));
    const int size = static_cast<int>(number_arg(s, "group_size", 1));
    const std::string kind = s.category + "/" + std::to_string(size);
    const std::vector<int> members = grid.group(kind_of(grid, s), s.rank);
    const int n = seen[{s.rank, step, kind, text_arg(s, "collective")}]++;
    const Instance instance{*std::min_element(members.begin(), members.end()), step, kind, text_arg(s, "collective"), n};
    instance_of[i] = instance;
    Seconds& last = last_arrival.try_emplace(instance, s.start).first->second;
    last = std::max(last, s.start);
  }
  for (size_t i : order) {
    const TraceSpan& s = run.spans[i];
    waits[i] = std::clamp(last_arrival[instance_of[i]] - s.start, 0.0, s.duration);
  }
  return waits;
}

std::vector<MeasuredStep> measured_steps(const TracedRun& run) {
  // (step, rank) -> times
  std::map<std::pair<int, int>, CategoryTimes> by;
  std::map<std::pair<int, int>, int> micro_batches;
  std::map<std::pair<int, int>, Seconds> nested_waits;  // inside the passes, like tp and ep
  const std::vector<Seconds> waits = peer_waits(run);
  for (size_t i = 0; i < run.spans.size(); ++i) {
    const TraceSpan& s = run.spans[i];
    const int step = static_cast<int>(number_arg(s, "step"));
    CategoryTimes& t = by[{step, s.rank}];
    const std::string pass = text_arg(s, "pass");
    t.wait += waits[i];
    if (s.category == "tp" || s.category == "ep") nested_waits[{step, s.rank}] += waits[i];
    if (s.category == kProbeCategory) {
      t.step -= s.duration;  // instrumentation inside the step, not its work
    } else if (s.category == "step") {
      t.step += s.duration;
      micro_batches[{step, s.rank}] = static_cast<int>(number_arg(s, "micro_batches", 0));
    } else if (s.category == "compute" && pass == "optimizer") {
      t.optimizer += s.duration;
    } else if (s.category == "compute") {
      t.compute += s.duration;
    } else if (s.category == "tp") {
      t.tp += s.duration - waits[i];
    } else if (s.category == "ep") {
      t.ep += s.duration - waits[i];
    } else if (s.category == "pp") {
      t.pp += s.duration;
    } else if (s.category == "dp") {
      t.dp += s.duration - waits[i];
    }
  }
  std::map<int, double> skews;  // the busiest rank's load in each step
  for (const auto& [key, load] : expert_loads(run)) skews[key.first] = std::max(skews[key.first], load);
  // Each pipeline stage runs at the pace of its critical rank: the one that waited least for its
  // peers for its work (the highest probe rate x paced share of a core); the ranks synchronised with
  // it ran at its pace, waits included. The step waits for its slowest stage.
  const std::map<std::pair<int, int>, FlopsPerSecond> rates = probe_rates(run);
  const std::map<std::pair<int, int>, CoreShare> shares = shares_given(run, waits);
  std::set<std::pair<int, int>> ranks;
  for (const auto& [key, rate] : rates) ranks.insert(key);
  for (const auto& [key, share] : shares) ranks.insert(key);
  struct Pace {
    FlopsPerSecond rate = 0;
    double share = 1;
    bool set = false;
  };
  const auto pace = [](const Pace& p) { return (p.rate > 0 ? p.rate : 1.0) * p.share; };
  // Without CPU times (older traces) the waits say nothing of the pace: the slowest probe paces.
  const bool timed = !shares.empty();
  std::map<int, std::vector<Pace>> stage_paces;
  const RankGrid grid(run.layout, run.ranks_per_node);
  for (const auto& key : ranks) {
    const auto share = shares.find(key);
    const Pace own{rates.count(key) ? rates.at(key) : 0.0, share != shares.end() ? share->second.paced : 1.0, true};
    std::vector<Pace>& stages = stage_paces[key.first];
    stages.resize(run.layout.pp);
    Pace& critical = stages[grid.coords(key.second).pp];
    if (!critical.set || (timed ? pace(own) > pace(critical) : pace(own) < pace(critical))) critical = own;
  }
  std::map<int, MeasuredStep> steps;
  for (auto& [key, t] : by) {
    if (t.step <= 0) continue;  // a step the trace did not finish
    // TP and EP collectives (and their waits) run inside the passes: compute is what is left of them.
    t.compute -= t.tp + t.ep + nested_waits[key];
    t.other = t.step - (t.compute + t.tp + t.ep + t.pp + t.dp + t.wait + t.optimizer);
    const auto [step, rank] = key;
    MeasuredStep& m = steps[step];
    const double busy = t.compute + t.tp + t.ep;
    if (m.times.step == 0 || busy > m.times.compute + m.times.tp + m.times.ep) {
      m = MeasuredStep{step, micro_batches[key], rank, false, false, t};
      if (skews.count(step)) m.routing_skew = std::max(1.0, skews[step]);
      const std::vector<Pace>& paces = stage_paces[step];
      const Pace* slowest = nullptr;
      for (const Pace& p : paces) {
        m.stage_probe_rates.push_back(p.rate);
        m.stage_cpu_shares.push_back(p.share);
        if (p.set && (!slowest || pace(p) < pace(*slowest))) slowest = &p;
      }
      if (slowest) m.probe_rate = slowest->rate, m.cpu_share = slowest->share;
    }
  }
  std::vector<MeasuredStep> result;
  for (auto& [step, m] : steps) result.push_back(m);
  if (!result.empty()) result.front().warmup = true;
  std::vector<Seconds> times;
  for (const MeasuredStep& m : result) {
    if (!m.warmup) times.push_back(m.times.step);
  }
  if (times.size() < 3) return result;
  std::sort(times.begin(), times.end());
  const Seconds median = times.size() % 2 ? times[times.size() / 2] : (times[times.size() / 2 - 1] + times[times.size() / 2]) / 2;
  for (MeasuredStep& m : result) {
    m.of_median = m.times.step / median;
    m.outlier = !m.warmup && m.of_median > kOutlierFactor;
  }
  return result;
}

namespace {

// The step on `profile` with each pipeline stage's compute at its own cores' speed; the rest (DP,
// optimizer) at the slowest core's, which the step waits for.
StepCost step_at_stage_speeds(const HardwareProfile& profile, const TracedRun& run, const MeasuredStep& step) {
  const HardwareProfile machine = as_run(profile, run);
  const TrainingRun as_ran = step_run(run, step);
  const CostModel slowest(run.model, as_ran,
                          at_speed(machine, machine_speed(profile, step.probe_rate), step.cpu_share));
  const std::vector<StageContents> stages = stage_contents(run.model, run.layout);
  if (stages.size() < 2) return slowest.evaluate(run.layout, stages);
  const size_t pp = stages.size();
  const bool rates = step.stage_probe_rates.size() == pp, shares = step.stage_cpu_shares.size() == pp;
  if (!rates && !shares) return slowest.evaluate(run.layout, stages);
  std::vector<CostModel::RankTime> times;
  for (size_t r = 0; r < stages.size(); ++r) {
    const double speed = machine_speed(profile, rates ? step.stage_probe_rates[r] : step.probe_rate);
    const CostModel own(run.model, as_ran, at_speed(machine, speed, shares ? step.stage_cpu_shares[r] : step.cpu_share));
    times.push_back(own.micro_batch_time(stages[r], run.layout));
  }
  return slowest.evaluate(run.layout, stages, times);
}

}  // namespace

CategoryTimes predicted_step(const HardwareProfile& profile, const TracedRun& run, const MeasuredStep& step) {
  const StepCost c = step_at_stage_speeds(profile, run, step);
  CategoryTimes t;
  t.compute = c.compute_s;
  t.tp = c.exposed_comm_s.tp;
  t.ep = c.exposed_comm_s.ep;
  t.pp = c.exposed_comm_s.pp + c.bubble_s;
  t.dp = c.exposed_comm_s.dp;
  t.optimizer = c.optimizer_s;
  t.other = c.overhead_s;
  t.step = c.step_time_s;
  return t;
}

double step_time_error(const HardwareProfile& profile, const TracedRun& run) {
  double sum = 0;
  int count = 0;
  for (const MeasuredStep& m : measured_steps(run)) {
    if (m.warmup) continue;
    const double predicted = predicted_step(profile, run, m).step;
    sum += std::abs(predicted - m.times.step) / m.times.step;
    ++count;
  }
  if (count == 0) throw input_error(run.source, "traceEvents", "no complete step after the first");
  return sum / count;
}

}  // namespace flopwise
