"""Re-image a labelled volume as another microscope would have recorded it (numpy/scipy only).

Every function takes plain arrays and returns plain arrays, deterministically for a given ``seed``:

* ``image``: (D, H, W) array of any real dtype (a 2D image is a one-slice volume, (1, H, W)); every
  function returns a new C-contiguous float32 image, in the input's intensity units unless said otherwise.
* ``labels``: (D, H, W) integer instance ids (0 = background) aligned with ``image``, or None. Geometric
  functions resample them with nearest neighbour and keep their dtype; intensity functions only read them
  (to tell nucleus from background) and never change them.
* ``spacing``: (dz, dy, dx) voxel size (any unit) or None; geometric functions return it adjusted.

Geometry: `axial_subsample` (a coarser z step with the matching wider axial PSF) and `inplane_scale`
(area-average down- or linear up-sampling). Intensity: `shot_noise` (Poisson noise at a per-voxel SNR),
`stripes` (light-sheet stripe artefacts) and `low_contrast` (dim nuclei on a bright background).

Intensity functions need to know what "signal" is; `signal_levels` measures it: the camera offset (0.1st
percentile of the image), the background (median of the offset-free image outside the nuclei) and the
mean nucleus signal above that background. The nuclei are ``labels > 0`` or, without labels, the voxels
above an Otsu threshold.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import ndimage as ndi

__all__ = [
    "SignalLevels",
    "signal_levels",
    "axial_subsample",
    "inplane_scale",
    "shot_noise",
    "stripes",
    "low_contrast",
]


class SignalLevels(NamedTuple):
    """Intensity levels of an image, in its own units: ``offset`` (the zero-photon level), ``background``
    (offset-free median outside nuclei) and ``signal`` (offset-free mean nucleus intensity minus
    ``background``, at least a tiny positive number)."""

    offset: float
    background: float
    signal: float


def signal_levels(image: np.ndarray, labels: np.ndarray | None = None) -> SignalLevels:
    """Measure offset, background and nucleus signal of ``image`` (D, H, W) (see the module docstring).

    ``labels`` (D, H, W) int or None: nucleus voxels are ``labels > 0``; None: voxels above Otsu's
    threshold of the image.
    """
    image = np.asarray(image, dtype=np.float32)
    offset = float(np.percentile(image, 0.1))
    clean = image - offset
    if labels is not None:
        nuclei = np.asarray(labels) > 0
    else:
        from skimage.filters import threshold_otsu

        nuclei = clean > threshold_otsu(clean)
    if not nuclei.any() or nuclei.all():
        background, mean_nucleus = float(np.percentile(clean, 50)), float(np.percentile(clean, 99))
    else:
        background, mean_nucleus = float(np.median(clean[~nuclei])), float(clean[nuclei].mean())
    signal = max(mean_nucleus - background, 1e-6 * max(float(clean.max()), 1.0))
    return SignalLevels(offset, background, signal)


def axial_subsample(
    image: np.ndarray,
    labels: np.ndarray | None,
    spacing,
    step: int,
    blur: float | None = 0.5,
    start: int = 0,
):
    """A z step ``step`` times coarser: every ``step``-th slice after an axial Gaussian blur.

    A microscope set to a coarser z step usually also has a wider axial PSF (lower-NA objective, opened
    pinhole, thicker light sheet), so the image is blurred along z with sigma ``blur * step`` slices of
    the input before the slices ``start, start + step, ...`` are kept (``blur`` None or 0: no blur, plain
    subsampling). Labels keep the same slices (nearest neighbour).

    Returns
    -------
    image : (ceil((D - start) / step), H, W) float32
    labels : same shape, labels' dtype (or None)
    spacing : (dz * step, dy, dx) or None
    """
    if step < 1 or int(step) != step:
        raise ValueError(f"step must be a positive integer, got {step}")
    step = int(step)
    image = np.asarray(image, dtype=np.float32)
    if blur and step > 1:
        image = ndi.gaussian_filter1d(image, sigma=blur * step, axis=0, mode="reflect")
    image = np.ascontiguousarray(image[start::step])
    if labels is not None:
        labels = np.ascontiguousarray(np.asarray(labels)[start::step])
    if spacing is not None:
        spacing = (float(spacing[0]) * step, float(spacing[1]), float(spacing[2]))
    return image, labels, spacing


def _resample_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) float32 weights: area average when shrinking, linear interpolation otherwise.

    Pixel j of the output covers the input interval [j, j + 1) * n_in / n_out (pixel-edge alignment, so
    the field of view is unchanged)."""
    ratio = n_in / n_out
    if n_out < n_in:  # each output pixel: the overlap-weighted mean of the input pixels it covers
        lo = np.arange(n_out)[:, None] * ratio
        hi = lo + ratio
        i = np.arange(n_in)[None, :]
        overlap = np.clip(np.minimum(hi, i + 1) - np.maximum(lo, i), 0, None)
        return (overlap / ratio).astype(np.float32)
    centre = np.clip((np.arange(n_out) + 0.5) * ratio - 0.5, 0, n_in - 1)
    left = np.floor(centre).astype(int)
    right = np.minimum(left + 1, n_in - 1)
    frac = centre - left
    weights = np.zeros((n_out, n_in), np.float32)
    np.add.at(weights, (np.arange(n_out), left), 1 - frac)
    np.add.at(weights, (np.arange(n_out), right), frac)
    return weights


