"""How far are synthetic slices from real fluorescence nuclei images? Also times the plugin sample.

Computes per-image statistics on real 2D images (DSB 2018 fluorescence training set), on slices of the
real confocal volume ``cells3d_nuclei.npz`` and on slices of synthetic volumes, after a 0.5–99.5
percentile normalisation, and prints for each statistic the median and interquartile range (IQR) over
images, plus a distance: |synthetic median − real median| / real IQR (how many real IQRs apart).

Run:  .venv/bin/python benchmarks/bench_synthetic_realism.py [--real-images 540] [--seeds 8]
"""

from __future__ import annotations

import argparse
import glob
import time
import tracemalloc
from pathlib import Path

import numpy as np
from scipy import ndimage

from fveseg.synthetic import PRESETS, make_nuclei_volume, make_sample_volume

DATA = Path("/work/shared/data")
STATS = {
    "foreground fraction": "share of pixels inside nuclei",
    "nucleus area (px)": "median area of the nuclei in an image",
    "fg/bg ratio": "median nucleus intensity / median background intensity (+0.01)",
    "nucleus brightness CV": "std / mean of per-nucleus mean intensity (minus background)",
    "boundary contrast": "mean of a 2-px inner band − mean of a 2-px outer band, / (fg − bg)",
    "texture CV": "median over nuclei of the std / mean inside the nucleus core",
    "background noise": "robust std of the high-pass background, / (fg − bg)",
    "spectrum slope": "log-log slope of the radial power spectrum, 0.02–0.25 cycles/px",
}


