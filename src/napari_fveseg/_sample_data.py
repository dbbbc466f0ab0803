"""File › Open Sample: a synthetic 3D nuclei stack with its ground-truth instance labels.

The volume comes from :func:`fveseg.synthetic.make_sample_volume` (fixed seed and options), so every call
gives the same voxels (touching, dim and bright nuclei, anisotropic blur and noise) in well under a second.
"""

from __future__ import annotations

from typing import Any


def make_sample_nuclei() -> list[tuple[Any, dict, str]]:
    """Layer-data tuples for the synthetic nuclei sample.

    Returns
    -------
    list of (data, kwargs, layer_type)
        An ``image`` layer ``"synthetic nuclei"`` (32, 128, 128) uint16 and a ``labels`` layer
        ``"nuclei (ground truth)"`` (z, y, x) uint32 with one id per nucleus, both scaled by the
        voxel spacing (z, y, x) in micrometres.
    """
    from fveseg.synthetic import make_sample_volume

    sample = make_sample_volume()
    scale = tuple(float(s) for s in sample.spacing)
    image_kwargs = {"name": "synthetic nuclei", "scale": scale, "metadata": {"spacing": scale}}
    labels_kwargs = {
        "name": "nuclei (ground truth)",
        "scale": scale,
        "metadata": {"spacing": scale, "class_name": "nuclei"},
    }
    return [(sample.image, image_kwargs, "image"), (sample.labels, labels_kwargs, "labels")]
