#include <tuple>
#include <gtest/gtest.h>

#include "flopwise/cost_model.hpp"
#include "flopwise/schedule.hpp"
#include "flopwise/error.hpp"
#include "test_helpers.hpp"

namespace flopwise {
namespace {

TrainingRun small_run() { return testing::tiny_run(4); }

// tiny_moe per layer (see test_helpers.hpp): attention 1024 x 12 x 128 + 8 x 128 x 1024 = 2,621,440,
// router 8,192, shared 3 x 1024 x 512 = 1,572,864, one expert 1,572,864, norms 2,048.
constexpr double kAttention = 2621440, kRouter = 8192, kExpert = 1572864, kShared = 1572864, kNorms = 2048;
constexpr double kRate = 100e12 * 0.5;  // round profile: 100 TFLOPS at 50%
// The router (1,024 x 8 outputs over 1,024) is memory-bound at the round profile's 50 FLOPs per
// byte: each of its GEMMs (forward, input gradient, weight gradient) reads a 1,024 x 1,024 operand
// and moves two 1,024 x 8 ones, bf16, at 1 TB/s.
constexpr double kRouterGemmSeconds = 2 * (1024.0 * 1024 + 2 * 8 * 1024) / 1e12;
// Memory-bound kernels per token of a tiny_moe layer (tp 1). Transformer Engine's: the norms 4 x
// 1,024, the two experts' permutation 2 x 2 x 1,024 and un-permutation 2 x 1,024, RoPE reading and
// writing 8 query and 2 key heads of 128 (2 x 1,280): 12,800 bf16 values. Compiled by
// torch.compile: the residual adds 6 x 1,024, the two experts' activations 2 x 3 x 512 and the
// shared expert's 3 x 512: 10,752.
constexpr double kLibraryTrafficBytes = 2 * 12800.0, kCompiledTrafficBytes = 2 * 10752.0;
constexpr double kLayerTrafficBytes = kLibraryTrafficBytes + kCompiledTrafficBytes;
// Of the compiled bytes, the activations' (2 x 3 x 512 + 3 x 512 values); their backward reads
// the gradient, gate and up and writes both gradients: 5/3 of the forward's bytes. The library
// kernels' backward moves twice their forward's bytes; the residual adds' backward (no dropout) is
// the sum of each residual's gradient with the norm's, as many bytes as their forward.
constexpr double kActivationTrafficBytes = 2 * 4608.0;
constexpr double kResidualAddBytes = kCompiledTrafficBytes - kActivationTrafficBytes;
constexpr double kLayerForwardBackwardTrafficBytes =
    3 * kLibraryTrafficBytes + 2 * kResidualAddBytes + (1 + 5.0 / 3) * kActivationTrafficBytes;
// The copies between a tiny_moe layer's fused QKV output and the attention kernel, per token at
// tp 1: forward, the query's reshape (1,024 values: a rank holds two key groups) and the value's
// (256: RoPE rewrote query and key); backward, one cat of the three gradients (1,024 + 2 x 256);
// each read and written.
constexpr double kQkvSplitForwardBytes = 2 * 2 * 1280.0, kQkvSplitBackwardBytes = 2 * 2 * 1536.0;
// The all-to-all dispatcher's sorts by local expert in a tiny_moe layer, per pass of 1,024 tokens:
// the 2,048 routed copies sorted after the dispatch and back before the combine, each sort
// reading and writing 1,024 bf16 values a copy.
constexpr double kSortBytes = 2 * 2 * 2 * 2048.0 * 1024;
// GEMM epilogues of a tiny_moe layer and micro-batch of 1,024 tokens at tp 1 (the router's
// aside): bf16 outputs, and the weight gradients' fp32 main gradient read and written (8 bytes).
// Forward: 1,024 x (1,536 + 1,024 + 1,024 + 1,024) outputs of QKV, attention out, shared gate/up
// and down, plus top-2 copies of 1,024 tokens through the experts' 1,024 + 1,024 outputs.
constexpr double kForwardEpilogueBytes = 2 * (1024.0 * (1536 + 1024 + 1024 + 1024) + 2 * 1024 * (1024 + 1024));
// Backward: input gradients of 1,024 x (1,024 + 1,024 + 1,024 + 512) and 2,048 expert rows x
// (1,024 + 512); weight gradients of every weight the layer holds (8 experts).
constexpr double kBackwardEpilogueBytes = 2 * (1024.0 * (1024 + 1024 + 1024 + 512) + 2 * 1024 * (1024 + 512)) +
                                          8 * (kAttention + kShared + 8 * kExpert);
// The router's backward: its input gradient (1,024 x 1,024 over 8) is compute-bound and writes
// 1,024 x 1,024 bf16; its weight gradient (1,024 x 8 over 1,024 tokens) reads both operands and
// writes 1,024 x 8 fp32 twice. (Its forward, kRouterGemmSeconds, reads and writes as before.)
constexpr double kRouterBackwardSeconds =
    2 * 1024.0 * 8 * 1024 / kRate + (2 * 1024.0 * 1024 + 2 * (1024.0 * 1024 + 8 * 1024) + 8 * 1024 * 8) / 1e12;
// The router's own kernels in a tiny_moe layer at tp 1, flopwise's default router (plain torch ops,
// the Ling report's aux_loss and z-loss): 36 forward and 21 backward
// (CostModel.RouterKernelsFollowMegatronCoresRouter), each streaming the 1,024 x 8 scores in and
// out in fp32.
constexpr double kRouterForwardBytes = 36 * 8 * 1024.0 * 8, kRouterBackwardBytes = 21 * 8 * 1024.0 * 8;
// The LM head's (1,024 x 1,000 over 1,024): logits, input gradient, fp32 weight gradient.
constexpr double kHeadEpilogueBytes = 2 * 1024.0 * 1000 + 2 * 1024.0 * 1024 + 8 * 1024.0 * 1000;

}  // namespace

TEST(Collectives, RingAllReduceMatchesAlphaBeta) {
  const Network net = Network::from(testing::round_profile());
  // 8 ranks in one node: 2 x 7/8 x 1 GB / 100 GB/s + 14 x 1 us.
  EXPECT_NEAR(all_reduce_time({8, 8}, 1e9, net), 2 * 7.0 / 8 * 1e9 / 100e9 + 14e-6, 1e-12);
  // 16 ranks, 8 per node: the ring crosses nodes; 8 members drive 8 NICs of 10 GB/s = 80 GB/s.
  // Of its 30 steps, 2 (k - 1) = 2 cross the network at 10 us, 28 stay on NVLink at 1 us (NCCL's
  // tuning model splits the latency so).
  EXPECT_NEAR(all_reduce_time({16, 8}, 1e9, net), 2 * 15.0 / 16 * 1e9 / 80e9 + 28 * 1e-6 + 2 * 10e-6, 1e-12);
  EXPECT_EQ(all_reduce_time({1, 1}, 1e9, net), 0.0);
}

TEST(Collectives, AllToAllIsBoundByTheSlowerLink) {
  const Network net = Network::from(testing::round_profile());
  // 16 ranks over two nodes: 7/16 of 1 GB on NVLink (4.4 ms), 8/16 on the NIC (50 ms).
  EXPECT_NEAR(all_to_all_time({16, 8}, 1e9, net), 0.5e9 / 10e9 + 15 * 10e-6, 1e-12);
  EXPECT_NEAR(all_to_all_time({8, 8}, 1e9, net), 7.0 / 8 * 1e9 / 100e9 + 7 * 1e-6, 1e-12);
  EXPECT_NEAR(send_recv_time({2, 1}, 1e9, net), 0.1 + 10e-6, 1e-12);
}

TEST(Collectives, AllToAllOfUnevenSendsIsBoundByTheSlowerLink) {
  const Network net = Network::from(testing::round_profile());
  // Even sends over 16 ranks on two nodes: 7/16 and 8/16 of 1 GB, as above.
  const AllToAllSends even = even_sends({16, 8}, 1e9);
  EXPECT_DOUBLE_EQ(even.to_local, 7.0 / 16 * 1e9);
  EXPECT_DOUBLE_EQ(even.to_remote, 8.0 / 16 * 1e9);
  // 0.9 GB inside the node (9 ms at 100 GB/s) outlasts 50 MB across (5 ms at 10 GB/s).
  EXPECT_NEAR(all_to_all_time({16, 8}, AllToAllSends{0.9e9, 0.05e9}, net), 0.9e9 / 100e9 + 15 * 10e-6, 1e-12);
}

// The round profile's node as a full mesh of 8 devices, 20 GB/s a link (140 GB/s to all peers).
TEST(Collectives, AFullMeshGivesAGroupOnlyItsOwnLinks) {
  HardwareProfile p = testing::round_profile();
  p.node.fabric = NodeFabric::kFullMesh;
  p.node.intra_bandwidth = 7 * 20e9;
  const Network net = Network::from(p);
  // 8 ranks of a node ring over 7 links each, 2 ranks over their one: 2 x (n-1)/n x 1 GB.
  EXPECT_NEAR(all_reduce_time({8, 8}, 1e9, net), 2 * 7.0 / 8 * 1e9 / 140e9 + 14e-6, 1e-12);
  EXPECT_NEAR(all_reduce_time({2, 2}, 1e9, net), 2 * 0.5 * 1e9 / 20e9 + 2e-6, 1e-12);
  EXPECT_NEAR(all_reduce_time({4, 4}, 1e9, net), 2 * 0.75 * 1e9 / 60e9 + 6e-6, 1e-12);
  // Spanning nodes with 2 members a node: min(one link, 2 NICs of 10 GB/s); with 1 a node, no
  // peer link is crossed and the NIC alone sets the pace.
  EXPECT_NEAR(reduce_scatter_time({4, 2}, 1e9, net), 0.75 * 1e9 / 20e9 + 2e-6 + 10e-6, 1e-12);
  EXPECT_NEAR(reduce_scatter_time({4, 1}, 1e9, net), 0.75 * 1e9 / 10e9 + 3 * 10e-6, 1e-12);
  // An all-to-all among 4 of a node sends 3/4 of its bytes over 3 links; a message has one link.
  EXPECT_NEAR(all_to_all_time({4, 4}, 1e9, net), 0.75e9 / 60e9 + 3e-6, 1e-12);
  EXPECT_NEAR(send_recv_time({2, 2}, 1e9, net), 1e9 / 20e9 + 1e-6, 1e-12);
}

// The shipped MI300X profile against the all-reduce bus bandwidth Bekman measured on one 8 x MI300X
// node (4 GiB; ml-engineering, network/README.md): 312.9 GB/s over 8 GPUs, 47.7 over 2.
TEST(Collectives, ShippedMi300xProfileFollowsMeasuredBusBandwidth) {
  const Network net = Network::from(load_hardware_profile(std::string(FLOPWISE_PROFILES_DIR) + "/mi300x.yaml"));
  const double bytes = 4.0 * (1ull << 30);
  auto bus_bandwidth = [&](int n) { return 2.0 * (n - 1) / n * bytes / all_reduce_time({n, n}, bytes, net); };
  EXPECT_NEAR(bus_bandwidth(8) / 312.9e9, 1.0, 0.01);
  EXPECT_NEAR(bus_bandwidth(2) / 47.7e9, 1.0, 0.07);
}

TEST(Collectives, OversubscriptionSlowsOnlyInterNodeTraffic) {
  HardwareProfile p = testing::round_profile();
  const Network full = Network::from(p);
  p.cluster.oversubscription = 2.0;
  const Network half = Network::from(p);
  EXPECT_NEAR(all_to_all_time({16, 8}, 1e9, half) - 150e-6, 2 * (all_to_all_time({16, 8}, 1e9, full) - 150e-6), 1e-12);
  EXPECT_EQ(all_to_all_time({8, 8}, 1e9, half), all_to_all_time({8, 8}, 1e9, full));
}

TEST(CostModel, SingleDeviceComputeByHand) {
  const CostModel cost(testing::tiny_moe(), small_run(), testing::round_profile());
  const Layout l{1, 1, 1, 1, 1, 1, Recompute::kSelective, false};
  const StepCost c = cost.evaluate(l);
  const double tokens = 1024;
  const double layer_flops = 2 * (kAttention + kShared) + 2 * 2 * kExpert;
  const double core = 2 * 8 * 256 * (1025 / 2.0);
  const double head = 2 * 1000.0 * 1024;
  // Forward + backward (3x) of GEMMs, memory-bound kernels and the cross-entropy's 18 bytes per
  // logit, the sorts by local expert and the router's kernels once each pass; the fused attention core's forward + backward (1 + 2.5x: the backward recomputes the
  // scores) and its selective recompute (1x); the GEMMs' epilogues; the LM head; the embedding's
  // gather (4 bytes per token and hidden unit) and, backward, its dense 1,000 x 1,024 gradient
  // added into the main gradient (12 bytes each) and the tokens' rows (6 bytes); 4 micro-batches.
  const double embedding_bytes = tokens * 1024 * (4 + 6) + 1000.0 * 1024 * 12;
  const double traffic_s =
      (tokens * (4 * kLayerForwardBackwardTrafficBytes + 3 * 18 * 1000) + 2 * 4 * kSortBytes + embedding_bytes +
       4 * (kRouterForwardBytes + kRouterBackwardBytes) +
       4 * tokens * (kQkvSplitForwardBytes + kQkvSplitBackwardBytes)) / 1e12;
  const double epilogue_s = (4 * (kForwardEpilogueBytes + kBackwardEpilogueBytes) + kHeadEpilogueBytes) / 1e12;
  const double per_micro_batch = tokens * (3 * 4 * layer_flops + 3.5 * 4 * core + 4 * core + 3 * head) / kRate +
                                 4 * (kRouterGemmSeconds + kRouterBackwardSeconds) + traffic_s + epilogue_s;
  EXPECT_NEAR(c.compute_s, 4 * per_micro_batch, 1e-12);
  EXPECT_EQ(c.bubble_s, 0.0);
  EXPECT_EQ(c.exposed_comm_s.total(), 0.0);
  const double params = 4 * (kAttention + kNorms + kRouter + kShared) + 2 * 1024000.0 + 1024 + 4 * 8 * kExpert;
  // Megatron's step over 1 TB/s: grad norm 4, Adam 28, master-to-bf16 copy 6, grad zeroing 4 bytes.
  EXPECT_NEAR(c.optimizer_s, 42 * params / 1e12, 1e-15);
  EXPECT_NEAR(c.step_time_s, c.compute_s + c.optimizer_s, 1e-12);
  EXPECT_NEAR(c.tokens_per_s, 4 * 1024 / c.step_time_s, 1e-6);
  EXPECT_NEAR(c.goodput.ideal_days, 1e9 / c.tokens_per_s / 86400, 1e-12);
  EXPECT_NEAR(c.goodput.ideal_cost, c.goodput.ideal_device_hours * 2.0, 1e-9);
  EXPECT_NEAR(c.days, c.goodput.ideal_days / c.goodput.fraction, 1e-12);  // failures priced in (test_goodput)
  EXPECT_NEAR(c.cost, c.device_hours * 2.0, 1e-9);
  EXPECT_NEAR(c.mfu, c.model_flops_per_step / (c.step_time_s * 100e12), 1e-12);
}

TrainingRun small_run_in(Precision precision);

TEST(CostModel, MemoryByHand) {
  const CostModel cost(testing::tiny_moe(), small_run(), testing::round_profile());
  const Layout l{1, 1, 1, 1, 1, 1, Recompute::kSelective, false};
  const MemoryBreakdown m = cost.memory(l);
  const double params = 4 * (kAttention + kNorms + kRouter + kShared) + 2 * 1024000.0 + 1024 + 4 * 8 * kExpert;
  EXPECT_DOUBLE_EQ(m.weights, 2 * params);
  EXPECT_DOUBLE_EQ(m.grads, 4 * params);
  EXPECT_DOUBLE_EQ(m.optimizer, 12 * params);
  // Per token and layer: attention 2 x (2 x 1024 + 1536 + 1024) + 4 x 8 = 9,248 bytes; MoE: the
  // norm's and the MLP's inputs, per routed copy gate, up and product and fc1's input (not the
  // expert's output: the probability weighs the activation, and the un-permutation is a plain
  // sum), the shared expert's gate, up and product, and the router's fp32 logits and
  // probabilities: 2 x (2 x 1024 + 2 x (3 x 512 + 1024) + 3 x 512) + 8 x 8 = 17,472 bytes.
  const double per_layer = (9248.0 + 17472.0) * 1024;
  EXPECT_DOUBLE_EQ(cost.layer_activation_bytes(true, l), per_layer);
  EXPECT_DOUBLE_EQ(m.activations, 4 * per_layer + 6.0 * 1024 * 1000);  // one micro-batch in flight, logits
  EXPECT_DOUBLE_EQ(m.buffers, 1e9 + 2 * 2.0 * 1024 * 2 * 1024);
  // In fp8 the linear layers' inputs are kept as their fp8 copies, 1 byte: QKV's and fc1's
  // (2 x 1,024), the projection's (1,024), each routed copy's fc1 and fc2 inputs (1,024 + 512)
  // and the shared expert's fc2 input (512): 26,720 - 2,048 - 1,024 - 2 x 1,536 - 512 = 20,064
  // bytes a token.
  const CostModel fp8(testing::tiny_moe(), small_run_in(Precision::kFp8), testing::round_profile());
  EXPECT_DOUBLE_EQ(fp8.layer_activation_bytes(true, l), 20064.0 * 1024);
}

TEST(CostModel, RecomputeAndShardingShrinkMemory) {
  const CostModel cost(testing::tiny_moe(), small_run(), testing::round_profile());
  const Layout none{1, 1, 1, 1, 1, 1, Recompute::kNone, false};
  Layout selective = none, full = none;
  selective.recompute = Recompute::kSelective;
  full.recompute = Recompute::kFull;
  // Fused attention keeps no s x s tensor; unfused without recompute keeps the 8-head 1024 x 1024
  // bf16 probabilities per layer, and under attention dropout its mask (1 byte) and output too.
  EXPECT_DOUBLE_EQ(cost.layer_activation_bytes(true, none), cost.layer_activation_bytes(true, selective));
  TrainingRun unfused_run = small_run();
  unfused_run.attention = AttentionKernel::kUnfused;
  const CostModel unfused(testing::tiny_moe(), unfused_run, testing::round_profile());
  EXPECT_DOUBLE_EQ(unfused.layer_activation_bytes(true, none) - unfused.layer_activation_bytes(true, selective),
                   2.0 * 8 * 1024 * 1024);
  unfused_run.attention_dropout = 0.1;
  const CostModel dropped(testing::tiny_moe(), unfused_run, testing::round_profile());
  EXPECT_DOUBLE_EQ(dropped.layer_activation_bytes(true, none) - dropped.layer_activation_bytes(true, selective),
                   5.0 * 8 * 1024 * 1024);
  // Hidden dropout keeps both bias-dropout-adds' 1-byte masks: 2 x 1,024 a token.
  TrainingRun hidden_run = small_run();
  hidden_run.hidden_dropout = 0.1;
  EXPECT_DOUBLE_EQ(CostModel(testing::tiny_moe(), hidden_run, testing::round_profile()).layer_activation_bytes(true, none) -
                       cost.layer_activation_bytes(true, none),
                   1024 * 2 * 1024.0);
  EXPECT_DOUBLE_EQ(cost.layer_activation_bytes(true, full), 2.0 * 1024 * 1024);
  Layout sharded{1, 1, 1, 2, 4, 1, Recompute::kFull, true};
  Layout replicated = sharded;
  replicated.optimizer_sharding = false;
  const double dense = 4 * (kAttention + kNorms + kRouter + kShared) + 2 * 1024000.0 + 1024;
  const double expert = 4 * 8 * kExpert / 2;  // EP 2 halves the experts on each device
  EXPECT_DOUBLE_EQ(cost.memory(replicated).optimizer, 12 * (dense + expert));
  EXPECT_DOUBLE_EQ(cost.memory(sharded).optimizer, 12 * (dense / 4 + expert / 2));  // expert DP = 4 / 2
  // The distributed optimizer updates its shard (38 bytes each) but zeroes the whole grad buffer
  // (4 bytes each), at 1 TB/s.
  const StageContents stage = stage_contents(cost.model(), sharded)[0];
  EXPECT_NEAR(cost.optimizer_seconds_at_peak(stage, sharded), (38 * (dense / 4 + expert / 2) + 4 * (dense + expert)) / 1e12,
              1e-15);
  EXPECT_NEAR(cost.optimizer_seconds_at_peak(stage, replicated), 42 * (dense + expert) / 1e12, 1e-15);
  // The step's multi-tensor kernels stream at efficiency.memory_optimizer where the profile
  // measured it (here 0.5 of the 1 TB/s), else at efficiency.memory (1.0 in the round profile).
  EXPECT_NEAR(cost.optimizer_seconds(stage, replicated), 42 * (dense + expert) / 1e12, 1e-15);
  const CostModel measured(testing::tiny_moe(), small_run(),
                           testing::round_profile_edited({{"matmul: 0.5,", "matmul: 0.5, memory_optimizer: 0.5,"}}, "p.yaml"));
  EXPECT_NEAR(measured.optimizer_seconds(stage, replicated), 42 * (dense + expert) / 0.5e12, 1e-15);
}

// Selective recompute's modules by hand on tiny_moe (bf16, 1,024 tokens, tp 1): each repeats its
// forward before the backward and drops what it rebuilds. moe_act: the SwiGLU of 2,048 routed
// copies, reading gate and up and writing their product (3 x 512 bf16 values a copy), against
// fc2's input, 512 values of each of the 2 copies of a token. layernorm: the MoE layer's pre-MLP
// norm, a module of its own (read and write 1,024 values a token), against its output, which the
// MLP block's first linear kept (1,024 values a token).
TEST(CostModel, SelectiveRecomputeModulesByHand) {
  const CostModel cost(testing::tiny_moe(), small_run(), testing::round_profile());
  const Layout core{1, 1, 1, 1, 1, 1, Recompute::kSelective, false};
  const StageContents one_moe_layer{0, 1, false, false};
  auto with = [&](const char* modules) {
    Layout l = core;
    l.recompute_modules = parse_recompute_modules(modules, "test", "");
    return l;
  };
  const Layout act = with("core_attn,moe_act"), norm = with("core_attn,layernorm");
  EXPECT_DOUBLE_EQ(cost.backward_work(one_moe_layer, act).compiled_traffic - cost.backward_work(one_moe_layer, core).compiled_traffic,
                   3 * 2 * 2048.0 * 512);
  EXPECT_DOUBLE_EQ(cost.layer_activation_bytes(true, core) - cost.layer_activation_bytes(true, act), 1024 * 2 * 2 * 512.0);
  EXPECT_DOUBLE_EQ(cost.backward_work(one_moe_layer, norm).memory_traffic - cost.backward_work(one_moe_layer, core).memory_traffic,
                   2 * 2 * 1024.0 * 1024);
  EXPECT_DOUBLE_EQ(cost.layer_activation_bytes(true, core) - cost.layer_activation_bytes(true, norm), 1024 * 2 * 1024.0);
  // Without core_attn the fused attention core is not repeated.
  EXPECT_DOUBLE_EQ(cost.backward_work(one_moe_layer, core).attention - cost.backward_work(one_moe_layer, with("moe_act")).attention,
                   cost.attention_core_work(core).attention);

  // mla_up_proj on a latent-attention tiny_moe (query latent 256, key-value latent 128, RoPE 64 of
  // 192-wide query and key heads): the up-projections' GEMMs, at least their 2 x 1,024 x (256 x
  // 8 x 192 + 128 x 8 x 256) FLOPs, against the up-projected queries, keys and values it rebuilds:
  // 8 x (2 x 192 + 128) + 64 = 4,160 bf16 values a token.
  ModelConfig mla = testing::tiny_moe();
  mla.q_lora_rank = 256;
  mla.kv_lora_rank = 128;
  mla.rope_head_dim = 64;
  mla.v_head_dim = 128;
  const CostModel latent(mla, small_run(), testing::round_profile());
  const Layout up = with("core_attn,mla_up_proj");
  const double flops = 2 * 1024.0 * (256 * 8 * 192 + 128 * 8 * 256);
  EXPECT_GE(latent.backward_work(one_moe_layer, up).matmul - latent.backward_work(one_moe_layer, core).matmul, flops);
  EXPECT_DOUBLE_EQ(latent.layer_activation_bytes(true, core) - latent.layer_activation_bytes(true, up), 1024 * 2 * 4160.0);

  // mlp on a dense model at tp 2: the checkpointed MLP keeps only its input, dropping gate and up,
  // their product (3 x 2,048 / 2 values) and fc1's input (1,024 / 2 under sequence parallelism),
  // and repeats its block's pair of TP collectives in each layer's backward.
  ModelConfig dense = testing::tiny_moe();
  dense.routed_experts = dense.top_k = dense.shared_experts = 0;
  dense.dense_ffn = 2048;
  const CostModel plain(dense, small_run(), testing::round_profile());
  Layout tp2 = core;
  tp2.tp = 2;
  tp2.sequence_parallel = true;
  Layout mlp = tp2;
  mlp.recompute_modules = parse_recompute_modules("core_attn,mlp", "test", "");
  EXPECT_DOUBLE_EQ(plain.layer_activation_bytes(false, tp2) - plain.layer_activation_bytes(false, mlp),
                   1024 * (2.0 * 3 * 2048 / 2 + 2.0 * 1024 / 2));
  const StageContents four_dense{4, 0, false, false};
  EXPECT_EQ(plain.tp_collectives(four_dense, false, mlp).total() - plain.tp_collectives(four_dense, false, tp2).total(), 2 * 4);
  EXPECT_GT(plain.backward_work(four_dense, mlp).matmul, plain.backward_work(four_dense, tp2).matmul);
}

TEST(CostModel, InFlightMicroBatchesOfOneFOneBAndInterleaved) {
  EXPECT_EQ(in_flight_chunks(Layout{1, 4, 1, 1, 1, 1}, 0, 8), 4);
  EXPECT_EQ(in_flight_chunks(Layout{1, 4, 1, 1, 1, 1}, 3, 8), 1);
  EXPECT_EQ(in_flight_chunks(Layout{1, 4, 1, 1, 1, 1}, 0, 2), 2);
  EXPECT_EQ(in_flight_chunks(Layout{1, 4, 2, 1, 1, 1}, 0, 8), 2 * 3 + 1 * 4 + 1);
  EXPECT_EQ(in_flight_chunks(Layout{1, 4, 2, 1, 1, 1}, 3, 8), 5);
}

// The busiest stage's idle time in 1F1B, by hand: (forward, backward) per micro-batch and stage.
TEST(CostModel, PipelineBubbleOfOneFOneB) {
  using P = StagePasses;
  // Equal stages: Narayanan et al.'s (p - 1) / vpp micro-batch times.
  EXPECT_DOUBLE_EQ(pipeline_bubble_seconds({P{1, 2}, P{1, 2}, P{1, 2}, P{1, 2}}, 1), 3 * 3.0);
  EXPECT_DOUBLE_EQ(pipeline_bubble_seconds({P{1, 2}, P{1, 2}}, 2), 3.0 / 2);
  // The measured CPU pp2 run: first stage 29.5 + 56.5 ms, second 20 + 39 ms; (59 - 29.5) + (59 - 56.5).
  EXPECT_NEAR(pipeline_bubble_seconds({P{29.5, 56.5}, P{20, 39}}, 1), 32.0, 1e-12);
  // The busiest stage last (an LM head): one micro-batch through each stage before it.
  EXPECT_DOUBLE_EQ(pipeline_bubble_seconds({P{1, 2}, P{1, 2}, P{2, 4}}, 1), 6.0);
  // A stage after the busiest one so light that the warm-up forward hides it.
  EXPECT_DOUBLE_EQ(pipeline_bubble_seconds({P{10, 20}, P{1, 2}}, 1), 0.0);
  EXPECT_DOUBLE_EQ(pipeline_bubble_seconds({}, 1), 0.0);
  EXPECT_EQ(busiest_stage({P{1, 2}, P{2, 4}, P{2, 4}}), 1u);  // the first of equals paces it
  // The cost model prices its stages so: the tiny model's first stage carries the embedding, its
  // last the LM head, so the stages differ.
  TrainingRun run = small_run();
  run.global_batch = 8;
  const CostModel cost(testing::tiny_moe(), run, testing::round_profile());
  const Layout l{1, 4, 1, 1, 1, 1, Recompute::kSelective, false};
  std::vector<StagePasses> stages;
  for (const StageContents& s : stage_contents(testing::tiny_moe(), l)) stages.push_back(cost.micro_batch_time(s, l).passes());
  EXPECT_NEAR(cost.evaluate(l).bubble_s, pipeline_bubble_seconds(stages, 1), 1e-15);
}

TEST(CostModel, StagesSplitLayersAndEnds) {
  ModelConfig m = testing::tiny_moe();
  m.layers = 8;
  m.first_dense_layers = 3;
  m.dense_ffn = 2048;
  const auto stages = stage_contents(m, Layout{1, 2, 2, 1, 1, 1});  // chunks of 2 layers
  EXPECT_EQ(stages[0].dense_layers, 2);  // chunk 0: layers 0-1
  EXPECT_EQ(stages[0].moe_layers, 2);    // chunk 2: layers 4-5
  EXPECT_EQ(stages[1].dense_layers, 1);  // chunk 1: layers 2-3, one dense
  EXPECT_EQ(stages[1].moe_layers, 3);
  EXPECT_TRUE(stages[0].embedding);
  EXPECT_TRUE(stages[1].lm_head);
}

TEST(CostModel, RoutingSkewStretchesOnlyExpertWorkUnderEp) {
  TrainingRun balanced = small_run(), skewed = small_run();
  skewed.routing_skew = 1.5;
  const CostModel a(testing::tiny_moe(), balanced, testing::round_profile());
  const CostModel b(testing::tiny_moe(), skewed, testing::round_profile());
  const Layout ep2{1, 1, 1, 2, 2, 1, Recompute::kSelective, false};
  // Two experts' GEMMs and their activation and permutation bytes (2 x (3 x 512 + 2 x 1,024) bf16
  // values per token; the activation's backward 5/3 of its forward), forward and backward, 4
  // layers, 2 micro-batches; and the epilogues that
  // grow with the rows (outputs of 1,024 + 1,024 forward, input gradients of 1,024 + 512), not
  // the weight gradients'; and the sorts of the copies by local expert, once each pass.
  const double expert_seconds =
      2 * 4 * 1024 * (3 * (2 * 2 * kExpert) / kRate + 2 * 2 * (3 * 2 * 1024 + (1 + 5.0 / 3) * 3 * 512) / 1e12) +
                                2 * 4 * 1024 * 2 * 2 * (2048 + 1536) / 1e12 + 2 * 2 * 4 * kSortBytes / 1e12;
  EXPECT_NEAR(b.evaluate(ep2).compute_s - a.evaluate(ep2).compute_s, 0.5 * expert_seconds, 1e-12);
  EXPECT_GT(b.evaluate(ep2).exposed_comm_s.ep, a.evaluate(ep2).exposed_comm_s.ep);
  const Layout ep1{1, 1, 1, 1, 2, 1, Recompute::kSelective, false};
  EXPECT_EQ(b.evaluate(ep1).compute_s, a.evaluate(ep1).compute_s);
}

// MoE parallel folding on tp 2 x dp 2: unfolded, the experts run at etp 2 beside ep 2 and the
// all-to-all dispatcher all-gathers the routed copies over the etp pair and reduce-scatters the
// output back; folded (etp 1, ep 4) the same ranks hold half the experts each, whole, with no
// gathers. Per device the expert FLOPs and weights are the same either way.
TEST(CostModel, FoldedExpertsSkipTheExpertTensorParallelGathers) {
  const ModelConfig model = testing::tiny_moe();
  const CostModel cost(model, small_run(), testing::round_profile());
  const Layout unfolded{2, 1, 1, 2, 2, 1, Recompute::kSelective, false};
  Layout folded{2, 1, 1, 4, 2, 1, Recompute::kSelective, false};
  folded.etp = 1;
  const StageContents stage = stage_contents(model, unfolded)[0];
  // 1,024 tokens / tp 2 x etp 2 x top-2 copies x 1,024 wide x 2 bytes.
  EXPECT_DOUBLE_EQ(cost.expert_tp_collective_bytes(unfolded), 4194304.0);
  EXPECT_EQ(cost.expert_tp_collectives(stage, true, unfolded), 8);  // 4 layers x (gather + scatter)
  EXPECT_EQ(cost.expert_tp_collectives(stage, false, unfolded), 8);
  EXPECT_EQ(cost.expert_tp_collectives(stage, true, folded), 0);
  EXPECT_DOUBLE_EQ(cost.layer_forward_work(true, folded).matmul, cost.layer_forward_work(true, unfolded).matmul);
  EXPECT_DOUBLE_EQ(cost.expert_params_per_device(stage, folded), 4 * 8 * kExpert / 4);
  EXPECT_DOUBLE_EQ(cost.expert_params_per_device(stage, unfolded), 4 * 8 * kExpert / 4);
  // Each device dispatches 512 tokens x 2 copies x 1,024 x 2 bytes; EP 2 strides over the TP pair
  // (ranks 0 and 2), EP 4 is 4 adjacent ranks; 4 all-to-alls per layer, 2 micro-batches.
  const Network network = Network::from(testing::round_profile());
  const double a2a_pair = all_to_all_time(GroupSpan{2, 2}, 2097152.0, network);
  const double a2a_four = all_to_all_time(GroupSpan{4, 4}, 2097152.0, network);
  const double gather = 0.5 * 4194304.0 / 100e9 + 1e-6;
  EXPECT_NEAR(cost.evaluate(unfolded).exposed_comm_s.ep, 2 * (16 * a2a_pair + 16 * gather), 1e-12);
  EXPECT_NEAR(cost.evaluate(folded).exposed_comm_s.ep, 2 * 16 * a2a_four, 1e-12);
  // Without EP the all-gather dispatcher gathers the tokens themselves, not their top-k copies.
  const Layout no_ep{2, 1, 1, 1, 2, 1, Recompute::kSelective, false};
  EXPECT_DOUBLE_EQ(cost.expert_tp_collective_bytes(no_ep), 2097152.0);
}

// Megatron-Core's capacity factor caps each expert at that multiple of its balanced share: the
// busiest EP rank of a 1.5x skew works as if the skew were 1.2, and a cap above the skew is moot.
TEST(CostModel, CapacityFactorCapsTheBusiestExpertRank) {
  const Layout ep2{1, 1, 1, 2, 2, 1, Recompute::kSelective, false};
  auto step = [&](double skew, double capacity) {
    TrainingRun run = small_run();
    run.routing_skew = skew;
    run.moe_capacity_factor = capacity;
    return CostModel(testing::tiny_moe(), run, testing::round_profile()).evaluate(ep2).step_time_s;
  };
  EXPECT_DOUBLE_EQ(step(1.5, 1.2), step(1.2, 0));
  EXPECT_DOUBLE_EQ(step(1.5, 2.0), step(1.5, 0));
  EXPECT_GT(step(1.5, 0), step(1.2, 0));
  TrainingRun bad = small_run();
  bad.moe_capacity_factor = -1;
  try {
    validate(bad, "run.yaml");
    ADD_FAILURE() << "a negative capacity factor was accepted";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("run.yaml: moe_capacity_factor"), std::string::npos) << e.what();
  }
}

