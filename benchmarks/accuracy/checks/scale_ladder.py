"""F1 of a checkpoint at a ladder of fixed in-plane scales, with what a scale rule could measure.

    PYTHONPATH=src:. python -m benchmarks.accuracy.checks.scale_ladder \
        --checkpoint src/fveseg/weights/default \\
        --data-root DATA --out ladder.jsonl

One JSON line per (image, scale): instance F1@0.5 and Dice of the labels the CLI would write, the
typical object diameter of the mask (`fveseg.inference.auto_scale.typical_diameter`, in native pixels), the
share
of unsure pixels (`ambiguous_fraction`), the number of objects and the seconds it took. The images are
the 53 real validation images, the DSB 2D test image, cells3d and two held-out synthetic volumes.
docs/model-card.md ("A second look at half the scale") compares scale rules on this table.
"""

from __future__ import annotations

import glob
import json
import time
from pathlib import Path

import numpy as np

SCALES = (1.5, 1.25, 1.0, 0.85, 0.7, 0.6, 0.5, 0.4, 0.35, 0.3, 0.25, 0.2, 0.15)


def ladder_items(data_root: str | Path):
    """(name, image, labels, spacing) of every image the ladder measures."""
    from training.data import load_volume_file
    from training.validation import heldout_synthetic

    root = Path(data_root)
    for index, path in enumerate(sorted(glob.glob(str(root / "val" / "dsb2018_stage1test_fluo" / "*.npz")))):
        volume = load_volume_file(path)
        yield f"val{index:02d}", volume.image, volume.classes["nuclei"], None
    for name, path in (
        ("dsb2d", "nuclei2d/dsb2018_nuclei_2d.npz"),
        ("cells3d", "nuclei3d/cells3d_nuclei.npz"),
    ):
        if (root / path).is_file():
            volume = load_volume_file(root / path)
            yield (
                name,
                volume.image,
                volume.classes["nuclei"],
                volume.spacing if volume.image.shape[0] > 1 else None,
            )
    synthetic = heldout_synthetic(2, shape=(32, 192, 192), spacing=(1.0, 0.3, 0.3), first_seed=10**12 + 100)
    for index, volume in enumerate(synthetic):
        yield f"syn{index}", volume.image, volume.labels, volume.spacing


def measure(segmenter, image, labels, spacing, scale: float) -> dict:
    """One rung: segment at ``scale`` and score what the CLI would write."""
    from training.validation import instances_from, predict

    from fveseg.fve.encoding import select_view
    from fveseg.inference.auto_scale import ambiguous_fraction, typical_diameter
    from fveseg.metrics import dice, instance_scores

    axis = select_view(image.shape, spacing) if spacing is not None else 0
    start = time.time()
    masks, edges, _ = predict(segmenter, image, ["nuclei"], spacing, axis, scale=scale)
    probabilities = masks[0]
    pred = instances_from(probabilities, edges[0], spacing, image=image, axis=axis)
    mask = np.moveaxis(probabilities > 0.5, axis, 0)
    return {
        "scale": scale,
        "f1": float(instance_scores(labels, pred)["f1"]),
        "dice": float(dice(labels, pred > 0)),
        "diameter": typical_diameter(mask.reshape(-1, *mask.shape[-2:])),
        "unsure": ambiguous_fraction(probabilities),
        "objects": int(pred.max()),
        "seconds": round(time.time() - start, 2),
    }


def main(argv: list[str] | None = None) -> int:
    from training.cli_args import checkpoint_parser, output_is_free

    from fveseg.inference.segmenter import Segmenter
    from fveseg.model.checkpoint import load_checkpoint

    parser = checkpoint_parser(
        "python -m benchmarks.accuracy.checks.scale_ladder", __doc__, "JSON-lines file to write"
    )
    parser.add_argument("--scales", type=float, nargs="+", default=list(SCALES))
    args = parser.parse_args(argv)
    out = Path(args.out)
    if not output_is_free(out):
        return 2
    segmenter = Segmenter(load_checkpoint(args.checkpoint), device="cpu")
    partial = out.with_name(out.name + ".partial")
    with partial.open("w") as handle:
        for name, image, labels, spacing in ladder_items(args.data_root):
            for scale in args.scales:
                row = {"name": name, **measure(segmenter, image, labels, spacing, scale)}
                handle.write(json.dumps(row) + "\n")
                handle.flush()
    partial.replace(out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
