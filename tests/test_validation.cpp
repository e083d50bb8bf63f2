// flopwise validate: published measured runs predicted with the shipped profiles.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "flopwise/calibrate.hpp"
#include "flopwise/catalog.hpp"
#include "flopwise/error.hpp"
#include "flopwise/model_import.hpp"
#include "flopwise/validation.hpp"
#include "test_helpers.hpp"

namespace flopwise {

namespace {

// One published-run row as YAML: what a test varies is given, the rest are the usual fields.
struct RowYaml {
  std::string name, model, layout;
  std::string hardware = "a100-80gb";
  int seq_len = 128;
  std::string measured = "measured_step_time: \"1 s\"";
  bool kernels_and_overlap = true;  // the attention and comm_overlap fields
};

std::string runs_yaml(std::initializer_list<RowYaml> rows) {
  std::string text = "runs:\n";
  for (const RowYaml& r : rows) {
    text += "  - name: " + r.name + "\n    source: \"somewhere\"\n    model: " + r.model + "\n    hardware: " +
            r.hardware + "\n    precision: bf16\n";
    if (r.kernels_and_overlap) text += "    attention: fused\n    comm_overlap: none\n";
    text += "    seq_len: " + std::to_string(r.seq_len) + "\n    global_batch: 8\n    layout: " + r.layout + "\n    " +
            r.measured + "\n";
  }
  return text;
}

}  // namespace

TEST(Validation, ShippedRunsCarryTheirSources) {
  const std::vector<PublishedRun> runs = shipped_published_runs();
  ASSERT_EQ(runs.size(), 45u);
  for (const PublishedRun& r : runs) {
    const bool h100 = r.profile == "h100-sxm", fp8 = r.run.precision == Precision::kFp8;
    const bool bridge = r.name.rfind("bridge ", 0) == 0, playbook = r.name == "bridge qwen3-30B bf16";
    const char* table = playbook ? "Megatron-Bridge skill nemo-mbridge-perf-moe-hardware-configs"
                        : bridge ? "Megatron-Bridge performance summary"
                        : !h100  ? "Table 5"
                        : fp8    ? "NeMo 24.07"
                                 : "Megatron-Core r0.8.0";
    EXPECT_NE(r.source.find(table), std::string::npos) << r.name;
    EXPECT_GT(r.measured_step_s, 0) << r.name;
  }
  // NeMo's LLAMA2-70B row: 128 x 4,096 tokens at 1,707 tokens/s on each of 64 GPUs.
  EXPECT_NEAR(runs[14].measured_step_s, 128 * 4096 / (1707.0 * 64), 1e-4);
  EXPECT_EQ(runs[14].run.precision, Precision::kFp8);
  // Nemotron-340B: 32 x 4,096 tokens at 322 tokens/s on each of 128 GPUs; 8 query groups.
  ASSERT_EQ(runs[17].name, "nemo nemotron-340B");
  EXPECT_NEAR(runs[17].measured_step_s, 32 * 4096 / (322.0 * 128), 1e-4);
  EXPECT_EQ(runs[17].model.kv_heads, 8);
  // 22B: GELU MLP of 24,576 as a SwiGLU of 2/3 the width, heads of 6144 / 64.
  EXPECT_EQ(runs[0].model.dense_ffn, 16384);
  EXPECT_EQ(runs[0].model.head_dim, 96);
  EXPECT_EQ(runs[0].layout.devices(), 8);
  // Full-recompute rows ran plain TP all-reduces; every row ran Megatron's unfused attention.
  EXPECT_FALSE(runs[0].layout.sequence_parallel);
  EXPECT_TRUE(runs[1].layout.sequence_parallel);
  EXPECT_EQ(runs[0].run.attention, AttentionKernel::kUnfused);
  // Megatron-Core's 1.7B row: 192 x 4,096 tokens, 12 x 192 x 4,096 x 24 x 2,048^2 x (2 + 2 + 4 +
  // 131,072 / (2 x 24 x 2,048)) FLOPs by Megatron's count, at 408.8 TFLOP/s on each of 48 GPUs.
  EXPECT_EQ(runs[20].name, "mcore 1.7B");
  const double flops = 12.0 * 192 * 4096 * 24 * 2048.0 * 2048 * (8 + 131072.0 / (2 * 24 * 2048));
  EXPECT_NEAR(runs[20].measured_step_s, flops / (408.8e12 * 48), 1e-4);
  EXPECT_EQ(runs[20].run.precision, Precision::kBf16);
  EXPECT_EQ(runs[20].run.attention, AttentionKernel::kFused);
  // Megatron-Bridge's Qwen3-30B-A3B row: 1,024 x 4,096 tokens at 9,058 tokens/s on each of 16 GPUs,
  // 128 experts of which each token meets 8, attention 32 heads of 128 on a hidden size of 2,048.
  EXPECT_EQ(runs[31].name, "bridge qwen3-30B pp2");
  EXPECT_NEAR(runs[31].measured_step_s, 1024 * 4096 / (9058.0 * 16), 1e-4);
  EXPECT_TRUE(runs[31].model.is_moe());
  EXPECT_EQ(runs[31].model.heads * runs[31].model.head_dim, 4096);
  EXPECT_EQ(runs[31].layout.ep, 8);
  // Qwen3-30B-A3B's canonical bf16 recipe: its step time as the playbook gives it, HybridEP on 32 SMs.
  ASSERT_EQ(runs[33].name, "bridge qwen3-30B bf16");
  EXPECT_DOUBLE_EQ(runs[33].measured_step_s, 20.14729);
  EXPECT_EQ(runs[33].run.flex_dispatcher_sms, 32);
  EXPECT_TRUE(runs[33].run.overlap.ep_a2a);
  // GPT-OSS 120B: 1,280 x 4,096 tokens at 5,824 tokens/s on each of 64 GPUs; half its 36 layers
  // attend within a 128-token window.
  ASSERT_EQ(runs[34].name, "bridge gpt-oss-120B");
  EXPECT_NEAR(runs[34].measured_step_s, 1280 * 4096 / (5824.0 * 64), 1e-4);
  EXPECT_EQ(runs[34].model.windowed_layers, 18);
  EXPECT_EQ(runs[34].model.attention_window, 128);
  EXPECT_EQ(runs[31].layout.devices(), 16);
  // NeMo's LLAMA3-8B row with context parallelism 2: 128 x 8,192 tokens at 12,036 tokens/s on each
  // of 8 GPUs, DP 4 over CP 2.
  ASSERT_EQ(runs[18].name, "nemo llama3-8B cp2");
  EXPECT_NEAR(runs[18].measured_step_s, 128 * 8192 / (12036.0 * 8), 1e-4);
  EXPECT_EQ(runs[18].layout.cp, 2);
  EXPECT_EQ(runs[18].layout.devices(), 8);
  // Llama 3.1 405B on 256 GB200: 1,536 x 8,192 tokens at 843 tokens/s on each GPU, TP 4 x PP 16
  // x DP 4, within NVL72 domains of the gb200 profile.
  ASSERT_EQ(runs[42].name, "bridge 405B gb200");
  EXPECT_NEAR(runs[42].measured_step_s, 1536 * 8192 / (843.0 * 256), 1e-4);
  EXPECT_EQ(runs[42].layout.devices(), 256);
  EXPECT_EQ(resolve_profile(runs[42].profile).node.devices, 72);
}

// The bounds this project's cost model reaches today, per part of the shipped set. Korthikanti's
// A100 rows: mean 5.3%, worst 11.2% since GEMM epilogues (outputs, fp32 weight-gradient
// accumulation) run after their main loops (10.9% / 13.7% before; 8.6% / 12.1% before the
// framework's overlap of TP input gradients and the SP re-gather were modelled, which made every
// row faster still; 9.2% and 18.8% before GEMM shapes, memory-bound kernels and unfused attention).
// NeMo's H100 fp8 rows: mean 12.8%, worst 18.2% with the fused attention at cuDNN's published
// causal rate (13.5% / 18.9% at the former assumed 0.50); with fp8 GEMMs at their own measured efficiency
// and the fused attention backward at 2.5 forwards (20.2% / 25.3% before; 30.4% / 33.0% before
// the epilogues; 37.5% / 40.3% before fp8 quantization traffic and the bf16 LM head). Its three
// Nemotron rows, added after the model was set (held out from every choice above), come out
// 16.3% / 20.0%, fast like the rest: with them the table is 13.9% / 20.0%.
// Megatron-Core's H100 bf16 rows: mean 13.3%, worst 24.7% (13.7% / 25.7% at attention 0.50; 13.3%
// before the unequal-stage bubble;
// 13.8% / 27.2% before the attention backward).
// Megatron-Bridge's H100 fp8 rows: Llama 3 70B mean 6.5%, worst 6.6% (7.9% / 8.0% at attention
// 0.50); Qwen3-30B-A3B, 128 fine-grained experts, dropless, 63.7% / 63.7% (64.4% at 0.50):
// predicted 2.8x faster than it ran, a gap of the model (see the README's validation section);
// Qwen3-235B-A22B (4 local experts, EP 32 over 4 nodes, the ends counted as layers) 11.3% / 12.7%,
// slow, with every all-to-all priced as waited for where the run overlapped them.
// With Megatron's optimizer step costed kernel by kernel (38 bytes per updated parameter and the
// grad buffer's zeroing, where 30 bytes were before): Table 5 5.1% / 9.6%, NeMo 13.5% / 19.6%
// (Nemotron 15.9% / 19.6%), Megatron-Core 13.1% / 24.1%, Llama 3 70B 6.5% / 6.5%, Qwen3-235B
// 11.3% / 12.7%; Qwen3-30B unchanged. With the A100's memory efficiency measured (0.88, where 0.90
// was assumed): Table 5 4.7% / 9.0%. With GEMMs scheduled as the library does (split-K where the
// output has fewer tiles than units; on Hopper, half tiles and a 4 us launch fitted to XLA's
// measured sm_90 table, whose mean error falls from 35% to 10.6%): Table 5 unchanged (no A100
// GEMM of these runs is that thin), the H100 rows, already fast, a little faster: NeMo 13.7% /
// 19.9% (Nemotron 16.4% / 19.9%), Megatron-Core 13.7% / 24.7%, Llama 3 70B 6.5% / 6.5%,
// Qwen3-235B 11.4% / 12.8%. With Table 5 run in fp16 as Megatron-LM ran it (fp16 grads, the
// optimizer's copy to fp32 and loss-scale unscale: 14 bytes a parameter more; the weight
// gradients' accumulation outside the GEMM moving the 8 bytes the fused fp32 one did): 4.3% / 7.3%.
// With Transformer Engine's TP overlap holding its 16 SMs beside the GEMMs it overlaps (the
// GEMM on the other 116; DeepSeek's H800 trace shows expert GEMMs beside 20 held SMs within 5% of
// this model): NeMo 11.2% / 18.0% (Nemotron 13.5% / 17.1%), Megatron-Core 10.7% / 24.0% (its
// 32B row, slow already, 12.8% where it was 9.4%), Llama 3 70B 2.9% / 3.0%; Table 5 and Qwen3
// unchanged (no TE overlap). With NCCL's channels (one SM each: 24 on the A100 node,
// nccl-tests#100; 16 on the H100, an ASSUMPTION from the H800's log) held beside the TP
// collectives Megatron-LM hides behind its backward GEMMs (tp_grad): Table 5 4.3% / 7.3% ->
// 3.4% / 5.7%, every row still fast; Qwen3-235B (TP 2 with tp_grad, already slow) 11.4% / 12.8%
// -> 11.5% / 12.9%; the TE-overlap rows unchanged. Qwen3-30B-A3B's rows replaced by its later
// containers' (the 26.02.01 patch release ran the same PP 2, EP 8 layout 1.77x faster than 26.02,
// and 26.04.01 PP 1, EP 16 at the same speed): 35.3% fast and 7.9% slow, where 63.7% was; GPT-OSS
// 120B (bf16, 16 local experts, sliding windows), added with them: 36.5% fast. With RoPE's read
// and write of every query and key head (learned positions for the GPT rows): NeMo 11.2% ->
// 10.6% (Llama 2 7B 9.7% -> 8.0%; Nemotron 13.5% / 17.1% -> 12.7% / 15.8%), Llama 3 70B 2.9% ->
// 2.5%, Qwen3-30B 21.6% / 35.3% -> 21.6% / 34.5%, GPT-OSS 36.1%, Qwen3-235B (slow already)
// 11.5% / 12.9% -> 11.9% / 13.4%; the GPT rows unchanged. With the EP 16 row's HybridEP priced
// as the flex dispatcher it ran (a token crosses once per node it needs, not once per expert), the
// two Qwen3-30B layouts, measured within 1% of each other, come out within 0.5%: 34.5% and 34.9%
// fast, where 34.5% fast and 8.7% slow were (mean 21.6% -> 34.7%): the gap is the MoE layer's.
// DeepSeek-V3 on 1,024 GPUs (its ends of 7 and 6 layers over 4 chunks now a valid split; DeepEP
// priced as the flex dispatcher, 36% slow as a plain all-to-all), added then: 15.7% slow, with the
// all-to-alls its recipe overlapped across micro-batches priced as waited for.
// The Megatron-Bridge rows, whose recipes keep bf16 main gradients (grad_reduce_in_fp32 = False in
// every performance config read, 25.09 on), run with grad_reduce_in_bf16: Llama 3 70B 2.5% ->
// 4.4% / 4.6% fast, Qwen3-30B 34.7% -> 35.9%, GPT-OSS 36.1% -> 40.0% (B200 37.6% -> 47.0%, its
// expert DP reduce over one NIC a node halving), DeepSeek-V3 15.7% -> 13.4% slow, Qwen3-235B
// 11.9% -> 10.7%; their memory estimates fall with the gradients (DeepSeek-V3 101 -> 97 GiB).
// Llama 3.1 405B on 1,024 H100s with context parallelism 2 (its CP pairs across two nodes, the
// ring hidden behind the attention), added with CP: 18.7% fast at GBS 512 (25.11), 11.2% at 1,536
// (26.04.01).
// With the EP all-to-all overlap their recipes ran (combined 1F1B, ep_a2a), DeepSeek-V3 13.4% slow ->
// 25.3% fast and Qwen3-235B 9.2% / 12.1% slow -> 20.7% / 20.4% fast: every MoE row is now fast
// (20-47%), the cost of a MoE layer flopwise does not count.
// NeMo 24.07's two context-parallel rows (Llama 3 8B and 70B at CP 2), added with CP, land with the
// table's others: 14.3% and 9.7% fast (NeMo 10.6% -> 10.9%).
// The all-to-all dispatcher's sorts by local expert (Megatron-Core's sort_chunks_by_idxs), priced
// as memory traffic: Qwen3-30B PP 2 36.0% -> 32.3%, GPT-OSS 40.0% -> 38.7% (B200 47.0% -> 46.0%),
// Qwen3-235B 20.7% / 20.4% -> 20.2% / 20.1%.
// Three DGX-GB200 rows (NVL72, the gb200 profile from GB200 measurements), added with that
// profile: Llama 3.1 405B 15.1%, Llama 3 70B 18.7% and Qwen3-30B-A3B (a CUDA graph of the whole
// iteration, micro-batch 4) 14.4% fast, where the same 30B model eager on H100 is 32-36% fast.
// Selective recompute's modules as the recipes ran them: DeepSeek-V3 recomputing its MLA
// up-projections and 3 dense MLPs 25.3% -> 24.3% fast (its memory 82 -> 64 GiB), GPT-OSS its
// pre-MLP norm and expert activation 38.7% -> 38.1% (B200 46.0% -> 45.5%).
// Grouped expert GEMMs in Transformer Engine's rounds of 4 streams: Qwen3-30B 35.6% / 32.3% ->
// 35.4% / 31.5% (GB200 17.7% -> 16.2%), GPT-OSS 37.3% -> 36.4%; 4 local experts or fewer unchanged.
// Megatron's compiled memory-bound kernels (its @jit_fuser bias-dropout-adds and activations, which
// torch.compile generates) at their measured fraction of the bandwidth (H100 0.55, Megatron's
// bias_swiglu_impl; A100 0.52, torch's LayerNorm; Liger-Kernel's published benchmark data), library
// kernels and plain torch ops (the cross-entropy, measured in the same data near the library speed)
// at theirs as before: Table 5 3.4% / 5.6% -> 2.0% / 4.7%, NeMo 12.4% / 19.0% -> 9.9% / 15.1%,
// Megatron-Core 10.5% / 22.9% -> 9.4% / 19.8%, Llama 3 70B 5.3% -> 3.1%, 405B CP 2 15.0% -> 13.6%,
// Qwen3-30B 27.7% -> 25.5%, GPT-OSS 36.4% -> 34.7%, DeepSeek-V3 24.3% -> 23.4%, Qwen3-235B 20.2% ->
// 20.0%; the B200 and GB200 rows, at the H100 fraction as an ASSUMPTION: 27.3% -> 24.9% and 17.1%
// -> 14.9%.
// Every kernel then waiting the stream's gap before the next (2 us, the median in DeepSeek's H800
// training trace; an ASSUMPTION on the A100, B200 and GB200), over the kernels the model prices:
// Table 5 2.0% / 4.7% -> 1.7% / 4.4%, NeMo 9.9% -> 9.2%, Megatron-Core 9.4% / 19.8% -> 8.9% /
// 18.6%, Llama 3 70B 3.1% -> 2.4%, Qwen3-30B 25.4% -> 23.6%, GPT-OSS 34.7% -> 34.0% (B200 43.9%
// -> 43.6%), DeepSeek-V3 23.4% -> 22.6%, Qwen3-235B 20.0% -> 19.8%, 405B CP 2 13.6% -> 12.9%,
// GB200 14.8% -> 13.8%.
// Each of a paired MoE layer's four all-to-alls hidden only beside the compute of its own phase of
// combined 1F1B (Megatron-Core's TransformerLayerSchedulePlan.run), not beside the whole pass:
// DeepSeek-V3 22.6% -> 13.7% fast, Qwen3-235B 19.8% / 19.8% -> 16.5% / 16.2%; GB200's Qwen3-30B
// (all-to-alls inside NVLink, shorter than every phase) unchanged.
// Transformer Engine's TP overlap hiding each collective only behind the GEMM it pairs it with (a
// ring exchange per column-parallel chunk, the last of 4 pipelined reduce-scatters waited for,
// bulk collectives beside the backward GEMMs), not anywhere in the pass: NeMo 9.2% -> 8.5%
// (Nemotron 11.9% -> 10.8%), Megatron-Core 8.9% -> 8.4% mean but its worst 18.6% -> 22.3%: the
// 32B row (TP 8, its DP reduce over one NIC a node already priced at 0.30 s against at most 0.18 s
// the measured step leaves) goes from 15.0% to 22.3% slow while every other row of the table
// moves closer; Llama 3 70B 2.4% -> 1.0%, 405B CP 2 12.9% -> 9.4%, GB200 13.8% -> 13.4%.
// The A100's kernel gap measured on a public A100-SXM4-80GB trace (4 us, Holistic Trace
// Analysis' test data) where 2 us was assumed: Table 5 1.7% / 4.4% -> 1.6% / 4.1%. Its optimizer
// step at the 0.72 of bandwidth apex's fused Adam reached in that trace: 1.6% / 4.1% -> 1.5% / 3.6%.
// Nemotron-340B priced with the bf16 gradients and optimizer state its NeMo config sets (the one
// NeMo 24.07 config that does): it now fits its 80 GB (88.0 -> 66.5 GiB) and comes out 6.3% ->
// 13.9% fast; NeMo 8.0% -> 8.6%, its Nemotron rows 10.3% -> 12.8% / 12.4% -> 13.9%.
// The flex dispatcher's SMs as the runs set them (HybridEP's 32 in NVIDIA's recipes, not DeepEP's
// 20): GB200's Qwen3-30B, whose all-to-alls hide beside its experts, 10.9% -> 9.1% fast; GB200
// 13.3% -> 12.7%; no H100 row moves (the one HybridEP row waits for its all-to-alls).
// Qwen3-30B-A3B's canonical BF16 run on 16 H100s (HybridEP, EP overlap, 20.15 s a step, as
// Megatron-Bridge's MoE playbook records it) joins the set: 21.1% fast, all rows 9.9% -> 10.2%,
// H100 10.9% -> 11.2% (32 rows), its Qwen3-30B rows 23.0% -> 22.5%.
// QK-norm priced (the key's copy, the two norms each pass, their kept inputs) and declared on the
// Qwen3 rows: Qwen3-30B 22.5% / 32.2% -> 21.4% / 31.3% (GB200's 9.1% -> 7.7%), Qwen3-235B
// 16.5% / 16.2% -> 16.4% / 16.1%; H100 11.2% -> 11.1%, GB200 12.7% -> 12.3%.
// The router at the bf16 rate with no fp8 cast (a plain parameter outside Transformer Engine, not
// quantized in an fp8 run): Qwen3-30B 21.4% / 31.3% -> 21.6% / 31.6%, Qwen3-235B 16.4% / 16.1% ->
// 16.5% / 16.2%, GB200 12.3% -> 12.3%; physics over fit, the bounds loosened by as much.
// The copies between the fused QKV output and the attention kernel (the GQA query's reshape, the
// value's copy once RoPE or QK-norm rewrote query and key, the gradients' cat): every RoPE row
// slower, all of them fast already: NeMo 8.6% -> 8.2% (Nemotron 12.8% / 13.9% -> 12.2% / 13.7%),
// Llama 3 70B 0.9% -> 0.6%, Qwen3-30B 21.6% / 31.6% -> 20.8% / 31.0%, GPT-OSS 34.0% -> 33.7%
// (B200 43.3% -> 43.1%), Qwen3-235B 16.5% / 16.2% -> 16.4% / 16.1%, 405B CP 2 9.3% / 13.4% ->
// 9.2% / 13.2%, B200 Llama 3 8B 5.0% -> 4.4%, GB200 12.3% -> 11.7%; H100 11.1% -> 10.8%, all
// rows 10.1% -> 9.8%; Table 5 and the Megatron-Core rows (learned positions, MHA) unchanged.
// An fp8 run's experts padding their copies to the fp8 alignment and back (TE's Fp8Padding and
// Fp8Unpadding, behind the all-to-all dispatcher): Qwen3-30B PP 2 26.4% -> 22.5% fast, Qwen3-235B
// 16.4% / 16.1% -> 14.5% / 14.2%; H100 10.8% -> 10.6%, all rows 9.8% -> 9.6%.
// Current scaling's three kernels a cast (amax, scale, cast-transpose) and a grouped GEMM's casts
// expert by expert (one fused kernel a round under delayed scaling only): Qwen3-30B 19.8% / 31.0%
// -> 18.2% / 29.2% (PP 2 22.5% -> 19.0%; GB200's MXFP8 row 6.7% -> 5.6%), DeepSeek-V3 13.7% ->
// 13.4%, Qwen3-235B 14.5% / 14.2% -> 14.1% / 13.8%; H100 10.6% -> 10.4%, all rows 9.6% -> 9.5%.
// The MLP activation's backward at its own measured rate (Megatron-Core's swiglu_back at 0.20 of
// H100 bandwidth, efficiency.memory_compiled_backward) over its own bytes (5/3 of the forward's,
// not 2x): every H100, B200 and GB200 row moves slower. NeMo 8.3% / 14.3% -> 5.5% / 12.5%,
// Megatron-Core 8.2% -> 7.2% (its 32B row, already slow, 22.9% -> 24.3%), Llama 3 70B 0.5% fast
// -> 2.7% slow, Qwen3-30B 18.2% -> 15.2%, GPT-OSS 33.7% -> 31.6%, B200 Llama 3 8B 4.3% -> 0.6%,
// GB200 11.3% -> 8.3%; Table 5 (A100, no measured figure: the forward's rate) 1.48% -> 1.51% on
// the smaller byte count; H100 10.4% -> 8.8%, all rows 9.5% -> 8.0%.
// The flex dispatcher's sends across nodes at the NIC share DeepEP's own kernels reach (0.87 of a
// CX-7 NIC on H800, efficiency.flex_dispatch_inter_node, not NCCL's 0.97): Qwen3-30B EP 16 27.0% /
// 15.8% -> 25.3% / 14.9%, DeepSeek-V3 12.7% -> 9.9%; H100 8.8% -> 8.6%, all rows 8.0% -> 7.9%.
// The flex dispatcher's fan-out over NVLink inside each node (ep_sends): no row moves, since on
// H100's NVLink every row's NIC share outlasts it (it sets the pace on H800's, DeepEP's EP 16).
// Each non-GEMM kernel's own floor (device.kernel_floor: 2 us on Hopper, 3 us on A100, the median
// one-block elementwise kernel of each device's public trace): rows with many small kernels move
// most: Qwen3-30B PP 2 16.8% -> 11.5% and EP 16 25.3% / 14.9% -> 22.3% / 13.9% (fp8 / bf16; fp8
// casts expert by expert), DeepSeek-V3 9.9% -> 9.1%, Qwen3-235B 13.2% / 12.9% -> 12.2% / 11.9%,
// NeMo 5.5% -> 5.2%; slow rows grow
// (Llama 3 70B 2.6% / 2.8% -> 3.2% / 3.3%, Megatron-Core 32B 24.3% -> 24.8%, B200 Llama 3 8B
// 0.6% -> 1.2%); Table 5 1.51% / 3.7% -> 1.45% / 3.5%; H100 8.6% -> 8.1%, GB200 8.3% -> 7.8%,
// B200 21.1% -> 21.3%, all rows 7.9% -> 7.5%.
// The router's own kernels beside its gate GEMM (top-k, balancing losses, z-loss; each row's router
// as its recipe ran it: Transformer Engine's fused kernels, Qwen3's aux_loss, DeepSeek-V3's
// sequence loss and expert bias, GPT-OSS's no loss): Qwen3-30B PP 2 11.5% -> 10.8% and EP 16
// 22.3% / 13.9% -> 21.6% / 12.9%, DeepSeek-V3 9.1% -> 8.9%, Qwen3-235B 12.2% / 11.9% -> 11.9% /
// 11.6%, GPT-OSS unchanged (one kernel each way); GB200's Qwen3-30B, slow already, 1.0% -> 1.8%:
// GB200 7.8% -> 8.1%, the bound loosened by as much; H100 8.07% -> 7.96%, all rows 7.46% -> 7.41%.
// The bias-dropout-adds' backward as autograd runs it: each residual's gradient summed with the
// norm's by one plain torch add (3h a token, at the library kernels' speed), and a compiled
// gradient kernel only under dropout, where before every row paid twice the forward's bytes at
// the compiled kernels' speed; dropout priced where the runs had it (hidden: its 1-byte masks;
// attention: cuDNN's measured +3.4%, the unfused path's dropout bytes), in Table 5 and NeMo's
// GPT-3 rows at 0.1. Rows without dropout move faster, all of them but the Megatron-Core 32B and
// 70B, Llama 3 70B and 405B GB200 fast already: NeMo 5.2% / 12.1% -> 5.4% / 12.6% (GPT-3 5B 9.0%
// -> 7.1%), Megatron-Core 7.1% / 24.8% -> 7.4% / 24.3%, Llama 3 70B 3.3% -> 2.3%, Qwen3-30B 11.8%
// / 21.6% -> 12.1% / 22.4%, GPT-OSS 31.2% -> 31.7% (B200 41.3% -> 41.7%), DeepSeek-V3 8.9% ->
// 9.2%, Qwen3-235B 11.8% -> 12.0%, 405B CP 2 6.7% -> 7.3%, B200 Llama 3 8B 1.2% -> 0.3%, GB200
// 8.1% -> 8.2%; Table 5 1.45% / 3.5% -> 1.43% / 3.5%; H100 7.96% -> 8.25%, all rows 7.41% ->
// 7.60%. Physics over fit: the bounds loosened by as much.
// The flex dispatcher's kernels over two nodes at 0.43 of the NIC (one remote peer a rank:
// efficiency.flex_dispatch_per_remote_node, DeepEP's EP 16 on H800 and on H200; HybridEP the same,
// an ASSUMPTION): Qwen3-30B EP 16 22.4% / 14.1% -> 5.9% / 3.3% (fp8 / bf16); no other row sends
// across exactly two nodes; H100 8.25% -> 7.40%, all rows 7.60% -> 7.00%.
// The errors grouped by profile, in the order the profiles first appear: the A100 group is Table 5.
TEST(Validation, ErrorsByHardwareGroupTheRowsOfEachProfile) {
  const Validation v = validate_runs(shipped_published_runs());
  const std::vector<HardwareErrors> groups = errors_by_hardware(v);
  ASSERT_FALSE(groups.empty());
  EXPECT_EQ(groups.front().profile, "a100-80gb");
  int runs = 0;
  double sum = 0;
  for (const HardwareErrors& g : groups) {
    runs += g.runs;
    sum += g.mean_error * g.runs;
    EXPECT_LE(g.mean_error, g.worst_error) << g.profile;
    EXPECT_LE(g.predicted_fast, g.runs) << g.profile;
  }
  EXPECT_EQ(runs, static_cast<int>(v.rows.size()));
  EXPECT_NEAR(sum / runs, v.mean_error, 1e-12);
  double a100 = 0, a100_fast = 0;
  for (const ValidationRow& row : v.rows) {
    if (row.run.profile != "a100-80gb") continue;
    a100 += row.relative_error / groups.front().runs;
    a100_fast += row.predicted_step_s < row.run.measured_step_s;
  }
  EXPECT_EQ(groups.front().runs, 8);
  EXPECT_NEAR(groups.front().mean_error, a100, 1e-12);
  EXPECT_EQ(groups.front().predicted_fast, a100_fast);
}

// A change to the cost model or the profiles that makes any part worse fails here; one that
// improves it should tighten these bounds.
TEST(Validation, ErrorOnPublishedRunsStaysWithinItsBound) {
  const Validation v = validate_runs(shipped_published_runs());
  ASSERT_EQ(v.rows.size(), 45u);
  // Mean and worst error of the rows whose source names `table` and whose name holds `model`.
  auto bounds_of = [&](const std::string& table, const std::string& model) {
    double mean = 0, worst = 0, rows = 0;
    for (const ValidationRow& row : v.rows) {
      if (row.run.source.find(table) == std::string::npos || row.run.name.find(model) == std::string::npos) continue;
      mean += row.relative_error;
      worst = std::max(worst, row.relative_error);
      ++rows;
    }
    EXPECT_GT(rows, 0) << table;
    return std::pair{mean / rows, worst};
  };
  struct Bound {
    const char* table;
    const char* model;
    double mean, worst;
  };
  for (const Bound& b : {Bound{"Table 5", "", 0.015, 0.036}, Bound{"NeMo 24.07", "", 0.055, 0.127},
                         Bound{"NeMo 24.07", "nemotron", 0.105, 0.127},
                         Bound{"Megatron-Core r0.8.0", "", 0.075, 0.243},
                         Bound{"Megatron-Bridge", "llama3-70B", 0.023, 0.024},
                         Bound{"Megatron-Bridge", "qwen3-30B", 0.054, 0.117},
                         Bound{"DGX-H100", "gpt-oss", 0.318, 0.318},
                         Bound{"DGX-B200", "llama3-8B", 0.004, 0.004},
                         Bound{"DGX-B200", "gpt-oss", 0.418, 0.418},
                         Bound{"Megatron-Bridge", "deepseek-v3", 0.092, 0.092},
                         Bound{"Megatron-Bridge", "qwen3-235B", 0.121, 0.122},
                         Bound{"Megatron-Bridge", "405B-cp2", 0.074, 0.115},
                         Bound{"DGX-GB200", "", 0.082, 0.138}}) {
    const auto [mean, worst] = bounds_of(b.table, b.model);
    EXPECT_LT(mean, b.mean) << b.table << " " << b.model;
    EXPECT_LT(worst, b.worst) << b.table << " " << b.model;
  }
  double mean = 0;
  for (const ValidationRow& row : v.rows) {
    EXPECT_NEAR(row.relative_error, std::abs(row.predicted_step_s / row.run.measured_step_s - 1), 1e-12);
    mean += row.relative_error / v.rows.size();
  }
  EXPECT_DOUBLE_EQ(v.mean_error, mean);
}

// A row gives its step time, or the throughput a source published: tokens/s or model TFLOP/s per
// device, or MFU against the dense peak at the run's precision; exactly one of them.
TEST(Validation, MeasuredThroughputConvertsToTheStepTime) {
  const std::string row =
      runs_yaml({{.name = "dense",
                  .model = "{layers: 2, hidden: 64, heads: 4, kv_heads: 4, vocab: 100, mlp: swiglu, ffn: 192}",
                  .layout = "{tp: 1, pp: 1, vpp: 1, dp: 4, micro_batch: 1, recompute: none, optimizer_sharding: false}",
                  .measured = "measured_step_time: \"2 s\""}});
  const PublishedRun by_time = parse_published_runs(row, "runs.yaml")[0];
  ASSERT_DOUBLE_EQ(by_time.measured_step_s, 2.0);
  // 8 x 128 tokens in 2 s on 4 devices: 128 tokens/s each.
  const double flops = 8 * 128 * training_flops_per_token(by_time.model, 128);
  auto digits = [](double value) {
    char text[64];
    std::snprintf(text, sizeof text, "%.12g", value);
    return std::string(text);
  };
  auto with = [&](const std::string& figure) {
    std::string text = row;
    text.replace(text.find("measured_step_time: \"2 s\""), 26, figure);
    return text;
  };
  EXPECT_DOUBLE_EQ(parse_published_runs(with("measured_tokens_per_s_per_device: 128"), "r.yaml")[0].measured_step_s, 2.0);
  const double tflops = flops / 2.0 / 4 / 1e12;
  EXPECT_NEAR(parse_published_runs(with("measured_tflops_per_device: " + digits(tflops)), "r.yaml")[0].measured_step_s,
              2.0, 1e-9);
  const double mfu = flops / 2.0 / (4 * 312e12);  // A100's dense bf16 peak
  EXPECT_NEAR(parse_published_runs(with("measured_mfu: " + digits(mfu)), "r.yaml")[0].measured_step_s, 2.0, 1e-9);
  EXPECT_NE(testing::error_of([&] { parse_published_runs(with("measured_mfu: 1.5"), "r.yaml"); })
                .find("r.yaml: runs[0].measured_mfu: must be between"),
            std::string::npos);
  EXPECT_NE(testing::error_of([&] { parse_published_runs(with("measured_tokens_per_s_per_device: 128\n    measured_mfu: 0.1"), "r.yaml"); })
                .find("runs[0].measured_mfu: give one measured figure, not also measured_tokens_per_s_per_device"),
            std::string::npos);
  EXPECT_NE(testing::error_of([&] { parse_published_runs(with(""), "r.yaml"); })
                .find("runs[0].measured_step_time: missing field (or measured_tokens_per_s_per_device"),
            std::string::npos);
}

// MoE runs are rows too: routed experts by shape (with an explicit head_dim where heads x head_dim
// is not the hidden size, as in Qwen3), or a model by preset name or config.json path.
TEST(Validation, MoeRowsByShapeOrByName) {
  const std::string rows = runs_yaml(
      {{.name = "moe",
        .model = "{layers: 4, hidden: 64, heads: 4, kv_heads: 2, head_dim: 32, vocab: 100, experts: 8, top_k: 2, "
                 "expert_ffn: 48, shared_experts: 1, shared_expert_ffn: 96, first_dense_layers: 1, mlp: swiglu, ffn: 192}",
        .layout = "{tp: 1, pp: 1, vpp: 1, ep: 2, etp: 1, dp: 2, micro_batch: 1, recompute: full, optimizer_sharding: false}"},
       {.name = "preset",
        .model = "ling-lite",
        .layout = "{tp: 1, pp: 1, vpp: 1, ep: 8, dp: 8, micro_batch: 1, recompute: full, optimizer_sharding: true}",
        .seq_len = 4096}});
  const std::vector<PublishedRun> runs = parse_published_runs(rows, "runs.yaml");
  ASSERT_EQ(runs.size(), 2u);
  const ModelConfig& m = runs[0].model;
  EXPECT_EQ(m.head_dim, 32);
  EXPECT_EQ(m.routed_experts, 8);
  EXPECT_EQ(m.top_k, 2);
  EXPECT_EQ(m.expert_ffn, 48);
  EXPECT_EQ(m.shared_expert_ffn, 96);
  EXPECT_EQ(m.dense_layers(), 1);
  EXPECT_EQ(m.dense_ffn, 192);
  EXPECT_EQ(runs[1].model.routed_experts, 64);  // Ling-Lite's config
  EXPECT_EQ(runs[0].run.tp_comm_sms, 16);        // Transformer Engine's default
  std::string tuned = rows;
  tuned.replace(tuned.find("    seq_len: 128"), 0, "    tp_comm_sms: 24\n");
  EXPECT_EQ(parse_published_runs(tuned, "runs.yaml")[0].run.tp_comm_sms, 24);
  EXPECT_EQ(runs[0].run.ep_dispatcher, EpDispatcher::kAllToAll);
  std::string flex = rows;
  flex.replace(flex.find("    seq_len: 128"), 0, "    ep_dispatcher: flex\n");
  EXPECT_EQ(parse_published_runs(flex, "runs.yaml")[0].run.ep_dispatcher, EpDispatcher::kFlex);
  // The flex dispatcher's SMs are a row field of flex rows only.
  std::string sms = flex;
  sms.replace(sms.find("    seq_len: 128"), 0, "    flex_dispatcher_sms: 32\n");
  EXPECT_EQ(parse_published_runs(sms, "runs.yaml")[0].run.flex_dispatcher_sms, 32);
  std::string stray = rows;
  stray.replace(stray.find("    seq_len: 128"), 0, "    flex_dispatcher_sms: 32\n");
  EXPECT_THROW(parse_published_runs(stray, "runs.yaml"), InputError);
  // The router's fusion and balancing are row fields; Megatron-Core's default router without them.
  EXPECT_FALSE(runs[0].run.router_fusion);
  EXPECT_EQ(runs[0].run.router_balancing, RouterBalancing{});
  std::string router = rows;
  router.replace(router.find("    seq_len: 128"), 0, "    router_fusion: true\n    router_balancing: none\n");
  EXPECT_TRUE(parse_published_runs(router, "runs.yaml")[0].run.router_fusion);
  EXPECT_EQ(parse_published_runs(router, "runs.yaml")[0].run.router_balancing, RouterBalancing::none());
  std::string misnamed = rows;
  misnamed.replace(misnamed.find("    seq_len: 128"), 0, "    router_balancing: sinkhorn\n");
  EXPECT_NE(testing::error_of([&] { parse_published_runs(misnamed, "runs.yaml"); }).find("router_balancing: unknown router balancing 'sinkhorn'"),
            std::string::npos)
      << testing::error_of([&] { parse_published_runs(misnamed, "runs.yaml"); });
  // So are the dropouts, probabilities below 1.
  EXPECT_EQ(runs[0].run.hidden_dropout, 0.0);
  std::string dropout = rows;
  dropout.replace(dropout.find("    seq_len: 128"), 0, "    hidden_dropout: 0.1\n    attention_dropout: 0.1\n");
  EXPECT_EQ(parse_published_runs(dropout, "runs.yaml")[0].run.hidden_dropout, 0.1);
  EXPECT_EQ(parse_published_runs(dropout, "runs.yaml")[0].run.attention_dropout, 0.1);
  std::string certain = rows;
  certain.replace(certain.find("    seq_len: 128"), 0, "    hidden_dropout: 1\n");
  EXPECT_NE(testing::error_of([&] { parse_published_runs(certain, "runs.yaml"); }).find("hidden_dropout"), std::string::npos);
  // bf16 Adam moments are a row field too; Megatron runs them only in the distributed optimizer.
  std::string moments = rows;
  moments.replace(moments.find("    seq_len: 128"), 0, "    adam_moments_in_bf16: true\n");
  const std::vector<PublishedRun> with_moments = parse_published_runs(moments, "runs.yaml");
  EXPECT_TRUE(with_moments[0].run.adam_moments_in_bf16);
  EXPECT_NE(testing::error_of([&] { validate_runs(with_moments); }).find("adam_moments_in_bf16"), std::string::npos)
      << testing::error_of([&] { validate_runs(with_moments); });
  // Selective recompute's modules, Megatron's names separated by commas; a misspelt one names its row.
  std::string modules = rows;
  modules.replace(modules.find("recompute: full, optimizer_sharding: false"), 15,
                  "recompute: selective, recompute_modules: \"moe_act,layernorm\"");
  EXPECT_EQ(to_string(parse_published_runs(modules, "runs.yaml")[0].layout.recompute_modules), "moe_act,layernorm");
  std::string misspelt = modules;
  misspelt.replace(misspelt.find("moe_act,layernorm"), 7, "moe_actx");
  EXPECT_NE(testing::error_of([&] { parse_published_runs(misspelt, "runs.yaml"); })
                .find("runs.yaml: runs[0].layout.recompute_modules: unknown recompute module 'moe_actx'"),
            std::string::npos)
      << testing::error_of([&] { parse_published_runs(misspelt, "runs.yaml"); });
  EXPECT_EQ(validate_runs(runs).rows.size(), 2u);
  std::string unknown = rows;
  unknown.replace(unknown.find("model: ling-lite"), 16, "model: ling-huge");
  try {
    parse_published_runs(unknown, "runs.yaml");
    FAIL();
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("runs.yaml: runs[1].model: "), std::string::npos) << e.what();
  }
}

