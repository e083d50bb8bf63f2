#include "flopwise/cli.hpp"

#include <CLI/CLI.hpp>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <filesystem>
#include <iostream>
#include <fstream>
#include <map>
#include <set>

#include "flopwise/calibrate.hpp"
#include "flopwise/calibration_runs.hpp"
#include "flopwise/catalog.hpp"
#include "flopwise/comparison.hpp"
#include "flopwise/error.hpp"
#include "flopwise/json_reader.hpp"
#include "flopwise/launch.hpp"
#include "flopwise/mixed_simulation.hpp"
#include "flopwise/model_import.hpp"
#include "flopwise/plan_builder.hpp"
#include "flopwise/pools_report.hpp"
#include "flopwise/report.hpp"
#include "flopwise/scaling.hpp"
#include "flopwise/validation.hpp"

namespace flopwise {
namespace {

using nlohmann::json;

// Options shared by `plan`, `compare` and `bench`; defaults are the Ling report's pre-training
// run (section 3.4) and are printed in every table header.
struct RunOptions {
  std::string model = "ling-plus";
  std::string devices = "1:8192";
  double tokens = 1e12;
  int global_batch = 8960;
  int seq_len = 4096;
  std::string objective = "cost-deadline";
  double deadline_days = 30;
  double budget = 0;
  std::string precision = "bf16";
  std::string attention = "fused";
  std::string comm_overlap = to_string(CommOverlap{});
  bool no_grad_accumulation_fusion = false;
  bool grad_reduce_in_bf16 = false;
  bool adam_moments_in_bf16 = false;
  int tp_comm_sms = TrainingRun{}.tp_comm_sms;
  std::string ep_dispatcher = to_string(EpDispatcher::kAllToAll);
  int flex_dispatcher_sms = TrainingRun{}.flex_dispatcher_sms;
  std::string fp8_recipe = to_string(TrainingRun{}.fp8_recipe);
  bool router_fusion = false;
  double hidden_dropout = 0, attention_dropout = 0;
  std::string router_balancing = to_string(RouterBalancing{});
  double routing_skew = 1.0;
  double moe_capacity_factor = 0;
  double memory_headroom = 0.10;
  int top = 5;
  int refine = 0;
  int tp = 0, cp = 0, pp = 0, vpp = 0, ep = 0, etp = 0, dp = 0, micro_batch = 0, first_stage_layers = 0, last_stage_layers = 0;
  bool embedding_in_split = false, loss_in_split = false;
  std::string recompute, recompute_modules, optimizer_sharding;
  bool json = false;
  std::string out;
};

void add_run_options(CLI::App& app, RunOptions& o, bool fixed_dims) {
  app.add_option("--model", o.model, "preset (ling-lite, ling-plus) or HF config.json")->capture_default_str();
  app.add_option("--devices", o.devices, "device count N or range MIN:MAX")->capture_default_str();
  app.add_option("--tokens", o.tokens, "token budget, e.g. 1e12")->capture_default_str();
  app.add_option("--global-batch", o.global_batch, "sequences per step")->capture_default_str();
  app.add_option("--seq-len", o.seq_len, "tokens per sequence")->capture_default_str();
  app.add_option("--objective", o.objective, "cost | time | cost-deadline | time-budget")->capture_default_str();
  app.add_option("--deadline-days", o.deadline_days, "deadline for cost-deadline")->capture_default_str();
  app.add_option("--budget", o.budget, "budget for time-budget, in the profile's currency");
  app.add_option("--precision", o.precision, "bf16 | fp16 | fp8 | fp32")->capture_default_str();
  app.add_option("--attention", o.attention, "attention kernel: fused (FlashAttention) | unfused")->capture_default_str();
  app.add_option("--comm-overlap", o.comm_overlap,
                 "communication the framework overlaps: none, or a list of " + overlap_names())
      ->capture_default_str();
  app.add_flag("--no-grad-accumulation-fusion", o.no_grad_accumulation_fusion,
               "weight gradients added into the main gradient by a separate kernel, not in the GEMM's epilogue");
  app.add_flag("--grad-reduce-in-bf16", o.grad_reduce_in_bf16,
               "main gradients kept, accumulated and reduced in bf16, not fp32 (bf16 and fp8 runs)");
  app.add_flag("--adam-moments-in-bf16", o.adam_moments_in_bf16,
               "AdamW moments stored in bf16 beside fp32 master weights, as Megatron's precision-aware optimizer "
               "keeps them (bf16 and fp8 runs; needs optimizer sharding)");
  app.add_option("--tp-comm-sms", o.tp_comm_sms,
                 "SMs Transformer Engine's TP-overlap kernels (tp_comm) hold beside the GEMMs they overlap")
      ->capture_default_str();
  app.add_option("--fp8-recipe", o.fp8_recipe,
                 "how an fp8 run scales its casts: tensorwise (current) | delayed | mxfp8 | blockwise (Megatron-LM's --fp8-recipe)")
      ->capture_default_str();
  app.add_option("--ep-dispatcher", o.ep_dispatcher,
                 "how routed tokens travel: alltoall (a copy per expert) | flex (DeepEP/HybridEP: once per rank and node)")
      ->capture_default_str();
  app.add_option("--flex-dispatcher-sms", o.flex_dispatcher_sms,
                 "SMs the flex dispatcher's kernels hold (Megatron-Core's --moe-flex-dispatcher-num-sms; DeepEP's 20, "
                 "NVIDIA's recipes give HybridEP 32)")
      ->capture_default_str();
  app.add_option("--hidden-dropout", o.hidden_dropout,
                 "dropout probability in each block's bias-dropout-add (Megatron-LM's --hidden-dropout)")
      ->capture_default_str();
  app.add_option("--attention-dropout", o.attention_dropout,
                 "dropout probability on the attention probabilities (Megatron-LM's --attention-dropout)")
      ->capture_default_str();
  app.add_flag("--router-fusion", o.router_fusion,
               "the router's top-k and balancing losses in Transformer Engine's fused kernels (Megatron-Core's "
               "--moe-router-fusion)");
  app.add_option("--router-balancing", o.router_balancing,
                 "how the router balances experts: none, or a list of " + router_balancing_names())
      ->capture_default_str();
  app.add_option("--routing-skew", o.routing_skew, "busiest EP rank's tokens over the mean (>= 1)")->capture_default_str();
  app.add_option("--moe-capacity-factor", o.moe_capacity_factor,
                 "expert capacity over its balanced share; tokens past it are dropped (0: dropless)")
      ->capture_default_str();
  app.add_option("--memory-headroom", o.memory_headroom, "fraction of device memory kept free")->capture_default_str();
  app.add_option("--top", o.top, "ranked layouts to keep")->capture_default_str();
  app.add_flag("--json", o.json, "machine-readable output");
  app.add_option("--out", o.out, "write the best plan to this JSON file");
  app.add_option("--refine", o.refine, "re-rank the best K layouts by simulated step time (SimGrid)");
  if (!fixed_dims) return;
  app.add_option("--tp", o.tp, "fix tensor parallel size");
  app.add_option("--cp", o.cp, "fix context parallel size (default: 1, searched for sequences of 8K tokens and more)");
  app.add_option("--pp", o.pp, "fix pipeline stages");
  app.add_option("--vpp", o.vpp, "fix virtual stages per pipeline rank");
  app.add_option("--ep", o.ep, "fix expert parallel size");
  app.add_option("--etp", o.etp, "fix expert tensor parallel size (default: searched; with a fixed layout, tp)");
  app.add_option("--dp", o.dp, "fix data parallel size");
  app.add_option("--micro-batch", o.micro_batch, "fix micro-batch size");
  app.add_option("--recompute", o.recompute, "fix recompute: none | selective | full");
  app.add_option("--recompute-modules", o.recompute_modules,
                 "what selective recompute repeats: a comma list of core_attn, moe_act, layernorm, mla_up_proj, mlp "
                 "(Megatron-Core's --recompute-modules; default core_attn; implies --recompute selective)");
  app.add_option("--first-stage-layers", o.first_stage_layers, "layers of the first pipeline rank (default: balanced)");
  app.add_option("--last-stage-layers", o.last_stage_layers, "layers of the last pipeline rank (default: balanced)");
  app.add_flag("--embedding-in-split", o.embedding_in_split, "count the embedding as a layer of the first model chunk");
  app.add_flag("--loss-in-split", o.loss_in_split, "count the LM head and loss as a layer of the last model chunk");
  app.add_option("--optimizer-sharding", o.optimizer_sharding, "fix distributed optimizer: true | false");
}

DeviceRange parse_devices(const std::string& text) {
  const auto colon = text.find(':');
  try {
    size_t used = 0;
    DeviceRange r;
    if (colon == std::string::npos) {
      r.min = r.max = std::stoi(text, &used);
      if (used != text.size()) throw std::invalid_argument(text);
    } else {
      r.min = std::stoi(text.substr(0, colon), &used);
      if (used != colon) throw std::invalid_argument(text);
      r.max = std::stoi(text.substr(colon + 1), &used);
      if (used != text.size() - colon - 1) throw std::invalid_argument(text);
    }
    return r;
  } catch (const std::logic_error&) {
    throw input_error("--devices", "", "expected N or MIN:MAX, got '" + text + "'");
  }
}

std::optional<int> fixed(int value, const std::string& flag) {
  if (value < 0) throw input_error(flag, "", "must be positive");
  return value > 0 ? std::optional<int>(value) : std::nullopt;
}

SearchOptions search_options(const RunOptions& o) {
  SearchOptions s;
  s.devices = parse_devices(o.devices);
  s.objective = parse_objective(o.objective, "--objective", "");
  s.deadline_days = o.deadline_days;
  s.budget = o.budget;
  s.top_k = o.top;
  s.tp = fixed(o.tp, "--tp");
  s.cp = fixed(o.cp, "--cp");
  s.pp = fixed(o.pp, "--pp");
  s.vpp = fixed(o.vpp, "--vpp");
  s.ep = fixed(o.ep, "--ep");
  s.etp = fixed(o.etp, "--etp");
  s.dp = fixed(o.dp, "--dp");
  s.micro_batch = fixed(o.micro_batch, "--micro-batch");
  s.first_stage_layers = fixed(o.first_stage_layers, "--first-stage-layers");
  s.last_stage_layers = fixed(o.last_stage_layers, "--last-stage-layers");
  if (o.embedding_in_split) s.embedding_in_split = true;
  if (o.loss_in_split) s.loss_in_split = true;
  if (!o.recompute.empty()) s.recompute = parse_recompute(o.recompute, "--recompute", "");
  if (!o.recompute_modules.empty()) {
    s.recompute_modules = parse_recompute_modules(o.recompute_modules, "--recompute-modules", "");
    if (s.recompute && *s.recompute != Recompute::kSelective) {
      throw input_error("--recompute-modules", "", "only with --recompute selective (given " + o.recompute + ")");
    }
    s.recompute = Recompute::kSelective;
  }
  if (o.optimizer_sharding == "true") s.optimizer_sharding = true;
  if (o.optimizer_sharding == "false") s.optimizer_sharding = false;
  if (!o.optimizer_sharding.empty() && !s.optimizer_sharding) {
    throw input_error("--optimizer-sharding", "", "expected true or false, got '" + o.optimizer_sharding + "'");
  }
  validate(s, "options");
  return s;
}

bool has_fixed_dims(const SearchOptions& s) {
  return s.tp || s.cp || s.pp || s.vpp || s.ep || s.etp || s.dp || s.micro_batch || s.recompute || s.recompute_modules ||
         s.optimizer_sharding ||
         s.first_stage_layers || s.last_stage_layers || s.embedding_in_split || s.loss_in_split;
}

SearchOptions without_fixed_dims(SearchOptions s) {
  s.tp = s.cp = s.pp = s.vpp = s.ep = s.etp = s.dp = s.micro_batch = s.first_stage_layers = s.last_stage_layers = std::nullopt;
  s.embedding_in_split = s.loss_in_split = std::nullopt;
  s.recompute = std::nullopt;
  s.recompute_modules = std::nullopt;
  s.optimizer_sharding = std::nullopt;
  return s;
}

TrainingRun training_run(const RunOptions& o) {
  TrainingRun run;
  run.global_batch = o.global_batch;
  run.seq_len = o.seq_len;
  run.tokens = o.tokens;
  run.precision = parse_precision(o.precision, "--precision", "");
  run.attention = parse_attention_kernel(o.attention, "--attention", "");
  run.overlap = parse_comm_overlap(o.comm_overlap, "--comm-overlap", "");
  run.grad_accumulation_fusion = !o.no_grad_accumulation_fusion;
  run.grad_reduce_in_bf16 = o.grad_reduce_in_bf16;
  run.adam_moments_in_bf16 = o.adam_moments_in_bf16;
  run.tp_comm_sms = o.tp_comm_sms;
  run.ep_dispatcher = parse_ep_dispatcher(o.ep_dispatcher, "--ep-dispatcher", "");
  run.flex_dispatcher_sms = o.flex_dispatcher_sms;
  run.fp8_recipe = parse_fp8_recipe(o.fp8_recipe, "--fp8-recipe", "");
  run.hidden_dropout = o.hidden_dropout;
  run.attention_dropout = o.attention_dropout;
  run.router_fusion = o.router_fusion;
  run.router_balancing = parse_router_balancing(o.router_balancing, "--router-balancing", "");
  run.routing_skew = o.routing_skew;
  run.moe_capacity_factor = o.moe_capacity_factor;
  run.memory_headroom = o.memory_headroom;
  validate(run, "options");
  return run;
}

std::string header(const ModelConfig& m, const TrainingRun& run, const SearchOptions& s, bool devices = true) {
  std::string objective = to_string(s.objective);
  if (s.objective == Objective::kMinCostDeadline) objective += " (" + format_count(s.deadline_days) + " days)";
  if (s.objective == Objective::kMinTimeBudget) objective += " (" + format_count(s.budget) + ")";
  return m.name + " pre-training, " + format_count(run.tokens) + " tokens, global batch " +
         std::to_string(run.global_batch) + " x " + std::to_string(run.seq_len) + ", " + to_string(run.precision) +
         (devices ? ", devices " + std::to_string(s.devices.min) + ".." + std::to_string(s.devices.max) : "") + ", objective " +
         objective + ", routing skew " + format_count(run.routing_skew) + "\n";
}

// Why a search returned nothing, in one line.
std::string no_layout_reason(const SearchResult& r) {
  std::string reason = "no feasible layout";
  std::string sep = ": ";
  for (int i = static_cast<int>(Constraint::kCount) - 1; i >= 0; --i) {
    if (r.rejected[i] == 0) continue;
    reason += sep + to_string(static_cast<Constraint>(i)) + " removed " + std::to_string(r.rejected[i]) +
              " (e.g. " + r.example[i] + ")";
    sep = "; ";
    if (static_cast<Constraint>(i) <= Constraint::kDevices) break;  // the last rule that bit says enough
  }
  return reason;
}

void write_plan_if_asked(const RunOptions& o, const Plan& plan, std::ostream& out) {
  if (o.out.empty()) return;
  save_plan(plan, o.out);
  if (!o.json) out << "plan written to " << o.out << "\n";
}

// The analytic figures at the top level; the simulation's beside them when refined.
json candidate_json(const std::string& hardware, const Candidate& c) {
  json j = summary_json(hardware, c.layout, c.cost);
  if (c.simulated) j["simulated"] = summary_json(hardware, c.layout, *c.simulated);
  return j;
}

json result_json(const std::string& hardware, const SearchResult& r) {
  json j;
  j["candidates"] = json::array();
  for (const Candidate& c : r.best) j["candidates"].push_back(candidate_json(hardware, c));
  json rejected;
  for (size_t i = 0; i < r.rejected.size(); ++i) rejected[to_string(static_cast<Constraint>(i))] = r.rejected[i];
  j["rejected"] = rejected;
  j["considered"] = r.considered;
  j["evaluated"] = r.evaluated;
  return j;
}

int cmd_model(const std::string& name, int seq_len, bool as_json, std::ostream& out) {
  ModelConfig m = resolve_model(name);
  if (seq_len > 0) m.seq_len = seq_len;
  if (!as_json) {
    print_model(out, m, m.seq_len);
    return 0;
  }
  const ParamCounts p = param_counts(m);
  json j = model_to_json(m);
  j["total_params"] = p.total;
  j["active_params"] = p.active;
  j["active_params_without_embeddings"] = p.active_without_embeddings();
  j["expert_params"] = p.expert;
  j["embedding_params"] = p.embedding;
  j["lm_head_params"] = p.lm_head;
  j["training_flops_per_token"] = training_flops_per_token(m, m.seq_len);
  out << j.dump(2) << "\n";
  return 0;
}

// `plan --pool ...`: device pools, from options or a file.
struct PoolOptions {
  std::vector<std::string> pools, links, exchange_rates;
  std::string file, currency;
  std::string strategy;  // write the best plan of this strategy instead of the best overall
  bool given() const { return !pools.empty() || !file.empty(); }
};

PoolsSpec pools_spec(const PoolOptions& o) {
  if (!o.file.empty() && !o.pools.empty()) throw input_error("--pools", "", "give pools in a file or with --pool, not both");
  PoolsSpec spec;
  if (!o.file.empty()) spec = load_pools_file(o.file);
  add_pool_options(spec, o.pools, o.links);
  for (const std::string& text : o.exchange_rates) spec.exchange_rates.insert(parse_exchange_rate_option(text));
  if (!o.currency.empty()) spec.currency = o.currency;
  validate(spec);
  return spec;
}

// One argument line per Megatron-LM job of the plan (see megatron_jobs).
void print_pool_megatron(const Plan& plan, std::ostream& out) {
  const std::vector<MegatronJob> jobs = megatron_jobs(plan);
  if (jobs.empty()) {
    out << "megatron: none (Megatron-LM runs one device type per job; " << to_string(plan.mixed->strategy)
        << " needs a heterogeneous trainer)\n";
  }
  for (const MegatronJob& job : jobs) {
    out << "megatron" << (job.pool.empty() ? "" : " (" + job.pool + ")") << ":";
    for (const std::string& arg : job.args) out << " " << arg;
    out << "\n";
  }
}

int cmd_plan_pools(const RunOptions& o, const PoolOptions& po, bool megatron, std::ostream& out) {
  const ModelConfig model = resolve_model(o.model);
  const TrainingRun run = training_run(o);
  SearchOptions options = search_options(o);
  if (has_fixed_dims(options)) throw input_error("--pool", "", "mixed plans choose each pool's layout; drop the fixed dimensions");
  if (o.refine > 0) throw input_error("--refine", "", "does not apply to plans over pools yet (simulate the written plan)");
  const PoolSet set = resolve_pools(pools_spec(po), run.precision);
  const PoolSearchResult result = plan_pools(model, run, options, set);
  const MixedCandidate* chosen = result.mixed.empty() ? nullptr : &result.mixed.front();
  if (!po.strategy.empty()) {
    const PoolStrategy wanted = parse_pool_strategy(po.strategy, "--strategy", "");
    chosen = nullptr;
    for (const MixedCandidate& c : result.mixed) {
      if (c.plan.strategy == wanted) chosen = &c;
    }
    if (!chosen) throw input_error("--strategy", "", "no " + po.strategy + " plan on these pools meets the objective");
  }
  const bool mixed = !po.strategy.empty() || mixed_wins(result, options.objective);
  if (!mixed && result.best_single < 0) throw input_error("--pool", "", "no plan on these pools meets the objective");
  std::optional<CostModel> single;
  if (!mixed) single.emplace(model, run, set.pools[result.best_single].profile);
  const Plan plan = mixed ? make_mixed_plan(model, run, *chosen, options.objective)
                          : make_plan(*single, result.single[result.best_single], options.objective);
  if (o.json) {
    out << pool_plans_json(set, result, options.objective).dump(2) << "\n";
  } else {
    out << header(model, run, options, false);
    print_pools(out, set);
    print_pool_plans(out, set, result, options.objective);
    if (chosen) print_mixed_detail(out, *chosen);
    if (megatron) print_pool_megatron(plan, out);
  }
  write_plan_if_asked(o, plan, out);
  return 0;
}

int cmd_plan(const RunOptions& o, const std::string& profile_name, bool megatron, std::ostream& out) {
  const ModelConfig model = resolve_model(o.model);
  const TrainingRun run = training_run(o);
  const SearchOptions options = search_options(o);
  const HardwareProfile profile = resolve_profile(profile_name);
  const CostModel cost(model, run, profile);
  if (o.refine < 0) throw input_error("--refine", "", "must be >= 0");
  SearchOptions wide = options;
  wide.top_k = std::max(options.top_k, o.refine);
  SearchResult result = search(cost, wide);
  // A layout fixed in every dimension is evaluated even when it misses memory, the deadline or the
  // budget: checking the layout one runs today must not need another objective. Only a layout that
  // breaks a structural rule is refused.
  std::vector<std::string> misses;
  const std::optional<Layout> fixed = fixed_layout(options, model.layers);
  if (result.best.empty() && fixed && !violated_constraint(model, run, profile, options.devices, *fixed)) {
    const StepCost c = cost.evaluate(*fixed);
    misses = shortfalls(cost, c, options);
    result.best.push_back(Candidate{*fixed, c, std::nullopt});
  }
  if (result.best.empty()) throw input_error(profile.name, "", no_layout_reason(result));
  if (o.refine > 0) refine(cost, result.best, o.refine, options.objective);
  if (static_cast<int>(result.best.size()) > options.top_k) result.best.resize(options.top_k);
  const Candidate& best = result.best.front();
  const Plan plan = make_plan(cost, best, options.objective);
  std::optional<SearchResult> open;
  if (has_fixed_dims(options)) open = search(cost, without_fixed_dims(options));

  if (o.json) {
    json j = candidate_json(profile.name, best);
    j.update(result_json(profile.name, result));
    if (open && !open->best.empty()) {
      j["unconstrained_best"] = summary_json(profile.name, open->best.front().layout, open->best.front().cost);
    }
    if (megatron) j["megatron_args"] = megatron_args(plan);
    if (!misses.empty()) j["misses"] = misses;
    out << j.dump(2) << "\n";
  } else {
    out << header(model, run, options);
    std::vector<TableRow> rows;
    for (const Candidate& c : result.best) {
      std::string note;
      if (c.simulated) {
        note = "simulated step " + format_seconds(c.simulated->step_time_s) + ", cost " +
               format_count(c.simulated->cost) + " " + c.simulated->currency;
      }
      rows.push_back({profile.name, &c, note});
    }
    for (const std::string& miss : misses) rows.front().note += (rows.front().note.empty() ? "<- misses " : "; ") + miss;
    if (open && !open->best.empty()) rows.push_back({profile.name, &open->best.front(), "<- best without your fixed dimensions"});
    print_plan_table(out, rows);
    print_breakdown(out, best);
    const Recommendation& r = plan.recommended;
    char line[256];
    std::snprintf(line, sizeof line,
                  "recommended for %.3g FLOPs: global batch %d x %d tokens, peak learning rate %.2e (%s)\n",
                  r.compute_flops, r.global_batch, run.seq_len, r.peak_lr, r.source.c_str());
    out << line;
    print_rejections(out, result);
    if (megatron) {
      out << "megatron:";
      for (const std::string& arg : megatron_args(plan)) out << " " << arg;
      out << "\n";
    }
  }
  write_plan_if_asked(o, plan, out);
  return 0;
}

int cmd_compare(const RunOptions& o, const std::string& profile_list, std::ostream& out) {
  const ModelConfig model = resolve_model(o.model);
  const TrainingRun run = training_run(o);
  const SearchOptions options = search_options(o);
  const Comparison c = compare_profiles(model, run, options, split_list(profile_list), o.refine);
  for (const ProfileResult& e : c.entries) {
    if (!e.unsupported.empty()) throw InputError(e.unsupported);
  }
  if (o.json) {
    json j;
    j["entries"] = json::array();
    for (size_t i = 0; i < c.entries.size(); ++i) {
      const ProfileResult& e = c.entries[i];
      json entry = e.top() ? candidate_json(e.profile.name, *e.top())
                           : json{{"hardware", e.profile.name}, {"error", no_layout_reason(e.result)}};
      entry["best"] = static_cast<int>(i) == c.best;
      j["entries"].push_back(entry);
    }
    out << j.dump(2) << "\n";
  } else {
    out << header(model, run, options);
    std::vector<TableRow> rows;
    for (size_t i = 0; i < c.entries.size(); ++i) {
      const ProfileResult& e = c.entries[i];
      const Candidate* top = e.top();
      if (!top) {
        rows.push_back({e.profile.name, nullptr, no_layout_reason(e.result)});
        continue;
      }
      std::string note = static_cast<int>(i) == c.best ? "<- best" : "";
      if (top->simulated) {
        note += (note.empty() ? "" : " ") + std::string("(simulated step ") +
                format_seconds(top->simulated->step_time_s) + ", cost " + format_count(top->simulated->cost) + " " +
                top->simulated->currency + ")";
      }
      rows.push_back({e.profile.name, top, note});
    }
    print_plan_table(out, rows);
  }
  if (c.best < 0) throw input_error("compare", "", "no profile has a feasible layout");
  const ProfileResult& winner = c.entries[c.best];
  write_plan_if_asked(o, make_plan(*winner.cost, *winner.top(), options.objective), out);
  return 0;
}

std::string joined_names(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : ",") + n;
  return out;
}

std::string printf_percent(double fraction) {
  char text[32];
  std::snprintf(text, sizeof text, "%.1f%%", 100.0 * fraction);
  return text;
}

int cmd_simulate(const std::string& plan_path, const std::string& profile_override, const std::string& trace,
                 bool as_json, std::ostream& out) {
  const Plan plan = load_plan(plan_path);
  if (plan.mixed) {
    if (!profile_override.empty()) throw input_error("--profile", "", "applies to single-pool plans; this plan names a profile per pool");
    const MixedSimulation sim = simulate_mixed_plan(plan, plan_path, trace);
    if (as_json) {
      json j = mixed_simulation_json(plan, sim);
      if (!trace.empty()) j["trace"] = trace;
      out << j.dump(2) << "\n";
      return 0;
    }
    print_mixed_simulation(out, plan, sim);
    if (!trace.empty()) out << "trace written to " << trace << " (open in Perfetto)\n";
    return 0;
  }
  const HardwareProfile profile = [&] {
    if (!profile_override.empty()) return resolve_profile(profile_override);
    try {
      return resolve_profile(plan.hardware.profile);
    } catch (const InputError& e) {
      throw input_error(plan_path, "hardware.profile", e.what());
    }
  }();
  const CostModel cost(plan.model, plan.run, profile);
  // A plan edited by hand may hold a layout its model or profile cannot take: say which file.
  if (const auto v = check_structure(plan.model, plan.run, profile, {1, plan.devices()}, plan.layout)) {
    throw input_error(plan_path, "layout", v->message);
  }
  const StepCost analytic = cost.evaluate(plan.layout);
  const SimulationResult sim = simulate_step(cost, plan.layout, {trace});
  const StepCost simulated = simulated_cost(cost, plan.layout, analytic, sim);
  if (as_json) {
    json j = summary_json(profile.name, plan.layout, simulated);
    j["analytic"] = summary_json(profile.name, plan.layout, analytic);
    json devices = json::array();
    for (const DeviceTimes& d : sim.devices) {
      devices.push_back({{"rank", d.rank}, {"busy_s", d.busy_s}, {"comm_s", d.comm_s}, {"bubble_s", d.bubble_s},
                         {"idle_s", d.idle_s}});
    }
    j["devices_simulated"] = sim.simulated_devices;
    j["per_device"] = devices;
    j["critical_rank"] = sim.critical_rank;
    j["messages"] = sim.messages;
    j["simulation_wall_s"] = sim.wall_s;
    j["approximation"] = sim.approximation;
    if (!trace.empty()) j["trace"] = trace;
    out << j.dump(2) << "\n";
    return 0;
  }
  out << plan.model.name << " on " << plan.devices() << " x " << profile.name << ", " << layout_label(plan.layout)
      << "\n";
  out << "simulated step " << format_seconds(sim.step_time_s) << " (analytic " << format_seconds(analytic.step_time_s)
      << "), MFU " << printf_percent(simulated.mfu) << ", " << format_count(simulated.days) << " days, cost "
      << format_count(simulated.cost) << " " << simulated.currency << "\n";
  out << "critical device " << sim.critical_rank << ": compute " << format_seconds(sim.compute_s) << ", exposed";
  // Every kind of exposed communication the step's parts name, in their order.
  const char* separator = " ";
  for (const StepTimePart& part : step_time_parts()) {
    if (!part.exposed) continue;
    out << separator << part.label << " " << format_seconds(sim.exposed_comm_s.*part.exposed);
    separator = ", ";
  }
  out << ", bubble " << format_seconds(sim.bubble_s) << "\n";
  Seconds busy_min = 1e300, busy_max = 0, comm_max = 0, idle_max = 0;
  for (const DeviceTimes& d : sim.devices) {
    busy_min = std::min(busy_min, d.busy_s);
    busy_max = std::max(busy_max, d.busy_s);
    comm_max = std::max(comm_max, d.comm_s);
    idle_max = std::max(idle_max, d.idle_s);
  }
  out << "per device: busy " << format_seconds(busy_min) << " .. " << format_seconds(busy_max) << ", comm up to "
      << format_seconds(comm_max) << ", idle up to " << format_seconds(idle_max) << " (--json lists every device)\n";
  out << sim.approximation << "; " << sim.messages << " messages in " << format_seconds(sim.wall_s) << "\n";
  if (!trace.empty()) out << "trace written to " << trace << " (open in Perfetto)\n";
  return 0;
}

// Where this flopwise lies: flopwise-train is built beside it.
std::filesystem::path program_dir() { return std::filesystem::read_symlink("/proc/self/exe").parent_path(); }

// `flopwise train` hands over to flopwise-train, built beside this binary with the executor:
// the planner never links LibTorch, the executor never links the planner.
std::filesystem::path trainer_program(const std::string& command) {
  const std::filesystem::path trainer = program_dir() / "flopwise-train";
  if (!std::filesystem::exists(trainer)) {
    throw input_error(command, "", "flopwise-train is not built next to " + program_dir().string() +
                                       "/flopwise: configure with -DFLOPWISE_BUILD_EXECUTOR=ON (needs libtorch-dev, libgloo-dev)");
  }
  return trainer;
}

int cmd_train(const std::vector<std::string>& args) {
  const std::filesystem::path trainer = trainer_program("train");
  std::vector<char*> argv{const_cast<char*>(trainer.c_str())};
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  std::cout.flush();
  ::execv(trainer.c_str(), argv.data());
  throw std::runtime_error("cannot start " + trainer.string());
}

struct LaunchCommand {
  std::string plan, out;
  std::string megatron;  // Megatron-LM checkout, or "" for flopwise-train
  bool slurm = false, torchrun = false, k8s = false;
  LaunchOptions options;
};

// The launcher's text on stdout, or in --out (scripts made executable).
int cmd_launch(LaunchCommand c, std::ostream& out) {
  LaunchOptions& o = c.options;
  o.target = c.slurm ? LaunchTarget::kSlurm : c.k8s ? LaunchTarget::kKubernetes : LaunchTarget::kTorchrun;
  if (c.slurm + c.torchrun + c.k8s != 1) throw input_error("launch", "", "give exactly one of --slurm, --torchrun, --k8s");
  if (o.master_port < 1 || o.master_port > 65535) throw input_error("--master-port", "", "must be a TCP port, 1..65535");
  const Plan plan = load_plan(c.plan);
  require_single_pool(plan, c.plan, "launch");
  o.megatron = !c.megatron.empty();
  if (o.megatron) o.program = c.megatron;
  if (o.program.empty()) o.program = default_program(o.target, program_dir().string());
  o.plan_path = std::filesystem::absolute(c.plan).string();
  const std::string text = launcher_text(plan, o);
  if (c.out.empty()) {
    out << text;
    return 0;
  }
  write_launcher(c.out, text, o.target);
  out << "launcher written to " << c.out << "\n";
  return 0;
}

int cmd_validate(const std::string& path, bool as_json, std::ostream& out) {
  const Validation v = validate_runs(path.empty() ? shipped_published_runs()
                                                  : parse_published_runs(read_text_file(path, "runs file"), path));
  if (!as_json) {
    print_validation(out, v);
    return 0;
  }
  json rows = json::array();
  for (const ValidationRow& row : v.rows) {
    rows.push_back({{"name", row.run.name}, {"source", row.run.source}, {"hardware", row.run.profile},
                    {"layout", layout_to_json(row.run.layout)}, {"measured_step_time_s", row.run.measured_step_s},
                    {"predicted_step_time_s", row.predicted_step_s}, {"relative_error", row.relative_error},
                    {"fits_memory", row.predicted.fits_memory()}, {"predicted", step_cost_to_json(row.predicted)}});
  }
  json by_hardware = json::array();
  for (const HardwareErrors& g : errors_by_hardware(v)) {
    by_hardware.push_back({{"hardware", g.profile}, {"runs", g.runs}, {"mean_relative_error", g.mean_error},
                           {"worst_relative_error", g.worst_error}, {"predicted_fast", g.predicted_fast}});
  }
  out << json{{"runs", rows}, {"mean_relative_error", v.mean_error}, {"worst_relative_error", v.worst_error},
              {"by_hardware", by_hardware}}
             .dump(2)
      << "\n";
  return 0;
}

int cmd_scaling(const std::string& path, double compute, bool as_json, std::ostream& out) {
  const ScalingFit fit = path.empty() ? default_scaling() : load_scaling(path);
  if (as_json) {
    json j = {{"name", fit.name}, {"source", fit.source},
              {"batch_tokens", {{"coefficient", fit.batch_tokens.coefficient}, {"exponent", fit.batch_tokens.exponent}}},
              {"learning_rate", {{"coefficient", fit.learning_rate.coefficient}, {"exponent", fit.learning_rate.exponent}}},
              {"batch_residuals_log10", fit.batch_residuals}, {"learning_rate_residuals_log10", fit.learning_rate_residuals}};
    if (compute > 0) {
      j["at"] = {{"compute_flops", compute}, {"batch_tokens", fit.batch_tokens.at(compute)},
                 {"learning_rate", fit.learning_rate.at(compute)}};
    }
    out << j.dump(2) << "\n";
    return 0;
  }
  char line[256];
  out << fit.name << " (" << fit.source << ")\n";
  std::snprintf(line, sizeof line, "batch tokens  B(C) = %.4g * C^%.4f\nlearning rate eta(C) = %.4g * C^%.4f\n",
                fit.batch_tokens.coefficient, fit.batch_tokens.exponent, fit.learning_rate.coefficient,
                fit.learning_rate.exponent);
  out << line;
  for (size_t i = 0; i < fit.optima.size(); ++i) {
    const GridPoint& p = fit.optima[i];
    std::snprintf(line, sizeof line,
                  "  best run at C=%.3g: batch %.4g tokens (residual %+.3f dex), lr %.3g (residual %+.3f dex), loss %.4f\n",
                  p.compute_flops, p.batch_tokens, fit.batch_residuals[i], p.learning_rate,
                  fit.learning_rate_residuals[i], p.loss);
    out << line;
  }
  if (compute > 0) {
    std::snprintf(line, sizeof line, "at C=%.3g FLOPs: batch %.4g tokens, peak learning rate %.3g\n", compute,
                  fit.batch_tokens.at(compute), fit.learning_rate.at(compute));
    out << line;
  }
  return 0;
}

int cmd_profiles(std::ostream& out) {
  for (const std::string& name : builtin_profile_names()) {
    const HardwareProfile p = resolve_profile(name);
    out << name << ": " << p.description << "\n";
  }
  return 0;
}

// Wall time of the step simulation against device count: Ling-Plus on device D, the cheapest
// analytic layout at each size.
void bench_simulation(const ModelConfig& model, const TrainingRun& run, std::ostream& out) {
  const CostModel cost(model, run, resolve_profile("device-D"));
  out << "step simulation (" << model.name << ", device-D):\n";
  out << "  devices  layout                                  simulated  messages   sim step  analytic   wall\n";
  for (int devices : {128, 256, 512, 1024, 2048, 4096}) {
    SearchOptions options;
    options.devices = {devices, devices};
    options.top_k = 1;
    const SearchResult r = search(cost, options);
    if (r.best.empty()) {
      out << "  " << devices << "  no feasible layout\n";
      continue;
    }
    const Candidate& c = r.best.front();
    const SimulationResult sim = simulate_step(cost, c.layout, {});
    char line[256];
    std::snprintf(line, sizeof line, "  %7d  %-*s %9d %9lld %9.2f s %7.2f s %6.2f s\n", devices,
                  kLayoutColumn, layout_label(c.layout).c_str(), sim.simulated_devices, sim.messages, sim.step_time_s,
                  c.cost.step_time_s, sim.wall_s);
    out << line;
  }
}

// The best mixed plan of each strategy, simulated on SimGrid beside its analytic step.
void bench_pools_simulation(const ModelConfig& model, const TrainingRun& run, const PoolSearchResult& r,
                            Objective objective, std::ostream& out) {
  out << "strategy          devices  analytic step  simulated step  sim/analytic  cross-pool analytic / simulated  wall\n";
  for (const MixedCandidate& c : r.mixed) {
    const Plan plan = make_mixed_plan(model, run, c, objective);
    const MixedSimulation sim = simulate_mixed_plan(plan, "bench", "");
    const bool local_sgd = c.plan.strategy == PoolStrategy::kLocalSgd;
    const std::string cross = c.plan.strategy == PoolStrategy::kHeteroPipeline
        ? "    (in the pp and bubble times)"
        : printf_string("%13.3f s / %.3f s%s", local_sgd ? c.plan.sync_s : c.plan.cross_pool_s,
                        local_sgd ? sim.result.sync_s : sim.result.cross_pool_s, local_sgd ? " (sync)" : "       ");
    out << printf_string("%-16s %8d %12.2f s %13.2f s %12.3f  %-33s %5.0f s\n", to_string(c.plan.strategy).c_str(),
                         c.plan.devices(), plan.predicted.step_time_s, sim.simulated.step_time_s,
                         sim.simulated.step_time_s / plan.predicted.step_time_s, cross.c_str(), sim.result.wall_s);
  }
}

// The mixed-pool search on the pools of the Ling report's devices A, C and D (600, 400 and 256,
// A and C joined by a 100 Gb/s link), under the run options' objective; with `simulation`, the
// best plan of each strategy simulated afterwards.
void bench_pools(const RunOptions& o, int repeats, bool simulation, std::ostream& out) {
  const ModelConfig model = resolve_model(o.model);
  const TrainingRun run = training_run(o);
  const SearchOptions options = search_options(o);
  PoolOptions po;
  po.pools = {"device-A:600", "device-C:400", "device-D:256"};
  po.links = {"A-C:100Gb/s,2ms"};
  const PoolSet set = resolve_pools(pools_spec(po), run.precision);
  double best = 1e30;
  PoolSearchResult r;
  for (int i = 0; i < repeats; ++i) {
    r = plan_pools(model, run, options, set);
    best = std::min(best, r.seconds);
    out << "pools " << model.name << " (600 x device-A + 400 x device-C + 256 x device-D, objective "
        << to_string(options.objective) << "): " << r.seconds << " s, mixed plans costed " << r.mixed_costed << ", best "
        << (mixed_wins(r, options.objective) ? to_string(r.mixed.front().plan.strategy) : "single pool") << "\n";
  }
  out << "pools search: best of " << repeats << " runs " << best << " s\n";
  if (simulation) bench_pools_simulation(model, run, r, options.objective, out);
}

// Throughput of the planner itself: the five-device Ling-Plus comparison over 1..8192 devices.
int cmd_bench(const RunOptions& o, int repeats, bool simulation, std::ostream& out) {
  const ModelConfig model = resolve_model(o.model);
  const TrainingRun run = training_run(o);
  const SearchOptions options = search_options(o);
  const std::vector<std::string> names = ling_report_devices();
  double best_wall = 1e30;
  long long considered = 0, evaluated = 0;
  for (int i = 0; i < repeats; ++i) {
    const auto start = std::chrono::steady_clock::now();
    const Comparison c = compare_profiles(model, run, options, names);
    const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    best_wall = std::min(best_wall, wall);
    considered = evaluated = 0;
    for (const ProfileResult& e : c.entries) {
      considered += e.result.considered;
      evaluated += e.result.evaluated;
    }
  }
  // The cost model alone, on the layout the report's Megatron setup suggests for device D.
  const CostModel cost(model, run, resolve_profile("device-D"));
  const Layout layout{2, 8, 1, 8, 64, 1, Recompute::kSelective, true};
  const int calls = 200000;
  double sink = 0;
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < calls; ++i) sink += cost.evaluate(layout).step_time_s;
  const double eval_wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  out << "five-device " << model.name << " comparison (" << joined_names(names) << ", devices " << o.devices
      << "): best of " << repeats << " runs " << best_wall << " s\n";
  out << "  layouts enumerated " << considered << " (" << considered / best_wall << " per s), costed " << evaluated
      << " (" << evaluated / best_wall << " per s)\n";
  out << "cost model alone: " << calls / eval_wall << " evaluations per s (checksum " << sink / calls << ")\n";
  if (simulation) bench_simulation(model, run, out);
  return 0;
}

