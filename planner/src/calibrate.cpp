#include "flopwise/calibrate.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <map>
#include <numeric>
#include <optional>
#include <set>

#include "flopwise/error.hpp"
#include "flopwise/least_squares.hpp"

namespace flopwise {

namespace {

// ---------------------------------------------------------------- the fits

struct Sample {
  const TracedRun* run;
  const TraceSpan* span;
  Seconds peer_wait = 0;  // of a collective: waiting for the group's last member, not transfer
  int step = 0;
  double expert_load = 1;  // the span's rank's expert rows over its EP group's mean in this step
  double speed = 1;        // its rank's machine speed in this step, relative to the fit's reference
  double group_share = 1;  // the smallest share of a core any rank ran at in this step (cpu_shares)
};

std::set<int> kept_steps(const TracedRun& run) {
  std::set<int> kept;
  for (const MeasuredStep& m : measured_steps(run)) {
    if (!m.warmup && !m.outlier) kept.insert(m.step);
  }
  return kept;
}

// The median speed-probe rate over the fitted steps and ranks (0 without probes): the machine speed
// the fitted figures hold at, whatever share of the runs a shared core slowed.
FlopsPerSecond reference_probe_rate(const std::vector<TracedRun>& runs) {
  std::vector<FlopsPerSecond> rates;
  for (const TracedRun& run : runs) {
    const std::set<int> kept = kept_steps(run);
    for (const auto& [key, rate] : probe_rates(run)) {
      if (kept.count(key.first)) rates.push_back(rate);
    }
  }
  if (rates.empty()) return 0;
  std::sort(rates.begin(), rates.end());
  const size_t n = rates.size();
  return n % 2 ? rates[n / 2] : (rates[n / 2 - 1] + rates[n / 2]) / 2;
}

// Spans of the steps after each trace's first (warm-up) step, outlier steps left out; `reference`
// says how fast each span's core ran (machine_speed of its probe).
std::vector<Sample> fit_spans(const std::vector<TracedRun>& runs, const HardwareProfile& reference) {
  std::vector<Sample> samples;
  for (const TracedRun& run : runs) {
    const std::set<int> kept = kept_steps(run);
    const std::vector<Seconds> waits = peer_waits(run);
    const std::map<std::pair<int, int>, double> loads = expert_loads(run);
    const std::map<std::pair<int, int>, FlopsPerSecond> rates = probe_rates(run);
    std::map<int, double> step_shares;
    for (const auto& [key, share] : cpu_shares(run)) {
      const auto [it, fresh] = step_shares.try_emplace(key.first, share.own);
      if (!fresh) it->second = std::min(it->second, share.own);
    }
    for (size_t i = 0; i < run.spans.size(); ++i) {
      const int step = static_cast<int>(number_arg(run.spans[i], "step"));
      if (!kept.count(step)) continue;
      const auto load = loads.find({step, run.spans[i].rank});
      const auto rate = rates.find({step, run.spans[i].rank});
      samples.push_back({&run, &run.spans[i], waits[i], step, load != loads.end() ? load->second : 1.0,
                         machine_speed(reference, rate != rates.end() ? rate->second : 0.0),
                         step_shares.count(step) ? step_shares[step] : 1.0});
    }
  }
  return samples;
}

// Spans of one kind in one step do the same work (the key says which: run, step, stage, pass or
// size), so the median over their ranks and micro-batches is one measurement: a span stretched by
// a preempted core cannot pull the fit, and the step-to-step scatter that remains sets the intervals.
// Each step's point is weighed relative to its kind's mean over the steps, not to itself: weights
// of 1/measured favour the quick steps, so a kind whose steps scatter with a long tail (a small
// collective that now and then waits a scheduler slice for its woken rank) would be fitted near
// its typical step instead of its mean, which is what a step's time adds up.
class MedianRows {
 public:
  void add(const Sample& s, const std::string& what, std::vector<double> x, Seconds y, Seconds offset = 0) {
    Row& row = rows_[{s.run->source + "|" + what, s.step}];
    row.x = std::move(x);
    row.offset = offset;
    row.y.push_back(y);
  }
  LinearSystem system() const {
    std::vector<Seconds> medians;  // one per row, in the map's order
    std::map<std::string, std::pair<Seconds, int>> kinds;  // sum and count of each kind's measured points
    for (const auto& [key, row] : rows_) {
      medians.push_back(median(row.y));
      if (medians.back() <= 0) continue;  // solve() leaves it out
      auto& [sum, count] = kinds[key.first];
      sum += medians.back();
      ++count;
    }
    LinearSystem system;
    size_t i = 0;
    for (const auto& [key, row] : rows_) {
      const auto kind = kinds.find(key.first);
      system.add(row.x, medians[i++], row.offset, kind == kinds.end() ? 0.0 : kind->second.first / kind->second.second);
    }
    return system;
  }

