#include "flopwise/hardware_profile.hpp"

#include <yaml-cpp/yaml.h>

#include <fstream>
#include <sstream>

#include "flopwise/error.hpp"

namespace flopwise {

std::string to_string(Precision precision) {
  switch (precision) {
    case Precision::kFp8: return "fp8";
    case Precision::kFp32: return "fp32";
    case Precision::kBf16: break;
  }
  return "bf16";
}

Precision parse_precision(const std::string& text, const std::string& source, const std::string& field) {
  if (text == "bf16") return Precision::kBf16;
  if (text == "fp8") return Precision::kFp8;
  if (text == "fp32") return Precision::kFp32;
  throw input_error(source, field, "unknown precision '" + text + "' (expected bf16, fp8 or fp32)");
}

std::string to_string(CollectiveAlgorithm algorithm) {
  switch (algorithm) {
    case CollectiveAlgorithm::kAllToAll: return "all_to_all";
    case CollectiveAlgorithm::kSendRecv: return "send_recv";
    case CollectiveAlgorithm::kRing: break;
  }
  return "ring";
}

FlopsPerSecond DeviceSpec::peak_flops(Precision precision) const {
  const auto it = peak_tflops.find(to_string(precision));
  return it == peak_tflops.end() ? 0.0 : it->second * 1e12;
}

std::string to_string(TopologyKind kind) {
  return kind == TopologyKind::kRailOptimized ? "rail-optimized" : "fat-tree";
}

namespace {

// Reads fields of one YAML map, naming "section.field" in every error.
class Fields {
 public:
  Fields(const YAML::Node& node, std::string source, std::string prefix)
      : node_(node), source_(std::move(source)), prefix_(std::move(prefix)) {
    if (!node_ || !node_.IsMap()) throw input_error(source_, prefix_, "missing section (expected a map)");
  }

  Fields section(const std::string& key) const { return Fields(node_[key], source_, path(key)); }

  std::string text(const std::string& key) const {
    const YAML::Node value = require(key);
    if (!value.IsScalar()) throw input_error(source_, path(key), "expected a single value");
    return value.as<std::string>();
  }

  double number(const std::string& key, double min, double max) const {
    const std::string raw = text(key);
    double value = 0;
    std::istringstream in(raw);
    std::string rest;
    if (!(in >> value) || (in >> rest)) {
      throw input_error(source_, path(key), "expected a plain number, got '" + raw + "'");
    }
    if (value < min || value > max) {
      std::ostringstream range;
      range << "must be between " << min << " and " << max << ", got " << raw;
      throw input_error(source_, path(key), range.str());
    }
    return value;
  }

  int integer(const std::string& key, int min) const {
    const double value = number(key, min, 1e9);
    if (value != static_cast<int>(value)) throw input_error(source_, path(key), "must be an integer");
    return static_cast<int>(value);
  }

  double quantity(const std::string& key, Dimension dimension) const {
    return parse_quantity(text(key), dimension, source_, path(key));
  }

  bool has(const std::string& key) const { return node_[key] && !node_[key].IsNull(); }

  bool boolean(const std::string& key) const {
    const std::string raw = text(key);
    if (raw == "true" || raw == "yes") return true;
    if (raw == "false" || raw == "no") return false;
    throw input_error(source_, path(key), "expected true or false, got '" + raw + "'");
  }

  const YAML::Node& node() const { return node_; }
  std::string path(const std::string& key) const { return prefix_.empty() ? key : prefix_ + "." + key; }
  const std::string& source() const { return source_; }

 private:
  YAML::Node require(const std::string& key) const {
    const YAML::Node value = node_[key];
    if (!value || value.IsNull()) throw input_error(source_, path(key), "missing field");
    return value;
  }

