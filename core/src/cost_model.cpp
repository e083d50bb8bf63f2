#include "flopwise/cost_model.hpp"

#include <algorithm>

#include "flopwise/error.hpp"
#include "flopwise/schedule.hpp"

namespace flopwise {
namespace {

int clamp_layers(int first_dense, int chunk_start, int chunk_layers) {
  return std::clamp(first_dense - chunk_start, 0, chunk_layers);
}

GroupSpan span(const RankGrid& grid, GroupKind kind) {
  return GroupSpan{grid.size(kind), grid.members_per_node(kind)};
}

}  // namespace

PrecisionBytes PrecisionBytes::of(Precision precision) {
  // fp32 throughout: fp32 weights, grads and activations; AdamW keeps m and v (no master copy)
  // and its update reads+writes weight, m and v (3 x 8) and reads the grad (4).
  if (precision == Precision::kFp32) return {4, 4, 8, 4, 28};
  // Mixed precision in Megatron-LM: bf16 weights and activations, fp32 main gradients, and AdamW
  // with fp32 master weights plus two fp32 moments (Rajbhandari et al. 2020, ZeRO, section 3.1:
  // 16 bytes per parameter, 12 of them optimizer state). The update reads+writes master, m and v
  // (3 x 8), reads the fp32 grad (4) and writes the bf16 weight (2).
  return {2, 4, 12, 2, 30};
}

ComputeWork& ComputeWork::operator+=(const ComputeWork& o) {
  matmul += o.matmul;
  matmul_per_row += o.matmul_per_row;
  attention += o.attention;
  layer_passes += o.layer_passes;
  return *this;
}

ComputeWork ComputeWork::scaled(double factor) const {
  return {matmul * factor, matmul_per_row * factor, attention * factor, layer_passes * factor};
}

StageContents chunk_contents(const ModelConfig& m, const Layout& l, int chunk) {
  const int chunk_layers = m.layers / (l.pp * l.vpp);
  // Dense layers come first in every family we import.
  const int dense = clamp_layers(m.dense_layers(), chunk * chunk_layers, chunk_layers);
  StageContents c;
  c.dense_layers = dense;
  c.moe_layers = chunk_layers - dense;
  c.embedding = chunk == 0;
  c.lm_head = chunk == l.pp * l.vpp - 1;
  return c;
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
      lm_head_flops_(lm_head_flops(model)) {
  if (auto why = precision_unsupported(profile, run.precision)) throw InputError(*why);
  peak_ = profile.device.peak_flops(run.precision);
  // FP8 speeds up the GEMMs; attention's softmax path stays in bf16 (Transformer Engine recipe).
  attention_peak_ = run.precision == Precision::kFp8 ? profile.device.peak_flops(Precision::kBf16) : peak_;
  matmul_rate_ = peak_ * profile.efficiency.matmul;
  attention_rate_ = attention_peak_ * profile.efficiency.attention;
  bytes_ = PrecisionBytes::of(run.precision);
  usable_memory_ = profile.device.memory_bytes * (1.0 - run.memory_headroom);
}

double CostModel::micro_batch_tokens(const Layout& l) const {
  return static_cast<double>(l.micro_batch) * run_.seq_len;
}

double CostModel::expert_skew(const Layout& l) const {
  // With EP = 1 every rank holds every expert, so skew between experts averages out.
  return l.ep > 1 ? run_.routing_skew : 1.0;
}

// Every GEMM of a layer runs on all of the micro-batch's tokens but the experts' which see only
// their share: summing FLOPs per row gives dense per-token FLOPs plus one expert's per-token FLOPs
// for each local expert, all over TP (weights are TP-sharded).
ComputeWork CostModel::layer_forward_work(bool moe_layer, const Layout& l) const {
  const double tokens = micro_batch_tokens(l);
  const LayerFlops& f = moe_layer ? moe_flops_ : dense_flops_;
  ComputeWork w;
  w.matmul = tokens / l.tp * (f.dense_matmul + f.expert_matmul * expert_skew(l));
  w.matmul_per_row = f.dense_matmul / l.tp;
  if (moe_layer && model_.top_k > 0) {
    const double local_experts = static_cast<double>(model_.routed_experts) / l.ep;
    w.matmul_per_row += f.expert_matmul / model_.top_k * local_experts / l.tp;
  }
  w.attention = tokens / l.tp * f.attention_core;
  w.layer_passes = 1;
  return w;
}

// Hockney's model per GEMM: rows / (rows + n_1/2) of the asymptotic rate, i.e. a time of
// FLOPs / rate plus n_1/2 x FLOPs-per-row / rate (Hockney and Jesshope, Parallel Computers 2, 1988).
Seconds CostModel::compute_seconds(const ComputeWork& w) const {
  const Efficiency& e = profile_.efficiency;
  return (w.matmul + e.matmul_half_rows * w.matmul_per_row) / matmul_rate_ + w.attention / attention_rate_ +
         w.layer_passes * profile_.overheads.per_layer_pass;
}

Seconds CostModel::layer_forward_seconds(bool moe_layer, const Layout& l) const {
  return compute_seconds(layer_forward_work(moe_layer, l));
}

// Stored activations of one layer for one micro-batch, per device. Korthikanti et al. 2022
// ("Reducing Activation Recomputation in Large Transformer Models", section 4) adapted to
// RMSNorm, GQA, SwiGLU and MoE: bf16 tensors kept for backward, all sharded by TP under
// sequence parallelism. Attention keeps norm input, QKV input, Q/K/V, the core output and the
// fp32 softmax statistics; only `none` also keeps the s x s probabilities (unfused attention).
Bytes CostModel::layer_activation_bytes(bool moe_layer, const Layout& l) const {
  const ModelConfig& m = model_;
  const double tokens = micro_batch_tokens(l);
  const double h = m.hidden, heads = m.heads;
  if (l.recompute == Recompute::kFull) return bytes_.activation * tokens * h / l.tp;  // layer input
  const double qkv_width = m.is_mla()
      ? heads * (2.0 * m.qk_head_dim() + m.value_head_dim()) + m.kv_lora_rank + m.rope_head_dim + m.q_lora_rank
      : (heads + 2.0 * m.kv_heads) * m.head_dim;
  double per_token = bytes_.activation * (2.0 * h + qkv_width + heads * m.value_head_dim()) + 4.0 * heads;
  if (l.recompute == Recompute::kNone) per_token += bytes_.activation * heads * run_.seq_len;
  if (!moe_layer) {
    per_token += bytes_.activation * (2.0 * h + 3.0 * m.dense_ffn);  // norm in, MLP in, gate, up, act
  } else {
    const double routed = m.top_k * expert_skew(l) * (2.0 * h + 3.0 * m.expert_ffn + h);
    per_token += bytes_.activation * (2.0 * h + routed + 3.0 * m.shared_experts * m.shared_expert_ffn) +
                 8.0 * m.routed_experts;  // fp32 router logits and probabilities
  }
  return per_token * tokens / l.tp;
}

ComputeWork CostModel::forward_work(const StageContents& s, const Layout& l) const {
  ComputeWork w = layer_forward_work(true, l).scaled(s.moe_layers);
  w += layer_forward_work(false, l).scaled(s.dense_layers);
  if (s.lm_head) {
    w.matmul += micro_batch_tokens(l) / l.tp * lm_head_flops_;
    w.matmul_per_row += lm_head_flops_ / l.tp;
  }
  return w;
}

ComputeWork CostModel::backward_work(const StageContents& s, const Layout& l) const {
  // Gradients with respect to inputs and to weights: twice the forward.
  ComputeWork w = forward_work(s, l).scaled(2.0);
  if (l.recompute == Recompute::kFull) {
    w += layer_forward_work(true, l).scaled(s.moe_layers);
    w += layer_forward_work(false, l).scaled(s.dense_layers);
  } else if (l.recompute == Recompute::kSelective) {
    const Flops core = s.moe_layers * moe_flops_.attention_core + s.dense_layers * dense_flops_.attention_core;
    w.attention += micro_batch_tokens(l) / l.tp * core;
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

// Sequence parallelism lets each TP rank send only its 1/tp slice across a stage boundary.
Bytes CostModel::pp_boundary_bytes(const Layout& l) const { return tp_collective_bytes(l) / l.tp; }

CostModel::RankTime CostModel::micro_batch_time(const StageContents& s, const Layout& l) const {
  const RankGrid grid(l, profile_.node.devices);
  RankTime t;
  t.compute = forward_seconds(s, l) + backward_seconds(s, l);
  const double layers = s.moe_layers + s.dense_layers;
  const int tp_ops = tp_collectives_forward() + tp_collectives_backward(l);
  t.tp = (1.0 - profile_.overlap.tp) * layers * tp_ops *
         reduce_scatter_time(span(grid, GroupKind::kTp), tp_collective_bytes(l), network_);
  if (model_.is_moe() && l.ep > 1) {
    const int a2a = ep_all_to_alls_forward() + ep_all_to_alls_backward(l);
    t.ep = (1.0 - profile_.overlap.ep) * s.moe_layers * a2a *
           all_to_all_time(span(grid, GroupKind::kEp), ep_payload_bytes(l), network_);
  }
  return t;
}

double CostModel::dense_params_per_device(const StageContents& s, const Layout& l) const {
  return stage_dense_params(s) / l.tp;
}

double CostModel::expert_params_per_device(const StageContents& s, const Layout& l) const {
  return stage_expert_params(s) / (l.tp * l.ep);  // experts are TP- and EP-sharded
}

Seconds CostModel::optimizer_seconds_at_peak(const StageContents& s, const Layout& l) const {
  const double updated = dense_params_per_device(s, l) / (l.optimizer_sharding ? l.dp : 1) +
                         expert_params_per_device(s, l) / (l.optimizer_sharding ? l.expert_dp() : 1);
  return bytes_.adam_traffic * updated / profile_.device.memory_bandwidth;
}

// AdamW is memory-bound: its traffic over the bandwidth the update reaches.
Seconds CostModel::optimizer_seconds(const StageContents& s, const Layout& l) const {
  return optimizer_seconds_at_peak(s, l) / profile_.efficiency.memory;
}

double CostModel::stage_dense_params(const StageContents& s) const {
  const LayerParams& p = layer_params_;
  double params = s.dense_layers * (p.attention + p.norms + p.dense_mlp) +
                  s.moe_layers * (p.attention + p.norms + p.router + p.shared_experts);
  if (s.embedding) params += params_.embedding;
  if (s.lm_head) params += params_.lm_head + model_.hidden;
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
  const double dense_shards = l.optimizer_sharding ? l.dp : 1;
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
  if (s.lm_head) mem.activations += (bytes_.activation + 4.0) * tokens * model_.vocab / l.tp;
  mem.buffers = profile_.runtime_reserved_bytes;
  if (s.moe_layers > 0) {
    // Send and receive buffers of the permuted tokens of one MoE layer.
    mem.buffers += 2.0 * ep_payload_bytes(l);
  }
  return mem;
}

MemoryBreakdown CostModel::memory(const Layout& l, int* busiest_rank) const {
  const std::vector<StageContents> stages = stage_contents(model_, l);
  MemoryBreakdown worst;
  for (int r = 0; r < l.pp; ++r) {
    const MemoryBreakdown mem = rank_memory(stages[r], r, l);
    if (r == 0 || mem.total() > worst.total()) {
      worst = mem;
      if (busiest_rank) *busiest_rank = r;
    }
  }
  return worst;
}

Seconds CostModel::data_parallel_seconds(const StageContents& s, const Layout& l) const {
  const RankGrid grid(l, profile_.node.devices);
  const double dense = dense_params_per_device(s, l);
  const double expert = expert_params_per_device(s, l);
  auto sync = [&](GroupKind kind, double params) {
    const GroupSpan group = span(grid, kind);
    if (!l.optimizer_sharding) return all_reduce_time(group, bytes_.grad * params, network_);
    // Distributed optimizer: reduce-scatter fp32 grads, all-gather updated bf16 weights (a ring
    // all-gather moves the same bytes as a ring reduce-scatter).
    return reduce_scatter_time(group, bytes_.grad * params, network_) +
           reduce_scatter_time(group, bytes_.weight * params, network_);
  };
  return sync(GroupKind::kDp, dense) + sync(GroupKind::kExpertDp, expert);
}

void CostModel::derive_totals(StepCost& c, const Layout& l) const {
  const double devices = l.devices();
  c.model_flops_per_step = run_.tokens_per_step() * training_flops_per_token(model_, run_.seq_len);
  c.tokens_per_s = run_.tokens_per_step() / c.step_time_s;
  c.mfu = c.model_flops_per_step / (c.step_time_s * devices * peak_);
  const Seconds wall = run_.tokens / c.tokens_per_s;
  c.days = wall / kSecondsPerDay;
  c.device_hours = devices * wall / kSecondsPerHour;
  c.cost = c.device_hours * profile_.device.price_per_device_hour;
  c.currency = profile_.device.currency;
}

StepCost CostModel::evaluate(const Layout& l) const {
  const std::vector<StageContents> stages = stage_contents(model_, l);
  const int m = l.micro_batches(run_.global_batch);
  StepCost c;
  RankTime slowest;
  for (int r = 0; r < l.pp; ++r) {
    const RankTime t = micro_batch_time(stages[r], l);
    if (r == 0 || t.total() > slowest.total()) {
      slowest = t;
      c.slowest_stage = r;
    }
  }
  const RankGrid grid(l, profile_.node.devices);
  c.compute_s = m * slowest.compute;
  c.exposed_comm_s.tp = m * slowest.tp;
  c.exposed_comm_s.ep = m * slowest.ep;
  // Pipeline bubble: (pp - 1) / vpp micro-batch times (Narayanan et al. 2021, section 2.2).
  c.bubble_s = (l.pp - 1.0) / l.vpp * slowest.total();
  // Each micro-batch crosses every virtual-stage boundary forward and back.
  c.exposed_comm_s.pp = (1.0 - profile_.overlap.pp) * m * 2.0 * l.vpp *
                        send_recv_time(span(grid, GroupKind::kPp), pp_boundary_bytes(l), network_);
  const StageContents& dp_stage = stages[c.slowest_stage];
  c.exposed_comm_s.dp = (1.0 - profile_.overlap.dp) * data_parallel_seconds(dp_stage, l);
  c.optimizer_s = optimizer_seconds(dp_stage, l);
  c.overhead_s = profile_.overheads.per_step;
  c.step_time_s = c.compute_s + c.exposed_comm_s.total() + c.bubble_s + c.optimizer_s + c.overhead_s;

  derive_totals(c, l);
  c.memory_bytes = memory(l, &c.busiest_memory_rank);
  c.usable_memory_bytes = usable_memory_;
  return c;
}

}  // namespace flopwise
