"""The main job on the bundled sample: segment nuclei end to end, write OME-Zarr, score against truth.

Generates the deterministic synthetic sample (32 × 128 × 128 nuclei, 1 × 0.5 × 0.5 µm voxels), segments
``nuclei`` with the default model (or ``--model``), splits instances, writes the image and the instance
labels to one OME-Zarr (default ``./fveseg-demo.zarr``) and prints objects found, Dice, F1 and timings.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from fveseg.cli.common import ProgressBar, format_table
from fveseg.errors import CheckpointError
from fveseg.instances.split import INSTANCE_METHODS
from fveseg.params import SegmentParams

NAME = "demo"
HELP = "segment the bundled synthetic sample and score it (the README's main job)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", type=Path, default=Path("fveseg-demo.zarr"), help="output OME-Zarr")
    parser.add_argument(
        "--model",
        help="checkpoint path, or a bundled model's name: noise-robust for very noisy stacks "
        "(default: the default model)",
    )
    parser.add_argument("--device", default=SegmentParams().device, help="auto, cpu, cuda, mps")
    parser.add_argument(
        "--batch-size", type=int, default=SegmentParams().batch_size, help="slices per network batch"
    )
    parser.add_argument(
        "--instance-method", choices=INSTANCE_METHODS, default=SegmentParams().instance_method
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def resolve_model(model: str | None) -> str:
    """The checkpoint to use; a clear `CheckpointError` when the default model is not installed."""
    from fveseg.cli.info import default_checkpoint_location
    from fveseg.model.checkpoint import checkpoint_exists

    if model is not None:
        # a file here (an fveseg checkpoint or the BiomedParse v2 .ckpt) is checked by the loader
        if not (Path(model).exists() or checkpoint_exists(Path(model))):
            raise CheckpointError(f"checkpoint {model} does not exist (fix: check the --model path)")
        return model
    default = default_checkpoint_location()
    if default is None or not checkpoint_exists(default):
        raise CheckpointError(
            "the default model is missing: no trained checkpoint ships with this version yet "
            f"(looked for {default}) (fix: pass --model CHECKPOINT, e.g. one made by training/)"
        )
    return str(default)


def run(args: argparse.Namespace) -> int:
    from fveseg import io, metrics
    from fveseg.inference import load_segmenter
    from fveseg.pipeline import label_layers, prepare, segment_array
    from fveseg.synthetic import make_sample_volume

    if args.output.exists() and not args.overwrite:
        from fveseg.errors import OutputExistsError

        raise OutputExistsError(f"{args.output} already exists (fix: pass --overwrite or choose another -o)")
    checkpoint = resolve_model(args.model)
    times: dict[str, float] = {}

    mark = time.perf_counter()
    sample = make_sample_volume()
    times["make sample"] = time.perf_counter() - mark

    mark = time.perf_counter()
    segmenter = load_segmenter(checkpoint, args.device, args.batch_size)
    times["load model"] = time.perf_counter() - mark

    options = SegmentParams(
        prompts=("nuclei",),
        instances=True,
        instance_method=args.instance_method,
        checkpoint=checkpoint,
        device=args.device,
        batch_size=args.batch_size,
    )
    bar = ProgressBar("segment sample", enabled=not args.quiet)
    mark = time.perf_counter()
    try:
        image, options = prepare(sample.image, options, sample.spacing)
        result = segment_array(segmenter, image, options, sample.spacing, progress=bar)
    finally:
        bar.close()
    times["segment"] = time.perf_counter() - mark

    mark = time.perf_counter()
    labels, _ = label_layers(result, options, sample.spacing, image=image)["nuclei"]
    times["instances"] = time.perf_counter() - mark

    mark = time.perf_counter()
    with io.atomic_path(args.output, overwrite=args.overwrite) as tmp:
        io.write_labels_zarr(tmp, labels, "nuclei", spacing=sample.spacing, image=sample.image)
    times["write"] = time.perf_counter() - mark

    truth = sample.labels
    scores = metrics.instance_scores(truth, labels)
    summary = {
        "objects found": int(labels.max(initial=0)),
        "objects true": int(truth.max(initial=0)),
        "dice": float(metrics.dice(truth > 0, labels > 0)),
        "f1@0.5": float(scores["f1"]),
        "dice tp": float(scores["dsc_tp"]),
    }
    out = sys.stdout
    print(
        f"sample {sample.image.shape} {np.dtype(sample.image.dtype).name}, spacing {sample.spacing} µm, "
        f"model {checkpoint}",
        file=out,
    )
    print(format_table([summary]), file=out)
    print(format_table([{k: round(v, 2) for k, v in times.items()}]) + "  (seconds)", file=out)
    print(f"wrote {args.output} (image + labels/nuclei); open it with: napari {args.output}", file=out)
    return 0
