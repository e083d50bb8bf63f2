#include "flopwise/executor/trainer.hpp"

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <chrono>
#include <cmath>
#include <deque>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <nlohmann/json.hpp>
#include <numeric>

#include "flopwise/executor/data.hpp"
#include "flopwise/executor/model.hpp"

namespace flopwise::executor {
namespace {

namespace fs = std::filesystem;
using Group = c10::intrusive_ptr<c10d::ProcessGroup>;
using nlohmann::json;

int env_int(const char* name) {
  const char* value = std::getenv(name);
  if (!value) throw SpecError(std::string("environment: ") + name + " is not set");
  try {
    return std::stoi(value);
  } catch (const std::exception&) {
    throw SpecError(std::string("environment: ") + name + ": expected an integer, got '" + value + "'");
  }
}

std::string default_corpus() {
#ifdef FLOPWISE_DEFAULT_CORPUS
  return FLOPWISE_DEFAULT_CORPUS;
#else
  return "executor/data/gpl-3.0.txt";
#endif
}

// The plan and the machine, reconciled: the layout that runs, the model shape that trains.
struct Setup {
  RunSpec spec;
  ModelShape model;
  ParallelLayout layout;
  int global_batch = 0;
  std::string notes;
};

Setup reconcile(const TrainOptions& o, int world, int vocab) {
  Setup s;
  s.spec = read_plan(o.plan);
  s.layout = s.spec.layout;
  s.global_batch = s.spec.global_batch;
  s.notes = fit_layout(s.layout, s.global_batch, s.spec.model, world);
  s.model = o.scale >= 1.0 ? s.spec.model : scale_model(s.spec.model, o.scale, vocab, s.layout.pp);
  if (o.scale >= 1.0) s.model.vocab = std::max(s.model.vocab, vocab);
  const std::string more = fit_layout(s.layout, s.global_batch, s.model, world);  // divisibility of the scaled shape
  if (!more.empty()) s.notes += (s.notes.empty() ? "" : "; ") + more;
  const int plan_micro_batches = s.global_batch / (s.layout.dp * s.layout.micro_batch);
  if (o.micro_batches > 0 && o.micro_batches < plan_micro_batches) {
    s.global_batch = o.micro_batches * s.layout.dp * s.layout.micro_batch;
    s.notes += (s.notes.empty() ? "" : "; ") + std::string("global batch ") + std::to_string(plan_micro_batches) +
               " -> " + std::to_string(o.micro_batches) + " micro-batches per replica (--micro-batches)";
  }
  if (s.layout.world() != world) {
    throw SpecError("environment: WORLD_SIZE=" + std::to_string(world) + " but the plan's layout scales to " +
                    std::to_string(s.layout.world()) + " ranks");
  }
  return s;
}

// Process groups of one rank, built once from the plan's rank order.
struct Groups {
  Group world, tp, dp, ep, expert_dp;
};

// Where Gloo listens: GLOO_SOCKET_IFNAME as in PyTorch; loopback when the master is local (no
// hostname lookup, which can hang on machines without DNS); else the host's resolved address.
std::shared_ptr<::gloo::transport::Device> gloo_device() {
  static std::shared_ptr<::gloo::transport::Device> device = [] {
    if (const char* interface = std::getenv("GLOO_SOCKET_IFNAME")) {
      return c10d::ProcessGroupGloo::createDeviceForInterface(interface);
    }
    const char* master = std::getenv("MASTER_ADDR");
    const std::string address = master ? master : "127.0.0.1";
    if (address == "127.0.0.1" || address == "localhost") {
      return c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1");
    }
    return c10d::ProcessGroupGloo::createDefaultDevice();
  }();
  return device;
}

Group make_group(const c10::intrusive_ptr<c10d::Store>& store, const std::string& name, const std::vector<int>& members,
                 int rank) {
  const auto at = std::find(members.begin(), members.end(), rank);
  if (members.size() < 2 || at == members.end()) return {};
  auto options = c10d::ProcessGroupGloo::Options::create();
  options->devices.push_back(gloo_device());
  return c10::make_intrusive<c10d::ProcessGroupGloo>(c10::make_intrusive<c10d::PrefixStore>(name, store),
                                                     static_cast<int>(at - members.begin()),
                                                     static_cast<int>(members.size()), options);
}

Groups build_groups(const ParallelLayout& l, int rank, int world) {
  const char* host = std::getenv("MASTER_ADDR");
  c10d::TCPStoreOptions store_options;
  store_options.port = static_cast<uint16_t>(env_int("MASTER_PORT"));
  store_options.isServer = rank == 0;
  store_options.numWorkers = world;
  store_options.timeout = std::chrono::seconds(120);
  auto store = c10::make_intrusive<c10d::TCPStore>(host ? host : "127.0.0.1", store_options);
  Groups g;
  std::vector<int> everyone(world);
  std::iota(everyone.begin(), everyone.end(), 0);
  g.world = make_group(store, "world", everyone, rank);
  auto named = [&](const std::string& kind, const std::vector<int>& members) {
    return make_group(store, kind + "/" + std::to_string(members.front()), members, rank);
  };
  g.tp = named("tp", tp_group(l, rank));
  g.dp = named("dp", dp_group(l, rank));
  g.ep = named("ep", ep_group(l, rank));
  g.expert_dp = named("edp", expert_dp_group(l, rank));
  return g;
}

void all_reduce(const Group& group, torch::Tensor& t) {
  if (!group) return;
  std::vector<torch::Tensor> tensors{t};
  group->allreduce(tensors)->wait();
}

// A parameter with the group that holds its replicas and how many ranks hold it.
struct ParamInfo {
  std::string name;
  torch::Tensor tensor;
  bool expert = false;
};

double learning_rate(const TrainOptions& o, int step) {
  const int total = o.steps;
  if (step < o.warmup_steps) return o.peak_lr * (step + 1) / o.warmup_steps;
  const int halve_at = static_cast<int>(0.6 * total), anneal_from = static_cast<int>(0.9 * total);
  if (step < halve_at) return o.peak_lr;
  const double stable = o.peak_lr / 2;
  if (step < anneal_from || total - anneal_from < 1) return stable;
  // Inverse square root from `stable` down to stable x 1e-4 at the last step.
  const double t = static_cast<double>(step - anneal_from) / std::max(1, total - 1 - anneal_from);
  const double k = (1.0 / std::pow(1e-4, 2) - 1.0);
  return stable / std::sqrt(1.0 + k * t);
}

int micro_batches_at(const TrainOptions& o, int step, int full) {
  if (o.batch_warmup_steps <= 0 || step >= o.batch_warmup_steps) return full;
  const double start = 2560.0 / 8960.0;
  const double fraction = start + (1.0 - start) * step / o.batch_warmup_steps;
  return std::max(1, static_cast<int>(std::lround(full * fraction)));
}

uint64_t fnv1a_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  uint64_t h = 1469598103934665603ull;
  char buffer[65536];
  while (in.read(buffer, sizeof buffer) || in.gcount() > 0) {
    for (std::streamsize i = 0; i < in.gcount(); ++i) h = (h ^ static_cast<unsigned char>(buffer[i])) * 1099511628211ull;
  }
  return h;
}

void write_atomically(const fs::path& path, const std::function<void(const fs::path&)>& write) {
  const fs::path partial = path.string() + ".partial";
  write(partial);
  fs::rename(partial, path);
}

// Everything about the run that is not a tensor, saved with each checkpoint.
struct RunState {
  int step = 0;
  uint64_t consumed = 0;  // samples drawn from the order so far
  std::deque<std::pair<int, std::vector<uint64_t>>> reinject;  // (due step, sample positions)
  std::deque<double> recent_losses;
  int consecutive_spikes = 0;

