"""Compare instance post-processing variants on several datasets (the network runs once per volume).

    PYTHONPATH=src:. python -m benchmarks.accuracy.checks.compare_postprocessing \
        CHECKPOINT [DATA_ROOT [RESIZE]]

DATA_ROOT (required) holds val/dsb2018_stage1test_fluo, nuclei2d and nuclei3d. Prints the
mean instance F1@0.5 per set for each variant ("default" is what the CLI writes: speck filter, edge
threshold 0.2, focus trimming), the Dice of the default labels and the mean in-plane scale used;
docs/model-card.md records the result. RESIZE (default "auto") is the Segmenter's in-plane ``scale``
(the CLI's ``--resize``).
"""

import glob
import sys
import time

import numpy as np
from scipy import ndimage as ndi

from fveseg.inference.segmenter import Segmenter
from fveseg.instances.haze import trim_out_of_focus
from fveseg.instances.split import SPECK_FRACTION, split_instances
from fveseg.metrics import dice, instance_scores
from fveseg.synthetic import make_nuclei_volume


def variants(mask, edges, spacing, image, axis):
    """(name, labels) for each instance step compared; "default" is what the CLI writes."""
    watershed = split_instances(mask, edges, spacing=spacing)
    specks = split_instances(mask, edges, spacing=spacing, min_relative_size=SPECK_FRACTION)
    yield "default", trim_out_of_focus(specks, image, axis=axis)
    yield "no focus trim", specks
    old_edges = split_instances(
        mask, edges, spacing=spacing, min_relative_size=SPECK_FRACTION, edge_threshold=0.5
    )
    yield "edge 0.5", trim_out_of_focus(old_edges, image, axis=axis)
    yield "no specks", trim_out_of_focus(watershed, image, axis=axis)
    yield "no necks", split_instances(mask, edges, spacing=spacing, split_necks=None)
    yield "reference", split_instances(mask, edges, spacing=spacing, method="reference")
    yield "components", ndi.label(mask)[0]


def datasets(root):
    """(set name, image, labels, spacing) for the real and held-out procedural volumes."""
    for path in sorted(glob.glob(f"{root}/val/dsb2018_stage1test_fluo/*.npz")):
        data = np.load(path)
        yield "val", data["image"][None], data["labels"][None], None
    data = np.load(f"{root}/nuclei2d/dsb2018_nuclei_2d.npz")
    yield "dsb2d", data["image"][None], data["labels"][None], None
    data = np.load(f"{root}/nuclei3d/cells3d_nuclei.npz")
    yield "cells3d", data["image"], data["labels"], tuple(data["spacing_zyx"])
    for seed in (9001, 9002):
        volume = make_nuclei_volume((24, 192, 192), seed=seed, spacing=(1.5, 0.5, 0.5), preset="hard")
        yield "synth-hard", volume.image, volume.labels, volume.spacing


def main(argv):
    checkpoint = argv[0] if argv else None
    if len(argv) < 2:
        raise SystemExit("usage: compare_postprocessing CHECKPOINT DATA_ROOT [RESIZE]")
    root = argv[1]
    resize = argv[2] if len(argv) > 2 else "auto"
    resize = resize if resize == "auto" else float(resize)
    segmenter = Segmenter(checkpoint=checkpoint)
    started, scores = time.time(), {}
    for name, image, truth, spacing in datasets(root):
        result = segmenter.segment(image, ["nuclei"], spacing=spacing, scale=resize)
        mask, edges = result.semantic > 0, result.edges[0].astype(np.float32)
        row = {"scale": result.scale}
        for variant, labels in variants(mask, edges, spacing, image, result.axis):
            row[variant] = instance_scores(truth, labels)["f1"]
            if variant == "default":
                row["dice"] = dice(truth, labels > 0)
        scores.setdefault(name, []).append(row)
    for name, rows in scores.items():
        means = "  ".join(f"{key} {np.mean([row[key] for row in rows]):.3f}" for key in rows[0])
        print(f"{name:11s} n={len(rows):2d} {means}")
    print(f"{time.time() - started:.0f} s")


if __name__ == "__main__":
    main(sys.argv[1:])
