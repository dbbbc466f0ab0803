"""The public generator: a labelled, procedurally imaged 3D fluorescence volume."""

from __future__ import annotations

from dataclasses import dataclass, field

import fastremap
import numpy as np

from fveseg.errors import InputError
from fveseg.synthetic.objects import draw_nuclei, draw_spots, grow_cells, plan_nuclei
from fveseg.synthetic.optics import microscope, stain
from fveseg.synthetic.options import SyntheticOptions, resolve_options


@dataclass
class SyntheticVolume:
    """A synthetic fluorescence volume with ground truth.

    Attributes
    ----------
    image : (z, y, x) uint16
        Camera counts of the imaged ``channel``.
    labels : (z, y, x) uint32
        Nucleus instances, ids 1..N sequential, drawn at their true extent (before blur).
    classes : dict[str, ndarray]
        ``"nuclei"`` (uint32 instances, same as ``labels``), ``"cells"`` (uint32 instances; a cell has
        its nucleus's id), ``"cell membranes"`` (uint8 binary shells at cell borders), ``"spots"``
        (uint32 puncta instances, sequential; drawn at their visible, diffraction-limited footprint
        because they are about as small as the point-spread function).
    spacing : tuple of 3 floats
        Voxel size (z, y, x) in µm.
    channel : str
        The structure shown by ``image`` (a key of ``classes``).
    clean : (z, y, x) float32
        The PSF-blurred stain before background, haze, illumination and noise (brightness units,
        a typical object ≈ 1).
    dividing_pairs : list of (int, int)
        Nucleus ids of each dividing pair.
    options : SyntheticOptions
        The options that produced the volume (preset and overrides applied).
    """

    image: np.ndarray
    labels: np.ndarray
    classes: dict[str, np.ndarray]
    spacing: tuple[float, float, float]
    channel: str = "nuclei"
    clean: np.ndarray | None = None
    dividing_pairs: list[tuple[int, int]] = field(default_factory=list)
    options: SyntheticOptions | None = None


def _sequential_ids(labels: np.ndarray, largest: int) -> np.ndarray:
    """Lookup table (largest + 1,) uint32: ids present in ``labels`` (not 0) → 1..n in order, others → 0."""
    present = np.zeros(largest + 1, bool)
    present[np.unique(labels)] = True
    present[0] = False
    table = np.zeros(largest + 1, np.uint32)
    table[present] = np.arange(1, int(present.sum()) + 1, dtype=np.uint32)
    return table


