"""OME-Zarr (OME-NGFF 0.4 and 0.5) metadata and lazy reading of images and their labels.

NGFF 0.4 stores metadata flat in the zarr v2 ``.zattrs`` (each block carries a "version"); NGFF 0.5
stores it under ``attributes["ome"]`` in zarr v3 ``zarr.json`` with one "version" there. Both are read;
`fveseg.io.zarr_io` writes either.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fveseg.errors import InputError
from fveseg.io.labels_meta import parse_image_label
from fveseg.io.volume import Volume, check_volume, stem, to_zyx, unit_factor

#: Marks the all-zero, chunk-less image we put in a labels-only container (see `zarr_io`).
PLACEHOLDER_KEY = "fveseg"

_SPATIAL = ("z", "y", "x")


def open_group(path: Path, mode: str = "r"):
    """Open a zarr group (v2 or v3), turning library errors into InputError."""
    import zarr

    try:
        return zarr.open_group(str(path), mode=mode)
    except Exception as error:  # FileNotFoundError, GroupNotFoundError, JSON errors, …
        raise InputError(
            f"{path} is not a readable Zarr group ({type(error).__name__}: {error}). Point at the "
            "folder that holds zarr.json or .zgroup (the .ome.zarr folder), or write it again if "
            "it is corrupt."
        ) from error


def ome_attrs(group) -> tuple[dict, str]:
    """Return (the OME metadata dict, its NGFF version) of a group, for 0.4 and 0.5 layouts."""
    attrs = group.attrs.asdict()
    if "ome" in attrs and isinstance(attrs["ome"], dict):
        return attrs["ome"], str(attrs["ome"].get("version", "0.5"))
    multiscales = attrs.get("multiscales")
    first = multiscales[0] if isinstance(multiscales, list) and multiscales else None
    image_label = attrs.get("image-label")
    version = (
        (image_label.get("version") if isinstance(image_label, dict) else None)
        or (first.get("version") if isinstance(first, dict) else None)
        or "0.4"
    )
    return attrs, str(version)


def is_image_group(path: Path) -> bool:
    """True if `path` is an OME-Zarr image group (has `multiscales`)."""
    if not path.is_dir() or not ((path / "zarr.json").exists() or (path / ".zgroup").exists()):
        return False
    try:
        return "multiscales" in ome_attrs(open_group(path))[0]
    except InputError:
        return False


def multiscale_axes(multiscale: dict, ndim: int) -> list[dict]:
    """Axes as dicts with name/type/unit; NGFF 0.1–0.2 had none (then t, c, z, y, x by convention)."""
    axes = multiscale.get("axes")
    if axes is None:
        axes = ["t", "c", "z", "y", "x"][-ndim:]
    return [{"name": a} if isinstance(a, str) else dict(a) for a in axes]


def level_scale(multiscale: dict, index: int, ndim: int) -> list[float]:
    """Product of the `scale` transformations of dataset `index` and of the whole multiscale."""
    scale = [1.0] * ndim
    datasets = multiscale["datasets"]
    transforms = list(datasets[index].get("coordinateTransformations", []))
    transforms += list(multiscale.get("coordinateTransformations", []))
    for transform in transforms:
        if transform.get("type") == "scale" and len(transform.get("scale", [])) == ndim:
            scale = [a * float(b) for a, b in zip(scale, transform["scale"])]
    return scale


def _lazy_level(group, multiscale: dict, index: int = 0):
    import dask.array as da

    path = multiscale["datasets"][index]["path"]
    try:
        return da.from_zarr(group[path])
    except Exception as error:
        raise InputError(
            f"{group.store} has no readable array {path!r} ({type(error).__name__}: {error}); the "
            "OME-Zarr is incomplete or corrupt."
        ) from error


def _axes_letters(axes: list[dict]) -> str:
    letters = ""
    for axis in axes:
        name, kind = str(axis.get("name", "")).lower(), axis.get("type")
        letters += (
            name.upper()
            if name in _SPATIAL
            else ("C" if kind == "channel" or name == "c" else "T" if kind == "time" or name == "t" else "Q")
        )
    return letters


def _spatial_spacing(axes: list[dict], scale: list[float]) -> tuple[tuple | None, str | None]:
    names = [str(a.get("name", "")).lower() for a in axes]
    if not all(n in names for n in ("y", "x")):
        return None, None
    values = {n: s for n, s in zip(names, scale)}
    units = {str(a.get("name", "")).lower(): a.get("unit") for a in axes}
    values.setdefault("z", values["y"])
    unit = units.get("x") or units.get("y")
    spacing = (float(values["z"]), float(values["y"]), float(values["x"]))
    if unit is None and spacing == (1.0, 1.0, 1.0):
        return None, None  # no unit and unit scale: the file does not know its voxel size
    factor = unit_factor(unit)
    if factor is None:
        return spacing, unit  # no or an unknown unit: the numbers as stored
    return tuple(s * factor for s in spacing), "micrometer"  # converted, not relabelled


def read_zarr(path: Path, channel: int | str | None = None) -> Volume:
    """Read a Zarr array or an OME-Zarr image lazily (level 0 as dask) with its labels and spacing."""
    import dask.array as da
    import zarr

    try:
        node = zarr.open(str(path), mode="r")
    except Exception as error:
        raise InputError(
            f"{path} is not a readable Zarr store ({type(error).__name__}: {error}). Point at the "
            ".zarr folder itself; if it is corrupt, write it again."
        ) from error
    if isinstance(node, zarr.Array):
        axes = {2: "YX", 3: "ZYX", 4: "CZYX"}.get(node.ndim, "?" * node.ndim)
        data, names = to_zyx(da.from_zarr(node), axes, path.name, channel)
        return Volume(data=check_volume(data, path.name), name=stem(path), path=path, channel_names=names)
    attrs, _ = ome_attrs(node)
    if "multiscales" not in attrs:
        children = sorted(node.group_keys()) + sorted(node.array_keys())
        raise InputError(
            f"{path} is a Zarr group without OME 'multiscales' metadata, so it holds no image we can "
            f"read. Open the image inside it instead (entries: {', '.join(children) or 'none'})."
        )
    multiscale = _first_multiscale(attrs["multiscales"], path)
    level0 = _lazy_level(node, multiscale)
    axes = multiscale_axes(multiscale, level0.ndim)
    channel_names = [c.get("label", str(i)) for i, c in enumerate(attrs.get("omero", {}).get("channels", []))]
    data, channel_names = to_zyx(level0, _axes_letters(axes), path.name, channel, channel_names)
    spacing, unit = _spatial_spacing(axes, level_scale(multiscale, 0, level0.ndim))
    labels, prompts = {}, {}
    for name in label_names(node):
        array, meta = read_label_group(node["labels"][name])
        labels[name] = array
        prompts.update(meta["class_names"])
    return Volume(
        data=check_volume(data, path.name),
        spacing=spacing,
        labels=labels,
        prompts=prompts,
        name=stem(path),
        path=path,
        unit=unit,
        channel_names=channel_names,
    )


def _first_multiscale(multiscales: Any, source: Any) -> dict:
    """The first entry of OME ``multiscales``, checked: a non-empty list whose first dict has datasets."""
    first = multiscales[0] if isinstance(multiscales, list) and multiscales else None
    datasets = first.get("datasets") if isinstance(first, dict) else None
    if not isinstance(datasets, list) or not datasets or not isinstance(datasets[0], dict):
        raise InputError(
            f"{source}: its OME 'multiscales' metadata is malformed ({str(multiscales)[:80]!r}); expected a "
            "list whose first entry lists 'datasets' (fix: write the OME-Zarr again, e.g. with fveseg or "
            "bioformats2raw)."
        )
    return first


def label_names(image_group) -> list[str]:
    """Names listed in the image group's ``labels`` group (empty when it has none)."""
    if "labels" not in image_group:
        return []
    attrs, _ = ome_attrs(image_group["labels"])
    return [str(n) for n in attrs.get("labels", []) if str(n) in image_group["labels"]]


