#include "flopwise/step_simulation.hpp"

#include <simgrid/s4u.hpp>

#include <algorithm>
#include <chrono>
#include <map>
#include <memory>
#include <numeric>
#include <optional>
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
// Chunks the reduction across pools is streamed in: the stream's tail adds 1/64 of one link's time.
constexpr int kCrossPoolChunks = 64;
// SimGrid needs a non-null payload for messages whose content does not matter.
int g_token = 0;

// The member `step` places after `rank` around its group's ring (backwards for a negative step).
int ring_neighbour(const std::vector<int>& members, int rank, int step) {
  const int n = static_cast<int>(members.size());
  const int at = static_cast<int>(std::find(members.begin(), members.end(), rank) - members.begin());
  return members[((at + step) % n + n) % n];
}

// Where one ring step of a `kind` group goes from `rank`: to the next member, from the previous.
struct RingLinks {
  int next = 0;
  sg4::Mailbox* out = nullptr;
  sg4::Mailbox* in = nullptr;
};

RingLinks ring_links(const std::vector<int>& members, GroupKind kind, int rank) {
  const std::string prefix = to_string(kind) + ":";
  const int next = ring_neighbour(members, rank, +1), previous = ring_neighbour(members, rank, -1);
  return {next, sg4::Mailbox::by_name(prefix + std::to_string(rank) + ">" + std::to_string(next)),
          sg4::Mailbox::by_name(prefix + std::to_string(previous) + ">" + std::to_string(rank))};
}

// What one simulated device spent its step on.
struct Account {
  Seconds busy = 0, bubble = 0, end = 0, cross_pool = 0;
  CommBreakdown comm;
};

// Sent with each pipeline message: when the sender handed it over.
struct PipelineMessage {
  double sent_at = 0;
};

// One layout's ranks in the step: the whole single-pool step, one pool of a data-parallel mix, or
// the pipeline across pools. Each pipeline stage knows its cost model (its pool's) and its layers.
struct Part {
  std::string name;  // mailbox prefix: the pool's name; empty for a single pool
  Layout layout;
  RankGrid grid;
  int first_rank = 0;
  int micro_batches = 0;
  std::vector<const CostModel*> stage_cost;       // per pipeline stage (pp x vpp)
  std::vector<StageContents> stage_chunk;         // per pipeline stage
  std::vector<StageContents> optimizer_contents;  // per pipeline rank, all its chunks
  std::vector<int> slice;                         // simulated ranks, global

  const CostModel& cost_of(int stage) const { return *stage_cost.at(stage); }
  int rank(int local) const { return first_rank + local; }
  int local(int rank) const { return rank - first_rank; }
  // Global ranks of `kind`'s group of `rank`.
  std::vector<int> members(GroupKind kind, int rank) const {
    std::vector<int> m = grid.group(kind, local(rank));
    for (int& r : m) r += first_rank;
    return m;
  }
};

// A part over one cost model: its layout's own stages.
Part uniform_part(const std::string& name, const CostModel& cost, const Layout& layout, int first_rank) {
  Part p{name, layout, RankGrid(layout, cost.profile().node.devices), first_rank,
         layout.micro_batches(cost.run().global_batch), {}, {}, stage_contents(cost.model(), layout), {}};
  for (int stage = 0; stage < layout.pp * layout.vpp; ++stage) {
    p.stage_cost.push_back(&cost);
    p.stage_chunk.push_back(chunk_contents(cost.model(), layout, stage));
  }
  return p;
}

// The members of `members` that share `rank`'s node, in a full-mesh node (empty in a switched
// one): there the library lays a group's rings over its different peer links (RCCL's channels),
// so a ring step spreads over those links instead of taking the one to the next member.
std::vector<int> mesh_node_peers(const Part& part, const std::vector<int>& members, int rank) {
  const NodeSpec& node = part.cost_of(0).profile().node;
  std::vector<int> peers;
  if (node.fabric != NodeFabric::kFullMesh) return peers;
  for (int m : members) {
    if (m != rank && part.local(m) / node.devices == part.local(rank) / node.devices) peers.push_back(m);
  }
  return peers;
}

// What crosses pools in a data-parallel mix: each pool's gateway stands for its ranks, waits for
// them, then reduces `bytes` along the chain of pools.
struct CrossPool {
  PoolStrategy strategy = PoolStrategy::kHeteroDp;
  Bytes bytes = 0;
  int sync_every_steps = 0;
  std::vector<BytesPerSecond> link_bandwidth;      // pools[i] to pools[i + 1]
  std::vector<sg4::BarrierPtr> arrived, released;  // per pool
  double last_arrival = 0, done = 0;
};

class StepSimulation {
 public:
  StepSimulation(std::vector<Part> parts, Topology topology, std::vector<std::string> pool_names,
                 std::vector<int> pool_of_rank, std::optional<CrossPool> cross)
      : parts_(std::move(parts)),
        topology_(std::move(topology)),
        pool_names_(std::move(pool_names)),
        pool_of_rank_(std::move(pool_of_rank)),
        cross_(std::move(cross)) {
    std::vector<bool> active(topology_.devices(), false);
    for (Part& part : parts_) select_slice(part);
    for (const auto& [a, b] : pairs_) active[a] = active[b] = true;
    topology_.scale_uplinks_to(active);
    // Each pool's simulated ranks and its gateway meet before and after the reduction across pools.
    for (size_t p = 0; cross_ && p < parts_.size(); ++p) {
      cross_->arrived.push_back(sg4::Barrier::create(static_cast<unsigned>(parts_[p].slice.size() + 1)));
      cross_->released.push_back(sg4::Barrier::create(static_cast<unsigned>(parts_[p].slice.size() + 1)));
    }
  }

