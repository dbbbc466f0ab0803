"""Options of the procedural microscopy generator and the named presets.

Every length is in micrometres (µm), every brightness is relative to a typical nucleus (1.0), so one set
of options gives the same-looking tissue at any voxel size.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from fveseg.errors import InputError

CHANNELS = ("nuclei", "cell membranes", "cells", "spots")


@dataclass(frozen=True)
class SyntheticOptions:
    """All knobs of :func:`fveseg.synthetic.make_nuclei_volume` (lengths in µm).

    Objects
        n_nuclei: exact number of nucleus slots to place (None: derived from ``density``); a dividing
            pair fills one slot with two nuclei, and slots that do not fit are skipped.
        density: fraction of the volume that nuclei should occupy when ``n_nuclei`` is None.
        radius_um: (min, max) mean nucleus radius.
        elongation: largest ratio between an ellipsoid's longest and shortest semi-axis.
        irregularity: amplitude of the low-frequency radial noise that dents the outline (0: ellipsoid).
        cluster_fraction: probability that a nucleus is placed touching an existing one.
        dividing_fraction: probability that a slot holds a dividing pair (two close, small, bright nuclei).
        dim_fraction: fraction of nuclei that are dim (brightness ``dim_brightness``).
        dim_brightness: (min, max) brightness of dim nuclei.
        brightness_spread: sigma of the log-normal brightness of ordinary nuclei.
        texture: amplitude of chromatin-like blobs inside nuclei (log-normal field, 0: flat).
        texture_scale_um: size of the chromatin blobs.
        cell_margin_um: how far a cell reaches beyond its nucleus (cells meet at Voronoi-like borders).
        spots_per_cell: mean number of puncta per cell (Poisson).
        spot_radius_um: (min, max) radius of the puncta.
    Optics and camera
        channel: which structure the image shows: one of ``CHANNELS``.
        psf_sigma_um: (sigma_z, sigma_xy) of the Gaussian point-spread function.
        haze: out-of-focus light, as a fraction of the in-focus signal (a very wide blur of the objects).
        haze_sigma_um: (sigma_z, sigma_xy) of that haze.
        background: autofluorescence level relative to a nucleus.
        uneven_illumination: relative amplitude of the smooth illumination field (0: flat).
        depth_attenuation: fraction of the light lost from the first slice to the last (scattering and
            absorption deeper in tissue; 0: none).
        stripes: relative amplitude of light-sheet stripes: shadows cast along x by the illuminating
            sheet, a different pattern in every slice (0: none).
        beyond_stack_um: nuclei are also placed this far above and below the stack; their blur and
            haze reach into the first and last slices while they stay unlabelled (0: none).
        snr: mean signal of a typical nucleus over the noise standard deviation at that signal.
        read_noise: camera read noise in photo-electrons (the Gaussian part of the noise).
        camera_offset: constant added by the camera, in counts.
        gain: counts per photo-electron.
    """

    n_nuclei: int | None = None
    density: float = 0.1
    radius_um: tuple[float, float] = (3.0, 6.0)
    elongation: float = 1.5
    irregularity: float = 0.08
    cluster_fraction: float = 0.3
    dividing_fraction: float = 0.05
    dim_fraction: float = 0.1
    dim_brightness: tuple[float, float] = (0.2, 0.45)
    brightness_spread: float = 0.15
    texture: float = 0.25
    texture_scale_um: float = 0.6
    cell_margin_um: float = 3.0
    spots_per_cell: float = 2.0
    spot_radius_um: tuple[float, float] = (0.3, 0.6)
    channel: str = "nuclei"
    psf_sigma_um: tuple[float, float] = (1.2, 0.3)
    haze: float = 0.08
    haze_sigma_um: tuple[float, float] = (5.0, 3.0)
    background: float = 0.02
    uneven_illumination: float = 0.25
    depth_attenuation: float = 0.0
    stripes: float = 0.0
    beyond_stack_um: float = 0.0
    snr: float = 25.0
    read_noise: float = 2.0
    camera_offset: float = 100.0
    gain: float = 2.0


# Presets are overrides of the defaults. "isotropic", "anisotropic" and "crowded" are training settings;
# "hard" is a harsher held-out setting: more blur along z, lower SNR, more dim and clustered nuclei,
# stronger haze. "embryo" and "lightsheet" are held-out settings after real stacks the training presets
# do not resemble (project issue 25): large, well-separated nuclei under a wide axial blur with nuclei
# above and below the stack; and a low-contrast light-sheet stack with stripes and light lost with depth.
PRESETS: dict[str, dict[str, object]] = {
    "isotropic": {"psf_sigma_um": (0.45, 0.4), "haze": 0.04, "snr": 30.0},
    "anisotropic": {},
    "hard": {
        "radius_um": (2.5, 7.0),
        "elongation": 1.8,
        "irregularity": 0.12,
        "cluster_fraction": 0.5,
        "dividing_fraction": 0.1,
        "dim_fraction": 0.3,
        "dim_brightness": (0.1, 0.3),
        "brightness_spread": 0.35,
        "texture": 0.4,
        "psf_sigma_um": (1.8, 0.4),
        "haze": 0.3,
        "uneven_illumination": 0.45,
        "snr": 5.0,
    },
    # tightly packed, textured nuclei (about 35 % of the voxels, up to 40 % of a slice), as in dense tissue
    "crowded": {
        "density": 0.55,
        "cluster_fraction": 0.9,
        "radius_um": (3.5, 7.0),
        "elongation": 1.6,
        "texture": 0.35,
    },
    # 8-16 large, well-separated nuclei per field, axial blur about 4x the lateral, out-of-focus nuclei
    # above and below the stack, light lost with depth
    "embryo": {
        "density": 0.08,
        "radius_um": (4.0, 5.5),
        "cluster_fraction": 0.1,
        "psf_sigma_um": (1.6, 0.4),
        "haze": 0.15,
        "depth_attenuation": 0.4,
        "beyond_stack_um": 6.0,
        "snr": 12.0,
    },
    # nuclei 5-10 % above a bright background, stripes, shot noise, dense tissue of unequal brightness.
    # Stripes and illumination multiply the background too, which is 12 times the nucleus signal here:
    # 3 % stripes are a third of the nucleus contrast (a person still sees the nuclei; at 20 % they do not)
    "lightsheet": {
        "density": 0.3,
        "cluster_fraction": 0.6,
        "brightness_spread": 0.35,
        "background": 12.0,
        "stripes": 0.03,
        "uneven_illumination": 0.05,
        "depth_attenuation": 0.3,
        "psf_sigma_um": (1.0, 0.35),
        "snr": 4.0,
    },
}


def resolve_options(preset: str | None, overrides: dict[str, object]) -> SyntheticOptions:
    """Return the defaults, updated by the preset, then by the caller's keyword options.

    Raises
    ------
    InputError
        For an unknown preset, an unknown option name or an out-of-range value.
    """
    if preset is not None and preset not in PRESETS:
        raise InputError(f"Unknown synthetic preset {preset!r}; use one of {sorted(PRESETS)} or None.")
    known = {field.name for field in dataclasses.fields(SyntheticOptions)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise InputError(
            f"Unknown synthetic option(s) {unknown}; valid options are: {', '.join(sorted(known))}."
        )
    merged = dict(PRESETS[preset]) if preset is not None else {}
    merged.update(overrides)
    options = SyntheticOptions(**merged)
    _check(options)
    return options


def _check(options: SyntheticOptions) -> None:
    if options.channel not in CHANNELS:
        raise InputError(f"Unknown channel {options.channel!r}; use one of {list(CHANNELS)}.")
    low, high = options.radius_um
    if not 0 < low <= high:
        raise InputError(f"radius_um must be (min, max) with 0 < min <= max, got {options.radius_um}.")
    if options.n_nuclei is not None and options.n_nuclei < 0:
        raise InputError(f"n_nuclei must be >= 0 or None, got {options.n_nuclei}.")
    if not 0 <= options.density < 0.6:
        raise InputError(f"density must be in [0, 0.6) (fraction of the volume), got {options.density}.")
    if options.snr <= 0:
        raise InputError(f"snr must be > 0, got {options.snr}; use a large value for nearly no noise.")
    if options.elongation < 1:
        raise InputError(f"elongation must be >= 1 (axis ratio), got {options.elongation}.")
    for name in ("cluster_fraction", "dividing_fraction", "dim_fraction"):
        value = getattr(options, name)
        if not 0 <= value <= 1:
            raise InputError(f"{name} must be a probability in [0, 1], got {value}.")
    for name in ("depth_attenuation", "stripes"):
        value = getattr(options, name)
        if not 0 <= value < 1:
            raise InputError(f"{name} must be a fraction in [0, 1), got {value}.")
    if options.beyond_stack_um < 0:
        raise InputError(f"beyond_stack_um must be >= 0 (µm), got {options.beyond_stack_um}.")
    if min(options.psf_sigma_um) < 0 or min(options.haze_sigma_um) <= 0:
        raise InputError("psf_sigma_um must be >= 0 and haze_sigma_um > 0 (sigma_z, sigma_xy in µm).")
