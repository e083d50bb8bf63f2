#include "flopwise/comparison.hpp"

#include <set>

#include "flopwise/catalog.hpp"
#include "flopwise/error.hpp"
#include "flopwise/plan_builder.hpp"

namespace flopwise {

Comparison compare_profiles(const ModelConfig& model, const TrainingRun& run, const SearchOptions& options,
                            const std::vector<std::string>& profile_names, int refine_k,
                            const ComparisonProgress& hooks) {
  validate(run, "run");
  validate(options, "search");
  if (profile_names.empty()) throw input_error("--profiles", "", "name at least one profile");
  if (refine_k < 0) throw input_error("--refine", "", "must be >= 0");
  Comparison c;
  std::set<std::string> currencies;
  for (const std::string& name : profile_names) {
    ProfileResult entry;
    entry.profile = resolve_profile(name);
    if (auto why = precision_unsupported(entry.profile, run.precision)) entry.unsupported = *why;
    currencies.insert(entry.profile.device.currency);
    c.entries.push_back(std::move(entry));
  }
  if (currencies.size() > 1 && options.objective != Objective::kMinTime) {
    throw input_error("--profiles", "", "profiles price in different currencies; compare costs in one currency");
  }
  SearchOptions wide = options;
  wide.top_k = std::max(options.top_k, refine_k);
  for (size_t i = 0; i < c.entries.size(); ++i) {
    if (hooks.cancel && hooks.cancel->load()) {
      c.cancelled = true;
      break;
    }
    ProfileResult& e = c.entries[i];
    e.searched = true;
    if (e.unsupported.empty()) {
      e.cost = std::make_unique<CostModel>(model, run, e.profile);
      e.result = search(*e.cost, wide);
      if (refine_k > 0 && !e.result.best.empty()) refine(*e.cost, e.result.best, refine_k, options.objective);
      const Candidate* top = e.top();
      if (top && (c.best < 0 || better(top->best_estimate(), c.entries[c.best].top()->best_estimate(), options.objective))) {
        c.best = static_cast<int>(i);
      }
    }
    if (hooks.progress) hooks.progress(static_cast<int>(i) + 1, static_cast<int>(c.entries.size()));
  }
  return c;
}

}  // namespace flopwise
