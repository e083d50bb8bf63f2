#include "flopwise/report.hpp"

#include <cmath>
#include <cstdio>

namespace flopwise {
namespace {

// Durations of a run's life, from seconds to days.
std::string duration(Seconds s) {
  if (s < 120) return printf_string("%.0f s", s);
  if (s < 2 * kSecondsPerHour) return printf_string("%.1f min", s / 60);
  if (s < 2 * kSecondsPerDay) return printf_string("%.1f h", s / kSecondsPerHour);
  return printf_string("%.1f days", s / kSecondsPerDay);
}

}  // namespace

std::string layout_label(const Layout& l) {
  std::string recompute = l.recompute == Recompute::kFull ? "full" : l.recompute == Recompute::kSelective ? "sel" : "none";
  // Selective recompute's modules only where they differ from Megatron's default (core_attn).
  if (l.recompute == Recompute::kSelective && !l.recompute_modules.is_default()) {
    recompute += "(" + abbreviated(l.recompute_modules) + ")";
  }
  const std::string ends = l.even() ? "" : " " + split_label(l);
  // The expert TP only where it differs from the attention's (MoE parallel folding).
  const std::string ep = l.etp > 0 ? printf_string("ep%d etp%d", l.ep, l.etp) : printf_string("ep%d", l.ep);
  // Context parallelism only where there is some, so that layouts without it print as before.
  const std::string tp = l.cp > 1 ? printf_string("tp%d cp%d", l.tp, l.cp) : printf_string("tp%d", l.tp);
  return printf_string("%s pp%d vpp%d %s dp%d mb%d %s%s%s%s", tp.c_str(), l.pp, l.vpp, ep.c_str(), l.dp, l.micro_batch,
                       recompute.c_str(), l.optimizer_sharding ? " zero1" : "", l.tp > 1 && !l.sequence_parallel ? " nosp" : "",
                       ends.c_str());
}

void print_plan_table(std::ostream& out, const std::vector<TableRow>& rows) {
  out << printf_string("%-12s %7s  %-*s %9s %11s %6s %8s %8s %12s %11s %14s\n", "hardware", "devices", kLayoutColumn,
                       "layout", "step (s)", "tokens/s", "MFU", "goodput", "days", "device-h", "ideal", "cost");
  for (const TableRow& row : rows) {
    if (!row.candidate) {
      out << printf_string("%-12s %7s  %s\n", row.hardware.c_str(), "-", row.note.c_str());
      continue;
    }
    const Layout& l = row.candidate->layout;
    const StepCost& c = row.candidate->cost;
    out << printf_string("%-12s %7d  %-*s %9.2f %11.0f %5.1f%% %7.1f%% %8.1f %12.0f %11s %11s %s", row.hardware.c_str(),
                         l.devices(), kLayoutColumn, layout_label(l).c_str(), c.step_time_s, c.tokens_per_s, 100.0 * c.mfu,
                         100.0 * c.goodput.fraction, c.days, c.device_hours, format_count(c.goodput.ideal_cost).c_str(),
                         format_count(c.cost).c_str(), c.currency.c_str());
    out << (row.note.empty() ? "" : "  " + row.note) << "\n";
  }
  out << "days, device-h and cost expected at the goodput (failures, restarts, checkpoint saves and loads); "
         "ideal: the failure-free cost\n";
}

void print_breakdown(std::ostream& out, const Candidate& candidate) {
  out << step_time_line(candidate.cost) << "\n" << memory_line(candidate.cost) << "\n" << goodput_line(candidate.cost.goodput)
      << "\n";
}

std::string goodput_line(const Goodput& g) {
  const std::string mtbf = std::isinf(g.mtbf_s) ? "no failures" : "a failure every " + duration(g.mtbf_s);
  return printf_string("goodput %.1f%%: %s; checkpoint %s every %d steps (%s), blocking %s, load %s; %s lost per failure",
                       100.0 * g.fraction, mtbf.c_str(), format_bytes(g.checkpoint.bytes).c_str(), g.checkpoint_every_steps,
                       duration(g.interval_s).c_str(), duration(g.checkpoint.blocking_s).c_str(),
                       duration(g.checkpoint.load_s).c_str(), duration(g.lost_per_failure_s).c_str());
}

void print_rejections(std::ostream& out, const SearchResult& r) {
  out << "layouts considered " << r.considered << ", costed " << r.evaluated << "; removed by:";
  for (size_t i = 0; i < r.rejected.size(); ++i) {
    if (r.rejected[i] > 0) out << " " << to_string(static_cast<Constraint>(i)) << " " << r.rejected[i];
  }
  out << "\n";
}

void print_model(std::ostream& out, const ModelConfig& m, int seq_len) {
  const ParamCounts p = param_counts(m);
  out << m.name << " (" << m.family << "): " << m.layers << " layers, hidden " << m.hidden << ", heads " << m.heads
      << "/" << m.kv_heads << " x " << m.head_dim;
  if (m.is_moe()) {
    out << ", " << m.routed_experts << " experts top-" << m.top_k << " (ffn " << m.expert_ffn << ")";
    if (m.shared_experts > 0) out << " + " << m.shared_experts << " shared (ffn " << m.shared_expert_ffn << ")";
  }
  if (m.dense_layers() > 0) out << ", " << m.dense_layers() << " dense layers (ffn " << m.dense_ffn << ")";
  out << ", vocab " << m.vocab << "\n";
  if (!m.omitted.empty()) out << "language model only: " << m.omitted << " left out\n";
  out << "parameters: total " << format_count(p.total) << ", activated " << format_count(p.active) << " ("
      << format_count(p.active_without_embeddings()) << " without embedding and head; experts " << format_count(p.expert) << ", embedding " << format_count(p.embedding) << ", head "
      << format_count(p.lm_head) << ")";
  if (p.mtp > 0) out << " + " << m.mtp_layers << " multi-token-prediction depth(s) " << format_count(p.mtp);
  out << "\n";
  out << "training FLOPs per token at seq " << seq_len << ": "
      << printf_string("%.3e", training_flops_per_token(m, seq_len)) << " (6 x activated = "
      << printf_string("%.3e", 6.0 * p.active) << ")\n";
}

}  // namespace flopwise
