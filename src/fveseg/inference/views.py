"""Three orthogonal views fused: the 2D network along z, y and x of a near-isotropic volume, averaged.

A 2D network sees each plane on its own; running it on the YX, ZX and ZY planes gives every voxel three
independent looks whose agreement is 3D evidence. `segment_views` resamples z to the pixel size when
the spacing says the stack is anisotropic (`fveseg.inference.resample`), plans and runs each view on its
own (`fveseg.inference.Segmenter.plan`: its own automatic scale), gates each view's probabilities by its
own per-slice existence (`fveseg.inference.gate.presence`), averages them (and the edges), labels the
mean with the per-slice rules of `fveseg.inference.gate.semantic_labels` and samples the result back at
the stack's slices. Memory: two float32 (P, D', H, W) sums beside one view's outputs, D' the resampled
depth.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from fveseg.inference._checks import check_prompts, check_volume
from fveseg.inference.gate import EXIST_LOW, SegmentationResult, presence, semantic_labels
from fveseg.inference.resample import resample_z, result_on_grid, z_factor

__all__ = ["VIEW_AXES", "segment_views"]

#: The slicing axes fused: YX planes (along z), ZX planes (along y), ZY planes (along x).
VIEW_AXES = (0, 1, 2)


def segment_views(
    segmenter,
    volume,
    prompts: list[str] | str,
    spacing: tuple[float, float, float] | None = None,
    order: int | None = None,
    scale: float | str = "auto",
    mask_threshold: float = 0.5,
    exist_threshold: float = 0.5,
    exist_low: float | None = EXIST_LOW,
    progress: Callable[[int, int], Any] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> SegmentationResult:
    """Segment ``prompts`` in a (D, H, W) volume from its three orthogonal views (module docstring).

    Parameters
    ----------
    segmenter : Segmenter or AutoSegmenter
        Anything with `plan` and `run`.
    volume : array-like (D, H, W)
        Read whole into memory.
    spacing : (dz, dy, dx), optional
        Voxel size; z is resampled to the pixel size when it differs.
    order, scale, mask_threshold, exist_threshold, exist_low, cancel
        As `fveseg.inference.Segmenter.segment` (``scale`` per view).
    progress : callable(done, total), optional
        Slices done over all three views.

    Returns
    -------
    SegmentationResult
        ``axis`` 0; ``probabilities`` the mean gated probability and ``edges`` the mean edge probability
        (P, D, H, W) float16; ``existence`` (P, D) the YX view's; ``semantic`` the mean's labels; ``scale``,
        ``model`` and ``noise`` the YX view's.
    """
    canonical = check_prompts(prompts)
    volume = np.asarray(check_volume(volume))
    factor = z_factor(spacing)
    seen = volume if factor is None else resample_z(volume, factor)
    even = spacing if factor is None else (min(spacing[1:]), float(spacing[1]), float(spacing[2]))
    thresholds = dict(mask_threshold=mask_threshold, exist_threshold=exist_threshold, exist_low=exist_low)
    total, done = sum(seen.shape[axis] for axis in VIEW_AXES), 0
    probabilities = edges = first = None
    for axis in VIEW_AXES:
        plan = segmenter.plan(seen, even, canonical, axis, order, scale, cancel=cancel, **thresholds)
        report = None if progress is None else (lambda d, t, before=done: progress(before + d, total))
        result = segmenter.run(seen, plan, canonical, progress=report, cancel=cancel, **thresholds)
        present = presence(result.existence, exist_threshold, exist_low)  # (P, slices along axis)
        shape = [len(canonical), 1, 1, 1]
        shape[axis + 1] = -1
        gated = np.asarray(result.probabilities, dtype=np.float32) * present.reshape(shape)
        probabilities = gated if probabilities is None else probabilities + gated
        edge = np.asarray(result.edges, dtype=np.float32)
        edges = edge if edges is None else edges + edge
        first = result if first is None else first
        done += seen.shape[axis]
    probabilities = (probabilities / len(VIEW_AXES)).astype(np.float16)
    everywhere = np.ones((len(canonical), seen.shape[0]), dtype=bool)  # each view was gated already
    semantic = semantic_labels(
        probabilities, first.existence, mask_threshold, exist_threshold, present=everywhere
    )
    fused = SegmentationResult(
        probabilities=probabilities,
        edges=(edges / len(VIEW_AXES)).astype(np.float16),
        existence=np.asarray(first.existence, dtype=np.float32),
        semantic=semantic,
        prompts=canonical,
        axis=0,
        scale=first.scale,
        model=first.model,
        noise=first.noise,
    )
    return fused if factor is None else result_on_grid(fused, volume.shape[0], factor)
