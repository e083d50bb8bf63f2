// `flopwise launch`: node shapes, shell quoting, and the Slurm, torchrun and Kubernetes texts.
// (The torchrun lines really run, two local nodes, in test_executor_training.cpp.)
#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <cstdlib>
#include <fstream>

#include "flopwise/catalog.hpp"
#include "flopwise/error.hpp"
#include "flopwise/launch.hpp"
#include "test_helpers.hpp"
#include "flopwise/model_import.hpp"
#include "flopwise/plan_builder.hpp"

namespace flopwise {
namespace {

// Ling-Plus on device-A (8 devices per node), 512 devices: 64 nodes of 8.
Plan ling_plus_plan(int dp = 8) {
  const CostModel cost(resolve_model("ling-plus"), TrainingRun{}, resolve_profile("device-A"));
  Layout l{4, 16, 1, 8, dp, 1, Recompute::kNone, true};
  l.etp = 1, l.first_stage_layers = 2, l.last_stage_layers = 2;  // 88 layers: 2 + 14 x 6 + 2
  Candidate best{l, cost.evaluate(l), std::nullopt};
  return make_plan(cost, best, Objective::kMinCost);
}

LaunchOptions options(LaunchTarget target) {
  LaunchOptions o;
  o.target = target;
  o.plan_path = "/shared/plans/ling plus.json";  // a space: the scripts must quote it
  o.program = "/shared/bin/flopwise-train";
  o.extra_args = {"--steps", "100", "--data", "/shared/it's here.bin"};
  return o;
}

using testing::error_of;

// shellcheck's verdict on `text` as a bash script: "" when clean.
std::string shellcheck(const std::string& text, const std::string& name) {
  const std::string path = ::testing::TempDir() + "/flopwise_launch_" + name + ".sh";
  std::ofstream(path) << text;
  const std::string report = path + ".shellcheck";
  const int status = std::system(("shellcheck " + path + " > " + report + " 2>&1").c_str());
  if (status == 0) return "";
  std::ifstream in(report);
  return std::string(std::istreambuf_iterator<char>(in), {}) + " (status " + std::to_string(status) + ")";
}

}  // namespace

TEST(Launch, NodesComeFromThePlanOrSplitItsRanksEvenly) {
  const Plan plan = ling_plus_plan();
  EXPECT_EQ(node_shape(plan, 0).nodes, 64);
  EXPECT_EQ(node_shape(plan, 0).ranks_per_node, 8);
  EXPECT_EQ(node_shape(plan, 128).ranks_per_node, 4);
  Plan small = plan;
  small.layout = Layout{1, 1, 1, 2, 4, 1, Recompute::kNone, false};  // 4 ranks, less than a node
  EXPECT_EQ(node_shape(small, 0).nodes, 1);
  EXPECT_EQ(node_shape(small, 0).ranks_per_node, 4);
  EXPECT_EQ(node_shape(small, 2).ranks_per_node, 2);
  EXPECT_EQ(error_of([&] { node_shape(small, 3); }), "--nodes: 3 nodes do not split the plan's 4 ranks evenly");
  EXPECT_EQ(error_of([&] { node_shape(small, 8); }), "--nodes: 8 nodes do not split the plan's 4 ranks evenly");
  small.hardware.devices_per_node = 0;
  EXPECT_NE(error_of([&] { node_shape(small, 0); }).find("hardware.devices_per_node"), std::string::npos);
}

TEST(Launch, ShellQuotingKeepsEveryWordWhole) {
  EXPECT_EQ(shell_quote("--tensor-model-parallel-size"), "--tensor-model-parallel-size");
  EXPECT_EQ(shell_quote("/a/b.json"), "/a/b.json");
  EXPECT_EQ(shell_quote("a b"), "'a b'");
  EXPECT_EQ(shell_quote("it's"), "'it'\\''s'");
  EXPECT_EQ(shell_quote("[0,1,1]"), "'[0,1,1]'");
  EXPECT_EQ(shell_quote("$HOME"), "'$HOME'");
  EXPECT_EQ(shell_quote(""), "''");
}

TEST(Launch, SlurmScriptStartsTorchrunOnEveryNodeOfThePlan) {
  const std::string script = slurm_script(ling_plus_plan(), [] {
    LaunchOptions o = options(LaunchTarget::kSlurm);
    o.partition = "gpu", o.account = "moe-team", o.time_limit = "7-00:00:00";
    return o;
  }());
  for (const char* expected :
       {"#SBATCH --nodes=64\n", "#SBATCH --ntasks-per-node=1\n", "#SBATCH --partition=gpu\n", "#SBATCH --account=moe-team\n",
        "#SBATCH --time=7-00:00:00\n", "-ne 64 ]", "scontrol show hostnames \"$SLURM_JOB_NODELIST\"",
        "srun --kill-on-bad-exit=1 torchrun --nnodes=64 --nproc_per_node=8",
        "--rdzv_backend=c10d --rdzv_endpoint=\"$MASTER_ADDR:$MASTER_PORT\"",
        "--no_python /shared/bin/flopwise-train '/shared/plans/ling plus.json'", "'/shared/it'\\''s here.bin'"}) {
    EXPECT_NE(script.find(expected), std::string::npos) << expected << "\n" << script;
  }
  EXPECT_EQ(script.find("--gpus-per-node"), std::string::npos);  // flopwise-train runs on CPU cores
}

TEST(Launch, MegatronRunsPretrainGptWithThePlansArguments) {
  LaunchOptions o = options(LaunchTarget::kSlurm);
  o.program = "/opt/Megatron-LM", o.megatron = true, o.extra_args = {"--data-path", "/data/corpus_text_document"};
  const std::string script = slurm_script(ling_plus_plan(), o);
  for (const char* expected :
       {"#SBATCH --gpus-per-node=8\n", "export CUDA_DEVICE_MAX_CONNECTIONS=1", " /opt/Megatron-LM/pretrain_gpt.py",
        "--tensor-model-parallel-size 4 \\\n", "--pipeline-model-parallel-size 16 \\\n", "--expert-model-parallel-size 8 \\\n",
        "--expert-tensor-parallel-size 1 \\\n", "--num-layers 88 \\\n", "--data-path /data/corpus_text_document\n"}) {
    EXPECT_NE(script.find(expected), std::string::npos) << expected << "\n" << script;
  }
  EXPECT_EQ(script.find("--no_python"), std::string::npos);
}

TEST(Launch, TorchrunWritesOneLinePerNodeWithItsRank) {
  Plan plan = ling_plus_plan();
  LaunchOptions o = options(LaunchTarget::kTorchrun);
  o.nodes = 2, o.master_addr = "10.0.0.1", o.master_port = 29611;
  const std::string lines = torchrun_lines(plan, o);
  std::vector<std::string> commands;
  std::istringstream in(lines);
  for (std::string line; std::getline(in, line);) {
    if (!line.empty() && line[0] != '#') commands.push_back(line);
  }
  ASSERT_EQ(commands.size(), 2u) << lines;
  for (int node = 0; node < 2; ++node) {
    EXPECT_EQ(commands[node].rfind("torchrun --nnodes=2 --nproc_per_node=256 --redirects=1 --tee=1 --node_rank=" +
                                       std::to_string(node) + " --master_addr=10.0.0.1 --master_port=29611 --no_python ",
                                   0),
              0u)
        << commands[node];
  }
  o.master_addr.clear();  // left to the environment, with a message when it is unset
  EXPECT_NE(torchrun_lines(plan, o).find("--master_addr=\"${MASTER_ADDR:?"), std::string::npos);
}

TEST(Launch, ScriptsAreShellcheckClean) {
  const Plan plan = ling_plus_plan();
  LaunchOptions slurm = options(LaunchTarget::kSlurm), torchrun = options(LaunchTarget::kTorchrun);
  LaunchOptions megatron = slurm;
  megatron.program = "/opt/Megatron-LM", megatron.megatron = true;
  EXPECT_EQ(shellcheck(slurm_script(plan, slurm), "slurm"), "");
  EXPECT_EQ(shellcheck(slurm_script(plan, megatron), "slurm-megatron"), "");
  EXPECT_EQ(shellcheck(torchrun_lines(plan, torchrun), "torchrun"), "");
  torchrun.master_addr = "node-0.cluster";
  EXPECT_EQ(shellcheck(torchrun_lines(plan, torchrun), "torchrun-addr"), "");
}

TEST(Launch, PyTorchJobRunsThePlanFromItsConfigMap) {
  const Plan plan = ling_plus_plan();
  LaunchOptions o = options(LaunchTarget::kKubernetes);
  o.image = "registry.example/flopwise:1", o.program = "flopwise-train";
  const std::string plan_json = to_json(plan).dump(1);
  const std::vector<YAML::Node> docs = YAML::LoadAll(pytorchjob_manifest(plan, o, plan_json));
  ASSERT_EQ(docs.size(), 2u);
  EXPECT_EQ(docs[0]["kind"].as<std::string>(), "ConfigMap");
  EXPECT_EQ(to_json(plan_from_json(nlohmann::json::parse(docs[0]["data"]["plan.json"].as<std::string>()), "map")),
            to_json(plan));
  const YAML::Node job = docs[1];
  EXPECT_EQ(job["kind"].as<std::string>(), "PyTorchJob");
  EXPECT_EQ(job["apiVersion"].as<std::string>(), "kubeflow.org/v1");
  const YAML::Node specs = job["spec"]["pytorchReplicaSpecs"];
  EXPECT_EQ(specs["Master"]["replicas"].as<int>(), 1);
  EXPECT_EQ(specs["Worker"]["replicas"].as<int>(), 63);
  const YAML::Node container = specs["Worker"]["template"]["spec"]["containers"][0];
  EXPECT_EQ(container["name"].as<std::string>(), "pytorch");  // the operator's required name
  EXPECT_EQ(container["image"].as<std::string>(), "registry.example/flopwise:1");
  const auto command = container["command"].as<std::vector<std::string>>();
  for (const char* word : {"--nnodes=64", "--nproc_per_node=8", "--node_rank=$(RANK)", "--master_addr=$(MASTER_ADDR)",
                           "/etc/flopwise/plan.json", "/shared/it's here.bin"}) {
    EXPECT_NE(std::find(command.begin(), command.end(), word), command.end()) << word;
  }
  EXPECT_EQ(specs["Master"]["template"]["spec"]["volumes"][0]["configMap"]["name"].as<std::string>(),
            "flopwise-ling-plus-plan");

  o.program = "/opt/Megatron-LM", o.megatron = true, o.nodes = 1, o.extra_args.clear();
  Plan one_node = plan;
  one_node.layout = Layout{4, 2, 1, 1, 1, 1, Recompute::kNone, true};
  const std::vector<YAML::Node> megatron = YAML::LoadAll(pytorchjob_manifest(one_node, o, ""));
  ASSERT_EQ(megatron.size(), 1u);  // the arguments carry the plan: no ConfigMap
  const YAML::Node master = megatron[0]["spec"]["pytorchReplicaSpecs"]["Master"];
  EXPECT_FALSE(megatron[0]["spec"]["pytorchReplicaSpecs"]["Worker"]);
  EXPECT_EQ(master["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"].as<int>(), 8);

  o.image.clear();
  EXPECT_EQ(error_of([&] { pytorchjob_manifest(plan, o, plan_json); }),
            "--image: --k8s needs the container image that holds the program");
}

}  // namespace flopwise