std::string today() {
  const std::time_t now = std::time(nullptr);
  char date[16];
  std::strftime(date, sizeof date, "%Y-%m-%d", std::gmtime(&now));
  return date;
}

// What `calibrate` fits to: executor traces, or (--published) the published runs on the profile.
struct CalibrateOptions {
  std::vector<std::string> traces;
  std::string profile, out;
  bool report = false;
  bool published = false;
  std::string runs;  // published runs YAML; empty: the shipped set
  std::vector<std::string> held_out;
  bool plan_runs = false;  // run flopwise-train over the designed short runs and fit those
  std::string trace_dir = "flopwise-calibration";
  int ranks = 2;
  RunBudget budget;
};

// --plan-runs: the designed runs, repeated until the fit is tight or the budget is spent.
Calibration calibrate_to_planned_runs(const CalibrateOptions& o, const HardwareProfile& profile, std::ostream& out) {
  if (!o.traces.empty()) throw input_error("--plan-runs", "", "makes its own traces; give no trace files with it");
  if (o.budget.seconds <= 0) throw input_error("--budget", "", "must be a positive number of seconds");
  if (o.budget.target_relative <= 0) throw input_error("--target", "", "must be a positive fraction, e.g. 0.1");
  const std::vector<ShortRun> designed = designed_runs(o.ranks);
  const Trainer trainer{trainer_program("calibrate --plan-runs"), o.trace_dir};
  const PlannedCalibration planned = calibrate_with_runs(profile, trainer, designed, o.budget, out);
  char line[256];
  std::snprintf(line, sizeof line, "%d runs in %d round(s), %.0f s, traces in %s: %s\n", planned.runs, planned.rounds,
                planned.wall, o.trace_dir.c_str(),
                planned.tight ? "every fitted parameter within the target" : "budget spent before every interval was tight");
  out << line;
  return planned.calibration;
}

