#include "flopwise/collectives.hpp"

#include <algorithm>

namespace flopwise {

Network Network::from(const HardwareProfile& p) {
  Network n;
  n.intra = {p.node.intra_bandwidth * p.efficiency.intra_node_comm, p.node.intra_latency};
  n.inter = {p.cluster.inter_bandwidth * p.efficiency.inter_node_comm / p.cluster.oversubscription,
             p.cluster.inter_latency};
  return n;
}

namespace {

// Bus bandwidth of a ring spanning nodes: each node carries one ring crossing per channel and
// NCCL spreads channels over the node's NICs, so a group with k members on a node drives k NICs
// (NCCL tests' busbw model: busbw = algbw * 2 (n-1) / n for all-reduce).
BytesPerSecond ring_bandwidth(const GroupSpan& g, const Network& net) {
  if (g.intra_only()) return net.intra.bandwidth;
  return std::min(net.intra.bandwidth, g.members_per_node * net.inter.bandwidth);
}

Seconds ring_latency(const GroupSpan& g, const Network& net) {
  return g.intra_only() ? net.intra.latency : net.inter.latency;
}

}  // namespace

Seconds all_reduce_time(const GroupSpan& g, Bytes bytes, const Network& net) {
  if (g.size <= 1) return 0.0;
  const double n = g.size;
  return 2.0 * (n - 1.0) / n * bytes / ring_bandwidth(g, net) + 2.0 * (n - 1.0) * ring_latency(g, net);
}

Seconds reduce_scatter_time(const GroupSpan& g, Bytes bytes, const Network& net) {
  if (g.size <= 1) return 0.0;
  const double n = g.size;
  return (n - 1.0) / n * bytes / ring_bandwidth(g, net) + (n - 1.0) * ring_latency(g, net);
}

Seconds all_to_all_time(const GroupSpan& g, Bytes bytes, const Network& net) {
  if (g.size <= 1) return 0.0;
  const double n = g.size;
  const double local_peers = std::min(g.members_per_node, g.size) - 1.0;
  const double remote_peers = n - 1.0 - local_peers;
  // Intra- and inter-node shares travel at once on different links; the slower one finishes last.
  const Seconds intra = bytes * local_peers / n / net.intra.bandwidth;
  const Seconds inter = remote_peers > 0 ? bytes * remote_peers / n / net.inter.bandwidth : 0.0;
  const Seconds latency = (n - 1.0) * (remote_peers > 0 ? net.inter.latency : net.intra.latency);
  return std::max(intra, inter) + latency;
}

Seconds send_recv_time(const GroupSpan& g, Bytes bytes, const Network& net) {
  if (g.size <= 1) return 0.0;
  // A pipeline is as slow as its slowest hop: one crossing between nodes sets the pace.
  const Link& link = g.intra_only() ? net.intra : net.inter;
  return bytes / link.bandwidth + link.latency;
}

}  // namespace flopwise
