#include "flopwise/executor/process_groups.hpp"

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <numeric>

#include "flopwise/error.hpp"
#include "flopwise/executor/spec.hpp"

namespace flopwise::executor {
namespace {

// Where Gloo listens: GLOO_SOCKET_IFNAME as in PyTorch; loopback when the master is local (no
// hostname lookup, which can hang on machines without DNS); else the host's resolved address.
std::shared_ptr<::gloo::transport::Device> gloo_device() {
  static std::shared_ptr<::gloo::transport::Device> device = [] {
    if (const char* interface = std::getenv("GLOO_SOCKET_IFNAME")) {
      return c10d::ProcessGroupGloo::createDeviceForInterface(interface);
    }
    const char* master = std::getenv("MASTER_ADDR");
    const std::string address = master ? master : "127.0.0.1";
    if (address == "127.0.0.1" || address == "localhost") {
      return c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1");
    }
    return c10d::ProcessGroupGloo::createDefaultDevice();
  }();
  return device;
}

Group make_group(const c10::intrusive_ptr<c10d::Store>& store, const std::string& name, const std::vector<int>& members,
                 int rank) {
  const auto at = std::find(members.begin(), members.end(), rank);
  if (members.size() < 2 || at == members.end()) return {};
  auto options = c10d::ProcessGroupGloo::Options::create();
  options->devices.push_back(gloo_device());
  return c10::make_intrusive<c10d::ProcessGroupGloo>(c10::make_intrusive<c10d::PrefixStore>(name, store),
                                                     static_cast<int>(at - members.begin()),
                                                     static_cast<int>(members.size()), options);
}

}  // namespace

int env_int(const char* name) {
  const char* value = std::getenv(name);
  if (!value) throw input_error("environment", name, "is not set");
  try {
    return std::stoi(value);
  } catch (const std::exception&) {
    throw input_error("environment", name, std::string("expected an integer, got '") + value + "'");
  }
}

Groups build_groups(const Layout& layout, int rank, int world) {
  const char* host = std::getenv("MASTER_ADDR");
  c10d::TCPStoreOptions store_options;
  store_options.port = static_cast<uint16_t>(env_int("MASTER_PORT"));
  store_options.isServer = rank == 0;
  store_options.numWorkers = world;
  store_options.timeout = std::chrono::seconds(120);
  auto store = c10::make_intrusive<c10d::TCPStore>(host ? host : "127.0.0.1", store_options);
  Groups g;
  std::vector<int> everyone(world);
  std::iota(everyone.begin(), everyone.end(), 0);
  g.world = make_group(store, "world", everyone, rank);
  auto named = [&](const std::string& kind, const std::vector<int>& members) {
    return make_group(store, kind + "/" + std::to_string(members.front()), members, rank);
  };
  const GroupMembers members = group_members(layout, rank);
  g.tp = named("tp", members.tp);
  g.dp = named("dp", members.dp);
  g.ep = named("ep", members.ep);
  g.expert_dp = named("edp", members.expert_dp);
  return g;
}

}  // namespace flopwise::executor
