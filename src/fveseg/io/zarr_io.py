"""Write label volumes as OME-Zarr (OME-NGFF image-label), block by block with bounded memory.

Layout written (NGFF 0.4 by default, zarr v2 format, the version most readers open; 0.5 / zarr v3 on
request or when adding to an existing 0.5 image)::

    out.ome.zarr/            image group: the given image, or an all-zero placeholder with no chunks
      0/ 1/ …                (costs no disk) so that every OME-Zarr reader finds an image to open
      labels/                {"labels": ["nuclei"]}
        nuclei/              multiscales + image-label {colors, properties, source: ../../}
          0/ 1/ …            uint32 ids; levels halve y, x (and z when z is not coarser than y, x)

Every level is written from the one before it, one block (a whole number of chunks) at a time, so a
label volume larger than memory (zarr or dask) never has to fit in RAM.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fveseg.errors import InputError, OutputExistsError
from fveseg.io.atomic import atomic_path, commit_all, deferred_signals, discard, temporary_sibling
from fveseg.io.labels_meta import MAX_DEFAULT_COLORED_IDS, as_label_ids, image_label_metadata
from fveseg.io.ngff import (
    PLACEHOLDER_KEY,
    is_image_group,
    level_scale,
    multiscale_axes,
    ome_attrs,
)
from fveseg.io.volume import check_dtype, clean_spacing, unit_factor

DEFAULT_CHUNKS = (8, 256, 256)
#: Uncompressed bytes of one block read, converted and written at a time.
DEFAULT_BLOCK_BYTES = 128 * 2**20
#: Pyramid levels stop once the next one's smaller y/x side would fall below this.
MIN_LEVEL_SIDE = 64


def write_labels_zarr(
    path: str | os.PathLike,
    labels: Any,
    name: str = "labels",
    *,
    spacing: tuple[float, float, float] | None = None,
    class_names: Mapping[int, str] | None = None,
    colors: Mapping[int, tuple] | None = None,
    image: Any = None,
    overwrite: bool = False,
    chunks: tuple[int, int, int] | None = None,
    max_levels: int | None = None,
    unit: str = "micrometer",
    ngff_version: str | None = None,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
) -> Path:
    """Write a label volume to OME-Zarr following the OME-NGFF image-label spec.

    Parameters
    ----------
    path : str or PathLike
        An existing OME-Zarr image group (labels are added as ``labels/<name>``), or a new
        container to create (e.g. ``cells.ome.zarr``).
    labels : (z, y, x) or (y, x) integer or bool array
        numpy, zarr or dask. Stored as uint32 ids (0 = background). Lazy arrays are read one block at
        a time.
    name : str
        Label image name inside ``labels/``.
    spacing : (3,) floats, optional
        Voxel size (z, y, x) in `unit`. Defaults to the parent image's scale when adding to one.
    class_names : dict[int, str], optional
        Label id -> class name or prompt, stored as ``properties`` ({"label-value", "class"}).
    colors : dict[int, RGBA], optional
        Label id -> (r, g, b, a) in 0–255. Ids without a colour get a deterministic default colour
        (unless there are more than `MAX_DEFAULT_COLORED_IDS` distinct ids).
    image : (z, y, x) array, optional
        Image to write as the parent of a new container (pyramid by 2×2 mean).
    overwrite : bool
        Replace an existing container, or an existing ``labels/<name>``; otherwise `OutputExistsError`.
    chunks : (3,) ints, optional
        Chunk shape (default (8, 256, 256), clipped to the volume).
    max_levels : int, optional
        Cap on pyramid levels (default: until the next level's smaller y/x side would be < 64).
    unit : str
        Axis unit written when `spacing` is given ("micrometer"; "millimeter" for CT/MRI).
    ngff_version : {"0.4", "0.5"}, optional
        For a new container (default "0.4": zarr v2). Adding to an existing image uses its version.
    block_bytes : int
        Uncompressed size of the blocks processed at a time (bounds memory).

    Returns
    -------
    Path
        The container (image group) written.
    """
    path = Path(path)
    if not name or "/" in name or name.startswith(".") or name in (".", ".."):
        raise InputError(f"Label name {name!r} is not usable; give a plain name such as 'nuclei'.")
    labels = _as_zyx_labels(labels)
    if image is not None:
        image = image[None] if image.ndim == 2 else image
        check_dtype(image.dtype, "image")
        if tuple(image.shape) != tuple(labels.shape):
            raise InputError(
                f"image shape {tuple(image.shape)} differs from labels shape "
                f"{tuple(labels.shape)}; they must describe the same voxels."
            )
    if spacing is not None and clean_spacing(spacing) is None:
        raise InputError(f"spacing {spacing!r} must be three positive numbers (z, y, x).")
    options = dict(
        class_names=class_names,
        colors=colors,
        chunks=chunks,
        max_levels=max_levels,
        unit=unit,
        block_bytes=block_bytes,
    )
    if is_image_group(path):
        if image is not None:
            raise InputError(f"{path} already holds an image; leave image unset to add labels to it.")
        return _add_to_image_group(path, labels, name, spacing, overwrite, options)
    version = ngff_version or "0.4"
    if version not in ("0.4", "0.5"):
        raise InputError(f"ngff_version must be '0.4' or '0.5', got {ngff_version!r}.")
    spacing = clean_spacing(spacing) if spacing is not None else None
    with atomic_path(path, overwrite) as temporary:
        root = _create_group(temporary, version)
        _write_image(root, image, labels.shape, spacing, version, options)
        labels_group = root.create_group("labels")
        _set_ome(labels_group, version, {"labels": [name]})
        _write_label_image(labels_group.create_group(name), labels, spacing, version, options)
    return path


def _as_zyx_labels(labels: Any) -> Any:
    if not hasattr(labels, "ndim"):
        labels = np.asarray(labels)
    if labels.ndim == 2:
        labels = labels[None]
    if labels.ndim != 3:
        raise InputError(
            f"Labels must be a (z, y, x) or (y, x) array, got shape {tuple(labels.shape)}; "
            "for several channels write one label image per channel."
        )
    if 0 in labels.shape:
        raise InputError(f"Labels are empty (shape {tuple(labels.shape)}); there is nothing to write.")
    if np.dtype(labels.dtype).kind not in "uib":
        raise InputError(
            f"Labels must hold integer ids, got dtype {labels.dtype}. Convert them first, "
            "e.g. np.rint(labels).astype(np.uint32)."
        )
    return labels


def _add_to_image_group(path: Path, labels: Any, name: str, spacing, overwrite: bool, options: dict) -> Path:
    layers = {name: (labels, options["class_names"])}
    return add_labels_to_image(path, layers, spacing=spacing, overwrite=overwrite, options=options)


def _check_label_name(name: str) -> None:
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise InputError(f"Label name {name!r} is not usable; give a plain name such as 'nuclei'.")


def check_into_image(
    path: str | os.PathLike, names, overwrite: bool = False, shape: tuple | None = None
) -> tuple[Any, dict]:
    """Refuse, reading only, every reason `add_labels_to_image` would stop part-way.

    `path` must be an OME-Zarr image group with a readable level 0 (a plain Zarr array, a group without
    ``multiscales`` or broken metadata is refused: its image is never replaced); every name must be
    new under ``labels/`` unless `overwrite`; `shape` (z, y, x), when given, must match the image.
    Returns the opened group and its first multiscale.
    """
    import zarr

    path = Path(path)
    how = (
        "(fix: drop --into-source and write a new OME-Zarr, e.g. -o result.ome.zarr, or convert the "
        "input to an OME-Zarr image first)"
    )
    if not path.is_dir() or not any((path / m).exists() for m in ("zarr.json", ".zgroup", ".zarray")):
        raise InputError(f"{path} is not an OME-Zarr image group, so labels cannot be added to it {how}")
    try:
        node = zarr.open(str(path), mode="r")
    except Exception as error:
        raise InputError(
            f"{path} is not a readable Zarr store ({type(error).__name__}: {error}) {how}"
        ) from error
    if isinstance(node, zarr.Array):
        raise InputError(
            f"{path} is a plain Zarr array, not an OME-Zarr image group: adding labels would mean "
            f"replacing the image itself, which fveseg never does {how}"
        )
    attrs, _ = ome_attrs(node)
    multiscales = attrs.get("multiscales")
    valid = isinstance(multiscales, list) and multiscales and isinstance(multiscales[0], dict)
    datasets = multiscales[0].get("datasets") if valid else None
    level = (
        datasets[0].get("path")
        if isinstance(datasets, list) and datasets and isinstance(datasets[0], dict)
        else None
    )
    if level is None:
        raise InputError(f"{path} has no usable OME 'multiscales' metadata, so it is no image group {how}")
    try:
        level0 = node[str(level)]
    except Exception as error:
        raise InputError(f"{path} lists image level {level!r}, which it does not hold {how}") from error
    if not isinstance(level0, zarr.Array):
        raise InputError(f"{path}: image level {level!r} is not an array {how}")
    if shape is not None:
        axes = multiscale_axes(multiscales[0], level0.ndim)
        spatial = {a.get("name"): size for a, size in zip(axes, level0.shape)}
        if (spatial.get("z", 1), spatial.get("y"), spatial.get("x")) != tuple(shape):
            raise InputError(
                f"Labels shape {tuple(shape)} does not match the image in {path} "
                f"(shape {tuple(level0.shape)}); segment that image or write to a new path."
            )
    names = list(names)
    for name in names:
        _check_label_name(name)
    if "labels" in node and not isinstance(node["labels"], zarr.Group):
        raise InputError(f"{path}/labels is not a group, so no label image can be added {how}")
    existing = [n for n in names if (path / "labels" / n).exists()]
    if existing and not overwrite:
        raise OutputExistsError(
            f"{path} already holds label images {', '.join(existing)}; nothing was written "
            "(fix: pass overwrite=True, --overwrite on the command line, to replace those label images — "
            "the image itself is never replaced — or choose other prompts)"
        )
    return node, multiscales[0]


#: Metadata files an added label image changes; saved before and restored when the addition fails.
_METADATA_FILES = (
    ".zmetadata",
    "zarr.json",
    ".zattrs",
    "labels/.zattrs",
    "labels/.zgroup",
    "labels/zarr.json",
)


def add_labels_to_image(
    path: str | os.PathLike,
    layers: Mapping[str, tuple[Any, Mapping[int, str] | None]],
    *,
    spacing=None,
    overwrite: bool = False,
    options: dict | None = None,
) -> Path:
    """Add label images ``labels/<name>`` to an existing OME-Zarr image group, all or none.

    Everything is checked first (`check_into_image`); each label image is written to a hidden sibling
    inside ``labels/`` and renamed into place only when all are complete, and the ``labels`` listing
    is updated last. A failure or an interrupt leaves the group as it was, byte for byte; `overwrite`
    replaces only the label images named in `layers`, never the image. `spacing` is in micrometres and
    is written in the image's own unit (millimetres for a CT image).
    """
    import zarr

    path = Path(path)
    options = {
        "class_names": None,
        "colors": None,
        "chunks": None,
        "max_levels": None,
        "unit": "micrometer",
        "block_bytes": DEFAULT_BLOCK_BYTES,
        **(options or {}),
    }
    checked = {name: _as_zyx_labels(labels) for name, (labels, _) in layers.items()}
    shapes = {tuple(labels.shape) for labels in checked.values()}
    if len(shapes) > 1:
        raise InputError(f"label images to add differ in shape ({sorted(shapes)}); they must match.")
    root, multiscale = check_into_image(path, list(layers), overwrite, shape=next(iter(shapes), None))
    zarr_format = root.metadata.zarr_format
    version = "0.5" if zarr_format == 3 else "0.4"
    level0 = root[multiscale["datasets"][0]["path"]]
    axes = multiscale_axes(multiscale, level0.ndim)
    image_unit = next((a.get("unit") for a in axes if a.get("name") == "x" and a.get("unit")), None)
    if spacing is None:
        scale = dict(zip((a.get("name") for a in axes), level_scale(multiscale, 0, level0.ndim)))
        if image_unit:
            spacing = (scale.get("z", scale.get("y", 1.0)), scale.get("y", 1.0), scale.get("x", 1.0))
            options["unit"] = image_unit
    elif image_unit and unit_factor(image_unit) and unit_factor(options["unit"]):
        factor = unit_factor(options["unit"]) / unit_factor(image_unit)
        spacing = tuple(float(s) * factor for s in spacing)  # same lengths, in the image's unit
        options["unit"] = image_unit
    snapshot = {name: (path / name).read_bytes() for name in _METADATA_FILES if (path / name).is_file()}
    labels_dir = path / "labels"
    new_group = not labels_dir.exists()
    staged: list[tuple[Path, Path]] = []
    try:
        if new_group:  # the whole labels group is built aside and appears in one rename
            temporary = temporary_sibling(labels_dir)
            staged.append((temporary, labels_dir))
            group = zarr.open_group(str(temporary), mode="w", zarr_format=zarr_format)
            _set_ome(group, version, {"labels": []})
            for name, labels in checked.items():
                layer = {**options, "class_names": layers[name][1] or None}
                _write_label_image(group.create_group(name), labels, spacing, version, layer)
        else:
            for name, labels in checked.items():
                temporary = temporary_sibling(labels_dir / name)
                staged.append((temporary, labels_dir / name))
                group = zarr.open_group(str(temporary), mode="w", zarr_format=zarr_format)
                layer = {**options, "class_names": layers[name][1] or None}
                _write_label_image(group, labels, spacing, version, layer)

        def publish() -> None:  # the listing last: readers never see a name whose data is incomplete
            labels_group = zarr.open_group(str(labels_dir), mode="r+")
            names, _ = ome_attrs(labels_group)
            listed = [n for n in names.get("labels", []) if n not in layers] + list(layers)
            _set_ome(labels_group, version, {"labels": listed})
            _reconsolidate(path, zarr_format)

        commit_all(staged, overwrite, then=publish)
    except BaseException:
        with deferred_signals(deliver=False):
            for temporary, _ in staged:
                discard(temporary)
            for name, content in snapshot.items():
                if (path / name).parent.is_dir() and (
                    not (path / name).is_file() or (path / name).read_bytes() != content
                ):
                    (path / name).write_bytes(content)
        raise
    return path


def _reconsolidate(path: Path, zarr_format: int) -> None:
    """Keep consolidated metadata (if the image had it) in step with the new labels."""
    import json

    import zarr

    consolidated = (
        (path / ".zmetadata").exists()
        if zarr_format == 2
        else bool(json.loads((path / "zarr.json").read_text()).get("consolidated_metadata"))
    )
    if consolidated:
        zarr.consolidate_metadata(str(path), zarr_format=zarr_format)


def _create_group(path: Path, version: str):
    import zarr

    return zarr.open_group(str(path), mode="w", zarr_format=3 if version == "0.5" else 2)


def _set_ome(group, version: str, metadata: dict) -> None:
    """Store OME metadata: flat for 0.4, under "ome" with the version for 0.5."""
    if version == "0.5":
        ome = dict(group.attrs.get("ome", {}))
        ome.update(version="0.5", **metadata)
        group.attrs["ome"] = ome
    else:
        group.attrs.update(metadata)


def _write_image(root, image: Any, shape: tuple, spacing, version: str, options: dict) -> None:
    if image is None:
        # Labels-only container: a zero image with no chunks stored (reads as 0, costs no disk), so
        # ome-zarr-py and napari-ome-zarr open the container like any image with labels.
        chunks = _chunk_shape(shape, options["chunks"])
        _create_array(root, "0", shape, np.uint8, chunks, version)
        multiscale = _multiscale_metadata(
            ["0"], [(1, 1, 1)], spacing, options["unit"], version, "placeholder"
        )
        _set_ome(root, version, {"multiscales": [multiscale]})
        root.attrs[PLACEHOLDER_KEY] = {"placeholder_image": True}
        return
    dtype = np.dtype(image.dtype) if image.dtype != bool else np.dtype(np.uint8)
    paths, factors = _write_pyramid(root, image, dtype, spacing, version, options, reduce="mean")
    _set_ome(
        root,
        version,
        {"multiscales": [_multiscale_metadata(paths, factors, spacing, options["unit"], version, "image")]},
    )


def _write_label_image(group, labels: Any, spacing, version: str, options: dict) -> None:
    ids: set[int] = set()
    paths, factors = _write_pyramid(
        group, labels, np.dtype(np.uint32), spacing, version, options, reduce="nearest", collect_ids=ids
    )
    name = str(group.name).rstrip("/").split("/")[-1]
    image_label = image_label_metadata(
        np.fromiter(ids, np.int64) if ids else None, options["class_names"], options["colors"]
    )
    if version == "0.4":
        image_label = {"version": "0.4", **image_label}
    multiscale = _multiscale_metadata(paths, factors, spacing, options["unit"], version, name)
    _set_ome(group, version, {"multiscales": [multiscale], "image-label": image_label})


def _multiscale_metadata(paths, factors, spacing, unit: str, version: str, name: str) -> dict:
    base = spacing if spacing is not None else (1.0, 1.0, 1.0)
    axes = [{"name": a, "type": "space", **({"unit": unit} if spacing is not None else {})} for a in "zyx"]
    datasets = [
        {
            "path": p,
            "coordinateTransformations": [
                {"type": "scale", "scale": [float(b * f) for b, f in zip(base, factor)]}
            ],
        }
        for p, factor in zip(paths, factors)
    ]
    multiscale = {"name": name, "axes": axes, "datasets": datasets}
    if version == "0.4":
        multiscale = {"version": "0.4", **multiscale}
    return multiscale


def plan_levels(shape: tuple, spacing, max_levels: int | None) -> list[tuple[int, int, int]]:
    """Cumulative (z, y, x) downsampling factor of every pyramid level.

    y and x halve each level; z halves only when its current voxel size is not larger than the y/x
    size (spacing known): anisotropic stacks keep every z slice. Levels stop before the smaller y/x
    side drops below `MIN_LEVEL_SIDE`.
    """
    factors = [(1, 1, 1)]
    z, y, x = shape
    sz, sxy = (spacing[0], min(spacing[1:])) if spacing is not None else (math.inf, 1.0)
    while (max_levels is None or len(factors) < max_levels) and min(-(-y // 2), -(-x // 2)) >= MIN_LEVEL_SIDE:
        fz = 2 if (sz <= sxy * (1 + 1e-6) and z > 1) else 1
        fz_total, fy_total, fx_total = factors[-1]
        factors.append((fz_total * fz, fy_total * 2, fx_total * 2))
        z, y, x = -(-z // fz), -(-y // 2), -(-x // 2)
        sz, sxy = sz * fz, sxy * 2
    return factors


def _chunk_shape(shape: tuple, chunks) -> tuple[int, int, int]:
    chunks = chunks or DEFAULT_CHUNKS
    if len(chunks) != 3 or any(int(c) < 1 for c in chunks):
        raise InputError(f"chunks must be three positive ints (z, y, x), got {chunks!r}.")
    return tuple(max(1, min(int(c), int(s))) for c, s in zip(chunks, shape))


def _create_array(group, name: str, shape, dtype, chunks, version: str):
    # zarr matches data types by numpy scalar type: the same 8-byte integer read by tifffile can carry
    # `numpy.ulonglong` instead of `numpy.uint64` and is then refused; the canonical dtype is accepted
    dtype = np.dtype(np.dtype(dtype).str)
    if version == "0.5":
        from zarr.codecs import BloscCodec

        return group.create_array(
            name,
            shape=shape,
            chunks=chunks,
            dtype=dtype,
            fill_value=0,
            compressors=[BloscCodec(cname="zstd", clevel=5, shuffle="shuffle")],
            dimension_names=["z", "y", "x"],
        )
    from numcodecs import Blosc

    return group.create_array(
        name,
        shape=shape,
        chunks=chunks,
        dtype=dtype,
        fill_value=0,
        compressors=Blosc(cname="zstd", clevel=5, shuffle=Blosc.SHUFFLE),
        chunk_key_encoding={"name": "v2", "separator": "/"},
    )


def _blocks(shape: tuple, chunks: tuple, itemsize: int, budget: int) -> Iterator[tuple[slice, ...]]:
    """Regions made of whole chunks, each at most `budget` bytes (at least one chunk), in C order."""
    cz, cy, cx = chunks
    bx = min(shape[2], max(cx, (budget // (cz * cy * itemsize)) // cx * cx))
    by = min(shape[1], max(cy, (budget // (cz * bx * itemsize)) // cy * cy))
    bz = min(shape[0], max(cz, (budget // (by * bx * itemsize)) // cz * cz)) if by == shape[1] else cz
    for z0 in range(0, shape[0], bz):
        for y0 in range(0, shape[1], by):
            for x0 in range(0, shape[2], bx):
                yield slice(z0, z0 + bz), slice(y0, y0 + by), slice(x0, x0 + bx)


def _read(source: Any, region: tuple[slice, ...]) -> np.ndarray:
    block = source[region]
    return block.compute() if hasattr(block, "compute") else np.asarray(block)


def _downsample(block: np.ndarray, factor: tuple[int, int, int], reduce: str, dtype: np.dtype) -> np.ndarray:
    if reduce == "nearest":  # top-left voxel of each cell: never invents ids
        return block[:: factor[0], :: factor[1], :: factor[2]]
    pad = [(0, -s % f) for s, f in zip(block.shape, factor)]
    padded = np.pad(block, pad, mode="edge") if any(p for _, p in pad) else block
    z, y, x = (s // f for s, f in zip(padded.shape, factor))
    mean = padded.reshape(z, factor[0], y, factor[1], x, factor[2]).mean(axis=(1, 3, 5))
    return np.rint(mean).astype(dtype) if dtype.kind in "ui" else mean.astype(dtype)


def _write_pyramid(
    group,
    source: Any,
    dtype: np.dtype,
    spacing,
    version: str,
    options: dict,
    reduce: str,
    collect_ids: set | None = None,
) -> tuple[list[str], list[tuple]]:
    """Write level 0 from `source`, then each level from the previous level, block by block."""
    shape = tuple(int(s) for s in source.shape)
    chunks = _chunk_shape(shape, options["chunks"])
    budget = options["block_bytes"]
    factors = plan_levels(shape, spacing, options["max_levels"])
    level = _create_array(group, "0", shape, dtype, chunks, version)
    for region in _blocks(shape, chunks, dtype.itemsize, budget):
        block = _read(source, region)
        if reduce == "nearest":
            block = as_label_ids(block)
            if collect_ids is not None and len(collect_ids) <= MAX_DEFAULT_COLORED_IDS:
                collect_ids.update(_unique(block).tolist())
        elif block.dtype != dtype:
            block = block.astype(dtype)
        level[region] = block
    previous, previous_factor = level, factors[0]
    for index, factor in enumerate(factors[1:], start=1):
        step = tuple(f // p for f, p in zip(factor, previous_factor))
        level_shape = tuple(-(-s // f) for s, f in zip(shape, factor))
        level_chunks = _chunk_shape(level_shape, chunks)
        level = _create_array(group, str(index), level_shape, dtype, level_chunks, version)
        for region in _blocks(level_shape, level.chunks, dtype.itemsize, budget // 8):
            parent = tuple(slice(r.start * s, r.stop * s) for r, s in zip(region, step))
            level[region] = _downsample(_read(previous, parent), step, reduce, dtype)
        previous, previous_factor = level, factor
    return [str(i) for i in range(len(factors))], factors


def _unique(block: np.ndarray) -> np.ndarray:
    try:
        import fastremap  # several times faster than np.unique on label blocks
    except ImportError:
        return np.unique(block)
    return fastremap.unique(block)
