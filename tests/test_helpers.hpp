#pragma once
// Small shared fixtures: a hand-checkable model and a profile with round numbers.
#include <functional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "flopwise/cli.hpp"
#include "flopwise/error.hpp"
#include "flopwise/hardware_profile.hpp"
#include "flopwise/model_config.hpp"
#include "flopwise/training_run.hpp"

namespace flopwise::testing {

// The InputError message `f` throws, or "" when it throws none.
inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}

// What one `flopwise ...` command line printed and returned, run in this process.
struct CliOutcome {
  int code;
  std::string out;
  std::string err;
};

inline CliOutcome run_flopwise(std::vector<std::string> args) {
  args.insert(args.begin(), "flopwise");
  std::vector<const char*> argv;
  for (const auto& a : args) argv.push_back(a.c_str());
  std::ostringstream out, err;
  const int code = run_cli(static_cast<int>(argv.size()), argv.data(), out, err);
  return {code, out.str(), err.str()};
}

// 4 layers, hidden 1024, 8 heads of 128 (2 KV heads), 8 experts top-2 of ffn 512, one shared.
inline ModelConfig tiny_moe() {
  ModelConfig m;
  m.name = "tiny-moe";
  m.family = "test";
  m.layers = 4;
  m.hidden = 1024;
  m.heads = 8;
  m.kv_heads = 2;
  m.head_dim = 128;
  m.vocab = 1000;
  m.seq_len = 1024;
  m.routed_experts = 8;
  m.top_k = 2;
  m.expert_ffn = 512;
  m.shared_experts = 1;
  m.shared_expert_ffn = 512;
  return m;
}

// A run of the tiny model: `global_batch` sequences of 1,024 tokens, `tokens` in all.
inline TrainingRun tiny_run(int global_batch, double tokens = 1e9) {
  TrainingRun run;
  run.global_batch = global_batch;
  run.seq_len = 1024;
  run.tokens = tokens;
  run.overlap = CommOverlap::none();  // hand-computed figures add every collective's whole time
  return run;
}

// 100 TFLOPS bf16, 80 GB, 1 TB/s, 8 per node at 100 GB/s, 10 GB/s between nodes,
// efficiencies 0.5 (matmul and attention) and 1.0 (links), no overlap, 1 GB reserved.
inline std::string round_profile_yaml() {
  return R"(name: round
device:
  name: R
  peak_tflops: {bf16: 100, fp8: 200}
  memory: "80 GB"
  memory_bandwidth: "1 TB/s"
  price: {per_device_hour: 2.0, currency: RMB}
  fp8: true
node:
  devices: 8
  intra_bandwidth: "100 GB/s"
  intra_latency: "1 us"
cluster:
  inter_bandwidth: "10 GB/s"
  inter_latency: "10 us"
  topology: fat-tree
  leaf_ports: 16
  oversubscription: 1.0
  max_devices: 4096
efficiency: {matmul: 0.5, attention: 0.5, intra_node_comm: 1.0, inter_node_comm: 1.0}
runtime_reserved: "1 GB"
)";
}

// The round profile with several replacements, parsed under the name `source`.
inline HardwareProfile round_profile_edited(const std::vector<std::pair<std::string, std::string>>& edits,
                                            const std::string& source) {
  std::string text = round_profile_yaml();
  for (const auto& [from, to] : edits) {
    const auto at = text.find(from);
    if (at != std::string::npos) text.replace(at, from.size(), to);
  }
  return parse_hardware_profile(text, source);
}

inline HardwareProfile round_profile() { return parse_hardware_profile(round_profile_yaml(), "round.yaml"); }

// Replaces the first occurrence of `from` in the round profile, to build broken variants.
inline std::string round_profile_with(const std::string& from, const std::string& to) {
  std::string text = round_profile_yaml();
  const auto at = text.find(from);
  if (at != std::string::npos) text.replace(at, from.size(), to);
  return text;
}

}  // namespace flopwise::testing
