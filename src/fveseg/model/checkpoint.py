"""Checkpoints: safetensors weights + a JSON description, validated on load.

Layout: ``save_checkpoint(model, "runs/nuclei")`` writes ``runs/nuclei.safetensors`` (the state dict) and
``runs/nuclei.json``::

    {"format": "fveseg-checkpoint", "format_version": 1,
     "config": {...ModelConfig...},
     "fve": {"order": 1, "pad": "edge", "downsample": "mean"},
     "input_size": 256,
     "normalization": {"mean": [114.5]*3, "std": [57.6]*3},   # applied to 0-255 uint8 FVE images
     "intensity": {"modality": "auto", "window": null},        # fveseg.normalize.intensity options
     "prompts": [...], "trained_on": ..., ...any extra metadata...,
     "weights": {"file": "nuclei.safetensors", "sha256": "...", "num_tensors": N}}

``load_checkpoint`` accepts that base path, either file, or a directory holding exactly one such pair.
Weights are read with safetensors only (never unpickled).
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import torch

from fveseg.errors import CheckpointError, InputError
from fveseg.model._files import file_sha256
from fveseg.model.build import ARCHITECTURES, build_model

__all__ = [
    "FORMAT_VERSION",
    "DEFAULT_METADATA",
    "save_checkpoint",
    "load_checkpoint",
    "checkpoint_paths",
    "checkpoint_exists",
    "bundled_checkpoint_names",
    "default_checkpoint_path",
    "default_checkpoint",
]

FORMAT_VERSION = 1
DEFAULT_METADATA: dict = {
    "fve": {"order": 1, "pad": "edge", "downsample": "mean"},
    "normalization": {"mean": [114.5, 114.5, 114.5], "std": [57.6, 57.6, 57.6]},
    "intensity": {"modality": "auto", "window": None},
    "prompts": [],
    "trained_on": None,
}
_MAX_LISTED = 20


def bundled_checkpoint_names() -> list[str]:
    """Names of the models installed with the package (``default``, ``noise-robust``), usable as paths."""
    return sorted(p.stem for p in default_checkpoint_path().parent.glob("*.json"))


def checkpoint_paths(path: str | Path) -> tuple[Path, Path]:
    """(json path, safetensors path) for a base path, either file, or a directory with one pair.

    A bare name such as ``noise-robust`` that is not a file here names a bundled model
    (`bundled_checkpoint_names`); a local checkpoint of the same name wins.
    """
    path = Path(path)
    bundled = default_checkpoint_path().with_name(path.name)
    if (
        len(path.parts) == 1
        and not path.exists()
        and not path.with_name(path.name + ".json").exists()
        and bundled.with_name(bundled.name + ".json").is_file()
    ):
        path = bundled
    if path.is_dir():
        found = sorted(path.glob("*.json"))
        if len(found) != 1:
            raise CheckpointError(
                f"{path} is a directory with {len(found)} .json files; point to one checkpoint "
                "(<name>.json beside <name>.safetensors)."
            )
        path = found[0]
    if path.suffix in (".json", ".safetensors"):
        path = path.with_suffix("")
    return path.with_name(path.name + ".json"), path.with_name(path.name + ".safetensors")


def checkpoint_exists(path: str | Path) -> bool:
    """True when the checkpoint's JSON description exists (base path, either file, its folder, or a
    bundled model's name)."""
    try:
        return checkpoint_paths(path)[0].is_file()
    except CheckpointError:
        return False


def full_metadata(model: torch.nn.Module, metadata: dict | None = None) -> dict:
    """Defaults, then ``model.metadata``, then ``metadata``; plus the input size (else the model's own
    ``input_size``, else its config's)."""
    meta = copy.deepcopy(DEFAULT_METADATA)
    meta.update(copy.deepcopy(getattr(model, "metadata", {}) or {}))
    meta.update(copy.deepcopy(metadata or {}))
    meta["input_size"] = int(
        meta.get("input_size") or getattr(model, "input_size", None) or model.config.input_size
    )
    return meta


def save_checkpoint(
    model: torch.nn.Module, path: str | Path, metadata: dict | None = None, overwrite: bool = False
) -> Path:
    """Write ``<path>.safetensors`` and ``<path>.json``; returns the JSON path.

    Parameters
    ----------
    model : BiomedParseV
    path : str or Path
        Base path (a ``.json``/``.safetensors`` suffix is dropped); an existing directory gets
        ``model.json`` + ``model.safetensors``.
    metadata : dict, optional
        Merged over ``DEFAULT_METADATA`` and ``model.metadata``: keys ``fve``, ``input_size``,
        ``normalization``, ``intensity``, ``prompts``, ``trained_on`` and anything else JSON-serialisable.
    overwrite : bool
        Replace an existing checkpoint (otherwise `CheckpointError`).
    """
    from safetensors.torch import save_file

    base = Path(path)
    if base.is_dir():  # directory layout: <dir>/model.json + <dir>/model.safetensors
        base = base / "model"
    json_path, weights_path = checkpoint_paths(base)
    if not overwrite and (json_path.exists() or weights_path.exists()):
        raise CheckpointError(f"{json_path} already exists; choose another path or pass overwrite=True.")
    json_path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    tmp_weights = weights_path.with_name(weights_path.name + ".tmp")
    save_file(tensors, str(tmp_weights), metadata={"format": "fveseg-checkpoint"})
    meta = full_metadata(model, metadata)
    meta.update(
        format="fveseg-checkpoint",
        format_version=FORMAT_VERSION,
        config=model.config.to_dict(),
        weights={"file": weights_path.name, "sha256": file_sha256(tmp_weights), "num_tensors": len(tensors)},
    )
    tmp_json = json_path.with_name(json_path.name + ".tmp")
    tmp_json.write_text(json.dumps(meta, indent=2, default=list))
    os.replace(tmp_weights, weights_path)
    os.replace(tmp_json, json_path)
    return json_path


