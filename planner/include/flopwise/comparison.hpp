#pragma once
// A comparison: the best layouts of one model and run on several hardware profiles, and the winner.
// The one place that plans a comparison; the CLI's `compare` and the studio both call it.
#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "flopwise/search.hpp"

namespace flopwise {

struct ProfileResult {
  HardwareProfile profile;
  std::unique_ptr<CostModel> cost;  // null when the profile cannot run the precision
  SearchResult result;
  std::string unsupported;          // why the profile cannot run the precision, one line
  bool searched = false;            // false for profiles a cancel skipped
  const Candidate* top() const { return result.best.empty() ? nullptr : &result.best.front(); }
};

struct Comparison {
  std::vector<ProfileResult> entries;  // in the order the profiles were named
  int best = -1;                       // index of the winning entry; -1 when none has a layout
  bool cancelled = false;
};

struct ComparisonProgress {
  std::function<void(int done, int total)> progress;  // after each profile
  const std::atomic<bool>* cancel = nullptr;          // stops before the next profile
};

// Searches each profile (keeping max(top_k, refine_k) candidates), re-ranks the best `refine_k` by
// simulation, and picks the winner by `options.objective`. InputError for unknown profiles, for
// costs in different currencies (unless the objective is time), and for invalid options.
Comparison compare_profiles(const ModelConfig& model, const TrainingRun& run, const SearchOptions& options,
                            const std::vector<std::string>& profile_names, int refine_k = 0,
                            const ComparisonProgress& hooks = {});

}  // namespace flopwise