// Multi-token prediction: each depth is one more MoE layer with the LM head, plus a 2h x h
// projection and another pass of the head. tiny_moe at 1,024 tokens, per token forward: the layer
// 2 x (attention 2,621,440 + router 8,192 + shared 1,572,864) + 2 experts x 2 x 1,572,864 + the
// attention core 2 x 8 x 256 x 512.5 = 16,795,648, the projection 2 x 2 x 1,024^2 = 4,194,304 and
// the head 2 x 1,000 x 1,024 = 2,048,000: 23,037,952 FLOPs, x3 for forward and backward.
TEST(CostModel, MultiTokenPredictionAddsALayerAndAHeadPassToTheLastStage) {
  ModelConfig mtp = testing::tiny_moe();
  mtp.mtp_layers = 1;
  EXPECT_DOUBLE_EQ(training_flops_per_token(mtp, 1024) - training_flops_per_token(testing::tiny_moe(), 1024),
                   3 * 23037952.0);
  const Layout l{1, 2, 1, 1, 1, 1, Recompute::kSelective, false};
  const std::vector<StageContents> stages = stage_contents(mtp, l);
  EXPECT_EQ(stages[0], (StageContents{0, 2, true, false, 0}));
  EXPECT_EQ(stages[1], (StageContents{0, 3, false, true, 1}));
  EXPECT_DOUBLE_EQ(param_counts(mtp).mtp, kAttention + kNorms + kRouter + kShared + 8 * kExpert + 2.0 * 1024 * 1024 + 2048);
  EXPECT_DOUBLE_EQ(param_counts(mtp).total, param_counts(testing::tiny_moe()).total);
  const CostModel with(mtp, small_run(), testing::round_profile());
  const CostModel without(testing::tiny_moe(), small_run(), testing::round_profile());
  EXPECT_GT(with.evaluate(l).step_time_s, without.evaluate(l).step_time_s);
  EXPECT_EQ(with.evaluate(l).slowest_stage, 1);
}

