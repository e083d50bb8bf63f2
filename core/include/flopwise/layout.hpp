#pragma once
// Parallel layout: the degrees of each parallelism and the rank order they map to.
#include <optional>
#include <string>
#include <vector>

#include "flopwise/model_config.hpp"
#include "flopwise/training_run.hpp"

namespace flopwise {

enum class Recompute { kNone, kSelective, kFull };
std::string to_string(Recompute recompute);
Recompute parse_recompute(const std::string& text, const std::string& source, const std::string& field);

// What selective recompute repeats in the backward (Megatron-Core's --recompute-modules, default
// core_attn): the core attention; the norms that are modules of their own (a MoE layer's pre-MLP
// norm, MLA's input norm; Transformer Engine fuses the others into their linears); the routed
// experts' activation; MLA's up-projections and RoPE; a dense layer's MLP. All but core_attn and
// mlp discard their output after its use and rebuild it for the backward.
enum class RecomputeModule : unsigned { kCoreAttn = 1, kLayernorm = 2, kMoeAct = 4, kMlaUpProj = 8, kMlp = 16 };
struct RecomputeModules {
  unsigned bits = static_cast<unsigned>(RecomputeModule::kCoreAttn);
  bool has(RecomputeModule m) const { return (bits & static_cast<unsigned>(m)) != 0; }
  bool is_default() const { return bits == RecomputeModules{}.bits; }
  bool operator==(const RecomputeModules&) const = default;
};
// Megatron's names, comma-separated in Megatron's order ("core_attn,moe_act"); as a list; and
// the short form layout labels print ("attn,act": attn, act, ln, mla, mlp).
std::string to_string(RecomputeModules modules);
std::vector<std::string> module_names(RecomputeModules modules);
std::string abbreviated(RecomputeModules modules);
// Names, or a comma-separated list of them; an unknown name or none is an InputError.
RecomputeModules parse_recompute_modules(const std::vector<std::string>& names, const std::string& source,
                                         const std::string& field);
RecomputeModules parse_recompute_modules(const std::string& list, const std::string& source, const std::string& field);
// Every module, in Megatron's order.
std::vector<RecomputeModule> all_recompute_modules();

struct Layout {
  int tp = 1;          // tensor parallel
  int pp = 1;          // pipeline stages
  int vpp = 1;         // virtual stages (model chunks) per pipeline rank; > 1 is interleaved 1F1B
  int ep = 1;          // expert parallel, carved out of the TP x CP x DP ranks of a stage
  int dp = 1;          // data parallel replicas
  int micro_batch = 1; // sequences per micro-batch
  Recompute recompute = Recompute::kNone;
  bool optimizer_sharding = false;  // distributed optimizer (ZeRO-1) over DP
  // With tp > 1: Megatron's sequence parallelism (norms, dropout and residual adds sharded over TP,
  // all-gather / reduce-scatter around each block); false: plain TP all-reduces, those parts
  // replicated on every TP rank. Always true when tp == 1, so equal layouts compare equal.
  bool sequence_parallel = true;
  // Uneven pipeline (Megatron-Core's --decoder-first/last-pipeline-num-layers): layers on the first
  // and last pipeline rank, the middle ranks splitting the rest evenly; 0 means an even share. The
  // ends carry the embedding and the LM head, so fewer layers there balance the stages.
  int first_stage_layers = 0;
  int last_stage_layers = 0;
  // Megatron-Core's --account-for-embedding-in-pipeline-split and --account-for-loss-in-pipeline-
  // split: the embedding, and the LM head with its loss, each take one layer's place when the
  // layers are split over pp x vpp model chunks, so the first and the last chunk hold one layer
  // fewer (Qwen3-235B's 94 layers + 2 on 8 x 4 chunks of 3). Megatron does not combine them with
  // first/last_stage_layers; neither does flopwise.
  bool embedding_in_split = false;
  bool loss_in_split = false;
  // MoE parallel folding (Megatron-Core's --expert-tensor-parallel-size): the experts' own tensor
  // parallelism, 0 meaning the attention's tp (Megatron's default). The tp x cp x dp ranks of a stage
  // are regrouped for the experts as etp x ep x expert_dp, so EP may span TP ranks: with etp 1 an
  // EP group of 8 stays inside an NVLink node where ep over DP alone would cross nodes.
  int etp = 0;
  // Context parallel (Megatron-Core's --context-parallel-size): each sequence's tokens split over
  // cp ranks, each holding 2 of its 2 x cp chunks (one early, one late, so causal attention loads
  // them evenly); keys and values travel around the cp ranks in a ring while attention runs. The
  // ranks hold the same weights, so gradients are reduced over dp x cp.
  // Positional initialisers end before it.
  int cp = 1;
  // With selective recompute, what it repeats; the default (core_attn) otherwise, so that equal
  // layouts compare equal.
  RecomputeModules recompute_modules;

