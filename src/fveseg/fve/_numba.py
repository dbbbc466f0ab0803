"""Compiled (numba) kernels for `fveseg.fve.encoding`: one pass over the output, bit-identical to numpy.

numba is optional. If it is missing or fails to import, `AVAILABLE` is False and `fveseg.fve.encoding` uses
its
numpy path; ``FVESEG_NO_NUMBA=1`` in the environment forces the numpy path too (read on every call,
so benchmarks and tests can compare both in one process). Kernels are compiled on first use and
cached on disk (``cache=True``), so later processes skip most of the compile time.

Filling: each context channel follows the recursive layout of `fveseg.fve.encoding.layout` (docs/fve.md): at
depth l an even row alternates the level-l slices at distances 3(l-1)+1 and 3(l-1)+2, an odd row
alternates distance 3(l-1)+3 with a row of the packing of levels l+1 .. k-1 (at the last level, the
final slice 3k-2). Those packings are built from the deepest level up, one slice's plane at a time in
a cache-sized scratch buffer, with contiguous row interleaves that compile to vector code, so every
output byte is written once. Values are only moved, so the kernels work on unsigned views of 1-, 2-,
4- and 8-byte items (any dtype of those sizes, any byte order).

Halving: the 2x2 area mean of `fveseg.fve.encoding._halve` ("mean"): integers summed in a wider type and
rounded
half to even, floats as ``((a + b) + (c + d)) * 0.25`` in their own type, a partial border block (odd
height or width) using the edge pixel twice, like the edge padding of the numpy path.
"""

from __future__ import annotations

import os

import numpy as np

try:  # optional: any failure (missing, or built against another numpy) means the numpy path
    import numba

    AVAILABLE = True
except Exception:  # noqa: BLE001 - numba import errors vary (ImportError, SystemError, ...)
    numba = None
    AVAILABLE = False

MAX_ORDER = 8  # the level tuple is padded to this length: one compiled kernel per item size
_HALVE_KINDS = {"u1", "u2", "i1", "i2", "u4", "i4", "f4", "f8"}


def _jit(function=None, **options):
    if function is None:
        return lambda f: _jit(f, **options)
    return numba.njit(cache=True, nogil=True, **options)(function) if AVAILABLE else function


def enabled() -> bool:
    """Whether the compiled path is used: numba imported and ``FVESEG_NO_NUMBA`` is not set to 1."""
    return AVAILABLE and os.environ.get("FVESEG_NO_NUMBA", "").strip() not in ("1", "true", "yes")


def fill_applies(dtype: np.dtype, order: int) -> bool:
    """Whether `fill` handles this dtype (1-, 2-, 4- or 8-byte items) and order (1 .. MAX_ORDER)."""
    return enabled() and 1 <= order <= MAX_ORDER and np.dtype(dtype).itemsize in (1, 2, 4, 8)


def halve_applies(dtype: np.dtype) -> bool:
    """Whether `halve` handles this dtype (8-, 16-, 32-bit integers, float32, float64)."""
    dtype = np.dtype(dtype)
    return enabled() and f"{dtype.kind}{dtype.itemsize}" in _HALVE_KINDS and dtype.isnative


@_jit
def _interleave(out, count, even, odd):
    """``out[:count]`` = even[0], odd[0], even[1], odd[1], ... (count may be odd)."""
    half = count // 2
    for m in range(half):
        out[2 * m] = even[m]
        out[2 * m + 1] = odd[m]
    if count & 1:
        out[count - 1] = even[half]


@_jit
def _copy(out, source):
    """``out[:] = source[:len(out)]`` as a loop: compiles to a vectorised copy (slice assignment did not)."""
    for x in range(out.shape[0]):
        out[x] = source[x]


@_jit
def _mix(out, even_left, even_right, odd_left, odd_right):
    """Rows of ``out`` (h, w) alternate ``even_left[i // 2], even_right[i // 2]`` (even rows i) and
    ``odd_left[i // 2], odd_right[i // 2]`` (odd rows): the 2 x 2 corners (0,0), (0,1), (1,0), (1,1)."""
    height, width = out.shape
    for i in range(height):
        if i & 1:
            _interleave(out[i], width, odd_left[i >> 1], odd_right[i >> 1])
        else:
            _interleave(out[i], width, even_left[i >> 1], even_right[i >> 1])


@_jit
def _fill_side(out, levels, indices, order, spare):
    """Pack one side into ``out`` (H, W); ``indices[d - 1]`` is the slab slice at distance d.

    The packing of levels l .. k-1 (``H >> (l-1)`` x ``W >> (l-1)``) is built from the deepest level up,
    each in one of the two flat ``spare`` buffers (2, H * W // 4): whole planes stay in the CPU cache.
    """
    height, width = out.shape
    if order == 1:
        source = levels[0][indices[0]]
        for i in range(height):
            _copy(out[i], source[i])
        return
    corner = levels[order - 1][indices[3 * order - 3]]  # the final slice
    for level in range(order - 1, 0, -1):
        rows, cols = height >> (level - 1), width >> (level - 1)
        target = out if level == 1 else spare[level & 1, : rows * cols].reshape((rows, cols))
        source, first = levels[level], 3 * (level - 1)
        _mix(target, source[indices[first]], source[indices[first + 1]], source[indices[first + 2]], corner)
        corner = target