  SimulationResult run(const SimulationOptions& options, int devices_per_node);
  std::string slice_note() const;
  static int slice_width(const Layout& l) { return std::lcm(l.tp * l.cp, l.expert_tp() * l.ep); }
  // The part of a stage's ranks the slice simulates.
  static double stage_share(const Layout& l) { return std::min(1.0, slice_width(l) / double(l.stage_ranks())); }

 private:
  void select_slice(Part& part);
  void build_platform();
  void add_route(int from, int to);
  sg4::Link* link_of(TopologyEdgeId edge, bool forward);
  Seconds route_latency(int from, int to) const;

  void device(const Part& part, int rank);
  void pass(const Part& part, int rank, const PipelineOp& op, int stage, bool paired, Account& account);
  Seconds ring_collectives(const Part& part, int rank, GroupKind kind, int collectives, Bytes buffer);
  Seconds expert_parallel(const Part& part, int rank, const CostModel& cost, int all_to_alls);
  Seconds context_ring(const Part& part, int rank, const CostModel::CpRingPhase& phase);
  void ring_step(const RingLinks& links, Bytes bytes);
  void mesh_ring_step(const std::vector<int>& members, GroupKind kind, int rank, Bytes bytes);
  void receive_pipeline(int rank, const std::string& mailbox, Account& account);
  void send_pipeline(const std::string& mailbox, Bytes bytes);
  sg4::ActorPtr start_gradient_sync(const Part& part, int rank, int stage, double* end);
  void ring(const Part& part, int rank, GroupKind kind, std::vector<std::pair<int, Bytes>> phases);
  void cross_pool_sync(int rank, Account& account);
  void gateway(int pool);
  static sg4::Mailbox* chain_box(const char* phase, int from, int to);
  void forward_chunks(sg4::Mailbox* in, sg4::Mailbox* out, uint64_t chunk, BytesPerSecond bandwidth);

  int neighbour(const Part& part, int rank, int pp_step) const;
  std::string pipeline_mailbox(const Part& part, const char* kind, int virtual_stage, int micro_batch, int rank) const;
  void span(int rank, const char* category, std::string name, double start);

  std::vector<Part> parts_;
  Topology topology_;
  std::vector<std::string> pool_names_;  // empty for a single pool
  std::vector<int> pool_of_rank_;        // global rank -> pool
  std::optional<CrossPool> cross_;
  std::set<std::pair<int, int>> pairs_;  // routes the step uses
  std::map<int, sg4::Host*> hosts_;
  std::vector<sg4::Host*> gateways_;
  std::map<std::string, sg4::Link*> links_;
  std::map<int, Account> accounts_;
  std::vector<TraceSpan> spans_;
  long long messages_ = 0;
};

// Data parallelism is symmetric: every replica runs the same schedule on the same kind of links.
// The first slice_width() ranks of every stage close the TP, CP and EP groups of their members, so
// they see TP, CP, expert-TP, EP and PP traffic in full; DP rings run to their real neighbours.
void StepSimulation::select_slice(Part& part) {
  const Layout& l = part.layout;
  for (int local = 0; local < l.devices(); ++local) {
    if (local % l.stage_ranks() >= slice_width(l)) continue;
    const int rank = part.rank(local);
    part.slice.push_back(rank);
    for (GroupKind kind : {GroupKind::kTp, GroupKind::kCp, GroupKind::kEp, GroupKind::kExpertTp}) {
      for (int peer : part.members(kind, rank)) pairs_.insert({rank, peer});
    }
    for (GroupKind kind : {GroupKind::kDpCp, GroupKind::kExpertDp}) {
      const auto members = part.members(kind, rank);
      pairs_.insert({rank, ring_neighbour(members, rank, +1)});
      for (int peer : mesh_node_peers(part, members, rank)) pairs_.insert({rank, peer});
    }
    pairs_.insert({rank, neighbour(part, rank, +1)});
    pairs_.insert({rank, neighbour(part, rank, -1)});
  }
}

std::string StepSimulation::slice_note() const {
  std::string widths;
  int simulated = 0, total = 0;
  for (const Part& part : parts_) {
    if (!widths.empty()) widths += '/';
    widths += std::to_string(slice_width(part.layout));
    simulated += static_cast<int>(part.slice.size());
    total += part.layout.devices();
  }
  return "simulated " + std::to_string(simulated) + " of " + std::to_string(total) + " devices: the first " + widths +
         " ranks of every stage (whole TP and EP groups); the other data-parallel replicas mirror them, "
         "leaf uplinks carry the slice's share, DP rings run to their real neighbours; TP and EP traffic is "
         "aggregated per pass";
}

int StepSimulation::neighbour(const Part& part, int rank, int pp_step) const {
  RankCoords c = part.grid.coords(part.local(rank));
  c.pp = (c.pp + pp_step + part.layout.pp) % part.layout.pp;
  return part.rank(part.grid.rank_of(c));
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
      if (!hosts_.count(rank)) {
        hosts_[rank] = zone->create_host(topology_.graph()[topology_.device(rank)].name, kHostSpeed)->seal();
      }
    }
  }
  for (const auto& [a, b] : pairs_) {
    if (a != b) add_route(a, b);
  }
  if (cross_) {
    for (size_t p = 0; p < pool_names_.size(); ++p) {
      gateways_.push_back(zone->create_host(pool_names_[p] + "/gateway", kHostSpeed)->seal());
    }
    // Gateways of consecutive pools in the chain talk both ways.
    for (size_t p = 0; p + 1 < gateways_.size(); ++p) {
      for (auto [from, to] : {std::pair{p, p + 1}, std::pair{p + 1, p}}) {
        std::vector<sg4::LinkInRoute> links;
        for (const RouteHop& hop : topology_.route_between(topology_.gateway(static_cast<int>(from)),
                                                           topology_.gateway(static_cast<int>(to)))) {
          links.emplace_back(link_of(hop.edge, hop.forward));
        }
        zone->add_route(gateways_[from]->get_netpoint(), gateways_[to]->get_netpoint(), nullptr, nullptr, links, false);
      }
    }
  }
  zone->seal();
}

