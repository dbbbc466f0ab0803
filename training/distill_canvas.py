"""Teach a checkpoint to give on a small canvas what it gives on its 256-px training canvas.

The network pads a slice smaller than its input to 256 × 256 with black (`fveseg.inference.tiling`);
padding only to the next multiple of 32 would halve its time on most resized stacks, but the network,
trained on 256-px canvases only, then changes its masks (docs/experiments/2026-12-06-small-slice-padding.md).
Here a student (initialised from the checkpoint) sees a window of a training image centred on the next
multiple of 32 of its size, and learns what the frozen teacher (the checkpoint itself) gives for the same
window centred on the 256-px canvas: masks and edges pixel for pixel over the window, existence per
prompt (binary cross-entropy against the teacher's probabilities). A share of the batches are whole
256-px canvases, where the student must stay the teacher.

    PYTHONPATH=src:. python -m training.distill_canvas --init-checkpoint src/fveseg/weights/default \\
        --config training/configs/tiny-cpu-noisy-mixed.json --data-root ../shared/data --out runs/canvas \\
        --minutes 40
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from training.config import load_config
from training.prompts import training_prompts
from training.train import _hardware, build_text_table, make_loader, save
from training.validation import to_model_input

#: Sides (px) of the windows the student sees, drawn uniformly per batch.
WINDOW_SIDES = (64, 240)
#: Share of batches that are whole training canvases (student and teacher see the same input).
WHOLE_CANVAS_P = 0.25
#: The canvas side is rounded up to this (the network's coarsest stride).
MULTIPLE = 32


def centred(window: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``window`` (B, C, h, w) centred on a black (B, C, height, width) canvas, as
    `fveseg.inference.tiling.SliceTiler` places a slice (offset ``(height - h) // 2``)."""
    h, w = window.shape[-2:]
    canvas = window.new_zeros(*window.shape[:-2], height, width)
    top, left = (height - h) // 2, (width - w) // 2
    canvas[..., top : top + h, left : left + w] = window
    return canvas


def uncentred(output: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """The (B, P, h, w) window of an output (B, P, H, W) made from `centred`."""
    height, width = output.shape[-2:]
    top, left = (height - h) // 2, (width - w) // 2
    return output[..., top : top + h, left : left + w]


def distillation_loss(student: dict, teacher: dict, h: int, w: int) -> tuple[torch.Tensor, dict]:
    """Masks and edges over the window, existence per prompt: cross-entropy against the teacher."""
    parts = {}
    for key in ("mask_logits", "edge_logits"):
        target = torch.sigmoid(uncentred(teacher[key], h, w))
        parts[key] = F.binary_cross_entropy_with_logits(uncentred(student[key], h, w), target)
    parts["exist_logits"] = F.binary_cross_entropy_with_logits(
        student["exist_logits"], torch.sigmoid(teacher["exist_logits"])
    )
    return sum(parts.values()), {k: float(v.detach()) for k, v in parts.items()}


def distill(config, data_root, out: Path, init_checkpoint: str, minutes: float, lr: float, seed: int) -> dict:
    from fveseg.model.checkpoint import load_checkpoint

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    teacher = load_checkpoint(init_checkpoint).eval()
    student = copy.deepcopy(teacher).train()
    vocabulary = training_prompts()
    # the token table (the teacher takes the same tokens; it runs under no_grad)
    text = build_text_table(student, config, vocabulary, torch.device("cpu"))
    optim = torch.optim.AdamW(student.parameters(), lr=lr, weight_decay=0.0)
    loader, _ = make_loader(config, data_root, vocabulary, 0)
    canvas = config.input_size
    start, step, history, log = time.monotonic(), 0, {}, []
    for batch in loader:
        elapsed = time.monotonic() - start
        if elapsed > minutes * 60:
            break
        for group in optim.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / 50)
        raw = batch["image"].float()  # (B, 3, 256, 256) on the 0-255 scale; black is 0
        if rng.random() < WHOLE_CANVAS_P:
            h = w = canvas
        else:
            h, w = (int(v) for v in rng.integers(WINDOW_SIDES[0], WINDOW_SIDES[1] + 1, size=2))
        top, left = int(rng.integers(0, canvas - h + 1)), int(rng.integers(0, canvas - w + 1))
        window = raw[..., top : top + h, left : left + w]
        small = (-(-h // MULTIPLE) * MULTIPLE, -(-w // MULTIPLE) * MULTIPLE)
        ids = batch["prompt_ids"]
        tokens = type(text)(text.tokens[ids], text.mask[ids])
        with torch.no_grad():
            target = teacher(to_model_input(centred(window, canvas, canvas)), tokens)
        output = student(to_model_input(centred(window, *small)), tokens)
        loss, parts = distillation_loss(output, target, h, w)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 5.0)
        optim.step()
        step += 1
        for key, value in {"loss": float(loss.detach()), **parts}.items():
            history[key] = 0.95 * history.get(key, value) + 0.05 * value
        if step % 20 == 0 or step == 1:
            row = {"step": step, "seconds": round(elapsed, 1), **{k: round(v, 4) for k, v in history.items()}}
            row["window"] = [h, w]
            log.append(row)
            print(json.dumps(row), flush=True)
        if step % 500 == 0:
            save(student, out / "last", _metadata(teacher, step, elapsed, lr))
    elapsed = time.monotonic() - start
    save(student, out / "last", _metadata(teacher, step, elapsed, lr))
    hardware = _hardware(torch.device("cpu"))
    summary = {"steps": step, "seconds": round(elapsed, 1), "final": history, "hardware": hardware}
    (out / "summary.json").write_text(json.dumps({**summary, "log": log}, indent=1))
    return summary


def _metadata(teacher, step: int, elapsed: float, lr: float) -> dict:
    meta = {k: v for k, v in teacher.metadata.items() if k != "checkpoint"}
    meta["training_history"] = list(meta.get("training_history", [])) + [
        {
            "stage": "canvas distillation (training.distill_canvas)",
            "steps": step,
            "wall_time_s": round(elapsed, 1),
            "lr": lr,
            "windows": list(WINDOW_SIDES),
            "whole_canvas_p": WHOLE_CANVAS_P,
        }
    ]
    return meta


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--init-checkpoint", required=True)
    parser.add_argument("--config", required=True, help="training config: data mix and augmentation")
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--minutes", type=float, default=40.0)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    return distill(load_config(args.config), args.data_root, args.out, args.init_checkpoint, args.minutes,
                   args.lr, args.seed)  # fmt: skip


if __name__ == "__main__":
    main()
