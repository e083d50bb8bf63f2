#pragma once
// Checkpoints on disk, one folder per step and files per rank: written then renamed, with a
// manifest of FNV-1a checksums written last, so a checkpoint is either whole or recognisably not.
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace flopwise::executor {

// FNV-1a of a file's bytes (0xcbf29ce484222325 for an empty or missing file).
uint64_t fnv1a_file(const std::string& path);
// Calls write(partial) and renames the partial file to `path`.
void write_atomically(const std::string& path, const std::function<void(const std::string&)>& write);

class CheckpointStore {
 public:
  CheckpointStore(std::string root, int rank) : root_(std::move(root)), rank_(rank) {}

  // This rank's files of `step`: the tensors through `write_tensors(path)`, the run state, and
  // the manifest last.
  void save(int step, const std::function<void(const std::string&)>& write_tensors, const nlohmann::json& state) const;
  // True when this rank's files of `step` match their manifest.
  bool intact(int step) const;
  // Steps with a folder, newest first.
  std::vector<int> steps_newest_first() const;
  std::string tensors_path(int step) const;
  nlohmann::json state(int step) const;
  std::string folder(int step) const;

 private:
  std::string file(int step, const std::string& suffix) const;
  std::string root_;
  int rank_;
};

}  // namespace flopwise::executor