// The input embedding of tiny_moe (vocabulary 1,000 x 1,024, bf16, fp32 main gradients) for a
// micro-batch of 1,024 tokens at TP 2: forward, every token's row gathered (read and write 2 bytes
// x 1,024 each: 4 MiB); backward, the dense gradient of the rank's 500 x 1,024 shard zero-filled
// and read back into the main gradient (2 + 2 + 4 + 4 bytes each: 6.144 MB), plus each token's
// gradient row added into it (3 x 2 bytes x 1,024: 6 MiB). Learned positions add 1,024 x 1,024 x
// (2 + 2 + 2) forward, and backward the same again for their replicated 1,024 x 1,024 table (12
// bytes each) and their rows.
TEST(CostModel, EmbeddingGathersForwardAndAccumulatesADenseGradientBackward) {
  const StageContents embedding{0, 0, true, false, 0};
  const Layout l{2, 1, 1, 1, 1, 1, Recompute::kNone, false};
  const CostModel rope(testing::tiny_moe(), small_run(), testing::round_profile());
  EXPECT_DOUBLE_EQ(rope.forward_work(embedding, l).memory_traffic, 2.0 * 2 * 1024 * 1024);
  EXPECT_DOUBLE_EQ(rope.backward_work(embedding, l).memory_traffic, 500.0 * 1024 * 12 + 3.0 * 2 * 1024 * 1024);
  ModelConfig learned = testing::tiny_moe();
  learned.learned_positions = true;
  const CostModel positions(learned, small_run(), testing::round_profile());
  EXPECT_DOUBLE_EQ(positions.forward_work(embedding, l).memory_traffic, 5.0 * 2 * 1024 * 1024);
  EXPECT_DOUBLE_EQ(positions.backward_work(embedding, l).memory_traffic,
                   (500.0 * 1024 + 1024.0 * 1024) * 12 + 2 * 3.0 * 2 * 1024 * 1024);
  EXPECT_EQ(rope.forward_work(embedding, l).matmul, 0.0);
}

TEST(CostModel, TensorParallelSplitsComputeAndAddsCollectives) {
  const CostModel cost(testing::tiny_moe(), small_run(), testing::round_profile());
  const StepCost one = cost.evaluate(Layout{1, 1, 1, 1, 1, 1, Recompute::kSelective, false});
  const StepCost two = cost.evaluate(Layout{2, 1, 1, 1, 1, 1, Recompute::kSelective, false});
  // Everything halves but the router's GEMMs, which read its whole (replicated) weight on each
  // rank, and the sorts by local expert, which each expert-TP rank runs over all the copies it
  // gathered (4 micro-batches, 4 layers, forward and backward).
  const double sort_s = 4 * 4 * 2 * kSortBytes / 1e12;
  EXPECT_NEAR(two.compute_s - sort_s / 2, one.compute_s / 2, 0.01 * one.compute_s);
  EXPECT_GT(two.compute_s, one.compute_s / 2);
  // With sequence parallelism and nothing overlapped, 10 collectives per layer and micro-batch:
  // forward 2 all-gathers and 2 reduce-scatters; backward their transposes plus the re-gather of
  // the column-parallel inputs for the weight gradients. Each moves 1/2 of 2 MiB over 100 GB/s
  // plus 1 us.
  const double each = 0.5 * 2.0 * 1024 * 1024 / 100e9 + 1e-6;
  EXPECT_NEAR(two.exposed_comm_s.tp, 4 * 4 * 10 * each, 1e-12);
}

// Megatron's asynchronous input-gradient collectives run beside the column-parallel layers'
// backward GEMMs: QKV (1,024 x 1,536) and the shared expert's gate and up (1,024 x 1,024), split
// over TP 2, input and weight gradients for 1,024 tokens: 4 x 1,024 x 2,621,440 / 2 FLOPs at
// 50 TFLOPS = 107 us a layer, plus their epilogues (two 1,024 x 1,024 bf16 input gradients and
// 1,024 x (768 + 512) fp32 weight gradients read and written, 14.7 MB at 1 TB/s), more than the 4
// collectives' 46 us, which hide completely. What stays: the forward's 4 and the backward's 2
// output-gradient all-gathers.
TEST(CostModel, AsyncInputGradientCollectivesHideBehindWeightGradients) {
  TrainingRun run = small_run();
  run.overlap.tp_grad = true;
  const CostModel cost(testing::tiny_moe(), run, testing::round_profile());
  const Layout l{2, 1, 1, 1, 1, 1, Recompute::kSelective, false};
  const double each = 0.5 * 2.0 * 1024 * 1024 / 100e9 + 1e-6;
  EXPECT_NEAR(cost.tp_overlap_window(stage_contents(testing::tiny_moe(), l)[0], false, l),
              4 * (4 * 1024 * 2621440.0 / 2 / 50e12 + (2 * 2 * 1024 * 1024.0 + 8 * 1024 * 1280.0) / 1e12), 1e-15);
  EXPECT_NEAR(cost.evaluate(l).exposed_comm_s.tp, 4 * 4 * 6 * each, 1e-12);
  // Plain TP (no SP): the backward's all-reduces all run beside GEMMs; only the forward's wait.
  Layout plain = l;
  plain.sequence_parallel = false;
  EXPECT_NEAR(cost.evaluate(plain).exposed_comm_s.tp, 4 * 4 * 4 * each, 1e-12);
}

// DP gradients reduce bucket by bucket during the last micro-batch's backward (Megatron-Core DDP,
// buckets of max(40M, 1M x dp) parameters): the step waits for the last bucket or for what the
// backward does not cover, whichever is longer. tiny_moe per device: 4 layers of 4,204,544 shared
// weights (attention 2,621,440, norms 2,048, router 8,192, shared expert 1,572,864), 2,049,024 in
// embedding, LM head and final norm, and 4 x 8 x 1,572,864 expert weights.
TEST(CostModel, GradientReductionOverlapsTheLastBackwardBucketByBucket) {
  const ModelConfig model = testing::tiny_moe();
  const Layout l{1, 1, 1, 1, 2, 1, Recompute::kSelective, false};
  const CostModel blocking(model, small_run(), testing::round_profile());
  TrainingRun run = small_run();
  run.overlap.grad_reduce = true;
  const CostModel overlapped(model, run, testing::round_profile());
  const StageContents stage = stage_contents(model, l)[0];
  const Seconds grads = blocking.data_parallel_traffic(stage, l).grads;
  // Both rings of 2 ranks: 2 x 1/2 x 4 bytes x params / 100 GB/s + 2 x 1 us.
  const double dense = 4 * 4204544.0 + 2049024.0, expert = 4 * 8 * 1572864.0;
  EXPECT_NEAR(grads, (4 * dense + 4 * expert) / 100e9 + 4e-6, 1e-12);
  EXPECT_NEAR(blocking.evaluate(l).exposed_comm_s.dp, grads, 1e-12);
  const Seconds backward = overlapped.backward_seconds(stage, l);
  const double bucket = 40e6 / (dense + expert);
  const Seconds waited = std::max(bucket * grads, grads - backward);
  EXPECT_NEAR(overlapped.evaluate(l).exposed_comm_s.dp, waited, 1e-12);
  EXPECT_LT(overlapped.evaluate(l).exposed_comm_s.dp, grads);
  // NCCL's channels, 27 of 108 SMs, hold a quarter of the device while the rest hides: the backward
  // beside it loses a quarter of that time.
  HardwareProfile held = testing::round_profile();
  held.device.gemm.compute_units = 108;
  held.node.collective_channels = 27;
  const CostModel contended(model, run, held);
  ASSERT_NEAR(contended.backward_seconds(stage, l), backward, 1e-15);
  EXPECT_NEAR(contended.evaluate(l).exposed_comm_s.dp, waited + 0.25 * (grads - waited), 1e-12);
}

// NCCL's ring channels: the node's 16 inside a node; across nodes 4 per NIC reached, one NIC a
// device, up to the node's 16 (2 H20s a node over 2 nodes ran 8, NVIDIA/nccl#1189; 8 H100s a
// node over 3 ran 16, NVIDIA/nccl#1453).
TEST(CostModel, NcclChannelsFollowTheNicsAGroupReaches) {
  HardwareProfile p = testing::round_profile();
  p.node.collective_channels = 16;
  const CostModel cost(testing::tiny_moe(), small_run(), p);
  EXPECT_EQ(cost.collective_channels(GroupSpan{8, 8}), 16);
  EXPECT_EQ(cost.collective_channels(GroupSpan{2, 2}), 16);
  EXPECT_EQ(cost.collective_channels(GroupSpan{48, 1}), 4);
  EXPECT_EQ(cost.collective_channels(GroupSpan{4, 2}), 8);
  EXPECT_EQ(cost.collective_channels(GroupSpan{24, 8}), 16);
  EXPECT_EQ(cost.collective_channels(GroupSpan{16, 4}), 16);
}

// 1F1B's paired send and receive block every micro-batch; the interleaved schedule's overlapped
// sends leave only the pipeline's fill and drain exposed: one 2 MiB activation each way.
TEST(CostModel, InterleavedPipelineSendsHideBehindCompute) {
  TrainingRun run = testing::tiny_run(8);
  const Layout l{1, 2, 2, 1, 1, 1, Recompute::kSelective, false};
  const Seconds message = 2.0 * 1024 * 1024 / 100e9 + 1e-6;
  EXPECT_NEAR(CostModel(testing::tiny_moe(), run, testing::round_profile()).evaluate(l).exposed_comm_s.pp,
              8 * 2 * 2 * message, 1e-12);
  run.overlap.p2p = true;
  EXPECT_NEAR(CostModel(testing::tiny_moe(), run, testing::round_profile()).evaluate(l).exposed_comm_s.pp,
              2 * message, 1e-12);
}

TEST(CostModel, Fp8SpeedsUpMatmulsOnly) {
  TrainingRun fp8 = small_run();
  fp8.precision = Precision::kFp8;
  const Layout l{1, 1, 1, 1, 1, 1, Recompute::kSelective, false};
  const double bf16_s = CostModel(testing::tiny_moe(), small_run(), testing::round_profile()).evaluate(l).compute_s;
  const double fp8_s = CostModel(testing::tiny_moe(), fp8, testing::round_profile()).evaluate(l).compute_s;
  EXPECT_LT(fp8_s, bf16_s);
  EXPECT_GT(fp8_s, bf16_s / 2);  // the attention core stays at the bf16 rate
}

