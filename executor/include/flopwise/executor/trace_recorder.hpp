#pragma once
// Measured spans of one rank, written in the simulator's Chrome trace shape so that predicted and
// measured timelines open side by side, with the sizes `flopwise calibrate` fits the profile to.
#include <chrono>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace flopwise::executor {

struct MeasuredSpan {
  std::string category;  // step, compute, tp, ep, pp, dp
  std::string name;
  double start_s = 0;
  double duration_s = 0;
  nlohmann::json args;  // step, and what the span did: pass, collective, bytes, group_size
};

class TraceRecorder {
 public:
  explicit TraceRecorder(bool enabled) : enabled_(enabled), origin_(std::chrono::steady_clock::now()) {}
  double now() const { return std::chrono::duration<double>(std::chrono::steady_clock::now() - origin_).count(); }
  void record(const std::string& category, const std::string& name, double start_s, nlohmann::json args = nlohmann::json::object()) {
    if (!enabled_) return;
    args["step"] = step_;
    spans_.push_back({category, name, start_s, now() - start_s, std::move(args)});
  }
  // A collective of `bytes` (this rank's larger side) over `group_size` ranks.
  void record_collective(const std::string& category, const std::string& collective, double start_s, double bytes,
                         int group_size) {
    record(category, collective, start_s, {{"collective", collective}, {"bytes", bytes}, {"group_size", group_size}});
  }
  void set_step(int step) { step_ = step; }
  const std::vector<MeasuredSpan>& spans() const { return spans_; }
  bool enabled() const { return enabled_; }

 private:
  bool enabled_;
  int step_ = 0;
  std::chrono::steady_clock::time_point origin_;
  std::vector<MeasuredSpan> spans_;
};

}  // namespace flopwise::executor
