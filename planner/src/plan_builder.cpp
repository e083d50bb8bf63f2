#include "flopwise/plan_builder.hpp"

#include <algorithm>
#include <cmath>

namespace flopwise {

PlanHardware plan_hardware(const HardwareProfile& p, Precision precision) {
  return PlanHardware{p.name,
                      p.device.name,
                      p.node.devices,
                      p.device.peak_flops(precision) / 1e12,
                      p.device.memory_bytes,
                      p.device.price_per_device_hour,
                      p.device.currency};
}

Plan make_plan(const CostModel& cost, const Candidate& candidate, Objective objective) {
  Plan plan;
  plan.model = cost.model();
  plan.hardware = plan_hardware(cost.profile(), cost.run().precision);
  plan.run = cost.run();
  plan.layout = candidate.layout;
  plan.objective = objective;
  plan.predicted = candidate.cost;
  plan.simulated = candidate.simulated;
  plan.recommended = recommend(plan.model, plan.run, default_scaling());
  return plan;
}

Recommendation recommend(const ModelConfig& model, const TrainingRun& run, const ScalingFit& fit) {
  Recommendation r;
  r.compute_flops = training_flops_per_token(model, run.seq_len) * run.tokens;
  r.batch_tokens = fit.batch_tokens.at(r.compute_flops);
  r.global_batch = std::max(1, static_cast<int>(std::lround(r.batch_tokens / run.seq_len)));
  r.peak_lr = fit.learning_rate.at(r.compute_flops);
  r.source = fit.source;
  return r;
}

StepCost with_simulated_step(const StepCost& analytic, const SimulationResult& simulation) {
  StepCost c = analytic;
  // The simulation times passes and messages; the per-step overhead comes on top.
  c.step_time_s = simulation.step_time_s + analytic.overhead_s;
  c.compute_s = simulation.compute_s;
  c.exposed_comm_s = simulation.exposed_comm_s;
  // What crossing pools adds (zero for one pool) is on the critical path beside the pool's own DP.
  c.exposed_comm_s.dp += simulation.cross_pool_s;
  c.bubble_s = simulation.bubble_s;
  c.optimizer_s = 0;  // inside compute_s on the simulated timeline
  return c;
}

StepCost simulated_cost(const CostModel& cost, const Layout& layout, const StepCost& analytic,
                        const SimulationResult& simulation) {
  StepCost c = with_simulated_step(analytic, simulation);
  c.slowest_stage = RankGrid(layout, cost.profile().node.devices).coords(simulation.critical_rank).pp;
  cost.derive_totals(c, layout);
  return c;
}

void refine(const CostModel& cost, std::vector<Candidate>& candidates, int k, Objective objective) {
  const int n = std::min<int>(k, static_cast<int>(candidates.size()));
  for (int i = 0; i < n; ++i) {
    Candidate& c = candidates[i];
    c.simulated = simulated_cost(cost, c.layout, c.cost, simulate_step(cost, c.layout, {}));
  }
  std::stable_sort(candidates.begin(), candidates.begin() + n, [&](const Candidate& a, const Candidate& b) {
    return better(*a.simulated, *b.simulated, objective);
  });
}

}  // namespace flopwise
