#pragma once
// What the user wants trained, independent of how it is laid out.
#include <algorithm>
#include <string>

#include "flopwise/hardware_profile.hpp"

namespace flopwise {

// How the attention core runs. Fused (FlashAttention-style) kernels never store or stream the
// s x s scores, and every current framework uses them; unfused is Megatron-LM's older path
// (batched GEMMs around a scale-mask-softmax and attention dropout, as in Korthikanti et al. 2022),
// kept as an explicit option for runs that used it.
enum class AttentionKernel { kFused, kUnfused };
std::string to_string(AttentionKernel kernel);
AttentionKernel parse_attention_kernel(const std::string& text, const std::string& source, const std::string& field);

// How routed tokens travel to their experts. Megatron-Core's all-to-all dispatcher (its default,
// --moe-token-dispatcher-type alltoall) sends one copy per (token, expert); the flex dispatcher
// over DeepEP or HybridEP sends a token once to each rank, and across the network once to each
// node, that holds any of its experts, and fans it out there over NVLink (DeepSeek-V3 report,
// arXiv 2412.19437, sec. 3.2.2).
enum class EpDispatcher { kAllToAll, kFlex };
std::string to_string(EpDispatcher dispatcher);
EpDispatcher parse_ep_dispatcher(const std::string& text, const std::string& source, const std::string& field);

// How an fp8 run scales the tensors it casts (Megatron-LM's --fp8-recipe). flopwise's default is
// tensorwise (current) scaling, what NVIDIA's Hopper performance recipes run (Megatron-Bridge
// perf_recipes: fp8_cs); Megatron-LM's own default is delayed, so the arguments flopwise writes
// always name the recipe it priced. Delayed scaling takes a tensor's scale from the amax history of earlier steps, so one cast
// kernel reads it and writes the fp8 copy and its transpose, reducing the amax on the way;
// tensorwise (current) scaling first reads the whole tensor for its amax; mxfp8 (Blackwell, a
// scale per 32 values) and blockwise (Hopper, DeepSeek-V3's 1 x 128 and 128 x 128 blocks) compute
// their block scales inside the cast (NVIDIA Transformer Engine, "Using FP8 with Transformer
// Engine": recipes).
enum class Fp8Recipe { kDelayed, kTensorwise, kMxfp8, kBlockwise };
std::string to_string(Fp8Recipe recipe);
Fp8Recipe parse_fp8_recipe(const std::string& text, const std::string& source, const std::string& field);

// Which communication the training framework runs beside compute: Megatron-LM's switches, a
// property of the software, not of the hardware. The defaults are Megatron-Core's usual training
// setup; flopwise-train blocks on every collective (none).
struct CommOverlap {
  bool grad_reduce = true;   // --overlap-grad-reduce (and PyTorch DDP): DP buckets reduce during backward
  bool param_gather = true;  // --overlap-param-gather: sharded weights all-gather during the next forward
  // Megatron-LM's asynchronous input-gradient all-reduce (reduce-scatter under SP) beside the
  // column-parallel weight-gradient GEMM, on since 2021 (--no-async-tensor-model-parallel-allreduce).
  bool tp_grad = true;
  bool tp_comm = false;      // --tp-comm-overlap (Transformer Engine): every TP collective beside a GEMM
  bool p2p = true;           // --overlap-p2p-communication: interleaved-schedule sends beside compute
  // --overlap-moe-expert-parallel-comm (Megatron-Core's combined 1F1B): the forward of one
  // micro-batch and the backward of another run merged, each one's EP all-to-alls beside the
  // other's compute. Megatron-Core takes it with EP > 1, interleaving where PP > 1, and no full
  // recompute (TransformerConfig's checks); elsewhere it does not apply.
  bool ep_a2a = false;
  static CommOverlap none() { return {false, false, false, false, false, false}; }
  bool operator==(const CommOverlap&) const = default;
};
// "grad_reduce,param_gather,tp_grad,p2p", or "none"; parse takes the same list.
std::string overlap_names();  // every switch's name, comma-separated, in print order
std::string to_string(const CommOverlap& overlap);
CommOverlap parse_comm_overlap(const std::string& text, const std::string& source, const std::string& field);

// How Megatron-Core's router keeps its experts balanced and its logits small: each choice launches
// kernels of its own over the [tokens, experts] scores in every MoE layer, beside the gate GEMM
// (megatron/core/transformer/moe/router.py). The losses are --moe-router-load-balancing-type's
// (one or a list) and ST-MoE's z_loss (--moe-z-loss-coeff); Megatron-Core computes a loss only
// with a coefficient set. expert_bias is --moe-router-enable-expert-bias (DeepSeek-V3's
// auxiliary-loss-free balancing). flopwise's default is the Ling report's router (section 3.2:
// a load-balancing aux_loss and the z-loss).
struct RouterBalancing {
  bool aux_loss = true;         // Switch Transformer's loss over the micro-batch
  bool seq_aux_loss = false;    // the same loss sequence by sequence (DeepSeek-V3)
  bool global_aux_loss = false; // over the global batch's token counts, reduced over DP
  bool z_loss = true;           // the squared log-sum-exp of each token's logits
  bool expert_bias = false;
  static RouterBalancing none() { return {false, false, false, false, false}; }
  bool any_loss() const { return aux_loss || seq_aux_loss || global_aux_loss; }  // of the balancing losses
  bool operator==(const RouterBalancing&) const = default;
};
// "aux_loss,z_loss", "seq_aux_loss,expert_bias", or "none"; parse takes the same list.
std::string router_balancing_names();
std::string to_string(const RouterBalancing& balancing);
RouterBalancing parse_router_balancing(const std::string& text, const std::string& source, const std::string& field);

struct TrainingRun {
  int global_batch = 8960;  // sequences per step (Ling report, section 3.4: 8,960 x 4K tokens)
  int seq_len = 4096;
  double tokens = 1e12;     // token budget the cost and days are reported for
  Precision precision = Precision::kBf16;
  AttentionKernel attention = AttentionKernel::kFused;
  CommOverlap overlap;
  // Megatron-LM's --gradient-accumulation-fusion: each weight-gradient GEMM adds into the main
  // gradient in its epilogue. Megatron-LM of 2022 switched it off for fp16 without fp32
  // accumulation; off, the GEMM writes the gradient and a separate kernel adds it in.
  bool grad_accumulation_fusion = true;
  // Megatron-LM's --grad-reduce-in-bf16 (Megatron-Core's DDP grad_reduce_in_fp32 off): in a bf16
  // or fp8 run the main gradients are bf16, accumulated and reduced in bf16 instead of fp32; the
  // distributed optimizer copies its shard to fp32 before the step. NVIDIA's performance recipes
  // run it (Megatron-Bridge perf_recipes/_common.py: grad_reduce_in_fp32 = False).
  bool grad_reduce_in_bf16 = false;
  // Megatron-Core's precision-aware optimizer with bf16 moments (--use-precision-aware-optimizer
  // --exp-avg-dtype bf16 --exp-avg-sq-dtype bf16): AdamW keeps its fp32 master weights but stores
  // both moments in bf16, as DeepSeek-V3 trained (DeepSeek-V3 report, section 3.3.3); Megatron
  // runs it only inside the distributed optimizer. A bf16 or fp8 run's option.
  bool adam_moments_in_bf16 = false;
  // SMs Transformer Engine's TP-overlap kernels hold beside the GEMMs they overlap (tp_comm), out
  // of the GEMM's: TE's default num_sm of 16 (NeMo's tuned GPT-3 175B H100 configs use 20-24 beside
  // the forward GEMMs, 2-8 beside the backward ones). 0: the overlap costs the GEMMs nothing.
  int tp_comm_sms = 16;
  EpDispatcher ep_dispatcher = EpDispatcher::kAllToAll;
  // SMs the flex dispatcher's dispatch and combine kernels hold (Megatron-Core's
  // --moe-flex-dispatcher-num-sms, formerly --moe-deepep-num-sms / --moe-hybridep-num-sms):
  // DeepEP's historical default of 20 (DeepSeek-V3 report, arXiv 2412.19437, sec. 3.2.2: "only 20
  // SMs are sufficient"); NVIDIA's performance recipes give HybridEP 32 (Megatron-Bridge
  // perf_recipes/_common.py). Flex runs only.
  int flex_dispatcher_sms = 20;
  Fp8Recipe fp8_recipe = Fp8Recipe::kTensorwise;  // fp8 runs only
  // Dropout probabilities (Megatron-LM's --hidden-dropout, after each block's output projection
  // inside its bias-dropout-add, and --attention-dropout, on the attention probabilities). Megatron's
  // own defaults are 0.1 (GPT-3's); flopwise's is 0, as LLM pre-training runs today (Llama 2 and 3,
  // Qwen3, DeepSeek-V3 and NVIDIA's recipes for them set 0). A dropout writes a 1-byte mask forward
  // and reads it backward; see CostModel.
  double hidden_dropout = 0;
  double attention_dropout = 0;
  // Megatron-Core's --moe-router-fusion (off by default): Transformer Engine's fused kernels for the
  // router's top-k and its auxiliary losses, one kernel where plain torch ops launch several.
  bool router_fusion = false;
  RouterBalancing router_balancing;
  // Busiest EP rank's routed tokens over the mean; 1 is perfectly balanced routing.
  double routing_skew = 1.0;
  // Megatron-Core's --moe-expert-capacity-factor: each expert takes at most this many times its
  // balanced share of tokens and drops the rest, so the busiest EP rank's load is capped at it.
  // 0 is dropless routing (every token reaches its experts, the skew as it comes).
  double moe_capacity_factor = 0;
  // What the busiest EP rank processes over the mean: the skew, capped by the capacity.
  double expert_load() const {
    return moe_capacity_factor > 0 ? std::min(routing_skew, moe_capacity_factor) : routing_skew;
  }
  // Fraction of device memory kept free (fragmentation, spikes); a layout must fit in the rest.
  double memory_headroom = 0.10;

  double tokens_per_step() const { return static_cast<double>(global_batch) * seq_len; }
};

// Throws InputError naming `source` and the option for values out of range.
void validate(const TrainingRun& run, const std::string& source);

}  // namespace flopwise
