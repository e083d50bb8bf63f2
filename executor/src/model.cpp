#include "flopwise/executor/model.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace flopwise::executor {
namespace {

constexpr double kInitStd = 0.006;  // initializer_range of the public Ling configs

torch::Tensor normal_parameter(std::vector<int64_t> shape) { return torch::randn(shape) * kInitStd; }

void init_linear(torch::nn::Linear& linear) {
  torch::NoGradGuard no_grad;
  linear->weight.normal_(0.0, kInitStd);
}

// Process groups cannot travel through autograd's saved data, so they are registered once.
std::vector<c10::intrusive_ptr<c10d::ProcessGroup>>& group_registry() {
  static std::vector<c10::intrusive_ptr<c10d::ProcessGroup>> groups;
  return groups;
}

int64_t register_group(const c10::intrusive_ptr<c10d::ProcessGroup>& group) {
  auto& groups = group_registry();
  for (size_t i = 0; i < groups.size(); ++i) {
    if (groups[i].get() == group.get()) return static_cast<int64_t>(i);
  }
  groups.push_back(group);
  return static_cast<int64_t>(groups.size()) - 1;
}

// Where collectives inside autograd functions record their spans: one recorder per process (one
// process is one rank), since autograd's saved state cannot carry a pointer.
TraceRecorder*& collective_trace() {
  static TraceRecorder* trace = nullptr;
  return trace;
}

torch::Tensor exchange_rows(const torch::Tensor& input, c10d::ProcessGroup& group, const std::vector<int64_t>& send,
                            const std::vector<int64_t>& receive) {
  TraceRecorder* trace = collective_trace();
  const TraceRecorder::Mark start = trace ? trace->mark() : TraceRecorder::Mark{};
  const int64_t rows = std::accumulate(receive.begin(), receive.end(), int64_t{0});
  torch::Tensor output = torch::empty({rows, input.size(1)}, input.options());
  torch::Tensor contiguous = input.contiguous();
  auto send_copy = send, receive_copy = receive;
  group.alltoall_base(output, contiguous, receive_copy, send_copy)->wait();
  if (trace) {
    // The busier direction of this rank's link sets the time.
    const int64_t sent = std::accumulate(send.begin(), send.end(), int64_t{0});
    const double row_bytes = static_cast<double>(input.size(1) * input.element_size());
    trace->record_collective("ep", "all_to_all", start, std::max(sent, rows) * row_bytes, group.getSize());
  }
  return output;
}

// Forward sends `send[r]` rows to rank r and receives `receive[r]` from it; backward sends the
// gradients back the way the rows came.
struct AllToAllRows : torch::autograd::Function<AllToAllRows> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& input, int64_t group,
                               std::vector<int64_t> send, std::vector<int64_t> receive) {
    ctx->saved_data["group"] = group;
    ctx->saved_data["send"] = send;
    ctx->saved_data["receive"] = receive;
    return exchange_rows(input, *group_registry().at(group), send, receive);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const int64_t group = ctx->saved_data["group"].toInt();
    const auto send = ctx->saved_data["send"].toIntVector();
    const auto receive = ctx->saved_data["receive"].toIntVector();
    return {exchange_rows(grads[0], *group_registry().at(group), receive, send), torch::Tensor(), torch::Tensor(),
            torch::Tensor()};
  }
};

// Tensor-parallel all-reduce of activations (forward) or their gradients (backward).
void all_reduce_sum(const c10::intrusive_ptr<c10d::ProcessGroup>& group, torch::Tensor& t) {
  TraceRecorder* trace = collective_trace();
  const TraceRecorder::Mark start = trace ? trace->mark() : TraceRecorder::Mark{};
  std::vector<torch::Tensor> tensors{t};
  group->allreduce(tensors)->wait();
  if (trace) trace->record_collective("tp", "all_reduce", start, static_cast<double>(t.nbytes()), group->getSize());
}

struct EnterTensorParallel : torch::autograd::Function<EnterTensorParallel> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x, int64_t group) {
    ctx->saved_data["group"] = group;
    return x.view_as(x);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    torch::Tensor g = grads[0].contiguous().clone();
    all_reduce_sum(group_registry().at(ctx->saved_data["group"].toInt()), g);
    return {g, torch::Tensor()};
  }
};

