#include "flopwise/trace.hpp"

#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "flopwise/error.hpp"

namespace flopwise {

void write_trace(const std::string& path, const std::vector<TraceSpan>& spans, int devices_per_node) {
  using nlohmann::json;
  json events = json::array();
  std::set<int> ranks;
  for (const TraceSpan& s : spans) {
    ranks.insert(s.rank);
    json args = s.args.is_object() ? s.args : json::object();
    args["rank"] = s.rank;
    events.push_back({{"name", s.name},
                      {"cat", s.category},
                      {"ph", "X"},
                      {"ts", s.start * 1e6},
                      {"dur", s.duration * 1e6},
                      {"pid", s.rank / devices_per_node},
                      {"tid", s.rank},
                      {"args", args}});
  }
  // Metadata events name the rows "node N" / "device R" in Perfetto.
  for (int rank : ranks) {
    const int node = rank / devices_per_node;
    events.push_back({{"name", "process_name"}, {"ph", "M"}, {"pid", node}, {"args", {{"name", "node " + std::to_string(node)}}}});
    events.push_back({{"name", "thread_name"}, {"ph", "M"}, {"pid", node}, {"tid", rank},
                      {"args", {{"name", "device " + std::to_string(rank)}}}});
  }
  std::ofstream out(path);
  if (!out) throw input_error(path, "", "cannot write trace file");
  out << json{{"traceEvents", events}, {"displayTimeUnit", "ms"}}.dump() << "\n";
  if (!out) throw input_error(path, "", "failed while writing trace file");
}

std::vector<TraceSpan> read_trace(const std::string& path) { return read_trace_file(path).spans; }

TraceFile read_trace_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw input_error(path, "", "cannot open trace file");
  nlohmann::json j;
  try {
    in >> j;
  } catch (const nlohmann::json::exception& e) {
    throw input_error(path, "", std::string("malformed JSON: ") + e.what());
  }
  if (!j.is_object() || !j.contains("traceEvents") || !j["traceEvents"].is_array()) {
    throw input_error(path, "traceEvents", "missing or not an array");
  }
  TraceFile file;
  if (j.contains("otherData")) file.other_data = j["otherData"];
  std::vector<TraceSpan>& spans = file.spans;
  for (size_t i = 0; i < j["traceEvents"].size(); ++i) {
    const auto& e = j["traceEvents"][i];
    if (e.value("ph", "") != "X") continue;
    const std::string field = "traceEvents[" + std::to_string(i) + "]";
    try {
      spans.push_back(TraceSpan{e.at("tid").get<int>(), e.at("cat").get<std::string>(), e.at("name").get<std::string>(),
                                e.at("ts").get<double>() * 1e-6, e.at("dur").get<double>() * 1e-6,
                                e.value("args", nlohmann::json::object())});
    } catch (const nlohmann::json::exception& ex) {
      throw input_error(path, field, std::string("bad event: ") + ex.what());
    }
  }
  return file;
}

}  // namespace flopwise
