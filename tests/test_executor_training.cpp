// flopwise-train end to end: layouts that must agree, kill-and-resume, corrupt checkpoints, spikes.
#include <gtest/gtest.h>
#include <signal.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "executor_test_plans.hpp"
#include "flopwise/executor/checkpoint_store.hpp"
#include "flopwise/launch.hpp"

namespace {

namespace fs = std::filesystem;

std::string temp(const std::string& name) { return ::testing::TempDir() + "/flopwise_exec_" + name; }

// A plan of Ling-Lite's shape with the given layout; the executor scales the model down.
std::string write_plan(const std::string& name, int pp, int ep, int dp, bool sharding, int tp = 1) {
  return flopwise::testing::write_ling_lite_plan(temp(name + ".json"), tp, pp, ep, dp, sharding);
}

int run(const std::string& args, const std::string& output) {
  const std::string command = std::string(FLOPWISE_TRAIN_BINARY) + " " + args + " > " + output + " 2>&1";
  const int status = std::system(command.c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// step -> loss, and which steps were skipped.
std::map<int, double> losses(const std::string& path, std::map<int, bool>* skipped = nullptr) {
  std::map<int, double> result;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    int step;
    double loss;
    std::string flag;
    fields >> step >> loss >> flag;
    result[step] = loss;
    if (skipped) (*skipped)[step] = flag == "skipped";
  }
  return result;
}

const std::string kCommon = " --scale 0.0625 --seq-len 64 --seed 11";

// A port nobody listens on now, so that concurrent test runs do not meet on a fixed one.
int free_port() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof address;
  bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address);
  getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  close(fd);
  return ntohs(address.sin_port);
}

}  // namespace

TEST(ExecutorTraining, SingleDpEpAndPpGiveTheSameLosses) {
  struct Case {
    std::string name;
    int pp, ep, dp, micro_batches;
    bool sharding;
    int tp = 1;
  };
  const std::vector<Case> cases = {{"single", 1, 1, 1, 8, false}, {"dp2", 1, 1, 2, 4, false},
                                   {"ep2", 1, 2, 2, 4, false},    {"pp2", 2, 1, 1, 8, false},
                                   {"zero1", 1, 1, 2, 4, true},   {"tp2", 1, 1, 1, 8, false, 2},
                                   {"tp2ep2", 1, 2, 2, 4, false, 2}};
  std::map<std::string, std::map<int, double>> results;
  for (const Case& c : cases) {
    const std::string plan = write_plan(c.name, c.pp, c.ep, c.dp, c.sharding, c.tp);
    const std::string log = temp(c.name + ".loss"), out = temp(c.name + ".out");
    ASSERT_EQ(run(plan + kCommon + " --max-ranks 4 --steps 3 --micro-batches " + std::to_string(c.micro_batches) + " --loss-log " + log, out), 0)
        << slurp(out);
    results[c.name] = losses(log);
    ASSERT_EQ(results[c.name].size(), 3u) << slurp(out);
  }
  for (const Case& c : cases) {
    for (int step = 1; step <= 3; ++step) {
      EXPECT_NEAR(results[c.name][step], results["single"][step], 1e-5 * results["single"][step]) << c.name << " step " << step;
    }
  }
  EXPECT_LT(results["single"][3], results["single"][1]);  // it learns
}

