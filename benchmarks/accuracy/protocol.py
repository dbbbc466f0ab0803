"""The evaluation protocol: every pipeline variant and the classical baseline on every dataset row.

    PYTHONPATH=src:. .venv/bin/python -m benchmarks.accuracy.protocol --shared ../shared \\
        --variant default [--variant NAME | --variant 'NAME:field=value,...' ...] [--rows ROWSPEC] \\
        [--seed 0] [--draws 8] [--device cpu] [--baseline-cache PATH] --json OUT.json

Run it from the repository root as a module (``benchmarks`` has no ``__init__.py``; it is imported as a
namespace package from the current directory, ``benchmarks.accuracy`` is a regular package). The table
goes to stdout, progress to stderr; the JSON is rewritten after every row (``"complete": false`` until
the end), so a long run can be polled.

Decision number
---------------
Each row gives, side by side, every variant's instance F1@0.5 and semantic Dice and the classical
baseline's on the same row. The decision number is the WORST row (the minimum F1 over the rows), for each
variant and for the baseline, and the worst margin (variant F1 - baseline F1, minimum over the rows).
The mean over the rows is printed too, labelled as such; it is not the decision number. The selection
rule is in docs/experiments/2026-12-06-evaluation-protocol.md.

Scoring and baseline
--------------------
Exactly the shared ones, loaded with importlib from ``--shared`` (default ``../shared``, relative to the
current directory): ``tools/instance_metrics.py`` (``dice``, ``instance_scores``) and
``tools/classical_baseline.py`` (``voronoi_otsu``), run as ``tools/score.py --baseline`` runs it: a
volume with its spacing (ones where unknown), a 2D image as ``voronoi_otsu(img[None], s, s, (1e9, 1,
1))[0]``. The baseline uses ONE sigma for all rows: sigma 2, 3, 4, 5 and 6 are scored on every row and
the sigma whose worst row is highest (ties: the higher mean F1, then the smaller sigma) is the baseline;
every sigma's rows and worst row stay in the JSON. The sigma is chosen over the rows of the run, so a
``--rows`` subset may pick another one: decide on full runs. Baseline results are cached by row name and
a hash of the row's images, labels and spacings (``--baseline-cache``, default
``benchmarks/accuracy/results/baseline-cache.json``; ``--baseline-cache ''`` turns the cache off), so a
rerun with other variants does not recompute them.

Rows
----
``cells3d``
    ``<shared>/data/nuclei3d/cells3d_nuclei.npz`` as is (60 × 256 × 256, 0.29 / 0.26 / 0.26 µm).
``z2``, ``z4``
    cells3d with a 2× / 4× z step and the matching wider axial PSF (Gaussian along z, sigma 0.5·k
    slices, before keeping every k-th slice): a coarse z-stack on a lower-NA or wide-pinhole system.
``xy0.5``, ``xy2``
    cells3d at 0.5× (area average: bigger camera pixels / lower magnification) and 2× (linear) in-plane
    scale: nuclei of other sizes in pixels.
``snr2``
    Poisson shot noise at a per-voxel SNR of 2 in the mean nucleus (`reimage.shot_noise`: the
    offset-free image is taken as photons / g, g = SNR² (b + s) / s² with b the background and s the mean
    nucleus signal above it): fast or low-light imaging.
``stripes``
    Light-sheet stripes along y, varying along x and from slice to slice, ±20 % of the nucleus signal
    multiplicatively and additively, plus shot noise at SNR 10 (`reimage.stripes`).
``dim``
    Nuclei 7 % above a 4000-photon background, Poisson noise (`reimage.low_contrast`): weak stain in
    autofluorescent or hazy tissue.
``z2_xy0.5``
    z step 2× with axial blur, then in-plane 0.5×: a fast, coarse survey stack.
``val2d``
    The 53 real 2D validation images ``<shared>/data/val/dsb2018_stage1test_fluo/*.npz``, each segmented
    as a one-slice volume (1, H, W) without spacing; the row's F1 and Dice are the MEANS over the images
    (per-image scores in the JSON).
``synthetic-<preset>``
    For each preset of `fveseg.synthetic.PRESETS`: 2 held-out procedural volumes,
    ``training.validation.heldout_synthetic(2, preset=PRESET)`` (seeds from 10**12, never used in
    training); the row is the mean over the two.

The noisy rows (``snr2``, ``stripes``, ``dim``) are the MEAN over ``--draws`` (default 8) noise draws
of the same re-imaged volume, seeded from ``--seed`` (default 0; two seeds never share a draw): one draw
is far too noisy a measure (the default's F1 on ``snr2`` was 0.00 to 0.53 over four single draws, its
Dice 0.91 to 0.92: the noise flips merges of neighbouring nuclei). Rerun those rows with ``--seed 1`` to
measure the protocol's noise. ``--rows`` picks rows by name (comma-separated).

Variants
--------
Named in `benchmarks.accuracy.variants.VARIANTS` or inline (``'NAME:field=value,...'``): overrides of
`fveseg.params.SegmentParams`. Each runs through the product's one pipeline, the two halves of
``fveseg.pipeline.segment_volume``: ``segment_array(load_segmenter(checkpoint, device, batch_size),
image, params, spacing)`` (the network) and ``label_layers(...)["nuclei"][0]`` (the instances). Variants
that differ only in the fields acting after the network (`INSTANCE_FIELDS`) share one network run per
sample, so an instance-step ablation costs seconds per row. Seconds per row are the pipeline's own
wall time (model loading excluded, except a second model the automatic model choice loads on first use;
the first row also pays compilation warm-up); on a shared machine they vary with its load.

JSON
----
``{"rows": [{"name", "description", "samples", "shape", "spacing", "true_objects", "baseline": {sigma:
scores}, "variants": {name: scores}}], "variants": {name: overrides}, "baseline": {"sigma", "per_sigma":
{sigma: {"worst_row", "worst_f1", "mean_f1"}}}, "summary": {...}, "command", "date", "seed", "device",
"seconds", "complete"}``; scores are ``f1, dice, dsc_tp`` (means over a row's samples), ``tp, fp, fn,
objects, true_objects`` (sums), ``seconds``, ``seconds_per_sample``, for a variant what the pipeline
chose (``model``, ``noise``, ``scale``, ``axis``; per sample in rows of several) and, for rows of
several samples, ``f1_min``, ``f1_max`` and ``per_sample``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import functools
import glob
import hashlib
import importlib.util
import json
import shlex
import sys
import time
import zlib
from pathlib import Path

import numpy as np
from benchmarks.accuracy import reimage
from benchmarks.accuracy.variants import parse_variant

SIGMAS = (2.0, 3.0, 4.0, 5.0, 6.0)
DEFAULT_CACHE = Path(__file__).parent / "results" / "baseline-cache.json"
CELLS3D = "data/nuclei3d/cells3d_nuclei.npz"
VAL2D = "data/val/dsb2018_stage1test_fluo/*.npz"
N_SYNTHETIC = 2

#: re-imaged cells3d rows: name → (steps, what real-microscope property the row stands for).
REIMAGED: dict[str, tuple[tuple[tuple, ...], str]] = {
    "cells3d": ((), "cells3d confocal nuclei as recorded"),
    "z2": ((("z", 2),), "z step 2x with the wider axial PSF of a coarser z sampling"),
    "z4": ((("z", 4),), "z step 4x with the wider axial PSF of a coarser z sampling"),
    "xy0.5": ((("xy", 0.5),), "in-plane 0.5x (area average): lower magnification, bigger pixels"),
    "xy2": ((("xy", 2.0),), "in-plane 2x (linear): higher magnification, nuclei twice as wide in pixels"),
    "snr2": ((("snr", 2.0),), "Poisson shot noise, per-voxel SNR 2: fast or low-light imaging"),
    "stripes": ((("stripes", 0.2),), "light-sheet stripes, +-20% of the nucleus signal, mild noise"),
    "dim": ((("dim", 0.07),), "nuclei 7% above a high background with photon noise: weak stain, haze"),
    "z2_xy0.5": ((("z", 2), ("xy", 0.5)), "z step 2x with axial blur and in-plane 0.5x: coarse survey"),
}


@dataclasses.dataclass
class Sample:
    """One image of a row: (D, H, W) image and labels; ``spacing`` None for a 2D image."""

    name: str
    image: np.ndarray
    labels: np.ndarray
    spacing: tuple[float, float, float] | None
    two_d: bool = False


def row_names() -> list[str]:
    """Every row, in table order."""
    from fveseg.synthetic import PRESETS

    return [*REIMAGED, "val2d", *(f"synthetic-{preset}" for preset in PRESETS)]


def describe(name: str) -> str:
    if name in REIMAGED:
        return REIMAGED[name][1]
    if name == "val2d":
        return "53 real 2D fluorescence images (DSB2018 stage-1 test), mean over images"
    return f"{N_SYNTHETIC} held-out procedural volumes, preset {name.removeprefix('synthetic-')!r}, mean"


def load_module(path: Path):
    """Import a shared tool by file path (no machine path is hard-coded; ``--shared`` locates it)."""
    if not path.is_file():
        raise SystemExit(f"error: {path} not found; pass --shared, the folder holding tools/ and data/")
    spec = importlib.util.spec_from_file_location(f"shared_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@functools.lru_cache(maxsize=1)
def load_cells3d(shared: str):
    path = Path(shared) / CELLS3D
    if not path.is_file():
        raise SystemExit(f"error: {path} not found; pass --shared")
    with np.load(path) as data:
        return data["image"], data["labels"], tuple(float(s) for s in data["spacing_zyx"])


STOCHASTIC = ("snr", "stripes", "dim")  # re-imaging steps that draw random numbers
DRAWS = 8  # noise draws per stochastic row (--draws)


def row_seed(name: str, seed: int, draw: int = 0) -> int:
    """A seed per (row, --seed, draw), stable across runs and row selections; the draws of two --seed
    values never overlap (up to 1000 draws)."""
    return (seed * 1000 + draw) * 1_000_003 + zlib.crc32(name.encode())


def is_stochastic(name: str) -> bool:
    return name in REIMAGED and any(kind in STOCHASTIC for kind, _ in REIMAGED[name][0])


def reimaged(name: str, shared: str, seed: int, draw: int = 0) -> Sample:
    """cells3d re-imaged by the row's steps (in order), noise from (``seed``, ``draw``)."""
    image, labels, spacing = load_cells3d(shared)
    rseed = row_seed(name, seed, draw)
    for kind, value in REIMAGED[name][0]:
        if kind == "z":
            image, labels, spacing = reimage.axial_subsample(image, labels, spacing, value, blur=0.5)
        elif kind == "xy":
            image, labels, spacing = reimage.inplane_scale(image, labels, spacing, value)
        elif kind == "snr":
            image = reimage.shot_noise(image, labels, value, seed=rseed)
        elif kind == "stripes":
            image = reimage.stripes(image, labels, seed=rseed, strength=value, additive=value)
        elif kind == "dim":
            image = reimage.low_contrast(image, labels, seed=rseed, contrast=value)
        else:
            raise ValueError(kind)
    return Sample(f"{name}-s{seed}d{draw}" if is_stochastic(name) else name, image, labels, spacing)


