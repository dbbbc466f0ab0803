"""Isotropic resampling along z: the network sees slices whose 3D context spans the same physical
distance whatever the microscope's z step, and its outputs come back on the volume's own grid.

A confocal stack with a z step 2-4 times its pixel size puts a nucleus on 3-10 slices instead of 20-30;
its FVE context (`fveseg.fve`) then reaches into the neighbouring nuclei, and the caps of a nucleus
look like separate dim objects. Resampling z to the in-plane pixel size before the network and
sampling its outputs back at the original slice positions removes that difference.

Coordinates: original slice ``i`` lies at resampled position ``i * factor`` (``factor = dz / dxy``), so
the first and last slices coincide and ``round((D - 1) * factor) + 1`` slices are made. Both directions
interpolate linearly between the two nearest slices (vectorised over slices; no loop over voxels).
"""

from __future__ import annotations

import numpy as np

from fveseg.inference.gate import SegmentationResult

#: Spacing ratios within this relative tolerance of 1 count as isotropic (no resampling).
ISOTROPIC_TOLERANCE = 0.01


def z_factor(spacing: tuple[float, float, float] | None) -> float | None:
    """``dz / min(dy, dx)``, or None when the spacing is unknown or already isotropic along z."""
    if spacing is None or len(spacing) != 3:
        return None
    dz, dy, dx = (float(s) for s in spacing)
    if not all(np.isfinite((dz, dy, dx))) or min(dz, dy, dx) <= 0:
        return None
    factor = dz / min(dy, dx)
    return None if abs(factor - 1.0) <= ISOTROPIC_TOLERANCE else factor


def _weights(positions: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lower index, upper index and upper weight of linear interpolation at ``positions`` on 0..size-1."""
    positions = np.clip(positions, 0, size - 1)
    lower = np.floor(positions).astype(np.intp)
    upper = np.minimum(lower + 1, size - 1)
    return lower, upper, (positions - lower).astype(np.float32)


def _interpolate(array: np.ndarray, positions: np.ndarray, axis: int) -> np.ndarray:
    """``array`` sampled at fractional ``positions`` along ``axis`` (linear), float32."""
    lower, upper, weight = _weights(positions, array.shape[axis])
    shape = [1] * array.ndim
    shape[axis] = -1
    weight = weight.reshape(shape)
    low = np.take(array, lower, axis=axis).astype(np.float32)
    high = np.take(array, upper, axis=axis).astype(np.float32)
    return low + (high - low) * weight


def resample_z(volume: np.ndarray, factor: float) -> np.ndarray:
    """A (D, H, W) volume resampled along z by ``factor`` (> 1 adds slices), linearly.

    Returns (round((D - 1) * factor) + 1, H, W) in the volume's dtype (integers rounded; float32 for
    floats), so memory grows by the factor only; original slice i lies at position i * factor.
    """
    volume = np.asarray(volume)
    depth = volume.shape[0]
    new_depth = max(1, int(round((depth - 1) * factor)) + 1)
    resampled = _interpolate(volume, np.arange(new_depth) / factor, axis=0)
    if np.issubdtype(volume.dtype, np.integer) or volume.dtype == bool:
        return np.rint(resampled).astype(volume.dtype)
    return resampled


def result_on_grid(result: SegmentationResult, depth: int, factor: float) -> SegmentationResult:
    """A result computed on the z-resampled volume, sampled back at the ``depth`` original slices.

    Probabilities, edges and (when slicing along z) existence are interpolated linearly; the semantic
    labels are taken from the nearest resampled slice, so they keep the gate's decisions.
    """
    positions = np.arange(depth) * factor
    nearest = np.clip(np.rint(positions).astype(np.intp), 0, result.semantic.shape[0] - 1)
    existence = result.existence
    if result.axis == 0:
        existence = _interpolate(np.asarray(existence), positions, axis=1)
    return SegmentationResult(
        probabilities=_interpolate(np.asarray(result.probabilities), positions, axis=1).astype(np.float16),
        edges=_interpolate(np.asarray(result.edges), positions, axis=1).astype(np.float16),
        existence=np.asarray(existence, dtype=np.float32),
        semantic=np.take(np.asarray(result.semantic), nearest, axis=0),
        prompts=result.prompts,
        axis=result.axis,
        start=0,
        scale=result.scale,
        model=result.model,
        noise=result.noise,
    )
