#include "flopwise/pools.hpp"

#include <cmath>
#include <algorithm>
#include <cctype>
#include <fstream>
#include <set>
#include <sstream>

#include "flopwise/error.hpp"
#include "flopwise/yaml_reader.hpp"

namespace flopwise {
namespace {

int parse_count(const std::string& text, const std::string& source, const std::string& field) {
  size_t used = 0;
  long long value = 0;
  try {
    value = std::stoll(text, &used);
  } catch (const std::logic_error&) {
    used = 0;
  }
  if (used == 0 || used != text.size()) throw input_error(source, field, "expected a device count, got '" + text + "'");
  if (value <= 0) throw input_error(source, field, "device count must be positive, got " + text);
  if (value > (1 << 24)) throw input_error(source, field, "device count " + text + " is past any cluster");
  return static_cast<int>(value);
}

bool ends_with(const std::string& text, const std::string& tail) {
  return text.size() >= tail.size() && text.compare(text.size() - tail.size(), tail.size(), tail) == 0;
}

// Quantities on the command line may omit the space before the unit ("100Gb/s").
double parse_compact_quantity(const std::string& text, Dimension dimension, const std::string& source,
                              const std::string& field) {
  size_t unit = 0;
  while (unit < text.size() && (std::isdigit(static_cast<unsigned char>(text[unit])) || text[unit] == '.')) ++unit;
  if (unit == 0 || unit == text.size() || text[unit] == ' ') return parse_quantity(text, dimension, source, field);
  std::string spaced = text.substr(0, unit);
  spaced.push_back(' ');
  spaced.append(text, unit, std::string::npos);
  return parse_quantity(spaced, dimension, source, field);
}

}  // namespace

const PoolSpec* find_pool(const std::vector<PoolSpec>& pools, const std::string& endpoint) {
  for (const PoolSpec& p : pools) {
    if (p.name == endpoint) return &p;
  }
  const PoolSpec* match = nullptr;
  for (const PoolSpec& p : pools) {
    if (!ends_with(p.name, "-" + endpoint)) continue;
    if (match) return nullptr;  // ambiguous
    match = &p;
  }
  return match;
}

PoolSpec parse_pool_option(const std::string& text) {
  const auto colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0) {
    throw input_error("--pool", "", "expected [NAME=]PROFILE:COUNT, got '" + text + "'");
  }
  PoolSpec pool;
  std::string head = text.substr(0, colon);
  if (const auto eq = head.find('='); eq != std::string::npos) {
    pool.name = head.substr(0, eq);
    head = head.substr(eq + 1);
  }
  pool.profile = head;
  if (pool.name.empty()) pool.name = pool.profile;
  if (pool.profile.empty()) throw input_error("--pool", "", "no profile named in '" + text + "'");
  pool.max_devices = parse_count(text.substr(colon + 1), "--pool", text);
  return pool;
}

PoolLinkSpec parse_pool_link_option(const std::string& text, const std::vector<PoolSpec>& pools) {
  const auto colon = text.find(':');
  const auto comma = text.find(',', colon == std::string::npos ? 0 : colon);
  if (colon == std::string::npos || comma == std::string::npos) {
    throw input_error("--pool-link", "", "expected POOL-POOL:BANDWIDTH,LATENCY (e.g. A-C:100Gb/s,2ms), got '" + text + "'");
  }
  const std::string ends = text.substr(0, colon);
  PoolLinkSpec link;
  int splits = 0;
  for (size_t dash = ends.find('-'); dash != std::string::npos; dash = ends.find('-', dash + 1)) {
    const PoolSpec* a = find_pool(pools, ends.substr(0, dash));
    const PoolSpec* b = find_pool(pools, ends.substr(dash + 1));
    if (!a || !b) continue;
    link.a = a->name;
    link.b = b->name;
    ++splits;
  }
  if (splits == 0) throw input_error("--pool-link", ends, "does not name two of the pools given with --pool");
  if (splits > 1) throw input_error("--pool-link", ends, "splits into pools in more than one way; name the pools A=profile:N");
  link.bandwidth = parse_compact_quantity(text.substr(colon + 1, comma - colon - 1), Dimension::kBandwidth, "--pool-link", ends);
  link.latency = parse_compact_quantity(text.substr(comma + 1), Dimension::kTime, "--pool-link", ends);
  return link;
}

