#pragma once
// Text and JSON output of a plan over device pools: the single-pool plans beside the mixed ones.
#include <ostream>

#include <nlohmann/json.hpp>

#include "flopwise/mixed_pools.hpp"

namespace flopwise {

// "device-A 512 + device-C 256": the pools a mixed plan uses and their device counts.
std::string pools_label(const MixedPlan& plan);

// True when the best mixed plan ranks before the best single-pool plan.
bool mixed_wins(const PoolSearchResult& result, Objective objective);

void print_pools(std::ostream& out, const PoolSet& set);
void print_pool_plans(std::ostream& out, const PoolSet& set, const PoolSearchResult& result, Objective objective);
// Which pool does what in one mixed plan, its links, and its step-time and memory lines.
void print_mixed_detail(std::ostream& out, const MixedCandidate& candidate);
nlohmann::json pool_plans_json(const PoolSet& set, const PoolSearchResult& result, Objective objective);

}  // namespace flopwise
