// The executor's model pieces against values computed independently, token by token.
#include <gtest/gtest.h>

#include <cmath>

#include "flopwise/executor/model.hpp"

namespace flopwise::executor {
namespace {

ModelConfig tiny_shape() {
  ModelConfig s;
  s.name = "tiny";
  s.layers = 1;
  s.hidden = 8;
  s.heads = 2;
  s.kv_heads = 1;
  s.head_dim = 4;
  s.vocab = 11;
  s.routed_experts = 4;
  s.top_k = 2;
  s.expert_ffn = 6;
  s.shared_experts = 1;
  s.shared_expert_ffn = 6;
  return s;
}

torch::Tensor rms(const torch::Tensor& x, const torch::Tensor& w) {
  return x / torch::sqrt(x.pow(2).mean() + 1e-6) * w;
}

// Rotates pair (i, i + half) of a head vector by position x theta^(-2i/d), one pair at a time.
torch::Tensor rope_one(const torch::Tensor& v, int64_t position) {
  const int64_t d = v.size(0), half = d / 2;
  torch::Tensor out = v.clone();
  for (int64_t i = 0; i < half; ++i) {
    const double angle = position * std::pow(kRopeTheta, -2.0 * i / d);
    const double a = v[i].item<double>(), b = v[i + half].item<double>();
    out[i] = a * std::cos(angle) - b * std::sin(angle);
    out[i + half] = b * std::cos(angle) + a * std::sin(angle);
  }
  return out;
}

torch::Tensor swiglu(const torch::Tensor& x, const torch::Tensor& gate, const torch::Tensor& up, const torch::Tensor& down) {
  return torch::matmul(torch::silu(torch::matmul(x, gate)) * torch::matmul(x, up), down);
}

}  // namespace

TEST(ExecutorModel, ForwardMatchesATokenByTokenReference) {
  const ModelConfig s = tiny_shape();
  Stage stage(s, 0, 1, true, true, 1);
  initialize_parameters(*stage, 0, 0, 7);
  const torch::Tensor tokens = torch::tensor({{3, 1, 4, 1, 5}}, torch::kInt64);
  RoutingContext context;
  context.training = false;
  const torch::Tensor logits = stage->forward(tokens, context);

  auto* layer = stage->layers[0]->as<LayerImpl>();
  const torch::Tensor emb = stage->embedding->weight;
  const torch::Tensor wqkv = layer->attention->qkv->weight, wo = layer->attention->out->weight;
  const int64_t seq = 5, d = 4;
  std::vector<torch::Tensor> xs, qs, ks, vs;
  for (int64_t t = 0; t < seq; ++t) {
    xs.push_back(emb[tokens[0][t].item<int64_t>()]);
    const torch::Tensor qkv = torch::matmul(wqkv, rms(xs[t], layer->attention_norm->weight));  // q0 q1 k v
    qs.push_back(torch::stack({rope_one(qkv.narrow(0, 0, d), t), rope_one(qkv.narrow(0, d, d), t)}));
    ks.push_back(rope_one(qkv.narrow(0, 2 * d, d), t));
    vs.push_back(qkv.narrow(0, 3 * d, d));
  }
  const auto* moe = layer->moe.get();
  for (int64_t t = 0; t < seq; ++t) {
    std::vector<torch::Tensor> heads;
    for (int h = 0; h < 2; ++h) {  // both query heads share the one KV head
      std::vector<double> scores;
      for (int64_t u = 0; u <= t; ++u) scores.push_back((qs[t][h] * ks[u]).sum().item<double>() / std::sqrt(4.0));
      const double top = *std::max_element(scores.begin(), scores.end());
      double total = 0;
      for (double& sc : scores) total += (sc = std::exp(sc - top));
      torch::Tensor mixed = torch::zeros({d});
      for (int64_t u = 0; u <= t; ++u) mixed += scores[u] / total * vs[u];
      heads.push_back(mixed);
    }
    const torch::Tensor h = xs[t] + torch::matmul(wo, torch::cat(heads));
    const torch::Tensor n = rms(h, layer->mlp_norm->weight);
    // Router: softmax, top 2, renormalised.
    const torch::Tensor probs = torch::softmax(torch::matmul(moe->router->weight, n), 0);
    std::vector<std::pair<double, int>> ranked;
    for (int e = 0; e < 4; ++e) ranked.push_back({probs[e].item<double>(), e});
    std::sort(ranked.rbegin(), ranked.rend());
    const double norm = ranked[0].first + ranked[1].first;
    torch::Tensor y = swiglu(n, moe->shared->gate->weight.t(), moe->shared->up->weight.t(), moe->shared->down->weight.t());
    for (int c = 0; c < 2; ++c) {
      const int e = ranked[c].second;
      y = y + ranked[c].first / norm * swiglu(n, moe->experts->gate[e], moe->experts->up[e], moe->experts->down[e]);
    }
    const torch::Tensor final_hidden = rms(h + y, stage->final_norm->weight);
    const torch::Tensor head = stage->head;
    for (int v = 0; v < s.vocab; ++v) {
      const double expected = (final_hidden * head[v]).sum().item<double>() / head[v].norm().item<double>();
      EXPECT_NEAR(logits[0][t][v].item<double>(), expected, 1e-5) << "token " << t << " vocab " << v;
    }
  }
}

// Zero router weights: uniform probabilities; the load-balance term E sum f_e P_e is 1 and the
// z-loss is log(E)^2, so aux = 0.015 + 1e-4 log(4)^2.
TEST(ExecutorModel, RouterAuxLossesByHand) {
  Router router(8, 4, 2);
  torch::NoGradGuard no_grad;
  router->weight.zero_();
  RoutingContext context;
  context.training = false;
  const auto choice = router->forward(torch::randn({6, 8}), context);
  EXPECT_NEAR(choice.aux_loss.item<double>(), 0.015 + 1e-4 * std::pow(std::log(4.0), 2), 1e-7);
  EXPECT_TRUE(torch::allclose(choice.weights.sum(-1), torch::ones({6})));
}

TEST(ExecutorModel, RouterPicksTopKAndRenormalises) {
  Router router(3, 4, 2);
  torch::NoGradGuard no_grad;
  router->weight.copy_(torch::tensor({{1.0f, 0.f, 0.f}, {0.f, 2.0f, 0.f}, {0.f, 0.f, 3.0f}, {0.f, 0.f, 0.f}}));
  RoutingContext context;
  context.training = false;
  const auto choice = router->forward(torch::tensor({{1.0f, 1.0f, 1.0f}}), context);
  EXPECT_EQ(choice.experts[0][0].item<int64_t>(), 2);
  EXPECT_EQ(choice.experts[0][1].item<int64_t>(), 1);
  // softmax([1, 2, 3, 0]) renormalised over experts 2 and 1: e^3 / (e^3 + e^2).
  EXPECT_NEAR(choice.weights[0][0].item<double>(), std::exp(3.0) / (std::exp(3.0) + std::exp(2.0)), 1e-6);
}

// Stochastic Routing Warmup: at step 0 the scores are mu + sigma eps (pure noise, independent of
// the input); from step W on they are the raw logits.
TEST(ExecutorModel, RoutingWarmupBlendsNoiseIntoLogits) {
  Router router(8, 16, 2);
  router->layer_id = 3;
  const torch::Tensor x = torch::randn({5, 8});
  RoutingContext context;
  context.warmup_steps = 10;
  context.noise_seed = 99;
  context.step = 0;
  const auto early = router->forward(x, context);
  auto generator = at::detail::createCPUGenerator(mix_seed(99, 3));
  const torch::Tensor eps = torch::randn({5, 16}, generator, x.options());
  const auto expected = std::get<1>(torch::softmax(eps, -1).topk(2, -1));
  EXPECT_TRUE(torch::equal(early.experts, expected));
  context.step = 10;
  const auto late = router->forward(x, context);
  const auto plain = std::get<1>(torch::softmax(torch::matmul(x, router->weight.t()), -1).topk(2, -1));
  EXPECT_TRUE(torch::equal(late.experts, plain));
}

TEST(ExecutorModel, RoutingStatisticsAreAMovingAverage) {
  Router router(2, 2, 1);
  torch::NoGradGuard no_grad;
  router->weight.copy_(torch::tensor({{1.0f, 0.f}, {0.f, 1.0f}}));
  RoutingContext context;
  router->forward(torch::tensor({{1.0f, 2.0f}, {3.0f, 6.0f}}), context);
  router->update_statistics({});
  // Logit means (2, 4) and std (1, 2), folded in with momentum 0.1 from (0, 1).
  EXPECT_NEAR(router->running_mean[0].item<double>(), 0.2, 1e-6);
  EXPECT_NEAR(router->running_mean[1].item<double>(), 0.4, 1e-6);
  EXPECT_NEAR(router->running_std[0].item<double>(), 0.9 + 0.1, 1e-6);
  EXPECT_NEAR(router->running_std[1].item<double>(), 0.9 + 0.2, 1e-6);
}

// NormHead: logits use W / ||W|| per output row, and the norm is treated as a constant in backward.
TEST(ExecutorModel, NormHeadNormalisesRowsWithADetachedNorm) {
  const torch::Tensor head = torch::randn({3, 4}).requires_grad_(true);
  const torch::Tensor hidden = torch::randn({2, 4});
  const torch::Tensor logits = norm_head_logits(hidden, head);
  const torch::Tensor norms = head.detach().norm(2, {1}, true);
  EXPECT_TRUE(torch::allclose(logits, torch::matmul(hidden, (head.detach() / norms).t()), 1e-6, 1e-6));
  logits.sum().backward();
  // d/dW of sum(h W^T / n) with n constant: each row gets sum of hidden rows / its norm.
  EXPECT_TRUE(torch::allclose(head.grad(), hidden.sum(0).unsqueeze(0).expand({3, 4}) / norms, 1e-6, 1e-6));
}

TEST(ExecutorModel, SameSeedGivesSameWeightsWhateverTheSplit) {
  ModelConfig s = tiny_shape();
  s.layers = 2;
  Stage whole(s, 0, 2, true, true, 1);
  Stage second_half(s, 1, 1, false, true, 2);  // pipeline stage 2 of 2, EP rank 1 of 2
  initialize_parameters(*whole, 0, 0, 5);
  initialize_parameters(*second_half, 1, 1, 5);
  auto* a = whole->layers[1]->as<LayerImpl>();
  auto* b = second_half->layers[0]->as<LayerImpl>();
  EXPECT_TRUE(torch::equal(a->attention->qkv->weight, b->attention->qkv->weight));
  EXPECT_TRUE(torch::equal(a->moe->experts->gate.narrow(0, 2, 2), b->moe->experts->gate));
  EXPECT_TRUE(torch::equal(whole->head, second_half->head));
}

// Ends counted as layers (Megatron-Core's --account-for-embedding/loss-in-pipeline-split) can
// leave a stage the embedding alone and another the loss alone: the three stages together give
// the whole model's logits.
TEST(ExecutorModel, StagesHoldingOnlyTheEmbeddingOrTheLossChainToTheWholeModel) {
  const ModelConfig s = tiny_shape();
  Stage whole(s, 0, 1, true, true, 1), embedding(s, 0, 0, true, false, 1), layer(s, 0, 1, false, false, 1),
      loss(s, 1, 0, false, true, 1);
  for (Stage* stage : {&whole, &embedding, &layer}) initialize_parameters(**stage, 0, 0, 3);
  initialize_parameters(*loss, 1, 0, 3);
  const torch::Tensor tokens = torch::tensor({{3, 1, 4, 1, 5}}, torch::kInt64);
  RoutingContext context;
  context.training = false;
  const torch::Tensor expected = whole->forward(tokens, context);
  const torch::Tensor chained = loss->forward(layer->forward(embedding->forward(tokens, context), context), context);
  EXPECT_EQ(embedding->layers->size(), 0u);
  EXPECT_TRUE(torch::allclose(chained, expected, 1e-6, 1e-6));
}

}  // namespace flopwise::executor