// An fp8 run's Transformer Engine GEMMs quantize their input (forward) and output gradient
// (backward): 6 bytes per element at the memory rate under current scaling (flopwise's default
// recipe). The LM head (Megatron's plain
// ColumnParallelLinear) runs in bf16: 1,024 tokens x 1,024 x 1,000 x 2 FLOPs at the bf16 rate are
// 2x their fp8-rate FLOPs, with no quantization.
TEST(CostModel, Fp8QuantizesLayerGemmInputsAndKeepsTheHeadInBf16) {
  TrainingRun fp8 = small_run();
  fp8.precision = Precision::kFp8;
  const Layout l{1, 1, 1, 1, 1, 1, Recompute::kSelective, false};
  const CostModel bf16_cost(testing::tiny_moe(), small_run(), testing::round_profile());
  const CostModel fp8_cost(testing::tiny_moe(), fp8, testing::round_profile());
  const StageContents head{0, 0, false, true};
  EXPECT_DOUBLE_EQ(fp8_cost.forward_work(head, l).matmul, 2 * 2.0 * 1024 * 1024 * 1000);
  EXPECT_DOUBLE_EQ(fp8_cost.forward_work(head, l).memory_traffic, bf16_cost.forward_work(head, l).memory_traffic);
  // One dense-free MoE layer forward: inputs of QKV (1,024), output projection (1,024), shared
  // gate/up (1,024) and down (512) for every token, and each token's two expert copies' gate/up
  // (1,024) and down (512): 3,584 + 2 x 1,536 = 6,656 elements per token. The router, outside
  // Transformer Engine, stays in bf16: no cast, the same bytes and time as in the bf16 run. The
  // experts' 2,048 copies are padded to the fp8 alignment and back (2 x 2 x 2,048 x 1,024 bf16).
  const double quantized = 6.0 * 1024 * (3584 + 2 * 1536), padding = 2 * 2 * 2.0 * 2048 * 1024;
  const ComputeWork a = bf16_cost.layer_forward_work(true, l), b = fp8_cost.layer_forward_work(true, l);
  EXPECT_NEAR(b.memory_traffic - a.memory_traffic, quantized + padding, 1e-6 * quantized);
  // Twenty casts under current scaling, each an amax, a scale and a cast-transpose kernel: one per
  // shared GEMM (QKV, projection, shared gate/up and down) and one per expert and expert GEMM
  // (8 x 2); and the padding and the unpadding.
  EXPECT_DOUBLE_EQ(b.kernels - a.kernels, 3 * (4 + 16) + 2);
  // Delayed scaling reduces the amax inside the cast: 4 bytes a value, 2 fewer over the same
  // 6,656 x 1,024 values; mxfp8 adds 1/16 byte of scales (1 byte per 32, two copies).
  // One kernel a cast under the other recipes; delayed scaling casts a round of experts in one
  // fused multi-tensor kernel (4 shared + 2 x 2 rounds = 8 casts), mxfp8 each expert (4 + 16).
  for (const auto& [recipe, saved, casts] : {std::tuple{Fp8Recipe::kDelayed, 2.0, 8.0},
                                              std::tuple{Fp8Recipe::kMxfp8, 2.0 - 1.0 / 16, 20.0}}) {
    TrainingRun other = fp8;
    other.fp8_recipe = recipe;
    const ComputeWork c = CostModel(testing::tiny_moe(), other, testing::round_profile()).layer_forward_work(true, l);
    EXPECT_NEAR(b.memory_traffic - c.memory_traffic, saved * 1024 * 6656, 1e-6 * quantized) << to_string(recipe);
    EXPECT_DOUBLE_EQ(c.kernels - a.kernels, casts + 2) << to_string(recipe);
  }
  EXPECT_DOUBLE_EQ(fp8_cast_kernels(Fp8Recipe::kTensorwise), 3);
  EXPECT_DOUBLE_EQ(fp8_casts(Fp8Recipe::kTensorwise, 4), 4);
  EXPECT_DOUBLE_EQ(fp8_casts(Fp8Recipe::kDelayed, 4), 1);
  EXPECT_FALSE(router_matrix(testing::tiny_moe()).quantized);
}

// An fp8 run's grouped experts pad their copies to the fp8 GEMM's alignment and strip it after fc2
// (TE's Fp8Padding, Fp8Unpadding), each reading and writing every copy: tiny_moe's 2,048 copies of
// 1,024 bf16 values at EP 1, 2 x 2 x 2 x 2,048 x 1,024 bytes a pass, the same backward. The flex
// dispatcher pads inside its permutation; a bf16 run does not pad.
TEST(CostModel, Fp8ExpertsPadTheirCopiesBehindTheAllToAllDispatcher) {
  const Layout l{1, 1, 1, 1, 1, 1, Recompute::kNone, false};
  TrainingRun fp8 = small_run();
  fp8.precision = Precision::kFp8;
  EXPECT_DOUBLE_EQ(CostModel(testing::tiny_moe(), fp8, testing::round_profile()).quantization_padding_bytes(l),
                   2 * 2 * 2.0 * 2048 * 1024);
  EXPECT_DOUBLE_EQ(CostModel(testing::tiny_moe(), small_run(), testing::round_profile()).quantization_padding_bytes(l), 0);
  fp8.ep_dispatcher = EpDispatcher::kFlex;
  EXPECT_DOUBLE_EQ(CostModel(testing::tiny_moe(), fp8, testing::round_profile()).quantization_padding_bytes(l), 0);
}

// Bytes a cast moves per value: read 2, write the fp8 copy and its transpose (1 + 1); current
// scaling reads once more for the amax; block scales add 1 byte per 32 (mxfp8) or 4 per 128
// (blockwise) for each copy.
TEST(CostModel, Fp8CastBytesByRecipe) {
  EXPECT_DOUBLE_EQ(fp8_cast_bytes(Fp8Recipe::kTensorwise), 6.0);
  EXPECT_DOUBLE_EQ(fp8_cast_bytes(Fp8Recipe::kDelayed), 4.0);
  EXPECT_DOUBLE_EQ(fp8_cast_bytes(Fp8Recipe::kMxfp8), 4.0625);
  EXPECT_DOUBLE_EQ(fp8_cast_bytes(Fp8Recipe::kBlockwise), 4.0625);
  EXPECT_EQ(parse_fp8_recipe("mxfp8", "t", "f"), Fp8Recipe::kMxfp8);
  EXPECT_EQ(to_string(Fp8Recipe::kBlockwise), "blockwise");
  try {
    parse_fp8_recipe("hybrid", "runs.yaml", "runs[0].fp8_recipe");
    FAIL();
  } catch (const InputError& e) {
    EXPECT_STREQ(e.what(), "runs.yaml: runs[0].fp8_recipe: unknown fp8 recipe 'hybrid' (expected delayed, tensorwise, mxfp8 or blockwise)");
  }
  TrainingRun bf16;
  bf16.fp8_recipe = Fp8Recipe::kMxfp8;
  try {
    validate(bf16, "options");
    FAIL();
  } catch (const InputError& e) {
    EXPECT_STREQ(e.what(), "options: fp8_recipe: applies to fp8 runs only (this run is bf16)");
  }
}

// With matmul_fp8 0.25 (fp8 rate 200 x 0.25 = 50 TFLOPS, bf16 rate 100 x 0.5 = 50 TFLOPS) an fp8
// layer GEMM costs what the bf16 one does; the LM head stays at the bf16 rate, now the same as
// the fp8 one: 2 x 1,024 x 1,024 x 1,000 FLOPs counted once. The unfused attention core's batched
// GEMMs stay in bf16 too: 2 x 1,024 queries x 8 heads x 1,024 keys x (128 + 128) FLOPs.
TEST(CostModel, Fp8GemmsRunAtTheirOwnMeasuredEfficiency) {
  TrainingRun fp8 = small_run();
  fp8.precision = Precision::kFp8;
  const HardwareProfile p = testing::round_profile_edited({{"matmul: 0.5,", "matmul: 0.5, matmul_fp8: 0.25,"}}, "p.yaml");
  EXPECT_DOUBLE_EQ(p.efficiency.matmul_of(Precision::kFp8), 0.25);
  EXPECT_DOUBLE_EQ(p.efficiency.matmul_of(Precision::kBf16), 0.5);
  const Layout l{1, 1, 1, 1, 1, 1, Recompute::kSelective, false};
  const CostModel bf16_cost(testing::tiny_moe(), small_run(), p), fp8_cost(testing::tiny_moe(), fp8, p);
  const StageContents head{0, 0, false, true};
  EXPECT_DOUBLE_EQ(fp8_cost.forward_work(head, l).matmul, 2.0 * 1024 * 1024 * 1000);
  EXPECT_DOUBLE_EQ(fp8_cost.layer_forward_work(true, l).matmul, bf16_cost.layer_forward_work(true, l).matmul);
  fp8.attention = AttentionKernel::kUnfused;
  const CostModel unfused(testing::tiny_moe(), fp8, p);
  const double core = 2.0 * 1024 * 8 * 1024 * (128 + 128);
  EXPECT_DOUBLE_EQ(unfused.layer_forward_work(true, l).matmul - fp8_cost.layer_forward_work(true, l).matmul, core);
}

TEST(CostModel, ComputeTimeByHockneyHalfRowsAndOverhead) {
  // matmul rate 5e13: (1e12 + 1,000 rows x 1e9) / 5e13 = 40 ms; attention 5e11 / 5e13 = 10 ms;
  // two layer passes at 10 us; 1 GB through memory at 1 TB/s.
  const HardwareProfile p = testing::round_profile_edited(
      {{"matmul: 0.5,", "matmul: 0.5, matmul_half_rows: 1000,"},
       {"runtime_reserved", "overheads: {per_layer_pass: \"10 us\", per_step: \"0 s\"}\nruntime_reserved"}},
      "p.yaml");
  const CostModel cost(testing::tiny_moe(), small_run(), p);
  EXPECT_NEAR(cost.compute_seconds(ComputeWork{1e12, 1e9, 5e11, 2, 1e9}), 0.04 + 0.01 + 2e-5 + 1e-3, 1e-15);
}

// Each GEMM kernel pays the device's launch latency: 7 launches at 4 us.
TEST(CostModel, GemmLaunchesPayTheLaunchLatency) {
  HardwareProfile p = testing::round_profile();
  p.device.gemm.launch_latency = 4e-6;
  const CostModel cost(testing::tiny_moe(), small_run(), p);
  ComputeWork w;
  w.gemm_launches = 7;
  EXPECT_NEAR(cost.compute_seconds(w), 28e-6, 1e-18);
}

// Every kernel, GEMM or not, then waits the stream's gap: 7 GEMMs at 4 us of their own, and 12
// kernels in all at 2 us after each.
TEST(CostModel, EveryKernelWaitsTheKernelGap) {
  HardwareProfile p = testing::round_profile();
  p.device.gemm.launch_latency = 4e-6;
  p.device.kernel_gap = 2e-6;
  const CostModel cost(testing::tiny_moe(), small_run(), p);
  ComputeWork w;
  w.gemm_launches = 7;
  w.kernels = 5;
  EXPECT_NEAR(cost.compute_seconds(w), 7 * 4e-6 + 12 * 2e-6, 1e-18);
  // A GEMM benchmark's profiler times the kernel alone.
  const CostModel no_gap(testing::tiny_moe(), small_run(), [&] {
    HardwareProfile q = p;
    q.device.kernel_gap = 0;
    return q;
  }());
  EXPECT_DOUBLE_EQ(cost.gemm_seconds(1024, 1024, 1024), no_gap.gemm_seconds(1024, 1024, 1024));
}

// The kernel floor is each non-GEMM kernel's own fixed time, beside its bytes: 5 such kernels at
// 3 us add 15 us; the 7 GEMMs keep their launch latency and no floor.
TEST(CostModel, EveryNonGemmKernelTakesTheKernelFloor) {
  HardwareProfile p = testing::round_profile();
  p.device.gemm.launch_latency = 4e-6;
  p.device.kernel_gap = 2e-6;
  p.device.kernel_floor = 3e-6;
  const CostModel cost(testing::tiny_moe(), small_run(), p);
  ComputeWork w;
  w.gemm_launches = 7;
  w.kernels = 5;
  w.memory_traffic = 1e6;  // 1 us at the round profile's 1 TB/s
  EXPECT_NEAR(cost.compute_seconds(w), 7 * 4e-6 + 5 * 3e-6 + 12 * 2e-6 + 1e-6, 1e-18);
}

// The kernels behind the bytes a layer streams. A dense layer of the tiny model (RoPE) forward:
// two norms, two bias-dropout-adds, the activation and RoPE on queries and keys, 7; backward each
// norm twice, 9. An MoE layer adds the permutation and the un-permutation, the shared expert's
// activation and, with 4 local experts behind the all-to-all, the two sorts: 12 and 14; with one
// local expert (EP 8) there is no sort. Learned positions drop RoPE's two.
TEST(CostModel, LayerKernelsCountTheStepsItsBytesPrice) {
  const CostModel cost(testing::tiny_moe(), small_run(), testing::round_profile());
  const Layout ep2{1, 1, 1, 2, 2, 1, Recompute::kNone, false};
  const Layout ep8{1, 1, 1, 8, 8, 1, Recompute::kNone, false};
  const auto forward = CostModel::Pass::kForward, backward = CostModel::Pass::kBackward;
  EXPECT_DOUBLE_EQ(cost.layer_kernels(false, forward, ep2), 7);
  EXPECT_DOUBLE_EQ(cost.layer_kernels(false, backward, ep2), 9);
  EXPECT_DOUBLE_EQ(cost.layer_kernels(true, forward, ep2), 12);
  EXPECT_DOUBLE_EQ(cost.layer_kernels(true, backward, ep2), 14);
  EXPECT_DOUBLE_EQ(cost.layer_kernels(true, forward, ep8), 10);
  ModelConfig gpt = testing::tiny_moe();
  gpt.learned_positions = true;
  EXPECT_DOUBLE_EQ(CostModel(gpt, small_run(), testing::round_profile()).layer_kernels(false, forward, ep2), 5);
  // With the attention core: FlashAttention's one kernel forward and three backward, and the
  // copies around it (forward the query's and the value's, backward the gradients' cat): 15 and
  // 18 for one MoE layer, and the router's 36 and 21; the unfused path's softmax (13 and the
  // router's; its dropout's kernel only under attention dropout), its two batched GEMMs launched
  // beside the layer's seven. Hidden dropout adds the two dropouts' gradient kernels backward.
  const StageContents one_moe_layer{0, 1, false, false};
  EXPECT_DOUBLE_EQ(cost.forward_work(one_moe_layer, ep2).kernels, 15 + 36);
  EXPECT_DOUBLE_EQ(cost.backward_work(one_moe_layer, ep2).kernels, 18 + 21);
  TrainingRun unfused = small_run();
  unfused.attention = AttentionKernel::kUnfused;
  const ComputeWork u = CostModel(testing::tiny_moe(), unfused, testing::round_profile()).layer_forward_work(true, ep2);
  EXPECT_DOUBLE_EQ(u.kernels, 13 + 36);
  EXPECT_DOUBLE_EQ(u.gemm_launches, 9);
  unfused.attention_dropout = 0.1;
  EXPECT_DOUBLE_EQ(CostModel(testing::tiny_moe(), unfused, testing::round_profile()).layer_forward_work(true, ep2).kernels,
                   14 + 36);
  TrainingRun hidden = small_run();
  hidden.hidden_dropout = 0.1;
  EXPECT_DOUBLE_EQ(CostModel(testing::tiny_moe(), hidden, testing::round_profile()).layer_kernels(true, backward, ep2), 14 + 2);
}

