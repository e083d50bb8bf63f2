#include "flopwise/catalog.hpp"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "flopwise/error.hpp"

namespace flopwise {
namespace {

std::vector<std::string> names_of(const std::vector<std::pair<std::string, std::string>>& texts) {
  std::vector<std::string> names;
  for (const auto& [name, text] : texts) names.push_back(name);
  return names;
}

std::string joined(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& name : names) out += (out.empty() ? "" : ", ") + name;
  return out;
}

}  // namespace

std::vector<std::string> builtin_profile_names() { return names_of(builtin_profile_texts()); }
std::vector<std::string> builtin_preset_names() { return names_of(builtin_preset_texts()); }

std::string profile_text(const std::string& name_or_path, std::string& source) {
  for (const auto& [name, text] : builtin_profile_texts()) {
    if (name == name_or_path) {
      source = "built-in profile " + name;
      return text;
    }
  }
  if (!std::filesystem::exists(name_or_path)) {
    throw input_error(name_or_path, "", "no such profile file or built-in profile (built-in: " +
                                            joined(builtin_profile_names()) + ")");
  }
  std::ifstream in(name_or_path);
  if (!in) throw input_error(name_or_path, "", "cannot open hardware profile");
  std::ostringstream text;
  text << in.rdbuf();
  source = name_or_path;
  return text.str();
}

HardwareProfile resolve_profile(const std::string& name_or_path) {
  std::string source;
  const std::string text = profile_text(name_or_path, source);
  return parse_hardware_profile(text, source);
}

std::vector<std::string> ling_report_devices() {
  return {"device-A", "device-B", "device-C", "device-D", "device-E"};
}

}  // namespace flopwise
