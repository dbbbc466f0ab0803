"""The engine of ``reference-v2`` (the released BiomedParse v2 weights): the public pipeline.

`ReferenceEngine` applies the public code's own pre- and post-processing, built from the functions of
`fveseg.model.reference_v2.pipeline`, one batch of slices at a time:

* slicing axis by the reference's shape rule (`reference_axis`) when ``axis="auto"``;
* intensities mapped to 0-255 (`fveseg.normalize.intensity`; a uint8 volume passes unchanged, as the
  public code expects), zero-padded to a centred square and bicubic-resized to 512 (`pad_and_resize`);
* order-1 encoding (slice, previous, next) with reflection at the volume's ends, exactly as
  ``ReferenceV2.pack_order1`` on the whole volume; one grey mean/std (``ReferenceV2.normalize``);
* bicubic (antialiased) upsampling of the stride-4 logits and sigmoid (`upsample_probabilities`);
  per-slice NMS at 0.5 / 0.5 across prompts, or the existence gate for one prompt (`gate_or_nms`); argmax
  against a 0.5 background (`merge_classes`); nearest resize back and unpadding (`restore_geometry`).

Memory is bounded by one batch: a batch's slices (plus their two context slices) are read, resized and
run, and its (P, B, 512, 512) probabilities are brought back to the input's geometry and written out
before the next batch. Batches sit on the volume's grid of ``batch_size`` slices and each batch's
Boltzmann sampling is seeded by its first slice, so ``segment(..., start=a, stop=b)`` equals slices
``a:b`` of the whole-volume run (blocks can be segmented separately). With one batch covering the volume
and ``seed=0``, the result equals `segment_volume_reference(..., seed=0)` on the CPU. Set
``model.attention_mode = "det"`` to turn the sampling off (the public code's ``mode="det"``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from fveseg.errors import InputError
from fveseg.inference.device import autocast
from fveseg.inference.gate import label_dtype
from fveseg.model.reference_v2.pipeline import (
    gate_or_nms,
    merge_classes,
    pad_and_resize,
    reference_axis,
    restore_geometry,
    upsample_probabilities,
)
from fveseg.normalize.intensity import apply_range
from fveseg.normalize.intensity import intensity_range as volume_intensity_range

__all__ = [
    "ARCHITECTURE",
    "PROMPT_FORMAT",
    "LICENCE_NOTICE",
    "is_reference_model",
    "is_official_weights",
    "order1_indices",
    "ReferenceEngine",
]

ARCHITECTURE = "reference-v2"
PROMPT_FORMAT = (
    "free text '<target> in <modality>', as the public BiomedParse v2 model was trained, e.g. 'liver in "
    "abdominal CT', 'nuclei in fluorescence microscopy'; CLIP BPE tokens (lower-cased, at most 77). Several "
    "prompts compete per slice (NMS, then argmax against a 0.5 background); one prompt is gated by its "
    "existence probability > 0.5"
)
try:  # the notice the model package ships
    from fveseg.model.reference_v2 import LICENCE_NOTICE
except ImportError:  # pragma: no cover - the package always defines it today
    LICENCE_NOTICE = (
        "BiomedParse v2 weights (Microsoft) are gated and licensed for non-commercial use only: accept the "
        "licence and download them yourself. fveseg never downloads or ships them."
    )


def is_reference_model(model) -> bool:
    """True for a `ReferenceV2` (its ``architecture`` attribute is ``"reference-v2"``)."""
    return getattr(model, "architecture", None) == ARCHITECTURE


def is_official_weights(path: str | Path) -> bool:
    """True for a ``.safetensors`` file of official BiomedParse v2 names with no fveseg JSON beside it.

    Reads only the file's header (key names). A converted pair (``<name>.json`` beside) returns False:
    `fveseg.model.checkpoint.load_checkpoint` reads it.
    """
    path = Path(path)
    if path.suffix != ".safetensors" or not path.is_file() or path.with_suffix(".json").is_file():
        return False
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            keys = handle.keys()
    except Exception:  # noqa: BLE001 - unreadable: let the loader report it with its fix
        return False
    return any(k.removeprefix("model.").startswith("sem_seg_head.") for k in keys)


def load_model(checkpoint):
    """`load_checkpoint`, plus official BiomedParse v2 ``.safetensors`` files with no JSON beside them."""
    from fveseg.model.checkpoint import load_checkpoint

    if is_official_weights(checkpoint):
        from fveseg.model.reference_v2 import load_reference_v2

        return load_reference_v2(checkpoint)
    return load_checkpoint(checkpoint)


def order1_indices(first: int, stop: int, depth: int) -> np.ndarray:
    """(n, 3) volume indices of (slice, previous, next) for slices ``first:stop`` of ``depth``.

    Reflection at the ends (slice 0's previous is slice 1, the last slice's next is the one before it)
    and a one-slice volume repeats its slice, as ``ReferenceV2.pack_order1``.
    """
    index = np.arange(first, stop)
    if depth == 1:
        return np.stack([index] * 3, axis=1)
    before = np.where(index > 0, index - 1, 1)
    after = np.where(index < depth - 1, index + 1, depth - 2)
    return np.stack([index, before, after], axis=1)


def _read_slab(volume, axis: int, lo_index: int, hi_index: int) -> np.ndarray:
    """Slices ``lo_index:hi_index`` along ``axis`` as a numpy (n, H', W') array (reads only those)."""
    index = [slice(None)] * 3
    index[axis] = slice(lo_index, hi_index)
    return np.moveaxis(np.asarray(volume[tuple(index)]), axis, 0)


def _restore_maps(maps: torch.Tensor, pad: tuple[int, int, int, int], side: int) -> np.ndarray:
    """(P, B, S, S) float maps -> (P, B, H', W') float16: nearest resize to the padded square, unpad.

    The same resampling `restore_geometry` applies to the labels, so thresholding the stored
    probabilities reproduces the labels pixel for pixel (up to NMS decided at 512).
    """
    if maps.shape[-1] != side:
        maps = F.interpolate(maps, size=(side, side), mode="nearest")
    top, bottom, left, right = pad
    return maps[..., top : side - bottom, left : side - right].cpu().numpy().astype(np.float16)


class ReferenceEngine:
    """The released BiomedParse v2 weights, run with the public code's own pre- and post-processing
    (module docstring); an engine of `fveseg.inference.engines` (its interface is described there).

    Parameters
    ----------
    model : ReferenceV2
        On ``device``.
    metadata : dict
        Its metadata; ``input_size`` is the side every slice is resized to (512 in the public code).
    device : torch.device
    batch_size : int
        Slices per network call.
    overlap : int
        Unused: slices are resized, never tiled.
    """

    architecture = ARCHITECTURE
    rescales = False  # every slice is resized to the input size: no automatic scale, no z resampling
    regates = False  # the paper's plain per-slice gate

    def __init__(self, model, metadata: dict, device: torch.device, batch_size: int, overlap: int = 0):
        self.model, self.metadata, self.device, self.batch_size = model, metadata, device, batch_size
        self.input_size = int(metadata["input_size"])

    def axis(self, shape: tuple[int, int, int], spacing) -> int:
        """The reference's rule, from the shape only (`reference_axis`)."""
        return reference_axis(shape)

    def order(self, order: int | None) -> int:
        if order not in (None, 1):
            raise InputError(
                f"The BiomedParse v2 weights were trained with FVE order 1 only, got order={order}; leave "
                "the order unset (or 1)."
            )
        return 1

    def value_range(self, volume) -> tuple[float, float]:
        """`fveseg.normalize.intensity_range` with the automatic rule (a uint8 volume passes unchanged)."""
        return volume_intensity_range(volume, "auto")

    def check(self, shape: tuple[int, int, int], axis: int, order: int, scale: float) -> None:
        if scale != 1.0:
            raise InputError(
                f"scale={scale} does not apply to BiomedParse v2: every slice is resized to "
                f"{self.input_size} as in the public code; leave scale at 1."
            )
        if self.input_size % 32:
            raise InputError(
                f"The model's input size {self.input_size} must be a multiple of 32 (the reference uses 512)."
            )

    def encode_text(self, prompts: list[str]):
        """The CLIP text tower's output, computed once per run and shared by every batch."""
        return self.model.encode_text(list(prompts))

    def batches(self, volume, plan, first: int, stop: int):
        """``(first, (images, pad, side))``: order-1 images (B, 3, S, S) int32 of slices ``first:stop``,
        padded to a centred square of ``side`` and resized to S, reading only the slices they need."""
        depth = volume.shape[plan.axis]
        lo, hi = plan.intensity_range
        while first < stop:
            last = min(depth, first + self.batch_size)
            indices = order1_indices(first, last, depth)
            lo_index, hi_index = int(indices.min()), int(indices.max()) + 1
            slab = apply_range(_read_slab(volume, plan.axis, lo_index, hi_index), lo, hi)
            resized, pad, side = pad_and_resize(slab, self.input_size)  # as the reference's imgs.int()
            yield first, (resized[torch.from_numpy(indices - lo_index)], pad, side)
            first = last

    def predict(self, inputs, text, plan, generator, mask_threshold: float, exist_threshold: float):
        """Probabilities and edges (P, B, H', W') float16 ungated, in the input's geometry (nearest from
        the input size), the reference's labels (B, H', W') and existence (P, B) float32."""
        rgb, pad, side = inputs
        model = self.model
        mode = getattr(model, "attention_mode", "boltz")
        with autocast(self.device):
            images = model.normalize(rgb.to(self.device))
            decoded = model.decode(model.encode_image(images), text, mode=mode, generator=generator)
        probs = upsample_probabilities(decoded["mask_logits"].float().transpose(0, 1), self.input_size)
        edges = upsample_probabilities(decoded["edge_logits"].float().transpose(0, 1), self.input_size)
        exist_logits = decoded["exist_logits"].float().T  # (P, B)
        gated = gate_or_nms(probs, exist_logits, threshold=exist_threshold)
        labels = restore_geometry(merge_classes(gated, background=mask_threshold), pad, side, 0)
        return (
            _restore_maps(probs, pad, side),
            _restore_maps(edges, pad, side),
            labels.astype(label_dtype(probs.shape[0])),
            exist_logits.sigmoid().cpu().numpy(),
        )
