"""`write_labels`: one call for either label format, chosen by the output's suffix."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from fveseg.io.tiff_io import write_labels_tiff
from fveseg.io.zarr_io import write_labels_zarr


def write_labels(
    path: str | os.PathLike,
    labels: np.ndarray,
    name: str = "labels",
    *,
    spacing: tuple[float, float, float] | None = None,
    class_names: Mapping[int, str] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a (D, H, W) integer label volume: ``.zarr`` → OME-Zarr ``labels/<name>``
    (`write_labels_zarr`), anything else (``.tif``, ``.ome.tif``) → OME-TIFF (`write_labels_tiff`).
    ``spacing`` is in µm. Returns the path written; an existing output is replaced only with
    ``overwrite``."""
    if Path(path).name.lower().endswith(".zarr"):
        return write_labels_zarr(
            path, labels, name, spacing=spacing, class_names=class_names, overwrite=overwrite
        )
    return write_labels_tiff(path, labels, spacing=spacing, class_names=class_names, overwrite=overwrite)


def tiff_paths(output: Path, names: list[str]) -> dict[str, Path]:
    """One TIFF per layer: the output itself for one layer, ``<stem>_<layer>.tif`` beside it for several."""
    if len(names) == 1:
        return {names[0]: output}
    base = output.name[: -len(output.suffix)] if output.suffix else output.name
    return {name: output.with_name(f"{base}_{name}{output.suffix or '.tif'}") for name in names}
