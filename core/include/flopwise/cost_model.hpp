#pragma once
// Analytic cost of one training step of a layout: time, throughput, memory, money.
#include <array>
#include <string>
#include <vector>

#include "flopwise/collectives.hpp"
#include "flopwise/layout.hpp"
#include "flopwise/schedule.hpp"
#include "flopwise/step_cost.hpp"

namespace flopwise {

// What one pipeline rank holds: its layers (by kind) and the ends of the model.
struct StageContents {
  int dense_layers = 0;  // MTP layers included, by their kind
  int moe_layers = 0;
  bool embedding = false;
  bool lm_head = false;
  int mtp_layers = 0;  // multi-token-prediction depths (Megatron-Core places them with the LM head)
  bool operator==(const StageContents&) const = default;
};

// What a stage holding layers first .. first + count - 1 holds: their kinds, and with the LM head
// the MTP depths too (Megatron-Core places them with the head). The one home of the rule.
StageContents range_contents(const ModelConfig& model, int first, int count, bool embedding, bool lm_head);
// The layers of model chunk `chunk` (virtual stage; chunk v * pp + r runs on pipeline rank r).
StageContents chunk_contents(const ModelConfig& model, const Layout& layout, int chunk);
// The layers each pipeline rank holds, all its chunks together.
std::vector<StageContents> stage_contents(const ModelConfig& model, const Layout& layout);

// In-flight micro-batch chunks (forward done, backward pending) on pipeline rank `rank`:
// 1F1B holds pp - rank; Megatron's interleaved warm-up holds 2 (pp - rank - 1) + (vpp - 1) pp + 1.
int in_flight_chunks(const Layout& layout, int rank, int micro_batches);

// The work of one pass of a pipeline rank's layers over one micro-batch, in the terms the compute
// time is a linear function of (and that `calibrate` regresses measured passes on).
struct ComputeWork {
  Flops matmul = 0;          // GEMM FLOPs on this device
  Flops matmul_per_row = 0;  // sum over its GEMMs of FLOPs per row (2 x weights): Hockney's n_1/2 term
  Flops attention = 0;       // attention core (QK^T, PV) in a fused kernel
  double layer_passes = 0;   // layers run, for the per-layer overhead
  Bytes memory_traffic = 0;  // bytes library and plain torch kernels (TE's, epilogues, softmax, loss) stream
  double gemm_launches = 0;  // GEMM kernels, each paying the device's launch latency
  Bytes compiled_traffic = 0;  // bytes torch.compile's kernels (Megatron's fused adds, activations) stream
  double kernels = 0;  // the other kernels: memory-bound steps, fp8 casts, attention; see layer_kernels
  Bytes compiled_backward_traffic = 0;  // bytes the compiled MLP activations' backward kernels stream
  ComputeWork& operator+=(const ComputeWork& other);
  ComputeWork scaled(double factor) const;
};

// Time the memory-bound kernels of `work` take on the profile's device: library kernels at its
// `memory` efficiency, compiled ones at `memory_compiled`, the compiled activations' backward at
// `memory_compiled_backward`.
Seconds memory_bound_seconds(const ComputeWork& work, const HardwareProfile& profile);

// Bytes per element and per parameter of a precision recipe; the optimizer step streams
// adam_traffic per parameter it updates and grad_zeroing per parameter the device holds.
struct PrecisionBytes {
  Bytes weight = 0, grad = 0, optimizer = 0, activation = 0, adam_traffic = 0, grad_zeroing = 0;
  // `grads_in_bf16`: a bf16 or fp8 run's main gradients kept and reduced in bf16
  // (TrainingRun::grad_reduce_in_bf16); `moments_in_bf16`: its AdamW moments stored in bf16
  // (TrainingRun::adam_moments_in_bf16).
  static PrecisionBytes of(Precision precision, bool grads_in_bf16, bool moments_in_bf16 = false);
  static PrecisionBytes of(const TrainingRun& run) {
    return of(run.precision, run.grad_reduce_in_bf16, run.adam_moments_in_bf16);
  }
  // Bytes a micro-batch's weight gradient moves per weight into the main gradient: read and
  // written in the GEMM's epilogue when fused, else written at activation width by the GEMM, then
  // read back with the main gradient and added into it.
  Bytes grad_accumulation(bool fused) const { return fused ? 2.0 * grad : 2.0 * activation + 2.0 * grad; }
};

// The devices a run's totals are priced over: one pool's, or several pools' together.
struct Fleet {
  int devices = 0;
  int nodes = 0;
  FlopsPerSecond peak = 0;           // all devices together, at the run's precision
  double price_per_device_hour = 0;  // mean over the devices
  std::string currency;
  const Reliability* reliability = nullptr;
};

// Throughput, MFU, goodput, and days, device-hours and cost (ideal and expected) of a run whose
// step takes `cost.step_time_s` on `fleet`; the checkpoint holds the whole model's weights and
// optimizer state, each device saving its own (memory_bytes.weights + optimizer).
void derive_run_totals(StepCost& cost, const ModelConfig& model, const TrainingRun& run, const ParamCounts& params,
                       const Fleet& fleet);

// Precomputes everything that does not depend on the layout, so that evaluate() is cheap
// enough for the planner to call millions of times.
// Bytes an fp8 cast moves per element under `recipe` (core/src/cost_model.cpp says how).
Bytes fp8_cast_bytes(Fp8Recipe recipe);
// Kernels an fp8 cast launches under `recipe`.
double fp8_cast_kernels(Fp8Recipe recipe);
// Casts one quantization of a grouped GEMM's `count` tensors launches under `recipe`.
double fp8_casts(Fp8Recipe recipe, double count);

class CostModel {
 public:
  CostModel(const ModelConfig& model, const TrainingRun& run, const HardwareProfile& profile);

