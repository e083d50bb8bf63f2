#include "flopwise/mixed_simulation.hpp"

#include "flopwise/catalog.hpp"
#include "flopwise/error.hpp"
#include "flopwise/mixed_pools.hpp"
#include "flopwise/plan_builder.hpp"
#include "flopwise/report.hpp"

namespace flopwise {

MixedSimulation simulate_mixed_plan(const Plan& plan, const std::string& source, const std::string& trace_path) {
  if (!plan.mixed) throw input_error(source, "pools", "the plan runs on one pool");
  const MixedPlan& mixed = *plan.mixed;
  std::vector<HardwareProfile> profiles;
  for (size_t i = 0; i < mixed.pools.size(); ++i) {
    try {
      profiles.push_back(resolve_profile(mixed.pools[i].hardware.profile));
    } catch (const InputError& e) {
      throw input_error(source, "pools[" + std::to_string(i) + "].hardware.profile", e.what());
    }
  }
  std::vector<std::unique_ptr<CostModel>> costs;
  std::vector<const CostModel*> pointers;
  for (size_t i = 0; i < mixed.pools.size(); ++i) {
    TrainingRun run = plan.run;
    // The DP strategies give each pool its share of the batch; the pipeline passes all of it through every pool.
    if (mixed.strategy != PoolStrategy::kHeteroPipeline) run.global_batch = mixed.pools[i].sequences;
    costs.push_back(std::make_unique<CostModel>(plan.model, run, profiles[i]));
    pointers.push_back(costs.back().get());
  }
  MixedSimulation out;
  try {
    out.result = simulate_mixed_step(mixed, pointers, {trace_path});
  } catch (const InputError& e) {
    throw input_error(source, "pools", e.what());
  }
  StepCost& c = out.simulated = with_simulated_step(plan.predicted, out.result);
  derive_mixed_totals(c, plan.model, plan.run, mixed.pools, plan.predicted.currency, profiles.front().reliability);
  return out;
}

namespace {

const PoolTimes* pool_times(const SimulationResult& r, const std::string& name) {
  for (const PoolTimes& p : r.pools) {
    if (p.name == name) return &p;
  }
  return nullptr;
}

std::string cross_pool_line(const MixedPlan& m, const SimulationResult& r) {
  switch (m.strategy) {
    case PoolStrategy::kHeteroDp:
      return printf_string("cross-pool gradient reduction after the last pool arrived: %.3f s (analytic %.3f s)",
                           r.cross_pool_s, m.cross_pool_s);
    case PoolStrategy::kLocalSgd:
      return printf_string("parameter sync over the links: %.2f s (analytic %.2f s), every %d steps: %.3f s per step",
                           r.sync_s, m.sync_s, r.sync_every_steps, r.cross_pool_s);
    case PoolStrategy::kHeteroPipeline:
      return printf_string("activations crossing pools: analytic %.3f s per step beyond the pools' own links "
                           "(in the simulated pp and bubble times)", m.cross_pool_s);
  }
  return "";
}

}  // namespace

void print_mixed_simulation(std::ostream& out, const Plan& plan, const MixedSimulation& s) {
  const MixedPlan& m = *plan.mixed;
  const SimulationResult& r = s.result;
  out << plan.model.name << " on " << plan.devices() << " devices over " << m.pools.size() << " pools ("
      << to_string(m.strategy) << ")\n";
  out << "simulated step " << format_seconds(s.simulated.step_time_s) << " (analytic "
      << format_seconds(plan.predicted.step_time_s) << "), MFU " << printf_string("%.1f%%", 100 * s.simulated.mfu) << ", "
      << format_count(s.simulated.days) << " days, cost " << format_count(s.simulated.cost) << " "
      << s.simulated.currency << "\n";
  for (const PlanPool& p : m.pools) {
    const PoolTimes* t = pool_times(r, p.name);
    if (!t) continue;
    out << printf_string("  %-10s %5d x %-12s %-36s", p.name.c_str(), p.devices(), p.hardware.profile.c_str(),
                         layout_label(p.layout).c_str());
    if (m.strategy == PoolStrategy::kHeteroPipeline) {
      out << printf_string(" done at %.3f s", t->step_time_s);
    } else {
      out << printf_string(" own step %.3f s (analytic %.3f s)", t->step_time_s, p.step_time_s);
    }
    out << printf_string(", device %d: compute %.3f s, bubble %.3f s\n", t->critical_rank, t->compute_s, t->bubble_s);
  }
  out << cross_pool_line(m, r) << "\n";
  Seconds waited = 0;
  int waiting_rank = 0;
  for (const DeviceTimes& d : r.devices) {
    if (d.cross_pool_s > waited) {
      waited = d.cross_pool_s;
      waiting_rank = d.rank;
    }
  }
  if (waited > 0) {
    out << printf_string("longest wait at the cross-pool reduction: device %d, %.3f s (it waits for the slowest pool)\n",
                         waiting_rank, waited);
  }
  out << r.approximation << "; " << r.messages << " messages in " << format_seconds(r.wall_s) << "\n";
}

nlohmann::json mixed_simulation_json(const Plan& plan, const MixedSimulation& s) {
  const MixedPlan& m = *plan.mixed;
  const SimulationResult& r = s.result;
  nlohmann::json j = {{"strategy", to_string(m.strategy)},
                      {"step_time_s", s.simulated.step_time_s},
                      {"analytic_step_time_s", plan.predicted.step_time_s},
                      {"mfu", s.simulated.mfu},
                      {"days", s.simulated.days},
                      {"cost", s.simulated.cost},
                      {"currency", s.simulated.currency},
                      {"cross_pool_s", r.cross_pool_s},
                      {"analytic_cross_pool_s", m.cross_pool_s},
                      {"critical_rank", r.critical_rank},
                      {"devices_simulated", r.simulated_devices},
                      {"messages", r.messages},
                      {"simulation_wall_s", r.wall_s},
                      {"approximation", r.approximation}};
  if (m.strategy == PoolStrategy::kLocalSgd) {
    j["sync_s"] = r.sync_s;
    j["analytic_sync_s"] = m.sync_s;
    j["sync_every_steps"] = r.sync_every_steps;
  }
  j["pools"] = nlohmann::json::array();
  for (const PlanPool& p : m.pools) {
    const PoolTimes* t = pool_times(r, p.name);
    if (!t) continue;
    nlohmann::json pool = {{"name", p.name}, {"step_time_s", t->step_time_s}, {"critical_rank", t->critical_rank},
                           {"compute_s", t->compute_s}, {"bubble_s", t->bubble_s}};
    if (m.strategy != PoolStrategy::kHeteroPipeline) pool["analytic_step_time_s"] = p.step_time_s;
    j["pools"].push_back(pool);
  }
  return j;
}

}  // namespace flopwise