// The router's kernels beside its gate GEMM, counted from Megatron-Core's router.py and
// moe_utils.py (see CostModel::router_kernels). Plain torch, one aux_loss, tp 1: forward the
// top-k's 9, the aux scores' 6 and the loss's count, 4 ops and 2 logging ops (7): 22; backward
// the top-k's 5, the scores' and the logits' add (2), the autoscaler's 2 and the loss's 2: 11.
// Fused: 1 + 1 + (1 + 1 + 2) = 6 forward, 1 + 2 + (2 + 1) = 6 backward; at tp 2 the token
// counts' all-reduce adds 1 forward. DeepSeek-V3's sequence loss with the expert bias, fused:
// 1 + 1 + (1 + 1 + 2) + 1 + 2 = 9 and 1 + 2 + 3 + 1 = 7. No balancing: the top-k alone, 9 and 5
// plain, 1 and 1 fused. The z-loss, plain torch whatever the fusion, adds 14 and 10 (the default
// router, the Ling report's aux_loss and z-loss: 36 and 21). Each kernel streams the scores in and out in fp32: 8 x 1,024 tokens x 8
// experts, over the TP ranks under sequence parallelism. A dense layer has no router.
TEST(CostModel, RouterKernelsFollowMegatronCoresRouter) {
  const auto forward = CostModel::Pass::kForward, backward = CostModel::Pass::kBackward;
  const Layout tp1{1, 1, 1, 2, 2, 1, Recompute::kNone, false};
  const Layout tp2{2, 1, 1, 2, 1, 1, Recompute::kNone, true};
  auto router = [&](bool fused, const std::string& balancing) {
    TrainingRun run = small_run();
    run.router_fusion = fused;
    run.router_balancing = parse_router_balancing(balancing, "test", "router_balancing");
    return CostModel(testing::tiny_moe(), run, testing::round_profile());
  };
  EXPECT_DOUBLE_EQ(router(false, "aux_loss").router_kernels(forward, tp1), 22);
  EXPECT_DOUBLE_EQ(router(false, "aux_loss").router_kernels(backward, tp1), 11);
  EXPECT_DOUBLE_EQ(router(true, "aux_loss").router_kernels(forward, tp1), 6);
  EXPECT_DOUBLE_EQ(router(true, "aux_loss").router_kernels(backward, tp1), 6);
  EXPECT_DOUBLE_EQ(router(true, "aux_loss").router_kernels(forward, tp2), 7);
  EXPECT_DOUBLE_EQ(router(true, "seq_aux_loss,expert_bias").router_kernels(forward, tp1), 9);
  EXPECT_DOUBLE_EQ(router(true, "seq_aux_loss,expert_bias").router_kernels(backward, tp1), 7);
  EXPECT_DOUBLE_EQ(router(false, "none").router_kernels(forward, tp1), 9);
  EXPECT_DOUBLE_EQ(router(false, "none").router_kernels(backward, tp1), 5);
  EXPECT_DOUBLE_EQ(router(true, "none").router_kernels(forward, tp1), 1);
  EXPECT_DOUBLE_EQ(router(true, "none").router_kernels(backward, tp1), 1);
  EXPECT_DOUBLE_EQ(router(true, "z_loss").router_kernels(forward, tp1), 1 + 14);
  EXPECT_DOUBLE_EQ(router(true, "z_loss").router_kernels(backward, tp1), 1 + 10);
  EXPECT_EQ(to_string(TrainingRun{}.router_balancing), "aux_loss,z_loss");
  EXPECT_DOUBLE_EQ(CostModel(testing::tiny_moe(), small_run(), testing::round_profile()).router_kernels(forward, tp1), 36);
  EXPECT_DOUBLE_EQ(router(true, "aux_loss").router_work(forward, tp1).memory_traffic, 6 * 8 * 1024.0 * 8);
  EXPECT_DOUBLE_EQ(router(true, "aux_loss").router_work(forward, tp2).memory_traffic, 7 * 8 * 512.0 * 8);
  // Only MoE layers route: the fused router's 6 forward kernels are the whole difference.
  const CostModel plain = router(false, "aux_loss"), fused = router(true, "aux_loss");
  EXPECT_DOUBLE_EQ(plain.layer_forward_work(true, tp1).kernels - fused.layer_forward_work(true, tp1).kernels, 22 - 6);
  EXPECT_DOUBLE_EQ(plain.layer_forward_work(false, tp1).kernels, fused.layer_forward_work(false, tp1).kernels);
}

TEST(CostModel, LayerWorkCountsLocalExpertsOnce) {
  const CostModel cost(testing::tiny_moe(), small_run(), testing::round_profile());
  const Layout ep2{1, 1, 1, 2, 2, 1, Recompute::kNone, false};
  const ComputeWork w = cost.layer_forward_work(true, ep2);
  // FLOPs per row: attention, router and shared expert for every token, plus 4 local experts.
  EXPECT_DOUBLE_EQ(w.matmul_per_row, 2 * (kAttention + kRouter + kShared) + 4 * 2 * kExpert);
  // FLOPs: 1,024 tokens through the dense part and top-2 experts.
  EXPECT_DOUBLE_EQ(w.matmul, 1024 * (2 * (kAttention + kShared) + 2 * 2 * kExpert));
  // Bytes: the memory-bound router GEMM and the router's own kernels, the layer's norms,
  // activations and permutation, the copies before the attention kernel, the sorts by local
  // expert, and the GEMMs' outputs (4 local experts of 512 rows write what 8 of 256 did).
  EXPECT_DOUBLE_EQ(w.memory_traffic, kRouterGemmSeconds * 1e12 + kRouterForwardBytes +
                                         1024 * (kLibraryTrafficBytes + kQkvSplitForwardBytes) + kSortBytes +
                                         kForwardEpilogueBytes);
  EXPECT_DOUBLE_EQ(w.compiled_traffic, 1024 * kCompiledTrafficBytes);
  EXPECT_DOUBLE_EQ(w.layer_passes, 1);
  // Seven GEMM kernels: QKV, projection, router, the shared expert's gate-up and down, and the
  // local experts' grouped gate-up and down (one launch each, whatever the expert count).
  EXPECT_DOUBLE_EQ(w.gemm_launches, 7);
  // Backward without recompute is twice the forward in every term.
  const StageContents stage{0, 4, true, true};
  EXPECT_DOUBLE_EQ(cost.backward_work(stage, ep2).layer_passes, 8);
  EXPECT_DOUBLE_EQ(cost.backward_work(stage, ep2).matmul_per_row, 2 * cost.forward_work(stage, ep2).matmul_per_row);
}

// RoPE reads and writes the rotated elements of every query and key head, forward (and twice in
// the backward, like every memory-bound kernel): tiny_moe's 8 query and 2 key heads of 128 are
// 2 x 1,280 bf16 values a token; learned positions none; latent attention rotates only the
// 64-wide rope part of each of 8 query heads and of its one shared key head, 2 x 576 values.
TEST(CostModel, RopeReadsAndWritesTheRotatedQueryAndKeyElements) {
  const Layout l{1, 1, 1, 1, 1, 1, Recompute::kNone, false};
  ModelConfig model = testing::tiny_moe();
  const CostModel rope(model, small_run(), testing::round_profile());
  EXPECT_DOUBLE_EQ(rope.rotated_elements_per_token(), 1280);
  model.learned_positions = true;
  const CostModel learned(model, small_run(), testing::round_profile());
  EXPECT_DOUBLE_EQ(learned.rotated_elements_per_token(), 0);
  EXPECT_DOUBLE_EQ(rope.elementwise_bytes_per_token(true, l) - learned.elementwise_bytes_per_token(true, l),
                   2 * 2 * 1280.0);
  // In the layer's forward RoPE also costs the value's copy before the attention kernel (256 values
  // read and written: the rewritten query and key leave no packed layout), see the next test.
  EXPECT_DOUBLE_EQ(rope.layer_forward_work(true, l).memory_traffic - learned.layer_forward_work(true, l).memory_traffic,
                   1024 * 2 * 2 * (1280.0 + 256));
  // Under TP 2 each rank rotates its half of the heads.
  const Layout tp2{2, 1, 1, 1, 1, 1, Recompute::kNone, true};
  EXPECT_DOUBLE_EQ(rope.elementwise_bytes_per_token(true, tp2) - learned.elementwise_bytes_per_token(true, tp2),
                   2 * 2 * 640.0);
  model.learned_positions = false;
  model.q_lora_rank = 256;
  model.kv_lora_rank = 128;
  model.rope_head_dim = 64;
  model.v_head_dim = 128;
  EXPECT_DOUBLE_EQ(CostModel(model, small_run(), testing::round_profile()).rotated_elements_per_token(), 9 * 64);
}

// The copies between the fused QKV output and the attention kernel, per token (bf16, read and
// written). tiny_moe (8 query heads, 2 key groups of 128, RoPE) at tp 1: forward the query's
// reshape (1,024: two groups on the rank) and the value's copy (256), 2 kernels; backward the cat
// of the three gradients (1,024 + 2 x 256), 1 kernel. At tp 2 one group a rank: the query's
// reshape is a view, the value's copy 128; the cat 512 + 2 x 128. Learned positions with GQA keep
// the query's copy and the cat; learned positions with MHA pass TE one packed buffer: nothing.
TEST(CostModel, QkvSplitCopiesWhatTheAttentionKernelCannotTakeAsViews) {
  const Layout tp1{1, 1, 1, 1, 1, 1, Recompute::kNone, false};
  const Layout tp2{2, 1, 1, 1, 1, 1, Recompute::kNone, true};
  const auto forward = CostModel::Pass::kForward, backward = CostModel::Pass::kBackward;
  // Bytes and kernels the split adds in a pass.
  auto split = [](const ModelConfig& m, CostModel::Pass pass, const Layout& l) {
    const ComputeWork w = CostModel(m, small_run(), testing::round_profile()).qkv_split_work(pass, l);
    return std::array<double, 2>{w.memory_traffic, w.kernels};
  };
  const ModelConfig rope = testing::tiny_moe();
  EXPECT_EQ(split(rope, forward, tp1), (std::array<double, 2>{1024 * 2 * 2 * 1280.0, 2}));
  EXPECT_EQ(split(rope, backward, tp1), (std::array<double, 2>{1024 * 2 * 2 * 1536.0, 1}));
  EXPECT_EQ(split(rope, forward, tp2), (std::array<double, 2>{1024 * 2 * 2 * 128.0, 1}));
  EXPECT_EQ(split(rope, backward, tp2), (std::array<double, 2>{1024 * 2 * 2 * 768.0, 1}));
  ModelConfig learned = rope;
  learned.learned_positions = true;
  EXPECT_EQ(split(learned, forward, tp1), (std::array<double, 2>{1024 * 2 * 2 * 1024.0, 1}));
  EXPECT_EQ(split(learned, backward, tp1), (std::array<double, 2>{1024 * 2 * 2 * 1536.0, 1}));
  learned.kv_heads = learned.heads;
  EXPECT_EQ(split(learned, forward, tp1), (std::array<double, 2>{0, 0}));
  EXPECT_EQ(split(learned, backward, tp1), (std::array<double, 2>{0, 0}));
  // The layer's forward carries them.
  const CostModel cost(rope, small_run(), testing::round_profile());
  const ComputeWork plain = cost.layer_forward_work(true, tp1);
  EXPECT_GT(plain.memory_traffic, 0);
  EXPECT_DOUBLE_EQ(CostModel(learned, small_run(), testing::round_profile()).layer_forward_work(true, tp1).kernels + 2 + 2,
                   plain.kernels);  // RoPE's two and the split's two (learned is MHA by now)
}

// QK-norm over tiny_moe's 8 query and 2 key heads of 128 (1,280 values a token): forward, the key's
// contiguous copy (read and write 256) and each norm's read and write, 2 x (512 + 2,560) bf16
// bytes and 3 kernels; backward, each norm reads its input and the output gradient and writes the
// input gradient, 2 x 3 x 1,280 bytes, with a finalize kernel each, 4 kernels. The norms keep their
// inputs for the backward: 2 x 1,280 bytes a token more. TP 2 halves the heads on a device.
TEST(CostModel, QkNormReadsWritesAndKeepsTheQueryAndKeyHeads) {
  ModelConfig model = testing::tiny_moe();
  const CostModel plain(model, small_run(), testing::round_profile());
  model.qk_norm_weights = 2 * 128;
  const CostModel normed(model, small_run(), testing::round_profile());
  EXPECT_DOUBLE_EQ(normed.qk_normed_elements_per_token(), 1280);
  EXPECT_DOUBLE_EQ(plain.qk_normed_elements_per_token(), 0);
  const StageContents layer{0, 1, false, false};
  for (const Layout& l : {Layout{1, 1, 1, 1, 1, 1, Recompute::kNone, false}, Layout{2, 1, 1, 1, 1, 1, Recompute::kNone, true}}) {
    const double tokens = 1024.0 / l.tp;
    const ComputeWork fwd = normed.forward_work(layer, l), fwd0 = plain.forward_work(layer, l);
    EXPECT_DOUBLE_EQ(fwd.memory_traffic - fwd0.memory_traffic, tokens * 2 * (2 * 256 + 2 * 1280));
    EXPECT_DOUBLE_EQ(fwd.kernels - fwd0.kernels, 3);
    const ComputeWork bwd = normed.backward_work(layer, l), bwd0 = plain.backward_work(layer, l);
    EXPECT_DOUBLE_EQ(bwd.memory_traffic - bwd0.memory_traffic, tokens * 2 * 3 * 1280);
    EXPECT_DOUBLE_EQ(bwd.kernels - bwd0.kernels, 4);
    EXPECT_DOUBLE_EQ(normed.layer_activation_bytes(true, l) - plain.layer_activation_bytes(true, l), tokens * 2 * 1280);
  }
}

// tiny_moe (8 experts, top 2) at EP 4 over two nodes of 2 ranks: each device sends 1,024 tokens,
// 2 MiB a copy (1,024 x 1,024 bf16). The all-to-all dispatcher spreads both copies evenly: a
// quarter of 4 MiB to the node's other rank, half across. The flex dispatcher sends a token to the
// other rank when it holds one of the token's experts (2 of 8: 1 - 6/8 x 5/7 = 13/28) and across
// once when the other node holds one (4 of 8: 1 - 4/8 x 3/7 = 11/14).
// Megatron-Core's all-to-all dispatcher sorts the copies it received by local expert and back:
// at ep 2 each rank holds 4 of tiny_moe's 8 experts and receives 1,024 tokens x top-2 copies,
// 2 sorts x (read + write) x 2,048 copies x 1,024 bf16 values; with etp 2 beside tp 2 every
// expert-TP rank sorts the 2,048 copies it gathered. The flex dispatcher permutes straight into
// expert order, and ep 8 leaves one expert a rank: no sort.
TEST(CostModel, AllToAllDispatcherSortsTheReceivedCopiesByLocalExpert) {
  const CostModel all_to_all(testing::tiny_moe(), small_run(), testing::round_profile());
  const Layout ep2{1, 1, 1, 2, 2, 1, Recompute::kNone, false};
  EXPECT_DOUBLE_EQ(all_to_all.local_expert_sort_bytes(ep2), 2 * 2 * 2 * 2048.0 * 1024);
  const Layout tp2{2, 1, 1, 2, 2, 1, Recompute::kNone, true};
  EXPECT_DOUBLE_EQ(all_to_all.local_expert_sort_bytes(tp2), 2 * 2 * 2 * 2048.0 * 1024);
  const Layout ep8{1, 1, 1, 8, 8, 1, Recompute::kNone, false};
  EXPECT_DOUBLE_EQ(all_to_all.local_expert_sort_bytes(ep8), 0);
  TrainingRun run = small_run();
  run.ep_dispatcher = EpDispatcher::kFlex;
  const CostModel flex(testing::tiny_moe(), run, testing::round_profile());
  EXPECT_DOUBLE_EQ(flex.local_expert_sort_bytes(ep2), 0);
  // The backward's inverse sorts move the same bytes as the forward's.
  const StageContents one_moe_layer{0, 1, false, false};
  EXPECT_DOUBLE_EQ(all_to_all.backward_work(one_moe_layer, ep2).memory_traffic -
                       flex.backward_work(one_moe_layer, ep2).memory_traffic,
                   2 * 2 * 2 * 2048.0 * 1024);
}

// An overlapped all-to-all's hidden time costs the compute beside it the SMs its kernels hold:
// NCCL's channels (here 27 of 108) for the all-to-all dispatcher, the run's flex_dispatcher_sms for
// the flex one (DeepEP's 20 by default, 54 here: half the device). One micro-batch leaves every
// pass unpaired; 8 micro-batches pair most of them, and doubling the held SMs from 27 to 54 doubles
// what the hiding costs over holding none.
TEST(CostModel, FlexDispatcherHoldsItsOwnSms) {
  HardwareProfile p = testing::round_profile_edited(
      {{"fp8: true", "fp8: true\n  gemm: {compute_units: 108, tile_rows: 128, tile_cols: 256}"}}, "p.yaml");
  p.node.collective_channels = 27;
  const Layout l{1, 1, 1, 2, 2, 1, Recompute::kNone, false};
  auto ep_seconds = [&](EpDispatcher dispatcher, int sms) {
    TrainingRun run = testing::tiny_run(8);
    run.overlap = parse_comm_overlap("ep_a2a", "test", "comm_overlap");
    run.ep_dispatcher = dispatcher;
    if (dispatcher == EpDispatcher::kFlex) run.flex_dispatcher_sms = sms;
    const CostModel cost(testing::tiny_moe(), run, p);
    EXPECT_DOUBLE_EQ(cost.a2a_sm_share(), sms / 108.0);
    return cost.evaluate(l).exposed_comm_s.ep;
  };
  ep_seconds(EpDispatcher::kAllToAll, 27);
  const Seconds free = ep_seconds(EpDispatcher::kFlex, 1) - (ep_seconds(EpDispatcher::kFlex, 2) - ep_seconds(EpDispatcher::kFlex, 1));
  EXPECT_NEAR(ep_seconds(EpDispatcher::kFlex, 54) - free, 2 * (ep_seconds(EpDispatcher::kFlex, 27) - free), 1e-12);
  EXPECT_GT(ep_seconds(EpDispatcher::kFlex, 27), free);
  // A count that leaves the experts no SM is refused, naming the field.
  TrainingRun all = testing::tiny_run(8);
  all.ep_dispatcher = EpDispatcher::kFlex;
  all.flex_dispatcher_sms = 108;
  EXPECT_THROW(CostModel(testing::tiny_moe(), all, p), InputError);
  TrainingRun stray = testing::tiny_run(8);
  stray.flex_dispatcher_sms = 32;
  EXPECT_THROW(validate(stray, "run"), InputError);
}

