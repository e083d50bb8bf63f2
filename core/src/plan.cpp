#include "flopwise/plan.hpp"

#include <filesystem>
#include <fstream>

#include "flopwise/error.hpp"
#include "flopwise/json_reader.hpp"

namespace flopwise {

using nlohmann::json;

std::string to_string(Objective objective) {
  switch (objective) {
    case Objective::kMinCost: return "cost";
    case Objective::kMinTime: return "time";
    case Objective::kMinCostDeadline: return "cost-deadline";
    case Objective::kMinTimeBudget: return "time-budget";
  }
  return "cost";
}

Objective parse_objective(const std::string& text, const std::string& source, const std::string& field) {
  for (Objective o : {Objective::kMinCost, Objective::kMinTime, Objective::kMinCostDeadline,
                      Objective::kMinTimeBudget}) {
    if (text == to_string(o)) return o;
  }
  throw input_error(source, field,
                    "unknown objective '" + text + "' (expected cost, time, cost-deadline or time-budget)");
}

std::string to_string(PoolStrategy strategy) {
  switch (strategy) {
    case PoolStrategy::kHeteroDp: return "hetero-dp";
    case PoolStrategy::kHeteroPipeline: return "hetero-pipeline";
    case PoolStrategy::kLocalSgd: return "local-sgd";
  }
  return "hetero-dp";
}

PoolStrategy parse_pool_strategy(const std::string& text, const std::string& source, const std::string& field) {
  for (PoolStrategy s : {PoolStrategy::kHeteroDp, PoolStrategy::kHeteroPipeline, PoolStrategy::kLocalSgd}) {
    if (text == to_string(s)) return s;
  }
  throw input_error(source, field, "unknown strategy '" + text + "' (expected hetero-dp, hetero-pipeline or local-sgd)");
}

int MixedPlan::devices() const {
  int total = 0;
  for (const PlanPool& p : pools) total += p.devices();
  return total;
}

json layout_to_json(const Layout& l) {
  json j = {{"tp", l.tp},           {"cp", l.cp},           {"pp", l.pp},
          {"vpp", l.vpp},         {"ep", l.ep},
          {"dp", l.dp},           {"micro_batch", l.micro_batch},
          {"recompute", to_string(l.recompute)},
          {"optimizer_sharding", l.optimizer_sharding},
          {"sequence_parallel", l.tp > 1 && l.sequence_parallel},
          {"first_stage_layers", l.first_stage_layers},
          {"last_stage_layers", l.last_stage_layers},
          {"embedding_in_split", l.embedding_in_split},
          {"loss_in_split", l.loss_in_split},
          {"etp", l.expert_tp()}};
  if (l.recompute == Recompute::kSelective) j["recompute_modules"] = module_names(l.recompute_modules);
  return j;
}

Layout layout_from_json(const json& j, const std::string& source, const std::string& path) {
  const JsonFields r(j, source, path);
  constexpr long long kMaxDegree = 1 << 20;
  Layout l;
  l.tp = r.integer("tp", 1, kMaxDegree);
  // Plans written before context parallelism had none.
  if (r.has("cp")) l.cp = r.integer("cp", 1, kMaxDegree);
  l.pp = r.integer("pp", 1, kMaxDegree);
  l.vpp = r.integer("vpp", 1, kMaxDegree);
  l.ep = r.integer("ep", 1, kMaxDegree);
  l.dp = r.integer("dp", 1, kMaxDegree);
  l.micro_batch = r.integer("micro_batch", 1, kMaxDegree);
  l.recompute = parse_recompute(r.text("recompute"), source, r.where("recompute"));
  // Plans written before recompute modules recomputed the core attention, Megatron's default.
  if (r.has("recompute_modules")) {
    l.recompute_modules = parse_recompute_modules(r.texts("recompute_modules"), source, r.where("recompute_modules"));
  }
  l.optimizer_sharding = r.boolean("optimizer_sharding");
  l.sequence_parallel = l.tp == 1 || r.boolean("sequence_parallel");
  l.first_stage_layers = r.integer("first_stage_layers", 0, kMaxDegree);
  l.last_stage_layers = r.integer("last_stage_layers", 0, kMaxDegree);
  // Plans written before the ends could count as layers split the layers alone.
  if (r.has("embedding_in_split")) l.embedding_in_split = r.boolean("embedding_in_split");
  if (r.has("loss_in_split")) l.loss_in_split = r.boolean("loss_in_split");
  // Plans written before MoE parallel folding ran the experts at the attention's TP, which is
  // also Megatron-Core's default.
  if (r.has("etp")) l.etp = fold_expert_tp(r.integer("etp", 1, kMaxDegree), l.tp);
  if (static_cast<long long>(l.tp) * l.cp * l.pp * l.dp > kMaxDegree) {
    throw r.error("dp", "tp x cp x pp x dp exceeds 2^20 devices");
  }
  if (l.stage_ranks() % (l.expert_tp() * l.ep) != 0) {
    throw r.error("ep", "etp x ep (" + std::to_string(l.expert_tp()) + " x " + std::to_string(l.ep) +
                            ") must divide tp x cp x dp (" + std::to_string(l.stage_ranks()) + ")");
  }
  return l;
}

namespace {

json rank_map_json(const Layout& l, int devices_per_node) {
  const RankGrid grid(l, devices_per_node);
  json strides, sizes;
  for (GroupKind k : kGroupKinds) {
    strides[to_string(k)] = grid.stride(k);
    sizes[to_string(k)] = grid.size(k);
  }
  return {{"order", RankGrid::kOrder},
          {"rule", "rank = tp_rank + tp * (cp_rank + cp * (dp_rank + dp * pp_rank)) = expert_tp_rank + etp * (ep_rank + "
                   "ep * (expert_dp_rank + expert_dp * pp_rank)); dp_cp_rank = cp_rank + cp * dp_rank; node = rank / "
                   "devices_per_node"},
          {"devices_per_node", devices_per_node},
          {"strides", strides},
          {"sizes", sizes}};
}

json hardware_json(const PlanHardware& h) {
  return {{"profile", h.profile},
          {"device", h.device},
          {"devices_per_node", h.devices_per_node},
          {"peak_tflops", h.peak_tflops},
          {"memory_bytes", h.memory_bytes},
          {"price_per_device_hour", h.price_per_device_hour},
          {"currency", h.currency}};
}

PlanHardware read_hardware(const JsonFields& r) {
  return PlanHardware{r.text("profile"),
                      r.text("device"),
                      r.integer("devices_per_node", 1),
                      r.number("peak_tflops", 0),
                      r.number("memory_bytes", 0),
                      r.number("price_per_device_hour", 0),
                      r.text("currency")};
}

Recommendation read_recommendation(const JsonFields& r) {
  return {r.number("compute_flops", 0), r.number("batch_tokens", 0), r.integer("global_batch", 0),
          r.number("peak_lr", 0), r.text("source")};
}

void add_mixed_json(const MixedPlan& m, json& j) {
  j["strategy"] = to_string(m.strategy);
  j["pools"] = json::array();
  for (const PlanPool& p : m.pools) {
    j["pools"].push_back({{"name", p.name},
                          {"hardware", hardware_json(p.hardware)},
                          {"devices", p.devices()},
                          {"first_rank", p.first_rank},
                          {"layout", layout_to_json(p.layout)},
                          {"rank_map", rank_map_json(p.layout, p.hardware.devices_per_node)},
                          {"sequences", p.sequences},
                          {"stage_layers", p.stage_layers},
                          {"step_time_s", p.step_time_s}});
  }
  j["pool_links"] = json::array();
  for (const PlanLink& l : m.links) {
    j["pool_links"].push_back({{"between", {l.a, l.b}}, {"bandwidth_bytes_per_s", l.bandwidth},
                               {"latency_s", l.latency}, {"stated", l.stated}});
  }
  j["cross_pool"] = {{"seconds_per_step", m.cross_pool_s}, {"bytes_per_link", m.cross_pool_bytes}};
  if (m.strategy == PoolStrategy::kLocalSgd) {
    j["local_sgd"] = {{"sync_every_steps", m.sync_every_steps}, {"sync_s", m.sync_s}};
  }
  if (!m.optimisation_note.empty()) j["optimisation_note"] = m.optimisation_note;
}

PlanPool read_pool(const JsonFields& r, int layers) {
  PlanPool p;
  p.name = r.text("name");
  p.hardware = read_hardware(r.child("hardware"));
  p.layout = layout_from_json(r.get("layout"), r.source(), r.where("layout"));
  if (r.integer("devices", 1) != p.layout.devices()) throw r.error("devices", "does not equal layout tp x pp x dp");
  p.first_rank = r.integer("first_rank", 0);
  p.sequences = r.integer("sequences", 1);
  const json& stages = r.get("stage_layers");
  if (!stages.is_array()) throw r.error("stage_layers", "expected an array of layer counts");
  for (const json& n : stages) {
    if (!n.is_number_integer() || n.get<int>() < 0 || n.get<int>() > layers) {
      throw r.error("stage_layers", "expected layer counts between 0 and the model's layers");
    }
    p.stage_layers.push_back(n.get<int>());
  }
  p.step_time_s = r.number("step_time_s", 0);
  return p;
}

MixedPlan read_mixed(const JsonFields& r, int layers) {
  MixedPlan m;
  m.strategy = parse_pool_strategy(r.text("strategy"), r.source(), "strategy");
  int next_rank = 0;
  for (const JsonFields& pool : r.objects("pools")) {
    m.pools.push_back(read_pool(pool, layers));
    if (m.pools.back().first_rank != next_rank) throw pool.error("first_rank", "pools must number the ranks in order");
    next_rank += m.pools.back().devices();
  }
  if (m.pools.empty()) throw r.error("pools", "a mixed plan needs at least one pool");
  for (const JsonFields& link : r.objects("pool_links")) {
    const std::vector<std::string> between = link.texts("between");
    if (between.size() != 2) throw link.error("between", "expected two pool names");
    m.links.push_back({between[0], between[1], link.number("bandwidth_bytes_per_s", 0), link.number("latency_s", 0),
                       link.boolean("stated")});
  }
  if (m.links.size() + 1 != m.pools.size()) throw r.error("pool_links", "expected one link between consecutive pools");
  if (m.strategy == PoolStrategy::kHeteroPipeline) {
    int total = 0;
    for (const PlanPool& p : m.pools) {
      if (static_cast<int>(p.stage_layers.size()) != p.layout.pp) throw r.error("pools", "stage_layers must list each of a pool's pp stages");
      for (int n : p.stage_layers) total += n;
    }
    if (total != layers) throw r.error("pools", "the stages' layers do not add up to the model's " + std::to_string(layers));
  }
  const JsonFields cross = r.child("cross_pool");
  m.cross_pool_s = cross.number("seconds_per_step", 0);
  m.cross_pool_bytes = cross.number("bytes_per_link", 0);
  if (m.strategy == PoolStrategy::kLocalSgd) {
    const JsonFields sync = r.child("local_sgd");
    m.sync_every_steps = sync.integer("sync_every_steps", 1);
    m.sync_s = sync.number("sync_s", 0);
  }
  if (r.has("optimisation_note")) m.optimisation_note = r.text("optimisation_note");
  return m;
}

}  // namespace

json to_json(const Plan& p) {
  json j;
  j["schema"] = Plan::kSchema;
  j["model"] = model_to_json(p.model);
  j["hardware"] = hardware_json(p.hardware);
  j["devices"] = p.devices();
  j["precision"] = to_string(p.run.precision);
  j["global_batch"] = p.run.global_batch;
  j["seq_len"] = p.run.seq_len;
  j["tokens"] = p.run.tokens;
  j["attention"] = to_string(p.run.attention);
  j["comm_overlap"] = to_string(p.run.overlap);
  j["grad_accumulation_fusion"] = p.run.grad_accumulation_fusion;
  j["grad_reduce_in_bf16"] = p.run.grad_reduce_in_bf16;
  j["adam_moments_in_bf16"] = p.run.adam_moments_in_bf16;
  j["tp_comm_sms"] = p.run.tp_comm_sms;
  j["ep_dispatcher"] = to_string(p.run.ep_dispatcher);
  j["flex_dispatcher_sms"] = p.run.flex_dispatcher_sms;
  j["fp8_recipe"] = to_string(p.run.fp8_recipe);
  j["hidden_dropout"] = p.run.hidden_dropout;
  j["attention_dropout"] = p.run.attention_dropout;
  j["router_fusion"] = p.run.router_fusion;
  j["router_balancing"] = to_string(p.run.router_balancing);
  j["routing_skew"] = p.run.routing_skew;
  j["moe_capacity_factor"] = p.run.moe_capacity_factor;
  j["memory_headroom"] = p.run.memory_headroom;
  j["objective"] = to_string(p.objective);
  j["layout"] = layout_to_json(p.layout);
  j["rank_map"] = rank_map_json(p.layout, p.hardware.devices_per_node);
  if (p.mixed) add_mixed_json(*p.mixed, j);
  j["predicted"] = step_cost_to_json(p.predicted);
  if (p.simulated) j["simulated"] = step_cost_to_json(*p.simulated);
  j["recommended"] = {{"compute_flops", p.recommended.compute_flops}, {"batch_tokens", p.recommended.batch_tokens},
                      {"global_batch", p.recommended.global_batch}, {"peak_lr", p.recommended.peak_lr},
                      {"source", p.recommended.source}};
  return j;
}

Plan plan_from_json(const json& j, const std::string& source) {
  const JsonFields r(j, source);
  const std::string schema = r.text("schema");
  if (schema != Plan::kSchema && schema != "flopwise.plan/1") {
    throw input_error(source, "schema", "unsupported plan schema '" + schema + "' (expected " + Plan::kSchema +
                                            " or flopwise.plan/1)");
  }
  Plan p;
  p.model = model_from_json(r.get("model"), source);
  p.hardware = read_hardware(r.child("hardware"));
  p.run.precision = parse_precision(r.text("precision"), source, "precision");
  p.run.global_batch = r.integer("global_batch", 1);
  p.run.seq_len = r.integer("seq_len", 1);
  p.run.tokens = r.number("tokens");
  p.run.attention = parse_attention_kernel(r.text("attention"), source, "attention");
  p.run.overlap = parse_comm_overlap(r.text("comm_overlap"), source, "comm_overlap");
  // Plans written before the switch existed fused, as Megatron-Core does by default.
  if (r.has("grad_accumulation_fusion")) p.run.grad_accumulation_fusion = r.boolean("grad_accumulation_fusion");
  // Plans written before the switch existed kept fp32 main gradients, Megatron-LM's bf16 default.
  if (r.has("grad_reduce_in_bf16")) p.run.grad_reduce_in_bf16 = r.boolean("grad_reduce_in_bf16");
  // Plans written before the option kept fp32 moments, Megatron's default.
  if (r.has("adam_moments_in_bf16")) p.run.adam_moments_in_bf16 = r.boolean("adam_moments_in_bf16");
  // Plans written before SM sharing was costed ran Transformer Engine's default.
  if (r.has("tp_comm_sms")) p.run.tp_comm_sms = r.integer("tp_comm_sms", 0);
  // Plans written before the choice dispatched with Megatron-Core's default all-to-all.
  if (r.has("ep_dispatcher")) p.run.ep_dispatcher = parse_ep_dispatcher(r.text("ep_dispatcher"), source, "ep_dispatcher");
  // Plans written before the count was a choice held DeepEP's 20.
  if (r.has("flex_dispatcher_sms")) p.run.flex_dispatcher_sms = r.integer("flex_dispatcher_sms", 1);
  // Plans written before the choice priced an fp8 run's casts as current (tensorwise) scaling, the default.
  if (r.has("fp8_recipe")) p.run.fp8_recipe = parse_fp8_recipe(r.text("fp8_recipe"), source, "fp8_recipe");
  // Plans written before dropout was a choice priced none (unfused attention's mask aside).
  if (r.has("hidden_dropout")) p.run.hidden_dropout = r.number("hidden_dropout");
  if (r.has("attention_dropout")) p.run.attention_dropout = r.number("attention_dropout");
  // Plans written before the router's kernels were priced ran the default router: plain torch
  // ops with the Ling report's aux_loss and z-loss, what --megatron wrote for them.
  if (r.has("router_fusion")) p.run.router_fusion = r.boolean("router_fusion");
  if (r.has("router_balancing")) {
    p.run.router_balancing = parse_router_balancing(r.text("router_balancing"), source, "router_balancing");
  }
  p.run.routing_skew = r.number("routing_skew");
  // Plans written before capacity factors were dropless.
  if (r.has("moe_capacity_factor")) p.run.moe_capacity_factor = r.number("moe_capacity_factor");
  p.run.memory_headroom = r.number("memory_headroom");
  validate(p.run, source);
  p.objective = parse_objective(r.text("objective"), source, "objective");
  p.layout = layout_from_json(r.get("layout"), source, "layout");
  if (r.has("strategy")) p.mixed = read_mixed(r, p.model.layers);
  // A mixed plan's top-level layout is its first pool's, whose stages need not hold the whole model.
  if (!p.mixed && !stages_fit(p.model.layers, p.layout)) {
    throw input_error(source, "layout.first_stage_layers",
                      "the pipeline split (first/last stage layers " + std::to_string(p.layout.first_stage_layers) + "/" +
                          std::to_string(p.layout.last_stage_layers) +
                          (p.layout.embedding_in_split ? ", embedding as a layer" : "") +
                          (p.layout.loss_in_split ? ", loss as a layer" : "") + ", pp " + std::to_string(p.layout.pp) + ", vpp " +
                          std::to_string(p.layout.vpp) + ") does not fit the model's " + std::to_string(p.model.layers) +
                          " layers");
  }
  if (r.integer("devices") != p.devices()) {
    throw input_error(source, "devices", p.mixed ? "does not equal the pools' devices (" + std::to_string(p.devices()) + ")"
                                                 : "does not equal layout tp x pp x dp (" + std::to_string(p.devices()) + ")");
  }
  const JsonFields rank_map = r.child("rank_map");
  if (rank_map.text("order") != RankGrid::kOrder) {
    throw input_error(source, "rank_map.order", "unsupported rank order '" + rank_map.text("order") +
                                                    "' (expected " + RankGrid::kOrder + ")");
  }
  p.predicted = step_cost_from_json(r.get("predicted"), source, "predicted");
  if (r.has("simulated")) p.simulated = step_cost_from_json(r.get("simulated"), source, "simulated");
  p.recommended = read_recommendation(r.child("recommended"));
  return p;
}

void require_single_pool(const Plan& plan, const std::string& source, const std::string& consumer) {
  if (!plan.mixed) return;
  throw input_error(source, "strategy", "a " + to_string(plan.mixed->strategy) + " plan over " +
                                            std::to_string(plan.mixed->pools.size()) + " pools; " + consumer +
                                            " takes single-pool plans only");
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

Plan load_plan(const std::string& path) { return plan_from_json(parse_json(read_text_file(path, "plan"), path), path); }

json summary_json(const std::string& hardware, const Layout& l, const StepCost& c) {
  json j = step_cost_to_json(c);
  j["hardware"] = hardware;
  j["devices"] = l.devices();
  j["layout"] = layout_to_json(l);
  return j;
}

}  // namespace flopwise