def read_label_group(group) -> tuple[Any, dict]:
    """Level 0 of one label image (lazy, (z, y, x)) and its metadata."""
    attrs, version = ome_attrs(group)
    if "multiscales" not in attrs:
        raise InputError(f"{group.store} is not an OME-Zarr label image (no 'multiscales').")
    multiscale = _first_multiscale(attrs["multiscales"], group.store)
    level0 = _lazy_level(group, multiscale)
    axes = multiscale_axes(multiscale, level0.ndim)
    data, _ = to_zyx(level0, _axes_letters(axes), str(group.name), None)
    spacing, unit = _spatial_spacing(axes, level_scale(multiscale, 0, level0.ndim))
    meta = parse_image_label(attrs.get("image-label", {}))
    meta.update(
        spacing=spacing,
        unit=unit,
        name=str(group.name).rstrip("/").split("/")[-1],
        levels=len(multiscale["datasets"]),
        version=version,
    )
    return data, meta


def read_zarr_labels(path: Path, name: str | None = None) -> tuple[Any, dict]:
    """Read one label image from an image group, a ``labels`` group or the label group itself."""
    group = open_group(path)
    attrs, _ = ome_attrs(group)
    if "image-label" in attrs:
        return read_label_group(group)
    if "multiscales" in attrs:
        names = label_names(group)
        parent = group["labels"] if names else None
    elif "labels" in attrs:
        names, parent = [str(n) for n in attrs["labels"]], group
    else:
        raise InputError(f"{path} holds no OME-Zarr labels; write some with write_labels_zarr first.")
    if not names:
        raise InputError(f"{path} is an OME-Zarr image without labels; write some with write_labels_zarr.")
    if name is None:
        if len(names) > 1:
            raise InputError(
                f"{path} holds several label images ({', '.join(names)}); choose one with name=."
            )
        name = names[0]
    if name not in names:
        raise InputError(f"{path} has no label image {name!r}; it holds: {', '.join(names)}.")
    return read_label_group(parent[name])