Calibration calibrate_to_published(const CalibrateOptions& o, const HardwareProfile& profile, std::ostream& out) {
  if (!o.traces.empty()) throw input_error("--published", "", "fits published runs; give no trace files with it");
  if (o.report) throw input_error("--report", "", "reports traced steps; --published prints its own table");
  const std::vector<PublishedRun> runs =
      o.runs.empty() ? shipped_published_runs() : parse_published_runs(read_text_file(o.runs, "published runs"), o.runs);
  const PublishedFit fit = fit_published_runs(profile, runs, o.held_out);
  print_published_fit(out, fit);
  return fit.calibration;
}

int cmd_calibrate(const CalibrateOptions& o, std::ostream& out) {
  std::string source;
  const std::string text = profile_text(o.profile, source);
  const HardwareProfile profile = parse_hardware_profile(text, source);
  if (!o.published && !o.held_out.empty()) throw input_error("--hold-out", "", "applies to --published fits only");
  if (o.published && o.plan_runs) throw input_error("--plan-runs", "", "fits executor runs; --published fits published ones");
  if (o.plan_runs && o.report) throw input_error("--report", "", "reports given trace files; calibrate the planned runs' traces with --report");
  if (!o.published && !o.plan_runs && o.traces.empty()) {
    throw input_error("calibrate", "", "give trace files, --plan-runs or --published");
  }
  std::vector<TracedRun> runs;
  if (!o.published && !o.plan_runs) {
    for (const std::string& path : o.traces) runs.push_back(load_traced_run(path));
  }
  Calibration calibration;
  if (o.published) {
    calibration = calibrate_to_published(o, profile, out);
  } else if (o.plan_runs) {
    calibration = calibrate_to_planned_runs(o, profile, out);
  } else {
    calibration = calibrate(profile, runs);
  }
  if (!o.published) print_fit(out, calibration);
  if (o.report) print_report(out, runs, calibration);
  const std::string& out_path = o.out;
  if (!out_path.empty()) {
    const std::string yaml = calibrated_profile_yaml(text, source, calibration, today());
    std::ofstream file(out_path);
    if (!(file << yaml)) throw input_error(out_path, "", "cannot write the calibrated profile");
    out << "calibrated profile written to " << out_path << "\n";
  }
  return 0;
}

}  // namespace

