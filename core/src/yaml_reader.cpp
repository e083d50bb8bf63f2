#include "flopwise/yaml_reader.hpp"

#include <algorithm>

#include <cmath>
#include <sstream>

#include "flopwise/error.hpp"

namespace flopwise {

YAML::Node parse_yaml(const std::string& text, const std::string& source) {
  try {
    return YAML::Load(text);
  } catch (const YAML::Exception& e) {
    throw InputError(source + ":" + std::to_string(e.mark.line + 1) + ":" + std::to_string(e.mark.column + 1) +
                     ": malformed YAML: " + e.msg);
  }
}

YamlFields::YamlFields(const YAML::Node& node, std::string source, std::string prefix)
    : node_(node), source_(std::move(source)), prefix_(std::move(prefix)) {
  if (!node_ || !node_.IsMap()) throw input_error(source_, prefix_, "missing section (expected a map)");
}

std::vector<YamlFields> YamlFields::list(const std::string& key) const {
  const YAML::Node items = require(key);
  if (!items.IsSequence()) throw input_error(source_, path(key), "expected a list");
  std::vector<YamlFields> result;
  for (size_t i = 0; i < items.size(); ++i) result.emplace_back(items[i], source_, path(key) + "[" + std::to_string(i) + "]");
  return result;
}

std::vector<std::string> YamlFields::keys() const {
  std::vector<std::string> result;
  for (const auto& entry : node_) {
    if (!entry.first.IsScalar()) throw input_error(source_, prefix_, "keys must be plain names");
    result.push_back(entry.first.Scalar());
  }
  return result;
}

void YamlFields::allow_only(const std::vector<std::string>& known) const {
  for (const std::string& key : keys()) {
    if (std::find(known.begin(), known.end(), key) != known.end()) continue;
    std::string list;
    for (const std::string& k : known) list += (list.empty() ? "" : ", ") + k;
    throw input_error(source_, path(key), "unknown field (expected one of: " + list + ")");
  }
}

YAML::Node YamlFields::require(const std::string& key) const {
  const YAML::Node value = node_[key];
  if (!value || value.IsNull()) throw input_error(source_, path(key), "missing field");
  return value;
}

std::string YamlFields::text(const std::string& key) const {
  const YAML::Node value = require(key);
  if (!value.IsScalar()) throw input_error(source_, path(key), "expected a single value");
  return value.Scalar();
}

namespace {

double parse_number(const std::string& raw, double min, double max, const std::string& source,
                    const std::string& where) {
  double value = 0;
  std::istringstream in(raw);
  std::string rest;
  if (!(in >> value) || (in >> rest) || !std::isfinite(value)) {
    throw input_error(source, where, "expected a plain number, got '" + raw + "'");
  }
  if (value < min || value > max) {
    std::ostringstream range;
    range << "must be between " << min << " and " << max << ", got " << raw;
    throw input_error(source, where, range.str());
  }
  return value;
}

}  // namespace

double YamlFields::number(const std::string& key, double min, double max) const {
  return parse_number(text(key), min, max, source_, path(key));
}

std::vector<double> YamlFields::numbers(const std::string& key, double min, double max) const {
  const YAML::Node items = require(key);
  if (!items.IsSequence()) throw input_error(source_, path(key), "expected a list of numbers");
  std::vector<double> result;
  for (size_t i = 0; i < items.size(); ++i) {
    const std::string where = path(key) + "[" + std::to_string(i) + "]";
    if (!items[i].IsScalar()) throw input_error(source_, where, "expected a single value");
    result.push_back(parse_number(items[i].Scalar(), min, max, source_, where));
  }
  return result;
}

int YamlFields::integer(const std::string& key, int min) const {
  const double value = number(key, min, 1e9);
  if (value != static_cast<int>(value)) throw input_error(source_, path(key), "must be an integer");
  return static_cast<int>(value);
}

double YamlFields::quantity(const std::string& key, Dimension dimension) const {
  return parse_quantity(text(key), dimension, source_, path(key));
}

bool YamlFields::boolean(const std::string& key) const {
  const std::string raw = text(key);
  if (raw == "true" || raw == "yes") return true;
  if (raw == "false" || raw == "no") return false;
  throw input_error(source_, path(key), "expected true or false, got '" + raw + "'");
}

}  // namespace flopwise
