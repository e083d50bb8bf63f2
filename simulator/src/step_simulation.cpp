#include "flopwise/step_simulation.hpp"

#include <simgrid/s4u.hpp>

#include <algorithm>
#include <chrono>
#include <map>
#include <numeric>
#include <set>

#include "flopwise/error.hpp"
#include "flopwise/schedule.hpp"
#include "flopwise/topology.hpp"
#include "flopwise/trace.hpp"

namespace sg4 = simgrid::s4u;

namespace flopwise {
namespace {

// Host speed is nominal: every duration comes from the cost model, executed as seconds x speed.
constexpr double kHostSpeed = 1e12;
// SimGrid needs a non-null payload for messages whose content does not matter.
int g_token = 0;

// What one simulated device spent its step on.
struct Account {
  Seconds busy = 0, bubble = 0, end = 0;
  CommBreakdown comm;
};

// Sent with each pipeline message: when the sender handed it over.
struct PipelineMessage {
  double sent_at = 0;
};

class StepSimulation {
 public:
  StepSimulation(const CostModel& cost, const Layout& layout)
      : cost_(cost),
        l_(layout),
        grid_(layout, cost.profile().node.devices),
        topology_(Topology::build(cost.profile(), layout.devices())),
        micro_batches_(layout.micro_batches(cost.run().global_batch)) {
    topology_.check_connected(cost.profile().source);
    select_slice();
  }

  SimulationResult run(const SimulationOptions& options);

 private:
  int slice_width() const;
  void select_slice();
  void build_platform();
  void add_route(int from, int to);
  sg4::Link* link_of(TopologyEdgeId edge, bool forward);
  Seconds route_latency(int from, int to) const;

  void device(int rank);
  void pass(int rank, const PipelineOp& op, const StageContents& chunk, Account& account);
  Seconds ring_collectives(int rank, GroupKind kind, int collectives, Bytes buffer);
  Seconds expert_parallel(int rank, int all_to_alls);
  void receive_pipeline(int rank, const std::string& mailbox, Account& account);
  void send_pipeline(const std::string& mailbox);
  sg4::ActorPtr start_gradient_sync(int rank, const StageContents& chunk);
  void ring(int rank, GroupKind kind, std::vector<std::pair<int, Bytes>> phases);

  int neighbour(int rank, int pp_step) const;
  std::string pipeline_mailbox(const char* kind, int virtual_stage, int micro_batch, int rank) const;
  void span(int rank, const char* category, std::string name, double start);