  StepCost evaluate(const Layout& layout) const;
  // The same, given the layout's stage_contents (the search reuses them across micro-batch,
  // recompute and sharding choices).
  StepCost evaluate(const Layout& layout, const std::vector<StageContents>& stages) const;
  // Derives throughput, MFU, the goodput, and days, device-hours and cost (ideal and expected)
  // from `cost.step_time_s` and `cost.memory_bytes`, e.g. after the step simulation replaced the
  // analytic step time.
  void derive_totals(StepCost& cost, const Layout& layout) const;
  // Memory alone, for early pruning in the search.
  MemoryBreakdown memory(const Layout& layout, int* busiest_rank = nullptr) const;
  MemoryBreakdown memory(const Layout& layout, const std::vector<StageContents>& stages,
                         int* busiest_rank = nullptr) const;

  const ModelConfig& model() const { return model_; }
  const TrainingRun& run() const { return run_; }
  const HardwareProfile& profile() const { return profile_; }
  Bytes usable_memory_bytes() const { return usable_memory_; }

  enum class Pass { kForward, kBackward };

  // Per micro-batch, per device; public so tests and the step simulation use the same figures.
  Bytes layer_activation_bytes(bool moe_layer, const Layout& layout) const;
  Seconds layer_forward_seconds(bool moe_layer, const Layout& layout) const;
  ComputeWork layer_forward_work(bool moe_layer, const Layout& layout) const;
  // One launch of `count` equal GEMMs with rows x cols outputs over `inner`, activation-width
  // operands and outputs, at the run's GEMM rate: the kernel time a GEMM benchmark of the device
  // measures (without the kernel gap a stream adds after it).
  // With `sms_held` compute units taken by communication kernels running beside it.
  Seconds gemm_seconds(double rows, double inner, double cols, double count = 1.0, int sms_held = 0) const;
  // The attention core of one layer's forward over one micro-batch: a fused kernel's FLOPs (at the
  // profile's speed for this shape), or the unfused path's batched GEMMs over the whole s x s square
  // and the softmax and dropout bytes around them.
  ComputeWork attention_core_work(const Layout& layout) const;
  // Bytes per token one layer's memory-bound kernels stream in its forward, on one device.
  Bytes elementwise_bytes_per_token(bool moe_layer, const Layout& layout) const;
  Bytes library_bytes_per_token(bool moe_layer, const Layout& layout) const;  // of those, library kernels'
  Bytes compiled_bytes_per_token(bool moe_layer, const Layout& layout) const;  // and compiled ones
  // Of the compiled ones, the bias-dropout-adds' forward
  Bytes residual_add_bytes_per_token(const Layout& layout) const;
  // Their backward: the residual gradients' sums (library speed) and the dropouts' gradients.
  Bytes residual_gradient_sum_bytes_per_token(const Layout& layout) const;
  Bytes dropout_gradient_bytes_per_token(const Layout& layout) const;
  // and the MLP activation's forward (its backward streams 5/3 as much: kActivationBackwardShare).
  Bytes activation_bytes_per_token(bool moe_layer, const Layout& layout) const;
  double rotated_elements_per_token() const;  // query and key elements RoPE rotates, all heads
  double qk_normed_elements_per_token() const;  // query and key elements QK-norm normalises, all heads
  // Copies between the fused QKV output and the attention kernel, in a pass of one layer.
  ComputeWork qkv_split_work(Pass pass, const Layout& layout) const;
  // Bytes one MoE layer's sorts of the received copies by local expert move, per pass and device.
  Bytes local_expert_sort_bytes(const Layout& layout) const;
  // Bytes an fp8 MoE layer's padding of the copies to the fp8 GEMM's alignment moves, per pass.
  Bytes quantization_padding_bytes(const Layout& layout) const;
  // Kernels one layer launches in a pass for the memory-bound steps those bytes are priced for.
  double layer_kernels(bool moe_layer, Pass pass, const Layout& layout) const;
  // The router's kernels beyond its gate GEMM (top-k, balancing losses), per MoE layer and pass.
  double router_kernels(Pass pass, const Layout& layout) const;
  ComputeWork router_work(Pass pass, const Layout& layout) const;
  // One routed-expert weight matrix's GEMMs over the local experts, `rows` token copies each.
  ComputeWork expert_matrix_work(const WeightMatrix& matrix, double rows, Pass pass, const Layout& layout) const;
  ComputeWork forward_work(const StageContents& stage, const Layout& layout) const;
  ComputeWork backward_work(const StageContents& stage, const Layout& layout) const;
  Seconds compute_seconds(const ComputeWork& work) const;
  // Peak of the run's precision, and of the attention core (fp8 runs keep attention in bf16).
  FlopsPerSecond matmul_peak() const { return peak_; }
  FlopsPerSecond attention_peak() const { return attention_peak_; }
  // Optimizer time at full memory bandwidth; the profile's memory efficiency divides it.
  Seconds optimizer_seconds_at_peak(const StageContents& stage, const Layout& layout) const;
  const PrecisionBytes& bytes_per() const { return bytes_; }
  Seconds forward_seconds(const StageContents& stage, const Layout& layout) const;
  // Backward of the same layers: twice the forward, plus what recompute repeats.
  Seconds backward_seconds(const StageContents& stage, const Layout& layout) const;
  // TP collectives of a stage's layers in one pass, counted in all-gathers or reduce-scatters of
  // one activation buffer (an all-reduce is one of each): those the pass waits for, and those the
  // framework runs beside the GEMMs of tp_overlap_window.
  struct TpCollectives {
    int exposed = 0, overlapped = 0;
    int total() const { return exposed + overlapped; }
  };
  TpCollectives tp_collectives(const StageContents& stage, bool forward, const Layout& layout) const;
  // Share of the device's SMs an NCCL TP collective hidden beside GEMMs holds (its group's
  // collective_channels, one SM each): the GEMM time it costs per second hidden. 0 under
  // Transformer Engine's overlap, whose SMs are charged inside the GEMMs.
  double hidden_tp_sm_share(const Layout& layout) const;
  // NCCL's channels for a ring collective over `group`: the node's collective channels inside a
  // node, fewer where a node holds few of its members.
  int collective_channels(const GroupSpan& group) const;
  // Combined 1F1B (CommOverlap::ep_a2a) where Megatron-Core runs it for this layout; the share
  // of a step's passes it leaves unpaired; the share of the SMs an EP all-to-all holds; the
  // compute beside each of a paired MoE layer's four all-to-alls; what one MoE layer's all-to-alls
  // in a paired forward or backward leave exposed, `a2a` seconds each; and what a micro-batch's
  // leave exposed through `moe_layers` MoE layers.
  bool ep_overlap_applies(const Layout& layout) const;
  double unpaired_pass_share(const Layout& layout) const;
  double a2a_sm_share() const;
  std::array<Seconds, 4> paired_a2a_windows(const Layout& layout) const;
  Seconds paired_a2a_exposed(Seconds a2a, bool forward, const Layout& layout) const;
  Seconds ep_overlap_exposed(Seconds a2a, int moe_layers, const Layout& layout) const;
  // The routed experts' all-gathers and reduce-scatters over the expert-TP group in one pass (all
  // waited for), each over expert_tp_collective_bytes.
  int expert_tp_collectives(const StageContents& stage, bool forward, const Layout& layout) const;
  Bytes expert_tp_collective_bytes(const Layout& layout) const;
  // Compute seconds of a stage's pass that its overlapped TP collectives run beside.
  Seconds tp_overlap_window(const StageContents& stage, bool forward, const Layout& layout) const;
  // Transformer Engine's TP overlap (tp_comm, which needs sequence parallelism): where it applies,
  // and what a stage's pass waits for beside it, each collective (`each` seconds) hidden only
  // behind the GEMM TE pairs it with.
  bool te_tp_overlap_applies(const Layout& layout) const;
  Seconds te_tp_overlap_exposed(const StageContents& stage, bool forward, const Layout& layout, Seconds each) const;
  Bytes tp_collective_bytes(const Layout& layout) const;
  // EP all-to-alls per MoE layer (dispatch and combine), and each device's payload in one.
  int ep_all_to_alls_forward() const { return 2; }
  int ep_all_to_alls_backward(const Layout& layout) const { return layout.recompute == Recompute::kFull ? 4 : 2; }
  Bytes ep_payload_bytes(const Layout& layout) const;
  // Context parallelism's ring attention: the keys and values of this rank's tokens one exchange
  // moves, and the seconds a micro-batch's passes through a stage wait for the ring.
  Bytes cp_ring_step_bytes(const Layout& layout) const;
  // One pass's ring through each of `layers` layers: `steps` exchanges of `bytes`, each beside
  // `beside` seconds of that layer's attention (the pass's compute includes them).
  struct CpRingPhase {
    int layers = 0, steps = 0;
    Bytes bytes = 0;
    Seconds beside = 0;
  };
  std::vector<CpRingPhase> cp_ring_phases(const StageContents& stage, bool forward, const Layout& layout) const;
  Seconds cp_exposed_seconds(const StageContents& stage, const Layout& layout) const;
  // What one device sends in one EP all-to-all to its node's other EP ranks and to other nodes',
  // by the run's dispatcher.
  AllToAllSends ep_sends(const Layout& layout) const;
  AllToAllSends ep_sends(const Layout& layout, const GroupSpan& ep_group) const;
  Bytes pp_boundary_bytes(const Layout& layout) const;
  // One pipeline boundary message (activations forward, or their gradient backward) on this profile.
  Seconds pp_message_seconds(const Layout& layout) const;
  // Gradients (fp32) and weights (bf16) one device synchronises over DP for these layers.
  double dense_params_per_device(const StageContents& stage, const Layout& layout) const;
  double expert_params_per_device(const StageContents& stage, const Layout& layout) const;
  // DP traffic of a stage per step: the gradient reduction (all-reduce, or reduce-scatter with the
  // distributed optimizer) and the updated weights' all-gather (distributed optimizer only); and
  // the share of the SMs its collectives hold while they run, over the DP and expert-DP groups
  // (weighted by their time).
  struct DataParallelTraffic {
    Seconds grads = 0, weights = 0;
    double sm_share = 0;
  };
  DataParallelTraffic data_parallel_traffic(const StageContents& stage, const Layout& layout) const;
  // Of that, what the step waits for when the framework overlaps it with one micro-batch's
  // backward (gradients) and forward (weights), bucket by bucket.
  Seconds data_parallel_exposed_seconds(const StageContents& stage, const Layout& layout, Seconds backward,
                                        Seconds forward) const;
  Seconds optimizer_seconds(const StageContents& stage, const Layout& layout) const;
  // One pipeline rank's work on one micro-batch, and its memory as pipeline rank `rank`: what the
  // step is built from (public for plans whose stages run on different devices).
  struct RankTime {
    Seconds forward = 0, backward = 0, tp = 0, ep = 0, cp = 0;
    Seconds compute() const { return forward + backward; }
    Seconds total() const { return compute() + tp + ep + cp; }
    // Megatron's TP and EP layers communicate as much in the backward pass as in the forward; the
    // CP ring's backward exchanges twice the forward's (keys and values out, their gradients back).
    StagePasses passes() const { return {forward + (tp + ep) / 2 + cp / 3, backward + (tp + ep) / 2 + 2 * cp / 3}; }
  };
  RankTime micro_batch_time(const StageContents& stage, const Layout& layout) const;
  // The step from each pipeline stage's micro-batch time, which the caller may have priced on other
  // figures (a traced stage on a core that ran slower than the others).
  StepCost evaluate(const Layout& layout, const std::vector<StageContents>& stages, const std::vector<RankTime>& times) const;
  MemoryBreakdown rank_memory(const StageContents& stage, int rank, const Layout& layout) const;
  const Network& network() const { return network_; }

