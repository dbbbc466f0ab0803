"""`.npz` volumes: the CVPR 2025 challenge format and this project's development-data format.

Challenge: ``imgs`` (D, H, W) uint8, ``gts`` labels, ``spacing``, ``text_prompts`` (a pickled dict
{"1": "prompt", …, "instance_label": 0 or 1}). Development data: ``image``, ``labels``,
``spacing_zyx`` (NaN where unknown) and ``class_names`` (a JSON string: {"<id>": name} or
{"instances": name}). Only the `text_prompts` dict needs unpickling; it is read with an unpickler that
accepts nothing but numpy arrays of builtin values, so a crafted file cannot run code.
"""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from fveseg.errors import InputError
from fveseg.io.volume import Volume, check_volume, clean_spacing, plain_zyx, stem

_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("builtins", "dict"),
    ("builtins", "list"),
}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from an npz file")
        return super().find_class(module, name)


def _load_object_member(path: Path, key: str) -> Any:
    """Read one pickled object array from the npz without trusting arbitrary pickles."""
    with zipfile.ZipFile(path) as archive, archive.open(f"{key}.npy") as member:
        stream = io.BytesIO(member.read())
    version = np.lib.format.read_magic(stream)
    read_header = (
        np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    )
    _, _, dtype = read_header(stream)
    if dtype.hasobject:
        return _SafeUnpickler(stream).load()
    return np.lib.format.read_array(io.BytesIO(stream.getvalue()))


def read_npz(path: Path, channel: int | str | None = None) -> Volume:
    """Read a challenge or development-data `.npz` as a (z, y, x) `Volume`."""
    try:
        archive = np.load(path, allow_pickle=False)
        keys = set(archive.files)
    except Exception as error:  # BadZipFile, EOFError, ValueError, OSError
        raise InputError(
            f"{path} is not a readable .npz archive ({type(error).__name__}: {error}); it "
            "may be truncated or corrupt. Save it again with numpy.savez_compressed."
        ) from error
    with archive:
        if "imgs" in keys:
            image_key, label_key = "imgs", "gts"
        elif "image" in keys:
            image_key, label_key = "image", "labels"
        else:
            raise InputError(
                f"{path} has arrays {sorted(keys)} but no image; expected 'imgs' (challenge "
                "format) or 'image' (with optional 'labels', 'spacing_zyx', 'class_names')."
            )
        try:
            image = archive[image_key]
            labels = archive[label_key] if label_key in keys else None
            spacing_raw = (
                archive["spacing_zyx"]
                if "spacing_zyx" in keys
                else (archive["spacing"] if "spacing" in keys else None)
            )
            class_json = str(archive["class_names"][()]) if "class_names" in keys else None
        except ValueError as error:  # an object array where numbers were expected
            raise InputError(
                f"{path}: {error}. The arrays 'imgs'/'image' and labels must be numeric."
            ) from error
        except Exception as error:
            raise InputError(
                f"{path} could not be decompressed ({type(error).__name__}: {error}); it "
                "is probably truncated. Save it again."
            ) from error
    data = check_volume(plain_zyx(image, path.name, channel), path.name)
    label_volumes = {}
    if labels is not None:
        labels = plain_zyx(labels, f"{path.name} labels")
        if labels.shape != data.shape:
            raise InputError(f"{path}: labels shape {labels.shape} differs from image shape {data.shape}.")
        label_volumes["labels"] = labels
    prompts, instance = {}, False
    if image_key == "imgs":
        spacing = _challenge_spacing(spacing_raw, image.ndim)
        if "text_prompts" in keys:
            prompts, instance = _challenge_prompts(path)
        unit = "millimeter" if spacing else None
    else:
        spacing = _dev_spacing(spacing_raw)
        prompts, instance = _dev_class_names(class_json, path)
        unit = None  # dev data mixes µm (microscopy) and mm (CT/MRI); the file does not say which
    return Volume(
        data=data,
        spacing=spacing,
        labels=label_volumes,
        prompts=prompts,
        name=stem(path),
        path=path,
        unit=unit,
        instance_label=instance,
    )


def _challenge_spacing(raw: Any, ndim: int) -> tuple[float, float, float] | None:
    """Challenge spacing comes from SimpleITK (x, y, z); some files are already (z, y, x).

    When exactly two entries are equal they are taken as the in-plane (y, x) pair, which settles the
    order; otherwise (x, y, z) is assumed.
    """
    if raw is None:
        return None
    values = np.asarray(raw, dtype=float).ravel()
    if values.size == 2 and ndim == 2:
        return clean_spacing([values[0], values[0], values[1]])
    if values.size != 3:
        return None
    if np.isclose(values[1], values[2]) and not np.isclose(values[0], values[1]):
        return clean_spacing(values)  # (z, y, x) already: y == x
    return clean_spacing(values[::-1])


def _challenge_prompts(path: Path) -> tuple[dict[int, str], bool]:
    try:
        prompts = _load_object_member(path, "text_prompts")
    except (pickle.UnpicklingError, KeyError, ValueError, EOFError) as error:
        raise InputError(
            f"{path}: 'text_prompts' is not a plain dict of strings ({error}); re-save it as "
            "{'1': 'prompt', ..., 'instance_label': 0}."
        ) from error
    if isinstance(prompts, np.ndarray):
        prompts = prompts.item() if prompts.shape == () else {}
    if isinstance(prompts, str):
        prompts = json.loads(prompts)
    if not isinstance(prompts, dict):
        return {}, False
    instance = bool(int(prompts.get("instance_label", 0) or 0))
    return {int(k): str(v) for k, v in prompts.items() if str(k).isdigit()}, instance


def _dev_spacing(raw: Any) -> tuple[float, float, float] | None:
    if raw is None:
        return None
    values = np.asarray(raw, dtype=float).ravel()
    if values.size == 2:  # 2D image: z spacing is moot for one slice, keep it isotropic
        values = np.concatenate([values[:1], values])
    return clean_spacing(values)


def _dev_class_names(text: str | None, path: Path) -> tuple[dict[int, str], bool]:
    if not text:
        return {}, False
    try:
        names = json.loads(text)
    except json.JSONDecodeError as error:
        raise InputError(f"{path}: 'class_names' is not valid JSON ({error}).") from error
    if "instances" in names:  # every id is one instance of this class
        return {1: str(names["instances"])}, True
    return {int(k): str(v) for k, v in names.items() if str(k).isdigit()}, False