struct LeaveTensorParallel : torch::autograd::Function<LeaveTensorParallel> {
  static torch::Tensor forward(torch::autograd::AutogradContext*, const torch::Tensor& x, int64_t group) {
    torch::Tensor y = x.contiguous().clone();
    all_reduce_sum(group_registry().at(group), y);
    return y;
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext*, torch::autograd::variable_list grads) {
    return {grads[0], torch::Tensor()};
  }
};

std::vector<int64_t> to_vector(const torch::Tensor& t) {
  const torch::Tensor c = t.to(torch::kCPU).to(torch::kInt64).contiguous();
  return {c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel()};
}

}  // namespace

void trace_collectives(TraceRecorder* trace) { collective_trace() = trace; }

bool is_expert_parameter(const std::string& name) { return name.find("experts.") != std::string::npos; }

bool is_tensor_parallel_parameter(const std::string& name) {
  for (const char* part : {"attention.qkv", "attention.out", "mlp.", "shared.", "experts."}) {
    if (name.find(part) != std::string::npos) return true;
  }
  return false;
}

torch::Tensor TensorParallel::enter(const torch::Tensor& x) const {
  return group ? EnterTensorParallel::apply(x, register_group(group)) : x;
}

torch::Tensor TensorParallel::leave(const torch::Tensor& x) const {
  return group ? LeaveTensorParallel::apply(x, register_group(group)) : x;
}

torch::Tensor all_to_all_rows(const torch::Tensor& input, const c10::intrusive_ptr<c10d::ProcessGroup>& group,
                              const std::vector<int64_t>& send_rows, const std::vector<int64_t>& receive_rows) {
  return AllToAllRows::apply(input, register_group(group), send_rows, receive_rows);
}

RMSNormImpl::RMSNormImpl(int hidden, double eps_) : eps(eps_) {
  weight = register_parameter("weight", torch::ones({hidden}));
}

torch::Tensor RMSNormImpl::forward(const torch::Tensor& x) {
  return x * torch::rsqrt(x.pow(2).mean(-1, true) + eps) * weight;
}

torch::Tensor apply_rope(const torch::Tensor& x, double theta) {
  const int64_t seq = x.size(2), dim = x.size(3), half = dim / 2;
  const torch::Tensor inv_freq = torch::pow(theta, -torch::arange(0, half, torch::kFloat64) * 2.0 / dim);
  const torch::Tensor angles = torch::outer(torch::arange(seq, torch::kFloat64), inv_freq).to(x.dtype());
  const torch::Tensor cos = angles.cos(), sin = angles.sin();
  const torch::Tensor x1 = x.narrow(-1, 0, half), x2 = x.narrow(-1, half, half);
  return torch::cat({x1 * cos - x2 * sin, x2 * cos + x1 * sin}, -1);
}

AttentionImpl::AttentionImpl(const ModelConfig& s, const TensorParallel& tp_)
    : tp(tp_), heads(s.heads / tp_.size), kv_heads(s.kv_heads / tp_.size), head_dim(s.head_dim) {
  // One fused projection of (heads + 2 kv_heads) x head_dim outputs, as in bailing_moe.
  qkv = register_module("qkv", torch::nn::Linear(torch::nn::LinearOptions(s.hidden, (heads + 2 * kv_heads) * head_dim).bias(false)));
  out = register_module("out", torch::nn::Linear(torch::nn::LinearOptions(heads * head_dim, s.hidden).bias(false)));
  init_linear(qkv);
  init_linear(out);
}

torch::Tensor AttentionImpl::forward(const torch::Tensor& x) {
  const int64_t batch = x.size(0), seq = x.size(1);
  const torch::Tensor projected = qkv(tp.enter(x)).view({batch, seq, heads + 2 * kv_heads, head_dim}).transpose(1, 2);
  torch::Tensor q = apply_rope(projected.narrow(1, 0, heads), kRopeTheta);
  torch::Tensor k = apply_rope(projected.narrow(1, heads, kv_heads), kRopeTheta);
  torch::Tensor v = projected.narrow(1, heads + kv_heads, kv_heads);
  // Grouped-query attention: each KV head serves heads / kv_heads query heads.
  k = k.repeat_interleave(heads / kv_heads, 1);
  v = v.repeat_interleave(heads / kv_heads, 1);
  torch::Tensor scores = torch::matmul(q, k.transpose(-2, -1)) / std::sqrt(static_cast<double>(head_dim));
  const torch::Tensor future = torch::ones({seq, seq}, torch::kBool).triu(1);
  scores = scores.masked_fill(future, -std::numeric_limits<float>::infinity());
  const torch::Tensor context = torch::matmul(torch::softmax(scores, -1), v);
  return tp.leave(out(context.transpose(1, 2).reshape({batch, seq, heads * head_dim})));
}

