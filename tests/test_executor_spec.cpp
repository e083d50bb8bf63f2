// The executor's torch-free parts: plan reading, scaling, rank groups, data order.
#include <gtest/gtest.h>

#include <fstream>
#include <set>

#include "flopwise/executor/data.hpp"
#include "flopwise/executor/spec.hpp"

namespace flopwise::executor {

TEST(ExecutorSpec, ScalingKeepsGroupsExpertsAndTopK) {
  ModelShape lite;
  lite.layers = 28, lite.hidden = 2048, lite.heads = 16, lite.kv_heads = 4, lite.head_dim = 128;
  lite.vocab = 126464, lite.experts = 64, lite.top_k = 6, lite.expert_ffn = 1408;
  lite.shared_experts = 2, lite.shared_expert_ffn = 1408;
  const ModelShape s = scale_model(lite, 1.0 / 16, 256, 2);
  EXPECT_EQ(s.heads / s.kv_heads, 4);
  EXPECT_EQ(s.kv_heads, 2);  // at least two, so TP = 2 can split them
  EXPECT_EQ(s.expert_ffn % 8, 0);
  EXPECT_EQ(s.experts, 64);
  EXPECT_EQ(s.top_k, 6);
  EXPECT_EQ(s.hidden, 128);
  EXPECT_EQ(s.layers % 2, 0);
  EXPECT_EQ(s.vocab, 256);
  EXPECT_THROW(scale_model(lite, 0.0, 256, 1), SpecError);
}

TEST(ExecutorSpec, LayoutsTooBigForTheMachineAreScaledWithAMessage) {
  ModelShape m;
  m.heads = 16, m.kv_heads = 4, m.experts = 64, m.layers = 28;
  ParallelLayout l;
  l.tp = 2, l.pp = 4, l.ep = 8, l.dp = 64;
  int batch = 8960;
  const std::string note = fit_layout(l, batch, m, 4);
  EXPECT_LE(l.world(), 4);
  EXPECT_EQ(l.dp % l.ep, 0);
  EXPECT_NE(note.find("scaled to"), std::string::npos) << note;
  ParallelLayout fits;
  fits.dp = 2;
  int same = 16;
  EXPECT_EQ(fit_layout(fits, same, m, 4), "");
}

TEST(ExecutorSpec, GroupsFollowTheRankOrder) {
  ParallelLayout l;
  l.tp = 1, l.pp = 2, l.ep = 2, l.dp = 4;
  EXPECT_EQ(dp_group(l, 5), (std::vector<int>{4, 5, 6, 7}));
  EXPECT_EQ(ep_group(l, 5), (std::vector<int>{4, 5}));
  EXPECT_EQ(expert_dp_group(l, 5), (std::vector<int>{5, 7}));
  EXPECT_EQ(position_of(l, 5).pp, 1);
}

TEST(ExecutorSpec, BadPlansAreOneLineErrors) {
  const std::string path = ::testing::TempDir() + "/executor_bad_plan.json";
  std::ofstream(path) << R"({"schema": "flopwise.plan/1", "model": {"name": "x"}})";
  try {
    read_plan(path);
    FAIL();
  } catch (const SpecError& e) {
    EXPECT_NE(std::string(e.what()).find("model.layers: missing field"), std::string::npos) << e.what();
  }
  EXPECT_THROW(read_plan("/no/such/plan.json"), SpecError);
}

TEST(ExecutorData, SampleOrderIsAFunctionOfSeedAndPosition) {
  TokenCorpus corpus;
  for (int i = 0; i < 1000; ++i) corpus.tokens.push_back(i % 251);
  corpus.source = "synthetic";
  const SampleOrder a(corpus, 9, 42), b(corpus, 9, 42), other(corpus, 9, 43);
  std::set<int32_t> firsts;
  bool differs = false;
  for (uint64_t p = 0; p < a.windows(); ++p) {
    EXPECT_EQ(a.sample(p), b.sample(p));
    firsts.insert(a.sample(p)[0]);
    differs |= a.sample(p) != other.sample(p);
    EXPECT_EQ(a.sample(p).size(), 10u);
  }
  EXPECT_EQ(firsts.size(), a.windows());  // an epoch visits every window once
  EXPECT_TRUE(differs);
  EXPECT_NE(a.sample(0), a.sample(a.windows()));  // the next epoch is shuffled anew
}

TEST(ExecutorData, TextIsBytesAndBinIsUint16) {
  const std::string text = ::testing::TempDir() + "/executor_corpus.txt";
  const std::string bin = ::testing::TempDir() + "/executor_corpus.bin";
  std::ofstream(text) << "Ab";
  {
    std::ofstream out(bin, std::ios::binary);
    const unsigned char bytes[] = {0x01, 0x02, 0xFF, 0x00};
    out.write(reinterpret_cast<const char*>(bytes), 4);
  }
  EXPECT_EQ(TokenCorpus::load({text}).tokens, (std::vector<int32_t>{'A', 'b'}));
  const TokenCorpus tokens = TokenCorpus::load({bin});
  EXPECT_EQ(tokens.tokens, (std::vector<int32_t>{0x0201, 0x00FF}));
  EXPECT_EQ(tokens.vocab, 0x0202);
  EXPECT_THROW(SampleOrder(tokens, 8, 1), SpecError);  // shorter than a sequence
}

}  // namespace flopwise::executor
