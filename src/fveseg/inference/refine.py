"""The 3D refinement of a result (`fveseg.model.refiner.Refiner3D`): gated probability + image -> foreground.

`refine_result` runs the refiner over the volume in blocks (slabs of `BLOCK_DEPTH` slices and tiles of
`BLOCK_SIDE` pixels, each read with a margin of `MARGIN` voxels that is discarded), replaces the
probability of the prompts it was trained for by the refined one and labels the volume again. Memory:
one block's activations beside the result.
"""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from fveseg.inference.gate import SegmentationResult, presence, semantic_labels
from fveseg.model.refiner import Refiner3D, load_refiner
from fveseg.normalize.intensity import normalize

__all__ = ["refine_result", "refiner_for", "BUNDLED_REFINER"]

BLOCK_DEPTH, BLOCK_SIDE, MARGIN = 24, 256, 8
#: The refiner installed with fveseg (trained by ``training/train_refiner.py``).
BUNDLED_REFINER = Path(__file__).resolve().parents[1] / "weights" / "refiner"


@lru_cache(maxsize=2)
def refiner_for(name: str) -> Refiner3D:
    """The refiner ``name`` names: ``"bundled"`` (installed with fveseg) or a path written by
    `fveseg.model.refiner.save_refiner`; loaded once per process."""
    return load_refiner(BUNDLED_REFINER if name == "bundled" else name)


def _blocks(size: int, block: int) -> list[tuple[int, int]]:
    return [(start, min(size, start + block)) for start in range(0, size, block)]


def refined_probability(refiner: Refiner3D, image: np.ndarray, probability: np.ndarray) -> np.ndarray:
    """(D, H, W) refined foreground probability float32 of a (D, H, W) image (0-1; unused by a refiner
    without image input) and gated probability."""
    depth, height, width = probability.shape
    out = np.full(probability.shape, np.nan, dtype=np.float32)  # a voxel no block covered would stay NaN
    stacked = np.stack([image, probability] if refiner.with_image else [probability]).astype(np.float32)
    for z0, z1 in _blocks(depth, BLOCK_DEPTH):
        for y0, y1 in _blocks(height, BLOCK_SIDE):
            for x0, x1 in _blocks(width, BLOCK_SIDE):
                lo = (max(0, z0 - MARGIN), max(0, y0 - MARGIN), max(0, x0 - MARGIN))
                hi = (min(depth, z1 + MARGIN), min(height, y1 + MARGIN), min(width, x1 + MARGIN))
                block = torch.from_numpy(stacked[:, lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]])[None]
                pad_y, pad_x = -block.shape[-2] % 4, -block.shape[-1] % 4
                block = F.pad(block, (0, pad_x, 0, pad_y, 0, 0), mode="replicate")
                with torch.inference_mode():
                    logits = refiner(block)[0, 0, :, : block.shape[-2] - pad_y, : block.shape[-1] - pad_x]
                core = logits[z0 - lo[0] : z1 - lo[0], y0 - lo[1] : y1 - lo[1], x0 - lo[2] : x1 - lo[2]]
                out[z0:z1, y0:y1, x0:x1] = torch.sigmoid(core).numpy()
    return out


def refine_result(
    result: SegmentationResult,
    image,
    refiner: Refiner3D,
    mask_threshold: float = 0.5,
    exist_threshold: float = 0.5,
    exist_low: float | None = None,
) -> SegmentationResult:
    """``result`` with the probability of each prompt in ``refiner.metadata["prompts"]`` refined in 3D
    and the labels recomputed (the other prompts keep their gated probability).

    Parameters
    ----------
    result : SegmentationResult
        A whole-volume result in memory.
    image : array-like (D, H, W)
        The image the network saw (background flattened where the pipeline flattens it).
    refiner : Refiner3D
    mask_threshold, exist_threshold, exist_low : float
        The gate's thresholds (`fveseg.inference.gate.presence`).

    Returns
    -------
    SegmentationResult
        ``probabilities`` (P, D, H, W) float16: the refined probability for refined prompts, else the raw
        one; ``semantic`` relabelled from the gated (and refined) probabilities.
    """
    trained = set(refiner.metadata.get("prompts", ()))
    chosen = [i for i, prompt in enumerate(result.prompts) if prompt in trained]
    if not chosen:
        return result
    present = presence(result.existence, exist_threshold, exist_low)  # (P, slices along the axis)
    shape = [len(result.prompts), 1, 1, 1]
    shape[result.axis + 1] = -1
    gated = np.asarray(result.probabilities, dtype=np.float32) * present.reshape(shape)
    scaled = normalize(np.asarray(image)).astype(np.float32) / 255.0
    probabilities = np.array(result.probabilities, dtype=np.float16)
    for index in chosen:
        gated[index] = refined_probability(refiner, scaled, gated[index])
        probabilities[index] = gated[index]
    everywhere = np.ones_like(np.asarray(result.existence), dtype=bool)  # gated above; refined after
    existence = np.asarray(result.existence)
    moved = np.moveaxis(gated, result.axis + 1, 1).astype(np.float16)
    semantic = semantic_labels(moved, existence, mask_threshold, exist_threshold, present=everywhere)
    return replace(result, probabilities=probabilities, semantic=np.moveaxis(semantic, 0, result.axis))