  json to_json() const {
    json r = json::array();
    for (const auto& [due, positions] : reinject) r.push_back({{"due", due}, {"positions", positions}});
    return {{"step", step}, {"consumed", consumed}, {"reinject", r},
            {"recent_losses", std::vector<double>(recent_losses.begin(), recent_losses.end())},
            {"consecutive_spikes", consecutive_spikes}};
  }
  static RunState from_json(const json& j) {
    RunState s;
    s.step = j.at("step");
    s.consumed = j.at("consumed");
    for (const auto& r : j.at("reinject")) s.reinject.push_back({r.at("due"), r.at("positions").get<std::vector<uint64_t>>()});
    for (double l : j.at("recent_losses")) s.recent_losses.push_back(l);
    s.consecutive_spikes = j.at("consecutive_spikes");
    return s;
  }
};

class Worker {
 public:
  Worker(const TrainOptions& o, std::ostream& out);
  int run();

 private:
  void build_model();
  void build_optimizer();
  std::vector<uint64_t> positions_for(int step, int samples);
  torch::Tensor micro_batch_tokens(const std::vector<uint64_t>& positions, int micro, bool bad);
  struct StepLosses {
    double lm = 0, aux = 0;
  };
  StepLosses forward_backward(const std::vector<uint64_t>& positions, int micro_batches, bool bad);
  void synchronise_gradients();
  double global_grad_norm();
  void optimizer_step(double lr, double scale);
  void save_checkpoint();
  bool restore_checkpoint();
  bool checkpoint_valid(const fs::path& dir);
  void write_trace();
  nlohmann::json run_metadata(int ranks_per_node) const;
  double measure_matmul_flops();

