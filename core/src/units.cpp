#include "flopwise/units.hpp"

#include <cmath>
#include <cstdio>
#include <map>
#include <sstream>

#include "flopwise/error.hpp"

namespace flopwise {
namespace {

const std::map<std::string, double>& units_of(Dimension dimension) {
  static const std::map<std::string, double> bytes = {
      {"B", 1.0},           {"KB", 1e3},          {"MB", 1e6},
      {"GB", 1e9},          {"TB", 1e12},         {"KiB", 1024.0},
      {"MiB", 1048576.0},   {"GiB", kGiB},        {"TiB", kGiB * 1024.0}};
  // Network links are sold in bits per second; memory systems in bytes per second.
  static const std::map<std::string, double> bandwidth = {
      {"B/s", 1.0},     {"KB/s", 1e3},     {"MB/s", 1e6},       {"GB/s", 1e9},
      {"TB/s", 1e12},   {"GiB/s", kGiB},   {"Mb/s", 1e6 / 8},   {"Gb/s", 1e9 / 8},
      {"Tb/s", 1e12 / 8}, {"Gbit/s", 1e9 / 8}};
  static const std::map<std::string, double> time = {
      {"ns", 1e-9}, {"us", 1e-6}, {"ms", 1e-3}, {"s", 1.0}};
  switch (dimension) {
    case Dimension::kBytes: return bytes;
    case Dimension::kBandwidth: return bandwidth;
    case Dimension::kTime: return time;
  }
  return bytes;
}

std::string unit_list(const std::map<std::string, double>& units) {
  std::string list;
  for (const auto& [name, factor] : units) list += (list.empty() ? "" : ", ") + name;
  return list;
}

}  // namespace

double parse_quantity(const std::string& text, Dimension dimension, const std::string& source,
                      const std::string& field) {
  std::istringstream in(text);
  double value = 0.0;
  std::string unit;
  const auto& units = units_of(dimension);
  if (!(in >> value)) {
    throw input_error(source, field, "expected a number with a unit, got '" + text + "'");
  }
  if (!(in >> unit)) {
    throw input_error(source, field,
                      "'" + text + "' has no unit (expected one of " + unit_list(units) + ")");
  }
  std::string rest;
  if (in >> rest) throw input_error(source, field, "unexpected text after the unit in '" + text + "'");
  if (!std::isfinite(value) || value < 0.0) {
    throw input_error(source, field, "must be a non-negative number, got '" + text + "'");
  }
  const auto it = units.find(unit);
  if (it == units.end()) {
    throw input_error(source, field,
                      "unknown unit '" + unit + "' (expected one of " + unit_list(units) + ")");
  }
  return value * it->second;
}

std::string format_bytes(Bytes bytes) {
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "%.1f GiB", bytes / kGiB);
  return buffer;
}

std::string format_seconds(Seconds seconds) {
  char buffer[32];
  if (seconds < 1e-3) {
    std::snprintf(buffer, sizeof buffer, "%.1f us", seconds * 1e6);
  } else if (seconds < 1.0) {
    std::snprintf(buffer, sizeof buffer, "%.1f ms", seconds * 1e3);
  } else {
    std::snprintf(buffer, sizeof buffer, "%.2f s", seconds);
  }
  return buffer;
}

std::string format_count(double value) {
  char buffer[32];
  const double magnitude = std::fabs(value);
  if (magnitude >= 1e12) {
    std::snprintf(buffer, sizeof buffer, "%.2fT", value / 1e12);
  } else if (magnitude >= 1e9) {
    std::snprintf(buffer, sizeof buffer, "%.2fB", value / 1e9);
  } else if (magnitude >= 1e6) {
    std::snprintf(buffer, sizeof buffer, "%.2fM", value / 1e6);
  } else if (magnitude >= 1e3) {
    std::snprintf(buffer, sizeof buffer, "%.1fK", value / 1e3);
  } else {
    std::snprintf(buffer, sizeof buffer, "%.0f", value);
  }
  return buffer;
}

std::vector<std::string> split_list(const std::string& text) {
  std::vector<std::string> items;
  std::string item;
  std::istringstream in(text);
  while (std::getline(in, item, ',')) {
    if (!item.empty()) items.push_back(item);
  }
  return items;
}

}  // namespace flopwise
