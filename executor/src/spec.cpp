#include "flopwise/executor/spec.hpp"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

namespace flopwise::executor {
namespace {

using nlohmann::json;

const json& field(const json& j, const std::string& key, const std::string& where, const std::string& source) {
  if (!j.is_object() || !j.contains(key)) throw SpecError(source + ": " + where + key + ": missing field");
  return j[key];
}

int integer(const json& j, const std::string& key, const std::string& where, const std::string& source) {
  const json& v = field(j, key, where, source);
  if (!v.is_number_integer()) throw SpecError(source + ": " + where + key + ": expected an integer");
  return v.get<int>();
}

bool boolean(const json& j, const std::string& key, const std::string& where, const std::string& source) {
  const json& v = field(j, key, where, source);
  if (!v.is_boolean()) throw SpecError(source + ": " + where + key + ": expected true or false");
  return v.get<bool>();
}

}  // namespace

double ModelShape::training_flops_per_token(int seq_len) const {
  const double h = hidden;
  const double attention = h * (heads + 2.0 * kv_heads) * head_dim + heads * head_dim * h;
  double per_token = 0;
  for (int layer = 0; layer < layers; ++layer) {
    const double mlp = is_dense_layer(layer)
        ? 3.0 * h * dense_ffn
        : 3.0 * h * expert_ffn * top_k + 3.0 * h * shared_expert_ffn * shared_experts + h * experts;
    per_token += 2.0 * (attention + mlp) + 2.0 * heads * 2.0 * head_dim * (seq_len + 1) / 2.0;
  }
  per_token += 2.0 * h * vocab;
  return 3.0 * per_token;
}

RunSpec read_plan(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw SpecError(path + ": cannot open plan");
  json j;
  try {
    in >> j;
  } catch (const json::exception& e) {
    throw SpecError(path + ": malformed JSON: " + e.what());
  }
  const std::string schema = field(j, "schema", "", path).is_string() ? j["schema"].get<std::string>() : "";
  if (schema != "flopwise.plan/1") throw SpecError(path + ": schema: expected flopwise.plan/1");
  RunSpec spec;
  spec.source = path;
  const json& m = field(j, "model", "", path);
  const std::string w = "model.";
  ModelShape& s = spec.model;
  s.name = field(m, "name", w, path).get<std::string>();
  s.layers = integer(m, "layers", w, path);
  s.hidden = integer(m, "hidden", w, path);
  s.heads = integer(m, "heads", w, path);
  s.kv_heads = integer(m, "kv_heads", w, path);
  s.head_dim = integer(m, "head_dim", w, path);
  s.vocab = integer(m, "vocab", w, path);
  s.experts = integer(m, "routed_experts", w, path);
  s.top_k = integer(m, "top_k", w, path);
  s.expert_ffn = integer(m, "expert_ffn", w, path);
  s.shared_experts = integer(m, "shared_experts", w, path);
  s.shared_expert_ffn = integer(m, "shared_expert_ffn", w, path);
  s.dense_ffn = integer(m, "dense_ffn", w, path);
  s.first_dense_layers = integer(m, "first_dense_layers", w, path);
  s.tied_embeddings = boolean(m, "tied_embeddings", w, path);
  if (integer(m, "kv_lora_rank", w, path) > 0) {
    throw SpecError(path + ": model.kv_lora_rank: multi-head latent attention is not supported by the executor");
  }
  const json& l = field(j, "layout", "", path);
  ParallelLayout& p = spec.layout;
  p.tp = integer(l, "tp", "layout.", path);
  p.pp = integer(l, "pp", "layout.", path);
  p.vpp = integer(l, "vpp", "layout.", path);
  p.ep = integer(l, "ep", "layout.", path);
  p.dp = integer(l, "dp", "layout.", path);
  p.micro_batch = integer(l, "micro_batch", "layout.", path);
  p.optimizer_sharding = boolean(l, "optimizer_sharding", "layout.", path);
  const json& rank_map = field(j, "rank_map", "", path);
  if (field(rank_map, "order", "rank_map.", path) != "tp-ep-dp-pp") {
    throw SpecError(path + ": rank_map.order: the executor follows tp-ep-dp-pp only");
  }
  spec.global_batch = integer(j, "global_batch", "", path);
  spec.seq_len = integer(j, "seq_len", "", path);
  if (p.tp < 1 || p.pp < 1 || p.vpp < 1 || p.ep < 1 || p.dp < 1 || p.micro_batch < 1 || p.dp % p.ep != 0) {
    throw SpecError(path + ": layout: degrees must be >= 1 and ep must divide dp");
  }
  return spec;
}

ModelShape scale_model(const ModelShape& model, double fraction, int vocab, int pp) {
  if (!(fraction > 0 && fraction <= 1)) throw SpecError("--scale: must be in (0, 1]");
  auto scaled = [fraction](int value, int minimum) {
    return std::max(minimum, static_cast<int>(std::lround(value * fraction)));
  };
  ModelShape s = model;
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

std::string fit_layout(ParallelLayout& l, int& global_batch, const ModelShape& model, int max_ranks) {
  const ParallelLayout before = l;
  const int batch_before = global_batch;
  std::string notes;
  if (l.vpp > 1) {
    l.vpp = 1;
    notes += "interleaving (vpp) runs as plain 1F1B; ";
  }

  while (l.world() > max_ranks) {
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
    while (model.experts % l.ep != 0 || l.dp % l.ep != 0) l.ep /= 2;
  } else {
    l.ep = 1;
  }
  // Keep the number of micro-batches per replica, so the pipeline schedule keeps its shape.
  const int micro_batches = std::max(1, batch_before / (before.dp * before.micro_batch));
  global_batch = micro_batches * l.dp * l.micro_batch;
  if (l.tp != before.tp || l.pp != before.pp || l.ep != before.ep || l.dp != before.dp) {
    notes += "layout tp" + std::to_string(before.tp) + " pp" + std::to_string(before.pp) + " ep" +
             std::to_string(before.ep) + " dp" + std::to_string(before.dp) + " (" + std::to_string(before.world()) +
             " ranks) scaled to tp" + std::to_string(l.tp) + " pp" + std::to_string(l.pp) + " ep" +
             std::to_string(l.ep) + " dp" + std::to_string(l.dp) + " (" + std::to_string(l.world()) +
             " ranks) to fit " + std::to_string(max_ranks) + " ranks; ";
  }
  if (global_batch != batch_before) {
    notes += "global batch " + std::to_string(batch_before) + " -> " + std::to_string(global_batch) +
             " sequences (" + std::to_string(micro_batches) + " micro-batches per replica kept); ";
  }
  return notes.empty() ? notes : notes.substr(0, notes.size() - 2);
}

RankPosition position_of(const ParallelLayout& l, int rank) {
  RankPosition p;
  p.tp = rank % l.tp;
  p.dp = (rank / l.tp) % l.dp;
  p.pp = rank / (l.tp * l.dp);
  p.ep = p.dp % l.ep;
  p.expert_dp = p.dp / l.ep;
  return p;
}

int rank_at(const ParallelLayout& l, int tp, int dp, int pp) { return tp + l.tp * (dp + l.dp * pp); }

std::vector<int> dp_group(const ParallelLayout& l, int rank) {
  const RankPosition p = position_of(l, rank);
  std::vector<int> members;
  for (int d = 0; d < l.dp; ++d) members.push_back(rank_at(l, p.tp, d, p.pp));
  return members;
}

std::vector<int> ep_group(const ParallelLayout& l, int rank) {
  const RankPosition p = position_of(l, rank);
  std::vector<int> members;
  for (int e = 0; e < l.ep; ++e) members.push_back(rank_at(l, p.tp, p.expert_dp * l.ep + e, p.pp));
  return members;
}

std::vector<int> expert_dp_group(const ParallelLayout& l, int rank) {
  const RankPosition p = position_of(l, rank);
  std::vector<int> members;
  for (int x = 0; x < l.dp / l.ep; ++x) members.push_back(rank_at(l, p.tp, x * l.ep + p.ep, p.pp));
  return members;
}

std::vector<int> tp_group(const ParallelLayout& l, int rank) {
  const RankPosition p = position_of(l, rank);
  std::vector<int> members;
  for (int t = 0; t < l.tp; ++t) members.push_back(rank_at(l, t, p.dp, p.pp));
  return members;
}

}  // namespace flopwise::executor