std::string StepSimulation::pipeline_mailbox(const Part& part, const char* kind, int virtual_stage, int micro_batch,
                                             int rank) const {
  const RankCoords c = part.grid.coords(part.local(rank));
  return part.name + kind + ":" + std::to_string(virtual_stage) + ":" + std::to_string(micro_batch) + ":" +
         std::to_string(c.tp) + ":" + std::to_string(c.cp) + ":" + std::to_string(c.dp);
}

void StepSimulation::span(int rank, const char* category, std::string name, double start) {
  const double now = sg4::Engine::get_clock();
  if (now > start) spans_.push_back(TraceSpan{rank, category, std::move(name), start, now - start});
}

// Ring steps to the next member of `kind`'s group: the alpha-beta ring with real messages, so
// shared links slow it down. Each phase is (steps, bytes per step).
// In a full-mesh node a step whose next member shares the node spreads over the links to all the
// group's members there.
void StepSimulation::ring(const Part& part, int rank, GroupKind kind, std::vector<std::pair<int, Bytes>> phases) {
  const auto members = part.members(kind, rank);
  if (members.size() < 2) return;
  const int next = ring_neighbour(members, rank, +1);
  const std::vector<int> peers = mesh_node_peers(part, members, rank);
  const bool spread = std::find(peers.begin(), peers.end(), next) != peers.end();
  for (const auto& [steps, bytes] : phases) {
    for (int s = 0; s < steps; ++s) {
      if (!spread) {
        sg4::Comm::sendto(hosts_.at(rank), hosts_.at(next), static_cast<uint64_t>(bytes));
        ++messages_;
        continue;
      }
      std::vector<sg4::CommPtr> sends;
      for (int peer : peers) {
        sends.push_back(sg4::Comm::sendto_async(hosts_.at(rank), hosts_.at(peer), static_cast<uint64_t>(bytes / peers.size())));
        ++messages_;
      }
      sg4::Comm::wait_all(sends);
    }
  }
}

// One pass's TP (or expert-TP) collectives, aggregated per ring step: `collectives` all-gathers or
// reduce-scatters of one `buffer`, each (n - 1) steps of buffer / n to the next rank of the group.
// The per-collective latency the aggregation hides is added back explicitly.
Seconds StepSimulation::ring_collectives(const Part& part, int rank, GroupKind kind, int collectives, Bytes buffer) {
  const auto members = part.members(kind, rank);
  const int n = static_cast<int>(members.size());
  if (n < 2 || collectives == 0) return 0;
  const double start = sg4::Engine::get_clock();
  const RingLinks links = ring_links(members, kind, rank);
  const bool mesh = static_cast<int>(mesh_node_peers(part, members, rank).size()) == n - 1;
  for (int s = 0; s < n - 1; ++s) {
    if (mesh) {
      mesh_ring_step(members, kind, rank, collectives * buffer / n);
    } else {
      ring_step(links, collectives * buffer / n);
    }
  }
  sg4::this_actor::sleep_for((collectives - 1.0) * (n - 1) * route_latency(rank, links.next));
  return sg4::Engine::get_clock() - start;
}

// One ring step of a group on one full-mesh node: its n - 1 rings (offsets 1 .. n - 1 around the
// group) each carry 1/(n - 1) of the step, every one on its own peer link.
void StepSimulation::mesh_ring_step(const std::vector<int>& members, GroupKind kind, int rank, Bytes bytes) {
  const int n = static_cast<int>(members.size());
  const std::string prefix = to_string(kind) + ":";
  std::vector<sg4::CommPtr> sends;
  for (int k = 1; k < n; ++k) {
    const int next = ring_neighbour(members, rank, +k);
    auto* out = sg4::Mailbox::by_name(prefix + std::to_string(rank) + ">" + std::to_string(next));
    sends.push_back(out->put_async(&g_token, static_cast<uint64_t>(bytes / (n - 1))));
    ++messages_;
  }
  // All receives are posted at once: a transfer starts only when its receive is posted.
  std::vector<sg4::CommPtr> receives;
  std::vector<int*> tokens(n);
  for (int k = 1; k < n; ++k) {
    const int previous = ring_neighbour(members, rank, -k);
    auto* in = sg4::Mailbox::by_name(prefix + std::to_string(previous) + ">" + std::to_string(rank));
    receives.push_back(in->get_async<int>(&tokens[k]));
  }
  sg4::Comm::wait_all(receives);
  sg4::Comm::wait_all(sends);
}

