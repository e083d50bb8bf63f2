#pragma once
// The c10d process groups of one rank (Gloo), built once from the core's rank grid.
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>

#include "flopwise/executor/spec.hpp"
#include "flopwise/layout.hpp"

namespace flopwise::executor {

using Group = c10::intrusive_ptr<c10d::ProcessGroup>;

// Null where the group has one member (nothing to communicate).
struct Groups {
  Group world, tp, dp, ep, expert_dp;
  Group cross_pool;  // the same shard in every pool (plans over pools)
  Group replica;     // the ranks training one copy of the model (the world but with local SGD)
};

// Rendezvous over a TCPStore at MASTER_ADDR:MASTER_PORT (rank 0 serves it); each group as
// `members` lists it.
Groups build_groups(const GroupMembers& members, int rank, int world);

// RANK, WORLD_SIZE, ... as an integer; InputError naming the variable when unset or not a number.
int env_int(const char* name);

}  // namespace flopwise::executor
