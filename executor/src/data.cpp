#include "flopwise/executor/data.hpp"

#include <fstream>
#include <iterator>

#include "flopwise/executor/spec.hpp"

namespace flopwise::executor {

uint64_t mix_seed(uint64_t a, uint64_t b) {
  uint64_t x = a ^ (b + 0x9E3779B97F4A7C15ull + (a << 6) + (a >> 2));
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

namespace {

// SplitMix64 (Steele et al. 2014): a bijective mixer, used to key the permutation below.
uint64_t mix(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// A keyed permutation of [0, n) by cycle-walking a 4-round Feistel network over the next power
// of four: each epoch visits every window once, in an order fixed by (seed, epoch).
uint64_t permute(uint64_t index, uint64_t n, uint64_t key) {
  int half_bits = 1;
  while ((1ull << (2 * half_bits)) < n) ++half_bits;
  const uint64_t mask = (1ull << half_bits) - 1;
  uint64_t x = index;
  do {
    uint64_t left = x >> half_bits, right = x & mask;
    for (int round = 0; round < 4; ++round) {
      const uint64_t next = left ^ (mix(right ^ key ^ (static_cast<uint64_t>(round) << 56)) & mask);
      left = right;
      right = next;
    }
    x = (left << half_bits) | right;
  } while (x >= n);
  return x;
}

}  // namespace

TokenCorpus TokenCorpus::load(const std::vector<std::string>& paths) {
  TokenCorpus corpus;
  for (const std::string& path : paths) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw InputError(path + ": cannot open data file");
    const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const bool binary = path.size() > 4 && path.compare(path.size() - 4, 4, ".bin") == 0;
    if (binary) {
      if (bytes.size() % 2 != 0) throw InputError(path + ": a .bin token file holds uint16 tokens (even size)");
      for (size_t i = 0; i < bytes.size(); i += 2) {
        const int token = static_cast<unsigned char>(bytes[i]) | (static_cast<unsigned char>(bytes[i + 1]) << 8);
        corpus.tokens.push_back(token);
        corpus.vocab = std::max(corpus.vocab, token + 1);
      }
    } else {
      for (unsigned char c : bytes) corpus.tokens.push_back(c);
    }
    corpus.source += (corpus.source.empty() ? "" : ",") + path;
  }
  return corpus;
}

SampleOrder::SampleOrder(const TokenCorpus& corpus, int seq_len, uint64_t seed)
    : corpus_(corpus), seq_len_(seq_len), seed_(seed) {
  // Non-overlapping windows of seq_len + 1 tokens (the last token of one is the first target).
  windows_ = corpus.tokens.size() > static_cast<size_t>(seq_len) ? (corpus.tokens.size() - 1) / seq_len : 0;
  if (windows_ == 0) {
    throw InputError(corpus.source + ": corpus of " + std::to_string(corpus.tokens.size()) +
                    " tokens is shorter than one sequence of " + std::to_string(seq_len + 1));
  }
}

uint64_t SampleOrder::window_of(uint64_t position) const {
  const uint64_t epoch = position / windows_;
  return permute(position % windows_, windows_, mix(seed_ ^ mix(epoch)));
}

std::vector<int32_t> SampleOrder::sample(uint64_t position) const {
  const uint64_t start = window_of(position) * seq_len_;
  return {corpus_.tokens.begin() + start, corpus_.tokens.begin() + start + seq_len_ + 1};
}

}  // namespace flopwise::executor
