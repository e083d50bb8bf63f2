// Runs the SimGrid step simulation in a child process and brings its result back as JSON:
// SimGrid keeps one engine per process, and a planner re-ranking K candidates needs K runs.
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <functional>
#include <iostream>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "flopwise/error.hpp"
#include "flopwise/step_simulation.hpp"

namespace flopwise {
namespace {

using nlohmann::json;

// Exposed communication by kind, keyed as the step's parts name them, so a kind added there
// travels here too.
json comm_json(const CommBreakdown& c) {
  json j = json::object();
  for (const StepTimePart& part : step_time_parts()) {
    if (part.exposed) j[part.key] = c.*part.exposed;
  }
  return j;
}

CommBreakdown comm_from_json(const json& j) {
  CommBreakdown c;
  for (const StepTimePart& part : step_time_parts()) {
    if (part.exposed) c.*part.exposed = j.at(part.key);
  }
  return c;
}

json to_json(const SimulationResult& r) {
  json devices = json::array();
  for (const DeviceTimes& d : r.devices) {
    devices.push_back({d.rank, d.busy_s, d.comm_s, d.bubble_s, d.idle_s, d.cross_pool_s});
  }
  json pools = json::array();
  for (const PoolTimes& p : r.pools) {
    const CommBreakdown& c = p.exposed_comm_s;
    pools.push_back({p.name, p.step_time_s, p.critical_rank, p.compute_s, p.bubble_s, comm_json(c)});
  }
  return {{"pools", pools}, {"cross_pool_s", r.cross_pool_s}, {"sync_s", r.sync_s},
          {"sync_every_steps", r.sync_every_steps},{"step_time_s", r.step_time_s}, {"critical_rank", r.critical_rank}, {"compute_s", r.compute_s},
          {"comm", comm_json(r.exposed_comm_s)},
          {"bubble_s", r.bubble_s}, {"devices", devices}, {"simulated_devices", r.simulated_devices},
          {"total_devices", r.total_devices}, {"messages", r.messages}, {"wall_s", r.wall_s},
          {"approximation", r.approximation}};
}

SimulationResult from_json(const json& j) {
  SimulationResult r;
  r.step_time_s = j.at("step_time_s");
  r.critical_rank = j.at("critical_rank");
  r.compute_s = j.at("compute_s");
  r.exposed_comm_s = comm_from_json(j.at("comm"));
  r.bubble_s = j.at("bubble_s");
  for (const auto& d : j.at("devices")) r.devices.push_back(DeviceTimes{d[0], d[1], d[2], d[3], d[4], d[5]});
  for (const auto& p : j.at("pools")) r.pools.push_back(PoolTimes{p[0], p[1], p[2], p[3], comm_from_json(p[5]), p[4]});
  r.cross_pool_s = j.at("cross_pool_s");
  r.sync_s = j.at("sync_s");
  r.sync_every_steps = j.at("sync_every_steps");
  r.simulated_devices = j.at("simulated_devices");
  r.total_devices = j.at("total_devices");
  r.messages = j.at("messages");
  r.wall_s = j.at("wall_s");
  r.approximation = j.at("approximation");
  return r;
}

void write_all(int fd, const std::string& text) {
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n <= 0) return;
    done += static_cast<size_t>(n);
  }
}

std::string read_all(int fd) {
  std::string text;
  char buffer[65536];
  ssize_t n;
  while ((n = ::read(fd, buffer, sizeof buffer)) > 0) text.append(buffer, static_cast<size_t>(n));
  return text;
}

// Runs `simulation` in a child process and brings its result back.
SimulationResult in_child(const std::function<SimulationResult()>& simulation) {
  // Unflushed output would otherwise be written twice, once by each process.
  std::cout.flush();
  std::cerr.flush();
  std::fflush(nullptr);
  int fds[2];
  if (::pipe(fds) != 0) throw std::runtime_error(std::string("simulate: pipe: ") + std::strerror(errno));
  const pid_t child = ::fork();
  if (child < 0) throw std::runtime_error(std::string("simulate: fork: ") + std::strerror(errno));
  if (child == 0) {
    ::close(fds[0]);
    json answer;
    try {
      answer = {{"result", to_json(simulation())}};
    } catch (const InputError& e) {
      answer = {{"input_error", e.what()}};
    } catch (const std::exception& e) {
      answer = {{"error", e.what()}};
    }
    write_all(fds[1], answer.dump());
    ::close(fds[1]);
    ::_exit(0);  // skip static destructors shared with the parent
  }
  ::close(fds[1]);
  const std::string text = read_all(fds[0]);
  ::close(fds[0]);
  int status = 0;
  ::waitpid(child, &status, 0);
  if (text.empty()) {
    throw std::runtime_error("simulation process died" +
                             (WIFSIGNALED(status) ? " on signal " + std::to_string(WTERMSIG(status)) : std::string()));
  }
  const json answer = json::parse(text);
  if (answer.contains("input_error")) throw InputError(answer["input_error"].get<std::string>());
  if (answer.contains("error")) throw std::runtime_error("simulation failed: " + answer["error"].get<std::string>());
  return from_json(answer.at("result"));
}

}  // namespace

SimulationResult simulate_step(const CostModel& cost, const Layout& layout, const SimulationOptions& options) {
  return in_child([&] { return simulate_step_in_process(cost, layout, options); });
}

SimulationResult simulate_mixed_step(const MixedPlan& plan, const std::vector<const CostModel*>& costs,
                                     const SimulationOptions& options) {
  return in_child([&] { return simulate_mixed_step_in_process(plan, costs, options); });
}

}  // namespace flopwise
