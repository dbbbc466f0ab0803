"""npe2 reader: TIFF / OME-TIFF, Zarr / OME-Zarr (with its labels), challenge .npz and NIfTI.

All parsing is done by :func:`fveseg.io.read_volume`; this module only turns a
:class:`fveseg.io.Volume` into napari layer-data tuples:

- one ``image`` layer named after the file, scaled by the voxel spacing (z, y, x) (none for a labels-only
  OME-Zarr, whose image is an empty stand-in);
- one ``labels`` layer per label volume stored with it (OME-Zarr ``labels/<name>``, npz ``gts``), with
  the same scale, the stored ids unchanged, the stored colours as a ``DirectLabelColormap`` and the class
  names in ``layer.features`` (columns ``index``, ``class_name``) and ``layer.metadata["class_names"]``.

A labels-only OME-TIFF written by this plugin's writer opens as a ``labels`` layer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

LayerData = tuple[Any, dict, str]

READABLE_SUFFIXES = (".tif", ".tiff", ".zarr", ".npz", ".nii", ".nii.gz")


def get_reader(path: str | list[str]) -> Callable[[str | list[str]], list[LayerData]] | None:
    """Return :func:`read_layers` when every path is a file type fveseg reads, else None."""
    paths = [path] if isinstance(path, str | Path) else list(path)
    if not paths or not all(_is_readable(Path(p)) for p in paths):
        return None
    return read_layers


def _is_readable(path: Path) -> bool:
    """True for the supported suffixes and for any directory holding Zarr metadata."""
    name = path.name.lower().rstrip("/")
    if name.endswith(READABLE_SUFFIXES):
        return True
    return path.is_dir() and any((path / f).exists() for f in ("zarr.json", ".zgroup", ".zarray"))


def read_layers(path: str | list[str]) -> list[LayerData]:
    """Read one or more files into layer-data tuples (see the module docstring)."""
    paths = [path] if isinstance(path, str | Path) else list(path)
    layers: list[LayerData] = []
    for one in paths:
        layers.extend(_read_one(Path(one)))
    return layers


def _read_one(path: Path) -> list[LayerData]:
    from fveseg.io import read_volume

    labels_only = _labels_only_tiff(path)
    if labels_only is not None:
        return [labels_only]
    volume = read_volume(path)
    scale = _scale(volume.spacing)
    metadata = {"path": str(path), "spacing": volume.spacing, "unit": volume.unit}
    if volume.prompts:
        metadata["prompts"] = dict(volume.prompts)
    layers: list[LayerData] = []
    if not _is_placeholder_image(path):
        layers.append((volume.data, {"name": volume.name, "scale": scale, "metadata": metadata}, "image"))
    for label_name, label_data in volume.labels.items():
        meta = _stored_label_meta(path, label_name)
        if not meta.get("class_names") and volume.prompts:
            meta["class_names"] = _prompt_names(volume, label_data)
        kwargs = labels_kwargs(
            name=_label_layer_name(volume.name, label_name),
            scale=scale,
            class_names=meta.get("class_names") or {},
            colors=meta.get("colors") or {},
        )
        kwargs["metadata"].update(path=str(path), source_label=label_name)
        layers.append((label_data, kwargs, "labels"))
    return layers


def _is_placeholder_image(path: Path) -> bool:
    """True for a labels-only OME-Zarr whose image is the empty stand-in `write_labels_zarr` creates."""
    if not path.is_dir():
        return False
    from fveseg.io.ngff import PLACEHOLDER_KEY, open_group

    try:
        stored = open_group(path).attrs.asdict().get(PLACEHOLDER_KEY, {})
    except Exception:  # not a group (a bare zarr array): it has a real image
        return False
    return isinstance(stored, dict) and bool(stored.get("placeholder_image"))


def _label_layer_name(image_name: str, label_name: str) -> str:
    # npz ground truth is called "gts" in the file; say what it is
    return f"{image_name} {label_name}" if label_name in ("gts", "labels") else label_name


def _prompt_names(volume: Any, label_data: Any) -> dict[int, str]:
    """Class names for npz labels: prompts name semantic ids; instance labels share one class name."""
    if volume.instance_label and len(volume.prompts) == 1:
        return {}  # every id is an instance of the one prompt: kept in metadata["prompts"]
    return {int(k): str(v) for k, v in volume.prompts.items()}


def _stored_label_meta(path: Path, label_name: str) -> dict:
    """Colours and class names stored with a label volume (OME-Zarr `image-label`), else empty."""
    if not (path.is_dir() or path.name.lower().endswith(".zarr")):
        return {}
    from fveseg.io import read_labels

    _, meta = read_labels(path, name=label_name)
    return {"class_names": meta.get("class_names") or {}, "colors": meta.get("colors") or {}}


def _labels_only_tiff(path: Path) -> LayerData | None:
    """A TIFF written by `write_labels_tiff` opens as labels; any other TIFF returns None."""
    if not path.name.lower().endswith((".tif", ".tiff")) or not _has_fveseg_labels_tag(path):
        return None
    from fveseg.io import read_labels

    labels, meta = read_labels(path)
    kwargs = labels_kwargs(
        name=meta.get("name") or path.name.split(".")[0],
        scale=_scale(meta.get("spacing")),
        class_names=meta.get("class_names") or {},
        colors=meta.get("colors") or {},
    )
    kwargs["metadata"]["path"] = str(path)
    return labels, kwargs, "labels"


def _has_fveseg_labels_tag(path: Path) -> bool:
    """True when the OME-XML carries the JSON block `write_labels_tiff` stores (header read only)."""
    import tifffile

    from fveseg.io.tiff_io import LABELS_DESCRIPTION_KEY

    try:
        with tifffile.TiffFile(path) as tif:
            return LABELS_DESCRIPTION_KEY in (tif.ome_metadata or "")
    except Exception:  # unreadable here: let read_volume report the problem with its fix
        return False


def labels_kwargs(
    name: str,
    scale: tuple[float, ...],
    class_names: Mapping[int, str],
    colors: Mapping[int, tuple[int, int, int, int]],
) -> dict:
    """Keyword arguments for a napari Labels layer carrying class names and RGBA (0–255) colours."""
    names = {int(k): str(v) for k, v in class_names.items()}
    kwargs: dict = {"name": name, "scale": scale, "metadata": {"class_names": names}}
    if len(names) > 1 and len(set(names.values())) == 1:
        kwargs["metadata"]["class_name"] = next(iter(names.values()))  # instances of one class
    if names:
        ids = sorted(names)
        kwargs["features"] = {"index": ids, "class_name": [names[i] for i in ids]}
    if colors:
        kwargs["colormap"] = direct_colormap(colors)
    return kwargs


def direct_colormap(colors: Mapping[int, tuple[int, int, int, int]]) -> Any:
    """napari DirectLabelColormap from {id: RGBA 0–255}; ids without a colour are transparent."""
    from napari.utils.colormaps import DirectLabelColormap

    color_dict: dict = {None: (0.0, 0.0, 0.0, 0.0), 0: (0.0, 0.0, 0.0, 0.0)}
    color_dict.update({int(k): tuple(c / 255.0 for c in rgba) for k, rgba in colors.items() if int(k) != 0})
    return DirectLabelColormap(color_dict=color_dict)


def _scale(spacing: Any) -> tuple[float, float, float]:
    if spacing is None:
        return (1.0, 1.0, 1.0)
    return tuple(float(s) for s in spacing)
