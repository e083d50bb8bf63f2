#include "flopwise/calibration_runs.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <ostream>

#include "flopwise/error.hpp"
#include "flopwise/model_import.hpp"
#include "flopwise/plan_builder.hpp"

namespace flopwise {

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

Seconds since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

// The last non-empty line of a log: what a failed run said last.
std::string last_line(const fs::path& log) {
  std::ifstream in(log);
  std::string line, last;
  while (std::getline(in, line)) {
    if (!line.empty()) last = line;
  }
  return last;
}

// Runs `args` (args[0] the program) with stdout and stderr into `log`; its exit status.
int run_program(const std::vector<std::string>& args, const fs::path& log) {
  std::vector<char*> argv;
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  const pid_t pid = ::fork();
  if (pid < 0) throw InputError("calibrate: cannot start " + args[0] + ": fork failed");
  if (pid == 0) {
    const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
      ::dup2(fd, 1);
      ::dup2(fd, 2);
    }
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// A second process spinning on one core for as long as it lives: the shared machine of the
// benchmark's loaded half.
class BusyCore {
 public:
  explicit BusyCore(bool on) {
    if (!on) return;
    pid_ = ::fork();
    if (pid_ == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive the benchmark, however it ends
      volatile unsigned long spin = 0;
      for (;;) spin = spin + 1;
    }
  }
  ~BusyCore() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
  BusyCore(const BusyCore&) = delete;
  BusyCore& operator=(const BusyCore&) = delete;

 private:
  pid_t pid_ = -1;
};

ShortRun short_run(const std::string& kind, int ranks, int seq_len, double scale = 0.0625) {
  Layout l;
  l.dp = ranks;
  if (kind == "tp2") l.tp = 2, l.dp = ranks / 2;
  if (kind == "pp2") l.pp = 2, l.dp = ranks / 2;
  if (kind == "ep2") l.ep = 2;
  std::string name = kind + (kind == "dp" ? std::to_string(ranks) : "") + "-s" + std::to_string(seq_len);
  if (scale != 0.0625) name += "-x" + std::to_string(static_cast<int>(std::lround(scale * 16)));
  return ShortRun{name, l, seq_len, scale};
}

// How a fitted parameter's interval compares with the target: its half-width over its value.
double relative_width(const ParameterFit& p) {
  if (!p.determined || std::isnan(p.half_interval) || p.after == 0) return INFINITY;
  return std::abs(p.half_interval / p.after);
}

// "[#####-----]" for `fraction` of the budget spent.
std::string bar(double fraction) {
  const int width = 24, filled = std::clamp(static_cast<int>(std::lround(fraction * width)), 0, width);
  std::string text(width + 2, '-');
  text.front() = '[';
  text.back() = ']';
  std::fill_n(text.begin() + 1, filled, '#');
  return text;
}

// Mean measured and predicted step time of a run's steps after warm-up, and how many of those
// steps the profile's interval holds.
struct HeldOut {
  Seconds measured = 0, predicted = 0;
  double mean_error = 0;
  int steps = 0, inside = 0;
};

HeldOut held_out(const HardwareProfile& fitted, const TracedRun& run) {
  HeldOut h;
  for (const MeasuredStep& m : measured_steps(run)) {
    if (m.warmup) continue;
    const Seconds predicted = predicted_step(fitted, run, m).step;
    const double error = std::abs(predicted - m.times.step) / m.times.step;
    h.measured += m.times.step;
    h.predicted += predicted;
    h.mean_error += error;
    h.inside += error <= fitted.step_time_interval;
    ++h.steps;
  }
  if (h.steps == 0) throw input_error(run.source, "traceEvents", "no complete step after the first");
  h.measured /= h.steps;
  h.predicted /= h.steps;
  h.mean_error /= h.steps;
  return h;
}

}  // namespace

TracedRun run_traced(const Trainer& trainer, const HardwareProfile& profile, const ShortRun& run, int seed) {
  fs::create_directories(trainer.trace_dir);
  const fs::path base = trainer.trace_dir / (run.name + "-seed" + std::to_string(seed));
  Plan plan;
  plan.model = resolve_model(trainer.model);
  plan.hardware = plan_hardware(profile, Precision::kFp32);
  plan.run.precision = Precision::kFp32;
  plan.run.overlap = CommOverlap::none();
  plan.run.seq_len = run.seq_len;
  plan.run.global_batch = trainer.micro_batches * run.layout.dp * run.layout.micro_batch;
  plan.layout = run.layout;
  const std::string plan_path = base.string() + ".plan.json", trace = base.string() + ".trace.json";
  save_plan(plan, plan_path);
  char scale[32];
  std::snprintf(scale, sizeof scale, "%g", run.scale);
  const fs::path log = base.string() + ".log";
  const int status = run_program({trainer.program.string(), plan_path, "--scale", scale, "--steps", std::to_string(trainer.steps),
                                  "--micro-batches", std::to_string(trainer.micro_batches), "--seed", std::to_string(seed),
                                  "--seq-len", std::to_string(run.seq_len), "--trace", trace},
                                 log);
  if (status != 0) {
    throw input_error(log.string(), "", "flopwise-train exited with " + std::to_string(status) + ": " + last_line(log));
  }
  return load_traced_run(trace);
}

std::vector<ShortRun> designed_runs(int ranks) {
  if (ranks < 2 || ranks % 2) throw input_error("--ranks", "", "designed runs need an even rank count of at least 2");
  return {short_run("dp", ranks, 32),   short_run("dp", ranks, 128), short_run("dp", ranks, 256),
          short_run("dp", ranks, 32, 0.125), short_run("tp2", ranks, 64), short_run("tp2", ranks, 128),
          short_run("ep2", ranks, 64),  short_run("ep2", ranks, 128)};
}

PlannedCalibration calibrate_with_runs(const HardwareProfile& profile, const Trainer& trainer,
                                       const std::vector<ShortRun>& designed, const RunBudget& budget,
                                       std::ostream& progress) {
  const Clock::time_point start = Clock::now();
  PlannedCalibration result;
  std::vector<TracedRun> traces;
  std::map<std::string, Seconds> took;  // each run's last duration: will the next one fit the budget?
  for (int round = 1; round <= budget.max_rounds; ++round) {
    bool out_of_time = false;
    const size_t before = traces.size();
    for (size_t i = 0; i < designed.size(); ++i) {
      const ShortRun& run = designed[i];
      if (!traces.empty() && since(start) + took[run.name] > budget.seconds) {
        out_of_time = true;
        break;
      }
      const Clock::time_point run_start = Clock::now();
      traces.push_back(run_traced(trainer, profile, run, round));
      took[run.name] = since(run_start);
      ++result.runs;
      char line[192];
      std::snprintf(line, sizeof line, "%s %3.0f of %.0f s  round %d, run %zu/%zu %s (%.1f s)\n",
                    bar(since(start) / budget.seconds).c_str(), since(start), budget.seconds, round, i + 1,
                    designed.size(), run.name.c_str(), took[run.name]);
      progress << line << std::flush;
    }
    if (traces.size() == before) break;  // no run of this round fitted the budget: the last fit stands
    result.rounds = round;
    result.calibration = calibrate(profile, traces);
    double widest = 0;
    for (const FitGroup& g : result.calibration.groups) {
      for (const ParameterFit& p : g.parameters) {
        if (relative_width(p) < widest) continue;
        widest = relative_width(p);
        char text[160];
        std::snprintf(text, sizeof text, std::isinf(widest) ? "%s (not determined)" : "%s +- %.0f%%", p.field.c_str(),
                      100 * widest);
        result.widest = text;
      }
    }
    result.tight = widest <= budget.target_relative;
    progress << "round " << round << ": widest interval " << result.widest << (result.tight ? ": tight\n" : "\n");
    if (result.tight || out_of_time) break;
  }
  result.wall = since(start);
  return result;
}

void bench_calibration(const HardwareProfile& profile, const Trainer& trainer, int repetitions, bool busy,
                       std::ostream& out) {
  const BusyCore spinner(busy);
  const std::vector<ShortRun> fit_runs = {short_run("dp", 2, 64), short_run("dp", 2, 128)};
  const std::vector<ShortRun> held_runs = {short_run("pp2", 2, 128), short_run("ep2", 2, 128)};
  out << "calibration repeatability: fit " << profile.name << " to dp2 at sequence 64 and 128, predict pp2 and ep2 at 128 ("
      << trainer.steps << " steps each" << (busy ? ", a second process keeping one core busy" : "") << ")\n";
  out << "  rep  interval  held-out error  steps inside  mean inside  dropped    wall  error at reference speed\n";
  int good = 0, held = 0;
  for (int rep = 1; rep <= repetitions; ++rep) {
    const Clock::time_point start = Clock::now();
    std::vector<TracedRun> fitted_on;
    for (const ShortRun& r : fit_runs) fitted_on.push_back(run_traced(trainer, profile, r, rep));
    const Calibration c = calibrate(profile, fitted_on);
    // The same fit blind to the speed probes: what the held-out runs would be predicted to take had
    // the machine run at the fitted runs' median speed.
    HardwareProfile blind = c.after;
    blind.reference_probe_rate = 0;
    double error = 0, blind_error = 0;
    int steps = 0, inside = 0;
    bool mean_inside = true;
    for (const ShortRun& r : held_runs) {
      const TracedRun traced = run_traced(trainer, profile, r, rep);
      const HeldOut h = held_out(c.after, traced);
      error += h.mean_error * h.steps;
      blind_error += held_out(blind, traced).mean_error * h.steps;
      steps += h.steps;
      inside += h.inside;
      mean_inside = mean_inside && std::abs(h.predicted - h.measured) <= c.after.step_time_interval * h.measured;
    }
    error /= steps;
    blind_error /= steps;
    good += error <= 0.10;
    held += mean_inside;
    char line[192];
    std::snprintf(line, sizeof line, "  %3d  +-%5.1f%%  %13.1f%%  %6d of %2d  %11s  %7zu  %5.0f s  %23.1f%%\n", rep,
                  100 * c.after.step_time_interval, 100 * error, inside, steps, mean_inside ? "yes" : "no", c.dropped.size(),
                  since(start), 100 * blind_error);
    out << line << std::flush;
  }
  out << "traces in " << trainer.trace_dir.string() << "\n";
  out << "held-out mean error <= 10% in " << good << " of " << repetitions
      << " repetitions; the interval held each held-out run's mean measured step in " << held << " of " << repetitions << "\n";
}

}  // namespace flopwise
