"""Per-slice post-processing of prompt probabilities: existence gating, NMS and argmax (REFERENCE §2).

The existence gate is a hysteresis along the slicing axis (`presence`): a slice keeps a prompt when its
existence is above ``exist_threshold``, or above ``exist_low`` and chained through such slices to one
above the threshold. ``exist_low = exist_threshold`` gives the plain per-slice gate of the paper.

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
    "presence",
    "label_dtype",
    "doubtful_slices",
    "regate",
    "gate_changes",
    "SegmentationResult",
    "take_slab",
    "put_slab",
]

#: Default low threshold of the hysteresis gate: existence above this keeps a prompt on slices that
#: continue, along the slicing axis, a run of slices where it was found. On the cells3d stack a fine-tuned
#: model scored 0.13-0.23 on its densest slices although its masks there were right, and 0.1 keeps
#: "mitochondria" and "liver" absent on every nuclei volume measured (docs/model-card.md).
EXIST_LOW = 0.1


def label_dtype(num_prompts: int) -> np.dtype:
    """uint8 for up to 255 prompts, else uint16."""
    return np.dtype(np.uint8 if num_prompts < 256 else np.uint16)


def semantic_labels(
    probabilities: np.ndarray,
    existence: np.ndarray,
    mask_threshold: float = 0.5,
    exist_threshold: float = 0.5,
    iou_threshold: float = 0.5,
    present: np.ndarray | None = None,
) -> np.ndarray:
    """Class ids 1..P (0 = background) per slice.

    A prompt is kept on a slice when its existence probability exceeds ``exist_threshold`` (or where
    ``present`` is True, when given) and no kept,
    more confident prompt's mask (probability > ``mask_threshold``) overlaps its mask with IoU above
    ``iou_threshold``. Each pixel then takes the kept prompt of highest probability if that probability
    exceeds ``mask_threshold`` (a background of fixed probability ``mask_threshold``). With one prompt this
    is the gated mask ``(p > mask_threshold) & (existence > exist_threshold)``.

    Parameters
    ----------
    probabilities : ndarray (P, S, H, W)
        Mask probabilities of P prompts on S slices (any float dtype).
    existence : ndarray (P, S)
        Existence probability per prompt and slice (also ranks prompts for the NMS).
    present : ndarray (P, S) bool, optional
        The gate's decision per prompt and slice (`presence`); default ``existence > exist_threshold``.

    Returns
    -------
    ndarray (S, H, W), uint8 (uint16 for >= 256 prompts)
    """
    probs = np.asarray(probabilities, dtype=np.float32)
    exist = np.asarray(existence, dtype=np.float32)
    num, slices = exist.shape
    keep = exist > exist_threshold if present is None else np.asarray(present, dtype=bool)
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


def presence(
    existence: np.ndarray, exist_threshold: float = 0.5, exist_low: float | None = EXIST_LOW
) -> np.ndarray:
    """The existence gate: where each prompt is kept, with hysteresis along the slicing axis.

    Objects are continuous along the slicing axis, so a slice whose existence is only weak
    (``exist_low`` < p <= ``exist_threshold``) but which is chained, through such slices, to a slice above
    the threshold is more likely a discriminator miss than an empty slice
    (`skimage.filters.apply_hysteresis_threshold` on each prompt's existence profile).

    Parameters
    ----------
    existence : ndarray (P, N)
        Existence probability per prompt and slice, in slice order.
    exist_threshold : float
        A slice above it keeps the prompt.
    exist_low : float or None
        Weakest existence that still continues a run; None or ``>= exist_threshold``: no hysteresis.

    Returns
    -------
    ndarray (P, N) bool
    """
    from skimage.filters import apply_hysteresis_threshold

    exist = np.asarray(existence, dtype=np.float32)
    if exist.ndim != 2:
        raise ValueError(f"existence must be (P, N), got shape {exist.shape}")
    above = exist > exist_threshold
    if exist_low is None or exist_low >= exist_threshold or exist.size == 0:
        return above
    return np.stack([apply_hysteresis_threshold(row, exist_low, exist_threshold) for row in exist]) | above


def doubtful_slices(
    existence: np.ndarray,
    exist_threshold: float = 0.5,
    low: float = EXIST_LOW,
    exist_low: float | None = None,
) -> np.ndarray:
    """Per prompt, the number of slices a gate with hysteresis down to ``low`` would keep but the gate
    used (hysteresis down to ``exist_low``; None: plain threshold) empties.

    Used to advise a lower ``exist_low`` when the discriminator is marginal on a stack (`presence`).

    Parameters
    ----------
    existence : ndarray (P, N)
        Existence probability per prompt and slice, in slice order.
    exist_threshold : float
        The gate's threshold.
    low, exist_low : float or None
        The hysteresis low thresholds compared.

    Returns
    -------
    ndarray (P,) int64
        Counts of doubtful slices; all zero when ``low >= exist_low``.
    """
    wider = presence(existence, exist_threshold, low)
    used = presence(existence, exist_threshold, exist_low)
    return (wider & ~used).sum(1).astype(np.int64)


def regate(
    probabilities: Any,
    semantic: Any,
    existence: np.ndarray,
    axis: int,
    mask_threshold: float = 0.5,
    exist_threshold: float = 0.5,
    exist_low: float | None = EXIST_LOW,
    present: np.ndarray | None = None,
) -> int:
    """Relabel, in place, the slices of ``semantic`` that the hysteresis gate (`presence`) decides
    differently from the plain per-slice threshold they were labelled with.

    Parameters
    ----------
    probabilities : array (P, ...) float
        Stored mask probabilities (numpy or zarr), the volume's dims after P.
    semantic : array (...) integer
        Labels from `semantic_labels` with the plain gate; updated in place.
    existence : ndarray (P, N)
        Existence per prompt and slice along ``axis``.
    present : ndarray (P, N) bool, optional
        The gate's decision, when it was made on more slices than these (block mode); default
        ``presence(existence, exist_threshold, exist_low)``.

    Returns
    -------
    int
        Number of slices relabelled.
    """
    if present is None:
        present = presence(existence, exist_threshold, exist_low)
    changed = gate_changes(existence, present, exist_threshold)
    for index in changed:  # slices, not voxels: few, and each is one vectorised call
        probs = take_slab(probabilities, axis, index, index + 1, 1)
        labels = semantic_labels(
            probs, existence[:, index : index + 1], mask_threshold, exist_threshold,
            present=present[:, index : index + 1],
        )  # fmt: skip
        put_slab(semantic, axis, index, labels, 0)
    return int(changed.size)


def gate_changes(existence: np.ndarray, present: np.ndarray, exist_threshold: float = 0.5) -> np.ndarray:
    """Indices of the slices where the gate's decision ``present`` (P, N) differs, for some prompt, from
    the plain per-slice threshold on ``existence`` (P, N)."""
    return np.flatnonzero((present != (np.asarray(existence) > exist_threshold)).any(0))


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
    model, noise : str and float, or None
        Set by `fveseg.inference.AutoSegmenter`: the bundled model that ran and the volume's measured
        noise (`fveseg.normalize.noise_level`) that chose it.
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
    model: str | None = None
    noise: float | None = None

    def rethreshold(
        self,
        mask_threshold: float = 0.5,
        exist_threshold: float = 0.5,
        chunk: int = 16,
        exist_low: float | None = EXIST_LOW,
    ) -> np.ndarray:
        """Recompute ``semantic`` (same shape and dtype) with other thresholds, without the network
        (the gate's hysteresis sees this result's slices only)."""
        shape = self.probabilities.shape[1:]
        out = np.zeros(shape, dtype=label_dtype(len(self.prompts)))
        present = presence(self.existence, exist_threshold, exist_low)
        for start in range(0, shape[self.axis], chunk):
            stop = min(start + chunk, shape[self.axis])
            probs = take_slab(self.probabilities, self.axis, start, stop, 1)
            exist = self.existence[:, start:stop]
            labels = semantic_labels(
                probs, exist, mask_threshold, exist_threshold, present=present[:, start:stop]
            )
            put_slab(out, self.axis, start, labels, 0)
        return out
