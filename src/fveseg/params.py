"""`SegmentParams`: every option of the pipeline and its default, defined once.

Kept apart from `fveseg.pipeline` so that the napari widget and the CLI's argument parser read the
defaults without importing torch (the model stack takes seconds to import).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from fveseg.errors import InputError
from fveseg.instances.haze import FOCUS_FRACTION
from fveseg.instances.split import NECK_MERGE, SPECK_FRACTION

__all__ = ["FLATTEN_CHOICES", "SegmentParams", "flatten_name", "slug"]

#: The words the CLI and the widget offer for `SegmentParams.flatten`, and the values they stand for.
FLATTEN_CHOICES: dict[str, bool | str] = {"auto": "auto", "on": True, "off": False}


@dataclass(frozen=True)
class SegmentParams:
    """How to segment: every option of the pipeline with its default (picklable, shared by all volumes).

    Attributes
    ----------
    prompts : tuple of str
        Text prompts; one label layer each.
    instances : bool
        Split each prompt's mask into instances (`fveseg.instances`).
    min_size : float
        Smallest instance kept, in physical units (µm³ with µm spacing).
    min_relative_size : float
        Drop specks under this fraction of the typical object size (0: keep all).
    instance_method : {"auto", "watershed", "distance", "reference"}
        How masks become instances (`fveseg.instances.split.split_instances`).
    merge_necks : float
        Merge 3D objects joined by a neck at least this fraction as thick as the thinner one (0: never;
        `fveseg.instances.split.merge_thick_necks`); 0.9 lifted every re-imaged cells3d row of the
        evaluation protocol (docs/experiments/2026-12-06-neck-merge.md).
    focus_fraction : float
        Drop each instance's cross-sections dimmer than this fraction of its brightest (0: keep all).
    checkpoint : str or None
        A checkpoint path or bundled model name (``"default"``, ``"noise-robust"``); ``"auto"`` or None:
        chosen per volume from its measured noise (`fveseg.inference.model_choice`). The default model
        runs by default: the choice by noise changed no row of the evaluation protocol.
    device, batch_size, order
        Torch device ("auto"), slices per network call, FVE order (None: the checkpoint's).
    mask_threshold, exist_threshold, exist_low : float
        Mask probability, slice existence and the existence gate's hysteresis (`fveseg.inference.gate`);
        ``exist_low`` equal to ``exist_threshold`` (the default) is the plain per-slice gate: the
        hysteresis changed no worst row of the evaluation protocol.
    axis : "auto" or int
        Slicing axis (`fveseg.fve.select_view` when "auto").
    resize : float or "auto"
        In-plane factor for slices before the network (`fveseg.inference.auto_scale`).
    flatten : bool or "auto"
        Subtract each z-plane's background (smooth illumination, stripes) before the network and the
        instance step (`fveseg.normalize.background`); "auto": only where the background's swing is
        larger than the nuclei's height above it (`fveseg.normalize.background.background_dominates`), the
        default: it lifted the worst row of the evaluation protocol (the light-sheet preset) from F1
        0.169 to 0.490 and changed no other row (docs/experiments/2026-12-06-background-flattening.md).
    isotropic : bool
        Resample z to the in-plane pixel size before the network and back after it, so that each
        slice's 3D context covers the same physical distance on every microscope
        (`fveseg.inference.resample`); needs the spacing.
    spacing : (dz, dy, dx) or None
        Voxel size overriding the file's.
    with_image : bool
        New OME-Zarr outputs hold the image too.
    channel : int, str or None
        Channel of a multi-channel input.
    """

    prompts: tuple[str, ...] = ("nuclei",)
    instances: bool = True
    min_size: float = 0.0
    min_relative_size: float = SPECK_FRACTION
    instance_method: str = "auto"
    focus_fraction: float = FOCUS_FRACTION
    merge_necks: float = NECK_MERGE
    checkpoint: str | None = "default"
    device: str = "auto"
    batch_size: int = 8
    order: int | None = None
    mask_threshold: float = 0.5
    exist_threshold: float = 0.5
    exist_low: float = 0.5
    axis: str | int = "auto"
    resize: float | str = "auto"
    flatten: bool | str = "auto"
    isotropic: bool = False
    spacing: tuple[float, float, float] | None = None
    with_image: bool = True
    channel: int | str | None = None

    def gate_keywords(self) -> dict[str, float]:
        """The thresholds as `fveseg.inference.Segmenter.segment` keywords."""
        return {
            "mask_threshold": self.mask_threshold,
            "exist_threshold": self.exist_threshold,
            "exist_low": self.exist_low,
        }

    def layer_names(self) -> list[str]:
        """The label layers this run writes, in order; a clash of two prompts is refused here, before any
        work (two prompts whose names would be one layer would overwrite each other)."""
        owners = [("semantic", "all prompts")] if len(self.prompts) > 1 else []
        if self.instances or len(self.prompts) == 1:
            owners += [(slug(prompt), prompt) for prompt in self.prompts]
        seen: dict[str, str] = {}
        for name, prompt in owners:
            if name in seen:
                raise InputError(
                    f'"{seen[name]}" and "{prompt}" would both be written as the label layer "{name}" '
                    "(fix: reword one prompt so that their names differ)"
                )
            seen[name] = prompt
        names = list(seen)
        return names


def slug(text: str) -> str:
    """A prompt as a file-system and zarr friendly name: ``"cell membranes"`` → ``cell-membranes``."""
    return re.sub(r"[^A-Za-z0-9_.]+", "-", text.strip()).strip("-").lower() or "labels"


def flatten_name(value: bool | str) -> str:
    """The word for a `SegmentParams.flatten` value (``"auto"``, ``"on"`` or ``"off"``)."""
    for name, choice in FLATTEN_CHOICES.items():
        if choice == value and type(choice) is type(value):
            return name
    raise InputError(f"flatten must be one of {', '.join(FLATTEN_CHOICES)} (or True/False), got {value!r}")
