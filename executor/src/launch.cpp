// The local launcher: one child process per rank with the torchrun-style environment.
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <map>

#include "flopwise/executor/spec.hpp"
#include "flopwise/plan.hpp"
#include "flopwise/executor/trainer.hpp"

namespace flopwise::executor {
namespace {

int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  socklen_t length = sizeof address;
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    throw InputError("launcher: cannot find a free local port");
  }
  const int port = ntohs(address.sin_port);
  ::close(fd);
  return port;
}

// With no more ranks than allowed cores, rank r keeps to the r-th core: one rank per core, as the
// trainer's single compute thread assumes, and no scheduler moving two ranks onto one core
// mid-step (which made single passes 1.5x slower and measured timings bimodal).
void pin_to_core(int rank, int world) {
  cpu_set_t allowed;
  CPU_ZERO(&allowed);
  if (::sched_getaffinity(0, sizeof allowed, &allowed) != 0 || world > CPU_COUNT(&allowed)) return;
  int seen = 0;
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
    if (!CPU_ISSET(cpu, &allowed) || seen++ != rank) continue;
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(cpu, &one);
    ::sched_setaffinity(0, sizeof one, &one);
    return;
  }
}

}  // namespace

int launch_local(const TrainOptions& options, const std::string& self_path, const std::vector<std::string>& args,
                 std::ostream& out) {
  const Plan plan = load_plan(options.plan);
  int batch = plan.run.global_batch;
  Layout layout = plan.layout;
  // The rank count does not depend on the tokenizer's vocabulary: any will do here.
  if (plan.mixed) {
    layout = fit_mixed_plan(options, plan, options.max_ranks, 256).layout;
  } else {
    fit_layout(layout, batch, plan.model, options.max_ranks);
  }
  const int world = layout.devices();
  const int port = free_port();
  out << "launching " << world << " local ranks (MASTER_ADDR=127.0.0.1 MASTER_PORT=" << port << ")\n" << std::flush;
  std::map<pid_t, int> children;
  for (int rank = 0; rank < world; ++rank) {
    const pid_t pid = ::fork();
    if (pid < 0) throw InputError("launcher: fork failed");
    if (pid == 0) {
      pin_to_core(rank, world);
      ::setenv("RANK", std::to_string(rank).c_str(), 1);
      ::setenv("LOCAL_RANK", std::to_string(rank).c_str(), 1);
      ::setenv("WORLD_SIZE", std::to_string(world).c_str(), 1);
      ::setenv("LOCAL_WORLD_SIZE", std::to_string(world).c_str(), 1);
      ::setenv("MASTER_ADDR", "127.0.0.1", 1);
      ::setenv("MASTER_PORT", std::to_string(port).c_str(), 1);
      std::vector<char*> argv{const_cast<char*>(self_path.c_str())};
      for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
      argv.push_back(nullptr);
      ::execv(self_path.c_str(), argv.data());
      ::_exit(127);
    }
    children[pid] = rank;
  }
  int failed = 0;
  while (!children.empty()) {
    int status = 0;
    const pid_t pid = ::wait(&status);
    if (pid < 0) break;
    const int rank = children[pid];
    children.erase(pid);
    const bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    if (!ok && failed == 0) {
      failed = WIFEXITED(status) ? WEXITSTATUS(status) : 1;
      out << "rank " << rank << " failed (" << (WIFSIGNALED(status) ? "signal " + std::to_string(WTERMSIG(status)) : "exit " + std::to_string(failed))
          << "); stopping the other ranks\n" << std::flush;
      for (const auto& [other, r] : children) ::kill(other, SIGTERM);
    }
  }
  return failed;
}

}  // namespace flopwise::executor