  const TrainOptions& o_;
  std::ostream& out_;
  int rank_, world_;
  Setup setup_;
  TokenCorpus corpus_;
  std::unique_ptr<SampleOrder> order_;
  Groups groups_;
  RankPosition position_;
  int first_layer_ = 0, layer_count_ = 0;
  Stage stage_{nullptr};
  std::vector<ParamInfo> params_;
  std::vector<size_t> owned_;  // params this rank updates (all of them without optimizer sharding)
  std::unique_ptr<torch::optim::AdamW> optimizer_;
  RunState state_;
  TraceRecorder trace_;
};

Worker::Worker(const TrainOptions& o, std::ostream& out)
    : o_(o), out_(out), rank_(env_int("RANK")), world_(env_int("WORLD_SIZE")), trace_(!o.trace.empty()) {
  torch::set_num_threads(1);  // one core per rank, and bit-for-bit repeatable reductions
  // Tiny initial gradients are subnormal floats, which x86 handles 100x slower; flush them to zero.
  at::globalContext().setFlushDenormal(true);
  corpus_ = TokenCorpus::load(o.data.empty() ? std::vector<std::string>{default_corpus()} : o.data);
  setup_ = reconcile(o, world_, corpus_.vocab);
  order_ = std::make_unique<SampleOrder>(corpus_, o.seq_len > 0 ? o.seq_len : setup_.spec.seq_len, o.seed);
  position_ = position_of(setup_.layout, rank_);
  groups_ = build_groups(setup_.layout, rank_, world_);
  if (trace_.enabled()) trace_collectives(&trace_);
  build_model();
  build_optimizer();
}

void Worker::build_model() {
  const int per_stage = setup_.model.layers / setup_.layout.pp;
  first_layer_ = position_.pp * per_stage;
  layer_count_ = per_stage;
  const bool first = position_.pp == 0, last = position_.pp == setup_.layout.pp - 1;
  const TensorParallel tp{groups_.tp, setup_.layout.tp, position_.tp};
  stage_ = Stage(setup_.model, first_layer_, layer_count_, first, last, setup_.layout.ep, tp);
  initialize_parameters(*stage_, first_layer_, position_.ep, o_.seed, tp);
  for (auto& item : stage_->named_parameters()) {
    params_.push_back({item.key(), item.value(), is_expert_parameter(item.key())});
  }
  // Distributed optimizer (ZeRO-1): whole parameters are dealt round-robin over the ranks that
  // hold their replicas; each rank keeps AdamW state for its own only.
  const auto dense_members = dp_group(setup_.layout, rank_);
  const auto expert_members = expert_dp_group(setup_.layout, rank_);
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
  auto options = torch::optim::AdamWOptions(o_.peak_lr).betas({0.9, 0.95}).eps(1e-8).weight_decay(0.1);
  std::vector<torch::optim::OptimizerParamGroup> param_groups;
  param_groups.emplace_back(decay, std::make_unique<torch::optim::AdamWOptions>(options));
  auto plain = options;
  plain.weight_decay(0.0);
  param_groups.emplace_back(no_decay, std::make_unique<torch::optim::AdamWOptions>(plain));
  optimizer_ = std::make_unique<torch::optim::AdamW>(param_groups, options);
}

// This step's samples: a batch due for re-injection, or the next ones in the order.
std::vector<uint64_t> Worker::positions_for(int step, int samples) {
  if (!state_.reinject.empty() && state_.reinject.front().first <= step &&
      static_cast<int>(state_.reinject.front().second.size()) == samples) {
    auto positions = state_.reinject.front().second;
    state_.reinject.pop_front();
    return positions;
  }
  std::vector<uint64_t> positions(samples);
  std::iota(positions.begin(), positions.end(), state_.consumed);
  state_.consumed += samples;
  return positions;
}

// Micro-batch `micro` of this DP rank: global sample rows dp_rank x rows_per_rank + micro x mb ...
torch::Tensor Worker::micro_batch_tokens(const std::vector<uint64_t>& positions, int micro, bool bad) {
  const int mb = setup_.layout.micro_batch;
  const int per_rank = static_cast<int>(positions.size()) / setup_.layout.dp;
  std::vector<int64_t> tokens;
  for (int i = 0; i < mb; ++i) {
    const uint64_t position = positions[position_.dp * per_rank + micro * mb + i];
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
  const ParallelLayout& l = setup_.layout;
  const bool first = position_.pp == 0, last = position_.pp == l.pp - 1;
  const int previous = rank_at(l, position_.tp, position_.dp, position_.pp - 1);
  const int next = rank_at(l, position_.tp, position_.dp, position_.pp + 1);
  const int64_t seq = order_->seq_len();
  struct InFlight {
    torch::Tensor input, output, aux;
  };
  std::deque<InFlight> in_flight;
  std::vector<c10::intrusive_ptr<c10d::Work>> sends;
  std::vector<torch::Tensor> keep_alive;
  StepLosses losses;
  auto forward = [&](int micro) {
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
    context.noise_seed = mix_seed(mix_seed(o_.seed, static_cast<uint64_t>(state_.step)), position_.dp * m + micro);
    context.ep_group = groups_.ep;
    context.ep_size = l.ep;
    context.trace = &trace_;
    const double compute_start = trace_.now();
    f.output = stage_->forward(f.input, context);
    f.aux = context.aux_loss.defined() ? context.aux_loss : torch::zeros({});
    losses.aux += f.aux.item<double>() / m;
    if (last) {
      const torch::Tensor targets = tokens.narrow(1, 1, seq).reshape({-1});
      const torch::Tensor lm = torch::nn::functional::cross_entropy(f.output.reshape({-1, f.output.size(-1)}), targets);
      losses.lm += lm.item<double>() / m;
      f.output = lm;
    } else {
      const torch::Tensor outgoing = f.output.detach().contiguous();
      keep_alive.push_back(outgoing);
      std::vector<torch::Tensor> buffer{outgoing};
      sends.push_back(groups_.world->send(buffer, next, 2 * micro));
    }
    trace_.record("compute", "F mb" + std::to_string(micro), compute_start, {{"pass", "forward"}, {"micro_batch", micro}});
    in_flight.push_back(f);
  };
  auto backward = [&](int micro) {
    InFlight f = in_flight.front();
    in_flight.pop_front();
    double start = trace_.now();
    const torch::Tensor scale = torch::full({}, 1.0 / m);
    if (last) {
      torch::autograd::backward({f.output + f.aux}, {scale});
    } else {
      torch::Tensor grad = torch::empty_like(f.output);
      std::vector<torch::Tensor> buffer{grad};
      groups_.world->recv(buffer, next, 2 * micro + 1)->wait();
      trace_.record("pp", "recv gradients", start, {{"collective", "recv"}, {"bytes", static_cast<double>(grad.nbytes())}});
      start = trace_.now();
      if (f.aux.requires_grad()) {
        torch::autograd::backward({f.output, f.aux}, {grad, scale});
      } else {
        torch::autograd::backward({f.output}, {grad});
      }
    }
    if (!first) {
      const torch::Tensor outgoing = f.input.grad().contiguous();
      keep_alive.push_back(outgoing);
      std::vector<torch::Tensor> buffer{outgoing};
      sends.push_back(groups_.world->send(buffer, previous, 2 * micro + 1));
    }
    trace_.record("compute", "B mb" + std::to_string(micro), start, {{"pass", "backward"}, {"micro_batch", micro}});
  };
  // 1F1B: pp - stage - 1 warm-up forwards, then one forward and one backward, then the rest.
  const int warmup = std::min(l.pp - position_.pp - 1, m);
  int forwards = 0, backwards = 0;
  for (; forwards < warmup; ++forwards) forward(forwards);
  for (; forwards < m; ++forwards) {
    forward(forwards);
    backward(backwards++);
  }
  while (backwards < m) backward(backwards++);
  for (auto& work : sends) work->wait();
  return losses;
}

// DP: dense gradients summed over the DP group, expert gradients over the expert-DP group; both
// divided by DP, since each rank's loss is its own micro-batches' mean.
void Worker::synchronise_gradients() {
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
    const double start = trace_.now();
    all_reduce(group, flat);
    if (group) trace_.record_collective("dp", "all_reduce", start, static_cast<double>(flat.nbytes()), group->getSize());
    flat.div_(setup_.layout.dp);
    int64_t offset = 0;
    for (auto& g : grads) {
      g.copy_(flat.narrow(0, offset, g.numel()).view_as(g));
      offset += g.numel();
    }
  }
}

// Global L2 norm: each replica counted once (a parameter on r ranks contributes 1/r per rank).
double Worker::global_grad_norm() {
  const ParallelLayout& l = setup_.layout;
  double local = 0;
  for (const ParamInfo& p : params_) {
    const double replicas = (p.expert ? l.dp / l.ep : l.dp) * (is_tensor_parallel_parameter(p.name) ? 1 : l.tp);
    local += p.tensor.grad().pow(2).sum().item<double>() / replicas;
  }
  torch::Tensor total = torch::full({1}, local, torch::kFloat64);
  all_reduce(groups_.world, total);
  return std::sqrt(total.item<double>());
}

void Worker::optimizer_step(double lr, double clip_scale) {
  for (auto& group : optimizer_->param_groups()) static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);
  if (clip_scale < 1.0) {
    for (ParamInfo& p : params_) p.tensor.grad().mul_(clip_scale);
  }
  const double start = trace_.now();
  optimizer_->step();
  trace_.record("compute", "optimizer", start, {{"pass", "optimizer"}});
  if (!setup_.layout.optimizer_sharding) return;
  // Each owner hands its updated parameters to the other replicas.
  const auto dense_members = dp_group(setup_.layout, rank_);
  const auto expert_members = expert_dp_group(setup_.layout, rank_);
  for (size_t i = 0; i < params_.size(); ++i) {
    const Group& group = params_[i].expert ? groups_.expert_dp : groups_.dp;
    if (!group) continue;
    const int size = params_[i].expert ? static_cast<int>(expert_members.size()) : static_cast<int>(dense_members.size());
    std::vector<torch::Tensor> tensors{params_[i].tensor.detach()};
    c10d::BroadcastOptions options;
    options.rootRank = static_cast<int>(i % size);
    const double broadcast_start = trace_.now();
    group->broadcast(tensors, options)->wait();
    trace_.record_collective("dp", "broadcast", broadcast_start, static_cast<double>(tensors[0].nbytes()), size);
  }
}

