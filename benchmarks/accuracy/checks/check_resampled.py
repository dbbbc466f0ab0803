"""cells3d resampled like stacks from other microscopes: the default pipeline on each resampling.

    PYTHONPATH=src:. python -m benchmarks.accuracy.checks.check_resampled \
        [CHECKPOINT [--noisy-checkpoint NOISY]] \
        --data-root DATA

The real cells3d stack is sampled every 1st to 4th slice along z and zoomed in-plane (1, 0.7, 0.5 or
0.35×, labels with nearest neighbour), so that its nuclei look like those of coarser or smaller stacks.
Each resampling is segmented with the prompt "nuclei" at the automatic scale and the instances are made
as the CLI makes them. Prints the chosen scale, instance F1@0.5, Dice, object counts and the means
(docs/model-card.md, "Haze objects").
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

#: (z step, in-plane zoom) of each resampling.
RESAMPLINGS = ((1, 1.0), (1, 0.5), (1, 0.35), (2, 0.7), (3, 0.5), (3, 0.35), (4, 1.0), (4, 0.5))


def resample(image: np.ndarray, labels: np.ndarray, spacing, z_step: int, zoom: float):
    """Every ``z_step``-th slice, zoomed in-plane by ``zoom``; returns image, labels and spacing."""
    from scipy import ndimage as ndi

    image, labels = image[::z_step], labels[::z_step]
    if zoom != 1.0:
        image = ndi.zoom(image.astype(np.float32), (1, zoom, zoom), order=1).astype(image.dtype)
        labels = ndi.zoom(labels, (1, zoom, zoom), order=0)
    return image, labels, (spacing[0] * z_step, spacing[1] / zoom, spacing[2] / zoom)


def main(argv: list[str] | None = None) -> None:
    from training.data import load_volume_file
    from training.validation import build_segmenter, segment_like_cli

    from fveseg.metrics import dice, instance_scores

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "checkpoint", nargs="?", default=None, help="default: the bundled models chosen by noise, as the CLI"
    )
    parser.add_argument("--noisy-checkpoint", default=None, help="choose by noise: CHECKPOINT or this")
    parser.add_argument("--data-root", required=True, help="the folder holding nuclei3d/")
    args = parser.parse_args(argv)
    path = Path(args.data_root) / "nuclei3d" / "cells3d_nuclei.npz"
    if not path.is_file():
        raise SystemExit(f"error: {path} not found; pass --data-root, the folder holding nuclei3d/")
    volume = load_volume_file(path)
    segmenter = build_segmenter(args.checkpoint, args.noisy_checkpoint)
    f1s, dices = [], []
    for z_step, zoom in RESAMPLINGS:
        image, truth, spacing = resample(volume.image, volume.classes["nuclei"], volume.spacing, z_step, zoom)
        labels, scale = segment_like_cli(segmenter, image, spacing)
        f1s.append(instance_scores(truth, labels)["f1"])
        dices.append(dice(truth, labels > 0))
        print(
            f"z every {z_step}, xy {zoom:<4}: scale {scale:.2f}  F1 {f1s[-1]:.3f}  "
            f"Dice {dices[-1]:.3f}  objects {int(labels.max())} (true {len(np.unique(truth)) - 1})",
            flush=True,
        )
    print(f"mean: F1 {np.mean(f1s):.3f}  Dice {np.mean(dices):.3f}")


if __name__ == "__main__":
    main()
