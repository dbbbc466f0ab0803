"""Does the automatic resize keep accuracy when nuclei are larger than in training? (docs/model-card.md)

    PYTHONPATH=src:. python -m benchmarks.accuracy.checks.check_auto_resize [CHECKPOINT]

Two procedural volumes (anisotropic and isotropic presets, unseen seeds) are zoomed 1×, 2× and 2.5×
in-plane (labels with nearest neighbour) and segmented with ``scale="auto"`` and ``scale=1``; the
instances are made as the CLI makes them. Prints the chosen scale, Dice and instance F1@0.5 per run.
"""

import sys

from scipy import ndimage as ndi

from fveseg.inference.segmenter import Segmenter
from fveseg.metrics import dice, instance_scores
from fveseg.pipeline import SegmentParams, label_layers, segment_array
from fveseg.synthetic import make_nuclei_volume


def main(argv: list[str]) -> None:
    segmenter = Segmenter(checkpoint=argv[0] if argv else None)
    for seed, preset in ((9101, "anisotropic"), (9102, "isotropic")):
        volume = make_nuclei_volume((24, 128, 128), seed=seed, preset=preset)
        for zoom in (1.0, 2.0, 2.5):
            image = ndi.zoom(volume.image, (1, zoom, zoom), order=1) if zoom != 1 else volume.image
            truth = ndi.zoom(volume.labels, (1, zoom, zoom), order=0) if zoom != 1 else volume.labels
            spacing = (volume.spacing[0], volume.spacing[1] / zoom, volume.spacing[2] / zoom)
            for scale in ("auto", 1.0):
                params = SegmentParams(resize=scale)
                result = segment_array(segmenter, image, params, spacing)
                labels = label_layers(result, params, spacing, image=image)["nuclei"][0]
                f1 = instance_scores(truth, labels)["f1"]
                print(
                    f"{preset:12s} zoom {zoom} scale {scale!s:5s} -> {result.scale:.2f}  "
                    f"Dice {dice(truth, labels > 0):.3f}  F1 {f1:.3f}",
                    flush=True,
                )


if __name__ == "__main__":
    main(sys.argv[1:])
