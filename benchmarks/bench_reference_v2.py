"""Seconds per 512x512 slice and peak RSS of the reference-v2 model (371.8M parameters) on this machine.

Weights: the fixture's fill rule when ``shared/reference-v2`` is present, else N(0, 0.02) (both do the
same arithmetic as the released weights). Run::

    .venv/bin/python benchmarks/bench_reference_v2.py [--slices 3] [--prompts 2] [--device cpu]
"""

from __future__ import annotations

import argparse
import resource
import time

import torch
from tests._reference_v2_fixture import fill_model, fixture_dir

from fveseg.model.reference_v2 import build_reference_v2

PROMPTS = ["nuclei in fluorescence microscopy", "liver in abdominal CT", "cells", "spots"]


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--slices", type=int, default=3)
    parser.add_argument("--prompts", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    t0 = time.perf_counter()
    model = build_reference_v2(empty=True)
    folder = fixture_dir()
    if folder is not None:
        fill_model(model, folder / "state_dict_manifest.tsv", check_sums=False)
    else:
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0, 0.02)
    model = model.to(args.device)
    build_s = time.perf_counter() - t0
    rss_after_build = peak_rss_gib()

    prompts = PROMPTS[: args.prompts]
    with torch.no_grad():
        t0 = time.perf_counter()
        text = model.encode_text(prompts)
        text_s = time.perf_counter() - t0
        generator = torch.Generator().manual_seed(0)
        volume = torch.randint(0, 256, (args.slices + 1, 512, 512), generator=generator)
        rgb = model.pack_order1(volume).to(args.device)
        times_image, times_decode = [], []
        for i in range(args.slices + 1):  # the first slice is warm-up
            t0 = time.perf_counter()
            feats = model.encode_image(model.normalize(rgb[i : i + 1]))
            t1 = time.perf_counter()
            model.decode(feats, text, mode="boltz", generator=torch.Generator(args.device).manual_seed(0))
            if args.device != "cpu":
                torch.cuda.synchronize()
            t2 = time.perf_counter()
            if i:
                times_image.append(t1 - t0)
                times_decode.append(t2 - t1)
    image_s = sum(times_image) / len(times_image)
    decode_s = sum(times_decode) / len(times_decode)
    threads = torch.get_num_threads()
    print(f"device={args.device} threads={threads} prompts={len(prompts)} slices={args.slices}")
    print("| step | seconds |")
    print("|---|---|")
    print(f"| build + fill weights (once) | {build_s:.1f} |")
    print(f"| encode {len(prompts)} prompts (once) | {text_s:.2f} |")
    print(f"| backbone + pixel decoder, per 512x512 slice | {image_s:.2f} |")
    print(f"| decoder for {len(prompts)} prompts, per slice | {decode_s:.2f} |")
    print(f"| **total per slice** | **{image_s + decode_s:.2f}** |")
    print(f"peak RSS after build: {rss_after_build:.2f} GiB; peak RSS overall: {peak_rss_gib():.2f} GiB")


if __name__ == "__main__":
    main()