TEST(CostModel, FlexDispatcherSendsATokenOncePerRankAndNode) {
  const HardwareProfile pairs = testing::round_profile_edited({{"devices: 8", "devices: 2"}}, "pairs.yaml");
  const Layout l{1, 1, 1, 4, 4, 1, Recompute::kNone, false};
  const double copy = 2.0 * 1024 * 1024;
  const CostModel all_to_all(testing::tiny_moe(), small_run(), pairs);
  EXPECT_DOUBLE_EQ(all_to_all.ep_sends(l).to_local, 2 * copy / 4);
  EXPECT_DOUBLE_EQ(all_to_all.ep_sends(l).to_remote, 2 * copy / 2);
  TrainingRun run = small_run();
  run.ep_dispatcher = EpDispatcher::kFlex;
  const CostModel flex(testing::tiny_moe(), run, pairs);
  // Each rank fans out over NVLink the tokens of one rank of each of the 2 nodes: twice its own
  // node's 1 - (6/8 x 5/7) = 13/28 of a copy to its one peer.
  EXPECT_NEAR(flex.ep_sends(l).to_local, 2 * copy * 13 / 28, 1e-6);
  EXPECT_NEAR(flex.ep_sends(l).to_remote, copy * 11 / 14, 1e-6);
  // One micro-batch, 4 MoE layers, 4 all-to-alls each, each the network share at 10 GB/s plus
  // three peers' latency of 10 us.
  EXPECT_NEAR(flex.evaluate(l).exposed_comm_s.ep, 16 * (copy * 11 / 14 / 10e9 + 3 * 10e-6), 1e-12);
  EXPECT_NEAR(all_to_all.evaluate(l).exposed_comm_s.ep, 16 * (copy / 10e9 + 3 * 10e-6), 1e-12);
  // Where the flex kernels drive the NIC at 0.8 of what NCCL reaches (1.0 here), their network
  // share takes 1/0.8 as long: 11/14 of a copy at 8 GB/s. The all-to-all dispatcher keeps NCCL's.
  const HardwareProfile slow_nic = testing::round_profile_edited(
      {{"devices: 8", "devices: 2"}, {"inter_node_comm: 1.0", "inter_node_comm: 1.0, flex_dispatch_inter_node: 0.8"}},
      "slow.yaml");
  EXPECT_DOUBLE_EQ(slow_nic.efficiency.flex_inter_node(1), 0.8);
  EXPECT_DOUBLE_EQ(pairs.efficiency.flex_inter_node(1), 1.0);
  EXPECT_NEAR(CostModel(testing::tiny_moe(), run, slow_nic).evaluate(l).exposed_comm_s.ep,
              16 * (copy * 11 / 14 / 8e9 + 3 * 10e-6), 1e-12);
  EXPECT_NEAR(CostModel(testing::tiny_moe(), small_run(), slow_nic).evaluate(l).exposed_comm_s.ep,
              16 * (copy / 10e9 + 3 * 10e-6), 1e-12);
  // With 0.3 of the NIC a remote node, one remote node bounds them below the 0.8 (0.3: 11/14 of a
  // copy at 3 GB/s), three do not (min(0.9, 0.8)).
  const HardwareProfile per_peer = testing::round_profile_edited(
      {{"devices: 8", "devices: 2"},
       {"inter_node_comm: 1.0", "inter_node_comm: 1.0, flex_dispatch_inter_node: 0.8, flex_dispatch_per_remote_node: 0.3"}},
      "peer.yaml");
  EXPECT_DOUBLE_EQ(per_peer.efficiency.flex_inter_node(1), 0.3);
  EXPECT_DOUBLE_EQ(per_peer.efficiency.flex_inter_node(3), 0.8);
  EXPECT_NEAR(CostModel(testing::tiny_moe(), run, per_peer).evaluate(l).exposed_comm_s.ep,
              16 * (copy * 11 / 14 / 3e9 + 3 * 10e-6), 1e-12);
}

// DeepEP's normal kernels (deepseek-ai/DeepEP, docs/legacy.md, on H800): the BF16 combine of 4,096
// tokens of 7,168 a rank, 256 experts, top 8, reached 43 GB/s logical at EP 16 (8 x 2) and 57 at
// EP 32 (8 x 4), logical bytes counting a token once for each node it reaches, its own included
// (tests/legacy/test_internode.py; with at most 4 nodes every expert may be drawn): 2 x 58.7 MB in
// 2.73 ms, and (1 + 3 x 0.904) x 58.7 MB in 3.82 ms. Over two nodes each rank sends to one remote
// peer, and reaches 0.43 of its NIC (flex_dispatch_per_remote_node): its one copy across takes
// 2.73 ms plus 15 peers' 10 us, 2.88 ms (5% slow), where the NVLink fan-out of 2 x 7 x 0.408
// copies over H800's 160 GB/s takes 2.09; over four nodes the NIC's 0.87 carries 2.7 copies in
// 3.66 ms plus 31 peers, 3.97 ms (4% slow). The same test on H200 (deepseek-ai/DeepEP#493: 2 nodes
// of 8, CX-7), whose NVLink is full speed, combined at 44.4 GB/s logical, 2.65 ms, where this
// gives 2.88 (8% slow): the remote peer, not NVLink, bounds EP 16.
TEST(CostModel, FlexDispatcherFollowsDeepEpsMeasuredCombine) {
  ModelConfig deepseek_like = testing::tiny_moe();
  deepseek_like.hidden = 7168;
  deepseek_like.routed_experts = 256;
  deepseek_like.top_k = 8;
  TrainingRun run = testing::tiny_run(64);
  run.seq_len = 4096;
  run.ep_dispatcher = EpDispatcher::kFlex;
  const double logical_token_bytes = 4096.0 * 7168 * 2;
  for (const auto& [profile, ep, nodes_reached, logical_bandwidth] :
       {std::tuple{"h800-sxm", 16, 2.0, 43e9}, std::tuple{"h800-sxm", 32, 1.0 + 3 * 0.904, 57e9},
        std::tuple{"h200-sxm", 16, 2.0, 44.37e9}}) {
    const CostModel cost(deepseek_like, run,
                         load_hardware_profile(std::string(FLOPWISE_PROFILES_DIR) + "/" + profile + ".yaml"));
    const Layout l{1, 1, 1, ep, ep, 1, Recompute::kNone, true};
    const Seconds measured = nodes_reached * logical_token_bytes / logical_bandwidth;
    const GroupSpan eight_a_node{ep, 8};
    const Seconds predicted = all_to_all_time(eight_a_node, cost.ep_sends(l, eight_a_node), cost.network());
    EXPECT_NEAR(predicted / measured, 1.0, 0.1) << profile << " EP " << ep;
  }
}

TrainingRun small_run_in(Precision precision) {
  TrainingRun run = testing::tiny_run(4);
  run.precision = precision;
  return run;
}

// The round profile with a peak for one more dtype.
HardwareProfile round_profile_with_peak(const std::string& dtype, int tflops) {
  return testing::round_profile_edited(
      {{"{bf16: 100, fp8: 200}", "{bf16: 100, fp8: 200, " + dtype + ": " + std::to_string(tflops) + "}"}}, "p.yaml");
}

// The round profile states no peak for `precision`: a run in it is refused, naming the field.
void expect_refused_for_missing_peak(Precision precision) {
  try {
    CostModel(testing::tiny_moe(), small_run_in(precision), testing::round_profile());
    FAIL() << "a profile without an " << to_string(precision) << " peak must be refused";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("round.yaml: device.peak_tflops." + to_string(precision) + ": missing"),
              std::string::npos)
        << e.what();
  }
}

TEST(CostModel, Fp32TrainingBytesAndMissingPeak) {
  const PrecisionBytes fp32 = PrecisionBytes::of(Precision::kFp32, false);
  EXPECT_EQ(fp32.weight + fp32.grad + fp32.optimizer, 16);  // weight, grad, m, v at 4 bytes
  EXPECT_EQ(fp32.adam_traffic, 28);
  expect_refused_for_missing_peak(Precision::kFp32);
  const HardwareProfile p = round_profile_with_peak("fp32", 50);
  const Layout l{1, 1, 1, 1, 1, 1, Recompute::kNone, false};
  const double bf16_weights = CostModel(testing::tiny_moe(), small_run(), p).evaluate(l).memory_bytes.weights;
  EXPECT_DOUBLE_EQ(CostModel(testing::tiny_moe(), small_run_in(Precision::kFp32), p).evaluate(l).memory_bytes.weights,
                   2 * bf16_weights);
}

// Megatron-LM's fp16 recipe: fp16 grads (no fp32 accumulation by default); the step copies them to
// fp32 (2 + 4) and unscales them (4 + 4) before the bf16 path's 38 bytes. A weight gradient read
// and written in the GEMM's epilogue moves 4 bytes (bf16's fp32 main grad: 8); unfused, the GEMM
// writes it (2) and a separate add reads it (2) and reads and writes the main grad: 8 (bf16: 12).
TEST(CostModel, Fp16StepCopiesAndUnscalesItsGradients) {
  const PrecisionBytes fp16 = PrecisionBytes::of(Precision::kFp16, false);
  const PrecisionBytes bf16 = PrecisionBytes::of(Precision::kBf16, false);
  EXPECT_EQ(fp16.grad, 2);
  EXPECT_EQ(fp16.grad_accumulation(true), 4);
  EXPECT_EQ(fp16.grad_accumulation(false), 8);
  EXPECT_EQ(bf16.grad_accumulation(true), 8);
  EXPECT_EQ(bf16.grad_accumulation(false), 12);
  EXPECT_EQ(fp16.adam_traffic, 52);
  EXPECT_EQ(fp16.grad_zeroing, 2);
  expect_refused_for_missing_peak(Precision::kFp16);
  // Without optimizer sharding every held parameter is updated: (52 + 2) bytes each for fp16
  // against (38 + 4) for bf16.
  const HardwareProfile p = round_profile_with_peak("fp16", 100);
  const Layout l{1, 1, 1, 1, 1, 1, Recompute::kNone, false};
  const StageContents stage{1, 0, false, false};
  EXPECT_NEAR(CostModel(testing::tiny_moe(), small_run_in(Precision::kFp16), p).optimizer_seconds(stage, l) /
                  CostModel(testing::tiny_moe(), small_run(), p).optimizer_seconds(stage, l),
              54.0 / 42.0, 1e-12);
}

// bf16 Adam moments (the precision-aware optimizer): fp32 master 4 + two bf16 moments 2 + 2 = 8
// bytes of state a parameter, where fp32 moments take 12; FusedAdam reads master, grad, m and v and
// writes master, m and v: 4 + 4 + 2 + 2 + 4 + 2 + 2 = 20 bytes, where fp32 moments move 28. So the
// step is norm 4 + Adam 20 + copy 6 = 30 bytes, and unsharded (30 + 4) / (38 + 4) of fp32 moments'
// time; with bf16 grads too, 6 + 4 + 20 + 6 = 36. The layout must shard the optimizer.
TEST(CostModel, Bf16MomentsShrinkTheOptimizerStateAndItsStep) {
  const PrecisionBytes moments = PrecisionBytes::of(Precision::kBf16, false, true);
  EXPECT_EQ(moments.optimizer, 8);
  EXPECT_EQ(moments.adam_traffic, 30);
  EXPECT_EQ(moments.grad, 4);
  EXPECT_EQ(PrecisionBytes::of(Precision::kFp8, true, true).adam_traffic, 36);
  EXPECT_EQ(PrecisionBytes::of(Precision::kBf16, false).optimizer, 12);
  TrainingRun bf16_moments = small_run();
  bf16_moments.adam_moments_in_bf16 = true;
  const CostModel fp32_model(testing::tiny_moe(), small_run(), testing::round_profile());
  const CostModel bf16_model(testing::tiny_moe(), bf16_moments, testing::round_profile());
  const StageContents stage{1, 0, false, false};
  const Layout unsharded{1, 1, 1, 1, 4, 1, Recompute::kNone, false};
  EXPECT_NEAR(bf16_model.optimizer_seconds(stage, unsharded) / fp32_model.optimizer_seconds(stage, unsharded),
              34.0 / 42.0, 1e-12);
  const Layout sharded{1, 1, 1, 1, 4, 1, Recompute::kNone, true};
  EXPECT_DOUBLE_EQ(bf16_model.evaluate(sharded).memory_bytes.optimizer,
                   fp32_model.evaluate(sharded).memory_bytes.optimizer * 8 / 12);
  EXPECT_EQ(violated_constraint(testing::tiny_moe(), bf16_moments, testing::round_profile(), {1, 4096}, unsharded),
            Constraint::kShardedMoments);
  EXPECT_EQ(violated_constraint(testing::tiny_moe(), bf16_moments, testing::round_profile(), {1, 4096}, sharded),
            std::nullopt);
  for (Precision p : {Precision::kFp16, Precision::kFp32}) {
    TrainingRun other = bf16_moments;
    other.precision = p;
    EXPECT_NE(testing::error_of([&] { validate(other, "options"); })
                  .find("options: adam_moments_in_bf16: applies to bf16 and fp8 runs only"),
              std::string::npos)
        << to_string(p);
  }
}

// --grad-reduce-in-bf16: the main gradients are bf16 (2 bytes) in memory, in the DP
// reduce-scatter and in each weight-gradient GEMM's epilogue (read and written: 4, fp32's 8); the
// distributed optimizer copies its shard to fp32 first (2 + 4) before the norm (4), Adam (28) and
// the master-to-model copy (6): 44 bytes, and zeroes a bf16 buffer (2). Unsharded, every held
// parameter is updated: (44 + 2) / (38 + 4). fp16 and fp32 runs have no such switch.
TEST(CostModel, Bf16GradientsHalveTheirBytesAndAddTheOptimizersCopy) {
  const PrecisionBytes bf16 = PrecisionBytes::of(Precision::kBf16, true);
  EXPECT_EQ(bf16.grad, 2);
  EXPECT_EQ(bf16.grad_accumulation(true), 4);
  EXPECT_EQ(bf16.adam_traffic, 44);
  EXPECT_EQ(bf16.grad_zeroing, 2);
  EXPECT_EQ(PrecisionBytes::of(Precision::kFp8, true).grad, 2);
  TrainingRun bf16_grads = small_run();
  bf16_grads.grad_reduce_in_bf16 = true;
  const Layout l{1, 1, 1, 1, 4, 1, Recompute::kNone, false};
  const StageContents stage{1, 0, false, false};
  const CostModel fp32_model(testing::tiny_moe(), small_run(), testing::round_profile());
  const CostModel bf16_model(testing::tiny_moe(), bf16_grads, testing::round_profile());
  EXPECT_NEAR(bf16_model.optimizer_seconds(stage, l) / fp32_model.optimizer_seconds(stage, l), 46.0 / 42.0, 1e-12);
  EXPECT_DOUBLE_EQ(bf16_model.evaluate(l).memory_bytes.grads, fp32_model.evaluate(l).memory_bytes.grads / 2);
  // The ring's bytes halve; its latency does not.
  const CostModel::DataParallelTraffic fp32_dp = fp32_model.data_parallel_traffic(stage, l);
  const CostModel::DataParallelTraffic bf16_dp = bf16_model.data_parallel_traffic(stage, l);
  EXPECT_LT(bf16_dp.grads, fp32_dp.grads);
  EXPECT_GT(bf16_dp.grads, fp32_dp.grads / 2);
  EXPECT_DOUBLE_EQ(bf16_dp.weights, fp32_dp.weights);
  const StageContents moe_layer{0, 1, false, false};
  const Layout one{1, 1, 1, 1, 1, 1, Recompute::kNone, false};
  EXPECT_DOUBLE_EQ(fp32_model.backward_work(moe_layer, one).memory_traffic -
                       bf16_model.backward_work(moe_layer, one).memory_traffic,
                   4.0 * (kAttention + kRouter + kShared + 8 * kExpert));
  for (Precision p : {Precision::kFp16, Precision::kFp32}) {
    TrainingRun other = bf16_grads;
    other.precision = p;
    EXPECT_THROW(validate(other, "options"), InputError) << to_string(p);
  }
}

