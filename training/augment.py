"""Augmentation of one training slab (the focal slice and its z-neighbours) and its focal labels.

Geometry is applied to the slab *before* Fractal Volumetric Encoding, because FVE interleaves the
downsampled context in 2×2 pixel blocks that a resize or a flip of the encoded image would scramble.
Intensity changes act on the normalised (0–255) slab, the scale inference feeds to FVE. The only change
made after encoding is the swap of the two context channels, which is exactly a flip along z.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and ranges of every augmentation (all optional: set a probability to 0)."""

    scale: tuple[float, float] = (0.6, 1.6)  # zoom factor range (log-uniform); 1 = native pixels
    # Size normalisation: inference resizes slices so nuclei measure about 18 px
    # (fveseg.inference.auto_scale),
    # so nuclei examples are zoomed, with probability `size_norm_p`, to a typical diameter drawn
    # log-uniformly from this range (pixels, as `typical_diameter` measures it); None: `scale` only.
    target_diameter: tuple[float, float] | None = None
    size_norm_p: float = 0.75
    zoom_limits: tuple[float, float] = (0.15, 3.0)  # bounds on a size-normalising zoom
    flip: bool = True
    rot90: bool = True
    blur_p: float = 0.25
    blur_sigma: tuple[float, float] = (0.3, 1.5)  # pixels, in-plane
    contrast_p: float = 0.5
    contrast: tuple[float, float] = (0.75, 1.25)
    offset: tuple[float, float] = (-20.0, 20.0)  # on the 0-255 scale
    gamma_p: float = 0.5
    gamma: tuple[float, float] = (0.65, 1.5)
    noise_p: float = 0.35
    noise_sigma: tuple[float, float] = (2.0, 14.0)  # Gaussian + signal-dependent, 0-255 scale
    # Rescale a noisy slab to its own 0.5-99.5 percentiles, as inference normalises a noisy volume
    # (fveseg.normalize.intensity): noise widens that range, so real noisy stacks reach the network with less
    # contrast than the clean slab plus noise.
    noise_renormalise: bool = False
    swap_context_p: float = 0.5


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


def size_normalising_scale(
    diameter: float, config: AugmentConfig, rng: np.random.Generator
) -> tuple[float, float]:
    """The zoom range for one example whose objects measure `diameter` pixels.

    Returns `config.scale` unless size normalisation is on, the diameter is known (> 0) and a draw with
    probability `config.size_norm_p` says so; then the range that maps `diameter` onto
    `config.target_diameter`, clipped to `config.zoom_limits`.
    """
    if config.target_diameter is None or diameter <= 0 or rng.random() >= config.size_norm_p:
        return config.scale
    low_zoom, high_zoom = config.zoom_limits
    low = min(max(config.target_diameter[0] / diameter, low_zoom), high_zoom)
    high = min(max(config.target_diameter[1] / diameter, low_zoom), high_zoom)
    return (low, high) if low < high else (low, low)


