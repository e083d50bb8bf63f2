// flopwise-train: train the model of a plan. Without RANK in the environment it launches the
// plan's ranks on this machine; with it (torchrun, Slurm) it is one of them.
#include <CLI/CLI.hpp>

#include <cstdlib>
#include <iostream>

#include "flopwise/executor/spec.hpp"
#include "flopwise/executor/trainer.hpp"

int main(int argc, char** argv) {
  using namespace flopwise::executor;
  TrainOptions o;
  CLI::App app{"flopwise-train: train the Ling MoE of a flopwise plan with LibTorch over c10d"};
  app.add_option("plan", o.plan, "plan JSON (flopwise plan --out)")->required();
  app.add_option("--scale", o.scale, "width fraction of the plan's model, (0, 1]")->capture_default_str();
  app.add_option("--steps", o.recipe.steps, "training steps")->capture_default_str();
  app.add_option("--seq-len", o.seq_len, "tokens per sequence (0: the plan's)")->capture_default_str();
  app.add_option("--micro-batches", o.micro_batches, "micro-batches per replica per step (0: the plan's)")
      ->capture_default_str();
  app.add_option("--data", o.data, "text files (byte tokens) or .bin uint16 token files");
  app.add_option("--seed", o.seed, "seed of weights, data order and routing noise")->capture_default_str();
  app.add_option("--max-ranks", o.max_ranks, "local ranks this machine may run")->capture_default_str();
  app.add_option("--lr", o.recipe.peak_lr, "peak learning rate")->capture_default_str();
  app.add_option("--warmup-steps", o.recipe.warmup_steps, "learning-rate warmup steps")->capture_default_str();
  app.add_option("--batch-warmup-steps", o.recipe.batch_warmup_steps, "batch-size warmup steps")->capture_default_str();
  app.add_option("--routing-warmup-steps", o.routing_warmup_steps, "Stochastic Routing Warmup steps W")->capture_default_str();
  app.add_option("--checkpoint-dir", o.checkpoint_dir, "where checkpoints go");
  app.add_option("--checkpoint-every", o.checkpoint_every, "steps between checkpoints (default: the plan's)");
  app.add_flag("--checkpoint-sync", o.checkpoint_sync, "block on each checkpoint write instead of writing it in the background");
  app.add_option("--checkpoint-write-delay-ms", o.checkpoint_write_delay_ms, "hold each background write (testing)");
  app.add_flag("--resume", o.resume, "continue from the newest intact checkpoint");
  app.add_option("--trace", o.trace, "write measured spans as Chrome trace-event JSON");
  app.add_option("--loss-log", o.loss_log, "write 'step loss' lines to this file");
  app.add_flag("--progress-json", o.progress_json, "print each step as one JSON object (flopwise.progress/1)");
  app.add_option("--slowdown", o.slowdowns, "plans over pools: POOL=FACTOR pads that pool's compute to FACTOR x its time (repeat)");
  app.add_option("--sync-every", o.sync_every_steps, "local-SGD plans: steps between outer syncs (default: the plan's H)");
  app.add_option("--inject-bad-batch-at", o.inject_bad_batch_at, "replace this step's batch with random tokens (testing)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp&) {
    std::cout << app.help();
    return 0;
  } catch (const CLI::ParseError& e) {
    std::cerr << "flopwise-train: error: " << e.what() << "\n";
    return 2;
  }
  try {
    if (o.recipe.steps < 1) throw flopwise::input_error("--steps", "", "must be at least 1");
    if (o.max_ranks < 1) throw flopwise::input_error("--max-ranks", "", "must be at least 1");
    if (o.resume && o.checkpoint_dir.empty()) throw flopwise::input_error("--resume", "", "needs --checkpoint-dir");
    if (o.checkpoint_every < 0) throw flopwise::input_error("--checkpoint-every", "", "must be at least 1 step");
    if (std::getenv("RANK")) return run_worker(o, std::cout);
    std::vector<std::string> args(argv + 1, argv + argc);
    return launch_local(o, "/proc/self/exe", args, std::cout);
  } catch (const flopwise::InputError& e) {
    std::cerr << "flopwise-train: error: " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "flopwise-train: rank " << (std::getenv("RANK") ? std::getenv("RANK") : "-") << " failed: " << e.what()
              << "\n";
    return 1;
  }
}
