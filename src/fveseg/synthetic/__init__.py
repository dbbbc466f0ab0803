"""Procedural 3D fluorescence microscopy volumes with ground truth (training data, tests, plugin sample).

``make_nuclei_volume`` draws nuclei (irregular textured ellipsoids, touching clusters, dividing pairs,
dim and bright), the cells around them, their membranes and small puncta, then images one of them
through an anisotropic point-spread function with haze, uneven illumination and Poisson–Gaussian noise.
``make_sample_volume`` is the fixed sample the napari plugin offers.
"""

from fveseg.synthetic.options import CHANNELS, PRESETS, SyntheticOptions
from fveseg.synthetic.volume import SyntheticVolume, make_nuclei_volume, make_sample_volume

__all__ = [
    "CHANNELS",
    "PRESETS",
    "SyntheticOptions",
    "SyntheticVolume",
    "make_nuclei_volume",
    "make_sample_volume",
]
