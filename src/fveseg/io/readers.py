"""Entry points: `read_volume` and `read_labels` pick the reader from the file name."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from fveseg.errors import InputError
from fveseg.io.volume import Volume

#: Extensions we read, longest first so ".ome.tif" wins over ".tif".
SUPPORTED_EXTENSIONS = (
    ".ome.zarr",
    ".ome.tiff",
    ".ome.tif",
    ".nii.gz",
    ".tiff",
    ".tif",
    ".zarr",
    ".npz",
    ".nii",
)


def file_kind(path: str | os.PathLike) -> str:
    """Return "tiff", "zarr", "npz" or "nifti" for a path, or raise InputError listing what we read.

    A folder that holds ``zarr.json`` or ``.zgroup`` / ``.zarray`` counts as Zarr whatever its name.
    """
    path = Path(path)
    name = path.name.lower().rstrip("/")
    if path.is_dir() and any((path / marker).exists() for marker in ("zarr.json", ".zgroup", ".zarray")):
        return "zarr"
    for extension, kind in (
        (".zarr", "zarr"),
        (".tiff", "tiff"),
        (".tif", "tiff"),
        (".npz", "npz"),
        (".nii.gz", "nifti"),
        (".nii", "nifti"),
    ):
        if name.endswith(extension):
            return kind
    raise InputError(
        f"Cannot read {path.name!r}: unknown file type. Supported: {', '.join(SUPPORTED_EXTENSIONS)} "
        "(convert other formats to OME-TIFF, e.g. with Fiji or bioformats2raw)."
    )


def _existing(path: str | os.PathLike) -> Path:
    path = Path(path).expanduser()
    kind = file_kind(path)  # unknown extensions are reported before missing files
    if not path.exists():
        raise InputError(f"{path} does not exist; check the path (it is read relative to {Path.cwd()}).")
    if not path.is_dir() and not path.is_file():  # a FIFO, socket or device would block or never end
        raise InputError(
            f"{path} is not a regular file (a pipe, socket or device), so it cannot be read as a "
            f"{kind} volume (fix: save the volume to a file and point at that file)."
        )
    if kind != "zarr" and path.is_dir():
        raise InputError(f"{path} is a folder, not a {kind} file; point at the file itself.")
    return path


def read_volume(path: str | os.PathLike, channel: int | str | None = None) -> Volume:
    """Read an image volume from TIFF/OME-TIFF, Zarr/OME-Zarr, challenge or dev-data `.npz`, or NIfTI.

    Parameters
    ----------
    path : str or PathLike
        File (or ``.zarr`` folder) to read.
    channel : int or str, optional
        Channel index or name for multi-channel data (required when there are several; the error
        lists them). RGB images count as three channels.

    Returns
    -------
    Volume
        ``data`` (z, y, x): numpy, or a lazy dask array for Zarr (only level 0 of a pyramid, read
        on demand). 2D images become (1, y, x). ``spacing`` (z, y, x) or None; see `Volume`.

    Raises
    ------
    InputError
        Unknown extension, missing, truncated or corrupt file, several channels without `channel`,
        extra time points, empty arrays, or complex/object/text dtypes; the message says what to do.

    Examples
    --------
    >>> import numpy as np, tifffile, tempfile, pathlib
    >>> file = pathlib.Path(tempfile.mkdtemp()) / "stack.tif"
    >>> tifffile.imwrite(file, np.zeros((4, 8, 8), np.uint16))
    >>> read_volume(file).data.shape
    (4, 8, 8)
    """
    path = _existing(path)
    kind = file_kind(path)
    if kind == "tiff":
        from fveseg.io.tiff_io import read_tiff

        return read_tiff(path, channel)
    if kind == "zarr":
        from fveseg.io.ngff import read_zarr

        return read_zarr(path, channel)
    if kind == "npz":
        from fveseg.io.npz_io import read_npz

        return read_npz(path, channel)
    from fveseg.io.nifti_io import read_nifti

    return read_nifti(path, channel)


def load_voxels(volume: Volume, source: str) -> np.ndarray:
    """The voxels of a (possibly lazy, chunked) `Volume` as a numpy array.

    A damaged chunk (a truncated copy, a failed download) surfaces only here, as a codec's error; it is
    raised as an `InputError` naming the file and what to do.

    Parameters
    ----------
    volume : Volume
        From `read_volume`; ``volume.data`` (z, y, x), numpy or dask.
    source : str
        The file's name, for the message.

    Returns
    -------
    ndarray (z, y, x), the file's dtype
    """
    try:
        return np.asarray(volume.data)
    except MemoryError:
        raise
    except (RuntimeError, ValueError, OSError, EOFError, KeyError) as error:
        raise InputError(
            f"{source}: part of the image could not be read ({type(error).__name__}: {error}); the file is "
            "probably damaged or incompletely copied. Copy or export it again, then rerun."
        ) from error


def read_labels(path: str | os.PathLike, name: str | None = None) -> tuple[Any, dict]:
    """Read a label volume written by `write_labels_zarr` or `write_labels_tiff` (or compatible).

    Parameters
    ----------
    path : str or PathLike
        OME-Zarr image group (its ``labels/<name>``), a ``labels`` group, a label group itself, an
        OME-TIFF, or an `.npz` with labels.
    name : str, optional
        Which label image of an OME-Zarr group; needed only when it holds several.

    Returns
    -------
    labels : (z, y, x) array
        uint32 ids (dask, lazy, for Zarr; numpy otherwise).
    meta : dict
        ``spacing`` (z, y, x) or None, ``unit``, ``class_names`` {id: str}, ``colors``
        {id: (r, g, b, a) 0–255}, ``name``; Zarr adds ``properties``, ``levels``, ``version``.
    """
    path = _existing(path)
    kind = file_kind(path)
    if kind == "zarr":
        from fveseg.io.ngff import read_zarr_labels

        return read_zarr_labels(path, name)
    if kind == "tiff":
        from fveseg.io.tiff_io import read_tiff_labels

        return read_tiff_labels(path)
    volume = read_volume(path)
    if not volume.labels:
        raise InputError(f"{path} holds no labels.")
    key = name or next(iter(volume.labels))
    if key not in volume.labels:
        raise InputError(f"{path} has no labels named {key!r}; it holds {', '.join(volume.labels)}.")
    meta = {
        "spacing": volume.spacing,
        "unit": volume.unit,
        "class_names": dict(volume.prompts),
        "colors": {},
        "name": key,
    }
    return volume.labels[key], meta
