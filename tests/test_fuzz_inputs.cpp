// Generated mutations of every input kind the flopwise CLI reads (hardware profiles, HF configs,
// plans, executor traces, scaling grids): each run must end with exit 0, or exit 2 and one line
// "flopwise: error: <file>: <field>: <problem>"; never a crash, a raw library message or exit 1.
// Seeded, so a failure repeats; a few thousand inputs in seconds.
#include <gtest/gtest.h>

#include <fstream>
#include <iostream>
#include <random>
#include <sstream>

#include <nlohmann/json.hpp>

#include "flopwise/catalog.hpp"
#include "flopwise/cli.hpp"
#include "test_helpers.hpp"
#include "flopwise/json_reader.hpp"
#include "fuzz_mutations.hpp"

namespace flopwise {
namespace {

using nlohmann::json;
using testing::mutate_json;
using testing::mutate_yaml;

using Outcome = testing::CliOutcome;

Outcome run(std::vector<std::string> args) { return testing::run_flopwise(std::move(args)); }

// Exit 0, or exit 2 with one line naming the file.
void expect_clean(const Outcome& o, const std::string& file, const std::string& input, int index) {
  ASSERT_TRUE(o.code == 0 || o.code == 2) << "mutation " << index << " exit " << o.code << ": " << o.err << "\n" << input;
  if (o.code == 0) return;
  EXPECT_EQ(std::count(o.err.begin(), o.err.end(), '\n'), 1) << "mutation " << index << ": " << o.err;
  EXPECT_EQ(o.err.rfind("flopwise: error: ", 0), 0u) << o.err;
  EXPECT_NE(o.err.find(file), std::string::npos) << "mutation " << index << " does not name " << file << ": " << o.err
                                                 << "\n" << input;
}

std::string slurp(const std::string& path) { return read_text_file(path, "seed"); }

std::string write(const std::string& name, const std::string& text) {
  const std::string path = ::testing::TempDir() + "/fuzz-" + name;
  std::ofstream(path) << text;
  return path;
}

struct Kind {
  std::string name;
  std::string seed;
  bool yaml;
  std::function<std::vector<std::string>(const std::string& path)> command;
};

void fuzz(const Kind& kind, int count, unsigned seed) {
  std::mt19937 rng(seed);
  const json parsed = kind.yaml ? json() : json::parse(kind.seed);
  const std::string path = write(kind.name, kind.seed);
  ASSERT_EQ(run(kind.command(path)).code, 0) << kind.name << " seed input must pass: " << run(kind.command(path)).err;
  int rejected = 0;
  for (int i = 0; i < count; ++i) {
    const std::string text = kind.yaml ? mutate_yaml(kind.seed, rng) : mutate_json(parsed, rng);
    std::ofstream(path) << text;
    const Outcome o = run(kind.command(path));
    expect_clean(o, path, text, i);
    if (::testing::Test::HasFailure()) return;  // one reproducible report, not hundreds
    rejected += o.code == 2;
  }
  std::cout << kind.name << ": " << count << " mutations, " << rejected << " rejected with one line, "
            << count - rejected << " accepted\n";
  // A mutator that never breaks the input tests nothing.
  EXPECT_GT(rejected, count / 4) << kind.name;
}

}  // namespace

TEST(FuzzInputs, HardwareProfiles) {
  std::string source;
  const std::string seed = profile_text("device-C", source);
  fuzz({"profile.yaml", seed, true,
        [](const std::string& p) {
          return std::vector<std::string>{"plan", "--model", "ling-lite", "--profile", p, "--devices", "8:32", "--top", "1",
                                          "--objective", "time", "--tokens", "1e9"};
        }},
       800, 1);
}

TEST(FuzzInputs, HuggingFaceConfigs) {
  for (const char* file : {"ling-plus-config.json", "deepseek-v3.json", "mixtral-8x7b.json"}) {
    fuzz({std::string("config-") + file, slurp(std::string(FLOPWISE_TEST_DATA) + "/" + file), false,
          [](const std::string& p) { return std::vector<std::string>{"model", p}; }},
         400, 2);
  }
}

TEST(FuzzInputs, Plans) {
  const std::string plan = ::testing::TempDir() + "/fuzz-seed-plan.json";
  ASSERT_EQ(run({"plan", "--model", "ling-lite", "--profile", "device-C", "--devices", "16", "--objective", "cost",
                 "--out", plan}).code, 0);
  // simulate reads every field of a plan; it simulates only plans that read back.
  fuzz({"plan.json", slurp(plan), false, [](const std::string& p) { return std::vector<std::string>{"simulate", p}; }},
       300, 3);
}

// Plans over pools: simulate reads each pool's fields and simulates every pool at once.
TEST(FuzzInputs, MixedPlans) {
  for (const char* strategy : {"hetero-dp", "hetero-pipeline"}) {
    const std::string plan = ::testing::TempDir() + "/fuzz-seed-" + strategy + ".json";
    ASSERT_EQ(run({"plan", "--model", "ling-lite", "--tokens", "1e11", "--objective", "time", "--pool", "device-A:16",
                   "--pool", "device-C:16", "--strategy", strategy, "--out", plan}).code, 0);
    fuzz({std::string(strategy) + ".json", slurp(plan), false,
          [](const std::string& p) { return std::vector<std::string>{"simulate", p}; }},
         150, 5);
  }
}

TEST(FuzzInputs, ExecutorTraces) {
  fuzz({"trace.json", slurp(std::string(FLOPWISE_TEST_DATA) + "/tp2-trace.json"), false,
        [](const std::string& p) { return std::vector<std::string>{"calibrate", p, "--profile", "cpu-core", "--report"}; }},
       800, 4);
}

TEST(FuzzInputs, ScalingGrids) {
  fuzz({"grid.yaml", slurp(std::string(FLOPWISE_TEST_DATA) + "/scaling-grid.yaml"), true,
        [](const std::string& p) { return std::vector<std::string>{"scaling", p}; }},
       600, 5);
}

TEST(FuzzInputs, PublishedRunSets) {
  const std::string seed = read_text_file(std::string(FLOPWISE_SOURCE_DIR) + "/planner/validation/published-runs.yaml", "seed");
  fuzz({"runs.yaml", seed, true, [](const std::string& p) { return std::vector<std::string>{"validate", p}; }}, 300, 7);
}

}  // namespace flopwise
