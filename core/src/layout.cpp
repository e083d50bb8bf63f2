#include "flopwise/layout.hpp"

#include <algorithm>

#include "flopwise/error.hpp"
#include "flopwise/units.hpp"

namespace flopwise {

std::string to_string(Recompute recompute) {
  switch (recompute) {
    case Recompute::kNone: return "none";
    case Recompute::kSelective: return "selective";
    case Recompute::kFull: return "full";
  }
  return "none";
}

Recompute parse_recompute(const std::string& text, const std::string& source, const std::string& field) {
  if (text == "none") return Recompute::kNone;
  if (text == "selective") return Recompute::kSelective;
  if (text == "full") return Recompute::kFull;
  throw input_error(source, field, "unknown recompute '" + text + "' (expected none, selective or full)");
}

namespace {
// Megatron's name of each module, in Megatron's order, and the short one layout labels print.
struct ModuleName {
  RecomputeModule module;
  const char* name;
  const char* abbreviation;
};
constexpr ModuleName kModuleNames[] = {{RecomputeModule::kCoreAttn, "core_attn", "attn"},
                                       {RecomputeModule::kMoeAct, "moe_act", "act"},
                                       {RecomputeModule::kLayernorm, "layernorm", "ln"},
                                       {RecomputeModule::kMlaUpProj, "mla_up_proj", "mla"},
                                       {RecomputeModule::kMlp, "mlp", "mlp"}};

std::string joined(RecomputeModules modules, const char* ModuleName::* which) {
  std::string text;
  for (const ModuleName& m : kModuleNames) {
    if (modules.has(m.module)) text += (text.empty() ? "" : ",") + std::string(m.*which);
  }
  return text;
}
}  // namespace

std::vector<RecomputeModule> all_recompute_modules() {
  std::vector<RecomputeModule> modules;
  for (const ModuleName& m : kModuleNames) modules.push_back(m.module);
  return modules;
}

std::vector<std::string> module_names(RecomputeModules modules) { return split_list(to_string(modules)); }

std::string to_string(RecomputeModules modules) { return joined(modules, &ModuleName::name); }

std::string abbreviated(RecomputeModules modules) { return joined(modules, &ModuleName::abbreviation); }

RecomputeModules parse_recompute_modules(const std::vector<std::string>& names, const std::string& source,
                                         const std::string& field) {
  RecomputeModules modules{0};
  for (const std::string& name : names) {
    const auto* found = std::find_if(std::begin(kModuleNames), std::end(kModuleNames),
                                     [&](const ModuleName& entry) { return name == entry.name; });
    if (found == std::end(kModuleNames)) {
      throw input_error(source, field,
                        "unknown recompute module '" + name + "' (expected core_attn, moe_act, layernorm, mla_up_proj or mlp)");
    }
    modules.bits |= static_cast<unsigned>(found->module);
  }
  if (modules.bits == 0) throw input_error(source, field, "names no module");
  return modules;
}

RecomputeModules parse_recompute_modules(const std::string& list, const std::string& source, const std::string& field) {
  return parse_recompute_modules(split_list(list), source, field);
}

std::string to_string(Constraint constraint) {
  switch (constraint) {
    case Constraint::kTpHeads: return "tp-divides-heads";
    case Constraint::kTpNode: return "tp-within-node";
    case Constraint::kCpSequence: return "cp-divides-sequence";
    case Constraint::kPpLayers: return "pp-x-vpp-divides-layers";
    case Constraint::kVirtualStages: return "virtual-stages";
    case Constraint::kEpExperts: return "ep-divides-experts";
    case Constraint::kExpertGrid: return "expert-grid";
    case Constraint::kRecomputeModules: return "recompute-modules";
    case Constraint::kShardedMoments: return "bf16-moments-need-sharding";
    case Constraint::kGlobalBatch: return "global-batch";
    case Constraint::kDevices: return "device-count";
    case Constraint::kMemory: return "memory";
    case Constraint::kLessRecomputeFits: return "less-recompute-fits";
    case Constraint::kObjective: return "deadline-or-budget";
    case Constraint::kCount: break;
  }
  return "unknown";
}

std::string to_string(GroupKind kind) {
  switch (kind) {
    case GroupKind::kTp: return "tp";
    case GroupKind::kEp: return "ep";
    case GroupKind::kDp: return "dp";
    case GroupKind::kExpertDp: return "expert_dp";
    case GroupKind::kPp: return "pp";
    case GroupKind::kExpertTp: return "expert_tp";
    case GroupKind::kCp: return "cp";
    case GroupKind::kDpCp: return "dp_cp";
  }
  return "tp";
}

namespace {

std::string str(int value) { return std::to_string(value); }

int kv_groups(const ModelConfig& m) { return m.is_mla() ? m.heads : m.kv_heads; }  // MLA shares no KV heads
int experts(const ModelConfig& m) { return m.is_moe() ? m.routed_experts : 1; }
int max_devices(const HardwareProfile& p, const DeviceRange& r) { return std::min(r.max, p.cluster.max_devices); }

// Megatron-Core's expert rank generator: etp x ep x expert_dp = tp x cp x dp on every stage.
bool expert_grid_fits(const Layout& l, int node_devices) {
  const long long experts = static_cast<long long>(l.expert_tp()) * l.ep;
  return node_devices % l.expert_tp() == 0 && (static_cast<long long>(l.tp) * l.cp * l.dp) % experts == 0;
}

}  // namespace

bool ep_overlap_applies(const ModelConfig& m, const TrainingRun& run, const Layout& l) {
  return run.overlap.ep_a2a && m.is_moe() && l.ep > 1 && (l.pp == 1 || l.vpp > 1) && l.recompute != Recompute::kFull;
}

void Layout::copy_split(const Layout& from) {
  first_stage_layers = from.first_stage_layers;
  last_stage_layers = from.last_stage_layers;
  embedding_in_split = from.embedding_in_split;
  loss_in_split = from.loss_in_split;
}

int chunk_slots(int layers, const Layout& l) {
  return (layers + l.embedding_in_split + l.loss_in_split) / (l.pp * l.vpp);
}

std::string split_label(const Layout& l) {
  std::string s = l.first_stage_layers || l.last_stage_layers
      ? "ends" + std::to_string(l.first_stage_layers) + "/" + std::to_string(l.last_stage_layers) : "";
  if (l.embedding_in_split) s += s.empty() ? "+emb" : " +emb";
  if (l.loss_in_split) s += s.empty() ? "+loss" : " +loss";
  return s;
}

namespace {

bool ends_in_split(const Layout& l) { return l.embedding_in_split || l.loss_in_split; }

}  // namespace

int rank_layer_count(int layers, const Layout& l, int rank) {
  if (ends_in_split(l)) {
    return l.vpp * chunk_slots(layers, l) - (rank == 0 ? l.embedding_in_split : 0) -
           (rank == l.pp - 1 ? l.loss_in_split : 0);
  }
  if (rank == 0 && l.first_stage_layers > 0) return l.first_stage_layers;
  if (rank == l.pp - 1 && l.last_stage_layers > 0) return l.last_stage_layers;
  const int ends = (l.first_stage_layers > 0) + (l.last_stage_layers > 0);
  return (layers - l.first_stage_layers - l.last_stage_layers) / (l.pp - ends);
}

namespace {

// Layers of rank `rank`'s virtual stage `v`: its layers over its vpp chunks where they do not
// divide, the extra ones away from the embedding and the loss: the first rank's later chunks (7
// over 4: 1, 2, 2, 2, as DeepSeek-V3's Megatron-Bridge layout "Et|(tt|)*30mL" has it), every
// other rank's earlier ones (6 over 4: 2, 2, 1, 1).
int rank_chunk_count(int layers, const Layout& l, int rank, int v) {
  const int n = rank_layer_count(layers, l, rank), extra = n % l.vpp;
  const bool gets_extra = rank == 0 ? v >= l.vpp - extra : v < extra;
  return n / l.vpp + (gets_extra ? 1 : 0);
}

// Layers of all ranks' virtual stage `v` together (one round of chunks).
int round_count(int layers, const Layout& l, int v) {
  const int middle = l.pp > 2 ? (l.pp - 2) * rank_chunk_count(layers, l, 1, v) : 0;
  return rank_chunk_count(layers, l, 0, v) + (l.pp > 1 ? rank_chunk_count(layers, l, l.pp - 1, v) : 0) + middle;
}

}  // namespace

LayerRange chunk_layers(int layers, const Layout& l, int chunk) {
  if (ends_in_split(l)) {
    const int slots = chunk_slots(layers, l), embedding = l.embedding_in_split;
    const bool last = chunk == l.pp * l.vpp - 1;
    return {chunk == 0 ? 0 : chunk * slots - embedding, slots - (chunk == 0 ? embedding : 0) - (last ? l.loss_in_split : 0)};
  }
  const int v = chunk / l.pp, r = chunk % l.pp;
  // The earlier rounds whole, then this round's ranks before r: rank 0 and r - 1 middle ranks.
  int first = 0;
  for (int u = 0; u < v; ++u) first += round_count(layers, l, u);
  if (r > 0) first += rank_chunk_count(layers, l, 0, v) + (r - 1) * rank_chunk_count(layers, l, 1, v);
  return {first, rank_chunk_count(layers, l, r, v)};
}

bool stages_fit(int layers, const Layout& l) {
  const int f = l.first_stage_layers, last = l.last_stage_layers;
  if (ends_in_split(l)) {
    // Every chunk takes an equal share of the slots; the first and the last give one up to the
    // embedding and the loss, and may keep no layer (Megatron-Core's get_num_layers_to_build asserts
    // only that the count is not negative): Llama 3 405B's 126 layers ran on 16 x 8 chunks of one
    // slot, the first chunk holding the embedding alone and the last the loss alone (Llama 3
    // paper, arXiv 2407.21783, section 3.3.2).
    const int chunks = l.pp * l.vpp, slots = layers + l.embedding_in_split + l.loss_in_split;
    return f == 0 && last == 0 && slots % chunks == 0 && slots >= chunks;
  }
  if (f == 0 && last == 0) return layers % (l.pp * l.vpp) == 0;
  // An end rank's layers need not divide over its chunks (Megatron-Core's
  // --pipeline-model-parallel-layout places them one by one), but every chunk keeps a layer.
  if (f < 0 || last < 0 || l.pp < 2 || (f > 0 && f < l.vpp) || (last > 0 && last < l.vpp)) return false;
  const int middle_ranks = l.pp - (f > 0) - (last > 0);
  const int rest = layers - f - last;
  if (middle_ranks == 0) return rest == 0;
  return rest > 0 && rest % middle_ranks == 0 && (rest / middle_ranks) % l.vpp == 0;
}

namespace {

bool balance_stage_ends(int layers, Layout& l) {
  if (l.pp < 3) return false;
  for (int middle = layers / (l.pp - 2) / l.vpp * l.vpp; middle >= l.vpp; middle -= l.vpp) {
    const int ends = layers - (l.pp - 2) * middle;
    if (ends > 2 * middle) break;  // the ends would hold more than the middle: no lighter split
    l.first_stage_layers = ends / 2 / l.vpp * l.vpp;
    l.last_stage_layers = ends - l.first_stage_layers;
    if (l.first_stage_layers >= l.vpp && l.last_stage_layers <= middle && stages_fit(layers, l)) return true;
  }
  l.even_split();
  return false;
}

// Both ends first, then the loss alone (the LM head is the heavier end), then the embedding.
bool count_ends_as_layers(int layers, Layout& l) {
  for (const auto& [embedding, loss] : {std::pair{true, true}, {false, true}, {true, false}}) {
    l.embedding_in_split = embedding;
    l.loss_in_split = loss;
    if (stages_fit(layers, l)) return true;
  }
  l.even_split();
  return false;
}

}  // namespace

bool balance_stages(int layers, Layout& l) {
  l.even_split();
  return stages_fit(layers, l) || balance_stage_ends(layers, l) || count_ends_as_layers(layers, l);
}

std::optional<Constraint> violated_degrees(const ModelConfig& m, const HardwareProfile& profile,
                                           const DeviceRange& range, const Layout& l) {
  if (l.tp < 1 || l.cp < 1 || l.pp < 1 || l.vpp < 1 || l.ep < 1 || l.dp < 1 || l.micro_batch < 1 || l.etp < 0) {
    return Constraint::kDevices;
  }
  if (m.heads % l.tp != 0 || kv_groups(m) % l.tp != 0) return Constraint::kTpHeads;
  const int node = profile.node.devices;
  if (l.tp > node || node % l.tp != 0) return Constraint::kTpNode;
  if (!stages_fit(m.layers, l)) return Constraint::kPpLayers;
  if (l.vpp > 1 && l.pp == 1) return Constraint::kVirtualStages;
  if (experts(m) % l.ep != 0) return Constraint::kEpExperts;
  if (!expert_grid_fits(l, node)) return Constraint::kExpertGrid;
  const long long devices = static_cast<long long>(l.tp) * l.cp * l.pp * l.dp;
  if (devices < range.min || devices > max_devices(profile, range)) return Constraint::kDevices;
  if (devices > profile.node.devices && profile.cluster.inter_bandwidth <= 0) return Constraint::kDevices;
  return std::nullopt;
}

// Megatron-Core's checks on --recompute-modules (TransformerConfig: moe_act needs the routed
// experts' grouped GEMM, mla_up_proj multi-latent attention); mlp recomputes dense layers only.
std::optional<std::string> recompute_modules_problem(const ModelConfig& m, const Layout& l) {
  const RecomputeModules& r = l.recompute_modules;
  if (r.is_default()) return std::nullopt;
  if (l.recompute != Recompute::kSelective) {
    return "recompute modules " + to_string(r) + " need selective recompute (the layout has " + to_string(l.recompute) + ")";
  }
  if (r.has(RecomputeModule::kMoeAct) && !m.is_moe()) return std::string("moe_act needs a model with routed experts");
  if (r.has(RecomputeModule::kMlaUpProj) && !m.is_mla()) return std::string("mla_up_proj needs multi-latent attention");
  if (r.has(RecomputeModule::kMlp) && m.dense_layers() == 0) return std::string("mlp needs a dense layer");
  return std::nullopt;
}

std::optional<Constraint> violated_constraint(const ModelConfig& m, const TrainingRun& run,
                                              const HardwareProfile& profile, const DeviceRange& range,
                                              const Layout& l) {
  if (const auto c = violated_degrees(m, profile, range, l)) return c;
  // Megatron-Core splits each sequence into 2 x cp chunks (get_batch_on_this_cp_rank).
  if (l.cp > 1 && run.seq_len % (2 * l.cp) != 0) return Constraint::kCpSequence;
  if (recompute_modules_problem(m, l)) return Constraint::kRecomputeModules;
  if (run.global_batch % (l.dp * l.micro_batch) != 0) return Constraint::kGlobalBatch;
  // Megatron-Core builds its precision-aware optimizer only as a distributed optimizer
  // (megatron/core/optimizer/__init__.py: "only supported with distributed optimizer").
  if (run.adam_moments_in_bf16 && !l.optimizer_sharding) return Constraint::kShardedMoments;
  // Megatron's interleaved schedule runs micro-batches in groups of pp.
  if (l.vpp > 1 && l.micro_batches(run.global_batch) % l.pp != 0) return Constraint::kVirtualStages;
  return std::nullopt;
}

std::string explain(Constraint c, const ModelConfig& m, const TrainingRun& run, const HardwareProfile& profile,
                    const DeviceRange& range, const Layout& l) {
  switch (c) {
    case Constraint::kTpHeads:
      return "tp=" + str(l.tp) + " must divide heads (" + str(m.heads) + ") and KV heads (" +
             str(kv_groups(m)) + ")";
    case Constraint::kTpNode:
      return "tp=" + str(l.tp) + " must divide the " + str(profile.node.devices) + " devices of a node";
    case Constraint::kRecomputeModules:
      return *recompute_modules_problem(m, l);
    case Constraint::kShardedMoments:
      return "bf16 Adam moments (adam_moments_in_bf16) need optimizer sharding: Megatron-Core's precision-aware "
             "optimizer runs only as its distributed optimizer";
    case Constraint::kCpSequence:
      return "2 x cp = " + str(2 * l.cp) + " must divide the sequence (" + str(run.seq_len) + " tokens)";
    case Constraint::kPpLayers:
      if (l.embedding_in_split || l.loss_in_split) {
        const int slots = m.layers + l.embedding_in_split + l.loss_in_split;
        return "pp x vpp = " + str(l.pp * l.vpp) + " must divide the layers with the embedding and loss counted (" +
               str(slots) + ")" +
               (l.first_stage_layers || l.last_stage_layers ? ", without first/last stage layers" : "");
      }
      if (l.first_stage_layers == 0 && l.last_stage_layers == 0) {
        return "pp x vpp = " + str(l.pp * l.vpp) + " must divide layers (" + str(m.layers) + ")";
      }
      return "first/last stage layers " + str(l.first_stage_layers) + "/" + str(l.last_stage_layers) +
             " must each give every one of vpp=" + str(l.vpp) + " chunks a layer, leaving the other stages of pp=" +
             str(l.pp) + " an equal share of the " + str(m.layers) + " layers, divisible by vpp";
    case Constraint::kVirtualStages:
      return l.pp == 1 ? "vpp=" + str(l.vpp) + " needs pp > 1"
                       : "interleaving needs micro-batches (" + str(l.micro_batches(run.global_batch)) +
                             ") divisible by pp=" + str(l.pp);
    case Constraint::kEpExperts:
      return "ep=" + str(l.ep) + " must divide routed experts (" + str(experts(m)) + ")";
    case Constraint::kExpertGrid:
      if (profile.node.devices % l.expert_tp() != 0) {
        return "etp=" + str(l.expert_tp()) + " must divide the " + str(profile.node.devices) + " devices of a node";
      }
      return "etp x ep = " + str(l.expert_tp() * l.ep) + " must divide " + (l.cp > 1 ? "tp x cp x dp = " : "tp x dp = ") +
             str(l.stage_ranks());
    case Constraint::kGlobalBatch:
      return "dp x micro_batch = " + str(l.dp * l.micro_batch) + " must divide the global batch (" +
             str(run.global_batch) + ")";
    case Constraint::kDevices:
      if (l.tp < 1 || l.cp < 1 || l.pp < 1 || l.vpp < 1 || l.ep < 1 || l.dp < 1 || l.micro_batch < 1) {
        return "every parallel degree and the micro-batch must be >= 1";
      }
      if (l.devices() > profile.node.devices && profile.cluster.inter_bandwidth <= 0) {
        return str(l.devices()) + " devices span nodes, but the cluster has no inter-node network";
      }
      return (l.cp > 1 ? "tp x cp x pp x dp = " : "tp x pp x dp = ") +
             std::to_string(static_cast<long long>(l.tp) * l.cp * l.pp * l.dp) +
             " devices is outside " + str(range.min) + ".." + str(max_devices(profile, range));
    default:
      return to_string(c);
  }
}

std::optional<Violation> check_structure(const ModelConfig& m, const TrainingRun& run,
                                         const HardwareProfile& profile, const DeviceRange& range,
                                         const Layout& l) {
  const auto c = violated_constraint(m, run, profile, range, l);
  if (!c) return std::nullopt;
  return Violation{*c, explain(*c, m, run, profile, range, l)};
}

RankGrid::RankGrid(const Layout& layout, int devices_per_node)
    : layout_(layout), devices_per_node_(devices_per_node) {}

RankCoords RankGrid::coords(int rank) const {
  RankCoords c;
  c.tp = rank % layout_.tp;
  c.cp = (rank / layout_.tp) % layout_.cp;
  c.dp = (rank / (layout_.tp * layout_.cp)) % layout_.dp;
  c.pp = rank / layout_.stage_ranks();
  const int in_stage = rank % layout_.stage_ranks();
  c.expert_tp = in_stage % layout_.expert_tp();
  c.ep = (in_stage / layout_.expert_tp()) % layout_.ep;
  c.expert_dp = in_stage / (layout_.expert_tp() * layout_.ep);
  return c;
}

int RankGrid::rank_of(const RankCoords& c) const {
  return c.tp + layout_.tp * (c.cp + layout_.cp * (c.dp + layout_.dp * c.pp));
}

int RankGrid::stride(GroupKind kind) const {
  switch (kind) {
    case GroupKind::kTp: return 1;
    case GroupKind::kEp: return layout_.expert_tp();
    case GroupKind::kDp: return layout_.tp * layout_.cp;
    case GroupKind::kExpertDp: return layout_.expert_tp() * layout_.ep;
    case GroupKind::kPp: return layout_.stage_ranks();
    case GroupKind::kExpertTp: return 1;
    case GroupKind::kCp: return layout_.tp;
    case GroupKind::kDpCp: return layout_.tp;
  }
  return 1;
}

int RankGrid::size(GroupKind kind) const {
  switch (kind) {
    case GroupKind::kTp: return layout_.tp;
    case GroupKind::kEp: return layout_.ep;
    case GroupKind::kDp: return layout_.dp;
    case GroupKind::kExpertDp: return layout_.expert_dp();
    case GroupKind::kPp: return layout_.pp;
    case GroupKind::kExpertTp: return layout_.expert_tp();
    case GroupKind::kCp: return layout_.cp;
    case GroupKind::kDpCp: return layout_.gradient_ranks();
  }
  return 1;
}

int RankGrid::coordinate(const RankCoords& c, GroupKind kind) const {
  switch (kind) {
    case GroupKind::kTp: return c.tp;
    case GroupKind::kEp: return c.ep;
    case GroupKind::kDp: return c.dp;
    case GroupKind::kExpertDp: return c.expert_dp;
    case GroupKind::kPp: return c.pp;
    case GroupKind::kExpertTp: return c.expert_tp;
    case GroupKind::kCp: return c.cp;
    case GroupKind::kDpCp: return c.cp + layout_.cp * c.dp;
  }
  return 0;
}

// Every group is an arithmetic progression of ranks: from the member whose coordinate is 0, in
// steps of the group's stride.
std::vector<int> RankGrid::group(GroupKind kind, int rank) const {
  const int start = rank - coordinate(coords(rank), kind) * stride(kind);
  std::vector<int> members;
  for (int i = 0; i < size(kind); ++i) members.push_back(start + i * stride(kind));
  return members;
}

int RankGrid::members_per_node(GroupKind kind) const {
  return std::clamp(devices_per_node_ / stride(kind), 1, size(kind));
}

}  // namespace flopwise
