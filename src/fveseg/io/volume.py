"""The `Volume` every reader returns, and the checks that turn any array into a (z, y, x) volume."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fveseg.errors import InputError

#: Length units we convert to micrometres (OME, ImageJ and NIfTI spellings).
_TO_MICROMETER = {
    "m": 1e6,
    "meter": 1e6,
    "cm": 1e4,
    "centimeter": 1e4,
    "mm": 1e3,
    "millimeter": 1e3,
    "µm": 1.0,
    "um": 1.0,
    "micron": 1.0,
    "microns": 1.0,
    "micrometer": 1.0,
    "\\u00b5m": 1.0,
    "μm": 1.0,
    "inch": 25400.0,
    "in": 25400.0,
    "nm": 1e-3,
    "nanometer": 1e-3,
    "pm": 1e-6,
    "å": 1e-4,
    "angstrom": 1e-4,
}


@dataclass
class Volume:
    """A 3D image and what came with it.

    Attributes
    ----------
    data : (z, y, x) array-like
        numpy for TIFF, npz and NIfTI; a lazy dask array for Zarr/OME-Zarr (never loaded whole).
        A 2D image is a one-slice volume (1, y, x).
    spacing : tuple of 3 floats or None
        Physical voxel size (z, y, x) in `unit`; None when the file does not say.
    labels : dict[str, array]
        Label volumes stored with the image ((z, y, x) ids; lazy for Zarr).
    prompts : dict[int, str]
        Label id -> class name or text prompt (challenge `text_prompts`, dev-data `class_names`, the
        `properties` of OME-Zarr labels).
    name : str
        Display name (file name without its extensions).
    path : Path
        The file or folder read.
    unit : str or None
        Unit of `spacing`: "micrometer" whenever the file names a known unit (TIFF, OME-Zarr and NIfTI
        are converted to µm, e.g. 0.5 mm → 500 µm); "millimeter" for challenge npz (kept as stored, see
        `spacing_in_micrometer`); None when unknown.
    instance_label : bool
        True when `labels` hold instance ids of one class (challenge `instance_label` = 1).
    channel_names : list[str]
        Channels the file had before `channel` chose one.
    """

    data: Any
    spacing: tuple[float, float, float] | None = None
    labels: dict[str, Any] = field(default_factory=dict)
    prompts: dict[int, str] = field(default_factory=dict)
    name: str = ""
    path: Path = field(default_factory=Path)
    unit: str | None = None
    instance_label: bool = False
    channel_names: list[str] = field(default_factory=list)


def stem(path: Path) -> str:
    """File name without its (possibly double) extension: 'a.ome.tif' -> 'a', 'b.nii.gz' -> 'b'."""
    name = path.name.rstrip("/")
    for suffix in (".ome.tiff", ".ome.tif", ".ome.zarr", ".nii.gz"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def check_dtype(dtype: np.dtype, what: str = "Image") -> None:
    """Raise InputError for dtypes no segmentation step can use (complex, object, text, records)."""
    dtype = np.dtype(dtype)
    if dtype.kind in "biuf":
        return
    hint = (
        "take the magnitude (np.abs) or real part first"
        if dtype.kind == "c"
        else ("convert it to a numeric array (integers or floats)")
    )
    raise InputError(f"{what} has dtype {dtype}, which cannot be segmented; {hint}.")


def to_zyx(
    array: Any,
    axes: str,
    source: str,
    channel: int | str | None = None,
    channel_names: Sequence[str] | None = None,
) -> tuple[Any, list[str]]:
    """Reorder an array with named axes to (z, y, x), picking one channel.

    Parameters
    ----------
    array : array-like
        numpy or dask array whose dimensions are named by `axes`.
    axes : str
        One letter per dimension: Z/Y/X spatial, C or S channel (S: RGB samples), T time;
        other letters (Q, I, …) of size > 1 are read as z when there is no Z.
    source : str
        File name for error messages.
    channel : int, str or None
        Channel index or name; required when there are several channels.
    channel_names : sequence of str, optional
        Names of the channels (default: their indices).

    Returns
    -------
    (data, channel_names)
        `data` with shape (z, y, x) (z = 1 for 2D images) and the channel names seen.
    """
    axes = axes.upper()
    if 0 in array.shape:
        raise InputError(f"{source} is empty (shape {tuple(array.shape)}); it holds no voxels to segment.")
    if len(axes) != array.ndim:
        raise InputError(f"{source}: axes {axes!r} do not match the array's {array.ndim} dimensions.")
    if len(set(axes)) != len(axes):
        # tifffile names the axes of some degenerate files twice (a 1×1×1 page reads as "XYX"): without
        # usable names, an array of up to three dimensions is a plain (z, y, x) stack
        if array.ndim > 3:
            raise InputError(
                f"{source}: its axes {axes!r} name one dimension twice, so its layout is unknown; save it "
                "again as a (z, y, x) stack."
            )
        axes = "ZYX"[3 - array.ndim :]
    if "C" in axes and "S" in axes:  # keep the larger one as the channel axis, drop a size-1 other
        drop = "S" if array.shape[axes.index("S")] == 1 else "C"
        array, axes = _squeeze_axis(array, axes, drop, source)
    channel_axis = next((a for a in "CS" if a in axes), None)
    names: list[str] = []
    if channel_axis is not None:
        count = array.shape[axes.index(channel_axis)]
        names = (
            list(channel_names)
            if channel_names and len(channel_names) == count
            else [str(i) for i in range(count)]
        )
        # a 3- or 4-slice stack saved without metadata is stored as the samples of one RGB(A) image
        hint = (
            f" If they are {count} z-slices rather than colours, re-save the stack as single-channel planes "
            "(tifffile.imwrite(path, data, photometric='minisblack'))"
            if channel_axis == "S"
            else ""
        )
        index = _channel_index(channel, names, source, hint)
        array = (
            array.take(index, axis=axes.index(channel_axis))
            if hasattr(array, "take")
            else np.take(array, index, axis=axes.index(channel_axis))
        )
        axes = axes.replace(channel_axis, "")
    elif channel not in (None, 0, "0"):
        raise InputError(f"{source} has a single channel; leave channel unset (got {channel!r}).")
    extra = [letter for letter in axes if letter not in "ZYX"]
    for letter in extra:
        size = array.shape[axes.index(letter)]
        if size == 1:
            array, axes = _squeeze_axis(array, axes, letter, source)
        elif "Z" not in axes and letter != "T":
            axes = axes.replace(letter, "Z", 1)
        else:
            what = "time points" if letter == "T" else "entries along an extra dimension"
            raise InputError(
                f"{source} has {size} {what} (axes {axes!r}); only one 3D volume can be segmented at a "
                "time. Save a single time point / volume, or choose it before segmenting."
            )
    if "Y" not in axes or "X" not in axes:
        raise InputError(f"{source}: could not find the y and x axes in {axes!r}.")
    if "Z" not in axes:
        array, axes = array[None], "Z" + axes
    order = [axes.index(a) for a in "ZYX"]
    if order != [0, 1, 2]:
        array = array.transpose(order)
    return array, names


def _squeeze_axis(array: Any, axes: str, letter: str, source: str) -> tuple[Any, str]:
    position = axes.index(letter)
    if array.shape[position] != 1:
        raise InputError(f"{source}: both C and S axes have several entries; save one channel per file.")
    return array.take(0, axis=position) if hasattr(array, "take") else np.take(array, 0, position), axes[
        :position
    ] + axes[position + 1 :]


def _channel_index(channel: int | str | None, names: list[str], source: str, hint: str = "") -> int:
    if len(names) == 1 and channel in (None, 0, "0", names[0]):
        return 0
    listing = ", ".join(f"{i} ({n})" if n != str(i) else str(i) for i, n in enumerate(names))
    if channel is None:
        raise InputError(
            f"{source} has {len(names)} channels: {listing}. Choose one with channel=<index or name> "
            f"(--channel on the command line).{hint}"
        )
    if isinstance(channel, str) and channel in names:
        return names.index(channel)
    try:
        index = int(channel)
    except (TypeError, ValueError):
        index = -1
    if not 0 <= index < len(names):
        raise InputError(f"{source}: channel {channel!r} does not exist; the channels are {listing}.")
    return index


def check_volume(data: Any, source: str) -> Any:
    """Check a (z, y, x) array: not empty and a usable dtype (bool becomes uint8)."""
    check_dtype(data.dtype, f"{source}")
    if data.ndim != 3:
        raise InputError(f"{source}: expected a 3D (z, y, x) volume, got shape {tuple(data.shape)}.")
    if 0 in data.shape:
        raise InputError(f"{source} is empty (shape {tuple(data.shape)}); it holds no voxels to segment.")
    if data.dtype == bool:
        data = data.astype(np.uint8)
    return data


def plain_zyx(array: Any, source: str, channel: int | str | None = None) -> Any:
    """Turn a bare array (no axis names: npz, NIfTI after transposing) into (z, y, x).

    2D -> (1, y, x); 3D stays; a 3D array whose last axis has 3 or 4 entries is ambiguous (RGB image or
    a volume of 3 slices?) and is read as a volume; 4D needs a channel choice on the first axis.
    """
    if array.ndim == 2:
        return array[None]
    if array.ndim == 3:
        return array
    if array.ndim == 4:
        data, _ = to_zyx(array, "CZYX", source, channel)
        return data
    raise InputError(
        f"{source}: expected a 2D or 3D array, got {array.ndim} dimensions (shape {tuple(array.shape)}). "
        "Save a single 3D volume per file."
    )


def unit_factor(unit: str | None) -> float | None:
    """Micrometres in one `unit` (``"millimeter"`` → 1000); None for a missing or unknown unit."""
    if unit is None:
        return None
    return _TO_MICROMETER.get(str(unit).strip().lower())


def spacing_in_micrometer(spacing, unit: str | None) -> tuple[float, float, float] | None:
    """A `Volume`'s spacing in micrometres (unknown units are taken as micrometres)."""
    if spacing is None:
        return None
    return tuple(to_micrometer(s, unit) for s in spacing)


def to_micrometer(value: float, unit: str | None) -> float:
    """Convert a length to micrometres; unknown or missing units are taken as micrometres."""
    return float(value) * (unit_factor(unit) or 1.0)


def clean_spacing(values: Sequence[float] | None) -> tuple[float, float, float] | None:
    """Return three positive finite floats, or None when any is missing, NaN, zero or negative."""
    if values is None:
        return None
    values = [float(v) for v in np.asarray(values, dtype=float).ravel()]
    if len(values) != 3 or not all(np.isfinite(v) and v > 0 for v in values):
        return None
    return (values[0], values[1], values[2])
