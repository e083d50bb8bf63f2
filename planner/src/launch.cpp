#include "flopwise/launch.hpp"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "flopwise/error.hpp"
#include "flopwise/plan_builder.hpp"
#include "flopwise/report.hpp"

namespace flopwise {
namespace {

// Kubernetes object names and Slurm job names alike: lower-case letters, digits and '-'.
std::string job_name(const Plan& plan, const LaunchOptions& o) {
  if (!o.job_name.empty()) return o.job_name;
  std::string name = "flopwise-";
  for (const char c : plan.model.name) {
    name += std::isalnum(static_cast<unsigned char>(c)) ? static_cast<char>(std::tolower(static_cast<unsigned char>(c))) : '-';
  }
  name.resize(std::min<std::size_t>(name.size(), 52));  // room for "-plan" within 63
  while (name.back() == '-') name.pop_back();
  return name;
}

// What torchrun starts on every rank: flopwise-train on the plan, or Megatron-LM's pretraining
// script with the plan's arguments (torchrun runs a .py with Python itself).
std::vector<std::string> program_words(const Plan& plan, const LaunchOptions& o, const std::string& plan_path) {
  std::vector<std::string> words;
  if (o.megatron) {
    words.push_back(o.program + "/pretrain_gpt.py");
    const std::vector<std::string> args = megatron_args(plan);
    words.insert(words.end(), args.begin(), args.end());
  } else {
    words = {"--no_python", o.program, plan_path};
  }
  words.insert(words.end(), o.extra_args.begin(), o.extra_args.end());
  return words;
}

std::string quoted_words(const std::vector<std::string>& words) {
  std::string line;
  for (const std::string& word : words) {
    line += ' ';
    line += shell_quote(word);
  }
  return line;
}

// The program, then one option per continued line (a flag with its values): a long command reads as a list.
std::string continued_words(const std::vector<std::string>& words) {
  std::string text;
  for (const std::string& word : words) {
    text += text.empty() || word.rfind("--", 0) == 0 ? " \\\n    " : " ";
    text += shell_quote(word);
  }
  return text;
}

std::string header(const Plan& plan, const LaunchOptions& o, const NodeShape& shape) {
  std::ostringstream h;
  h << "# flopwise launch: " << plan.model.name << " on " << plan.devices() << " " << plan.hardware.device << " devices ("
    << plan.hardware.profile << "), " << shape.nodes << " node" << (shape.nodes == 1 ? "" : "s") << " x "
    << shape.ranks_per_node << " ranks, layout " << layout_label(plan.layout) << "\n";
  h << "# torchrun keeps each rank's output in its log folder and prints it with the rank (--redirects/--tee).\n";
  if (o.megatron) {
    h << "# Megatron-LM's pretrain_gpt.py with the plan's model, layout and optimizer arguments; data,\n"
         "# tokenizer and schedule arguments are yours to add after -- on flopwise launch.\n";
  } else {
    h << "# flopwise-train on the plan " << o.plan_path << " (CPU, Gloo, the model scaled by --scale);\n"
         "# --megatron runs the full model on GPUs instead.\n";
  }
  return h.str();
}

// --redirects=1 --tee=1: each rank's output goes to torchrun's log folder and, prefixed with its
// rank, to the console; they also avoid the defaults that break torchrun 1.13 under Python 3.11
// (Debian 12's python3-torch), whose stream setting "0" parses to nothing.
std::vector<std::string> torchrun_words(const NodeShape& shape) {
  return {"torchrun", "--nnodes=" + std::to_string(shape.nodes), "--nproc_per_node=" + std::to_string(shape.ranks_per_node),
          "--redirects=1", "--tee=1"};
}

std::string torchrun_prefix(const NodeShape& shape) { return quoted_words(torchrun_words(shape)).substr(1); }

}  // namespace

NodeShape node_shape(const Plan& plan, int nodes) {
  const int devices = plan.devices();
  if (nodes < 0) throw input_error("--nodes", "", "must be positive, got " + std::to_string(nodes));
  if (nodes == 0) {
    const int per_node = plan.hardware.devices_per_node;
    if (per_node < 1) throw input_error("plan", "hardware.devices_per_node", "must be at least 1 to place ranks on nodes");
    nodes = (devices + per_node - 1) / per_node;
  }
  if (nodes > devices || devices % nodes != 0) {
    throw input_error("--nodes", "", std::to_string(nodes) + " nodes do not split the plan's " + std::to_string(devices) +
                                         " ranks evenly");
  }
  return {nodes, devices / nodes};
}

std::string shell_quote(const std::string& word) {
  const bool safe = !word.empty() && std::all_of(word.begin(), word.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || std::string("_./:=,@%+-").find(c) != std::string::npos;
  });
  if (safe) return word;
  std::string quoted = "'";
  for (const char c : word) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return quoted + "'";
}

