#pragma once
// What a training step reports: the human line on stdout, one JSON object per step for programs
// (--progress-json, which the studio reads), and the loss log.
#include <iosfwd>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace flopwise::executor {

struct StepReport {
  int step = 0;  // steps done, 1-based
  int steps = 0;
  double loss = 0, aux = 0, lr = 0, grad_norm = 0, tokens_per_s = 0, mfu = 0, eta_s = 0;
  double tokens = 0, seconds = 0;  // trained this step, and its wall time
  bool applied = true;  // false when the guard skipped the update
  std::string event;
  std::vector<std::pair<std::string, double>> pool_losses;  // plans over pools: each pool's LM loss

  std::string human_line() const;
  nlohmann::json to_json() const;  // schema flopwise.progress/1
};

// One "step loss [skipped]" line per step, each step once: a resumed run first drops the lines of
// steps after the checkpoint it resumed from (they are trained again).
class LossLog {
 public:
  LossLog() = default;
  // Opens `path`; `resumed_step` > 0 keeps the lines of steps up to it, 0 starts the file anew.
  LossLog(const std::string& path, int resumed_step);
  void append(const StepReport& report);
  bool open() const { return !path_.empty(); }

 private:
  std::string path_;
};

}  // namespace flopwise::executor
