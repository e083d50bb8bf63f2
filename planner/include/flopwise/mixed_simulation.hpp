#pragma once
// `flopwise simulate` of a plan over several device pools: each pool's cost model from its own
// profile, one SimGrid step over all pools and their links, and the simulated run's totals.
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "flopwise/cost_model.hpp"
#include "flopwise/plan.hpp"
#include "flopwise/step_simulation.hpp"

namespace flopwise {

struct MixedSimulation {
  SimulationResult result;
  StepCost simulated;  // the plan's predicted cost with the simulated step and its totals
};

// Simulates one step of `plan` (which must be mixed); InputError naming `source` and the pool's
// field for an unknown profile or a pool its model cannot take.
MixedSimulation simulate_mixed_plan(const Plan& plan, const std::string& source, const std::string& trace_path);

void print_mixed_simulation(std::ostream& out, const Plan& plan, const MixedSimulation& simulation);
nlohmann::json mixed_simulation_json(const Plan& plan, const MixedSimulation& simulation);

}  // namespace flopwise
