// The step cost's one field list: the line, the JSON and the parts' sum all come from it.
#include <gtest/gtest.h>

#include "flopwise/cost_model.hpp"
#include "flopwise/error.hpp"
#include "flopwise/step_cost.hpp"
#include "test_helpers.hpp"

namespace flopwise {
namespace {

StepCost hand_cost() {
  StepCost c;
  c.compute_s = 9.0;
  c.exposed_comm_s = {1.0, 0.5, 0.25, 0.125};
  c.bubble_s = 0.75;
  c.optimizer_s = 0.25;
  c.overhead_s = 0.125;
  c.step_time_s = 12.0;  // 9 + 1.875 + 0.75 + 0.25 + 0.125
  c.slowest_stage = 3;
  c.memory_bytes = {2 * kGiB, 4 * kGiB, 8 * kGiB, 1 * kGiB, 1 * kGiB};
  c.usable_memory_bytes = 72 * kGiB;
  c.currency = "RMB";
  return c;
}

}  // namespace

TEST(StepCost, PartsAddUpToTheStepTime) {
  EXPECT_DOUBLE_EQ(sum_of_parts(hand_cost()), 12.0);
  const CostModel cost(testing::tiny_moe(), testing::tiny_run(64), testing::round_profile_edited(
      {{"runtime_reserved: \"1 GB\"", "runtime_reserved: \"1 GB\"\noverheads: {per_layer_pass: \"0 us\", per_step: \"3 ms\"}"}},
      "overhead.yaml"));
  const StepCost c = cost.evaluate(Layout{1, 2, 1, 2, 2, 1, Recompute::kSelective, true});
  EXPECT_DOUBLE_EQ(c.overhead_s, 3e-3);
  EXPECT_NEAR(sum_of_parts(c), c.step_time_s, 1e-12 * c.step_time_s);
}

TEST(StepCost, TheLineNamesEveryPartTheOverheadIncluded) {
  EXPECT_EQ(step_time_line(hand_cost()),
            "step time 12.00 s = compute 9.00 s + exposed comm (tp 1.00 s, cp 0.0 us, ep 500.0 ms, pp 250.0 ms, dp 125.0 ms) + "
            "bubble 750.0 ms + optimizer 250.0 ms + overhead 125.0 ms  [slowest stage 3]");
  EXPECT_EQ(memory_line(hand_cost()),
            "memory per device (pipeline rank 0): weights 2.0 GiB, grads 4.0 GiB, optimizer 8.0 GiB, activations "
            "1.0 GiB, buffers 1.0 GiB = 16.0 GiB of 72.0 GiB usable");
}

TEST(StepCost, JsonReadsBackAndNamesBadFields) {
  const nlohmann::json j = step_cost_to_json(hand_cost());
  EXPECT_EQ(j["breakdown"]["exposed_comm_s"]["ep"], 0.5);
  EXPECT_EQ(j["breakdown"]["overhead_s"], 0.125);
  EXPECT_EQ(j["memory_bytes"]["total"], 16 * kGiB);
  const StepCost back = step_cost_from_json(j, "plan.json", "predicted");
  EXPECT_EQ(step_time_line(back), step_time_line(hand_cost()));
  // Plans written before context parallelism have no cp part: none was exposed.
  nlohmann::json older = j;
  older["breakdown"]["exposed_comm_s"].erase("cp");
  EXPECT_EQ(step_time_line(step_cost_from_json(older, "plan.json", "predicted")), step_time_line(hand_cost()));
  nlohmann::json bad = j;
  bad["breakdown"]["exposed_comm_s"]["tp"] = "fast";
  try {
    step_cost_from_json(bad, "plan.json", "predicted");
    FAIL();
  } catch (const InputError& e) {
    EXPECT_STREQ(e.what(), "plan.json: predicted.breakdown.exposed_comm_s.tp: expected a number, got \"fast\"");
  }
}

}  // namespace flopwise
