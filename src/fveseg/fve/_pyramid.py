"""Downsampling pyramid of a slab of slices for `fveseg.fve.encoding`: each level half the previous one's
size.

Level 0 is the slab as read; level l is level l - 1 halved in y and x to (ceil(h / 2), ceil(w / 2)).
"mean" is the 2x2 area mean: a level with an odd height or width is edge-padded by one pixel first, so a
partial border block averages the pixels it has; integer means are summed exactly in a wider integer
type and rounded half to even (as ``np.round``); floats stay float (float16 summed in float32). "stride"
keeps the top-left pixel of each 2x2 block. When numba is usable, `fveseg.fve._numba` halves in one
pass with bit-identical results (`compiled`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

WIDER = {1: 2, 2: 4, 4: 8}  # itemsize -> itemsize that holds the sum of four values
CHUNK_PIXELS = 1 << 18  # pixels halved per step: keeps the uint16 temporaries in the CPU cache


def wider(dtype: np.dtype) -> np.dtype:
    """The integer dtype of the same kind that holds the sum of four ``dtype`` values exactly."""
    return np.dtype(f"{dtype.kind}{WIDER[dtype.itemsize]}")


def compiled():
    """`fveseg.fve._numba` when its kernels are usable (imported on first use: numba is optional)."""
    import fveseg.fve._numba as _fve_numba

    return _fve_numba if _fve_numba.enabled() else None


def halve_uint8(stack: np.ndarray, chunk_pixels: int = CHUNK_PIXELS) -> np.ndarray:
    """2x2 mean of a C-contiguous uint8 (S, h, w) stack with h, w even, rounded half to even.

    Works on chunks of about ``chunk_pixels`` pixels so every temporary stays in the CPU cache, and
    sums horizontal pixel pairs through a uint16 view (low byte + high byte: one contiguous pass,
    independent of byte order) instead of reading every other byte.

    Returns
    -------
    ndarray (S, h / 2, w / 2) uint8
    """
    count, height, width = stack.shape
    out = np.empty((count, height // 2, width // 2), dtype=np.uint8)
    step = max(1, chunk_pixels // max(height * width, 1))
    pairs = stack.view(np.uint16)  # (S, h, w/2): each item holds two horizontal neighbours
    columns = np.empty((min(step, count), height, width // 2), dtype=np.uint16)
    spare = np.empty_like(columns)
    for first in range(0, count, step):
        chunk = pairs[first : first + step]
        col, tmp = columns[: len(chunk)], spare[: len(chunk)]
        np.bitwise_and(chunk, 0xFF, out=col)
        np.right_shift(chunk, 8, out=tmp)
        col += tmp  # horizontal pair sums, <= 510
        total, odd = tmp[:, : height // 2], tmp[:, height // 2 :]
        np.add(col[:, 0::2], col[:, 1::2], out=total)  # 2x2 sums, <= 1020
        np.right_shift(total, 2, out=odd)  # round(total / 4), half to even: +1, +1 more if total // 4 is odd
        odd &= 1
        total += odd
        total += 1
        total >>= 2
        out[first : first + step] = total
    return out


def halve(
    stack: np.ndarray, mode: str, chunk_pixels: int = CHUNK_PIXELS, use_compiled: bool = True
) -> np.ndarray:
    """Downsample (S, h, w) by two in y and x; see the module docstring.

    Parameters
    ----------
    stack : ndarray (S, h, w)
        Integer or float slices.
    mode : {"mean", "stride"}
        2x2 area mean or top-left pixel of each 2x2 block.
    chunk_pixels : int
        Pixels per step of the uint8 numpy path (`halve_uint8`).
    use_compiled : bool
        Use the numba kernel where it applies (same result); False keeps to numpy.

    Returns
    -------
    ndarray (S, ceil(h / 2), ceil(w / 2)), the stack's dtype
    """
    if mode == "stride":
        return np.ascontiguousarray(stack[:, ::2, ::2])
    kernels = compiled() if use_compiled else None
    if kernels and kernels.halve_applies(stack.dtype):  # same result, one pass
        return kernels.halve(stack)
    h, w = stack.shape[1:]
    if h % 2 or w % 2:  # a partial border block averages its available pixels
        stack = np.pad(stack, ((0, 0), (0, h % 2), (0, w % 2)), mode="edge")
    dtype = stack.dtype
    if dtype == np.uint8:
        return halve_uint8(np.ascontiguousarray(stack), chunk_pixels)
    q00, q01 = stack[:, 0::2, 0::2], stack[:, 0::2, 1::2]
    q10, q11 = stack[:, 1::2, 0::2], stack[:, 1::2, 1::2]
    if dtype.kind == "f":
        work = np.float32 if dtype.itemsize < 4 else dtype
        total = q00.astype(work) + q01  # pairwise sums keep a constant block exact
        total += q10.astype(work) + q11
        total *= 0.25
        return total.astype(dtype, copy=False)
    if dtype.itemsize in WIDER:  # exact sum in a wider integer; add row pairs first (contiguous reads)
        row_pairs = stack.reshape(stack.shape[0], stack.shape[1] // 2, 2, stack.shape[2])
        rows = np.add(row_pairs[:, :, 0], row_pairs[:, :, 1], dtype=wider(dtype))
        total = np.add(rows[..., 0::2], rows[..., 1::2])
        odd = (total >> 2) & 1  # in place: round(total / 4) half to even
        total += 1
        total += odd
        total >>= 2
        return total.astype(dtype)
    # 64-bit: sum quarters and remainders separately so nothing overflows
    quotient = (q00 >> 2) + (q01 >> 2) + (q10 >> 2) + (q11 >> 2)
    remainder = (q00 & 3) + (q01 & 3) + (q10 & 3) + (q11 & 3)
    odd = (quotient + (remainder >> 2)) & 1
    return (quotient + ((remainder + 1 + odd) >> 2)).astype(dtype)


def slab_levels(
    volume: Any,
    axis: int,
    first: int,
    stop: int,
    order: int,
    mode: str,
    cache: dict | None,
    chunk_pixels: int = CHUNK_PIXELS,
    use_compiled: bool = True,
) -> list[np.ndarray]:
    """Pyramid levels 0 .. order-1 of slices [first, stop), each level built from the previous one.

    Level 0 is read from ``volume`` (moved so the slices lie along axis 0). Levels >= 1 of slices
    already in ``cache`` (the previous batch's slab, which overlaps this one by up to 2N slices) are
    reused, so across `fveseg.fve.encoding.encode_volume` every slice is downsampled once per level.

    Parameters
    ----------
    volume : array-like (D0, D1, D2)
        numpy, zarr or dask array; only the slab is read.
    axis : int
        Slicing axis.
    first, stop : int
        Slab [first, stop) along ``axis``.
    order : int
        FVE order k: levels 0 .. k-1 are built (only level 0 for k <= 1).
    mode : {"mean", "stride"}
        Downsampling (`halve`).
    cache : dict or None
        Updated in place with ``first``, ``stop`` and ``levels`` (levels >= 1) for the next call.
    chunk_pixels, use_compiled
        Passed to `halve`.

    Returns
    -------
    list of ndarrays (stop - first, ceil(H / 2**l), ceil(W / 2**l)), the volume's dtype
    """
    take: list[Any] = [slice(None)] * 3
    take[axis] = slice(first, stop)
    slab = np.ascontiguousarray(np.moveaxis(np.asarray(volume[tuple(take)]), axis, 0))
    if order <= 1:
        return [slab]
    reused, new_from = None, first
    if cache and cache["first"] <= first < cache["stop"]:
        new_from = min(stop, cache["stop"])
        reused = [level[first - cache["first"] : new_from - cache["first"]] for level in cache["levels"]]
    levels = [slab]
    if new_from < stop:
        current = slab[new_from - first :]
        for level in range(1, order):
            current = halve(current, mode, chunk_pixels, use_compiled)
            levels.append(current if reused is None else np.concatenate([reused[level - 1], current]))
    else:
        levels += reused
    if cache is not None:
        cache.update(first=first, stop=stop, levels=levels[1:])
    return levels
