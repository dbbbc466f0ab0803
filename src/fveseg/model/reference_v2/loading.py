"""Load the released BiomedParse v2 weights into `ReferenceV2`, and convert them once to safetensors.

Accepted files:

* the Lightning ``biomedparse_v2.ckpt`` (read with ``torch.load(weights_only=True)`` only: a pickle is
  untrusted, so anything that needs arbitrary unpickling is refused with an explanation);
* a ``.safetensors`` file holding the official names (with or without the ``model.`` prefix);
* the project's own pair ``<name>.json`` + ``<name>.safetensors`` written by `convert_checkpoint`.

Keys lose the ``model.`` prefix, the two loss-function buffers are dropped, names are mapped by
`names.to_module_name`, and any missing, unexpected or mis-shaped key fails the load (never partial).
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import torch

from fveseg.errors import CheckpointError, OutputExistsError
from fveseg.model._files import file_sha256
from fveseg.model.reference_v2.names import LINEAR_AS_CONV, to_module_name, to_official_name

__all__ = [
    "read_official_state_dict",
    "load_official_state_dict",
    "load_reference_v2",
    "convert_checkpoint",
    "LOSS_KEYS",
]

LOSS_KEYS = ("loss_function.loss_fn.dice_loss.class_weight", "loss_function.cls_loss_fn.pos_weight")
_OPTIONAL = ("pixel_mean", "pixel_std")  # constants; a file without them keeps the constructed values
_MAX_LISTED = 20


def _listing(names, label: str) -> str:
    names = sorted(names)
    more = f", … ({len(names)} in all)" if len(names) > _MAX_LISTED else ""
    return f"{label}: " + ", ".join(names[:_MAX_LISTED]) + more


def _strip(state: dict) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        key = key.removeprefix("model.")
        if key in LOSS_KEYS or key.startswith("loss_function."):
            continue
        out[key] = value
    return out


def read_official_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Official-name tensors from a ``.ckpt`` (safe unpickling only) or ``.safetensors`` file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"{path} does not exist; download biomedparse_v2.ckpt (see docs/reference-v2.md) "
            "and pass its path."
        )
    if path.stat().st_size < 1024:
        raise CheckpointError(
            f"{path} is only {path.stat().st_size} bytes: a failed download or a Git LFS "
            "pointer. Download the weights again."
        )
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return _strip(load_file(str(path)))
        except Exception as err:  # safetensors raises several types for corrupt files
            raise CheckpointError(
                f"{path} is not a readable safetensors file ({err}); download it again."
            ) from err
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError, TypeError) as err:
        raise CheckpointError(
            f"{path} cannot be read safely: torch.load(weights_only=True) refused it ({err}). The file holds "
            "Python objects besides tensors, and unpickling them could run code. If you trust the file, "
            "extract its weights once in a separate environment with the official code "
            "(`torch.save(torch.load(path, weights_only=False)['state_dict'], 'weights_only.ckpt')`) or save "
            "them as .safetensors, then pass that file."
        ) from err
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        found = list(obj)[:10] if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(
            f"{path} holds no state dict of tensors (found {found}); is it the BiomedParse v2 checkpoint?"
        )
    return _strip(state)


def load_official_state_dict(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Map official names onto ``model`` and load strictly (reshaping timm's 1x1-conv weights).

    Raises
    ------
    CheckpointError
        Listing missing, unexpected and mis-shaped keys (official names); nothing is loaded then.
    """
    own = model.state_dict()
    mapped, unexpected = {}, []
    for key, value in state.items():
        try:
            mapped[to_module_name(key)] = value
        except KeyError:
            unexpected.append(key)
    unexpected += [to_official_name(k) for k in mapped if k not in own]
    missing = [to_official_name(k) for k in own if k not in mapped and k not in _OPTIONAL]
    shapes = []
    for key in list(mapped):
        if key not in own:
            mapped.pop(key)
            continue
        value, target = mapped[key], own[key]
        if LINEAR_AS_CONV.match(key) and value.dim() == 2:
            value = value.reshape(*value.shape, 1, 1)
        if tuple(value.shape) != tuple(target.shape):
            shapes.append(f"{to_official_name(key)} {tuple(value.shape)} vs {tuple(target.shape)}")
        mapped[key] = value
    if missing or unexpected or shapes:
        problems = [
            _listing(x, label)
            for x, label in (
                (missing, "missing keys"),
                (unexpected, "unexpected keys"),
                (shapes, "mis-shaped keys (file vs model)"),
            )
            if x
        ]
        raise CheckpointError(
            "The weights do not match the BiomedParse v2 architecture: "
            + "; ".join(problems)
            + ". Is this the biomedparse_v2.ckpt release?"
        )
    for key in _OPTIONAL:
        mapped.setdefault(key, own[key])
    model.load_state_dict(mapped, strict=True)


