"""Noisy copies of the real data: the default pipeline on cells3d and the 53 validation images plus noise.

    PYTHONPATH=src:. python -m benchmarks.accuracy.checks.check_noise \
        [CHECKPOINT [--noisy-checkpoint NOISY]] \
        --data-root DATA

Stacks from dimmer or faster acquisitions are noisier than the cells3d confocal stack and the DSB images.
Each check adds Gaussian noise whose standard deviation is a fraction (the level) of the image's signal
range, the 99th percentile minus the median (0.1: a signal-to-noise ratio of about 10; 0.4: about 2.5),
segments with the prompt "nuclei" at the automatic scale and makes instances as the CLI does. Prints
instance F1@0.5 per noisy copy and the means (docs/model-card.md, "Noise").
"""

from __future__ import annotations

import argparse
import glob
from pathlib import Path

import numpy as np

#: (noise level, seed) of the cells3d copies.
CELLS3D_NOISE = ((0.0, 0), (0.1, 0), (0.2, 0), (0.2, 1), (0.4, 0), (0.4, 1))
#: Noise levels of the validation-image copies (one draw per image, seeded by its index).
VALIDATION_NOISE = (0.2, 0.4)


def add_noise(image: np.ndarray, level: float, seed: int) -> np.ndarray:
    """``image`` as float32 plus Gaussian noise of standard deviation ``level`` × (99th percentile − median).

    Parameters
    ----------
    image : ndarray, any shape, numeric
    level : float
        Noise standard deviation as a fraction of the signal range; 0 returns the image unchanged.
    seed : int
        Seed of the noise draw.

    Returns
    -------
    ndarray of float32, the shape of ``image``
    """
    image = np.asarray(image, dtype=np.float32)
    if level == 0:
        return image
    signal = float(np.percentile(image, 99) - np.median(image))
    noise = np.random.default_rng(seed).standard_normal(image.shape, dtype=np.float32)
    return image + np.float32(level * signal) * noise


def main(argv: list[str] | None = None) -> None:
    from training.data import load_volume_file
    from training.validation import build_segmenter, segment_like_cli

    from fveseg.metrics import instance_scores

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "checkpoint", nargs="?", default=None, help="default: the bundled models chosen by noise, as the CLI"
    )
    parser.add_argument("--noisy-checkpoint", default=None, help="choose by noise: CHECKPOINT or this")
    parser.add_argument("--data-root", required=True, help="the folder holding nuclei3d/")
    args = parser.parse_args(argv)
    root = Path(args.data_root)
    cells3d = root / "nuclei3d" / "cells3d_nuclei.npz"
    validation = sorted(glob.glob(str(root / "val" / "dsb2018_stage1test_fluo" / "*.npz")))
    if not cells3d.is_file() or not validation:
        raise SystemExit(f"error: cells3d or the validation images not found under {root}; pass --data-root")
    segmenter = build_segmenter(args.checkpoint, args.noisy_checkpoint)

    def f1(image, truth, spacing):
        labels, scale = segment_like_cli(segmenter, image, spacing)
        return instance_scores(truth, labels)["f1"], scale

    def model(image):  # which network an AutoSegmenter picks for this image
        return f"  model {segmenter.choose(image)[0]}" if hasattr(segmenter, "choose") else ""

    volume = load_volume_file(cells3d)
    noisy_f1s = []
    for level, seed in CELLS3D_NOISE:
        score, scale = f1(add_noise(volume.image, level, seed), volume.classes["nuclei"], volume.spacing)
        noisy_f1s += [score] if level else []
        picked = model(add_noise(volume.image, level, seed))
        print(f"cells3d noise {level} seed {seed}: scale {scale:.2f}  F1 {score:.3f}{picked}", flush=True)
    print(f"cells3d noisy copies: mean F1 {np.mean(noisy_f1s):.3f}")
    images = [load_volume_file(path) for path in validation]
    for level in VALIDATION_NOISE:
        scores = [
            f1(add_noise(v.image, level, i), v.classes["nuclei"], None)[0] for i, v in enumerate(images)
        ]
        noisy = ""
        if hasattr(segmenter, "choose"):
            picks = [segmenter.choose(add_noise(v.image, level, i))[0] for i, v in enumerate(images)]
            noisy = f"  ({sum(p == segmenter.names[1] for p in picks)} run by {segmenter.names[1]})"
        mean = np.mean(scores)
        print(f"{len(images)} validation images, noise {level}: mean F1 {mean:.3f}{noisy}", flush=True)


if __name__ == "__main__":
    main()