// One pass's EP dispatch and combine, aggregated: each device sends every peer its share of the
// routed tokens of `all_to_alls` all-to-alls and waits for theirs.
Seconds StepSimulation::expert_parallel(const Part& part, int rank, const CostModel& cost, int all_to_alls) {
  const auto members = part.members(GroupKind::kEp, rank);
  const int ep = static_cast<int>(members.size());
  if (ep < 2 || all_to_alls == 0) return 0;
  const double start = sg4::Engine::get_clock();
  // The dispatcher's sends to this node's peers and to other nodes', split evenly among them.
  const int node_devices = cost.profile().node.devices;
  auto same_node = [&](int peer) { return part.local(peer) / node_devices == part.local(rank) / node_devices; };
  const auto local_peers = std::count_if(members.begin(), members.end(), same_node) - 1;
  const auto remote_peers = ep - 1 - local_peers;
  const AllToAllSends each = cost.ep_sends(part.layout);
  std::vector<sg4::CommPtr> sends;
  Seconds latency = 0;
  for (int peer : members) {
    if (peer == rank) continue;
    const Bytes per_peer = all_to_alls * (same_node(peer) ? each.to_local / local_peers : each.to_remote / remote_peers);
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

// One pass's context-parallel ring, aggregated over its layers: each step sends this rank's keys
// and values (and, backward, their gradients) of every layer to the next CP rank and takes the
// previous rank's, beside the attention of the chunk already held. Returns the seconds the ring
// added to that attention; the latency the aggregation hides is added back.
Seconds StepSimulation::context_ring(const Part& part, int rank, const CostModel::CpRingPhase& phase) {
  const double start = sg4::Engine::get_clock();
  const RingLinks links = ring_links(part.members(GroupKind::kCp, rank), GroupKind::kCp, rank);
  for (int s = 0; s < phase.steps; ++s) {
    sg4::ExecPtr attention = sg4::this_actor::exec_async(phase.layers * phase.beside * kHostSpeed);
    ring_step(links, phase.layers * phase.bytes);
    sg4::this_actor::sleep_for((phase.layers - 1.0) * route_latency(rank, links.next));
    attention->wait();
  }
  return std::max(0.0, sg4::Engine::get_clock() - start - phase.steps * phase.layers * phase.beside);
}

// One step of a ring: send `bytes` on, take the previous member's, both done.
void StepSimulation::ring_step(const RingLinks& links, Bytes bytes) {
  sg4::CommPtr send = links.out->put_async(&g_token, static_cast<uint64_t>(bytes));
  links.in->get<int>();
  send->wait();
  ++messages_;
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

void StepSimulation::send_pipeline(const std::string& mailbox, Bytes bytes) {
  auto* message = new PipelineMessage{sg4::Engine::get_clock()};
  sg4::Mailbox::by_name(mailbox)->put_init(message, static_cast<uint64_t>(bytes))->detach();
  ++messages_;
}

// Compute of one forward or backward pass of one chunk, with its TP and EP traffic: the exposed
// collectives first, then the overlapped ones beside the part of the compute the cost model says
// they overlap (one source for which collective overlaps what).
// `paired`: a pass the combined 1F1B schedule merges with one of another micro-batch (see
// CostModel::ep_overlap_exposed); under the EP all-to-all overlap its all-to-alls cross the network
// beside the pass's compute, and the pass then waits for what each all-to-all, at its simulated
// length, outlasts of the phase it runs in (CostModel::paired_a2a_exposed).
void StepSimulation::pass(const Part& part, int rank, const PipelineOp& op, int stage, bool paired, Account& account) {
  const CostModel& cost = part.cost_of(stage);
  const StageContents& chunk = part.stage_chunk.at(stage);
  const Layout& l = part.layout;
  const Seconds compute = op.forward ? cost.forward_seconds(chunk, l) : cost.backward_seconds(chunk, l);
  const CostModel::TpCollectives tp_ops = cost.tp_collectives(chunk, op.forward, l);
  const int expert_gathers = cost.expert_tp_collectives(chunk, op.forward, l);
  const int all_to_alls = cost.model().is_moe()
      ? chunk.moe_layers * (op.forward ? cost.ep_all_to_alls_forward() : cost.ep_all_to_alls_backward(l))
      : 0;
  const Seconds window = std::min(compute, cost.tp_overlap_window(chunk, op.forward, l));
  const std::string name = std::string(op.forward ? "F" : "B") + " mb" + std::to_string(op.micro_batch) + " c" +
                           std::to_string(op.chunk);
  const double start = sg4::Engine::get_clock();
  const Bytes tp_buffer = cost.tp_collective_bytes(l);
  const Seconds tp_waited = ring_collectives(part, rank, GroupKind::kTp, tp_ops.exposed, tp_buffer);
  const bool beside = paired && cost.ep_overlap_applies(l);
  Seconds ep_before = ring_collectives(part, rank, GroupKind::kExpertTp, expert_gathers, cost.expert_tp_collective_bytes(l));
  if (!beside) ep_before += expert_parallel(part, rank, cost, all_to_alls);
  Seconds a2a_beside = 0;
  const double a2a_start = sg4::Engine::get_clock();
  sg4::ActorPtr a2a;
  if (beside && all_to_alls > 0) {
    a2a = sg4::Actor::create("a2a" + std::to_string(rank), hosts_.at(rank), [this, &part, rank, &cost, all_to_alls, &a2a_beside] {
      a2a_beside = expert_parallel(part, rank, cost, all_to_alls);
    });
  }
  // The CP ring runs beside part of the attention, which the rest of the compute leaves out.
  const std::vector<CostModel::CpRingPhase> cp_phases = cost.cp_ring_phases(chunk, op.forward, l);
  Seconds cp_beside = 0;
  for (const CostModel::CpRingPhase& p : cp_phases) cp_beside += p.layers * p.steps * p.beside;
  const double compute_start = sg4::Engine::get_clock();
  Seconds cp = 0;
  for (const CostModel::CpRingPhase& p : cp_phases) cp += context_ring(part, rank, p);
  sg4::this_actor::execute((compute - window - cp_beside) * kHostSpeed);
  sg4::ExecPtr background = sg4::this_actor::exec_async(window * kHostSpeed);
  const double beside_start = sg4::Engine::get_clock();
  const Seconds tp_beside = ring_collectives(part, rank, GroupKind::kTp, tp_ops.overlapped, tp_buffer);
  background->wait();
  // The GEMMs lost the SMs NCCL held while the collectives ran beside them.
  sg4::this_actor::execute(std::min(tp_beside, window) * cost.hidden_tp_sm_share(l) * kHostSpeed);
  // Under Transformer Engine's overlap each collective hides only behind the GEMM it is paired
  // with: the pass waits for what they outlast, at their simulated length.
  if (cost.te_tp_overlap_applies(l) && tp_ops.overlapped > 0) {
    const Seconds paired = cost.te_tp_overlap_exposed(chunk, op.forward, l, tp_beside / tp_ops.overlapped);
    const Seconds waited = sg4::Engine::get_clock() - (compute_start + cp + compute);
    if (paired > waited) sg4::this_actor::execute((paired - waited) * kHostSpeed);
  }
  const double compute_end = sg4::Engine::get_clock();
  // What the overlapped all-to-alls leave to wait for comes after the compute they ran beside.
  Seconds ep_after = 0;
  if (a2a) {
    a2a->join();
    const Seconds phases = chunk.moe_layers * cost.paired_a2a_exposed(a2a_beside / all_to_alls, op.forward, l);
    const Seconds waited = sg4::Engine::get_clock() - compute_end;
    if (phases > waited) sg4::this_actor::execute((phases - waited) * kHostSpeed);
    ep_after = sg4::Engine::get_clock() - compute_end;
  }
  spans_.push_back(TraceSpan{rank, "compute", name, compute_start + cp, compute});
  if (cp > 0) spans_.push_back(TraceSpan{rank, "cp", name + " cp", compute_start, cp_beside + cp});
  if (tp_waited > 0) spans_.push_back(TraceSpan{rank, "tp", name + " tp", start, tp_waited});
  if (ep_before > 0) spans_.push_back(TraceSpan{rank, "ep", name + " ep", start + tp_waited, ep_before});
  if (a2a_beside > 0) spans_.push_back(TraceSpan{rank, "ep", name + " ep (overlapped)", a2a_start, a2a_beside});
  if (ep_after > 0) spans_.push_back(TraceSpan{rank, "ep", name + " ep (after compute)", compute_end, ep_after});
  if (tp_beside > 0) spans_.push_back(TraceSpan{rank, "tp", name + " tp (overlapped)", beside_start, tp_beside});
  // Exposed communication: all the pass did besides computing.
  account.comm.tp += tp_waited + std::max(0.0, compute_end - (compute_start + cp + compute));
  account.comm.cp += cp;
  account.comm.ep += ep_before + ep_after;
  account.busy += compute;
}

// Gradient synchronisation of one chunk's parameters over DP (dense) and expert-DP (experts):
// all-reduce of the gradients, or reduce-scatter of gradients plus all-gather of the weights with
// the distributed optimizer, each at the precision's bytes (the cost model's PrecisionBytes, so
// an fp32 run moves 4-byte weights); run by a helper actor so it can overlap the remaining
// backward passes. It writes the clock at which it finished to `end`.
sg4::ActorPtr StepSimulation::start_gradient_sync(const Part& part, int rank, int stage, double* end) {
  const CostModel& cost = part.cost_of(stage);
  const StageContents& chunk = part.stage_chunk.at(stage);
  const Layout& l = part.layout;
  const double dense = cost.dense_params_per_device(chunk, l);
  const double expert = cost.expert_params_per_device(chunk, l);
  const PrecisionBytes& bytes = cost.bytes_per();
  auto phases = [&l, bytes](int n, double params) {
    std::vector<std::pair<int, Bytes>> p;
    if (n < 2) return p;
    if (l.optimizer_sharding) {
      p.push_back({n - 1, bytes.grad * params / n});
      p.push_back({n - 1, bytes.weight * params / n});
    } else {
      p.push_back({2 * (n - 1), bytes.grad * params / n});
    }
    return p;
  };
  return sg4::Actor::create("dp" + std::to_string(rank), hosts_.at(rank), [this, &part, rank, dense, expert, phases, end] {
    const double start = sg4::Engine::get_clock();
    ring(part, rank, GroupKind::kDpCp, phases(part.layout.gradient_ranks(), dense));
    ring(part, rank, GroupKind::kExpertDp, phases(part.layout.expert_dp(), expert));
    span(rank, "dp", "gradient sync", start);
    *end = sg4::Engine::get_clock();
  });
}

// Hetero DP: the device hands its pool's sum to the gateway and waits until the pools' sums have
// met over the links (waiting for a slower pool included: the straggler shows here).
void StepSimulation::cross_pool_sync(int rank, Account& account) {
  const int pool = pool_of_rank_.at(rank);
  const double start = sg4::Engine::get_clock();
  cross_->arrived.at(pool)->wait();
  cross_->released.at(pool)->wait();
  account.cross_pool += sg4::Engine::get_clock() - start;
  span(rank, "dp", "cross-pool reduction (waits for every pool and the link)", start);
}

// A pool's gateway: once its ranks arrived, reduces the pools' sums along the chain (pool 0 towards
// the last) and broadcasts the result back, streamed in chunks as NCCL's pipelined rings do: the
// first gateway sends chunks at its link's line rate, the others forward each chunk on arrival, so
// every link carries the bytes once each way and a chain pays about one latency per hop each way.
void StepSimulation::gateway(int pool) {
  const int pools = static_cast<int>(gateways_.size());
  const uint64_t chunk = static_cast<uint64_t>(cross_->bytes / kCrossPoolChunks);
  // Chunks arriving before their gateway is ready wait in its buffer (eager receivers).
  if (pool > 0) chain_box("up", pool - 1, pool)->set_receiver(sg4::Actor::self());
  cross_->arrived.at(pool)->wait();
  const double arrived = sg4::Engine::get_clock();
  cross_->last_arrival = std::max(cross_->last_arrival, arrived);
  sg4::ActorPtr down;
  if (pool + 1 < pools) {
    down = sg4::Actor::create(std::string("down") + std::to_string(pool), gateways_[pool], [this, pool, chunk] {
      forward_chunks(chain_box("down", pool + 1, pool), pool > 0 ? chain_box("down", pool, pool - 1) : nullptr, chunk,
                     pool > 0 ? cross_->link_bandwidth.at(pool - 1) : 0);
    });
    chain_box("down", pool + 1, pool)->set_receiver(down);
  }
  if (pool == 0) {
    std::vector<sg4::CommPtr> sends;
    for (int c = 0; pools > 1 && c < kCrossPoolChunks; ++c) {
      sends.push_back(chain_box("up", 0, 1)->put_async(&g_token, chunk));
      ++messages_;
      sg4::this_actor::sleep_for(chunk / cross_->link_bandwidth.at(0));
    }
    sg4::Comm::wait_all(sends);
  } else {
    // The last gateway turns the reduced chunks straight back down the chain.
    forward_chunks(chain_box("up", pool - 1, pool),
                   pool + 1 < pools ? chain_box("up", pool, pool + 1) : chain_box("down", pool, pool - 1), chunk,
                   cross_->link_bandwidth.at(pool + 1 < pools ? pool : pool - 1));
  }
  if (down) down->join();
  cross_->done = std::max(cross_->done, sg4::Engine::get_clock());
  // The gateway's own lane after the devices': from its pool's arrival to the end of the stream,
  // waiting for slower pools included, so the link's share of the step reads in the timeline.
  std::string name = pool_names_.at(pool);
  name += " gateway: ";
  name += cross_->strategy == PoolStrategy::kHeteroDp ? "gradient reduction across pools" : "parameter sync across pools";
  span(topology_.devices() + pool, "dp", std::move(name), arrived);
  if (cross_->strategy == PoolStrategy::kHeteroDp) cross_->released.at(pool)->wait();
}

sg4::Mailbox* StepSimulation::chain_box(const char* phase, int from, int to) {
  return sg4::Mailbox::by_name(std::string("cross:") + phase + ":" + std::to_string(from) + ">" + std::to_string(to));
}

// Receives the chain's chunks from `in` and sends each on to `out` (none: the chain ends here),
// no faster than the outgoing link's line rate `bandwidth`: chunks already buffered leave one after
// another, as a NIC serialises them, and each can be forwarded as soon as it arrives.
void StepSimulation::forward_chunks(sg4::Mailbox* in, sg4::Mailbox* out, uint64_t chunk, BytesPerSecond bandwidth) {
  std::vector<sg4::CommPtr> sends;
  for (int c = 0; c < kCrossPoolChunks; ++c) {
    in->get<int>();
    if (!out) continue;
    sends.push_back(out->put_async(&g_token, chunk));
    ++messages_;
    sg4::this_actor::sleep_for(chunk / bandwidth);
  }
  sg4::Comm::wait_all(sends);
}

void StepSimulation::device(const Part& part, int rank) {
  Account& account = accounts_[rank];
  const Layout& l = part.layout;
  const RankCoords c = part.grid.coords(part.local(rank));
  const int stages = l.pp * l.vpp;
  const std::vector<PipelineOp> ops = pipeline_schedule(l.pp, l.vpp, part.micro_batches, c.pp);
  std::vector<size_t> last_backward(l.vpp, 0);
  // Combined 1F1B pairs the forwards after the first backward and the backwards before the last
  // forward; the warmup forwards and the cooldown backwards run alone.
  size_t first_backward = ops.size(), last_forward = 0;
  for (size_t i = 0; i < ops.size(); ++i) {
    const PipelineOp& op = ops[i];
    if (!op.forward) first_backward = std::min(first_backward, i);
    if (op.forward) last_forward = i;
    if (!op.forward) last_backward[op.chunk] = i;
    // Receives are posted ahead (Megatron's batched isend/irecv): messages flow as soon as sent.
    const int stage = op.chunk * l.pp + c.pp;
    const bool receives = op.forward ? stage > 0 : stage < stages - 1;
    if (receives) {
      sg4::Mailbox::by_name(pipeline_mailbox(part, op.forward ? "act" : "grad", stage, op.micro_batch, rank))
          ->set_receiver(sg4::Actor::self());
    }
  }
  // Megatron's overlap_grad_reduce starts reducing a chunk's buckets while its last backward runs.
  const bool overlap_dp = part.cost_of(c.pp).run().overlap.grad_reduce;
  std::vector<sg4::ActorPtr> syncs;
  // Per chunk: when its sync started and ended, and the share of the SMs its collectives hold.
  std::vector<double> sync_start(l.vpp, 0.0), sync_end(l.vpp, 0.0), sync_share(l.vpp, 0.0);
  auto start_sync = [&](int chunk) {
    const int stage = chunk * l.pp + c.pp;
    sync_start[chunk] = sg4::Engine::get_clock();
    sync_share[chunk] = part.cost_of(stage).data_parallel_traffic(part.stage_chunk.at(stage), l).sm_share;
    syncs.push_back(start_gradient_sync(part, rank, stage, &sync_end[chunk]));
  };
  for (size_t i = 0; i < ops.size(); ++i) {
    const PipelineOp& op = ops[i];
    const int stage = op.chunk * l.pp + c.pp;
    const Bytes boundary = part.cost_of(stage).pp_boundary_bytes(l);
    if (op.forward) {
      if (stage > 0) receive_pipeline(rank, pipeline_mailbox(part, "act", stage, op.micro_batch, rank), account);
      pass(part, rank, op, stage, i > first_backward, account);
      if (stage < stages - 1) send_pipeline(pipeline_mailbox(part, "act", stage + 1, op.micro_batch, rank), boundary);
    } else {
      if (stage < stages - 1) {
        receive_pipeline(rank, pipeline_mailbox(part, "grad", stage, op.micro_batch, rank), account);
      }
      if (overlap_dp && i == last_backward[op.chunk]) start_sync(op.chunk);
      pass(part, rank, op, stage, i < last_forward, account);
      if (stage > 0) send_pipeline(pipeline_mailbox(part, "grad", stage - 1, op.micro_batch, rank), boundary);
    }
  }
  if (!overlap_dp) {
    for (int v = 0; v < l.vpp; ++v) start_sync(v);
  }
  const double waiting = sg4::Engine::get_clock();
  for (auto& sync : syncs) sync->join();
  // The passes beside the syncs lost the SMs NCCL held while they ran (bubbles among them too).
  Seconds lost = 0;
  for (int v = 0; v < l.vpp; ++v) lost += std::max(0.0, std::min(sync_end[v], waiting) - sync_start[v]) * sync_share[v];
  sg4::this_actor::execute(lost * kHostSpeed);
  account.comm.dp += sg4::Engine::get_clock() - waiting;
  if (cross_ && cross_->strategy == PoolStrategy::kHeteroDp) cross_pool_sync(rank, account);
  const double optimizer_start = sg4::Engine::get_clock();
  const Seconds optimizer = part.cost_of(c.pp).optimizer_seconds(part.optimizer_contents.at(c.pp), l);
  sg4::this_actor::execute(optimizer * kHostSpeed);
  account.busy += optimizer;
  span(rank, "compute", "optimizer", optimizer_start);
  account.end = sg4::Engine::get_clock();
  // Local SGD: the step is done; the gateway synchronises parameters once every pool's ranks are.
  if (cross_ && cross_->strategy == PoolStrategy::kLocalSgd) cross_->arrived.at(pool_of_rank_.at(rank))->wait();
}

// Fills the per-device and per-pool figures; the critical device is the one that ends last.
void summarise(SimulationResult& r, const std::map<int, Account>& accounts, const std::vector<std::string>& pool_names,
               const std::vector<int>& pool_of_rank) {
  for (const auto& [rank, a] : accounts) r.step_time_s = std::max(r.step_time_s, a.end);
  bool found = false;
  for (const auto& [rank, a] : accounts) {
    const Seconds comm = a.comm.total();
    r.devices.push_back(DeviceTimes{rank, a.busy, comm, a.bubble, r.step_time_s - a.busy - comm, a.cross_pool});
    if (!found && a.end == r.step_time_s) {
      r.critical_rank = rank;
      found = true;
    }
  }
  const Account& critical = accounts.at(r.critical_rank);
  r.compute_s = critical.busy;
  r.exposed_comm_s = critical.comm;
  r.bubble_s = critical.bubble;
  for (size_t p = 0; p < pool_names.size(); ++p) {
    PoolTimes pool;
    pool.name = pool_names[p];
    for (const auto& [rank, a] : accounts) {
      if (pool_of_rank.at(rank) != static_cast<int>(p)) continue;
      const Seconds own = a.end - a.cross_pool;
      if (own > pool.step_time_s) {
        pool.step_time_s = own;
        pool.critical_rank = rank;
        pool.compute_s = a.busy;
        pool.bubble_s = a.bubble;
        pool.exposed_comm_s = a.comm;
      }
    }
    r.pools.push_back(pool);
  }
}

SimulationResult StepSimulation::run(const SimulationOptions& options, int devices_per_node) {
  const auto wall_start = std::chrono::steady_clock::now();
  build_platform();
  for (const Part& part : parts_) {
    for (int rank : part.slice) {
      sg4::Actor::create("device" + std::to_string(rank), hosts_.at(rank), [this, &part, rank] { device(part, rank); });
    }
  }
  for (size_t p = 0; p < gateways_.size(); ++p) {
    sg4::Actor::create(std::string("gateway") + std::to_string(p), gateways_[p], [this, p] { gateway(static_cast<int>(p)); });
  }
  sg4::Engine::get_instance()->run();

  SimulationResult r;
  for (const Part& part : parts_) {
    r.total_devices += part.layout.devices();
    r.simulated_devices += static_cast<int>(part.slice.size());
  }
  summarise(r, accounts_, pool_names_, pool_of_rank_);
  r.messages = messages_;
  r.approximation = slice_note();
  if (cross_) {
    r.cross_pool_s = cross_->done - cross_->last_arrival;
    if (cross_->strategy == PoolStrategy::kLocalSgd) {
      r.sync_s = r.cross_pool_s;
      r.sync_every_steps = cross_->sync_every_steps;
      r.cross_pool_s = r.sync_s / cross_->sync_every_steps;
      r.step_time_s += r.cross_pool_s;
      r.approximation += "; local SGD: one inner step of every pool, then one parameter sync over the links, "
                         "amortised over its interval";
    } else {
      r.approximation += "; each pool's gateway stands for its ranks in the reduction across pools";
    }
  }
  if (!options.trace_path.empty()) write_trace(options.trace_path, spans_, devices_per_node);
  r.wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - wall_start).count();
  return r;
}

// SimGrid's engine (once per process) with the network model the analytic one matches: CM02
// without TCP corrections, max-min fair sharing, latency and bandwidth as given, so that an
// uncontended message costs exactly latency + bytes / bandwidth as in the analytic model.
class EngineSession {
 public:
  EngineSession() {
    for (auto& a : args_) argv_.push_back(a.data());
    argc_ = static_cast<int>(argv_.size());
    engine_ = std::make_unique<sg4::Engine>(&argc_, argv_.data());
  }

 private:
  std::vector<std::string> args_ = {"flopwise-simulate",
                                    "--cfg=network/model:CM02",
                                    "--cfg=network/latency-factor:1.0",
                                    "--cfg=network/bandwidth-factor:1.0",
                                    "--cfg=network/weight-S:0",
                                    "--cfg=network/crosstraffic:0",
                                    "--cfg=network/TCP-gamma:0",
                                    "--log=root.thres:critical"};
  std::vector<char*> argv_;
  int argc_ = 0;
  std::unique_ptr<sg4::Engine> engine_;
};

// The heterogeneous pipeline as one part: the common layout over every pool's stages, each stage
// with its pool's cost model and its own layers.
Part pipeline_part(const MixedPlan& plan, const std::vector<const CostModel*>& costs) {
  Layout whole = plan.pools.front().layout;
  whole.pp = 0;
  for (const PlanPool& pool : plan.pools) {
    const Layout& l = pool.layout;
    if (l.tp != whole.tp || l.ep != whole.ep || l.etp != whole.etp || l.dp != whole.dp || l.micro_batch != whole.micro_batch) {
      throw InputError("pool " + pool.name + " layout: a hetero pipeline runs the first pool's tp, ep, etp, dp and "
                       "micro-batch on every pool");
    }
    if (static_cast<int>(pool.stage_layers.size()) != pool.layout.pp) {
      throw InputError("pool " + pool.name + ": stage_layers lists " + std::to_string(pool.stage_layers.size()) +
                       " stages, its layout " + std::to_string(pool.layout.pp));
    }
    whole.pp += pool.layout.pp;
  }
  whole.vpp = 1;
  whole.even_split();
  const CostModel& first = *costs.front();
  // The degrees against the model and batch; the layers per stage are the plan's own.
  Layout one_stage = whole;
  one_stage.pp = 1;
  if (const auto v = check_structure(first.model(), first.run(), first.profile(), {1, one_stage.devices()}, one_stage)) {
    throw InputError("layout: " + v->message);
  }
  Part part{"", whole, RankGrid(whole, first.profile().node.devices), 0, whole.micro_batches(first.run().global_batch),
            {}, {}, {}, {}};
  int layer = 0;
  for (size_t p = 0; p < plan.pools.size(); ++p) {
    for (int layers : plan.pools[p].stage_layers) {
      const int stage = static_cast<int>(part.stage_chunk.size());
      part.stage_cost.push_back(costs[p]);
      part.stage_chunk.push_back(range_contents(first.model(), layer, layers, stage == 0, stage == whole.pp - 1));
      part.optimizer_contents.push_back(part.stage_chunk.back());
      layer += layers;
    }
  }
  if (layer != first.model().layers) {
    throw InputError(std::string("mixed plan: the pools' stage_layers add up to ") + std::to_string(layer) + " layers, the model has " +
                     std::to_string(first.model().layers));
  }
  return part;
}

}  // namespace

SimulationResult simulate_step_in_process(const CostModel& cost, const Layout& layout,
                                          const SimulationOptions& options) {
  if (const auto v = check_structure(cost.model(), cost.run(), cost.profile(), {1, layout.devices()}, layout)) {
    throw InputError("layout: " + v->message);
  }
  Topology topology = Topology::build(cost.profile(), layout.devices());
  topology.check_connected(cost.profile().source);
  EngineSession engine;
  StepSimulation simulation({uniform_part("", cost, layout, 0)}, std::move(topology), {},
                            std::vector<int>(layout.devices(), 0), std::nullopt);
  return simulation.run(options, cost.profile().node.devices);
}

SimulationResult simulate_mixed_step_in_process(const MixedPlan& plan, const std::vector<const CostModel*>& costs,
                                                const SimulationOptions& options) {
  if (costs.size() != plan.pools.size() || plan.pools.empty()) throw InputError("mixed plan: one cost model per pool");
  std::vector<TopologyPool> topology_pools;
  std::vector<std::string> names;
  std::vector<int> pool_of_rank;
  int devices_per_node = 0;
  for (size_t p = 0; p < plan.pools.size(); ++p) {
    const PlanPool& pool = plan.pools[p];
    topology_pools.push_back({pool.name, &costs[p]->profile(), pool.devices()});
    names.push_back(pool.name);
    pool_of_rank.insert(pool_of_rank.end(), pool.devices(), static_cast<int>(p));
    devices_per_node = std::gcd(devices_per_node, costs[p]->profile().node.devices);
  }
  std::vector<TopologyPoolLink> links;
  for (size_t i = 0; i < plan.links.size(); ++i) {
    links.push_back({static_cast<int>(i), static_cast<int>(i + 1), plan.links[i].bandwidth, plan.links[i].latency});
  }
  Topology topology = Topology::build_pools(topology_pools, links);
  std::vector<Part> parts;
  std::optional<CrossPool> cross;
  if (plan.strategy == PoolStrategy::kHeteroPipeline) {
    parts.push_back(pipeline_part(plan, costs));
    // The slice's senders carry their share of the boundary traffic over the links between pools.
    const Layout& l = parts.back().layout;
    topology.scale_pool_links(StepSimulation::stage_share(l));
  } else {
    for (size_t p = 0; p < plan.pools.size(); ++p) {
      const PlanPool& pool = plan.pools[p];
      if (const auto v = check_structure(costs[p]->model(), costs[p]->run(), costs[p]->profile(),
                                         {1, pool.devices()}, pool.layout)) {
        throw InputError("pool " + pool.name + " layout: " + v->message);
      }
      parts.push_back(uniform_part(pool.name + ":", *costs[p], pool.layout, pool.first_rank));
    }
    cross = CrossPool{plan.strategy, plan.cross_pool_bytes, plan.sync_every_steps, {}, {}, {}, 0, 0};
    for (const PlanLink& link : plan.links) cross->link_bandwidth.push_back(link.bandwidth);
  }
  topology.check_connected("mixed plan");
  EngineSession engine;
  StepSimulation simulation(std::move(parts), std::move(topology), names, pool_of_rank, std::move(cross));
  return simulation.run(options, devices_per_node);
}

}  // namespace flopwise
