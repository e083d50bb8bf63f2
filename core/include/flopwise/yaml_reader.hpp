#pragma once
// The one typed way to read YAML inputs (hardware profiles, scaling grids): a wrong type, a missing
// key or an out-of-range value becomes an InputError "file: section.field: problem".
#include <string>
#include <vector>

#include <yaml-cpp/yaml.h>

#include "flopwise/units.hpp"

namespace flopwise {

// Parses YAML text; syntax errors name the file, line and column.
YAML::Node parse_yaml(const std::string& text, const std::string& source);

class YamlFields {
 public:
  // `node` must be a map; `prefix` is where it sits in the file ("" for the root).
  YamlFields(const YAML::Node& node, std::string source, std::string prefix);

  YamlFields section(const std::string& key) const { return YamlFields(node_[key], source_, path(key)); }
  // Maps of a list field, each with its index in the path.
  std::vector<YamlFields> list(const std::string& key) const;
  // The keys of this map, in file order.
  std::vector<std::string> keys() const;
  // Throws InputError naming the first key that is not in `known`: a misspelt or unsupported field
  // must not be silently ignored.
  void allow_only(const std::vector<std::string>& known) const;

  std::string text(const std::string& key) const;
  double number(const std::string& key, double min, double max) const;
  // A list of plain numbers, each in [min, max].
  std::vector<double> numbers(const std::string& key, double min, double max) const;
  int integer(const std::string& key, int min) const;
  double quantity(const std::string& key, Dimension dimension) const;
  bool boolean(const std::string& key) const;
  bool has(const std::string& key) const { return node_[key] && !node_[key].IsNull(); }

  const YAML::Node& node() const { return node_; }
  std::string path(const std::string& key) const { return prefix_.empty() ? key : prefix_ + "." + key; }
  const std::string& source() const { return source_; }

 private:
  YAML::Node require(const std::string& key) const;

  YAML::Node node_;
  std::string source_;
  std::string prefix_;
};

}  // namespace flopwise
