#pragma once
// Seeded mutations of input files for the fuzz tests: structural ones for JSON, textual ones for YAML.
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace flopwise::testing {

using nlohmann::json;

// Values of every wrong kind: types, signs, sizes past int and double, units, empties.
inline const std::vector<json>& json_replacements() {
  static const std::vector<json> values = {
      "x",  "", -1, 0, 1, 3.5, -2.5, 1e308, -1e308, 2147483648LL, 9223372036854775807LL,
      json(18446744073709551615ULL), nullptr, true, false, json::array(), json::object(), json::array({1, "a"}),
      "80 XB", "-5 GB", "1e999", "line\nbreak"};
  return values;
}

inline void collect(const json& node, const json::json_pointer& at, std::vector<json::json_pointer>& paths) {
  if (!at.empty()) paths.push_back(at);
  if (node.is_object()) {
    for (auto it = node.begin(); it != node.end(); ++it) collect(it.value(), at / it.key(), paths);
  } else if (node.is_array()) {
    for (size_t i = 0; i < node.size(); ++i) collect(node[i], at / i, paths);
  }
}

// One structural mutation: a field removed, or replaced by a value of another kind; now and then
// the text cut short (malformed JSON).
inline std::string mutate_json(const json& seed, std::mt19937& rng) {
  json doc = seed;
  std::vector<json::json_pointer> paths;
  collect(doc, json::json_pointer(), paths);
  const int mutations = 1 + static_cast<int>(rng() % 2);
  for (int m = 0; m < mutations && !paths.empty(); ++m) {
    const json::json_pointer at = paths[rng() % paths.size()];
    if (!doc.contains(at)) continue;
    if (rng() % 4 == 0) {
      json& parent = doc[at.parent_pointer()];
      if (parent.is_object()) parent.erase(at.back());
      if (parent.is_array()) parent.erase(std::stoul(at.back()));
      paths.clear();
      collect(doc, json::json_pointer(), paths);
    } else {
      const auto& values = json_replacements();
      doc[at] = values[rng() % values.size()];
    }
  }
  std::string text = doc.dump(1);
  if (rng() % 20 == 0) text.resize(rng() % text.size());
  return text;
}

// Text mutations for YAML: a value replaced, a line dropped or repeated, a bracket left open, a cut.
inline std::string mutate_yaml(const std::string& seed, std::mt19937& rng) {
  static const std::vector<std::string> tokens = {"-1", "0", "1e400", "abc", "[1, 2]", "{a: 1}", "", "\"80 XB\"",
                                                  "null", "true", "99999999999", "\"-3 GB/s\"", "nan", "-0.5",
                                                  "\"5 parsecs\"", "{", "[", "2.5e-300"};
  std::vector<std::string> lines;
  std::istringstream in(seed);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  const int mutations = 1 + static_cast<int>(rng() % 2);
  for (int m = 0; m < mutations; ++m) {
    std::string& line = lines[rng() % lines.size()];
    switch (rng() % 5) {
      case 0: {  // the value after a key, or inside a flow map, replaced
        const size_t colon = line.find(':', rng() % std::max<size_t>(1, line.size()));
        const size_t at = colon == std::string::npos ? line.find(':') : colon;
        if (at == std::string::npos) break;
        const size_t end = line.find_first_of(",}", at + 1);
        line = line.substr(0, at + 1) + " " + tokens[rng() % tokens.size()] +
               (end == std::string::npos ? "" : line.substr(end));
        break;
      }
      case 1: line.clear(); break;
      case 2: line = line + "\n" + line; break;
      case 3: line.insert(rng() % (line.size() + 1), "{"); break;
      default: line = line.substr(0, rng() % (line.size() + 1)); break;
    }
  }
  std::string text;
  for (const auto& line : lines) text += line + "\n";
  return text;
}

}  // namespace flopwise::testing