def random_crop_scale(
    slab: np.ndarray,
    labels: np.ndarray,
    out_size: int,
    rng: np.random.Generator,
    scale: tuple[float, float] = (1.0, 1.0),
    anchor: tuple[int, int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Zoom by a random factor and crop (or zero-pad) to `out_size` × `out_size`.

    Parameters
    ----------
    slab : ndarray (D, H, W) float32
        Normalised image slices (0–255 scale).
    labels : ndarray (C, H, W) integer
        Label maps of the focal slice (one per class), resampled by nearest neighbour.
    out_size : int
        Side of the output in pixels.
    rng : numpy.random.Generator
    scale : (float, float)
        Range of the zoom factor, drawn log-uniformly.
    anchor : (y, x), optional
        A pixel the crop must contain (e.g. a foreground pixel, so crops of sparse images hold objects).

    Returns
    -------
    slab : ndarray (D, out_size, out_size) float32
    labels : ndarray (C, out_size, out_size) int64
    """
    factor = _log_uniform(rng, *scale) if scale[0] != scale[1] else float(scale[0])
    height, width = slab.shape[-2:]
    window = max(int(round(out_size / factor)), 4)
    # crop origin in source pixels (negative or past the end means zero padding there)
    starts = []
    for axis_len, anchor_pos in zip((height, width), anchor if anchor is not None else (None, None)):
        if axis_len <= window:
            low, high = axis_len - window, 0
        else:
            low, high = 0, axis_len - window
        if anchor_pos is not None:
            low, high = max(low, anchor_pos - window + 1), min(high, anchor_pos)
            low = min(low, high)
        starts.append(int(rng.integers(low, high + 1)))
    img_win = np.zeros(slab.shape[:-2] + (window, window), np.float32)
    lab_win = np.zeros(labels.shape[:-2] + (window, window), labels.dtype)
    (y0, x0) = starts
    sy, sx = slice(max(y0, 0), min(y0 + window, height)), slice(max(x0, 0), min(x0 + window, width))
    dy, dx = slice(sy.start - y0, sy.stop - y0), slice(sx.start - x0, sx.stop - x0)
    img_win[..., dy, dx] = slab[..., sy, sx]
    lab_win[..., dy, dx] = labels[..., sy, sx]
    if window == out_size:
        return img_win, lab_win.astype(np.int64)
    img_t = torch.from_numpy(img_win)[None]
    img_out = F.interpolate(
        img_t, size=(out_size, out_size), mode="bilinear", align_corners=False, antialias=window > out_size
    )[0].numpy()
    lab_t = torch.from_numpy(lab_win.astype(np.int64))[None].double()
    lab_out = F.interpolate(lab_t, size=(out_size, out_size), mode="nearest-exact")[0].long().numpy()
    return img_out, lab_out


def random_flip_rot(
    slab: np.ndarray, labels: np.ndarray, rng: np.random.Generator, flip: bool = True, rot90: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Random in-plane flips and quarter turns, applied identically to image slices and labels."""
    if flip and rng.random() < 0.5:
        slab, labels = slab[..., ::-1], labels[..., ::-1]
    if flip and rng.random() < 0.5:
        slab, labels = slab[..., ::-1, :], labels[..., ::-1, :]
    if rot90:
        turns = int(rng.integers(4))
        slab, labels = np.rot90(slab, turns, axes=(-2, -1)), np.rot90(labels, turns, axes=(-2, -1))
    return np.ascontiguousarray(slab), np.ascontiguousarray(labels)


def random_intensity(slab: np.ndarray, rng: np.random.Generator, config: AugmentConfig) -> np.ndarray:
    """Blur, contrast/offset, gamma and noise on a normalised slab (D, H, W), returned as uint8."""
    out = slab.astype(np.float32, copy=True)
    if rng.random() < config.blur_p:
        sigma = rng.uniform(*config.blur_sigma)
        out = ndimage.gaussian_filter(out, sigma=(0, sigma, sigma))
    if rng.random() < config.contrast_p:
        out = out * rng.uniform(*config.contrast) + rng.uniform(*config.offset)
    if rng.random() < config.gamma_p:
        gamma = _log_uniform(rng, *config.gamma)
        out = 255.0 * (np.clip(out, 0, 255) / 255.0) ** gamma
    if rng.random() < config.noise_p:
        sigma = rng.uniform(*config.noise_sigma)
        # camera-like: a constant floor plus a shot-noise part that grows with the signal
        std = sigma * np.sqrt(0.3 + 0.7 * np.clip(out, 0, 255) / 255.0)
        out = out + rng.standard_normal(out.shape, dtype=np.float32) * std
        if config.noise_renormalise:
            from fveseg.normalize.intensity import PERCENTILES

            low, high = np.percentile(out, PERCENTILES)
            if high > low:
                out = (out - low) * (255.0 / (high - low))
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def swap_context(encoded: np.ndarray, rng: np.random.Generator, probability: float = 0.5) -> np.ndarray:
    """Swap the two context channels (1 and 2) of an encoded (H, W, 3) image with `probability`."""
    if rng.random() < probability:
        return encoded[..., [0, 2, 1]]
    return encoded


def edge_target(instances: np.ndarray) -> np.ndarray:
    """3×3 morphological gradient of an instance label image: True where the label changes.

    Parameters
    ----------
    instances : ndarray (H, W) integer
        Instance ids (0 = background).

    Returns
    -------
    ndarray (H, W) bool
        Object borders, and both sides of every interface between touching instances.
    """
    footprint = np.ones((3, 3), bool)
    grown = ndimage.grey_dilation(instances, footprint=footprint, mode="nearest")
    shrunk = ndimage.grey_erosion(instances, footprint=footprint, mode="nearest")
    return grown != shrunk


def z_contact_target(instances: np.ndarray, below: np.ndarray, above: np.ndarray) -> np.ndarray:
    """Where an object of the focal slice touches a different object in a neighbouring slice.

    A slice's own label changes (`edge_target`) never separate two nuclei stacked along the slicing
    axis; these pixels do, on both sides of the contact (each side's focal slice marks its own part).

    Parameters
    ----------
    instances, below, above : ndarray (H, W) integer
        Instance ids of the focal slice and of the slices before and after it (zeros at the volume's ends).

    Returns
    -------
    ndarray (H, W) bool
    """
    inside = instances > 0
    other_below = (below > 0) & (below != instances)
    other_above = (above > 0) & (above != instances)
    return inside & (other_below | other_above)
