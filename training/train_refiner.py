"""Train the 3D refiner (`fveseg.model.refiner.Refiner3D`) on procedural volumes segmented by the product.

1. Draw ``--volumes`` procedural nuclei volumes (`training.data.synthetic_volume`: anisotropic,
   isotropic, hard and crowded presets, imaging redrawn half the time from `APPEARANCE_RANGES`; seeds from
   `FIRST_SEED`, a range no other training run draws and far below the protocol's held-out seeds) and run
   the shipped pipeline on each (`fveseg.pipeline.prepare` + `segment_array`, default settings): the
   refiner learns on exactly what it will be given.
2. Train on random blocks (up to 12 slices of 64 x 64 pixels, flipped and rotated) of (image, gated
   probability) against the labelled foreground: binary cross-entropy plus soft Dice, AdamW, cosine
   schedule, for ``--minutes`` or ``--steps``.
3. Keep the state with the lowest loss on ``--val`` volumes held apart from the training ones, and write
   it with `fveseg.model.refiner.save_refiner` (``<out>/refiner.{json,safetensors}``).

    PYTHONPATH=src:. python -m training.train_refiner --out runs/refiner --volumes 64 --minutes 30
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

FIRST_SEED = 70_000_000_000  # training seeds stay below 10**11; the protocol's held-out seeds start at 10**12
PRESETS = ("anisotropic", "isotropic", "hard", "crowded", "hard", "crowded")
BLOCK = (12, 64, 64)
WITH_IMAGE = [True]  # set from --without-image


def segmented_volumes(count: int, cache: Path) -> list[dict]:
    """(image 0-1, gated probability, foreground) float16/uint8 arrays per volume, cached as npz."""
    from fveseg import SegmentParams, load_segmenter
    from fveseg.inference.gate import presence
    from fveseg.normalize.intensity import normalize
    from fveseg.pipeline import prepare, segment_array
    from training.data import SyntheticSpec, synthetic_volume

    cache.mkdir(parents=True, exist_ok=True)
    spec = SyntheticSpec(presets=PRESETS, channels=("nuclei",), appearance_p=0.5)
    segmenter, params = load_segmenter(), SegmentParams()
    volumes = []
    for index in range(count):
        path = cache / f"volume-{FIRST_SEED + index}.npz"
        if not path.is_file():
            volume = synthetic_volume(FIRST_SEED + index, spec)
            image, prepared = prepare(volume.image, params, volume.spacing)
            result = segment_array(segmenter, image, prepared, volume.spacing)
            gate = presence(result.existence, params.exist_threshold, params.exist_low)[0]
            shape = [1, 1, 1]
            shape[result.axis] = -1
            gated = np.asarray(result.probabilities[0], np.float32) * gate.reshape(shape)
            np.savez_compressed(
                path,
                image=(normalize(image).astype(np.float32) / 255).astype(np.float16),
                probability=gated.astype(np.float16),
                foreground=(volume.classes["nuclei"] > 0).astype(np.uint8),
            )
        with np.load(path) as data:
            volumes.append({name: data[name] for name in data.files})
        print(f"volume {index + 1}/{count}: {volumes[-1]['image'].shape}", flush=True)
    return volumes


def random_block(volume: dict, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Inputs (2, d, h, w) and target (1, d, h, w) of one random, flipped and rotated block."""
    shape = volume["image"].shape
    size = [min(b, s) for b, s in zip(BLOCK, shape)]
    size[1], size[2] = size[1] - size[1] % 4, size[2] - size[2] % 4
    start = [int(rng.integers(0, s - b + 1)) for s, b in zip(shape, size)]
    where = tuple(slice(a, a + b) for a, b in zip(start, size))
    channels = ["image", "probability"] if WITH_IMAGE[0] else ["probability"]
    inputs = np.stack([volume[name][where] for name in channels]).astype(np.float32)
    target = volume["foreground"][where][None].astype(np.float32)
    for axis in (1, 2, 3):
        if rng.random() < 0.5:
            inputs, target = np.flip(inputs, axis), np.flip(target, axis)
    turns = int(rng.integers(0, 4))
    inputs, target = np.rot90(inputs, turns, (2, 3)), np.rot90(target, turns, (2, 3))
    return np.ascontiguousarray(inputs), np.ascontiguousarray(target)


