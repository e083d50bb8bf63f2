#pragma once
// The one typed way to read JSON inputs (plans, model configs, scenarios, traces): every wrong
// type, missing key or out-of-range value becomes an InputError "file: a.b[3].c: problem".
#include <limits>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "flopwise/error.hpp"

namespace flopwise {

// The whole text of a file; InputError naming it when it cannot be read.
std::string read_text_file(const std::string& path, const std::string& what);
// Parses JSON text, turning syntax errors into "source: malformed JSON ..." input errors.
nlohmann::json parse_json(const std::string& text, const std::string& source);
nlohmann::json load_json_file(const std::string& path);

class JsonFields {
 public:
  // `node` must be an object; `path` is where it sits in the file ("" for the root).
  JsonFields(const nlohmann::json& node, std::string source, std::string path = "");

  bool has(const std::string& key) const;  // present and not null
  const nlohmann::json& get(const std::string& key) const;
  JsonFields child(const std::string& key) const;
  // Objects of an array field, each with its index in the path.
  std::vector<JsonFields> objects(const std::string& key) const;

  double number(const std::string& key, double min = std::numeric_limits<double>::lowest(),
                double max = std::numeric_limits<double>::max()) const;
  int integer(const std::string& key, long long min = std::numeric_limits<int>::min(),
              long long max = std::numeric_limits<int>::max()) const;
  std::string text(const std::string& key) const;
  bool boolean(const std::string& key) const;
  std::vector<std::string> texts(const std::string& key) const;

  // Optional fields: the default only where the format says a field may be absent.
  double number_or(const std::string& key, double fallback) const { return has(key) ? number(key) : fallback; }
  int integer_or(const std::string& key, int fallback) const { return has(key) ? integer(key) : fallback; }
  bool boolean_or(const std::string& key, bool fallback) const { return has(key) ? boolean(key) : fallback; }

  std::string where(const std::string& key) const { return path_.empty() ? key : path_ + "." + key; }
  InputError error(const std::string& key, const std::string& problem) const;
  const std::string& source() const { return source_; }
  const std::string& path() const { return path_; }
  const nlohmann::json& node() const { return *node_; }

 private:
  const nlohmann::json* node_;
  std::string source_;
  std::string path_;
};

}  // namespace flopwise