// Combined 1F1B (ep_a2a): EP 2 over DP 2, 8 micro-batches of one sequence per replica, no PP. The
// first forward and the last backward run alone (1 of 8 micro-batches' passes); in the others each
// MoE layer's four all-to-alls run in the four phases of Megatron-Core's paired layer, each beside
// its phase's compute (attention forward; half the MLP backward; the other half and the MLP
// forward; attention backward), exposed only where they outlast it, the compute losing the
// all-to-all's 10 of 100 SMs while they hide.
TEST(CostModel, CombinedOneFOneBHidesEachAllToAllBesideItsPhase) {
  const HardwareProfile p = testing::round_profile_edited(
      {{"fp8: true", "fp8: true\n  gemm: {compute_units: 100, tile_rows: 128, tile_cols: 128}"},
       {"intra_latency: \"1 us\"", "intra_latency: \"1 us\"\n  collective_channels: 10"}},
      "sms.yaml");
  TrainingRun waited = testing::tiny_run(16), overlapped = waited;
  overlapped.overlap.ep_a2a = true;
  const CostModel plain(testing::tiny_moe(), waited, p), combined(testing::tiny_moe(), overlapped, p);
  const Layout l{1, 1, 1, 2, 2, 1, Recompute::kNone, false};
  ASSERT_TRUE(combined.ep_overlap_applies(l));
  EXPECT_DOUBLE_EQ(combined.unpaired_pass_share(l), 1.0 / 8);
  EXPECT_DOUBLE_EQ(combined.a2a_sm_share(), 0.1);
  // The phases split one MoE layer's forward and backward.
  const StageContents one_layer{0, 1, false, false};
  const std::array<Seconds, 4> w = combined.paired_a2a_windows(l);
  const Seconds forward = combined.compute_seconds(combined.forward_work(one_layer, l));
  const Seconds backward = combined.compute_seconds(combined.backward_work(one_layer, l));
  EXPECT_NEAR(w[0] + w[1] + w[2] + w[3], forward + backward, 1e-15);
  EXPECT_NEAR(w[2] - w[1], forward - w[0], 1e-15);
  const double m = 8, layers = 4, all_to_alls = 4;
  auto expected = [&](const CostModel& plain_cost, const CostModel& combined_cost) {
    const Seconds a2a = plain_cost.evaluate(l).exposed_comm_s.ep / (m * layers * all_to_alls);
    Seconds paired = 0;
    for (Seconds beside : combined_cost.paired_a2a_windows(l)) paired += std::max(0.0, a2a - beside) + std::min(a2a, beside) * 0.1;
    return m * layers * (all_to_alls * a2a / 8 + 7.0 / 8 * paired);
  };
  EXPECT_NEAR(combined.evaluate(l).exposed_comm_s.ep, expected(plain, combined), 1e-15);
  EXPECT_LT(combined.evaluate(l).exposed_comm_s.ep, plain.evaluate(l).exposed_comm_s.ep);
  // On a node of 5 GB/s links an all-to-all outlasts the attention forward but not the layer:
  // beside the whole layer it would hide, beside its phase part of it is waited for.
  const HardwareProfile slow = testing::round_profile_edited(
      {{"fp8: true", "fp8: true\n  gemm: {compute_units: 100, tile_rows: 128, tile_cols: 128}"},
       {"intra_latency: \"1 us\"", "intra_latency: \"1 us\"\n  collective_channels: 10"},
       {"intra_bandwidth: \"100 GB/s\"", "intra_bandwidth: \"5 GB/s\""}},
      "slow.yaml");
  const CostModel slow_plain(testing::tiny_moe(), waited, slow), slow_combined(testing::tiny_moe(), overlapped, slow);
  const Seconds slow_a2a = slow_plain.evaluate(l).exposed_comm_s.ep / (m * layers * all_to_alls);
  ASSERT_GT(slow_a2a, w[0]);
  ASSERT_LT(all_to_alls * slow_a2a, forward + backward);
  EXPECT_NEAR(slow_combined.evaluate(l).exposed_comm_s.ep, expected(slow_plain, slow_combined), 1e-15);
  EXPECT_GT(slow_combined.evaluate(l).exposed_comm_s.ep,
            m * layers * (all_to_alls * slow_a2a / 8 + 7.0 / 8 * all_to_alls * slow_a2a * 0.1) + 1e-6);
  // Interleaved PP 4 x 2 with 8 micro-batches: rank 0 warms up 2 x 3 + 1 x 4 = 10 of 16 chunk passes.
  Layout interleaved{1, 4, 1, 2, 2, 1, Recompute::kNone, false};
  interleaved.vpp = 2;
  EXPECT_DOUBLE_EQ(combined.unpaired_pass_share(interleaved), 10.0 / 16);
  // Megatron-Core runs it only with EP, interleaving under PP, and without full recompute.
  EXPECT_FALSE(combined.ep_overlap_applies(Layout{1, 1, 1, 1, 2, 1, Recompute::kNone, false}));
  EXPECT_FALSE(combined.ep_overlap_applies(Layout{1, 2, 1, 2, 2, 1, Recompute::kNone, false}));
  EXPECT_FALSE(combined.ep_overlap_applies(Layout{1, 1, 1, 2, 2, 1, Recompute::kFull, false}));
  EXPECT_FALSE(plain.ep_overlap_applies(l));
}

// Context parallelism, cp 2 on tiny_moe (1,024-token sequences, 2 KV heads of 128, 4 layers):
// each rank holds 512 tokens, and its ring passes their keys and values, 2 x 2 x 128 x 2 bytes
// each, 524,288 bytes a step, to the other rank once a layer forward and twice (values and their
// gradients) backward. On a 1 GB/s link (1 us) a step takes 525.288 us (forward) and 1,049.576 us
// (backward); beside each runs 1/2 of the layer's attention: 512 queries x 2 x 8 heads x 128 x
// 1,025 keys' FLOPs at 50 TFLOPS, 21.4958 us forward, 2.5 x that backward. Exposed per layer:
// (525.288 - 10.7479) + (1049.576 - 26.8697) us, over 4 layers. Per-token work and activations
// halve; the gradients reduce over dp x cp = 2 ranks and the optimizer shards over them.
TEST(CostModel, ContextParallelRingAndShardsByHand) {
  const HardwareProfile slow = testing::round_profile_edited({{"intra_bandwidth: \"100 GB/s\"", "intra_bandwidth: \"1 GB/s\""}}, "slow.yaml");
  const CostModel cost(testing::tiny_moe(), small_run(), slow);
  const Layout whole{1, 1, 1, 1, 1, 1, Recompute::kNone, true};
  Layout halves = whole;
  halves.cp = 2;
  EXPECT_DOUBLE_EQ(cost.cp_ring_step_bytes(halves), 524288.0);
  const StageContents stage = stage_contents(testing::tiny_moe(), halves)[0];
  const double attention = 512.0 * 2 * 8 * 128 * 1025 / 50e12;
  const double step = 524288.0 / 1e9 + 1e-6;
  const double per_layer = (step - attention / 2) + (2 * step - 1e-6 - 2.5 * attention / 2);
  EXPECT_NEAR(cost.cp_exposed_seconds(stage, halves), 4 * per_layer, 1e-12);
  const std::vector<CostModel::CpRingPhase> backward = cost.cp_ring_phases(stage, false, halves);
  ASSERT_EQ(backward.size(), 1u);
  EXPECT_EQ(backward[0].steps, 1);
  EXPECT_DOUBLE_EQ(backward[0].bytes, 2 * 524288.0);
  Layout recomputed = halves;
  recomputed.recompute = Recompute::kSelective;  // repeats the attention, and its forward ring
  EXPECT_EQ(cost.cp_ring_phases(stage, false, recomputed).size(), 2u);
  recomputed.recompute_modules = parse_recompute_modules("moe_act", "test", "");  // leaves the attention
  EXPECT_EQ(cost.cp_ring_phases(stage, false, recomputed).size(), 1u);
  const StepCost one = cost.evaluate(whole), two = cost.evaluate(halves);
  EXPECT_NEAR(two.exposed_comm_s.cp, 4 * 4 * per_layer, 1e-12);  // 4 micro-batches a step
  EXPECT_DOUBLE_EQ(two.memory_bytes.activations, one.memory_bytes.activations / 2);
  EXPECT_DOUBLE_EQ(two.memory_bytes.optimizer, one.memory_bytes.optimizer / 2);
  EXPECT_EQ(one.exposed_comm_s.dp, 0);
  EXPECT_GT(two.exposed_comm_s.dp, 0);
  EXPECT_EQ(one.exposed_comm_s.cp, 0);
}

// Without the fusion every weight of a layer's GEMMs moves 4 bytes more per micro-batch (bf16): at
// tp 1 and ep 1 attention 2,621,440, router 8,192, shared expert 1,572,864 and 8 experts of
// 1,572,864 each, 16,785,408 weights.
TEST(CostModel, UnfusedGradientAccumulationAddsAKernelsBytes) {
  const Layout l{1, 1, 1, 1, 1, 1, Recompute::kNone, false};
  const StageContents stage{0, 1, false, false};
  TrainingRun unfused = small_run();
  unfused.grad_accumulation_fusion = false;
  const double fused_bytes = CostModel(testing::tiny_moe(), small_run(), testing::round_profile()).backward_work(stage, l).memory_traffic;
  const double unfused_bytes = CostModel(testing::tiny_moe(), unfused, testing::round_profile()).backward_work(stage, l).memory_traffic;
  EXPECT_DOUBLE_EQ(unfused_bytes - fused_bytes, 4.0 * (kAttention + kRouter + kShared + 8 * kExpert));
}

// Transformer Engine's TP overlap holds tp_comm_sms SMs beside the row-parallel forward GEMMs
// (attention output, MLP down): the forward grows by exactly those GEMMs' time on the SMs left,
// less their time on all of them; without TP, without the overlap or with 0 SMs, nothing changes.
TEST(CostModel, TpOverlapHoldsSmsBesideTheRowParallelForwardGemms) {
  const HardwareProfile h100 = load_hardware_profile(std::string(FLOPWISE_PROFILES_DIR) + "/h100-sxm.yaml");
  const StageContents moe_layer{0, 1, false, false};
  const Layout tp2{2, 1, 1, 1, 1, 16, Recompute::kNone, false};  // GEMMs of 16K rows: compute-bound
  TrainingRun free_overlap = small_run(), held = small_run();
  free_overlap.overlap.tp_comm = held.overlap.tp_comm = true;
  free_overlap.tp_comm_sms = 0;
  held.tp_comm_sms = 16;
  const CostModel plain(testing::tiny_moe(), free_overlap, h100), sharing(testing::tiny_moe(), held, h100);
  const double tokens = 16.0 * small_run().seq_len;
  double expected = 0;
  for (const WeightMatrix& m : layer_matrices(testing::tiny_moe(), true).shared) {
    if (m.split != TpSplit::kInputs) continue;
    expected += plain.gemm_seconds(tokens, m.inputs / 2, m.outputs, 1, 16) - plain.gemm_seconds(tokens, m.inputs / 2, m.outputs);
  }
  EXPECT_GT(expected, 0);
  EXPECT_NEAR(sharing.forward_seconds(moe_layer, tp2) - plain.forward_seconds(moe_layer, tp2), expected, 1e-12);
  EXPECT_GT(sharing.backward_seconds(moe_layer, tp2), plain.backward_seconds(moe_layer, tp2));
  const Layout tp1{1, 1, 1, 1, 1, 16, Recompute::kNone, false};
  EXPECT_DOUBLE_EQ(sharing.forward_seconds(moe_layer, tp1), plain.forward_seconds(moe_layer, tp1));
  TrainingRun blocking = held, blocking_free = free_overlap;
  blocking.overlap.tp_comm = blocking_free.overlap.tp_comm = false;
  EXPECT_DOUBLE_EQ(CostModel(testing::tiny_moe(), blocking, h100).forward_seconds(moe_layer, tp2),
                   CostModel(testing::tiny_moe(), blocking_free, h100).forward_seconds(moe_layer, tp2));
}

// Transformer Engine's TP overlap hides each collective behind the GEMM it pairs it with. Tiny
// model, TP 2 with SP, one MoE layer (blocks: attention, shared expert), 1,024 tokens, the round
// profile's node on 400 GB/s links: a collective over the 2 MiB buffer takes each = 0.5 x 2 MiB /
// 400 GB/s + 1 us, and the reduce-scatter of a quarter of it 0.5 x 512 KiB / 400 GB/s + 1 us.
// Forward: half the QKV and up/gate GEMMs (1,024 rows, 768 and 512 outputs a rank) outlasts the
// ring exchange; proj's and down's reduce-scatters run in 4 chunks, 3 beside the next GEMM chunk,
// the last one waited for. Backward, every GEMM outlasts its collective. On 5 GB/s links the
// collectives outlast their GEMMs and wait for the rest.
TEST(CostModel, TeTpOverlapHidesEachCollectiveBehindItsGemm) {
  TrainingRun run = testing::tiny_run(16);
  run.overlap.tp_comm = true;
  run.tp_comm_sms = 0;
  const Layout tp2{2, 1, 1, 1, 1, 1, Recompute::kNone, true};
  const StageContents layer{0, 1, false, false};
  for (const char* link : {"400 GB/s", "5 GB/s"}) {
    const HardwareProfile p = parse_hardware_profile(
        testing::round_profile_with("intra_bandwidth: \"100 GB/s\"", std::string("intra_bandwidth: \"") + link + "\""), "p.yaml");
    const CostModel cost(testing::tiny_moe(), run, p);
    ASSERT_TRUE(cost.te_tp_overlap_applies(tp2));
    const double bandwidth = p.node.intra_bandwidth, buffer = 1024.0 * 1024 * 2;
    const Seconds each = 0.5 * buffer / bandwidth + 1e-6, quarter = 0.5 * buffer / 4 / bandwidth + 1e-6;
    auto ring = [&](Seconds gemm) { return std::max(0.0, each - gemm / 2); };
    auto pipeline = [&](Seconds gemm) { return 3 * std::max(0.0, quarter - gemm / 4) + quarter; };
    const Seconds qkv = cost.gemm_seconds(1024, 1024, 768), proj = cost.gemm_seconds(1024, 512, 1024);
    const Seconds up = cost.gemm_seconds(1024, 1024, 512), down = cost.gemm_seconds(1024, 256, 1024);
    const Seconds forward = ring(qkv) + pipeline(proj) + ring(up) + pipeline(down);
    EXPECT_NEAR(cost.te_tp_overlap_exposed(layer, true, tp2, each), forward, 1e-15) << link;
    const Seconds backward = cost.te_tp_overlap_exposed(layer, false, tp2, each);
    if (std::string(link) == "400 GB/s") {
      EXPECT_GT(up / 2, each);
      EXPECT_GT(down / 4, quarter);
      EXPECT_NEAR(forward, 2 * quarter, 1e-15);  // only the last quarters wait
      EXPECT_DOUBLE_EQ(backward, 0.0);  // every backward GEMM outlasts its collective
    } else {
      EXPECT_GT(each, qkv / 2);
      EXPECT_GT(backward, 0.0);
      EXPECT_LT(backward, 3 * 2 * each);  // less than waiting for the backward's six collectives
    }
    // The step waits for exactly these, micro-batch by micro-batch (4 layers, 16 micro-batches).
    const Seconds per_layer = cost.te_tp_overlap_exposed(layer, true, tp2, each) + backward;
    EXPECT_NEAR(cost.evaluate(tp2).exposed_comm_s.tp, 16 * 4 * per_layer, 1e-12) << link;
  }
}

