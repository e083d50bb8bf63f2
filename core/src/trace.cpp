#include "flopwise/trace.hpp"

#include <fstream>
#include <optional>
#include <set>

#include "flopwise/error.hpp"
#include "flopwise/json_reader.hpp"
#include "flopwise/plan.hpp"

namespace flopwise {

using nlohmann::json;

void write_trace(const std::string& path, const std::vector<TraceSpan>& spans, int devices_per_node,
                 const json& other_data) {
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
  json file = {{"traceEvents", events}, {"displayTimeUnit", "ms"}};
  if (!other_data.empty()) file["otherData"] = other_data;
  // Write then rename, so a reader never sees half a trace.
  const std::string partial = path + ".partial";
  {
    std::ofstream out(partial);
    if (!out) throw input_error(path, "", "cannot write trace file");
    out << file.dump() << "\n";
    if (!out) throw input_error(path, "", "failed while writing trace file");
  }
  std::rename(partial.c_str(), path.c_str());
}

std::vector<TraceSpan> read_trace(const std::string& path) { return read_trace_file(path).spans; }

TraceFile read_trace_file(const std::string& path) {
  const json j = parse_json(read_text_file(path, "trace file"), path);
  const JsonFields root(j, path);
  TraceFile file;
  if (root.has("otherData")) file.other_data = root.child("otherData").node();
  const json& events = root.get("traceEvents");
  if (!events.is_array()) throw root.error("traceEvents", "expected a list of events");
  for (const JsonFields& e : root.objects("traceEvents")) {
    if (!e.has("ph") || e.text("ph") != "X") continue;  // metadata and instant events carry no span
    TraceSpan span;
    span.rank = e.integer("tid", 0);
    span.category = e.text("cat");
    span.name = e.text("name");
    span.start = e.number("ts") * 1e-6;
    span.duration = e.number("dur", 0) * 1e-6;
    if (e.has("args")) span.args = e.child("args").node();
    file.spans.push_back(std::move(span));
  }
  return file;
}

json run_record_to_json(const RunRecord& r, const std::string& plan_path) {
  json model = model_to_json(r.model);
  model["seq_len"] = r.run.seq_len;
  return {{"schema", kRunRecordSchema},        {"plan", plan_path},
          {"model", model},                    {"layout", layout_to_json(r.layout)},
          {"seq_len", r.run.seq_len},          {"global_batch", r.run.global_batch},
          {"precision", to_string(r.run.precision)}, {"ranks", r.ranks},
          {"ranks_per_node", r.ranks_per_node}, {"threads_per_rank", 1},
          {"comm_overlap", to_string(r.run.overlap)}, {"attention", to_string(r.run.attention)}};
}

RunRecord run_record_from_json(const json& j, const std::string& source, const std::string& path) {
  const JsonFields f(j, source, path);
  RunRecord r;
  r.model = model_from_json(f.get("model"), source, f.where("model"));
  r.layout = layout_from_json(f.get("layout"), source, f.where("layout"));
  r.run.seq_len = f.integer("seq_len", 1);
  r.run.global_batch = f.integer("global_batch", 1);
  r.run.precision = parse_precision(f.text("precision"), source, f.where("precision"));
  r.run.overlap = parse_comm_overlap(f.text("comm_overlap"), source, f.where("comm_overlap"));
  // A later field: traces written before it are read as they were then, with fused attention.
  if (f.has("attention")) r.run.attention = parse_attention_kernel(f.text("attention"), source, f.where("attention"));
  r.ranks = f.integer("ranks", 1);
  r.ranks_per_node = f.integer("ranks_per_node", 1);
  if (r.layout.devices() != r.ranks) throw f.error("ranks", "does not equal layout tp x pp x dp");
  return r;
}

json rank_clock_to_json(const RankClock& clock) { return {{"clock", {{"host", clock.host}, {"origin_s", clock.origin_s}}}}; }

namespace {

std::optional<RankClock> rank_clock(const json& other_data) {
  if (!other_data.is_object() || !other_data.contains("clock")) return std::nullopt;
  const json& c = other_data["clock"];
  if (!c.is_object() || !c.contains("host") || !c["host"].is_string() || !c.contains("origin_s") || !c["origin_s"].is_number()) {
    return std::nullopt;
  }
  return RankClock{c["host"].get<std::string>(), c["origin_s"].get<double>()};
}

}  // namespace

std::vector<TraceSpan> merge_rank_traces(const std::vector<TraceFile>& parts) {
  std::vector<TraceSpan> merged;
  const std::optional<RankClock> first = parts.empty() ? std::nullopt : rank_clock(parts.front().other_data);
  for (const TraceFile& part : parts) {
    const std::optional<RankClock> clock = rank_clock(part.other_data);
    const Seconds shift = first && clock && clock->host == first->host ? clock->origin_s - first->origin_s : 0;
    for (TraceSpan span : part.spans) {
      span.start += shift;
      merged.push_back(std::move(span));
    }
  }
  return merged;
}

TracedRun load_traced_run(const std::string& path) {
  TraceFile file = read_trace_file(path);
  if (!file.other_data.is_object() || !file.other_data.contains("flopwise_run")) {
    throw input_error(path, "otherData.flopwise_run",
                      "missing: not an executor trace (write one with flopwise train --trace)");
  }
  TracedRun r;
  static_cast<RunRecord&>(r) = run_record_from_json(file.other_data["flopwise_run"], path, "otherData.flopwise_run");
  r.source = path;
  r.common_clock = file.other_data.contains("clock");
  r.spans = std::move(file.spans);
  for (size_t i = 0; i < r.spans.size(); ++i) {
    const json& step = r.spans[i].args.contains("step") ? r.spans[i].args["step"] : json();
    if (!step.is_number_integer() || step.get<long long>() < 0 || step.get<long long>() > 1'000'000'000) {
      throw input_error(path, "traceEvents[" + std::to_string(i) + "].args.step",
                        "missing or not a step number: every executor span names its step");
    }
  }
  return r;
}

}  // namespace flopwise
