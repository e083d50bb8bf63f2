#include "flopwise/collectives.hpp"

#include <algorithm>
#include <cmath>

namespace flopwise {

Network Network::from(const HardwareProfile& p) {
  Network n;
  n.fabric = p.node.fabric;
  n.node_devices = p.node.devices;
  n.intra = {p.node.intra_bandwidth * p.efficiency.intra_node_comm, p.node.intra_latency};
  n.inter = {p.cluster.inter_bandwidth * p.efficiency.inter_node_comm / p.cluster.oversubscription,
             p.cluster.inter_latency};
  for (int a = 0; a < kCollectiveAlgorithms; ++a) {
    n.intra_by[a] = n.intra;
    n.inter_by[a] = n.inter;
    const auto fitted = p.collectives.find(static_cast<CollectiveAlgorithm>(a));
    if (fitted == p.collectives.end()) continue;
    if (const auto& f = fitted->second.intra_node) n.intra_by[a] = {p.node.intra_bandwidth * f->efficiency, f->latency};
    if (const auto& f = fitted->second.inter_node) {
      n.inter_by[a] = {p.cluster.inter_bandwidth * f->efficiency / p.cluster.oversubscription, f->latency};
    }
  }
  return n;
}

BytesPerSecond Network::intra_bandwidth(CollectiveAlgorithm a, int members) const {
  const BytesPerSecond whole = intra_for(a).bandwidth;
  if (fabric == NodeFabric::kSwitch || node_devices < 2) return whole;
  return whole * (std::clamp(members, 2, node_devices) - 1) / (node_devices - 1);
}

CollectiveAlgorithm algorithm_of(Collective c) {
  switch (c) {
    case Collective::kAllToAll: return CollectiveAlgorithm::kAllToAll;
    case Collective::kSendRecv: return CollectiveAlgorithm::kSendRecv;
    default: return CollectiveAlgorithm::kRing;
  }
}

// Ring algorithms (NCCL tests' bus-bandwidth model): an all-reduce is a reduce-scatter then an
// all-gather, each moving (n-1)/n of the buffer in n-1 steps. An all-to-all sends (n-1)/n of the
// payload to n-1 peers; a send/recv moves it all in one message.
AlphaBeta alpha_beta(Collective c, int group_size) {
  if (group_size <= 1) return {};
  const double n = group_size;
  switch (c) {
    case Collective::kAllReduce: return {2.0 * (n - 1.0) / n, 2.0 * (n - 1.0)};
    case Collective::kReduceScatter:
    case Collective::kAllGather:
    case Collective::kAllToAll: return {(n - 1.0) / n, n - 1.0};
    case Collective::kSendRecv: break;
  }
  return {1.0, 1.0};
}

namespace {

// Bus bandwidth of a ring spanning nodes: each node carries one ring crossing per channel and
// NCCL spreads channels over the node's NICs, so a group with k members on a node drives k NICs.
// In a full mesh the library lays its rings (channels) over different peer links, so a ring among
// k members of a node runs on k - 1 links a device (RCCL on 8 MI300X: 312.9 GB/s all-reduce bus
// bandwidth over 8 GPUs, 47.7 over 2; Bekman, ml-engineering, network/README.md). A ring with one
// member a node crosses no link inside a node.
BytesPerSecond ring_bandwidth(const GroupSpan& g, const Network& net) {
  const int local = std::min(g.members_per_node, g.size);
  const BytesPerSecond intra = net.intra_bandwidth(CollectiveAlgorithm::kRing, local);
  if (g.intra_only()) return intra;
  const BytesPerSecond nics = g.members_per_node * net.inter_for(CollectiveAlgorithm::kRing).bandwidth;
  return local > 1 ? std::min(intra, nics) : nics;
}

// NCCL's tuning model (src/graph/tuning.cc) charges the ring steps that cross nodes the network
// latency and the rest the NVLink latency: an all-reduce over k nodes has 2 (k-1) network steps.
Seconds ring_latency(Collective c, const GroupSpan& g, const Network& net) {
  const AlphaBeta terms = alpha_beta(c, g.size);
  const Seconds intra = net.intra_for(CollectiveAlgorithm::kRing).latency;
  if (g.intra_only()) return terms.latency_steps * intra;
  const double nodes = std::ceil(static_cast<double>(g.size) / std::max(1, g.members_per_node));
  const double inter_steps = terms.latency_steps * (nodes - 1.0) / (g.size - 1.0);
  return (terms.latency_steps - inter_steps) * intra + inter_steps * net.inter_for(CollectiveAlgorithm::kRing).latency;
}

Seconds ring_time(Collective c, const GroupSpan& g, Bytes bytes, const Network& net) {
  return alpha_beta(c, g.size).bytes_factor * bytes / ring_bandwidth(g, net) + ring_latency(c, g, net);
}

}  // namespace

Seconds all_reduce_time(const GroupSpan& g, Bytes bytes, const Network& net) {
  if (g.size <= 1) return 0.0;
  return ring_time(Collective::kAllReduce, g, bytes, net);
}

Seconds reduce_scatter_time(const GroupSpan& g, Bytes bytes, const Network& net) {
  if (g.size <= 1) return 0.0;
  return ring_time(Collective::kReduceScatter, g, bytes, net);
}

AllToAllSends even_sends(const GroupSpan& g, Bytes bytes) {
  const double n = g.size;
  const double local_peers = std::min(g.members_per_node, g.size) - 1.0;
  return {bytes * local_peers / n, bytes * (n - 1.0 - local_peers) / n};
}

Seconds all_to_all_time(const GroupSpan& g, Bytes bytes, const Network& net) {
  return all_to_all_time(g, even_sends(g, bytes), net);
}

Seconds all_to_all_time(const GroupSpan& g, const AllToAllSends& sends, const Network& net) {
  if (g.size <= 1) return 0.0;
  const Link& intra = net.intra_for(CollectiveAlgorithm::kAllToAll);
  const Link& inter = net.inter_for(CollectiveAlgorithm::kAllToAll);
  const bool spans_nodes = g.members_per_node < g.size;
  // Intra- and inter-node shares travel at once on different links; the slower one finishes last.
  const int local = std::min(g.members_per_node, g.size);
  const Seconds intra_time = sends.to_local / net.intra_bandwidth(CollectiveAlgorithm::kAllToAll, local);
  const Seconds inter_time = spans_nodes ? sends.to_remote / inter.bandwidth : 0.0;
  const Seconds latency = (g.size - 1.0) * (spans_nodes ? inter.latency : intra.latency);
  return std::max(intra_time, inter_time) + latency;
}

Seconds send_recv_time(const GroupSpan& g, Bytes bytes, const Network& net) {
  if (g.size <= 1) return 0.0;
  // A pipeline is as slow as its slowest hop: one crossing between nodes sets the pace. Inside a
  // full mesh a message has its one peer link.
  if (g.intra_only()) {
    const Link& link = net.intra_for(CollectiveAlgorithm::kSendRecv);
    return bytes / net.intra_bandwidth(CollectiveAlgorithm::kSendRecv, 2) + link.latency;
  }
  const Link& link = net.inter_for(CollectiveAlgorithm::kSendRecv);
  return bytes / link.bandwidth + link.latency;
}

}  // namespace flopwise
