#pragma once
// Timelines in Chrome trace-event JSON, the shape Perfetto opens: one pid per node, one tid per
// device, microseconds, categories step, compute, tp, cp, ep, pp, dp, bubble. The simulator and the
// executor both write through write_trace; calibrate reads executor traces through load_traced_run.
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "flopwise/layout.hpp"
#include "flopwise/units.hpp"

namespace flopwise {

struct TraceSpan {
  int rank = 0;
  std::string category;
  std::string name;
  Seconds start = 0;
  Seconds duration = 0;
  nlohmann::json args = nlohmann::json::object();  // what the span did (the executor's sizes)
};

// A whole trace file: its spans and its `otherData` (the executor's run description).
struct TraceFile {
  std::vector<TraceSpan> spans;
  nlohmann::json other_data = nlohmann::json::object();
};

void write_trace(const std::string& path, const std::vector<TraceSpan>& spans, int devices_per_node,
                 const nlohmann::json& other_data = nlohmann::json::object());
// Reads a trace written by write_trace; InputError naming the file and event on malformed files.
std::vector<TraceSpan> read_trace(const std::string& path);
TraceFile read_trace_file(const std::string& path);

// The executor's speed probes, at the start of each traced step and pass: a fixed matmul of
// args.flops FLOPs on that rank's core; instrumentation, not part of the step's work.
inline constexpr const char* kProbeCategory = "probe";

// One rank's trace as the executor writes it before merging: its spans on its own clock, and where
// that clock started on its host's monotonic clock.
struct RankClock {
  std::string host;
  double origin_s = 0;  // the rank's time zero on the host's monotonic clock
};
nlohmann::json rank_clock_to_json(const RankClock& clock);
// Merges the ranks' parts onto the first part's time axis: parts on the first part's host shift by
// the difference of their origins (one clock, exact); parts on other hosts keep their own origin,
// which the executor restarts on leaving a common barrier. Parts without a clock are not shifted.
std::vector<TraceSpan> merge_rank_traces(const std::vector<TraceFile>& parts);
// The merged trace's otherData.clock, saying the ranks share one time axis (collective spans can
// then be matched across ranks: who arrived last, and how long the others waited).
inline constexpr const char* kCommonClock = "ranks on one host share its monotonic clock; hosts meet at a barrier";

// What a trace measured, in the plan's terms (otherData.flopwise_run, schema flopwise.run/1), so
// that the cost model can predict exactly that run.
struct RunRecord {
  ModelConfig model;  // as it ran (scaled), seq_len the run's
  Layout layout;
  TrainingRun run;    // global_batch of a full step; each step's own micro-batch count is in its span
  int ranks = 0;
  int ranks_per_node = 0;
};
inline constexpr const char* kRunRecordSchema = "flopwise.run/1";
nlohmann::json run_record_to_json(const RunRecord& record, const std::string& plan_path);
RunRecord run_record_from_json(const nlohmann::json& json, const std::string& source, const std::string& path);

// One executor trace: what ran and what was measured; every span names its step.
struct TracedRun : RunRecord {
  std::string source;
  bool common_clock = false;  // otherData.clock: spans of different ranks can be compared in time
  std::vector<TraceSpan> spans;
};
TracedRun load_traced_run(const std::string& path);

}  // namespace flopwise