fs::path step_dir(const std::string& root, int step) {
  char name[32];
  std::snprintf(name, sizeof name, "step-%08d", step);
  return fs::path(root) / name;
}

void Worker::save_checkpoint() {
  const fs::path dir = step_dir(o_.checkpoint_dir, state_.step);
  fs::create_directories(dir);
  const std::string base = "rank-" + std::to_string(rank_);
  write_atomically(dir / (base + ".pt"), [&](const fs::path& path) {
    torch::serialize::OutputArchive archive;
    stage_->save(archive);
    torch::serialize::OutputArchive optimizer_archive;
    optimizer_->save(optimizer_archive);
    archive.write("optimizer", optimizer_archive);
    archive.save_to(path.string());
  });
  write_atomically(dir / (base + ".json"), [&](const fs::path& path) {
    std::ofstream(path) << state_.to_json().dump() << "\n";
  });
  // The manifest comes last: a checkpoint without one, or whose files do not match it, is not used.
  write_atomically(dir / (base + ".manifest"), [&](const fs::path& path) {
    std::ofstream(path) << json{{"step", state_.step},
                                {"pt", std::to_string(fnv1a_file(dir / (base + ".pt")))},
                                {"json", std::to_string(fnv1a_file(dir / (base + ".json")))}}
                               .dump()
                        << "\n";
  });
}

