"""Fast ``pixel_mix`` into channel planes: two horizontal neighbours written as one machine word.

`fveseg.fve.encoding` fills a context channel with one strided write per stored slice (every 2nd, 4th, ...
pixel of every 2nd, 4th, ... row). Strided byte writes are the slowest thing numpy does. The layout
is recursive (three slices of level l+1 at the (0, 0), (0, 1), (1, 0) corners of each 2 x 2 block, the
rest of the side packed the same way into the (1, 1) corners), so a channel plane can instead be
built from row pairs: for even rows the word ``left | right << bits`` of two neighbouring pixels,
written with contiguous, vectorised integer ops. Exact: values are moved, never computed.

Used for (B, 3, H, W) output at order >= 2 when H and W are multiples of 2**(k-1), the items are
1, 2 or 4 bytes and the machine is little-endian; `fveseg.fve.encoding` falls back to its general path
otherwise.
"""

from __future__ import annotations

import sys

import numpy as np

_BLOCK_BYTES = 1 << 21  # bytes of one channel plane per block: temporaries stay in the CPU cache
_UNSIGNED = {1: np.dtype("<u1"), 2: np.dtype("<u2"), 4: np.dtype("<u4")}
_PAIR = {1: np.dtype("<u2"), 2: np.dtype("<u4"), 4: np.dtype("<u8")}


def gather(stack: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """``stack[indices]``, as a view (no copy) when the indices are a run of consecutive slices."""
    first, count = int(indices[0]), len(indices)
    if count == 1 or (int(indices[-1]) - first == count - 1 and bool((np.diff(indices) == 1).all())):
        return stack[first : first + count]
    return stack[indices]


def pairs_apply(dtype: np.dtype, height: int, width: int, order: int) -> bool:
    """Whether the pair-word path applies: order >= 2 (order 1 has no mixing: whole-plane copies in
    `fveseg.fve.encoding`'s blocked path measured faster), 1-, 2- or 4-byte items, sizes multiples of
    2**(k-1)."""
    if order < 2:
        return False
    unit = 2 ** (order - 1)
    return (
        sys.byteorder == "little" and dtype.itemsize in _UNSIGNED and height % unit == 0 and width % unit == 0
    )


def _mix_2x2(out: np.ndarray, quads: list[np.ndarray]) -> None:
    """Interleave four (B, h/2, w/2) planes into ``out`` (B, h, w): corners (0,0), (0,1), (1,0), (1,1)."""
    size = out.dtype.itemsize
    words = out.view(_PAIR[size])  # (B, h, w/2): one word per horizontal pixel pair
    pair = np.empty(quads[0].shape, dtype=_PAIR[size])  # contiguous: in-place ops on it stay fast
    for row, (left, right) in enumerate((quads[:2], quads[2:])):
        pair[...] = right.view(_UNSIGNED[size])
        pair <<= 8 * size
        pair |= left.view(_UNSIGNED[size])
        words[:, row::2] = pair


def fill_side(out: np.ndarray, level_stacks: list[np.ndarray], order: int) -> None:
    """Pack one side's context slices into ``out`` (B, h, w), rows contiguous, same dtype as the stacks.

    Parameters
    ----------
    out : ndarray (B, h, w)
        Destination plane (a view into the (B, 3, H, W) batch is fine).
    level_stacks : list of ndarray
        ``level_stacks[d - 1]`` is the (B, h / 2**l, w / 2**l) stack of the slices at distance d, at
        the pyramid level l the layout gives that distance.
    order : int
        Fractal order k >= 1 of what is left to pack (the recursion lowers it by one per level).
    """
    if order == 1:
        out[...] = level_stacks[0]
        return
    if order == 2:  # the last level's fourth slice is the (1, 1) corner itself
        _mix_2x2(out, level_stacks[:4])
        return
    corner = np.empty((out.shape[0], out.shape[1] // 2, out.shape[2] // 2), dtype=out.dtype)
    fill_side(corner, level_stacks[3:], order - 1)  # the (1, 1) corners: the rest, one level down
    _mix_2x2(out, [*level_stacks[:3], corner])


def fill_planes(
    planes: np.ndarray, levels: list[np.ndarray], focal: np.ndarray, sides: list[np.ndarray], placements: list
) -> None:
    """Fill a (B, 3, H, W) batch: channel 0 the focal slices, channels 1 and 2 the two sides.

    Blocks of whole slices (about `_BLOCK_BYTES` per plane) are done one at a time so that the
    temporaries stay in the CPU cache.

    Parameters
    ----------
    planes : ndarray (B, 3, H, W)
        Output, dtype of the levels.
    levels : list of ndarray
        Pyramid levels 0 .. k-1 of the slab, level l shaped (S, H / 2**l, W / 2**l).
    focal : ndarray (B,) of int
        Slab index of each focal slice.
    sides : list of two ndarray (B, N)
        Slab index of each context slice (column d - 1: distance d), preceding then following side.
    placements : list of Placement
        `fveseg.fve.encoding.layout` of the order.
    """
    height, width = planes.shape[2:]
    group = max(1, _BLOCK_BYTES // (height * width * planes.itemsize))
    for b0 in range(0, len(focal), group):
        block = slice(b0, b0 + group)
        planes[block, 0] = gather(levels[0], focal[block])
        for channel, indices in enumerate(sides, start=1):
            stacks = [gather(levels[p.level], indices[block, p.distance - 1]) for p in placements]
            fill_side(planes[block, channel], stacks, len(levels))
