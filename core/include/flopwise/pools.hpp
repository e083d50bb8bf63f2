#pragma once
// Device pools: what a team owns or can rent, several device types in one or more clusters, and the
// links that join clusters. Read from `--pool` / `--pool-link` options or a small YAML file; the
// planner resolves the profiles and plans across the pools.
#include <map>
#include <string>
#include <vector>

#include "flopwise/units.hpp"

namespace flopwise {

// Up to `max_devices` devices of one hardware profile.
struct PoolSpec {
  std::string name;     // how links and plans name the pool (default: the profile's name)
  std::string profile;  // profile name or file
  int max_devices = 0;
  bool operator==(const PoolSpec&) const = default;
};

// A link between two clusters: its whole bandwidth (one direction, shared by all traffic that
// crosses it) and its latency. Pools without a stated link share one cluster network.
struct PoolLinkSpec {
  std::string a, b;  // pool names
  BytesPerSecond bandwidth = 0;
  Seconds latency = 0;
  bool operator==(const PoolLinkSpec&) const = default;
};

struct PoolsSpec {
  std::vector<PoolSpec> pools;
  std::vector<PoolLinkSpec> links;
  // Units of the plan's currency per unit of another currency ("USD: 7.2" prices a USD pool in
  // RMB when the plan's currency is RMB). The plan's currency is `currency`, or the first pool's.
  std::map<std::string, double> exchange_rates;
  std::string currency;
  std::string source;  // file or "--pool", for messages
};

// "[name=]profile:count", e.g. "device-A:600" or "A=device-A:600".
PoolSpec parse_pool_option(const std::string& text);
// "A-C:100Gb/s,2ms": endpoints name pools (or the unique pool whose name ends in "-A"); the split
// at a dash must leave exactly one pair of pools.
PoolLinkSpec parse_pool_link_option(const std::string& text, const std::vector<PoolSpec>& pools);
// "USD=7.2"
std::pair<std::string, double> parse_exchange_rate_option(const std::string& text);
// Adds pools and links given in the option syntax above (--pool, --pool-link, a studio scenario)
// to `spec`: the pools first, so that links can name them.
void add_pool_options(PoolsSpec& spec, const std::vector<std::string>& pools, const std::vector<std::string>& links);
// A pools file: `pools:` (name, profile, devices), optional `links:` (between: [a, b], bandwidth,
// latency), `currency:` and `exchange_rates:`.
PoolsSpec parse_pools_yaml(const std::string& yaml_text, const std::string& source);
PoolsSpec load_pools_file(const std::string& path);
// Names unique, counts positive, links between two different existing pools, at most one per pair.
void validate(const PoolsSpec& spec);

// The pool a link endpoint names, or nullptr.
const PoolSpec* find_pool(const std::vector<PoolSpec>& pools, const std::string& endpoint);

}  // namespace flopwise
