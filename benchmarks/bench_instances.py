"""Instance splitting: the reference recipe against the default, side by side, plus accuracy.

Speed: a 64×512×512 mask with about 500 touching ellipsoids, edges = per-slice 3×3 morphological
gradient of the labels (the training target), best of 3 runs each, peak RSS after each method. The
default is also timed with the previous neck splitting (one distance transform per seed, in a Python
loop), which gives the same labels, so before and after are measured side by side.
Accuracy: a strongly anisotropic stack of touching nuclei whose "prediction" is the truth blurred
along z, with a noisy edge map; F1 at IoU 0.5 and Dice on true positives for both methods.

    .venv/bin/python benchmarks/bench_instances.py [--repeats 3] [--skip-speed] [--skip-accuracy]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np
from scipy import ndimage as ndi

from fveseg.instances.split import split_instances
from fveseg.metrics import dice, instance_scores


def touching_ellipsoids(shape, n_objects, radii_um, spacing, seed=0):
    """Labels (uint32) of random ellipsoids; overlaps go to the nearer centre (so objects touch)."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, np.uint32)
    best = np.full(shape, np.inf, np.float32)
    extent = np.array(shape) * np.array(spacing)
    centres = rng.uniform(0, 1, (n_objects, 3)) * extent
    for index, centre in enumerate(centres, start=1):
        radius = np.asarray(radii_um) * rng.uniform(0.75, 1.25, 3)
        lo = np.maximum(np.floor((centre - radius) / spacing), 0).astype(int)
        hi = np.minimum(np.ceil((centre + radius) / spacing) + 1, shape).astype(int)
        if np.any(hi <= lo):
            continue
        grids = np.ogrid[tuple(slice(a, b) for a, b in zip(lo, hi))]
        r2 = sum(((g * s - c) / r) ** 2 for g, s, c, r in zip(grids, spacing, centre, radius))
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        take = (r2 < 1) & (r2 < best[box])
        labels[box][take] = index
        best[box][take] = r2[take]
    return labels


def slice_gradient(labels):
    """Per-slice 3×3 morphological gradient of instance labels, as a 0/1 float edge map."""
    footprint = np.ones((1, 3, 3), bool)
    return ndi.grey_dilation(labels, footprint=footprint) != ndi.grey_erosion(labels, footprint=footprint)


METHODS = ("reference", "watershed", "watershed-per-seed-necks", "watershed-no-necks")


def split_at_necks_per_seed(seeds, spacing, ratio, min_core=0.2, min_voxels=64):
    """The previous neck splitting (a Python loop: one distance transform per seed's box), for the
    side-by-side comparison; it computes the same labels as the packed, all-seeds-at-once version."""
    import cc3d
    import edt

    from fveseg.instances.grow import grow_in_mask

    sizes = np.bincount(seeds.ravel())
    split, next_id = None, sizes.size
    for index, box in enumerate(ndi.find_objects(seeds), start=1):
        if box is None or sizes[index] < min_voxels:
            continue
        own = seeds[box] == index
        margin = [(int(b.start > 0), int(b.stop < n)) for b, n in zip(box, seeds.shape)]
        inner = tuple(slice(lo, lo + n) for (lo, _), n in zip(margin, own.shape))
        distance = edt.edt(np.pad(own, margin), anisotropy=spacing, black_border=False)[inner]
        cores = cc3d.connected_components(distance >= ratio * distance.max(), connectivity=6)
        core_size = np.bincount(cores.ravel())
        core_size[0] = 0
        kept = np.flatnonzero(core_size >= min_core * core_size.max())
        if kept.size < 2:
            continue
        split = seeds.copy() if split is None else split
        ids = np.zeros(core_size.size, np.uint32)
        ids[kept] = np.arange(next_id, next_id + kept.size)
        next_id += kept.size
        split[box][own] = ids[cores[own]]
    return seeds if split is None else grow_in_mask(split, seeds > 0, spacing)


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def speed_volume():
    spacing = (1.0, 0.5, 0.5)
    labels = touching_ellipsoids((64, 512, 512), 500, (5.0, 7.0, 7.0), spacing, seed=1)
    return labels, labels > 0, slice_gradient(labels).astype(np.float32), spacing


def run_one(method, repeats):
    """Child process: time one method; its own peak RSS (inputs included) goes to stdout as JSON."""
    labels, mask, edges, spacing = speed_volume()
    if method == "watershed-per-seed-necks":
        import fveseg.instances.split

        fveseg.instances.split.split_at_necks = split_at_necks_per_seed  # the name instances calls
    inputs_rss = peak_rss_mib()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        options = {"reference": dict(method="reference"), "watershed-no-necks": dict(split_necks=None)}
        out = split_instances(mask, edges, spacing, **options.get(method, {}))
        times.append(time.perf_counter() - start)
    r = instance_scores(labels, out)
    print(
        json.dumps(
            dict(
                method=method,
                seconds=min(times),
                all_seconds=times,
                inputs_rss=inputs_rss,
                peak_rss=peak_rss_mib(),
                objects=int(out.max()),
                truth=len(np.unique(labels)) - 1,
                unlabelled=int((mask & (out == 0)).sum()),
                f1=r["f1"],
                dsc_tp=r["dsc_tp"],
            )
        )
    )