def row_samples(
    name: str, shared: str, seed: int, val2d_limit: int | None = None, draws: int = DRAWS
) -> list[Sample]:
    """The row's images, labels and spacings (re-imaging done here, deterministically)."""
    if name in REIMAGED:
        return [reimaged(name, shared, seed, draw) for draw in range(draws if is_stochastic(name) else 1)]
    if name == "val2d":
        files = sorted(glob.glob(str(Path(shared) / VAL2D)))[:val2d_limit]
        if not files:
            raise SystemExit(f"error: no {Path(shared) / VAL2D}; pass --shared")
        samples = []
        for path in files:
            with np.load(path) as data:
                image, labels = data["image"], data["labels"]
            if image.ndim != 2:
                raise SystemExit(f"error: {path}: expected a 2D grey image, got shape {image.shape}")
            samples.append(Sample(Path(path).stem[:12], image[None], labels[None], None, two_d=True))
        return samples
    if name.startswith("synthetic-"):
        from training.validation import heldout_synthetic

        preset = name.removeprefix("synthetic-")
        volumes = heldout_synthetic(N_SYNTHETIC, preset=preset)
        return [
            Sample(f"{preset}-{i}", v.image, v.labels, tuple(float(s) for s in v.spacing))
            for i, v in enumerate(volumes)
        ]
    raise ValueError(f"unknown row {name!r}")


