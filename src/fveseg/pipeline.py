"""One volume through the whole product: read → segment → label layers → write.

Every door calls this module: ``fveseg segment`` (`segment_file` per input), the dask workers
(`fveseg.distributed`: `plan_array` once, then blocks), the napari widget (`prepare`, `iter_segment_array`,
`instance_labels` for its layers), the training checks (`segment_volume`) and Python users (`segment`).
`SegmentParams` holds every option and its default, once.

Example
-------
>>> from fveseg import read_volume, segment  # doctest: +SKIP
>>> result = segment(read_volume("stack.tif"))  # doctest: +SKIP
>>> labels = result.instances("nuclei")  # (D, H, W) uint32 instance ids  # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field, replace
from pathlib import Path

import cc3d
import numpy as np

from fveseg import io
from fveseg.errors import InputError, OutputExistsError
from fveseg.inference.auto_scale import TARGET_DIAMETER, TRAINED_DIAMETER, typical_diameter
from fveseg.inference.gate import EXIST_LOW, SegmentationResult, doubtful_slices
from fveseg.inference.model_choice import NOISY_MODEL, load_segmenter
from fveseg.inference.plan import SegmentPlan
from fveseg.instances.split import instances_from_prediction
from fveseg.io import preflight
from fveseg.io.volume import spacing_in_micrometer
from fveseg.io.writers import tiff_paths
from fveseg.model.text_encoder import normalize_prompt
from fveseg.normalize.background import flatten_background
from fveseg.normalize.noise import NOISY_LEVEL, noise_level
from fveseg.params import SegmentParams, slug

__all__ = [
    "SegmentParams",
    "SegmentJob",
    "JobSummary",
    "slug",
    "prepare",
    "plan_array",
    "segment_array",
    "iter_segment_array",
    "Segmentation",
    "segment",
    "instance_labels",
    "label_layers",
    "segment_volume",
    "write_layers",
    "segment_file",
]


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
    """What one finished volume reports: objects, seconds per stage, outputs and advice."""

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
        cls, volume, job: SegmentJob, params: SegmentParams, objects, start, written, stages, resize, notes=()
    ):
        """The summary of one finished job (``start``: its `time.perf_counter` start)."""
        return cls(
            volume=volume.name or job.source.name,
            prompts=", ".join(params.prompts),
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


def prepared_image(data, params: SegmentParams, spacing):
    """The image the network and the instance step see: ``data`` itself, or with ``params.flatten`` its
    background subtracted (`fveseg.normalize.background.flatten_background`; "auto": where it dominates)."""
    if not params.flatten:
        return data
    return flatten_background(data, spacing, only_if_dominant=params.flatten == "auto")


def prepare(data, params: SegmentParams, spacing) -> tuple:
    """``(image, params)`` to pass to `segment_array` and `label_layers`: the image both steps see
    (`prepared_image`) and the params with the flattening marked done, so that a caller running the two
    steps judges and flattens the background once, not in each."""
    return prepared_image(data, params, spacing), replace(params, flatten=False)


def segment_keywords(params: SegmentParams) -> dict:
    """The params as keywords of `fveseg.inference.Segmenter.plan`, `segment` and `iter_segment`."""
    keywords = dict(axis=params.axis, order=params.order, scale=params.resize, isotropic=params.isotropic)
    return {**keywords, **params.gate_keywords()}


def plan_array(segmenter, data, params: SegmentParams, spacing, cancel=None) -> SegmentPlan:
    """The Segmenter's plan (`fveseg.inference.Segmenter.plan`) for a (D, H, W) array with the params'
    view, order, resize, z resampling and thresholds: decided once, shared by every prompt and block."""
    return segmenter.plan(data, spacing, list(params.prompts), cancel=cancel, **segment_keywords(params))


def segment_array(
    segmenter,
    data,
    params: SegmentParams,
    spacing,
    progress=None,
    cancel=None,
    plan: SegmentPlan | None = None,
) -> SegmentationResult:
    """Run the Segmenter on a (D, H, W) array with the params' options (with ``plan``, `plan_array`'s
    output, only its run); return its SegmentationResult."""
    data = prepared_image(data, params, spacing)
    prompts = list(params.prompts)
    keywords = dict(progress=progress, cancel=cancel)
    if plan is None:
        return segmenter.segment(data, prompts, spacing, **keywords, **segment_keywords(params))
    return segmenter.run(data, plan, prompts, **keywords, **params.gate_keywords())


def iter_segment_array(
    segmenter, data, params: SegmentParams, spacing, cancel=None
) -> Generator[tuple[str, int, int], None, SegmentationResult]:
    """`segment_array` as a generator (`fveseg.inference.Segmenter.iter_segment`): yields ``(stage, done,
    total)`` after each batch, stage ``"probe"`` (the automatic scale's slices) or ``"segment"``, and
    returns the result. The napari widget's worker relays these updates to its progress bar."""
    data = prepared_image(data, params, spacing)
    keywords = segment_keywords(params)
    return (yield from segmenter.iter_segment(data, list(params.prompts), spacing, cancel=cancel, **keywords))


def flatten_notes(params: SegmentParams, flattened: bool, name: str) -> list[str]:
    """Say so when ``--flatten auto`` flattened the background (`prepared_image`)."""
    if not flattened or params.flatten is True:
        return []
    return [
        f"{name}: its background varies more than the nuclei stand out above it, so it was flattened "
        "before segmenting (--flatten off segments it as it is)"
    ]


def model_notes(model: str | None, noise: float | None, name: str) -> list[str]:
    """Say so when the measured noise chose the noise-robust model (`fveseg.inference.model_choice`)."""
    if model != NOISY_MODEL or noise is None:
        return []
    return [
        f"{name}: its noise measures {noise:.2f} of the signal range (from {NOISY_LEVEL:g} on, a volume "
        f"counts as noisy), so the {NOISY_MODEL} model segmented it; --model default runs the default model"
    ]


def noisy_stack_notes(result: SegmentationResult, data, name: str) -> list[str]:
    """Advice when a model other than the noise-robust one segmented a stack whose noise
    (`fveseg.normalize.noise_level`, measured here unless the model choice measured it) is at least
    `NOISY_LEVEL` of its signal range."""
    if result.model == NOISY_MODEL:
        return []
    noise = result.noise if result.noise is not None else noise_level(data)
    if noise < NOISY_LEVEL:
        return []
    return [
        f"{name}: its noise measures {noise:.2f} of the signal range (from {NOISY_LEVEL:g} on, a stack "
        f"counts as noisy); if the masks look ragged or neighbours merge, try --model {NOISY_MODEL}"
    ]


def existence_notes(result: SegmentationResult, params: SegmentParams, name: str) -> list[str]:
    """Advice when the existence gate (``exist_low`` above `EXIST_LOW`; the plain gate by default) emptied
    slices inside a run of slices where a prompt was found (`fveseg.inference.gate.doubtful_slices`):
    objects may be missing there."""
    threshold, low = params.exist_threshold, params.exist_low
    counts = doubtful_slices(result.existence, threshold, EXIST_LOW, low)
    total = result.existence.shape[1]
    return [
        f'{name}: "{prompt}" was dropped from {count} of {total} slices that continue slices where it was '
        f"found (existence {EXIST_LOW:g}-{min(low, threshold):g}); if objects are missing there, rerun "
        f"with --exist-low {EXIST_LOW:g}"
        for prompt, count in zip(result.prompts, counts)
        if count
    ]


def instance_labels(
    result: SegmentationResult, index: int, params: SegmentParams, spacing, image=None, semantic=None
) -> np.ndarray:
    """Instance labels (D, H, W) uint32 of prompt ``index`` as every door writes them: the edge-based
    split of its mask, specks dropped and, with the ``image``, out-of-focus cross-sections trimmed.
    ``semantic``: the class map to split (default ``result.semantic``; the widget passes a re-thresholded
    one)."""
    semantic = np.asarray(result.semantic if semantic is None else semantic)
    return instances_from_prediction(
        semantic == index + 1,
        np.asarray(result.edges[index]),
        image,
        spacing,
        result.axis,
        method=params.instance_method,
        min_size=params.min_size,
        min_relative_size=params.min_relative_size,
        focus_fraction=params.focus_fraction,
        merge_necks=params.merge_necks,
    )


def label_layers(result, params: SegmentParams, spacing, image=None) -> dict[str, tuple[np.ndarray, dict]]:
    """Label volumes to write, by layer name → ``(labels, class_names)``.

    One prompt without instances: the binary mask named after the prompt. Several prompts: the semantic
    map (``semantic``, class i + 1 = prompt i). With ``instances``: one instance volume per prompt
    (`instance_labels`).
    """
    semantic = np.asarray(result.semantic)
    image = None if image is None else prepared_image(image, params, spacing)
    layers: dict[str, tuple[np.ndarray, dict]] = {}
    names = {i + 1: p for i, p in enumerate(params.prompts)}
    if len(params.prompts) > 1:
        layers["semantic"] = (semantic.astype(np.uint32, copy=False), names)
    for index, prompt in enumerate(params.prompts):
        if params.instances:
            layers[slug(prompt)] = (instance_labels(result, index, params, spacing, image, semantic), {})
        elif len(params.prompts) == 1:
            layers[slug(prompt)] = ((semantic == 1).astype(np.uint32), {1: prompt})
    return layers


def segment_volume(
    segmenter, data, spacing=None, params: SegmentParams | None = None, progress=None, cancel=None
) -> dict[str, tuple[np.ndarray, dict]]:
    """Segment a (D, H, W) array and return the label layers `segment_file` would write (`label_layers`)."""
    return segment(data, segmenter, params, spacing, progress=progress, cancel=cancel).layers()


@dataclass
class Segmentation:
    """One segmented volume and what its label layers need (`segment`): ``instances(prompt)`` is what
    ``fveseg segment --instances`` writes for that prompt, ``layers()`` what it writes in all.

    A prompt the run did not segment is segmented on first use with the same plan (view, intensity
    range, scale: computed once), like segment-anything's predictor answering a new prompt.
    """

    result: SegmentationResult
    image: np.ndarray  # (D, H, W): what the network and the instance step saw (background flattened)
    spacing: tuple[float, float, float] | None  # (dz, dy, dx) in µm
    params: SegmentParams  # with the flattening marked done (`prepare`)
    segmenter: object
    plan: SegmentPlan
    _more: dict = field(default_factory=dict, repr=False)

    def mask(self, prompt: str) -> np.ndarray:
        """(D, H, W) bool: the voxels labelled ``prompt``."""
        result, index = self._result_of(prompt)
        return np.asarray(result.semantic) == index + 1

    def instances(self, prompt: str) -> np.ndarray:
        """(D, H, W) uint32 instance ids of ``prompt`` (0: background), as the CLI writes them
        (`instance_labels`)."""
        result, index = self._result_of(prompt)
        params = replace(self.params, prompts=tuple(result.prompts))
        return instance_labels(result, index, params, self.spacing, self.image)

    def layers(self) -> dict[str, tuple[np.ndarray, dict]]:
        """Every label layer `segment_file` writes, by layer name (`label_layers`)."""
        return label_layers(self.result, self.params, self.spacing, image=self.image)

    def _result_of(self, prompt: str) -> tuple[SegmentationResult, int]:
        wanted = normalize_prompt(prompt)
        if wanted in self.result.prompts:
            return self.result, self.result.prompts.index(wanted)
        if wanted not in self._more:
            params = replace(self.params, prompts=(wanted,))
            self._more[wanted] = segment_array(
                self.segmenter, self.image, params, self.spacing, plan=self.plan
            )
        return self._more[wanted], 0


def segment(
    volume, segmenter=None, params: SegmentParams | None = None, spacing=None, progress=None, cancel=None
) -> Segmentation:
    """Segment a volume with every option of ``params`` (default: `SegmentParams()`, "nuclei").

    Parameters
    ----------
    volume : fveseg.io.Volume or array-like (D, H, W)
        What `fveseg.io.read_volume` returns (its voxel size is used, in µm), or an array.
    segmenter : optional
        `fveseg.inference.load_segmenter` output; default: the bundled models, loaded once per process.
    params : SegmentParams, optional
    spacing : (dz, dy, dx) in µm, optional
        Voxel size of an array (``params.spacing`` wins over it, and over the file's).
    progress, cancel : callables, optional
        As `fveseg.inference.Segmenter.run`.

    Returns
    -------
    Segmentation
        ``.instances("nuclei")``: (D, H, W) uint32 labels, what ``fveseg segment --instances`` writes.
    """
    params = params or SegmentParams()
    if isinstance(volume, io.Volume):
        spacing = spacing or spacing_in_micrometer(volume.spacing, volume.unit)
        volume = io.load_voxels(volume, volume.name or "the volume")
    spacing = params.spacing or spacing
    segmenter = (
        segmenter
        if segmenter is not None
        else load_segmenter(params.checkpoint, params.device, params.batch_size)
    )
    image, prepared = prepare(np.asarray(volume), params, spacing)
    plan = plan_array(segmenter, image, prepared, spacing, cancel)
    result = segment_array(segmenter, image, prepared, spacing, progress=progress, cancel=cancel, plan=plan)
    return Segmentation(result, image, spacing, prepared, segmenter, plan)


def count_objects(layers: dict[str, tuple[np.ndarray, dict]], instances: bool) -> int:
    """Instances found, or (semantic runs) 3D connected components of every class."""
    if instances:
        return sum(int(labels.max(initial=0)) for name, (labels, _) in layers.items() if name != "semantic")
    total = 0
    for name, (labels, _) in layers.items():
        if name == "semantic" and len(layers) > 1:
            continue
        total += int(cc3d.connected_components(labels, connectivity=6, return_N=True)[1])
    return total


def write_layers(job: SegmentJob, layers, spacing, image=None) -> list[Path]:
    """Write every layer, all or nothing: a new OME-Zarr or TIFF set appears complete or not at all, and
    labels added to the source (``into_source``) appear together or leave it byte-identical.

    ``into_source`` adds only ``labels/<layer>`` groups to the source's OME-Zarr image group (refused for
    anything else); ``overwrite`` then replaces only those label groups, never the image. ``spacing`` is
    in micrometres.
    """
    if job.fmt == "zarr":
        if job.into_source:
            io.add_labels_to_image(job.source, layers, spacing=spacing, overwrite=job.overwrite)
            return [job.source]
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
    names = list(layers)
    with io.atomic_paths([paths[name] for name in names], overwrite=job.overwrite) as temporaries:
        for temporary, name in zip(temporaries, names):  # each file written, then all renamed together
            labels, classes = layers[name]
            io.write_labels_tiff(temporary, labels, spacing=spacing, class_names=classes or None)
    return [paths[name] for name in names]


def segment_file(
    job: SegmentJob,
    params: SegmentParams,
    progress: Callable[[int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> JobSummary:
    """Segment one volume file and write its labels; return a summary with per-stage seconds."""
    stages: dict[str, float] = {}
    start = time.perf_counter()
    # Every check that needs no network runs here, before the model loads: nothing is written on refusal.
    names = params.layer_names()  # refuse clashing layer names before reading anything
    preflight.check_params(params)
    if job.into_source and job.fmt != "zarr":
        raise InputError("--into-source writes into an OME-Zarr image group (fix: drop --format tiff)")
    preflight.check_output(job, names)
    if job.into_source:  # an OME-Zarr image group whose labels/ does not hold these names (or --overwrite)
        io.check_into_image(job.source, names, job.overwrite)
    volume = io.read_volume(job.source, channel=params.channel)
    preflight.check_memory(volume.data.shape, job.source.name)
    if job.into_source:
        io.check_into_image(job.source, names, job.overwrite, shape=tuple(volume.data.shape))
    data = io.load_voxels(volume, job.source.name)
    spacing = params.spacing or spacing_in_micrometer(volume.spacing, volume.unit)
    stages["read"] = time.perf_counter() - start

    mark = time.perf_counter()
    segmenter = load_segmenter(params.checkpoint, params.device, params.batch_size)
    stages["load model"] = time.perf_counter() - mark
    mark = time.perf_counter()
    image, prepared = prepare(data, params, spacing)
    plan = plan_array(segmenter, image, prepared, spacing, cancel)  # view, scale: the probe's network passes
    stages["probe"] = time.perf_counter() - mark
    mark = time.perf_counter()
    result = segment_array(segmenter, image, prepared, spacing, progress=progress, cancel=cancel, plan=plan)
    stages["network"] = time.perf_counter() - mark
    notes = flatten_notes(params, image is not data, job.source.name)
    notes += model_notes(result.model, result.noise, job.source.name)
    notes += noisy_stack_notes(result, data, job.source.name)
    notes += existence_notes(result, params, job.source.name)

    mark = time.perf_counter()
    layers = label_layers(result, prepared, spacing, image=image)
    objects = count_objects(layers, params.instances)
    notes += trust_notes(layers, params, spacing, job.source.name, result.scale)
    stages["instances" if params.instances else "labels"] = time.perf_counter() - mark

    mark = time.perf_counter()
    image = data if params.with_image and job.fmt == "zarr" and not job.into_source else None
    written = write_layers(job, layers, spacing, image=image)
    stages["write"] = time.perf_counter() - mark
    return JobSummary.of(volume, job, params, objects, start, written, stages, result.scale, notes)


#: More objects than this in one stack usually means noise or texture cut into pieces.
MANY_OBJECTS = 2000
#: Anisotropy (z step / pixel size) beyond which the model was not measured (docs/model-card.md).
MEASURED_ANISOTROPY = 4.0


def trust_notes(
    layers: dict[str, tuple[np.ndarray, dict]], params: SegmentParams, spacing, name: str, scale: float = 1.0
) -> list[str]:
    """Warnings, in words, when a result looks wrong or the stack lies outside what the model was
    measured on; each names what to try. ``scale``: the in-plane resize the network ran at
    (``result.scale``), to judge the objects' size as the network saw them."""
    notes = []
    known = spacing is not None and all(np.isfinite(s) and s > 0 for s in spacing)
    depth = next(iter(layers.values()))[0].shape[0] if layers else 0
    if depth > 1 and not known:
        notes.append(
            f"{name}: the voxel size is unknown, so z is taken to be as fine as x and y; pass --scale Z Y X "
            "(µm) for correct 3D shapes and sizes"
        )
    elif depth > 1 and spacing[0] / min(spacing[1:]) > MEASURED_ANISOTROPY:
        notes.append(
            f"{name}: its z step is {spacing[0] / min(spacing[1:]):.1f}× the pixel size, coarser than any "
            f"stack the model was measured on (up to {MEASURED_ANISOTROPY:g}×); check the result, or try "
            "--isotropic"
        )
    for prompt in params.prompts if params.instances else ():
        labels = layers.get(slug(prompt), (None,))[0]
        if labels is None:
            continue
        count = int(labels.max(initial=0))
        if count == 0:
            notes.append(
                f'{name}: no "{prompt}" found; if the stack has them, check the voxel size (--scale), try '
                "--resize 0.5 (large objects) or 2 (small ones), or --model noise-robust (noisy stacks)"
            )
        elif count > MANY_OBJECTS:
            notes.append(
                f'{name}: {count} "{prompt}" objects: noise or texture may have been cut into pieces; try '
                "--model noise-robust, --resize 0.5 or a larger --min-size"
            )
        elif depth > 4 and count >= 4:
            ends = np.union1d(np.unique(labels[0]), np.unique(labels[-1]))
            touching = np.count_nonzero(ends) / count
            if touching > 0.5:
                notes.append(
                    f'{name}: {touching:.0%} of the "{prompt}" objects touch the first or last slice, so '
                    "caps may be counted as objects; check the voxel size (--scale) or try --isotropic"
                )
        if 0 < count <= MANY_OBJECTS:
            native = typical_diameter(labels > 0)  # per slice along z, in pixels
            if native and not TRAINED_DIAMETER[0] <= native * scale <= TRAINED_DIAMETER[1]:
                notes.append(
                    f'{name}: the "{prompt}" objects measure about {native * scale:.0f} px across as the '
                    f"network saw them (resize {scale:g}), outside the {TRAINED_DIAMETER[0]:g}-"
                    f"{TRAINED_DIAMETER[1]:g} px it was trained on; check the result, or try --resize "
                    f"{TARGET_DIAMETER / native:.2g}"
                )
    return notes
