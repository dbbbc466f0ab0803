"""Fractal Volumetric Encoding (FVE): a 3D neighbourhood packed into one RGB image (paper section 3.2).

Channel 0 holds the focal slice at full resolution. Channel 1 holds the preceding side (slices
``index - 1, index - 2, ...``), channel 2 the following side (``index + 1, ...``). Each side packs
N(k) = 3k - 2 slices with the paper's ``pixel_mix``: at order k, distances 1-3 sit at 1/2 resolution,
4-6 at 1/4, ..., and the last level (k - 1) holds 4 slices. Order 1 stores distance 1 at full
resolution (the public reference implementation); order 0 repeats the focal slice in all channels.

Position of each context slice inside a channel (``s = 2**level`` is the stride of its pixel grid)::

    level l (1 .. k-1), base b = 2**(l-1) - 1, half h = 2**(l-1):
        distance 3(l-1)+1 at (b, b), 3(l-1)+2 at (b, b+h), 3(l-1)+3 at (b+h, b)
    distance 3k-2 at (2**(k-1) - 1, 2**(k-1) - 1), level k-1

Sizes that are not multiples of 2**(k-1): each pyramid level has size ceil(previous / 2); a level
with an odd height or width is edge-padded by one pixel before halving, so a partial border block
averages the pixels it has. ``pixel_mix`` output is cropped to H x W, so a level's pixels whose
position falls outside the image are not stored (`DecodedFVE.stored_shapes` tells which are).

Integer means are rounded half to even (as ``np.round``) in a wider integer type; floats stay float.
See ``docs/fve.md``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

import fveseg.fve._pyramid as _pyramid
from fveseg.errors import InputError
from fveseg.fve._pixel_pairs import fill_planes, gather, pairs_apply
from fveseg.fve._pyramid import compiled as _compiled

PAD_MODES = ("edge", "reflect")
DOWNSAMPLE_MODES = ("mean", "stride")
_CHUNK_PIXELS = _pyramid.CHUNK_PIXELS  # pixels halved per step of the uint8 numpy path (_pyramid)
_BLOCK_BYTES = 1 << 20  # encoded bytes written per block (see _encode_batch)


class Placement(NamedTuple):
    """Where the context slice at ``distance`` lives in a context channel: pixels
    ``[row::2**level, col::2**level]`` hold that slice downsampled ``level`` times."""

    distance: int
    level: int
    row: int
    col: int


@dataclass
class DecodedFVE:
    """Slices recovered from an encoded image.

    ``focal`` is (H, W). ``before[j]`` / ``after[j]`` is the slice at distance j + 1, shape
    (ceil(H / 2**level), ceil(W / 2**level)) or (H, W) when upsampled. ``stored_shapes[j]`` is the
    top-left (rows, cols) block of that slice actually stored; pixels beyond it (odd sizes only) are
    filled by repeating the nearest stored pixel.
    """

    focal: np.ndarray
    before: list[np.ndarray] = field(default_factory=list)
    after: list[np.ndarray] = field(default_factory=list)
    stored_shapes: list[tuple[int, int]] = field(default_factory=list)


def _check_order(order: Any) -> int:
    if isinstance(order, bool) or not isinstance(order, int | np.integer) or order < 0:
        raise InputError(f"order must be an integer >= 0, got {order!r}; use 1 (CT) or 2 (MRI).")
    return int(order)


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise InputError(f"{name}={value!r} is not supported; use one of {', '.join(map(repr, choices))}.")


def slices_per_side(order: int) -> int:
    """Number of context slices packed into each side channel: N(k) = 3k - 2 (0 for order 0)."""
    order = _check_order(order)
    return 0 if order == 0 else 3 * order - 2


def layout(order: int) -> list[Placement]:
    """Placement of every context distance 1 .. N(k) in a context channel (see the module docstring)."""
    order = _check_order(order)
    if order == 0:
        return []
    if order == 1:
        return [Placement(1, 0, 0, 0)]
    places, distance = [], 1
    for level in range(1, order):
        base, half = 2 ** (level - 1) - 1, 2 ** (level - 1)
        for dr, dc in ((0, 0), (0, half), (half, 0)):
            places.append(Placement(distance, level, base + dr, base + dc))
            distance += 1
    last = 2 ** (order - 1) - 1
    places.append(Placement(distance, order - 1, last, last))
    return places


def context_indices(index: int | np.ndarray, depth: int, order: int, pad: str = "edge"):
    """Slice indices of each side's context, ordered by distance.

    Parameters
    ----------
    index : int or int array (B,)
        Focal slice index (or indices) in ``[0, depth)``.
    depth : int
        Number of slices along the slicing axis.
    order : int
        Encoding order k; each side gets N(k) = 3k - 2 indices.
    pad : {"edge", "reflect"}
        "edge" clamps to the nearest existing slice (the paper); "reflect" mirrors without repeating
        the end slice (-1 -> 1, depth -> depth - 2); a one-slice volume repeats slice 0.

    Returns
    -------
    before, after : int64 arrays (N,) or (B, N)
        ``before[..., j]`` is the slice used for ``index - (j + 1)``, ``after`` for ``index + j + 1``.
    """
    _check_choice("pad", pad, PAD_MODES)
    n = slices_per_side(order)
    focal = np.asarray(index, dtype=np.int64)
    offsets = np.arange(1, n + 1, dtype=np.int64)
    raw_before, raw_after = focal[..., None] - offsets, focal[..., None] + offsets
    if pad == "edge":
        return np.clip(raw_before, 0, depth - 1), np.clip(raw_after, 0, depth - 1)
    if depth == 1:
        return np.zeros_like(raw_before), np.zeros_like(raw_after)
    period = 2 * (depth - 1)

    def reflect(raw: np.ndarray) -> np.ndarray:
        folded = np.mod(raw, period)
        return np.where(folded < depth, folded, period - folded)

    return reflect(raw_before), reflect(raw_after)


def _halve(stack: np.ndarray, mode: str) -> np.ndarray:
    """Downsample (S, h, w) by two in y and x to (S, ceil(h/2), ceil(w/2)); see the module docstring."""
    return _pyramid.halve(stack, mode, _CHUNK_PIXELS)  # read at call time: tests shrink it


def _check_volume(volume: Any, axis: int) -> tuple[tuple[int, ...], int]:
    shape = tuple(int(s) for s in getattr(volume, "shape", ()))
    if len(shape) != 3:
        raise InputError(f"expected a 3D volume (z, y, x), got shape {shape}; add an axis for one slice.")
    dtype = np.dtype(volume.dtype)
    if dtype.kind not in "uif":
        raise InputError(f"volume dtype {dtype} is not a real number type; convert it to integers or floats.")
    if not isinstance(axis, int | np.integer) or not -3 <= axis < 3:
        raise InputError(f"axis must be 0, 1 or 2, got {axis!r}.")
    if min(shape) == 0:
        raise InputError(f"volume shape {shape} is empty; give a volume with at least one voxel.")
    return shape, int(axis) % 3


_FOCAL_PLACE = (Placement(1, 0, 0, 0),)  # channel 0: column 0 of its (B, 1) indices, full resolution


def _encode_batch(
    volume: Any,
    axis: int,
    focal: np.ndarray,
    order: int,
    pad: str,
    mode: str,
    cache: dict | None = None,
    channels_first: bool = False,
    use_compiled: bool = True,
) -> np.ndarray:
    """Encode focal slices ``focal`` (B,) reading only the slab of slices they use."""
    depth = volume.shape[axis]
    before, after = context_indices(focal, depth, order, pad)
    first = int(min(focal.min(), before.min(initial=depth)))
    last = int(max(focal.max(), after.max(initial=-1)))
    levels = _pyramid.slab_levels(
        volume, axis, first, last + 1, order, mode, cache, _CHUNK_PIXELS, use_compiled
    )
    slab = levels[0]
    height, width = slab.shape[1:]
    if channels_first:  # write through a (B, H, W, 3) view of contiguous channel planes
        planes = np.empty((len(focal), 3, height, width), dtype=slab.dtype)
        out = planes.transpose(0, 2, 3, 1)
    else:
        out = planes = np.empty((len(focal), height, width, 3), dtype=slab.dtype)
    if order == 0:
        out[..., 0] = gather(slab, focal - first)
        out[..., 1] = out[..., 0]
        out[..., 2] = out[..., 0]
        return planes
    compiled = _compiled() if use_compiled else None
    if compiled and compiled.fill_applies(slab.dtype, order):  # one pass over the output
        compiled.fill(planes, levels, focal - first, before - first, after - first, order, channels_first)
        return planes
    sources = ((0, focal[:, None] - first), (1, before - first), (2, after - first))
    places = layout(order)
    if channels_first and pairs_apply(slab.dtype, height, width, order):  # contiguous word writes
        fill_planes(planes, levels, focal - first, [before - first, after - first], layout(order))
        return planes
    # Fill the output one cache-sized block (whole slices, or row bands of one slice) at a time: all
    # 1 + 2 N strided writes into a block then hit the CPU cache instead of sweeping main memory.
    unit = 2 ** (order - 1)  # row bands start on a super-pixel boundary so every level aligns
    slice_bytes = height * width * 3 * slab.itemsize
    group = max(1, _BLOCK_BYTES // slice_bytes)
    band = height if group > 1 else max(unit, _BLOCK_BYTES // (3 * width * slab.itemsize) // unit * unit)
    for b0 in range(0, len(focal), group):
        for y0 in range(0, height, band):
            block = out[b0 : b0 + group, y0 : y0 + band]
            for channel, indices in sources:
                for place in places if channel else _FOCAL_PLACE:
                    step = 2**place.level
                    target = block[:, place.row :: step, place.col :: step, channel]
                    rows, cols = target.shape[1:]
                    stack = gather(levels[place.level], indices[b0 : b0 + group, place.distance - 1])
                    target[...] = stack[:, y0 // step : y0 // step + rows, :cols]
    return planes


def encode(
    volume: Any, index: int, order: int = 1, axis: int = 0, pad: str = "edge", downsample: str = "mean"
) -> np.ndarray:
    """Encode the neighbourhood of slice ``index`` as one 3-channel image.

    Parameters
    ----------
    volume : array-like (D0, D1, D2)
        numpy, zarr or dask array of integers or floats; only the slices used are read.
    index : int
        Focal slice index along ``axis``.
    order : int
        Fractal order k >= 0 (0: focal slice only, repeated in all channels).
    axis : int
        Slicing axis (0 = z, axial).
    pad : {"edge", "reflect"}
        Rule for context beyond the volume's ends (see `context_indices`).
    downsample : {"mean", "stride"}
        2x2 area mean (integers rounded half to even) or top-left pixel of each 2x2 block.

    Returns
    -------
    ndarray (H, W, 3), the volume's dtype
        H, W are the two remaining axes in order. Channel 0 focal, 1 preceding, 2 following.

    Examples
    --------
    >>> v = np.arange(3 * 2 * 2, dtype=np.uint8).reshape(3, 2, 2)
    >>> encode(v, 0, order=1, pad="reflect")[..., 2].tolist()
    [[4, 5], [6, 7]]
    """
    order = _check_order(order)
    _check_choice("pad", pad, PAD_MODES)
    _check_choice("downsample", downsample, DOWNSAMPLE_MODES)
    shape, axis = _check_volume(volume, axis)
    if isinstance(index, bool) or not isinstance(index, int | np.integer) or not 0 <= index < shape[axis]:
        raise InputError(f"index {index!r} is outside the {shape[axis]} slices along axis {axis}.")
    return _encode_batch(volume, axis, np.array([index]), order, pad, downsample)[0]


def encode_volume(
    volume: Any,
    order: int = 1,
    axis: int = 0,
    pad: str = "edge",
    downsample: str = "mean",
    start: int = 0,
    stop: int | None = None,
    batch_size: int = 16,
    channels_first: bool = False,
    use_compiled: bool = True,
) -> Iterator[tuple[int, np.ndarray]]:
    """Encode focal slices ``start .. stop-1`` in batches, streaming.

    Each batch reads only the slab ``[first - N, last + N]`` (clipped) from ``volume``, builds each
    pyramid level once for that slab and gathers every focal slice's context from it, so the result
    equals ``encode(volume, i, ...)`` for each i exactly while the whole volume is never in memory.

    ``channels_first=True`` yields (B, 3, H, W) instead (the layout a network takes), which is
    several times faster for uint8: it avoids interleaving the three channels byte by byte.

    ``use_compiled=False`` keeps to the numpy path, never importing numba: same result. Loading the
    cached numba kernels costs each new process about 0.5-0.9 s (compiling them, the first time, about
    2 s), while for (B, 3, H, W) batches numpy is within 10 % of them (docs/benchmarks.md), a few
    milliseconds per 60 × 512 × 512 stack.

    Yields
    ------
    first_index : int
        Index of the batch's first focal slice.
    batch : ndarray (B, H, W, 3), or (B, 3, H, W) with ``channels_first``; the volume's dtype
        B <= batch_size encoded images.
    """
    order = _check_order(order)
    _check_choice("pad", pad, PAD_MODES)
    _check_choice("downsample", downsample, DOWNSAMPLE_MODES)
    shape, axis = _check_volume(volume, axis)
    depth = shape[axis]
    stop = depth if stop is None else stop
    if not 0 <= start <= stop <= depth:
        raise InputError(f"need 0 <= start <= stop <= {depth}, got start={start}, stop={stop}.")
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}.")
    cache: dict = {}
    for first in range(start, stop, batch_size):
        focal = np.arange(first, min(first + batch_size, stop))
        yield (
            first,
            _encode_batch(volume, axis, focal, order, pad, downsample, cache, channels_first, use_compiled),
        )


def _upsample(image: np.ndarray, step: int, shape: tuple[int, int]) -> np.ndarray:
    grown = np.repeat(np.repeat(image, step, axis=0), step, axis=1)
    return grown[: shape[0], : shape[1]]


def decode(encoded: np.ndarray, order: int, upsample: bool = False) -> DecodedFVE:
    """Recover the focal slice and the stored context slices from an encoded image.

    Parameters
    ----------
    encoded : ndarray (H, W, 3)
        An image made by `encode` with the same ``order``.
    order : int
        The order used to encode.
    upsample : bool
        If True, every context slice is repeated up (nearest neighbour) to (H, W) for display.

    Returns
    -------
    DecodedFVE
        Bit-exact copies of the stored (downsampled) slices; see `DecodedFVE` for shapes.
    """
    order = _check_order(order)
    encoded = np.asarray(encoded)
    if encoded.ndim != 3 or encoded.shape[-1] != 3:
        raise InputError(f"expected an encoded image of shape (H, W, 3), got {encoded.shape}.")
    height, width = encoded.shape[:2]
    result = DecodedFVE(focal=encoded[..., 0].copy())
    for place in layout(order):
        step = 2**place.level
        full = (-(-height // step), -(-width // step))
        for channel, side in ((1, result.before), (2, result.after)):
            stored = encoded[place.row :: step, place.col :: step, channel]
            if stored.size == 0:  # image smaller than the super pixel: nothing of this slice stored
                image = np.zeros(full, dtype=encoded.dtype)
            else:
                pad_width = ((0, full[0] - stored.shape[0]), (0, full[1] - stored.shape[1]))
                image = np.pad(stored, pad_width, mode="edge")
            side.append(_upsample(image, step, (height, width)) if upsample else image)
        result.stored_shapes.append(tuple(int(n) for n in stored.shape))
    return result


def allocation_map(order: int, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Distance (in slices) of the voxel stored at each pixel of a context channel (paper Fig. 17).

    Returns
    -------
    distance_map : int64 ndarray (H, W)
        Values 1 .. N(k); all 0 for order 0 (context channels repeat the focal slice).
    shares : float64 ndarray (N,)
        Fraction of the channel's pixels holding each distance 1 .. N. For H, W multiples of
        2**(k-1): 1/4**level, e.g. order 3 gives 1/4 for distances 1-3 and 1/16 for 4-7.
    """
    order = _check_order(order)
    height, width = (int(s) for s in shape)
    distance_map = np.zeros((height, width), dtype=np.int64)
    for place in layout(order):
        step = 2**place.level
        distance_map[place.row :: step, place.col :: step] = place.distance
    counts = np.bincount(distance_map.ravel(), minlength=slices_per_side(order) + 1)[1:]
    return distance_map, counts / max(height * width, 1)


def select_view(shape: tuple[int, int, int], spacing: tuple[float, float, float] | None = None) -> int:
    """The paper's slicing view: axis 0 (axial) when its in-plane ratio 2|a - b| / (a + b) < 0.5,
    else the axis whose in-plane ratio is lowest (ties go to the lower axis).

    ``a, b`` are the two in-plane extents in voxels, or in physical units when ``spacing`` (per
    axis, same order as ``shape``) is given.
    """
    if len(shape) != 3 or min(shape) < 1:
        raise InputError(f"select_view needs a 3D shape of positive sizes, got {tuple(shape)}.")
    extents = np.asarray(shape, dtype=np.float64)
    if spacing is not None:
        if len(spacing) != 3 or min(spacing) <= 0:
            raise InputError(f"spacing must be three positive sizes, got {tuple(spacing)}.")
        extents = extents * np.asarray(spacing, dtype=np.float64)
    ratios = []
    for axis in range(3):
        a, b = np.delete(extents, axis)
        ratios.append(2 * abs(a - b) / (a + b))
    return 0 if ratios[0] < 0.5 else int(np.argmin(ratios))
