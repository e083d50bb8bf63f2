#include "flopwise/pools_report.hpp"

#include <cstdio>

#include "flopwise/report.hpp"

namespace flopwise {
namespace {

std::string strategy_label(const MixedPlan& m) {
  switch (m.strategy) {
    case PoolStrategy::kHeteroDp: return "hetero DP";
    case PoolStrategy::kHeteroPipeline: return "hetero pipeline";
    case PoolStrategy::kLocalSgd: return "local SGD H=" + std::to_string(m.sync_every_steps);
  }
  return "";
}

std::string bandwidth_label(BytesPerSecond bytes_per_s) { return printf_string("%.1f Gb/s", bytes_per_s * 8 / 1e9); }

void print_row(std::ostream& out, const std::string& plan, const std::string& devices, int count, const StepCost& c,
               const std::string& note) {
  out << printf_string("%-24s %-52s %6d %9.2f %6.1f%% %8.1f %11s %s%s\n", plan.c_str(), devices.c_str(), count,
                     c.step_time_s, 100.0 * c.mfu, c.days, format_count(c.cost).c_str(), c.currency.c_str(), note.c_str());
}

}  // namespace

std::string pools_label(const MixedPlan& m) {
  std::string label;
  for (const PlanPool& p : m.pools) label += (label.empty() ? "" : " + ") + p.name + " " + std::to_string(p.devices());
  return label;
}

bool mixed_wins(const PoolSearchResult& r, Objective objective) {
  if (r.mixed.empty()) return false;
  return r.best_single < 0 || better(r.mixed.front().cost, r.single[r.best_single].cost, objective);
}

void print_pools(std::ostream& out, const PoolSet& set) {
  out << "pools:";
  for (const Pool& p : set.pools) out << " " << p.name << " (" << p.profile.name << ") up to " << p.max_devices << ";";
  out << " links:";
  for (const PoolLinkSpec& l : set.links) {
    out << " " << l.a << "-" << l.b << " " << bandwidth_label(l.bandwidth) << " " << format_seconds(l.latency) << ";";
  }
  out << " other pairs share a cluster network; prices in " << set.currency << "\n";
}

void print_pool_plans(std::ostream& out, const PoolSet& set, const PoolSearchResult& r, Objective objective) {
  out << printf_string("%-24s %-52s %6s %9s %7s %8s %11s\n", "plan", "devices", "total", "step (s)", "MFU", "days", "cost");
  for (size_t i = 0; i < r.single.size(); ++i) {
    const std::string label = "single pool " + set.pools[i].name;
    if (!r.single_found[i]) {
      out << printf_string("%-24s %s\n", label.c_str(), "- no layout meets the objective on this pool alone");
      continue;
    }
    const Candidate& c = r.single[i];
    const bool best = static_cast<int>(i) == r.best_single;
    print_row(out, label, layout_label(c.layout), c.layout.devices(), c.cost,
              !best ? "" : mixed_wins(r, objective) ? "  <- best single pool" : "  <- best");
  }
  for (size_t i = 0; i < r.mixed.size(); ++i) {
    const MixedPlan& m = r.mixed[i].plan;
    print_row(out, strategy_label(m), pools_label(m), m.devices(), r.mixed[i].cost,
              i == 0 && mixed_wins(r, objective) ? "  <- best" : "");
  }
  if (r.mixed.empty()) out << "no mixed plan meets the objective\n";
  out << "mixed plans costed: " << r.mixed_costed << "\n";
}

void print_mixed_detail(std::ostream& out, const MixedCandidate& candidate) {
  const MixedPlan& m = candidate.plan;
  out << strategy_label(m) << " over " << m.pools.size() << " pools:\n";
  for (const PlanPool& p : m.pools) {
    out << printf_string("  %-10s ranks %5d..%-5d %s", p.name.c_str(), p.first_rank, p.first_rank + p.devices() - 1,
                       layout_label(p.layout).c_str());
    if (m.strategy == PoolStrategy::kHeteroPipeline) {
      out << "  layers per stage";
      for (int n : p.stage_layers) out << " " << n;
      out << printf_string("  slowest stage %.3f s per micro-batch\n", p.step_time_s);
    } else {
      out << printf_string("  %d sequences per step, own step %.2f s\n", p.sequences, p.step_time_s);
    }
  }
  for (const PlanLink& l : m.links) {
    out << "  link " << l.a << "-" << l.b << ": " << bandwidth_label(l.bandwidth) << " "
        << (l.stated ? "(stated link, achievable)" : "(shared cluster network)") << ", " << format_seconds(l.latency) << "\n";
  }
  if (m.strategy == PoolStrategy::kLocalSgd) {
    out << printf_string("  parameter sync every %d steps: %s over each link, %.2f s each (%.3f s per step)\n",
                       m.sync_every_steps, format_bytes(m.cross_pool_bytes).c_str(), m.sync_s, m.cross_pool_s);
    out << "  " << m.optimisation_note << "\n";
  } else if (m.strategy == PoolStrategy::kHeteroDp) {
    out << printf_string("  cross-pool gradient all-reduce: %s over each link, %.3f s per step\n",
                       format_bytes(m.cross_pool_bytes).c_str(), m.cross_pool_s);
  } else {
    out << printf_string("  cross-pool activations: %s per micro-batch each way, %.3f s per step beyond the pools' own links\n",
                       format_bytes(m.cross_pool_bytes).c_str(), m.cross_pool_s);
  }
  out << step_time_line(candidate.cost) << "\n" << memory_line(candidate.cost) << "\n";
}

nlohmann::json pool_plans_json(const PoolSet& set, const PoolSearchResult& r, Objective objective) {
  nlohmann::json j;
  j["single"] = nlohmann::json::array();
  for (size_t i = 0; i < r.single.size(); ++i) {
    if (!r.single_found[i]) {
      j["single"].push_back({{"pool", set.pools[i].name}, {"found", false}});
      continue;
    }
    nlohmann::json s = summary_json(set.pools[i].profile.name, r.single[i].layout, r.single[i].cost);
    s["pool"] = set.pools[i].name;
    s["found"] = true;
    j["single"].push_back(s);
  }
  j["mixed"] = nlohmann::json::array();
  for (const MixedCandidate& c : r.mixed) {
    nlohmann::json s = step_cost_to_json(c.cost);
    s["strategy"] = to_string(c.plan.strategy);
    s["devices"] = c.plan.devices();
    for (const PlanPool& p : c.plan.pools) s["pools"].push_back({{"name", p.name}, {"devices", p.devices()}, {"sequences", p.sequences}, {"layout", layout_to_json(p.layout)}, {"stage_layers", p.stage_layers}});
    s["cross_pool_s"] = c.plan.cross_pool_s;
    if (c.plan.strategy == PoolStrategy::kLocalSgd) s["sync_every_steps"] = c.plan.sync_every_steps;
    j["mixed"].push_back(s);
  }
  j["best"] = mixed_wins(r, objective) ? "mixed" : r.best_single >= 0 ? "single" : "none";
  j["mixed_costed"] = r.mixed_costed;
  return j;
}

}  // namespace flopwise
