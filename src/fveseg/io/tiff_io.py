"""TIFF / OME-TIFF / ImageJ TIFF: read images as (z, y, x) with their voxel size, write and read labels."""

from __future__ import annotations

import json
import logging
import os
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fveseg.errors import InputError
from fveseg.io.atomic import atomic_path
from fveseg.io.labels_meta import as_label_ids, check_class_names, check_colors, image_label_metadata
from fveseg.io.volume import Volume, check_volume, clean_spacing, stem, to_micrometer, to_zyx

#: Key of the JSON we put in the OME Image Description of label files.
LABELS_DESCRIPTION_KEY = "fveseg-labels"


def _open(path: Path):
    import tifffile

    try:
        return tifffile.TiffFile(path)
    except Exception as error:  # tifffile raises TiffFileError, ValueError, struct.error, …
        raise InputError(
            f"{path} is not a readable TIFF file ({type(error).__name__}: {error}). The file may be "
            "truncated or corrupt: copy or export it again."
        ) from error


class _ErrorLog(logging.Handler):
    """Collects the errors tifffile logs (instead of raising) for damaged pages."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def read_tiff(path: Path, channel: int | str | None = None) -> Volume:
    """Read a TIFF, OME-TIFF or ImageJ hyperstack as a (z, y, x) `Volume` (numpy, spacing in µm)."""
    errors = _ErrorLog()
    logger = logging.getLogger("tifffile")
    logger.addHandler(errors)
    try:
        return _read_tiff(path, channel, errors)
    finally:
        logger.removeHandler(errors)


def _read_tiff(path: Path, channel: int | str | None, errors: _ErrorLog) -> Volume:
    with _open(path) as tif:
        if not tif.series:
            raise InputError(f"{path} holds no image; check that it is the right file.")
        series = tif.series[0]
        try:
            array = series.asarray()
        except Exception as error:
            raise InputError(
                f"{path} could not be decoded ({type(error).__name__}: {error}); the file is probably "
                "truncated or corrupt. Export it again."
            ) from error
        if errors.messages:  # tifffile skips damaged pages with a logged error: never return part of a file
            raise InputError(
                f"{path} is damaged ({errors.messages[0]}); the file is probably truncated "
                "or corrupt. Export it again."
            )
        ome = _ome_pixels(tif)
        channel_names = _ome_channel_names(ome)
        data, channel_names = to_zyx(array, series.axes, path.name, channel, channel_names)
        spacing = _ome_spacing(ome, data.shape[0]) if ome is not None else _imagej_spacing(tif, data.shape[0])
        description = _ome_description(ome)
    data = check_volume(data, path.name)
    labels_meta = description.get(LABELS_DESCRIPTION_KEY, {}) if isinstance(description, dict) else {}
    prompts = {int(k): str(v) for k, v in labels_meta.get("class_names", {}).items()}
    return Volume(
        data=data,
        spacing=spacing,
        prompts=prompts,
        name=stem(path),
        path=path,
        unit="micrometer" if spacing else None,
        channel_names=channel_names,
    )


def _ome_pixels(tif) -> ET.Element | None:
    if not tif.is_ome or not tif.ome_metadata:
        return None
    try:
        root = ET.fromstring(tif.ome_metadata)
    except ET.ParseError:
        return None
    image = next((e for e in root if e.tag.endswith("Image")), None)
    if image is None:
        return None
    return image


def _ome_channel_names(image: ET.Element | None) -> list[str]:
    if image is None:
        return []
    pixels = next((e for e in image if e.tag.endswith("Pixels")), None)
    if pixels is None:
        return []
    channels = [e for e in pixels if e.tag.endswith("Channel")]
    return [c.get("Name") or str(i) for i, c in enumerate(channels)]


def _ome_description(image: ET.Element | None) -> Any:
    if image is None:
        return {}
    element = next((e for e in image if e.tag.endswith("Description")), None)
    try:
        return json.loads(element.text) if element is not None and element.text else {}
    except json.JSONDecodeError:
        return {}


def _ome_spacing(image: ET.Element | None, depth: int) -> tuple[float, float, float] | None:
    pixels = None if image is None else next((e for e in image if e.tag.endswith("Pixels")), None)
    if pixels is None:
        return None
    sizes = {}
    for axis in "XYZ":
        value = pixels.get(f"PhysicalSize{axis}")
        if value is not None:
            sizes[axis] = to_micrometer(float(value), pixels.get(f"PhysicalSize{axis}Unit", "µm"))
    if "Z" not in sizes and depth == 1 and "Y" in sizes:
        sizes["Z"] = sizes["Y"]  # one slice: z spacing is irrelevant, keep it isotropic
    return clean_spacing([sizes.get(a, np.nan) for a in "ZYX"])


def _imagej_spacing(tif, depth: int) -> tuple[float, float, float] | None:
    page = tif.pages.first
    metadata = tif.imagej_metadata or {}
    unit = metadata.get("unit")
    resolution_unit = page.tags.get("ResolutionUnit")
    resolution_unit = resolution_unit.value if resolution_unit is not None else 1
    if unit is None and resolution_unit in (2, 3):  # inch, centimetre (rare for microscopy)
        unit = {2: "inch", 3: "cm"}[resolution_unit]
    if unit is None:
        return None
    sizes = []
    for tag in ("YResolution", "XResolution"):
        value = page.tags.get(tag)
        numerator, denominator = value.value if value is not None else (1, 1)
        pixels_per_unit = numerator / denominator if denominator else 0.0
        size = 1.0 / pixels_per_unit if pixels_per_unit > 0 else np.nan
        sizes.append(size * 25400.0 if unit == "inch" else to_micrometer(size, unit))
    z = metadata.get("spacing")
    z = to_micrometer(z, unit) if z is not None else (sizes[0] if depth == 1 else np.nan)
    return clean_spacing([z, *sizes])


def write_labels_tiff(
    path: str | os.PathLike,
    labels: Any,
    *,
    spacing: tuple[float, float, float] | None = None,
    class_names: Mapping[int, str] | None = None,
    colors: Mapping[int, tuple] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write labels as a uint32 OME-TIFF with physical sizes and class names.

    Parameters
    ----------
    path : str or PathLike
        Output file, e.g. ``nuclei.ome.tif``.
    labels : (z, y, x) or (y, x) integer array
        numpy, zarr or dask; lazy arrays are written one z-slice at a time (bounded memory).
    spacing : (3,) floats, optional
        Voxel size (z, y, x) in micrometres -> OME PhysicalSizeZ/Y/X.
    class_names, colors : dict, optional
        id -> class name / RGBA 0–255; stored as JSON in the OME Image Description
        (``{"fveseg-labels": {...}}``) and read back by `read_labels`.
    overwrite : bool
        Replace an existing file; otherwise `OutputExistsError`.

    Returns
    -------
    Path
        The file written (atomically: temporary sibling, then rename).
    """
    import tifffile

    path = Path(path)
    if labels.ndim == 2:
        labels = labels[None]
    if labels.ndim != 3 or 0 in labels.shape:
        raise InputError(f"Labels to write must be a non-empty (z, y, x) array, got shape {labels.shape}.")
    names = check_class_names(class_names)
    palette = check_colors(colors)
    in_memory = isinstance(labels, np.ndarray)
    ids = _present_ids(labels) if in_memory else None
    described = image_label_metadata(ids, names, palette)
    description = {
        LABELS_DESCRIPTION_KEY: {
            "class_names": {str(k): v for k, v in names.items()},
            "colors": {str(c["label-value"]): c["rgba"] for c in described["colors"]},
        }
    }
    metadata: dict[str, Any] = {"axes": "ZYX", "Name": stem(path), "Description": json.dumps(description)}
    if spacing is not None:
        spacing = clean_spacing(spacing)
        if spacing is None:
            raise InputError("spacing must be three positive numbers (z, y, x) in micrometres.")
        for axis, size in zip("ZYX", spacing):
            metadata[f"PhysicalSize{axis}"] = size
            metadata[f"PhysicalSize{axis}Unit"] = "µm"
    shape = tuple(int(s) for s in labels.shape)
    # Lazy sources are streamed one z-slice at a time through tifffile's page iterator.
    data = (
        as_label_ids(labels) if in_memory else (as_label_ids(np.asarray(labels[z])) for z in range(shape[0]))
    )
    big = np.prod(shape, dtype=np.int64) * 4 > 2**32 - 2**25
    with atomic_path(path, overwrite) as temporary:
        tifffile.imwrite(
            temporary,
            data,
            shape=shape,
            dtype=np.uint32,
            ome=True,
            photometric="minisblack",
            compression="zlib",
            metadata=metadata,
            bigtiff=bool(big),
        )
    return path


def _present_ids(labels: np.ndarray) -> np.ndarray:
    checked = as_label_ids(labels)
    try:
        import fastremap
    except ImportError:
        return np.unique(checked)
    return fastremap.unique(checked)


def read_tiff_labels(path: Path) -> tuple[np.ndarray, dict]:
    """Read labels written by `write_labels_tiff` (or any single-channel integer TIFF)."""
    volume = read_tiff(path)
    with _open(path) as tif:
        stored = _ome_description(_ome_pixels(tif))
    stored = stored.get(LABELS_DESCRIPTION_KEY, {}) if isinstance(stored, dict) else {}
    if volume.data.dtype.kind not in "uib":
        raise InputError(f"{path} holds {volume.data.dtype} values, not integer label ids.")
    meta = {
        "spacing": volume.spacing,
        "unit": volume.unit,
        "class_names": {int(k): str(v) for k, v in stored.get("class_names", {}).items()},
        "colors": {int(k): tuple(int(c) for c in v) for k, v in stored.get("colors", {}).items()},
        "name": volume.name,
    }
    return volume.data, meta