def loss_of(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy plus soft Dice of the foreground."""
    probability = torch.sigmoid(logits)
    overlap = (probability * target).sum()
    dice = 1 - (2 * overlap + 1) / (probability.sum() + target.sum() + 1)
    return F.binary_cross_entropy_with_logits(logits, target) + dice


def batches(volumes: list[dict], rng: np.random.Generator, size: int):
    """Blocks of one shape per batch (a volume's own block size; shallow volumes give shallow blocks)."""
    while True:
        volume = volumes[int(rng.integers(len(volumes)))]
        pairs = [random_block(volume, rng) for _ in range(size)]
        yield (
            torch.from_numpy(np.stack([p[0] for p in pairs])),
            torch.from_numpy(np.stack([p[1] for p in pairs])),
        )


def evaluate(model, volumes: list[dict]) -> tuple[float, float, float]:
    """(loss, foreground Dice of the refined probability > 0.5, the same of the network's) over whole
    volumes (cropped to multiples of 4 in-plane)."""
    losses, refined, network = [], [], []
    with torch.inference_mode():
        for volume in volumes:
            d, h, w = volume["image"].shape
            h, w = h - h % 4, w - w % 4
            channels = ["image", "probability"] if WITH_IMAGE[0] else ["probability"]
            inputs = np.stack([volume[name] for name in channels])[:, :, :h, :w].astype(np.float32)
            target = torch.from_numpy(volume["foreground"][None, None, :, :h, :w].astype(np.float32))
            logits = model(torch.from_numpy(inputs)[None])
            losses.append(float(loss_of(logits, target)))
            for scores, mask in ((refined, logits > 0), (network, torch.from_numpy(inputs[-1:][None] > 0.5))):
                overlap = float((mask & (target > 0)).sum())
                scores.append(2 * overlap / max(float(mask.sum() + (target > 0).sum()), 1.0))
    return float(np.mean(losses)), float(np.mean(refined)), float(np.mean(network))


def main(argv: list[str] | None = None) -> None:
    from fveseg.model.refiner import Refiner3D, save_refiner

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for refiner.{json,safetensors} and the log")
    parser.add_argument("--volumes", type=int, default=64, help="training volumes (plus --val held apart)")
    parser.add_argument("--val", type=int, default=6)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--val-every", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--without-image", action="store_true", help="refine from the probability alone")
    parser.add_argument("--cache", default=None, help="segmented volumes (default: <out>/volumes)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    volumes = segmented_volumes(args.volumes + args.val, Path(args.cache or out / "volumes"))
    train, val = volumes[: args.volumes], volumes[args.volumes :]
    WITH_IMAGE[0] = not args.without_image
    model = Refiner3D(args.width, with_image=WITH_IMAGE[0])
    optimiser = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    start, step, best, log = time.perf_counter(), 0, math.inf, []
    loss0, refined0, network0 = evaluate(model.eval(), val)
    print(f"start: val loss {loss0:.4f}, Dice refined {refined0:.4f} / network {network0:.4f}", flush=True)
    deadline = start + 60 * args.minutes
    for inputs, target in batches(train, rng, args.batch_size):
        if step >= args.steps or time.perf_counter() > deadline:
            break
        progress = min(1.0, (time.perf_counter() - start) / (60 * args.minutes), step / args.steps)
        for group in optimiser.param_groups:
            group["lr"] = args.lr * 0.5 * (1 + math.cos(math.pi * progress))
        model.train()
        loss = loss_of(model(inputs), target)
        optimiser.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimiser.step()
        step += 1
        if step % args.val_every == 0:
            val_loss, refined, network = evaluate(model.eval(), val)
            seconds = time.perf_counter() - start
            log.append(
                {"step": step, "seconds": round(seconds), "train_loss": loss.item(), "val_loss": val_loss,
                 "val_dice_refined": refined, "val_dice_network": network}
            )  # fmt: skip
            print(json.dumps(log[-1]), flush=True)
            if val_loss < best:
                best = val_loss
                meta = {"prompts": ["nuclei"], "steps": step, "seconds": round(seconds), "val_loss": val_loss,
                        "val_dice": refined, "val_dice_network": network, "volumes": args.volumes,
                        "first_seed": FIRST_SEED, "trained_on": __doc__.splitlines()[0]}  # fmt: skip
                save_refiner(model, out / "refiner", meta, overwrite=True)
    (out / "log.json").write_text(json.dumps(log, indent=1))
    print(f"done: {step} steps in {time.perf_counter() - start:.0f} s; best val loss {best:.4f}", flush=True)


if __name__ == "__main__":
    main()
