"""Per-slice post-processing of prompt probabilities: existence gating, NMS and argmax (REFERENCE §2)."""

from __future__ import annotations

import numpy as np

__all__ = ["semantic_labels", "label_dtype"]


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
