#pragma once
// Discrete-event simulation of one training step on SimGrid, over the Boost.Graph topology.
#include <string>
#include <vector>

#include "flopwise/cost_model.hpp"
#include "flopwise/plan.hpp"

namespace flopwise {

struct SimulationOptions {
  std::string trace_path;  // Chrome trace-event JSON; empty: none
};

struct DeviceTimes {
  int rank = 0;
  Seconds busy_s = 0;    // computing
  Seconds comm_s = 0;    // blocked on communication
  Seconds bubble_s = 0;  // waiting for an upstream stage to produce work
  Seconds idle_s = 0;    // the rest of the step, bubble included
  Seconds cross_pool_s = 0;  // mixed plans: in the reduction across pools, waiting for slower pools included
};

// One pool of a mixed plan: its own step (without what crossing pools adds) on its critical device.
struct PoolTimes {
  std::string name;
  Seconds step_time_s = 0;
  int critical_rank = 0;
  Seconds compute_s = 0;
  CommBreakdown exposed_comm_s;
  Seconds bubble_s = 0;
};

struct SimulationResult {
  Seconds step_time_s = 0;
  // On the device that finishes last (the critical path).
  int critical_rank = 0;
  Seconds compute_s = 0;
  CommBreakdown exposed_comm_s;
  Seconds bubble_s = 0;
  std::vector<DeviceTimes> devices;  // every simulated device
  int simulated_devices = 0;
  int total_devices = 0;
  long long messages = 0;
  double wall_s = 0;          // host time the simulation took
  std::string approximation;  // what the symmetry argument leaves out
  // Mixed plans.
  std::vector<PoolTimes> pools;
  Seconds cross_pool_s = 0;  // per step: hetero DP's reduction after the last pool arrived, local SGD's sync / H
  Seconds sync_s = 0;        // local SGD: one parameter synchronisation
  int sync_every_steps = 0;
};

// Runs the step of `layout` in a child process (SimGrid's engine lives once per process), so it
// can be called repeatedly, e.g. to re-rank candidates. Throws InputError for layouts or
// topologies it cannot simulate, std::runtime_error if the simulation itself failed.
SimulationResult simulate_step(const CostModel& cost, const Layout& layout, const SimulationOptions& options);

// The simulation in this process; usable once per process.
SimulationResult simulate_step_in_process(const CostModel& cost, const Layout& layout,
                                          const SimulationOptions& options);

// One step of a plan over several pools, all of them in one simulation: each pool's devices at its
// own cost model's speed (`costs[i]` for plan.pools[i]: its profile and, for the DP strategies,
// its share of the batch), on its own cluster topology, the pools' top switches joined by the
// plan's links. Hetero DP: each pool's ranks hand their sum to a gateway that reduces it across
// the pools before the optimizer; local SGD: one inner step, then one parameter sync amortised
// over its interval; the pipeline: one pipeline whose stages run on their pools.
SimulationResult simulate_mixed_step(const MixedPlan& plan, const std::vector<const CostModel*>& costs,
                                     const SimulationOptions& options);
SimulationResult simulate_mixed_step_in_process(const MixedPlan& plan, const std::vector<const CostModel*>& costs,
                                                const SimulationOptions& options);

}  // namespace flopwise
