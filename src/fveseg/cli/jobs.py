"""One volume through the whole pipeline: read → segment → instances → write, with stage timings.

`run_segment_job` is what ``fveseg segment`` runs for each input, in this process or (pickled by reference)
on a dask worker; the worker keeps one loaded model per process (`fveseg.distributed.load_segmenter`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fveseg.cli.common import slug
from fveseg.errors import InputError, OutputExistsError
from fveseg.focus import FOCUS_FRACTION
from fveseg.instances import SPECK_FRACTION


@dataclass(frozen=True)
class SegmentOptions:
    """Everything about *how* to segment, shared by all volumes of one command (picklable)."""

    prompts: tuple[str, ...] = ("nuclei",)
    instances: bool = True
    min_size: float = 0.0
    min_relative_size: float = SPECK_FRACTION
    instance_method: str = "watershed"
    focus_fraction: float = FOCUS_FRACTION  # instances: drop cross-sections dimmer than this (0: keep all)
    checkpoint: str | None = None
    device: str = "auto"
    batch_size: int = 8
    order: int | None = None
    mask_threshold: float | None = None
    exist_threshold: float | None = None
    exist_low: float | None = None  # hysteresis of the existence gate; None: the Segmenter's default
    axis: str | int = "auto"
    resize: float | str = "auto"  # in-plane factor for slices before the network (Segmenter ``scale``)
    spacing: tuple[float, float, float] | None = None
    with_image: bool = True
    channel: int | str | None = None


@dataclass(frozen=True)
class SegmentJob:
    """One input volume and where its labels go."""

    source: Path
    output: Path
    fmt: str  # "zarr" or "tiff"
    into_source: bool = False
    overwrite: bool = False


@dataclass
class JobSummary:
    volume: str
    prompts: str
    objects: int
    seconds: float
    output: str
    stages: dict[str, float] = field(default_factory=dict)
    resize: float = 1.0  # the in-plane scale used ("auto" resolved)
    notes: tuple[str, ...] = ()  # advice for the user, printed after the table

    @classmethod
    def of(
        cls,
        volume,
        job: SegmentJob,
        options: SegmentOptions,
        objects,
        start,
        written,
        stages,
        resize,
        notes=(),
    ):
        """The summary of one finished job (``start``: its `time.perf_counter` start)."""
        return cls(
            volume=volume.name or job.source.name,
            prompts=", ".join(options.prompts),
            objects=objects,
            seconds=time.perf_counter() - start,
            output=", ".join(str(p) for p in written),
            stages=stages,
            resize=float(resize),
            notes=tuple(notes),
        )

    def row(self) -> dict:
        return {
            "volume": self.volume,
            "prompts": self.prompts,
            "objects": self.objects,
            "resize": round(self.resize, 3),
            "time (s)": round(self.seconds, 2),
            "output": self.output,
        }


def segment_array(segmenter, data, options: SegmentOptions, spacing, progress=None, cancel=None, **extra):
    """Run the Segmenter on a (D, H, W) array with the options' thresholds; return its SegmentationResult."""
    keywords = dict(spacing=spacing, axis=options.axis, progress=progress, cancel=cancel)
    if options.order is not None:
        keywords["order"] = options.order
    keywords["scale"] = options.resize
    keywords.update(gate_keywords(options))
    keywords.update(extra)
    return segmenter.segment(data, list(options.prompts), **keywords)


def gate_keywords(options: SegmentOptions) -> dict[str, float]:
    """The options' mask and existence thresholds that are set (the Segmenter's defaults otherwise)."""
    names = ("mask_threshold", "exist_threshold", "exist_low")
    return {name: getattr(options, name) for name in names if getattr(options, name) is not None}


def gate_values(options: SegmentOptions) -> tuple[float, float, float]:
    """``(mask_threshold, exist_threshold, exist_low)`` with the Segmenter's defaults filled in."""
    from fveseg.postprocess import EXIST_LOW

    given = gate_keywords(options)
    mask, threshold = given.get("mask_threshold", 0.5), given.get("exist_threshold", 0.5)
    return mask, threshold, given.get("exist_low", EXIST_LOW)


def model_notes(model: str | None, noise: float | None, name: str) -> list[str]:
    """Say so when the measured noise chose the noise-robust model (`fveseg.auto_model.AutoSegmenter`)."""
    from fveseg.auto_model import NOISY_MODEL
    from fveseg.noise import NOISY_LEVEL

    if model != NOISY_MODEL or noise is None:
        return []
    return [
        f"{name}: its noise measures {noise:.2f} of the signal range (from {NOISY_LEVEL:g} on, a volume "
        f"counts as noisy), so the {NOISY_MODEL} model segmented it; --model default runs the default model"
    ]


def existence_notes(result, options: SegmentOptions, name: str) -> list[str]:
    """Advice when a raised ``exist_low`` let the existence gate empty slices inside a run of slices where
    a prompt was found (`fveseg.postprocess.doubtful_slices`): objects may be missing there."""
    from fveseg.postprocess import EXIST_LOW, doubtful_slices

    _, threshold, low = gate_values(options)
    counts = doubtful_slices(result.existence, threshold, EXIST_LOW, low)
    total = result.existence.shape[1]
    return [
        f'{name}: "{prompt}" was dropped from {count} of {total} slices that continue slices where it was '
        f"found (existence {EXIST_LOW:g}-{min(low, threshold):g}); if objects are missing there, rerun "
        f"with --exist-low {EXIST_LOW:g}"
        for prompt, count in zip(result.prompts, counts)
        if count
    ]


