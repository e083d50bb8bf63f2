#include <cstdio>
#include <string>
#include <vector>

#include "flopwise/error.hpp"
#include "flopwise/plan_builder.hpp"

namespace flopwise {
namespace {

void add(std::vector<std::string>& args, const std::string& flag, long long value) {
  args.push_back(flag);
  args.push_back(std::to_string(value));
}

void add_model(std::vector<std::string>& a, const ModelConfig& m, int seq_len) {
  add(a, "--num-layers", m.layers);
  add(a, "--hidden-size", m.hidden);
  add(a, "--num-attention-heads", m.heads);
  add(a, "--seq-length", seq_len);
  add(a, "--max-position-embeddings", seq_len);
  if (m.is_mla()) {
    a.push_back("--multi-latent-attention");
    if (m.q_lora_rank > 0) add(a, "--q-lora-rank", m.q_lora_rank);
    add(a, "--kv-lora-rank", m.kv_lora_rank);
    add(a, "--qk-head-dim", m.head_dim);
    add(a, "--qk-pos-emb-head-dim", m.rope_head_dim);
    add(a, "--v-head-dim", m.v_head_dim);
  } else {
    add(a, "--kv-channels", m.head_dim);
    if (m.kv_heads != m.heads) {
      a.push_back("--group-query-attention");
      add(a, "--num-query-groups", m.kv_heads);
    }
  }
  add(a, "--ffn-hidden-size", m.dense_layers() > 0 ? m.dense_ffn : m.expert_ffn);
  a.insert(a.end(), {"--swiglu", "--normalization", "RMSNorm", "--position-embedding-type", "rope",
                     "--disable-bias-linear"});
  if (m.qkv_bias) a.push_back("--add-qkv-bias");
  if (!m.tied_embeddings) a.push_back("--untie-embeddings-and-output-weights");
  add(a, "--vocab-size", m.vocab);
  if (!m.is_moe()) return;
  add(a, "--num-experts", m.routed_experts);
  add(a, "--moe-router-topk", m.top_k);
  add(a, "--moe-ffn-hidden-size", m.expert_ffn);
  if (m.shared_experts > 0) add(a, "--moe-shared-expert-intermediate-size", static_cast<long long>(m.shared_experts) * m.shared_expert_ffn);
  if (m.dense_layers() > 0) {
    // Megatron's per-layer pattern: 0 = dense, 1 = MoE.
    std::string pattern;
    for (int layer = 0; layer < m.layers; ++layer) pattern += (layer ? "," : "[") + std::string(m.is_dense_layer(layer) ? "0" : "1");
    a.insert(a.end(), {"--moe-layer-freq", pattern + "]"});
  }
  a.push_back("--moe-grouped-gemm");
}

// The run's communication overlap as Megatron-LM's switches (each where it applies).
void add_overlap(std::vector<std::string>& a, const ModelConfig& model, const TrainingRun& run, const Layout& l) {
  const CommOverlap& o = run.overlap;
  // Transformer Engine's SM counts travel in a --tp-comm-overlap-cfg file, which flopwise does not
  // write: arguments that ran its default would silently cost something else than the plan.
  if (o.tp_comm && l.tp > 1 && run.tp_comm_sms != TrainingRun{}.tp_comm_sms) {
    throw InputError("plan: tp_comm_sms " + std::to_string(run.tp_comm_sms) +
                     ": Megatron-LM takes Transformer Engine's SM counts from a --tp-comm-overlap-cfg file, which "
                     "flopwise does not write; plan with --tp-comm-sms " + std::to_string(TrainingRun{}.tp_comm_sms) +
                     " to export arguments");
  }
  if (o.grad_reduce) a.push_back("--overlap-grad-reduce");
  if (o.param_gather && l.optimizer_sharding) a.push_back("--overlap-param-gather");
  if (!o.tp_grad && !o.tp_comm && l.tp > 1) a.push_back("--no-async-tensor-model-parallel-allreduce");
  if (o.tp_comm && l.tp > 1) a.push_back("--tp-comm-overlap");
  if (!o.p2p && l.vpp > 1) a.push_back("--no-overlap-p2p-communication");
  if (ep_overlap_applies(model, run, l)) a.push_back("--overlap-moe-expert-parallel-comm");
}

// Megatron-Core's --pipeline-model-parallel-layout: the model chunks in order, separated by "|",
// "E" the embedding, one "t" per transformer layer, "m" per MTP depth and "L" the loss.
std::string pipeline_layout(const Plan& p) {
  const Layout& l = p.layout;
  std::string text;
  for (int chunk = 0; chunk < l.pp * l.vpp; ++chunk) {
    if (chunk > 0) text += "|";
    if (chunk == 0) text += "E";
    text += std::string(chunk_layers(p.model.layers, l, chunk).count, 't');
    if (chunk == l.pp * l.vpp - 1) text += std::string(p.model.mtp_layers, 'm') + "L";
  }
  return text;
}

void add_stage_split(std::vector<std::string>& a, const Plan& p) {
  const Layout& l = p.layout;
  if (l.first_stage_layers > 0) add(a, "--decoder-first-pipeline-num-layers", l.first_stage_layers);
  if (l.last_stage_layers > 0) add(a, "--decoder-last-pipeline-num-layers", l.last_stage_layers);
  if (l.embedding_in_split) a.push_back("--account-for-embedding-in-pipeline-split");
  if (l.loss_in_split) a.push_back("--account-for-loss-in-pipeline-split");
  // Megatron-LM takes an uneven split's interleaving as virtual stages per rank (its arguments
  // check refuses layers per virtual stage there); an even one as layers per virtual stage.
  if (l.vpp > 1 && (l.first_stage_layers || l.last_stage_layers)) {
    add(a, "--num-virtual-stages-per-pipeline-rank", l.vpp);
  } else if (l.vpp > 1) {
    add(a, "--num-layers-per-virtual-pipeline-stage", chunk_slots(p.model.layers, l));
  }
}

// The router the cost model prices, its losses at the Ling report's coefficients (section 3.2:
// 0.015 for load balancing, 1e-4 for the z-loss); Megatron-Core computes no loss without one.
void add_router(std::vector<std::string>& a, const TrainingRun& run) {
  if (run.router_fusion) a.push_back("--moe-router-fusion");
  const RouterBalancing& b = run.router_balancing;
  a.push_back("--moe-router-load-balancing-type");
  if (!b.any_loss()) a.push_back("none");
  if (b.aux_loss) a.push_back("aux_loss");
  if (b.seq_aux_loss) a.push_back("seq_aux_loss");
  if (b.global_aux_loss) a.push_back("global_aux_loss");
  if (b.any_loss()) {
    a.push_back("--moe-aux-loss-coeff");  // one a type
    for (bool loss : {b.aux_loss, b.seq_aux_loss, b.global_aux_loss}) {
      if (loss) a.push_back("0.015");
    }
  }
  if (b.z_loss) a.insert(a.end(), {"--moe-z-loss-coeff", "1e-4"});
  if (b.expert_bias) a.push_back("--moe-router-enable-expert-bias");
}

void add_layout(std::vector<std::string>& a, const Plan& p) {
  const Layout& l = p.layout;
  add(a, "--tensor-model-parallel-size", l.tp);
  // Megatron-Core's default CP exchange (--cp-comm-type p2p), the ring flopwise prices.
  if (l.cp > 1) add(a, "--context-parallel-size", l.cp);
  add(a, "--pipeline-model-parallel-size", l.pp);
  // End stages whose layers do not divide over their chunks have no flags of their own: the
  // layout string states every chunk, and the virtual stages with it.
  if (l.vpp > 1 && (l.first_stage_layers % l.vpp != 0 || l.last_stage_layers % l.vpp != 0)) {
    a.insert(a.end(), {"--pipeline-model-parallel-layout", pipeline_layout(p)});
  } else {
    add_stage_split(a, p);
  }
  if (p.model.is_moe()) {
    add(a, "--expert-model-parallel-size", l.ep);
    add(a, "--expert-tensor-parallel-size", l.expert_tp());
    // The dispatcher the cost model prices: all-to-all (or flex over DeepEP) across EP ranks,
    // all-gather without EP.
    if (l.ep > 1 && p.run.ep_dispatcher == EpDispatcher::kFlex) {
      a.insert(a.end(), {"--moe-token-dispatcher-type", "flex", "--moe-flex-dispatcher-backend", "deepep"});
      // DeepEP's own default is the 20 SMs the run defaults to; another count is written with the
      // knob every Megatron-Core with the flex backend accepts (later ones route it to
      // --moe-flex-dispatcher-num-sms).
      if (p.run.flex_dispatcher_sms != TrainingRun{}.flex_dispatcher_sms) {
        add(a, "--moe-deepep-num-sms", p.run.flex_dispatcher_sms);
      }
    } else {
      a.insert(a.end(), {"--moe-token-dispatcher-type", l.ep > 1 ? "alltoall" : "allgather"});
    }
    add_router(a, p.run);
    if (p.run.moe_capacity_factor > 0) {
      char factor[32];
      std::snprintf(factor, sizeof factor, "%g", p.run.moe_capacity_factor);
      a.insert(a.end(), {"--moe-expert-capacity-factor", factor});
    }
  }
  if (l.tp > 1 && l.sequence_parallel) a.push_back("--sequence-parallel");
  if (p.model.mtp_layers > 0) add(a, "--mtp-num-layers", p.model.mtp_layers);
  add(a, "--micro-batch-size", l.micro_batch);
  add(a, "--global-batch-size", p.run.global_batch);
  if (l.recompute == Recompute::kSelective) {
    a.insert(a.end(), {"--recompute-granularity", "selective"});
    // Megatron's default module list is flopwise's default, core_attn.
    if (!l.recompute_modules.is_default()) {
      a.push_back("--recompute-modules");
      for (const std::string& name : module_names(l.recompute_modules)) a.push_back(name);
    }
  } else if (l.recompute == Recompute::kFull) {
    a.insert(a.end(), {"--recompute-granularity", "full", "--recompute-method", "uniform", "--recompute-num-layers", "1"});
  }
  if (l.optimizer_sharding) a.push_back("--use-distributed-optimizer");
  add_overlap(a, p.model, p.run, l);
  // Megatron trains in fp32 unless told --bf16 or --fp16 (fp8 runs on top of bf16).
  if (p.run.precision == Precision::kFp16) a.push_back("--fp16");
  if (p.run.precision == Precision::kBf16 || p.run.precision == Precision::kFp8) a.push_back("--bf16");
  if (p.run.precision == Precision::kFp8) {
    a.insert(a.end(), {"--fp8-format", "hybrid", "--fp8-recipe", to_string(p.run.fp8_recipe)});
  }
  if (!p.run.grad_accumulation_fusion) a.push_back("--no-gradient-accumulation-fusion");
  if (p.run.grad_reduce_in_bf16) a.push_back("--grad-reduce-in-bf16");
  if (p.run.adam_moments_in_bf16) {
    a.insert(a.end(), {"--use-precision-aware-optimizer", "--exp-avg-dtype", "bf16", "--exp-avg-sq-dtype", "bf16"});
  }
  // Megatron-LM's dropouts default to 0.1: the plan's are always written.
  char dropout[32];
  std::snprintf(dropout, sizeof dropout, "%g", p.run.hidden_dropout);
  a.insert(a.end(), {"--hidden-dropout", dropout});
  std::snprintf(dropout, sizeof dropout, "%g", p.run.attention_dropout);
  a.insert(a.end(), {"--attention-dropout", dropout});
  // Megatron-Core's attention backends: flash for fused (FlashAttention), unfused for the old path.
  a.insert(a.end(), {"--attention-backend", p.run.attention == AttentionKernel::kFused ? "flash" : "unfused"});
}

}  // namespace

std::vector<std::string> megatron_args(const Plan& p) {
  std::vector<std::string> args;
  add_layout(args, p);
  add_model(args, p.model, p.run.seq_len);
  // The Ling report's optimizer (section 3.4).
  args.insert(args.end(), {"--optimizer", "adam", "--adam-beta1", "0.9", "--adam-beta2", "0.95", "--adam-eps",
                           "1e-8", "--weight-decay", "0.1", "--clip-grad", "1.0"});
  return args;
}

std::vector<MegatronJob> megatron_jobs(const Plan& plan) {
  if (!plan.mixed) return {{"", megatron_args(plan)}};
  std::vector<MegatronJob> jobs;
  if (plan.mixed->strategy != PoolStrategy::kLocalSgd) return jobs;
  for (const PlanPool& pool : plan.mixed->pools) {
    Plan own = plan;
    own.mixed.reset();
    own.hardware = pool.hardware;
    own.layout = pool.layout;
    own.run.global_batch = pool.sequences;
    jobs.push_back({pool.name, megatron_args(own)});
  }
  return jobs;
}

}  // namespace flopwise
