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

namespace {

// The key-value store the groups meet in. Under torchrun's static rendezvous its agent on node 0
// already serves a store at MASTER_ADDR:MASTER_PORT and says so (TORCHELASTIC_USE_AGENT_STORE,
// as PyTorch's env:// rendezvous reads it): every rank joins that one as a client, under a prefix
// per restart; otherwise rank 0 serves it.
c10::intrusive_ptr<c10d::Store> rendezvous_store(int rank, int world) {
  const char* host = std::getenv("MASTER_ADDR");
  const char* agent_store = std::getenv("TORCHELASTIC_USE_AGENT_STORE");
  const bool use_agent_store = agent_store && std::string(agent_store) == "True";
  c10d::TCPStoreOptions options;
  options.port = static_cast<uint16_t>(env_int("MASTER_PORT"));
  options.isServer = rank == 0 && !use_agent_store;
  if (!use_agent_store) options.numWorkers = world;
  options.timeout = std::chrono::seconds(120);
  auto store = c10::make_intrusive<c10d::TCPStore>(host ? host : "127.0.0.1", options);
  if (!use_agent_store) return store;
  const char* restarts = std::getenv("TORCHELASTIC_RESTART_COUNT");
  return c10::make_intrusive<c10d::PrefixStore>(std::string("/worker/attempt_") + (restarts ? restarts : "0"), store);
}

}  // namespace

Groups build_groups(const GroupMembers& members, int rank, int world) {
  const auto store = rendezvous_store(rank, world);
  Groups g;
  std::vector<int> everyone(world);
  std::iota(everyone.begin(), everyone.end(), 0);
  g.world = make_group(store, "world", everyone, rank);
  auto named = [&](const std::string& kind, const std::vector<int>& members) {
    return make_group(store, kind + "/" + std::to_string(members.front()), members, rank);
  };
  g.tp = named("tp", members.tp);
  g.dp = named("dp", members.dp);
  g.ep = named("ep", members.ep);
  g.expert_dp = named("edp", members.expert_dp);
  g.cross_pool = named("xpool", members.cross_pool);
  g.replica = static_cast<int>(members.replica.size()) == world ? g.world : named("replica", members.replica);
  return g;
}

}  // namespace flopwise::executor
