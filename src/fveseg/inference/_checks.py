"""Input checks of `fveseg.inference.Segmenter.segment`: each raises `InputError` naming the problem and
the fix, and returns the value in the form the Segmenter uses."""

from __future__ import annotations

import math

import numpy as np

from fveseg.errors import InputError
from fveseg.model.text_encoder import normalize_prompt


def check_prompts(prompts) -> list[str]:
    """A prompt or list of prompts -> their canonical forms (`normalize_prompt`), none repeated."""
    if isinstance(prompts, str):
        prompts = [prompts]
    prompts = list(prompts) if prompts is not None else []
    if not prompts:
        raise InputError("No prompts given; pass at least one target name, e.g. ['nuclei'].")
    canonical = [normalize_prompt(p) for p in prompts]
    if len(set(canonical)) != len(canonical):
        raise InputError(f"Prompts {prompts} repeat a target (case and spaces are ignored); give each once.")
    return canonical


def check_volume(volume, check_finite: bool = True):
    """A (D, H, W) numeric array (2D becomes one slice; numpy, zarr and dask stay lazy). With
    ``check_finite``, float volumes are refused when a sample of slices holds no finite value."""
    if not hasattr(volume, "shape") or not hasattr(volume, "dtype"):
        volume = np.asarray(volume)
    if len(volume.shape) == 2:
        volume = np.asarray(volume)[None]
    if len(volume.shape) != 3:
        raise InputError(
            f"Expected a 3D volume (z, y, x), got shape {tuple(volume.shape)}; pick one "
            "channel/time point of 4D data first."
        )
    if min(volume.shape) == 0:
        raise InputError(f"The volume {tuple(volume.shape)} is empty.")
    kind = np.dtype(volume.dtype).kind
    if kind not in "uif":
        raise InputError(f"Volume dtype {volume.dtype} is not numeric; convert it to integers or floats.")
    if kind == "f" and check_finite:
        picks = np.unique(np.linspace(0, volume.shape[0] - 1, min(volume.shape[0], 16)).astype(int))
        step = max(1, max(volume.shape[1:]) // 256)
        sample = np.stack([np.asarray(volume[int(z), ::step, ::step]) for z in picks])
        if not np.isfinite(sample).any() and not np.isfinite(np.asarray(volume)).any():
            raise InputError("The volume holds no finite values (all NaN/inf); check the file or channel.")
    return volume


def check_slices(start, stop, depth: int) -> tuple[int, int]:
    """Integer slice range ``0 <= start < stop <= depth`` (None: the whole depth)."""
    start, stop = 0 if start is None else start, depth if stop is None else stop
    for name, value in (("start", start), ("stop", stop)):
        if not isinstance(value, int | np.integer) or isinstance(value, bool):
            raise InputError(f"{name} must be an integer slice index, got {value!r}.")
    if not 0 <= start < stop <= depth:
        raise InputError(
            f"Slice range start={start}, stop={stop} is outside the {depth} slices along the view axis; "
            f"need 0 <= start < stop <= {depth}."
        )
    return int(start), int(stop)


def check_intensity_range(value) -> tuple[float, float]:
    """A pair of finite numbers ``lo <= hi``."""
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise InputError(f"intensity_range must be a pair (lo, hi) of numbers, got {value!r}.") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
        raise InputError(f"intensity_range needs finite lo <= hi, got {value!r}.")
    return lo, hi
