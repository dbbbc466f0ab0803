"""Runtime plumbing for the segmentation widget: devices, the loaded-model cache, safe imports.

Kept apart from the widget so the widget module holds only UI and the run/cancel/re-threshold logic.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

_LOADED: set[tuple] = set()  # (checkpoint, device) loaded in this process: the status says "Segmenting…"


def get_segmenter(checkpoint: str | None, device: str) -> Any:
    """The loaded Segmenter (`fveseg.inference.load_segmenter`, cached per process); None: the bundled
    models, chosen per volume from its noise."""
    from fveseg.inference import load_segmenter

    segmenter = load_segmenter(checkpoint, device)
    _LOADED.add((checkpoint, device))
    return segmenter


def is_loaded(checkpoint: str | None, device: str) -> bool:
    """Whether this model was loaded before in this process (so a run starts without loading it)."""
    return (checkpoint, device) in _LOADED


def guard_against_llvm_clash() -> None:
    """Call in the GUI thread before anything imports torch (cheap: reads /proc/self/maps once).

    On Linux with Mesa's software OpenGL (llvmpipe: VMs, remote desktops, CI) the canvas has loaded
    Mesa's libLLVM; importing triton afterwards (torchvision -> torch._dynamo -> triton) loads a second
    LLVM and the process dies with a segmentation fault. Inference runs eagerly and never needs triton,
    so in that case torch is told triton is absent (``sys.modules["triton"] = None``).
    """
    if "triton" not in sys.modules and _llvm_already_loaded():
        sys.modules["triton"] = None  # type: ignore[assignment]


def import_core() -> None:
    """Import the torch stack (seconds): in the worker, after `guard_against_llvm_clash`, so the window
    never freezes on it."""
    guard_against_llvm_clash()
    import fveseg.pipeline  # noqa: F401


def _llvm_already_loaded() -> bool:
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            return "libLLVM" in maps.read()
    except OSError:  # not Linux: no such clash known
        return False


def available_devices() -> list[str]:
    """ "auto" and the devices torch can use on this machine (cpu always)."""
    import torch

    devices = ["auto", "cpu"]
    if torch.cuda.is_available():
        devices.append("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        devices.append("mps")
    return devices


def checkpoint_exists(checkpoint: str) -> bool:
    """True for a file or folder here (the BiomedParse v2 ``.ckpt`` included) or what the core resolves
    (`fveseg.model.checkpoint.checkpoint_exists`: any spelling of a checkpoint, a bundled model's name),
    and ``"auto"``, the bundled models chosen by noise."""
    from fveseg.inference.model_choice import AUTO_MODEL
    from fveseg.model.checkpoint import checkpoint_exists as core_checkpoint_exists

    return checkpoint == AUTO_MODEL or Path(checkpoint).exists() or core_checkpoint_exists(checkpoint)
