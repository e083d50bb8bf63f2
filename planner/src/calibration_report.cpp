#include <yaml-cpp/yaml.h>

#include <cmath>
#include <cstdio>
#include <ostream>

#include "flopwise/calibrate.hpp"
#include "flopwise/error.hpp"

namespace flopwise {

namespace {

std::string number_text(double value) {
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "%.6g", value);
  return buffer;
}

std::string seconds_text(double seconds) {
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "%.6g us", seconds * 1e6);
  return buffer;
}

bool is_time(const std::string& field) { return field.find("latency") != std::string::npos || field.rfind("overheads.", 0) == 0; }

bool is_bandwidth(const std::string& field) { return field.find("bandwidth") != std::string::npos; }

std::string value_text(const ParameterFit& p, double value) {
  if (is_bandwidth(p.field)) return number_text(value / 1e9) + " GB/s";
  return is_time(p.field) ? seconds_text(value) : number_text(value);
}

// " +- 0.012 (95%)", or " (no spare points for an interval)".
std::string interval_text(const ParameterFit& p) {
  if (std::isnan(p.half_interval)) return " (no spare points for an interval)";
  return " +- " + value_text(p, p.half_interval) + " (95%)";
}

// Writes `value` at the dotted `field` path of `root`, creating maps on the way.
void set_path(YAML::Node root, const std::string& field, const std::string& value) {
  std::vector<std::string> keys;
  size_t start = 0;
  for (size_t dot = field.find('.'); dot != std::string::npos; dot = field.find('.', start)) {
    keys.push_back(field.substr(start, dot - start));
    start = dot + 1;
  }
  keys.push_back(field.substr(start));
  std::vector<YAML::Node> chain{root};
  for (size_t i = 0; i + 1 < keys.size(); ++i) chain.push_back(chain.back()[keys[i]]);
  chain.back()[keys.back()] = value;
}

}  // namespace

std::string calibrated_profile_yaml(const std::string& original_yaml, const std::string& source,
                                    const Calibration& c, const std::string& date) {
  YAML::Node root;
  try {
    root = YAML::Load(original_yaml);
  } catch (const YAML::Exception& e) {
    throw input_error(source, "", std::string("malformed YAML: ") + e.what());
  }
  root["name"] = c.before.name + "-calibrated";
  YAML::Node record;
  record["date"] = date;
  record["from_profile"] = c.before.name;
  for (const std::string& s : c.sources) record["fitted_from"].push_back(s);
  for (const std::string& s : c.held_out) record["predicts"].push_back(s);
  for (const std::string& s : c.dropped) record["dropped_outlier_steps"].push_back(s);
  record["step_time_interval_95"] = number_text(c.after.step_time_interval);
  if (c.after.reference_probe_rate > 0) record["probe_flops_per_s"] = number_text(c.after.reference_probe_rate);
  for (const FitGroup& g : c.groups) {
    YAML::Node group;
    group["points"] = g.points;
    group["rms_relative_residual"] = number_text(g.rms_relative_residual);
    for (const ParameterFit& p : g.parameters) {
      YAML::Node entry;
      entry["before"] = value_text(p, p.before);
      entry["after"] = value_text(p, p.determined ? p.after : p.before);
      entry["status"] = p.determined ? "fitted" : "kept: " + p.note;
      if (p.determined) entry["interval_95"] = interval_text(p).substr(1);
      group["parameters"][p.field] = entry;
      if (p.determined) set_path(root, p.field, value_text(p, p.after));
    }
    record["fits"][g.name] = group;
  }
  // Fitted collective figures need both fields; the undetermined one keeps the default it replaced.
  for (const auto& [algorithm, figures] : c.after.collectives) {
    const std::string base = "collectives." + to_string(algorithm) + ".";
    if (figures.intra_node) {
      set_path(root, base + "intra_node.efficiency", number_text(figures.intra_node->efficiency));
      set_path(root, base + "intra_node.latency", seconds_text(figures.intra_node->latency));
    }
    if (figures.inter_node) {
      set_path(root, base + "inter_node.efficiency", number_text(figures.inter_node->efficiency));
      set_path(root, base + "inter_node.latency", seconds_text(figures.inter_node->latency));
    }
  }
  if (c.after.overheads.per_layer_pass > 0 || c.after.overheads.per_step > 0 || root["overheads"]) {
    set_path(root, "overheads.per_layer_pass", seconds_text(c.after.overheads.per_layer_pass));
    set_path(root, "overheads.per_step", seconds_text(c.after.overheads.per_step));
  }
  root["calibration"] = record;
  YAML::Emitter out;
  out << root;
  const std::string text = std::string(out.c_str()) + "\n";
  parse_hardware_profile(text, source + " (calibrated)");  // what we write must read back
  return text;
}

