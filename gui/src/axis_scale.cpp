#include "flopwise/gui/axis_scale.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace flopwise::gui {
namespace {

// The round step (1, 2 or 5 x 10^k) nearest above `raw`; counts step by whole units.
double round_step(double raw, AxisQuantity quantity) {
  const double magnitude = std::pow(10.0, std::floor(std::log10(raw)));
  const double normalised = raw / magnitude;
  const double step = (normalised <= 1 ? 1 : normalised <= 2 ? 2 : normalised <= 5 ? 5 : 10) * magnitude;
  return quantity == AxisQuantity::kCount ? std::max(1.0, std::round(step)) : step;
}

// Decimals that show every multiple of `step` exactly (0.25 -> 2, 5 -> 0).
int decimals_for(double step) {
  int decimals = 0;
  while (decimals < 6 && std::fabs(step * std::pow(10.0, decimals) - std::round(step * std::pow(10.0, decimals))) > 1e-6) {
    ++decimals;
  }
  return decimals;
}

// Integer part with separators, then the decimals.
std::string decimal_label(double value, int decimals) {
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, "%.*f", decimals, std::fabs(value));
  std::string text = buffer;
  const std::size_t point = text.find('.');
  const std::string whole = text.substr(0, point);
  const std::string fraction = point == std::string::npos ? "" : text.substr(point);
  std::string label = value < 0 && std::stod(text) != 0 ? "-" : "";
  label += with_thousands(std::stoll(whole));
  label += fraction;
  return label;
}

std::string tick_label(double value, double step, AxisQuantity quantity, double divisor, const std::string& suffix) {
  if (quantity == AxisQuantity::kCount) return with_thousands(std::llround(value));
  if (quantity == AxisQuantity::kDecimal) return decimal_label(value, decimals_for(step));
  if (std::fabs(value) < step * 1e-9) return "0";  // "0", not "0M RMB"
  return decimal_label(value / divisor, decimals_for(step / divisor)) + suffix;
}

}  // namespace

std::string with_thousands(long long value) {
  const std::string digits = std::to_string(value < 0 ? -value : value);
  std::string text;
  for (std::size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) text += ',';
    text += digits[i];
  }
  return value < 0 ? '-' + text : text;
}

AxisScale axis_scale(double low, double high, AxisQuantity quantity, const std::string& currency, int target_ticks) {
  if (!(high > low)) high = low + (low == 0 ? 1 : std::fabs(low));  // one point: a range around it
  const double step = round_step((high - low) / std::max(1, target_ticks), quantity);
  AxisScale scale;
  scale.min = std::floor(low / step + 1e-9) * step;
  scale.max = std::ceil(high / step - 1e-9) * step;
  // Money is labelled in the unit of its largest tick, as the table prints it; below 10,000 whole
  // amounts read better than "0.2K".
  const double largest = std::max(std::fabs(scale.min), std::fabs(scale.max));
  const double divisor = largest >= 1e6 ? 1e6 : largest >= 1e4 ? 1e3 : 1;
  std::string suffix = divisor == 1e6 ? "M" : divisor == 1e3 ? "K" : "";
  if (!currency.empty()) suffix += ' ' + currency;
  const int intervals = static_cast<int>(std::llround((scale.max - scale.min) / step));
  for (int i = 0; i <= intervals; ++i) {
    const double value = scale.min + i * step;
    scale.ticks.push_back({value, tick_label(value, step, quantity, divisor, suffix)});
  }
  return scale;
}

}  // namespace flopwise::gui
