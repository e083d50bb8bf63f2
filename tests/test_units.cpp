#include <gtest/gtest.h>

#include "flopwise/error.hpp"
#include "flopwise/units.hpp"

namespace flopwise {

TEST(Units, ParsesBytesBandwidthAndTime) {
  EXPECT_DOUBLE_EQ(parse_quantity("80 GB", Dimension::kBytes, "f", "x"), 80e9);
  EXPECT_DOUBLE_EQ(parse_quantity("3 GiB", Dimension::kBytes, "f", "x"), 3.0 * 1024 * 1024 * 1024);
  EXPECT_DOUBLE_EQ(parse_quantity("400 Gb/s", Dimension::kBandwidth, "f", "x"), 50e9);
  EXPECT_DOUBLE_EQ(parse_quantity("3.35 TB/s", Dimension::kBandwidth, "f", "x"), 3.35e12);
  EXPECT_DOUBLE_EQ(parse_quantity("5 us", Dimension::kTime, "f", "x"), 5e-6);
}

TEST(Units, RejectsWrongUnitsNamingFileAndField) {
  try {
    parse_quantity("80 GHz", Dimension::kBytes, "dev.yaml", "device.memory");
    FAIL() << "accepted an unknown unit";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("dev.yaml: device.memory: unknown unit 'GHz'"), std::string::npos) << e.what();
  }
  EXPECT_THROW(parse_quantity("80", Dimension::kBytes, "f", "x"), InputError);
  EXPECT_THROW(parse_quantity("GB", Dimension::kBytes, "f", "x"), InputError);
  EXPECT_THROW(parse_quantity("-1 GB", Dimension::kBytes, "f", "x"), InputError);
  EXPECT_THROW(parse_quantity("80 GB/s", Dimension::kBytes, "f", "x"), InputError);
  EXPECT_THROW(parse_quantity("1 GB extra", Dimension::kBytes, "f", "x"), InputError);
}

}  // namespace flopwise
