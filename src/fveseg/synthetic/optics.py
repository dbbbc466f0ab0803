"""From objects to a camera image: staining, point-spread blur, haze, illumination and noise."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from fveseg.synthetic.options import SyntheticOptions


def smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma_voxels: np.ndarray) -> np.ndarray:
    """Gaussian-filtered white noise with unit standard deviation, float32 of ``shape``."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma_voxels)
    return field / max(float(field.std()), 1e-6)


def illumination_field(
    rng: np.random.Generator, shape: tuple[int, ...], amplitude: float, depth_loss: float = 0.0
) -> np.ndarray:
    """A smooth multiplicative field around 1: in-plane bumps (vignetting, uneven lamp) times a
    gentle loss of light with depth, float32 broadcastable to ``shape``; ``amplitude`` = 0 gives 1.
    ``depth_loss``: a further fraction of the light lost linearly from the first slice to the last."""
    if amplitude == 0:
        light = np.ones((1, 1, 1), np.float32)
    else:
        coarse = rng.uniform(-1, 1, (4, 4)).astype(np.float32)
        plane = ndimage.zoom(coarse, [shape[1] / 4, shape[2] / 4], order=3, mode="nearest", grid_mode=True)
        plane = plane[: shape[1], : shape[2]]
        plane /= max(float(np.abs(plane).max()), 1e-6)
        depth = 1 - rng.uniform(0, amplitude / 2) * np.linspace(0, 1, shape[0], dtype=np.float32)
        light = ((1 + amplitude * plane)[None] * depth[:, None, None]).astype(np.float32)
    if depth_loss > 0:
        light = light * (1 - depth_loss * np.linspace(0, 1, shape[0], dtype=np.float32))[:, None, None]
    return light


def light_sheet_stripes(
    rng: np.random.Generator, shape: tuple[int, ...], spacing: np.ndarray, amplitude: float
) -> np.ndarray:
    """Multiplicative stripes of a light sheet entering along x, float32 of ``shape``, mean about 1.

    Objects in the sheet's path cast shadows that run along x: the pattern varies across y (features of
    about 1 µm) and changes over about 2 µm in z (as the sheet moves past the absorbers), and fades in
    and out along x as the sheet diverges."""
    if amplitude == 0:
        return np.ones((1, 1, 1), np.float32)
    depth, height, width = shape
    sigma = np.array([2.0 / spacing[0], 1.0 / spacing[1]])
    across = smooth_noise(rng, (depth, height), sigma)
    other = smooth_noise(rng, (depth, height), sigma)
    along = np.linspace(0, 1, width, dtype=np.float32)
    profile = across[:, :, None] * (1 - along) + other[:, :, None] * along
    profile /= max(float(profile.std()), 1e-6)
    return np.clip(1 + amplitude * profile, 0.05, None).astype(np.float32)


