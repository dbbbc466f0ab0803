"""Validation during training: real 2D nuclei images (instance F1) and held-out procedural volumes.

Prediction here runs the in-memory model slice by slice exactly as inference does (normalised volume ->
FVE at the model's order -> network at native resolution, padded to a multiple of 32 -> existence
gate), so the trainer can pick its best checkpoint without a save/load round trip.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

# one grey mean / std on the 0-255 scale (REFERENCE §2), as in fveseg.model.checkpoint.DEFAULT_METADATA
PIXEL_MEAN = 114.5
PIXEL_STD = 57.6


def to_model_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 FVE images (B, 3, H, W) on the 0–255 scale -> float network input (same shape)."""
    return (images.float() - PIXEL_MEAN) / PIXEL_STD


@torch.no_grad()
def predict_volume(
    model,
    volume: np.ndarray,
    prompts: list[str],
    order: int,
    device: torch.device | str = "cpu",
    batch_size: int = 8,
    pad: str = "edge",
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-slice probabilities of a normalised uint8 volume.

    Parameters
    ----------
    model : BiomedParseV
        Evaluated in eval mode (restored afterwards).
    volume : ndarray (D, H, W) uint8
        Already normalised (`fveseg.normalize`), sliced along axis 0.
    prompts : list of str
    order : int
        FVE order.

    Returns
    -------
    masks : ndarray (P, D, H, W) float32
        Mask probability gated by existence (zero on slices where the ISD says absent).
    edges : ndarray (P, D, H, W) float32
    existence : ndarray (P, D) float32
    """
    from fveseg.fve import encode_volume

    was_training = model.training
    model.eval()
    device = torch.device(device)
    text = model.encode_text(prompts)
    depth, height, width = volume.shape
    masks = np.zeros((len(prompts), depth, height, width), np.float32)
    edges = np.zeros_like(masks)
    exist = np.zeros((len(prompts), depth), np.float32)
    pad_h, pad_w = (-height) % 32, (-width) % 32
    generator = torch.Generator(device=device).manual_seed(seed)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else _null()
    for first, batch in encode_volume(volume, order=order, axis=0, pad=pad, batch_size=batch_size):
        images = torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2).to(device)
        images = F.pad(to_model_input(images), (0, pad_w, 0, pad_h), value=-PIXEL_MEAN / PIXEL_STD)
        with autocast:
            out = model(images, text, generator=generator)
        prob = torch.sigmoid(out["mask_logits"].float())[..., :height, :width]
        edge = torch.sigmoid(out["edge_logits"].float())[..., :height, :width]
        omega = torch.sigmoid(out["exist_logits"].float())
        gate = (omega > 0.5).float()[..., None, None]
        stop = first + images.shape[0]
        masks[:, first:stop] = (prob * gate).permute(1, 0, 2, 3).cpu().numpy()
        edges[:, first:stop] = (edge * gate).permute(1, 0, 2, 3).cpu().numpy()
        exist[:, first:stop] = omega.T.cpu().numpy()
    model.train(was_training)
    return masks, edges, exist


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def instances_from(mask: np.ndarray, edges: np.ndarray, spacing=None) -> np.ndarray:
    """Instance labels from probabilities with the project's edge-based splitting."""
    from fveseg.instances import split_instances

    return split_instances(mask > 0.5, edges, spacing=spacing)


@dataclass
class ValidationSet:
    """Real images (normalised) with their labels, and held-out procedural volumes."""

    real: list[tuple[np.ndarray, np.ndarray]]  # (uint8 (1, H, W), labels (1, H, W))
    synthetic: list[tuple[np.ndarray, np.ndarray, tuple[float, float, float]]]


def heldout_synthetic(n: int, shape=(24, 160, 160), spacing=(1.0, 0.35, 0.35), preset: str = "hard",
                      first_seed: int = 10**12):
    """`n` procedural volumes with seeds no training run uses (training seeds stay below 10**11)."""
    from fveseg.synthetic import make_nuclei_volume

    return [make_nuclei_volume(shape, seed=first_seed + i, spacing=spacing, preset=preset) for i in range(n)]


def load_validation(data_root: str | Path | None, n_synthetic: int = 2, max_real: int | None = None,
                    real_glob: str = "val/dsb2018_stage1test_fluo/*.npz") -> ValidationSet:
    """Load (and normalise) the validation data once."""
    from fveseg.normalize import normalize
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


def validate(model, data: ValidationSet, order: int, device="cpu", prompt: str = "nuclei") -> dict[str, float]:
    """Mean instance F1 on the real images; Dice and F1 on the procedural volumes (NaN when absent)."""
    from fveseg.metrics import dice, instance_scores

    real_f1 = []
    for image, labels in data.real:
        masks, edges, _ = predict_volume(model, image, [prompt], order, device)
        pred = instances_from(masks[0, 0], edges[0, 0])
        real_f1.append(instance_scores(labels[0], pred)["f1"])
    syn_dice, syn_f1 = [], []
    for image, labels, spacing in data.synthetic:
        masks, edges, _ = predict_volume(model, image, [prompt], order, device)
        pred = instances_from(masks[0], edges[0], spacing)
        syn_dice.append(dice(labels, masks[0] > 0.5))
        syn_f1.append(instance_scores(labels, pred)["f1"])
    nan = float("nan")
    return {
        "real_f1": float(np.mean(real_f1)) if real_f1 else nan,
        "synthetic_dice": float(np.mean(syn_dice)) if syn_dice else nan,
        "synthetic_f1": float(np.mean(syn_f1)) if syn_f1 else nan,
    }
