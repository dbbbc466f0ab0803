#!/usr/bin/env bash
# The prepared training run for a session that is lent a GPU: one command that fills one device call
# (at most 10 minutes; 15 minutes of device time in all, the machine's start included).
#
#   bash training/gpu_session.sh stage        here, once: copy the training data (../shared/data/train
#                                             and val, 33 MB) into .carry/data, which git ignores
#   device run: command "bash training/gpu_session.sh run", carry [".carry"], timeout_s 600
#   DEVICE=cpu bash training/gpu_session.sh run --minutes 0.3 --num-workers 0   the same command, tested here
#
# Writes to $OUT (runs/gpu-session when unset): card.txt (the card and torch), train.log, and run/ with
# best and last checkpoints (.safetensors + .json), log.csv and summary.json: eight files, what a device
# call brings back. The optimiser state (state.pt, too large to come back) is removed. Then evaluate the
# checkpoints on the CPU with the evaluation protocol (docs/model-card.md) before shipping anything.
set -euo pipefail
cd "$(dirname "$0")/.."
job="${1:-run}"; shift || true
case "$job" in
    stage)
        data="${DATA:-../shared/data}"
        mkdir -p .carry/data
        for part in train val; do
            rm -rf ".carry/data/$part"
            cp -r "$data/$part" .carry/data/
        done
        du -sh .carry ;;
    run)
        out="${OUT:-runs/gpu-session}"
        mkdir -p "$out"
        {
            date -u
            nvidia-smi -L 2>/dev/null || echo "nvidia-smi: not found"
            python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA device')"
        } > "$out/card.txt"
        PYTHONPATH=src:. python3 -m training.train \
            --config "${CONFIG:-training/configs/tiny-gpu-realistic.json}" \
            --data-root .carry/data --out "$out/run" --device "${DEVICE:-cuda}" \
            --init-checkpoint src/fveseg/weights/default "$@" 2>&1 | tee "$out/train.log"
        rm -f "$out/run/state.pt" ;;
    *)
        echo "usage: bash training/gpu_session.sh stage|run [training.train flags...]" >&2; exit 2 ;;
esac