void print_fit(std::ostream& out, const Calibration& c) {
  out << "calibrated " << c.before.name << " from " << c.sources.size() << " measurement file(s) or run(s)\n";
  if (!c.dropped.empty()) out << "left out " << c.dropped.size() << " outlier step(s):\n";
  for (const std::string& d : c.dropped) out << "  " << d << "\n";
  if (c.after.step_time_interval > 0) {
    char interval[128];
    std::snprintf(interval, sizeof interval, "predicted step times +- %.1f%% (95%%, from the errors of the fit)\n",
                  100 * c.after.step_time_interval);
    out << interval;
  }
  if (c.after.reference_probe_rate > 0) {
    char speed[200];
    std::snprintf(speed, sizeof speed,
                  "machine speed: the figures hold at a speed-probe rate of %.2f GFLOP/s (median of the fitted steps); "
                  "a traced step is predicted at its own probe's speed\n",
                  c.after.reference_probe_rate / 1e9);
    out << speed;
  }
  for (const FitGroup& g : c.groups) {
    char head[160];
    std::snprintf(head, sizeof head, "%s: %d points, rms relative residual %.1f%%\n", g.name.c_str(), g.points,
                  100 * g.rms_relative_residual);
    out << head;
    for (const ParameterFit& p : g.parameters) {
      out << "  " << p.field << ": " << value_text(p, p.before);
      if (p.determined) {
        out << " -> " << value_text(p, p.after) << interval_text(p) << "\n";
      } else {
        out << " kept (" << p.note << ")\n";
      }
    }
  }
}

namespace {

// ", machine at 0.55x, 70% of a core": how fast the step's slowest stage's core ran against the
// calibrated reference, and the share of it the stage ran at (cpu_shares).
std::string speed_note(const HardwareProfile& calibrated, const MeasuredStep& m) {
  std::string note;
  char text[48];
  if (calibrated.reference_probe_rate > 0 && m.probe_rate > 0) {
    std::snprintf(text, sizeof text, ", machine at %.2fx", machine_speed(calibrated, m.probe_rate));
    note += text;
  }
  if (!m.stage_cpu_shares.empty() && m.cpu_share < 0.995) {
    std::snprintf(text, sizeof text, ", %.0f%% of a core", 100 * m.cpu_share);
    note += text;
  }
  return note;
}

}  // namespace

void print_report(std::ostream& out, const std::vector<TracedRun>& runs, const Calibration& c) {
  double before_sum = 0, after_sum = 0;
  int count = 0, before_inside = 0, after_inside = 0;
  for (const TracedRun& run : runs) {
    const Layout& l = run.layout;
    out << run.source << ": " << run.model.name << " (" << run.model.layers << " layers, hidden " << run.model.hidden
        << "), tp" << l.tp << " pp" << l.pp << " ep" << l.ep << " dp" << l.dp << " mb" << l.micro_batch << ", seq "
        << run.run.seq_len << ", " << run.ranks << " ranks\n";
    for (const MeasuredStep& m : measured_steps(run)) {
      const std::vector<Seconds> measured = as_list(m.times);
      const std::vector<Seconds> before = as_list(predicted_step(c.before, run, m));
      const std::vector<Seconds> after = as_list(predicted_step(c.after, run, m));
      out << "  step " << m.step << " (" << m.micro_batches << " micro-batches, rank " << m.rank
          << (m.warmup ? ", warm-up: not fitted" : "") << speed_note(c.after, m) << ")\n";
      out << "    category     measured     before    error      after    error\n";
      for (size_t i = 0; i < measured.size(); ++i) {
        auto error = [&](double predicted) -> std::string {
          if (measured[i] <= 0) return "     -";
          char e[16];
          std::snprintf(e, sizeof e, "%+5.0f%%", 100 * (predicted - measured[i]) / measured[i]);
          return e;
        };
        char line[160];
        std::snprintf(line, sizeof line, "    %-10s %10.2f ms %7.2f ms %7s %7.2f ms %7s\n", kCategoryNames[i],
                      1e3 * measured[i], 1e3 * before[i], error(before[i]).c_str(), 1e3 * after[i],
                      error(after[i]).c_str());
        out << line;
      }
      if (!m.warmup) {
        const double before_error = std::abs(before.back() - measured.back()) / measured.back();
        const double after_error = std::abs(after.back() - measured.back()) / measured.back();
        before_sum += before_error;
        after_sum += after_error;
        before_inside += before_error <= c.before.step_time_interval;
        after_inside += after_error <= c.after.step_time_interval;
        ++count;
      }
    }
  }
  if (count > 0) {
    char line[160];
    std::snprintf(line, sizeof line, "step time, mean |relative error| over %d steps: before %.1f%%, after %.1f%%\n", count,
                  100 * before_sum / count, 100 * after_sum / count);
    out << line;
    // A calibrated profile carries how far its predictions stray (its fitted steps' scatter).
    const auto inside = [&](const HardwareProfile& p, int n) -> std::string {
      if (p.step_time_interval <= 0) return "no interval (not calibrated)";
      char text[96];
      std::snprintf(text, sizeof text, "%d of %d within +-%.1f%%", n, count, 100 * p.step_time_interval);
      return text;
    };
    out << "measured step time inside the predicted interval: before " << inside(c.before, before_inside) << ", after "
        << inside(c.after, after_inside) << "\n";
  }
}

}  // namespace flopwise
