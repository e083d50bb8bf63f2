#include <gtest/gtest.h>

#include <filesystem>

#include "flopwise/catalog.hpp"
#include "flopwise/error.hpp"
#include "test_helpers.hpp"

namespace flopwise {
namespace {

std::string error_of(const std::string& yaml) {
  return testing::error_of([&] { parse_hardware_profile(yaml, "p.yaml"); });
}

// A profile's attention_by_shape in flow style, between "attention: 0.5" and its closing brace.
const char* const kTableYaml =
    "attention: 0.5, attention_by_shape: {seq_len: [2048, 4096], head_dims: ["
    "{head_dim: 64, forward_causal: [300, 360], forward: [400, 400], backward: [400, 420]}, "
    "{head_dim: 128, forward_causal: [480, 520], forward: [600, 600], backward: [480, 500]}]}";

}  // namespace

TEST(HardwareProfile, EveryShippedProfileLoads) {
  int count = 0;
  for (const auto& entry : std::filesystem::directory_iterator(FLOPWISE_PROFILES_DIR)) {
    const HardwareProfile p = load_hardware_profile(entry.path().string());
    EXPECT_EQ(p.name, entry.path().stem().string());
    ++count;
  }
  EXPECT_GE(count, 9);  // five report devices and at least four real accelerators
  EXPECT_EQ(builtin_profile_names().size(), static_cast<size_t>(count));
}

// Ling report Table 1: peak dense TFLOPS, memory GB, RMB per device-hour, FP8.
TEST(HardwareProfile, ReportDevicesMatchTableOne) {
  struct Row { const char* name; double tflops; double memory_gb; double price; bool fp8; };
  const Row table[] = {{"device-A", 370, 64, 7.00, false}, {"device-B", 120, 96, 4.50, false},
                       {"device-C", 312, 80, 10.00, false}, {"device-D", 989, 80, 27.50, true},
                       {"device-E", 147, 96, 5.64, true}};
  for (const Row& row : table) {
    const HardwareProfile p = resolve_profile(row.name);
    EXPECT_DOUBLE_EQ(p.device.peak_flops(Precision::kBf16), row.tflops * 1e12) << row.name;
    EXPECT_DOUBLE_EQ(p.device.memory_bytes, row.memory_gb * 1e9) << row.name;
    EXPECT_DOUBLE_EQ(p.device.price_per_device_hour, row.price) << row.name;
    EXPECT_EQ(p.device.currency, "RMB");
    EXPECT_EQ(p.device.fp8, row.fp8) << row.name;
  }
}

TEST(HardwareProfile, ParsesUnitsIntoBaseUnits) {
  const HardwareProfile p = testing::round_profile();
  EXPECT_DOUBLE_EQ(p.node.intra_bandwidth, 100e9);
  EXPECT_DOUBLE_EQ(p.cluster.inter_latency, 10e-6);
  EXPECT_DOUBLE_EQ(p.runtime_reserved_bytes, 1e9);
  EXPECT_EQ(p.cluster.topology, TopologyKind::kFatTree);
}

// The GEMM library's tiles, half tiles and per-launch latency; a latency in bytes is refused.
TEST(HardwareProfile, GemmSectionReadsTilesAndLaunchLatency) {
  const std::string gemm =
      "fp8: true\n  gemm: {compute_units: 132, tile_rows: 128, tile_cols: 256, half_tiles: true, launch_latency: \"4 us\"}";
  const HardwareProfile p = parse_hardware_profile(testing::round_profile_with("fp8: true", gemm), "p.yaml");
  EXPECT_EQ(p.device.gemm, (GemmTiling{132, 128, 256, true, 4e-6}));
  std::string bytes = gemm;
  bytes.replace(bytes.find("4 us"), 4, "4 GB");
  EXPECT_NE(error_of(testing::round_profile_with("fp8: true", bytes)).find("device.gemm.launch_latency"), std::string::npos);
  // A misspelt optional key is named, not silently left at its default.
  std::string typo = gemm;
  typo.replace(typo.find("half_tiles"), 10, "half_tile");
  EXPECT_NE(error_of(testing::round_profile_with("fp8: true", typo)).find("device.gemm.half_tile"), std::string::npos);
}

// The stream's gap between kernels and a kernel's own floor: each optional (0, not charged), a
// time, never negative; a misspelt device key is named rather than left at its default.
TEST(HardwareProfile, DeviceReadsTheKernelGapAndFloor) {
  for (const auto& [key, field] : {std::pair{std::string("kernel_gap"), &DeviceSpec::kernel_gap},
                                   std::pair{std::string("kernel_floor"), &DeviceSpec::kernel_floor}}) {
    EXPECT_DOUBLE_EQ(testing::round_profile().device.*field, 0.0) << key;
    const auto with = [&](const std::string& line) { return testing::round_profile_with("fp8: true", "fp8: true\n  " + line); };
    EXPECT_DOUBLE_EQ(parse_hardware_profile(with(key + ": \"2 us\""), "p.yaml").device.*field, 2e-6) << key;
    EXPECT_NE(error_of(with(key + ": \"-2 us\"")).find("device." + key + ": must be a non-negative number"), std::string::npos);
    EXPECT_NE(error_of(with(key + ": \"2 GB\"")).find("device." + key), std::string::npos);
    EXPECT_NE(error_of(with(key + "s: \"2 us\"")).find("device." + key + "s"), std::string::npos);
  }
}

// NCCL's channels per collective in a node: optional (0, not charged), a count, and a misspelt
// node key is named rather than left at its default.
TEST(HardwareProfile, NodeReadsNcclCollectiveChannels) {
  EXPECT_EQ(testing::round_profile().node.collective_channels, 0);
  const std::string channels = "intra_latency: \"1 us\"\n  collective_channels: 24";
  EXPECT_EQ(parse_hardware_profile(testing::round_profile_with("intra_latency: \"1 us\"", channels), "p.yaml")
                .node.collective_channels,
            24);
  std::string typo = channels;
  typo.replace(typo.find("collective_channels"), 19, "collective_channel");
  EXPECT_NE(error_of(testing::round_profile_with("intra_latency: \"1 us\"", typo)).find("node.collective_channel"),
            std::string::npos);
  std::string negative = channels;
  negative.replace(negative.find("24"), 2, "-1");
  EXPECT_NE(error_of(testing::round_profile_with("intra_latency: \"1 us\"", negative)).find("node.collective_channels"),
            std::string::npos);
}

// A full-mesh node gives one peer link's bandwidth; each device's whole is devices - 1 of them.
TEST(HardwareProfile, FullMeshNodeReadsItsPeerLinks) {
  using testing::round_profile_with;
  const std::string mesh = "fabric: full-mesh\n  peer_bandwidth: \"20 GB/s\"";
  const HardwareProfile p = parse_hardware_profile(round_profile_with("intra_bandwidth: \"100 GB/s\"", mesh), "p.yaml");
  EXPECT_EQ(p.node.fabric, NodeFabric::kFullMesh);
  EXPECT_DOUBLE_EQ(p.node.intra_bandwidth, 7 * 20e9);
  EXPECT_EQ(testing::round_profile().node.fabric, NodeFabric::kSwitch);
  EXPECT_NE(error_of(round_profile_with("intra_bandwidth: \"100 GB/s\"", "fabric: full-mesh\n  intra_bandwidth: \"100 GB/s\""))
                .find("p.yaml: node.intra_bandwidth: not with fabric full-mesh"),
            std::string::npos);
  EXPECT_NE(error_of(round_profile_with("intra_bandwidth: \"100 GB/s\"", "peer_bandwidth: \"20 GB/s\""))
                .find("node.peer_bandwidth: needs fabric: full-mesh"),
            std::string::npos);
  EXPECT_NE(error_of(round_profile_with("intra_bandwidth: \"100 GB/s\"", "fabric: torus\n  intra_bandwidth: \"100 GB/s\""))
                .find("node.fabric: unknown fabric 'torus' (expected switch or full-mesh)"),
            std::string::npos);
  EXPECT_NE(error_of(round_profile_with("intra_bandwidth: \"100 GB/s\"", "fabric: full-mesh"))
                .find("node.peer_bandwidth: missing field"),
            std::string::npos);
  std::string lonely = round_profile_with("intra_bandwidth: \"100 GB/s\"", mesh);
  lonely.replace(lonely.find("devices: 8"), 10, "devices: 1");
  EXPECT_NE(error_of(lonely).find("node.devices: a full mesh needs 2 devices or more"), std::string::npos);
}

TEST(HardwareProfile, EachClassOfBadInputNamesFileAndField) {
  using testing::round_profile_with;
  EXPECT_NE(error_of("name: [unclosed").find("p.yaml:1:"), std::string::npos);
  EXPECT_NE(error_of(round_profile_with("  memory: \"80 GB\"\n", "")).find("p.yaml: device.memory: missing field"),
            std::string::npos);
  EXPECT_NE(error_of(round_profile_with("\"80 GB\"", "\"80 GHz\"")).find("device.memory: unknown unit 'GHz'"),
            std::string::npos);
  EXPECT_NE(error_of(round_profile_with("\"100 GB/s\"", "\"-100 GB/s\"")).find("node.intra_bandwidth"),
            std::string::npos);
  EXPECT_NE(error_of(round_profile_with("fat-tree", "torus")).find("cluster.topology: unknown topology 'torus'"),
            std::string::npos);
  EXPECT_NE(error_of(round_profile_with("matmul: 0.5", "matmul: 1.5")).find("efficiency.matmul: must be between"),
            std::string::npos);
  EXPECT_NE(error_of(round_profile_with("matmul: 0.5", "matmul: 0.5, matmul_fp8: 0")).find("efficiency.matmul_fp8: must be between"),
            std::string::npos);
  EXPECT_NE(error_of(round_profile_with("matmul: 0.5", "matmul: 0.5, memory_compiled: 1.2")).find("efficiency.memory_compiled: must be between"),
            std::string::npos);
  EXPECT_NE(error_of(round_profile_with("matmul: 0.5", "matmul: 0.5, memory_compiledd: 0.5")).find("efficiency.memory_compiledd: unknown field"),
            std::string::npos);
  EXPECT_NE(error_of(round_profile_with("matmul: 0.5", "matmul: 0.5, memory_optimizer: 0")).find("efficiency.memory_optimizer: must be between"),
            std::string::npos);
  EXPECT_NE(error_of(round_profile_with("matmul: 0.5", "matmul: 0.5, flex_dispatch_inter_node: 1.5"))
                .find("efficiency.flex_dispatch_inter_node: must be between"),
            std::string::npos);
  EXPECT_NE(error_of(round_profile_with("matmul: 0.5", "matmul: 0.5, flex_dispatch_per_remote_node: 0"))
                .find("efficiency.flex_dispatch_per_remote_node: must be between"),
            std::string::npos);
  std::string no_fp8 = round_profile_with("fp8: true", "fp8: false");
  no_fp8.replace(no_fp8.find("matmul: 0.5"), 11, "matmul: 0.5, matmul_fp8: 0.4");
  EXPECT_NE(error_of(no_fp8).find("efficiency.matmul_fp8: is set but device.fp8 is false"), std::string::npos);
  EXPECT_NE(error_of(round_profile_with("devices: 8", "devices: eight")).find("node.devices: expected a plain number"),
            std::string::npos);
  EXPECT_NE(error_of(round_profile_with("{bf16: 100, fp8: 200}", "{bf16: 100}")).find("peak_tflops.fp8: missing"),
            std::string::npos);
  // Overlap moved from the profile to the run: an old profile is told so, not silently half-read.
  EXPECT_NE(error_of(round_profile_with("runtime_reserved", "overlap: {tp: 0.0, dp: 0.8}\nruntime_reserved"))
                .find("overlap: is no longer a profile section"),
            std::string::npos);
  EXPECT_NE(error_of("[1, 2]").find("p.yaml"), std::string::npos);
}

TEST(HardwareProfile, AttentionByShapeReadsTheTableAndNamesBadFields) {
  using testing::round_profile_with;
  const HardwareProfile p = parse_hardware_profile(round_profile_with("attention: 0.5", kTableYaml), "p.yaml");
  ASSERT_EQ(p.efficiency.attention_by_shape.rows.size(), 2u);
  EXPECT_EQ(p.efficiency.attention_by_shape.seq_lens, (std::vector<double>{2048, 4096}));
  EXPECT_EQ(p.efficiency.attention_by_shape.rows[0].backward, (std::vector<double>{400, 420}));
  auto with = [&](const std::string& from, const std::string& to) {
    std::string table = kTableYaml;
    table.replace(table.find(from), from.size(), to);
    return error_of(round_profile_with("attention: 0.5", table));
  };
  EXPECT_NE(with("backward: [400, 420]", "backward: [400]").find("head_dims[0].backward: needs one speed"),
            std::string::npos);
  EXPECT_NE(with("[2048, 4096]", "[4096, 2048]").find("efficiency.attention_by_shape.seq_len: must ascend"),
            std::string::npos);
  EXPECT_NE(with("head_dim: 128", "head_dim: 96").find("must include head_dim 128 at seq_len 4096"), std::string::npos);
  EXPECT_NE(with("forward: [400, 400]", "forwrd: [400, 400]").find("head_dims[0].forwrd: unknown field"),
            std::string::npos);
  EXPECT_NE(with("[300, 360]", "[300, fast]").find("forward_causal[1]: expected a plain number"), std::string::npos);
}

TEST(HardwareProfile, UnknownProfileNameListsBuiltins) {
  try {
    resolve_profile("device-Z");
    FAIL();
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("device-A"), std::string::npos) << e.what();
  }
}

