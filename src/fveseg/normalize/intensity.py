"""Intensity preprocessing to uint8 [0, 255], as the paper prepares its data (MedSAM practice).

Rules, first match wins:

1. ``window`` given (a name from `CT_WINDOWS` or ``(width, level)`` in HU): clip to
   ``[level - width/2, level + width/2]`` and rescale.
2. The data are already uint8, or every (sampled) value is a whole number in [0, 255]: unchanged.
3. ``modality="ct"``: the soft-tissue window (W400 / L40).
4. Otherwise: clip to the 0.5 and 99.5 percentiles of the finite values and rescale. If those two
   percentiles coincide (e.g. sparse bright spots on a zero background), the finite minimum and maximum
   are used instead.

Rescaling maps ``lo -> 0`` and ``hi -> 255`` linearly and rounds half to even. NaN becomes 0, +inf
255 and -inf 0 (they are clipped like any other value). A constant volume that rule 2 does not keep
(``lo == hi``) becomes all zeros, and so does a volume with no finite value.

For large or lazy (zarr, dask) arrays, `intensity_range` looks at a deterministic subsample of at most
``SUBSAMPLE_VOXELS`` voxels (evenly spaced slices, strided in-plane), and `apply_range` converts one
batch at a time, so a streaming caller computes the range once and normalises batch by batch.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from fveseg.errors import InputError

#: CT windows as (width, level) in Hounsfield units (paper section 4.1).
CT_WINDOWS: dict[str, tuple[float, float]] = {
    "soft_tissue": (400.0, 40.0),
    "lung": (1500.0, -160.0),
    "brain": (80.0, 40.0),
    "bone": (1800.0, 400.0),
}
MODALITIES = ("auto", "ct", "mri", "microscopy", "other")
PERCENTILES = (0.5, 99.5)
SUBSAMPLE_VOXELS = 2_000_000
_SAMPLED_SLICES = 64


def _check_dtype(array: Any) -> np.dtype:
    dtype = np.dtype(array.dtype if hasattr(array, "dtype") else np.asarray(array).dtype)
    if dtype.kind not in "uif":
        raise InputError(
            f"cannot normalise data of dtype {dtype}: intensities must be integers or floats; "
            "convert the image (e.g. array.astype(np.float32)) first."
        )
    return dtype


def _window_bounds(window: Any) -> tuple[float, float]:
    if isinstance(window, str):
        if window not in CT_WINDOWS:
            names = ", ".join(CT_WINDOWS)
            raise InputError(f"unknown CT window {window!r}; use one of {names} or (width, level).")
        width, level = CT_WINDOWS[window]
    else:
        try:
            width, level = (float(x) for x in window)
        except (TypeError, ValueError):
            raise InputError(f"window must be a name or (width, level), got {window!r}.") from None
        if not width > 0 or not math.isfinite(level):
            raise InputError(f"window width must be > 0 and level finite, got (width, level) = {window!r}.")
    return level - width / 2, level + width / 2


def _subsample(volume: Any) -> np.ndarray:
    """At most ~SUBSAMPLE_VOXELS voxels: up to 64 evenly spaced slices along axis 0, strided in-plane."""
    shape = tuple(int(s) for s in volume.shape)
    if math.prod(shape) <= SUBSAMPLE_VOXELS or len(shape) == 0:
        return np.asarray(volume)
    if len(shape) == 1:
        return np.asarray(volume[:: -(-shape[0] // SUBSAMPLE_VOXELS)])
    picks = np.unique(np.linspace(0, shape[0] - 1, min(shape[0], _SAMPLED_SLICES)).round().astype(int))
    per_slice = SUBSAMPLE_VOXELS / len(picks)
    in_plane = math.prod(shape[1:])
    step = max(1, math.ceil((in_plane / per_slice) ** (1 / (len(shape) - 1))))
    strided = (slice(None, None, step),) * (len(shape) - 1)
    return np.stack([np.asarray(volume[(int(z), *strided)]) for z in picks])


def intensity_range(volume: Any, modality: str = "auto", window: Any = None) -> tuple[float, float]:
    """The ``(lo, hi)`` intensities that `apply_range` maps to 0 and 255 (rules in the module docstring).

    Parameters
    ----------
    volume : array-like, any shape
        numpy, zarr or dask array of integers or floats. Large arrays are subsampled.
    modality : {"auto", "ct", "mri", "microscopy", "other"}
        "ct" applies the soft-tissue window unless ``window`` says otherwise.
    window : str or (width, level), optional
        A CT window name ("soft_tissue", "lung", "brain", "bone") or explicit width and level in HU.

    Returns
    -------
    (lo, hi) : tuple of float
        (0.0, 255.0) when the data pass unchanged; lo == hi when the result is all zeros.
    """
    dtype = _check_dtype(volume)
    if not isinstance(modality, str) or modality.lower() not in MODALITIES:
        raise InputError(f"unknown modality {modality!r}; use one of {', '.join(MODALITIES)}.")
    if window is not None:
        return _window_bounds(window)
    if dtype == np.uint8:
        return 0.0, 255.0
    sample = _subsample(volume).ravel()
    finite = sample[np.isfinite(sample)] if dtype.kind == "f" else sample
    if finite.size == 0:
        return 0.0, 0.0
    low, high = float(finite.min()), float(finite.max())
    if low >= 0 and high <= 255 and (dtype.kind != "f" or np.all(finite == np.round(finite))):
        return 0.0, 255.0
    if modality.lower() == "ct":
        return _window_bounds("soft_tissue")
    lo, hi = (float(p) for p in np.percentile(finite, PERCENTILES))
    return (lo, hi) if hi > lo else (low, high)


def apply_range(array: Any, lo: float, hi: float) -> np.ndarray:
    """Clip ``array`` to ``[lo, hi]`` and rescale linearly to uint8 [0, 255], rounding half to even.

    NaN -> 0; +inf -> 255; -inf -> 0; ``hi <= lo`` -> all zeros. Output has the input's shape.
    """
    _check_dtype(array)
    data = np.asarray(array)
    if not hi > lo:
        return np.zeros(data.shape, dtype=np.uint8)
    scaled = data.astype(np.float64)
    np.clip(scaled, lo, hi, out=scaled)
    scaled -= lo
    scaled *= 255.0  # multiply, then divide: exact whenever the true result is representable
    scaled /= hi - lo
    np.rint(scaled, out=scaled)
    if data.dtype.kind == "f":
        scaled[np.isnan(scaled)] = 0
    return scaled.astype(np.uint8)


def normalize(volume: Any, modality: str = "auto", window: Any = None) -> np.ndarray:
    """Convert a volume's intensities to uint8 [0, 255] (rules in the module docstring).

    Parameters
    ----------
    volume : array-like, any shape
        Integers or floats; lazy arrays are read whole (use `intensity_range` + `apply_range` to
        stream).
    modality, window
        See `intensity_range`.

    Returns
    -------
    ndarray, uint8, same shape
        A numpy uint8 input with no ``window`` is returned as is (no copy).

    Examples
    --------
    >>> normalize(np.array([-1000.0, 0.0, 40.0, 1000.0]), modality="ct").tolist()
    [0, 102, 128, 255]
    """
    lo, hi = intensity_range(volume, modality, window)
    if window is None and isinstance(volume, np.ndarray) and volume.dtype == np.uint8:
        return volume
    return apply_range(volume, lo, hi)
