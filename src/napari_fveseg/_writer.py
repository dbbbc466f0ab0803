"""npe2 writers: a Labels layer to OME-Zarr (``.zarr``) or OME-TIFF (``.ome.tif``).

Both call the core writers in :mod:`fveseg.io` with

- ``spacing`` = the layer's scale (z, y, x), so physical voxel sizes survive the round trip;
- ``class_names`` from ``layer.metadata["class_names"]`` ({id: name}), else from ``layer.features``
  (columns ``index`` and ``class_name``, ``class`` or ``prompt``);
- ``colors`` from the layer's colormap, evaluated at the ids present in the layer (RGBA 0–255), so a file
  reopened in napari, ome-zarr-py or Fiji shows the same colours.

Overwriting (decided here, documented in docs/user-guide.md): napari's File › Save Layers dialog asks
"replace?" before it calls a writer, so a save that comes from that dialog replaces the existing output.
Any other call — ``viewer.layers.save(path)``, a script, a test — never replaces an existing path: it
fails with an error naming the path and the fix (``fveseg.errors.OutputExistsError``). Saving an OME-Zarr
labels layer into an existing OME-Zarr *image* group adds ``labels/<layer name>`` beside the image.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import numpy as np

#: Above this many ids the colours are left to the reader's own palette (see fveseg.io.labels_meta).
MAX_COLORED_IDS = 65536


def write_labels_zarr(path: str, data: Any, meta: dict) -> list[str]:
    """Write one Labels layer as OME-NGFF image-label(s); returns the path written."""
    from fveseg.io import write_labels_zarr as core_write

    name = _safe_name(meta.get("name") or "labels")
    written = core_write(
        path,
        data,
        name=name,
        spacing=_spacing(meta),
        class_names=layer_class_names(meta, data) or None,
        colors=layer_colors(data, meta) or None,
        overwrite=_confirmed_by_save_dialog(),
    )
    return [str(written)]


def write_labels_tiff(path: str, data: Any, meta: dict) -> list[str]:
    """Write one Labels layer as an OME-TIFF with physical sizes; returns the path written."""
    from fveseg.io import write_labels_tiff as core_write

    if not path.lower().endswith((".ome.tif", ".ome.tiff")):
        path = str(Path(path).with_suffix("")) + ".ome.tif"
    written = core_write(
        path,
        data,
        spacing=_spacing(meta),
        class_names=layer_class_names(meta, data) or None,
        colors=layer_colors(data, meta) or None,
        overwrite=_confirmed_by_save_dialog(),
    )
    return [str(written)]


def layer_class_names(meta: dict, data: Any = None) -> dict[int, str]:
    """Class names {id: name} from a Labels layer's metadata or features.

    ``metadata["class_name"]`` (one string) names every id of an instance layer (all nuclei, say);
    ``metadata["class_names"]`` ({id: name}) names the classes of a semantic layer.
    """
    metadata = meta.get("metadata") or {}
    if metadata.get("class_name") and data is not None:
        ids = _present_ids(data)
        if ids is not None and ids.size <= MAX_COLORED_IDS:
            return {int(i): str(metadata["class_name"]) for i in ids}
    stored = metadata.get("class_names")
    if stored:
        return {int(k): str(v) for k, v in stored.items()}
    features = meta.get("features")
    if features is None or len(features) == 0 or "index" not in getattr(features, "columns", ()):
        return {}
    for column in ("class_name", "class", "prompt"):
        if column in features.columns:
            return {int(i): str(n) for i, n in zip(features["index"], features[column]) if int(i) != 0}
    return {}


def layer_colors(data: Any, meta: dict) -> dict[int, tuple[int, int, int, int]]:
    """RGBA (0–255) of every id present in the layer, read from its colormap; {} when there are too many.

    The ids come from ``layer.metadata["class_names"]`` for semantic layers and from ``np.unique`` of
    the data otherwise (skipped for lazy arrays larger than memory: those keep the default palette).
    """
    colormap = meta.get("colormap")
    if colormap is None or not hasattr(colormap, "map"):
        return {}
    ids = _present_ids(data)
    if ids is None or ids.size == 0 or ids.size > MAX_COLORED_IDS:
        return {}
    rgba = np.asarray(colormap.map(ids), dtype=float)
    rgba = np.clip(np.round(rgba * 255), 0, 255).astype(int)
    return {int(i): tuple(int(c) for c in row) for i, row in zip(ids, rgba)}


def _present_ids(data: Any) -> np.ndarray | None:
    if not isinstance(data, np.ndarray) and getattr(data, "nbytes", 0) > 2**30:
        return None  # a lazy volume over 1 GiB: do not load it just to pick colours
    ids = np.unique(np.asarray(data))
    return ids[ids != 0]


def _spacing(meta: dict) -> tuple[float, ...] | None:
    scale = meta.get("scale")
    if scale is None:
        return None
    scale = tuple(float(s) for s in scale)
    return scale[-3:] if len(scale) >= 3 else (1.0, *scale[-2:])


def _safe_name(name: str) -> str:
    """A label group name: the layer name with path separators replaced."""
    return "".join("_" if c in '/\\:*?"<>|' else c for c in name).strip() or "labels"


def _confirmed_by_save_dialog() -> bool:
    """True when napari's Save Layers dialog (which asks before replacing a file) is the caller."""
    return any(frame.function == "_save_layers_dialog" for frame in inspect.stack(context=0))