def stain(
    rng: np.random.Generator,
    channel: str,
    nuclei: np.ndarray,
    depth: np.ndarray,
    brightness: np.ndarray,
    cells: np.ndarray,
    membranes: np.ndarray,
    spot_centres: np.ndarray,
    spacing: np.ndarray,
    options: SyntheticOptions,
) -> np.ndarray:
    """Dye density of the imaged structure before optics, float32 (z, y, x), typical object ≈ 1.

    ``brightness`` (max id + 1,) is indexed by nucleus/cell id (0 → background); ``spot_centres``
    (K, 3) are the voxel indices of the puncta.
    """
    shape = nuclei.shape
    # Chromatin-like blobs: a log-normal field, mean ≈ 1, shared by all objects of the volume.
    blobs = smooth_noise(rng, shape, options.texture_scale_um / spacing)
    texture = np.exp(options.texture * blobs - options.texture**2 / 2).astype(np.float32)
    if channel == "nuclei":
        # Slightly dimmer rim: the DNA is densest towards the middle of a nucleus.
        profile = np.where(nuclei > 0, 1 - 0.25 * np.minimum(depth, 1) ** 2, 0).astype(np.float32)
        return brightness[nuclei].astype(np.float32) * profile * texture
    cell_gain = brightness[cells].astype(np.float32)
    if channel == "cells":
        # Cytoplasmic stain: fills the cell, weaker over the nucleus.
        return cell_gain * np.where(nuclei > 0, 0.35, 1.0).astype(np.float32) * texture
    if channel == "cell membranes":
        return cell_gain * (membranes.astype(np.float32) + 0.06 * (cells > 0)) * texture
    # "spots": point sources over a faint diffuse cellular signal. Each point is scaled by the PSF
    # volume so that, once blurred, its peak is about 3× a nucleus (varying per punctum).
    sigma_voxels = np.array([options.psf_sigma_um[0], *[options.psf_sigma_um[1]] * 2]) / spacing
    peak_to_point = float(np.prod(np.maximum(np.sqrt(2 * np.pi) * sigma_voxels, 1.0)))
    dye = (0.04 * (cells > 0) * texture).astype(np.float32)
    if len(spot_centres):
        gain = rng.uniform(0.6, 1.6, len(spot_centres)).astype(np.float32)
        dye[tuple(spot_centres.T)] += 3.0 * peak_to_point * gain
    return dye


def photons_for_snr(snr: float, background: float, read_noise: float) -> float:
    """Photons at brightness 1 such that signal / sqrt(signal + background + read²) equals ``snr``.

    Solves p² − snr²(1 + background)·p − snr²·read² = 0 for the positive root.
    """
    b = snr**2 * (1 + background)
    return float((b + np.sqrt(b**2 + 4 * snr**2 * read_noise**2)) / 2)


def microscope(
    rng: np.random.Generator, dye: np.ndarray, spacing: np.ndarray, options: SyntheticOptions
) -> tuple[np.ndarray, np.ndarray]:
    """Image ``dye`` through the microscope.

    Returns
    -------
    image : (z, y, x) uint16
        Camera counts: Poisson photon noise + Gaussian read noise, times gain, plus the camera offset.
    clean : (z, y, x) float32
        The PSF-blurred dye without background, haze, illumination or noise (brightness units).
    """
    sigma_z, sigma_xy = options.psf_sigma_um
    clean = ndimage.gaussian_filter(dye, np.array([sigma_z, sigma_xy, sigma_xy]) / spacing)
    haze_sigma = np.array([options.haze_sigma_um[0], *[options.haze_sigma_um[1]] * 2]) / spacing
    # Out-of-focus light is smooth: blur a 2×-coarser copy, then upsample (nearest, then a 2-voxel box
    # filter, which makes it piecewise linear) instead of blurring the full grid with a wide kernel.
    haze = ndimage.gaussian_filter(dye[::2, ::2, ::2], haze_sigma / 2)
    for axis in range(3):
        haze = np.repeat(haze, 2, axis=axis)
    haze = ndimage.uniform_filter(haze, 2)[: dye.shape[0], : dye.shape[1], : dye.shape[2]]
    # Scale the haze so that its mean over the stained region is `haze` × the mean in-focus signal.
    stained = dye > 0
    if stained.any() and haze.max() > 0:
        haze *= options.haze * float(dye[stained].mean()) / max(float(haze[stained].mean()), 1e-6)
    light = illumination_field(rng, dye.shape, options.uneven_illumination, options.depth_attenuation)
    light = light * light_sheet_stripes(rng, dye.shape, spacing, options.stripes)
    expected = light * (clean + haze + options.background)
    photons = photons_for_snr(options.snr, options.background, options.read_noise)
    electrons = rng.poisson(np.maximum(expected * photons, 0)).astype(np.float32)
    electrons += options.read_noise * rng.standard_normal(dye.shape, dtype=np.float32)
    counts = options.camera_offset + options.gain * electrons
    image = np.clip(np.rint(counts), 0, np.iinfo(np.uint16).max).astype(np.uint16)
    return image, clean.astype(np.float32)
