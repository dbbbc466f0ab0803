"""NIfTI (`.nii`, `.nii.gz`) for CT and MRI users, via nibabel.

NIfTI stores voxels as (x, y, z[, t]); we transpose to (z, y, x) in the file's own voxel order (no
reorientation, so voxel indices match other tools that read the same file) and take the spacing from
the header zooms, converted from the header's unit (millimetres when it says none) to micrometres, the
unit of every `Volume`: 0.5 mm becomes 500 µm, never 0.5 µm.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fveseg.errors import InputError
from fveseg.io.volume import Volume, check_volume, clean_spacing, stem, to_micrometer, to_zyx


def read_nifti(path: Path, channel: int | str | None = None) -> Volume:
    """Read a NIfTI image as a (z, y, x) `Volume` with spacing (z, y, x) converted to micrometres
    (the header's ``xyzt_units``; a header without one is taken as millimetres)."""
    import nibabel

    try:
        image = nibabel.load(str(path))
        array = np.asanyarray(image.dataobj)
    except Exception as error:  # ImageFileError, EOFError, zlib/gzip errors on truncated files
        raise InputError(
            f"{path} is not a readable NIfTI file ({type(error).__name__}: {error}); it may be "
            "truncated or corrupt. Export it again."
        ) from error
    if array.ndim > 5 or array.ndim < 2:
        raise InputError(f"{path}: expected a 2D–4D NIfTI image, got shape {array.shape}.")
    while array.ndim > 4 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim > 4:
        raise InputError(f"{path}: 5D NIfTI (shape {array.shape}) is not supported; save one 3D volume.")
    axes = {2: "XY", 3: "XYZ", 4: "XYZC"}[array.ndim]
    data, names = to_zyx(array, axes, path.name, channel)
    zooms = list(image.header.get_zooms())[:3] + [1.0] * (3 - min(3, len(image.header.get_zooms())))
    spatial_unit = image.header.get_xyzt_units()[0] if hasattr(image.header, "get_xyzt_units") else "mm"
    known = spatial_unit in ("meter", "mm", "micron")  # nibabel's names; "unknown" is read as mm
    factor = to_micrometer(1.0, spatial_unit if known else "mm")  # -> micrometres, like every reader
    spacing = clean_spacing([zooms[2] * factor, zooms[1] * factor, zooms[0] * factor])
    return Volume(
        data=check_volume(np.ascontiguousarray(data), path.name),
        spacing=spacing,
        name=stem(path),
        path=path,
        unit="micrometer" if spacing else None,
        channel_names=names,
    )
