#include "flopwise/json_reader.hpp"

#include <cmath>
#include <fstream>
#include <sstream>

namespace flopwise {

using nlohmann::json;

std::string read_text_file(const std::string& path, const std::string& what) {
  std::ifstream in(path);
  if (!in) throw input_error(path, "", "cannot open " + what);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

json parse_json(const std::string& text, const std::string& source) {
  try {
    return json::parse(text);
  } catch (const json::parse_error& e) {
    throw input_error(source, "", std::string("malformed JSON: ") + e.what());
  }
}

json load_json_file(const std::string& path) { return parse_json(read_text_file(path, "JSON file"), path); }

JsonFields::JsonFields(const json& node, std::string source, std::string path)
    : node_(&node), source_(std::move(source)), path_(std::move(path)) {
  if (!node_->is_object()) throw input_error(source_, path_, "expected a JSON object, got " + node_->dump());
}

InputError JsonFields::error(const std::string& key, const std::string& problem) const {
  return input_error(source_, where(key), problem);
}

bool JsonFields::has(const std::string& key) const { return node_->contains(key) && !(*node_)[key].is_null(); }

const json& JsonFields::get(const std::string& key) const {
  if (!has(key)) throw error(key, "missing field");
  return (*node_)[key];
}

JsonFields JsonFields::child(const std::string& key) const { return JsonFields(get(key), source_, where(key)); }

std::vector<JsonFields> JsonFields::objects(const std::string& key) const {
  const json& list = get(key);
  if (!list.is_array()) throw error(key, "expected a list, got " + list.dump());
  std::vector<JsonFields> items;
  for (size_t i = 0; i < list.size(); ++i) items.emplace_back(list[i], source_, where(key) + "[" + std::to_string(i) + "]");
  return items;
}

double JsonFields::number(const std::string& key, double min, double max) const {
  const json& v = get(key);
  if (!v.is_number()) throw error(key, "expected a number, got " + v.dump());
  const double value = v.get<double>();
  if (!std::isfinite(value) || value < min || value > max) {
    std::ostringstream range;
    range << "out of range: " << v.dump() << " (expected " << min << " to " << max << ")";
    throw error(key, range.str());
  }
  return value;
}

int JsonFields::integer(const std::string& key, long long min, long long max) const {
  const json& v = get(key);
  if (!v.is_number_integer()) throw error(key, "expected an integer, got " + v.dump());
  // Unsigned values above 2^63 do not fit the signed read: treat them as out of range.
  const bool huge = v.is_number_unsigned() && v.get<unsigned long long>() > static_cast<unsigned long long>(max);
  const long long value = huge ? max : v.get<long long>();
  if (huge || value < min || value > max) {
    throw error(key, "out of range: " + v.dump() + " (expected " + std::to_string(min) + " to " + std::to_string(max) + ")");
  }
  return static_cast<int>(value);
}

std::string JsonFields::text(const std::string& key) const {
  const json& v = get(key);
  if (!v.is_string()) throw error(key, "expected a string, got " + v.dump());
  return v.get<std::string>();
}

bool JsonFields::boolean(const std::string& key) const {
  const json& v = get(key);
  if (!v.is_boolean()) throw error(key, "expected true or false, got " + v.dump());
  return v.get<bool>();
}

std::vector<std::string> JsonFields::texts(const std::string& key) const {
  const json& v = get(key);
  if (!v.is_array()) throw error(key, "expected a list of strings, got " + v.dump());
  std::vector<std::string> items;
  for (size_t i = 0; i < v.size(); ++i) {
    if (!v[i].is_string()) throw error(key, "[" + std::to_string(i) + "]: expected a string, got " + v[i].dump());
    items.push_back(v[i].get<std::string>());
  }
  return items;
}

}  // namespace flopwise
