#pragma once
// Training data: a token stream and a sample order that is a pure function of (seed, position),
// so that a resumed run reads exactly what an uninterrupted one would have read.
#include <cstdint>
#include <string>
#include <vector>

namespace flopwise::executor {

// A 64-bit mix of the inputs (SplitMix64), for seeds derived from several coordinates.
uint64_t mix_seed(uint64_t a, uint64_t b);

// Text files are tokenized byte by byte (vocabulary 256); ".bin" files hold pre-tokenized
// little-endian uint16 tokens.
struct TokenCorpus {
  std::vector<int32_t> tokens;
  int vocab = 256;
  std::string source;
  static TokenCorpus load(const std::vector<std::string>& paths);
};

class SampleOrder {
 public:
  SampleOrder(const TokenCorpus& corpus, int seq_len, uint64_t seed);
  // seq_len + 1 tokens (inputs and shifted targets) of the sample at global position `position`.
  std::vector<int32_t> sample(uint64_t position) const;
  uint64_t windows() const { return windows_; }
  int seq_len() const { return seq_len_; }

 private:
  uint64_t window_of(uint64_t position) const;
  const TokenCorpus& corpus_;
  int seq_len_;
  uint64_t seed_;
  uint64_t windows_;
};

}  // namespace flopwise::executor
