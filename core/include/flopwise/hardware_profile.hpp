#pragma once
// A priced hardware offer: device, node, cluster network and the efficiencies software reaches on it.
#include <algorithm>
#include <map>
#include <optional>
#include <string>

#include "flopwise/attention_kernel.hpp"
#include "flopwise/gemm.hpp"
#include "flopwise/goodput.hpp"
#include "flopwise/units.hpp"

namespace flopwise {

// bf16, fp16 and fp8 are mixed-precision recipes (fp32 master weights and moments); fp32 trains in
// fp32 throughout, as the CPU executor does.
enum class Precision { kBf16, kFp8, kFp32, kFp16 };
std::string to_string(Precision precision);
Precision parse_precision(const std::string& text, const std::string& source, const std::string& field);

struct DeviceSpec {
  std::string name;
  std::map<std::string, double> peak_tflops;  // dense (no sparsity) peak per dtype: "bf16", "fp16", "fp8", "fp32"
  Bytes memory_bytes = 0;
  BytesPerSecond memory_bandwidth = 0;
  double price_per_device_hour = 0;
  std::string currency;
  bool fp8 = false;
  GemmTiling gemm;  // compute units and output tile of its GEMM kernels (none: no quantization)
  // What a stream leaves idle between one kernel's end and the next one's start when the host has
  // queued both: the front end fetching and setting up the next launch (0: not known, not charged).
  Seconds kernel_gap = 0;
  // What a kernel that moves almost nothing still takes on its own: its blocks' start, their first
  // memory round trip and the drain, time no bytes-over-bandwidth figure holds. Charged to each
  // memory-bound and attention kernel (a GEMM's own fixed time is gemm.launch_latency); 0: not
  // known, not charged.
  Seconds kernel_floor = 0;

