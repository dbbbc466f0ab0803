"""Show the installed model(s), their prompts and configuration, available devices and versions.

For the released BiomedParse v2 weights (``--model biomedparse_v2.ckpt`` or its converted ``.json``) it
prints the architecture, the prompt format the public model expects and the weights' licence notice.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from importlib import metadata
from pathlib import Path

NAME = "info"
HELP = "installed models, their prompts and config, devices, versions"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, action="append", help="also describe this checkpoint")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _devices() -> list[str]:
    try:
        import torch
    except ImportError:
        return ["torch not installed"]
    found = ["cpu"]
    if torch.cuda.is_available():
        found += [f"cuda:{i} ({torch.cuda.get_device_name(i)})" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        found.append("mps")
    return found


def default_checkpoint_location() -> Path | None:
    """Where the bundled model lives (it may not exist yet), or None if the model package is missing."""
    try:
        from fveseg.model import checkpoint
    except ImportError:
        return None
    for name in ("default_checkpoint_path", "default_checkpoint"):
        function = getattr(checkpoint, name, None)
        if function is not None:
            try:
                return Path(function())
            except Exception:  # noqa: BLE001 - a missing default is reported, not raised, by `info`
                return None
    return None


def describe_checkpoint(path: Path) -> dict:
    """Metadata of a checkpoint (config, prompts, FVE settings) read from its JSON, without the weights."""
    from fveseg.model.checkpoint import checkpoint_paths

    json_path = checkpoint_paths(path)[0]
    meta = json.loads(json_path.read_text())
    keys = ("prompts", "fve", "input_size", "intensity", "trained_on")
    shown = {key: meta[key] for key in keys if key in meta}
    config = meta.get("config", {})
    shown["config"] = {
        key: config[key]
        for key in ("name", "embed_dim", "depths", "hidden_dim", "decoder_layers", "text_encoder")
        if key in config
    }
    return {"path": str(json_path), **shown}


def describe_reference(path: Path) -> dict | None:
    """What ``info`` shows for the released BiomedParse v2 weights, or None if ``path`` is another model.

    Recognises the Lightning ``.ckpt``, an official ``.safetensors`` (no JSON beside it) and a converted
    ``.json`` with ``"architecture": "reference-v2"``; the weights are not loaded (4.5 GB): a ``.ckpt`` is
    checked when a command loads it.
    """
    from fveseg.errors import CheckpointError
    from fveseg.model.checkpoint import checkpoint_paths

    meta: dict = {}
    official = path.suffix == ".ckpt"
    if not official and path.suffix == ".safetensors" and not path.with_suffix(".json").exists():
        from fveseg.inference.reference_engine import is_official_weights

        official = is_official_weights(path)
    if not official:
        try:
            json_path = checkpoint_paths(path)[0]
            meta = json.loads(json_path.read_text())
        except (CheckpointError, OSError, ValueError):
            return None
        if not isinstance(meta, dict) or meta.get("architecture") != "reference-v2":
            return None
        path = json_path
    from fveseg.inference.reference_engine import LICENCE_NOTICE, PROMPT_FORMAT

    shown = {
        "path": str(path),
        "status": "ok" if path.is_file() else "missing",
        "architecture": "reference-v2 (BiomedParse v2, 371.8M parameters; the public pipeline)",
        "input_size": meta.get("input_size", 512),
        "prompt_format": PROMPT_FORMAT,
    }
    if official and path.is_file():
        shown["file"] = f"{path.stat().st_size / 1e9:.2f} GB, official weights (keys checked when loaded)"
    if "converted_from" in meta:
        shown["converted_from"] = meta["converted_from"]
    shown["licence"] = meta.get("licence") or LICENCE_NOTICE
    return shown


def collect(extra_models: list[Path] | None = None) -> dict:
    models = []
    default = default_checkpoint_location()
    candidates = [("default", default)] if default is not None else []
    if default is not None:
        from fveseg.model.checkpoint import bundled_checkpoint_names

        others = [name for name in bundled_checkpoint_names() if name != default.name]
        candidates += [(f"bundled: --model {name}", default.with_name(name)) for name in others]
    candidates += [("given", p) for p in extra_models or []]
    from fveseg.model.checkpoint import checkpoint_exists

    for role, path in candidates:
        reference = describe_reference(Path(path)) if role == "given" else None
        if reference is not None:
            models.append({"role": role, **reference})
            continue
        if not checkpoint_exists(Path(path)):
            models.append({"role": role, "path": str(path), "status": "missing"})
            continue
        try:
            models.append({"role": role, "status": "ok", **describe_checkpoint(Path(path))})
        except Exception as error:  # noqa: BLE001 - `info` reports a broken checkpoint instead of failing
            models.append({"role": role, "path": str(path), "status": f"unreadable: {error}"})
    versions = {
        name: _version(dist)
        for name, dist in (
            ("fveseg", "napari-fveseg"),
            ("torch", "torch"),
            ("napari", "napari"),
            ("numpy", "numpy"),
            ("zarr", "zarr"),
            ("dask", "dask"),
            ("distributed", "distributed"),
        )
    }
    from fveseg.inference.model_choice import AUTO_MODEL, CLEAN_MODEL, NOISY_MODEL
    from fveseg.normalize.noise import NOISY_LEVEL

    choice = (
        f"without --model, {CLEAN_MODEL} segments every volume; with --model {AUTO_MODEL}, {NOISY_MODEL} "
        f"segments volumes whose noise measures at least {NOISY_LEVEL:g} of their signal range"
    )
    return {
        "models": models,
        "model_choice": choice,
        "devices": _devices(),
        "versions": versions,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def run(args: argparse.Namespace) -> int:
    report = collect(args.model)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
        return 0
    out = sys.stdout
    print("models:", file=out)
    if not report["models"]:
        print("  (model package not installed)", file=out)
    for model in report["models"]:
        print(f"  {model['role']}: {model['path']} [{model['status']}]", file=out)
        if model["status"] == "missing" and model["role"] == "default":
            print("    the bundled default model is not installed yet; pass --model CHECKPOINT", file=out)
        for key, value in model.items():
            if key not in ("role", "path", "status"):
                shown = json.dumps(value) if isinstance(value, dict | list) else value
                print(f"    {key}: {shown}", file=out)
    print(f"model choice: {report['model_choice']}", file=out)
    print(f"devices: {', '.join(report['devices'])}", file=out)
    print(
        "versions: "
        + ", ".join(f"{k} {v}" for k, v in report["versions"].items())
        + f", python {report['python']}",
        file=out,
    )
    return 0
