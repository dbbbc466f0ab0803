"""Background flattening: remove what is smooth along a line much longer than a nucleus.

Light-sheet and widefield stacks put nuclei a few per cent above a bright background that changes
across the field (uneven illumination) and along rows or columns (the stripes a light sheet casts
behind absorbing objects). The percentile range of `fveseg.normalize.intensity` then spends most of the
network's 0-255 input on the background's changes, and nuclei a few per cent above it vanish
(docs/experiments/2026-12-06-realistic-presets.md: the light-sheet preset, F1 0.17).

In each z-plane, the background under a pixel is estimated as the larger of two grey openings of the
(lightly smoothed) plane, one with a horizontal and one with a vertical line of ``window`` pixels: a
line longer than any nucleus cannot fit inside one, so both openings remove nuclei; a stripe along x
survives the horizontal opening, one along y the vertical one, and smooth illumination survives both.
The flattened plane is the image minus that estimate, which is never negative.

Flattening also changes stacks that need none (a dark, clean background): their haze and glow between
nuclei are removed too. `background_dominates` tells the two apart from the volume alone: the
background's own swing (its 0.5-99.5 percentile range, the range `fveseg.normalize.intensity` stretches)
against the height of the brightest structures above it (the 99.5th percentile of the flattened image).
When the swing is the larger, the background's changes would take most of the network's input range.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi

from fveseg.normalize.intensity import PERCENTILES

__all__ = [
    "BACKGROUND_WINDOW_UM",
    "BACKGROUND_WINDOW_PX",
    "background_dominates",
    "background_dominates_in",
    "background_window",
    "flatten_background",
]

#: Line length in µm: about three diameters of the largest nuclei the generator draws (radius up to 7
#: µm, `fveseg.synthetic.options.PRESETS`), so that a line always leaves the nucleus it starts in.
BACKGROUND_WINDOW_UM = 40.0
#: Line length in pixels when the pixel size is unknown: about three diameters of the largest nuclei
#: the automatic resize handles at native size (`fveseg.inference.auto_scale`: 10-42 px trained).
BACKGROUND_WINDOW_PX = 128
#: Smoothing (px) before the openings, so that their minimum follows the background, not its noise.
_PRESMOOTH_PX = 1.0


def background_window(spacing) -> int:
    """Line length in pixels: `BACKGROUND_WINDOW_UM` over the in-plane pixel size, or
    `BACKGROUND_WINDOW_PX` when ``spacing`` is None or not finite and positive; at least 3."""
    known = spacing is not None and all(math.isfinite(s) and s > 0 for s in spacing[1:])
    window = BACKGROUND_WINDOW_UM / min(spacing[1:]) if known else BACKGROUND_WINDOW_PX
    return max(3, int(round(window)))


def background_dominates(background: np.ndarray, flat: np.ndarray) -> bool:
    """True when the background's swing (0.5-99.5 percentile range of ``background``) exceeds the
    99.5th percentile of the ``flat`` image above it (`flatten_background`'s two parts)."""
    low, high = np.percentile(background, PERCENTILES)
    return bool(high - low > np.percentile(flat, PERCENTILES[1]))


def flatten_background(
    volume, spacing=None, window: int | None = None, only_if_dominant: bool = False
) -> np.ndarray:
    """The volume minus its background, plane by plane along axis 0 (module docstring).

    Parameters
    ----------
    volume : array-like (D, H, W) or (H, W) of int or float
        Intensities (numpy, zarr or dask: read `PLANES_PER_BLOCK` planes at a time); non-finite values
        are taken as the smallest finite one of their block (a block with none stays as it is, for the
        segmenter's own check to refuse).
    spacing : (dz, dy, dx) or None
        Voxel size; sets the line length with `background_window`.
    window : int, optional
        Line length in pixels (overrides ``spacing``).
    only_if_dominant : bool
        Flatten only when `background_dominates_in` says so; otherwise return ``volume`` itself.

    Returns
    -------
    ndarray float32 shaped like ``volume``, or ``volume`` itself
        Non-negative when flattened; a volume that is background only becomes close to zero. Memory
        beyond the result: a few float32 copies of one block of planes.
    """
    if len(volume.shape) == 2:  # one plane: flattened as a one-slice volume, returned as a plane
        plane = np.asarray(volume)[None]
        flat = flatten_background(plane, spacing, window, only_if_dominant)
        return volume if flat is plane else flat[0]
    if len(volume.shape) != 3:
        raise ValueError(f"flatten_background expects a (D, H, W) volume, got shape {tuple(volume.shape)}")
    length = int(window) if window is not None else background_window(spacing)
    if only_if_dominant and not background_dominates_in(volume, spacing, window=length):
        return volume
    flat = np.empty(tuple(int(n) for n in volume.shape), dtype=np.float32)
    for start in range(0, flat.shape[0], PLANES_PER_BLOCK):
        block = slice(start, start + PLANES_PER_BLOCK)
        flat[block] = _flatten_planes(np.asarray(volume[block], dtype=np.float32), length)[0]
    return flat


def _flatten_planes(data: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
    """(flattened, background) of a (n, H, W) float32 block, plane by plane."""
    finite = np.isfinite(data)
    if not finite.all() and finite.any():
        data = np.where(finite, data, data[finite].min())
    smooth = ndi.gaussian_filter(data, (0, _PRESMOOTH_PX, _PRESMOOTH_PX), mode="nearest")
    background = ndi.grey_opening(smooth, size=(1, 1, length), mode="nearest")
    np.maximum(background, ndi.grey_opening(smooth, size=(1, length, 1), mode="nearest"), out=background)
    del smooth
    flat = data - background
    np.maximum(flat, 0, out=flat)
    return flat, background


#: Planes `flatten_background` reads and flattens at a time.
PLANES_PER_BLOCK = 8
#: z-planes `background_dominates_in` reads from a volume too large to flatten whole.
SAMPLED_PLANES = 16


def background_dominates_in(
    volume, spacing=None, planes: int = SAMPLED_PLANES, window: int | None = None
) -> bool:
    """`background_dominates` judged on up to ``planes`` evenly spaced whole z-planes of a (lazy) volume
    (numpy, zarr, dask): the decision of ``flatten="auto"``, so a large volume is never flattened whole
    just to decide."""
    depth = int(volume.shape[0])
    picks = np.unique(np.linspace(0, depth - 1, min(depth, planes)).round().astype(int))
    sample = np.stack([np.asarray(volume[int(z)], dtype=np.float32) for z in picks])
    length = int(window) if window is not None else background_window(spacing)
    flat, background = _flatten_planes(sample, length)
    return background_dominates(background, flat)
