#pragma once
// Measured spans of one rank, written in the simulator's Chrome trace shape so that predicted and
// measured timelines open side by side.
#include <chrono>
#include <string>
#include <vector>

namespace flopwise::executor {

struct MeasuredSpan {
  std::string category;  // compute, tp, ep, pp, dp
  std::string name;
  double start_s = 0;
  double duration_s = 0;
};

class TraceRecorder {
 public:
  explicit TraceRecorder(bool enabled) : enabled_(enabled), origin_(std::chrono::steady_clock::now()) {}
  double now() const { return std::chrono::duration<double>(std::chrono::steady_clock::now() - origin_).count(); }
  void record(const std::string& category, const std::string& name, double start_s) {
    if (enabled_) spans_.push_back({category, name, start_s, now() - start_s});
  }
  const std::vector<MeasuredSpan>& spans() const { return spans_; }
  bool enabled() const { return enabled_; }

 private:
  bool enabled_;
  std::chrono::steady_clock::time_point origin_;
  std::vector<MeasuredSpan> spans_;
};

}  // namespace flopwise::executor
