"""Per-slice post-processing of prompt probabilities: existence gating, NMS and argmax (REFERENCE §2).

Also the container of `fveseg.inference.Segmenter.segment` outputs (`SegmentationResult`, whose
``rethreshold`` re-runs the labelling on the stored probabilities) and the slab read/write helpers the
Segmenter streams its outputs with.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "semantic_labels",
    "label_dtype",
    "doubtful_slices",
    "SegmentationResult",
    "take_slab",
    "put_slab",
]

#: Existence above this (but not above the gate) on slices that continue, along the slicing axis, a run
#: of slices where the prompt was found marks a slice the gate may have emptied wrongly.
DOUBT_LOW = 0.1


def label_dtype(num_prompts: int) -> np.dtype:
    """uint8 for up to 255 prompts, else uint16."""
    return np.dtype(np.uint8 if num_prompts < 256 else np.uint16)


def semantic_labels(
    probabilities: np.ndarray,
    existence: np.ndarray,
    mask_threshold: float = 0.5,
    exist_threshold: float = 0.5,
    iou_threshold: float = 0.5,
) -> np.ndarray:
    """Class ids 1..P (0 = background) per slice.

    A prompt is kept on a slice when its existence probability exceeds ``exist_threshold`` and no kept,
    more confident prompt's mask (probability > ``mask_threshold``) overlaps its mask with IoU above
    ``iou_threshold``. Each pixel then takes the kept prompt of highest probability if that probability
    exceeds ``mask_threshold`` (a background of fixed probability ``mask_threshold``). With one prompt this
    is the gated mask ``(p > mask_threshold) & (existence > exist_threshold)``.

    Parameters
    ----------
    probabilities : ndarray (P, S, H, W)
        Mask probabilities of P prompts on S slices (any float dtype).
    existence : ndarray (P, S)
        Existence probability per prompt and slice.

    Returns
    -------
    ndarray (S, H, W), uint8 (uint16 for >= 256 prompts)
    """
    probs = np.asarray(probabilities, dtype=np.float32)
    exist = np.asarray(existence, dtype=np.float32)
    num, slices = exist.shape
    keep = exist > exist_threshold
    if num > 1:
        binary = (probs > mask_threshold).reshape(num, slices, -1)
        area = binary.sum(-1, dtype=np.int64)  # (P, S)
        inter = np.stack(
            [(binary[p][None] & binary).sum(-1, dtype=np.int64) for p in range(num)]
        )  # (P, P, S)
        union = area[:, None] + area[None] - inter
        iou = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
        order = np.argsort(-exist, axis=0, kind="stable")  # (P, S) strongest first
        cols = np.arange(slices)
        kept_rank = np.zeros((num, slices), dtype=bool)
        for rank in range(num):
            cand = order[rank]
            ok = keep[cand, cols]
            for stronger in range(rank):
                other = order[stronger]
                ok &= ~(kept_rank[stronger] & (iou[cand, other, cols] > iou_threshold))
            kept_rank[rank] = ok
        keep = np.zeros_like(keep)
        keep[order, cols[None].repeat(num, 0)] = kept_rank
    gated = np.where(keep[:, :, None, None], probs, 0.0)
    best = gated.argmax(axis=0)
    value = np.take_along_axis(gated, best[None], axis=0)[0]
    return np.where(value > mask_threshold, best + 1, 0).astype(label_dtype(num))


def doubtful_slices(
    existence: np.ndarray, exist_threshold: float = 0.5, low: float = DOUBT_LOW
) -> np.ndarray:
    """Per prompt, the number of slices the existence gate empties although they continue a run of slices
    where the prompt was found.

    Objects are continuous along the slicing axis, so a slice whose existence is only weak
    (``low`` < p <= ``exist_threshold``) but which is chained, through such slices, to a slice above the
    gate is more likely a discriminator miss than an empty slice: hysteresis thresholding
    (`skimage.filters.apply_hysteresis_threshold`) of each prompt's existence profile, minus the slices
    the gate keeps. On the cells3d stack a fine-tuned model scored 0.13-0.23 on its densest slices, so
    the gate emptied them although its masks there were right (docs/model-card.md).

    Parameters
    ----------
    existence : ndarray (P, N)
        Existence probability per prompt and slice, in slice order.
    exist_threshold : float
        The gate (a slice keeps the prompt when its existence is above it).
    low : float
        Weakest existence that still counts as a continuation.

    Returns
    -------
    ndarray (P,) int64
        Counts of doubtful slices; all zero when ``low >= exist_threshold``.
    """
    from skimage.filters import apply_hysteresis_threshold

    exist = np.asarray(existence, dtype=np.float32)
    if exist.ndim != 2:
        raise ValueError(f"existence must be (P, N), got shape {exist.shape}")
    if low >= exist_threshold or exist.shape[1] == 0:
        return np.zeros(exist.shape[0], dtype=np.int64)
    chained = np.stack([apply_hysteresis_threshold(row, low, exist_threshold) for row in exist])
    return (chained & ~(exist > exist_threshold)).sum(1).astype(np.int64)


def take_slab(array: Any, axis: int, start: int, stop: int, leading: int) -> np.ndarray:
    """Slab ``start:stop`` along spatial ``axis`` (after ``leading`` dims), view axis moved first."""
    index = [slice(None)] * (leading + 3)
    index[leading + axis] = slice(start, stop)
    return np.moveaxis(np.asarray(array[tuple(index)]), leading + axis, leading)


def put_slab(array: Any, axis: int, start: int, value: np.ndarray, leading: int) -> None:
    """Write ``value`` (view axis at position ``leading``) into ``array`` at ``start`` along ``axis``."""
    index = [slice(None)] * (leading + 3)
    index[leading + axis] = slice(start, start + value.shape[leading])
    array[tuple(index)] = np.moveaxis(value, leading, leading + axis)


@dataclass
class SegmentationResult:
    """Outputs of `fveseg.inference.Segmenter.segment`, in the input volume's orientation.

    Shapes are for the whole volume (D, H, W); a slice range ``segment(..., start=, stop=)`` holds
    N = stop - start slices along ``axis`` instead (for example (P, N, H, W) when ``axis`` is 0).

    Attributes
    ----------
    probabilities : array (P, D, H, W) float16
        Raw (ungated) mask probability per prompt.
    edges : array (P, D, H, W) float16
        Edge probability per prompt.
    existence : ndarray (P, N) float32
        Existence probability per prompt and slice along ``axis`` (N = shape[axis]).
    semantic : array (D, H, W) uint8 (uint16 for >= 256 prompts)
        0 background, i + 1 for ``prompts[i]``.
    prompts : list of str
        Canonical prompts in class-id order.
    axis : int
        The slicing axis used.
    path : Path or None
        The zarr group holding the arrays when written to disk.
    start : int
        Index along ``axis`` of the volume slice the arrays' first slice is (0 for the whole volume).
    scale : float
        In-plane scale the slices were resampled by before the network (``scale="auto"`` resolved).
    """

    probabilities: Any
    edges: Any
    existence: np.ndarray
    semantic: Any
    prompts: list[str]
    axis: int
    path: Path | None = None
    start: int = 0
    scale: float = 1.0

    def rethreshold(
        self, mask_threshold: float = 0.5, exist_threshold: float = 0.5, chunk: int = 16
    ) -> np.ndarray:
        """Recompute ``semantic`` (same shape and dtype) with other thresholds, without the network."""
        shape = self.probabilities.shape[1:]
        out = np.zeros(shape, dtype=label_dtype(len(self.prompts)))
        for start in range(0, shape[self.axis], chunk):
            stop = min(start + chunk, shape[self.axis])
            probs = take_slab(self.probabilities, self.axis, start, stop, 1)
            labels = semantic_labels(probs, self.existence[:, start:stop], mask_threshold, exist_threshold)
            put_slab(out, self.axis, start, labels, 0)
        return out
