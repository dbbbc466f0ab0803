"""Throw-away probe: flat-field and destriping before the unchanged pipeline, on the two held-out
light-sheet volumes only (docs/experiments/2026-12-06-realistic-presets.md). It decides nothing: a
preprocessing step must go through the evaluation protocol on every row.

    PYTHONPATH=src:. .venv/bin/python -m benchmarks.accuracy.checks.lightsheet_preprocessing_probe \\
        [--shared ../shared]
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi
from training.validation import heldout_synthetic

from fveseg.inference import load_segmenter
from fveseg.params import SegmentParams
from fveseg.pipeline import label_layers, segment_array


def subtract_background(image: np.ndarray, spacing, sigma_um: float) -> np.ndarray:
    """Image minus its in-plane Gaussian blur of ``sigma_um``, clipped at 0."""
    data = image.astype(np.float32)
    sigma = (0.0, sigma_um / spacing[1], sigma_um / spacing[2])
    return np.clip(data - ndi.gaussian_filter(data, sigma), 0, None)


def destripe(image: np.ndarray) -> np.ndarray:
    """Image minus each row's median (the stripes run along x), shifted to be non-negative."""
    data = image.astype(np.float32)
    data = data - np.median(data, axis=2, keepdims=True)
    return data - data.min()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", default="../shared")
    args = parser.parse_args()
    spec = importlib.util.spec_from_file_location("metrics", Path(args.shared) / "tools/instance_metrics.py")
    metrics = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(metrics)
    params, segmenter = SegmentParams(), load_segmenter("default", "cpu", 8)
    for volume in heldout_synthetic(2, preset="lightsheet"):
        spacing = volume.spacing
        candidates = {
            "raw": volume.image,
            "background 10 um": subtract_background(volume.image, spacing, 10.0),
            "destripe": destripe(volume.image),
            "destripe + background + 1 px blur": ndi.gaussian_filter(
                subtract_background(destripe(volume.image), spacing, 10.0), (0, 1, 1)
            ),
        }
        for name, image in candidates.items():
            result = segment_array(segmenter, image, params, spacing)
            labels = label_layers(result, params, spacing, image=image)["nuclei"][0]
            scores = metrics.instance_scores(volume.labels, labels)
            print(
                f"{name}: F1 {scores['f1']:.3f} Dice {metrics.dice(volume.labels, labels):.3f} "
                f"objects {labels.max()} of {volume.labels.max()} scale {result.scale:.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