def _nearest_index(n_in: int, n_out: int) -> np.ndarray:
    """Input pixel holding each output pixel's centre (same alignment as `_resample_matrix`)."""
    return np.minimum(np.floor((np.arange(n_out) + 0.5) * n_in / n_out).astype(int), n_in - 1)


def inplane_scale(image: np.ndarray, labels: np.ndarray | None, spacing, factor):
    """Rescale each slice in-plane by ``factor`` (float, or (fy, fx)), as a lower/higher magnification.

    Shrinking (factor < 1) averages the area each new pixel covers (a camera with bigger pixels);
    enlarging interpolates linearly. New sizes are ``round(H * fy)``, ``round(W * fx)`` (at least 1);
    labels take the input pixel under each new pixel's centre (nearest neighbour).

    Returns
    -------
    image : (D, round(H * fy), round(W * fx)) float32
    labels : same shape, labels' dtype (or None)
    spacing : (dz, dy * H / H', dx * W / W') or None (the physical field of view is unchanged)
    """
    fy, fx = (factor, factor) if np.isscalar(factor) else factor
    if fy <= 0 or fx <= 0:
        raise ValueError(f"factor must be > 0, got {factor}")
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 3:
        raise ValueError(f"image must be (D, H, W), got shape {image.shape}")
    _, h, w = image.shape
    h2, w2 = max(1, round(h * fy)), max(1, round(w * fx))
    out = image
    if h2 != h:
        out = _resample_matrix(h, h2) @ out
    if w2 != w:
        out = out @ _resample_matrix(w, w2).T
    out = np.ascontiguousarray(out, dtype=np.float32)
    if labels is not None:
        labels = np.asarray(labels)
        labels = np.ascontiguousarray(labels[:, _nearest_index(h, h2)][:, :, _nearest_index(w, w2)])
    if spacing is not None:
        spacing = (float(spacing[0]), float(spacing[1]) * h / h2, float(spacing[2]) * w / w2)
    return out, labels, spacing


def shot_noise(
    image: np.ndarray, labels: np.ndarray | None, snr: float, seed: int, levels: SignalLevels | None = None
) -> np.ndarray:
    """Poisson (photon shot) noise at a per-voxel ``snr`` inside the nuclei.

    Definition: with the `signal_levels` offset o, background b and mean nucleus signal s (all in image
    units), the offset-free image (image - o, clipped at 0) is taken as the expected photon count times
    1/g, and g is chosen so that the mean nucleus voxel has SNR = s·g / sqrt((b + s)·g) = ``snr``, i.e.
    g = snr² (b + s) / s². The result is o + Poisson(g·(image - o)) / g (float32, input units). The noise
    already in the input adds to it and is not counted (in cells3d the background's noise is about 1/11
    of the mean nucleus signal, so at ``snr`` 2 the added noise dominates).
    ``levels``: precomputed `signal_levels` (default: measured on ``image`` and ``labels``).

    Returns (D, H, W) float32.
    """
    if snr <= 0:
        raise ValueError(f"snr must be > 0, got {snr}")
    image = np.asarray(image, dtype=np.float32)
    offset, background, signal = levels or signal_levels(image, labels)
    gain = snr**2 * (background + signal) / signal**2
    rng = np.random.default_rng(seed)
    photons = rng.poisson(np.clip(image - offset, 0, None).astype(np.float64) * gain)
    return (offset + photons / gain).astype(np.float32)


