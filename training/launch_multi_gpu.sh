#!/usr/bin/env bash
# Multi-GPU training on one node with torchrun (one process per GPU, DistributedDataParallel).
#   training/launch_multi_gpu.sh NUM_GPUS CONFIG DATA_ROOT OUT [extra training.train flags...]
# e.g. training/launch_multi_gpu.sh 8 training/configs/base-gpu.json /data/fveseg runs/base --minutes 600
# Several nodes: run it on each node with NNODES, NODE_RANK and MASTER_ADDR set (torchrun's rendezvous).
set -euo pipefail
if [ "$#" -lt 4 ]; then
    sed -n '2,5p' "$0"; exit 2
fi
GPUS="$1"; CONFIG="$2"; DATA="$3"; OUT="$4"; shift 4
cd "$(dirname "$0")/.."
export PYTHONPATH="src:.${PYTHONPATH:+:$PYTHONPATH}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
exec torchrun --nproc_per_node="$GPUS" --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" \
    --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="${MASTER_PORT:-29500}" \
    -m training.train --config "$CONFIG" --data-root "$DATA" --out "$OUT" --device cuda "$@"