def speed(repeats):
    rows = []
    # one process each, so peak RSS is each method's own
    for method in METHODS:
        child = subprocess.run(
            [sys.executable, __file__, "--child", method, "--repeats", str(repeats)],
            capture_output=True,
            text=True,
            check=True,
        )
        rows.append(json.loads(child.stdout.strip().splitlines()[-1]))
    print(f"volume (64, 512, 512), {rows[0]['truth']} ellipsoids, spacing (1.0, 0.5, 0.5)")
    print(
        f"| method | best of {repeats} (s) | all runs (s) | peak RSS (MiB; inputs alone) | objects | "
        "unlabelled mask voxels | F1@0.5 | Dice-TP |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        runs = ", ".join(f"{t:.2f}" for t in r["all_seconds"])
        rss = f"{r['peak_rss']:.0f} ({r['inputs_rss']:.0f})"
        print(
            f"| {r['method']} | {r['seconds']:.2f} | {runs} | {rss} | "
            f"{r['objects']} | {r['unlabelled']} | {r['f1']:.3f} | {r['dsc_tp']:.3f} |"
        )
    for r in rows[1:]:
        print(f"speed-up {r['method']} vs reference: {rows[0]['seconds'] / r['seconds']:.1f}x")
    print(f"watershed vs watershed-per-seed-necks: {rows[2]['seconds'] / rows[1]['seconds']:.1f}x faster")


def anisotropic_case(seed=0):
    """Nuclei on a z step 3× the pixel size; "prediction" = truth blurred along z, noisy mask and edges."""
    rng = np.random.default_rng(seed)
    spacing = (0.75, 0.25, 0.25)
    truth = touching_ellipsoids((40, 192, 192), 60, (3.0, 3.5, 3.5), spacing, seed=seed)

    def smooth_noise(sigma):
        field = ndi.gaussian_filter(rng.normal(0, 1, truth.shape).astype(np.float32), sigma)
        return field / field.std()

    # a slice-wise predictor sees the nucleus blurred along z: poles shrink, grow or break up
    blurred = ndi.gaussian_filter((truth > 0).astype(np.float32), (1.0, 1.0, 1.0))
    probability = np.clip(blurred + 0.12 * smooth_noise((0.5, 2, 2)), 0, 1)
    edges = ndi.gaussian_filter1d(slice_gradient(truth).astype(np.float32), sigma=0.7, axis=0) * 1.5
    edges = np.clip(edges + 0.2 * smooth_noise((0.5, 1.5, 1.5)), 0, 1)
    # slice-wise edge predictors also cut through some nuclei along z
    cut = rng.random(truth.shape[0]) < 0.1
    edges[cut] = np.maximum(edges[cut], 0.9 * (truth[cut] > 0))
    return truth, probability, edges, spacing


ACCURACY_SETTINGS = {
    "reference": dict(method="reference"),
    "reference, min_size 3 µm³": dict(method="reference", min_size=3.0),
    "watershed": dict(),
    "watershed, min_size 3 µm³": dict(min_size=3.0),
    "watershed, min_size 3 µm³, split_necks=None": dict(min_size=3.0, split_necks=None),
}


def accuracy():
    print("| case | method | objects | Dice | F1@0.5 | Dice-TP | tp | fp | fn |")
    print("|---|---|---|---|---|---|---|---|---|")
    totals = {}
    for seed in (0, 1, 2):
        truth, probability, edges, spacing = anisotropic_case(seed)
        for name, options in ACCURACY_SETTINGS.items():
            out = split_instances(probability, edges, spacing, **options)
            r = instance_scores(truth, out)
            totals.setdefault(name, []).append((r["f1"], r["dsc_tp"]))
            print(
                f"| anisotropic seed {seed} | {name} | {out.max()} | {dice(truth, out):.3f} | "
                f"{r['f1']:.3f} | {r['dsc_tp']:.3f} | {r['tp']} | {r['fp']} | {r['fn']} |"
            )
    print("\n| method | mean F1@0.5 | mean Dice-TP |\n|---|---|---|")
    for name, values in totals.items():
        f1, dsc = np.mean(values, axis=0)
        print(f"| {name} | {f1:.3f} | {dsc:.3f} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-accuracy", action="store_true")
    parser.add_argument("--child", choices=METHODS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_one(args.child, args.repeats)
        sys.exit()
    if not args.skip_accuracy:
        accuracy()
    if not args.skip_speed:
        speed(args.repeats)
