#include "flopwise/executor/anomaly_guard.hpp"

#include <cmath>
#include <numeric>

#include "flopwise/executor/data.hpp"
#include "flopwise/json_reader.hpp"

namespace flopwise::executor {

using nlohmann::json;

json RunState::to_json() const {
  json r = json::array();
  for (const auto& [due, positions] : reinject) r.push_back({{"due", due}, {"positions", positions}});
  return {{"step", step}, {"consumed", consumed}, {"reinject", r},
          {"recent_losses", std::vector<double>(recent_losses.begin(), recent_losses.end())},
          {"consecutive_spikes", consecutive_spikes}};
}

namespace {

std::vector<uint64_t> positions_of(const JsonFields& f) {
  std::vector<uint64_t> positions;
  const json& list = f.get("positions");
  if (!list.is_array()) throw f.error("positions", "expected a list of sample positions");
  for (const json& p : list) {
    if (!p.is_number_unsigned()) throw f.error("positions", "expected non-negative integers, got " + p.dump());
    positions.push_back(p.get<uint64_t>());
  }
  return positions;
}

}  // namespace

RunState RunState::from_json(const json& j, const std::string& source) {
  const JsonFields f(j, source);
  RunState s;
  s.step = f.integer("step", 0);
  s.consumed = static_cast<uint64_t>(f.number("consumed", 0));
  for (const JsonFields& r : f.objects("reinject")) s.reinject.push_back({r.integer("due", 0), positions_of(r)});
  const json& losses = f.get("recent_losses");
  if (!losses.is_array()) throw f.error("recent_losses", "expected a list of numbers");
  for (const json& l : losses) {
    if (!l.is_number()) throw f.error("recent_losses", "expected numbers, got " + l.dump());
    s.recent_losses.push_back(l.get<double>());
  }
  s.consecutive_spikes = f.integer("consecutive_spikes", 0);
  return s;
}

std::vector<uint64_t> AnomalyGuard::positions_for(RunState& state, int samples) {
  if (!state.reinject.empty() && state.reinject.front().first <= state.step &&
      static_cast<int>(state.reinject.front().second.size()) == samples) {
    auto positions = state.reinject.front().second;
    state.reinject.pop_front();
    return positions;
  }
  std::vector<uint64_t> positions(samples);
  std::iota(positions.begin(), positions.end(), state.consumed);
  state.consumed += samples;
  return positions;
}

bool AnomalyGuard::is_spike(const RunState& state, double loss) const {
  const auto& recent = state.recent_losses;
  if (static_cast<int>(recent.size()) < rule_.window / 2) return false;
  const double mean = std::accumulate(recent.begin(), recent.end(), 0.0) / recent.size();
  double var = 0;
  for (double x : recent) var += (x - mean) * (x - mean);
  const double std = std::sqrt(var / recent.size());
  return loss > mean + std::max(rule_.sigma * std, rule_.ratio * mean);
}

StepVerdict AnomalyGuard::judge(RunState& state, double loss, double aux, double grad_norm,
                                const std::vector<uint64_t>& positions) const {
  StepVerdict v;
  const bool finite = std::isfinite(loss) && std::isfinite(aux) && std::isfinite(grad_norm);
  if (!finite) {
    v.apply = false;
    v.event = "skipped: non-finite loss or gradient";
    return v;
  }
  if (!is_spike(state, loss)) {
    state.consecutive_spikes = 0;
    state.recent_losses.push_back(loss);
    if (static_cast<int>(state.recent_losses.size()) > rule_.window) state.recent_losses.pop_front();
    return v;
  }
  ++state.consecutive_spikes;
  if (state.consecutive_spikes >= rule_.persist) {
    v.lr_factor = 0.5;
    v.event = "persistent spike: update at half learning rate";
    return v;
  }
  v.apply = false;
  const int due = state.step + 1 + static_cast<int>(mix_seed(seed_, state.step) % 5);
  state.reinject.push_back({due, positions});
  v.event = "spike: update skipped, batch re-injected at step " + std::to_string(due);
  return v;
}

}  // namespace flopwise::executor
