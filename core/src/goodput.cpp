#include "flopwise/goodput.hpp"

#include <algorithm>
#include <cmath>

#include "flopwise/error.hpp"
#include "flopwise/json_reader.hpp"
#include "flopwise/yaml_reader.hpp"

namespace flopwise {
namespace {

BytesPerSecond positive_bandwidth(const YamlFields& f, const std::string& key, BytesPerSecond fallback) {
  if (!f.has(key)) return fallback;
  const BytesPerSecond value = f.quantity(key, Dimension::kBandwidth);
  if (!(value > 0)) throw input_error(f.source(), f.path(key), "must be a positive bandwidth");
  return value;
}

}  // namespace

Reliability read_reliability(const YamlFields& f) {
  f.allow_only({"interruptions_per_1000_devices_per_day", "interruptions_per_1000_nodes_per_day", "restart", "node_write_bandwidth", "node_read_bandwidth",
                "async_checkpoint", "snapshot_bandwidth", "checkpoint_interval"});
  Reliability r;
  r.from_profile = true;
  r.source = f.source();
  if (f.has("checkpoint_interval")) {
    r.fixed_interval_s = f.quantity("checkpoint_interval", Dimension::kTime);
    if (!(r.fixed_interval_s > 0)) throw input_error(f.source(), f.path("checkpoint_interval"), "must be a positive time");
  }
  if (f.has("interruptions_per_1000_devices_per_day")) {
    // Above 1,000 per 1,000 devices a day every device fails daily: a typo, not a cluster.
    r.interruptions_per_device_day = f.number("interruptions_per_1000_devices_per_day", 0.0, 1000.0) / 1000.0;
  }
  if (f.has("interruptions_per_1000_nodes_per_day")) {
    r.interruptions_per_node_day = f.number("interruptions_per_1000_nodes_per_day", 0.0, 1000.0) / 1000.0;
  }
  if (f.has("restart")) {
    r.restart_s = f.quantity("restart", Dimension::kTime);
    if (r.restart_s < 0 || r.restart_s > 30 * kSecondsPerDay) {
      throw input_error(f.source(), f.path("restart"), "must be between 0 and 30 days");
    }
  }
  r.node_write_bytes_per_s = positive_bandwidth(f, "node_write_bandwidth", r.node_write_bytes_per_s);
  r.node_read_bytes_per_s = positive_bandwidth(f, "node_read_bandwidth", r.node_read_bytes_per_s);
  if (f.has("async_checkpoint")) r.async_checkpoint = f.boolean("async_checkpoint");
  r.snapshot_bytes_per_s = positive_bandwidth(f, "snapshot_bandwidth", r.snapshot_bytes_per_s);
  return r;
}

CheckpointCost checkpoint_cost(Bytes checkpoint_bytes, Bytes device_bytes, int nodes, const Reliability& r) {
  CheckpointCost c;
  c.bytes = checkpoint_bytes;
  c.write_s = checkpoint_bytes / (nodes * r.node_write_bytes_per_s);
  c.load_s = checkpoint_bytes / (nodes * r.node_read_bytes_per_s);
  c.blocking_s = r.async_checkpoint ? device_bytes / r.snapshot_bytes_per_s : c.write_s;
  return c;
}

Seconds daly_interval(Seconds d, Seconds m) {
  if (d >= 2 * m) return m;
  const double x = d / (2 * m);
  return std::sqrt(2 * d * m) * (1 + std::sqrt(x) / 3 + x / 9) - d;
}

Goodput goodput(Seconds step_s, int devices, int nodes, const CheckpointCost& checkpoint, const Reliability& r) {
  Goodput g;
  g.checkpoint = checkpoint;
  const double failures_per_s =
      (r.interruptions_per_device_day * devices + r.interruptions_per_node_day * nodes) / kSecondsPerDay;
  g.mtbf_s = failures_per_s > 0 ? 1 / failures_per_s : INFINITY;
  if (r.fixed_interval_s > 0 && r.fixed_interval_s < step_s) {
    throw input_error(r.source, "reliability.checkpoint_interval",
                      std::to_string(r.fixed_interval_s) + " s is shorter than one training step (" + std::to_string(step_s) + " s)");
  }
  Seconds interval = r.fixed_interval_s > 0     ? r.fixed_interval_s
                     : std::isinf(g.mtbf_s)     ? INFINITY
                                                : daly_interval(checkpoint.blocking_s, g.mtbf_s);
  // An async save must finish writing before the next one starts.
  if (r.async_checkpoint) interval = std::max(interval, checkpoint.write_s);
  const double steps = std::isinf(interval) ? 1e9 : std::max(1.0, std::round(interval / step_s));
  g.checkpoint_every_steps = static_cast<int>(std::min(steps, 1e9));
  g.interval_s = g.checkpoint_every_steps * step_s;
  const Seconds period = g.interval_s + checkpoint.blocking_s;
  g.lost_per_failure_s = r.restart_s + checkpoint.load_s + period / 2 + (r.async_checkpoint ? checkpoint.write_s : 0);
  const double useful = std::isinf(g.mtbf_s) ? 1 : 1 - g.lost_per_failure_s / g.mtbf_s;
  g.fraction = std::max(0.0, g.interval_s / period * useful);
  return g;
}

nlohmann::json to_json(const Goodput& g) {
  return {{"mtbf_s", std::isinf(g.mtbf_s) ? nlohmann::json(nullptr) : nlohmann::json(g.mtbf_s)},  // null: never fails
          {"checkpoint_every_steps", g.checkpoint_every_steps},
          {"checkpoint_interval_s", g.interval_s},
          {"checkpoint_bytes", g.checkpoint.bytes},
          {"checkpoint_write_s", g.checkpoint.write_s},
          {"checkpoint_load_s", g.checkpoint.load_s},
          {"checkpoint_blocking_s", g.checkpoint.blocking_s},
          {"lost_per_failure_s", g.lost_per_failure_s},
          {"goodput", g.fraction},
          {"ideal_days", g.ideal_days},
          {"ideal_device_hours", g.ideal_device_hours},
          {"ideal_cost", g.ideal_cost}};
}

Goodput goodput_from_json(const nlohmann::json& json, const std::string& source, const std::string& path) {
  const JsonFields f(json, source, path);
  Goodput g;
  g.mtbf_s = f.has("mtbf_s") ? f.number("mtbf_s", 0) : INFINITY;
  g.checkpoint_every_steps = f.integer("checkpoint_every_steps", 0);  // 0: not priced
  g.interval_s = f.number("checkpoint_interval_s", 0);
  g.checkpoint.bytes = f.number("checkpoint_bytes", 0);
  g.checkpoint.write_s = f.number("checkpoint_write_s", 0);
  g.checkpoint.load_s = f.number("checkpoint_load_s", 0);
  g.checkpoint.blocking_s = f.number("checkpoint_blocking_s", 0);
  g.lost_per_failure_s = f.number("lost_per_failure_s", 0);
  g.fraction = f.number("goodput", 0, 1);
  g.ideal_days = f.number("ideal_days", 0);
  g.ideal_device_hours = f.number("ideal_device_hours", 0);
  g.ideal_cost = f.number("ideal_cost", 0);
  return g;
}

}  // namespace flopwise
