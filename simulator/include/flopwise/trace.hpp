#pragma once
// Timelines in Chrome trace-event JSON, the shape Perfetto opens: one pid per node, one tid per
// device, microseconds, categories compute, tp, ep, pp, dp, bubble.
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

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

void write_trace(const std::string& path, const std::vector<TraceSpan>& spans, int devices_per_node);
// Reads a trace written by write_trace (or by the executor); InputError on malformed files.
std::vector<TraceSpan> read_trace(const std::string& path);
TraceFile read_trace_file(const std::string& path);

}  // namespace flopwise
