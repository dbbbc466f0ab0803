"""The verification fixture (``shared/reference-v2``): its manifest, fill rule and reference tensors.

The fixture was made by running the public v2 code with every parameter filled by a rule keyed by its
official state-dict name::

    seed = zlib.crc32(name.encode("utf-8")); g = torch.Generator().manual_seed(seed)
    value = torch.randn(shape, generator=g) * 0.02          # "randn*0.02"
    value = 1 + torch.randn(shape, generator=g) * 0.02      # "1+randn*0.02" (LayerNorm / GroupNorm weights)
    pixel_mean / pixel_std keep their constructed values    # "keep"
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "ManifestEntry",
    "read_manifest",
    "fill_value",
    "fixture_state_dict",
    "fixture_dir",
    "fill_model",
    "unpack_attention_mask",
]

DEFAULT_FIXTURE_DIR = (
    Path(__file__).resolve().parents[2] / "shared" / "reference-v2"
)  # ../shared beside the repo


@dataclass(frozen=True)
class ManifestEntry:
    name: str
    shape: tuple[int, ...]
    fill_rule: str
    filled_sum: float
    filled_first: float


def fixture_dir() -> Path | None:
    """The fixture folder: ``$FVESEG_REFERENCE_V2_DIR`` or ``../shared/reference-v2``; None if absent."""
    env = os.environ.get("FVESEG_REFERENCE_V2_DIR")
    candidates = [Path(env)] if env else []
    candidates += [DEFAULT_FIXTURE_DIR]
    for path in candidates:
        if (path / "state_dict_manifest.tsv").is_file():
            return path
    return None


def read_manifest(path: str | Path) -> list[ManifestEntry]:
    """Rows of ``state_dict_manifest.tsv`` in state-dict order."""
    rows = Path(path).read_text().splitlines()
    header = rows[0].split("\t")
    col = {name: i for i, name in enumerate(header)}
    entries = []
    for row in rows[1:]:
        f = row.split("\t")
        shape = tuple(int(s) for s in f[col["shape"]].strip("[]").split(",") if s.strip())
        entries.append(
            ManifestEntry(
                f[col["name"]],
                shape,
                f[col["fill_rule"]],
                float(f[col["filled_sum_f64"]]),
                float(f[col["filled_first"]]),
            )
        )
    return entries


def fill_value(name: str, shape: tuple[int, ...], rule: str) -> torch.Tensor | None:
    """The fixture's value for official parameter ``name`` (None for rule "keep")."""
    if rule == "keep":
        return None
    g = torch.Generator().manual_seed(zlib.crc32(name.encode("utf-8")))
    value = torch.randn(shape, generator=g, dtype=torch.float32) * 0.02
    if rule == "1+randn*0.02":
        return value + 1
    if rule != "randn*0.02":
        raise ValueError(f"unknown fill rule {rule!r} for {name}")
    return value


def fixture_state_dict(entries: list[ManifestEntry]) -> dict[str, torch.Tensor]:
    """Official-name state dict filled by the rule (``keep`` entries left out)."""
    out = {}
    for e in entries:
        value = fill_value(e.name, e.shape, e.fill_rule)
        if value is not None:
            out[e.name] = value
    return out


def fill_model(model: torch.nn.Module, manifest: str | Path, check_sums: bool = True) -> None:
    """Fill a `ReferenceV2` in place by the fixture rule, through the official -> module name mapping.

    Raises ``AssertionError`` if a filled tensor's float64 sum or first value disagrees with the
    manifest (relative 1e-6), i.e. the fill is not the fixture's.
    """
    from fveseg.model.reference_v2.loading import load_official_state_dict

    entries = read_manifest(manifest)
    state = fixture_state_dict(entries)
    if check_sums:
        for e in entries:
            if e.name in state:
                total = float(state[e.name].double().sum())
                first = float(state[e.name].reshape(-1)[0])
                assert abs(total - e.filled_sum) <= 1e-6 * max(1.0, abs(e.filled_sum)), e.name
                assert abs(first - e.filled_first) <= 1e-6 * max(1.0, abs(e.filled_first)), e.name
    keep = {e.name for e in entries if e.fill_rule == "keep"}
    own = model.state_dict()
    for name in keep:  # constructed values, exactly as in the reference
        state[name] = own[name].clone()
    load_official_state_dict(model, state)


def unpack_attention_mask(packed: np.ndarray, shape: tuple[int, ...]) -> torch.Tensor:
    """A stored ``attn_mask_packbits`` array -> bool tensor of ``shape`` (True = not attended)."""
    bits = np.unpackbits(packed)[: int(np.prod(shape))]
    return torch.from_numpy(bits.astype(bool).reshape(shape))
