"""Geodesic growth of seed labels inside a mask, shared by the instance split and the neck cuts."""

from __future__ import annotations

import cc3d
import numpy as np

_UNREACHED = np.int32(2**30)


def grow_in_mask(seeds: np.ndarray, fg: np.ndarray, spacing: tuple[float, float, float]) -> np.ndarray:
    """Grow seed labels over a boolean mask by anisotropic geodesic distance (Dijkstra by levels).

    ``seeds`` (D, H, W) uint32 must be 0 outside ``fg``. Each step along an axis costs
    ``round(spacing[axis] / min(spacing))`` (at least 1), so growth prefers the finely sampled axes;
    paths stay inside ``fg``. Only the advancing front is visited each level. Mask components without
    a seed get new ids above the seeds' maximum. Returns uint32 (D, H, W); every ``fg`` voxel is
    labelled.
    """
    inner = (slice(1, -1),) * 3
    padded = np.zeros(tuple(n + 2 for n in seeds.shape), np.uint32)
    padded[inner] = seeds
    waiting = np.zeros(padded.shape, bool)
    np.logical_and(fg, seeds == 0, out=waiting[inner])
    flat_labels, flat_waiting = padded.ravel(), waiting.ravel()
    todo = np.flatnonzero(flat_waiting)
    if todo.size:
        shape = padded.shape
        strides = (shape[1] * shape[2], shape[2], 1)
        steps = np.maximum(np.rint(np.asarray(spacing) / min(spacing)), 1).astype(np.int32)
        offsets = np.array([sign * strides[axis] for axis in (2, 1, 0) for sign in (1, -1)])
        costs = np.array([steps[axis] for axis in (2, 1, 0) for _ in (0, 1)], dtype=np.int32)
        flat_level = np.full(flat_labels.size, _UNREACHED, np.int32)
        flat_level[flat_labels > 0] = 0
        in_front = np.zeros(flat_labels.size, bool)
        # the front: waiting voxels with a labelled neighbour (only those can be reached next)
        front = todo[(flat_labels[todo[:, None] + offsets] > 0).any(axis=1)]
        in_front[front] = True
        while front.size:
            cost = flat_level[front[:, None] + offsets] + costs
            best = cost.argmin(axis=1)
            best_cost = cost[np.arange(front.size), best]
            reach = best_cost.min()
            now = best_cost == reach
            done = front[now]
            flat_labels[done] = flat_labels[done + offsets[best[now]]]
            flat_level[done] = reach
            flat_waiting[done] = False
            touched = (done[:, None] + offsets).ravel()
            touched = np.unique(touched[flat_waiting[touched] & ~in_front[touched]])
            in_front[touched] = True
            front = np.concatenate([front[~now], touched])
            front = front[flat_waiting[front]]
    labels = padded[inner]
    if waiting.any():
        orphans = cc3d.connected_components(waiting[inner], connectivity=6, out_dtype=np.uint32)
        labels = np.where(orphans > 0, orphans + labels.max(), labels).astype(np.uint32)
    return np.ascontiguousarray(labels)
