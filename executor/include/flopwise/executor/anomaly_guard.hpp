#pragma once
// Loss spikes and non-finite steps (report section 4): a non-finite loss or gradient never reaches
// the weights; a spike skips the update and re-injects the batch a few steps later; a spike that
// persists is applied at half the learning rate instead.
#include <cstdint>
#include <deque>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace flopwise::executor {

struct SpikeRule {
  // A loss above mean + max(sigma x std, ratio x mean) of the recent window.
  int window = 8;
  double sigma = 4.0;
  double ratio = 0.25;
  int persist = 2;  // consecutive spikes after which the update runs at reduced LR
};

// What the guard decided for one step.
struct StepVerdict {
  bool apply = true;
  double lr_factor = 1.0;
  std::string event;  // "" for an ordinary step
};

// Everything about the run that is not a tensor, saved with each checkpoint.
struct RunState {
  int step = 0;
  uint64_t consumed = 0;  // samples drawn from the order so far
  std::deque<std::pair<int, std::vector<uint64_t>>> reinject;  // (due step, sample positions)
  std::deque<double> recent_losses;
  int consecutive_spikes = 0;

  nlohmann::json to_json() const;
  // InputError naming `source` and the field for a malformed state.
  static RunState from_json(const nlohmann::json& json, const std::string& source);
};

class AnomalyGuard {
 public:
  AnomalyGuard(const SpikeRule& rule, uint64_t seed) : rule_(rule), seed_(seed) {}
  // Judges the step `state.step` that trained on `positions`; updates the state's window, spike
  // count and re-injection queue.
  StepVerdict judge(RunState& state, double loss, double aux, double grad_norm,
                    const std::vector<uint64_t>& positions) const;
  // This step's samples: a batch due for re-injection, or the next ones in the order.
  static std::vector<uint64_t> positions_for(RunState& state, int samples);

 private:
  bool is_spike(const RunState& state, double loss) const;
  SpikeRule rule_;
  uint64_t seed_;
};

}  // namespace flopwise::executor
