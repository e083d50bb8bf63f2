#include "flopwise/cost_model.hpp"

#include <algorithm>
#include <cmath>
#include <tuple>

#include "flopwise/error.hpp"
#include "flopwise/schedule.hpp"

namespace flopwise {
namespace {

GroupSpan span(const RankGrid& grid, GroupKind kind) {
  return GroupSpan{grid.size(kind), grid.members_per_node(kind)};
}

// Ways the norms, dropout and residual adds are split: over TP under sequence parallelism,
// replicated on every TP rank without it (Korthikanti et al. 2022, section 4.2.2).
double sequence_shards(const Layout& l) { return l.sequence_parallel ? l.tp : 1.0; }

// Megatron-Core's SwiGLU (fused_bias_swiglu.py) reads gate and up and writes their product: 3
// values a unit of width. Its backward, swiglu_back, reads the output gradient, gate and up and
// writes both input gradients: 5. A GELU MLP, modelled as the SwiGLU of 2/3 its width, reads and
// writes the same bytes forward; its backward (3 of its own units, 4.5 of the SwiGLU's) is
// counted as the SwiGLU's 5.
constexpr double kSwigluForwardElements = 3.0;
constexpr double kActivationBackwardShare = 5.0 / 3.0;

// What attention dropout adds to a fused attention kernel, forward and backward: cuDNN's (Transformer
// Engine's FusedAttention, bf16, sbhd, 4 sequences of 1,024 tokens, 16 heads of 128) ran forward
// and backward in 0.594 ms without and 0.614 ms with p = 0.1 on H200 (NVIDIA/TransformerEngine#3312):
// +3.4%; the kernel draws its random numbers in registers and stores no mask.
constexpr double kFusedAttentionDropoutShare = 0.614 / 0.594 - 1.0;

}  // namespace

PrecisionBytes PrecisionBytes::of(Precision precision, bool grads_in_bf16, bool moments_in_bf16) {
  // fp32 throughout, as the executor trains: fp32 weights, grads and activations; LibTorch's AdamW
  // keeps m and v (no master copy), its update reads+writes weight, m and v (3 x 8) and reads the
  // grad (4); the executor zeroes its grads before the step's forward, outside the optimizer.
  if (precision == Precision::kFp32) return {4, 4, 8, 4, 28, 0};
  // fp16 as Megatron-LM runs it (Float16OptimizerWithFloat16Params with --fp16, grads kept and
  // reduced in fp16: accumulate_allreduce_grads_in_fp32 is off by default). The step copies each
  // fp16 grad into an fp32 main grad (reads 2, writes 4), the dynamic loss scaler's
  // _amp_foreach_non_finite_check_and_unscale_ reads and rewrites it (8), then the bf16 path's
  // norm, Adam and master-to-model copy (38); the zeroed buffer is fp16 (2).
  if (precision == Precision::kFp16) return {2, 2, 12, 2, 6 + 8 + 4 + 28 + 6, 2};
  // Mixed precision in Megatron-LM: bf16 weights and activations, fp32 main gradients, and AdamW
  // with fp32 master weights plus two fp32 moments (Rajbhandari et al. 2020, ZeRO, section 3.1:
  // 16 bytes per parameter, 12 of them optimizer state). Megatron's step runs three memory-bound
  // kernels over each parameter it updates (megatron/core/optimizer, core_v0.8.0, and the 2022
  // Float16OptimizerWithFloat16Params alike): the gradient norm for clipping reads the fp32 grad
  // (multi_tensor_l2norm, 4), fused Adam reads master, grad, m and v and writes master, m and v
  // (multi_tensor_adam, 28), and the copy of the master weights into the bf16 weights reads 4 and
  // writes 2. The fp32 grad buffer, whole and not only the updated shard, is zeroed for the next
  // step (zero_grad_buffer, 4). The clip's rescale runs only while the norm exceeds the bound and
  // is left out.
  // With bf16 main gradients (--grad-reduce-in-bf16) the distributed optimizer first copies its
  // shard of them to fp32 (megatron/core/optimizer/distrib_optimizer.py,
  // _copy_model_grads_to_main_grads: shard_model_grad.float(), reads 2 and writes 4), then runs
  // the same norm, Adam and copy on the fp32 shard; the zeroed buffer is bf16 (2).
  // With bf16 moments (the precision-aware optimizer) the optimizer state is the fp32 master plus
  // two bf16 moments, 8 bytes a parameter, and Transformer Engine's FusedAdam reads and writes
  // each moment at 2 bytes where Adam moved 4: its 28 bytes become 20 (the update itself still
  // runs in fp32: Megatron-LM's --exp-avg-dtype "does not affect the precision in the kernel").
  const Bytes state = moments_in_bf16 ? 8 : 12, adam = moments_in_bf16 ? 20 : 28;
  if (grads_in_bf16) return {2, 2, state, 2, 6 + 4 + adam + 6, 2};
  return {2, 4, state, 2, 4 + adam + 6, 4};
}

ComputeWork& ComputeWork::operator+=(const ComputeWork& o) {
  matmul += o.matmul;
  matmul_per_row += o.matmul_per_row;
  attention += o.attention;
  layer_passes += o.layer_passes;
  memory_traffic += o.memory_traffic;
  compiled_traffic += o.compiled_traffic;
  gemm_launches += o.gemm_launches;
  kernels += o.kernels;
  compiled_backward_traffic += o.compiled_backward_traffic;
  return *this;
}

ComputeWork ComputeWork::scaled(double factor) const {
  return {matmul * factor,         matmul_per_row * factor, attention * factor,
          layer_passes * factor,   memory_traffic * factor, gemm_launches * factor,
          compiled_traffic * factor, kernels * factor, compiled_backward_traffic * factor};
}

StageContents range_contents(const ModelConfig& m, int first, int count, bool embedding, bool lm_head) {
  StageContents c;
  c.moe_layers = m.moe_layers_in(first, count);
  c.dense_layers = count - c.moe_layers;
  c.embedding = embedding;
  c.lm_head = lm_head;
  if (lm_head) {
    c.mtp_layers = m.mtp_layers;
    (m.mtp_layer_is_moe() ? c.moe_layers : c.dense_layers) += m.mtp_layers;
  }
  return c;
}

StageContents chunk_contents(const ModelConfig& m, const Layout& l, int chunk) {
  const LayerRange range = chunk_layers(m.layers, l, chunk);
  return range_contents(m, range.first, range.count, chunk == 0, chunk == l.pp * l.vpp - 1);
}

std::vector<StageContents> stage_contents(const ModelConfig& m, const Layout& l) {
  std::vector<StageContents> stages(l.pp);
  for (int v = 0; v < l.vpp; ++v) {
    for (int r = 0; r < l.pp; ++r) {
      const StageContents c = chunk_contents(m, l, v * l.pp + r);
      stages[r].dense_layers += c.dense_layers;
      stages[r].moe_layers += c.moe_layers;
      stages[r].embedding |= c.embedding;
      stages[r].lm_head |= c.lm_head;
      stages[r].mtp_layers += c.mtp_layers;
    }
  }
  return stages;
}

// The warm-up forwards plus the one that the first backward follows (the schedule's own rule).
int in_flight_chunks(const Layout& l, int rank, int micro_batches) {
  return std::min(micro_batches * l.vpp, warmup_forwards(l.pp, l.vpp, rank) + 1);
}

CostModel::CostModel(const ModelConfig& model, const TrainingRun& run, const HardwareProfile& profile)
    : model_(model),
      run_(run),
      profile_(profile),
      network_(Network::from(profile)),
      layer_params_(layer_params(model)),
      params_(param_counts(model)),
      moe_flops_(moe_layer_flops(model, run.seq_len)),
      dense_flops_(dense_layer_flops(model, run.seq_len)),
      moe_matrices_(layer_matrices(model, true)),
      dense_matrices_(layer_matrices(model, false)),
      moe_tp_blocks_(tensor_parallel_blocks(model, true)),
      dense_tp_blocks_(tensor_parallel_blocks(model, false)),
      lm_head_flops_(lm_head_flops(model)),
      attention_spans_(attention_spans(model, run.seq_len)),
      attention_head_dim_((model.qk_head_dim() + model.value_head_dim()) / 2.0) {
  if (auto why = precision_unsupported(profile, run.precision)) throw InputError(*why);
  const int units = profile.device.gemm.compute_units;
  // SMs a run's communication kernels hold must leave some to the compute beside them.
  for (const auto& [sms, field, beside] : {std::tuple{run.tp_comm_sms, "tp_comm_sms", "the GEMMs beside TP communication"},
                                           std::tuple{run.flex_dispatcher_sms, "flex_dispatcher_sms", "the experts beside it"}}) {
    if (units > 0 && sms >= units) {
      throw InputError(profile.name + ": " + field + " " + std::to_string(sms) + " leaves none of the device's " +
                       std::to_string(units) + " compute units to " + beside);
    }
  }
  peak_ = profile.device.peak_flops(run.precision);
  // FP8 speeds up the GEMMs; attention's softmax path stays in bf16 (Transformer Engine recipe).
  attention_peak_ = run.precision == Precision::kFp8 ? profile.device.peak_flops(Precision::kBf16) : peak_;
  matmul_rate_ = peak_ * profile.efficiency.matmul_of(run.precision);
  // GEMMs an fp8 run leaves in bf16 run at the bf16 peak and the bf16 efficiency: each of their
  // FLOPs takes as long as this many at the run's matmul rate (1 outside fp8 runs).
  bf16_gemm_flops_ = matmul_rate_ / (attention_peak_ * profile.efficiency.matmul);
  attention_rate_ = attention_peak_ * profile.efficiency.attention;
  attention_anchor_speed_ = attention_anchor_speed(profile.efficiency.attention_by_shape, attention_passes_of(Pass::kBackward));
  memory_rate_ = profile.device.memory_bandwidth * profile.efficiency.memory;
  bytes_ = PrecisionBytes::of(run);
  usable_memory_ = profile.device.memory_bytes * (1.0 - run.memory_headroom);
  pre_dispatch_matrices_ = attention_matrices(model);
  pre_dispatch_matrices_.push_back(router_matrix(model));
}

// A CP rank holds 1/cp of each sequence's tokens (two of its 2 x cp chunks): every per-token
// cost, the attention's queries included, shrinks with it, while each query still meets its keys
// over the whole sequence (causally), brought by the CP ring (cp_ring_step_bytes).
double CostModel::micro_batch_tokens(const Layout& l) const {
  return static_cast<double>(l.micro_batch) * run_.seq_len / l.cp;
}

double CostModel::expert_skew(const Layout& l) const {
  // With EP = 1 every rank holds every expert, so skew between experts averages out; a capacity
  // factor caps what the busiest rank takes.
  return l.ep > 1 ? run_.expert_load() : 1.0;
}

// `count` GEMMs with rows x cols outputs over `inner`, on one device. The main loop runs at the
// useful FLOPs over the busy fraction of the schedule the GEMM library picks (tile, half tile and
// split-K, core/gemm), or, for a GEMM too thin to reuse its operands (a roofline below the
// ridge), at the bytes of reading both operands once. Each tile's epilogue then writes its outputs
// (`output_bytes` per element) after its main loop, not beside it: on DeepGEMM's H800 FP8 table
// (deepseek-ai/DeepGEMM#73, M = 4096, bf16 outputs) the K = 512, 1536, 2048 and 16384 GEMMs ran
// at 748, 1166, 1204 and 1470 TFLOPS; the main loop at 0.75 of the 1979 TFLOPS peak plus the
// output written at 90% of 3.35 TB/s gives 757, 1124, 1196 and 1440, where a roofline max of the
// two would give 1442 to 1484 for all four. Every call is one kernel launch.
// `quantized`: an fp8 run's GEMM in a Transformer Engine layer, 1-byte operands at the fp8 rate;
// any other GEMM of an fp8 run (the LM head, Megatron's plain ColumnParallelLinear; the MoE
// router) runs at the bf16 rate, counted as the fp8-rate FLOPs that take the same time.
// `sms_held`: compute units that communication kernels running beside the GEMM hold; the library
// lays the GEMM over the rest (cuBLAS's math SM count, DeepGEMM's num_sms), each unit at its
// share of the device rate. DeepSeek's published H800 training trace (deepseek-ai/profile-data,
// train.json: DeepSeek-V3 layers beside DeepEP's all-to-all on 20 SMs) ran its expert GEMMs on
// grids of 112 SMs: 31,104 rows over 4 experts, 7168 -> 4096 in 1739 us and 2048 -> 7168 in
// 946 us; this model gives 1635 and 922 us with 20 units held, 1414 and 808 us with none.
ComputeWork CostModel::gemm_work(double rows, double inner, double cols, double count, bool quantized,
                                 Bytes output_bytes, int sms_held) const {
  const double at_peak = quantized ? 1.0 : bf16_gemm_flops_;
  GemmTiling tiling = profile_.device.gemm;
  double unit_share = 1.0;
  if (sms_held > 0 && tiling.compute_units > sms_held) {
    unit_share = static_cast<double>(tiling.compute_units - sms_held) / tiling.compute_units;
    tiling.compute_units -= sms_held;
  }
  const GemmSchedule schedule =
      schedule_gemm(tiling, GemmShape{rows, cols, inner, count}, matmul_rate_ * unit_share / at_peak, memory_rate_);
  const Flops issued = at_peak * 2.0 * rows * inner * cols * count / schedule.busy_fraction / unit_share;
  const Bytes operand = quantized && run_.precision == Precision::kFp8 ? 1.0 : bytes_.activation;
  const Bytes read = count * operand * (rows * inner + inner * cols);
  ComputeWork w;
  if (issued / matmul_rate_ >= read / memory_rate_) {
    w.matmul = issued;
    w.memory_traffic = schedule.partial_bytes;
  } else {
    w.memory_traffic = read;
  }
  w.memory_traffic += count * rows * cols * output_bytes;
  w.gemm_launches = 1;
  return w;
}

// A benchmark's profiler times the kernel alone: the stream's gap after it is not in it.
Seconds CostModel::gemm_seconds(double rows, double inner, double cols, double count, int sms_held) const {
  const ComputeWork w = gemm_work(rows, inner, cols, count, true, bytes_.activation, sms_held);
  return compute_seconds(w) - w.gemm_launches * profile_.device.kernel_gap;
}

// Bytes one fp8 cast moves per element of a bf16 tensor: it reads the tensor (2) and writes the
// fp8 copy and its transpose for the other GEMM (1 + 1). Tensorwise (current) scaling first reads
// the tensor once more for its amax (+2: 6); delayed scaling reduces the amax inside the cast (4);
// mxfp8 adds a 1-byte scale per 32 values and blockwise a 4-byte scale per 128, for each copy
// (4 + 2/32 = 4 + 8/128). NVIDIA Transformer Engine, "Using FP8 with Transformer Engine".
Bytes fp8_cast_bytes(Fp8Recipe recipe) {
  constexpr Bytes kCast = 2.0 + 1.0 + 1.0;
  switch (recipe) {
    case Fp8Recipe::kTensorwise: return kCast + 2.0;
    case Fp8Recipe::kMxfp8: return kCast + 2.0 * 1.0 / 32.0;
    case Fp8Recipe::kBlockwise: return kCast + 2.0 * 4.0 / 128.0;
    case Fp8Recipe::kDelayed: break;
  }
  return kCast;
}

// Kernels one fp8 cast launches: tensorwise (current) scaling reduces the amax in a kernel of its
// own, turns it into the scale in another, then casts and transposes (Transformer Engine's
// Float8CurrentScalingQuantizer::quantize_impl: nvte_compute_amax, nvte_compute_scale_from_amax,
// nvte_quantize_v2; the amax and the cast are the two reads fp8_cast_bytes counts); the other
// recipes cast in one.
double fp8_cast_kernels(Fp8Recipe recipe) { return recipe == Fp8Recipe::kTensorwise ? 3.0 : 1.0; }

// Casts one quantization of `count` equal tensors launches: a grouped GEMM's experts are quantized
// one by one (TE's split_quantize -> multi_tensor_quantize_impl), except under delayed scaling,
// whose scales are known beforehand and which casts them all in one fused multi-tensor kernel
// (nvte_multi_cast_transpose: "only ... for FP8 delayed scaling"). matrix_work asks per round of
// experts, so beyond one round delayed scaling is charged a kernel a round, not one in all.
double fp8_casts(Fp8Recipe recipe, double count) { return recipe == Fp8Recipe::kDelayed ? 1.0 : count; }

// One weight matrix's GEMMs on one device for `rows` tokens: the forward (rows x outputs over the
// inputs), or the backward's input gradient (rows x inputs over the outputs) and weight gradient
// (inputs x outputs over the rows). Tensor parallelism (`tp` ways: the attention's or the experts')
// splits outputs, inputs or the rows. The weight gradient is accumulated into the fp32 main
// gradient in the GEMM's epilogue (Megatron-LM's --gradient-accumulation-fusion, on by default,
// and Transformer Engine's fuse_wgrad_accumulation): each element is read and written again;
// without the fusion a separate kernel adds it in (PrecisionBytes::grad_accumulation).
// In an fp8 run, Transformer Engine quantizes each GEMM's activation input (forward) and output
// gradient (backward), fp8_cast_bytes per element, memory-bound. Weights are cast once per step
// (first micro-batch) and left out.
ComputeWork CostModel::matrix_work(const WeightMatrix& w, double rows, double count, Pass pass, int tp,
                                   const Layout& l, bool quantized, int sms_held) const {
  quantized = quantized && w.quantized;
  double in = w.inputs, out = w.outputs;
  if (w.split == TpSplit::kOutputs) out /= tp;
  if (w.split == TpSplit::kInputs) in /= tp;
  if (w.split == TpSplit::kSequence) rows /= sequence_shards(l);
  const bool fp8 = quantized && run_.precision == Precision::kFp8;
  const Bytes cast = fp8_cast_bytes(run_.fp8_recipe);
  if (pass == Pass::kForward) {
    ComputeWork forward = gemm_work(rows, in, out, count, quantized, bytes_.activation, sms_held);
    if (fp8) {
      forward.memory_traffic += cast * rows * in * count;
      forward.kernels += fp8_casts(run_.fp8_recipe, count) * fp8_cast_kernels(run_.fp8_recipe);
    }
    return forward;
  }
  ComputeWork both = gemm_work(rows, out, in, count, quantized, bytes_.activation, sms_held);
  both += gemm_work(in, rows, out, count, quantized, bytes_.grad_accumulation(run_.grad_accumulation_fusion), sms_held);
  if (fp8) {
    both.memory_traffic += cast * rows * out * count;
    both.kernels += fp8_casts(run_.fp8_recipe, count) * fp8_cast_kernels(run_.fp8_recipe);
  }
  return both;
}

// Transformer Engine's TP overlap (tp_comm) runs a layer's collectives beside its GEMMs: the
// reduce-scatters after the row-parallel forward GEMMs (proj, fc2: its "pipeline" method) and
// the bulk all-gathers and reduce-scatters beside the column-parallel backward GEMMs (QKV, fc1:
// "bulk") on run.tp_comm_sms SMs, the GEMM beside them on the rest (set_sm_margin); its ring
// exchanges (the column-parallel forward, the row-parallel backward) go through copy engines.
// TE's default is 16 SMs a method (transformer_engine/pytorch/module/base.py, initialize_ub).
int CostModel::tp_overlap_sms_held(const WeightMatrix& m, Pass pass, const Layout& l) const {
  if (!run_.overlap.tp_comm || l.tp < 2) return 0;
  const TpSplit beside_comm = pass == Pass::kForward ? TpSplit::kInputs : TpSplit::kOutputs;
  return m.split == beside_comm ? run_.tp_comm_sms : 0;
}

// Every token meets the shared matrices; each local expert sees its share of the tokens of its
// etp x ep ranks (each holding 1/tp of a micro-batch), top_k copies each (stretched by routing
// skew), split etp ways.
ComputeWork CostModel::layer_gemm_work(bool moe_layer, Pass pass, const Layout& l) const {
  const double tokens = micro_batch_tokens(l);
  const LayerMatrices& matrices = moe_layer ? moe_matrices_ : dense_matrices_;
  ComputeWork w;
  for (const WeightMatrix& m : matrices.shared) {
    w += matrix_work(m, tokens, 1.0, pass, l.tp, l, true, tp_overlap_sms_held(m, pass, l));
  }
  if (!moe_layer || matrices.routed_expert.empty()) return w;
  const double rows = expert_rows_per_rank(l) * l.ep / model_.routed_experts;
  for (const WeightMatrix& m : matrices.routed_expert) w += expert_matrix_work(m, rows, pass, l);
  return w;
}

// Megatron-Core's grouped expert MLP (TEGroupedMLP) runs Transformer Engine's GroupedLinear, whose
// grouped GEMM is one cuBLAS GEMM per local expert, handed round-robin to TE's 4 compute streams
// (transformer_engine/common/gemm/cublaslt_gemm.cu, multi_stream_cublas_gemm, and
// common/util/multi_stream.cpp: num_compute_streams = 4; the CUTLASS grouped kernel only under
// NVTE_USE_CUTLASS_GROUPED_GEMM on Hopper). Up to 4 experts' GEMMs run at once and share the
// device's waves; the next 4 on the same streams follow them, each paying its own launch.
ComputeWork CostModel::expert_matrix_work(const WeightMatrix& m, double rows, Pass pass, const Layout& l) const {
  constexpr double kGroupedGemmStreams = 4.0;
  const double local_experts = static_cast<double>(model_.routed_experts) / l.ep;
  const double full_rounds = std::floor(local_experts / kGroupedGemmStreams);
  const double last_round = local_experts - full_rounds * kGroupedGemmStreams;
  ComputeWork w;
  if (full_rounds > 0) w += matrix_work(m, rows, kGroupedGemmStreams, pass, l.expert_tp(), l).scaled(full_rounds);
  if (last_round > 0) w += matrix_work(m, rows, last_round, pass, l.expert_tp(), l);
  return w;
}

// Routed token copies one expert-TP group gathers: each of its etp members dispatches its 1/tp of
// the micro-batch, top_k copies per token, and the busiest EP rank receives `skew` times the mean.
double CostModel::expert_rows_per_rank(const Layout& l) const {
  return micro_batch_tokens(l) / l.tp * l.expert_tp() * model_.top_k * expert_skew(l);
}

// Hockney's n_1/2 term: the sum over a layer's GEMMs of FLOPs per row (2 x weights on this device),
// each local expert's GEMM counting once.
Flops CostModel::layer_matmul_per_row(bool moe_layer, const Layout& l) const {
  const LayerFlops& f = moe_layer ? moe_flops_ : dense_flops_;
  Flops per_row = f.dense_matmul / l.tp;
  if (moe_layer && model_.top_k > 0) {
    const double local_experts = static_cast<double>(model_.routed_experts) / l.ep;
    per_row += f.expert_matmul / model_.top_k * local_experts / l.expert_tp();
  }
  return per_row;
}

// Forward passes' worth of work in a pass: the backward computes input and weight gradients, twice
// the forward's FLOPs, and moves twice its bytes.
double CostModel::passes_of(Pass pass) { return pass == Pass::kForward ? 1.0 : 2.0; }

// A fused kernel stores no s x s probabilities, so its backward recomputes QK^T and runs five
// GEMMs where the forward runs two: 2.5 forward passes (FlashAttention's own FLOP count,
// Dao-AILab/flash-attention benchmarks/benchmark_flash_attention.py, `flops`, mode "bwd"). The
// unfused backward reads the stored probabilities: four GEMMs, twice the forward.
double CostModel::attention_passes_of(Pass pass) const {
  if (pass == Pass::kForward) return 1.0;
  return run_.attention == AttentionKernel::kFused ? 2.5 : 2.0;
}

ComputeWork CostModel::layer_work(bool moe_layer, Pass pass, const Layout& l) const {
  const double passes = passes_of(pass);
  ComputeWork w = attention_work(pass, l);
  w += layer_gemm_work(moe_layer, pass, l);
  w.matmul_per_row = passes * layer_matmul_per_row(moe_layer, l);
  const double tokens = micro_batch_tokens(l);
  w.memory_traffic += passes * tokens * library_bytes_per_token(moe_layer, l);
  const Bytes activation = tokens * activation_bytes_per_token(moe_layer, l);
  if (pass == Pass::kForward) {
    w.compiled_traffic += tokens * residual_add_bytes_per_token(l) + activation;
  } else {
    w.memory_traffic += tokens * residual_gradient_sum_bytes_per_token(l);
    w.compiled_backward_traffic += tokens * dropout_gradient_bytes_per_token(l) + kActivationBackwardShare * activation;
  }
  if (moe_layer) w.memory_traffic += local_expert_sort_bytes(l) + quantization_padding_bytes(l);
  w.kernels += layer_kernels(moe_layer, pass, l);
  if (moe_layer) w += router_work(pass, l);
  w += qk_norm_work(pass, l);
  w += qkv_split_work(pass, l);
  w.layer_passes = passes;
  return w;
}

// Copies between the fused QKV projection and Transformer Engine's attention kernel. The projection
// writes one [s, b, groups, (heads/groups + 2) x d] buffer that Megatron-Core splits into views
// (attention.py get_query_key_value_tensors, TE's SplitAlongDim):
// - the query's reshape to [s, b, heads, d] copies it when a rank holds more than one key group
//   (the views' strides cannot merge);
// - RoPE (and QK-norm) write new query and key tensors, so the value view no longer sits beside
//   them in a packed buffer: TE finds no layout it supports and makes it contiguous
//   (dot_product_attention/utils.py, get_qkv_layout: "not_supported", x.contiguous());
// - backward, SplitAlongDim joins the three gradients into the projection's: a no-op when they are
//   views of one packed buffer, otherwise one torch.cat that reads and writes them all
//   (pytorch/utils.py, SplitAlongDim.backward), which GQA's separate query gradient always needs.
// A learned-position MHA model passes the views as TE's packed sbh3d layout: no copy either way.
// MLA and the unfused kernel split their tensors otherwise and are left out.
ComputeWork CostModel::qkv_split_work(Pass pass, const Layout& l) const {
  const ModelConfig& m = model_;
  ComputeWork w;
  if (m.is_mla() || run_.attention != AttentionKernel::kFused) return w;
  const double query = query_elements_per_token() / l.tp, key = key_elements_per_token() / l.tp;
  const bool gqa = m.heads != m.kv_heads;
  const bool query_copied = gqa && m.kv_heads > l.tp;
  const bool rewritten = rotated_elements_per_token() > 0 || qk_normed_elements_per_token() > 0;
  double copied = 0;  // elements a token, each read and written once
  if (pass == Pass::kForward) {
    copied = (query_copied ? query : 0.0) + (rewritten ? key : 0.0);
    w.kernels = (query_copied ? 1.0 : 0.0) + (rewritten ? 1.0 : 0.0);
  } else if (gqa || rewritten) {
    copied = query + 2.0 * key;
    w.kernels = 1.0;
  }
  w.memory_traffic = 2.0 * bytes_.activation * micro_batch_tokens(l) * copied;
  return w;
}

// Query and key elements QK-norm normalises per token, all heads; none for a model without it.
double CostModel::qk_normed_elements_per_token() const {
  if (model_.qk_norm_weights == 0 || model_.is_mla()) return 0.0;
  return query_elements_per_token() + key_elements_per_token();
}

// A (non-latent) attention's query and key widths per token, all heads: heads x head_dim and
// kv_heads x head_dim.
double CostModel::query_elements_per_token() const { return model_.heads * static_cast<double>(model_.head_dim); }
double CostModel::key_elements_per_token() const { return model_.kv_heads * static_cast<double>(model_.head_dim); }

// QK-norm (Megatron-Core's qk_layernorm: a TENorm over each query head and each key head once the
// QKV output is split, attention.py get_query_key_value_tensors). Transformer Engine's RMSNorm makes
// its input contiguous and keeps it for the backward (ops/basic/rmsnorm.py, op_forward:
// input_.contiguous(), save_for_backward): the query arrives as a copy already (the reshape of its
// split view), the key as a strided view of the QKV output, which the norm copies first.
// Forward: the key's copy (read and write) and each norm's read and write, 3 kernels. Backward:
// each norm reads its input and the output gradient and writes the input gradient, then reduces
// its weight gradient over the rows (rmsnorm_bwd and its finalize kernel): 4 kernels.
ComputeWork CostModel::qk_norm_work(Pass pass, const Layout& l) const {
  ComputeWork w;
  const double normed = qk_normed_elements_per_token();
  if (normed == 0.0) return w;
  const double key = key_elements_per_token();
  const double per_token = pass == Pass::kForward ? 2.0 * key + 2.0 * normed : 3.0 * normed;
  w.memory_traffic = bytes_.activation * micro_batch_tokens(l) * per_token / l.tp;
  w.kernels = pass == Pass::kForward ? 3.0 : 4.0;
  return w;
}

ComputeWork CostModel::layer_forward_work(bool moe_layer, const Layout& l) const {
  return layer_work(moe_layer, Pass::kForward, l);
}

ComputeWork CostModel::attention_core_work(const Layout& l) const { return attention_work(Pass::kForward, l); }

// A fused kernel's FLOPs in a pass count at the profile's attention rate times the kernel's
// measured speed for the model's head dimension (MLA: the mean of its query-key and value widths)
// and the causal sequence each kernel runs (a CP rank's chunk, a window, a chunk of chunked
// attention), layer kind by layer kind: the work is held as FLOPs at the anchor shape's rate.
// Its kernels: FlashAttention's forward is one, its backward three (a preprocess summing dO.O by
// row, the main kernel, a postprocess writing dQ: Dao-AILab/flash-attention,
// hopper/flash_bwd_launch_template.h). The unfused path runs its two batched GEMMs (four in the
// backward) around a softmax and a dropout kernel.
ComputeWork CostModel::attention_work(Pass pass, const Layout& l) const {
  ComputeWork w = unscaled_attention_core_work(l).scaled(attention_passes_of(pass));
  const bool forward = pass == Pass::kForward;
  if (run_.attention == AttentionKernel::kFused) {
    w.kernels = forward ? 1.0 : 3.0;
    if (run_.attention_dropout > 0) w.attention *= 1.0 + kFusedAttentionDropoutShare;
  } else {
    w.gemm_launches = forward ? 2.0 : 4.0;
    w.kernels = run_.attention_dropout > 0 ? 2.0 : 1.0;
  }
  const AttentionKernelTable& table = profile_.efficiency.attention_by_shape;
  if (run_.attention != AttentionKernel::kFused || table.empty()) return w;
  double keys = 0, anchor_time = 0;
  for (const AttentionSpan& span : attention_spans_) {
    const AttentionSpeed speed =
        relative_attention_speed(table, attention_head_dim_, span.kernel_seq_len / l.cp, attention_anchor_speed_);
    keys += span.layer_share * span.mean_keys;
    anchor_time += span.layer_share * span.mean_keys / (pass == Pass::kForward ? speed.forward : speed.backward);
  }
  w.attention *= anchor_time / keys;
  return w;
}

// Fused kernels skip the causal mask's upper half and never leave SRAM with the scores. Megatron's
// unfused path runs QK^T and PV as batched GEMMs over all s x s scores, and per score writes QK^T
// (a bytes), reads and writes it in the fused scale-mask-softmax (2a), under attention dropout
// reads it, writes the output and a 1-byte mask (2a + 1), and reads the result in PV (a): 4a, or
// 6a + 1 with dropout (the 5as^2b bytes it then stores are Korthikanti et al. 2022, eq. 1); its
// batched GEMMs stay in bf16 in an fp8 run. Heads are TP-sharded.
ComputeWork CostModel::unscaled_attention_core_work(const Layout& l) const {
  const ModelConfig& m = model_;
  const double queries = micro_batch_tokens(l) / l.tp;
  ComputeWork w;
  if (run_.attention == AttentionKernel::kFused) {
    w.attention = queries * dense_flops_.attention_core;
    return w;
  }
  const double scores = queries * m.heads * run_.seq_len;
  w.matmul = scores * 2.0 * (m.qk_head_dim() + m.value_head_dim()) * bf16_gemm_flops_;
  const double dropout = run_.attention_dropout > 0 ? 2.0 * bytes_.activation + 1.0 : 0.0;
  w.memory_traffic = scores * (4.0 * bytes_.activation + dropout);
  return w;
}

// Megatron-LM fuses each memory-bound step into one kernel that reads its inputs and writes its
// output once. Per token: two norms (read and write h each), two bias-dropout-adds (read the branch
// and the residual, write the sum: 3h each), the MLP activation (SwiGLU reads gate and up and writes
// their product: 3 ffn; a GELU MLP of 1.5x that width reads and writes the same bytes) and, in MoE
// layers, the permutation (read h, write top-k copies) and un-permutation (read the top-k expert
// outputs, write their weighted sum). Norms and adds are TP-split only under sequence parallelism.
// Rotary embeddings read and write the rotated part of each query and key head (Megatron-Core's
// apply_rotary_pos_emb, fused in Transformer Engine; MLA rotates its 64-wide rope part of each
// query head and the one key head it shares); learned positions are one add at the embedding.
// Who writes the kernel sets its speed: see library_bytes_per_token and compiled_bytes_per_token.
Bytes CostModel::elementwise_bytes_per_token(bool moe_layer, const Layout& l) const {
  return library_bytes_per_token(moe_layer, l) + compiled_bytes_per_token(moe_layer, l);
}

// Transformer Engine's kernels: the norms, RoPE, and the fused MoE permutation and un-permutation
// (--moe-permute-fusion, which Megatron-Core's MoE guide recommends).
Bytes CostModel::library_bytes_per_token(bool moe_layer, const Layout& l) const {
  const ModelConfig& m = model_;
  const double h = m.hidden;
  const double permutations = moe_layer ? m.top_k * expert_skew(l) * 2.0 * h + 2.0 * h : 0.0;
  return bytes_.activation * (4.0 * h / sequence_shards(l) + (permutations + 2.0 * rotated_elements_per_token()) / l.tp);
}

// Compiled kernels: Megatron's bias-dropout-adds and activations (bias_gelu_impl,
// bias_swiglu_impl and the experts' weighted SwiGLU) are @jit_fuser functions, which
// torch.compile (TorchScript before PyTorch 2.2) turns into kernels (megatron/core/jit.py).
Bytes CostModel::compiled_bytes_per_token(bool moe_layer, const Layout& l) const {
  return residual_add_bytes_per_token(l) + activation_bytes_per_token(moe_layer, l);
}

// The two bias-dropout-adds (attention's and MLP's), forward: each reads the branch and the
// residual and writes their sum, 3h, and under hidden dropout its 1-byte mask, h; TP-split only
// under sequence parallelism.
Bytes CostModel::residual_add_bytes_per_token(const Layout& l) const {
  const double masks = run_.hidden_dropout > 0 ? 2.0 * model_.hidden / sequence_shards(l) : 0.0;
  return residual_gradient_sum_bytes_per_token(l) + masks;
}

// Their backward. A residual's gradient is the output's, passed on; autograd then adds it to the
// gradient that comes back through the block's norm where the layer's input forks (the autograd
// engine's InputBuffer::accumulate: one plain torch add, reading two and writing one, 3h, at the
// library kernels' speed), twice a layer: the bytes of the forward's adds without their masks.
Bytes CostModel::residual_gradient_sum_bytes_per_token(const Layout& l) const {
  return bytes_.activation * 2.0 * 3.0 * model_.hidden / sequence_shards(l);
}

// Only a dropout has a gradient kernel of its own, compiled with its forward: it reads the output
// gradient and the mask and writes the branch's gradient, 2h and h bytes. Without dropout the
// branch takes the output's gradient as it is: torch's dropout at p = 0 returns its input (ATen
// dropout; inductor's decomposition clones it), so the compiled backward has nothing to compute.
Bytes CostModel::dropout_gradient_bytes_per_token(const Layout& l) const {
  if (run_.hidden_dropout == 0) return 0.0;
  return (2.0 * bytes_.activation + 1.0) * 2.0 * model_.hidden / sequence_shards(l);
}

// The SwiGLU (or GELU of 1.5x the width) of a dense MLP, or of a token's routed copies and shared
// experts, TP-split: kSwigluForwardElements a unit of width.
Bytes CostModel::activation_bytes_per_token(bool moe_layer, const Layout& l) const {
  const ModelConfig& m = model_;
  double width = m.dense_ffn;
  if (moe_layer) width = m.top_k * expert_skew(l) * m.expert_ffn + m.shared_experts * m.shared_expert_ffn;
  return bytes_.activation * kSwigluForwardElements * width / l.tp;
}

// Megatron-Core's all-to-all dispatcher receives each rank's tokens in the order of that rank's
// local experts; with more than one local expert it sorts them by expert after the dispatch and
// back before the combine (MoEAlltoAllTokenDispatcher.dispatch_postprocess and
// combine_preprocess: sort_chunks_by_idxs over every received copy, after the expert-TP gather).
// Each sort reads and writes every copy once, and its backward is the inverse sort: the same
// bytes in either pass. The flex dispatcher (DeepEP, HybridEP) permutes the received tokens
// straight into expert order and needs no second sort.
Bytes CostModel::local_expert_sort_bytes(const Layout& l) const {
  if (run_.ep_dispatcher != EpDispatcher::kAllToAll || model_.routed_experts <= l.ep) return 0.0;
  return received_copies_there_and_back_bytes(l);
}

// A step over the received copies and its inverse (a sort and its unsort, a padding and its
// unpadding), in one pass: each reads and writes every copy once, 2 x 2 x h a copy.
Bytes CostModel::received_copies_there_and_back_bytes(const Layout& l) const {
  return 2.0 * 2.0 * bytes_.activation * expert_rows_per_rank(l) * model_.hidden;
}

// An fp8 run's grouped expert GEMMs take token counts aligned to what the fp8 GEMM needs:
// Megatron-Core's TEGroupedMLP pads the received copies into an aligned buffer before fc1 and
// strips the padding after fc2 (Transformer Engine's Fp8Padding and Fp8Unpadding, one
// fused_multi_row_padding kernel each), backward the reverse; each reads and writes every copy.
// The flex dispatcher (HybridEP, DeepEP) pads inside its own permutation and skips them
// (moe_utils.py, skip_routed_expert_padding), as a router padding its routing map would
// (--moe-router-padding-for-quantization, Megatron-Core's default off, not modelled).
Bytes CostModel::quantization_padding_bytes(const Layout& l) const {
  if (run_.precision != Precision::kFp8 || run_.ep_dispatcher != EpDispatcher::kAllToAll || !model_.is_moe()) return 0.0;
  return received_copies_there_and_back_bytes(l);
}

// The kernels behind those bytes, per layer and pass, as Megatron-Core's transformer layer on
// Transformer Engine launches them. Forward: the two norms, the two bias-dropout-adds, the MLP
// activation (and a shared expert's), RoPE on the queries and on the keys, and in an MoE layer the
// permutation, the un-permutation, the sorts by local expert and an fp8 run's padding and
// unpadding. Backward: each of those once, but
// each norm twice (its input gradient, then the reduction of its weight gradient over the rows:
// ln_bwd_kernel and ln_bwd_finalize_kernel, both in DeepSeek's H800 training trace,
// deepseek-ai/profile-data train.json). The fp8 casts count with their GEMMs (matrix_work) and
// the attention core with its kernels (attention_work).
double CostModel::layer_kernels(bool moe_layer, Pass pass, const Layout& l) const {
  constexpr double kNorms = 2.0, kBiasDropoutAdds = 2.0, kActivation = 1.0;
  double kernels = kNorms * (pass == Pass::kForward ? 1.0 : 2.0) + kBiasDropoutAdds + kActivation;
  if (pass == Pass::kBackward && run_.hidden_dropout > 0) kernels += kBiasDropoutAdds;  // the dropouts' gradients
  if (rotated_elements_per_token() > 0) kernels += 2.0;
  if (!moe_layer) return kernels;
  kernels += 2.0;  // permutation and un-permutation
  if (model_.shared_experts > 0) kernels += kActivation;
  if (local_expert_sort_bytes(l) > 0) kernels += 2.0;
  if (quantization_padding_bytes(l) > 0) kernels += 2.0;  // the padding and the unpadding
  return kernels;
}

// Megatron-Core's router (megatron/core/transformer/moe/router.py, moe_utils.py; Megatron-LM main,
// 2026), counted kernel by kernel beyond the gate GEMM, per MoE layer and pass.
// Forward. The top-k: with --moe-router-fusion one Transformer Engine kernel
// (fused_topk_with_score_function); in plain torch a top-k, the score function, the cast back, and
// the probabilities and the routing map scattered into dense [tokens, experts] tensors (zeros and
// scatter; zeros, int, scatter and bool): 9. Any auxiliary loss first scores every expert again
// (compute_routing_scores_for_aux_loss: fused 1; a softmax, a top-k and the map's 4 in plain
// torch: 6); then each loss counts the tokens per expert (routing_map.sum), all-reduces them over
// the TP x CP group when it has more than one rank, computes the loss (fused_moe_aux_loss, or a sum,
// a product, a sum and a scale: 4) and logs it (the division by its coefficient and the tracker's
// add: 2); the sequence-level loss divides by the batch once more. The expert bias counts the
// tokens per expert again and adds them to its tally (2, no gradient). The z-loss is plain torch
// in any case: a log-sum-exp (PyTorch's logsumexp: the row max, its abs, the test for infinity,
// the masked fill, the difference, its exponentials, their sum, the log and the max added back: 9),
// the square, the mean and the scale, then the logging's 2: 14.
// Backward. The top-k's gradient (fused 1; the gather, the cast, the softmax's and the top-k's
// scatter back: 5); with a loss, the scores' gradient (1) and the add of the two gradients of the
// logits (1), and per loss the autoscaler's ones and scale (MoEAuxLossAutoScaler.backward: 2) and
// the loss's own gradient (fused 1; the scale's and the product's in plain torch: 2), plus the
// sequence loss's division. The z-loss's: the autoscaler's 2, the scale's, the mean's, the square's
// 2, the log-sum-exp's difference, exponentials and product, and the add into the logits' gradient:
// 10.
double CostModel::router_kernels(Pass pass, const Layout& l) const {
  const RouterBalancing& b = run_.router_balancing;
  const bool fused = run_.router_fusion;
  const int losses = static_cast<int>(b.aux_loss) + static_cast<int>(b.seq_aux_loss) + static_cast<int>(b.global_aux_loss);
  const double sequence_divisions = b.seq_aux_loss ? 1.0 : 0.0;
  if (pass == Pass::kForward) {
    double kernels = fused ? 1.0 : 9.0;
    if (b.any_loss()) kernels += fused ? 1.0 : 6.0;
    const double counts_reduced = l.tp * l.cp > 1 ? 1.0 : 0.0;
    kernels += losses * (1.0 + counts_reduced + (fused ? 1.0 : 4.0) + 2.0) + sequence_divisions;
    if (b.expert_bias) kernels += 2.0;
    if (b.z_loss) kernels += 14.0;
    return kernels;
  }
  double kernels = fused ? 1.0 : 5.0;
  if (b.any_loss()) kernels += 2.0;
  if (b.z_loss) kernels += 10.0;
  return kernels + losses * (2.0 + (fused ? 1.0 : 2.0)) + sequence_divisions;
}

// Each router kernel streams the [tokens, experts] scores of the rank's tokens in and out, taken
// as fp32 (8 bytes a score): the size of what a top-k, a softmax, a scatter or their gradients
// read and write.
ComputeWork CostModel::router_work(Pass pass, const Layout& l) const {
  ComputeWork w;
  w.kernels = router_kernels(pass, l);
  w.memory_traffic = w.kernels * 8.0 * micro_batch_tokens(l) / sequence_shards(l) * model_.routed_experts;
  return w;
}

double CostModel::rotated_elements_per_token() const {
  const ModelConfig& m = model_;
  if (m.learned_positions) return 0.0;
  if (m.is_mla()) return (m.heads + 1.0) * m.rope_head_dim;
  return query_elements_per_token() + key_elements_per_token();
}

Seconds memory_bound_seconds(const ComputeWork& w, const HardwareProfile& p) {
  const Efficiency& e = p.efficiency;
  return w.memory_traffic / (p.device.memory_bandwidth * e.memory) +
         w.compiled_traffic / (p.device.memory_bandwidth * e.compiled_memory()) +
         w.compiled_backward_traffic / (p.device.memory_bandwidth * e.compiled_backward_memory());
}

// Hockney's model per GEMM: rows / (rows + n_1/2) of the asymptotic rate, i.e. a time of
// FLOPs / rate plus n_1/2 x FLOPs-per-row / rate (Hockney and Jesshope, Parallel Computers 2, 1988).
// Every kernel then waits the device's kernel gap after the one before it: the GEMM launch latency
// is a kernel's own time (XLA's matmul table, which it is fitted to, holds the median kernel time
// its KernelTracer records: xla/tools/matmul_perf_table_gen.cc), not the stream's time between two.
// Every other kernel adds the device's kernel floor to its bytes' time: in the profiled traces a
// kernel over a few hundred values still takes microseconds.
Seconds CostModel::compute_seconds(const ComputeWork& w) const {
  const Efficiency& e = profile_.efficiency;
  const DeviceSpec& d = profile_.device;
  return (w.matmul + e.matmul_half_rows * w.matmul_per_row) / matmul_rate_ + w.attention / attention_rate_ +
         memory_bound_seconds(w, profile_) + w.layer_passes * profile_.overheads.per_layer_pass +
         w.gemm_launches * d.gemm.launch_latency + w.kernels * d.kernel_floor +
         (w.gemm_launches + w.kernels) * d.kernel_gap;
}

Seconds CostModel::layer_forward_seconds(bool moe_layer, const Layout& l) const {
  return compute_seconds(layer_forward_work(moe_layer, l));
}

// Stored activations of one layer for one micro-batch, per device. Korthikanti et al. 2022
// ("Reducing Activation Recomputation in Large Transformer Models", section 4) adapted to
// RMSNorm, GQA, SwiGLU and MoE: bf16 tensors kept for backward, linear inputs in fp8 in an fp8
// run. Each block's norm input and first linear's input are split over TP only under sequence
// parallelism; everything else is TP-sharded.
// Attention keeps Q/K/V, the core output and the fp32 softmax statistics; only the unfused kernel
// whose core attention is not recomputed also keeps the s x s probabilities, dropout mask and
// output (eq. 1: 5as^2b). Selective recompute's other modules drop what they rebuild (MLA's
// up-projected Q/K/V, a separate norm's output, the experts' activation, a dense MLP's insides).
// Routed experts keep, per token copy sent, their output (h), the input gathered over the
// expert-TP group (etp x h) and their SwiGLU's gate, up and product.
Bytes CostModel::layer_activation_bytes(bool moe_layer, const Layout& l) const {
  const ModelConfig& m = model_;
  const double tokens = micro_batch_tokens(l);
  const double h = m.hidden, heads = m.heads;
  const double a = bytes_.activation;
  // The inputs a linear layer keeps for its weight gradient: in an fp8 run Transformer Engine keeps
  // the fp8 copy it cast (Megatron-Core's MoE README, FP8 training: "stores linear layer inputs
  // in FP8 instead of BF16", half their activation memory).
  const double in = run_.precision == Precision::kFp8 ? 1.0 : a;
  if (l.recompute == Recompute::kFull) return a * tokens * h / sequence_shards(l);  // layer input
  // Q, K and V for the attention core; MLA's latents are its up-projections' inputs.
  const double qkv_width = m.is_mla() ? heads * (2.0 * m.qk_head_dim() + m.value_head_dim()) + m.rope_head_dim
                                      : query_elements_per_token() + 2.0 * key_elements_per_token();
  const double latents = m.is_mla() ? m.kv_lora_rank + m.q_lora_rank : 0.0;
  double sharded = a * qkv_width + in * (latents + heads * m.value_head_dim()) + 4.0 * heads;
  sharded += a * qk_normed_elements_per_token();  // QK-norm's inputs (qk_norm_work)
  if (run_.attention == AttentionKernel::kUnfused && !l.recomputes(RecomputeModule::kCoreAttn)) {
    // The softmax output, and under dropout its mask and output (Korthikanti's 5as^2b).
    sharded += (a + (run_.attention_dropout > 0 ? a + 1.0 : 0.0)) * heads * run_.seq_len;
  }
  // MLA's up-projected queries, keys and values, rebuilt from the latents it keeps.
  if (l.recomputes(RecomputeModule::kMlaUpProj)) sharded -= a * qkv_width;
  // The first linear input of a block whose norm is recomputed (its output, which the linear kept).
  double recomputed_inputs = l.recomputes(RecomputeModule::kLayernorm) ? separate_norms(moe_layer) : 0.0;
  if (!moe_layer) {
    if (l.recomputes(RecomputeModule::kMlp)) {
      ++recomputed_inputs;  // a checkpointed MLP keeps only its input, the block's norm input
    } else {
      sharded += (2.0 * a + in) * m.dense_ffn;  // gate and up; the activation, fc2's input
    }
  } else {
    // Per routed copy: the input gathered over the expert-TP group (fc1's), gate and up, and the
    // activation (fc2's input). The routing probability weighs the activation (Megatron-Core's
    // weighted SwiGLU, since its "memory efficient token permutation", core 0.13), so the
    // un-permutation is a plain sum that keeps only its index map (Transformer Engine's
    // moe_unpermute without merging probs), not the experts' outputs. The permutations and the
    // dispatcher's sorts keep only their index maps, so the permuted tokens themselves are not
    // kept beyond fc1's copy. The activation is rebuilt from gate and up under moe_act recompute.
    const double activation = l.recomputes(RecomputeModule::kMoeAct) ? 0.0 : in;
    const double routed = m.top_k * expert_skew(l) * (in * l.expert_tp() * h + (2.0 * a + activation) * m.expert_ffn);
    sharded += routed + (2.0 * a + in) * m.shared_experts * m.shared_expert_ffn +
               8.0 * m.routed_experts;  // fp32 router logits and probabilities
  }
  // Both blocks' norm inputs, and their first linear inputs (QKV's, fc1's); under hidden dropout
  // both bias-dropout-adds' 1-byte masks.
  const double masks = run_.hidden_dropout > 0 ? 2.0 * h : 0.0;
  const double sequence_split = 2.0 * (a + in) * h - recomputed_inputs * in * h + masks;
  return tokens * (sequence_split / sequence_shards(l) + sharded / l.tp);
}

// The output layer (vocab-parallel) and its cross-entropy: the logits are upcast to fp32 (read a,
// write 4 bytes each), then a softmax reads them twice (max, then exp and sum) and writes them once.
// Megatron-Core's vocab_parallel_cross_entropy is a chain of plain torch ops over large contiguous
// tensors, which stream near the library kernels' speed: Liger-Kernel's benchmark data has it at
// 21.25 ms forward and backward over 8,192 x 131,072 bf16 logits on H100 80GB HBM3, where these 54
// bytes a logit at the H100 profile's 0.90 take 19.2 ms (and at Megatron's compiled kernels' 0.55,
// 31.5 ms).
ComputeWork CostModel::lm_head_work(Pass pass, const Layout& l) const {
  const double tokens = micro_batch_tokens(l);
  const double passes = passes_of(pass);
  const WeightMatrix head{static_cast<double>(model_.hidden), static_cast<double>(model_.vocab), TpSplit::kOutputs};
  ComputeWork w = matrix_work(head, tokens, 1.0, pass, l.tp, l, false);
  w.matmul_per_row = passes * lm_head_flops_ / l.tp;
  w.memory_traffic += passes * tokens * model_.vocab / l.tp * (bytes_.activation + 4.0 + 12.0);
  w.kernels += passes * 3.0;  // the upcast, the max, the exponentials' sum and write
  return w;
}

// The input embedding (Megatron-Core's VocabParallelEmbedding, a plain torch embedding in either
// precision). Forward: each rank gathers the rows of every token of the micro-batch (read and
// write h), and learned positions add theirs (read both, write the sum). Backward: PyTorch's
// embedding_dense_backward fills a dense gradient of the rank's whole vocabulary shard with zeros,
// then adds each token's gradient row into it (read it, read and write the table row); the
// embedding has no fused accumulation, so Megatron's DDP hook adds that dense gradient into the
// main gradient (param.main_grad.add_(param.grad)): per table element grad_accumulation(false),
// the dense write and read plus the main gradient's read and write. Positions, replicated over
// TP, do the same over their seq x h table.
ComputeWork CostModel::embedding_work(Pass pass, const Layout& l) const {
  const double a = bytes_.activation, h = model_.hidden;
  const double tokens = micro_batch_tokens(l);  // every rank of the TP group looks up every token
  const double positions = model_.learned_positions ? 1.0 : 0.0;
  ComputeWork w;
  if (pass == Pass::kForward) {
    w.memory_traffic = tokens * h * a * (2.0 + 3.0 * positions);
    w.kernels = 1.0 + positions;
    return w;
  }
  const double table = static_cast<double>(model_.vocab) * h / l.tp + positions * run_.seq_len * h;
  w.memory_traffic = table * bytes_.grad_accumulation(false) + (1.0 + positions) * tokens * h * 3.0 * a;
  w.kernels = 3.0 * (1.0 + positions);  // per table: the zero fill, the rows' adds, the main gradient's add
  return w;
}

// Each MTP depth adds, beside its layer (counted with the stage's layers), the 2h x h projection
// (column-parallel in Megatron-Core) and another pass of the shared LM head and its loss.
ComputeWork CostModel::stage_work(const StageContents& s, Pass pass, const Layout& l) const {
  ComputeWork w = layers_work(s, pass, l);
  if (s.embedding) w += embedding_work(pass, l);
  if (s.lm_head) w += lm_head_work(pass, l);
  if (s.mtp_layers > 0) {
    const double h = model_.hidden;
    ComputeWork depth = matrix_work(WeightMatrix{2.0 * h, h, TpSplit::kOutputs}, micro_batch_tokens(l), 1.0, pass, l.tp, l);
    depth += lm_head_work(pass, l);
    w += depth.scaled(s.mtp_layers);
  }
  return w;
}

// A stage's layers without the ends of the model; a kind it holds none of costs nothing (a dense
// model has no expert shapes to evaluate).
ComputeWork CostModel::layers_work(const StageContents& s, Pass pass, const Layout& l) const {
  ComputeWork w;
  if (s.moe_layers > 0) w += layer_work(true, pass, l).scaled(s.moe_layers);
  if (s.dense_layers > 0) w += layer_work(false, pass, l).scaled(s.dense_layers);
  return w;
}

ComputeWork CostModel::forward_work(const StageContents& s, const Layout& l) const {
  return stage_work(s, Pass::kForward, l);
}

// Backward GEMMs have the forward's FLOPs twice over, in shapes of their own; recompute adds
// what it repeats of the forward.
ComputeWork CostModel::backward_work(const StageContents& s, const Layout& l) const {
  ComputeWork w = stage_work(s, Pass::kBackward, l);
  if (l.recompute == Recompute::kFull) {
    w += layers_work(s, Pass::kForward, l);
  } else if (l.recompute == Recompute::kSelective) {
    w += selective_recompute_work(s, l);
  }
  return w;
}

// Norms of a layer that are modules of their own: a MoE layer's pre-MLP norm (the router and the
// experts take its output), and MLA's input norm (its two down-projections do); Transformer
// Engine fuses the others into the linear after them (LayerNormLinear, LayerNormMLP), where
// Megatron-Core's layernorm recompute finds an IdentityOp and leaves them.
int CostModel::separate_norms(bool moe_layer) const { return (moe_layer ? 1 : 0) + (model_.is_mla() ? 1 : 0); }

// The forward work selective recompute repeats before a stage's backward, per module: the fused
// attention core; the separate norms (read and write h); the routed experts' SwiGLU (read gate
// and up, write their product, per copy); MLA's up-projection GEMMs and its RoPE; a dense
// layer's MLP with its fused norm (its GEMMs, the norm and the activation).
ComputeWork CostModel::selective_recompute_work(const StageContents& s, const Layout& l) const {
  const RecomputeModules& r = l.recompute_modules;
  const ModelConfig& m = model_;
  const double tokens = micro_batch_tokens(l), a = bytes_.activation, h = m.hidden;
  const int layers = s.moe_layers + s.dense_layers;
  ComputeWork w;
  if (r.has(RecomputeModule::kCoreAttn)) w += attention_work(Pass::kForward, l).scaled(layers);
  const double norms = s.moe_layers * separate_norms(true) + s.dense_layers * separate_norms(false);
  if (r.has(RecomputeModule::kLayernorm)) {
    w.memory_traffic += norms * 2.0 * a * tokens * h / sequence_shards(l);
    w.kernels += norms;
  }
  if (r.has(RecomputeModule::kMoeAct) && s.moe_layers > 0) {
    w.compiled_traffic += s.moe_layers * kSwigluForwardElements * a * expert_rows_per_rank(l) * m.expert_ffn / l.expert_tp();
    w.kernels += s.moe_layers;
  }
  if (r.has(RecomputeModule::kMlaUpProj)) {
    ComputeWork up;
    for (const WeightMatrix& matrix : mla_up_projections(m)) up += matrix_work(matrix, tokens, 1.0, Pass::kForward, l.tp, l);
    up.memory_traffic += 2.0 * a * tokens * rotated_elements_per_token() / l.tp;
    up.kernels += 2.0;  // RoPE on the queries and on the key
    w += up.scaled(layers);
  }
  if (r.has(RecomputeModule::kMlp) && s.dense_layers > 0) {
    ComputeWork mlp;
    for (const WeightMatrix& matrix : dense_mlp_matrices(m)) {
      mlp += matrix_work(matrix, tokens, 1.0, Pass::kForward, l.tp, l, true, tp_overlap_sms_held(matrix, Pass::kForward, l));
    }
    mlp.memory_traffic += a * tokens * 2.0 * h / sequence_shards(l);
    mlp.compiled_traffic += tokens * activation_bytes_per_token(false, l);
    mlp.kernels += 2.0;  // the norm and the activation
    w += mlp.scaled(s.dense_layers);
  }
  return w;
}

Seconds CostModel::forward_seconds(const StageContents& s, const Layout& l) const {
  return compute_seconds(forward_work(s, l));
}

Seconds CostModel::backward_seconds(const StageContents& s, const Layout& l) const {
  return compute_seconds(backward_work(s, l));
}

// Megatron TP with sequence parallelism: an all-gather before and a reduce-scatter after both
// the attention and the MLP block, each over one activation buffer (Korthikanti 2022, sec. 4.2.2).
Bytes CostModel::tp_collective_bytes(const Layout& l) const {
  return bytes_.activation * micro_batch_tokens(l) * model_.hidden;
}

// Each TP rank dispatches its 1/tp slice of the tokens, top-k copies each; the busiest EP rank
// receives `skew` times the mean.
Bytes CostModel::ep_payload_bytes(const Layout& l) const {
  const double tokens = micro_batch_tokens(l);
  return bytes_.activation * tokens / l.tp * model_.top_k * model_.hidden * expert_skew(l);
}

namespace {

// Chance that a token's top_k distinct experts, drawn evenly from the model's routed experts,
// include at least one of a given `held` of them (a rank's or a node's): one minus the
// hypergeometric chance of none.
double any_expert_held(int experts, int top_k, double held) {
  double none = 1.0;
  for (int i = 0; i < top_k; ++i) none *= std::max(0.0, (experts - held - i) / (experts - i));
  return 1.0 - none;
}

}  // namespace

// The all-to-all dispatcher sends each token's top_k copies evenly over the EP ranks. The flex
// dispatcher (DeepEP's normal kernels, HybridEP) sends a token once across the network to each
// other node that holds any of its experts, to the rank of the same local index there, and that
// rank forwards it over NVLink to each other rank of its node that holds any of them; its own
// node's ranks get it from the sender the same way. So each rank forwards, inside its node, the
// tokens of one rank of every node of the group, its own included: the NVLink share grows with
// the nodes the group spans. Its kernels drive the NIC at the profile's flex_inter_node for the
// group's remote nodes where NCCL reaches inter_node_comm (DeepEP's normal kernels with one remote
// peer a rank reach half of what three reach: docs/legacy.md, EP 16 over 2 nodes 43 GB/s logical
// where EP 32 reaches 58): the remote sends count as the bytes that take NCCL's link as long, so
// the analytic model and the simulation (whose links run at inter_node_comm) agree.
AllToAllSends CostModel::ep_sends(const Layout& l) const {
  return ep_sends(l, span(RankGrid(l, profile_.node.devices), GroupKind::kEp));
}

AllToAllSends CostModel::ep_sends(const Layout& l, const GroupSpan& group) const {
  const Bytes payload = ep_payload_bytes(l);
  if (run_.ep_dispatcher == EpDispatcher::kAllToAll) return even_sends(group, payload);
  const Bytes per_copy = payload / model_.top_k;
  const int per_node = std::min(group.members_per_node, group.size);
  const double experts_per_rank = static_cast<double>(model_.routed_experts) / group.size;
  const double nodes = static_cast<double>(group.size) / per_node;
  const Efficiency& e = profile_.efficiency;
  return {per_copy * nodes * (per_node - 1) * any_expert_held(model_.routed_experts, model_.top_k, experts_per_rank),
          per_copy * (nodes - 1) * any_expert_held(model_.routed_experts, model_.top_k, experts_per_rank * per_node) *
              e.inter_node_comm / e.flex_inter_node(nodes - 1)};
}

// Sequence parallelism lets each TP rank send only its 1/tp slice across a stage boundary.
Bytes CostModel::pp_boundary_bytes(const Layout& l) const { return tp_collective_bytes(l) / l.tp; }

// Blocks split over the attention's TP group: attention and MLP; in a MoE layer attention and the
// shared experts (Megatron-Core's SharedExpertMLP gathers and scatters its own input), the routed
// experts communicating through the token dispatcher instead.
int CostModel::tp_blocks(const StageContents& s) const {
  return s.dense_layers * static_cast<int>(dense_tp_blocks_.size()) + s.moe_layers * static_cast<int>(moe_tp_blocks_.size());
}

// Megatron's TP (Shoeybi et al. 2019; with sequence parallelism, Korthikanti et al. 2022, sec.
// 4.2.2), per block. Forward: an all-reduce after it (with SP, an all-gather before and a
// reduce-scatter after), 2 units the next block waits for. Backward: the column-parallel input
// gradient's all-reduce (or reduce-scatter) runs beside the weight-gradient GEMM (Megatron-LM's
// async all-reduce, switch tp_grad); with SP the row-parallel output gradient's all-gather is
// waited for, while the column-parallel input is re-gathered beside the input-gradient GEMM. Full
// recompute repeats the forward's. Transformer Engine's TP overlap (tp_comm) pipelines every one
// of them with the GEMM beside it. A dense MLP recomputed on its own (the mlp module) repeats its
// block's pair.
CostModel::TpCollectives CostModel::tp_collectives(const StageContents& s, bool forward, const Layout& l) const {
  TpCollectives c;
  if (forward) {
    c.exposed = 2;
  } else {
    c.exposed = l.sequence_parallel ? 1 : 0;
    c.overlapped = 2;
    if (l.recompute == Recompute::kFull) c.exposed += 2;
  }
  const int blocks = tp_blocks(s);
  c = {c.exposed * blocks, c.overlapped * blocks};
  if (!forward && l.recomputes(RecomputeModule::kMlp)) {
    c.exposed += 2 * s.dense_layers;
  }
  if (run_.overlap.tp_comm) return {0, c.total()};
  if (!run_.overlap.tp_grad) return {c.total(), 0};
  return c;
}

// Megatron-Core's token dispatchers with expert TP: the all-to-all dispatcher (EP > 1) all-gathers
// the routed copies it received over the etp group and reduce-scatters the experts' output back;
// the all-gather dispatcher (EP 1) gathers the tokens themselves, before they are copied top_k
// times. Backward runs the reverse pair, in line with the dispatch; full recompute repeats the
// forward's pair.
int CostModel::expert_tp_collectives(const StageContents& s, bool forward, const Layout& l) const {
  if (l.expert_tp() < 2) return 0;
  const int per_layer = forward || l.recompute != Recompute::kFull ? 2 : 4;
  return s.moe_layers * per_layer;
}

Bytes CostModel::expert_tp_collective_bytes(const Layout& l) const {
  const double copies = l.ep > 1 ? 1.0 : model_.top_k;
  return bytes_.activation * expert_rows_per_rank(l) / copies * model_.hidden;
}

// The backward GEMMs of the matrices Megatron splits by output column (QKV, MLP up/gate, shared
// experts' up/gate): their input-gradient collectives run beside them.
ComputeWork CostModel::column_parallel_backward_work(bool moe_layer, const Layout& l) const {
  const LayerMatrices& matrices = moe_layer ? moe_matrices_ : dense_matrices_;
  ComputeWork w;
  for (const WeightMatrix& m : matrices.shared) {
    if (m.split == TpSplit::kOutputs) w += matrix_work(m, micro_batch_tokens(l), 1.0, Pass::kBackward, l.tp, l);
  }
  return w;
}

Seconds CostModel::tp_overlap_window(const StageContents& s, bool forward, const Layout& l) const {
  const Pass pass = forward ? Pass::kForward : Pass::kBackward;
  if (run_.overlap.tp_comm) return compute_seconds(layers_work(s, pass, l));
  if (forward) return 0.0;
  ComputeWork w;
  if (s.moe_layers > 0) w += column_parallel_backward_work(true, l).scaled(s.moe_layers);
  if (s.dense_layers > 0) w += column_parallel_backward_work(false, l).scaled(s.dense_layers);
  return compute_seconds(w);
}

bool CostModel::te_tp_overlap_applies(const Layout& l) const {
  return run_.overlap.tp_comm && l.sequence_parallel && l.tp > 1;
}

CostModel::TpBlockGemms CostModel::tp_block_gemms(const std::vector<WeightMatrix>& block, Pass pass, const Layout& l) const {
  TpBlockGemms g;
  for (const WeightMatrix& m : block) {
    if (m.split == TpSplit::kSequence) continue;
    const Seconds t = compute_seconds(matrix_work(m, micro_batch_tokens(l), 1.0, pass, l.tp, l, true, tp_overlap_sms_held(m, pass, l)));
    (m.split == TpSplit::kOutputs ? g.column : g.row) += t;
  }
  return g;
}

// Transformer Engine pairs each TP collective with one GEMM (transformer_engine/pytorch/module/
// base.py, initialize_ub's default methods). Forward: the column-parallel GEMM (QKV, fc1) runs in
// tp chunks while a ring exchange brings the next one ("ring_exchange", num_splits = tp), so each
// of the tp - 1 exchanges waits for what outlasts a chunk; the row-parallel GEMM (proj, fc2) runs in
// 4 chunks, each chunk's reduce-scatter after it ("pipeline", num_splits 4, not overlapping the
// first GEMM), so the last quarter's reduce-scatter is always waited for. Backward: the row-parallel
// input gradient is a ring exchange again; the column-parallel input gradient runs beside the
// all-gather of its input, and its weight gradient beside the reduce-scatter of the input gradient
// ("bulk"), each half of the block's backward GEMMs (equal FLOPs). Recomputed forwards pair as the
// forward does.
Seconds CostModel::te_tp_overlap_exposed(const StageContents& s, bool forward, const Layout& l, Seconds each) const {
  constexpr double kPipelineSplits = 4.0;
  const double tp = l.tp;
  const GroupSpan group = span(RankGrid(l, profile_.node.devices), GroupKind::kTp);
  const Seconds quarter = reduce_scatter_time(group, tp_collective_bytes(l) / kPipelineSplits, network_);
  auto ring = [&](Seconds gemm) { return (tp - 1.0) * std::max(0.0, each / (tp - 1.0) - gemm / tp); };
  auto pipeline = [&](Seconds gemm) {
    return (kPipelineSplits - 1.0) * std::max(0.0, quarter - gemm / kPipelineSplits) + quarter;
  };
  auto bulk = [&](Seconds gemm) { return std::max(0.0, each - gemm); };
  auto forward_of = [&](const std::vector<WeightMatrix>& block) {
    const TpBlockGemms f = tp_block_gemms(block, Pass::kForward, l);
    return ring(f.column) + pipeline(f.row);
  };
  Seconds exposed = 0;
  for (const bool moe : {false, true}) {
    const int layers = moe ? s.moe_layers : s.dense_layers;
    if (layers == 0) continue;
    const std::vector<std::vector<WeightMatrix>>& blocks = moe ? moe_tp_blocks_ : dense_tp_blocks_;
    for (size_t i = 0; i < blocks.size(); ++i) {
      Seconds block = 0;
      if (forward) {
        block = forward_of(blocks[i]);
      } else {
        const TpBlockGemms b = tp_block_gemms(blocks[i], Pass::kBackward, l);
        block = ring(b.row / 2) + 2.0 * bulk(b.column / 2);
        const bool mlp_recomputed = !moe && i == 1 && l.recomputes(RecomputeModule::kMlp);
        if (l.recompute == Recompute::kFull || mlp_recomputed) block += forward_of(blocks[i]);
      }
      exposed += layers * block;
    }
  }
  return exposed;
}

// An NCCL collective hidden beside compute (Megatron-LM's asynchronous input-gradient all-reduce;
// Megatron-Core's overlapped gradient reduce-scatter and parameter all-gather, data_parallel_traffic)
// holds its channels, one SM each, while it runs: the kernels beside it lose that share of the
// device for as long as it is hidden. Transformer Engine's TP overlap (tp_comm) holds its SMs
// inside the GEMMs it overlaps instead (tp_overlap_sms_held).
double CostModel::hidden_tp_sm_share(const Layout& l) const {
  if (run_.overlap.tp_comm) return 0.0;
  return sm_share(collective_channels(span(RankGrid(l, profile_.node.devices), GroupKind::kTp)));
}

// Across nodes NCCL builds one ring channel per NIC the group reaches (one NIC a device here) and
// runs 4 channels for each where a node holds fewer than 8 members (src/graph/search.cc,
// ncclTopoDupChannels; src/graph/connect.cc, ncclTopoPostset: "Use 4 compute channels per search
// channel to reach peak BW on <8 PPN"), up to the node's figure: NCCL's logs show 8 channels for 2
// H20s a node over 2 nodes (NVIDIA/nccl#1189) and 16 for 8 H100s a node over 3 (NVIDIA/nccl#1453).
int CostModel::collective_channels(const GroupSpan& group) const {
  const int node = profile_.node.collective_channels;
  if (group.intra_only()) return node;
  constexpr int kChannelsPerNic = 4;
  return std::min(node, kChannelsPerNic * group.members_per_node);
}

double CostModel::sm_share(int sms) const {
  const int units = profile_.device.gemm.compute_units;
  return units > 0 ? static_cast<double>(std::min(sms, units)) / units : 0.0;
}

bool CostModel::ep_overlap_applies(const Layout& l) const { return flopwise::ep_overlap_applies(model_, run_, l); }

// Passes of a step the combined 1F1B schedule leaves unpaired: the forwards before the first
// backward and the backwards after the last forward. Without PP, the first forward and the last
// backward; with interleaving, the first pipeline rank's warmup, Megatron-Core's
// (pp - 1) x 2 + (vpp - 1) x pp model-chunk forwards (get_pp_rank_microbatches), as many
// backwards after. As a share of the step's chunk passes.
double CostModel::unpaired_pass_share(const Layout& l) const {
  const double chunks = static_cast<double>(l.micro_batches(run_.global_batch)) * l.vpp;
  const double warmup = l.pp == 1 ? 1.0 : 2.0 * (l.pp - 1) + (l.vpp - 1.0) * l.pp;
  return chunks > 0 ? std::min(1.0, warmup / chunks) : 1.0;
}

// The flex dispatcher's kernels (DeepEP, HybridEP) hold the run's flex_dispatcher_sms; NCCL's
// all-to-all holds the node's collective channels, one SM each.
double CostModel::a2a_sm_share() const {
  return sm_share(run_.ep_dispatcher == EpDispatcher::kFlex ? run_.flex_dispatcher_sms : profile_.node.collective_channels);
}

// What an MoE layer computes before its dispatch (Megatron-Core's pre_dispatch_computation):
// the attention and its projections, and the router. Its MLP node is the rest of the layer.
ComputeWork CostModel::pre_dispatch_work(Pass pass, const Layout& l) const {
  ComputeWork w = attention_work(pass, l);
  for (const WeightMatrix& m : pre_dispatch_matrices_) {
    w += matrix_work(m, micro_batch_tokens(l), 1.0, pass, l.tp, l, true, tp_overlap_sms_held(m, pass, l));
  }
  return w;
}

// Combined 1F1B runs one micro-batch's MoE layer forward beside another's backward in four phases,
// an all-to-all on the communication stream beside the computation of each (Megatron-Core's
// TransformerLayerSchedulePlan.run, megatron/core/models/common/model_chunk_schedule_plan.py):
// the combine's backward beside the attention forward; the dispatch forward beside the MLP's input
// gradients; the dispatch backward beside the MLP's weight gradients and then its forward; the
// combine forward beside the attention backward. The MLP backward splits evenly between its input
// and weight gradients (equal GEMM FLOPs); norms, adds and permutations go with the MLP.
std::array<Seconds, 4> CostModel::paired_a2a_windows(const Layout& l) const {
  const Seconds attention_forward = compute_seconds(pre_dispatch_work(Pass::kForward, l));
  const Seconds attention_backward = compute_seconds(pre_dispatch_work(Pass::kBackward, l));
  const Seconds mlp_forward = compute_seconds(layer_work(true, Pass::kForward, l)) - attention_forward;
  const Seconds mlp_backward = compute_seconds(layer_work(true, Pass::kBackward, l)) - attention_backward;
  return {attention_forward, mlp_backward / 2, mlp_backward / 2 + mlp_forward, attention_backward};
}

// Paired, each all-to-all waits only for what outlasts the computation of its phase, which loses
// the SMs the all-to-all holds while it hides. A forward's dispatch and combine run in the second
// and fourth phases, a backward's combine and dispatch in the first and third.
Seconds CostModel::paired_a2a_exposed(Seconds a2a, bool forward, const Layout& l) const {
  return paired_a2a_exposed(a2a, forward, paired_a2a_windows(l));
}

Seconds CostModel::paired_a2a_exposed(Seconds a2a, bool forward, const std::array<Seconds, 4>& w) const {
  Seconds exposed = 0;
  for (Seconds beside : forward ? std::array{w[1], w[3]} : std::array{w[0], w[2]}) {
    exposed += std::max(0.0, a2a - beside) + std::min(a2a, beside) * a2a_sm_share();
  }
  return exposed;
}

// Unpaired passes wait for their all-to-alls.
Seconds CostModel::ep_overlap_exposed(Seconds a2a, int moe_layers, const Layout& l) const {
  const double unpaired = unpaired_pass_share(l);
  const int all_to_alls = ep_all_to_alls_forward() + ep_all_to_alls_backward(l);
  const std::array<Seconds, 4> windows = paired_a2a_windows(l);
  const Seconds paired = paired_a2a_exposed(a2a, true, windows) + paired_a2a_exposed(a2a, false, windows);
  return moe_layers * (unpaired * all_to_alls * a2a + (1.0 - unpaired) * paired);
}

Seconds CostModel::tp_exposed_seconds(const StageContents& s, bool forward, const Layout& l, Seconds each) const {
  if (te_tp_overlap_applies(l)) return te_tp_overlap_exposed(s, forward, l, each);
  const TpCollectives c = tp_collectives(s, forward, l);
  const Seconds hidden = std::min(c.overlapped * each, tp_overlap_window(s, forward, l));
  return c.exposed * each + (c.overlapped * each - hidden) + hidden * hidden_tp_sm_share(l);
}

// Megatron-Core's ring attention (--cp-comm-type p2p; Transformer Engine's
// AttnFuncWithCPAndKVP2P): a layer's forward passes each rank's keys and values on to the next CP
// rank cp - 1 times, each exchange beside the attention of the chunk already held, so a step waits
// only for what outlasts 1/cp of the layer's attention. The backward passes keys and values on
// and their gradients back: twice the bytes, beside the backward attention. A recompute that
// repeats the attention repeats its forward ring. MLA sends its up-projected keys and values.
Bytes CostModel::cp_ring_step_bytes(const Layout& l) const {
  const ModelConfig& m = model_;
  const double width = m.is_mla() ? m.heads * (m.qk_head_dim() + m.value_head_dim()) : 2.0 * key_elements_per_token();
  return bytes_.activation * micro_batch_tokens(l) * width / l.tp;
}

std::vector<CostModel::CpRingPhase> CostModel::cp_ring_phases(const StageContents& s, bool forward, const Layout& l) const {
  const int layers = s.moe_layers + s.dense_layers;
  if (l.cp < 2 || layers == 0) return {};
  const Bytes step = cp_ring_step_bytes(l);
  auto phase = [&](double bytes_factor, Pass pass) {
    return CpRingPhase{layers, l.cp - 1, bytes_factor * step, compute_seconds(attention_work(pass, l)) / l.cp};
  };
  if (forward) return {phase(1.0, Pass::kForward)};
  std::vector<CpRingPhase> phases{phase(2.0, Pass::kBackward)};
  if (l.recompute == Recompute::kFull || l.recomputes(RecomputeModule::kCoreAttn)) {
    phases.push_back(phase(1.0, Pass::kForward));
  }
  return phases;
}

Seconds CostModel::cp_exposed_seconds(const StageContents& s, const Layout& l) const {
  if (l.cp < 2) return 0.0;
  const GroupSpan ring = span(RankGrid(l, profile_.node.devices), GroupKind::kCp);
  Seconds exposed = 0;
  for (bool forward : {true, false}) {
    for (const CpRingPhase& p : cp_ring_phases(s, forward, l)) {
      exposed += p.layers * p.steps * std::max(0.0, send_recv_time(ring, p.bytes, network_) - p.beside);
    }
  }
  return exposed;
}

CostModel::RankTime CostModel::micro_batch_time(const StageContents& s, const Layout& l) const {
  const RankGrid grid(l, profile_.node.devices);
  RankTime t;
  t.forward = forward_seconds(s, l);
  t.backward = backward_seconds(s, l);
  const Seconds each = reduce_scatter_time(span(grid, GroupKind::kTp), tp_collective_bytes(l), network_);
  t.tp = tp_exposed_seconds(s, true, l, each) + tp_exposed_seconds(s, false, l, each);
  t.cp = cp_exposed_seconds(s, l);
  if (model_.is_moe() && l.ep > 1) {
    const int a2a = ep_all_to_alls_forward() + ep_all_to_alls_backward(l);
    const GroupSpan group = span(grid, GroupKind::kEp);
    const Seconds each = all_to_all_time(group, ep_sends(l, group), network_);
    t.ep = ep_overlap_applies(l) ? ep_overlap_exposed(each, s.moe_layers, l) : s.moe_layers * a2a * each;
  }
  const int gathers = expert_tp_collectives(s, true, l) + expert_tp_collectives(s, false, l);
  if (gathers > 0) {
    t.ep += gathers * reduce_scatter_time(span(grid, GroupKind::kExpertTp), expert_tp_collective_bytes(l), network_);
  }
  return t;
}

double CostModel::dense_params_per_device(const StageContents& s, const Layout& l) const {
  return stage_dense_params(s) / l.tp;
}

double CostModel::expert_params_per_device(const StageContents& s, const Layout& l) const {
  return stage_expert_params(s) / (l.expert_tp() * l.ep);  // experts are expert-TP- and EP-sharded
}

Seconds CostModel::optimizer_seconds_at_peak(const StageContents& s, const Layout& l) const {
  const double dense = dense_params_per_device(s, l), expert = expert_params_per_device(s, l);
  const double updated =
      dense / (l.optimizer_sharding ? l.gradient_ranks() : 1) + expert / (l.optimizer_sharding ? l.expert_dp() : 1);
  return (bytes_.adam_traffic * updated + bytes_.grad_zeroing * (dense + expert)) / profile_.device.memory_bandwidth;
}

// AdamW is memory-bound: its traffic over the bandwidth the update's multi-tensor kernels reach.
Seconds CostModel::optimizer_seconds(const StageContents& s, const Layout& l) const {
  return optimizer_seconds_at_peak(s, l) / profile_.efficiency.optimizer_memory();
}

double CostModel::stage_dense_params(const StageContents& s) const {
  const LayerParams& p = layer_params_;
  double params = s.dense_layers * (p.attention + p.norms + p.dense_mlp) +
                  s.moe_layers * (p.attention + p.norms + p.router + p.shared_experts);
  if (s.embedding) params += params_.embedding;
  if (s.lm_head) params += params_.lm_head + model_.hidden;
  params += s.mtp_layers * mtp_projection_params(model_);
  return params;
}

double CostModel::stage_expert_params(const StageContents& s) const {
  return static_cast<double>(s.moe_layers) * model_.routed_experts * layer_params_.routed_expert;
}

MemoryBreakdown CostModel::rank_memory(const StageContents& s, int rank, const Layout& l) const {
  const double dense = dense_params_per_device(s, l);
  const double expert = expert_params_per_device(s, l);
  const double tokens = micro_batch_tokens(l);
  MemoryBreakdown mem;
  mem.weights = bytes_.weight * (dense + expert);
  mem.grads = bytes_.grad * (dense + expert);
  const double dense_shards = l.optimizer_sharding ? l.gradient_ranks() : 1;
  const double expert_shards = l.optimizer_sharding ? l.expert_dp() : 1;
  mem.optimizer = bytes_.optimizer * (dense / dense_shards + expert / expert_shards);
  const int m = l.micro_batches(run_.global_batch);
  const Bytes per_layer = (s.moe_layers * layer_activation_bytes(true, l) +
                           s.dense_layers * layer_activation_bytes(false, l));
  mem.activations = in_flight_chunks(l, rank, m) * per_layer / l.vpp;
  if (l.recompute == Recompute::kFull) {
    // Backward rebuilds one layer at a time: its full activations are live once.
    Layout stored = l;
    stored.recompute = Recompute::kSelective;
    mem.activations += layer_activation_bytes(s.moe_layers > 0, stored);
  }
  // Vocab-parallel cross-entropy: bf16 logits plus their fp32 copy for the softmax.
  if (s.lm_head) mem.activations += (1.0 + s.mtp_layers) * (bytes_.activation + 4.0) * tokens * model_.vocab / l.tp;
  mem.buffers = profile_.runtime_reserved_bytes;
  if (s.moe_layers > 0) {
    // Send and receive buffers of the permuted tokens of one MoE layer.
    mem.buffers += 2.0 * ep_payload_bytes(l);
  }
  return mem;
}

MemoryBreakdown CostModel::memory(const Layout& l, int* busiest_rank) const {
  return memory(l, stage_contents(model_, l), busiest_rank);
}

// In-flight micro-batches only fall with the pipeline rank, so of ranks holding the same layers
// the first needs the most: one rank per run of equal stages is enough.
MemoryBreakdown CostModel::memory(const Layout& l, const std::vector<StageContents>& stages, int* busiest_rank) const {
  MemoryBreakdown worst;
  for (int r = 0; r < l.pp; ++r) {
    if (r > 0 && stages[r] == stages[r - 1]) continue;
    const MemoryBreakdown mem = rank_memory(stages[r], r, l);
    if (r == 0 || mem.total() > worst.total()) {
      worst = mem;
      if (busiest_rank) *busiest_rank = r;
    }
  }
  return worst;
}

CostModel::DataParallelTraffic CostModel::data_parallel_traffic(const StageContents& s, const Layout& l) const {
  const RankGrid grid(l, profile_.node.devices);
  DataParallelTraffic t;
  double held = 0;
  auto add = [&](GroupKind kind, double params) {
    const GroupSpan group = span(grid, kind);
    Seconds grads = 0, weights = 0;
    if (!l.optimizer_sharding) {
      grads = all_reduce_time(group, bytes_.grad * params, network_);
    } else {
      // Distributed optimizer: reduce-scatter fp32 grads, all-gather updated bf16 weights (a ring
      // all-gather moves the same bytes as a ring reduce-scatter).
      grads = reduce_scatter_time(group, bytes_.grad * params, network_);
      weights = reduce_scatter_time(group, bytes_.weight * params, network_);
    }
    t.grads += grads;
    t.weights += weights;
    held += (grads + weights) * sm_share(collective_channels(group));
  };
  add(GroupKind::kDpCp, dense_params_per_device(s, l));
  add(GroupKind::kExpertDp, expert_params_per_device(s, l));
  const Seconds total = t.grads + t.weights;
  t.sm_share = total > 0 ? held / total : 0.0;
  return t;
}

// Megatron-Core's DDP reduces gradients in buckets of max(40M, 1M x dp) parameters as the last
// micro-batch's backward produces them (--overlap-grad-reduce), and the distributed optimizer
// all-gathers the next step's weights bucket by bucket ahead of the first forward
// (--overlap-param-gather): the step waits for the last bucket, or for what the pass cannot cover,
// and the pass loses the SMs the collectives hold while they hide.
Seconds CostModel::data_parallel_exposed_seconds(const StageContents& s, const Layout& l, Seconds backward,
                                                 Seconds forward) const {
  const DataParallelTraffic t = data_parallel_traffic(s, l);
  const double params = dense_params_per_device(s, l) + expert_params_per_device(s, l);
  const double bucket = params > 0 ? std::min(1.0, std::max(40e6, 1e6 * l.gradient_ranks()) / params) : 1.0;
  auto exposed = [bucket, &t](Seconds traffic, bool overlapped, Seconds window) {
    if (!overlapped) return traffic;
    const Seconds waited = std::max(bucket * traffic, traffic - window);
    return waited + (traffic - waited) * t.sm_share;
  };
  return exposed(t.grads, run_.overlap.grad_reduce, backward) + exposed(t.weights, run_.overlap.param_gather, forward);
}

void derive_run_totals(StepCost& c, const ModelConfig& model, const TrainingRun& run, const ParamCounts& params,
                       const Fleet& fleet) {
  c.model_flops_per_step = run.tokens_per_step() * training_flops_per_token(model, run.seq_len);
  c.tokens_per_s = run.tokens_per_step() / c.step_time_s;
  c.mfu = c.model_flops_per_step / (c.step_time_s * fleet.peak);
  const Seconds wall = run.tokens / c.tokens_per_s;
  // Checkpoints hold the weights and the optimizer state (master weights and moments) of the whole
  // model, MTP layers included; each device saves its own weights and optimizer shard.
  const PrecisionBytes bytes = PrecisionBytes::of(run);
  const CheckpointCost checkpoint =
      checkpoint_cost((params.total + params.mtp) * (bytes.weight + bytes.optimizer),
                      c.memory_bytes.weights + c.memory_bytes.optimizer, fleet.nodes, *fleet.reliability);
  c.goodput = goodput(c.step_time_s, fleet.devices, fleet.nodes, checkpoint, *fleet.reliability);
  c.goodput.ideal_days = wall / kSecondsPerDay;
  c.goodput.ideal_device_hours = fleet.devices * wall / kSecondsPerHour;
  c.goodput.ideal_cost = c.goodput.ideal_device_hours * fleet.price_per_device_hour;
  // Expected figures: the ideal ones over the goodput (a run that cannot outpace its failures never ends).
  const double fraction = c.goodput.fraction;
  c.days = fraction > 0 ? c.goodput.ideal_days / fraction : INFINITY;
  c.device_hours = fraction > 0 ? c.goodput.ideal_device_hours / fraction : INFINITY;
  c.cost = fraction > 0 ? c.goodput.ideal_cost / fraction : INFINITY;
  c.currency = fleet.currency;
}

void CostModel::derive_totals(StepCost& c, const Layout& l) const {
  Fleet fleet;
  fleet.devices = l.devices();
  fleet.nodes = (l.devices() + profile_.node.devices - 1) / profile_.node.devices;
  fleet.peak = l.devices() * peak_;
  fleet.price_per_device_hour = profile_.device.price_per_device_hour;
  fleet.currency = profile_.device.currency;
  fleet.reliability = &profile_.reliability;
  derive_run_totals(c, model_, run_, params_, fleet);
}

Seconds CostModel::pp_message_seconds(const Layout& l) const {
  return send_recv_time(span(RankGrid(l, profile_.node.devices), GroupKind::kPp), pp_boundary_bytes(l), network_);
}

StepCost CostModel::evaluate(const Layout& l) const { return evaluate(l, stage_contents(model_, l)); }

StepCost CostModel::evaluate(const Layout& l, const std::vector<StageContents>& stages) const {
  std::vector<RankTime> times;
  for (int r = 0; r < l.pp; ++r) {
    // Middle ranks usually hold the same layers: cost each distinct stage once.
    times.push_back(r == 0 || !(stages[r] == stages[r - 1]) ? micro_batch_time(stages[r], l) : times.back());
  }
  return evaluate(l, stages, times);
}

StepCost CostModel::evaluate(const Layout& l, const std::vector<StageContents>& stages, const std::vector<RankTime>& times) const {
  const int m = l.micro_batches(run_.global_batch);
  StepCost c;
  std::vector<StagePasses> passes;
  for (const RankTime& t : times) passes.push_back(t.passes());
  c.slowest_stage = static_cast<int>(busiest_stage(passes));
  const RankTime& slowest = times[c.slowest_stage];
  const RankGrid grid(l, profile_.node.devices);
  c.compute_s = m * slowest.compute();
  c.exposed_comm_s.tp = m * slowest.tp;
  c.exposed_comm_s.cp = m * slowest.cp;
  c.exposed_comm_s.ep = m * slowest.ep;
  c.bubble_s = pipeline_bubble_seconds(passes, l.vpp);
  // Each micro-batch crosses every virtual-stage boundary forward and back. 1F1B's paired
  // send-and-receive blocks; the interleaved schedule's overlapped sends hide behind compute except
  // at the pipeline's fill and drain, one message each way.
  const Seconds message = pp_message_seconds(l);
  const bool hidden = run_.overlap.p2p && l.vpp > 1;
  c.exposed_comm_s.pp = (hidden ? 2.0 : m * 2.0 * l.vpp) * message;
  const StageContents& dp_stage = stages[c.slowest_stage];
  c.exposed_comm_s.dp = data_parallel_exposed_seconds(dp_stage, l, slowest.backward, slowest.forward);
  c.optimizer_s = optimizer_seconds(dp_stage, l);
  c.overhead_s = profile_.overheads.per_step;
  c.step_time_s = c.compute_s + c.exposed_comm_s.total() + c.bubble_s + c.optimizer_s + c.overhead_s;

  c.memory_bytes = memory(l, stages, &c.busiest_memory_rank);
  c.usable_memory_bytes = usable_memory_;
  derive_totals(c, l);
  return c;
}

}  // namespace flopwise
