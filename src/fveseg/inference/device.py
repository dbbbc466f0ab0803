"""Where the network runs: `select_device` (a user's choice, checked) and `autocast` (mixed precision)."""

from __future__ import annotations

import contextlib

import torch

from fveseg.errors import InputError

__all__ = ["select_device", "autocast"]


def select_device(device: str | torch.device = "auto") -> torch.device:
    """ "auto" -> cuda, else mps, else cpu; anything else is passed to `torch.device`.

    Raises `InputError` (a user error, before any work) for an unknown name or a device this machine
    does not have."""
    if str(device) != "auto":
        try:
            chosen = torch.device(device)
        except (RuntimeError, TypeError, ValueError) as error:
            raise InputError(f"unknown device {device!r} (fix: auto, cpu, cuda, cuda:1 or mps)") from error
        if chosen.type == "cuda" and not torch.cuda.is_available():
            raise InputError(f"device {device!r}: no CUDA GPU is usable here (fix: --device cpu or auto)")
        if chosen.type == "cuda" and (chosen.index or 0) >= torch.cuda.device_count():
            raise InputError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
        mps = getattr(torch.backends, "mps", None)
        if chosen.type == "mps" and not (mps is not None and mps.is_available()):
            raise InputError(f"device {device!r}: no Apple GPU (MPS) here (fix: --device cpu or auto)")
        return chosen
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def autocast(device: torch.device):
    """Mixed precision on CUDA (bf16 where supported); full precision elsewhere."""
    if device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return contextlib.nullcontext()
