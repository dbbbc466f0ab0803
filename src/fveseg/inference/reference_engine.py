"""The Segmenter's path for ``reference-v2`` (the released BiomedParse v2 weights): the public pipeline.

`segment_reference` applies the public code's own pre- and post-processing, built from the functions of
`fveseg.model.reference_v2.pipeline`, one batch of slices at a time:

* slicing axis by the reference's shape rule (`reference_axis`) when ``axis="auto"``;
* intensities mapped to 0-255 (`fveseg.normalize.intensity`; a uint8 volume passes unchanged, as the public
code
  expects), zero-padded to a centred square and bicubic-resized to 512 (`pad_and_resize`);
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

from fveseg.errors import Cancelled, InputError
from fveseg.inference._checks import check_intensity_range, check_slices
from fveseg.inference._outputs import SliceOutputs
from fveseg.inference.gate import SegmentationResult, label_dtype
from fveseg.model.reference_v2.pipeline import (
    gate_or_nms,
    merge_classes,
    pad_and_resize,
    reference_axis,
    restore_geometry,
    upsample_probabilities,
)
from fveseg.normalize.intensity import apply_range

__all__ = [
    "ARCHITECTURE",
    "PROMPT_FORMAT",
    "LICENCE_NOTICE",
    "is_reference_model",
    "is_official_weights",
    "order1_indices",
    "segment_reference",
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


def segment_reference(
    segmenter,
    volume,
    prompts: list[str],
    axis: int | str,
    start: int | None,
    stop: int | None,
    intensity: tuple[float, float] | None,
    mask_threshold: float = 0.5,
    exist_threshold: float = 0.5,
    progress=None,
    cancel=None,
    out=None,
    overwrite: bool = False,
    *,
    order: int | None = None,
    scale: float = 1.0,
) -> SegmentationResult:
    """Segment a checked (D, H, W) volume with a reference-v2 ``segmenter.model`` (see the module doc).

    Parameters
    ----------
    segmenter : fveseg.inference.segmenter.Segmenter
        Supplies the model, device, batch size, seed, autocast and output allocation.
    volume : array-like (D, H, W)
        numpy, zarr or dask; integers or floats.
    prompts : list of str
        Canonical prompts (class ids 1..P in this order).
    axis : "auto" or int
        "auto": the reference's rule (`reference_axis`, from the shape only).
    start, stop : int or None
        Slice range along ``axis`` (checked by the caller's rules).
    intensity : (lo, hi) or None
        Intensities mapped to 0 and 255; None: `fveseg.normalize.intensity_range` of the volume (a uint8
        volume passes unchanged).
    mask_threshold, exist_threshold : float
        Background level of the argmax and existence / NMS score threshold (the reference's 0.5 / 0.5).
    progress, cancel, out, overwrite
        As `fveseg.inference.Segmenter.segment`.
    order, scale : optional
        Only order 1 and scale 1 exist for these weights; anything else raises `InputError`.

    Returns
    -------
    SegmentationResult
        ``probabilities`` and ``edges`` (P, ...) float16 ungated, in the input's geometry (nearest from
        512); ``existence`` (P, n) float32; ``semantic`` the reference's labels.
    """
    from fveseg.normalize.intensity import intensity_range as volume_intensity_range

    if order not in (None, 1):
        raise InputError(
            f"The BiomedParse v2 weights were trained with FVE order 1 only, got order={order}; leave the "
            "order unset (or 1)."
        )
    if scale != 1.0:
        raise InputError(
            f"scale={scale} does not apply to BiomedParse v2: every slice is resized to "
            f"{segmenter.input_size} as in the public code; leave scale at 1."
        )
    shape = tuple(int(s) for s in volume.shape)
    axis = reference_axis(shape) if axis == "auto" else int(axis)
    start, stop = check_slices(start, stop, shape[axis])
    if intensity is None:
        lo, hi = volume_intensity_range(volume, "auto")
    else:
        lo, hi = check_intensity_range(intensity)
    model, device, step = segmenter.model, segmenter.device, segmenter.batch_size
    size = int(segmenter.input_size)
    if size % 32:
        raise InputError(f"The model's input size {size} must be a multiple of 32 (the reference uses 512).")
    mode = getattr(model, "attention_mode", "boltz")
    depth, num, count = shape[axis], len(prompts), stop - start
    out_shape = tuple(count if i == axis else s for i, s in enumerate(shape))
    generator = torch.Generator(device=device)
    dtype = label_dtype(num)
    with SliceOutputs(out, overwrite, num, out_shape, axis, step) as outputs:
        if cancel is not None and cancel():  # before the text tower runs
            raise Cancelled("Segmentation cancelled; no output was kept.")
        with torch.inference_mode():
            text = model.encode_text(list(prompts))  # once per call, shared by every batch
        if progress is not None:
            progress(0, count)
        first = start - start % step  # the volume's batch grid: same batches and seeds for any range
        while first < stop:
            last = min(depth, first + step)
            if cancel is not None and cancel():
                raise Cancelled("Segmentation cancelled; no output was kept.")
            indices = order1_indices(first, last, depth)
            lo_index, hi_index = int(indices.min()), int(indices.max()) + 1
            slab = apply_range(_read_slab(volume, axis, lo_index, hi_index), lo, hi)
            resized, pad, side = pad_and_resize(slab, size)  # (n, S, S) int32, as the reference's imgs.int()
            rgb = resized[torch.from_numpy(indices - lo_index)]  # (B, 3, S, S)
            generator.manual_seed(segmenter.seed * 1_000_003 + first)
            with torch.inference_mode(), segmenter._autocast():
                images = model.normalize(rgb.to(device))
                decoded = model.decode(model.encode_image(images), text, mode=mode, generator=generator)
            with torch.inference_mode():
                probs = upsample_probabilities(decoded["mask_logits"].float().transpose(0, 1), size)
                edges = upsample_probabilities(decoded["edge_logits"].float().transpose(0, 1), size)
                exist_logits = decoded["exist_logits"].float().T  # (P, B)
                gated = gate_or_nms(probs, exist_logits, threshold=exist_threshold)
                labels = restore_geometry(merge_classes(gated, background=mask_threshold), pad, side, 0)
            keep = slice(max(start, first) - first, min(stop, last) - first)
            at = max(start, first) - start
            kept = keep.stop - keep.start
            outputs.put(
                at,
                _restore_maps(probs[:, keep], pad, side),
                _restore_maps(edges[:, keep], pad, side),
                labels[keep].astype(dtype),
                exist_logits.sigmoid()[:, keep].cpu().numpy(),
            )
            del probs, edges, gated, decoded
            if progress is not None:
                progress(at + kept, count)
            first = last
    return outputs.result(list(prompts), start)
