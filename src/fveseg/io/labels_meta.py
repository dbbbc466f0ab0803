"""Label ids, class names and colours: checking them and turning them into file metadata and back.

Colours are RGBA tuples of four ints in 0–255 (the OME-NGFF `image-label` convention); class names are
free text (a class name or the prompt that produced the label).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from fveseg.errors import InputError

#: Above this many distinct ids no default colours are written: readers then use their own colormap
#: (napari hides ids missing from an explicit colour table, so colouring only some would hide others).
MAX_DEFAULT_COLORED_IDS = 65536

_GOLDEN_RATIO_CONJUGATE = 0.6180339887498949


def default_colors(ids: np.ndarray) -> dict[int, tuple[int, int, int, int]]:
    """Deterministic, well separated opaque colours for label ids (0 stays transparent).

    Parameters
    ----------
    ids : (N,) integer array
        Label ids; 0 (background) gets (0, 0, 0, 0).

    Returns
    -------
    dict[int, tuple[int, int, int, int]]
        id -> RGBA in 0–255. The hue steps by the golden ratio per id, so neighbouring ids differ
        strongly; the same id always gets the same colour.
    """
    ids = np.asarray(ids, dtype=np.int64).ravel()
    hue = (ids * _GOLDEN_RATIO_CONJUGATE) % 1.0
    saturation = 0.65 + 0.35 * ((ids * 7) % 3) / 2.0
    value = 0.95 - 0.25 * ((ids * 5) % 2)
    rgb = _hsv_to_rgb(hue, saturation, value)
    rgba = np.concatenate([np.round(rgb * 255), np.full((ids.size, 1), 255.0)], axis=1).astype(int)
    colors = {int(i): tuple(int(c) for c in row) for i, row in zip(ids, rgba)}
    if 0 in colors:
        colors[0] = (0, 0, 0, 0)
    return colors


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Vectorised HSV (each in [0, 1]) to RGB, shape (N, 3)."""
    i = np.floor(h * 6).astype(int) % 6
    f = h * 6 - np.floor(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    table = np.stack(
        [
            np.stack([v, t, p], 1),
            np.stack([q, v, p], 1),
            np.stack([p, v, t], 1),
            np.stack([p, q, v], 1),
            np.stack([t, p, v], 1),
            np.stack([v, p, q], 1),
        ]
    )
    return table[i, np.arange(h.size)]


def check_class_names(class_names: Mapping | None) -> dict[int, str]:
    """Return `class_names` as {int id: str}; raise InputError for ids that are not non-negative ints."""
    if class_names is None:
        return {}
    if not isinstance(class_names, Mapping):
        raise InputError(
            f"class_names must be a dict mapping label id to name, e.g. {{1: 'nuclei'}}; got "
            f"{type(class_names).__name__}."
        )
    checked = {}
    for key, name in class_names.items():
        checked[_label_id(key, "class_names")] = str(name)
    return checked


def check_colors(colors: Mapping | None) -> dict[int, tuple[int, int, int, int]]:
    """Return `colors` as {int id: (r, g, b, a)} with ints in 0–255.

    RGB triples get alpha 255; floats all within [0, 1] are read as fractions and scaled to 0–255.
    """
    if colors is None:
        return {}
    if not isinstance(colors, Mapping):
        raise InputError(
            "colors must be a dict mapping label id to an RGBA tuple in 0–255, e.g. {1: (255, 0, 0, 255)}."
        )
    checked = {}
    for key, value in colors.items():
        rgba = np.asarray(value, dtype=float).ravel()
        if rgba.size not in (3, 4) or not np.all(np.isfinite(rgba)) or rgba.min() < 0 or rgba.max() > 255:
            raise InputError(
                f"colors[{key!r}] = {value!r} is not an RGB(A) colour; give 3 or 4 numbers in 0–255."
            )
        if rgba.max() <= 1.0 and not np.all(rgba == np.round(rgba)):
            rgba = rgba * 255
        if rgba.size == 3:
            rgba = np.append(rgba, 255)
        checked[_label_id(key, "colors")] = tuple(int(round(c)) for c in rgba)
    return checked


def _label_id(key: object, argument: str) -> int:
    """Accept ints and digit strings (JSON keys arrive as strings) as label ids."""
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool) and key >= 0:
        return int(key)
    if isinstance(key, str) and key.strip().isdigit():
        return int(key)
    raise InputError(f"{argument} has the key {key!r}; keys must be label ids (integers ≥ 0).")


def image_label_metadata(
    ids: np.ndarray | None,
    class_names: Mapping | None,
    colors: Mapping | None,
) -> dict:
    """Build the OME-NGFF `image-label` dict (colors, properties, source) without its version key.

    Colours: the given ones win; every other id present in `ids` (or named in `class_names`) gets a
    default colour, unless there are more than `MAX_DEFAULT_COLORED_IDS` of them.
    """
    names = check_class_names(class_names)
    given = check_colors(colors)
    known = set(names) | set(given)
    if ids is not None:
        known |= {int(i) for i in np.asarray(ids).ravel()}
    known.discard(0)
    if len(known) <= MAX_DEFAULT_COLORED_IDS:
        palette = default_colors(np.array(sorted(known - set(given)), dtype=np.int64))
        palette.update(given)
    else:
        palette = given
    metadata: dict = {
        "colors": [{"label-value": i, "rgba": list(palette[i])} for i in sorted(palette)],
        "source": {"image": "../../"},
    }
    if names:
        metadata["properties"] = [{"label-value": i, "class": names[i]} for i in sorted(names)]
    return metadata


def parse_image_label(image_label: Mapping) -> dict:
    """Read class names and colours back from an `image-label` dict.

    Returns
    -------
    dict
        ``class_names`` {id: str} from each property's "class" (or "name", "prompt"),
        ``colors`` {id: (r, g, b, a)}, and ``properties`` {id: dict} as stored.
    """
    colors, properties, names = {}, {}, {}
    for entry in image_label.get("colors", []) or []:
        if "label-value" in entry and "rgba" in entry:
            colors[int(entry["label-value"])] = tuple(int(c) for c in entry["rgba"])
    for entry in image_label.get("properties", []) or []:
        if "label-value" not in entry:
            continue
        label = int(entry["label-value"])
        properties[label] = {k: v for k, v in entry.items() if k != "label-value"}
        for key in ("class", "name", "prompt"):
            if key in entry:
                names[label] = str(entry[key])
                break
    return {"class_names": names, "colors": colors, "properties": properties}


def as_label_ids(block: np.ndarray) -> np.ndarray:
    """Check one block of label ids and return it as uint32 (bool becomes 0/1).

    Raises InputError for float, complex or non-numeric dtypes, negative ids and ids ≥ 2**32.
    """
    block = np.asarray(block)
    if block.dtype == bool:
        return block.astype(np.uint32)
    if block.dtype.kind not in "ui":
        raise InputError(
            f"Labels must hold integer ids, got dtype {block.dtype}. Convert them first, e.g. "
            "np.rint(labels).astype(np.uint32)."
        )
    if block.size and block.dtype.kind == "i" and block.min() < 0:
        raise InputError("Labels contain negative ids; ids must be ≥ 0 (0 = background).")
    if block.size and block.dtype.itemsize > 4 and block.max() > np.iinfo(np.uint32).max:
        raise InputError(
            "Labels contain ids ≥ 2**32; relabel them to consecutive ids first "
            "(fastremap.renumber or skimage.segmentation.relabel_sequential)."
        )
    return block.astype(np.uint32, copy=False)
