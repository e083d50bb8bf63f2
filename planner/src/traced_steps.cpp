#include "flopwise/traced_steps.hpp"

#include <algorithm>
#include <cmath>
#include <map>

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

TrainingRun step_run(const TracedRun& run, int micro_batches) {
  TrainingRun r = run.run;
  r.global_batch = micro_batches * run.layout.dp * run.layout.micro_batch;
  return r;
}

// Which of the cost model's groups a measured collective span ran over.
GroupSpan group_of(const TracedRun& run, const TraceSpan& s) {
  const RankGrid grid(run.layout, run.ranks_per_node);
  const int size = static_cast<int>(number_arg(s, "group_size", 1));
  GroupKind kind = GroupKind::kDp;
  if (s.category == "tp") kind = GroupKind::kTp;
  if (s.category == "ep") kind = GroupKind::kEp;
  if (s.category == "dp" && size != grid.size(GroupKind::kDp)) kind = GroupKind::kExpertDp;
  return GroupSpan{size, std::min(size, grid.members_per_node(kind))};
}

std::vector<Seconds> as_list(const CategoryTimes& t) {
  return {t.compute, t.tp, t.ep, t.pp, t.dp, t.optimizer, t.other, t.step};
}

std::vector<MeasuredStep> measured_steps(const TracedRun& run) {
  // (step, rank) -> times
  std::map<std::pair<int, int>, CategoryTimes> by;
  std::map<std::pair<int, int>, int> micro_batches;
  for (const TraceSpan& s : run.spans) {
    const int step = static_cast<int>(number_arg(s, "step"));
    CategoryTimes& t = by[{step, s.rank}];
    const std::string pass = text_arg(s, "pass");
    if (s.category == "step") {
      t.step += s.duration;
      micro_batches[{step, s.rank}] = static_cast<int>(number_arg(s, "micro_batches", 0));
    } else if (s.category == "compute" && pass == "optimizer") {
      t.optimizer += s.duration;
    } else if (s.category == "compute") {
      t.compute += s.duration;
    } else if (s.category == "tp") {
      t.tp += s.duration;
    } else if (s.category == "ep") {
      t.ep += s.duration;
    } else if (s.category == "pp") {
      t.pp += s.duration;
    } else if (s.category == "dp") {
      t.dp += s.duration;
    }
  }
  std::map<int, MeasuredStep> steps;
  for (auto& [key, t] : by) {
    if (t.step <= 0) continue;  // a step the trace did not finish
    // TP and EP collectives run inside the passes: compute is what is left of them.
    t.compute -= t.tp + t.ep;
    t.other = t.step - (t.compute + t.tp + t.ep + t.pp + t.dp + t.optimizer);
    const auto [step, rank] = key;
    MeasuredStep& m = steps[step];
    const double busy = t.compute + t.tp + t.ep;
    if (m.times.step == 0 || busy > m.times.compute + m.times.tp + m.times.ep) {
      m = MeasuredStep{step, micro_batches[key], rank, false, false, t};
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

CategoryTimes predicted_step(const HardwareProfile& profile, const TracedRun& run, int micro_batches) {
  const CostModel cost(run.model, step_run(run, micro_batches), as_run(profile, run));
  const StepCost c = cost.evaluate(run.layout);
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
    const double predicted = predicted_step(profile, run, m.micro_batches).step;
    sum += std::abs(predicted - m.times.step) / m.times.step;
    ++count;
  }
  if (count == 0) throw input_error(run.source, "traceEvents", "no complete step after the first");
  return sum / count;
}

}  // namespace flopwise
