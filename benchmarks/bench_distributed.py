"""Scale-out: peak memory per worker stays bounded by the block size, for a volume larger than it may hold.

Two measurements on a 2-worker LocalCluster (processes, 1 thread each):

1. ``instances``: `split_instances_in_blocks` on a synthetic (D, 1024, 1024) nuclei mask + edge map whose
   uncompressed inputs and labels (mask 1 B + edges 2 B + labels 4 B per voxel) exceed the worker memory
   limit; compared with one in-process `split_instances` on the whole volume (its peak RSS).
2. ``segment``: the full block pipeline (`segment_zarr_in_blocks`, network + instances + OME-Zarr write)
   on an OME-Zarr volume with a randomly initialised ``tiny`` model (or ``--model``).

Peak memory per worker is each worker process's ``ru_maxrss`` read at the end (includes Python, numpy,
torch and the model).

    .venv/bin/python benchmarks/bench_distributed.py [--depth 128] [--memory-limit 1.5GiB] [--model CKPT]
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


def nuclei_mask(depth: int, side: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Touching box-shaped nuclei (mask uint8) and their boundaries as an edge probability (float16)."""
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    seeds = np.zeros((depth, side, side), np.uint32)
    count = depth * side * side // 6000
    seeds[rng.integers(0, depth, count), rng.integers(0, side, count), rng.integers(0, side, count)] = (
        np.arange(1, count + 1, dtype=np.uint32)
    )
    labels = ndi.grey_dilation(seeds, size=(5, 11, 11))  # box nuclei: a separable, fast filter
    edges = (ndi.grey_dilation(labels, size=3) != ndi.grey_erosion(labels, size=3)) & (labels > 0)
    return (labels > 0).astype(np.uint8), edges.astype(np.float16)


def worker_peaks(client) -> list[float]:
    return sorted(
        v / 1024
        for v in client.run(
            lambda: __import__("resource").getrusage(__import__("resource").RUSAGE_SELF).ru_maxrss
        ).values()
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--depth", type=int, default=128)
    parser.add_argument("--side", type=int, default=1024)
    parser.add_argument("--block-slices", type=int, default=8)
    parser.add_argument("--margin", type=int, default=8)
    parser.add_argument("--memory-limit", default="1.5GiB")
    parser.add_argument("--model")
    parser.add_argument("--segment-shape", type=int, nargs=3, default=(32, 256, 256))
    args = parser.parse_args()

    from fveseg.distributed import connect

    work = Path(tempfile.mkdtemp(prefix="fveseg-bench-dist-"))
    # Start the workers before the big arrays exist: a worker's peak RSS must not include them.
    with connect(workers=2, memory_limit=args.memory_limit) as client:
        run(client, work, args)


def run(client, work: Path, args) -> None:
    import zarr

    from fveseg.distributed import split_instances_in_blocks

    mask, edges = nuclei_mask(args.depth, args.side)
    volume_mib = mask.size * (1 + 2 + 4) / 2**20
    group = zarr.open_group(str(work / "pass1.zarr"), mode="w")
    plane = (args.side, args.side)
    group.create_array("semantic", data=mask, chunks=(args.block_slices, *plane))
    group.create_array("edges", data=edges[None], chunks=(1, args.block_slices, *plane))
    del mask, edges
    print(
        f"instances: mask {args.depth}x{args.side}x{args.side}; mask + edges + labels = "
        f"{volume_mib:.0f} MiB "
        f"uncompressed; worker memory_limit {args.memory_limit}; blocks of {args.block_slices} slices, "
        f"margin {args.margin}"
    )
    before = worker_peaks(client)
    mark = time.perf_counter()
    labels, count = split_instances_in_blocks(
        client, str(work / "pass1.zarr"), 0, work / "scratch.zarr", args.block_slices, args.margin
    )
    zarr_out = zarr.open_array(
        str(work / "labels.zarr"),
        mode="w",
        shape=labels.shape,
        dtype=np.uint32,
        chunks=(args.block_slices, *plane),
    )
    labels.store(zarr_out, lock=False)
    seconds = time.perf_counter() - mark
    print(
        f"| blocks on 2 workers | {seconds:.1f} s | {count} objects | worker peak RSS "
        f"{', '.join(f'{p:.0f}' for p in worker_peaks(client))} MiB (idle {before[0]:.0f}) |"
    )

    from fveseg.instances.split import split_instances

    source = zarr.open_group(str(work / "pass1.zarr"), mode="r")
    base = peak_rss_mib()
    mark = time.perf_counter()
    whole = split_instances(source["semantic"][:] == 1, source["edges"][0])
    seconds = time.perf_counter() - mark
    blocks = zarr_out[:]
    pairs = np.unique(np.stack([whole.ravel(), blocks.ravel()], 1), axis=0)
    same = len(pairs) - 1 == int(whole.max()) == count and np.array_equal(whole > 0, blocks > 0)
    print(f"blocks equal the whole-volume split up to renumbering: {same}")
    print(
        f"| one process, whole volume | {seconds:.1f} s | {int(whole.max())} objects | "
        f"peak RSS {peak_rss_mib():.0f} MiB (before {base:.0f}) |"
    )
    del whole
    if args.model != "skip":
        segment_benchmark(client, work, args)


def segment_benchmark(client, work: Path, args) -> None:
    import torch

    from fveseg.distributed import segment_zarr_in_blocks
    from fveseg.io import write_labels_zarr
    from fveseg.model import build_model
    from fveseg.model.checkpoint import save_checkpoint
    from fveseg.pipeline import SegmentJob, SegmentParams
    from fveseg.synthetic import make_nuclei_volume

    model = args.model
    if model is None:
        torch.manual_seed(0)
        model = str(save_checkpoint(build_model("tiny"), work / "tiny"))
    sample = make_nuclei_volume(tuple(args.segment_shape), seed=1)
    source = work / "image.ome.zarr"
    write_labels_zarr(source, sample.labels, "truth", image=sample.image, spacing=sample.spacing)
    options = SegmentParams(
        prompts=("nuclei",),
        instances=True,
        checkpoint=model,
        device="cpu",
        batch_size=8,
        axis=0,
        exist_threshold=0.0,
    )
    mark = time.perf_counter()
    summary = segment_zarr_in_blocks(
        client,
        SegmentJob(source, work / "out.ome.zarr", "zarr"),
        options,
        block_slices=args.block_slices,
        instance_margin=args.margin,
    )
    print(
        f"segment {tuple(args.segment_shape)} in blocks of {args.block_slices}: "
        f"{time.perf_counter() - mark:.1f} s, stages "
        + ", ".join(f"{k} {v:.1f} s" for k, v in summary.stages.items())
        + f"; worker peak RSS {', '.join(f'{p:.0f}' for p in worker_peaks(client))} MiB"
    )


if __name__ == "__main__":
    main()
