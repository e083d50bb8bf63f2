#include "flopwise/plan.hpp"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>

#include "flopwise/error.hpp"
#include "flopwise/model_import.hpp"

namespace flopwise {

using nlohmann::json;

Plan make_plan(const CostModel& cost, const Candidate& candidate, Objective objective) {
  const HardwareProfile& p = cost.profile();
  Plan plan;
  plan.model = cost.model();
  plan.hardware = PlanHardware{p.name,
                               p.device.name,
                               p.node.devices,
                               p.device.peak_flops(cost.run().precision) / 1e12,
                               p.device.memory_bytes,
                               p.device.price_per_device_hour,
                               p.device.currency};
  plan.run = cost.run();
  plan.layout = candidate.layout;
  plan.objective = objective;
  plan.predicted = candidate.cost;
  plan.simulated = candidate.simulated;
  plan.recommended = recommend(plan.model, plan.run, default_scaling());
  return plan;
}

Recommendation recommend(const ModelConfig& model, const TrainingRun& run, const ScalingFit& fit) {
  Recommendation r;
  r.compute_flops = training_flops_per_token(model, run.seq_len) * run.tokens;
  r.batch_tokens = fit.batch_tokens.at(r.compute_flops);
  r.global_batch = std::max(1, static_cast<int>(std::lround(r.batch_tokens / run.seq_len)));
  r.peak_lr = fit.learning_rate.at(r.compute_flops);
  r.source = fit.source;
  return r;
}

namespace {

json layout_json(const Layout& l) {
  return {{"tp", l.tp},           {"pp", l.pp},
          {"vpp", l.vpp},         {"ep", l.ep},
          {"dp", l.dp},           {"micro_batch", l.micro_batch},
          {"recompute", to_string(l.recompute)},
          {"optimizer_sharding", l.optimizer_sharding},
          {"sequence_parallel", l.tp > 1}};
}

json rank_map_json(const Layout& l, int devices_per_node) {
  const RankGrid grid(l, devices_per_node);
  json strides, sizes;
  for (GroupKind k : {GroupKind::kTp, GroupKind::kEp, GroupKind::kDp, GroupKind::kExpertDp, GroupKind::kPp}) {
    strides[to_string(k)] = grid.stride(k);
    sizes[to_string(k)] = grid.size(k);
  }
  return {{"order", RankGrid::kOrder},
          {"rule", "rank = tp_rank + tp * (dp_rank + dp * pp_rank); dp_rank = ep_rank + ep * expert_dp_rank; "
                   "node = rank / devices_per_node"},
          {"devices_per_node", devices_per_node},
          {"strides", strides},
          {"sizes", sizes}};
}

json predicted_json(const StepCost& c) {
  json j = {{"step_time_s", c.step_time_s},   {"tokens_per_s", c.tokens_per_s},
            {"mfu", c.mfu},                   {"days", c.days},
            {"device_hours", c.device_hours}, {"cost", c.cost},
            {"currency", c.currency},         {"model_flops_per_step", c.model_flops_per_step},
            {"slowest_stage", c.slowest_stage}};
  j["breakdown"] = {{"compute_s", c.compute_s},
                    {"exposed_comm_s",
                     {{"tp", c.exposed_comm_s.tp}, {"ep", c.exposed_comm_s.ep},
                      {"pp", c.exposed_comm_s.pp}, {"dp", c.exposed_comm_s.dp}}},
                    {"bubble_s", c.bubble_s},
                    {"optimizer_s", c.optimizer_s},
                    {"overhead_s", c.overhead_s}};
  const MemoryBreakdown& m = c.memory_bytes;
  j["memory_bytes"] = {{"weights", m.weights},         {"grads", m.grads},
                       {"optimizer", m.optimizer},     {"activations", m.activations},
                       {"buffers", m.buffers},         {"total", m.total()},
                       {"usable", c.usable_memory_bytes}, {"rank", c.busiest_memory_rank}};
  return j;
}

// Typed access to a plan's JSON with errors naming "file: a.b.c".
class PlanReader {
 public:
  PlanReader(const json& node, std::string source, std::string path)
      : node_(node), source_(std::move(source)), path_(std::move(path)) {
    if (!node_.is_object()) throw input_error(source_, path_, "expected a JSON object");
  }

  PlanReader child(const std::string& key) const { return PlanReader(get(key), source_, where(key)); }

