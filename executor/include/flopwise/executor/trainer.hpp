#pragma once
// Training from a plan: options, the per-rank worker and the local launcher.
#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "flopwise/executor/anomaly_guard.hpp"
#include "flopwise/executor/mixed_run.hpp"
#include "flopwise/executor/recipe.hpp"

namespace flopwise::executor {

struct TrainOptions {
  std::string plan;
  double scale = 1.0 / 16;           // width fraction of the plan's model (1 = full shape)
  int seq_len = 128;                 // tokens per sequence; 0: the plan's
  int micro_batches = 4;             // per replica per step; 0: the plan's (often thousands)
  std::vector<std::string> data;     // text or .bin files; default: the shipped corpus
  uint64_t seed = 1234;
  int max_ranks = 4;                 // local ranks this machine may run
  Recipe recipe;                     // steps, learning rate and batch schedule
  int routing_warmup_steps = 5;      // Stochastic Routing Warmup W
  double clip_norm = 1.0;
  SpikeRule spikes;
  int inject_bad_batch_at = -1;      // test hook: random tokens at this step
  std::string checkpoint_dir;
  int checkpoint_every = 0;         // 0: the plan's interval (its goodput's Daly optimum), when it has one
  bool checkpoint_sync = false;      // wait for each write instead of writing in the background
  int checkpoint_write_delay_ms = 0; // test hook: slow storage between a checkpoint's tensors and manifest
  bool resume = false;
  std::string trace;
  std::string loss_log;              // one line per step: step loss (rank 0)
  bool progress_json = false;        // step lines as JSON objects (flopwise.progress/1) on stdout
  std::vector<std::string> slowdowns;  // plans over pools: POOL=FACTOR, that pool's compute padded
  int sync_every_steps = 0;          // local SGD: steps between outer syncs; 0: the plan's H
};

// A plan over pools fitted to `max_ranks` local ranks, its model scaled as `o` says.
FittedMixedRun fit_mixed_plan(const TrainOptions& o, const Plan& plan, int max_ranks, int vocab);

// Runs one rank under RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT.
int run_worker(const TrainOptions& options, std::ostream& out);

// Spawns the plan's (scaled) ranks on this machine as child processes of `self_path`, with the
// torchrun-style environment, and waits for them; any failure stops the others.
int launch_local(const TrainOptions& options, const std::string& self_path, const std::vector<std::string>& args,
                 std::ostream& out);

}  // namespace flopwise::executor
