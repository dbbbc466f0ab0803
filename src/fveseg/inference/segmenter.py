"""The Segmenter: run a checkpoint over a 3D volume, streaming slice batches; a predictor in two steps.

`Segmenter.plan` decides once per volume what every prompt shares (`fveseg.inference.plan.SegmentPlan`:
view axis, FVE order, intensity range from the whole volume, the automatic in-plane scale, z resampling);
`Segmenter.run` answers prompts with it; `Segmenter.segment` does both. The plan is small and picklable,
so the dask path computes it once and ships it to every block.

`run` is the one batch loop of every architecture: per batch of slices along the view axis, the engine
of the model's architecture (`fveseg.inference.engines`: FVE encoding, intensity mapping, rescaling,
tiling, the network, existence gate and argmax for this project's checkpoints; the public pipeline for
the released BiomedParse v2 weights) turns the batch into probabilities, edges, labels and existence,
written slice batch by slice batch into preallocated arrays (numpy, or a zarr group on disk renamed when
complete: `fveseg.inference._outputs`), so memory beyond the outputs does not grow with the number of
slices. At the end the existence gate's hysteresis along the slicing axis relabels the (few) slices it
keeps although their own existence is below the threshold (`fveseg.inference.gate.regate`), from the
stored probabilities (not for the v2 weights: the paper's plain per-slice gate).

Batches always sit on the volume's grid of ``batch_size`` slices (0, B, 2B, ...) and are seeded by their
first slice, and the intensity range is the whole volume's, so a slice range ``run(..., start=a,
stop=b, exist_low=None)`` gives exactly the slices ``a:b`` of the whole-volume result before the
hysteresis: blocks of one volume can be segmented separately (`fveseg.distributed`), concatenated and
regated with the whole volume's existence.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fveseg.errors import Cancelled, InputError
from fveseg.inference._checks import check_intensity_range, check_prompts, check_slices, check_volume
from fveseg.inference._outputs import SliceOutputs
from fveseg.inference.auto_scale import MIN_AUTO_SCALE, scale_for_diameter, surer_at_half, typical_diameter
from fveseg.inference.device import select_device
from fveseg.inference.engines import engine_for
from fveseg.inference.gate import EXIST_LOW, SegmentationResult, presence, regate, semantic_labels, take_slab
from fveseg.inference.plan import SegmentPlan
from fveseg.inference.reference_engine import load_model
from fveseg.inference.resample import resample_z, result_on_grid, z_factor
from fveseg.model.checkpoint import default_checkpoint, full_metadata

__all__ = ["Segmenter", "SegmentationResult", "SegmentPlan", "select_device"]  # re-exported for callers

PROBE_SLICES = 8  # slices per window of the first pass that measures object size (scale="auto")


class Segmenter:
    """Text-prompted 3D segmentation with a BiomedParse-V checkpoint.

    Parameters
    ----------
    checkpoint : None, str, Path or torch.nn.Module
        None: the installed default model; a path: `load_checkpoint` (also the released BiomedParse
        v2 ``.ckpt`` / ``.safetensors``, run with the public code's own pre- and post-processing:
        `fveseg.inference.reference_engine.ReferenceEngine`); a module: used as is (its ``metadata``
        dict, if any, gives FVE order, input size and normalisation; defaults otherwise).
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
            model = load_model(checkpoint)  # load_checkpoint + official v2 .safetensors
        self.model = model.to(self.device).eval()
        self.metadata = full_metadata(model)
        self.input_size = int(self.metadata["input_size"])
        self.batch_size = batch_size
        self.seed = seed
        self.overlap = self.input_size // 4 if overlap is None else int(overlap)
        #: What differs between architectures (`fveseg.inference.engines.ENGINES`).
        self.engine = engine_for(self.model, self.metadata, self.device, batch_size, self.overlap)

    # -- the plan: what every prompt shares ------------------------------------------------------------
    def plan(
        self,
        volume,
        spacing: tuple[float, float, float] | None = None,
        prompts: list[str] | str | None = None,
        axis: int | str = "auto",
        order: int | None = None,
        scale: float | str = "auto",
        *,
        intensity_range: tuple[float, float] | None = None,
        isotropic: bool = False,
        mask_threshold: float = 0.5,
        exist_threshold: float = 0.5,
        exist_low: float | None = EXIST_LOW,
        cancel: Callable[[], bool] | None = None,
        progress: Callable[[int, int], Any] | None = None,
    ) -> SegmentPlan:
        """Decide, once for this (D, H, W) volume, what `run` needs: see `SegmentPlan`.

        Parameters
        ----------
        volume : array-like (D, H, W)
            numpy, zarr or dask (2D is taken as D = 1); read lazily.
        spacing : (dz, dy, dx), optional
            Voxel size in physical units; picks the view when ``axis="auto"`` and the z resampling.
        prompts : str or list of str, optional
            Whose objects the automatic scale measures (needed only for ``scale="auto"``).
        axis, order, scale, intensity_range, isotropic
            As `segment`; "auto" and None resolved here.
        mask_threshold, exist_threshold, exist_low
            The thresholds the automatic scale's probe segments with (use those of the run).
        cancel : callable() -> bool, optional
            Checked before each batch of the probe.
        progress : callable(done, total), optional
            Called with the probe's slices done after each of its batches (``total`` is its estimate until
            the first pass has measured the objects).

        Returns
        -------
        SegmentPlan
            For ``isotropic`` with a known anisotropic ``spacing``, ``axis``, ``scale`` and the shape the
            network sees are those of the z-resampled volume (``z_factor``); ``shape`` is the input's.
        """
        thresholds = dict(mask_threshold=mask_threshold, exist_threshold=exist_threshold, exist_low=exist_low)
        steps = self._plan_steps(
            volume, spacing, prompts, axis, order, scale, intensity_range, isotropic, thresholds, cancel
        )
        return _drive(steps, progress)

    def _plan_steps(
        self, volume, spacing, prompts, axis, order, scale, intensity_range, isotropic, thresholds, cancel
    ):
        """`plan` as a generator: yields ``(done, total)`` slices of the automatic scale's probe."""
        volume = check_volume(volume, check_finite=intensity_range is None)
        canonical = None if prompts is None else check_prompts(prompts)
        number = isinstance(scale, int | float) and not isinstance(scale, bool)
        if scale != "auto" and not (number and math.isfinite(scale) and scale > 0):
            raise InputError(f"scale must be a positive number or 'auto', got {scale!r}.")
        thresholds = _check_thresholds(**thresholds)
        if axis != "auto" and (not isinstance(axis, int | np.integer) or not 0 <= axis < 3):
            raise InputError(f"axis must be 'auto', 0, 1 or 2, got {axis!r}.")
        engine, shape = self.engine, tuple(int(s) for s in volume.shape)
        order = engine.order(order)
        factor = z_factor(spacing) if isotropic and engine.rescales else None
        value_range = self._value_range(volume, intensity_range)
        reuse: dict = {}
        if factor is not None:
            volume = reuse["resampled"] = resample_z(volume, factor)
            spacing = (min(spacing[1:]), float(spacing[1]), float(spacing[2]))
        seen = tuple(int(s) for s in volume.shape)
        axis = engine.axis(seen, spacing) if axis == "auto" else int(axis)
        engine.check(seen, axis, order, 1.0 if scale == "auto" else float(scale))
        plan = SegmentPlan(shape, axis, order, value_range, 1.0, factor, reuse=reuse)
        if scale != "auto":
            return replace(plan, scale=float(scale))
        if not engine.rescales:
            return plan
        if canonical is None:
            raise InputError("The automatic scale measures the prompts' objects: pass prompts, or a scale.")
        scale = yield from self._probe_steps(volume, replace(plan, shape=seen), canonical, thresholds, cancel)
        return replace(plan, scale=float(scale))

    def _probe_steps(self, volume, plan: SegmentPlan, prompts: list[str], thresholds: dict, cancel):
        """The automatic scale: segment up to two windows of `PROBE_SLICES` slices (at a third and two
        thirds of the depth, on the batch grid) as they are, measure each prompt's objects and take the
        largest scale (the found prompt with the smallest objects decides; small objects are enlarged). Then
        guard against a first pass fooled into fragments (very large nuclei, or noise, seen as texture):
        segment the windows at half the scale (half of 1 after an enlargement) and take half when the
        network is far surer there (`fveseg.inference.auto_scale.surer_at_half`). Depends only on the whole
        volume, so every slice range of it gets the same scale. A generator: yields ``(done, total)``
        probe slices and returns the scale. The windows' results stay in ``plan.reuse``: the run takes the
        batches they hold at the scale chosen (`_probed_batch`) instead of segmenting them again."""
        depth, step = volume.shape[plan.axis], self.batch_size
        width = -(-max(PROBE_SLICES, step) // step) * step
        if depth <= 2 * width:
            windows = [(0, depth)]
        else:
            firsts = sorted({c - c % step for c in (depth // 3, 2 * depth // 3)})
            windows = [(first, min(depth, first + width)) for first in firsts]

        per_pass = sum(stop - first for first, stop in windows)
        passes = {"done": 0, "total": 2}  # native size and the half-scale check, until measured

        def probe(scale):  # per prompt: (masks, gated probabilities) of the windows
            masks, probabilities = [[] for _ in prompts], [[] for _ in prompts]
            for first, stop in windows:
                steps = self._run_steps(
                    volume, replace(plan, scale=scale), prompts, start=first, stop=stop, cancel=cancel,
                    **thresholds,
                )  # fmt: skip
                before = passes["done"] * per_pass + sum(b - a for a, b in windows if a < first)
                total = passes["total"] * per_pass
                result = yield from _mapped(
                    steps, lambda done, _, before=before, total=total: (before + done, total)
                )
                plan.reuse.setdefault("windows", []).append((scale, tuple(prompts), first, stop, result))
                semantic = np.moveaxis(np.asarray(result.semantic), plan.axis, 0)
                present = presence(result.existence, thresholds["exist_threshold"], thresholds["exist_low"])
                present = present[:, :, None, None]
                gated = np.moveaxis(np.asarray(result.probabilities), plan.axis + 1, 1) * present
                for index in range(len(prompts)):
                    masks[index].append(semantic == index + 1)
                    probabilities[index].append(gated[index])
            passes["done"] += 1
            return [np.concatenate(m) for m in masks], np.concatenate(sum(probabilities, []))

        masks, native = yield from probe(1.0)
        # prompts found nowhere (absent targets) have nothing to measure and do not vote
        diameters = [d for d in (typical_diameter(m) for m in masks) if d > 0]
        scale = max((scale_for_diameter(d) for d in diameters), default=1.0)
        shrunk = min(scale, 1.0)  # an enlargement is checked against native size, already segmented
        half = round(shrunk * 10) / 20  # steps of 0.05, like scale_for_diameter
        passes["total"] = 1 + (half >= MIN_AUTO_SCALE) * (1 + (shrunk != 1.0))
        if half >= MIN_AUTO_SCALE:
            at_scale = native if shrunk == 1.0 else (yield from probe(shrunk))[1]
            if surer_at_half(at_scale, (yield from probe(half))[1]):
                scale = half
        return scale

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
        """The in-plane scale ``segment(..., scale="auto")`` uses for this volume and view ``axis``
        (``plan(...).scale``); 1.0 for reference-v2."""
        thresholds = dict(mask_threshold=mask_threshold, exist_threshold=exist_threshold, exist_low=exist_low)
        return self.plan(
            volume, None, prompts, axis, order, intensity_range=intensity_range, **thresholds
        ).scale

    # -- the run: one batch loop for every architecture ---------------------------------------------
    def run(
        self,
        volume,
        plan: SegmentPlan,
        prompts: list[str] | str,
        mask_threshold: float = 0.5,
        exist_threshold: float = 0.5,
        progress: Callable[[int, int], Any] | None = None,
        cancel: Callable[[], bool] | None = None,
        out: str | Path | None = None,
        overwrite: bool = False,
        *,
        start: int | None = None,
        stop: int | None = None,
        exist_low: float | None = EXIST_LOW,
    ) -> SegmentationResult:
        """Segment ``prompts`` in the (D, H, W) ``volume`` that ``plan`` was made for (`plan`).

        Arguments and result as `segment`. A plan with ``z_factor`` runs the whole volume only.
        """
        steps = self._iter_run(volume, plan, prompts, mask_threshold, exist_threshold, exist_low, cancel, out,
                               overwrite, start, stop)  # fmt: skip
        return _drive(steps, progress)

    def _iter_run(self, volume, plan, prompts, mask_threshold, exist_threshold, exist_low, cancel, out,
                  overwrite, start, stop):  # fmt: skip
        """`run` as a generator (its arguments checked here): yields ``(done, total)`` run slices; on the
        z-resampled volume for a plan with ``z_factor``, the result sampled back at the volume's slices."""
        canonical = check_prompts(prompts)
        volume = check_volume(volume, check_finite=False)
        thresholds = _check_thresholds(mask_threshold, exist_threshold, exist_low)
        if tuple(int(s) for s in volume.shape) != tuple(plan.shape):
            raise InputError(
                f"This plan was made for a volume of shape {tuple(plan.shape)}, not {tuple(volume.shape)}; "
                "make one for this volume with Segmenter.plan."
            )
        if plan.z_factor is not None and (start is not None or stop is not None or out is not None):
            raise InputError("A plan with z resampling (isotropic) runs the whole volume, in memory only.")
        keywords = dict(cancel=cancel, out=out, overwrite=overwrite, start=start, stop=stop, **thresholds)
        if plan.z_factor is None:
            return (yield from self._run_steps(volume, plan, canonical, **keywords))
        resampled = plan.reuse.pop("resampled", None)
        resampled = resample_z(volume, plan.z_factor) if resampled is None else resampled
        seen = replace(plan, shape=tuple(int(s) for s in resampled.shape), z_factor=None)
        result = yield from self._run_steps(resampled, seen, canonical, **keywords)
        return result_on_grid(result, plan.shape[0], plan.z_factor)

    def _run_steps(self, volume, plan, prompts, mask_threshold, exist_threshold, exist_low, cancel=None,
                   out=None, overwrite=False, start=None, stop=None):  # fmt: skip
        """The batch loop on the volume the network sees (checked arguments), as a generator: yields
        ``(done, total)`` slices after each batch (and ``(0, total)`` first), returns the result."""
        depth, axis, step = volume.shape[plan.axis], plan.axis, self.batch_size
        start, stop = check_slices(start, stop, depth)
        engine = self.engine
        with torch.inference_mode():
            text = engine.encode_text(prompts)  # once per call, shared by every batch
        count = stop - start
        out_shape = tuple(count if i == axis else s for i, s in enumerate(volume.shape))
        generator = torch.Generator(device=self.device)
        with SliceOutputs(out, overwrite, len(prompts), out_shape, axis, step) as outputs:
            yield 0, count
            # the volume's batch grid: the same batches, seeds and sums for any slice range
            for first, inputs in engine.batches(
                volume, plan, start - start % step, min(depth, -(-stop // step) * step)
            ):
                if cancel is not None and cancel():
                    raise Cancelled("Segmentation cancelled; no output was kept.")
                probed = _probed_batch(plan, prompts, first, min(depth, first + step))
                if probed is not None:  # the automatic scale's probe segmented this batch already
                    probs, edges, exist = probed
                    labels = semantic_labels(probs, exist, mask_threshold, exist_threshold)
                else:
                    generator.manual_seed(self.seed * 1_000_003 + first)
                    with torch.inference_mode():
                        probs, edges, labels, exist = engine.predict(
                            inputs, text, plan, generator, mask_threshold, exist_threshold
                        )
                keep = slice(max(start, first) - first, min(stop, first + exist.shape[1]) - first)
                at = max(start, first) - start
                outputs.put(at, probs[:, keep], edges[:, keep], labels[keep], exist[:, keep])
                yield at + keep.stop - keep.start, count
            if engine.regates:  # the hysteresis needs every slice's existence: relabel the few it changes
                regate(outputs.store["probabilities"], outputs.store["semantic"], outputs.existence, axis,
                       mask_threshold, exist_threshold, exist_low)  # fmt: skip
        return outputs.result(prompts, start, float(plan.scale))

    # -- both steps -------------------------------------------------------------------------------------
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
            "auto" first segments a few slices as they are (`_probe_steps`), measures the objects
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
        steps = self.iter_segment(
            volume, prompts, spacing, axis, order, mask_threshold, exist_threshold, scale, cancel, out,
            overwrite, start=start, stop=stop, intensity_range=intensity_range, exist_low=exist_low,
            isotropic=isotropic,
        )  # fmt: skip

        def report(stage: str, done: int, total: int) -> None:  # the run's slices, as `run` reports them
            if progress is not None and stage == "segment":
                progress(done, total)

        return _drive(steps, report)

    def iter_segment(
        self,
        volume,
        prompts: list[str] | str,
        spacing: tuple[float, float, float] | None = None,
        axis: int | str = "auto",
        order: int | None = None,
        mask_threshold: float = 0.5,
        exist_threshold: float = 0.5,
        scale: float | str = "auto",
        cancel: Callable[[], bool] | None = None,
        out: str | Path | None = None,
        overwrite: bool = False,
        *,
        start: int | None = None,
        stop: int | None = None,
        intensity_range: tuple[float, float] | None = None,
        exist_low: float | None = EXIST_LOW,
        isotropic: bool = False,
    ) -> Generator[tuple[str, int, int], None, SegmentationResult]:
        """`segment` as a generator, for callers that show progress from their own loop (the napari
        widget's worker): yields ``(stage, done, total)`` with stage ``"probe"`` (the automatic scale's
        slices) or ``"segment"`` (the run's slices) after each batch, and returns the result. Arguments as
        `segment`."""
        whole = start is None and stop is None and out is None  # z resampling needs the whole volume
        thresholds = dict(mask_threshold=mask_threshold, exist_threshold=exist_threshold, exist_low=exist_low)
        planning = self._plan_steps(
            volume,
            spacing,
            prompts,
            axis,
            order,
            scale,
            intensity_range,
            isotropic and whole,
            thresholds,
            cancel,
        )
        plan = yield from _mapped(planning, lambda done, total: ("probe", done, total))
        running = self._iter_run(
            volume,
            plan,
            prompts,
            **thresholds,
            cancel=cancel,
            out=out,
            overwrite=overwrite,
            start=start,
            stop=stop,
        )
        return (yield from _mapped(running, lambda done, total: ("segment", done, total)))

    def _value_range(self, volume, intensity_range) -> tuple[float, float]:
        """The given intensity range, checked, or the volume's by the engine's rules."""
        if intensity_range is not None:
            return check_intensity_range(intensity_range)
        return self.engine.value_range(volume)


def _drive(steps: Generator, progress: Callable[..., Any] | None):
    """Run a generator of progress updates to its end, passing each update to ``progress``; its result."""
    while True:
        try:
            update = next(steps)
        except StopIteration as end:
            return end.value
        if progress is not None:
            progress(*update)


def _mapped(steps: Generator, change: Callable[[int, int], tuple]) -> Generator:
    """``steps``' ``(done, total)`` updates passed through ``change``; returns its result."""
    while True:
        try:
            update = next(steps)
        except StopIteration as end:
            return end.value
        yield change(*update)


def _probed_batch(plan: SegmentPlan, prompts: list[str], first: int, last: int):
    """Probabilities, edges (P, B, ...) and existence (P, B) of batch ``first:last`` from a window the
    automatic scale's probe segmented at the plan's scale, or None. The probe's batches sit on the same
    grid with the same seeds and inputs, so these are exactly what the network would compute again."""
    for scale, probed, start, stop, result in plan.reuse.get("windows", ()):
        if scale == plan.scale and probed == tuple(prompts) and start <= first and last <= stop:
            at = slice(first - start, last - start)
            return (
                take_slab(result.probabilities, plan.axis, at.start, at.stop, 1),
                take_slab(result.edges, plan.axis, at.start, at.stop, 1),
                np.asarray(result.existence)[:, at],
            )
    return None


def _check_thresholds(mask_threshold: float, exist_threshold: float, exist_low: float | None) -> dict:
    """The gate's thresholds as keywords, each checked to lie in [0, 1] (``exist_low`` may be None)."""
    thresholds = dict(mask_threshold=mask_threshold, exist_threshold=exist_threshold, exist_low=exist_low)
    for name, value in thresholds.items():
        if value is not None and not 0.0 <= value <= 1.0:
            raise InputError(f"{name} must be in [0, 1], got {value!r}.")
    return thresholds
