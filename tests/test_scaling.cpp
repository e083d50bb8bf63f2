#include <gtest/gtest.h>

#include <cmath>

#include "flopwise/catalog.hpp"
#include "flopwise/error.hpp"
#include "flopwise/model_import.hpp"
#include "flopwise/plan_builder.hpp"
#include "flopwise/scaling.hpp"

namespace flopwise {

TEST(Scaling, PowerLawFitRecoversTheExponent) {
  std::vector<double> x, y;
  for (double c : {1e17, 1e18, 3e18, 1e19, 1e20}) {
    x.push_back(c);
    y.push_back(0.29 * std::pow(c, 0.327));
  }
  const PowerLaw law = fit_power_law(x, y, "test");
  EXPECT_NEAR(law.exponent, 0.327, 1e-9);
  EXPECT_NEAR(law.coefficient, 0.29, 1e-9);
}

TEST(Scaling, GridFitUsesTheBestRunOfEachBudget) {
  const ScalingFit fit = load_scaling(std::string(FLOPWISE_TEST_DATA) + "/scaling-grid.yaml");
  EXPECT_NEAR(fit.batch_tokens.exponent, 0.3, 1e-6);
  EXPECT_NEAR(fit.learning_rate.exponent, -0.15, 1e-6);
  EXPECT_NEAR(fit.batch_tokens.coefficient, 0.5, 1e-5);
  ASSERT_EQ(fit.optima.size(), 3u);
  for (double r : fit.batch_residuals) EXPECT_NEAR(r, 0.0, 1e-6);
}

TEST(Scaling, UnderdeterminedOrBadFilesAreReported) {
  EXPECT_THROW(fit_power_law({1e18, 1e18}, {1.0, 2.0}, "one budget"), InputError);
  EXPECT_THROW(parse_scaling("name: x\nsource: y\n", "s.yaml"), InputError);
  try {
    parse_scaling("name: x\nsource: y\nfit:\n  batch_tokens: {coefficient: 1}\n  learning_rate: {coefficient: 1, exponent: 0}\n",
                  "s.yaml");
    FAIL();
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("s.yaml: fit.batch_tokens.exponent: missing field"), std::string::npos) << e.what();
  }
  EXPECT_THROW(parse_scaling("name: [", "s.yaml"), InputError);
}

// DeepSeek LLM eq. (1) at the Ling-Plus 1T-token budget, evaluated by hand.
TEST(Scaling, PlansCarryTheRecommendationForTheirBudget) {
  TrainingRun run;
  const ModelConfig model = resolve_model("ling-plus");
  const Recommendation r = recommend(model, run, default_scaling());
  const double compute = training_flops_per_token(model, 4096) * 1e12;
  EXPECT_DOUBLE_EQ(r.compute_flops, compute);
  EXPECT_NEAR(r.batch_tokens, 0.2920 * std::pow(compute, 0.3271), 1e-6 * r.batch_tokens);
  EXPECT_NEAR(r.peak_lr, 0.3118 * std::pow(compute, -0.1250), 1e-12);
  EXPECT_EQ(r.global_batch, static_cast<int>(std::lround(r.batch_tokens / 4096)));
  EXPECT_NE(r.source.find("2401.02954"), std::string::npos);
}

}  // namespace flopwise