def label_layers(result, options: SegmentOptions, spacing, image=None) -> dict[str, tuple[np.ndarray, dict]]:
    """Label volumes to write, by layer name → ``(labels, class_names)``.

    One prompt without instances: the binary mask named after the prompt. Several prompts: the semantic
    map (``semantic``, class i + 1 = prompt i). With ``instances``: one instance volume per prompt, its
    out-of-focus cross-sections trimmed (`fveseg.focus`) when the ``image`` is given.
    """
    from fveseg.instances import instances_from_prediction

    semantic = np.asarray(result.semantic)
    layers: dict[str, tuple[np.ndarray, dict]] = {}
    names = {i + 1: p for i, p in enumerate(options.prompts)}
    if len(options.prompts) > 1:
        layers["semantic"] = (semantic.astype(np.uint32, copy=False), names)
    for index, prompt in enumerate(options.prompts):
        if options.instances:
            labels = instances_from_prediction(
                semantic == index + 1,
                np.asarray(result.edges[index]),
                image,
                spacing,
                result.axis,
                method=options.instance_method,
                min_size=options.min_size,
                min_relative_size=options.min_relative_size,
                focus_fraction=options.focus_fraction,
            )
            layers[slug(prompt)] = (labels, {})
        elif len(options.prompts) == 1:
            layers[slug(prompt)] = ((semantic == 1).astype(np.uint32), {1: prompt})
    return layers


def count_objects(layers: dict[str, tuple[np.ndarray, dict]], instances: bool) -> int:
    """Instances found, or (semantic runs) 3D connected components of every class."""
    if instances:
        return sum(int(labels.max(initial=0)) for name, (labels, _) in layers.items() if name != "semantic")
    import cc3d

    total = 0
    for name, (labels, _) in layers.items():
        if name == "semantic" and len(layers) > 1:
            continue
        total += int(cc3d.connected_components(labels, connectivity=6, return_N=True)[1])
    return total


def write_layers(job: SegmentJob, layers, spacing, image=None) -> list[Path]:
    """Write every layer; a new OME-Zarr or TIFF set appears complete or not at all."""
    from fveseg import io

    if job.fmt == "zarr":
        if job.into_source:
            return [
                io.write_labels_zarr(
                    job.source,
                    labels,
                    name,
                    spacing=spacing,
                    class_names=names or None,
                    overwrite=job.overwrite,
                )
                for name, (labels, names) in layers.items()
            ]
        with io.atomic_path(job.output, overwrite=job.overwrite) as tmp:
            first = True
            for name, (labels, names) in layers.items():
                io.write_labels_zarr(
                    tmp,
                    labels,
                    name,
                    spacing=spacing,
                    class_names=names or None,
                    image=image if first else None,
                )
                first = False
        return [job.output]
    paths = tiff_paths(job.output, list(layers))
    for path in paths.values():  # check all first so a clash on the second file cannot leave half a set
        if path.exists() and not job.overwrite:
            raise OutputExistsError(f"{path} already exists (fix: pass --overwrite or choose another -o)")
    return [
        io.write_labels_tiff(
            paths[name], labels, spacing=spacing, class_names=names or None, overwrite=job.overwrite
        )
        for name, (labels, names) in layers.items()
    ]


def tiff_paths(output: Path, names: list[str]) -> dict[str, Path]:
    """One TIFF per layer: the output itself for one layer, ``<stem>_<layer>.tif`` beside it for several."""
    if len(names) == 1:
        return {names[0]: output}
    base = output.name[: -len(output.suffix)] if output.suffix else output.name
    return {name: output.with_name(f"{base}_{name}{output.suffix or '.tif'}") for name in names}


def run_segment_job(
    job: SegmentJob,
    options: SegmentOptions,
    progress: Callable[[int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> JobSummary:
    """Segment one volume file and write its labels; return a summary with per-stage seconds."""
    from fveseg import io
    from fveseg.distributed import load_segmenter

    stages: dict[str, float] = {}
    start = time.perf_counter()
    if job.into_source and job.fmt != "zarr":
        raise InputError("--into-source writes into an OME-Zarr image group (fix: drop --format tiff)")
    volume = io.read_volume(job.source, channel=options.channel)
    if job.into_source and not Path(job.source).name.lower().endswith(".zarr"):
        raise InputError(
            f"--into-source needs an OME-Zarr input, {job.source.name} is not one "
            "(fix: drop --into-source or convert the input to OME-Zarr)"
        )
    data = np.asarray(volume.data)
    spacing = options.spacing or volume.spacing
    stages["read"] = time.perf_counter() - start

    mark = time.perf_counter()
    segmenter = load_segmenter(options.checkpoint, options.device, options.batch_size)
    stages["load model"] = time.perf_counter() - mark
    mark = time.perf_counter()
    result = segment_array(segmenter, data, options, spacing, progress=progress, cancel=cancel)
    stages["segment"] = time.perf_counter() - mark
    notes = model_notes(result.model, result.noise, job.source.name)
    notes += existence_notes(result, options, job.source.name)

    mark = time.perf_counter()
    layers = label_layers(result, options, spacing, image=data)
    objects = count_objects(layers, options.instances)
    stages["instances" if options.instances else "labels"] = time.perf_counter() - mark

    mark = time.perf_counter()
    image = data if options.with_image and job.fmt == "zarr" and not job.into_source else None
    written = write_layers(job, layers, spacing, image=image)
    stages["write"] = time.perf_counter() - mark
    return JobSummary.of(volume, job, options, objects, start, written, stages, result.scale, notes)
