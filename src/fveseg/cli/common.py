"""Helpers shared by the subcommands: input expansion, output naming, loading labels, tables, progress."""

from __future__ import annotations

import glob
import json
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

from fveseg.errors import InputError

# Suffixes the readers accept; a folder given as input is searched for these (not recursively).
VOLUME_SUFFIXES = (".tif", ".tiff", ".zarr", ".npz", ".nii", ".nii.gz")
ZARR_SUFFIXES = (".zarr",)
TIFF_SUFFIXES = (".tif", ".tiff")


def full_suffix(path: Path) -> str:
    """Lower-case suffix that matters for the format: ``.nii.gz``, ``.ome.zarr`` → ``.zarr``, ``.tif``."""
    name = path.name.lower().rstrip("/")
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    return Path(name).suffix


def stem(path: Path) -> str:
    """Name without format suffixes: ``a.ome.zarr`` → ``a``, ``b.nii.gz`` → ``b``, ``c.ome.tif`` → ``c``."""
    name = path.name.rstrip("/")
    for suffix in (".ome.zarr", ".ome.tiff", ".ome.tif", ".nii.gz", *VOLUME_SUFFIXES):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def is_volume_path(path: Path) -> bool:
    return full_suffix(path) in VOLUME_SUFFIXES


def expand_inputs(patterns: Sequence[str], unique: bool = True) -> list[Path]:
    """Files, folders (their volume files) and glob patterns → a list of paths (de-duplicated if `unique`).

    Raises `InputError` naming the first pattern that matches nothing.
    """
    found: list[Path] = []
    for pattern in patterns:
        path = Path(pattern)
        if path.is_dir() and not is_volume_path(path):  # a folder of volumes (a .zarr is a volume)
            members = sorted(p for p in path.iterdir() if is_volume_path(p) and not p.name.startswith("."))
            if not members:
                raise InputError(
                    f"the folder {path} holds no volume files ({', '.join(VOLUME_SUFFIXES)}) "
                    "(fix: point at the files themselves or at a folder that holds them)"
                )
            found.extend(members)
        elif path.exists():
            found.append(path)
        elif glob.has_magic(pattern):
            matches = sorted(Path(p) for p in glob.glob(pattern) if is_volume_path(Path(p)))
            if not matches:
                raise InputError(f"no volume file matches '{pattern}' (fix: check the pattern and folder)")
            found.extend(matches)
        else:
            raise InputError(f"input {path} does not exist (fix: check the path and spelling)")
    resolved = [p.resolve() for p in found]
    return list(dict.fromkeys(resolved)) if unique else resolved


def output_format(output: Path | None, requested: str | None, default: str = "zarr") -> str:
    """Pick ``"zarr"`` or ``"tiff"`` from ``--format`` or, failing that, the output's extension."""
    if requested:
        return requested
    if output is not None:
        suffix = full_suffix(output)
        if suffix in TIFF_SUFFIXES:
            return "tiff"
        if suffix in ZARR_SUFFIXES:
            return "zarr"
    return default


def load_label_volume(path: Path, name: str | None = None) -> tuple[np.ndarray, tuple[float, ...] | None]:
    """Read a label volume from TIFF, OME-Zarr labels, a challenge ``.npz`` (``gts``) or NIfTI.

    Returns ``(labels (D, H, W) integer ndarray, spacing or None)``.
    """
    from fveseg import io

    if not path.exists():
        raise InputError(f"{path} does not exist (fix: check the path and spelling)")
    suffix = full_suffix(path)
    if suffix in ZARR_SUFFIXES or suffix in TIFF_SUFFIXES:
        try:
            labels, meta = io.read_labels(path, name=name)
            spacing = meta.get("spacing") if isinstance(meta, dict) else None
            return np.asarray(labels), _as_spacing(spacing)
        except InputError:
            if suffix in ZARR_SUFFIXES:
                raise
    volume = io.read_volume(path)
    if volume.labels:
        key = name if name in volume.labels else next(iter(volume.labels))
        return np.asarray(volume.labels[key]), _as_spacing(volume.spacing)
    data = io.load_voxels(volume, Path(path).name)
    if not np.issubdtype(data.dtype, np.integer) and not np.issubdtype(data.dtype, np.bool_):
        raise InputError(f"{path} holds {data.dtype} data, not labels (fix: pass an integer label volume)")
    return data, _as_spacing(volume.spacing)


def _as_spacing(spacing) -> tuple[float, ...] | None:
    return None if spacing is None else tuple(float(s) for s in spacing)


def format_table(rows: Sequence[dict], columns: Sequence[str] | None = None) -> str:
    """Plain-text table with a header; floats are shown with 3 decimals."""
    if not rows:
        return "(nothing to show)"
    columns = list(columns or rows[0].keys())

    def cell(value) -> str:
        if isinstance(value, float):
            return "nan" if np.isnan(value) else f"{value:.3f}"
        return str(value)

    cells = [[cell(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)


def write_json(path: Path, payload, overwrite: bool) -> None:
    from fveseg.io import atomic_path

    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, default=float))


def write_csv(path: Path, rows: Sequence[dict], overwrite: bool) -> None:
    import csv

    from fveseg.io import atomic_path

    with atomic_path(path, overwrite=overwrite) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0].keys()) if rows else [])
        writer.writeheader()
        writer.writerows(rows)


class ProgressBar:
    """A tqdm bar driven by ``callback(done, total)`` (the Segmenter's progress protocol); silent if off."""

    def __init__(self, description: str, enabled: bool = True, position: int = 0, unit: str = "slice"):
        self._bar = None
        if enabled:
            from tqdm.auto import tqdm

            self._bar = tqdm(
                desc=description,
                unit=unit,
                position=position,
                leave=False,
                file=sys.stderr,
                dynamic_ncols=True,
            )

    def __call__(self, done: int, total: int) -> None:
        if self._bar is None:
            return
        if self._bar.total != total:
            self._bar.total = total
        self._bar.n = done
        self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def overall_bar(items: Iterable, total: int, enabled: bool, unit: str = "volume") -> Iterable:
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(
        items, total=total, desc="volumes", unit=unit, position=1, file=sys.stderr, dynamic_ncols=True
    )


def parse_spacing(values: Sequence[float] | None) -> tuple[float, float, float] | None:
    if values is None:
        return None
    if any(v <= 0 for v in values):
        raise InputError(
            f"--scale must be positive voxel sizes, got {list(values)} (fix: e.g. --scale 2 0.5 0.5)"
        )
    return tuple(float(v) for v in values)


StageTimer = Callable[[str], None]
