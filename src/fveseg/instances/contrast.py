"""Drop objects that are no brighter than the background right around them.

A nucleus is brighter than its immediate surroundings; a piece of a background stripe, or of haze between
nuclei, that a slice-wise network marks as an object is not. Each object's contrast is the mean intensity
inside it minus the mean in a ring `RING_PX` pixels wide around it in the plane of each slice (background
voxels only); an object whose contrast is under ``fraction`` × the median contrast of the stack's
objects is dropped. Scale-free, like the speck filter: it needs no noise level or stain brightness.
Objects with no background in their ring (packed among other objects) are kept.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

__all__ = ["drop_dim_objects", "object_contrast", "RING_PX"]

#: Width of the in-plane ring around each object where its background is measured, in pixels.
RING_PX = 2


def object_contrast(labels: np.ndarray, image, axis: int = 0) -> np.ndarray:
    """Mean of ``image`` inside each object minus the mean in its in-plane background ring.

    Parameters
    ----------
    labels : ndarray (D, H, W) of int
        Instance labels, 0 background.
    image : array (D, H, W)
        The intensities the objects were segmented from.
    axis : int
        The slicing axis: the ring lies in the planes across it.

    Returns
    -------
    ndarray of float64, (labels.max() + 1,)
        Entry i for object i (entry 0 and absent ids: NaN); NaN also for an object without background in
        its ring.
    """
    labels = np.asarray(labels)
    pixels = np.asarray(image, dtype=np.float32)
    size = [2 * RING_PX + 1] * 3
    size[axis] = 1
    grown = ndi.grey_dilation(labels, size=tuple(size))  # the ring takes the largest neighbouring id
    ring = np.where(labels == 0, grown, 0)
    ids = np.arange(int(labels.max()) + 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        inside = ndi.mean(pixels, labels, ids)
        around = ndi.mean(pixels, ring, ids)
    contrast = np.asarray(inside, float) - np.asarray(around, float)
    contrast[0] = np.nan
    return contrast


def drop_dim_objects(labels: np.ndarray, image, fraction: float, axis: int = 0) -> np.ndarray:
    """Set to 0 the objects whose contrast (`object_contrast`) is under ``fraction`` × the median contrast.

    Returns an array like ``labels`` (ids not renumbered); ``fraction`` 0, or no measurable object,
    returns ``labels`` unchanged.
    """
    if fraction <= 0 or not np.any(labels):
        return labels
    contrast = object_contrast(labels, image, axis)
    measured = contrast[np.isfinite(contrast)]
    if measured.size == 0:
        return labels
    dim = contrast < fraction * np.median(measured)  # NaN compares False: kept
    if not dim.any():
        return labels
    return np.where(dim[labels], 0, labels).astype(labels.dtype, copy=False)
