"""Training data: labelled volumes -> augmented FVE slices with prompts and targets, on the fly.

A `LabelledVolume` is an image (D, H, W) with one label volume per class (instance ids or a binary
mask). Loaders read the challenge ``.npz`` format, the project's shared ``.npz`` format (a 2D image is a
one-slice volume) and procedural volumes from `fveseg.synthetic`. `make_sample` turns one volume into one
training example exactly the way inference sees data: normalise the whole volume (0.5–99.5 percentiles,
`fveseg.normalize.intensity`), take the focal slice's neighbourhood along the selected view, augment, encode
with
FVE, and draw prompts (present classes as paraphrases, absent targets as negatives).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fveseg.errors import InputError
from training.augment import (
    AugmentConfig,
    edge_target,
    random_crop_scale,
    random_flip_rot,
    random_intensity,
    size_normalising_scale,
    swap_context,
    z_contact_target,
)
from training.prompts import TRAIN_NEGATIVES, TRAIN_PARAPHRASES, canonical_class, sample_prompts


@dataclass
class LabelledVolume:
    """An image with per-class label volumes.

    Attributes
    ----------
    image : ndarray (D, H, W)
        Raw intensities (any dtype); a 2D image is stored as (1, H, W).
    classes : dict[str, ndarray (D, H, W) integer]
        Class name -> instance ids (0 = background) or a binary mask.
    spacing : (z, y, x) floats or None
        Voxel size; used to pick the slicing view.
    name : str
    absent : tuple of str
        Table classes known to be invisible in this image (e.g. "cells" on a nuclei-stain image):
        prompted as negatives with empty targets.
    view : int or None
        Slicing axis to use; None picks it from the shape and spacing.
    """

    image: np.ndarray
    classes: dict[str, np.ndarray]
    spacing: tuple[float, float, float] | None = None
    name: str = ""
    absent: tuple[str, ...] = ()
    normalized: np.ndarray | None = field(default=None, repr=False)
    view: int | None = None  # slicing axis; None: 0 for one slice, else `fveseg.fve.encoding.select_view`
    diameters: dict[int, float] = field(default_factory=dict, repr=False)  # view -> nuclei size (cache)

    def normalized_image(self) -> np.ndarray:
        """The whole volume as uint8 (D, H, W) via `fveseg.normalize.intensity` (computed once, cached),
        its background flattened first where inference would flatten it (`fveseg.pipeline.prepared_image`
        with the default `SegmentParams`), so that training sees what the network sees at inference."""
        if self.normalized is None:
            from fveseg.normalize.intensity import normalize
            from fveseg.params import SegmentParams
            from fveseg.pipeline import prepared_image

            image = self.image
            if image.ndim == 3:
                image = prepared_image(image, SegmentParams(), self.spacing)
            self.normalized = np.asarray(normalize(image))
        return self.normalized

    def nuclei_diameter(self, axis: int) -> float:
        """Typical nucleus diameter (pixels) in slices along `axis`, measured on the labels the way
        inference measures its mask (`fveseg.inference.auto_scale.typical_diameter`); 0.0 without nuclei."""
        if axis not in self.diameters:
            from fveseg.inference.auto_scale import typical_diameter

            labels = self.classes.get("nuclei")
            mask = None if labels is None else np.moveaxis(labels, axis, 0) > 0
            self.diameters[axis] = 0.0 if mask is None else typical_diameter(mask)
        return self.diameters[axis]


def _as_volume(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim == 2:
        return array[None]
    if array.ndim != 3:
        raise InputError(f"expected a 2D image or 3D volume, got shape {array.shape}.")
    return array


def _finite_spacing(spacing, ndim: int) -> tuple[float, float, float] | None:
    if spacing is None:
        return None
    values = np.asarray(spacing, dtype=float).ravel()
    if values.size != 3 or not np.all(np.isfinite(values)) or np.any(values <= 0):
        return None
    return tuple(float(v) for v in values)


def load_shared_npz(path: str | Path) -> LabelledVolume:
    """Read the project's data format: ``image``, ``labels``, optional ``spacing_zyx``, ``class_names``.

    ``class_names`` (a JSON string) is ``{"instances": name}`` for instance labels of one class, or
    ``{"1": name, "2": name, ...}`` for class ids. Without it the labels are nuclei instances (the
    dsb2018 train/val folders).
    """
    with np.load(path, allow_pickle=False) as data:
        if "image" not in data or "labels" not in data:
            raise InputError(f"{path}: expected arrays 'image' and 'labels', found {sorted(data.files)}.")
        image, labels = _as_volume(data["image"]), _as_volume(data["labels"])
        spacing = _finite_spacing(data["spacing_zyx"], image.ndim) if "spacing_zyx" in data else None
        names = json.loads(str(data["class_names"])) if "class_names" in data else {"instances": "nuclei"}
    if image.shape != labels.shape:
        raise InputError(f"{path}: image {image.shape} and labels {labels.shape} differ in shape.")
    if "instances" in names:
        classes = {canonical_class(names["instances"]): labels}
    else:
        classes = {canonical_class(n): (labels == int(i)).astype(np.uint8) for i, n in names.items()}
    return LabelledVolume(image, classes, spacing, Path(path).stem)


def load_challenge_npz(path: str | Path) -> LabelledVolume:
    """Read the CVPR 2025 BiomedSegFM format: ``imgs``, ``gts``, ``spacing``, ``text_prompts``.

    ``text_prompts`` maps class ids ("1", "2", ...) to prompts, with ``instance_label`` 1 when ``gts``
    holds instances of the single class "1".
    """
    with np.load(path, allow_pickle=True) as data:
        image, labels = _as_volume(data["imgs"]), _as_volume(data["gts"])
        spacing = _finite_spacing(data["spacing"], 3) if "spacing" in data else None
        prompts = data["text_prompts"].item() if "text_prompts" in data else {"1": "nuclei"}
    prompts = dict(prompts)
    instance = int(prompts.pop("instance_label", 0)) == 1
    if instance:
        classes = {canonical_class(str(prompts.get("1", "nuclei"))): labels}
    else:
        classes = {canonical_class(str(n)): (labels == int(i)).astype(np.uint8) for i, n in prompts.items()}
    return LabelledVolume(image, classes, spacing, Path(path).stem)


def load_volume_file(path: str | Path) -> LabelledVolume:
    """Load a labelled ``.npz``: challenge format (``imgs``/``gts``) or shared (``image``/``labels``)."""
    with np.load(path, allow_pickle=False) as data:
        files = set(data.files)
    return load_challenge_npz(path) if "imgs" in files else load_shared_npz(path)


@dataclass(frozen=True)
class SyntheticSpec:
    """Ranges for procedural training volumes (lengths in µm)."""

    presets: tuple[str, ...] = ("anisotropic", "isotropic", "anisotropic", "hard")
    channels: tuple[str, ...] = ("nuclei",) * 5 + ("cell membranes", "cells", "spots")
    depth: tuple[int, int] = (12, 32)
    size: int = 192
    pixel_um: tuple[float, float] = (0.2, 0.65)
    z_ratio: tuple[float, float] = (1.0, 5.0)  # z step / pixel size
    # chance that a volume's imaging is redrawn from `APPEARANCE_RANGES` (bright or uneven background,
    # stripes, light lost with depth, nuclei beyond the stack, low SNR); 0 leaves every volume as before
    appearance_p: float = 0.0


#: Ranges `synthetic_volume` draws imaging options from (`SyntheticSpec.appearance_p`): the conditions
#: of real stacks the training presets lack (project issue 25, item 3). The held-out "embryo" and
#: "lightsheet" presets of the evaluation protocol are single points inside these ranges.
APPEARANCE_RANGES: dict[str, tuple[float, float]] = {
    "background": (0.02, 15.0),  # log-uniform, relative to a nucleus
    "uneven_illumination": (0.02, 0.3),
    "stripes": (0.0, 0.05),  # drawn for half of the redrawn volumes, else 0
    "depth_attenuation": (0.0, 0.5),
    "beyond_stack_um": (0.0, 8.0),
    "snr": (3.0, 30.0),  # log-uniform
    "brightness_spread": (0.15, 0.4),
    "haze": (0.02, 0.2),
}


def draw_appearance(rng: np.random.Generator) -> dict[str, float]:
    """One set of imaging options from `APPEARANCE_RANGES`."""
    options = {name: float(rng.uniform(*bounds)) for name, bounds in APPEARANCE_RANGES.items()}
    for name in ("background", "snr"):  # log-uniform: as many dim as bright backgrounds per decade
        low, high = APPEARANCE_RANGES[name]
        options[name] = float(np.exp(rng.uniform(np.log(low), np.log(high))))
    if rng.random() < 0.5:
        options["stripes"] = 0.0
    return options


def synthetic_volume(seed: int, spec: SyntheticSpec = SyntheticSpec()) -> LabelledVolume:
    """A procedural volume with random preset, channel, voxel size and anisotropy (seeded)."""
    from fveseg.synthetic import make_nuclei_volume

    rng = np.random.default_rng(seed)
    pixel = float(rng.uniform(*spec.pixel_um))
    spacing = (pixel * float(rng.uniform(*spec.z_ratio)), pixel, pixel)
    shape = (int(rng.integers(spec.depth[0], spec.depth[1] + 1)), spec.size, spec.size)
    preset = str(rng.choice(spec.presets))
    channel = str(rng.choice(spec.channels))
    # a generator of its own, so that appearance_p = 0 leaves the earlier draws (and volumes) unchanged
    looks = np.random.default_rng([int(seed), 1])
    appearance = draw_appearance(looks) if looks.random() < spec.appearance_p else {}
    vol = make_nuclei_volume(
        shape, seed=int(seed), spacing=spacing, preset=preset, channel=channel, **appearance
    )
    absent = tuple(c for c in vol.classes if c != channel)
    return LabelledVolume(
        vol.image,
        {channel: vol.classes[channel]},
        vol.spacing,
        f"synthetic-{preset}{'-realistic' if appearance else ''}-{channel}-{seed}",
        absent=absent,
    )


@dataclass(frozen=True)
class SampleConfig:
    """How one training example is cut from a volume."""

    order: int = 1
    size: int = 256
    n_prompts: int = 4
    pad: str = "edge"
    downsample: str = "mean"
    augment: AugmentConfig = AugmentConfig()
    absent_class_p: float = 0.5  # chance that one known-invisible table class replaces a negative
    z_contact_edges: bool = False  # edges also where an object touches another in a neighbouring slice


def _view(volume: LabelledVolume) -> int:
    if volume.view is not None:
        return volume.view
    if volume.image.shape[0] == 1:
        return 0
    from fveseg.fve.encoding import select_view

    return select_view(volume.image.shape, volume.spacing)


def _neighbour_labels(volume: LabelledVolume, class_names: list[str], axis: int, index: int) -> np.ndarray:
    """(2C, H, W): per class, the labels of the slices before and after ``index`` (zeros past the ends)."""
    out = []
    for name in class_names:
        stack = np.moveaxis(volume.classes[name], axis, 0)
        for other in (index - 1, index + 1):
            inside = 0 <= other < stack.shape[0]
            out.append(stack[other] if inside else np.zeros_like(stack[index]))
    return np.stack(out)


def make_sample(
    volume: LabelledVolume,
    rng: np.random.Generator,
    config: SampleConfig,
    vocabulary: dict[str, int],
    table: dict[str, tuple[str, ...]] | None = None,
    negatives: tuple[str, ...] = TRAIN_NEGATIVES,
    focal: int | None = None,
) -> dict[str, np.ndarray]:
    """One training example from `volume`.

    Returns
    -------
    dict
        ``image`` uint8 (3, S, S) FVE-encoded; ``masks``, ``edges`` uint8 (P, S, S); ``exists`` float32
        (P,); ``prompt_ids`` int64 (P,) indices into `vocabulary`.
    """
    from fveseg.fve.encoding import encode, slices_per_side

    table = TRAIN_PARAPHRASES if table is None else table
    axis = _view(volume)
    image = np.moveaxis(volume.normalized_image(), axis, 0)
    class_names = list(volume.classes)
    depth = image.shape[0]
    index = int(rng.integers(depth)) if focal is None else focal
    reach = slices_per_side(config.order)
    lo, hi = max(index - reach, 0), min(index + reach + 1, depth)
    slab = image[lo:hi].astype(np.float32)
    focal_labels = np.stack([np.moveaxis(volume.classes[c], axis, 0)[index] for c in class_names])
    n_classes = len(class_names)
    if config.z_contact_edges:  # the neighbours' labels ride along through crop, zoom and flips
        focal_labels = np.concatenate([focal_labels, _neighbour_labels(volume, class_names, axis, index)])
    # anchor the crop on a foreground pixel half the time so sparse images still give positives
    anchor = None
    fg = np.flatnonzero(focal_labels[:n_classes].any(0))
    if fg.size and rng.random() < 0.5:
        anchor = np.unravel_index(int(fg[rng.integers(fg.size)]), focal_labels.shape[1:])
    aug = config.augment
    zoom = aug.scale
    if aug.target_diameter is not None:
        zoom = size_normalising_scale(volume.nuclei_diameter(axis), aug, rng)
    slab, labels = random_crop_scale(slab, focal_labels, config.size, rng, zoom, anchor)
    slab, labels = random_flip_rot(slab, labels, rng, aug.flip, aug.rot90)
    labels, neighbours = labels[:n_classes], labels[n_classes:]
    slab8 = random_intensity(slab, rng, aug)
    encoded = encode(
        slab8, index - lo, order=config.order, axis=0, pad=config.pad, downsample=config.downsample
    )
    encoded = swap_context(encoded, rng, aug.swap_context_p)

    pairs = sample_prompts(class_names, rng, config.n_prompts, table, negatives)
    if volume.absent and rng.random() < config.absent_class_p:
        # an invisible table class (e.g. "cells" on a nuclei stain) as one of the negatives
        neg_slots = [i for i, (_, c) in enumerate(pairs) if c is None]
        if neg_slots:
            name = volume.absent[int(rng.integers(len(volume.absent)))]
            options = table.get(name, (name,))
            pairs[neg_slots[0]] = (options[int(rng.integers(len(options)))], None)
    size = config.size
    masks = np.zeros((len(pairs), size, size), np.uint8)
    edges = np.zeros_like(masks)
    exists = np.zeros(len(pairs), np.float32)
    for j, (_, cls) in enumerate(pairs):
        if cls is None:
            continue
        lab = labels[class_names.index(cls)]
        masks[j] = lab > 0
        exists[j] = float(masks[j].any())
        if exists[j]:
            edges[j] = edge_target(lab)
            if neighbours.size:
                c = class_names.index(cls)
                edges[j] |= z_contact_target(lab, neighbours[2 * c], neighbours[2 * c + 1])
    missing = [p for p, _ in pairs if p not in vocabulary]
    if missing:
        raise InputError(f"prompts {missing} have no text embedding; add them to the prompt vocabulary.")
    return {
        "image": np.ascontiguousarray(np.moveaxis(encoded, -1, 0)),
        "masks": masks,
        "edges": edges,
        "exists": exists,
        "prompt_ids": np.array([vocabulary[p] for p, _ in pairs], np.int64),
    }
