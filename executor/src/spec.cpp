#include "flopwise/executor/spec.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>

namespace flopwise::executor {

ModelConfig scale_model(const ModelConfig& model, double fraction, int vocab, int pp) {
  if (!(fraction > 0 && fraction <= 1)) throw input_error("--scale", "", "must be in (0, 1]");
  auto scaled = [fraction](int value, int minimum) {
    return std::max(minimum, static_cast<int>(std::lround(value * fraction)));
  };
  ModelConfig s = model;
  const int group = model.heads / model.kv_heads;  // query heads per KV head
  // At least two KV heads (when the model has them), so that TP = 2 can split them.
  s.kv_heads = scaled(model.kv_heads, std::min(model.kv_heads, 2));
  s.heads = s.kv_heads * group;
  s.head_dim = scaled(model.head_dim, 8);
  s.hidden = scaled(model.hidden, 16);
  // FFN widths stay multiples of 8, so TP up to 8 splits them evenly.
  auto ffn = [&](int value) { return value > 0 ? (scaled(value, 8) + 7) / 8 * 8 : 0; };
  s.expert_ffn = ffn(model.expert_ffn);
  s.shared_expert_ffn = ffn(model.shared_expert_ffn);
  s.dense_ffn = ffn(model.dense_ffn);
  const int layers = scaled(model.layers, pp);
  s.layers = (layers + pp - 1) / pp * pp;
  s.first_dense_layers = std::min(s.layers, scaled(model.first_dense_layers, 0));
  s.vocab = vocab;
  return s;
}

namespace {

std::string degrees(const Layout& l) {
  return "tp" + std::to_string(l.tp) + " pp" + std::to_string(l.pp) + " ep" + std::to_string(l.ep) + " dp" +
         std::to_string(l.dp) + " (" + std::to_string(l.devices()) + " ranks)";
}

std::string split_or_even(const Layout& l) { return l.even() ? "even" : split_label(l); }

}  // namespace

std::string fit_layout(Layout& l, int& global_batch, const ModelConfig& model, int max_ranks) {
  const Layout before = l;
  const int batch_before = global_batch;
  std::string notes;
  if (l.vpp > 1) {
    l.vpp = 1;
    notes += "interleaving (vpp) runs as plain 1F1B; ";
  }
  if (l.etp != 0) {
    notes += "experts run at the attention's tp" + std::to_string(l.tp) + " (etp" + std::to_string(l.etp) +
             " folding is planned, not executed by flopwise-train); ";
    l.etp = 0;
  }
  // The CP ranks become replicas, so a launch of the plan's world size still fits it.
  if (l.cp > 1) {
    notes += "each sequence runs whole on one rank: cp" + std::to_string(l.cp) +
             " runs as data parallelism (context parallelism is planned, not executed by flopwise-train); ";
    l.dp *= l.cp;
    l.cp = 1;
  }
  while (l.devices() > max_ranks) {
    if (l.dp > l.ep && l.dp % 2 == 0) {
      l.dp /= 2;
    } else if (l.pp > 1) {
      l.pp = l.pp % 2 == 0 ? l.pp / 2 : 1;
    } else if (l.tp > 1) {
      l.tp /= 2;
    } else if (l.ep > 1) {
      l.ep /= 2;
      l.dp = l.ep;
    } else {
      l.dp = 1;
    }
  }
  while (model.heads % l.tp != 0 || model.kv_heads % l.tp != 0) l.tp /= 2;
  if (model.is_moe()) {
    while (model.routed_experts % l.ep != 0 || l.dp % l.ep != 0) l.ep /= 2;
  } else {
    l.ep = 1;
  }
  // A pipeline that changed (or a scaled model) gets its ends rebalanced; an even split stays even.
  if (!l.even() && (l.pp != before.pp || l.vpp != before.vpp)) balance_stages(model.layers, l);
  if (!stages_fit(model.layers, l)) balance_stages(model.layers, l);
  Layout with_split_before = l;
  with_split_before.copy_split(before);
  if (!(with_split_before == l)) {
    notes += "pipeline split " + split_or_even(before) + " -> " + split_or_even(l) + " for " +
             std::to_string(model.layers) + " layers on pp" + std::to_string(l.pp) + "; ";
  }
  // Keep the number of micro-batches per replica, so the pipeline schedule keeps its shape.
  const int micro_batches = std::max(1, batch_before / (before.dp * before.micro_batch));
  global_batch = micro_batches * l.dp * l.micro_batch;
  if (l.tp != before.tp || l.pp != before.pp || l.ep != before.ep || l.dp != before.dp) {
    notes += "layout " + degrees(before) + " scaled to " + degrees(l) + " to fit " + std::to_string(max_ranks) +
             " ranks; ";
  }
  if (global_batch != batch_before) {
    notes += "global batch " + std::to_string(batch_before) + " -> " + std::to_string(global_batch) +
             " sequences (" + std::to_string(micro_batches) + " micro-batches per replica kept); ";
  }
  return notes.empty() ? notes : notes.substr(0, notes.size() - 2);
}

void add_note(std::string& notes, const std::string& note) {
  if (note.empty()) return;
  notes += (notes.empty() ? "" : "; ") + note;
}

std::string features_not_run(const ModelConfig& m, const TrainingRun& run) {
  std::string notes;
  if (m.mtp_layers > 0) {
    add_note(notes, std::to_string(m.mtp_layers) + " multi-token-prediction depth(s) are not trained (next-token loss only)");
  }
  if (m.windowed_layers > 0 || m.chunked_layers > 0) {
    add_note(notes, "local attention (windows of " + std::to_string(m.attention_window) + " in " +
                        std::to_string(m.windowed_layers) + " layers, chunks of " + std::to_string(m.attention_chunk) +
                        " in " + std::to_string(m.chunked_layers) + ") runs as full causal attention");
  }
  if (m.learned_positions) add_note(notes, "learned positions run as rotary embeddings (RoPE)");
  if (run.grad_reduce_in_bf16) add_note(notes, "gradients are reduced in fp32, as the fp32 training here keeps them");
  if (run.ep_dispatcher == EpDispatcher::kFlex && m.is_moe()) {
    add_note(notes, "the flex dispatcher runs as a plain all-to-all (a copy per expert)");
  }
  if (run.hidden_dropout > 0 || run.attention_dropout > 0) add_note(notes, "dropout is not applied");
  if (m.is_moe() && (run.router_fusion || !(run.router_balancing == RouterBalancing{}))) {
    add_note(notes, "the router runs in plain torch ops with the load-balance loss and z-loss (aux_loss,z_loss), not " +
                        std::string(run.router_fusion ? "fused " : "") + to_string(run.router_balancing));
  }
  if (run.moe_capacity_factor > 0 && m.is_moe()) {
    char factor[32];
    std::snprintf(factor, sizeof factor, "%g", run.moe_capacity_factor);
    add_note(notes, std::string("the capacity factor ") + factor + " is not applied: dispatch is dropless");
  }
  return notes;
}

GroupMembers group_members(const Layout& layout, int rank, const MixedRun* mixed) {
  // Node size does not change membership; the whole world as one node keeps the grid valid.
  const RankGrid grid(layout, layout.devices());
  GroupMembers g{grid.group(GroupKind::kTp, rank), grid.group(GroupKind::kDp, rank), grid.group(GroupKind::kEp, rank),
                 grid.group(GroupKind::kExpertDp, rank), {rank}, {}};
  g.replica.resize(layout.devices());
  std::iota(g.replica.begin(), g.replica.end(), 0);
  if (!mixed || !mixed->data_parallel()) return g;
  const RankCoords own = grid.coords(rank);
  const int pool = mixed->pool_of(own);
  auto same_pool = [&](std::vector<int>& members) {
    std::erase_if(members, [&](int r) { return mixed->pool_of(grid.coords(r)) != pool; });
  };
  same_pool(g.dp);
  same_pool(g.expert_dp);
  g.cross_pool.clear();
  for (int p = 0; p < static_cast<int>(mixed->pools.size()); ++p) {
    RankCoords c = own;
    c.dp = p * mixed->pool_dp + own.dp % mixed->pool_dp;
    g.cross_pool.push_back(grid.rank_of(c));
  }
  if (mixed->strategy == PoolStrategy::kLocalSgd) same_pool(g.replica);
  return g;
}

}  // namespace flopwise::executor
