#include "flopwise/executor/progress.hpp"

#include <cstdio>
#include <fstream>
#include <iomanip>
#include <sstream>
#include <vector>

#include "flopwise/error.hpp"

namespace flopwise::executor {

std::string StepReport::human_line() const {
  char line[256];
  std::snprintf(line, sizeof line, "step %4d/%d  loss %.4f  aux %.4f  lr %.2e  grad %.3f  tokens/s %.0f  MFU %.1f%%  ETA %.0fs",
                step, steps, loss, aux, lr, grad_norm, tokens_per_s, 100 * mfu, eta_s);
  std::string pools;
  for (const auto& [name, loss] : pool_losses) {
    char part[96];
    std::snprintf(part, sizeof part, " %s %.4f", name.c_str(), loss);
    pools += part;
  }
  return line + (pools.empty() ? "" : "  pools" + pools) + (event.empty() ? "" : "  [" + event + "]");
}

nlohmann::json StepReport::to_json() const {
  nlohmann::json pools = nlohmann::json::object();
  for (const auto& [name, loss] : pool_losses) pools[name] = loss;
  return {{"schema", "flopwise.progress/1"}, {"step", step}, {"steps", steps}, {"loss", loss}, {"aux_loss", aux},
          {"lr", lr}, {"grad_norm", grad_norm}, {"tokens_per_s", tokens_per_s}, {"mfu", mfu}, {"eta_s", eta_s},
          {"applied", applied}, {"event", event}, {"pool_losses", pools}};
}

LossLog::LossLog(const std::string& path, int resumed_step) : path_(path) {
  std::vector<std::string> kept;
  if (resumed_step > 0) {
    std::ifstream in(path);
    std::string line;
    while (std::getline(in, line)) {
      std::istringstream fields(line);
      int step = 0;
      if (fields >> step && step <= resumed_step) kept.push_back(line);
    }
  }
  std::ofstream out(path, std::ios::trunc);
  if (!out) throw input_error(path, "", "cannot write the loss log");
  for (const std::string& line : kept) out << line << "\n";
}

void LossLog::append(const StepReport& r) {
  if (path_.empty()) return;
  std::ofstream out(path_, std::ios::app);
  out << r.step << " " << std::setprecision(10) << r.loss << (r.applied ? "" : " skipped") << "\n";
}

}  // namespace flopwise::executor
