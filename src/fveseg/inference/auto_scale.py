"""Object size from a first segmentation, and the in-plane scale that brings it to the trained size.

The default model learnt nuclei about 10–40 px across (the DSB 2018 training images: per image, the
median nucleus is 16 px across its narrowest part; 10 to 42 px from the 10th to the 90th percentile).
Much larger nuclei are cut into pieces, so `fveseg.inference.Segmenter` can first segment a few slices
as they are, measure the objects with `typical_diameter` and shrink the slices with `scale_for_diameter`.
Clearly smaller nuclei (under 16 px) are segmented better enlarged a little (1.25 times): touching small
nuclei are then split more often.

A first pass can also be fooled outright: nuclei several times larger than trained (or the noise of
a dark background, stretched by normalisation) come out as a carpet of small, unsure fragments whose
size says "no resize needed". The network is then much surer at a smaller scale, which `surer_at_half`
detects from the share of unsure pixels.

The size measure is robust to what a first pass at the wrong scale gets wrong:

- touching objects merged into one blob: each 2D blob counts with its largest inscribed circle, whose
  diameter stays that of one object (an equivalent-area diameter of a merged pair is 1.4 times larger);
- small fragments and the thin caps of 3D objects: the median is taken over pixels (area-weighted), so
  the many small pieces do not outvote the objects that make up most of the mask.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

#: Diameter (2 x largest inscribed radius, px) the default model segments best at; measured in
#: docs/model-card.md ("Automatic resize") on the 53 validation images, where 16–20 px all score alike.
TARGET_DIAMETER = 18.0
#: Smallest scale chosen automatically (objects ~72 px across and above).
MIN_AUTO_SCALE = 0.25
#: Objects measuring under this (px, 0.9 x the target) are enlarged, by `ENLARGE_SCALE`. On the 53
#: validation images (docs/model-card.md, "Enlarging small nuclei") thresholds of 11 to 22 px all raised
#: mean F1 by 0.005 to 0.011; larger enlargements (1.5, or up to the target) lowered it.
ENLARGE_BELOW = 16.0
#: The one enlargement the automatic scale uses.
ENLARGE_SCALE = 1.25
#: Probabilities in this open band count as unsure (`ambiguous_fraction`).
AMBIGUOUS_BAND = (0.2, 0.8)
#: Nucleus diameters (pixels, as the network sees them) the bundled models were trained at: the
#: ``augment.target_diameter`` of every `training/configs` file they were trained with.
TRAINED_DIAMETER = (9.0, 24.0)
#: `surer_at_half`: half the scale wins when it leaves less than this share of the unsure pixels.
AMBIGUITY_DROP = 0.5


def typical_diameter(mask: np.ndarray) -> float:
    """Typical object diameter in pixels of a stack of 2D masks: the area-weighted median over 2D
    connected components of twice the largest inscribed radius.

    Parameters
    ----------
    mask : ndarray (n, H, W) or (H, W) of bool
        Foreground of n slices; components are found per slice (8-connected).

    Returns
    -------
    float
        Diameter in pixels; 0.0 when the mask is empty.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim == 2:
        mask = mask[None]
    if mask.ndim != 3:
        raise ValueError(f"mask must be (n, H, W) or (H, W), got shape {mask.shape}")
    diameters, areas = [], []
    for plane in mask:
        if not plane.any():
            continue
        labels, count = ndi.label(plane, structure=np.ones((3, 3), bool))
        if plane.all():  # no background to measure from: the object is at least the slice
            diameters.append(np.array([float(min(plane.shape))]))
            areas.append(np.array([float(plane.size)]))
            continue
        # The image border is not an edge: an object cut by it keeps its inscribed radius.
        distance = ndi.distance_transform_edt(plane)
        # per-component maximum without the sort `ndi.maximum` does (0.6 s of a cells3d run's probe)
        largest = np.zeros(count + 1)
        np.maximum.at(largest, labels[plane], distance[plane])
        diameters.append(2.0 * largest[1:])
        areas.append(np.bincount(labels.ravel(), minlength=count + 1)[1:].astype(np.float64))
    if not diameters:
        return 0.0
    diameters, areas = np.concatenate(diameters), np.concatenate(areas)
    order = np.argsort(diameters, kind="stable")
    cumulative = np.cumsum(areas[order])
    return float(diameters[order][np.searchsorted(cumulative, cumulative[-1] / 2)])


def scale_for_diameter(
    diameter: float,
    target: float = TARGET_DIAMETER,
    lowest: float = MIN_AUTO_SCALE,
    enlarge_below: float = ENLARGE_BELOW,
) -> float:
    """In-plane scale that brings objects of ``diameter`` px towards ``target`` px.

    Shrinks large objects to about ``target`` in steps of 0.05 (small changes of the estimate give the
    same scale), keeping 1 when the change would be under 10 %. Objects under ``enlarge_below`` px are
    enlarged by the fixed `ENLARGE_SCALE` (1.25): more enlargement measured worse on the validation
    images, and it costs time.

    Parameters
    ----------
    diameter : float
        Measured typical diameter (px), e.g. from `typical_diameter`; 0 or less means nothing was found.
    target : float
        Diameter to reach when shrinking (px).
    lowest : float
        Smallest scale returned.
    enlarge_below : float
        Diameter (px) under which the objects are enlarged; 0 never enlarges.

    Returns
    -------
    float
        Scale in [lowest, 1], or `ENLARGE_SCALE`.
    """
    if not diameter > 0:
        return 1.0
    if diameter < enlarge_below:
        return ENLARGE_SCALE
    scale = round(min(1.0, max(lowest, target / diameter)) * 20) / 20
    return 1.0 if scale > 0.9 else max(lowest, scale)


def ambiguous_fraction(probabilities: np.ndarray) -> float:
    """Share of pixels whose probability lies inside `AMBIGUOUS_BAND` (0.2 < p < 0.8).

    Parameters
    ----------
    probabilities : ndarray of float, any shape
        Mask probabilities in [0, 1] (zero where the target was reported absent).

    Returns
    -------
    float
        In [0, 1]; 0.0 for an empty array.
    """
    probabilities = np.asarray(probabilities)
    if probabilities.size == 0:
        return 0.0
    low, high = AMBIGUOUS_BAND
    return float(np.count_nonzero((probabilities > low) & (probabilities < high)) / probabilities.size)


def surer_at_half(at_scale: np.ndarray, at_half: np.ndarray, drop: float = AMBIGUITY_DROP) -> bool:
    """Whether segmenting at half the scale left fewer than ``drop`` times the unsure pixels.

    On the 53 validation images (docs/model-card.md, "Automatic resize") this fires on one image only:
    three nuclei 100 px across, cut at native size into 172 fragments over a noisy background (32 % of
    its pixels unsure; 1 % at half the scale). Everywhere else the unsure share changes far less, so the
    diameter rule's choice stands.

    Parameters
    ----------
    at_scale, at_half : ndarray of float
        Probabilities of the same slices segmented at the chosen scale and at half of it.
    drop : float
        Required ratio of unsure shares (0.5: half as many unsure pixels).
    """
    return ambiguous_fraction(at_half) < drop * ambiguous_fraction(at_scale)
