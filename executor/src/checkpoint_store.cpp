#include "flopwise/executor/checkpoint_store.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "flopwise/json_reader.hpp"

namespace flopwise::executor {

namespace fs = std::filesystem;
using nlohmann::json;

uint64_t fnv1a_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  uint64_t h = 1469598103934665603ull;
  char buffer[65536];
  while (in.read(buffer, sizeof buffer) || in.gcount() > 0) {
    for (std::streamsize i = 0; i < in.gcount(); ++i) h = (h ^ static_cast<unsigned char>(buffer[i])) * 1099511628211ull;
  }
  return h;
}

void write_atomically(const std::string& path, const std::function<void(const std::string&)>& write) {
  const std::string partial = path + ".partial";
  write(partial);
  fs::rename(partial, path);
}

std::string CheckpointStore::folder(int step) const {
  char name[32];
  std::snprintf(name, sizeof name, "step-%08d", step);
  return (fs::path(root_) / name).string();
}

std::string CheckpointStore::file(int step, const std::string& suffix) const {
  return folder(step) + "/rank-" + std::to_string(rank_) + suffix;
}

std::string CheckpointStore::tensors_path(int step) const { return file(step, ".pt"); }

void CheckpointStore::save_in_background(int step, std::string tensors, json state, int delay_ms) {
  finish();
  fs::create_directories(folder(step));
  writing_ = {step, 0, static_cast<double>(tensors.size()), std::chrono::steady_clock::now()};
  writer_ = std::thread([this, step, tensors = std::move(tensors), state = std::move(state), delay_ms] {
    const auto start = writing_.started;
    write_atomically(file(step, ".pt"), [&](const std::string& path) {
      std::ofstream(path, std::ios::binary).write(tensors.data(), static_cast<std::streamsize>(tensors.size()));
    });
    if (delay_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
    write_rest(step, state);
    writing_.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  });
}

BackgroundWrite CheckpointStore::finish() {
  if (!writer_.joinable()) return {};
  writer_.join();
  const BackgroundWrite done = writing_;
  writing_ = {};
  return done;
}

void CheckpointStore::write_rest(int step, const json& state) const {
  write_atomically(file(step, ".json"), [&](const std::string& path) { std::ofstream(path) << state.dump() << "\n"; });
  // The manifest comes last: a checkpoint without one, or whose files do not match it, is not used.
  write_atomically(file(step, ".manifest"), [&](const std::string& path) {
    std::ofstream(path) << json{{"step", step},
                                {"pt", std::to_string(fnv1a_file(file(step, ".pt")))},
                                {"json", std::to_string(fnv1a_file(file(step, ".json")))}}
                               .dump()
                        << "\n";
  });
}

bool CheckpointStore::intact(int step) const {
  std::ifstream in(file(step, ".manifest"));
  if (!in) return false;
  const json manifest = json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (!manifest.is_object()) return false;
  const auto matches = [&](const char* key, const std::string& suffix) {
    return manifest.contains(key) && manifest[key].is_string() &&
           manifest[key].get<std::string>() == std::to_string(fnv1a_file(file(step, suffix)));
  };
  return matches("pt", ".pt") && matches("json", ".json");
}

std::vector<int> CheckpointStore::steps_newest_first() const {
  std::vector<int> steps;
  if (!fs::exists(root_)) return steps;
  for (const auto& entry : fs::directory_iterator(root_)) {
    const std::string name = entry.path().filename().string();
    if (name.size() != 13 || name.rfind("step-", 0) != 0) continue;
    if (!std::all_of(name.begin() + 5, name.end(), [](char c) { return c >= '0' && c <= '9'; })) continue;
    steps.push_back(std::stoi(name.substr(5)));
  }
  std::sort(steps.rbegin(), steps.rend());
  return steps;
}

json CheckpointStore::state(int step) const { return load_json_file(file(step, ".json")); }

}  // namespace flopwise::executor
