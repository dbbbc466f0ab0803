"""The Segmenter: run a BiomedParse-V checkpoint over a 3D volume, streaming slice batches.

Per batch of slices along the view axis: FVE encoding (`fveseg.fve.encoding.encode_volume`), intensity mapping
with a range computed once per volume (`fveseg.normalize.intensity`), optional rescaling, tiling of large
slices
(`fveseg.inference.tiling`), image features computed once and shared by all prompts, then per-slice existence
gating, NMS and argmax (`fveseg.inference.gate`). Outputs are written slice batch by slice batch into
preallocated arrays (numpy, or a zarr group on disk renamed when complete: `fveseg.inference._outputs`),
so memory beyond the outputs does not grow with the number of slices. At the end the existence gate's
hysteresis along the slicing axis relabels the (few) slices it keeps although their own existence is
below the threshold (`fveseg.inference.gate.regate`), from the stored probabilities.

Batches always sit on the volume's grid of ``batch_size`` slices (0, B, 2B, ...) and are seeded by their
first slice, and the intensity range is the whole volume's, so a slice range ``segment(..., start=a,
stop=b, exist_low=None)`` gives exactly the slices ``a:b`` of the whole-volume result before the
hysteresis: blocks of one volume can be segmented separately (`fveseg.distributed`), concatenated and
regated with the whole volume's existence.

A ``reference-v2`` model (the released BiomedParse v2 weights) runs the public code's own pipeline instead,
with the same streaming, slice ranges, progress, cancel and outputs, and the paper's plain per-slice
existence gate (``exist_low`` is ignored): `fveseg.inference.reference_engine`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from fveseg import fve
from fveseg.errors import Cancelled, InputError
from fveseg.inference._checks import check_intensity_range, check_prompts, check_slices, check_volume
from fveseg.inference._outputs import SliceOutputs
from fveseg.inference.auto_scale import MIN_AUTO_SCALE, scale_for_diameter, surer_at_half, typical_diameter
from fveseg.inference.gate import EXIST_LOW, SegmentationResult, presence, regate, semantic_labels
from fveseg.inference.resample import resample_z, result_on_grid, z_factor
from fveseg.inference.tiling import SliceTiler
from fveseg.model.checkpoint import DEFAULT_METADATA, default_checkpoint, full_metadata
from fveseg.normalize.intensity import apply_range
from fveseg.normalize.intensity import intensity_range as volume_intensity_range

__all__ = ["Segmenter", "SegmentationResult", "select_device"]  # SegmentationResult: from gate

PROBE_SLICES = 8  # slices per window of the first pass that measures object size (scale="auto")


def select_device(device: str | torch.device = "auto") -> torch.device:
    """ "auto" -> cuda, else mps, else cpu; anything else is passed to `torch.device`.

    Raises `InputError` (a user error, before any work) for an unknown name or a device this machine
    does not have."""
    if str(device) != "auto":
        try:
            chosen = torch.device(device)
        except (RuntimeError, TypeError, ValueError) as error:
            raise InputError(f"unknown device {device!r} (fix: auto, cpu, cuda, cuda:1 or mps)") from error
        if chosen.type == "cuda" and not torch.cuda.is_available():
            raise InputError(f"device {device!r}: no CUDA GPU is usable here (fix: --device cpu or auto)")
        if chosen.type == "cuda" and (chosen.index or 0) >= torch.cuda.device_count():
            raise InputError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
        mps = getattr(torch.backends, "mps", None)
        if chosen.type == "mps" and not (mps is not None and mps.is_available()):
            raise InputError(f"device {device!r}: no Apple GPU (MPS) here (fix: --device cpu or auto)")
        return chosen
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


class Segmenter:
    """Text-prompted 3D segmentation with a BiomedParse-V checkpoint.

    Parameters
    ----------
    checkpoint : None, str, Path or torch.nn.Module
        None: the installed default model; a path: `load_checkpoint` (also the released BiomedParse
        v2 ``.ckpt`` / ``.safetensors``, run with the public code's own pre- and post-processing:
        `fveseg.inference.reference_engine`); a module: used as is (its ``metadata`` dict, if any, gives FVE
        order, input size and normalisation; defaults otherwise).
    device : str or torch.device
        "auto" (cuda -> mps -> cpu) or an explicit device.
    batch_size : int
        Slices (or tiles) per network call.
    seed : int
        Seed of the Boltzmann attention sampling: the same input gives the same output.
    overlap : int, optional
        Tile overlap in pixels for slices larger than the model input (default: input size // 4).
    """

    def __init__(
        self,
        checkpoint=None,
        device: str | torch.device = "auto",
        batch_size: int = 8,
        seed: int = 0,
        overlap: int | None = None,
    ):
        if batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size}.")
        self.device = select_device(device)
        if checkpoint is None:
            model = default_checkpoint()
        elif isinstance(checkpoint, torch.nn.Module):
            model = checkpoint
        else:
            from fveseg.inference.reference_engine import (
                load_model,  # load_checkpoint + official .safetensors
            )

            model = load_model(checkpoint)
        self.model = model.to(self.device).eval()
        extra = None
        if getattr(model, "architecture", None) == "reference-v2":  # no config; its input side is 512
            extra = {"input_size": model.metadata.get("input_size") or model.input_size}
        self.metadata = full_metadata(model, extra)
        self.input_size = int(self.metadata["input_size"])
        self.batch_size = batch_size
        self.seed = seed
        self.overlap = self.input_size // 4 if overlap is None else int(overlap)
        norm = self.metadata.get("normalization", DEFAULT_METADATA["normalization"])
        self._mean = torch.tensor(norm["mean"], dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(norm["std"], dtype=torch.float32, device=self.device).view(1, 3, 1, 1)

    # -- network --------------------------------------------------------------------------------------
    def _autocast(self):
        if self.device.type == "cuda":
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            return torch.autocast("cuda", dtype=dtype)
        return contextlib.nullcontext()

    def _predict_batch(self, images: np.ndarray, text, lo: float, hi: float, scale: float, generator):
        """FVE images (B, 3, h, w) -> probabilities, edges (P, B, h, w) float32 and existence (P, B)."""
        batch = torch.from_numpy(apply_range(images, lo, hi)).to(self.device).float()
        h, w = batch.shape[-2:]
        if scale != 1.0:
            size = (max(1, round(h * scale)), max(1, round(w * scale)))
            batch = F.interpolate(batch, size=size, mode="bilinear", align_corners=False, antialias=scale < 1)
        tiler = SliceTiler(batch.shape[-2], batch.shape[-1], self.input_size, self.overlap)
        tiles = (tiler.split(batch, fill=0.0) - self._mean) / self._std
        masks, edges, exist = [], [], []
        with self._autocast():
            for start in range(0, tiles.shape[0], self.batch_size):
                features = self.model.encode_image(tiles[start : start + self.batch_size])
                out = self.model.decode(features, text, generator=generator, return_aux=False)
                masks.append(out["mask_logits"].float().sigmoid())
                edges.append(out["edge_logits"].float().sigmoid())
                exist.append(out["exist_logits"].float().sigmoid())
        masks, edges = tiler.merge(torch.cat(masks)), tiler.merge(torch.cat(edges))
        exist = torch.cat(exist).unflatten(0, (-1, tiler.tiles_per_slice)).amax(1)  # any tile -> present
        if scale != 1.0:
            masks = F.interpolate(masks, size=(h, w), mode="bilinear", align_corners=False)
            edges = F.interpolate(edges, size=(h, w), mode="bilinear", align_corners=False)
        to_np = lambda t: t.transpose(0, 1).cpu().numpy()  # noqa: E731 - (B, P, ..) -> (P, B, ..)
        return to_np(masks), to_np(edges), exist.T.cpu().numpy()

    # -- public ---------------------------------------------------------------------------------------
    def segment(
        self,
        volume,
        prompts: list[str] | str,
        spacing: tuple[float, float, float] | None = None,
        axis: int | str = "auto",
        order: int | None = None,
        mask_threshold: float = 0.5,
        exist_threshold: float = 0.5,
        scale: float | str = "auto",
        progress: Callable[[int, int], Any] | None = None,
        cancel: Callable[[], bool] | None = None,
        out: str | Path | None = None,
        overwrite: bool = False,
        *,
        start: int | None = None,
        stop: int | None = None,
        intensity_range: tuple[float, float] | None = None,
        exist_low: float | None = EXIST_LOW,
        isotropic: bool = False,
    ) -> SegmentationResult:
        """Segment ``prompts`` in a (D, H, W) volume (numpy, zarr or dask; 2D is taken as D = 1).

        Parameters
        ----------
        spacing : (dz, dy, dx), optional
            Voxel size in physical units; used to pick the view when ``axis="auto"``.
        axis : "auto" or int
            Slicing axis (paper rule via `fveseg.fve.encoding.select_view` when "auto").
        order : int, optional
            FVE order; default from the checkpoint.
        mask_threshold, exist_threshold : float
            Mask probability and slice existence thresholds for ``semantic``.
        exist_low : float or None
            Hysteresis of the existence gate (`fveseg.inference.gate.presence`): a slice whose existence is
            above it but not above ``exist_threshold`` keeps the prompt when it continues, along the
            slicing axis, a run of slices above the threshold. None (or ``exist_threshold``): the plain
            per-slice gate. The run is looked for among the segmented slices only, so a range
            (``start``/``stop``) can differ from the whole-volume result on slices whose run crosses
            its ends; segment ranges with ``exist_low=None`` and finish with
            `fveseg.inference.gate.regate` on the whole volume's existence, as the block mode does.
        scale : float or "auto"
            Rescale slices by this factor before the network (objects larger than trained: < 1).
            "auto" first segments a few slices as they are (`_probe_scale`), measures the objects
            (`fveseg.inference.auto_scale`) and shrinks the slices when they are much larger than the model
            was trained on (enlarges them 1.25 times when clearly smaller); the same for every slice
            range of a volume. The value used is ``result.scale``.
        progress : callable(done, total), optional
            Called with slices done (of ``stop - start``) after each batch.
        cancel : callable() -> bool, optional
            Checked before each batch; True raises `Cancelled` and nothing is kept.
        out : path, optional
            Write the arrays into a new zarr group there (volumes larger than RAM).
        overwrite : bool
            Replace an existing ``out``.
        start, stop : int, optional
            Segment only slices ``[start, stop)`` along the view axis (default: all N = shape[axis]);
            pass an explicit ``axis`` with them. Only the slabs those slices need (with their FVE context
            from outside the range) are read from a lazy volume. With ``exist_low=None`` the result
            equals slices ``start:stop`` of the whole-volume result before the hysteresis exactly:
            batches stay on the volume's grid of ``batch_size``
            slices, so a range whose ends are not multiples of ``batch_size`` also computes the rest of
            its first and last batch (at most 2 * (batch_size - 1) slices) and discards it.
        intensity_range : (lo, hi), optional
            Intensities mapped to 0 and 255 (see `fveseg.normalize.apply_range`). Default: computed from
            the whole volume with the checkpoint's modality rules (`fveseg.normalize.intensity_range`),
            which subsamples all of it; pass the value computed once to segment blocks cheaply (the
            volume is then not checked for being all NaN).
        isotropic : bool
            With a known ``spacing`` whose z step differs from the pixel size, resample z to the pixel
            size before the network and sample the outputs back at the volume's slices
            (`fveseg.inference.resample`); the whole volume only (no ``start``/``stop``/``out``).

        Returns
        -------
        SegmentationResult
            With n = stop - start slices along ``axis``: ``probabilities`` and ``edges`` (P, ...) float16
            and ``semantic`` shaped like the volume with shape[axis] = n, ``existence`` (P, n) float32,
            and ``start`` recording where the slices begin.
        """
        canonical = check_prompts(prompts)
        # A given range was computed from the whole volume; the all-NaN check would re-read slices from
        # all of it on every block.
        volume = check_volume(volume, check_finite=intensity_range is None)
        shape = tuple(int(s) for s in volume.shape)
        number = isinstance(scale, int | float) and not isinstance(scale, bool)
        if scale != "auto" and not (number and math.isfinite(scale) and scale > 0):
            raise InputError(f"scale must be a positive number or 'auto', got {scale!r}.")
        bounds = [("mask_threshold", mask_threshold), ("exist_threshold", exist_threshold)]
        for name, value in bounds + ([("exist_low", exist_low)] if exist_low is not None else []):
            if not 0.0 <= value <= 1.0:
                raise InputError(f"{name} must be in [0, 1], got {value!r}.")
        if axis == "auto":
            axis = fve.select_view(shape, spacing) if not self._is_reference else "auto"
        elif not isinstance(axis, int | np.integer) or not 0 <= axis < 3:
            raise InputError(f"axis must be 'auto', 0, 1 or 2, got {axis!r}.")
        factor = z_factor(spacing) if isotropic and not self._is_reference else None
        if factor is not None and start is None and stop is None and out is None:
            even = (min(spacing[1:]), float(spacing[1]), float(spacing[2]))
            result = self.segment(
                resample_z(volume, factor), canonical, spacing=even, axis=axis, order=order,
                mask_threshold=mask_threshold, exist_threshold=exist_threshold, scale=scale,
                progress=progress, cancel=cancel, intensity_range=self._value_range(volume, intensity_range),
                exist_low=exist_low,
            )  # fmt: skip
            return result_on_grid(result, shape[0], factor)
        if self._is_reference:  # the released BiomedParse v2 weights: the public code's own pipeline
            from fveseg.inference.reference_engine import segment_reference

            scale = 1.0 if scale == "auto" else scale  # its own fixed input size
            return segment_reference(
                self,
                volume,
                canonical,
                axis,
                start,
                stop,
                intensity_range,
                mask_threshold,
                exist_threshold,
                progress,
                cancel,
                out,
                overwrite,
                order=order,
                scale=scale,
            )
        axis = int(axis)
        start, stop = check_slices(start, stop, shape[axis])
        settings = self.metadata.get("fve", DEFAULT_METADATA["fve"])
        order = self._order(order)
        side = min(s for i, s in enumerate(shape) if i != axis)
        if order > 1 and 2 ** (order - 1) > side:
            raise InputError(
                f"FVE order {order} halves each slice {order - 1} times, more than its {side} pixels allow "
                "(fix: --order 1, the order the bundled models were trained with)"
            )
        lo, hi = self._value_range(volume, intensity_range)
        if scale == "auto":
            probe = dict(mask_threshold=mask_threshold, exist_threshold=exist_threshold, cancel=cancel)
            probe["exist_low"] = exist_low
            scale, whole = self._probe_scale(volume, canonical, axis, order, (lo, hi), **probe)
            if scale == 1.0 and whole is not None and out is None and (start, stop) == (0, shape[axis]):
                if progress is not None:  # the probe was the whole run (small volumes at native size)
                    progress(stop - start, stop - start)
                return whole

        with torch.inference_mode():
            text = self.model.encode_text(canonical).to(self.device)  # once per call
        num, count = len(canonical), stop - start
        out_shape = tuple(count if i == axis else s for i, s in enumerate(shape))
        generator = torch.Generator(device=self.device)
        step = self.batch_size
        with SliceOutputs(out, overwrite, num, out_shape, axis, step) as outputs:
            if progress is not None:
                progress(0, count)
            batches = fve.encode_volume(
                volume,
                order=order,
                axis=axis,
                pad=settings.get("pad", "edge"),
                downsample=settings.get("downsample", "mean"),
                start=start - start % step,  # the volume's batch grid: same batches, seeds and sums
                stop=min(shape[axis], -(-stop // step) * step),
                batch_size=step,
                channels_first=True,  # the network's layout: no interleaving, no permute
            )
            for first, images in batches:
                if cancel is not None and cancel():
                    raise Cancelled("Segmentation cancelled; no output was kept.")
                generator.manual_seed(self.seed * 1_000_003 + first)
                with torch.inference_mode():
                    probs, edges, exist = self._predict_batch(images, text, lo, hi, float(scale), generator)
                keep = slice(max(start, first) - first, min(stop, first + len(images)) - first)
                at = max(start, first) - start
                exist = exist[:, keep]
                probs = probs[:, keep].astype(np.float16)  # labels from the stored values: rethreshold agrees
                labels = semantic_labels(probs, exist, mask_threshold, exist_threshold)
                outputs.put(at, probs, edges[:, keep].astype(np.float16), labels, exist)
                if progress is not None:
                    progress(at + exist.shape[1], count)
            # the hysteresis needs every slice's existence: relabel the few slices it decides otherwise
            regate(outputs.store["probabilities"], outputs.store["semantic"], outputs.existence, axis,
                   mask_threshold, exist_threshold, exist_low)  # fmt: skip
        return outputs.result(canonical, start, float(scale))

    def _probe_scale(self, volume, prompts, axis, order, value_range, **thresholds):
        """The automatic scale: segment up to two windows of `PROBE_SLICES` slices (at a third and two
        thirds of the depth, on the batch grid) as they are, measure each prompt's objects and take the
        largest scale (the found prompt with the smallest objects decides; small objects are enlarged). Then
        guard against a first pass fooled into fragments (very large nuclei, or noise, seen as texture):
        segment the windows at half the scale (half of 1 after an enlargement) and take half when the
        network is far surer there (`object_size.surer_at_half`). Depends only on the whole volume, so
        every slice range of it gets the same scale. Returns ``(scale, result)``, ``result`` the
        native-size probe when it covered the whole volume, else None."""
        depth, step = volume.shape[axis], self.batch_size
        width = -(-max(PROBE_SLICES, step) // step) * step
        if depth <= 2 * width:
            windows = [(0, depth)]
        else:
            firsts = sorted({c - c % step for c in (depth // 3, 2 * depth // 3)})
            windows = [(first, min(depth, first + width)) for first in firsts]

        def probe(scale):  # per prompt: (masks, gated probabilities) of the windows; the last result
            masks, probabilities = [[] for _ in prompts], [[] for _ in prompts]
            for first, stop in windows:
                result = self.segment(
                    volume, prompts, axis=axis, order=order, scale=scale, start=first, stop=stop,
                    intensity_range=value_range, **thresholds,
                )  # fmt: skip
                semantic = np.moveaxis(np.asarray(result.semantic), axis, 0)
                present = presence(result.existence, thresholds["exist_threshold"], thresholds["exist_low"])
                present = present[:, :, None, None]
                gated = np.moveaxis(np.asarray(result.probabilities), axis + 1, 1) * present
                for index in range(len(prompts)):
                    masks[index].append(semantic == index + 1)
                    probabilities[index].append(gated[index])
            return [np.concatenate(m) for m in masks], np.concatenate(sum(probabilities, [])), result

        masks, native, first_result = probe(1.0)
        # prompts found nowhere (absent targets) have nothing to measure and do not vote
        diameters = [d for d in (typical_diameter(m) for m in masks) if d > 0]
        scale = max((scale_for_diameter(d) for d in diameters), default=1.0)
        shrunk = min(scale, 1.0)  # an enlargement is checked against native size, already segmented
        half = round(shrunk * 10) / 20  # steps of 0.05, like scale_for_diameter
        if half >= MIN_AUTO_SCALE:
            at_scale = native if shrunk == 1.0 else probe(shrunk)[1]
            if surer_at_half(at_scale, probe(half)[1]):
                scale = half
        return scale, (first_result if windows == [(0, depth)] else None)

    def auto_scale(
        self,
        volume,
        prompts: list[str] | str,
        axis: int = 0,
        order: int | None = None,
        mask_threshold: float = 0.5,
        exist_threshold: float = 0.5,
        intensity_range: tuple[float, float] | None = None,
        exist_low: float | None = EXIST_LOW,
    ) -> float:
        """The in-plane scale ``segment(..., scale="auto")`` uses for this volume and view ``axis``.

        Compute it once and pass it as ``scale`` when segmenting a volume in slice ranges (blocks), so
        the probe does not run for every range. Same arguments as `segment`; 1.0 for reference-v2.
        """
        canonical = check_prompts(prompts)
        volume = check_volume(volume, check_finite=intensity_range is None)
        if self._is_reference:
            return 1.0
        value_range = self._value_range(volume, intensity_range)
        thresholds = dict(mask_threshold=mask_threshold, exist_threshold=exist_threshold, exist_low=exist_low)
        order = self._order(order)
        return self._probe_scale(volume, canonical, int(axis), order, value_range, **thresholds)[0]

    def _order(self, order: int | None) -> int:
        """The FVE order to run: the given one, else the checkpoint's."""
        settings = self.metadata.get("fve", DEFAULT_METADATA["fve"])
        return int(settings.get("order", 1) if order is None else order)

    def _value_range(self, volume, intensity_range) -> tuple[float, float]:
        """The given intensity range, checked, or the volume's with the checkpoint's modality rules."""
        if intensity_range is not None:
            return check_intensity_range(intensity_range)
        intensity = self.metadata.get("intensity") or {}
        return volume_intensity_range(volume, intensity.get("modality") or "auto", intensity.get("window"))

    @property
    def _is_reference(self) -> bool:
        return getattr(self.model, "architecture", None) == "reference-v2"
