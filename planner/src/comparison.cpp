#include "flopwise/comparison.hpp"

#include <algorithm>
#include <exception>
#include <mutex>
#include <set>
#include <system_error>
#include <thread>

#include "flopwise/catalog.hpp"
#include "flopwise/error.hpp"
#include "flopwise/plan_builder.hpp"

namespace flopwise {

namespace {

// One profile's search reads only its own const CostModel, so the profiles search side by side, a
// thread per core, instead of queueing on one. Workers take the profiles in order and check for a
// cancel before each; a failure does not stop the others, so the error reported is the one a serial
// search would have met first.
void search_profiles(Comparison& c, const ModelConfig& model, const TrainingRun& run, const SearchOptions& wide,
                     const ComparisonProgress& hooks) {
  const size_t n = c.entries.size();
  std::vector<std::exception_ptr> failures(n);
  std::atomic<size_t> next{0};
  std::mutex progress_mutex;
  int done = 0;
  auto worker = [&] {
    for (size_t i = next++; i < n; i = next++) {
      if (hooks.cancel && hooks.cancel->load()) break;
      ProfileResult& e = c.entries[i];
      e.searched = true;
      try {
        if (e.unsupported.empty()) {
          e.cost = std::make_unique<CostModel>(model, run, e.profile);
          e.result = search(*e.cost, wide);
        }
        const std::lock_guard<std::mutex> lock(progress_mutex);
        if (hooks.progress) hooks.progress(++done, static_cast<int>(n));
      } catch (...) {
        // Thrown on a worker, it would end the process: the caller's thread rethrows it.
        failures[i] = std::current_exception();
      }
    }
  };
  const size_t threads = std::min<size_t>(n, std::max(1u, std::thread::hardware_concurrency()));
  std::vector<std::thread> pool;
  for (size_t t = 1; t < threads; ++t) {
    try {
      pool.emplace_back(worker);
    } catch (const std::system_error&) {
      break;  // no more threads to be had: the ones started, and this one, take the rest
    }
  }
  worker();
  for (std::thread& t : pool) t.join();
  for (const std::exception_ptr& f : failures) {
    if (f) std::rethrow_exception(f);
  }
}

// A cancel can leave a later profile searched after an earlier one was skipped: results are the
// profiles before the first skipped one.
void keep_searched_prefix(Comparison& c) {
  const auto skipped = std::find_if(c.entries.begin(), c.entries.end(), [](const ProfileResult& e) { return !e.searched; });
  if (skipped == c.entries.end()) return;
  c.cancelled = true;
  for (auto e = skipped; e != c.entries.end(); ++e) {
    e->searched = false;
    e->cost.reset();
    e->result = SearchResult{};
  }
}

}  // namespace

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
  search_profiles(c, model, run, wide, hooks);
  keep_searched_prefix(c);
  // Refining simulates on SimGrid, whose engine is one per process: profile after profile.
  for (size_t i = 0; i < c.entries.size() && c.entries[i].searched; ++i) {
    ProfileResult& e = c.entries[i];
    if (refine_k > 0 && !e.result.best.empty()) refine(*e.cost, e.result.best, refine_k, options.objective);
    const Candidate* top = e.top();
    if (top && (c.best < 0 || better(top->best_estimate(), c.entries[c.best].top()->best_estimate(), options.objective))) {
      c.best = static_cast<int>(i);
    }
  }
  return c;
}

}  // namespace flopwise
