"""Write a large lazily generated uint32 label volume to OME-Zarr; report time and peak memory.

The labels are a dask array whose chunks are computed on demand (balls on a jittered grid, unique
ids per chunk), so the volume never exists in memory: peak RSS shows what the writer itself holds.

Usage::

    python benchmarks/bench_write_labels.py [Z Y X] [--out DIR] [--block-mib N]
    python benchmarks/bench_write_labels.py 256 2048 2048      # the issue's size (4 GiB of uint32)
"""

from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

SOURCE_CHUNKS = (16, 512, 512)
CELL = 16  # grid pitch of the generated balls, in voxels


def _balls(block: np.ndarray, block_info=None) -> np.ndarray:
    """Label ids of balls of radius ~6 on a 16-voxel grid, with ids unique across the volume."""
    (z0, _), (y0, _), (x0, _) = block_info[None]["array-location"]
    shape = block_info[None]["chunk-shape"]
    z, y, x = np.ogrid[z0 : z0 + shape[0], y0 : y0 + shape[1], x0 : x0 + shape[2]]
    cz, cy, cx = z // CELL, y // CELL, x // CELL
    inside = ((z % CELL - 8) ** 2 + (y % CELL - 8) ** 2 + (x % CELL - 8) ** 2) <= 36
    grid = block_info[None]["shape"]
    ids = (cz * (-(-grid[1] // CELL)) + cy) * (-(-grid[2] // CELL)) + cx + 1
    return np.where(inside, ids, 0).astype(np.uint32)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("shape", nargs="*", type=int, default=[256, 2048, 2048])
    parser.add_argument("--out", type=Path, default=None, help="folder for the output (default: a temp dir)")
    parser.add_argument("--block-mib", type=int, default=128, help="writer block size in MiB")
    args = parser.parse_args()
    import dask
    import dask.array as da

    from fveseg.io import read_labels, write_labels_zarr

    shape = tuple(args.shape)
    labels = da.map_blocks(_balls, da.empty(shape, chunks=SOURCE_CHUNKS, dtype=np.uint32), dtype=np.uint32)
    folder = Path(tempfile.mkdtemp(dir=args.out))
    baseline = peak_rss_mib()
    start = time.perf_counter()
    with dask.config.set(scheduler="threads"):
        out = write_labels_zarr(
            folder / "bench.ome.zarr",
            labels,
            "balls",
            spacing=(1.0, 0.25, 0.25),
            chunks=(16, 256, 256),
            block_bytes=args.block_mib * 2**20,
        )
    seconds = time.perf_counter() - start
    peak = peak_rss_mib()
    disk = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    read, meta = read_labels(out)
    middle = shape[0] // 2
    check = np.array_equal(np.asarray(read[middle, :512, :512]), labels[middle, :512, :512].compute())
    size_mib = np.prod(shape, dtype=np.int64) * 4 / 2**20
    print(
        f"shape {shape} uint32 = {size_mib:.0f} MiB uncompressed, levels {meta['levels']}, "
        f"on disk {disk / 2**20:.1f} MiB, slice check {'ok' if check else 'FAILED'}"
    )
    print(
        f"| {'x'.join(map(str, shape))} | {size_mib:.0f} | {seconds:.1f} | "
        f"{size_mib / seconds:.0f} | {baseline:.0f} | {peak:.0f} | {peak / size_mib:.3f} |"
    )
    shutil.rmtree(folder)


if __name__ == "__main__":
    main()
