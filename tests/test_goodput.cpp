// Goodput: checkpoint cost, Daly's interval and the goodput fraction, by hand; the profile's
// reliability section; the planner weighing failures.
#include <gtest/gtest.h>

#include <cmath>

#include "flopwise/cost_model.hpp"
#include "flopwise/error.hpp"
#include "flopwise/goodput.hpp"
#include "flopwise/hardware_profile.hpp"
#include "test_helpers.hpp"

namespace flopwise {
namespace {

// One failure per 1,000 devices a day, 10 min restarts, 1 GB/s per node out, 2 GB/s in.
Reliability small_case(bool async) {
  Reliability r;
  r.interruptions_per_device_day = 0.001;
  r.restart_s = 600;
  r.node_write_bytes_per_s = 1e9;
  r.node_read_bytes_per_s = 2e9;
  r.async_checkpoint = async;
  r.snapshot_bytes_per_s = 5e9;
  return r;
}

std::string error_of(const std::string& section) {
  return testing::error_of([&] { parse_hardware_profile(testing::round_profile_with("runtime_reserved:", section + "\nruntime_reserved:"), "round.yaml"); });
}

}  // namespace

TEST(Goodput, CheckpointCostFromStateAndStorage) {
  // 100 GB over 10 nodes at 1 GB/s each: 10 s out, 5 s back in; a device's 10 GB copy at 5 GB/s: 2 s.
  const CheckpointCost sync = checkpoint_cost(100e9, 10e9, 10, small_case(false));
  EXPECT_DOUBLE_EQ(sync.write_s, 10.0);
  EXPECT_DOUBLE_EQ(sync.load_s, 5.0);
  EXPECT_DOUBLE_EQ(sync.blocking_s, 10.0);  // training waits for the write
  EXPECT_DOUBLE_EQ(checkpoint_cost(100e9, 10e9, 10, small_case(true)).blocking_s, 2.0);  // only for the copy
}

TEST(Goodput, DalyIntervalByHand) {
  // d = 10 s, M = 86,400 s: sqrt(2 d M) = 1,314.534; x = d / 2M = 5.787e-5;
  // tau = 1,314.534 x (1 + sqrt(x) / 3 + x / 9) - 10 = 1,307.876 s.
  EXPECT_NEAR(daly_interval(10, 86400), 1307.876, 1e-3);
  EXPECT_DOUBLE_EQ(daly_interval(300, 100), 100.0);  // saving takes longer than 2 M: checkpoint every M
}

TEST(Goodput, FractionAndExpectedTimeByHand) {
  // 1,000 devices at 1 per 1,000 a day: M = 86,400 s. Daly 1,307.9 s = 654 steps of 2 s = 1,308 s.
  // Per failure: 600 restart + 5 load + (1,308 + 10) / 2 redone = 1,264 s.
  // goodput = 1,308 / 1,318 x (1 - 1,264 / 86,400) = 0.977894.
  const Goodput g = goodput(2.0, 1000, 10, checkpoint_cost(100e9, 10e9, 10, small_case(false)), small_case(false));
  EXPECT_DOUBLE_EQ(g.mtbf_s, 86400.0);
  EXPECT_EQ(g.checkpoint_every_steps, 654);
  EXPECT_DOUBLE_EQ(g.interval_s, 1308.0);
  EXPECT_DOUBLE_EQ(g.lost_per_failure_s, 1264.0);
  EXPECT_NEAR(g.fraction, 0.9778941, 1e-7);
  // Async: blocks 2 s; Daly 586.5 s = 293 steps; a failure also loses the unfinished 10 s write:
  // 600 + 5 + 588 / 2 + 10 = 909 s; goodput = 586 / 588 x (1 - 909 / 86,400) = 0.986114.
  const Goodput a = goodput(2.0, 1000, 10, checkpoint_cost(100e9, 10e9, 10, small_case(true)), small_case(true));
  EXPECT_EQ(a.checkpoint_every_steps, 293);
  EXPECT_DOUBLE_EQ(a.lost_per_failure_s, 909.0);
  EXPECT_NEAR(a.fraction, 0.9861136, 1e-7);
  // Twice the devices fail twice as often: less goodput.
  EXPECT_LT(goodput(2.0, 2000, 20, checkpoint_cost(100e9, 10e9, 10, small_case(false)), small_case(false)).fraction,
            g.fraction);
  // Node failures on top: 1 per 1,000 devices a day on 1,000 devices + 10 per 1,000 nodes a day on
  // 10 nodes = 1.1 a day: M = 86,400 / 1.1 = 78,545.45 s.
  Reliability nodes = small_case(false);
  nodes.interruptions_per_node_day = 0.01;
  EXPECT_NEAR(goodput(2.0, 1000, 10, checkpoint_cost(100e9, 10e9, 10, nodes), nodes).mtbf_s, 78545.4545, 1e-3);
  // Nothing fails: one checkpoint at the end, all of the time useful but the saves' share.
  Reliability never = small_case(false);
  never.interruptions_per_device_day = 0;
  EXPECT_TRUE(std::isinf(goodput(2.0, 1000, 10, checkpoint_cost(100e9, 10e9, 10, never), never).mtbf_s));
}

TEST(Goodput, CostModelPricesFailuresIntoDaysAndCost) {
  const CostModel cost(testing::tiny_moe(), testing::tiny_run(64), testing::round_profile());
  const StepCost c = cost.evaluate(Layout{1, 1, 1, 1, 4, 1, Recompute::kNone, false});
  ASSERT_GT(c.goodput.fraction, 0.0);
  ASSERT_LT(c.goodput.fraction, 1.0);
  EXPECT_NEAR(c.days, c.goodput.ideal_days / c.goodput.fraction, 1e-12 * c.days);
  EXPECT_NEAR(c.cost, c.goodput.ideal_cost / c.goodput.fraction, 1e-9 * c.cost);
  EXPECT_GT(c.goodput.checkpoint.bytes, 0.0);
}

TEST(Goodput, ProfileReliabilitySectionOverridesTheDefaults) {
  const HardwareProfile defaults = testing::round_profile();
  EXPECT_FALSE(defaults.reliability.from_profile);
  EXPECT_NEAR(defaults.reliability.interruptions_per_device_day * 1000, 0.4736, 1e-4);  // Llama 3
  const HardwareProfile p = parse_hardware_profile(
      testing::round_profile_with("runtime_reserved:",
                                  "reliability:\n  interruptions_per_1000_devices_per_day: 2\n  restart: \"300 s\"\n"
                                  "  node_write_bandwidth: \"4 GB/s\"\n  async_checkpoint: true\nruntime_reserved:"),
      "round.yaml");
  EXPECT_TRUE(p.reliability.from_profile);
  EXPECT_DOUBLE_EQ(p.reliability.interruptions_per_device_day, 0.002);
  EXPECT_DOUBLE_EQ(p.reliability.restart_s, 300.0);
  EXPECT_DOUBLE_EQ(p.reliability.node_write_bytes_per_s, 4e9);
  EXPECT_TRUE(p.reliability.async_checkpoint);
}

TEST(Goodput, BadReliabilityFiguresNameTheField) {
  EXPECT_NE(error_of("reliability:\n  interruptions_per_1000_devices_per_day: -1").find(
                "reliability.interruptions_per_1000_devices_per_day"),
            std::string::npos);
  EXPECT_NE(error_of("reliability:\n  interruptions_per_1000_devices_per_day: 5000").find(
                "reliability.interruptions_per_1000_devices_per_day"),
            std::string::npos);
  EXPECT_NE(error_of("reliability:\n  node_write_bandwidth: \"0 GB/s\"").find("reliability.node_write_bandwidth"),
            std::string::npos);
  EXPECT_NE(error_of("reliability:\n  restart: \"10 GB\"").find("reliability.restart"), std::string::npos);
  EXPECT_NE(error_of("reliability:\n  restart: \"-5 s\"").find("reliability.restart"), std::string::npos);
  EXPECT_NE(error_of("reliability:\n  mtbf: 3").find("reliability.mtbf"), std::string::npos);
  EXPECT_NE(error_of("reliability:\n  checkpoint_interval: \"0 s\"").find("reliability.checkpoint_interval"),
            std::string::npos);
}

TEST(Goodput, AFixedIntervalIsKeptButNotShorterThanAStep) {
  Reliability r = small_case(false);
  r.fixed_interval_s = 600;
  r.source = "team.yaml";
  const CheckpointCost c = checkpoint_cost(100e9, 10e9, 10, r);
  EXPECT_EQ(goodput(2.0, 1000, 10, c, r).checkpoint_every_steps, 300);
  try {
    goodput(900.0, 1000, 10, c, r);
    FAIL() << "an interval shorter than a step was accepted";
  } catch (const InputError& e) {
    EXPECT_EQ(std::string(e.what()).rfind("team.yaml: reliability.checkpoint_interval: 600", 0), 0u) << e.what();
  }
}

}  // namespace flopwise
