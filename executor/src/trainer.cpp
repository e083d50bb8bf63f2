#include "flopwise/executor/trainer.hpp"

#include <chrono>
#include <cmath>
#include <deque>
#include <numeric>
#include <thread>
#include <filesystem>
#include <unistd.h>

#include "flopwise/executor/checkpoint_store.hpp"
#include "flopwise/executor/data.hpp"
#include "flopwise/executor/model.hpp"
#include "flopwise/executor/process_groups.hpp"
#include "flopwise/executor/progress.hpp"
#include "flopwise/plan.hpp"
#include "flopwise/schedule.hpp"

namespace flopwise::executor {
namespace {

namespace fs = std::filesystem;

std::string default_corpus() {
#ifdef FLOPWISE_DEFAULT_CORPUS
  return FLOPWISE_DEFAULT_CORPUS;
#else
  return "executor/data/gpl-3.0.txt";
#endif
}

// The plan and the machine, reconciled: the layout that runs, the model shape that trains.
struct Setup {
  Plan plan;
  ModelConfig model;
  Layout layout;
  int global_batch = 0;
  std::string notes;
  std::optional<MixedRun> mixed;  // a plan over pools
};

// The model as it trains here: the plan's, scaled to --scale with a depth pp divides, with the
// tokenizer's vocabulary.
ModelConfig scaled_model(const TrainOptions& o, const ModelConfig& planned, int vocab, int pp) {
  if (o.scale < 1.0) return scale_model(planned, o.scale, vocab, pp);
  ModelConfig m = planned;
  m.vocab = std::max(m.vocab, vocab);
  return m;
}

// What every setup says and sets once its layout is fitted: the features trained differently,
// and full-activation TP all-reduces (no sequence parallelism).
void note_features(Setup& s) {
  add_note(s.notes, features_not_run(s.plan.model, s.plan.run));
  s.layout.sequence_parallel = s.layout.tp == 1;
}

void check_world(const Setup& s, int world) {
  if (s.layout.devices() != world) {
    throw input_error("environment", "WORLD_SIZE", std::to_string(world) + " but the plan's layout scales to " +
                                                       std::to_string(s.layout.devices()) + " ranks");
  }
}

// The pools and what each does, for the run's header.
std::string pools_line(const MixedRun& run, const Layout& l) {
  std::string line = "pools (";
  line += to_string(run.strategy);
  line += "):";
  for (size_t p = 0; p < run.pools.size(); ++p) {
    const PoolRun& pool = run.pools[p];
    char part[240];
    if (run.data_parallel()) {
      std::snprintf(part, sizeof part, "%s %s: DP ranks %zu-%zu, %d micro-batch(es) each", p ? ";" : "", pool.name.c_str(),
                    p * run.pool_dp, (p + 1) * run.pool_dp - 1, pool.micro_batches);
    } else {
      std::snprintf(part, sizeof part, "%s %s: stage %zu, layers %d-%d", p ? ";" : "", pool.name.c_str(), p,
                    pool.first_layer, pool.first_layer + pool.layers - 1);
    }
    line += part;
    if (pool.slowdown > 1) {
      std::snprintf(part, sizeof part, ", compute slowed %.2fx", pool.slowdown);
      line += part;
    }
  }
  if (run.strategy == PoolStrategy::kLocalSgd) {
    line += "; outer sync every ";
    line += std::to_string(run.sync_every_steps);
    line += " steps (DiLoCo's outer Nesterov step)";
  }
  line += " [";
  line += std::to_string(l.devices());
  line += " ranks]";
  return line;
}

Setup reconcile(const TrainOptions& o, int world, int vocab) {
  Setup s;
  s.plan = load_plan(o.plan);
  if (s.plan.mixed && s.plan.mixed->strategy == PoolStrategy::kLocalSgd && o.resume) {
    throw input_error("--resume", "", "local SGD's outer state (synchronised parameters and momentum) is not checkpointed");
  }
  if (s.plan.mixed) {
    FittedMixedRun f = fit_mixed_plan(o, s.plan, world, vocab);
    s.model = f.model;
    s.layout = f.layout;
    s.global_batch = f.global_batch;
    s.notes = f.notes;
    s.mixed = f.run;
    note_features(s);
    check_world(s, world);
    return s;
  }
  if (!o.slowdowns.empty() || o.sync_every_steps > 0) {
    throw input_error("--slowdown", "", "--slowdown and --sync-every apply to plans over pools; " + o.plan + " has one pool");
  }
  s.layout = s.plan.layout;
  // The executor keeps every activation (no recomputation): the trace says so.
  s.layout.recompute = Recompute::kNone;
  s.layout.recompute_modules = RecomputeModules{};
  s.global_batch = s.plan.run.global_batch;
  s.notes = fit_layout(s.layout, s.global_batch, s.plan.model, world);
  s.model = scaled_model(o, s.plan.model, vocab, s.layout.pp);
  const std::string more = fit_layout(s.layout, s.global_batch, s.model, world);  // divisibility of the scaled shape
  add_note(s.notes, more);
  note_features(s);
  const int plan_micro_batches = s.global_batch / (s.layout.dp * s.layout.micro_batch);
  if (o.micro_batches > 0 && o.micro_batches < plan_micro_batches) {
    s.global_batch = o.micro_batches * s.layout.dp * s.layout.micro_batch;
    add_note(s.notes, "global batch " + std::to_string(plan_micro_batches) + " -> " + std::to_string(o.micro_batches) +
                          " micro-batches per replica (--micro-batches)");
  }
  check_world(s, world);
  return s;
}

void all_reduce(const Group& group, torch::Tensor& t) {
  if (!group) return;
  std::vector<torch::Tensor> tensors{t};
  group->allreduce(tensors)->wait();
}

// A parameter and whether its replicas live in the expert-DP group (experts) or the DP group.
struct ParamInfo {
  std::string name;
  torch::Tensor tensor;
  bool expert = false;
};

class Worker {
 public:
  Worker(const TrainOptions& o, std::ostream& out);
  int run();

