#pragma once
// Discrete-event simulation of one training step on SimGrid, over the Boost.Graph topology.
#include <string>
#include <vector>

#include "flopwise/cost_model.hpp"

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
};

// Runs the step of `layout` in a child process (SimGrid's engine lives once per process), so it
// can be called repeatedly, e.g. to re-rank candidates. Throws InputError for layouts or
// topologies it cannot simulate, std::runtime_error if the simulation itself failed.
SimulationResult simulate_step(const CostModel& cost, const Layout& layout, const SimulationOptions& options);

// The simulation in this process; usable once per process.
SimulationResult simulate_step_in_process(const CostModel& cost, const Layout& layout,
                                          const SimulationOptions& options);

}  // namespace flopwise
