#include "flopwise/topology.hpp"

#include <boost/graph/breadth_first_search.hpp>
#include <boost/graph/connected_components.hpp>
#include <boost/graph/filtered_graph.hpp>

#include <algorithm>

#include "flopwise/error.hpp"

namespace flopwise {
namespace {

TopologyVertexId add_vertex(TopologyGraph& g, VertexKind kind, const std::string& name, int index) {
  return boost::add_vertex(TopologyVertex{kind, name, index}, g);
}

void add_link(TopologyGraph& g, TopologyVertexId a, TopologyVertexId b, BytesPerSecond bandwidth, Seconds latency) {
  const std::string name = g[a].name + "~" + g[b].name;
  boost::add_edge(a, b, TopologyLink{name, a, bandwidth, latency}, g);
}

int ceil_div(int a, int b) { return (a + b - 1) / b; }

// Lets a route enter a device vertex only when it is the destination.
struct NotThroughDevices {
  const TopologyGraph* graph = nullptr;
  TopologyVertexId source{}, target{};
  bool operator()(TopologyVertexId v) const {
    return (*graph)[v].kind != VertexKind::kDevice || v == source || v == target;
  }
};

}  // namespace

Topology Topology::build(const HardwareProfile& p, int devices) {
  Topology t;
  t.add_pool("", p, devices);
  return t;
}

Topology Topology::build_pools(const std::vector<TopologyPool>& pools, const std::vector<TopologyPoolLink>& links) {
  Topology t;
  std::vector<TopologyVertexId> tops;
  for (const TopologyPool& pool : pools) {
    tops.push_back(t.add_pool(pool.name + "/", *pool.profile, pool.devices));
    // Never the bottleneck: the pool's traffic spreads over all its NICs in a real reduction.
    t.gateways_.push_back(add_vertex(t.graph_, VertexKind::kGateway, pool.name + "/gateway", static_cast<int>(tops.size()) - 1));
    add_link(t.graph_, t.gateways_.back(), tops.back(), 1e18, 0.0);
  }
  for (const TopologyPoolLink& l : links) {
    add_link(t.graph_, tops.at(l.a), tops.at(l.b), l.bandwidth, l.latency);
    t.pool_links_.push_back(boost::edge(tops.at(l.a), tops.at(l.b), t.graph_).first);
  }
  return t;
}

// Adds one pool's devices (the next ranks), node switches, leaves and spine; returns the switch
// on top of it (the spine, or the first node switch when the pool has no inter-node network).
TopologyVertexId Topology::add_pool(const std::string& prefix, const HardwareProfile& p, int devices) {
  TopologyGraph& g = graph_;
  const int per_node = p.node.devices;
  const int nodes = ceil_div(devices, per_node);
  const Network net = Network::from(p);
  const bool rail = p.cluster.topology == TopologyKind::kRailOptimized;
  // Latency is split over the hops so that any route adds up to the profile's figure.
  const Seconds nvlink_hop = p.node.intra_latency / 2, nic_hop = p.cluster.inter_latency / 2;
  const int nodes_per_group = rail ? p.cluster.leaf_ports : p.cluster.leaf_ports / per_node;
  const int groups = ceil_div(nodes, nodes_per_group);
  const bool networked = p.cluster.inter_bandwidth > 0;
  const int first_rank = static_cast<int>(devices_.size());

  std::vector<TopologyVertexId> leaves;
  TopologyVertexId top{};
  if (networked) {
    top = add_vertex(g, VertexKind::kSpine, prefix + "spine", 0);
    const int leaf_count = rail ? groups * per_node : groups;
    const double uplink = p.cluster.leaf_ports * p.cluster.inter_bandwidth * p.efficiency.inter_node_comm /
                          p.cluster.oversubscription;
    for (int i = 0; i < leaf_count; ++i) {
      leaves.push_back(add_vertex(g, VertexKind::kLeaf, prefix + "leaf" + std::to_string(i), leaves_ + i));
      add_link(g, leaves.back(), top, uplink, 0.0);
    }
    leaves_ += leaf_count;
  }
  // A full-mesh node's devices also link pairwise, one peer link each way: routes between two of
  // them take that link (one hop), never the switch, which stays for the pool's own links.
  const bool mesh = p.node.fabric == NodeFabric::kFullMesh;
  const BytesPerSecond peer_link = net.intra_bandwidth(CollectiveAlgorithm::kSendRecv, 2);
  for (int n = 0; n < nodes; ++n) {
    const TopologyVertexId node_switch =
        add_vertex(g, VertexKind::kNodeSwitch, prefix + "node" + std::to_string(n), n);
    if (!networked && n == 0) top = node_switch;
    const size_t node_first = devices_.size();
    for (int local = 0; local < per_node && n * per_node + local < devices; ++local) {
      const int rank = first_rank + n * per_node + local;
      const TopologyVertexId dev = add_vertex(g, VertexKind::kDevice, prefix + "dev" + std::to_string(rank), rank);
      devices_.push_back(dev);
      add_link(g, dev, node_switch, net.intra.bandwidth, nvlink_hop);
      for (size_t peer = node_first; mesh && peer + 1 < devices_.size(); ++peer) {
        add_link(g, devices_[peer], dev, peer_link, p.node.intra_latency);
      }
      if (!networked) continue;
      const int group = n / nodes_per_group;
      const int leaf = rail ? group * per_node + local : group;
      add_link(g, dev, leaves[leaf], p.cluster.inter_bandwidth * p.efficiency.inter_node_comm, nic_hop);
    }
  }
  return top;
}

std::vector<RouteHop> Topology::route(int from_rank, int to_rank) const {
  if (from_rank == to_rank) return {};
  return route_between(device(from_rank), device(to_rank));
}

std::vector<RouteHop> Topology::route_between(TopologyVertexId source, TopologyVertexId target) const {
  const boost::filtered_graph<TopologyGraph, boost::keep_all, NotThroughDevices> view(
      graph_, boost::keep_all{}, NotThroughDevices{&graph_, source, target});
  std::vector<TopologyVertexId> parent(boost::num_vertices(graph_), boost::graph_traits<TopologyGraph>::null_vertex());
  parent[source] = source;
  boost::breadth_first_search(
      view, source,
      boost::visitor(boost::make_bfs_visitor(boost::record_predecessors(parent.data(), boost::on_tree_edge{}))));
  std::vector<RouteHop> hops;
  if (source == target) return hops;
  if (parent[target] == boost::graph_traits<TopologyGraph>::null_vertex()) {
    throw InputError("topology: " + graph_[target].name + " unreachable from " + graph_[source].name);
  }
  for (TopologyVertexId v = target; v != source; v = parent[v]) {
    const TopologyEdgeId e = boost::edge(parent[v], v, graph_).first;
    // An undirected edge's source() is whichever end it was looked up from; the declared end is not.
    hops.push_back(RouteHop{e, graph_[e].first == parent[v]});
  }
  return {hops.rbegin(), hops.rend()};
}

void Topology::check_connected(const std::string& source) const {
  std::vector<int> component(boost::num_vertices(graph_));
  boost::connected_components(graph_, component.data());
  for (int rank = 1; rank < devices(); ++rank) {
    if (component[devices_[rank]] != component[devices_[0]]) {
      throw input_error(source, "cluster",
                        "device " + std::to_string(rank) + " cannot reach device 0 (no inter-node network: "
                        "cluster.inter_bandwidth is 0)");
    }
  }
}

void Topology::scale_pool_links(double share) {
  for (const TopologyEdgeId& e : pool_links_) graph_[e].bandwidth *= share;
}

void Topology::scale_uplinks_to(const std::vector<bool>& active) {
  for (auto [it, end] = boost::edges(graph_); it != end; ++it) {
    TopologyVertexId leaf = boost::source(*it, graph_), spine = boost::target(*it, graph_);
    if (graph_[leaf].kind == VertexKind::kSpine) std::swap(leaf, spine);
    if (graph_[spine].kind != VertexKind::kSpine) continue;
    int all = 0, used = 0;
    for (auto [n, n_end] = boost::adjacent_vertices(leaf, graph_); n != n_end; ++n) {
      if (graph_[*n].kind != VertexKind::kDevice) continue;
      ++all;
      used += active.at(graph_[*n].index) ? 1 : 0;
    }
    if (all > 0) graph_[*it].bandwidth *= std::max(used, 1) / static_cast<double>(all);
  }
}

}  // namespace flopwise
