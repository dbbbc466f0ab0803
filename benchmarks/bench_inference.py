"""Benchmark the Segmenter: seconds per volume and per slice, 3 prompts vs 1, peak RSS vs depth.

Usage::

    python benchmarks/bench_inference.py                       # tiny on CPU, 64 x 256 x 256
    python benchmarks/bench_inference.py --device cuda --config base
    python benchmarks/bench_inference.py --skip-rss            # timings only

The model is randomly initialised (the arithmetic is the same as a trained one) and the text tokens come
from a fixed random table (MiniLM is not needed; encoding prompts happens once per call either way).
Peak RSS runs in fresh subprocesses (one per depth) so the numbers do not share a heap.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import resource
import subprocess
import sys
import time

import numpy as np
import torch

PROMPTS = ["nuclei", "cell membranes", "spots"]


def make_segmenter(config: str, device: str, batch_size: int, strides: str | None = None):
    from fveseg.inference.segmenter import Segmenter
    from fveseg.model import CONFIGS, PrecomputedTextEncoder, build_model

    torch.manual_seed(0)
    cfg = CONFIGS[config]
    if strides:  # variant: cross-attention scales, e.g. "32,16,8"
        cfg = dataclasses.replace(cfg, attention_strides=tuple(int(s) for s in strides.split(",")))
    model = build_model(cfg)
    g = torch.Generator().manual_seed(0)
    model.set_text_encoder(PrecomputedTextEncoder({p: torch.randn(5, 384, generator=g) for p in PROMPTS}))
    return Segmenter(model, device=device, batch_size=batch_size)


def make_volume(depth: int, size: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 4096, size=(depth, size, size), dtype=np.uint16)


def timed(segmenter, volume, prompts, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        if segmenter.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        segmenter.segment(volume, prompts, axis=0)
        if segmenter.device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def _status_mib(field: str) -> float | None:
    """A memory field of /proc/self/status in MiB (Linux), else None."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS; False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def rss_child(args) -> None:
    """Print a JSON line: RSS before one segment() of a (depth, size, size) volume and its peak during it."""
    segmenter = make_segmenter(args.config, args.device, args.batch_size)
    volume = make_volume(args.depth, args.size)
    segmenter.segment(volume[:2], PROMPTS[:1], axis=0)  # warm-up
    before = _status_mib("VmRSS")
    if not _reset_peak() or before is None:  # fall back to the lifetime high-water mark
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = segmenter.segment(volume, PROMPTS[:1], axis=0)
    peak = _status_mib("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out_bytes = result.probabilities.nbytes + result.edges.nbytes + result.semantic.nbytes
    print(
        json.dumps(
            {
                "depth": args.depth,
                "rss_before_mib": before,
                "peak_mib": peak,
                "output_mib": out_bytes / 2**20,
                "input_mib": volume.nbytes / 2**20,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--depth", type=int, default=64)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--skip-rss", action="store_true")
    parser.add_argument("--attention-strides", default=None, help="override, e.g. 32,16,8")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--rss-depths", default="64,512")
    parser.add_argument("--rss-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.rss_child:
        return rss_child(args)

    segmenter = make_segmenter(args.config, args.device, args.batch_size, args.attention_strides)
    params = sum(p.numel() for p in segmenter.model.parameters())
    name = torch.cuda.get_device_name() if segmenter.device.type == "cuda" else platform.processor() or "cpu"
    print(
        f"config {args.config} ({params / 1e6:.2f}M parameters) on {segmenter.device} ({name}), "
        f"torch threads {torch.get_num_threads()}"
    )
    volume = make_volume(args.depth, args.size)
    segmenter.segment(volume[: args.batch_size], PROMPTS, axis=0)  # warm-up (allocations, caches)
    one = timed(segmenter, volume, PROMPTS[:1], args.repeats)
    three = timed(segmenter, volume, PROMPTS, args.repeats)
    print("| volume | prompts | s / volume | ms / slice |\n|---|---|---|---|")
    for k, t in ((1, one), (3, three)):
        print(f"| {args.depth}x{args.size}x{args.size} | {k} | {t:.2f} | {1000 * t / args.depth:.1f} |")
    print(f"3 prompts / 1 prompt = {three / one:.2f} (goal <= 1.5); 1-prompt goal <= 5.3 s per volume")

    if args.skip_rss:
        return
    print("\n| depth | RSS before (MiB) | peak RSS (MiB) | outputs (MiB) | input (MiB) |")
    print("|---|---|---|---|---|")
    rows = []
    for depth in (int(d) for d in args.rss_depths.split(",")):
        cmd = [
            sys.executable,
            __file__,
            "--rss-child",
            "--config",
            args.config,
            "--device",
            args.device,
            "--depth",
            str(depth),
            "--size",
            str(args.size),
            "--batch-size",
            str(args.batch_size),
        ]
        row = json.loads(
            subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        )
        rows.append(row)
        print(
            f"| {depth} | {row['rss_before_mib']:.0f} | {row['peak_mib']:.0f} | {row['output_mib']:.0f} | "
            f"{row['input_mib']:.0f} |"
        )
    if len(rows) == 2:
        a, b = rows
        # the input is allocated before "RSS before", so the growth during segment() is outputs + working set
        growth = (b["peak_mib"] - b["rss_before_mib"]) - (a["peak_mib"] - a["rss_before_mib"])
        data = b["output_mib"] - a["output_mib"]
        print(
            f"peak - before grows {growth:.0f} MiB from D={a['depth']} to D={b['depth']}; outputs grow "
            f"{data:.0f} MiB; unexplained {growth - data:+.0f} MiB"
        )


if __name__ == "__main__":
    main()
