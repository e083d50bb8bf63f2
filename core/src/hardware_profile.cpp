#include "flopwise/hardware_profile.hpp"

#include <algorithm>
#include <fstream>
#include <sstream>

#include "flopwise/error.hpp"
#include "flopwise/json_reader.hpp"
#include "flopwise/yaml_reader.hpp"

namespace flopwise {

std::string to_string(Precision precision) {
  switch (precision) {
    case Precision::kFp8: return "fp8";
    case Precision::kFp32: return "fp32";
    case Precision::kFp16: return "fp16";
    case Precision::kBf16: break;
  }
  return "bf16";
}

Precision parse_precision(const std::string& text, const std::string& source, const std::string& field) {
  if (text == "bf16") return Precision::kBf16;
  if (text == "fp8") return Precision::kFp8;
  if (text == "fp32") return Precision::kFp32;
  if (text == "fp16") return Precision::kFp16;
  throw input_error(source, field, "unknown precision '" + text + "' (expected bf16, fp16, fp8 or fp32)");
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

std::optional<std::string> precision_unsupported(const HardwareProfile& p, Precision precision) {
  if (precision == Precision::kFp8 && !p.device.fp8) {
    return input_error(p.source, "device.fp8", "is false: " + p.name + " cannot train in fp8").what();
  }
  if (p.device.peak_flops(precision) <= 0) {
    return input_error(p.source, "device.peak_tflops." + to_string(precision),
                       "missing: " + p.name + " states no " + to_string(precision) + " peak").what();
  }
  return std::nullopt;
}

std::string to_string(TopologyKind kind) {
  return kind == TopologyKind::kRailOptimized ? "rail-optimized" : "fat-tree";
}

namespace {

using Fields = YamlFields;

DeviceSpec read_device(const Fields& f) {
  f.allow_only({"name", "peak_tflops", "memory", "memory_bandwidth", "price", "fp8", "gemm", "kernel_gap", "kernel_floor"});
  DeviceSpec d;
  d.name = f.text("name");
  const Fields peaks = f.section("peak_tflops");
  for (const std::string& dtype : peaks.keys()) {
    if (dtype != "bf16" && dtype != "fp16" && dtype != "fp8" && dtype != "fp32") {
      throw input_error(f.source(), peaks.path(dtype), "unknown dtype (expected bf16, fp16, fp8 or fp32)");
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
  if (f.has("gemm")) {
    const Fields g = f.section("gemm");
    g.allow_only({"compute_units", "tile_rows", "tile_cols", "half_tiles", "launch_latency"});
    d.gemm.compute_units = g.integer("compute_units", 1);
    d.gemm.tile_rows = g.integer("tile_rows", 1);
    d.gemm.tile_cols = g.integer("tile_cols", 1);
    if (g.has("half_tiles")) d.gemm.half_tiles = g.boolean("half_tiles");
    if (g.has("launch_latency")) d.gemm.launch_latency = g.quantity("launch_latency", Dimension::kTime);
  }
  if (f.has("kernel_gap")) d.kernel_gap = f.quantity("kernel_gap", Dimension::kTime);
  if (f.has("kernel_floor")) d.kernel_floor = f.quantity("kernel_floor", Dimension::kTime);
  if (d.fp8 && !d.peak_tflops.count("fp8")) {
    throw input_error(f.source(), peaks.path("fp8"), "missing although device.fp8 is true");
  }
  if (d.memory_bytes <= 0) throw input_error(f.source(), f.path("memory"), "must be positive");
  if (d.memory_bandwidth <= 0) throw input_error(f.source(), f.path("memory_bandwidth"), "must be positive");
  return d;
}

NodeFabric read_fabric(const Fields& f) {
  if (!f.has("fabric")) return NodeFabric::kSwitch;
  const std::string fabric = f.text("fabric");
  if (fabric == "switch") return NodeFabric::kSwitch;
  if (fabric == "full-mesh") return NodeFabric::kFullMesh;
  throw input_error(f.source(), f.path("fabric"), "unknown fabric '" + fabric + "' (expected switch or full-mesh)");
}

// A switch node gives each device's bandwidth to the switch; a full mesh gives one peer link's,
// the device's whole bandwidth being devices - 1 of them.
NodeSpec read_node(const Fields& f) {
  f.allow_only({"devices", "fabric", "intra_bandwidth", "peer_bandwidth", "intra_latency", "collective_channels"});
  NodeSpec n;
  n.devices = f.integer("devices", 1);
  n.fabric = read_fabric(f);
  if (f.has("collective_channels")) n.collective_channels = f.integer("collective_channels", 0);
  const bool mesh = n.fabric == NodeFabric::kFullMesh;
  const std::string given = mesh ? "peer_bandwidth" : "intra_bandwidth", other = mesh ? "intra_bandwidth" : "peer_bandwidth";
  if (f.has(other)) {
    throw input_error(f.source(), f.path(other),
                      mesh ? "not with fabric full-mesh: give peer_bandwidth, one link's (each device has devices - 1)"
                           : "needs fabric: full-mesh (a switch node gives intra_bandwidth)");
  }
  const BytesPerSecond bandwidth = f.quantity(given, Dimension::kBandwidth);
  if (bandwidth <= 0) throw input_error(f.source(), f.path(given), "must be positive");
  if (mesh && n.devices < 2) throw input_error(f.source(), f.path("devices"), "a full mesh needs 2 devices or more");
  n.intra_bandwidth = mesh ? bandwidth * (n.devices - 1) : bandwidth;
  n.intra_latency = f.quantity("intra_latency", Dimension::kTime);
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

// Each row's three lists run over seq_len; head dims and lengths ascend. The table only scales
// efficiency.attention from the shape it is measured at, so that shape must be a measured point.
AttentionKernelTable read_attention_by_shape(const Fields& f) {
  f.allow_only({"seq_len", "head_dims"});
  AttentionKernelTable t;
  t.seq_lens = f.numbers("seq_len", 1.0, 1e9);
  auto ascending = [&](const std::vector<double>& v, const std::string& where) {
    for (size_t i = 1; i < v.size(); ++i) {
      if (v[i] <= v[i - 1]) throw input_error(f.source(), where, "must ascend");
    }
  };
  ascending(t.seq_lens, f.path("seq_len"));
  std::vector<double> dims;
  for (const Fields& r : f.list("head_dims")) {
    r.allow_only({"head_dim", "forward_causal", "forward", "backward"});
    auto speeds = [&](const std::string& key) {
      std::vector<double> v = r.numbers(key, 1e-3, 1e9);
      if (v.size() != t.seq_lens.size()) {
        throw input_error(f.source(), r.path(key),
                          "needs one speed (TFLOPS) per seq_len entry (" + std::to_string(t.seq_lens.size()) + ")");
      }
      return v;
    };
    AttentionKernelRow row;
    row.head_dim = r.number("head_dim", 1.0, 1e6);
    row.forward_causal = speeds("forward_causal");
    row.forward = speeds("forward");
    row.backward = speeds("backward");
    dims.push_back(row.head_dim);
    t.rows.push_back(std::move(row));
  }
  if (t.rows.empty()) throw input_error(f.source(), f.path("head_dims"), "needs at least one head dimension");
  ascending(dims, f.path("head_dims"));
  const bool has_anchor = std::count(dims.begin(), dims.end(), kAttentionAnchorHeadDim) > 0 &&
                          std::count(t.seq_lens.begin(), t.seq_lens.end(), kAttentionAnchorSeqLen) > 0;
  if (!has_anchor) {
    throw input_error(f.source(), f.path("head_dims"),
                      "must include head_dim " + std::to_string(static_cast<int>(kAttentionAnchorHeadDim)) +
                          " at seq_len " + std::to_string(static_cast<int>(kAttentionAnchorSeqLen)) +
                          ", the shape efficiency.attention describes");
  }
  return t;
}

Efficiency read_efficiency(const Fields& f) {
  f.allow_only({"matmul", "matmul_fp8", "matmul_half_rows", "attention", "attention_by_shape", "memory", "memory_compiled", "memory_compiled_backward",
                "memory_optimizer", "intra_node_comm", "inter_node_comm", "flex_dispatch_inter_node",
                "flex_dispatch_per_remote_node"});
  Efficiency e;
  e.matmul = f.number("matmul", kMinEfficiency, 1.0);
  if (f.has("matmul_fp8")) e.matmul_fp8 = f.number("matmul_fp8", kMinEfficiency, 1.0);
  if (f.has("matmul_half_rows")) e.matmul_half_rows = f.number("matmul_half_rows", 0.0, 1e9);
  e.attention = f.number("attention", kMinEfficiency, 1.0);
  if (f.has("attention_by_shape")) e.attention_by_shape = read_attention_by_shape(f.section("attention_by_shape"));
  if (f.has("memory")) e.memory = f.number("memory", kMinEfficiency, 1.0);
  if (f.has("memory_compiled")) e.memory_compiled = f.number("memory_compiled", kMinEfficiency, 1.0);
  if (f.has("memory_compiled_backward")) {
    e.memory_compiled_backward = f.number("memory_compiled_backward", kMinEfficiency, 1.0);
  }
  if (f.has("memory_optimizer")) e.memory_optimizer = f.number("memory_optimizer", kMinEfficiency, 1.0);
  e.intra_node_comm = f.number("intra_node_comm", kMinEfficiency, 1.0);
  e.inter_node_comm = f.number("inter_node_comm", kMinEfficiency, 1.0);
  if (f.has("flex_dispatch_inter_node")) {
    e.flex_dispatch_inter_node = f.number("flex_dispatch_inter_node", kMinEfficiency, 1.0);
  }
  if (f.has("flex_dispatch_per_remote_node")) {
    e.flex_dispatch_per_remote_node = f.number("flex_dispatch_per_remote_node", kMinEfficiency, 1.0);
  }
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
  for (const std::string& key : f.keys()) {
    std::optional<CollectiveAlgorithm> algorithm;
    for (int a = 0; a < kCollectiveAlgorithms; ++a) {
      if (to_string(static_cast<CollectiveAlgorithm>(a)) == key) algorithm = static_cast<CollectiveAlgorithm>(a);
    }
    if (!algorithm) throw input_error(f.source(), f.path(key), "unknown collective (expected ring, all_to_all or send_recv)");
    const Fields figures = f.section(key);
    for (const std::string& name : figures.keys()) {
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

}  // namespace

HardwareProfile parse_hardware_profile(const std::string& yaml_text, const std::string& source) {
  const Fields root(parse_yaml(yaml_text, source), source, "");
  HardwareProfile p;
  p.source = source;
  p.name = root.text("name");
  p.description = root.has("description") ? root.text("description") : "";
  p.device = read_device(root.section("device"));
  p.node = read_node(root.section("node"));
  p.cluster = read_cluster(root.section("cluster"));
  p.efficiency = read_efficiency(root.section("efficiency"));
  if (p.efficiency.matmul_fp8 > 0 && !p.device.fp8) {
    throw input_error(source, "efficiency.matmul_fp8", "is set but device.fp8 is false: nothing runs in fp8");
  }
  if (root.has("overlap")) {
    // Overlap used to be a profile section; it is how the framework schedules, not the hardware.
    throw input_error(source, "overlap",
                      "is no longer a profile section: which communication overlaps compute is the training "
                      "framework's choice (flopwise --comm-overlap, plan field comm_overlap); remove it");
  }
  if (root.has("overheads")) p.overheads = read_overheads(root.section("overheads"));
  if (root.has("collectives")) p.collectives = read_collectives(root.section("collectives"));
  if (root.has("reliability")) p.reliability = read_reliability(root.section("reliability"));
  if (root.has("calibration") && root.section("calibration").has("step_time_interval_95")) {
    p.step_time_interval = root.section("calibration").number("step_time_interval_95", 0.0, 10.0);
  }
  if (root.has("calibration") && root.section("calibration").has("probe_flops_per_s")) {
    p.reference_probe_rate = root.section("calibration").number("probe_flops_per_s", 1.0, 1e18);
  }
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
  return parse_hardware_profile(read_text_file(path, "hardware profile"), path);
}

}  // namespace flopwise