  int devices() const { return tp * cp * pp * dp; }
  // Whether selective recompute repeats `module` (a layout without selective recompute repeats
  // no single module: none, or the whole layer).
  bool recomputes(RecomputeModule module) const {
    return recompute == Recompute::kSelective && recompute_modules.has(module);
  }
  // Ranks of one pipeline stage: the attention's tp x cp x dp, the experts' etp x ep x expert_dp.
  int stage_ranks() const { return tp * cp * dp; }
  // Ranks holding the same weights, over which gradients are reduced and the optimizer sharded.
  int gradient_ranks() const { return dp * cp; }
  int expert_tp() const { return etp > 0 ? etp : tp; }
  int expert_dp() const { return stage_ranks() / (expert_tp() * ep); }
  int micro_batches(int global_batch) const { return global_batch / (dp * micro_batch); }
  // How the layers are split over the pipeline (the four fields above): copied as one, or reset
  // to an even split.
  void copy_split(const Layout& from);
  void even_split() { copy_split(Layout{}); }
  bool even() const { return first_stage_layers == 0 && last_stage_layers == 0 && !embedding_in_split && !loss_in_split; }
  bool operator==(const Layout&) const = default;
};

// Whether Megatron-Core runs the EP all-to-all overlap the run asks for (CommOverlap::ep_a2a) on
// this layout: a MoE model with EP > 1, interleaving where PP > 1, no full recompute
// (TransformerConfig's checks on overlap_moe_expert_parallel_comm).
bool ep_overlap_applies(const ModelConfig& model, const TrainingRun& run, const Layout& layout);

// The layout's etp field for an expert TP degree: 0 when it equals tp, so that equal layouts
// compare equal however they were written.
inline int fold_expert_tp(int etp, int tp) { return etp == tp ? 0 : etp; }

// Which layers model chunk `chunk` holds (chunk v * pp + r is virtual stage v of pipeline rank r;
// layers go to chunks in chunk order). The one home of the rule; the layout must be valid.
struct LayerRange {
  int first = 0;
  int count = 0;
};
int rank_layer_count(int layers, const Layout& layout, int rank);
// Layers per model chunk of a split without first/last stage layers, the embedding and the loss
// counted as layers where the layout counts them (what Megatron-LM calls layers per virtual stage).
int chunk_slots(int layers, const Layout& layout);
// The split as the layout tables and notes print it: "" when even, else "ends6/8" and/or
// "+emb" "+loss".
std::string split_label(const Layout& layout);
LayerRange chunk_layers(int layers, const Layout& layout, int chunk);
bool stages_fit(int layers, const Layout& layout);
// The most balanced split of `layers` over pp ranks x vpp chunks with lighter ends: even when
// pp x vpp divides the layers, otherwise the largest middle share whose ends hold no more than it
// (e.g. 126 layers on 16 x 2: 6 + 14 x 8 + 8), otherwise the embedding and the loss counted as
// layers (94 on 8 x 4: 2 + 30 x 3 + 2 per chunk). Sets the split; false when none fits.
bool balance_stages(int layers, Layout& layout);

// Each rule a layout must obey, in the order they are checked; the planner counts how many
// candidate layouts each one removed.
enum class Constraint {
  kTpHeads,      // heads and KV heads divisible by TP
  kTpNode,       // a TP group stays inside one node
  kCpSequence,   // 2 x cp divides the sequence (each CP rank holds two of its 2 x cp chunks)
  kPpLayers,     // layers split over PP x virtual stages (evenly, or with set first/last stages)
  kVirtualStages,// interleaving needs PP > 1 and micro-batches divisible by PP
  kEpExperts,    // routed experts divisible by EP
  kExpertGrid,   // etp x ep divides tp x cp x dp, and an expert TP group stays inside one node
  kRecomputeModules,  // modules other than core_attn only with selective recompute, each on a model that has it
  kDevices,      // device count within the searched range and the cluster size
  kGlobalBatch,  // global batch divisible by DP x micro-batch
  kShardedMoments,  // bf16 Adam moments only with the distributed optimizer (optimizer sharding)
  kMemory,       // fits the device with headroom
  kLessRecomputeFits,  // a setting that repeats part of this one's work fits the same layout
  kObjective,    // deadline or budget
  kCount
};
// Why Megatron-Core refuses the layout's recompute modules for this model; nullopt when it takes them.
std::optional<std::string> recompute_modules_problem(const ModelConfig& model, const Layout& layout);
std::string to_string(Constraint constraint);

struct Violation {
  Constraint constraint;
  std::string message;
};

struct DeviceRange {
  int min = 1;
  int max = 1;
  bool operator==(const DeviceRange&) const = default;
};

// Structural checks (everything but memory and objective); nullopt when the layout is valid.
// violated_constraint is the fast form the search calls millions of times; explain words it.
// violated_degrees is its first part, the rules on the parallel degrees alone (not the
// micro-batch, recompute or sharding), which the search checks once for all of those.
std::optional<Constraint> violated_degrees(const ModelConfig& model, const HardwareProfile& profile,
                                           const DeviceRange& range, const Layout& layout);
std::optional<Constraint> violated_constraint(const ModelConfig& model, const TrainingRun& run,
                                              const HardwareProfile& profile, const DeviceRange& range,
                                              const Layout& layout);
std::string explain(Constraint constraint, const ModelConfig& model, const TrainingRun& run,
                    const HardwareProfile& profile, const DeviceRange& range, const Layout& layout);
std::optional<Violation> check_structure(const ModelConfig& model, const TrainingRun& run,
                                         const HardwareProfile& profile, const DeviceRange& range,
                                         const Layout& layout);

// Rank order "tp-cp-ep-dp-pp" (Megatron-Core's): TP ranks are adjacent, then CP, then DP, then
// pipeline stages. The experts number the same tp x cp x dp ranks of a stage as etp (adjacent),
// then EP, then expert DP. The gradient group (kDpCp) is the dp x cp ranks holding the same
// weights (Megatron's data-parallel group with context parallelism). Defined here once; the plan
// exports it and the executor follows it.
enum class GroupKind { kTp, kEp, kDp, kExpertDp, kPp, kExpertTp, kCp, kDpCp };
std::string to_string(GroupKind kind);
// Every kind, in the order the plan's rank map lists them.
inline constexpr GroupKind kGroupKinds[] = {GroupKind::kTp, GroupKind::kEp, GroupKind::kDp, GroupKind::kExpertDp,
                                            GroupKind::kPp, GroupKind::kExpertTp, GroupKind::kCp, GroupKind::kDpCp};

struct RankCoords {
  int tp = 0, ep = 0, dp = 0, expert_dp = 0, pp = 0, expert_tp = 0, cp = 0;
};

class RankGrid {
 public:
  RankGrid(const Layout& layout, int devices_per_node);
  static constexpr const char* kOrder = "tp-cp-ep-dp-pp";

  RankCoords coords(int rank) const;
  int rank_of(const RankCoords& coords) const;  // uses tp, cp, dp and pp (the expert coordinates follow)
  int stride(GroupKind kind) const;             // rank distance between neighbours of a group
  int size(GroupKind kind) const;
  std::vector<int> group(GroupKind kind, int rank) const;
  // Members of one group sharing a node: decides intra- versus inter-node links.
  int members_per_node(GroupKind kind) const;
  int node_of(int rank) const { return rank / devices_per_node_; }

 private:
  int coordinate(const RankCoords& c, GroupKind kind) const;

  Layout layout_;
  int devices_per_node_;
};

}  // namespace flopwise
