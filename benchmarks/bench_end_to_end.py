"""End to end: a 64×256×256 TIFF → nuclei instance labels in OME-Zarr, timed per stage, with peak RSS.

Stages: read (TIFF → numpy), encode (FVE of every slice, measured alone), network (segment minus encode:
model forward, tiling, thresholds), instances (split_instances), write (OME-Zarr image + labels).

    .venv/bin/python benchmarks/bench_end_to_end.py [--model CHECKPOINT] [--shape 64 256 256]

Without ``--model`` it uses the installed default model; when that is missing it says so and measures a
randomly initialised ``tiny`` model (same architecture and cost as a trained ``tiny``, meaningless masks,
so ``--mask-threshold`` is set to the median probability to give the instance stage real work).
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model")
    parser.add_argument("--shape", type=int, nargs=3, default=(64, 256, 256))
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()

    import tifffile
    import torch

    from fveseg import fve, io
    from fveseg.inference.segmenter import Segmenter
    from fveseg.instances.split import split_instances
    from fveseg.model.checkpoint import default_checkpoint_path, save_checkpoint
    from fveseg.synthetic import make_nuclei_volume

    work = Path(tempfile.mkdtemp(prefix="fveseg-bench-"))
    model, note = args.model, "given checkpoint"
    if model is None:
        if default_checkpoint_path().with_suffix(".json").is_file():
            model, note = str(default_checkpoint_path()), "default model"
        else:
            from fveseg.model import build_model

            torch.manual_seed(0)
            model = str(save_checkpoint(build_model("tiny"), work / "tiny"))
            note = "default model MISSING: randomly initialised 'tiny' model"
    sample = make_nuclei_volume(tuple(args.shape), seed=0)
    source = work / "volume.tif"
    tifffile.imwrite(source, sample.image, metadata={"axes": "ZYX"})
    times: dict[str, float] = {}
    mark = time.perf_counter()
    volume = io.read_volume(source)
    data = np.asarray(volume.data)
    times["read"] = time.perf_counter() - mark

    segmenter = Segmenter(model, "cpu", args.batch_size)
    segmenter.model.encode_text(["nuclei"])  # text model loaded outside the timed stages
    mark = time.perf_counter()
    for _ in fve.encode_volume(data, order=1, batch_size=args.batch_size):
        pass
    times["encode"] = time.perf_counter() - mark

    mark = time.perf_counter()
    probe = segmenter.segment(data, ["nuclei"], spacing=sample.spacing, axis=0)
    segment_seconds = time.perf_counter() - mark
    times["network"] = segment_seconds - times["encode"]
    threshold = (
        0.5
        if args.model or "default model" == note
        else float(np.median(np.asarray(probe.probabilities, np.float32)))
    )
    semantic = probe.semantic if threshold == 0.5 else probe.rethreshold(threshold, 0.0)

    mark = time.perf_counter()
    labels = split_instances(semantic == 1, np.asarray(probe.edges[0]), spacing=sample.spacing)
    times["instances"] = time.perf_counter() - mark

    mark = time.perf_counter()
    io.write_labels_zarr(work / "out.ome.zarr", labels, "nuclei", spacing=sample.spacing, image=data)
    times["write"] = time.perf_counter() - mark
    # The encode stage ran once alone and again inside segment; the pipeline total counts it once.
    total = sum(times.values())

    print(
        f"model: {note} ({model}); volume {tuple(args.shape)} uint16; batch {args.batch_size}; "
        f"torch threads {torch.get_num_threads()}; objects found {int(labels.max())}"
    )
    print("| stage | seconds | share |")
    print("|---|---|---|")
    for stage, seconds in times.items():
        print(f"| {stage} | {seconds:.2f} | {seconds / total:.0%} |")
    print(f"| **total** | **{total:.2f}** | {segment_seconds / args.shape[0]:.3f} s per slice (segment) |")
    print(f"peak RSS: {peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
