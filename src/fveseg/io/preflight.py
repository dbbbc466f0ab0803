"""Checks made before the network runs: a run that would fail at the end fails at the start instead.

`segment_file` (and the block mode in `fveseg.distributed`) call these first, so a mistake in the output
path, a clash with the user's existing labels or a volume too large for memory costs seconds, not a whole
segmentation, and nothing is written.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from fveseg.errors import InputError
from fveseg.io.writers import tiff_paths

#: Suffixes a ``-o`` output may have, by format ("" also: a bare name gets the format's files).
OUTPUT_SUFFIXES = {"zarr": (".zarr",), "tiff": (".tif", ".tiff")}
#: Longest file or folder name most file systems accept (bytes).
MAX_NAME_BYTES = 255
#: A volume is refused when its float32 working copy exceeds this fraction of the available memory.
MEMORY_FRACTION = 0.5


def check_output(job, names: list[str]) -> None:
    """Refuse an output that cannot be written: unknown suffix, missing folder, the input itself, a
    label name that is no usable file name (``-o out.xyz`` would otherwise become a zarr folder named
    ``out.xyz`` after the whole run)."""
    for name in names:
        if not name or name.startswith(".") or len(name.encode()) > MAX_NAME_BYTES - 40:
            raise InputError(
                f"the prompt gives the label name {name[:40]!r}{'…' if len(name) > 40 else ''}, which is no "
                "usable file or label name (fix: use a shorter prompt of letters and digits)"
            )
    if job.into_source:
        return
    output, source = Path(job.output), Path(job.source)
    suffix = output.suffix.lower()
    allowed = OUTPUT_SUFFIXES.get(job.fmt, ())
    if suffix and suffix not in allowed:
        wanted = " or ".join(allowed)
        raise InputError(
            f"-o {output.name}: {suffix} is not a {job.fmt} output suffix (fix: name the output "
            f"*{wanted}, e.g. {output.stem}{allowed[0] if allowed else ''}, or pass --format)"
        )
    if not output.parent.is_dir():
        raise InputError(
            f"the output folder {output.parent} does not exist (fix: create it first, or choose another -o)"
        )
    if job.fmt == "tiff":
        outputs = list(tiff_paths(output, names).values())
    else:
        outputs = [output]
    for path in outputs:
        if len(path.name.encode()) > MAX_NAME_BYTES:
            raise InputError(
                f"the output name {path.name[:60]}… is too long (fix: use a shorter -o or prompt)"
            )
        if _same_or_inside(path, source) or _same_or_inside(source, path):
            raise InputError(
                f"the output {path} would replace the input {source} (fix: choose another -o; to add labels "
                "to an OME-Zarr image, use --into-source)"
            )


def _same_or_inside(path: Path, other: Path) -> bool:
    path, other = path.resolve(), other.resolve()
    return path == other or other in path.parents


def check_params(params) -> None:
    """Refuse option values the run would only trip over later (``--min-size -5``)."""
    for option, value in (("--min-size", params.min_size), ("--min-relative-size", params.min_relative_size)):
        if value is not None and not (np.isfinite(value) and value >= 0):
            raise InputError(f"{option} must be 0 or more, got {value:g} (fix: e.g. {option} 0)")
    if not (isinstance(params.flatten, bool) or params.flatten == "auto"):
        raise InputError(
            f"flatten must be True, False or 'auto', got {params.flatten!r} (fix: --flatten auto)"
        )


def available_memory() -> int:
    """Bytes of memory available to this process now (MemAvailable; physical memory as a fallback)."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - exotic platforms
        return 2**63


def check_memory(shape, source: str, available: int | None = None) -> None:
    """Refuse to load a volume whose float32 copy needs more than `MEMORY_FRACTION` of the available
    memory; the message gives its size and the block mode that processes it piece by piece."""
    voxels = int(np.prod([int(s) for s in shape], dtype=np.float64))
    needed = voxels * 4
    available = available_memory() if available is None else available
    if needed > MEMORY_FRACTION * available:
        raise InputError(
            f"{source} has {voxels:,} voxels {tuple(int(s) for s in shape)}: its float32 copy alone needs "
            f"{needed / 2**30:,.1f} GiB, more than half of the {available / 2**30:,.1f} GiB memory available "
            "(fix: convert it to OME-Zarr if it is not one and segment it in blocks: --workers N "
            "--block-slices 64)"
        )