SwiGLUImpl::SwiGLUImpl(int hidden, int ffn_total, const TensorParallel& tp_) : tp(tp_) {
  const int ffn = ffn_total / tp.size;
  auto linear = [](int in, int out) { return torch::nn::Linear(torch::nn::LinearOptions(in, out).bias(false)); };
  gate = register_module("gate", linear(hidden, ffn));
  up = register_module("up", linear(hidden, ffn));
  down = register_module("down", linear(ffn, hidden));
  init_linear(gate);
  init_linear(up);
  init_linear(down);
}

torch::Tensor SwiGLUImpl::partial(const torch::Tensor& x) { return down(torch::silu(gate(x)) * up(x)); }

torch::Tensor SwiGLUImpl::forward(const torch::Tensor& x) { return tp.leave(partial(tp.enter(x))); }

RouterImpl::RouterImpl(int hidden, int experts_, int top_k_) : experts(experts_), top_k(top_k_) {
  weight = register_parameter("weight", normal_parameter({experts, hidden}));
  // Before any statistics, warmup noise is standard normal: early routing is random, not collapsed.
  running_mean = register_buffer("running_mean", torch::zeros({experts}));
  running_std = register_buffer("running_std", torch::ones({experts}));
  step_sum = torch::zeros({experts}, torch::kFloat64);
  step_sum_sq = torch::zeros({experts}, torch::kFloat64);
  step_count = torch::zeros({1}, torch::kFloat64);
}

RouterImpl::Choice RouterImpl::forward(const torch::Tensor& x, RoutingContext& context) {
  const torch::Tensor logits = torch::matmul(x, weight.t());  // [tokens, experts]
  torch::Tensor scores = logits;
  if (context.training) {
    const torch::Tensor raw = logits.detach().to(torch::kFloat64);
    step_sum += raw.sum(0);
    step_sum_sq += raw.pow(2).sum(0);
    step_count += static_cast<double>(x.size(0));
  }
  // Stochastic Routing Warmup (report section 3.2): s_hat = a s + (1 - a)(mu + sigma eps), a = i / W.
  if (context.training && context.warmup_steps > 0 && context.step < context.warmup_steps) {
    const double a = static_cast<double>(context.step) / context.warmup_steps;
    auto generator = at::detail::createCPUGenerator(mix_seed(context.noise_seed, layer_id));
    const torch::Tensor eps = torch::randn(logits.sizes(), generator, logits.options());
    scores = a * logits + (1.0 - a) * (running_mean + running_std * eps);
  }
  const torch::Tensor probs = torch::softmax(scores, -1);
  auto [top_probs, top_experts] = probs.topk(top_k, -1);
  Choice choice;
  choice.experts = top_experts;
  choice.weights = top_probs / top_probs.sum(-1, true);  // renormalised over the k chosen
  // Load balance: E * sum_e f_e P_e, f_e the share of routed slots, P_e the mean probability.
  const torch::Tensor share =
      torch::bincount(top_experts.reshape({-1}), {}, experts).to(probs.dtype()) / (x.size(0) * top_k);
  const torch::Tensor balance = experts * (share * probs.mean(0)).sum();
  // Router z-loss: mean squared log-partition of the raw logits.
  const torch::Tensor z = torch::logsumexp(logits, -1).pow(2).mean();
  choice.aux_loss = kLoadBalanceCoefficient * balance + kZLossCoefficient * z;
  return choice;
}

void RouterImpl::update_statistics(const c10::intrusive_ptr<c10d::ProcessGroup>& group) {
  torch::NoGradGuard no_grad;
  torch::Tensor packed = torch::cat({step_sum, step_sum_sq, step_count});
  if (group && group->getSize() > 1) {
    // Traced: the step's first wait for the slowest DP peer happens here.
    TraceRecorder* trace = collective_trace();
    const TraceRecorder::Mark start = trace ? trace->mark() : TraceRecorder::Mark{};
    std::vector<torch::Tensor> tensors{packed};
    group->allreduce(tensors)->wait();
    if (trace) trace->record_collective("dp", "all_reduce", start, static_cast<double>(packed.nbytes()), group->getSize());
  }
  const double count = packed[-1].item<double>();
  if (count > 0) {
    const torch::Tensor mean = packed.narrow(0, 0, experts) / count;
    const torch::Tensor var = (packed.narrow(0, experts, experts) / count - mean.pow(2)).clamp_min(0);
    // Exponential moving average over steps, momentum 0.1.
    running_mean.mul_(0.9).add_(0.1 * mean.to(running_mean.dtype()));
    running_std.mul_(0.9).add_(0.1 * var.sqrt().to(running_std.dtype()));
  }
  step_sum.zero_();
  step_sum_sq.zero_();
  step_count.zero_();
}

