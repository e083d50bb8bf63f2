#include "flopwise/training_run.hpp"

#include "flopwise/error.hpp"

namespace flopwise {

std::string to_string(AttentionKernel kernel) { return kernel == AttentionKernel::kUnfused ? "unfused" : "fused"; }

AttentionKernel parse_attention_kernel(const std::string& text, const std::string& source, const std::string& field) {
  if (text == "fused") return AttentionKernel::kFused;
  if (text == "unfused") return AttentionKernel::kUnfused;
  throw input_error(source, field, "unknown attention kernel '" + text + "' (expected fused or unfused)");
}

void validate(const TrainingRun& run, const std::string& source) {
  if (run.global_batch <= 0) throw input_error(source, "global_batch", "must be a positive integer");
  if (run.seq_len <= 0) throw input_error(source, "seq_len", "must be a positive integer");
  if (!(run.tokens > 0)) throw input_error(source, "tokens", "must be a positive number of tokens");
  if (!(run.routing_skew >= 1.0)) {
    throw input_error(source, "routing_skew", "must be >= 1 (busiest EP rank's tokens over the mean)");
  }
  if (!(run.memory_headroom >= 0.0 && run.memory_headroom < 1.0)) {
    throw input_error(source, "memory_headroom", "must be a fraction in [0, 1)");
  }
}

}  // namespace flopwise