def _read_json(json_path: Path) -> dict:
    if not json_path.is_file():
        raise CheckpointError(
            f"Checkpoint description {json_path} is missing; a checkpoint is a "
            "<name>.json + <name>.safetensors pair written by save_checkpoint."
        )
    try:
        meta = json.loads(json_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(
            f"{json_path} is not valid JSON ({err}); the file is corrupt: re-save or "
            "re-download the checkpoint."
        ) from err
    if not isinstance(meta, dict) or meta.get("format") != "fveseg-checkpoint":
        raise CheckpointError(f"{json_path} is not an fveseg checkpoint description (no 'format' key).")
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"{json_path} has format version {meta['format_version']}; this fveseg "
            f"reads up to {FORMAT_VERSION}: upgrade fveseg."
        )
    if "config" not in meta:
        raise CheckpointError(f"{json_path} has no 'config' (architecture); the file is incomplete.")
    return meta


def _describe(names, label: str) -> str:
    names = sorted(names)
    shown = ", ".join(names[:_MAX_LISTED]) + (
        f", … ({len(names)} in all)" if len(names) > _MAX_LISTED else ""
    )
    return f"{label}: {shown}"


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu", verify_hash: bool = True):
    """Build the model described by a checkpoint and load its weights (eval mode, ``metadata`` set).

    Raises
    ------
    CheckpointError
        Missing or corrupt files, unknown configuration, or weights whose keys/shapes do not match the
        configuration (the message lists the missing, unexpected and mis-shaped keys).
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if str(path).endswith(".ckpt"):
        # A Lightning checkpoint of the released BiomedParse v2 weights (read with weights_only=True).
        return ARCHITECTURES["reference-v2"].load(path, map_location=map_location)
    json_path, weights_path = checkpoint_paths(path)
    meta = _read_json(json_path)
    if meta.get("architecture") in ARCHITECTURES:  # its own loader reads its own JSON
        return ARCHITECTURES[meta["architecture"]].load(json_path, map_location=map_location)
    if not weights_path.is_file():
        raise CheckpointError(
            f"Checkpoint weights {weights_path} are missing (the .json is there); copy the "
            ".safetensors file next to it."
        )
    expected = meta.get("weights", {}).get("sha256")
    if verify_hash and expected and file_sha256(weights_path) != expected:
        raise CheckpointError(
            f"{weights_path} does not match the checksum in {json_path.name}: the file is "
            "corrupt or from another checkpoint; re-save or re-download it."
        )
    try:
        state = load_file(str(weights_path), device=str(map_location))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(
            f"{weights_path} is not a readable safetensors file ({err}); it is corrupt: "
            "re-save or re-download it."
        ) from err
    try:
        model = build_model(meta["config"])
    except (InputError, TypeError, ValueError) as err:
        raise CheckpointError(f"The architecture in {json_path} cannot be built: {err}") from err
    own = model.state_dict()
    missing = set(own) - set(state)
    unexpected = set(state) - set(own)
    shapes = {k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape)}
    if missing or unexpected or shapes:
        problems = []
        if missing:
            problems.append(_describe(missing, "missing keys"))
        if unexpected:
            problems.append(_describe(unexpected, "unexpected keys"))
        if shapes:
            problems.append(
                _describe(
                    [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in shapes],
                    "mis-shaped keys (file vs config)",
                )
            )
        raise CheckpointError(
            f"The weights in {weights_path.name} do not match the architecture in "
            f"{json_path.name}: " + "; ".join(problems)
        )
    model.load_state_dict(state, strict=True)
    model.metadata = {k: v for k, v in meta.items() if k not in ("format", "config", "weights")}
    model.metadata["checkpoint"] = str(json_path)
    return model.to(map_location).eval()


def default_checkpoint_path() -> Path:
    """Base path of the installed default model: ``fveseg/weights/default`` (+ .json / .safetensors)."""
    return Path(__file__).resolve().parent.parent / "weights" / "default"


def default_checkpoint(map_location: str | torch.device = "cpu"):
    """Load the installed default model, or raise `CheckpointError` if it is not installed."""
    base = default_checkpoint_path()
    json_path, _ = checkpoint_paths(base)
    if not json_path.is_file():
        raise CheckpointError(
            f"The default model is not installed (expected {json_path}); train one with the training "
            "scripts or pass a checkpoint path."
        )
    return load_checkpoint(base, map_location=map_location)
