#pragma once
// Measured spans of one rank, in the core's trace shape (written by the core's write_trace) so that
// predicted and measured timelines open side by side, with the sizes `flopwise calibrate` fits to.
#include <time.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "flopwise/trace.hpp"

namespace flopwise::executor {

// CPU time this thread has run: a span's share of its wall time tells a core shared with other
// work (time slices of milliseconds, which a short speed probe seldom meets) from a slow one. It
// means that only while the rank computes on its CPU: a GPU path must not record it.
inline double thread_cpu_seconds() {
  timespec t{};
  ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

class TraceRecorder {
 public:
  // A span's start on both clocks.
  struct Mark {
    double wall_s = 0;
    double cpu_s = 0;
  };
  TraceRecorder(bool enabled, int rank) : enabled_(enabled), rank_(rank), origin_(std::chrono::steady_clock::now()) {}
  double now() const { return std::chrono::duration<double>(std::chrono::steady_clock::now() - origin_).count(); }
  Mark mark() const { return {now(), thread_cpu_seconds()}; }
  // A span from `start_s` to now; args say what it did (pass, collective, bytes, group_size) and its step.
  void record(const std::string& category, const std::string& name, double start_s, nlohmann::json args = nlohmann::json::object()) {
    if (!enabled_) return;
    args["step"] = step_;
    spans_.push_back({rank_, category, name, start_s, now() - start_s, std::move(args)});
  }
  // A span from `start`, with the CPU time this thread ran in it (`cpu_s`).
  void record(const std::string& category, const std::string& name, const Mark& start,
              nlohmann::json args = nlohmann::json::object()) {
    if (!enabled_) return;
    args["cpu_s"] = thread_cpu_seconds() - start.cpu_s;
    record(category, name, start.wall_s, std::move(args));
  }
  // A collective of `bytes` (this rank's larger side) over `group_size` ranks.
  void record_collective(const std::string& category, const std::string& collective, const Mark& start, double bytes,
                         int group_size) {
    record(category, collective, start, {{"collective", collective}, {"bytes", bytes}, {"group_size", group_size}});
  }
  // A span measured elsewhere (another thread), from `start` for `seconds`.
  void record_at(const std::string& category, const std::string& name, std::chrono::steady_clock::time_point start,
                 double seconds, nlohmann::json args) {
    if (!enabled_) return;
    args["step"] = step_;
    spans_.push_back({rank_, category, name, std::chrono::duration<double>(start - origin_).count(), seconds, std::move(args)});
  }
  void set_step(int step) { step_ = step; }
  // Restarts the clock; called by every rank on leaving one barrier, so that ranks on different
  // hosts share a time origin to within the barrier's release skew.
  void restart_clock() { origin_ = std::chrono::steady_clock::now(); }
  // The origin on this host's monotonic clock, which every process of the host shares: ranks on
  // one host line up exactly (trace merging shifts them by the difference of their origins).
  double origin_on_host_clock() const { return std::chrono::duration<double>(origin_.time_since_epoch()).count(); }
  const std::vector<TraceSpan>& spans() const { return spans_; }
  bool enabled() const { return enabled_; }

 private:
  bool enabled_;
  int rank_;
  int step_ = 0;
  std::chrono::steady_clock::time_point origin_;
  std::vector<TraceSpan> spans_;
};

}  // namespace flopwise::executor