namespace {

// Starts both ranks of `args` by hand, as torchrun would, output in temp(name + rank).
std::vector<pid_t> start_two_ranks(const std::string& args, const std::string& name) {
  std::vector<pid_t> ranks;
  const std::string port = std::to_string(free_port());
  for (int rank = 0; rank < 2; ++rank) {
    const pid_t pid = fork();
    if (pid == 0) {
      setenv("RANK", std::to_string(rank).c_str(), 1);
      setenv("WORLD_SIZE", "2", 1);
      setenv("LOCAL_RANK", std::to_string(rank).c_str(), 1);
      setenv("MASTER_ADDR", "127.0.0.1", 1);
      setenv("MASTER_PORT", port.c_str(), 1);
      const std::string log = temp(name + std::to_string(rank));
      const int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      dup2(fd, 1);
      dup2(fd, 2);
      std::vector<std::string> words;
      std::istringstream split(args);
      for (std::string w; split >> w;) words.push_back(w);
      std::vector<char*> argv{const_cast<char*>(FLOPWISE_TRAIN_BINARY)};
      for (auto& w : words) argv.push_back(w.data());
      argv.push_back(nullptr);
      execv(FLOPWISE_TRAIN_BINARY, argv.data());
      _exit(127);
    }
    ranks.push_back(pid);
  }
  return ranks;
}

bool wait_for(const std::function<bool()>& condition) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (!condition() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return condition();
}

// Trains 8 steps with checkpoints every 2 (extra options in `more`), kills both ranks once
// `killable(checkpoint folder)` holds, resumes, and expects the uninterrupted run's losses, each step
// logged once.
void kill_and_resume(const std::string& name, const std::string& more, const std::function<bool(const fs::path&)>& killable,
                     const std::string& resumed_from) {
  const std::string plan = write_plan(name, 1, 2, 2, true);
  const std::string reference_dir = temp(name + "_reference"), killed_dir = temp(name + "_killed");
  fs::remove_all(reference_dir);
  fs::remove_all(killed_dir);
  for (const char* log : {".reference.loss", ".killed.loss"}) fs::remove(temp(name + log));
  const std::string args = plan + kCommon + " --steps 8 --checkpoint-every 2 --micro-batches 2";
  ASSERT_EQ(run(args + " --checkpoint-dir " + reference_dir + " --loss-log " + temp(name + ".reference.loss"),
                temp(name + ".reference.out")),
            0)
      << slurp(temp(name + ".reference.out"));

  std::vector<pid_t> ranks =
      start_two_ranks(args + more + " --checkpoint-dir " + killed_dir + " --loss-log " + temp(name + ".killed.loss"), name);
  ASSERT_TRUE(wait_for([&] { return killable(killed_dir); })) << slurp(temp(name + "0"));
  kill(ranks[1], SIGKILL);
  kill(ranks[0], SIGKILL);  // its peer is gone; the launcher stops the others the same way
  for (pid_t pid : ranks) waitpid(pid, nullptr, 0);

  // The resumed run keeps the killed run's loss log: steps trained again are logged once.
  const std::string resumed_out = temp(name + ".resumed.out");
  ASSERT_EQ(run(args + " --checkpoint-dir " + killed_dir + " --resume --loss-log " + temp(name + ".killed.loss"), resumed_out), 0)
      << slurp(resumed_out);
  EXPECT_NE(slurp(resumed_out).find("resumed from " + (fs::path(killed_dir) / resumed_from).string()), std::string::npos)
      << slurp(resumed_out);
  std::map<int, int> lines_per_step;
  std::istringstream log(slurp(temp(name + ".killed.loss")));
  for (std::string line; std::getline(log, line);) ++lines_per_step[std::stoi(line)];
  EXPECT_EQ(lines_per_step.size(), 8u);
  for (const auto& [step, count] : lines_per_step) EXPECT_EQ(count, 1) << "step " << step << " logged " << count << " times";
  const auto reference = losses(temp(name + ".reference.loss"));
  const auto resumed = losses(temp(name + ".killed.loss"));
  ASSERT_EQ(resumed.rbegin()->first, 8);
  int compared = 0;
  for (const auto& [step, loss] : resumed) {
    EXPECT_DOUBLE_EQ(loss, reference.at(step)) << "step " << step;
    ++compared;
  }
  EXPECT_EQ(compared, 8);
}

}  // namespace

// bf16 AdamW moments: the first two steps' losses are the fp32 moments' (the first update starts
// from zero moments either way); after it the moments are stored rounded to bf16, and the later
// updates move the weights slightly differently.
TEST(ExecutorTraining, Bf16MomentsTrainCloseToFp32Moments) {
  std::map<bool, std::map<int, double>> results;
  for (const bool bf16 : {false, true}) {
    const std::string name = bf16 ? "moments_bf16" : "moments_fp32";
    const std::string plan = write_plan(name, 1, 1, 2, true);
    nlohmann::json j;
    std::ifstream(plan) >> j;
    j["adam_moments_in_bf16"] = bf16;
    std::ofstream(plan) << j.dump(2);
    const std::string log = temp(name + ".loss"), out = temp(name + ".out");
    ASSERT_EQ(run(plan + kCommon + " --max-ranks 2 --steps 4 --micro-batches 4 --loss-log " + log, out), 0) << slurp(out);
    results[bf16] = losses(log);
    ASSERT_EQ(results[bf16].size(), 4u) << slurp(out);
  }
  for (int step = 1; step <= 2; ++step) EXPECT_NEAR(results[true][step], results[false][step], 1e-9 * results[false][step]) << step;
  for (int step = 3; step <= 4; ++step) {
    EXPECT_NE(results[true][step], results[false][step]) << step;
    EXPECT_NEAR(results[true][step], results[false][step], 1e-2 * results[false][step]) << step;
  }
}