bool Worker::checkpoint_valid(const fs::path& dir) {
  const std::string base = "rank-" + std::to_string(rank_);
  try {
    std::ifstream in(dir / (base + ".manifest"));
    if (!in) return false;
    json manifest;
    in >> manifest;
    return manifest.at("pt").get<std::string>() == std::to_string(fnv1a_file(dir / (base + ".pt"))) &&
           manifest.at("json").get<std::string>() == std::to_string(fnv1a_file(dir / (base + ".json")));
  } catch (const std::exception&) {
    return false;
  }
}

// The newest step whose files are intact on every rank; corrupt newer ones are reported and skipped.
bool Worker::restore_checkpoint() {
  std::vector<int> steps;
  if (fs::exists(o_.checkpoint_dir)) {
    for (const auto& entry : fs::directory_iterator(o_.checkpoint_dir)) {
      const std::string name = entry.path().filename().string();
      if (name.rfind("step-", 0) == 0 && name.find('.') == std::string::npos) steps.push_back(std::stoi(name.substr(5)));
    }
  }
  std::sort(steps.rbegin(), steps.rend());
  for (int step : steps) {
    const bool valid = checkpoint_valid(step_dir(o_.checkpoint_dir, step));
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
    const fs::path dir = step_dir(o_.checkpoint_dir, step);
    const std::string base = "rank-" + std::to_string(rank_);
    torch::serialize::InputArchive archive;
    archive.load_from((dir / (base + ".pt")).string());
    stage_->load(archive);
    torch::serialize::InputArchive optimizer_archive;
    archive.read("optimizer", optimizer_archive);
    optimizer_->load(optimizer_archive);
    std::ifstream in(dir / (base + ".json"));
    json meta;
    in >> meta;
    state_ = RunState::from_json(meta);
    if (rank_ == 0) out_ << "resumed from " << dir.string() << "\n";
    return true;
  }
  return false;
}

