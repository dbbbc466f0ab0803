"""Real 2D nuclei images turned into short 3D stacks, so real appearance comes with 3D context.

The real training images are 2D. Used as one-slice volumes, their FVE context channels repeat the focal
slice, so the network never sees a real-looking neighbourhood in z, and on real stacks it marks the
out-of-focus light above and below a nucleus as nucleus. Here each labelled nucleus becomes an
ellipsoid: its 2D outline is the equator, its half-height ``e`` (in slices) comes from a random z-step and
flatness, and it sits at a random depth. Every slice of the short stack then shows

- the in-focus part of each nucleus (the pixels whose ellipsoid column reaches the slice): the real
  pixels, labelled;
- the out-of-focus rest: the same pixels blurred and dimmed more the further away they are (a few
  defocus bins), **not** labelled;
- the image's own background everywhere.

Intensities are scaled with the 2D image's own percentiles, as in a whole stack whose other slices
hold these nuclei in focus: a slice of haze alone stays dim instead of being stretched to full range.

So a slice just above a nucleus shows its haze but has no label, and a cap shows a shrunken,
labelled cross-section. Cost: a distance transform and a few Gaussian blurs of one crop.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from fveseg.normalize.intensity import PERCENTILES, apply_range
from training.data import LabelledVolume


@dataclass(frozen=True)
class DefocusConfig:
    """Ranges of the random stack geometry and optics.

    Lengths in pixels of the 2D image, most of them in units of the image's median nucleus radius
    ``r`` so that small and large nuclei get the same 3D shapes.
    """

    crop: int = 448  # side of the window defocused (the sample crop and zoom happen afterwards)
    z_step: tuple[float, float] = (0.8, 6.0)  # slice spacing in pixels, log-uniform
    flatness: tuple[float, float] = (0.5, 1.2)  # nucleus half-height / equatorial radius
    haze_reach: tuple[float, float] = (0.3, 2.0)  # r: how far beyond a nucleus its centre may sit
    blur: tuple[float, float] = (0.3, 0.8)  # defocus blur sigma / defocus distance
    decay: tuple[float, float] = (0.3, 2.0)  # r: defocus distance over which the light falls by e
    bins: tuple[float, ...] = (0.15, 0.35, 0.7, 1.2, 2.0)  # r: upper edges of the defocus bins


def _instance_radii(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel depth inside its instance (pixels) and each instance's radius (max depth), by id."""
    import edt

    inner = edt.edt(labels.astype(np.uint32, copy=False), black_border=False).astype(np.float32)
    radius = np.zeros(int(labels.max()) + 1, np.float32)
    np.maximum.at(radius, labels.ravel(), inner.ravel())
    return inner, radius


def defocus_volume(
    volume: LabelledVolume, rng: np.random.Generator, reach: int, config: DefocusConfig = DefocusConfig()
) -> LabelledVolume:
    """A (2 reach + 1, h, w) stack around focal slice ``reach`` made from a one-slice, one-class volume.

    Parameters
    ----------
    volume : LabelledVolume
        A 2D image ((1, H, W)) with instance labels of one class.
    rng : numpy.random.Generator
    reach : int
        Slices on each side of the focal slice (the FVE order's slices per side).
    config : DefocusConfig

    Returns
    -------
    LabelledVolume
        float32 image and uint32 instance labels (2 reach + 1, h, w), h, w <= ``config.crop``,
        ``view`` 0. The input is returned unchanged when it is not a one-slice, one-class volume.
    """
    if volume.image.shape[0] != 1 or len(volume.classes) != 1:
        return volume
    ((name, labels3d),) = volume.classes.items()
    image, labels = volume.image[0].astype(np.float32), np.asarray(labels3d[0])
    height, width = image.shape
    y0 = int(rng.integers(max(height - config.crop, 0) + 1))
    x0 = int(rng.integers(max(width - config.crop, 0) + 1))
    window = (slice(y0, y0 + config.crop), slice(x0, x0 + config.crop))
    image, labels = image[window], labels[window]

    inner, radius = _instance_radii(labels)
    nucleus = labels > 0
    typical = float(np.median(radius[1:][radius[1:] > 0])) if nucleus.any() else 1.0
    z_step = float(np.exp(rng.uniform(*np.log(config.z_step))))
    count = len(radius)
    half = radius / z_step * rng.uniform(*config.flatness, size=count).astype(np.float32)
    spread = half + float(rng.uniform(*config.haze_reach)) * typical / z_step
    centre = rng.uniform(-spread, spread).astype(np.float32)
    # the ellipsoid's half-height above each pixel: e * sqrt(1 - (rho / r)^2), rho = r - depth
    rho = np.clip(1.0 - inner / np.maximum(radius[labels], 1e-6), 0.0, 1.0)
    column = half[labels] * np.sqrt(1.0 - rho**2)

    background = float(np.median(image[~nucleus])) if (~nucleus).any() else float(image.min())
    signal = np.where(nucleus, np.maximum(image - background, 0.0), 0.0)
    blur = float(rng.uniform(*config.blur))
    decay = float(rng.uniform(*config.decay)) * typical
    edges = np.asarray(config.bins, np.float32) * typical
    slices, label_slices = [], []
    for z in range(-reach, reach + 1):
        defocus = (np.abs(z - centre[labels]) - column) * z_step  # pixels beyond the ellipsoid's surface
        in_focus = nucleus & (defocus <= 0)
        plane = background + np.where(in_focus, signal, 0.0)
        lower = 0.0
        for upper in edges:
            part = nucleus & (defocus > lower) & (defocus <= upper)
            if part.any():
                middle = 0.5 * (lower + upper)
                light = np.where(part, signal, 0.0) * np.exp(-middle / decay)
                plane += ndimage.gaussian_filter(light, blur * middle, truncate=3.0)
            lower = upper
        slices.append(plane.astype(np.float32))
        label_slices.append(np.where(in_focus, labels, 0).astype(np.uint32))
    stack = np.stack(slices)
    # intensities scaled as in a whole volume whose other slices hold these nuclei in focus: a slice
    # of haze alone stays dim, as it does in a real stack (not stretched to full range)
    lo, hi = np.percentile(image, PERCENTILES)
    return LabelledVolume(
        stack,
        {name: np.stack(label_slices)},
        None,
        f"{volume.name}#defocus",
        absent=volume.absent,
        normalized=apply_range(stack, float(lo), float(hi)),
        view=0,
    )