 private:
  void build_model();
  void build_optimizer();
  // This step's micro-batches: the rank's own, those before its DP coordinate (its samples'
  // offset), those averaged with its gradients, its pool's, and the world's.
  struct BatchShare {
    int own = 0, offset = 0, averaged = 0, pool = 0, world = 0;
    int averaged_ranks = 0;  // DP coordinates whose gradients are averaged together
  };
  BatchShare batch_share() const;
  void pad_compute(TraceRecorder::Mark& start);
  std::string outer_sync();
  double replica_spread();
  torch::Tensor micro_batch_tokens(const std::vector<uint64_t>& positions, int micro, bool bad);
  struct StepLosses {
    double lm = 0, aux = 0;
  };
  StepLosses forward_backward(const std::vector<uint64_t>& positions, int micro_batches, bool bad);
  void synchronise_gradients();
  double global_grad_norm();
  void optimizer_step(double lr, double scale);
  void cast_moments(torch::ScalarType dtype);
  void save_checkpoint();
  void report_write(const BackgroundWrite& write);
  bool restore_checkpoint();
  void write_trace();
  RunRecord run_record(int ranks_per_node) const;
  double measure_matmul_flops();
  void probe_speed();
  int rank_at_stage(int stage) const;
  // One step: forward, backward, synchronisation, the guard's verdict and the update.
  StepReport train_step(double peak_flops);

