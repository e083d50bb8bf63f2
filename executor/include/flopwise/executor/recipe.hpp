#pragma once
// The training recipe of the Ling report (section 3.4), as pure functions of the step.
namespace flopwise::executor {

struct Recipe {
  int steps = 20;
  // Warmup-stable-decay: linear warmup to peak, halved at 60% of the steps, inverse-square-root
  // annealing over the last 10% down to 1e-4 of the halved rate.
  double peak_lr = 1e-3;
  int warmup_steps = 2;
  // Batch-size warmup from 2,560 / 8,960 of the batch to all of it.
  int batch_warmup_steps = 0;
};

double learning_rate(const Recipe& recipe, int step);
// Micro-batches per replica at `step`, of `full` once the batch warmup is over.
int micro_batches_at(const Recipe& recipe, int step, int full);

}  // namespace flopwise::executor
