"""Output arrays of a segmentation run: in memory, or a zarr group written at a temporary path.

`allocate_outputs` makes the (P, ...) float16 ``probabilities`` and ``edges`` and the label ``semantic``
arrays a run fills slice batch by slice batch; with a path they live in a zarr group next to it under a
hidden temporary name, and `finish_zarr` adds ``existence`` and the attributes, then renames the group to
the path, so an interrupted run never leaves a partial output there. An existing path is replaced only
with ``overwrite``.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from fveseg.errors import OutputExistsError
from fveseg.inference.gate import SegmentationResult, label_dtype, put_slab

__all__ = ["SliceOutputs", "allocate_outputs", "finish_zarr"]


class SliceOutputs:
    """The outputs one run fills batch by batch, for both engines (`fveseg.inference.Segmenter` and the
    released v2 weights' `fveseg.inference.reference_engine`): probabilities, edges, labels and
    existence of ``shape[axis]`` slices, in memory or in a zarr group at a temporary path (see the
    module docstring). Used as a context manager: a run that fails leaves no temporary group.
    """

    def __init__(self, out, overwrite: bool, num_prompts: int, shape: tuple[int, int, int], axis: int,
                 batch_size: int):  # fmt: skip
        self.store, self.final, self.tmp = allocate_outputs(
            out, overwrite, num_prompts, shape, axis, batch_size
        )
        self.existence = np.zeros((num_prompts, shape[axis]), dtype=np.float32)
        self.axis, self.overwrite = axis, overwrite

    def put(self, at: int, probabilities, edges, semantic, existence: np.ndarray) -> None:
        """Write ``existence.shape[1]`` slices from slice ``at`` on: maps (P, ...) float16, labels."""
        self.existence[:, at : at + existence.shape[1]] = existence
        put_slab(self.store["probabilities"], self.axis, at, probabilities, 1)
        put_slab(self.store["edges"], self.axis, at, edges, 1)
        put_slab(self.store["semantic"], self.axis, at, semantic, 0)

    def __enter__(self) -> SliceOutputs:
        return self

    def __exit__(self, kind, error, trace) -> bool:
        if kind is not None and self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
        return False

    def result(self, prompts: list[str], start: int, scale: float = 1.0) -> SegmentationResult:
        """The finished result (a zarr output is completed and moved to its path: `finish_zarr`)."""
        if self.tmp is None:
            arrays = (
                self.store["probabilities"],
                self.store["edges"],
                self.existence,
                self.store["semantic"],
            )
            return SegmentationResult(*arrays, prompts, self.axis, None, start, scale)
        return finish_zarr(
            self.store, self.existence, prompts, self.axis, start, self.tmp, self.final, self.overwrite, scale
        )


def allocate_outputs(
    out: str | Path | None,
    overwrite: bool,
    num_prompts: int,
    shape: tuple[int, int, int],
    axis: int,
    batch_size: int,
) -> tuple[dict[str, Any], Path | None, Path | None]:
    """Output arrays: in memory, or in a zarr group at a temporary path renamed when complete.

    Parameters
    ----------
    out : str, Path or None
        None: numpy arrays in memory; a path: the zarr group's final location.
    overwrite : bool
        Allow ``out`` to exist already (it is replaced by `finish_zarr`).
    num_prompts : int
        P, the number of prompts.
    shape : (int, int, int)
        Output volume shape (the slice range's length along ``axis``).
    axis : int
        View axis; zarr chunks along it hold ``batch_size`` slices (one batch per chunk).
    batch_size : int
        Slices per batch of the run.

    Returns
    -------
    store : dict
        ``probabilities`` and ``edges`` (P, *shape) float16 and ``semantic`` ``shape`` of
        `fveseg.inference.gate.label_dtype` (uint8, or uint16 for >= 256 prompts), zero-filled; with
        ``out`` also ``group``, the open zarr group.
    final_path, tmp_path : Path or None
        Where the group goes and where it is written meanwhile; both None in memory.

    Raises
    ------
    OutputExistsError
        ``out`` exists and ``overwrite`` is False.
    """
    dtype = label_dtype(num_prompts)
    if out is None:
        store = {
            "probabilities": np.zeros((num_prompts, *shape), np.float16),
            "edges": np.zeros((num_prompts, *shape), np.float16),
            "semantic": np.zeros(shape, dtype),
        }
        return store, None, None
    import zarr

    final = Path(out)
    if final.exists() and not overwrite:
        raise OutputExistsError(f"{final} exists; choose another output path or pass overwrite=True.")
    tmp = final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex[:8]}")
    group = zarr.open_group(str(tmp), mode="w")
    chunks = [min(s, 256) for s in shape]
    chunks[axis] = min(shape[axis], batch_size)
    maps = dict(shape=(num_prompts, *shape), dtype="float16", chunks=(1, *chunks))
    store = {
        "probabilities": group.create_array("probabilities", **maps),
        "edges": group.create_array("edges", **maps),
        "semantic": group.create_array("semantic", shape=shape, dtype=dtype, chunks=tuple(chunks)),
    }
    store["group"] = group
    return store, final, tmp


def finish_zarr(
    store: dict[str, Any],
    existence: np.ndarray,
    prompts: list[str],
    axis: int,
    start: int,
    tmp: Path,
    final: Path,
    overwrite: bool,
    scale: float = 1.0,
) -> SegmentationResult:
    """Complete a zarr output from `allocate_outputs` and move it to its final path.

    Parameters
    ----------
    store : dict
        From `allocate_outputs` with a path (holds ``group``), all slices written.
    existence : ndarray (P, N) float32
        Per-slice existence probabilities, stored as the array ``existence``.
    prompts : list of str
        Canonical prompts; stored with ``axis`` and ``start`` as group attributes.
    axis, start : int
        View axis and first slice of the range.
    tmp, final : Path
        The temporary and final paths from `allocate_outputs`.
    overwrite : bool
        Remove an existing ``final`` (file or folder) before the rename.
    scale : float
        In-plane scale the run used, recorded as ``result.scale``.

    Returns
    -------
    SegmentationResult
        Reading the group at ``final`` (``path=final``), with ``existence`` in memory.
    """
    import zarr

    group = store["group"]
    group.create_array("existence", data=existence)
    group.attrs.update({"prompts": prompts, "axis": axis, "start": start})
    if final.exists() and overwrite:
        shutil.rmtree(final) if final.is_dir() else final.unlink()
    tmp.rename(final)
    group = zarr.open_group(str(final), mode="r")
    arrays = (group["probabilities"], group["edges"], existence, group["semantic"])
    return SegmentationResult(*arrays, prompts, axis, final, start, scale)