 private:
  struct Row {
    std::vector<double> x;
    std::vector<Seconds> y;
    Seconds offset = 0;
  };
  static Seconds median(std::vector<Seconds> y) {
    std::sort(y.begin(), y.end());
    const size_t n = y.size();
    return n % 2 ? y[n / 2] : (y[n / 2 - 1] + y[n / 2]) / 2;
  }
  std::map<std::pair<std::string, int>, Row> rows_;  // by kind and step
};

std::vector<std::string> outlier_steps(const std::vector<TracedRun>& runs) {
  std::vector<std::string> dropped;
  for (const TracedRun& run : runs) {
    for (const MeasuredStep& m : measured_steps(run)) {
      if (!m.outlier) continue;
      char text[64];
      std::snprintf(text, sizeof text, " step %d: %.1fx the median step", m.step, m.of_median);
      dropped.push_back(run.source + text);
    }
  }
  return dropped;
}

// A pass's own time, its TP and EP collectives left out: the CPU time it ran where the trace has it
// (on a core shared with other work the wall time also holds the other work's time slices), its
// wall time otherwise.
Seconds own_seconds(const PassCollectives& nested, const TraceSpan& pass) {
  const PassTime own = own_pass_time(nested, pass);
  return own.cpu >= 0 ? own.cpu : own.wall;
}

// Each run's index of the collectives inside its passes, built once.
class NestedByRun {
 public:
  const PassCollectives& of(const TracedRun& run) {
    auto it = index_.find(&run);
    if (it == index_.end()) it = index_.emplace(&run, PassCollectives(run)).first;
    return it->second;
  }