namespace flopwise::executor {

// A TP shard starts as the slice of the full weights: queries, keys and values of its own heads.
TEST(ExecutorModel, TensorParallelShardsAreSlicesOfTheFullWeights) {
  ModelConfig s = tiny_shape();
  s.kv_heads = 2;  // 2 query heads, 2 KV heads: one of each per TP rank
  Stage whole(s, 0, 1, true, true, 1);
  Stage shard(s, 0, 1, true, true, 1, TensorParallel{{}, 2, 1});
  initialize_parameters(*whole, 0, 0, 3);
  initialize_parameters(*shard, 0, 0, 3, TensorParallel{{}, 2, 1});
  auto* w = whole->layers[0]->as<LayerImpl>();
  auto* t = shard->layers[0]->as<LayerImpl>();
  const torch::Tensor full = w->attention->qkv->weight;  // rows: q0 q1 k0 k1 v0 v1, 4 each
  const torch::Tensor expected = torch::cat({full.narrow(0, 4, 4), full.narrow(0, 12, 4), full.narrow(0, 20, 4)});
  EXPECT_TRUE(torch::equal(t->attention->qkv->weight, expected));
  EXPECT_TRUE(torch::equal(t->attention->out->weight, w->attention->out->weight.narrow(1, 4, 4)));
  EXPECT_TRUE(torch::equal(t->moe->experts->gate, w->moe->experts->gate.narrow(2, 3, 3)));
  EXPECT_TRUE(torch::equal(t->moe->experts->down, w->moe->experts->down.narrow(1, 3, 3)));
  EXPECT_TRUE(torch::equal(t->moe->router->weight, w->moe->router->weight));  // replicated
}

}  // namespace flopwise::executor