def fingerprint(samples: list[Sample]) -> str:
    """Hash of the row's images, labels and spacings: a cached baseline is used only for the same data."""
    digest = hashlib.sha1()
    for sample in samples:
        for array in (sample.image, sample.labels):
            array = np.ascontiguousarray(array)
            digest.update(f"{array.dtype}{array.shape}".encode())
            digest.update(array.data)
        digest.update(repr(sample.spacing).encode())
    return digest.hexdigest()[:16]


def score(metrics, truth: np.ndarray, pred: np.ndarray, seconds: float) -> dict:
    result = metrics.instance_scores(truth, pred)
    return {
        "f1": float(result["f1"]),
        "dice": float(metrics.dice(truth, pred)),
        "dsc_tp": float(result["dsc_tp"]),
        "tp": int(result["tp"]),
        "fp": int(result["fp"]),
        "fn": int(result["fn"]),
        "objects": int(len(np.unique(pred)) - (1 if (pred == 0).any() else 0)),
        "true_objects": int(len(np.unique(truth)) - (1 if (truth == 0).any() else 0)),
        "seconds": round(seconds, 3),
    }


def aggregate(samples: list[Sample], scores: list[dict]) -> dict:
    """Means of f1 / dice / dsc_tp and sums of counts and seconds over a row's samples."""
    row = {key: float(np.mean([s[key] for s in scores])) for key in ("f1", "dice", "dsc_tp")}
    for key in ("tp", "fp", "fn", "objects", "true_objects"):
        row[key] = int(sum(s[key] for s in scores))
    row["seconds"] = round(sum(s["seconds"] for s in scores), 2)
    row["seconds_per_sample"] = round(row["seconds"] / len(scores), 3)
    if len(scores) > 1:
        row["f1_min"] = min(s["f1"] for s in scores)
        row["f1_max"] = max(s["f1"] for s in scores)
        row["per_sample"] = [{"name": sample.name, **s} for sample, s in zip(samples, scores)]
    return row