 private:
  std::map<const TracedRun*, PassCollectives> index_;
};

// Compute passes: time = (matmul + n_half x matmul_per_row) / (peak e_mm) + attention / (peak e_att)
// + layer_passes x overhead + memory-bound bytes / (bandwidth e_mem), linear in
// theta = (1/e_mm, n_half/e_mm, 1/e_att, overhead). `shape` prices the memory-bound kernels,
// subtracted as known, and decides which GEMMs are memory-bound; `profile` gives the before values.
FitGroup fit_compute(const HardwareProfile& profile, const HardwareProfile& shape, const std::vector<Sample>& samples) {
  const Efficiency& e = profile.efficiency;
  std::vector<Unknown> unknowns = {
      {"efficiency.matmul", 1.0 / e.matmul, 1.0, 1000.0},
      {"efficiency.attention", 1.0 / e.attention, 1.0, 1000.0},
      {"overheads.per_layer_pass", profile.overheads.per_layer_pass, 0.0, 1.0},
      {"efficiency.matmul_half_rows", e.matmul_half_rows / e.matmul, 0.0, 1e12},
  };
  MedianRows rows;
  NestedByRun nested;
  for (const Sample& s : samples) {
    const std::string pass = text_arg(*s.span, "pass");
    if (s.span->category != "compute" || (pass != "forward" && pass != "backward")) continue;
    const TracedRun& run = *s.run;
    // Each rank's experts take their own share of the routed rows: with EP, ranks differ.
    TrainingRun as_ran = run.run;
    as_ran.routing_skew = s.expert_load;
    const CostModel cost(run.model, as_ran, at_speed(as_run(shape, run), s.speed));
    const int stage = RankGrid(run.layout, run.ranks_per_node).coords(s.span->rank).pp;
    const StageContents contents = stage_contents(run.model, run.layout)[stage];
    const ComputeWork w = pass == "forward" ? cost.forward_work(contents, run.layout) : cost.backward_work(contents, run.layout);
    // Ranks differ with EP (their experts' loads) and with probes (their cores' speeds).
    const bool per_rank = run.layout.ep > 1 || s.speed != 1.0;
    const std::string rank = per_rank ? " rank " + std::to_string(s.span->rank) : std::string();
    rows.add(s, pass + " stage " + std::to_string(stage) + rank,
             {w.matmul / cost.matmul_peak(), w.attention / cost.attention_peak(), w.layer_passes,
              w.matmul_per_row / cost.matmul_peak()},
             own_seconds(nested.of(run), *s.span) - memory_bound_seconds(w, shape));
  }
  const SolveResult r = solve(rows.system(), unknowns);
  return make_fit_group("compute passes", unknowns, r,
                    {[](const std::vector<double>& t) { return 1.0 / t[0]; },
                     [](const std::vector<double>& t) { return 1.0 / t[1]; },
                     [](const std::vector<double>& t) { return t[2]; },
                     [](const std::vector<double>& t) { return t[3] / t[0]; }},
                    {e.matmul, e.attention, profile.overheads.per_layer_pass, e.matmul_half_rows});
}

struct CollectiveKey {
  CollectiveAlgorithm algorithm;
  bool intra;
  bool operator<(const CollectiveKey& o) const { return std::tie(algorithm, intra) < std::tie(o.algorithm, o.intra); }
};

// One device's nominal link bandwidth: NVLink-class inside a node, its NIC share across nodes.
double nominal_bandwidth(const HardwareProfile& p, bool intra) {
  return intra ? p.node.intra_bandwidth : p.cluster.inter_bandwidth / p.cluster.oversubscription;
}

// Collectives: time = bytes_factor x bytes / (nominal e) + latency_steps x latency, per algorithm
// and link class, linear in theta = (1/e, latency); the fitted pair goes into `after`.

// A collective with no figures of its own on a link (neither in the profile nor fitted) takes the
// ring's fitted ones there: the same transport (Gloo's TCP pairs, NCCL's channels) carries its
// messages, so the ring's per-message latency and achieved bandwidth beat the link's nominal
// figures. Runs that exercise it fit its own.
// `after` starts as the profile, so figures it lacks are neither the profile's nor fitted.
void inherit_ring_figures(HardwareProfile& after) {
  const auto ring = after.collectives.find(CollectiveAlgorithm::kRing);
  if (ring == after.collectives.end()) return;
  for (int a = 0; a < kCollectiveAlgorithms; ++a) {
    const auto algorithm = static_cast<CollectiveAlgorithm>(a);
    if (algorithm == CollectiveAlgorithm::kRing) continue;
    CollectiveFigures& figures = after.collectives[algorithm];
    if (!figures.intra_node) figures.intra_node = ring->second.intra_node;
    if (!figures.inter_node) figures.inter_node = ring->second.inter_node;
    if (!figures.intra_node && !figures.inter_node) after.collectives.erase(algorithm);
  }
}

std::vector<FitGroup> fit_collectives(const HardwareProfile& profile, const std::vector<Sample>& samples,
                                      HardwareProfile& after) {
  std::map<CollectiveKey, MedianRows> systems;
  for (const Sample& s : samples) {
    const std::string name = text_arg(*s.span, "collective");
    Collective c;
    if (name == "all_reduce") {
      c = Collective::kAllReduce;
    } else if (name == "all_to_all") {
      c = Collective::kAllToAll;
    } else {
      continue;  // receives include pipeline waits; broadcasts have no model term
    }
    const GroupSpan group = group_of(*s.run, *s.span);
    if (group.size < 2) continue;
    const bool intra = group.intra_only();
    // A ring spanning nodes drives one NIC per member on each node.
    const double nominal = (intra ? 1 : group.members_per_node) * nominal_bandwidth(profile, intra);
    if (nominal <= 0) continue;
    const AlphaBeta ab = alpha_beta(c, group.size);
    const double bytes = number_arg(*s.span, "bytes", 0);
    // The transfer only: time spent waiting for the group's last member is the peers' compute. Gloo
    // moves the bytes on the members' cores: on a shared core, at the slowest member's share.
    systems[{algorithm_of(c), intra}].add(s, s.span->category + " " + name + " " + std::to_string(bytes),
                                          {ab.bytes_factor * bytes / nominal, ab.latency_steps},
                                          (s.span->duration - s.peer_wait) * s.group_share);
  }
  std::vector<FitGroup> groups;
  const Network defaults = Network::from(profile);
  for (const auto& [key, rows] : systems) {
    const LinearSystem system = rows.system();
    const std::string link = key.intra ? "intra_node" : "inter_node";
    const std::string prefix = "collectives." + to_string(key.algorithm) + "." + link + ".";
    const Link& before = key.intra ? defaults.intra_for(key.algorithm) : defaults.inter_for(key.algorithm);
    const double efficiency = before.bandwidth / nominal_bandwidth(profile, key.intra);
    const std::vector<Unknown> unknowns = {{prefix + "efficiency", 1.0 / efficiency, 1.0, 1000.0},
                                           {prefix + "latency", before.latency, 0.0, 10.0}};
    const SolveResult r = solve(system, unknowns);
    groups.push_back(make_fit_group(to_string(key.algorithm) + " (" + link + ")", unknowns, r,
                                {[](const std::vector<double>& t) { return 1.0 / t[0]; },
                                 [](const std::vector<double>& t) { return t[1]; }},
                                {efficiency, before.latency}));
    // Fitted figures replace the defaults as a pair; an undetermined one keeps the default's value.
    if (r.determined[0] || r.determined[1]) {
      CollectiveFigures& figures = after.collectives[key.algorithm];
      (key.intra ? figures.intra_node : figures.inter_node) = LinkFigures{1.0 / r.theta[0], r.theta[1]};
    }
  }
  inherit_ring_figures(after);
  return groups;
}

// Optimizer: time = traffic / (memory bandwidth e_mem), theta = 1/e_mem. e_mem is the figure the
// optimizer runs at: the profile's own efficiency.memory_optimizer where it has one, else
// efficiency.memory (which then also prices the compute passes' memory-bound kernels).
FitGroup fit_optimizer(const HardwareProfile& profile, const std::vector<Sample>& samples) {
  MedianRows rows;
  NestedByRun nested;
  for (const Sample& s : samples) {
    if (s.span->category != "compute" || text_arg(*s.span, "pass") != "optimizer") continue;
    const TracedRun& run = *s.run;
    const CostModel cost(run.model, run.run, as_run(profile, run));
    const int stage = RankGrid(run.layout, run.ranks_per_node).coords(s.span->rank).pp;
    rows.add(s, "optimizer stage " + std::to_string(stage),
             {cost.optimizer_seconds_at_peak(stage_contents(run.model, run.layout)[stage], run.layout)}, own_seconds(nested.of(run), *s.span));
  }
  const bool own = profile.efficiency.memory_optimizer > 0;
  const double before = profile.efficiency.optimizer_memory();
  const std::vector<Unknown> unknowns = {{own ? "efficiency.memory_optimizer" : "efficiency.memory", 1.0 / before, 1.0, 1000.0}};
  return make_fit_group("optimizer", unknowns, solve(rows.system(), unknowns), {[](const std::vector<double>& t) { return 1.0 / t[0]; }},
                    {before});
}

// What no span explains (data, norms, loss reduction, logging): its mean per step.
FitGroup fit_step_overhead(const HardwareProfile& profile, const std::vector<TracedRun>& runs) {
  std::vector<Seconds> other;
  for (const TracedRun& run : runs) {
    for (const MeasuredStep& m : measured_steps(run)) {
      // At its slowest rank's share of a core, as the prediction stretches it back (at_speed).
      // solve() leaves out what no point measured (zero or less), so the mean does too.
      if (!m.warmup && !m.outlier && m.times.other > 0) other.push_back(m.times.other * m.cpu_share);
    }
  }
  // One kind of point: each weighed relative to their mean (see MedianRows), so the fit is the mean.
  const Seconds mean = other.empty() ? 0.0 : std::accumulate(other.begin(), other.end(), 0.0) / other.size();
  LinearSystem system;
  for (const Seconds y : other) system.add({1.0}, y, 0.0, mean);
  const std::vector<Unknown> unknowns = {{"overheads.per_step", profile.overheads.per_step, 0.0, 1e4}};
  return make_fit_group("per-step overhead", unknowns, solve(system, unknowns), {[](const std::vector<double>& t) { return t[0]; }},
                    {profile.overheads.per_step});
}

// Checkpoint writes and loads in the traces: the ranks of a node move their bytes at once, so the
// node moves ranks_per_node x bytes in a span's time; theta is seconds per byte of one node.
std::optional<FitGroup> fit_storage(const std::vector<TracedRun>& runs, const std::string& pass, const std::string& field,
                                    BytesPerSecond before) {
  LinearSystem system;
  for (const TracedRun& run : runs) {
    for (const TraceSpan& span : run.spans) {
      const double bytes = number_arg(span, "bytes");
      if (span.category != "checkpoint" || text_arg(span, "pass") != pass || bytes <= 0 || span.duration <= 0) continue;
      system.add({bytes * run.ranks_per_node}, span.duration);
    }
  }
  if (system.rows.empty()) return std::nullopt;
  const std::vector<Unknown> unknowns = {{field, 1 / before, 1e-12, 1e-3}};  // 1 TB/s .. 1 KB/s per node
  return make_fit_group("checkpoint " + pass + "s", unknowns, solve(system, unknowns),
                        {[](const std::vector<double>& t) { return 1 / t[0]; }}, {before});
}

// 1.96 x the rms relative error of the fitted profile's step time over the fitted steps (warm-up
// and outliers left out): how far a prediction strays on this machine, jitter included.
double step_time_interval(const HardwareProfile& fitted, const std::vector<TracedRun>& runs) {
  double sum = 0;
  int count = 0;
  for (const TracedRun& run : runs) {
    for (const MeasuredStep& m : measured_steps(run)) {
      if (m.warmup || m.outlier || m.times.step <= 0) continue;
      const double relative = (predicted_step(fitted, run, m).step - m.times.step) / m.times.step;
      sum += relative * relative;
      ++count;
    }
  }
  return count > 0 ? 1.96 * std::sqrt(sum / count) : 0;
}

void apply(HardwareProfile& p, const ParameterFit& fit) {
  if (!fit.determined) return;
  const std::string& f = fit.field;
  if (f == "efficiency.matmul") p.efficiency.matmul = fit.after;
  if (f == "efficiency.matmul_fp8") p.efficiency.matmul_fp8 = fit.after;
  if (f == "efficiency.attention") p.efficiency.attention = fit.after;
  if (f == "efficiency.matmul_half_rows") p.efficiency.matmul_half_rows = fit.after;
  if (f == "efficiency.memory") p.efficiency.memory = fit.after;
  if (f == "efficiency.memory_optimizer") p.efficiency.memory_optimizer = fit.after;
  if (f == "overheads.per_layer_pass") p.overheads.per_layer_pass = fit.after;
  if (f == "overheads.per_step") p.overheads.per_step = fit.after;
  if (f == "reliability.node_write_bandwidth") p.reliability.node_write_bytes_per_s = fit.after;
  if (f == "reliability.node_read_bandwidth") p.reliability.node_read_bytes_per_s = fit.after;
}

}  // namespace

Calibration calibrate(const HardwareProfile& profile, const std::vector<TracedRun>& runs) {
  Calibration c;
  c.before = profile;
  for (const TracedRun& run : runs) c.sources.push_back(run.source);
  c.dropped = outlier_steps(runs);
  c.after = profile;
  c.after.reference_probe_rate = reference_probe_rate(runs);
  const std::vector<Sample> samples = fit_spans(runs, c.after);
  FitGroup optimizer = fit_optimizer(profile, samples);
  // Which GEMMs are memory-bound depends on the efficiencies being fitted: refit with the fitted
  // ones a few rounds, so that the split follows the measured device rather than the starting guess.
  HardwareProfile shape = profile;
  apply(shape, optimizer.parameters.front());
  FitGroup compute;
  for (int round = 0; round < 4; ++round) {
    compute = fit_compute(profile, shape, samples);
    for (const ParameterFit& p : compute.parameters) apply(shape, p);
  }
  c.groups.push_back(std::move(compute));
  for (FitGroup& g : fit_collectives(profile, samples, c.after)) c.groups.push_back(std::move(g));
  c.groups.push_back(std::move(optimizer));
  c.groups.push_back(fit_step_overhead(profile, runs));
  const Reliability& r = profile.reliability;
  if (auto g = fit_storage(runs, "write", "reliability.node_write_bandwidth", r.node_write_bytes_per_s)) c.groups.push_back(*g);
  if (auto g = fit_storage(runs, "load", "reliability.node_read_bandwidth", r.node_read_bytes_per_s)) c.groups.push_back(*g);
  // Collective figures are already in c.after; the scalar fields go in here.
  for (const FitGroup& g : c.groups) {
    for (const ParameterFit& p : g.parameters) apply(c.after, p);
  }
  c.after.step_time_interval = step_time_interval(c.after, runs);
  return c;
}

}  // namespace flopwise