// Latent attention, multi-token prediction and sliding windows are row fields too, named as the
// model section of a plan names them: DeepSeek-V3 by shape has the parameters of its HF config.
TEST(Validation, LatentAttentionAndWindowedRowsMatchTheirHfConfigs) {
  const std::string rows = runs_yaml(
      {{.name = "dsv3",
        .model = "{layers: 61, hidden: 7168, heads: 128, kv_heads: 128, head_dim: 128, q_lora_rank: 1536, "
                 "kv_lora_rank: 512, rope_head_dim: 64, v_head_dim: 128, vocab: 129280, experts: 256, top_k: 8, "
                 "expert_ffn: 2048, shared_experts: 1, shared_expert_ffn: 2048, first_dense_layers: 3, mlp: swiglu, "
                 "ffn: 18432, mtp_layers: 1}",
        .layout = "{tp: 1, pp: 1, vpp: 1, ep: 8, dp: 8, micro_batch: 1, recompute: full, optimizer_sharding: true}",
        .hardware = "h100-sxm",
        .seq_len = 4096}});
  const ModelConfig row = parse_published_runs(rows, "runs.yaml")[0].model;
  const nlohmann::json hf = {{"model_type", "deepseek_v3"}, {"hidden_size", 7168}, {"num_hidden_layers", 61},
                             {"num_attention_heads", 128}, {"num_key_value_heads", 128}, {"q_lora_rank", 1536},
                             {"kv_lora_rank", 512}, {"qk_nope_head_dim", 128}, {"qk_rope_head_dim", 64},
                             {"v_head_dim", 128}, {"n_routed_experts", 256}, {"num_experts_per_tok", 8},
                             {"moe_intermediate_size", 2048}, {"n_shared_experts", 1}, {"first_k_dense_replace", 3},
                             {"intermediate_size", 18432}, {"vocab_size", 129280}, {"moe_layer_freq", 1},
                             {"tie_word_embeddings", false}, {"hidden_act", "silu"}, {"num_nextn_predict_layers", 1}};
  const ModelConfig imported = import_hf_config(hf, "config.json", "dsv3");
  const ParamCounts a = param_counts(row), b = param_counts(imported);
  EXPECT_DOUBLE_EQ(a.total, b.total);
  EXPECT_DOUBLE_EQ(a.active, b.active);
  EXPECT_DOUBLE_EQ(a.mtp, b.mtp);
  EXPECT_NEAR(a.total, 671.0e9, 0.5e9);  // DeepSeek-V3's 671B, MTP outside it
  EXPECT_TRUE(row.is_mla());

  std::string windowed = rows;
  windowed.replace(windowed.find(", mtp_layers: 1"), 15, ", attention_window: 128, windowed_layers: 30");
  EXPECT_EQ(parse_published_runs(windowed, "runs.yaml")[0].model.windowed_layers, 30);
  EXPECT_FALSE(row.learned_positions);  // RoPE unless a row says otherwise
  std::string learned = rows;
  learned.replace(learned.find(", mtp_layers: 1"), 15, ", position_embedding: learned");
  EXPECT_TRUE(parse_published_runs(learned, "runs.yaml")[0].model.learned_positions);
  auto error_of = [&](const std::string& from, const std::string& to) {
    std::string text = rows;
    text.replace(text.find(from), from.size(), to);
    try {
      parse_published_runs(text, "runs.yaml");
    } catch (const InputError& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_EQ(error_of(", mtp_layers: 1", ", attention_window: 128"),
            "runs.yaml: runs[0].model.windowed_layers: missing field");
  EXPECT_EQ(error_of(", mtp_layers: 1", ", attention_window: 128, windowed_layers: 62"),
            "runs.yaml: runs[0].model: windowed_layers: exceeds layers (61)");
  EXPECT_EQ(error_of(", mtp_layers: 1", ", position_embedding: alibi"),
            "runs.yaml: runs[0].model.position_embedding: unknown 'alibi' (expected rope or learned)");
  EXPECT_EQ(error_of("head_dim: 128, q_lora", "q_lora"), "runs.yaml: runs[0].model.head_dim: is required with kv_lora_rank");
  // QK-norm's weights, as an HF import counts them (Qwen3: q_norm and k_norm of head_dim); 0 is none.
  std::string normed = rows;
  normed.replace(normed.find(", mtp_layers: 1"), 15, ", qk_norm_weights: 256");
  EXPECT_EQ(parse_published_runs(normed, "runs.yaml")[0].model.qk_norm_weights, 256);
  EXPECT_EQ(row.qk_norm_weights, 0);
  EXPECT_EQ(error_of(", mtp_layers: 1", ", qk_norm_weights: -2"),
            "runs.yaml: runs[0].model.qk_norm_weights: must be between 0 and 1e+09, got -2");
}

TEST(Validation, BadRowsNameTheFileAndField) {
  const std::string row =
      runs_yaml({{.name = "x",
                  .model = "{layers: 4, hidden: 64, heads: 4, kv_heads: 4, vocab: 100, mlp: relu, ffn: 256}",
                  .layout = "{tp: 1, pp: 1, vpp: 1, dp: 1, micro_batch: 1, recompute: full, optimizer_sharding: false}",
                  .kernels_and_overlap = false}});
  try {
    parse_published_runs(row, "runs.yaml");
    FAIL();
  } catch (const InputError& e) {
    EXPECT_STREQ(e.what(), "runs.yaml: runs[0].model.mlp: unknown MLP 'relu' (expected gelu or swiglu)");
  }
  std::string slow = row;
  slow.replace(slow.find("relu"), 4, "gelu");
  slow.replace(slow.find("\"1 s\""), 5, "\"1 parsec\"");
  EXPECT_THROW(parse_published_runs(slow, "runs.yaml"), InputError);
  std::string split = row;
  split.replace(split.find("relu"), 4, "gelu");
  split.replace(split.find("tp: 1"), 5, "tp: 3");  // 4 heads over 3 ranks
  EXPECT_THROW(validate_runs(parse_published_runs(split, "runs.yaml")), InputError);
  // A field flopwise does not know is an error, not silently dropped: a row with context
  // parallelism would otherwise be predicted on half its devices.
  auto error_of = [](std::string text, const std::string& from, const std::string& to) {
    text.replace(text.find("relu"), 4, "gelu");
    text.replace(text.find("precision: bf16"), 15, "precision: bf16\n    attention: fused\n    comm_overlap: none");
    text.replace(text.find(from), from.size(), to);
    try {
      parse_published_runs(text, "runs.yaml");
    } catch (const InputError& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_NE(error_of(row, "pp: 1,", "pp: 1, cp: 0,").find("runs.yaml: runs[0].layout.cp:"), std::string::npos);
  EXPECT_NE(error_of(row, "global_batch", "globl_batch").find("runs.yaml: runs[0].globl_batch: unknown field"),
            std::string::npos);
  EXPECT_NE(error_of(row, "kv_heads: 4", "kv_heads: 4, moe: true").find("runs[0].model.moe: unknown field"),
            std::string::npos);
  EXPECT_EQ(error_of(row, "pp: 1,", "pp: 1, cp: 1,").find("layout.cp"), std::string::npos);
}

// Published step times made from a known profile (the shipped A100 with matmul efficiency 0.7,
// memory 0.8 and 30 us per layer pass) are fitted back to it from the shipped figures, and
// leave-one-out predicts each run to within rounding: the linearisation and Gauss-Newton settle.
TEST(PublishedFit, RecoversTheProfileThatMadeTheStepTimes) {
  const HardwareProfile shipped = resolve_profile("a100-80gb");
  HardwareProfile truth = shipped;
  truth.efficiency.matmul = 0.7;
  truth.efficiency.memory = 0.8;
  truth.overheads.per_layer_pass = 30e-6;
  std::vector<PublishedRun> runs = shipped_published_runs();
  std::erase_if(runs, [](const PublishedRun& r) { return r.profile != "a100-80gb"; });
  for (PublishedRun& r : runs) r.measured_step_s = CostModel(r.model, r.run, truth).evaluate(r.layout).step_time_s;
  const PublishedFit fit = fit_published_runs(shipped, runs, {});
  EXPECT_TRUE(fit.leave_one_out);
  EXPECT_NEAR(fit.calibration.after.efficiency.matmul, 0.7, 1e-4);
  EXPECT_NEAR(fit.calibration.after.efficiency.memory, 0.8, 1e-3);
  EXPECT_NEAR(fit.calibration.after.overheads.per_layer_pass, 30e-6, 1e-7);
  EXPECT_EQ(fit.calibration.after.efficiency.attention, shipped.efficiency.attention);  // unfused rows: no term
  ASSERT_EQ(fit.rows.size(), runs.size());
  for (const PublishedFitRow& row : fit.rows) EXPECT_NEAR(row.after / row.measured, 1.0, 1e-4) << row.name;
  EXPECT_EQ(fit.calibration.held_out.size(), runs.size());
  // Held out by name: fitted to the rest, the held-out rows predicted by a fit that never saw them.
  const PublishedFit held = fit_published_runs(shipped, runs, {"megatron-1T full", "gpt3-175B seqsel"});
  EXPECT_FALSE(held.leave_one_out);
  EXPECT_EQ(held.calibration.sources.size(), runs.size() - 2);
  int held_out = 0;
  for (const PublishedFitRow& row : held.rows) held_out += row.held_out;
  EXPECT_EQ(held_out, 2);
}

// On H100 the fp8 rows' GEMMs run at matmul_fp8 and the bf16 rows' at matmul: step times made
// with each moved (0.6 and 0.7) are fitted back to both, with a fused attention of 0.4, without
// a per-layer overhead. (Only a device with fp8 gets the matmul_fp8 parameter: the A100 fit above
// lists none.)
TEST(PublishedFit, SeparatesFp8AndBf16GemmEfficiency) {
  const HardwareProfile shipped = resolve_profile("h100-sxm");
  HardwareProfile truth = shipped;
  truth.efficiency.matmul = 0.7;
  truth.efficiency.matmul_fp8 = 0.6;
  truth.efficiency.attention = 0.4;
  std::vector<PublishedRun> runs = shipped_published_runs();
  std::erase_if(runs, [](const PublishedRun& r) { return r.profile != "h100-sxm"; });
  for (PublishedRun& r : runs) r.measured_step_s = CostModel(r.model, r.run, truth).evaluate(r.layout).step_time_s;
  const PublishedFit fit = fit_published_runs(shipped, runs, {"mcore 462B"});
  EXPECT_NEAR(fit.calibration.after.efficiency.matmul, 0.7, 1e-3);
  EXPECT_NEAR(fit.calibration.after.efficiency.matmul_fp8, 0.6, 1e-3);
  EXPECT_NEAR(fit.calibration.after.efficiency.attention, 0.4, 1e-3);
  EXPECT_NEAR(fit.calibration.after.efficiency.memory, 0.9, 1e-3);
  const PublishedFit a100 = fit_published_runs(resolve_profile("a100-80gb"), shipped_published_runs(), {"megatron-1T full"});
  for (const ParameterFit& f : a100.calibration.groups.front().parameters) EXPECT_NE(f.field, "efficiency.matmul_fp8");
}

TEST(PublishedFit, BadRequestsNameTheOption) {
  const std::vector<PublishedRun> runs = shipped_published_runs();
  auto error_of = [&](const std::string& profile, const std::vector<std::string>& held_out) {
    try {
      fit_published_runs(resolve_profile(profile), runs, held_out);
    } catch (const InputError& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_EQ(error_of("h800-sxm", {}),
            "--profile: no published run uses profile 'h800-sxm' (they use: a100-80gb, b200, gb200, h100-sxm)");
  EXPECT_EQ(error_of("a100-80gb", {"nope"}), "--hold-out: no published run on a100-80gb is named 'nope'");
  std::vector<std::string> all;
  for (const PublishedRun& r : runs) {
    if (r.profile == "a100-80gb") all.push_back(r.name);
  }
  EXPECT_EQ(error_of("a100-80gb", all), "--hold-out: holds out every run: nothing left to fit");
}

}  // namespace flopwise
