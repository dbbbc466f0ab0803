"""Cost of the automatic resize: ``segment(scale="auto")`` against a fixed scale, side by side.

The automatic resize first segments up to two 8-slice windows at native size, then the same windows at
the chosen scale and at half of it (the half-scale check), then the volume at the chosen scale. This
prints, for each volume, the median time of each way (runs interleaved, so machine noise hits both) and
their ratio, and the process's peak RSS.

    .venv/bin/python benchmarks/bench_auto_scale.py [--model CHECKPOINT] [--repeats 3] [--depth 48]

Volumes are procedural (no data needed): nuclei of the trained size (auto keeps scale 1), the same
volume zoomed 2.5x in-plane (auto shrinks it) and 4 x 4 copies of it zoomed 0.6x (auto enlarges
them 1.25x). The last column is the fixed scale's time over native size: what the resize itself costs.
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

    import numpy as np
    from scipy import ndimage as ndi

    from fveseg.inference.segmenter import Segmenter
    from fveseg.synthetic import make_nuclei_volume

    segmenter = Segmenter(args.model, device="cpu")
    trained = make_nuclei_volume((args.depth, 128, 128), seed=3, spacing=(1.0, 0.35, 0.35)).image
    volumes = {
        f"trained size {args.depth}x128x128": trained,
        f"zoomed 2.5x {args.depth}x320x320": ndi.zoom(trained, (1, 2.5, 2.5), order=1),
        # 4 x 4 tiles first, so the enlarged slices are larger than the network's input
        f"4x4 tiles 0.6x {args.depth}x307x307": ndi.zoom(np.tile(trained, (1, 4, 4)), (1, 0.6, 0.6), order=1),
    }
    print(
        f"{'volume':28s} {'auto scale':>10s} {'native (s)':>10s} {'fixed (s)':>10s} {'auto (s)':>10s} "
        f"{'auto / fixed':>13s} {'fixed / native':>15s}"
    )
    for name, volume in volumes.items():
        scale = segmenter.auto_scale(volume, ["nuclei"], axis=0)
        times = {1.0: [], scale: [], "auto": []}  # one entry for native size when auto keeps it
        for _ in range(args.repeats):
            for value, store in times.items():
                start = time.perf_counter()
                result = segmenter.segment(volume, ["nuclei"], axis=0, scale=value)
                store.append(time.perf_counter() - start)
            assert result.scale == scale
        n, f, a = (statistics.median(times[key]) for key in (1.0, scale, "auto"))
        print(f"{name:28s} {scale:10.2f} {n:10.2f} {f:10.2f} {a:10.2f} {a / f:13.2f} {f / n:15.2f}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    sizes = ", ".join(f"{v.nbytes / 2**20:.1f}" for v in volumes.values())
    print(f"peak RSS {peak:.0f} MiB; volumes {sizes} MiB")


if __name__ == "__main__":
    main()
