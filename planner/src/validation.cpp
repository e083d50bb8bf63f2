#include "flopwise/validation.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ostream>

#include "flopwise/catalog.hpp"
#include "flopwise/cost_model.hpp"
#include "flopwise/error.hpp"
#include "flopwise/model_import.hpp"
#include "flopwise/report.hpp"
#include "flopwise/yaml_reader.hpp"

namespace flopwise {

const std::vector<std::pair<std::string, std::string>>& builtin_validation_texts();

namespace {

int read_ffn(const YamlFields& f) {
  const int ffn = f.integer("ffn", 1);
  const std::string mlp = f.text("mlp");
  if (mlp == "swiglu") return ffn;
  // A GELU MLP (2 matrices of h x ffn) has the weights and FLOPs of a SwiGLU MLP (3 matrices) of
  // 2/3 the width; flopwise models the latter.
  if (mlp == "gelu") return static_cast<int>(std::lround(2.0 * ffn / 3.0));
  throw input_error(f.source(), f.path("mlp"), "unknown MLP '" + mlp + "' (expected gelu or swiglu)");
}

// Routed experts (SwiGLU, as every MoE family flopwise imports): experts, top_k and expert_ffn,
// optional shared experts and leading dense layers (those need the dense `ffn`).
void read_experts(const YamlFields& f, ModelConfig& m) {
  m.routed_experts = f.integer("experts", 1);
  m.top_k = f.integer("top_k", 1);  // validate(ModelConfig) holds it to at most the experts
  m.expert_ffn = f.integer("expert_ffn", 1);
  m.shared_experts = f.has("shared_experts") ? f.integer("shared_experts", 0) : 0;
  if (m.shared_experts > 0) m.shared_expert_ffn = f.integer("shared_expert_ffn", 1);
  m.first_dense_layers = f.has("first_dense_layers") ? f.integer("first_dense_layers", 0) : 0;
  if (m.first_dense_layers >= m.layers) {
    throw input_error(f.source(), f.path("first_dense_layers"), "must leave at least one MoE layer");
  }
}

// Multi-head latent attention (DeepSeek-V2/V3), named as in the HF config: head_dim is then the
// non-rotary part of a query or key head (qk_nope_head_dim), as model_import reads it.
void read_latent_attention(const YamlFields& f, ModelConfig& m) {
  m.q_lora_rank = f.has("q_lora_rank") ? f.integer("q_lora_rank", 0) : 0;
  m.kv_lora_rank = f.integer("kv_lora_rank", 1);
  m.rope_head_dim = f.integer("rope_head_dim", 1);
  m.v_head_dim = f.integer("v_head_dim", 1);
  if (!f.has("head_dim")) throw input_error(f.source(), f.path("head_dim"), "is required with kv_lora_rank");
}

// Sliding-window attention (gpt-oss's banded layers, Mistral): both fields or neither; validate
// (ModelConfig) holds the windowed layers to the model's.
void read_attention_window(const YamlFields& f, ModelConfig& m) {
  m.attention_window = f.integer("attention_window", 1);
  m.windowed_layers = f.integer("windowed_layers", 1);
}

ModelConfig read_model(const YamlFields& f, const std::string& name) {
  f.allow_only({"layers", "hidden", "heads", "kv_heads", "head_dim", "vocab", "mlp", "ffn", "experts", "top_k",
                "expert_ffn", "shared_experts", "shared_expert_ffn", "first_dense_layers", "q_lora_rank",
                "kv_lora_rank", "rope_head_dim", "v_head_dim", "mtp_layers", "attention_window", "windowed_layers",
                "position_embedding", "qk_norm_weights"});
  ModelConfig m;
  m.name = name;
  m.family = "published";
  m.layers = f.integer("layers", 1);
  m.hidden = f.integer("hidden", 1);
  m.heads = f.integer("heads", 1);
  m.kv_heads = f.integer("kv_heads", 1);
  m.vocab = f.integer("vocab", 1);
  if (f.has("head_dim")) {
    m.head_dim = f.integer("head_dim", 1);
  } else if (m.hidden % m.heads != 0) {
    throw input_error(f.source(), f.path("heads"), "must divide hidden (or give head_dim)");
  } else {
    m.head_dim = m.hidden / m.heads;
  }
  if (f.has("kv_lora_rank")) read_latent_attention(f, m);
  if (f.has("attention_window") || f.has("windowed_layers")) read_attention_window(f, m);
  if (f.has("mtp_layers")) m.mtp_layers = f.integer("mtp_layers", 0);
  if (f.has("qk_norm_weights")) m.qk_norm_weights = f.integer("qk_norm_weights", 0);
  if (f.has("position_embedding")) {
    const std::string kind = f.text("position_embedding");
    if (kind != "rope" && kind != "learned") {
      throw input_error(f.source(), f.path("position_embedding"), "unknown '" + kind + "' (expected rope or learned)");
    }
    m.learned_positions = kind == "learned";
  }
  if (f.has("experts")) read_experts(f, m);
  if (m.dense_layers() > 0 || f.has("ffn")) m.dense_ffn = read_ffn(f);
  return m;
}

Layout read_layout(const YamlFields& f) {
  f.allow_only({"tp", "pp", "vpp", "cp", "ep", "etp", "dp", "micro_batch", "recompute", "recompute_modules",
                "optimizer_sharding", "sequence_parallel", "first_stage_layers", "last_stage_layers",
                "embedding_in_split", "loss_in_split"});
  Layout l;
  l.tp = f.integer("tp", 1);
  if (f.has("cp")) l.cp = f.integer("cp", 1);
  l.pp = f.integer("pp", 1);
  l.vpp = f.integer("vpp", 1);
  l.ep = f.has("ep") ? f.integer("ep", 1) : 1;
  if (f.has("etp")) l.etp = fold_expert_tp(f.integer("etp", 1), l.tp);
  l.dp = f.integer("dp", 1);
  l.micro_batch = f.integer("micro_batch", 1);
  l.recompute = parse_recompute(f.text("recompute"), f.source(), f.path("recompute"));
  if (f.has("recompute_modules")) {
    l.recompute_modules = parse_recompute_modules(f.text("recompute_modules"), f.source(), f.path("recompute_modules"));
  }
  l.optimizer_sharding = f.boolean("optimizer_sharding");
  l.sequence_parallel = l.tp == 1 || f.boolean("sequence_parallel");
  if (f.has("first_stage_layers")) l.first_stage_layers = f.integer("first_stage_layers", 1);
  if (f.has("last_stage_layers")) l.last_stage_layers = f.integer("last_stage_layers", 1);
  if (f.has("embedding_in_split")) l.embedding_in_split = f.boolean("embedding_in_split");
  if (f.has("loss_in_split")) l.loss_in_split = f.boolean("loss_in_split");
  return l;
}

// What a source measured, as one of the figures sources publish; each converts to the step time:
// - measured_step_time: the step's wall time ("0.45 s");
// - measured_tokens_per_s_per_device: tokens of a step over its time, per device;
// - measured_tflops_per_device: model TFLOP/s per device, counted as flopwise counts a step's
//   FLOPs (training_flops_per_token: causal attention; a source counting it whole claims more);
// - measured_mfu: those FLOPs over the devices' dense peak at the run's precision, as the MFU
//   flopwise prints.
constexpr const char* kMeasuredFields[] = {"measured_step_time", "measured_tokens_per_s_per_device",
                                           "measured_tflops_per_device", "measured_mfu"};

Seconds read_measured_step(const YamlFields& f, const PublishedRun& r) {
  std::vector<std::string> given;
  for (const char* key : kMeasuredFields) {
    if (f.has(key)) given.push_back(key);
  }
  if (given.size() != 1) {
    throw input_error(f.source(), f.path(given.empty() ? "measured_step_time" : given[1]),
                      given.empty() ? "missing field (or measured_tokens_per_s_per_device, measured_tflops_per_device, "
                                      "measured_mfu)"
                                    : "give one measured figure, not also " + given[0]);
  }
  const std::string& key = given.front();
  const double devices = r.layout.devices();
  const double tokens = r.run.tokens_per_step();
  const Flops flops = tokens * training_flops_per_token(r.model, r.run.seq_len);
  if (key == "measured_step_time") return f.quantity(key, Dimension::kTime);
  if (key == "measured_tokens_per_s_per_device") return tokens / (f.number(key, 1e-9, 1e12) * devices);
  if (key == "measured_tflops_per_device") return flops / (f.number(key, 1e-9, 1e9) * 1e12 * devices);
  const FlopsPerSecond peak = [&] {
    try {
      return resolve_profile(r.profile).device.peak_flops(r.run.precision);
    } catch (const InputError& e) {
      throw input_error(f.source(), f.path("hardware"), e.what());
    }
  }();
  return flops / (f.number(key, 1e-9, 1.0) * peak * devices);
}

PublishedRun read_run(const YamlFields& f) {
  f.allow_only({"name", "source", "model", "hardware", "precision", "attention", "comm_overlap",
                "grad_accumulation_fusion", "grad_reduce_in_bf16", "adam_moments_in_bf16", "tp_comm_sms",
                "ep_dispatcher", "flex_dispatcher_sms", "fp8_recipe", "router_fusion", "router_balancing", "hidden_dropout", "attention_dropout", "seq_len", "global_batch", "layout", "measured_step_time",
                "measured_tokens_per_s_per_device", "measured_tflops_per_device", "measured_mfu"});
  PublishedRun r;
  r.name = f.text("name");
  r.source = f.text("source");
  r.profile = f.text("hardware");
  // A model by shape, or (a string) a preset or HF config.json as `--model` takes it.
  if (f.has("model") && f.node()["model"].IsScalar()) {
    try {
      r.model = resolve_model(f.text("model"));
    } catch (const InputError& e) {
      throw input_error(f.source(), f.path("model"), e.what());
    }
  } else {
    r.model = read_model(f.section("model"), r.name);
  }
  r.run.precision = parse_precision(f.text("precision"), f.source(), f.path("precision"));
  r.run.attention = parse_attention_kernel(f.text("attention"), f.source(), f.path("attention"));
  r.run.overlap = parse_comm_overlap(f.text("comm_overlap"), f.source(), f.path("comm_overlap"));
  if (f.has("grad_accumulation_fusion")) r.run.grad_accumulation_fusion = f.boolean("grad_accumulation_fusion");
  if (f.has("grad_reduce_in_bf16")) r.run.grad_reduce_in_bf16 = f.boolean("grad_reduce_in_bf16");
  if (f.has("adam_moments_in_bf16")) r.run.adam_moments_in_bf16 = f.boolean("adam_moments_in_bf16");
  if (f.has("tp_comm_sms")) r.run.tp_comm_sms = f.integer("tp_comm_sms", 0);
  if (f.has("ep_dispatcher")) {
    r.run.ep_dispatcher = parse_ep_dispatcher(f.text("ep_dispatcher"), f.source(), f.path("ep_dispatcher"));
  }
  if (f.has("flex_dispatcher_sms")) r.run.flex_dispatcher_sms = f.integer("flex_dispatcher_sms", 1);
  if (f.has("fp8_recipe")) r.run.fp8_recipe = parse_fp8_recipe(f.text("fp8_recipe"), f.source(), f.path("fp8_recipe"));
  if (f.has("router_fusion")) r.run.router_fusion = f.boolean("router_fusion");
  if (f.has("hidden_dropout")) r.run.hidden_dropout = f.number("hidden_dropout", 0.0, 0.99);
  if (f.has("attention_dropout")) r.run.attention_dropout = f.number("attention_dropout", 0.0, 0.99);
  if (f.has("router_balancing")) {
    r.run.router_balancing = parse_router_balancing(f.text("router_balancing"), f.source(), f.path("router_balancing"));
  }
  r.run.seq_len = f.integer("seq_len", 1);
  r.model.seq_len = r.run.seq_len;
  r.run.global_batch = f.integer("global_batch", 1);
  r.layout = read_layout(f.section("layout"));
  r.file = f.source();
  r.path = f.path("");
  validate(r.model, f.source() + ": " + f.path("model"));
  validate(r.run, f.source());
  r.measured_step_s = read_measured_step(f, r);
  if (!(r.measured_step_s > 0)) throw input_error(f.source(), f.path("measured_step_time"), "must be positive");
  return r;
}

}  // namespace

std::vector<PublishedRun> parse_published_runs(const std::string& yaml_text, const std::string& source) {
  const YamlFields root(parse_yaml(yaml_text, source), source, "");
  std::vector<PublishedRun> runs;
  for (const YamlFields& f : root.list("runs")) runs.push_back(read_run(f));
  if (runs.empty()) throw input_error(source, "runs", "lists no run");
  return runs;
}

std::vector<PublishedRun> shipped_published_runs() {
  const auto& [name, text] = builtin_validation_texts().front();
  return parse_published_runs(text, "built-in " + name);
}

Validation validate_runs(const std::vector<PublishedRun>& runs) {
  Validation v;
  for (const PublishedRun& r : runs) {
    const HardwareProfile profile = [&] {
      try {
        return resolve_profile(r.profile);
      } catch (const InputError& e) {
        throw input_error(r.file, r.path + "hardware", e.what());
      }
    }();
    const DeviceRange exactly{r.layout.devices(), r.layout.devices()};
    if (const auto violation = check_structure(r.model, r.run, profile, exactly, r.layout)) {
      throw input_error(r.file, r.path + "layout", violation->message);
    }
    if (auto why = precision_unsupported(profile, r.run.precision)) throw input_error(r.file, r.path + "precision", *why);
    const CostModel cost(r.model, r.run, profile);
    const StepCost predicted = cost.evaluate(r.layout);
    ValidationRow row{r, predicted.step_time_s, predicted, 0, profile.device.memory_bytes};
    row.relative_error = std::abs(row.predicted_step_s - r.measured_step_s) / r.measured_step_s;
    v.mean_error += row.relative_error / runs.size();
    v.worst_error = std::max(v.worst_error, row.relative_error);
    v.rows.push_back(row);
  }
  return v;
}

std::vector<HardwareErrors> errors_by_hardware(const Validation& v) {
  std::vector<HardwareErrors> groups;
  for (const ValidationRow& row : v.rows) {
    auto group = std::find_if(groups.begin(), groups.end(), [&](const HardwareErrors& g) { return g.profile == row.run.profile; });
    if (group == groups.end()) group = groups.insert(groups.end(), HardwareErrors{row.run.profile});
    group->mean_error += row.relative_error;  // summed here, divided below
    group->worst_error = std::max(group->worst_error, row.relative_error);
    group->predicted_fast += row.predicted_step_s < row.run.measured_step_s;
    ++group->runs;
  }
  for (HardwareErrors& g : groups) g.mean_error /= g.runs;
  return groups;
}

void print_validation(std::ostream& out, const Validation& v) {
  out << printf_string("%-22s %-10s %-*s %10s %10s %7s\n", "run", "hardware", kLayoutColumn, "layout", "measured",
                       "predicted", "error");
  int over_headroom = 0, over_device = 0;
  for (const ValidationRow& row : v.rows) {
    out << printf_string("%-22s %-10s %-*s %9.2fs %9.2fs %6.1f%%", row.run.name.c_str(), row.run.profile.c_str(),
                         kLayoutColumn, layout_label(row.run.layout).c_str(), row.run.measured_step_s,
                         row.predicted_step_s, 100 * row.relative_error);
    // The run fitted its devices: sized over the device's whole memory, flopwise's memory model errs
    // high there; sized only into the planning headroom, it may not.
    if (!row.predicted.fits_memory()) {
      const Bytes sized = row.predicted.memory_bytes.total();
      const Bytes device = row.device_memory_bytes;
      ++(sized > device ? over_device : over_headroom);
      out << printf_string("  sized %.1f GiB > %.1f usable (%.1f on the device)", sized / kGiB,
                           row.predicted.usable_memory_bytes / kGiB, device / kGiB);
    }
    out << "\n";
  }
  out << printf_string("%zu runs: mean |error| %.1f%%, worst %.1f%%\n", v.rows.size(), 100 * v.mean_error,
                       100 * v.worst_error);
  for (const HardwareErrors& g : errors_by_hardware(v)) {
    out << printf_string("  %-10s %2d runs: mean |error| %.1f%%, worst %.1f%%, %d predicted faster than measured\n",
                         g.profile.c_str(), g.runs, 100 * g.mean_error, 100 * g.worst_error, g.predicted_fast);
  }
  auto runs = [](int n) { return std::to_string(n) + (n == 1 ? " run" : " runs"); };
  if (over_device > 0) {
    out << "sized over the whole memory of the devices they ran on (flopwise's memory model errs high there): "
        << runs(over_device) << "\n";
  }
  if (over_headroom > 0) {
    out << "sized within their devices but over the planning headroom (the device's memory less memory_headroom; "
        << "a search passes over such layouts): " << runs(over_headroom) << "\n";
  }
  for (const ValidationRow& row : v.rows) out << "  " << row.run.name << ": " << row.run.source << "\n";
}

}  // namespace flopwise