def normalise(image: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(image, [0.5, 99.5])
    return np.clip((image.astype(np.float32) - lo) / max(hi - lo, 1e-6), 0, 1)


def spectrum_slope(image: np.ndarray) -> float:
    window = np.outer(np.hanning(image.shape[0]), np.hanning(image.shape[1]))
    power = np.abs(np.fft.fftshift(np.fft.fft2((image - image.mean()) * window))) ** 2
    fy = np.fft.fftshift(np.fft.fftfreq(image.shape[0]))[:, None]
    fx = np.fft.fftshift(np.fft.fftfreq(image.shape[1]))[None, :]
    radius = np.hypot(fy, fx)
    bins = np.geomspace(0.02, 0.25, 12)
    which = np.digitize(radius.ravel(), bins)
    sums = np.bincount(which, power.ravel(), minlength=len(bins) + 1)[1:-1]
    counts = np.bincount(which, minlength=len(bins) + 1)[1:-1]
    centers = np.sqrt(bins[1:] * bins[:-1])
    keep = counts > 0
    return float(np.polyfit(np.log(centers[keep]), np.log(sums[keep] / counts[keep] + 1e-12), 1)[0])


def image_stats(image: np.ndarray, labels: np.ndarray) -> dict[str, float] | None:
    """Statistics of one 2D image with its instance labels; None when it has no usable nuclei."""
    img = normalise(image)
    fg = labels > 0
    if fg.sum() < 20 or fg.mean() > 0.9:
        return None
    near = ndimage.binary_dilation(fg, iterations=3)
    far = ~ndimage.binary_dilation(fg, iterations=6)
    if far.sum() < 100:
        return None
    fg_level = float(np.median(img[fg]))
    bg_level = float(np.median(img[~near]))
    span = max(fg_level - bg_level, 1e-3)
    ids, inverse = np.unique(labels, return_inverse=True)
    inverse = inverse.reshape(labels.shape)
    areas = np.bincount(inverse.ravel())[1:]
    sums = np.bincount(inverse.ravel(), img.ravel())[1:]
    means = sums / np.maximum(areas, 1)
    big = areas >= 10
    inner = fg & ~ndimage.binary_erosion(fg, iterations=2)
    outer = ndimage.binary_dilation(fg, iterations=2) & ~fg
    core = ndimage.binary_erosion(fg, iterations=2)
    core_ids = inverse[core]
    core_n = np.bincount(core_ids, minlength=len(ids))
    core_sum = np.bincount(core_ids, img[core], minlength=len(ids))
    core_sq = np.bincount(core_ids, img[core] ** 2, minlength=len(ids))
    ok = core_n[1:] >= 10
    core_mean = core_sum[1:][ok] / core_n[1:][ok]
    core_std = np.sqrt(np.maximum(core_sq[1:][ok] / core_n[1:][ok] - core_mean**2, 0))
    residual = img - ndimage.gaussian_filter(img, 2)
    noise = 1.4826 * float(np.median(np.abs(residual[far] - np.median(residual[far]))))
    signal = means[big] - bg_level
    return {
        "foreground fraction": float(fg.mean()),
        "nucleus area (px)": float(np.median(areas[big])) if big.any() else np.nan,
        "fg/bg ratio": (fg_level + 0.01) / (bg_level + 0.01),
        "nucleus brightness CV": float(signal.std() / max(signal.mean(), 1e-3)) if big.sum() > 2 else np.nan,
        "boundary contrast": (float(img[inner].mean()) - float(img[outer].mean())) / span,
        "texture CV": float(np.median(core_std / np.maximum(core_mean, 1e-3))) if ok.any() else np.nan,
        "background noise": noise / span,
        "spectrum slope": spectrum_slope(img),
    }


def collect(pairs) -> dict[str, np.ndarray]:
    rows = [s for s in (image_stats(i, l) for i, l in pairs) if s is not None]
    return {name: np.array([r[name] for r in rows]) for name in STATS}


def real_2d(limit: int):
    for path in sorted(glob.glob(str(DATA / "train/dsb2018_fluo/*.npz")))[:limit]:
        with np.load(path) as data:
            yield data["image"], data["labels"]


def volume_slices(image: np.ndarray, labels: np.ndarray, step: int = 2):
    depth = image.shape[0]
    for z in range(depth // 4, 3 * depth // 4, step):
        yield image[z], labels[z]


def synthetic(seeds: int, preset: str, spacing=(1.0, 0.5, 0.5)):
    for seed in range(1000, 1000 + seeds):
        volume = make_nuclei_volume((32, 192, 192), seed=seed, spacing=spacing, preset=preset)
        yield from volume_slices(volume.image, volume.labels)


def axis_gradient_ratio(image: np.ndarray, spacing) -> float:
    """Mean squared gradient per µm along z over that along y and x (lower = blurrier along z)."""
    smooth = ndimage.gaussian_filter(normalise(image), 1.0)
    energy = [float(np.mean(np.diff(smooth, axis=a) ** 2)) / spacing[a] ** 2 for a in range(3)]
    return energy[0] / (0.5 * (energy[1] + energy[2]))


def summary(values: np.ndarray) -> tuple[float, float, float]:
    values = values[np.isfinite(values)]
    q25, q50, q75 = np.percentile(values, [25, 50, 75])
    return float(q50), float(q25), float(q75)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real-images", type=int, default=540)
    parser.add_argument("--seeds", type=int, default=8)
    args = parser.parse_args()

    columns = {"DSB 2018 fluo (real 2D)": collect(real_2d(args.real_images))}
    with np.load(DATA / "nuclei3d/cells3d_nuclei.npz") as data:
        cells_image, cells_labels, cells_spacing = data["image"], data["labels"], data["spacing_zyx"]
    columns["cells3d (real 3D)"] = collect(volume_slices(cells_image, cells_labels))
    for preset in PRESETS:
        columns[f"synthetic {preset}"] = collect(synthetic(args.seeds, preset))
    reference = columns["DSB 2018 fluo (real 2D)"]
    print(f"images per column: { {k: len(v['spectrum slope']) for k, v in columns.items()} }\n")
    header = "| statistic | " + " | ".join(columns) + f" | distance ({' / '.join(PRESETS)}) |"
    print(header)
    print("|" + "---|" * (len(columns) + 2))
    for name in STATS:
        cells = []
        for values in columns.values():
            median, q25, q75 = summary(values[name])
            cells.append(f"{median:.3g} [{q25:.3g}, {q75:.3g}]")
        real_median, real_q25, real_q75 = summary(reference[name])
        iqr = max(real_q75 - real_q25, 1e-9)
        distances = [abs(summary(columns[f"synthetic {p}"][name])[0] - real_median) / iqr for p in PRESETS]
        print(f"| {name} | " + " | ".join(cells) + " | " + " / ".join(f"{d:.2f}" for d in distances) + " |")

    print("\nAnisotropy: z / in-plane gradient energy per µm (1 = isotropic blur)")
    print(
        f"  cells3d (real confocal, spacing {tuple(cells_spacing.tolist())}): "
        f"{axis_gradient_ratio(cells_image, cells_spacing):.3f}"
    )
    for preset, spacing in (
        ("isotropic", (1.0, 0.5, 0.5)),
        ("anisotropic", (1.0, 0.5, 0.5)),
        ("anisotropic", (1.5, 0.5, 0.5)),
        ("hard", (1.5, 0.5, 0.5)),
        ("embryo", (1.0, 0.5, 0.5)),
        ("lightsheet", (1.0, 0.5, 0.5)),
    ):
        volume = make_nuclei_volume((32, 128, 128), seed=7, spacing=spacing, preset=preset)
        print(f"  synthetic {preset}, spacing {spacing}: {axis_gradient_ratio(volume.image, spacing):.3f}")

    make_sample_volume()  # warm-up (imports, allocator)
    wall, cpu = [], []
    for _ in range(5):
        start, start_cpu = time.perf_counter(), time.process_time()
        make_sample_volume()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    tracemalloc.start()
    make_sample_volume()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    print(
        f"\nmake_sample_volume() (32, 128, 128), 5 runs: wall best {min(wall):.3f} s, median "
        f"{np.median(wall):.3f} s; CPU time best {min(cpu):.3f} s, median {np.median(cpu):.3f} s; "
        f"peak traced memory {peak / 2**20:.0f} MiB"
    )
    start, start_cpu = time.perf_counter(), time.process_time()
    make_nuclei_volume((64, 256, 256), seed=0)
    print(
        f"make_nuclei_volume((64, 256, 256)): wall {time.perf_counter() - start:.2f} s, "
        f"CPU {time.process_time() - start_cpu:.2f} s"
    )


if __name__ == "__main__":
    main()