@_jit
def _fill_channels_first(planes, levels, focal, before, after, order):
    count, _, height, width = planes.shape
    spare = np.empty((2, (height // 2) * (width // 2)), dtype=planes.dtype)
    level0 = levels[0]
    for b in range(count):
        source, target = level0[focal[b]], planes[b, 0]
        for y in range(height):
            _copy(target[y], source[y])
        _fill_side(planes[b, 1], levels, before[b], order, spare)
        _fill_side(planes[b, 2], levels, after[b], order, spare)


@_jit
def _fill_channels_last(out, levels, focal, before, after, order):
    count, height, width, _ = out.shape
    spare = np.empty((2, (height // 2) * (width // 2)), dtype=out.dtype)
    sides = np.empty((2, height, width), dtype=out.dtype)
    level0 = levels[0]
    for b in range(count):
        if order == 1:  # the sides are whole slices: interleave straight from the slab, no copies
            before_slice, after_slice = level0[before[b, 0]], level0[after[b, 0]]
        else:
            _fill_side(sides[0], levels, before[b], order, spare)
            _fill_side(sides[1], levels, after[b], order, spare)
            before_slice, after_slice = sides[0], sides[1]
        focal_slice = level0[focal[b]]
        for y in range(height):
            focal_row, first, second = focal_slice[y], before_slice[y], after_slice[y]
            pixels = out[b, y].reshape(3 * width)  # flat: the three stores form one interleaved group
            for x in range(width):
                pixels[3 * x] = focal_row[x]
                pixels[3 * x + 1] = first[x]
                pixels[3 * x + 2] = second[x]


def fill(
    out: np.ndarray,
    levels: list[np.ndarray],
    focal: np.ndarray,
    before: np.ndarray,
    after: np.ndarray,
    order: int,
    channels_first: bool,
) -> None:
    """Fill an encoded batch in one pass over it.

    Parameters
    ----------
    out : ndarray (B, 3, H, W) if ``channels_first`` else (B, H, W, 3), C-contiguous
        Destination, the levels' dtype.
    levels : list of ndarray
        Pyramid levels 0 .. order-1 of the slab, level l shaped (S, ceil(H / 2**l), ceil(W / 2**l)).
    focal : int ndarray (B,)
        Slab index of each focal slice.
    before, after : int ndarray (B, N)
        Slab index of each side's context slice, column d - 1 for distance d
        (`fveseg.fve.encoding.context_indices`).
    order : int
        Fractal order k, 1 .. `MAX_ORDER`.
    channels_first : bool
        Layout of ``out``.
    """
    unsigned = np.dtype(f"u{out.itemsize}")
    # same dtype as ``out`` first: a level may differ in byte order (np.concatenate returns native order)
    stacks = [np.ascontiguousarray(level, dtype=out.dtype).view(unsigned) for level in levels]
    stacks += [stacks[0]] * (MAX_ORDER - len(stacks))  # one tuple type for every order
    kernel = _fill_channels_first if channels_first else _fill_channels_last
    kernel(
        out.view(unsigned),
        tuple(stacks),
        np.ascontiguousarray(focal, dtype=np.int64),
        np.ascontiguousarray(before, dtype=np.int64),
        np.ascontiguousarray(after, dtype=np.int64),
        order,
    )


@_jit
def _round_int(total):
    return (total + 1 + ((total >> 2) & 1)) >> 2  # total / 4, half to even


@_jit
def _round_float(total):
    return total * 0.25


@_jit
def _halve_rows(stack, out, zero, rounding):
    """2x2 mean; ``zero`` sets the accumulator type, ``rounding`` turns a 2x2 sum into the mean."""
    count, height, width = stack.shape
    pairs = width // 2
    for s in range(count):
        for i in range(out.shape[1]):
            top, bottom, row = stack[s, 2 * i], stack[s, min(2 * i + 1, height - 1)], out[s, i]
            for j in range(pairs):
                total = (zero + top[2 * j] + top[2 * j + 1]) + (zero + bottom[2 * j] + bottom[2 * j + 1])
                row[j] = rounding(total)
            if out.shape[2] > pairs:  # odd width: the edge pixel counts twice, as with edge padding
                edge = width - 1
                total = (zero + top[edge] + top[edge]) + (zero + bottom[edge] + bottom[edge])
                row[pairs] = rounding(total)


def halve(stack: np.ndarray) -> np.ndarray:
    """2x2 area mean of (S, h, w) to (S, ceil(h / 2), ceil(w / 2)), equal to ``fve._halve(stack, "mean")``."""
    stack = np.ascontiguousarray(stack)
    count, height, width = stack.shape
    out = np.empty((count, -(-height // 2), -(-width // 2)), dtype=stack.dtype)
    if stack.dtype.kind == "f":  # -0.0 is the exact additive identity (keeps the sign of -0.0 sums)
        _halve_rows(stack, out, stack.dtype.type(-0.0), _round_float)
    else:
        _halve_rows(stack, out, np.int32(0) if stack.dtype.itemsize <= 2 else np.int64(0), _round_int)
    return out