TEST(ExecutorTraining, KilledRankResumesToTheSameLosses) {
  // Training goes on while checkpoints are written: the newest intact one is step 4 or later.
  kill_and_resume("resume", "", [](const fs::path& dir) { return fs::exists(dir / "step-00000004" / "rank-1.manifest"); },
                  "step-0000000");
}

// Checkpoints are written in the background: a kill while step 4's tensors are on disk but its
// manifest is not (slow storage, held 5 s) resumes from step 2 and still repeats the losses exactly.
TEST(ExecutorTraining, KillDuringABackgroundWriteResumesFromThePreviousCheckpoint) {
  kill_and_resume(
      "kill_writing", " --checkpoint-write-delay-ms 5000",
      [](const fs::path& dir) {
        // Step 2 complete on both ranks (a loaded machine can finish one rank's write well after
        // the other's), step 4's tensors on disk without their manifest.
        const fs::path step2 = dir / "step-00000002", step4 = dir / "step-00000004";
        return fs::exists(step4 / "rank-1.pt") && fs::exists(step2 / "rank-0.manifest") &&
               fs::exists(step2 / "rank-1.manifest") && !fs::exists(step4 / "rank-1.manifest");
      },
      "step-00000002");
}

// Without --checkpoint-every, the plan's goodput interval decides.
TEST(ExecutorTraining, CheckpointIntervalComesFromThePlan) {
  const std::string path = write_plan("interval", 1, 1, 1, false);
  flopwise::Plan plan = flopwise::load_plan(path);
  plan.predicted.goodput.checkpoint_every_steps = 3;
  flopwise::save_plan(plan, path);
  const std::string dir = temp("interval_ckpt"), out = temp("interval.out");
  fs::remove_all(dir);
  ASSERT_EQ(run(path + kCommon + " --steps 6 --micro-batches 2 --checkpoint-dir " + dir, out), 0) << slurp(out);
  EXPECT_NE(slurp(out).find("checkpoints every 3 steps (the plan's interval"), std::string::npos) << slurp(out);
  const flopwise::executor::CheckpointStore store(dir, 0);
  EXPECT_EQ(store.steps_newest_first(), (std::vector<int>{6, 3}));
  EXPECT_TRUE(store.intact(6));  // the last write finishes before the run ends
}

TEST(ExecutorTraining, CorruptCheckpointFallsBackToThePreviousOne) {
  const std::string plan = write_plan("corrupt", 1, 1, 2, false);
  const std::string dir = temp("ckpt_corrupt");
  fs::remove_all(dir);
  for (const char* log : {"corrupt_ref.loss", "corrupt_resumed.loss"}) fs::remove(temp(log));
  const std::string args = plan + kCommon + " --micro-batches 2 --checkpoint-every 2 --checkpoint-dir " + dir;
  ASSERT_EQ(run(args + " --steps 6 --loss-log " + temp("corrupt_ref.loss"), temp("corrupt_ref.out")), 0);
  {
    std::fstream file(fs::path(dir) / "step-00000006" / "rank-1.pt", std::ios::in | std::ios::out | std::ios::binary);
    file.seekp(100);
    file.put('\x5a');
  }
  ASSERT_EQ(run(args + " --steps 6 --resume --loss-log " + temp("corrupt_resumed.loss"), temp("corrupt_resumed.out")), 0);
  const std::string out = slurp(temp("corrupt_resumed.out"));
  EXPECT_NE(out.find("checkpoint step 6 is incomplete or corrupt"), std::string::npos) << out;
  EXPECT_NE(out.find("step-00000004"), std::string::npos) << out;
  const auto reference = losses(temp("corrupt_ref.loss"));
  const auto resumed = losses(temp("corrupt_resumed.loss"));
  EXPECT_DOUBLE_EQ(resumed.at(5), reference.at(5));
  EXPECT_DOUBLE_EQ(resumed.at(6), reference.at(6));
}

TEST(ExecutorTraining, InjectedBadBatchIsSkippedAndReinjected) {
  const std::string plan = write_plan("spike", 1, 1, 1, false);
  const std::string out = temp("spike.out");
  ASSERT_EQ(run(plan + kCommon + " --steps 12 --micro-batches 2 --inject-bad-batch-at 8 --loss-log " + temp("spike.loss"), out), 0)
      << slurp(out);
  std::map<int, bool> skipped;
  const auto l = losses(temp("spike.loss"), &skipped);
  EXPECT_TRUE(skipped[9]) << slurp(out);
  EXPECT_GT(l.at(9), 1.25 * l.at(8));
  for (int step = 2; step <= 8; ++step) EXPECT_FALSE(skipped[step]) << step;
  EXPECT_NE(slurp(out).find("re-injected at step"), std::string::npos);
}

