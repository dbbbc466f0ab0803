"""The focus step: cross-section trimming alone against trimming plus haze-object removal, side by side.

Volume: a 64×512×512 stack of about 500 touching ellipsoids (`bench_instances.touching_ellipsoids`),
each with its own brightness, blurred along z so every object has dim cross-sections, plus dim copies of
a tenth of them shifted 6 slices down (haze objects). Best of ``--repeats`` runs each, and the peak of
traced numpy/python allocations (`tracemalloc`) of one run beyond the inputs.

    .venv/bin/python benchmarks/bench_focus.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np
from scipy import ndimage as ndi

from bench_instances import touching_ellipsoids
from fveseg.instances.haze import (
    apply_trim,
    background_level,
    focus_decision,
    focus_profile,
    trim_out_of_focus,
)


def stack(seed: int = 0):
    labels = touching_ellipsoids((64, 512, 512), 500, (5.0, 7.0, 7.0), (1.0, 0.5, 0.5), seed=seed)
    rng = np.random.default_rng(seed)
    brightness = rng.uniform(50, 200, int(labels.max()) + 1).astype(np.float32)
    brightness[0] = 0
    image = ndi.gaussian_filter1d(brightness[labels], 2.0, axis=0) + 10
    haze = np.zeros_like(labels)
    haze[:-6] = np.where(np.isin(labels[6:], np.arange(1, labels.max() + 1, 10)), labels[6:], 0)
    free = (labels == 0) & (haze > 0)
    first_haze = int(labels.max()) + 1
    labels[free] = haze[free] + first_haze - 1  # dim copies below a tenth of the objects
    image[free] = 10 + 0.15 * brightness[haze[free]]
    return labels, image, first_haze


def trim_only(labels, image):
    *profile, background = focus_profile(labels, image)
    decision = focus_decision(*profile, background_level(background))
    return apply_trim(labels, decision.keys, decision.stride)


def measure(function, labels, image, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = function(labels, image)
        times.append(time.perf_counter() - start)
    tracemalloc.start()
    function(labels, image)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return min(times), times, peak, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    labels, image, first_haze = stack()
    ids = np.unique(labels)[1:]
    size = (labels.nbytes + image.nbytes) >> 20
    objects, haze = np.sum(ids < first_haze), np.sum(ids >= first_haze)
    print(f"volume {labels.shape}: {objects} objects + {haze} haze objects, inputs {size} MiB")
    print("| step | best (s) | runs (s) | peak traced MiB | objects left | of them haze |")
    rows = {}
    for name, function in (("trim only", trim_only), ("trim + haze objects (default)", trim_out_of_focus)):
        best, times, peak, out = measure(function, labels, image, args.repeats)
        kept = np.unique(labels[out > 0])  # the input ids of the objects left
        rows[name] = best
        runs = ", ".join(f"{t:.2f}" for t in times)
        left, haze = len(kept), int(np.sum(kept >= first_haze))
        print(f"| {name} | {best:.2f} | {runs} | {peak / 2**20:.0f} | {left} | {haze} |", flush=True)
    ratio = rows["trim + haze objects (default)"] / rows["trim only"]
    print(f"time ratio (with haze / trim only): {ratio:.2f}")


if __name__ == "__main__":
    main()