def run_baseline(baseline, metrics, samples: list[Sample], sigma: float) -> dict:
    scores = []
    for sample in samples:
        start = time.perf_counter()
        if sample.two_d:
            pred = baseline.voronoi_otsu(sample.image[0][None], sigma, sigma, (1e9, 1, 1))[0][None]
        else:
            spacing = np.asarray(sample.spacing if sample.spacing is not None else (1, 1, 1), float)
            spacing = spacing if np.all(np.isfinite(spacing)) else np.ones(3)
            pred = baseline.voronoi_otsu(sample.image, sigma, sigma, spacing)
        scores.append(score(metrics, sample.labels, pred, time.perf_counter() - start))
    return aggregate(samples, scores)


def choices(result) -> dict:
    """What the pipeline chose for a sample: model (None: a fixed checkpoint), noise, scale, axis."""
    if result is None:
        return {}
    noise = getattr(result, "noise", None)
    return {
        "model": getattr(result, "model", None),
        "noise": None if noise is None else round(float(noise), 4),
        "scale": round(float(getattr(result, "scale", 1.0)), 4),
        "axis": int(getattr(result, "axis", 0)),
    }


#: SegmentParams fields that act after the network (`fveseg.pipeline.label_layers`): variants that differ
#: only in these reuse one network run per sample within a protocol run.
INSTANCE_FIELDS = (
    "instances",
    "min_size",
    "min_relative_size",
    "instance_method",
    "focus_fraction",
    "merge_necks",
)