// What ran, in the plan's terms, so that `flopwise calibrate` can predict exactly this run.
json Worker::run_metadata(int ranks_per_node) const {
  const ModelShape& m = setup_.model;
  const ParallelLayout& l = setup_.layout;
  const json model = {{"name", m.name}, {"family", "bailing_moe"}, {"layers", m.layers}, {"hidden", m.hidden},
                      {"heads", m.heads}, {"kv_heads", m.kv_heads}, {"head_dim", m.head_dim}, {"vocab", m.vocab},
                      {"seq_len", order_->seq_len()}, {"q_lora_rank", 0}, {"kv_lora_rank", 0}, {"rope_head_dim", 0},
                      {"v_head_dim", 0}, {"routed_experts", m.experts}, {"top_k", m.top_k}, {"expert_ffn", m.expert_ffn},
                      {"shared_experts", m.shared_experts}, {"shared_expert_ffn", m.shared_expert_ffn},
                      {"dense_ffn", m.dense_ffn}, {"first_dense_layers", m.first_dense_layers}, {"qkv_bias", false},
                      {"tied_embeddings", m.tied_embeddings}};
  const json layout = {{"tp", l.tp}, {"pp", l.pp}, {"vpp", 1}, {"ep", l.ep}, {"dp", l.dp}, {"micro_batch", l.micro_batch},
                       {"recompute", "none"}, {"optimizer_sharding", l.optimizer_sharding}};
  return {{"schema", "flopwise.run/1"}, {"plan", o_.plan}, {"model", model}, {"layout", layout},
          {"seq_len", order_->seq_len()}, {"global_batch", setup_.global_batch}, {"precision", "fp32"},
          {"ranks", world_}, {"ranks_per_node", ranks_per_node}, {"threads_per_rank", 1}};
}

