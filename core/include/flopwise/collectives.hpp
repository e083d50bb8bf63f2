#pragma once
// Alpha-beta cost of the collectives a training step issues, on the links they really cross.
#include <array>

#include "flopwise/hardware_profile.hpp"

namespace flopwise {

struct Link {
  BytesPerSecond bandwidth = 0;  // achievable, one direction, per device
  Seconds latency = 0;
};

// The two link classes a group can cross, with the profile's efficiencies applied, per collective
// algorithm (a profile's fitted `collectives` figures replace the defaults for theirs).
struct Network {
  Link intra;  // inside a node (NVLink-class), default figures
  Link inter;  // across nodes (the device's NIC share, derated by oversubscription), default figures
  std::array<Link, kCollectiveAlgorithms> intra_by{}, inter_by{};
  NodeFabric fabric = NodeFabric::kSwitch;
  int node_devices = 1;
  const Link& intra_for(CollectiveAlgorithm a) const { return intra_by[static_cast<int>(a)]; }
  const Link& inter_for(CollectiveAlgorithm a) const { return inter_by[static_cast<int>(a)]; }
  // What one device of a group with `members` on its node (itself included) sends them at once:
  // through a switch, its whole intra-node bandwidth; in a full mesh, its links to those members
  // alone, members - 1 of its devices - 1 links.
  BytesPerSecond intra_bandwidth(CollectiveAlgorithm a, int members) const;
  static Network from(const HardwareProfile& profile);
};

// A group of `size` ranks of which `members_per_node` share each node.
struct GroupSpan {
  int size = 1;
  int members_per_node = 1;
  bool intra_only() const { return members_per_node >= size; }
};

enum class Collective { kAllReduce, kReduceScatter, kAllGather, kAllToAll, kSendRecv };
CollectiveAlgorithm algorithm_of(Collective collective);

// time = bytes_factor x bytes / bandwidth + latency_steps x latency on one link class: the
// alpha-beta terms `calibrate` regresses measured spans on.
struct AlphaBeta {
  double bytes_factor = 0;
  double latency_steps = 0;
};
AlphaBeta alpha_beta(Collective collective, int group_size);

// Ring all-reduce of `bytes` per rank: 2 (n-1)/n bytes cross each rank's busiest link.
Seconds all_reduce_time(const GroupSpan& group, Bytes bytes, const Network& network);
// Ring reduce-scatter (or all-gather) of a `bytes` buffer per rank: (n-1)/n of it moves.
Seconds reduce_scatter_time(const GroupSpan& group, Bytes bytes, const Network& network);
// All-to-all where each rank holds `bytes` to spread evenly over the group.
Seconds all_to_all_time(const GroupSpan& group, Bytes bytes, const Network& network);
// What one rank of an all-to-all sends to the other ranks of its node and to the other nodes'.
struct AllToAllSends {
  Bytes to_local = 0;
  Bytes to_remote = 0;
};
// Even shares of `bytes` over the group's peers (the rank's own share stays).
AllToAllSends even_sends(const GroupSpan& group, Bytes bytes);
Seconds all_to_all_time(const GroupSpan& group, const AllToAllSends& sends, const Network& network);
// One point-to-point message between neighbours of a group.
Seconds send_recv_time(const GroupSpan& group, Bytes bytes, const Network& network);

}  // namespace flopwise