 private:
  static double passes_of(Pass pass);
  double attention_passes_of(Pass pass) const;
  ComputeWork unscaled_attention_core_work(const Layout& layout) const;
  ComputeWork attention_work(Pass pass, const Layout& layout) const;
  ComputeWork qk_norm_work(Pass pass, const Layout& layout) const;
  double query_elements_per_token() const;
  double key_elements_per_token() const;
  Bytes received_copies_there_and_back_bytes(const Layout& layout) const;
  ComputeWork gemm_work(double rows, double inner, double cols, double count, bool quantized,
                        Bytes output_bytes, int sms_held = 0) const;
  ComputeWork matrix_work(const WeightMatrix& matrix, double rows, double count, Pass pass, int tp,
                          const Layout& layout, bool quantized = true, int sms_held = 0) const;
  int tp_overlap_sms_held(const WeightMatrix& matrix, Pass pass, const Layout& layout) const;
  double expert_rows_per_rank(const Layout& layout) const;
  int tp_blocks(const StageContents& stage) const;
  ComputeWork layer_gemm_work(bool moe_layer, Pass pass, const Layout& layout) const;
  Flops layer_matmul_per_row(bool moe_layer, const Layout& layout) const;
  ComputeWork layer_work(bool moe_layer, Pass pass, const Layout& layout) const;
  ComputeWork pre_dispatch_work(Pass pass, const Layout& layout) const;
  Seconds paired_a2a_exposed(Seconds a2a, bool forward, const std::array<Seconds, 4>& windows) const;
  ComputeWork selective_recompute_work(const StageContents& stage, const Layout& layout) const;
  int separate_norms(bool moe_layer) const;
  ComputeWork embedding_work(Pass pass, const Layout& layout) const;
  ComputeWork lm_head_work(Pass pass, const Layout& layout) const;
  ComputeWork layers_work(const StageContents& stage, Pass pass, const Layout& layout) const;
  ComputeWork stage_work(const StageContents& stage, Pass pass, const Layout& layout) const;
  ComputeWork column_parallel_backward_work(bool moe_layer, const Layout& layout) const;
  // The GEMM seconds of a TP block's column- and row-parallel matrices in one pass.
  struct TpBlockGemms {
    Seconds column = 0, row = 0;
  };
  TpBlockGemms tp_block_gemms(const std::vector<WeightMatrix>& block, Pass pass, const Layout& layout) const;
  // What a stage's pass waits for TP communication over one micro-batch, given one collective's time.
  Seconds tp_exposed_seconds(const StageContents& stage, bool forward, const Layout& layout, Seconds each) const;
  double expert_skew(const Layout& layout) const;
  double sm_share(int sms) const;
  double micro_batch_tokens(const Layout& layout) const;
  double stage_dense_params(const StageContents& stage) const;
  double stage_expert_params(const StageContents& stage) const;

  ModelConfig model_;
  TrainingRun run_;
  HardwareProfile profile_;
  Network network_;
  LayerParams layer_params_;
  ParamCounts params_;
  LayerFlops moe_flops_, dense_flops_;
  LayerMatrices moe_matrices_, dense_matrices_;
  std::vector<std::vector<WeightMatrix>> moe_tp_blocks_, dense_tp_blocks_;  // tensor_parallel_blocks
  std::vector<WeightMatrix> pre_dispatch_matrices_;                        // the attention's and the router
  Flops lm_head_flops_;
  // The fused attention kernel's shape: each layer kind's span, the head dim it is looked up at
  // and the profile's anchor speed (attention_work).
  std::vector<AttentionSpan> attention_spans_;
  double attention_head_dim_ = 0;
  double attention_anchor_speed_ = 0;
  FlopsPerSecond matmul_rate_, attention_rate_, peak_, attention_peak_;
  double bf16_gemm_flops_;  // a bf16 GEMM FLOP in matmul-rate FLOPs
  BytesPerSecond memory_rate_;
  PrecisionBytes bytes_;
  Bytes usable_memory_;
};

}  // namespace flopwise
