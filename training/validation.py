"""Validation during training: real 2D nuclei images (instance F1) and held-out procedural volumes.

Prediction goes through `fveseg.inference.Segmenter` wrapped around the in-memory model, so validation
sees exactly what users get (normalisation, FVE, tiling, existence gate) without a save/load round trip.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

# one grey mean / std on the 0-255 scale (REFERENCE §2), as in fveseg.model.checkpoint.DEFAULT_METADATA
PIXEL_MEAN = 114.5
PIXEL_STD = 57.6


def to_model_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 FVE images (B, 3, H, W) on the 0–255 scale -> float network input (same shape)."""
    return (images.float() - PIXEL_MEAN) / PIXEL_STD


def predict(
    segmenter, volume: np.ndarray, prompts: list[str], spacing=None, axis: int | str = 0, scale="auto"
):
    """Gated mask and edge probabilities (P, D, H, W) float32 and existence (P, N) from a `Segmenter`.

    The mask is zero on slices where the ISD says the target is absent (the Segmenter's default gate,
    `fveseg.inference.gate.presence`: existence <= 0.5 and not continuing a run of found slices above 0.1),
    as in the Segmenter's own semantic output.
    """
    from fveseg.inference.gate import presence

    result = segmenter.segment(volume, prompts, spacing=spacing, axis=axis, scale=scale)
    gate = presence(result.existence)  # (P, N) along result.axis
    shape = [1] * 4
    shape[0], shape[1 + result.axis] = gate.shape
    gate = gate.reshape(shape)
    masks = np.asarray(result.probabilities, dtype=np.float32) * gate
    edges = np.asarray(result.edges, dtype=np.float32) * gate
    return masks, edges, result.existence


def build_segmenter(checkpoint=None, noisy=None, device="auto"):
    """The segmenter a check measures: None or "auto", what users get by default (the bundled models
    chosen per volume from its noise, `fveseg.inference.AutoSegmenter`); with ``noisy``, such a choice
    between ``checkpoint`` (clean volumes) and ``noisy``; otherwise the one network ``checkpoint``."""
    from fveseg.inference.model_choice import AutoSegmenter, segmenter_for

    clean = None if checkpoint == "auto" else checkpoint
    if noisy is not None:
        return AutoSegmenter(clean, noisy, device=device)
    return segmenter_for(clean, device=device)


def model_segmenter(model, order: int, device="cpu"):
    """A `fveseg.inference.Segmenter` around an in-memory model (eval mode; restore train mode after)."""
    from fveseg.inference.segmenter import Segmenter

    model.metadata = {
        **getattr(model, "metadata", {}),
        "fve": {"order": order, "pad": "edge", "downsample": "mean"},
        "normalization": {"mean": [PIXEL_MEAN] * 3, "std": [PIXEL_STD] * 3},
    }
    return Segmenter(model, device=device, batch_size=8)


def instances_from(
    mask: np.ndarray, edges: np.ndarray, spacing=None, image=None, axis: int = 0
) -> np.ndarray:
    """Instance labels from probabilities with the project's edge-based splitting and its default
    parameters (`fveseg.params.SegmentParams`): with the ``image``, each instance's out-of-focus
    cross-sections along ``axis`` are trimmed (`fveseg.instances.haze`)."""
    from fveseg.instances.split import instances_from_prediction

    return instances_from_prediction(mask > 0.5, edges, image, spacing, axis)


def selection_instances(mask: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Instances for choosing checkpoints during training, the same on every machine: seeds are the mask
    without its edges, grown back over the mask by watershed on the edge map (scipy / scikit-image only,
    so the GPU box without cc3d computes the same numbers). Final numbers come from the product's own
    instance step (`instances_from`, `segment_like_cli`)."""
    from scipy import ndimage
    from skimage.segmentation import watershed

    fg = mask > 0.5
    seeds, _ = ndimage.label(fg & (edges < 0.5))
    return watershed(edges, markers=seeds, mask=fg).astype(np.uint32)


def segment_like_cli(segmenter, image: np.ndarray, spacing=None, prompt: str = "nuclei"):
    """``(labels, scale)``: instance labels of ``image`` as ``fveseg segment`` writes them
    (`fveseg.pipeline`) and the in-plane scale it chose."""
    from fveseg.pipeline import SegmentParams, label_layers, prepare, segment_array, slug

    image, params = prepare(image, SegmentParams(prompts=(prompt,)), spacing)
    result = segment_array(segmenter, image, params, spacing)
    labels, _ = label_layers(result, params, spacing, image=image)[slug(prompt)]
    return labels, result.scale


@dataclass
class ValidationSet:
    """Real images (normalised) with their labels, and held-out procedural volumes."""

    real: list[tuple[np.ndarray, np.ndarray]]  # (uint8 (1, H, W), labels (1, H, W))
    synthetic: list[tuple[np.ndarray, np.ndarray, tuple[float, float, float]]]


def heldout_synthetic(
    n: int, shape=(24, 160, 160), spacing=(1.0, 0.35, 0.35), preset: str = "hard", first_seed: int = 10**12
):
    """`n` procedural volumes with seeds no training run uses (training seeds stay below 10**11)."""
    from fveseg.synthetic import make_nuclei_volume

    return [make_nuclei_volume(shape, seed=first_seed + i, spacing=spacing, preset=preset) for i in range(n)]


def load_validation(
    data_root: str | Path | None,
    n_synthetic: int = 2,
    max_real: int | None = None,
    real_glob: str = "val/dsb2018_stage1test_fluo/*.npz",
) -> ValidationSet:
    """Load (and normalise) the validation data once."""
    from fveseg.normalize.intensity import normalize
    from training.data import load_volume_file

    real = []
    if data_root is not None:
        files = sorted(glob.glob(str(Path(data_root) / real_glob)))[:max_real]
        for path in files:
            vol = load_volume_file(path)
            real.append((np.asarray(normalize(vol.image)), next(iter(vol.classes.values()))))
    synthetic = [
        (np.asarray(normalize(v.image)), v.labels, v.spacing) for v in heldout_synthetic(n_synthetic)
    ]
    return ValidationSet(real, synthetic)


def validate(
    model, data: ValidationSet, order: int, device="cpu", prompt: str = "nuclei"
) -> dict[str, float]:
    """Mean instance F1 on the real images; Dice and F1 on the procedural volumes (NaN when absent).
    Instances by `selection_instances`: a checkpoint-selection number, the same on every machine."""
    from fveseg.metrics import dice, instance_scores

    was_training = model.training
    segmenter = model_segmenter(model, order, device)
    real_f1 = []
    for image, labels in data.real:
        masks, edges, _ = predict(segmenter, image, [prompt])
        pred = selection_instances(masks[0, 0], edges[0, 0])
        real_f1.append(instance_scores(labels[0], pred)["f1"])
    syn_dice, syn_f1 = [], []
    for image, labels, spacing in data.synthetic:
        masks, edges, _ = predict(segmenter, image, [prompt], spacing, axis="auto")
        pred = selection_instances(masks[0], edges[0])
        syn_dice.append(dice(labels, masks[0] > 0.5))
        syn_f1.append(instance_scores(labels, pred)["f1"])
    model.train(was_training)
    nan = float("nan")
    return {
        "real_f1": float(np.mean(real_f1)) if real_f1 else nan,
        "synthetic_dice": float(np.mean(syn_dice)) if syn_dice else nan,
        "synthetic_f1": float(np.mean(syn_f1)) if syn_f1 else nan,
    }