  const TrainOptions& o_;
  std::ostream& out_;
  int rank_, world_;
  Setup setup_;
  TokenCorpus corpus_;
  std::unique_ptr<SampleOrder> order_;
  Groups groups_;
  RankGrid grid_;
  RankCoords position_;
  int first_layer_ = 0, layer_count_ = 0;
  Stage stage_{nullptr};
  std::vector<ParamInfo> params_;
  GroupMembers members_;
  int pool_ = 0;                    // plans over pools: this rank's pool
  std::vector<int> full_micro_batches_;  // per DP coordinate, at the full batch
  std::vector<torch::Tensor> anchor_, outer_momentum_;  // local SGD's outer step
  torch::Tensor probe_a_, probe_b_;  // the speed probe's operands
  std::vector<size_t> owned_;  // params this rank updates (all of them without optimizer sharding)
  std::unique_ptr<torch::optim::AdamW> optimizer_;
  RunState state_;
  AnomalyGuard guard_;
  CheckpointStore checkpoints_;
  int checkpoint_every_ = 0;
  TraceRecorder trace_;
};

Worker::Worker(const TrainOptions& o, std::ostream& out)
    : o_(o),
      out_(out),
      rank_(env_int("RANK")),
      world_(env_int("WORLD_SIZE")),
      grid_(Layout{}, 1),
      guard_(o.spikes, o.seed),
      checkpoints_(o.checkpoint_dir, rank_),
      trace_(!o.trace.empty(), rank_) {
  torch::set_num_threads(1);  // one core per rank, and bit-for-bit repeatable reductions
  // Tiny initial gradients are subnormal floats, which x86 handles 100x slower; flush them to zero.
  at::globalContext().setFlushDenormal(true);
  corpus_ = TokenCorpus::load(o.data.empty() ? std::vector<std::string>{default_corpus()} : o.data);
  setup_ = reconcile(o, world_, corpus_.vocab);
  order_ = std::make_unique<SampleOrder>(corpus_, o.seq_len > 0 ? o.seq_len : setup_.plan.run.seq_len, o.seed);
  setup_.model.seq_len = order_->seq_len();
  grid_ = RankGrid(setup_.layout, setup_.layout.devices());
  position_ = grid_.coords(rank_);
  const MixedRun* mixed = setup_.mixed ? &*setup_.mixed : nullptr;
  members_ = group_members(setup_.layout, rank_, mixed);
  groups_ = build_groups(members_, rank_, world_);
  if (mixed) {
    pool_ = mixed->pool_of(position_);
    full_micro_batches_ = mixed->micro_batches_per_dp(setup_.layout.dp);
  } else {
    const Layout& l = setup_.layout;
    full_micro_batches_.assign(l.dp, setup_.global_batch / (l.dp * l.micro_batch));
  }
  // The plan's checkpoint interval (Daly's optimum for the planned run) unless one is given.
  checkpoint_every_ = o.checkpoint_every > 0 ? o.checkpoint_every : setup_.plan.predicted.goodput.checkpoint_every_steps;
  if (trace_.enabled()) {
    trace_collectives(&trace_);
    // One time axis for all ranks, so that a collective's spans show who arrived last.
    if (groups_.world) groups_.world->barrier()->wait();
    trace_.restart_clock();
  }
  build_model();
  build_optimizer();
}

void Worker::build_model() {
  LayerRange layers = chunk_layers(setup_.model.layers, setup_.layout, position_.pp);  // vpp is 1 here
  if (setup_.mixed && !setup_.mixed->data_parallel()) {
    const PoolRun& stage = setup_.mixed->pools.at(position_.pp);  // one stage per pool, its own layers
    layers = {stage.first_layer, stage.layers};
  }
  first_layer_ = layers.first;
  layer_count_ = layers.count;
  const bool first = position_.pp == 0, last = position_.pp == setup_.layout.pp - 1;
  const TensorParallel tp{groups_.tp, setup_.layout.tp, position_.tp};
  stage_ = Stage(setup_.model, first_layer_, layer_count_, first, last, setup_.layout.ep, tp);
  initialize_parameters(*stage_, first_layer_, position_.ep, o_.seed, tp);
  for (auto& item : stage_->named_parameters()) {
    params_.push_back({item.key(), item.value(), is_expert_parameter(item.key())});
  }
  // Distributed optimizer (ZeRO-1): whole parameters are dealt round-robin over the ranks that
  // hold their replicas; each rank keeps AdamW state for its own only.
  const auto& dense_members = members_.dp;
  const auto& expert_members = members_.expert_dp;
  const int dense_index = static_cast<int>(std::find(dense_members.begin(), dense_members.end(), rank_) - dense_members.begin());
  const int expert_index = static_cast<int>(std::find(expert_members.begin(), expert_members.end(), rank_) - expert_members.begin());
  for (size_t i = 0; i < params_.size(); ++i) {
    const int size = params_[i].expert ? static_cast<int>(expert_members.size()) : static_cast<int>(dense_members.size());
    const int index = params_[i].expert ? expert_index : dense_index;
    if (!setup_.layout.optimizer_sharding || static_cast<int>(i % size) == index) owned_.push_back(i);
  }
}

void Worker::build_optimizer() {
  // Weight decay on matrices only; norms keep theirs (Megatron's default grouping).
  std::vector<torch::Tensor> decay, no_decay;
  for (size_t i : owned_) (params_[i].tensor.dim() >= 2 ? decay : no_decay).push_back(params_[i].tensor);
  auto options = torch::optim::AdamWOptions(o_.recipe.peak_lr).betas({0.9, 0.95}).eps(1e-8).weight_decay(0.1);
  std::vector<torch::optim::OptimizerParamGroup> param_groups;
  param_groups.emplace_back(decay, std::make_unique<torch::optim::AdamWOptions>(options));
  auto plain = options;
  plain.weight_decay(0.0);
  param_groups.emplace_back(no_decay, std::make_unique<torch::optim::AdamWOptions>(plain));
  optimizer_ = std::make_unique<torch::optim::AdamW>(param_groups, options);
}

// DiLoCo's outer step (Douillard et al. 2023, arXiv 2311.08105, Algorithm 1): the pools' parameters
// are averaged; their distance from the last synchronised parameters is the outer gradient, which
// Nesterov momentum (the paper's learning rate 0.7 and momentum 0.9) applies to the synchronised
// parameters; every pool continues from the result. Each pool keeps its own AdamW state.
std::string Worker::outer_sync() {
  constexpr double kOuterLr = 0.7, kOuterMomentum = 0.9;
  torch::NoGradGuard no_grad;
  const double start = trace_.now();
  const double before = replica_spread();
  std::vector<torch::Tensor> views;
  for (const ParamInfo& p : params_) views.push_back(p.tensor.detach().reshape({-1}));
  torch::Tensor average = torch::cat(views);
  all_reduce(groups_.cross_pool, average);
  average.div_(static_cast<double>(members_.cross_pool.size()));
  int64_t offset = 0;
  for (size_t i = 0; i < params_.size(); ++i) {
    const int64_t n = params_[i].tensor.numel();
    const torch::Tensor outer_grad = anchor_[i] - average.narrow(0, offset, n).view_as(anchor_[i]);
    outer_momentum_[i].mul_(kOuterMomentum).add_(outer_grad);
    anchor_[i].sub_(kOuterLr * (outer_grad + kOuterMomentum * outer_momentum_[i]));
    params_[i].tensor.detach().copy_(anchor_[i]);
    offset += n;
  }
  trace_.record("dp", "outer sync", start,
                {{"collective", "all_reduce"}, {"bytes", static_cast<double>(average.nbytes())}, {"cross_pool", true}});
  char line[160];
  std::snprintf(line, sizeof line, "outer sync over %zu pools: replicas %.3g apart before, %.3g after",
                members_.cross_pool.size(), before, replica_spread());
  return line;
}

// How far the pools' copies of this rank's shard are apart (largest spread of a parameter
// checksum over the pools, over every shard): 0 when the pools hold the same parameters.
double Worker::replica_spread() {
  double checksum = 0;
  for (const ParamInfo& p : params_) checksum += p.tensor.detach().to(torch::kFloat64).sum().item<double>();
  torch::Tensor extremes = torch::tensor({checksum, -checksum}, torch::kFloat64);
  if (groups_.cross_pool) {
    std::vector<torch::Tensor> tensors{extremes};
    c10d::AllreduceOptions options;
    options.reduceOp = c10d::ReduceOp::MAX;
    groups_.cross_pool->allreduce(tensors, options)->wait();
  }
  torch::Tensor spread = torch::full({1}, extremes[0].item<double>() + extremes[1].item<double>(), torch::kFloat64);
  if (groups_.world) {
    std::vector<torch::Tensor> tensors{spread};
    c10d::AllreduceOptions options;
    options.reduceOp = c10d::ReduceOp::MAX;
    groups_.world->allreduce(tensors, options)->wait();
  }
  return spread.item<double>();
}

int Worker::rank_at_stage(int stage) const {
  RankCoords c = position_;
  c.pp = stage;
  return grid_.rank_of(c);
}

Worker::BatchShare Worker::batch_share() const {
  const int dp = setup_.layout.dp;
  BatchShare b;
  std::vector<int> averaged(dp);
  std::iota(averaged.begin(), averaged.end(), 0);
  if (setup_.mixed) averaged = setup_.mixed->averaged_with(position_.dp, dp);
  for (int d = 0; d < dp; ++d) {
    const int m = micro_batches_at(o_.recipe, state_.step, full_micro_batches_[d]);
    if (d < position_.dp) b.offset += m;
    if (d == position_.dp) b.own = m;
    if (std::find(averaged.begin(), averaged.end(), d) != averaged.end()) b.averaged += m;
    if (setup_.mixed && setup_.mixed->data_parallel() && d / setup_.mixed->pool_dp == pool_) b.pool += m;
    b.world += m;
  }
  b.averaged_ranks = static_cast<int>(averaged.size());
  return b;
}

// A slower pool's device: its compute takes `slowdown` times as long (the rest is padding). The
// padding stands for that device's compute, so the span counts it as CPU time the rank ran:
// `start` moves back by it on the CPU clock.
void Worker::pad_compute(TraceRecorder::Mark& start) {
  if (!setup_.mixed) return;
  const double factor = setup_.mixed->pools.at(pool_).slowdown;
  if (factor <= 1) return;
  const double padding = (factor - 1) * (trace_.now() - start.wall_s);
  std::this_thread::sleep_for(std::chrono::duration<double>(padding));
  start.cpu_s -= padding;
}

// Micro-batch `micro` of this DP rank: global sample rows (micro-batches of the DP ranks before it + micro) x mb ...
torch::Tensor Worker::micro_batch_tokens(const std::vector<uint64_t>& positions, int micro, bool bad) {
  const int mb = setup_.layout.micro_batch;
  const int first = batch_share().offset;
  std::vector<int64_t> tokens;
  for (int i = 0; i < mb; ++i) {
    const uint64_t position = positions[(first + micro) * mb + i];
    std::vector<int32_t> sample = order_->sample(position);
    if (bad) {
      // Uniformly random tokens: nothing a language model can predict, a guaranteed loss spike.
      for (size_t t = 0; t < sample.size(); ++t) sample[t] = static_cast<int32_t>(mix_seed(position, t) % corpus_.vocab);
    }
    tokens.insert(tokens.end(), sample.begin(), sample.end());
  }
  return torch::tensor(tokens, torch::kInt64).view({mb, -1});
}

Worker::StepLosses Worker::forward_backward(const std::vector<uint64_t>& positions, int m, bool bad) {
  const Layout& l = setup_.layout;
  const bool first = position_.pp == 0, last = position_.pp == l.pp - 1;
  const int previous = rank_at_stage(position_.pp - 1);
  const int next = rank_at_stage(position_.pp + 1);
  const int64_t seq = order_->seq_len();
  struct InFlight {
    torch::Tensor input, output, aux;
  };
  std::deque<InFlight> in_flight;
  std::vector<c10::intrusive_ptr<c10d::Work>> sends;
  std::vector<torch::Tensor> keep_alive;
  StepLosses losses;
  const BatchShare share = batch_share();
  const int first_micro = share.offset;  // the global index of this rank's first micro-batch
  auto forward = [&](int micro) {
    probe_speed();
    const double start = trace_.now();
    const torch::Tensor tokens = micro_batch_tokens(positions, micro, bad);
    InFlight f;
    if (first) {
      f.input = tokens.narrow(1, 0, seq);
    } else {
      f.input = torch::empty({l.micro_batch, seq, setup_.model.hidden});
      std::vector<torch::Tensor> buffer{f.input};
      groups_.world->recv(buffer, previous, 2 * micro)->wait();
      trace_.record("pp", "recv activations", start, {{"collective", "recv"}, {"bytes", static_cast<double>(f.input.nbytes())}});
      f.input.requires_grad_(true);
    }
    RoutingContext context;
    context.step = state_.step;
    context.warmup_steps = o_.routing_warmup_steps;
    context.noise_seed = mix_seed(mix_seed(o_.seed, static_cast<uint64_t>(state_.step)), first_micro + micro);
    context.ep_group = groups_.ep;
    context.ep_size = l.ep;
    context.trace = &trace_;
    TraceRecorder::Mark compute_start = trace_.mark();
    f.output = stage_->forward(f.input, context);
    f.aux = context.aux_loss.defined() ? context.aux_loss : torch::zeros({});
    losses.aux += f.aux.item<double>() / m;
    if (last) {
      const torch::Tensor targets = tokens.narrow(1, 1, seq).reshape({-1});
      const torch::Tensor lm = torch::nn::functional::cross_entropy(f.output.reshape({-1, f.output.size(-1)}), targets);
      losses.lm += lm.item<double>() / m;
      f.output = lm;
    }
    // A slowed pool's stage hands its activations on only after its padded time.
    pad_compute(compute_start);
    if (!last) {
      const torch::Tensor outgoing = f.output.detach().contiguous();
      keep_alive.push_back(outgoing);
      std::vector<torch::Tensor> buffer{outgoing};
      sends.push_back(groups_.world->send(buffer, next, 2 * micro));
    }
    trace_.record("compute", "F mb" + std::to_string(micro), compute_start, {{"pass", "forward"}, {"micro_batch", micro}});
    in_flight.push_back(f);
  };
  auto backward = [&](int micro) {
    probe_speed();
    InFlight f = in_flight.front();
    in_flight.pop_front();
    TraceRecorder::Mark start = trace_.mark();
    // Each micro-batch weighs 1 / (micro-batches averaged together), times the ranks the
    // gradient sum is divided by: 1 / m when every rank trains m.
    const torch::Tensor scale = torch::full({}, static_cast<double>(share.averaged_ranks) / share.averaged);
    if (last) {
      torch::autograd::backward({f.output + f.aux}, {scale});
    } else {
      torch::Tensor grad = torch::empty_like(f.output);
      std::vector<torch::Tensor> buffer{grad};
      groups_.world->recv(buffer, next, 2 * micro + 1)->wait();
      trace_.record("pp", "recv gradients", start.wall_s, {{"collective", "recv"}, {"bytes", static_cast<double>(grad.nbytes())}});
      start = trace_.mark();
      if (f.aux.requires_grad()) {
        torch::autograd::backward({f.output, f.aux}, {grad, scale});
      } else {
        torch::autograd::backward({f.output}, {grad});
      }
    }
    pad_compute(start);
    if (!first) {
      const torch::Tensor outgoing = f.input.grad().contiguous();
      keep_alive.push_back(outgoing);
      std::vector<torch::Tensor> buffer{outgoing};
      sends.push_back(groups_.world->send(buffer, previous, 2 * micro + 1));
    }
    trace_.record("compute", "B mb" + std::to_string(micro), start, {{"pass", "backward"}, {"micro_batch", micro}});
  };
  // The core's 1F1B order (vpp = 1: fit_layout runs interleaved plans as plain 1F1B).
  for (const PipelineOp& op : pipeline_schedule(l.pp, 1, m, position_.pp)) {
    if (op.forward) {
      forward(op.micro_batch);
    } else {
      backward(op.micro_batch);
    }
  }
  for (auto& work : sends) work->wait();
  return losses;
}

// DP: dense gradients summed over the DP group, expert gradients over the expert-DP group, then
// (hetero DP) over the same shard in every pool; divided by the ranks averaged together, since
// each rank's loss was weighted by that count over the micro-batches averaged together.
void Worker::synchronise_gradients() {
  const bool across_pools = setup_.mixed && setup_.mixed->strategy == PoolStrategy::kHeteroDp;
  const int averaged_ranks = batch_share().averaged_ranks;
  for (bool expert : {false, true}) {
    std::vector<torch::Tensor> grads;
    for (ParamInfo& p : params_) {
      if (p.expert != expert) continue;
      if (!p.tensor.grad().defined()) p.tensor.mutable_grad() = torch::zeros_like(p.tensor);
      grads.push_back(p.tensor.grad());
    }
    if (grads.empty()) continue;
    torch::Tensor flat = torch::cat([&] {
      std::vector<torch::Tensor> views;
      for (auto& g : grads) views.push_back(g.reshape({-1}));
      return views;
    }());
    const Group& group = expert ? groups_.expert_dp : groups_.dp;
    const TraceRecorder::Mark start = trace_.mark();
    all_reduce(group, flat);
    if (group) trace_.record_collective("dp", "all_reduce", start, static_cast<double>(flat.nbytes()), group->getSize());
    if (across_pools && groups_.cross_pool) {
      const double cross_start = trace_.now();
      all_reduce(groups_.cross_pool, flat);
      trace_.record("dp", "cross-pool all_reduce", cross_start,
                    {{"collective", "all_reduce"}, {"bytes", static_cast<double>(flat.nbytes())},
                     {"group_size", groups_.cross_pool->getSize()}, {"cross_pool", true}});
    }
    flat.div_(averaged_ranks);
    int64_t offset = 0;
    for (auto& g : grads) {
      g.copy_(flat.narrow(0, offset, g.numel()).view_as(g));
      offset += g.numel();
    }
  }
}

// Global L2 norm: each replica counted once (a parameter on r ranks contributes 1/r per rank).
double Worker::global_grad_norm() {
  const Layout& l = setup_.layout;
  // Over the ranks training one copy of the model: with local SGD each pool has its own norm.
  const int dp = batch_share().averaged_ranks;
  double local = 0;
  for (const ParamInfo& p : params_) {
    const double replicas = (p.expert ? dp / l.ep : dp) * (is_tensor_parallel_parameter(p.name) ? 1 : l.tp);
    local += p.tensor.grad().pow(2).sum().item<double>() / replicas;
  }
  torch::Tensor total = torch::full({1}, local, torch::kFloat64);
  all_reduce(groups_.replica, total);
  return std::sqrt(total.item<double>());
}

void Worker::optimizer_step(double lr, double clip_scale) {
  for (auto& group : optimizer_->param_groups()) static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);
  if (clip_scale < 1.0) {
    for (ParamInfo& p : params_) p.tensor.grad().mul_(clip_scale);
  }
  const TraceRecorder::Mark start = trace_.mark();
  const bool bf16_moments = setup_.plan.run.adam_moments_in_bf16;
  if (bf16_moments) cast_moments(torch::kFloat32);
  optimizer_->step();
  if (bf16_moments) cast_moments(torch::kBFloat16);
  trace_.record("compute", "optimizer", start, {{"pass", "optimizer"}});
  if (!setup_.layout.optimizer_sharding) return;
  // Each owner hands its updated parameters to the other replicas.
  const auto& dense_members = members_.dp;
  const auto& expert_members = members_.expert_dp;
  for (size_t i = 0; i < params_.size(); ++i) {
    const Group& group = params_[i].expert ? groups_.expert_dp : groups_.dp;
    if (!group) continue;
    const int size = params_[i].expert ? static_cast<int>(expert_members.size()) : static_cast<int>(dense_members.size());
    std::vector<torch::Tensor> tensors{params_[i].tensor.detach()};
    c10d::BroadcastOptions options;
    options.rootRank = static_cast<int>(i % size);
    const TraceRecorder::Mark broadcast_start = trace_.mark();
    group->broadcast(tensors, options)->wait();
    trace_.record_collective("dp", "broadcast", broadcast_start, static_cast<double>(tensors[0].nbytes()), size);
  }
}

// The plan's bf16 AdamW moments, as Megatron-Core's precision-aware optimizer keeps them: stored
// in bf16 between steps, widened to fp32 for the update (LibTorch's AdamW updates its moments in
// place at the parameters' dtype and cannot mix them). Checkpoints save them as bf16.
void Worker::cast_moments(torch::ScalarType dtype) {
  for (auto& entry : optimizer_->state()) {
    auto& state = static_cast<torch::optim::AdamWParamState&>(*entry.second);
    state.exp_avg(state.exp_avg().to(dtype));
    state.exp_avg_sq(state.exp_avg_sq().to(dtype));
  }
}

// Training waits only for the snapshot: weights and optimizer state serialised into memory. A
// background thread writes it (then the state and the manifest); the next save waits for it.
void Worker::save_checkpoint() {
  const double start = trace_.now();
  std::ostringstream snapshot;
  torch::serialize::OutputArchive archive;
  stage_->save(archive);
  torch::serialize::OutputArchive optimizer_archive;
  optimizer_->save(optimizer_archive);
  archive.write("optimizer", optimizer_archive);
  archive.save_to(snapshot);
  std::string bytes = std::move(snapshot).str();
  const double size = static_cast<double>(bytes.size());
  report_write(checkpoints_.finish());
  checkpoints_.save_in_background(state_.step, std::move(bytes), state_.to_json(), o_.checkpoint_write_delay_ms);
  if (o_.checkpoint_sync) report_write(checkpoints_.finish());
  const double blocked = trace_.now() - start;
  trace_.record("checkpoint", "save", start, {{"pass", "blocking"}, {"bytes", size}});
  if (rank_ == 0) {
    char line[160];
    std::snprintf(line, sizeof line, "checkpoint step %d: training blocked %.3f s (%s), %.1f MB per rank", state_.step,
                  blocked, o_.checkpoint_sync ? "written" : "snapshot; written in the background", size / 1e6);
    out_ << line << "\n";
  }
}

// The write's own span (its thread's timing) goes into the trace: what `flopwise calibrate` fits the
// storage bandwidth to.
void Worker::report_write(const BackgroundWrite& write) {
  if (write.step < 0) return;
  trace_.record_at("checkpoint", "write", write.started, write.seconds,
                   {{"pass", "write"}, {"bytes", write.bytes}, {"checkpoint_step", write.step}});
  if (rank_ != 0) return;
  char line[96];
  std::snprintf(line, sizeof line, "checkpoint step %d written in %.3f s", write.step, write.seconds);
  out_ << line << "\n";
}

// The newest step whose files are intact on every rank; corrupt newer ones are reported and skipped.
bool Worker::restore_checkpoint() {
  const double start = trace_.now();
  for (int step : checkpoints_.steps_newest_first()) {
    const bool valid = checkpoints_.intact(step);
    torch::Tensor everywhere = torch::full({1}, valid ? 1.0 : 0.0, torch::kFloat64);
    if (groups_.world) {
      std::vector<torch::Tensor> tensors{everywhere};
      c10d::AllreduceOptions options;
      options.reduceOp = c10d::ReduceOp::MIN;
      groups_.world->allreduce(tensors, options)->wait();
    }
    if (everywhere.item<double>() < 1.0) {
      if (rank_ == 0 || !valid) out_ << "checkpoint step " << step << " is incomplete or corrupt on some rank; trying an older one\n";
      continue;
    }
    torch::serialize::InputArchive archive;
    archive.load_from(checkpoints_.tensors_path(step));
    stage_->load(archive);
    torch::serialize::InputArchive optimizer_archive;
    archive.read("optimizer", optimizer_archive);
    optimizer_->load(optimizer_archive);
    state_ = RunState::from_json(checkpoints_.state(step), checkpoints_.folder(step));
    const double bytes = static_cast<double>(std::filesystem::file_size(checkpoints_.tensors_path(step)));
    trace_.record("checkpoint", "load", start, {{"pass", "load"}, {"bytes", bytes}});
    if (rank_ == 0) {
      out_ << "resumed from " << checkpoints_.folder(step) << " in " << trace_.now() - start << " s\n";
    }
    return true;
  }
  return false;
}

// What ran, in the plan's terms, so that `flopwise calibrate` can predict exactly this run.
RunRecord Worker::run_record(int ranks_per_node) const {
  RunRecord r;
  r.model = setup_.model;
  r.layout = setup_.layout;
  r.run.seq_len = order_->seq_len();
  r.run.global_batch = setup_.global_batch;
  r.run.precision = Precision::kFp32;
  r.run.overlap = CommOverlap::none();  // every collective here blocks
  r.run.attention = AttentionKernel::kUnfused;  // scores, softmax and context as separate LibTorch ops
  r.ranks = world_;
  r.ranks_per_node = ranks_per_node;
  return r;
}

std::string host_name() {
  char name[256] = {};
  return ::gethostname(name, sizeof name - 1) == 0 ? name : "";
}

// Each rank writes its spans, then rank 0 merges them into one file with the run's record.
void Worker::write_trace() {
  // One pid per node, as the simulator writes: ranks of a node share LOCAL_WORLD_SIZE.
  const char* local = std::getenv("LOCAL_WORLD_SIZE");
  const int per_node = local ? std::max(1, std::atoi(local)) : world_;
  const auto part = [&](int rank) { return o_.trace + ".rank" + std::to_string(rank); };
  flopwise::write_trace(part(rank_), trace_.spans(), per_node, rank_clock_to_json({host_name(), trace_.origin_on_host_clock()}));
  if (groups_.world) groups_.world->barrier()->wait();
  if (rank_ != 0) return;
  std::vector<TraceFile> parts;
  for (int r = 0; r < world_; ++r) {
    parts.push_back(read_trace_file(part(r)));
    fs::remove(part(r));
  }
  flopwise::write_trace(o_.trace, merge_rank_traces(parts), per_node,
                        {{"flopwise_run", run_record_to_json(run_record(per_node), o_.plan)}, {"clock", kCommonClock}});
  out_ << "trace written to " << o_.trace << "\n";
}

namespace {

// How long a x b takes on this core.
Seconds timed_matmul(const torch::Tensor& a, const torch::Tensor& b) {
  const auto start = std::chrono::steady_clock::now();
  torch::matmul(a, b);
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

// Single-thread fp32 matmul throughput of this core, the denominator of the MFU estimate.
double Worker::measure_matmul_flops() {
  torch::NoGradGuard no_grad;
  const torch::Tensor a = torch::randn({256, 256}), b = torch::randn({256, 256});
  torch::matmul(a, b);
  Seconds spent = 0;
  int runs = 0;
  for (; spent < 0.2; ++runs) spent += timed_matmul(a, b);
  return runs * 2.0 * 256 * 256 * 256 / spent;
}

// Shared and virtual machines change a core's speed for seconds at a time (on this project's VMs a
// neighbour on the same physical core halves the matmul rate for 10-60 s, in bursts). A traced rank
// times one small fixed matmul at the start of each step and of each pass, so that calibration can
// tell the machine's speed in that step from the model's efficiencies: about 0.3-0.6 ms each,
// spans that calibration takes out of the step.
void Worker::probe_speed() {
  if (!trace_.enabled()) return;
  constexpr int n = 128;  // the width of the scaled-down models calibration trains
  torch::NoGradGuard no_grad;
  if (!probe_a_.defined()) probe_a_ = torch::randn({n, n}), probe_b_ = torch::randn({n, n});
  const TraceRecorder::Mark start = trace_.mark();
  torch::matmul(probe_a_, probe_b_);
  trace_.record(kProbeCategory, "speed probe", start, {{"flops", 2.0 * n * n * n}});
}

StepReport Worker::train_step(double peak_flops) {
  const Layout& l = setup_.layout;
  const auto step_start = std::chrono::steady_clock::now();
  const TraceRecorder::Mark step_trace_start = trace_.mark();
  trace_.set_step(state_.step);
  probe_speed();
  const BatchShare share = batch_share();
  const int m = share.own;
  const int samples = share.world * l.micro_batch;
  const std::vector<uint64_t> positions = AnomalyGuard::positions_for(state_, samples);
  optimizer_->zero_grad();
  for (ParamInfo& p : params_) {
    if (p.tensor.grad().defined()) p.tensor.grad().zero_();
  }
  const StepLosses losses = forward_backward(positions, m, state_.step == o_.inject_bad_batch_at);
  stage_->update_routing_statistics(groups_.dp);
  synchronise_gradients();
  // The LM loss lives on the last stage, aux losses on every stage: average over DP (each rank
  // weighted by its micro-batches), sum over PP; with pools, also each pool's own LM loss.
  const bool last = position_.pp == l.pp - 1;
  const double weight = static_cast<double>(share.own) / share.world;
  const bool per_pool = setup_.mixed && setup_.mixed->data_parallel();
  std::vector<double> values = {last && position_.tp == 0 ? losses.lm * weight : 0.0,
                                position_.tp == 0 ? losses.aux * weight : 0.0};
  if (per_pool) {
    values.resize(2 + setup_.mixed->pools.size(), 0.0);
    if (last && position_.tp == 0) values[2 + pool_] = losses.lm * share.own / share.pool;
  }
  torch::Tensor reduced = torch::tensor(values, torch::kFloat64);
  all_reduce(groups_.world, reduced);
  StepReport report;
  report.loss = reduced[0].item<double>();
  report.aux = reduced[1].item<double>();
  for (size_t p = 0; per_pool && p < setup_.mixed->pools.size(); ++p) {
    report.pool_losses.push_back({setup_.mixed->pools[p].name, reduced[2 + p].item<double>()});
  }
  report.grad_norm = global_grad_norm();
  const StepVerdict verdict = guard_.judge(state_, report.loss, report.aux, report.grad_norm, positions);
  report.lr = learning_rate(o_.recipe, state_.step) * verdict.lr_factor;
  report.applied = verdict.apply;
  report.event = verdict.event;
  if (verdict.apply) optimizer_step(report.lr, report.grad_norm > o_.clip_norm ? o_.clip_norm / report.grad_norm : 1.0);
  const bool local_sgd = setup_.mixed && setup_.mixed->strategy == PoolStrategy::kLocalSgd;
  if (local_sgd && (state_.step + 1) % setup_.mixed->sync_every_steps == 0) {
    if (!report.event.empty()) report.event += "; ";
    report.event += outer_sync();
  }
  trace_.record("step", "step " + std::to_string(state_.step), step_trace_start, {{"micro_batches", m}});
  ++state_.step;
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - step_start).count();
  report.step = state_.step;
  report.steps = o_.recipe.steps;
  report.tokens = static_cast<double>(samples) * order_->seq_len();
  report.seconds = seconds;
  report.tokens_per_s = report.tokens / seconds;
  report.mfu = training_flops_per_token(setup_.model, order_->seq_len()) * report.tokens_per_s / (world_ * peak_flops);
  return report;
}

int Worker::run() {
  const Layout& l = setup_.layout;
  if (rank_ == 0) {
    if (!setup_.notes.empty()) out_ << "note: " << setup_.notes << "\n";
    out_ << "training " << setup_.model.name << " (scaled: " << setup_.model.layers << " layers, hidden "
         << setup_.model.hidden << ", " << setup_.model.routed_experts << " experts top-" << setup_.model.top_k << ") on "
         << world_ << " ranks: tp" << l.tp << " pp" << l.pp << " ep" << l.ep << " dp" << l.dp << " mb" << l.micro_batch
         << ", global batch " << setup_.global_batch << ", data " << corpus_.source << "\n";
    if (setup_.mixed) out_ << pools_line(*setup_.mixed, l) << "\n";
  }
  if (rank_ == 0 && !o_.checkpoint_dir.empty()) {
    out_ << (checkpoint_every_ > 0 ? "checkpoints every " + std::to_string(checkpoint_every_) + " steps" : std::string("no checkpoints"))
         << (o_.checkpoint_every > 0 ? "" : " (the plan's interval; --checkpoint-every sets another)")
         << (o_.checkpoint_sync ? ", each write blocking" : ", written in the background") << "\n";
  }
  if (o_.resume && !o_.checkpoint_dir.empty()) restore_checkpoint();
  if (setup_.mixed && setup_.mixed->strategy == PoolStrategy::kLocalSgd) {
    for (const ParamInfo& p : params_) {
      anchor_.push_back(p.tensor.detach().clone());
      outer_momentum_.push_back(torch::zeros_like(p.tensor.detach()));
    }
  }
  const double peak_flops = measure_matmul_flops();
  const int64_t seq = order_->seq_len();
  LossLog loss_log;
  if (rank_ == 0 && !o_.loss_log.empty()) loss_log = LossLog(o_.loss_log, state_.step);
  const auto run_start = std::chrono::steady_clock::now();
  const int first_step = state_.step;
  double measured_tokens = 0, measured_seconds = 0;  // after the first step, for the summary
  while (state_.step < o_.recipe.steps) {
    StepReport report = train_step(peak_flops);
    if (state_.step > first_step + 1) {  // the first step allocates and touches memory first
      measured_tokens += report.tokens;
      measured_seconds += report.seconds;
    }
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - run_start).count();
    report.eta_s = elapsed / (state_.step - first_step) * (o_.recipe.steps - state_.step);
    if (rank_ == 0) {
      out_ << (o_.progress_json ? report.to_json().dump() : report.human_line()) << "\n" << std::flush;
      loss_log.append(report);
    }
    if (!o_.checkpoint_dir.empty() && checkpoint_every_ > 0 && state_.step % checkpoint_every_ == 0) save_checkpoint();
  }
  report_write(checkpoints_.finish());
  if (rank_ == 0 && measured_seconds > 0) {
    const double tokens_per_s = measured_tokens / measured_seconds;
    const double flops = training_flops_per_token(setup_.model, static_cast<int>(seq)) * tokens_per_s;
    char line[256];
    std::snprintf(line, sizeof line,
                  "throughput after step 1: %.0f tokens/s, %.2f GFLOP/s of model FLOPs on %d ranks; measured fp32 "
                  "matmul %.2f GFLOP/s per rank; MFU %.1f%%",
                  tokens_per_s, flops / 1e9, world_, peak_flops / 1e9, 100 * flops / (world_ * peak_flops));
    out_ << line << "\n";
  }
  if (trace_.enabled()) write_trace();
  trace_collectives(nullptr);
  if (groups_.world) groups_.world->barrier()->wait();
  return 0;
}

}  // namespace

FittedMixedRun fit_mixed_plan(const TrainOptions& o, const Plan& plan, int max_ranks, int vocab) {
  MixedRunOptions options{max_ranks, o.micro_batches, parse_slowdowns(o.slowdowns), o.sync_every_steps};
  if (o.sync_every_steps < 0) throw input_error("--sync-every", "", "must be at least 1 step");
  if (o.sync_every_steps > 0 && plan.mixed->strategy != PoolStrategy::kLocalSgd) {
    throw input_error("--sync-every", "", "applies to local-SGD plans; " + o.plan + " is " + to_string(plan.mixed->strategy));
  }
  FittedMixedRun f = fit_mixed_run(*plan.mixed, plan.model, options,
                                   [&](int pp) { return scaled_model(o, plan.model, vocab, pp); });
  if (f.run.strategy == PoolStrategy::kLocalSgd && f.run.sync_every_steps < 1) {
    throw input_error(o.plan, "local_sgd.sync_every_steps", "must be at least 1 (or give --sync-every)");
  }
  return f;
}

int run_worker(const TrainOptions& options, std::ostream& out) {
  Worker worker(options, out);
  return worker.run();
}

}  // namespace flopwise::executor