// Slurm: one task per node runs torchrun; the first node of the allocation hosts torchrun's c10d
// rendezvous (PyTorch's recommended multi-node setup), so no node needs to know its own rank.
std::string slurm_script(const Plan& plan, const LaunchOptions& o) {
  const NodeShape shape = node_shape(plan, o.nodes);
  std::ostringstream s;
  s << "#!/usr/bin/env bash\n" << header(plan, o, shape);
  s << "#SBATCH --job-name=" << job_name(plan, o) << "\n";
  s << "#SBATCH --nodes=" << shape.nodes << "\n#SBATCH --ntasks-per-node=1\n";
  if (o.megatron) s << "#SBATCH --gpus-per-node=" << shape.ranks_per_node << "\n";
  s << "#SBATCH --exclusive\n";
  if (!o.partition.empty()) s << "#SBATCH --partition=" << o.partition << "\n";
  if (!o.account.empty()) s << "#SBATCH --account=" << o.account << "\n";
  if (!o.time_limit.empty()) s << "#SBATCH --time=" << o.time_limit << "\n";
  s << "#SBATCH --output=%x-%j.out\n"
       "set -euo pipefail\n\n"
       "if [ \"${SLURM_JOB_NUM_NODES:-0}\" -ne "
    << shape.nodes
    << " ]; then\n"
       "  echo \"the plan runs on "
    << shape.nodes
    << " nodes; this allocation has ${SLURM_JOB_NUM_NODES:-none}\" >&2\n"
       "  exit 2\n"
       "fi\n"
       "MASTER_ADDR=\"$(scontrol show hostnames \"$SLURM_JOB_NODELIST\" | head -n 1)\"\n"
       "MASTER_PORT=\"${MASTER_PORT:-"
    << o.master_port
    << "}\"\n"
       "export MASTER_ADDR MASTER_PORT\n"
    << (o.megatron ? "export CUDA_DEVICE_MAX_CONNECTIONS=1  # Megatron-LM's TP and sequence-parallel overlap need one\n" : "")
    << "\nsrun --kill-on-bad-exit=1 "
    << torchrun_prefix(shape)
    << " \\\n    --rdzv_id=\"$SLURM_JOB_ID\" --rdzv_backend=c10d --rdzv_endpoint=\"$MASTER_ADDR:$MASTER_PORT\""
    << continued_words(program_words(plan, o, o.plan_path)) << "\n";
  return s.str();
}

// Static rendezvous: node i runs line i with --node_rank=i; node 0 hosts the store.
std::string torchrun_lines(const Plan& plan, const LaunchOptions& o) {
  const NodeShape shape = node_shape(plan, o.nodes);
  const std::string master =
      o.master_addr.empty() ? "\"${MASTER_ADDR:?set MASTER_ADDR to the address of node 0}\"" : shell_quote(o.master_addr);
  std::ostringstream s;
  s << "#!/usr/bin/env bash\n" << header(plan, o, shape);
  s << "# Run the line of node i on node i (all at about the same time); node 0 hosts the rendezvous.\n";
  const std::string program = quoted_words(program_words(plan, o, o.plan_path));
  for (int node = 0; node < shape.nodes; ++node) {
    s << "# node " << node << "\n"
      << torchrun_prefix(shape) << " --node_rank=" << node << " --master_addr=" << master
      << " --master_port=" << o.master_port << program << "\n";
  }
  return s.str();
}