  FlopsPerSecond peak_flops(Precision precision) const;
};

// How a node's devices reach one another: through a switch (NVSwitch: any two at a device's whole
// bandwidth), or over a link of their own to every peer (AMD Infinity Fabric on MI300X: a group of
// k devices of the node meets over k - 1 links each, and two devices over one).
enum class NodeFabric { kSwitch, kFullMesh };

struct NodeSpec {
  int devices = 0;
  NodeFabric fabric = NodeFabric::kSwitch;
  // Per device, one direction: to the switch, or over all of its devices - 1 peer links.
  BytesPerSecond intra_bandwidth = 0;
  Seconds intra_latency = 0;
  // Channels NCCL runs a collective among this node's devices on: one thread block, so one SM,
  // each, taken from compute that runs beside the collective. 0: not known, not charged.
  int collective_channels = 0;
};

enum class TopologyKind { kFatTree, kRailOptimized };
std::string to_string(TopologyKind kind);

struct ClusterSpec {
  BytesPerSecond inter_bandwidth = 0;  // per device (its NIC share), one direction; 0: no network
  // Fat tree: device NICs under one leaf switch (whole nodes). Rail-optimised: nodes whose NIC r
  // share rail leaf r.
  int leaf_ports = 0;
  Seconds inter_latency = 0;
  TopologyKind topology = TopologyKind::kFatTree;
  double oversubscription = 1.0;  // leaf uplink : downlink ratio; 1 means non-blocking
  int max_devices = 0;
};

// Fractions of peak that real kernels and collectives reach; the planner's main knobs,
// and what `calibrate` fits from measured traces.
struct Efficiency {
  double matmul = 0;  // large GEMMs' fraction of peak
  // fp8 GEMMs' fraction of the fp8 peak, measured on its own: Hopper's fp8 tensor cores reach a
  // smaller fraction of their doubled peak than bf16 does of its own (0: the same as `matmul`).
  double matmul_fp8 = 0;
  double matmul_of(Precision precision) const {
    return precision == Precision::kFp8 && matmul_fp8 > 0 ? matmul_fp8 : matmul;
  }
  // Hockney's n_1/2: the GEMM row count at which half of `matmul` is reached (0: size does not
  // matter). Small GEMMs (few tokens per expert) pay a fixed cost per weight they read.
  double matmul_half_rows = 0;
  double attention = 0;  // the fused attention kernel at head dim 128, sequence 4K (causal)
  // Its speed at other shapes, relative to that one (empty: the same at every shape).
  AttentionKernelTable attention_by_shape;
  double memory = 1.0;  // fraction of memory_bandwidth library kernels (TE, apex, epilogues) and torch ops reach
  // The fraction the elementwise kernels torch.compile generates reach (Megatron's @jit_fuser
  // adds and activations), which keep fewer bytes in flight than hand-tuned ones (0: `memory`).
  double memory_compiled = 0;
  double compiled_memory() const { return memory_compiled > 0 ? memory_compiled : memory; }
  // The fraction the compiled MLP activation's backward kernel reaches, where measured on its own
  // (0: `memory_compiled`).
  double memory_compiled_backward = 0;
  double compiled_backward_memory() const { return memory_compiled_backward > 0 ? memory_compiled_backward : compiled_memory(); }
  // The fraction the optimizer step's multi-tensor kernels (gradient norm, Adam, master-to-model
  // copy) reach, where measured on their own (0: `memory`).
  double memory_optimizer = 0;
  double optimizer_memory() const { return memory_optimizer > 0 ? memory_optimizer : memory; }
  double intra_node_comm = 0;
  double inter_node_comm = 0;
  // The fraction of a device's NIC the flex dispatcher's kernels (DeepEP, HybridEP) reach for the
  // tokens they send across nodes, where measured on their own (0: `inter_node_comm`).
  double flex_dispatch_inter_node = 0;
  // The share of the NIC those kernels reach for each remote node they send to, where that and not
  // the NIC bounds them (0: no such bound): DeepEP's normal kernels over two nodes, one remote peer a
  // rank, reach half of what they reach over four or eight.
  double flex_dispatch_per_remote_node = 0;
  double flex_inter_node(double remote_nodes) const {
    const double whole = flex_dispatch_inter_node > 0 ? flex_dispatch_inter_node : inter_node_comm;
    return flex_dispatch_per_remote_node > 0 ? std::min(whole, remote_nodes * flex_dispatch_per_remote_node) : whole;
  }
};

// Time no FLOP or byte count explains: kernel launches and framework dispatch per layer pass,
// and per step (data, norms, logging). Zero until measured.
struct Overheads {
  Seconds per_layer_pass = 0;  // each layer's forward; backward pays twice, like its FLOPs
  Seconds per_step = 0;
};

// Collectives by algorithm: ring (all-reduce, reduce-scatter, all-gather), all-to-all, and
// point-to-point; a fitted figure replaces the efficiency / latency defaults for that algorithm.
enum class CollectiveAlgorithm { kRing, kAllToAll, kSendRecv };
inline constexpr int kCollectiveAlgorithms = 3;
std::string to_string(CollectiveAlgorithm algorithm);

struct LinkFigures {
  double efficiency = 0;  // of the link's nominal bandwidth
  Seconds latency = 0;    // per ring step / peer message
};

struct CollectiveFigures {
  std::optional<LinkFigures> intra_node, inter_node;
};

struct HardwareProfile {
  std::string name;
  std::string description;
  std::string source;  // file (or built-in name) it was read from, for messages
  DeviceSpec device;
  NodeSpec node;
  ClusterSpec cluster;
  Efficiency efficiency;
  Overheads overheads;
  std::map<CollectiveAlgorithm, CollectiveFigures> collectives;
  Bytes runtime_reserved_bytes = 0;  // context, communicator and allocator overhead per device
  Reliability reliability;           // optional section; the sourced defaults otherwise
  // A calibrated profile's 95% interval of a predicted step time, relative (0.08: +-8%), from the
  // scatter of the steps it was fitted to (calibration.step_time_interval_95); 0: not calibrated.
  double step_time_interval = 0;
  // A profile calibrated to executor traces holds at this speed of the executor's probe matmul (the
  // median over the fitted steps, calibration.probe_flops_per_s): a traced step whose probe ran
  // slower or faster is predicted with the compute peaks scaled by the same ratio. 0: none.
  FlopsPerSecond reference_probe_rate = 0;
};

// Why `profile` cannot train in `precision` (no peak stated, or fp8 switched off), one line naming
// the profile's file and field; nullopt when it can. The one place this is decided.
std::optional<std::string> precision_unsupported(const HardwareProfile& profile, Precision precision);

// Parses YAML text; `source` names the file in every error message.
HardwareProfile parse_hardware_profile(const std::string& yaml_text, const std::string& source);
HardwareProfile load_hardware_profile(const std::string& path);

}  // namespace flopwise