  double number(const std::string& key) const {
    const json& v = get(key);
    if (!v.is_number()) throw input_error(source_, where(key), "expected a number, got " + v.dump());
    return v.get<double>();
  }

  int integer(const std::string& key) const {
    const json& v = get(key);
    if (!v.is_number_integer()) throw input_error(source_, where(key), "expected an integer, got " + v.dump());
    return v.get<int>();
  }

  std::string text(const std::string& key) const {
    const json& v = get(key);
    if (!v.is_string()) throw input_error(source_, where(key), "expected a string, got " + v.dump());
    return v.get<std::string>();
  }

  bool boolean(const std::string& key) const {
    const json& v = get(key);
    if (!v.is_boolean()) throw input_error(source_, where(key), "expected true or false, got " + v.dump());
    return v.get<bool>();
  }

  bool has(const std::string& key) const { return node_.contains(key); }

  const json& get(const std::string& key) const {
    if (!node_.contains(key)) throw input_error(source_, where(key), "missing field");
    return node_[key];
  }

  std::string where(const std::string& key) const { return path_.empty() ? key : path_ + "." + key; }
  const std::string& source() const { return source_; }

 private:
  const json& node_;
  std::string source_;
  std::string path_;
};

Layout read_layout(const PlanReader& r) {
  Layout l;
  l.tp = r.integer("tp");
  l.pp = r.integer("pp");
  l.vpp = r.integer("vpp");
  l.ep = r.integer("ep");
  l.dp = r.integer("dp");
  l.micro_batch = r.integer("micro_batch");
  l.recompute = parse_recompute(r.text("recompute"), r.source(), r.where("recompute"));
  l.optimizer_sharding = r.boolean("optimizer_sharding");
  return l;
}

}  // namespace

Layout layout_from_json(const nlohmann::json& json, const std::string& source, const std::string& path) {
  return read_layout(PlanReader(json, source, path));
}

namespace {

StepCost read_predicted(const PlanReader& r) {
  StepCost c;
  c.step_time_s = r.number("step_time_s");
  c.tokens_per_s = r.number("tokens_per_s");
  c.mfu = r.number("mfu");
  c.days = r.number("days");
  c.device_hours = r.number("device_hours");
  c.cost = r.number("cost");
  c.currency = r.text("currency");
  c.model_flops_per_step = r.number("model_flops_per_step");
  c.slowest_stage = r.integer("slowest_stage");
  const PlanReader b = r.child("breakdown");
  c.compute_s = b.number("compute_s");
  const PlanReader comm = b.child("exposed_comm_s");
  c.exposed_comm_s = {comm.number("tp"), comm.number("ep"), comm.number("pp"), comm.number("dp")};
  c.bubble_s = b.number("bubble_s");
  c.optimizer_s = b.number("optimizer_s");
  // Plans written before profiles carried overheads have none.
  c.overhead_s = b.has("overhead_s") ? b.number("overhead_s") : 0.0;
  const PlanReader m = r.child("memory_bytes");
  c.memory_bytes = {m.number("weights"), m.number("grads"), m.number("optimizer"), m.number("activations"),
                    m.number("buffers")};
  c.usable_memory_bytes = m.number("usable");
  c.busiest_memory_rank = m.integer("rank");
  return c;
}

PlanHardware read_hardware(const PlanReader& r) {
  return PlanHardware{r.text("profile"),      r.text("device"), r.integer("devices_per_node"),
                      r.number("peak_tflops"), r.number("memory_bytes"),
                      r.number("price_per_device_hour"), r.text("currency")};
}

}  // namespace

json to_json(const Plan& p) {
  const PlanHardware& h = p.hardware;
  json j;
  j["schema"] = Plan::kSchema;
  j["model"] = model_to_json(p.model);
  j["hardware"] = {{"profile", h.profile},
                   {"device", h.device},
                   {"devices_per_node", h.devices_per_node},
                   {"peak_tflops", h.peak_tflops},
                   {"memory_bytes", h.memory_bytes},
                   {"price_per_device_hour", h.price_per_device_hour},
                   {"currency", h.currency}};
  j["devices"] = p.devices();
  j["precision"] = to_string(p.run.precision);
  j["global_batch"] = p.run.global_batch;
  j["seq_len"] = p.run.seq_len;
  j["tokens"] = p.run.tokens;
  j["routing_skew"] = p.run.routing_skew;
  j["memory_headroom"] = p.run.memory_headroom;
  j["objective"] = to_string(p.objective);
  j["layout"] = layout_json(p.layout);
  j["rank_map"] = rank_map_json(p.layout, h.devices_per_node);
  j["predicted"] = predicted_json(p.predicted);
  if (p.simulated) j["simulated"] = predicted_json(*p.simulated);
  j["recommended"] = {{"compute_flops", p.recommended.compute_flops}, {"batch_tokens", p.recommended.batch_tokens},
                      {"global_batch", p.recommended.global_batch}, {"peak_lr", p.recommended.peak_lr},
                      {"source", p.recommended.source}};
  return j;
}

Plan plan_from_json(const json& j, const std::string& source) {
  const PlanReader r(j, source, "");
  const std::string schema = r.text("schema");
  if (schema != Plan::kSchema) {
    throw input_error(source, "schema", "unsupported plan schema '" + schema + "' (expected " + Plan::kSchema + ")");
  }
  Plan p;
  p.model = model_from_json(r.get("model"), source);
  p.hardware = read_hardware(r.child("hardware"));
  p.run.precision = parse_precision(r.text("precision"), source, "precision");
  p.run.global_batch = r.integer("global_batch");
  p.run.seq_len = r.integer("seq_len");
  p.run.tokens = r.number("tokens");
  p.run.routing_skew = r.number("routing_skew");
  p.run.memory_headroom = r.number("memory_headroom");
  validate(p.run, source);
  p.objective = parse_objective(r.text("objective"), source, "objective");
  p.layout = read_layout(r.child("layout"));
  if (r.integer("devices") != p.layout.devices()) {
    throw input_error(source, "devices", "does not equal layout tp x pp x dp (" + std::to_string(p.layout.devices()) + ")");
  }
  const PlanReader rank_map = r.child("rank_map");
  if (rank_map.text("order") != RankGrid::kOrder) {
    throw input_error(source, "rank_map.order", "unsupported rank order '" + rank_map.text("order") +
                                                    "' (expected " + RankGrid::kOrder + ")");
  }
  p.predicted = read_predicted(r.child("predicted"));
  if (j.contains("simulated")) p.simulated = read_predicted(r.child("simulated"));
  const PlanReader rec = r.child("recommended");
  p.recommended = {rec.number("compute_flops"), rec.number("batch_tokens"), rec.integer("global_batch"),
                   rec.number("peak_lr"), rec.text("source")};
  return p;
}

void save_plan(const Plan& plan, const std::string& path) {
  // Write then rename, so a reader never sees half a plan.
  const std::string partial = path + ".partial";
  {
    std::ofstream out(partial);
    if (!out) throw input_error(path, "", "cannot write plan file");
    out << to_json(plan).dump(2) << "\n";
    if (!out) throw input_error(path, "", "failed while writing plan file");
  }
  std::filesystem::rename(partial, path);
}

Plan load_plan(const std::string& path) { return plan_from_json(load_json_file(path), path); }

StepCost simulated_cost(const CostModel& cost, const Layout& layout, const StepCost& analytic,
                        const SimulationResult& simulation) {
  StepCost c = analytic;
  // The simulation times passes and messages; the per-step overhead comes on top.
  c.step_time_s = simulation.step_time_s + analytic.overhead_s;
  c.compute_s = simulation.compute_s;
  c.exposed_comm_s = simulation.exposed_comm_s;
  c.bubble_s = simulation.bubble_s;
  c.optimizer_s = 0;  // inside compute_s on the simulated timeline
  c.slowest_stage = RankGrid(layout, cost.profile().node.devices).coords(simulation.critical_rank).pp;
  cost.derive_totals(c, layout);
  return c;
}

void refine(const CostModel& cost, std::vector<Candidate>& candidates, int k, Objective objective) {
  const int n = std::min<int>(k, static_cast<int>(candidates.size()));
  for (int i = 0; i < n; ++i) {
    Candidate& c = candidates[i];
    c.simulated = simulated_cost(cost, c.layout, c.cost, simulate_step(cost, c.layout, {}));
  }
  std::stable_sort(candidates.begin(), candidates.begin() + n, [&](const Candidate& a, const Candidate& b) {
    return better(*a.simulated, *b.simulated, objective);
  });
}

json summary_json(const std::string& hardware, const Layout& l, const StepCost& c) {
  json j = predicted_json(c);
  j["hardware"] = hardware;
  j["devices"] = l.devices();
  j["layout"] = layout_json(l);
  return j;
}

}  // namespace flopwise
