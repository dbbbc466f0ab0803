"""The reference v2 pre- and post-processing (``inference.py`` / ``utils.py`` of the public code).

Pre: choose the slicing axis, zero-pad each slice to a centred square, bicubic-resize to 512 (the model
then truncates to int32), pack order 1 with reflection, normalise with one grey mean/std (`ReferenceV2`).
Post: bicubic (antialiased) upsampling of the stride-4 logits to 512, sigmoid, per-slice NMS (existence
probability as score, 0.5 score threshold, IoU > 0.5 suppresses the weaker) when there are several
prompts or existence gating (> 0.5) for one, argmax against a constant 0.5 background, nearest
resize back to the padded square and removal of the padding.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

__all__ = [
    "reference_axis",
    "pad_and_resize",
    "upsample_probabilities",
    "nms_masks",
    "gate_or_nms",
    "merge_classes",
    "restore_geometry",
    "segment_volume_reference",
]


def reference_axis(shape: tuple[int, int, int]) -> int:
    """Slicing axis: 0 when the in-plane sides differ by < 50 %, else the shortest axis."""
    d, h, w = shape
    return 0 if 2 * abs(h - w) / (h + w) < 0.5 else int(np.argmin(shape))


def pad_and_resize(
    volume: np.ndarray, size: int = 512
) -> tuple[torch.Tensor, tuple[int, int, int, int], int]:
    """Zero-pad (D, H, W) slices to a centred square, then bicubic-resize to ``size``.

    Returns
    -------
    resized : torch.Tensor
        (D, size, size) int32 (float bicubic then truncation, as ``imgs.int()`` in the reference).
    pad : tuple
        (top, bottom, left, right) padding in pixels.
    padded_size : int
        Side of the padded square.
    """
    h, w = volume.shape[1:]
    side = max(h, w)
    top, left = (side - h) // 2, (side - w) // 2
    pad = (top, side - h - top, left, side - w - left)
    padded = np.pad(np.asarray(volume), ((0, 0), pad[:2], pad[2:]), mode="constant")
    x = torch.from_numpy(padded.astype(np.float32, copy=False))[None]
    resized = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False)[0]
    return resized.to(torch.int32), pad, side


def upsample_probabilities(logits: torch.Tensor, size: int = 512) -> torch.Tensor:
    """(P, D, h, w) stride-4 logits -> (P, D, size, size) sigmoid probabilities (bicubic, antialiased)."""
    up = F.interpolate(logits.float(), size=(size, size), mode="bicubic", align_corners=False, antialias=True)
    return up.sigmoid()


def nms_masks(
    masks: torch.Tensor, scores: torch.Tensor, iou_threshold: float = 0.5, score_threshold: float = 0.5
) -> list[int]:
    """Greedy mask NMS on one slice: (N, H, W) bool masks, (N,) scores -> kept indices, best first.

    Masks scoring below ``score_threshold`` are dropped, empty masks skipped, and a mask whose IoU with a
    kept one exceeds ``iou_threshold`` is suppressed.
    """
    flat = masks.reshape(masks.shape[0], -1).bool()
    order = scores.argsort(descending=True)
    keep: list[int] = []
    while order.numel():
        i = int(order[0])
        if scores[i] < score_threshold:
            break
        if not flat[i].any():
            order = order[1:]
            continue
        keep.append(i)
        rest = order[1:]
        inter = (flat[rest] & flat[i]).sum(1).float()
        union = (flat[rest] | flat[i]).sum(1).float()
        order = rest[inter / union <= iou_threshold]
    return keep


def gate_or_nms(
    probs: torch.Tensor, existence_logits: torch.Tensor, threshold: float = 0.5, iou_threshold: float = 0.5
) -> torch.Tensor:
    """Per-slice NMS across prompts (P > 1) or existence gating (P = 1), on (P, D, H, W) probabilities."""
    scores = existence_logits.sigmoid()
    if probs.shape[0] == 1:
        return probs * (scores > threshold)[..., None, None]
    keep = torch.zeros(scores.shape, dtype=probs.dtype, device=probs.device)
    for d in range(probs.shape[1]):  # one NMS per slice, as the reference
        kept = nms_masks(probs[:, d] > 0.5, scores[:, d], iou_threshold, threshold)
        keep[kept, d] = 1
    return probs * keep[..., None, None]


def merge_classes(probs: torch.Tensor, ids: list[int] | None = None, background: float = 0.5) -> torch.Tensor:
    """(P, D, H, W) probabilities -> (D, H, W) int64 class map: argmax against a constant background."""
    stacked = torch.cat([torch.full_like(probs[:1], background), probs])
    classes = stacked.argmax(0)
    if ids is not None:
        lut = torch.tensor([0, *ids], dtype=torch.int64, device=classes.device)
        classes = lut[classes]
    return classes


def restore_geometry(
    labels: torch.Tensor, pad: tuple[int, int, int, int], padded_size: int, axis: int
) -> np.ndarray:
    """(D, S, S) labels -> original geometry: nearest resize to the padded square, unpad, axis back."""
    if labels.shape[-1] != padded_size:
        labels = F.interpolate(labels[None].float(), size=(padded_size, padded_size), mode="nearest")[0].to(
            torch.int64
        )
    top, bottom, left, right = pad
    out = labels.cpu().numpy()[:, top : padded_size - bottom, left : padded_size - right]
    return np.moveaxis(out, 0, axis)


@torch.no_grad()
def segment_volume_reference(
    model,
    volume: np.ndarray,
    prompts: list[str],
    ids: list[int] | None = None,
    slice_batch_size: int = 4,
    mode: str = "boltz",
    seed: int | None = 0,
    size: int = 512,
) -> dict:
    """The whole reference recipe on one in-memory (D, H, W) 0-255 volume.

    Returns
    -------
    dict
        ``labels`` (original shape, int64 class ids, 0 = background), ``probabilities`` (P, D', size, size)
        after NMS/gating, ``existence`` (P, D') probabilities, ``axis``.
    """
    axis = reference_axis(volume.shape)
    resized, pad, side = pad_and_resize(np.moveaxis(volume, axis, 0), size)
    if seed is not None:
        torch.manual_seed(seed)  # Boltzmann sampling draws from the global RNG, as in the reference
    out = model.forward_volume(resized, prompts, slice_batch_size=slice_batch_size, mode=mode)
    probs = gate_or_nms(upsample_probabilities(out["pred_gmasks"], size), out["object_existence"])
    labels = merge_classes(probs, ids)
    return {
        "labels": restore_geometry(labels, pad, side, axis),
        "probabilities": probs,
        "existence": out["object_existence"].sigmoid(),
        "axis": axis,
    }
