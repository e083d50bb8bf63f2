#pragma once
// From a plan to a running multi-node job: an sbatch script (Slurm), per-node torchrun command
// lines, or a Kubeflow PyTorchJob manifest. Every launcher starts torchrun on each node with the
// plan's ranks per node; torchrun gives each rank the RANK / WORLD_SIZE / LOCAL_RANK /
// MASTER_ADDR / MASTER_PORT environment that flopwise-train and Megatron-LM read.
#include <string>
#include <vector>

#include "flopwise/plan.hpp"

namespace flopwise {

enum class LaunchTarget { kSlurm, kTorchrun, kKubernetes };

// The plan's ranks spread over nodes: `ranks_per_node` processes on each of `nodes` nodes.
struct NodeShape {
  int nodes = 0;
  int ranks_per_node = 0;
};

// Nodes from the plan's device count and its devices per node, or `nodes` when > 0; the ranks
// must split evenly (an InputError naming --nodes otherwise).
NodeShape node_shape(const Plan& plan, int nodes);

struct LaunchOptions {
  LaunchTarget target = LaunchTarget::kTorchrun;
  std::string plan_path;  // where the job reads the plan (flopwise-train only)
  std::string program;    // flopwise-train, or the Megatron-LM checkout with `megatron`
  bool megatron = false;  // run Megatron-LM's pretrain_gpt.py with the plan's arguments
  int nodes = 0;          // 0: the plan's node count
  std::string job_name;   // "": flopwise-<model>
  // torchrun's rendezvous for --torchrun; "" leaves MASTER_ADDR to the environment
  std::string master_addr;
  int master_port = 29500;
  // Slurm
  std::string partition, account, time_limit;
  // Kubernetes
  std::string image;
  std::vector<std::string> extra_args;  // appended to the program's arguments
};

// The launcher of `options.target` for the plan (the PyTorchJob with the plan embedded).
std::string launcher_text(const Plan& plan, const LaunchOptions& options);

// flopwise-train as the job finds it: the one in `build_dir` (a file system the nodes share), or
// in a container, the one on its PATH.
std::string default_program(LaunchTarget target, const std::string& build_dir);

// Writes the launcher to `path`, executable when it is a script; an InputError when it cannot.
void write_launcher(const std::string& path, const std::string& text, LaunchTarget target);

// One word for a POSIX shell: bare when it holds only safe characters, else single-quoted.
std::string shell_quote(const std::string& word);

std::string slurm_script(const Plan& plan, const LaunchOptions& options);
std::string torchrun_lines(const Plan& plan, const LaunchOptions& options);
// `plan_json` is embedded in a ConfigMap beside the job when it runs flopwise-train.
std::string pytorchjob_manifest(const Plan& plan, const LaunchOptions& options, const std::string& plan_json);

}  // namespace flopwise