def make_nuclei_volume(
    shape: tuple[int, int, int] = (32, 128, 128),
    seed: int = 0,
    spacing: tuple[float, float, float] = (1.0, 0.5, 0.5),
    *,
    preset: str | None = "anisotropic",
    **options: object,
) -> SyntheticVolume:
    """Generate a seeded synthetic 3D fluorescence volume of nuclei, cells, membranes and puncta.

    Parameters
    ----------
    shape : (z, y, x) ints
        Volume size in voxels.
    seed : int
        Seed of ``numpy.random.default_rng``; the same seed and options give identical arrays.
    spacing : (z, y, x) floats
        Voxel size in µm. Objects and optics are specified in µm, so a coarser z step gives a truly
        anisotropic stack (use e.g. ``(1.5, 0.5, 0.5)`` for a z step 3× the pixel size).
    preset : {"anisotropic", "isotropic", "crowded", "hard", "embryo", "lightsheet"} or None
        Named settings (see ``fveseg.synthetic.PRESETS``): "anisotropic" (default: widefield-like z blur
        σz = 1.2 µm vs σxy = 0.3 µm), "isotropic" (confocal-like, nearly isotropic blur), "crowded"
        (tightly packed, larger, textured nuclei filling about a third of the volume), "hard" (held-out
        evaluation: stronger z blur, SNR 5, more dim, clustered and irregular nuclei), "embryo" (held out:
        large, well-separated nuclei, wide axial blur, unlabelled nuclei above and below the stack),
        "lightsheet" (held out: nuclei 5–10 % above the background, stripes, light lost with depth).
        None: the plain defaults of :class:`SyntheticOptions` (same as "anisotropic").
    **options
        Any field of :class:`SyntheticOptions` (applied after the preset), e.g. ``n_nuclei=20``,
        ``radius_um=(2, 4)``, ``channel="cell membranes"``, ``snr=5``, ``psf_sigma_um=(2.0, 0.3)``.

    Returns
    -------
    SyntheticVolume

    Raises
    ------
    InputError
        Bad shape or spacing, unknown preset, option or channel.

    Examples
    --------
    >>> volume = make_nuclei_volume((16, 64, 64), seed=1, n_nuclei=8)
    >>> volume.image.dtype, volume.labels.dtype, volume.image.shape
    (dtype('uint16'), dtype('uint32'), (16, 64, 64))
    """
    shape = tuple(int(n) for n in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise InputError(f"shape must be three positive sizes (z, y, x), got {shape}.")
    spacing_array = np.asarray(spacing, dtype=float)
    if spacing_array.shape != (3,) or not np.all(spacing_array > 0):
        raise InputError(f"spacing must be three positive voxel sizes in µm (z, y, x), got {spacing}.")
    resolved = resolve_options(preset, options)
    rng = np.random.default_rng(seed)

    # Nuclei beyond the stack: image a taller volume and keep the middle (`SyntheticOptions.beyond_stack_um`).
    pad = int(np.ceil(resolved.beyond_stack_um / spacing_array[0]))
    stack = shape
    shape = (shape[0] + 2 * pad, *shape[1:])
    extent = np.asarray(shape) * spacing_array
    plan = plan_nuclei(rng, extent, resolved)
    raw, depth = draw_nuclei(rng, plan, shape, spacing_array, resolved.irregularity)
    # Sequential ids: drop nuclei that were cut away entirely (outside the volume or fully overlapped).
    new_id = _sequential_ids(raw, len(plan.centers))
    present = new_id > 0
    nuclei = new_id[raw]
    brightness = np.zeros(int(present.sum()) + 1)
    brightness[1:] = plan.brightness[present[1:]]
    pairs = [
        (int(new_id[i + 1]), int(new_id[j + 1]))
        for i, j in enumerate(plan.pair_of)
        if j > i and present[i + 1] and present[j + 1]
    ]

    cells, membranes = grow_cells(nuclei, spacing_array, resolved.cell_margin_um)
    spots, spot_centres = draw_spots(
        rng, cells, spacing_array, resolved.spots_per_cell, resolved.spot_radius_um, resolved.psf_sigma_um
    )
    dye = stain(
        rng,
        resolved.channel,
        nuclei,
        depth,
        brightness,
        cells,
        membranes,
        spot_centres,
        spacing_array,
        resolved,
    )
    image, clean = microscope(rng, dye, spacing_array, resolved)
    if pad:
        inside = slice(pad, pad + stack[0])
        image, clean, membranes = image[inside].copy(), clean[inside].copy(), membranes[inside].copy()
        # nuclei and cells share ids: renumber both with the nuclei's ids that are still in the stack
        renumber = _sequential_ids(nuclei[inside], int(nuclei.max()))
        nuclei, cells = renumber[nuclei[inside]], renumber[cells[inside]]
        spots = fastremap.renumber(spots[inside].copy(), preserve_zero=True)[0].astype(np.uint32)
        pairs = [(int(renumber[a]), int(renumber[b])) for a, b in pairs if renumber[a] and renumber[b]]
    classes = {"nuclei": nuclei, "cell membranes": membranes, "cells": cells, "spots": spots}
    return SyntheticVolume(
        image=image,
        labels=nuclei,
        classes=classes,
        spacing=tuple(float(s) for s in spacing_array),
        channel=resolved.channel,
        clean=clean,
        dividing_pairs=pairs,
        options=resolved,
    )


def make_sample_volume() -> SyntheticVolume:
    """The deterministic sample of the napari plugin: (32, 128, 128) uint16 nuclei with labels.

    Touching clusters, a dividing pair, dim and bright nuclei, anisotropic blur (z step 1 µm, pixel
    0.5 µm) and Poisson–Gaussian noise. Takes about 0.15 s of CPU time (see ``docs/bench/synthetic.md``).
    """
    return make_nuclei_volume(
        (32, 128, 128),
        seed=2024,
        spacing=(1.0, 0.5, 0.5),
        preset="anisotropic",
        cluster_fraction=0.4,
        dividing_fraction=0.08,
        dim_fraction=0.2,
    )
