#pragma once
// Chart axes as a person reads them, independent of Qt: round ticks (1, 2 or 5 times a power of
// ten), counts as integers with thousands separators, money with its currency and the table's
// K/M suffix.
#include <string>
#include <vector>

namespace flopwise::gui {

enum class AxisQuantity {
  kCount,    // devices, steps, tokens/s: integer ticks, "1,792"
  kMoney,    // amounts in the currency's units: "1.5M RMB"
  kDecimal,  // days, seconds, loss, percent: as many decimals as the tick step needs
};

struct AxisTick {
  double value = 0;
  std::string label;
};

struct AxisScale {
  double min = 0, max = 0;
  std::vector<AxisTick> ticks;  // from min to max, evenly spaced
};

// About `target_ticks` intervals covering [low, high]; `currency` labels kMoney ticks.
AxisScale axis_scale(double low, double high, AxisQuantity quantity, const std::string& currency = "",
                     int target_ticks = 5);

// 1792 -> "1,792"; -12345 -> "-12,345".
std::string with_thousands(long long value);

}  // namespace flopwise::gui