  const CostModel& cost_;
  Layout l_;
  RankGrid grid_;
  Topology topology_;
  int micro_batches_;
  std::vector<int> slice_;              // simulated ranks
  std::set<std::pair<int, int>> pairs_;  // routes the step uses
  std::map<int, sg4::Host*> hosts_;
  std::map<std::string, sg4::Link*> links_;
  std::map<int, Account> accounts_;
  std::vector<TraceSpan> spans_;
  long long messages_ = 0;
};

// Data parallelism is symmetric: every replica runs the same schedule on the same kind of links.
// The first slice_width() ranks of every stage close the TP and EP groups of their members, so
// they see TP, expert-TP, EP and PP traffic in full; DP rings run to their real neighbours.
int StepSimulation::slice_width() const {
  return std::lcm(l_.tp, l_.expert_tp() * l_.ep);
}

void StepSimulation::select_slice() {
  std::vector<bool> active(l_.devices(), false);
  for (int rank = 0; rank < l_.devices(); ++rank) {
    if (rank % (l_.tp * l_.dp) >= slice_width()) continue;
    slice_.push_back(rank);
    for (GroupKind kind : {GroupKind::kTp, GroupKind::kEp, GroupKind::kExpertTp}) {
      const auto members = grid_.group(kind, rank);
      for (int peer : members) pairs_.insert({rank, peer});
    }
    for (GroupKind kind : {GroupKind::kDp, GroupKind::kExpertDp}) {
      const auto members = grid_.group(kind, rank);
      const auto at = std::find(members.begin(), members.end(), rank) - members.begin();
      pairs_.insert({rank, members[(at + 1) % members.size()]});
    }
    pairs_.insert({rank, neighbour(rank, +1)});
    pairs_.insert({rank, neighbour(rank, -1)});
  }
  for (const auto& [a, b] : pairs_) active[a] = active[b] = true;
  topology_.scale_uplinks_to(active);
}

int StepSimulation::neighbour(int rank, int pp_step) const {
  RankCoords c = grid_.coords(rank);
  c.pp = (c.pp + pp_step + l_.pp) % l_.pp;
  return grid_.rank_of(c);
}

sg4::Link* StepSimulation::link_of(TopologyEdgeId edge, bool forward) {
  // Each direction of a full-duplex link is its own SimGrid link.
  const TopologyLink& link = topology_.graph()[edge];
  const std::string name = link.name + (forward ? ">" : "<");
  auto [it, fresh] = links_.try_emplace(name, nullptr);
  if (fresh) {
    it->second = sg4::Engine::get_instance()
                     ->get_netzone_root()
                     ->create_link(name, link.bandwidth)
                     ->set_latency(link.latency)
                     ->seal();
  }
  return it->second;
}

void StepSimulation::add_route(int from, int to) {
  std::vector<sg4::LinkInRoute> links;
  for (const RouteHop& hop : topology_.route(from, to)) links.emplace_back(link_of(hop.edge, hop.forward));
  auto* zone = sg4::Engine::get_instance()->get_netzone_root();
  zone->add_route(hosts_.at(from)->get_netpoint(), hosts_.at(to)->get_netpoint(), nullptr, nullptr, links, false);
}

Seconds StepSimulation::route_latency(int from, int to) const {
  Seconds latency = 0;
  for (const RouteHop& hop : topology_.route(from, to)) latency += topology_.graph()[hop.edge].latency;
  return latency;
}

void StepSimulation::build_platform() {
  auto* zone = sg4::create_full_zone("cluster");
  for (const auto& [a, b] : pairs_) {
    for (int rank : {a, b}) {
      if (!hosts_.count(rank)) hosts_[rank] = zone->create_host("dev" + std::to_string(rank), kHostSpeed)->seal();
    }
  }
  for (const auto& [a, b] : pairs_) {
    if (a != b) add_route(a, b);
  }
  zone->seal();
}

std::string StepSimulation::pipeline_mailbox(const char* kind, int virtual_stage, int micro_batch, int rank) const {
  const RankCoords c = grid_.coords(rank);
  return std::string(kind) + ":" + std::to_string(virtual_stage) + ":" + std::to_string(micro_batch) + ":" +
         std::to_string(c.tp) + ":" + std::to_string(c.dp);
}

void StepSimulation::span(int rank, const char* category, std::string name, double start) {
  const double now = sg4::Engine::get_clock();
  if (now > start) spans_.push_back(TraceSpan{rank, category, std::move(name), start, now - start});
}

// Ring steps to the next member of `kind`'s group: the alpha-beta ring with real messages, so
// shared links slow it down. Each phase is (steps, bytes per step).
void StepSimulation::ring(int rank, GroupKind kind, std::vector<std::pair<int, Bytes>> phases) {
  const auto members = grid_.group(kind, rank);
  if (members.size() < 2) return;
  const auto at = std::find(members.begin(), members.end(), rank) - members.begin();
  sg4::Host* next = hosts_.at(members[(at + 1) % members.size()]);
  for (const auto& [steps, bytes] : phases) {
    for (int s = 0; s < steps; ++s) {
      sg4::Comm::sendto(hosts_.at(rank), next, static_cast<uint64_t>(bytes));
      ++messages_;
    }
  }
}

// One pass's TP (or expert-TP) collectives, aggregated per ring step: `collectives` all-gathers or
// reduce-scatters of one `buffer`, each (n - 1) steps of buffer / n to the next rank of the group.
// The per-collective latency the aggregation hides is added back explicitly.
Seconds StepSimulation::ring_collectives(int rank, GroupKind kind, int collectives, Bytes buffer) {
  const auto members = grid_.group(kind, rank);
  const int n = static_cast<int>(members.size());
  if (n < 2 || collectives == 0) return 0;
  const double start = sg4::Engine::get_clock();
  const auto at = std::find(members.begin(), members.end(), rank) - members.begin();
  const int next = members[(at + 1) % n], previous = members[(at + n - 1) % n];
  const Bytes step_bytes = collectives * buffer / n;
  const std::string prefix = to_string(kind) + ":";
  auto* out = sg4::Mailbox::by_name(prefix + std::to_string(rank) + ">" + std::to_string(next));
  auto* in = sg4::Mailbox::by_name(prefix + std::to_string(previous) + ">" + std::to_string(rank));
  for (int s = 0; s < n - 1; ++s) {
    sg4::CommPtr send = out->put_async(&g_token, static_cast<uint64_t>(step_bytes));
    in->get<int>();
    send->wait();
    ++messages_;
  }
  sg4::this_actor::sleep_for((collectives - 1.0) * (n - 1) * route_latency(rank, next));
  return sg4::Engine::get_clock() - start;
}

// One pass's EP dispatch and combine, aggregated: each device sends every peer its share of the
// routed tokens of `all_to_alls` all-to-alls and waits for theirs.
Seconds StepSimulation::expert_parallel(int rank, int all_to_alls) {
  const auto members = grid_.group(GroupKind::kEp, rank);
  const int ep = static_cast<int>(members.size());
  if (ep < 2 || all_to_alls == 0) return 0;
  const double start = sg4::Engine::get_clock();
  const Bytes per_peer = all_to_alls * cost_.ep_payload_bytes(l_) / ep;
  std::vector<sg4::CommPtr> sends;
  Seconds latency = 0;
  for (int peer : members) {
    if (peer == rank) continue;
    auto* out = sg4::Mailbox::by_name("ep:" + std::to_string(rank) + ">" + std::to_string(peer));
    sends.push_back(out->put_async(&g_token, static_cast<uint64_t>(per_peer)));
    latency = std::max(latency, route_latency(rank, peer));
    ++messages_;
  }
  // All receives are posted at once: the peers' messages travel concurrently.
  std::vector<sg4::CommPtr> receives;
  std::vector<int*> tokens(members.size());
  for (size_t i = 0; i < members.size(); ++i) {
    if (members[i] == rank) continue;
    auto* in = sg4::Mailbox::by_name("ep:" + std::to_string(members[i]) + ">" + std::to_string(rank));
    receives.push_back(in->get_async<int>(&tokens[i]));
  }
  sg4::Comm::wait_all(receives);
  sg4::Comm::wait_all(sends);
  // The concurrent messages paid one latency; an all-to-all pays one per peer (NCCL's p2p steps).
  sg4::this_actor::sleep_for((all_to_alls * (ep - 1.0) - 1.0) * latency);
  return sg4::Engine::get_clock() - start;
}

void StepSimulation::receive_pipeline(int rank, const std::string& mailbox, Account& account) {
  const double waiting_since = sg4::Engine::get_clock();
  auto* message = sg4::Mailbox::by_name(mailbox)->get<PipelineMessage>();
  const double now = sg4::Engine::get_clock();
  // Waiting for the sender to finish its pass is bubble; waiting for the bytes is PP traffic.
  const double bubble = std::clamp(message->sent_at - waiting_since, 0.0, now - waiting_since);
  account.bubble += bubble;
  account.comm.pp += now - waiting_since - bubble;
  if (bubble > 0) spans_.push_back(TraceSpan{rank, "bubble", "wait " + mailbox, waiting_since, bubble});
  if (now - waiting_since - bubble > 0) span(rank, "pp", "recv " + mailbox, waiting_since + bubble);
  delete message;
}

void StepSimulation::send_pipeline(const std::string& mailbox) {
  auto* message = new PipelineMessage{sg4::Engine::get_clock()};
  sg4::Mailbox::by_name(mailbox)->put_init(message, static_cast<uint64_t>(cost_.pp_boundary_bytes(l_)))->detach();
  ++messages_;
}

// Compute of one forward or backward pass of one chunk, with its TP and EP traffic: the exposed
// collectives first, then the overlapped ones beside the part of the compute the cost model says
// they overlap (one source for which collective overlaps what).
void StepSimulation::pass(int rank, const PipelineOp& op, const StageContents& chunk, Account& account) {
  const Seconds compute = op.forward ? cost_.forward_seconds(chunk, l_) : cost_.backward_seconds(chunk, l_);
  const CostModel::TpCollectives tp_ops = cost_.tp_collectives(chunk, op.forward, l_);
  const int expert_gathers = cost_.expert_tp_collectives(chunk, op.forward, l_);
  const int all_to_alls = cost_.model().is_moe()
      ? chunk.moe_layers * (op.forward ? cost_.ep_all_to_alls_forward() : cost_.ep_all_to_alls_backward(l_))
      : 0;
  const Seconds window = std::min(compute, cost_.tp_overlap_window(chunk, op.forward, l_));
  const std::string name = std::string(op.forward ? "F" : "B") + " mb" + std::to_string(op.micro_batch) + " c" +
                           std::to_string(op.chunk);
  const double start = sg4::Engine::get_clock();
  const Bytes tp_buffer = cost_.tp_collective_bytes(l_);
  const Seconds tp_waited = ring_collectives(rank, GroupKind::kTp, tp_ops.exposed, tp_buffer);
  const Seconds ep = expert_parallel(rank, all_to_alls) +
                     ring_collectives(rank, GroupKind::kExpertTp, expert_gathers, cost_.expert_tp_collective_bytes(l_));
  const double compute_start = sg4::Engine::get_clock();
  sg4::this_actor::execute((compute - window) * kHostSpeed);
  sg4::ExecPtr background = sg4::this_actor::exec_async(window * kHostSpeed);
  const double beside_start = sg4::Engine::get_clock();
  const Seconds tp_beside = ring_collectives(rank, GroupKind::kTp, tp_ops.overlapped, tp_buffer);
  background->wait();
  const double end = sg4::Engine::get_clock();
  spans_.push_back(TraceSpan{rank, "compute", name, compute_start, compute});
  if (tp_waited > 0) spans_.push_back(TraceSpan{rank, "tp", name + " tp", start, tp_waited});
  if (ep > 0) spans_.push_back(TraceSpan{rank, "ep", name + " ep", start + tp_waited, ep});
  if (tp_beside > 0) spans_.push_back(TraceSpan{rank, "tp", name + " tp (overlapped)", beside_start, tp_beside});
  // Exposed communication: all the pass did besides computing.
  account.comm.tp += tp_waited + std::max(0.0, end - (compute_start + compute));
  account.comm.ep += ep;
  account.busy += compute;
}

// Gradient synchronisation of one chunk's parameters over DP (dense) and expert-DP (experts):
// all-reduce of the gradients, or reduce-scatter of gradients plus all-gather of the weights with
// the distributed optimizer, each at the precision's bytes (the cost model's PrecisionBytes, so
// an fp32 run moves 4-byte weights); run by a helper actor so it can overlap the remaining
// backward passes.
sg4::ActorPtr StepSimulation::start_gradient_sync(int rank, const StageContents& chunk) {
  const double dense = cost_.dense_params_per_device(chunk, l_);
  const double expert = cost_.expert_params_per_device(chunk, l_);
  const PrecisionBytes& bytes = cost_.bytes_per();
  auto phases = [this, bytes](int n, double params) {
    std::vector<std::pair<int, Bytes>> p;
    if (n < 2) return p;
    if (l_.optimizer_sharding) {
      p.push_back({n - 1, bytes.grad * params / n});
      p.push_back({n - 1, bytes.weight * params / n});
    } else {
      p.push_back({2 * (n - 1), bytes.grad * params / n});
    }
    return p;
  };
  return sg4::Actor::create("dp" + std::to_string(rank), hosts_.at(rank), [this, rank, dense, expert, phases] {
    const double start = sg4::Engine::get_clock();
    ring(rank, GroupKind::kDp, phases(l_.dp, dense));
    ring(rank, GroupKind::kExpertDp, phases(l_.expert_dp(), expert));
    span(rank, "dp", "gradient sync", start);
  });
}

void StepSimulation::device(int rank) {
  Account& account = accounts_[rank];
  const RankCoords c = grid_.coords(rank);
  const int stages = l_.pp * l_.vpp;
  const std::vector<PipelineOp> ops = pipeline_schedule(l_.pp, l_.vpp, micro_batches_, c.pp);
  std::vector<size_t> last_backward(l_.vpp, 0);
  for (size_t i = 0; i < ops.size(); ++i) {
    const PipelineOp& op = ops[i];
    if (!op.forward) last_backward[op.chunk] = i;
    // Receives are posted ahead (Megatron's batched isend/irecv): messages flow as soon as sent.
    const int stage = op.chunk * l_.pp + c.pp;
    const bool receives = op.forward ? stage > 0 : stage < stages - 1;
    if (receives) {
      sg4::Mailbox::by_name(pipeline_mailbox(op.forward ? "act" : "grad", stage, op.micro_batch, rank))
          ->set_receiver(sg4::Actor::self());
    }
  }
  // Megatron's overlap_grad_reduce starts reducing a chunk's buckets while its last backward runs.
  const bool overlap_dp = cost_.run().overlap.grad_reduce;
  std::vector<sg4::ActorPtr> syncs;
  for (size_t i = 0; i < ops.size(); ++i) {
    const PipelineOp& op = ops[i];
    const int stage = op.chunk * l_.pp + c.pp;
    const StageContents chunk = chunk_contents(cost_.model(), l_, stage);
    if (op.forward) {
      if (stage > 0) receive_pipeline(rank, pipeline_mailbox("act", stage, op.micro_batch, rank), account);
      pass(rank, op, chunk, account);
      if (stage < stages - 1) send_pipeline(pipeline_mailbox("act", stage + 1, op.micro_batch, rank));
    } else {
      if (stage < stages - 1) receive_pipeline(rank, pipeline_mailbox("grad", stage, op.micro_batch, rank), account);
      if (overlap_dp && i == last_backward[op.chunk]) syncs.push_back(start_gradient_sync(rank, chunk));
      pass(rank, op, chunk, account);
      if (stage > 0) send_pipeline(pipeline_mailbox("grad", stage - 1, op.micro_batch, rank));
    }
  }
  if (!overlap_dp) {
    for (int v = 0; v < l_.vpp; ++v) syncs.push_back(start_gradient_sync(rank, chunk_contents(cost_.model(), l_, v * l_.pp + c.pp)));
  }
  const double waiting = sg4::Engine::get_clock();
  for (auto& sync : syncs) sync->join();
  account.comm.dp += sg4::Engine::get_clock() - waiting;
  const double optimizer_start = sg4::Engine::get_clock();
  const Seconds optimizer = cost_.optimizer_seconds(stage_contents(cost_.model(), l_)[c.pp], l_);
  sg4::this_actor::execute(optimizer * kHostSpeed);
  account.busy += optimizer;
  span(rank, "compute", "optimizer", optimizer_start);
  account.end = sg4::Engine::get_clock();
}

SimulationResult StepSimulation::run(const SimulationOptions& options) {
  const auto wall_start = std::chrono::steady_clock::now();
  build_platform();
  for (int rank : slice_) {
    sg4::Actor::create("device" + std::to_string(rank), hosts_.at(rank), [this, rank] { device(rank); });
  }
  sg4::Engine::get_instance()->run();

  SimulationResult r;
  r.total_devices = l_.devices();
  r.simulated_devices = static_cast<int>(slice_.size());
  r.messages = messages_;
  for (const auto& [rank, a] : accounts_) r.step_time_s = std::max(r.step_time_s, a.end);
  bool found = false;
  for (const auto& [rank, a] : accounts_) {
    const Seconds comm = a.comm.total();
    r.devices.push_back(DeviceTimes{rank, a.busy, comm, a.bubble, r.step_time_s - a.busy - comm});
    if (!found && a.end == r.step_time_s) {
      r.critical_rank = rank;
      found = true;
    }
  }
  const Account& critical = accounts_.at(r.critical_rank);
  r.compute_s = critical.busy;
  r.exposed_comm_s = critical.comm;
  r.bubble_s = critical.bubble;
  r.approximation = "simulated " + std::to_string(r.simulated_devices) + " of " + std::to_string(r.total_devices) +
                    " devices: the first " + std::to_string(slice_width()) +
                    " ranks of every stage (whole TP and EP groups); the other data-parallel replicas mirror them, "
                    "leaf uplinks carry the slice's share, DP rings run to their real neighbours; TP and EP traffic is "
                    "aggregated per pass";
  if (!options.trace_path.empty()) write_trace(options.trace_path, spans_, cost_.profile().node.devices);
  r.wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - wall_start).count();
  return r;
}

}  // namespace

SimulationResult simulate_step_in_process(const CostModel& cost, const Layout& layout,
                                          const SimulationOptions& options) {
  if (const auto v = check_structure(cost.model(), cost.run(), cost.profile(), {1, layout.devices()}, layout)) {
    throw InputError("layout: " + v->message);
  }
  // CM02 without TCP corrections: max-min fair sharing, latency and bandwidth as given, so that
  // an uncontended message costs exactly latency + bytes / bandwidth as in the analytic model.
  std::vector<std::string> args = {"flopwise-simulate",
                                   "--cfg=network/model:CM02",
                                   "--cfg=network/latency-factor:1.0",
                                   "--cfg=network/bandwidth-factor:1.0",
                                   "--cfg=network/weight-S:0",
                                   "--cfg=network/crosstraffic:0",
                                   "--cfg=network/TCP-gamma:0",
                                   "--log=root.thres:critical"};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  int argc = static_cast<int>(argv.size());
  sg4::Engine engine(&argc, argv.data());
  StepSimulation simulation(cost, layout);
  return simulation.run(options);
}

}  // namespace flopwise