def load_reference_v2(path: str | Path, map_location: str | torch.device = "cpu"):
    """Build `ReferenceV2` and load a ``.ckpt``, an official ``.safetensors`` or a converted pair.

    Returns the model in eval mode with ``metadata["checkpoint"]`` set.
    """
    from fveseg.model.reference_v2.build import build_reference_v2

    path = Path(path)
    json_path = (
        path.with_suffix(".json")
        if path.suffix in (".json", ".safetensors")
        else path.with_name(path.name + ".json")
    )
    model = build_reference_v2(empty=True)
    if json_path.is_file() and path.suffix != ".ckpt":
        meta = json.loads(json_path.read_text())
        if meta.get("architecture") != "reference-v2":
            raise CheckpointError(
                f"{json_path} describes a {meta.get('architecture', meta.get('config', {}).get('name'))!r} "
                "model, not reference-v2."
            )
        from safetensors.torch import load_file

        weights = json_path.with_name(meta["weights"]["file"])
        if file_sha256(weights) != meta["weights"]["sha256"]:
            raise CheckpointError(
                f"{weights} does not match the checksum in {json_path.name}; convert again."
            )
        state = {to_official_name(k): v for k, v in load_file(str(weights)).items()}
        model.metadata.update({k: v for k, v in meta.items() if k not in ("format", "config", "weights")})
    else:
        state = read_official_state_dict(path)
    load_official_state_dict(model, state)
    model.metadata["checkpoint"] = str(path)
    return model.to(map_location).eval()


def convert_checkpoint(src: str | Path, dst: str | Path, overwrite: bool = False) -> Path:
    """Read the official weights once and write ``<dst>.safetensors`` + ``<dst>.json``; returns the JSON path.

    The pair is the project's checkpoint format (``"format": "fveseg-checkpoint"``) with
    ``"architecture": "reference-v2"`` and module names; `load_reference_v2` reads it without unpickling.
    """
    from safetensors.torch import save_file

    from fveseg.model.reference_v2.model import LICENCE_NOTICE, PIXEL_MEAN, PIXEL_STD

    base = Path(dst)
    if base.suffix in (".json", ".safetensors"):
        base = base.with_suffix("")
    json_path, weights_path = base.with_name(base.name + ".json"), base.with_name(base.name + ".safetensors")
    if not overwrite and (json_path.exists() or weights_path.exists()):
        raise OutputExistsError(
            f"{json_path} already exists; choose another destination or pass overwrite=True."
        )
    model = load_reference_v2(src)
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    json_path.parent.mkdir(parents=True, exist_ok=True)
    tmp_weights = weights_path.with_name(weights_path.name + ".tmp")
    save_file(
        tensors, str(tmp_weights), metadata={"format": "fveseg-checkpoint", "architecture": "reference-v2"}
    )
    meta = {
        "format": "fveseg-checkpoint",
        "format_version": 1,
        "architecture": "reference-v2",
        "config": {"name": "reference-v2"},
        "input_size": 512,
        "fve": {"order": 1, "pad": "reflect", "downsample": "stride"},
        "normalization": {"mean": [PIXEL_MEAN] * 3, "std": [PIXEL_STD] * 3},
        "pipeline": "reference-v2",
        "licence": LICENCE_NOTICE,
        "converted_from": Path(src).name,
        "weights": {
            "file": weights_path.name,
            "sha256": file_sha256(tmp_weights),
            "num_tensors": len(tensors),
        },
    }
    tmp_json = json_path.with_name(json_path.name + ".tmp")
    tmp_json.write_text(json.dumps(meta, indent=2))
    os.replace(tmp_weights, weights_path)
    os.replace(tmp_json, json_path)
    return json_path