  YAML::Node node_;
  std::string source_;
  std::string prefix_;
};

DeviceSpec read_device(const Fields& f) {
  DeviceSpec d;
  d.name = f.text("name");
  const Fields peaks = f.section("peak_tflops");
  for (const auto& entry : peaks.node()) {
    const std::string dtype = entry.first.as<std::string>();
    if (dtype != "bf16" && dtype != "fp8" && dtype != "fp32") {
      throw input_error(f.source(), peaks.path(dtype), "unknown dtype (expected bf16, fp8 or fp32)");
    }
    d.peak_tflops[dtype] = peaks.number(dtype, 1e-4, 1e6);
  }
  if (!d.peak_tflops.count("bf16") && !d.peak_tflops.count("fp32")) {
    throw input_error(f.source(), peaks.path("bf16"), "missing field (a device needs a bf16 or an fp32 peak)");
  }
  d.memory_bytes = f.quantity("memory", Dimension::kBytes);
  d.memory_bandwidth = f.quantity("memory_bandwidth", Dimension::kBandwidth);
  const Fields price = f.section("price");
  d.price_per_device_hour = price.number("per_device_hour", 0.0, 1e6);
  d.currency = price.text("currency");
  d.fp8 = f.boolean("fp8");
  if (d.fp8 && !d.peak_tflops.count("fp8")) {
    throw input_error(f.source(), peaks.path("fp8"), "missing although device.fp8 is true");
  }
  if (d.memory_bytes <= 0) throw input_error(f.source(), f.path("memory"), "must be positive");
  if (d.memory_bandwidth <= 0) throw input_error(f.source(), f.path("memory_bandwidth"), "must be positive");
  return d;
}

NodeSpec read_node(const Fields& f) {
  NodeSpec n;
  n.devices = f.integer("devices", 1);
  n.intra_bandwidth = f.quantity("intra_bandwidth", Dimension::kBandwidth);
  n.intra_latency = f.quantity("intra_latency", Dimension::kTime);
  if (n.intra_bandwidth <= 0) throw input_error(f.source(), f.path("intra_bandwidth"), "must be positive");
  return n;
}

ClusterSpec read_cluster(const Fields& f) {
  ClusterSpec c;
  c.inter_bandwidth = f.quantity("inter_bandwidth", Dimension::kBandwidth);
  c.inter_latency = f.quantity("inter_latency", Dimension::kTime);
  const std::string topology = f.text("topology");
  if (topology == "fat-tree") {
    c.topology = TopologyKind::kFatTree;
  } else if (topology == "rail-optimized") {
    c.topology = TopologyKind::kRailOptimized;
  } else {
    throw input_error(f.source(), f.path("topology"),
                      "unknown topology '" + topology + "' (expected fat-tree or rail-optimized)");
  }
  c.leaf_ports = f.integer("leaf_ports", 1);
  c.oversubscription = f.number("oversubscription", 1.0, 64.0);
  c.max_devices = f.integer("max_devices", 1);
  return c;
}

// Fractions reach down to 0.001: a CPU core running framework kernels gets a few percent of its
// vector peak.
constexpr double kMinEfficiency = 0.001;

Efficiency read_efficiency(const Fields& f) {
  Efficiency e;
  e.matmul = f.number("matmul", kMinEfficiency, 1.0);
  if (f.has("matmul_half_rows")) e.matmul_half_rows = f.number("matmul_half_rows", 0.0, 1e9);
  e.attention = f.number("attention", kMinEfficiency, 1.0);
  if (f.has("memory")) e.memory = f.number("memory", kMinEfficiency, 1.0);
  e.intra_node_comm = f.number("intra_node_comm", kMinEfficiency, 1.0);
  e.inter_node_comm = f.number("inter_node_comm", kMinEfficiency, 1.0);
  return e;
}

Overheads read_overheads(const Fields& f) {
  Overheads o;
  o.per_layer_pass = f.quantity("per_layer_pass", Dimension::kTime);
  o.per_step = f.quantity("per_step", Dimension::kTime);
  if (o.per_layer_pass < 0) throw input_error(f.source(), f.path("per_layer_pass"), "must not be negative");
  if (o.per_step < 0) throw input_error(f.source(), f.path("per_step"), "must not be negative");
  return o;
}

LinkFigures read_link_figures(const Fields& f) {
  LinkFigures l;
  l.efficiency = f.number("efficiency", kMinEfficiency, 1.0);
  l.latency = f.quantity("latency", Dimension::kTime);
  if (l.latency < 0) throw input_error(f.source(), f.path("latency"), "must not be negative");
  return l;
}

std::map<CollectiveAlgorithm, CollectiveFigures> read_collectives(const Fields& f) {
  std::map<CollectiveAlgorithm, CollectiveFigures> result;
  for (const auto& entry : f.node()) {
    const std::string key = entry.first.as<std::string>();
    std::optional<CollectiveAlgorithm> algorithm;
    for (int a = 0; a < kCollectiveAlgorithms; ++a) {
      if (to_string(static_cast<CollectiveAlgorithm>(a)) == key) algorithm = static_cast<CollectiveAlgorithm>(a);
    }
    if (!algorithm) throw input_error(f.source(), f.path(key), "unknown collective (expected ring, all_to_all or send_recv)");
    const Fields figures = f.section(key);
    for (const auto& link : figures.node()) {
      const std::string name = link.first.as<std::string>();
      if (name != "intra_node" && name != "inter_node") {
        throw input_error(f.source(), figures.path(name), "unknown link class (expected intra_node or inter_node)");
      }
    }
    CollectiveFigures& c = result[*algorithm];
    if (figures.has("intra_node")) c.intra_node = read_link_figures(figures.section("intra_node"));
    if (figures.has("inter_node")) c.inter_node = read_link_figures(figures.section("inter_node"));
  }
  return result;
}

Overlap read_overlap(const Fields& f) {
  Overlap o;
  o.tp = f.number("tp", 0.0, 1.0);
  o.ep = f.number("ep", 0.0, 1.0);
  o.pp = f.number("pp", 0.0, 1.0);
  o.dp = f.number("dp", 0.0, 1.0);
  return o;
}

YAML::Node parse_yaml(const std::string& text, const std::string& source) {
  try {
    return YAML::Load(text);
  } catch (const YAML::Exception& e) {
    throw InputError(source + ":" + std::to_string(e.mark.line + 1) + ":" +
                     std::to_string(e.mark.column + 1) + ": malformed YAML: " + e.msg);
  }
}

}  // namespace

HardwareProfile parse_hardware_profile(const std::string& yaml_text, const std::string& source) {
  const Fields root(parse_yaml(yaml_text, source), source, "");
  HardwareProfile p;
  p.source = source;
  p.name = root.text("name");
  p.description = root.node()["description"] ? root.text("description") : "";
  p.device = read_device(root.section("device"));
  p.node = read_node(root.section("node"));
  p.cluster = read_cluster(root.section("cluster"));
  p.efficiency = read_efficiency(root.section("efficiency"));
  p.overlap = read_overlap(root.section("overlap"));
  if (root.has("overheads")) p.overheads = read_overheads(root.section("overheads"));
  if (root.has("collectives")) p.collectives = read_collectives(root.section("collectives"));
  p.runtime_reserved_bytes = root.quantity("runtime_reserved", Dimension::kBytes);
  if (p.cluster.topology == TopologyKind::kFatTree && p.cluster.leaf_ports % p.node.devices != 0) {
    throw input_error(source, "cluster.leaf_ports",
                      "a fat-tree leaf holds whole nodes: must be a multiple of node.devices (" +
                          std::to_string(p.node.devices) + ")");
  }
  if (p.cluster.max_devices < p.node.devices) {
    throw input_error(source, "cluster.max_devices", "is smaller than one node (node.devices)");
  }
  if (p.runtime_reserved_bytes >= p.device.memory_bytes) {
    throw input_error(source, "runtime_reserved", "leaves no device memory for training");
  }
  return p;
}

HardwareProfile load_hardware_profile(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw input_error(path, "", "cannot open hardware profile");
  std::ostringstream text;
  text << in.rdbuf();
  return parse_hardware_profile(text.str(), path);
}

}  // namespace flopwise