ExpertBankImpl::ExpertBankImpl(int hidden, int ffn, int local_experts) {
  gate = register_parameter("gate", normal_parameter({local_experts, hidden, ffn}));
  up = register_parameter("up", normal_parameter({local_experts, hidden, ffn}));
  down = register_parameter("down", normal_parameter({local_experts, ffn, hidden}));
}

torch::Tensor ExpertBankImpl::forward(const torch::Tensor& x, const std::vector<int64_t>& counts) {
  // unbind once: backward then stacks the experts' gradients in one step instead of adding a
  // full-size gradient per expert.
  const std::vector<torch::Tensor> gates = gate.unbind(0), ups = up.unbind(0), downs = down.unbind(0);
  std::vector<torch::Tensor> outputs;
  int64_t offset = 0;
  for (size_t j = 0; j < counts.size(); ++j) {
    if (counts[j] == 0) continue;
    const torch::Tensor rows = x.narrow(0, offset, counts[j]);
    outputs.push_back(torch::matmul(torch::silu(torch::matmul(rows, gates[j])) * torch::matmul(rows, ups[j]), downs[j]));
    offset += counts[j];
  }
  return outputs.empty() ? x.narrow(0, 0, 0) : torch::cat(outputs, 0);
}

MoEImpl::MoEImpl(const ModelConfig& s, int ep_size, const TensorParallel& tp_)
    : tp(tp_), total_experts(s.routed_experts), local_experts(s.routed_experts / ep_size) {
  router = register_module("router", Router(s.hidden, s.routed_experts, s.top_k));
  // Expert TP = TP (Megatron's default): each expert's columns are split like a dense MLP's.
  experts = register_module("experts", ExpertBank(s.hidden, s.expert_ffn / tp.size, local_experts));
  if (s.shared_experts > 0) {
    // Ling's shared expert is one MLP of n_shared x moe_intermediate_size.
    shared = register_module("shared", SwiGLU(s.hidden, s.shared_experts * s.shared_expert_ffn, tp));
  }
}