// Kubeflow's training operator gives every pod of a PyTorchJob MASTER_ADDR, MASTER_PORT and RANK
// (the pod's index, master first); Kubernetes expands $(VAR) in the command from them.
std::string pytorchjob_manifest(const Plan& plan, const LaunchOptions& o, const std::string& plan_json) {
  if (o.image.empty()) throw input_error("--image", "", "--k8s needs the container image that holds the program");
  const NodeShape shape = node_shape(plan, o.nodes);
  const std::string name = job_name(plan, o);
  const std::string mounted_plan = "/etc/flopwise/plan.json";
  std::vector<std::string> command = torchrun_words(shape);
  command.insert(command.end(), {"--node_rank=$(RANK)", "--master_addr=$(MASTER_ADDR)", "--master_port=$(MASTER_PORT)"});
  const std::vector<std::string> program = program_words(plan, o, mounted_plan);
  command.insert(command.end(), program.begin(), program.end());

  YAML::Emitter y;
  if (!o.megatron) {
    y << YAML::BeginDoc << YAML::BeginMap << YAML::Key << "apiVersion" << YAML::Value << "v1" << YAML::Key << "kind"
      << YAML::Value << "ConfigMap" << YAML::Key << "metadata" << YAML::Value << YAML::BeginMap << YAML::Key << "name"
      << YAML::Value << name + "-plan" << YAML::EndMap << YAML::Key << "data" << YAML::Value << YAML::BeginMap
      << YAML::Key << "plan.json" << YAML::Value << YAML::Literal << plan_json << YAML::EndMap << YAML::EndMap;
  }
  y << YAML::BeginDoc << YAML::BeginMap << YAML::Key << "apiVersion" << YAML::Value << "kubeflow.org/v1" << YAML::Key
    << "kind" << YAML::Value << "PyTorchJob" << YAML::Key << "metadata" << YAML::Value << YAML::BeginMap << YAML::Key
    << "name" << YAML::Value << name << YAML::EndMap << YAML::Key << "spec" << YAML::Value << YAML::BeginMap << YAML::Key
    << "pytorchReplicaSpecs" << YAML::Value << YAML::BeginMap;
  const auto replica = [&](const char* role, int replicas) {
    y << YAML::Key << role << YAML::Value << YAML::BeginMap << YAML::Key << "replicas" << YAML::Value << replicas
      << YAML::Key << "restartPolicy" << YAML::Value << "OnFailure" << YAML::Key << "template" << YAML::Value
      << YAML::BeginMap << YAML::Key << "spec" << YAML::Value << YAML::BeginMap << YAML::Key << "containers"
      << YAML::Value << YAML::BeginSeq << YAML::BeginMap << YAML::Key << "name" << YAML::Value << "pytorch" << YAML::Key
      << "image" << YAML::Value << o.image << YAML::Key << "command" << YAML::Value << YAML::Flow << command;
    if (o.megatron) {
      y << YAML::Key << "resources" << YAML::Value << YAML::BeginMap << YAML::Key << "limits" << YAML::Value
        << YAML::BeginMap << YAML::Key << "nvidia.com/gpu" << YAML::Value << shape.ranks_per_node << YAML::EndMap
        << YAML::EndMap;
    } else {
      y << YAML::Key << "volumeMounts" << YAML::Value << YAML::BeginSeq << YAML::BeginMap << YAML::Key << "name"
        << YAML::Value << "plan" << YAML::Key << "mountPath" << YAML::Value << "/etc/flopwise" << YAML::EndMap
        << YAML::EndSeq;
    }
    y << YAML::EndMap << YAML::EndSeq;
    if (!o.megatron) {
      y << YAML::Key << "volumes" << YAML::Value << YAML::BeginSeq << YAML::BeginMap << YAML::Key << "name"
        << YAML::Value << "plan" << YAML::Key << "configMap" << YAML::Value << YAML::BeginMap << YAML::Key << "name"
        << YAML::Value << name + "-plan" << YAML::EndMap << YAML::EndMap << YAML::EndSeq;
    }
    y << YAML::EndMap << YAML::EndMap << YAML::EndMap;
  };
  replica("Master", 1);
  if (shape.nodes > 1) replica("Worker", shape.nodes - 1);
  y << YAML::EndMap << YAML::EndMap << YAML::EndMap;
  return header(plan, o, shape) + y.c_str() + "\n";
}

std::string launcher_text(const Plan& plan, const LaunchOptions& options) {
  switch (options.target) {
    case LaunchTarget::kSlurm:
      return slurm_script(plan, options);
    case LaunchTarget::kTorchrun:
      return torchrun_lines(plan, options);
    case LaunchTarget::kKubernetes:
      return pytorchjob_manifest(plan, options, to_json(plan).dump(1));
  }
  return "";
}

std::string default_program(LaunchTarget target, const std::string& build_dir) {
  return target == LaunchTarget::kKubernetes ? "flopwise-train" : (std::filesystem::path(build_dir) / "flopwise-train").string();
}

void write_launcher(const std::string& path, const std::string& text, LaunchTarget target) {
  std::ofstream file(path);
  if (!(file << text)) throw input_error(path, "", "cannot write the launcher");
  file.close();
  if (target == LaunchTarget::kKubernetes) return;
  std::error_code ignored;  // a file system without permissions still has the script
  std::filesystem::permissions(path, std::filesystem::perms::owner_exec | std::filesystem::perms::group_exec,
                               std::filesystem::perm_options::add, ignored);
}

}  // namespace flopwise