void Worker::write_trace() {
  // One pid per node, as the simulator writes: ranks of a node share LOCAL_WORLD_SIZE.
  const char* local = std::getenv("LOCAL_WORLD_SIZE");
  const int per_node = local ? std::max(1, std::atoi(local)) : world_;
  json events = json::array();
  for (const MeasuredSpan& s : trace_.spans()) {
    json args = s.args;
    args["rank"] = rank_;
    events.push_back({{"name", s.name}, {"cat", s.category}, {"ph", "X"}, {"ts", s.start_s * 1e6},
                      {"dur", s.duration_s * 1e6}, {"pid", rank_ / per_node}, {"tid", rank_}, {"args", args}});
  }
  std::ofstream(o_.trace + ".rank" + std::to_string(rank_)) << events.dump() << "\n";
  if (groups_.world) groups_.world->barrier()->wait();
  if (rank_ != 0) return;
  json merged = json::array();
  for (int r = 0; r < world_; ++r) {
    const std::string part = o_.trace + ".rank" + std::to_string(r);
    std::ifstream in(part);
    json spans;
    in >> spans;
    for (auto& e : spans) merged.push_back(e);
    fs::remove(part);
    merged.push_back({{"name", "thread_name"}, {"ph", "M"}, {"pid", r / per_node}, {"tid", r},
                      {"args", {{"name", "rank " + std::to_string(r)}}}});
  }
  std::ofstream(o_.trace) << json{{"traceEvents", merged}, {"displayTimeUnit", "ms"}, {"otherData", {{"flopwise_run", run_metadata(per_node)}}}}.dump() << "\n";
  out_ << "trace written to " << o_.trace << "\n";
}

