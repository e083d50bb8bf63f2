#!/usr/bin/env bash
# flopwise launch: ling-plus on 640 A devices (device-A), 80 nodes x 8 ranks, layout tp2 pp16 vpp1 ep8 etp1 dp20 mb1 sel(act,ln) zero1 ends2/2
# torchrun keeps each rank's output in its log folder and prints it with the rank (--redirects/--tee).
# Megatron-LM's pretrain_gpt.py with the plan's model, layout and optimizer arguments; data,
# tokenizer and schedule arguments are yours to add after -- on flopwise launch.
#SBATCH --job-name=flopwise-ling-plus
#SBATCH --nodes=80
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --exclusive
#SBATCH --partition=gpu
#SBATCH --time=7-00:00:00
#SBATCH --output=%x-%j.out
set -euo pipefail

if [ "${SLURM_JOB_NUM_NODES:-0}" -ne 80 ]; then
  echo "the plan runs on 80 nodes; this allocation has ${SLURM_JOB_NUM_NODES:-none}" >&2
  exit 2
fi
MASTER_ADDR="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"
MASTER_PORT="${MASTER_PORT:-29500}"
export MASTER_ADDR MASTER_PORT
export CUDA_DEVICE_MAX_CONNECTIONS=1  # Megatron-LM's TP and sequence-parallel overlap need one

srun --kill-on-bad-exit=1 torchrun --nnodes=80 --nproc_per_node=8 --redirects=1 --tee=1 \
    --rdzv_id="$SLURM_JOB_ID" --rdzv_backend=c10d --rdzv_endpoint="$MASTER_ADDR:$MASTER_PORT" \
    /opt/Megatron-LM/pretrain_gpt.py \
    --tensor-model-parallel-size 2 \
    --pipeline-model-parallel-size 16 \
    --decoder-first-pipeline-num-layers 2 \
    --decoder-last-pipeline-num-layers 2 \
    --expert-model-parallel-size 8 \
    --expert-tensor-parallel-size 1 \
    --moe-token-dispatcher-type alltoall \
    --moe-router-load-balancing-type aux_loss \
    --moe-aux-loss-coeff 0.015 \
    --moe-z-loss-coeff 1e-4 \
    --sequence-parallel \
    --micro-batch-size 1 \
    --global-batch-size 8960 \
    --recompute-granularity selective \
    --recompute-modules moe_act layernorm \
    --use-distributed-optimizer \
    --overlap-grad-reduce \
    --overlap-param-gather \
    --bf16 \
    --hidden-dropout 0 \
    --attention-dropout 0 \
    --attention-backend flash \
    --num-layers 88 \
    --hidden-size 5376 \
    --num-attention-heads 56 \
    --seq-length 4096 \
    --max-position-embeddings 4096 \
    --kv-channels 96 \
    --group-query-attention \
    --num-query-groups 8 \
    --ffn-hidden-size 3072 \
    --swiglu \
    --normalization RMSNorm \
    --position-embedding-type rope \
    --disable-bias-linear \
    --untie-embeddings-and-output-weights \
    --vocab-size 126464 \
    --num-experts 64 \
    --moe-router-topk 4 \
    --moe-ffn-hidden-size 3072 \
    --moe-shared-expert-intermediate-size 3072 \
    --moe-grouped-gemm \
    --optimizer adam \
    --adam-beta1 0.9 \
    --adam-beta2 0.95 \
    --adam-eps 1e-8 \
    --weight-decay 0.1 \
    --clip-grad 1.0 \
    --data-path /data/ling_text_document \
    --tokenizer-type HuggingFaceTokenizer \
    --tokenizer-model inclusionAI/Ling-plus \
    --train-iters 27248 \
    --lr 2.4e-4 \
    --lr-warmup-iters 2000