def network_key(params) -> tuple:
    """What the network's output depends on: every field of ``params`` except `INSTANCE_FIELDS`."""
    return tuple(
        (f.name, getattr(params, f.name)) for f in dataclasses.fields(params) if f.name not in INSTANCE_FIELDS
    )


def run_variant(
    metrics, samples: list[Sample], overrides: dict, device: str, reuse: dict | None = None
) -> dict:
    """Score one variant on a row's samples through the product's pipeline (`segment_array`, then
    `label_layers`, which is `fveseg.pipeline.segment_volume`). ``reuse``: a dict kept per row; a variant
    whose network fields match an earlier one's takes its network outputs (and their seconds) from it."""
    from fveseg.inference import load_segmenter
    from fveseg.params import SegmentParams, slug
    from fveseg.pipeline import label_layers, prepare, segment_array

    params = SegmentParams(**overrides)
    device = overrides.get("device", device)
    reuse = {} if reuse is None else reuse
    key = network_key(params)
    layer = slug(params.prompts[0])
    scores = []
    for index, sample in enumerate(samples):
        spacing = params.spacing or sample.spacing
        if (key, index) not in reuse:
            start = time.perf_counter()
            segmenter = load_segmenter(params.checkpoint, device, params.batch_size)
            image, prepared = prepare(np.asarray(sample.image), params, spacing)
            result = segment_array(segmenter, image, prepared, spacing)
            reuse[key, index] = (result, image, time.perf_counter() - start)
        result, image, network_seconds = reuse[key, index]
        start = time.perf_counter()
        done = dataclasses.replace(params, flatten=False)  # the image is the prepared one already
        pred = label_layers(result, done, spacing, image=image)[layer][0]
        scores.append(score(metrics, sample.labels, pred, network_seconds + time.perf_counter() - start))
        scores[-1].update(choices(result))
    row = aggregate(samples, scores)
    if len(scores) == 1:
        row.update(choices(result))
    else:
        models = [s.get("model") for s in scores]
        row["models"] = {str(m): models.count(m) for m in dict.fromkeys(models)}
        row["scale_range"] = [min(s["scale"] for s in scores), max(s["scale"] for s in scores)]
    return row


def load_cache(path: Path | None) -> dict:
    if path is None or not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        print(f"warning: ignoring unreadable baseline cache {path}", file=sys.stderr)
        return {}


def save_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1) + "\n")
    tmp.replace(path)


def choose_sigma(rows: list[dict]) -> tuple[float, dict]:
    """The one baseline sigma: highest worst row, then highest mean F1, then the smaller sigma."""
    per_sigma = {}
    for sigma in SIGMAS:
        f1s = [(row["baseline"][str(sigma)]["f1"], row["name"]) for row in rows]
        worst_f1, worst_row = min(f1s)
        per_sigma[str(sigma)] = {
            "worst_row": worst_row,
            "worst_f1": worst_f1,
            "mean_f1": float(np.mean([f for f, _ in f1s])),
        }
    best = max(SIGMAS, key=lambda s: (per_sigma[str(s)]["worst_f1"], per_sigma[str(s)]["mean_f1"], -s))
    return best, per_sigma


def summarise(rows: list[dict], variants: dict, sigma: float) -> dict:
    base = [row["baseline"][str(sigma)] for row in rows]
    base_f1 = [b["f1"] for b in base]
    names = [row["name"] for row in rows]
    worst = int(np.argmin(base_f1))
    summary = {
        "baseline": {
            "sigma": sigma,
            "worst_row": names[worst],
            "worst_f1": base_f1[worst],
            "mean_f1": float(np.mean(base_f1)),
            "mean_dice": float(np.mean([b["dice"] for b in base])),
        }
    }
    for variant in variants:
        f1 = [row["variants"][variant]["f1"] for row in rows]
        margin = [a - b for a, b in zip(f1, base_f1)]
        worst, low = int(np.argmin(f1)), int(np.argmin(margin))
        summary[variant] = {
            "worst_row": names[worst],
            "worst_f1": f1[worst],
            "worst_margin_row": names[low],
            "worst_margin": margin[low],
            "mean_f1": float(np.mean(f1)),
            "mean_dice": float(np.mean([row["variants"][variant]["dice"] for row in rows])),
            "rows_below_baseline": [n for n, m in zip(names, margin) if m < 0],
            "seconds": round(sum(row["variants"][variant]["seconds"] for row in rows), 1),
        }
    return summary