// Single-thread fp32 matmul throughput of this core, the denominator of the MFU estimate.
double Worker::measure_matmul_flops() {
  torch::NoGradGuard no_grad;
  const torch::Tensor a = torch::randn({256, 256}), b = torch::randn({256, 256});
  torch::matmul(a, b);
  const auto start = std::chrono::steady_clock::now();
  int runs = 0;
  while (std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() < 0.2) {
    torch::matmul(a, b);
    ++runs;
  }
  return runs * 2.0 * 256 * 256 * 256 / std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

int Worker::run() {
  const ParallelLayout& l = setup_.layout;
  if (rank_ == 0) {
    if (!setup_.notes.empty()) out_ << "note: " << setup_.notes << "\n";
    out_ << "training " << setup_.model.name << " (scaled: " << setup_.model.layers << " layers, hidden "
         << setup_.model.hidden << ", " << setup_.model.experts << " experts top-" << setup_.model.top_k << ") on "
         << world_ << " ranks: tp" << l.tp << " pp" << l.pp << " ep" << l.ep << " dp" << l.dp << " mb" << l.micro_batch
         << ", global batch " << setup_.global_batch << ", data " << corpus_.source << "\n";
  }
  if (o_.resume && !o_.checkpoint_dir.empty()) restore_checkpoint();
  const double peak_flops = measure_matmul_flops();
  const int full_micro_batches = setup_.global_batch / (l.dp * l.micro_batch);
  const int64_t seq = order_->seq_len();
  std::ofstream loss_log;
  if (rank_ == 0 && !o_.loss_log.empty()) loss_log.open(o_.loss_log, state_.step > 0 ? std::ios::app : std::ios::trunc);
  const auto run_start = std::chrono::steady_clock::now();
  const int first_step = state_.step;
  double measured_tokens = 0, measured_seconds = 0;  // after the first step, for the summary
  for (; state_.step < o_.steps;) {
    const auto step_start = std::chrono::steady_clock::now();
    const double step_trace_start = trace_.now();
    trace_.set_step(state_.step);
    const int m = micro_batches_at(o_, state_.step, full_micro_batches);
    const int samples = m * l.dp * l.micro_batch;
    const std::vector<uint64_t> positions = positions_for(state_.step, samples);
    optimizer_->zero_grad();
    for (ParamInfo& p : params_) {
      if (p.tensor.grad().defined()) p.tensor.grad().zero_();
    }
    const bool bad = state_.step == o_.inject_bad_batch_at;
    StepLosses losses = forward_backward(positions, m, bad);
    stage_->update_routing_statistics(groups_.dp);
    synchronise_gradients();
    // The LM loss lives on the last stage, aux losses on every stage: average over DP, sum over PP.
    const bool last = position_.pp == l.pp - 1;
    torch::Tensor reduced = torch::tensor({last && position_.tp == 0 ? losses.lm / l.dp : 0.0,
                                           position_.tp == 0 ? losses.aux / l.dp : 0.0},
                                          torch::kFloat64);
    all_reduce(groups_.world, reduced);
    const double lm = reduced[0].item<double>(), aux = reduced[1].item<double>();
    const double norm = global_grad_norm();
    // Anomalies: a non-finite loss or gradient never reaches the weights; a spike skips the update
    // and re-injects the batch later, and persistent spikes get a reduced learning rate instead.
    std::string event;
    double lr = learning_rate(o_, state_.step);
    bool apply = true;
    const bool finite = std::isfinite(lm) && std::isfinite(aux) && std::isfinite(norm);
    bool spike = false;
    if (finite && static_cast<int>(state_.recent_losses.size()) >= o_.spike_window / 2) {
      const double mean = std::accumulate(state_.recent_losses.begin(), state_.recent_losses.end(), 0.0) / state_.recent_losses.size();
      double var = 0;
      for (double x : state_.recent_losses) var += (x - mean) * (x - mean);
      const double std = std::sqrt(var / state_.recent_losses.size());
      spike = lm > mean + std::max(o_.spike_sigma * std, o_.spike_ratio * mean);
    }
    if (!finite) {
      apply = false;
      event = "skipped: non-finite loss or gradient";
    } else if (spike) {
      ++state_.consecutive_spikes;
      if (state_.consecutive_spikes >= o_.spike_persist) {
        lr *= 0.5;
        event = "persistent spike: update at half learning rate";
      } else {
        apply = false;
        const int due = state_.step + 1 + static_cast<int>(mix_seed(o_.seed, state_.step) % 5);
        state_.reinject.push_back({due, positions});
        event = "spike: update skipped, batch re-injected at step " + std::to_string(due);
      }
    } else {
      state_.consecutive_spikes = 0;
    }
    if (apply) {
      optimizer_step(lr, norm > o_.clip_norm ? o_.clip_norm / norm : 1.0);
      if (finite && !spike) {
        state_.recent_losses.push_back(lm);
        if (static_cast<int>(state_.recent_losses.size()) > o_.spike_window) state_.recent_losses.pop_front();
      }
    }
    trace_.record("step", "step " + std::to_string(state_.step), step_trace_start, {{"micro_batches", m}});
    ++state_.step;
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - step_start).count();
    const double tokens_per_s = samples * seq / seconds;
    if (state_.step > first_step + 1) {
      measured_tokens += samples * seq;
      measured_seconds += seconds;
    }
    const double mfu = setup_.model.training_flops_per_token(static_cast<int>(seq)) * tokens_per_s / (world_ * peak_flops);
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - run_start).count();
    const double eta = elapsed / (state_.step - first_step) * (o_.steps - state_.step);
    if (rank_ == 0) {
      char line[256];
      std::snprintf(line, sizeof line, "step %4d/%d  loss %.4f  aux %.4f  lr %.2e  grad %.3f  tokens/s %.0f  MFU %.1f%%  ETA %.0fs",
                    state_.step, o_.steps, lm, aux, lr, norm, tokens_per_s, 100 * mfu, eta);
      out_ << line << (event.empty() ? "" : "  [" + event + "]") << "\n" << std::flush;
      if (loss_log) loss_log << state_.step << " " << std::setprecision(10) << lm << (apply ? "" : " skipped") << "\n" << std::flush;
    }
    if (!o_.checkpoint_dir.empty() && o_.checkpoint_every > 0 && state_.step % o_.checkpoint_every == 0) save_checkpoint();
  }
  if (rank_ == 0 && measured_seconds > 0) {
    const double tokens_per_s = measured_tokens / measured_seconds;
    const double flops = setup_.model.training_flops_per_token(static_cast<int>(seq)) * tokens_per_s;
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

int run_worker(const TrainOptions& options, std::ostream& out) {
  Worker worker(options, out);
  return worker.run();
}

}  // namespace flopwise::executor
