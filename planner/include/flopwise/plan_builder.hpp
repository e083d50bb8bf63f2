#pragma once
// Making plans: the chosen candidate with its recommendation, refined by simulation, as Megatron arguments.
#include <string>
#include <vector>

#include "flopwise/cost_model.hpp"
#include "flopwise/plan.hpp"
#include "flopwise/scaling.hpp"
#include "flopwise/search.hpp"
#include "flopwise/step_simulation.hpp"

namespace flopwise {

Plan make_plan(const CostModel& cost, const Candidate& candidate, Objective objective);
// The hardware facts a plan carries, at the run's precision.
PlanHardware plan_hardware(const HardwareProfile& profile, Precision precision);
// Batch and learning rate for the run's compute budget (training FLOPs per token x tokens).
Recommendation recommend(const ModelConfig& model, const TrainingRun& run, const ScalingFit& fit);

// Re-ranks the first `k` candidates by simulated step time (SimGrid); the rest keep their order.
void refine(const CostModel& cost, std::vector<Candidate>& candidates, int k, Objective objective);
// `analytic` with the simulation's step time and breakdown (totals not yet derived again).
StepCost with_simulated_step(const StepCost& analytic, const SimulationResult& simulation);
// A StepCost whose step time and breakdown come from the simulation, the rest from `analytic`.
StepCost simulated_cost(const CostModel& cost, const Layout& layout, const StepCost& analytic,
                        const SimulationResult& simulation);

// The same layout as Megatron-LM (Megatron-Core) pretrain_gpt.py arguments.
std::vector<std::string> megatron_args(const Plan& plan);
// Megatron-LM runs one device type per job: one job for a single-pool plan, one per pool for
// local SGD (each pool its own job; the outer sync runs beside them); none for hetero DP and
// heterogeneous pipelines. `pool` is empty for a single-pool plan.
struct MegatronJob {
  std::string pool;
  std::vector<std::string> args;
};
std::vector<MegatronJob> megatron_jobs(const Plan& plan);

}  // namespace flopwise