// `flopwise launch --torchrun` for two nodes, both on this machine (127.0.0.1): each generated line
// runs as written, at once, and the ranks torchrun starts train exactly what one local launch does.
TEST(ExecutorTraining, TwoNodeTorchrunLinesTrainAsOneLaunch) {
  ASSERT_EQ(std::system("command -v torchrun > /dev/null"), 0) << "torchrun not found: apt-get install python3-torch";
  const std::string plan = write_plan("launch", 1, 2, 4, false);  // 4 ranks: 2 nodes x 2
  const std::string args = kCommon + " --steps 3 --micro-batches 4";
  ASSERT_EQ(run(plan + args + " --loss-log " + temp("launch-single.loss"), temp("launch-single.out")), 0)
      << slurp(temp("launch-single.out"));

  flopwise::LaunchOptions o;
  o.target = flopwise::LaunchTarget::kTorchrun;
  o.plan_path = plan, o.program = FLOPWISE_TRAIN_BINARY;
  o.nodes = 2, o.master_addr = "127.0.0.1", o.master_port = free_port();
  std::istringstream words(args + " --loss-log " + temp("launch-nodes.loss"));
  for (std::string word; words >> word;) o.extra_args.push_back(word);
  std::istringstream lines(flopwise::torchrun_lines(flopwise::load_plan(plan), o));
  std::vector<std::string> commands;
  for (std::string line; std::getline(lines, line);) {
    if (!line.empty() && line[0] != '#') commands.push_back(line);
  }
  ASSERT_EQ(commands.size(), 2u);
  std::vector<int> status(commands.size(), -1);
  std::vector<std::thread> nodes;
  for (std::size_t node = 0; node < commands.size(); ++node) {
    const std::string out = temp("launch-node" + std::to_string(node) + ".out");
    nodes.emplace_back([&, node, out] { status[node] = std::system(("(" + commands[node] + ") > " + out + " 2>&1").c_str()); });
  }
  for (std::thread& t : nodes) t.join();
  for (std::size_t node = 0; node < commands.size(); ++node) {
    EXPECT_EQ(status[node], 0) << commands[node] << "\n" << slurp(temp("launch-node" + std::to_string(node) + ".out"));
  }
  const auto single = losses(temp("launch-single.loss")), launched = losses(temp("launch-nodes.loss"));
  ASSERT_EQ(single.size(), 3u);
  EXPECT_EQ(launched, single);  // same ranks, same order of reductions: the same bits
  EXPECT_NE(slurp(temp("launch-node0.out")).find("on 4 ranks: tp1 pp1 ep2 dp4"), std::string::npos);
}

TEST(ExecutorTraining, BadOptionsAndPlansFailCleanly) {
  EXPECT_EQ(run("/no/such/plan.json", temp("bad1.out")), 2);
  EXPECT_NE(slurp(temp("bad1.out")).find("cannot open plan"), std::string::npos);
  EXPECT_EQ(run(write_plan("bad", 1, 1, 1, false) + " --steps 0", temp("bad2.out")), 2);
  EXPECT_EQ(run(write_plan("bad", 1, 1, 1, false) + " --resume", temp("bad3.out")), 2);
}

TEST(ExecutorTraining, TraceHasMeasuredSpansOfEveryRank) {
  const std::string plan = write_plan("trace", 2, 2, 2, false);
  const std::string trace = temp("timeline.json");
  fs::remove(trace);
  ASSERT_EQ(run(plan + kCommon + " --steps 2 --micro-batches 2 --trace " + trace, temp("trace.out")), 0)
      << slurp(temp("trace.out"));
  std::ifstream in(trace);
  const auto j = nlohmann::json::parse(in);
  std::set<std::string> categories;
  std::set<int> ranks;
  for (const auto& e : j["traceEvents"]) {
    if (e["ph"] != "X") continue;
    categories.insert(e["cat"].get<std::string>());
    ranks.insert(e["tid"].get<int>());
    EXPECT_GE(e["dur"].get<double>(), 0);
  }
  for (const char* c : {"compute", "ep", "pp", "dp"}) EXPECT_TRUE(categories.count(c)) << c;
  EXPECT_EQ(ranks.size(), 4u);
}

