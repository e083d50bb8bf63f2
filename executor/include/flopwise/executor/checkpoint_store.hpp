#pragma once
// Checkpoints on disk, one folder per step and files per rank: written then renamed, with a
// manifest of FNV-1a checksums written last, so a checkpoint is either whole or recognisably not.
#include <chrono>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

namespace flopwise::executor {

// FNV-1a of a file's bytes (0xcbf29ce484222325 for an empty or missing file).
uint64_t fnv1a_file(const std::string& path);
// Calls write(partial) and renames the partial file to `path`.
void write_atomically(const std::string& path, const std::function<void(const std::string&)>& write);

// How long the last background write took, measured in its thread.
struct BackgroundWrite {
  int step = -1;  // -1: none
  double seconds = 0;
  double bytes = 0;  // the tensors written
  std::chrono::steady_clock::time_point started;
};

class CheckpointStore {
 public:
  CheckpointStore(std::string root, int rank) : root_(std::move(root)), rank_(rank) {}
  CheckpointStore(const CheckpointStore&) = delete;
  CheckpointStore& operator=(const CheckpointStore&) = delete;
  ~CheckpointStore() { finish(); }

  // This rank's files of `step`, written by a background thread: the serialised tensors (the
  // snapshot, already in memory), the run state, then the manifest, each written then renamed.
  // Waits first for the write before it (one in flight). `delay_ms` holds the thread between the
  // tensors and the state, as slow storage would (testing).
  void save_in_background(int step, std::string tensors, nlohmann::json state, int delay_ms = 0);
  // Waits for the write in flight, if any, and says what it took.
  BackgroundWrite finish();
  // True when this rank's files of `step` match their manifest.
  bool intact(int step) const;
  // Steps with a folder, newest first.
  std::vector<int> steps_newest_first() const;
  std::string tensors_path(int step) const;
  nlohmann::json state(int step) const;
  std::string folder(int step) const;

 private:
  std::string file(int step, const std::string& suffix) const;
  void write_rest(int step, const nlohmann::json& state) const;  // the state, then the manifest
  std::string root_;
  int rank_;
  std::thread writer_;
  BackgroundWrite writing_;  // seconds set by the writer thread, read after joining it
};

}  // namespace flopwise::executor
