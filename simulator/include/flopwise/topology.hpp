#pragma once
// The cluster as a graph: devices, node switches, leaf and spine switches, and the links between.
#include <boost/graph/adjacency_list.hpp>
#include <string>
#include <vector>

#include "flopwise/collectives.hpp"

namespace flopwise {

enum class VertexKind { kDevice, kNodeSwitch, kLeaf, kSpine };

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

// One hop of a route: the link and whether it is crossed from its first end to the other.
struct RouteHop {
  TopologyEdgeId edge;
  bool forward = true;
};

// Built from a profile for `devices` devices:
// - every device links to its node switch (NVLink class, node.intra_bandwidth);
// - fat-tree: every device's NIC links to the leaf of its node (leaf_ports NICs per leaf);
//   rail-optimised: NIC r of each node links to rail leaf r of its group of leaf_ports nodes;
// - every leaf links to the spine with leaf_ports x NIC bandwidth / oversubscription.
// The oversubscribed uplink is where contention between leaves shows.
class Topology {
 public:
  static Topology build(const HardwareProfile& profile, int devices);

  const TopologyGraph& graph() const { return graph_; }
  int devices() const { return static_cast<int>(devices_.size()); }
  TopologyVertexId device(int rank) const { return devices_.at(rank); }
  // Shortest route that does not pass through another device (devices are endpoints, not routers).
  std::vector<RouteHop> route(int from_rank, int to_rank) const;
  // Throws InputError naming the profile when some device cannot reach another.
  void check_connected(const std::string& source) const;
  int leaves() const { return leaves_; }
  // Gives each leaf uplink the share of its devices that `active` marks, at least one device's:
  // a simulated slice of a symmetric cluster then meets the contention the whole cluster makes.
  void scale_uplinks_to(const std::vector<bool>& active);

 private:
  TopologyGraph graph_;
  std::vector<TopologyVertexId> devices_;
  int leaves_ = 0;
};

}  // namespace flopwise
