"""Throughput of `encode_volume` relative to a plain numpy copy of the same output bytes, same run.

    python benchmarks/bench_fve.py            # 64 x 512 x 512 uint8, orders 1-3, batch 16
    python benchmarks/bench_fve.py --paths numba numpy --cold-jit   # compiled vs numpy path, side by side

Prints, per order: the median seconds over N alternated rounds to encode every slice and to
``np.copy`` an array with as many bytes as all encoded images, the median and range of the per-round
ratio copy time / encode time (1.0 means as fast as copying the output; each round times both back to
back, so both see the same load), and the extra memory one encoding pass allocates (tracemalloc
peak). Also the load average before and after, and the process's peak RSS.
``--paths`` times the compiled (numba) path and the numpy path (``FVESEG_NO_NUMBA=1``) in the same
rounds, one row each; the first call's time (JIT compile, or loading the on-disk cache) is printed
separately. ``--cold-jit`` points numba at an empty cache directory so that first call compiles.
Goals (issue 2): ratio >= 0.5 for order 1 and >= 0.25 for order 3.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
import tracemalloc

import numpy as np

from fveseg.fve.encoding import encode_volume


def interleaved_times(repeats: int, *runs) -> np.ndarray:
    """Seconds of each run in each of ``repeats`` rounds (rounds, runs); runs alternate within a round."""
    times = np.empty((repeats, len(runs)))
    for round_ in range(repeats):
        for i, run in enumerate(runs):
            start = time.perf_counter()
            run()
            times[round_, i] = time.perf_counter() - start
    return times


def encode_all(
    volume: np.ndarray, order: int, batch_size: int, downsample: str, chw: bool, path: str = "default"
) -> int:
    if path != "default":  # read by fveseg on every batch
        os.environ["FVESEG_NO_NUMBA"] = "1" if path == "numpy" else "0"
    written = 0
    batches = encode_volume(
        volume, order=order, batch_size=batch_size, downsample=downsample, channels_first=chw
    )
    for _, batch in batches:
        written += batch.nbytes
    return written


def first_call_time(args: argparse.Namespace) -> None:
    """Time the compiled path's first calls (import, then JIT compile or cache load) on a tiny volume."""
    start = time.perf_counter()
    from fveseg import _fve_numba  # noqa: F401 - imports numba

    imported = time.perf_counter()
    tiny = np.zeros((8, 32, 32), dtype=np.uint8)
    os.environ["FVESEG_NO_NUMBA"] = "0"
    encode_all(tiny, max(args.orders), 4, args.downsample, args.channels_first)
    compiled = time.perf_counter()
    encode_all(tiny, max(args.orders), 4, args.downsample, args.channels_first)
    again = time.perf_counter()
    cache = "empty cache (--cold-jit)" if args.cold_jit else "on-disk cache if present"
    print(
        f"numba first call: import {imported - start:.2f} s, first encode {compiled - imported:.2f} s "
        f"({cache}), second encode {1e3 * (again - compiled):.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shape", type=int, nargs=3, default=(64, 512, 512))
    parser.add_argument("--orders", type=int, nargs="+", default=(1, 2, 3))
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--downsample", default="mean", choices=("mean", "stride"))
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--channels-first", action="store_true", help="yield (B, 3, H, W) batches")
    parser.add_argument(
        "--paths",
        nargs="+",
        default=["default"],
        choices=("default", "numba", "numpy"),
        help="encoding paths to time side by side (default: whatever the environment selects)",
    )
    parser.add_argument("--cold-jit", action="store_true", help="compile with an empty numba cache")
    args = parser.parse_args()
    if args.cold_jit:  # must be set before numba is imported
        os.environ["NUMBA_CACHE_DIR"] = tempfile.mkdtemp(prefix="fveseg-numba-cache-")
    if "numba" in args.paths:
        first_call_time(args)

    volume = np.random.default_rng(0).integers(0, 256, args.shape, dtype=np.uint8)
    output_bytes = volume.size * 3
    source = np.ones(output_bytes, dtype=np.uint8)
    print(
        f"volume {tuple(args.shape)} uint8, batch {args.batch_size}, downsample {args.downsample}, "
        f"layout {'(B, 3, H, W)' if args.channels_first else '(B, H, W, 3)'}, "
        f"output {output_bytes / 2**20:.1f} MiB per pass, median of {args.repeats} alternated rounds, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    print(
        "| order | path | encode (s) | copy (s) | ratio copy/encode | ratio range | encode MB/s "
        "| extra memory (MiB) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for order in args.orders:
        encoders = [
            lambda o=order, p=path: encode_all(
                volume, o, args.batch_size, args.downsample, args.channels_first, p
            )
            for path in args.paths
        ]
        times = interleaved_times(args.repeats, *encoders, lambda: np.copy(source))
        medians = np.median(times, axis=0)
        for column, (path, encoder) in enumerate(zip(args.paths, encoders, strict=True)):
            ratios = times[:, -1] / times[:, column]
            tracemalloc.start()
            assert encoder() == output_bytes
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            print(
                f"| {order} | {path} | {medians[column]:.4f} | {medians[-1]:.4f} | {np.median(ratios):.2f} | "
                f"{ratios.min():.2f}–{ratios.max():.2f} | {output_bytes / medians[column] / 1e6:.0f} | "
                f"{peak / 2**20:.1f} |"
            )
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    print(f"peak RSS of the whole run: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
