"""Hard-example weights for the real training images: score a model on each file, weight by its errors.

    PYTHONPATH=src:. python -m training.hard_examples --checkpoint src/fveseg/weights/default \\
        --data-root DATA --out hard.json
    # then train with  "real_weights": "hard.json"  in the config (or --real-weights hard.json)

Each file's weight is ``floor + (1 - F1)``, F1 the instance F1 at IoU 0.5 of the model's labels as the
CLI writes them (automatic resize, edge split, speck filter). Images the model already gets right keep
``floor`` (default 0.25) so that they are still seen; an image it fails on entirely is drawn
(1 + floor) / floor = 5 times as often.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def file_scores(checkpoint: str, files: list[str], device: str = "cpu", progress=None) -> dict[str, float]:
    """Instance F1@0.5 of `checkpoint` on each labelled file ({file name: F1}), prompt "nuclei"."""
    from fveseg.inference.segmenter import Segmenter
    from fveseg.metrics import instance_scores
    from fveseg.model.checkpoint import load_checkpoint
    from training.data import load_volume_file
    from training.validation import instances_from, predict

    segmenter = Segmenter(load_checkpoint(checkpoint), device=device)
    scores = {}
    for index, path in enumerate(files):
        volume = load_volume_file(path)
        labels = volume.classes.get("nuclei", next(iter(volume.classes.values())))
        masks, edges, _ = predict(segmenter, volume.image, ["nuclei"], volume.spacing, 0)
        pred = instances_from(masks[0], edges[0], volume.spacing, image=volume.image, axis=0)
        scores[Path(path).name] = float(instance_scores(labels, pred)["f1"])
        if progress is not None:
            progress(index + 1, len(files))
    return scores


def weights_from_scores(scores: dict[str, float], floor: float = 0.25) -> dict[str, float]:
    """``floor + (1 - F1)`` per file (F1 clipped to [0, 1])."""
    if floor <= 0:
        raise ValueError(f"floor must be > 0 so that every image can still be drawn, got {floor}")
    return {name: round(floor + 1.0 - min(max(f1, 0.0), 1.0), 4) for name, f1 in scores.items()}


def main(argv: list[str] | None = None) -> int:
    from fveseg.errors import InputError
    from training.cli_args import checkpoint_parser, output_is_free
    from training.dataset import MixConfig, find_real_files

    parser = checkpoint_parser("python -m training.hard_examples", __doc__, "JSON file to write")
    parser.add_argument("--floor", type=float, default=0.25)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if not output_is_free(out):
        return 2
    files = find_real_files(args.data_root, MixConfig())
    if not files:
        print(f"error: no training files under {args.data_root}/train/dsb2018_fluo", file=sys.stderr)
        return 2
    start = time.time()
    try:
        scores = file_scores(args.checkpoint, files, args.device)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    weights = weights_from_scores(scores, args.floor)
    fd, tmp = tempfile.mkstemp(dir=out.parent or ".", suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        json.dump(weights, handle, indent=0, sort_keys=True)
    os.replace(tmp, out)
    f1 = np.array(list(scores.values()))
    print(
        f"{len(files)} files in {time.time() - start:.0f} s: mean F1 {f1.mean():.3f}, "
        f"{(f1 < 0.5).sum()} below 0.5; weights written to {out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