// Megatron-LM's asynchronous input-gradient all-reduce (tp_grad) holds its group's NCCL channels,
// one SM each, for as long as it is hidden beside the backward GEMMs: with 27 of the A100's 108
// SMs held, exactly a quarter of the hidden collective time comes back as GEMM time lost. The
// hidden time is what blocking on every collective adds over the overlapped run.
TEST(CostModel, NcclChannelsBesideHiddenTpCollectivesCostTheirSmsShare) {
  HardwareProfile a100 = load_hardware_profile(std::string(FLOPWISE_PROFILES_DIR) + "/a100-80gb.yaml");
  const Layout tp2{2, 1, 1, 1, 1, 4, Recompute::kNone, false};
  auto tp_seconds = [&](int channels, const std::string& overlap) {
    a100.node.collective_channels = channels;
    TrainingRun run = small_run();
    run.overlap = parse_comm_overlap(overlap, "test", "comm_overlap");
    return CostModel(testing::tiny_moe(), run, a100).evaluate(tp2).exposed_comm_s.tp;
  };
  const double hidden = tp_seconds(0, "none") - tp_seconds(0, "tp_grad");
  EXPECT_GT(hidden, 0);
  EXPECT_NEAR(tp_seconds(27, "tp_grad") - tp_seconds(0, "tp_grad"), hidden / 4, 1e-12);
  // Transformer Engine's overlap holds its own SMs inside the GEMMs instead.
  EXPECT_DOUBLE_EQ(tp_seconds(27, "tp_comm"), tp_seconds(0, "tp_comm"));
  // A TP group over two one-device nodes reaches two NICs: NCCL runs 4 channels, 4 of 108 SMs
  // (collective_channels), not the node's 27.
  a100.node.devices = 1;
  const double across = tp_seconds(0, "none") - tp_seconds(0, "tp_grad");
  EXPECT_GT(across, 0);
  EXPECT_NEAR(tp_seconds(27, "tp_grad") - tp_seconds(0, "tp_grad"), across * 4 / 108, 1e-12);
}

// A run cannot hold every SM of the device for its TP overlap, nor a negative count.
TEST(CostModel, TpOverlapSmsBeyondTheDeviceAreRefused) {
  const HardwareProfile h100 = load_hardware_profile(std::string(FLOPWISE_PROFILES_DIR) + "/h100-sxm.yaml");
  TrainingRun all = small_run();
  all.tp_comm_sms = 132;
  EXPECT_THROW(CostModel(testing::tiny_moe(), all, h100), InputError);
  all.tp_comm_sms = 131;
  EXPECT_NO_THROW(CostModel(testing::tiny_moe(), all, h100));
  all.tp_comm_sms = -1;
  EXPECT_THROW(validate(all, "--tp-comm-sms"), InputError);
}

// The activations' backward (swiglu_back) streams 5/3 of their forward's bytes, at the profile's
// memory_compiled_backward where it has one: 1,024 tokens x 15,360 bytes (5/3 of 9,216) of one
// tiny_moe layer, at 0.25 of the round profile's 1 TB/s instead of all of it.
TEST(CostModel, ActivationBackwardRunsAtItsOwnMeasuredRate) {
  const Layout l{1, 1, 1, 1, 1, 1, Recompute::kNone, false};
  const StageContents one_moe_layer{0, 1, false, false};
  const CostModel plain(testing::tiny_moe(), small_run(), testing::round_profile());
  const CostModel slow(testing::tiny_moe(), small_run(),
                       testing::round_profile_edited({{"matmul: 0.5,", "matmul: 0.5, memory_compiled_backward: 0.25,"}}, "p.yaml"));
  const ComputeWork backward = plain.backward_work(one_moe_layer, l);
  EXPECT_DOUBLE_EQ(backward.compiled_backward_traffic, 1024 * 15360.0);
  // Without dropout no compiled kernel runs backward but the activation's.
  EXPECT_DOUBLE_EQ(backward.compiled_traffic, 0.0);
  EXPECT_DOUBLE_EQ(kResidualAddBytes, 2 * 3 * 1024 * 2.0);
  EXPECT_EQ(plain.forward_work(one_moe_layer, l).compiled_backward_traffic, 0.0);
  EXPECT_NEAR(slow.compute_seconds(backward) - plain.compute_seconds(backward), 1024 * 15360.0 * (4 - 1) / 1e12, 1e-15);
}

// The two bias-dropout-adds of a tiny_moe layer, a token at tp 1. Forward, each reads the branch and
// the residual and writes their sum: 2 x 3 x 1,024 bf16 (compiled), and under hidden dropout its
// 1-byte mask, 2 x 7 x 1,024 bytes. Backward, each residual's gradient is summed with the norm's
// by a plain torch add (2 x 3 x 1,024 bf16, at the library kernels' rate); only dropout adds a
// compiled gradient kernel, reading the gradient and the mask and writing the branch's gradient:
// 2 x 5 x 1,024 bytes. Attention dropout costs a fused kernel the 3.4% cuDNN's measured (0.614 over
// 0.594 ms, TransformerEngine#3312), and the unfused path its dropout's 2a + 1 bytes a score.
TEST(CostModel, BiasDropoutAddBackwardSumsTheResidualGradient) {
  const Layout l{1, 1, 1, 1, 1, 1, Recompute::kNone, false};
  const StageContents one_moe_layer{0, 1, false, false};
  const CostModel plain(testing::tiny_moe(), small_run(), testing::round_profile());
  TrainingRun run = small_run();
  run.hidden_dropout = 0.1;
  const CostModel dropped(testing::tiny_moe(), run, testing::round_profile());
  EXPECT_DOUBLE_EQ(plain.residual_add_bytes_per_token(l), 2 * 3 * 1024 * 2.0);
  EXPECT_DOUBLE_EQ(dropped.residual_add_bytes_per_token(l), 2 * 7 * 1024.0);
  EXPECT_DOUBLE_EQ(plain.residual_gradient_sum_bytes_per_token(l), 2 * 3 * 1024 * 2.0);
  EXPECT_DOUBLE_EQ(plain.dropout_gradient_bytes_per_token(l), 0.0);
  EXPECT_DOUBLE_EQ(dropped.dropout_gradient_bytes_per_token(l), 2 * 5 * 1024.0);
  const ComputeWork b0 = plain.backward_work(one_moe_layer, l), b1 = dropped.backward_work(one_moe_layer, l);
  EXPECT_DOUBLE_EQ(b1.compiled_backward_traffic - b0.compiled_backward_traffic, 1024 * 2 * 5 * 1024.0);
  EXPECT_DOUBLE_EQ(b1.memory_traffic, b0.memory_traffic);
  EXPECT_DOUBLE_EQ(dropped.forward_work(one_moe_layer, l).compiled_traffic - plain.forward_work(one_moe_layer, l).compiled_traffic,
                   1024 * 2 * 1024.0);
  // Sequence parallelism splits them over TP.
  const Layout sp{2, 1, 1, 1, 1, 1, Recompute::kNone, false};
  EXPECT_DOUBLE_EQ(dropped.dropout_gradient_bytes_per_token(sp), 5 * 1024.0);
  // Attention dropout.
  TrainingRun attention = small_run();
  attention.attention_dropout = 0.1;
  const CostModel fused_dropout(testing::tiny_moe(), attention, testing::round_profile());
  EXPECT_NEAR(fused_dropout.attention_core_work(l).attention, plain.attention_core_work(l).attention * 0.614 / 0.594, 1e-3);
  attention.attention = AttentionKernel::kUnfused;
  TrainingRun unfused = small_run();
  unfused.attention = AttentionKernel::kUnfused;
  const double scores = 1024.0 * 8 * 1024;
  EXPECT_DOUBLE_EQ(CostModel(testing::tiny_moe(), unfused, testing::round_profile()).attention_core_work(l).memory_traffic,
                   scores * 4 * 2);
  EXPECT_DOUBLE_EQ(CostModel(testing::tiny_moe(), attention, testing::round_profile()).attention_core_work(l).memory_traffic,
                   scores * (6 * 2 + 1));
}

TEST(CostModel, PerStepOverheadAndMemoryEfficiencyAddUp) {
  const Layout l{1, 1, 1, 1, 1, 1, Recompute::kNone, false};
  const StepCost plain = CostModel(testing::tiny_moe(), small_run(), testing::round_profile()).evaluate(l);
  const HardwareProfile p = testing::round_profile_edited(
      {{"matmul: 0.5,", "matmul: 0.5, memory: 0.5,"},
       {"runtime_reserved", "overheads: {per_layer_pass: \"0 s\", per_step: \"3 ms\"}\nruntime_reserved"}},
      "p.yaml");
  const StepCost slowed = CostModel(testing::tiny_moe(), small_run(), p).evaluate(l);
  EXPECT_DOUBLE_EQ(slowed.optimizer_s, 2 * plain.optimizer_s);  // half the memory bandwidth
  // Memory-bound kernels take twice as long too: 4 layers, forward and backward, 4 micro-batches.
  const double traffic_s = 4 * 1024 * (4 * kLayerForwardBackwardTrafficBytes + 3 * 18 * 1000) / 1e12;
  EXPECT_GT(slowed.compute_s - plain.compute_s, traffic_s);
  EXPECT_NEAR(slowed.step_time_s - plain.step_time_s, 3e-3 + plain.optimizer_s + slowed.compute_s - plain.compute_s, 1e-12);
  EXPECT_DOUBLE_EQ(slowed.overhead_s, 3e-3);
}

TEST(Collectives, FittedFiguresReplaceTheDefaultsOfTheirAlgorithmOnly) {
  const HardwareProfile p = testing::round_profile_edited(
      {{"runtime_reserved", "collectives: {ring: {intra_node: {efficiency: 0.25, latency: \"5 us\"}}}\nruntime_reserved"}},
      "p.yaml");
  const Network net = Network::from(p);
  // 2 x 7/8 x 1 GB / (100 GB/s x 0.25) + 14 x 5 us.
  EXPECT_NEAR(all_reduce_time(GroupSpan{8, 8}, 1e9, net), 0.07 + 14 * 5e-6, 1e-12);
  // All-to-all keeps the profile's defaults: 7/8 x 1 GB / 100 GB/s + 7 x 1 us.
  EXPECT_NEAR(all_to_all_time(GroupSpan{8, 8}, 1e9, net), 0.00875 + 7e-6, 1e-12);
  EXPECT_DOUBLE_EQ(alpha_beta(Collective::kAllReduce, 4).bytes_factor, 1.5);
  EXPECT_DOUBLE_EQ(alpha_beta(Collective::kAllReduce, 4).latency_steps, 6);
  EXPECT_DOUBLE_EQ(alpha_beta(Collective::kAllToAll, 4).bytes_factor, 0.75);
}

// Transformer Engine runs the grouped expert GEMM as one cuBLAS GEMM per local expert over 4
// streams: rounds of up to 4 GEMMs that share the device's waves, one launch each. On 48 units of
// 128 x 128 tiles, 256 rows x 1,024 outputs are 16 tiles a GEMM: a round of 4 is 64 tiles in 2
// waves (96 slots, busy 2/3), so each of its GEMMs issues 1.5x its FLOPs; a round of 3 fills
// exactly one wave. 8 local experts are 2 full rounds, 7 are a full round and a round of 3.
TEST(CostModel, GroupedExpertGemmRunsInRoundsOfFourStreams) {
  const HardwareProfile p = testing::round_profile_edited(
      {{"  fp8: true\n", "  fp8: true\n  gemm: {compute_units: 48, tile_rows: 128, tile_cols: 128, launch_latency: \"4 us\"}\n"}},
      "tiles.yaml");
  const WeightMatrix gate_up{1024, 1024, TpSplit::kOutputs};
  const Flops one_gemm = 2.0 * 256 * 1024 * 1024;
  const Layout ep1{1, 1, 1, 1, 1, 1, Recompute::kNone, false};
  const CostModel eight(testing::tiny_moe(), small_run(), p);
  const ComputeWork two_rounds = eight.expert_matrix_work(gate_up, 256, CostModel::Pass::kForward, ep1);
  EXPECT_DOUBLE_EQ(two_rounds.matmul, 2 * 4 * one_gemm * 1.5);
  EXPECT_DOUBLE_EQ(two_rounds.gemm_launches, 2);
  ModelConfig seven_experts = testing::tiny_moe();
  seven_experts.routed_experts = 7;
  const CostModel seven(seven_experts, small_run(), p);
  const ComputeWork rounds_of_4_and_3 = seven.expert_matrix_work(gate_up, 256, CostModel::Pass::kForward, ep1);
  EXPECT_DOUBLE_EQ(rounds_of_4_and_3.matmul, 4 * one_gemm * 1.5 + 3 * one_gemm);
  EXPECT_DOUBLE_EQ(rounds_of_4_and_3.gemm_launches, 2);
  // At EP 2 each rank holds 4 experts: one round, one launch.
  const Layout ep2{1, 1, 1, 2, 2, 1, Recompute::kNone, false};
  EXPECT_DOUBLE_EQ(eight.expert_matrix_work(gate_up, 256, CostModel::Pass::kForward, ep2).gemm_launches, 1);
}

// Library kernels stream at the profile's `memory` efficiency, compiled ones at `memory_compiled`
// (the round profile's 1 TB/s): 1 GB at 0.8 and 1 GB at 0.4 take 1.25 + 2.5 ms. Without
// `memory_compiled` both run at `memory`.
TEST(CostModel, CompiledKernelsStreamAtTheirOwnEfficiency) {
  const HardwareProfile p = testing::round_profile_edited({{"matmul: 0.5,", "matmul: 0.5, memory: 0.8, memory_compiled: 0.4,"}}, "p.yaml");
  ComputeWork w;
  w.memory_traffic = 1e9;
  w.compiled_traffic = 1e9;
  EXPECT_NEAR(CostModel(testing::tiny_moe(), small_run(), p).compute_seconds(w), 1.25e-3 + 2.5e-3, 1e-15);
  EXPECT_NEAR(memory_bound_seconds(w, p), 1.25e-3 + 2.5e-3, 1e-15);
  const HardwareProfile one = testing::round_profile_edited({{"matmul: 0.5,", "matmul: 0.5, memory: 0.8,"}}, "p.yaml");
  EXPECT_NEAR(memory_bound_seconds(w, one), 2.5e-3, 1e-15);
}

// The shipped profiles against the kernels Liger-Kernel's benchmark data measured
// (benchmark/data/all_benchmark_data.csv). H100 80GB HBM3: Megatron-Core's compiled SwiGLU
// forward over 8,192 tokens (2 x ffn bf16 in, ffn out) in 0.1137 ms at ffn 4,096 and 0.8585 ms at
// 32,768; its plain-torch vocab-parallel cross-entropy, forward and backward over 8,192 x 131,072
// bf16 logits, 21.25 ms, which the cost model counts as 54 bytes a logit at library speed.
// A100-SXM4-80GB: torch's LayerNorm over 4,096 fp32 rows of 8,192, read and written once, 0.2576 ms.
TEST(HardwareProfile, ShippedMemoryEfficienciesFollowLigersMeasurements) {
  auto seconds = [](const char* profile, Bytes library, Bytes compiled) {
    ComputeWork w;
    w.memory_traffic = library;
    w.compiled_traffic = compiled;
    return memory_bound_seconds(w, load_hardware_profile(std::string(FLOPWISE_PROFILES_DIR) + "/" + profile + ".yaml"));
  };
  EXPECT_NEAR(seconds("h100-sxm", 0, 6.0 * 4096 * 8192) / 0.1137e-3, 1.0, 0.05);
  EXPECT_NEAR(seconds("h100-sxm", 0, 6.0 * 32768 * 8192) / 0.8585e-3, 1.0, 0.05);
  EXPECT_NEAR(seconds("h100-sxm", 54.0 * 8192 * 131072, 0) / 21.25e-3, 1.0, 0.10);
  EXPECT_NEAR(seconds("a100-80gb", 0, 8.0 * 4096 * 8192) / 0.2576e-3, 1.0, 0.05);
}
}  // namespace flopwise