TEST(HardwareProfile, OptionalCalibrationSectionsAreCheckedFieldByField) {
  using testing::round_profile_with;
  const std::string tail = "runtime_reserved";
  const HardwareProfile p = parse_hardware_profile(
      round_profile_with(tail, "overheads: {per_layer_pass: \"20 us\", per_step: \"3 ms\"}\n"
                               "collectives: {all_to_all: {inter_node: {efficiency: 0.4, latency: \"30 us\"}}}\n" + tail),
      "p.yaml");
  EXPECT_DOUBLE_EQ(p.overheads.per_layer_pass, 20e-6);
  EXPECT_DOUBLE_EQ(p.overheads.per_step, 3e-3);
  ASSERT_TRUE(p.collectives.at(CollectiveAlgorithm::kAllToAll).inter_node.has_value());
  EXPECT_DOUBLE_EQ(p.collectives.at(CollectiveAlgorithm::kAllToAll).inter_node->latency, 30e-6);
  EXPECT_FALSE(p.collectives.at(CollectiveAlgorithm::kAllToAll).intra_node.has_value());
  EXPECT_DOUBLE_EQ(p.efficiency.memory, 1.0);  // absent: the optimizer reaches the nominal bandwidth
  EXPECT_NE(error_of(round_profile_with(tail, "collectives: {tree: {}}\n" + tail)).find("p.yaml: collectives.tree: unknown collective"),
            std::string::npos);
  EXPECT_NE(error_of(round_profile_with(tail, "collectives: {ring: {intra_node: {efficiency: 0.5}}}\n" + tail))
                .find("collectives.ring.intra_node.latency: missing field"),
            std::string::npos);
  EXPECT_NE(error_of(round_profile_with(tail, "overheads: {per_layer_pass: \"1 us\"}\n" + tail)).find("overheads.per_step: missing field"),
            std::string::npos);
  EXPECT_NE(error_of(round_profile_with("matmul: 0.5,", "matmul: 0.5, matmul_half_rows: -3,")).find("efficiency.matmul_half_rows: must be between"),
            std::string::npos);
  EXPECT_NE(error_of(round_profile_with("{bf16: 100, fp8: 200}", "{fp4: 100}")).find("peak_tflops.fp4: unknown dtype"),
            std::string::npos);
}

}  // namespace flopwise
