#pragma once
// What ships inside the binary: model presets and hardware profiles, looked up by name.
#include <string>
#include <utility>
#include <vector>

#include "flopwise/hardware_profile.hpp"

namespace flopwise {

// Generated at build time from planner/presets/*.json and hardware_profiles/*.yaml.
const std::vector<std::pair<std::string, std::string>>& builtin_preset_texts();
const std::vector<std::pair<std::string, std::string>>& builtin_profile_texts();

std::vector<std::string> builtin_profile_names();
std::vector<std::string> builtin_preset_names();

// A built-in profile name ("device-D", "h100-sxm") or a path to a YAML file.
HardwareProfile resolve_profile(const std::string& name_or_path);
// The YAML text of that profile, and in `source` the name its messages use.
std::string profile_text(const std::string& name_or_path, std::string& source);

// The Ling report's five device types, the main job's default comparison.
std::vector<std::string> ling_report_devices();

}  // namespace flopwise