// Dropless dispatch: every (token, expert) pair is kept; pairs are sorted by expert, sent to the
// expert's EP rank, computed, sent back and combined with the router weights.
torch::Tensor MoEImpl::forward(const torch::Tensor& x, RoutingContext& context) {
  // The router runs replicated on every TP rank; the experts see the TP-entered input.
  const RouterImpl::Choice choice = router->forward(x, context);
  const torch::Tensor entered = tp.enter(x);
  context.aux_loss = context.aux_loss.defined() ? context.aux_loss + choice.aux_loss : choice.aux_loss;
  const int64_t k = choice.experts.size(1);
  const torch::Tensor flat_experts = choice.experts.reshape({-1});
  const torch::Tensor order = std::get<1>(torch::sort(flat_experts, /*stable=*/true, 0, false));
  const torch::Tensor token_of = torch::div(order, k, "floor");
  const torch::Tensor rows = entered.index_select(0, token_of);
  const std::vector<int64_t> counts = to_vector(torch::bincount(flat_experts, {}, total_experts));
  torch::Tensor routed;
  if (context.ep_size == 1) {
    routed = experts->forward(rows, counts);
  } else {
    const TraceRecorder::Mark start = context.trace ? context.trace->mark() : TraceRecorder::Mark{};
    const int ep = context.ep_size, local = local_experts;
    std::vector<int64_t> send(ep, 0);
    for (int e = 0; e < total_experts; ++e) send[e / local] += counts[e];
    // Each source tells each owner how many rows it sends to every one of its experts.
    torch::Tensor counts_out = torch::tensor(counts, torch::kInt64), counts_in = torch::empty_like(counts_out);
    std::vector<int64_t> even;
    context.ep_group->alltoall_base(counts_in, counts_out, even, even)->wait();
    const std::vector<int64_t> incoming = to_vector(counts_in);  // [source][local expert]
    std::vector<int64_t> receive(ep, 0), per_expert(local, 0), offsets(ep * local, 0);
    int64_t running = 0;
    for (int s = 0; s < ep; ++s) {
      for (int j = 0; j < local; ++j) {
        offsets[s * local + j] = running;
        running += incoming[s * local + j];
        receive[s] += incoming[s * local + j];
        per_expert[j] += incoming[s * local + j];
      }
    }
    // The rows this rank's experts take: over the EP group, the busiest rank's share over the
    // mean is the routing skew the cost model prices.
    if (context.trace) {
      context.trace->record("ep", "all_to_all", start,
                            {{"collective", "all_to_all"}, {"bytes", static_cast<double>(counts_out.nbytes())},
                             {"group_size", ep}, {"expert_rows", running}});
    }
    const torch::Tensor received = all_to_all_rows(rows, context.ep_group, send, receive);
    // Regroup the received rows expert by expert, compute, and put them back in arrival order.
    std::vector<int64_t> by_expert;
    for (int j = 0; j < local; ++j) {
      for (int s = 0; s < ep; ++s) {
        for (int64_t r = 0; r < incoming[s * local + j]; ++r) by_expert.push_back(offsets[s * local + j] + r);
      }
    }
    const torch::Tensor gather = torch::tensor(by_expert, torch::kInt64);
    const torch::Tensor computed = experts->forward(received.index_select(0, gather), per_expert);
    const torch::Tensor back = computed.index_select(0, torch::argsort(gather));
    routed = all_to_all_rows(back, context.ep_group, receive, send);
  }
  const torch::Tensor weights = choice.weights.reshape({-1}).index_select(0, order).unsqueeze(1);
  torch::Tensor output = torch::zeros_like(x).index_add(0, token_of, routed * weights);
  if (shared) output = output + shared->partial(entered);
  return tp.leave(output);
}

LayerImpl::LayerImpl(const ModelConfig& s, bool dense, int ep_size, const TensorParallel& tp) {
  attention_norm = register_module("attention_norm", RMSNorm(s.hidden));
  attention = register_module("attention", Attention(s, tp));
  mlp_norm = register_module("mlp_norm", RMSNorm(s.hidden));
  if (dense) {
    mlp = register_module("mlp", SwiGLU(s.hidden, s.dense_ffn, tp));
  } else {
    moe = register_module("moe", MoE(s, ep_size, tp));
  }
}

torch::Tensor LayerImpl::forward(const torch::Tensor& x, RoutingContext& context) {
  const torch::Tensor h = x + attention(attention_norm(x));
  const torch::Tensor normed = mlp_norm(h);
  if (mlp) return h + mlp(normed);
  const auto shape = normed.sizes().vec();
  return h + moe->forward(normed.reshape({-1, shape.back()}), context).view(shape);
}

StageImpl::StageImpl(const ModelConfig& s, int first_layer, int count, bool first_, bool last_, int ep_size,
                     const TensorParallel& tp)
    : first(first_), last(last_) {
  if (first) {
    embedding = register_module("embedding", torch::nn::Embedding(s.vocab, s.hidden));
    torch::NoGradGuard no_grad;
    embedding->weight.normal_(0.0, kInitStd);
  }
  layers = register_module("layers", torch::nn::ModuleList());
  for (int i = 0; i < count; ++i) {
    Layer layer(s, s.is_dense_layer(first_layer + i), ep_size, tp);
    if (layer->moe) layer->moe->router->layer_id = first_layer + i;
    layers->push_back(layer);
  }
  if (last) {
    final_norm = register_module("final_norm", RMSNorm(s.hidden));
    head = register_parameter("head", normal_parameter({s.vocab, s.hidden}));
  }
}

torch::Tensor StageImpl::forward(const torch::Tensor& input, RoutingContext& context) {
  torch::Tensor x = first ? embedding(input) : input;
  for (const auto& layer : *layers) x = layer->as<LayerImpl>()->forward(x, context);
  if (!last) return x;
  return norm_head_logits(final_norm(x), head);
}

void StageImpl::update_routing_statistics(const c10::intrusive_ptr<c10d::ProcessGroup>& group) {
  for (const auto& layer : *layers) {
    auto* l = layer->as<LayerImpl>();
    if (l->moe) l->moe->router->update_statistics(group);
  }
}

