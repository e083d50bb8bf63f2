#pragma once
// Real-world goodput: a long run on many devices is interrupted again and again; each failure costs
// the restart, the checkpoint load and the work since the last checkpoint, and every checkpoint
// costs the time training waits for it. From a profile's reliability figures and a plan's step,
// this prices them: Daly's optimal checkpoint interval, the goodput fraction, and the days and cost
// at that goodput beside the ideal, failure-free ones.
#include <string>

#include <nlohmann/json.hpp>

#include "flopwise/units.hpp"

namespace flopwise {

class YamlFields;

// How often devices fail and how fast a run gets back; every default carries its source.
struct Reliability {
  // Llama 3 (Dubey et al. 2024, arXiv 2407.21783, section 3.3.4): 419 unexpected interruptions in
  // 54 days on 16,384 H100 GPUs, 0.47 per 1,000 devices per day (node failures included).
  double interruptions_per_device_day = 419.0 / 54.0 / 16384.0;
  // Failures of whole nodes beyond those (switch, host, power), per node per day. Default 0: the
  // Llama 3 count above already includes its node-level interruptions.
  double interruptions_per_node_day = 0;
  // ASSUMPTION: 10 minutes to detect a failure, reschedule and re-initialise the job before the
  // checkpoint load. Published optimised restores: 150 s at 4,800 devices (FlashRecovery, arXiv
  // 2509.03047); ordinary restarts re-queue and rebuild every communicator.
  Seconds restart_s = 600;
  // Ling report (arXiv 2503.05139, section 2, PCache): a 512-accelerator save took 90 s with writes
  // spread over the nodes (240 s from each DP group's rank 0 on GPFS). ASSUMPTION: that run saved
  // Ling-Plus (290.6B parameters x 14 bytes = 4.07 TB), so 4.07 TB / 90 s / 64 nodes = 0.71 GB/s
  // per node; storage is taken to scale with the nodes writing.
  BytesPerSecond node_write_bytes_per_s = 4.07e12 / 90.0 / 64.0;
  BytesPerSecond node_read_bytes_per_s = 4.07e12 / 90.0 / 64.0;  // ASSUMPTION: reads as fast as writes
  // Whether a save copies to host memory and writes in the background (flash checkpointing, PCache,
  // Megatron's --async-save) so that training waits only for the copy. Default: blocking saves,
  // Megatron-LM's default.
  bool async_checkpoint = false;
  // ASSUMPTION: device-to-host copy of an async save at 25 GB/s per device (PCIe 4.0 x16 is 32 GB/s
  // per direction).
  BytesPerSecond snapshot_bytes_per_s = 25e9;
  // A checkpoint interval the team keeps whatever the failure rate (0: Daly's optimum); it must
  // not be shorter than a step.
  Seconds fixed_interval_s = 0;
  bool from_profile = false;  // the profile's own section, not these defaults
  std::string source;         // the profile file, for errors about these figures
};

// Reads a profile's optional `reliability:` section over the defaults; bad figures name the field.
Reliability read_reliability(const YamlFields& section);

// One checkpoint of a plan: the whole state, how long storage takes to write and read it, and how
// long training waits per save.
struct CheckpointCost {
  Bytes bytes = 0;         // weights + optimizer state of the whole model
  Seconds write_s = 0;     // to storage, every node writing its share
  Seconds load_s = 0;      // back from storage on restart
  Seconds blocking_s = 0;  // training stalls: the write, or with async saves the device-to-host copy
};

// `device_bytes`: the state one device holds (its weights and optimizer shard), what it copies for
// an async save.
CheckpointCost checkpoint_cost(Bytes checkpoint_bytes, Bytes device_bytes, int nodes, const Reliability& r);

// Daly's higher-order optimum of compute time between checkpoints (Daly 2006, "A higher order
// estimate of the optimum checkpoint interval for restart dumps", FGCS 22(3), eq. 37) for a save
// that blocks `blocking_s` and a mean time between failures `mtbf_s`; Young's sqrt(2 d M) is its
// first term.
Seconds daly_interval(Seconds blocking_s, Seconds mtbf_s);

struct Goodput {
  Seconds mtbf_s = 0;              // of the whole run: 1 / (rate per device x devices + rate per node x nodes)
  int checkpoint_every_steps = 0;  // Daly's interval rounded to whole steps (at least one)
  Seconds interval_s = 0;          // compute time between checkpoints: those steps
  CheckpointCost checkpoint;
  Seconds lost_per_failure_s = 0;  // restart, load, half an interval redone, an unfinished async write
  double fraction = 1;             // useful training time over wall time
  double ideal_days = 0, ideal_device_hours = 0, ideal_cost = 0;  // failure-free
  bool operator==(const Goodput&) const = default;
};

// Goodput of a run whose step takes `step_s`: expected wall time = ideal / fraction, where
// fraction = interval / (interval + blocking) x (1 - lost_per_failure / mtbf) (first-order model,
// Young 1974 and Daly 2006: each failure redoes on average half of the last interval and its save).
// A fraction at or below zero means the run fails faster than it can checkpoint.
Goodput goodput(Seconds step_s, int devices, int nodes, const CheckpointCost& checkpoint, const Reliability& r);

nlohmann::json to_json(const Goodput& goodput);
Goodput goodput_from_json(const nlohmann::json& json, const std::string& source, const std::string& path);

}  // namespace flopwise
