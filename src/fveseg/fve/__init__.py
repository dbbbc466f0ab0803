"""Fractal Volumetric Encoding: each slice of a volume with its 3D context packed into three channels.

`encode` / `encode_volume` build FVE images of any order, `decode` unpacks them, `select_view` picks the
slicing axis from the voxel spacing. The kernels live in `fveseg.fve._pyramid` (numpy, or numba when it
imports) and `fveseg.fve._pixel_pairs`.
"""

from fveseg.fve.encoding import (
    DOWNSAMPLE_MODES,
    PAD_MODES,
    DecodedFVE,
    Placement,
    allocation_map,
    context_indices,
    decode,
    encode,
    encode_volume,
    layout,
    select_view,
    slices_per_side,
)

__all__ = [
    "DOWNSAMPLE_MODES",
    "PAD_MODES",
    "DecodedFVE",
    "Placement",
    "allocation_map",
    "context_indices",
    "decode",
    "encode",
    "encode_volume",
    "layout",
    "select_view",
    "slices_per_side",
]
