#pragma once
// The cluster as a graph: devices, node switches, leaf and spine switches, and the links between.
#include <boost/graph/adjacency_list.hpp>
#include <string>
#include <vector>

#include "flopwise/collectives.hpp"

namespace flopwise {

enum class VertexKind { kDevice, kNodeSwitch, kLeaf, kSpine, kGateway };

struct TopologyVertex {
  VertexKind kind = VertexKind::kDevice;
  std::string name;
  int index = 0;  // rank for devices, position among its kind otherwise
};

struct TopologyLink {
  std::string name;
  std::size_t first = 0;  // the end the link was declared from: "forward" leaves it
  BytesPerSecond bandwidth = 0;  // achievable, each direction
  Seconds latency = 0;
};

using TopologyGraph =
    boost::adjacency_list<boost::vecS, boost::vecS, boost::undirectedS, TopologyVertex, TopologyLink>;
using TopologyVertexId = boost::graph_traits<TopologyGraph>::vertex_descriptor;
using TopologyEdgeId = boost::graph_traits<TopologyGraph>::edge_descriptor;

// One pool of a topology over several pools: its devices take the next ranks.
struct TopologyPool {
  std::string name;  // prefixes its vertex and link names
  const HardwareProfile* profile = nullptr;
  int devices = 0;
};

// The link between pools `a` and `b` (indices), joining their spines (or first node switch when a
// pool has no inter-node network).
struct TopologyPoolLink {
  int a = 0, b = 0;
  BytesPerSecond bandwidth = 0;  // achievable, each direction
  Seconds latency = 0;
};

// One hop of a route: the link and whether it is crossed from its first end to the other.
struct RouteHop {
  TopologyEdgeId edge;
  bool forward = true;
};

// Built from a profile for `devices` devices:
// - every device links to its node switch (NVLink class, node.intra_bandwidth); in a full-mesh
//   node every two devices also share a peer link, which their routes take;
// - fat-tree: every device's NIC links to the leaf of its node (leaf_ports NICs per leaf);
//   rail-optimised: NIC r of each node links to rail leaf r of its group of leaf_ports nodes;
// - every leaf links to the spine with leaf_ports x NIC bandwidth / oversubscription.
// The oversubscribed uplink is where contention between leaves shows.
class Topology {
 public:
  static Topology build(const HardwareProfile& profile, int devices);
  // Several pools, each built as above, joined by `links`. Every pool also gets a gateway vertex
  // on its top switch: the endpoint of traffic that stands for the whole pool (a reduction across
  // pools), whose own link never limits it.
  static Topology build_pools(const std::vector<TopologyPool>& pools, const std::vector<TopologyPoolLink>& links);

  const TopologyGraph& graph() const { return graph_; }
  int devices() const { return static_cast<int>(devices_.size()); }
  TopologyVertexId device(int rank) const { return devices_.at(rank); }
  // Shortest route that does not pass through another device (devices are endpoints, not routers).
  std::vector<RouteHop> route(int from_rank, int to_rank) const;
  // Throws InputError naming the profile when some device cannot reach another.
  void check_connected(const std::string& source) const;
  int leaves() const { return leaves_; }
  TopologyVertexId gateway(int pool) const { return gateways_.at(pool); }
  // Shortest route between any two vertices, devices only as endpoints.
  std::vector<RouteHop> route_between(TopologyVertexId source, TopologyVertexId target) const;
  // Gives each leaf uplink the share of its devices that `active` marks, at least one device's:
  // a simulated slice of a symmetric cluster then meets the contention the whole cluster makes.
  void scale_uplinks_to(const std::vector<bool>& active);
  // Multiplies the bandwidth of the links between pools by `share` (a simulated slice's part of
  // the traffic that crosses them).
  void scale_pool_links(double share);

 private:
  TopologyGraph graph_;
  std::vector<TopologyVertexId> devices_;
  int leaves_ = 0;
  std::vector<TopologyVertexId> gateways_;
  std::vector<TopologyEdgeId> pool_links_;

  TopologyVertexId add_pool(const std::string& prefix, const HardwareProfile& profile, int devices);
};

}  // namespace flopwise