std::pair<std::string, double> parse_exchange_rate_option(const std::string& text) {
  const auto eq = text.find('=');
  if (eq == std::string::npos || eq == 0) throw input_error("--exchange-rate", "", "expected CURRENCY=RATE, got '" + text + "'");
  std::istringstream in(text.substr(eq + 1));
  double rate = 0;
  std::string rest;
  if (!(in >> rate) || (in >> rest) || !(rate > 0) || !std::isfinite(rate)) {
    throw input_error("--exchange-rate", text.substr(0, eq), "expected a positive rate, got '" + text.substr(eq + 1) + "'");
  }
  return {text.substr(0, eq), rate};
}

PoolsSpec parse_pools_yaml(const std::string& yaml_text, const std::string& source) {
  const YamlFields root(parse_yaml(yaml_text, source), source, "");
  root.allow_only({"pools", "links", "currency", "exchange_rates"});
  PoolsSpec spec;
  spec.source = source;
  for (const YamlFields& p : root.list("pools")) {
    p.allow_only({"name", "profile", "devices"});
    PoolSpec pool;
    pool.profile = p.text("profile");
    pool.name = p.has("name") ? p.text("name") : pool.profile;
    pool.max_devices = p.integer("devices", 1);
    spec.pools.push_back(pool);
  }
  if (root.has("links")) {
    for (const YamlFields& l : root.list("links")) {
      l.allow_only({"between", "bandwidth", "latency"});
      const YAML::Node between = l.node()["between"];
      if (!between || !between.IsSequence() || between.size() != 2) {
        throw input_error(source, l.path("between"), "expected a list of two pool names");
      }
      PoolLinkSpec link;
      for (int i = 0; i < 2; ++i) {
        const std::string name = between[i].as<std::string>();
        const PoolSpec* pool = find_pool(spec.pools, name);
        if (!pool) throw input_error(source, l.path("between"), "no pool named '" + name + "'");
        (i == 0 ? link.a : link.b) = pool->name;
      }
      link.bandwidth = l.quantity("bandwidth", Dimension::kBandwidth);
      link.latency = l.quantity("latency", Dimension::kTime);
      spec.links.push_back(link);
    }
  }
  if (root.has("currency")) spec.currency = root.text("currency");
  if (root.has("exchange_rates")) {
    const YamlFields rates = root.section("exchange_rates");
    for (const std::string& currency : rates.keys()) spec.exchange_rates[currency] = rates.number(currency, 1e-9, 1e12);
  }
  validate(spec);
  return spec;
}

void add_pool_options(PoolsSpec& spec, const std::vector<std::string>& pools, const std::vector<std::string>& links) {
  for (const std::string& text : pools) spec.pools.push_back(parse_pool_option(text));
  for (const std::string& text : links) spec.links.push_back(parse_pool_link_option(text, spec.pools));
}

PoolsSpec load_pools_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw input_error(path, "", "cannot read the pools file");
  std::stringstream text;
  text << in.rdbuf();
  return parse_pools_yaml(text.str(), path);
}

void validate(const PoolsSpec& spec) {
  const std::string source = spec.source.empty() ? "--pool" : spec.source;
  if (spec.pools.empty()) throw input_error(source, "pools", "name at least one pool");
  std::set<std::string> names;
  for (const PoolSpec& p : spec.pools) {
    if (p.max_devices <= 0) throw input_error(source, p.name + ".devices", "device count must be positive");
    if (!names.insert(p.name).second) throw input_error(source, p.name, "two pools have this name");
  }
  std::set<std::pair<std::string, std::string>> pairs;
  for (const PoolLinkSpec& l : spec.links) {
    const std::string field = "link " + l.a + "-" + l.b;
    if (!names.count(l.a) || !names.count(l.b)) throw input_error(source, field, "links a pool that does not exist");
    if (l.a == l.b) throw input_error(source, field, "links a pool to itself");
    if (!(l.bandwidth > 0)) throw input_error(source, field + ".bandwidth", "must be positive");
    if (!pairs.insert(std::minmax(l.a, l.b)).second) throw input_error(source, field, "two links join the same pools");
  }
}

}  // namespace flopwise