def _stripe_pattern(rng: np.random.Generator, depth: int, width: int, stripe_px: float) -> np.ndarray:
    """(depth, width) smooth random profiles in [-1, 1] (std 0.5 before clipping), one per slice."""
    noise = rng.standard_normal((depth, width))
    pattern = ndi.gaussian_filter1d(noise, sigma=stripe_px, axis=1, mode="wrap") if stripe_px > 0 else noise
    pattern /= pattern.std(axis=1, keepdims=True) + 1e-12
    return np.clip(pattern / 2, -1, 1)


def stripes(
    image: np.ndarray,
    labels: np.ndarray | None,
    seed: int,
    strength: float = 0.2,
    additive: float = 0.2,
    axis: int = 1,
    stripe_px: float = 1.5,
    noise_snr: float | None = 10.0,
) -> np.ndarray:
    """Light-sheet-like stripe artefacts: stripes running along in-plane ``axis`` (1: y, 2: x).

    Absorbing or scattering structures in a light sheet's path cast shadows (and refracted bright lines)
    along the illumination direction: the intensity varies across the stripes, is constant along them,
    and changes from slice to slice. Each slice z gets two random smooth profiles p(z, ·), q(z, ·) across
    the stripes (in [-1, 1], std ~0.5, correlation width ``stripe_px`` pixels):
    image' = o + (image - o)·(1 + strength·p) + additive·s·q, with o and s from `signal_levels`; so at
    the defaults, stripes reach ±20 % of the nucleus signal multiplicatively and ±20 % additively. Then
    mild shot noise at ``noise_snr`` (`shot_noise`, None: none). Clipped at 0.

    Returns (D, H, W) float32.
    """
    if axis not in (1, 2, -1, -2):
        raise ValueError(f"axis must be an in-plane axis (1 or 2), got {axis}")
    image = np.asarray(image, dtype=np.float32)
    levels = signal_levels(image, labels)
    rng = np.random.default_rng(seed)
    across = 2 if axis in (1, -2) else 1  # the axis the stripes vary along
    depth, n = image.shape[0], image.shape[across]
    p = _stripe_pattern(rng, depth, n, stripe_px)
    q = _stripe_pattern(rng, depth, n, stripe_px)
    shape = (depth, 1, n) if across == 2 else (depth, n, 1)
    p, q = p.reshape(shape).astype(np.float32), q.reshape(shape).astype(np.float32)
    clean = image - levels.offset
    out = levels.offset + clean * (1 + strength * p) + additive * levels.signal * q
    out = np.clip(out, 0, None).astype(np.float32)
    if noise_snr:
        out = shot_noise(out, labels, noise_snr, seed=int(rng.integers(2**63)), levels=levels)
    return out


def low_contrast(
    image: np.ndarray,
    labels: np.ndarray | None,
    seed: int,
    contrast: float = 0.07,
    background_photons: float = 4000.0,
) -> np.ndarray:
    """Dim nuclei on a bright background (autofluorescent or out-of-focus tissue, high camera background).

    With `signal_levels` b and s, the normalised signal is n = max(image - o - b, 0) / s (mean nucleus
    ≈ 1, background 0); the expected photon count is B·(1 + ``contrast``·n) with B =
    ``background_photons``, and the image is a Poisson draw of it, in photons (float32). At the defaults
    the mean nucleus is 7 % (280 photons) above a 4000-photon background; the noise there is
    sqrt(4280) ≈ 65 photons, a per-voxel SNR of the nucleus-to-background difference of about 4.3.

    Returns (D, H, W) float32 photon counts.
    """
    image = np.asarray(image, dtype=np.float32)
    offset, background, signal = signal_levels(image, labels)
    normalised = np.clip(image - offset - background, 0, None) / signal
    expected = background_photons * (1 + contrast * normalised.astype(np.float64))
    return np.random.default_rng(seed).poisson(expected).astype(np.float32)