torch::Tensor norm_head_logits(const torch::Tensor& hidden, const torch::Tensor& head) {
  const torch::Tensor norms = head.norm(2, {1}, true).detach().clamp_min(1e-12);
  return torch::matmul(hidden, (head / norms).t());
}

}  // namespace flopwise::executor

namespace flopwise::executor {

namespace {

uint64_t hash_name(const std::string& name) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a
  for (unsigned char c : name) h = (h ^ c) * 1099511628211ull;
  return h;
}

// "layers.<local>.rest" -> "layers.<global>.rest", so names match across pipeline splits.
std::string global_name(const std::string& name, int first_layer) {
  const std::string prefix = "layers.";
  if (name.rfind(prefix, 0) != 0) return name;
  const size_t dot = name.find('.', prefix.size());
  const int local = std::stoi(name.substr(prefix.size(), dot - prefix.size()));
  return prefix + std::to_string(first_layer + local) + name.substr(dot);
}

torch::Tensor normal_like(std::vector<int64_t> shape, uint64_t seed) {
  auto generator = at::detail::createCPUGenerator(seed);
  return torch::randn(shape, generator, torch::TensorOptions().dtype(torch::kFloat32)) * kInitStd;
}

// Fills `shard` with its TP slice of the full tensor the seed generates: rows (dim 0) or columns
// (dim 1) for Linear weights, the FFN dim for expert matrices, the q/k/v parts of fused QKV.
void fill_normal(torch::Tensor shard, uint64_t seed, const std::string& name, const TensorParallel& tp,
                 int64_t q_rows = 0, int64_t kv_rows = 0) {
  if (tp.size == 1 || !is_tensor_parallel_parameter(name)) {
    shard.copy_(normal_like(shard.sizes().vec(), seed));
    return;
  }
  std::vector<int64_t> full = shard.sizes().vec();
  if (name.find("attention.qkv") != std::string::npos) {
    // Rows are [q heads | k heads | v heads]; this rank takes its heads from each part.
    full[0] *= tp.size;
    const torch::Tensor all = normal_like(full, seed);
    const int64_t q = q_rows / tp.size, kv = kv_rows / tp.size;
    shard.copy_(torch::cat({all.narrow(0, tp.rank * q, q), all.narrow(0, q_rows + tp.rank * kv, kv),
                            all.narrow(0, q_rows + kv_rows + tp.rank * kv, kv)}));
    return;
  }
  int dim = 0;
  if (name.find("attention.out") != std::string::npos || name.find("down.weight") != std::string::npos) dim = 1;
  if (name.find("experts.gate") != std::string::npos || name.find("experts.up") != std::string::npos) dim = 1;  // [hidden, ffn] of one expert
  if (name.find("experts.down") != std::string::npos) dim = 0;                                                 // [ffn, hidden] of one expert
  full[dim] *= tp.size;
  shard.copy_(normal_like(full, seed).narrow(dim, tp.rank * shard.size(dim), shard.size(dim)));
}

}  // namespace

void initialize_parameters(StageImpl& stage, int first_layer, int ep_rank, uint64_t seed, const TensorParallel& tp) {
  torch::NoGradGuard no_grad;
  for (auto& item : stage.named_parameters()) {
    const std::string name = global_name(item.key(), first_layer);
    torch::Tensor p = item.value();
    if (name.find("norm") != std::string::npos) {
      p.fill_(1.0);
    } else if (is_expert_parameter(name)) {
      const int64_t local = p.size(0);
      for (int64_t j = 0; j < local; ++j) {
        fill_normal(p[j], mix_seed(mix_seed(seed, hash_name(name)), ep_rank * local + j), name, tp);
      }
    } else if (name.find("attention.qkv") != std::string::npos) {
      // The layer's attention knows how many rows are queries and how many keys (or values).
      const std::string layer = item.key().substr(0, item.key().find(".attention"));
      const auto* attention = stage.layers[std::stoi(layer.substr(7))]->as<LayerImpl>()->attention.get();
      const int64_t q = static_cast<int64_t>(attention->heads) * attention->head_dim * tp.size;
      const int64_t kv = static_cast<int64_t>(attention->kv_heads) * attention->head_dim * tp.size;
      fill_normal(p, mix_seed(seed, hash_name(name)), name, tp, q, kv);
    } else {
      fill_normal(p, mix_seed(seed, hash_name(name)), name, tp);
    }
  }
}

}  // namespace flopwise::executor
