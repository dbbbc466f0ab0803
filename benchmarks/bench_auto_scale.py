"""Cost of the automatic resize: ``segment(scale="auto")`` against a fixed scale, side by side.

The automatic resize first segments up to two 8-slice windows at native size, then the same windows at
the chosen scale and at half of it (the half-scale check), then the volume at the chosen scale. This
prints, for each volume, the median time of each way (runs interleaved, so machine noise hits both) and
their ratio, and the process's peak RSS.

    .venv/bin/python benchmarks/bench_auto_scale.py [--model CHECKPOINT] [--repeats 3] [--depth 48]

Volumes are procedural (no data needed): small nuclei (auto keeps scale 1) and the same kind of volume
zoomed 2.5x in-plane (auto shrinks it).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="checkpoint (default: the bundled model)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--depth", type=int, default=48)
    args = parser.parse_args()

    from scipy import ndimage as ndi

    from fveseg.inference import Segmenter
    from fveseg.synthetic import make_nuclei_volume

    segmenter = Segmenter(args.model, device="cpu")
    small = make_nuclei_volume((args.depth, 128, 128), seed=3, spacing=(1.0, 0.35, 0.35)).image
    large = ndi.zoom(small, (1, 2.5, 2.5), order=1)
    print(f"{'volume':28s} {'auto scale':>10s} {'fixed (s)':>10s} {'auto (s)':>10s} {'auto / fixed':>13s}")
    for name, volume in (("small nuclei 48x128x128", small), ("zoomed 2.5x 48x320x320", large)):
        scale = segmenter.auto_scale(volume, ["nuclei"], axis=0)
        fixed, auto = [], []
        for _ in range(args.repeats):
            for store, value in ((fixed, scale), (auto, "auto")):
                start = time.perf_counter()
                result = segmenter.segment(volume, ["nuclei"], axis=0, scale=value)
                store.append(time.perf_counter() - start)
            assert result.scale == scale
        f, a = statistics.median(fixed), statistics.median(auto)
        print(f"{name:28s} {scale:10.2f} {f:10.2f} {a:10.2f} {a / f:13.2f}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {peak:.0f} MiB; volumes {small.nbytes / 2**20:.1f} and {large.nbytes / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