int run_cli(int argc, const char* const* argv, std::ostream& out, std::ostream& err) {
  CLI::App app{"flopwise: plan, cost and compare Mixture-of-Experts training layouts"};
  app.require_subcommand(1);
  app.set_help_all_flag("--help-all", "all subcommands' options");

  std::string model_name;
  int model_seq = 0;
  bool model_json = false;
  CLI::App* model = app.add_subcommand("model", "parameters and FLOPs of a preset or HF config.json");
  model->add_option("model", model_name, "preset (ling-lite, ling-plus) or path to config.json")->required();
  model->add_option("--seq-len", model_seq, "sequence length for attention FLOPs");
  model->add_flag("--json", model_json, "machine-readable output");

  RunOptions plan_options;
  std::string plan_profile;
  bool plan_megatron = false;
  CLI::App* plan = app.add_subcommand("plan", "best layouts of one model on one hardware profile");
  add_run_options(*plan, plan_options, true);
  plan->add_option("--profile", plan_profile, "built-in profile name or YAML file (or give --pool)");
  plan->add_flag("--megatron", plan_megatron, "also print the best layout as Megatron-LM arguments");
  PoolOptions pool_options;
  plan->add_option("--pool", pool_options.pools, "[NAME=]PROFILE:COUNT, a pool of up to COUNT devices (repeat for more pools)");
  plan->add_option("--pool-link", pool_options.links, "A-B:BANDWIDTH,LATENCY between two pools' clusters, e.g. A-C:100Gb/s,2ms");
  plan->add_option("--pools", pool_options.file, "YAML file of pools, links and exchange rates");
  plan->add_option("--exchange-rate", pool_options.exchange_rates, "CURRENCY=RATE: plan-currency units per unit of CURRENCY");
  plan->add_option("--currency", pool_options.currency, "currency of a plan over pools (default: the first pool's)");
  plan->add_option("--strategy", pool_options.strategy,
                   "with pools: show and write the best plan of this strategy (hetero-dp, hetero-pipeline, local-sgd)");

  RunOptions compare_options;
  std::string compare_profiles = joined_names(ling_report_devices());
  CLI::App* compare = app.add_subcommand("compare", "best layout on each of several hardware profiles");
  add_run_options(*compare, compare_options, false);
  compare->add_option("--profiles", compare_profiles, "comma-separated profile names or files")->capture_default_str();

  app.add_subcommand("profiles", "list the built-in hardware profiles");

  std::string scaling_file;
  double scaling_compute = 0;
  bool scaling_json = false;
  CLI::App* scaling = app.add_subcommand("scaling", "batch-size and learning-rate power laws of compute");
  scaling->add_option("file", scaling_file, "YAML with fit coefficients or grid points (default: the shipped fit)");
  scaling->add_option("--compute", scaling_compute, "also evaluate at this compute budget in FLOPs");
  scaling->add_flag("--json", scaling_json, "machine-readable output");

  std::string validate_file;
  bool validate_json = false;
  CLI::App* validate_cmd = app.add_subcommand("validate", "predict published measured runs and print the errors");
  validate_cmd->add_option("file", validate_file, "YAML of published runs (default: the shipped set)");
  validate_cmd->add_flag("--json", validate_json, "machine-readable output");

  std::string simulate_plan, simulate_profile, simulate_trace;
  bool simulate_json = false;
  CLI::App* simulate = app.add_subcommand("simulate", "simulate one step of a plan on SimGrid");
  simulate->add_option("plan", simulate_plan, "plan JSON written by plan or compare --out")->required();
  simulate->add_option("--profile", simulate_profile, "profile to use instead of the plan's (name or YAML file)");
  simulate->add_option("--trace", simulate_trace, "write the timeline as Chrome trace-event JSON");
  simulate->add_flag("--json", simulate_json, "machine-readable output");

  RunOptions bench_options;
  int bench_repeats = 3;
  CLI::App* bench = app.add_subcommand("bench", "measure the planner's own speed");
  add_run_options(*bench, bench_options, false);
  bench->add_option("--repeats", bench_repeats, "runs of the comparison")->capture_default_str();
  bool bench_simulation_too = false;
  bench->add_flag("--simulation", bench_simulation_too,
                  "also time the step simulation at 128..4096 devices (with --pools: simulate each strategy's best plan)");
  bool bench_pools_only = false;
  bench->add_flag("--pools", bench_pools_only, "instead: time the mixed-pool search (600 A + 400 C + 256 D)");
  bool bench_calibration_only = false, bench_busy = false;
  std::string bench_calibration_profile = "cpu-core";
  bench->add_flag("--calibration", bench_calibration_only,
                  "instead: --repeats repetitions of fitting traced dp2 runs and predicting pp2 and ep2 runs (runs flopwise-train)");
  bench->add_flag("--busy", bench_busy, "--calibration: with a second process keeping one core busy");
  bench->add_option("--calibration-profile", bench_calibration_profile, "--calibration: the profile fitted")->capture_default_str();

  CalibrateOptions calibrate_options;
  CLI::App* calibrate_cmd = app.add_subcommand(
      "calibrate", "fit a profile's efficiencies to executor traces (flopwise train --trace) or to published runs");
  calibrate_cmd->add_option("traces", calibrate_options.traces, "trace JSON files written by flopwise train --trace");
  calibrate_cmd->add_option("--profile", calibrate_options.profile, "profile to start from (name or YAML file)")->required();
  calibrate_cmd->add_option("--out", calibrate_options.out, "write the calibrated profile YAML here");
  calibrate_cmd->add_flag("--report", calibrate_options.report, "per traced step: measured vs predicted before and after the fit");
  calibrate_cmd->add_flag("--published", calibrate_options.published,
                          "fit to the measured step times of the published runs on this profile");
  calibrate_cmd->add_option("--runs", calibrate_options.runs, "published runs YAML for --published (default: the shipped set)");
  calibrate_cmd->add_option("--hold-out", calibrate_options.held_out,
                            "published runs kept out of the fit (default: leave-one-out over all)")
      ->delimiter(',');
  calibrate_cmd->add_flag("--plan-runs", calibrate_options.plan_runs,
                          "run flopwise-train over designed short runs until the intervals are tight (or --budget runs out)");
  calibrate_cmd->add_option("--trace-dir", calibrate_options.trace_dir, "--plan-runs: where plans, traces and logs go")
      ->capture_default_str();
  calibrate_cmd->add_option("--ranks", calibrate_options.ranks, "--plan-runs: ranks per run (one core each)")->capture_default_str();
  calibrate_cmd->add_option("--budget", calibrate_options.budget.seconds, "--plan-runs: seconds of runs at most")->capture_default_str();
  calibrate_cmd->add_option("--target", calibrate_options.budget.target_relative,
                            "--plan-runs: stop when every interval is within this fraction of its value")
      ->capture_default_str();

  LaunchCommand launch_command;
  LaunchOptions& lo = launch_command.options;
  CLI::App* launch = app.add_subcommand("launch", "write the job that runs a plan on its nodes: sbatch script, torchrun lines or PyTorchJob");
  launch->add_option("plan", launch_command.plan, "plan JSON written by plan or compare --out")->required();
  launch->add_flag("--slurm", launch_command.slurm, "an sbatch script: srun starts torchrun on every node");
  launch->add_flag("--torchrun", launch_command.torchrun, "one torchrun command line per node");
  launch->add_flag("--k8s", launch_command.k8s, "a Kubeflow PyTorchJob manifest (with the plan in a ConfigMap)");
  CLI::Option* nodes_option = launch->add_option("--nodes", lo.nodes, "nodes to spread the plan's ranks over (default: the plan's)");
  bool nodes_from_plan = false;
  launch->add_flag("--nodes-from-plan", nodes_from_plan, "the plan's device count over its devices per node (the default)")
      ->excludes(nodes_option);
  launch->add_option("--megatron", launch_command.megatron, "Megatron-LM checkout: run its pretrain_gpt.py with the plan's arguments");
  launch->add_option("--program", lo.program, "flopwise-train to run (default: the one beside this flopwise; --k8s: on the image's PATH)")
      ->excludes("--megatron");
  launch->add_option("--job-name", lo.job_name, "job name (default: flopwise-<model>)");
  launch->add_option("--partition", lo.partition, "Slurm partition");
  launch->add_option("--account", lo.account, "Slurm account");
  launch->add_option("--time", lo.time_limit, "Slurm time limit, e.g. 7-00:00:00");
  launch->add_option("--master-addr", lo.master_addr, "--torchrun: node 0's address (default: $MASTER_ADDR when run)");
  launch->add_option("--master-port", lo.master_port, "rendezvous port")->capture_default_str();
  launch->add_option("--image", lo.image, "--k8s: the container image");
  launch->add_option("--out", launch_command.out, "write here instead of standard output");
  launch->add_option("args", lo.extra_args, "after --: more arguments for the program");

  std::vector<std::string> train_args;
  CLI::App* train = app.add_subcommand("train", "train a plan's model with LibTorch (runs flopwise-train; see its --help)");
  train->allow_extras();
  train->prefix_command();
  train->set_help_flag();  // --help goes to flopwise-train
  try {
    app.parse(argc, argv);
    if (*train) train_args = train->remaining();
  } catch (const CLI::CallForHelp&) {
    out << app.help();
    return 0;
  } catch (const CLI::CallForAllHelp&) {
    out << app.help("", CLI::AppFormatMode::All);
    return 0;
  } catch (const CLI::ParseError& e) {
    err << "flopwise: error: " << e.what() << "\n";
    return 2;
  }
  try {
    if (*model) return cmd_model(model_name, model_seq, model_json, out);
    if (*plan && pool_options.given()) {
      if (!plan_profile.empty()) throw input_error("--profile", "", "give --profile or pools, not both");
      return cmd_plan_pools(plan_options, pool_options, plan_megatron, out);
    }
    if (*plan && plan_profile.empty()) throw input_error("--profile", "", "name a hardware profile (or give --pool)");
    if (*plan && (!pool_options.links.empty() || !pool_options.exchange_rates.empty() || !pool_options.currency.empty() ||
                  !pool_options.strategy.empty())) {
      throw input_error("--pool-link", "", "--pool-link, --exchange-rate, --currency and --strategy need --pool or --pools");
    }
    if (*plan) return cmd_plan(plan_options, plan_profile, plan_megatron, out);
    if (*compare) return cmd_compare(compare_options, compare_profiles, out);
    if (app.got_subcommand("profiles")) return cmd_profiles(out);
    if (*scaling) return cmd_scaling(scaling_file, scaling_compute, scaling_json, out);
    if (*validate_cmd) return cmd_validate(validate_file, validate_json, out);
    if (*simulate) return cmd_simulate(simulate_plan, simulate_profile, simulate_trace, simulate_json, out);
    if (*train) return cmd_train(train_args);
    if (*launch) return cmd_launch(launch_command, out);
    if (*calibrate_cmd) return cmd_calibrate(calibrate_options, out);
    if (*bench && bench_repeats < 1) throw input_error("--repeats", "", "must be at least 1");
    if (*bench && bench_calibration_only) {
      // Loaded and unloaded repetitions keep their traces apart, for a look afterwards.
      const Trainer trainer{trainer_program("bench --calibration"),
                            bench_busy ? "flopwise-bench-calibration/busy" : "flopwise-bench-calibration/idle"};
      bench_calibration(resolve_profile(bench_calibration_profile), trainer, bench_repeats, bench_busy, out);
      return 0;
    }
    if (*bench && bench_busy) throw input_error("--busy", "", "applies to bench --calibration only");
    if (*bench && bench_pools_only) {
      bench_pools(bench_options, bench_repeats, bench_simulation_too, out);
      return 0;
    }
    if (*bench) return cmd_bench(bench_options, bench_repeats, bench_simulation_too, out);
  } catch (const InputError& e) {
    // One line, whatever a quoted input value held.
    std::string message = e.what();
    std::replace(message.begin(), message.end(), '\n', ' ');
    err << "flopwise: error: " << message << "\n";
    return 2;
  } catch (const std::exception& e) {
    err << "flopwise: internal error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}

}  // namespace flopwise
