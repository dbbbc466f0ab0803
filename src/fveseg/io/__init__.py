"""Reading image volumes and writing label volumes (TIFF/OME-TIFF, Zarr/OME-Zarr, npz, NIfTI).

`read_volume` returns a (z, y, x) `Volume`; `write_labels_zarr` writes OME-NGFF image-labels (into an
image's own group or a new container), `write_labels_tiff` an OME-TIFF; `read_labels` reads either
back. All writes are atomic (`atomic_path`) and never replace an output unless asked.

Heavy libraries (zarr, dask, nibabel) are imported only by the functions that need them.
"""

from fveseg.io.atomic import atomic_path, atomic_paths
from fveseg.io.labels_meta import default_colors
from fveseg.io.readers import SUPPORTED_EXTENSIONS, file_kind, load_voxels, read_labels, read_volume
from fveseg.io.tiff_io import write_labels_tiff
from fveseg.io.volume import Volume
from fveseg.io.writers import write_labels
from fveseg.io.zarr_io import add_labels_to_image, check_into_image, write_labels_zarr

__all__ = [
    "SUPPORTED_EXTENSIONS",
    "Volume",
    "add_labels_to_image",
    "atomic_path",
    "atomic_paths",
    "check_into_image",
    "default_colors",
    "file_kind",
    "load_voxels",
    "read_labels",
    "read_volume",
    "write_labels",
    "write_labels_tiff",
    "write_labels_zarr",
]