def format_table(rows: list[dict], variants: dict, sigma: float, summary: dict) -> str:
    names = list(variants)
    top = f"{'':<22} {'':>3} {'':>5}"
    head = f"{'row':<22} {'n':>3} {'true':>5}"
    for name in names:
        top += f" | {name[:18]:<18}"
        head += f" | {'F1':>5} {'Dice':>5} {'s':>6}"
    label = f"baseline s={sigma:g}"
    pad = max(len(label), 11) - 11  # the baseline block is F1 and Dice (11 characters) or its label
    top += f" | {label:<11}"
    head += f" | {'':>{pad}}{'F1':>5} {'Dice':>5}"
    for name in names:
        top += f" | {name[:14]:>14}"
        head += f" | {'F1 - baseline':>14}"
    lines = [top, head, "-" * len(head)]
    for row in rows:
        base = row["baseline"][str(sigma)]
        line = f"{row['name']:<22} {row['samples']:>3} {row['true_objects']:>5}"
        for name in names:
            v = row["variants"][name]
            line += f" | {v['f1']:5.3f} {v['dice']:5.3f} {v['seconds']:6.0f}"
        line += f" | {'':>{pad}}{base['f1']:5.3f} {base['dice']:5.3f}"
        line += "".join(f" | {row['variants'][n]['f1'] - base['f1']:>+14.3f}" for n in names)
        lines.append(line)
    lines.append("-" * len(head))
    b = summary["baseline"]
    lines.append(
        f"WORST ROW (the decision number): baseline (sigma {sigma:g}) F1 {b['worst_f1']:.3f} on "
        f"{b['worst_row']}"
    )
    for n in names:
        lines.append(
            f"WORST ROW (the decision number): {n} F1 {summary[n]['worst_f1']:.3f} on "
            f"{summary[n]['worst_row']}; worst margin over the baseline {summary[n]['worst_margin']:+.3f} on "
            f"{summary[n]['worst_margin_row']}"
        )
    lines.append(
        f"mean over rows (NOT the decision number): baseline F1 {b['mean_f1']:.3f} "
        f"Dice {b['mean_dice']:.3f}; "
        + "; ".join(f"{n} F1 {summary[n]['mean_f1']:.3f} Dice {summary[n]['mean_dice']:.3f}" for n in names)
    )
    for n in names:
        below = ", ".join(summary[n]["rows_below_baseline"]) or "none"
        lines.append(f"{n}: {summary[n]['seconds']:.0f} s in all; rows below the baseline: {below}")
    return "\n".join(lines)


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.accuracy.protocol",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="rows: the table order is cells3d, z2, z4, xy0.5, xy2, snr2, stripes, dim, z2_xy0.5, val2d, "
        "synthetic-<preset> for each fveseg.synthetic.PRESETS",
    )
    parser.add_argument("--shared", default="../shared", help="folder holding tools/ and data/")
    parser.add_argument(
        "--variant",
        action="append",
        default=None,
        help="a named variant (benchmarks/accuracy/variants.py) or 'NAME:field=value,...'; repeatable "
        "(default: default)",
    )
    parser.add_argument("--rows", default=None, help="comma-separated row names (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the noisy re-imaged rows")
    parser.add_argument(
        "--draws", type=int, default=DRAWS, help=f"noise draws per noisy row, averaged (default {DRAWS})"
    )
    parser.add_argument("--device", default="cpu", help="torch device for the variants (default cpu)")
    parser.add_argument("--json", required=True, type=Path, help="output JSON (rewritten after every row)")
    parser.add_argument(
        "--baseline-cache",
        default=str(DEFAULT_CACHE),
        help="baseline results by row and data hash (default: results/baseline-cache.json next to this "
        "module; '' turns it off)",
    )
    parser.add_argument(
        "--val2d-limit", type=int, default=None, help="only the first N 2D images (development only)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    try:
        variants = dict(parse_variant(spec) for spec in (args.variant or ["default"]))
        all_rows = row_names()
        rows_wanted = [r.strip() for r in args.rows.split(",") if r.strip()] if args.rows else all_rows
        unknown = [r for r in rows_wanted if r not in all_rows]
        if unknown:
            raise ValueError(f"unknown row(s) {unknown}; rows: {', '.join(all_rows)}")
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    shared = Path(args.shared)
    metrics = load_module(shared / "tools" / "instance_metrics.py")
    baseline = load_module(shared / "tools" / "classical_baseline.py")
    cache_path = Path(args.baseline_cache) if args.baseline_cache else None
    cache = load_cache(cache_path)
    started = time.perf_counter()
    payload = {
        "command": "python -m benchmarks.accuracy.protocol " + shlex.join(argv),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "seed": args.seed,
        "device": args.device,
        "shared": str(shared),
        "val2d_limit": args.val2d_limit,
        "variants": variants,
        "rows": [],
        "complete": False,
    }
    rows = payload["rows"]
    for name in rows_wanted:
        print(f"[{time.perf_counter() - started:7.0f} s] row {name}: preparing", file=sys.stderr, flush=True)
        samples = row_samples(name, str(shared), args.seed, args.val2d_limit, args.draws)
        key = f"{name}|{fingerprint(samples)}"
        row = {
            "name": name,
            "description": describe(name),
            "samples": len(samples),
            "shape": list(samples[0].image.shape) if len(samples) == 1 else None,
            "spacing": list(samples[0].spacing) if samples[0].spacing is not None else None,
            "true_objects": int(sum(len(np.unique(s.labels)) - 1 for s in samples)),
            "baseline_key": key,
            "baseline": {},
            "variants": {},
        }
        cached = cache.get(key, {})
        for sigma in SIGMAS:
            if str(sigma) in cached:
                row["baseline"][str(sigma)] = cached[str(sigma)]
                continue
            row["baseline"][str(sigma)] = run_baseline(baseline, metrics, samples, sigma)
            cache.setdefault(key, {})[str(sigma)] = row["baseline"][str(sigma)]
            if cache_path is not None:
                save_json(cache_path, cache)
        best = max(row["baseline"].values(), key=lambda b: b["f1"])["f1"]
        print(f"    baseline best sigma on this row: F1 {best:.3f}", file=sys.stderr, flush=True)
        reuse: dict = {}  # network outputs shared by variants that differ only after the network
        for variant, overrides in variants.items():
            row["variants"][variant] = result = run_variant(metrics, samples, overrides, args.device, reuse)
            print(
                f"    {variant}: F1 {result['f1']:.3f} Dice {result['dice']:.3f} "
                f"({result['seconds']:.0f} s, {result['objects']} objects of {result['true_objects']}; "
                f"model {result.get('model', result.get('models'))}, noise {result.get('noise')}, "
                f"scale {result.get('scale', result.get('scale_range'))})",
                file=sys.stderr,
                flush=True,
            )
        rows.append(row)
        payload["seconds"] = round(time.perf_counter() - started, 1)
        save_json(args.json, payload)
    sigma, per_sigma = choose_sigma(rows)
    payload["baseline"] = {"sigma": sigma, "sigmas": list(SIGMAS), "per_sigma": per_sigma}
    payload["summary"] = summary = summarise(rows, variants, sigma)
    payload["seconds"] = round(time.perf_counter() - started, 1)
    payload["complete"] = True
    save_json(args.json, payload)
    print(format_table(rows, variants, sigma, summary))
    print(
        "baseline worst row per sigma: "
        + ", ".join(f"{s}: {v['worst_f1']:.3f} ({v['worst_row']})" for s, v in per_sigma.items())
    )
    print(f"total {payload['seconds']:.0f} s; JSON: {args.json}")
    return payload


if __name__ == "__main__":
    main()
