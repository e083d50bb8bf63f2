#pragma once
// Published measured training runs, predicted with the shipped profiles: how far the cost model is
// from runs nobody tuned it to (`flopwise validate`).
#include <iosfwd>
#include <string>
#include <vector>

#include "flopwise/layout.hpp"
#include "flopwise/step_cost.hpp"

namespace flopwise {

struct PublishedRun {
  std::string name;
  std::string source;   // paper, table, row
  std::string profile;  // shipped hardware profile (or a path)
  ModelConfig model;
  TrainingRun run;
  Layout layout;
  Seconds measured_step_s = 0;
  std::string file, path;  // where the row was read from ("runs.yaml", "runs[3]"), for messages
};

// The runs of a validation YAML file; InputError naming the file and field.
std::vector<PublishedRun> parse_published_runs(const std::string& yaml_text, const std::string& source);
// The set that ships with flopwise (planner/validation/published-runs.yaml).
std::vector<PublishedRun> shipped_published_runs();

struct ValidationRow {
  PublishedRun run;
  Seconds predicted_step_s = 0;
  StepCost predicted;         // the whole prediction: breakdown and memory
  double relative_error = 0;  // |predicted - measured| / measured
  Bytes device_memory_bytes = 0;  // the profile's device memory, before the planning headroom
};

struct Validation {
  std::vector<ValidationRow> rows;
  double mean_error = 0;
  double worst_error = 0;
};

// One profile's rows: their count, mean and worst error, and how many are predicted faster than
// measured (a bias, where the errors share a sign).
struct HardwareErrors {
  std::string profile;
  int runs = 0;
  double mean_error = 0, worst_error = 0;
  int predicted_fast = 0;
};
// Per profile, in the order the profiles first appear.
std::vector<HardwareErrors> errors_by_hardware(const Validation& validation);

// Predicts each run's step time with the cost model on its profile (the layout as published,
// evaluated even where flopwise's search would reject it); InputError for unknown profiles and for
// layouts that break a structural rule, naming the file and the row's field.
Validation validate_runs(const std::vector<PublishedRun>& runs);

void print_validation(std::ostream& out, const Validation& validation);

}  // namespace flopwise