// Plans over pools, scaled to 4 ranks with one pool's compute slowed: hetero DP (3 : 1 batch split,
// the gradient summed in each pool and then across pools) and the pipeline across pools (one stage
// each) train exactly the single-pool run of the same 8 sequences.
TEST(ExecutorTraining, MixedPlansTrainTheSameLossesAsOnePool) {
  const std::string single_log = temp("pools-single.loss");
  ASSERT_EQ(run(write_plan("pools-single", 1, 1, 1, false) + kCommon + " --max-ranks 1 --steps 3 --micro-batches 8 --loss-log " +
                    single_log, temp("pools-single.out")), 0)
      << slurp(temp("pools-single.out"));
  const auto single = losses(single_log);
  struct Case {
    flopwise::PoolStrategy strategy;
    std::string micro_batches, expect;
  };
  for (const Case& c : {Case{flopwise::PoolStrategy::kHeteroDp, "2", "fast: DP ranks 0-1, 3 micro-batch(es) each; slow: DP ranks 2-3, 1"},
                        Case{flopwise::PoolStrategy::kHeteroPipeline, "4", "fast: stage 0, layers 0-0; slow: stage 1, layers 1-1"}}) {
    const std::string name = "pools-" + flopwise::to_string(c.strategy);
    const std::string plan = flopwise::testing::write_two_pool_plan(temp(name + ".json"), c.strategy);
    const std::string trace = temp(name + ".trace.json");
    ASSERT_EQ(run(plan + kCommon + " --max-ranks 4 --steps 3 --micro-batches " + c.micro_batches +
                      " --slowdown slow=3 --trace " + trace + " --loss-log " + temp(name + ".loss"), temp(name + ".out")), 0)
        << slurp(temp(name + ".out"));
    const std::string out = slurp(temp(name + ".out"));
    EXPECT_NE(out.find(c.expect), std::string::npos) << out;
    EXPECT_NE(out.find("compute slowed 3.00x"), std::string::npos) << out;
    const auto mixed = losses(temp(name + ".loss"));
    ASSERT_EQ(mixed.size(), 3u);
    for (int step = 1; step <= 3; ++step) {
      EXPECT_NEAR(mixed.at(step), single.at(step), 1e-5 * single.at(step)) << name << " step " << step;
    }
    // Hetero DP's reduction across pools is in every rank's timeline.
    std::ifstream in(trace);
    const nlohmann::json timeline = nlohmann::json::parse(in);
    std::set<int> crossing;
    for (const auto& e : timeline["traceEvents"]) {
      if (e.value("name", "") == "cross-pool all_reduce") crossing.insert(e["tid"].get<int>());
    }
    EXPECT_EQ(crossing.size(), c.strategy == flopwise::PoolStrategy::kHeteroDp ? 4u : 0u) << name;
  }
}

// Local SGD: each pool trains its own replica on its share (its own loss), and every 2 steps the
// outer step leaves the pools' replicas identical.
TEST(ExecutorTraining, LocalSgdSyncsEveryHStepsAndTheReplicasAgree) {
  const std::string plan = flopwise::testing::write_two_pool_plan(temp("pools-local.json"), flopwise::PoolStrategy::kLocalSgd);
  ASSERT_EQ(run(plan + kCommon + " --max-ranks 4 --steps 4 --micro-batches 2 --sync-every 2", temp("pools-local.out")), 0)
      << slurp(temp("pools-local.out"));
  std::istringstream lines(slurp(temp("pools-local.out")));
  int syncs = 0;
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("step ", 0) != 0) continue;
    EXPECT_NE(line.find("pools fast "), std::string::npos) << line;
    const bool sync_step = line.find("step    2/4") == 0 || line.find("step    4/4") == 0;
    const auto at = line.find("outer sync over 2 pools: replicas ");
    EXPECT_EQ(at != std::string::npos, sync_step) << line;
    if (at == std::string::npos) continue;
    ++syncs;
    double before = 0;
    std::istringstream(line.substr(at + std::string("outer sync over 2 pools: replicas ").size())) >> before;
    EXPECT_GT(before, 0) << line;
    EXPECT_NE(line.find("apart before, 0 after]"), std::string::npos) << line;
  }
  EXPECT_EQ(syncs, 2);
  EXPECT_EQ(run(plan + kCommon + " --max-ranks 4 --slowdown medium=2", temp("pools-bad.out")), 2);
  EXPECT_NE(slurp(temp("pools-bad.out")).find("--slowdown: medium: no such pool"), std::string::npos)
      << slurp(temp("pools-bad.out"));
  EXPECT_EQ(run(write_plan("pools-one", 1, 1, 1, false) + " --slowdown a=2", temp("pools-one.out")), 2);
}
