"""The bundled models and the one cached loader; ``--model auto``: the default network, or the
noise-robust one for noisy volumes.

The default network is best on clean data; on stacks whose noise is a sizeable part of the signal it
merges and misses nuclei, where the network trained on noisy images holds up (docs/model-card.md,
"Choosing the model from the measured noise"). `AutoSegmenter` measures each volume's noise
(`fveseg.normalize.noise_level`, a few slices) and runs the one that suits it. The choice depends on the
whole volume only, so every slice range (block) of a volume gets the same network.
"""

from __future__ import annotations

import functools
from dataclasses import replace
from pathlib import Path

from fveseg.errors import CheckpointError, InputError
from fveseg.inference._checks import check_volume
from fveseg.inference.plan import SegmentPlan
from fveseg.inference.segmenter import Segmenter
from fveseg.model.checkpoint import checkpoint_paths
from fveseg.normalize.noise import NOISY_LEVEL, noise_level

#: The bundled model run on volumes measuring at least `fveseg.normalize.noise.NOISY_LEVEL`.
NOISY_MODEL = "noise-robust"
#: The name under which the default network is reported (and can be forced: ``--model default``).
CLEAN_MODEL = "default"
#: The model name that asks for the choice by noise (``--model auto``).
AUTO_MODEL = "auto"


def model_for_noise(noise: float, threshold: float = NOISY_LEVEL) -> str:
    """`NOISY_MODEL` for a measured `noise_level` of at least ``threshold``, else `CLEAN_MODEL`."""
    return NOISY_MODEL if noise >= threshold else CLEAN_MODEL


class AutoSegmenter:
    """A `fveseg.inference.Segmenter` that picks its network per volume from the measured noise.

    Parameters
    ----------
    clean, noisy : None, str, Path, torch module or Segmenter
        The networks for clean volumes (None: the bundled default) and for noisy ones (the bundled
        `NOISY_MODEL`). Anything but a Segmenter is loaded as ``Segmenter(source)``; the noisy one only
        when a noisy volume first needs it.
    device, batch_size, seed
        As for `Segmenter`.
    threshold : float
        Volumes whose `noise_level` is at least this get the ``noisy`` network.

    ``names`` says how results report the two networks: ``"default"`` and ``"noise-robust"``, or the
    names of checkpoints given as paths. Everything but `plan`, `run`, `segment`, `iter_segment` and
    `auto_scale` (``metadata``, ``device``, ``input_size``, …) is the clean network's Segmenter's.
    """

    def __init__(
        self,
        clean=None,
        noisy=NOISY_MODEL,
        device="auto",
        batch_size: int = 8,
        seed: int = 0,
        threshold: float = NOISY_LEVEL,
    ):
        self._options = dict(device=device, batch_size=batch_size, seed=seed)
        self.clean = self._load(clean)
        self.names = (_name(clean, CLEAN_MODEL), _name(noisy, NOISY_MODEL))
        self._noisy_source, self._noisy = noisy, None
        self.threshold = float(threshold)

    def _load(self, source):
        return source if hasattr(source, "segment") else Segmenter(source, **self._options)

    def choose(self, volume) -> tuple[str, object, float]:
        """``(name, segmenter, noise)`` for this (D, H, W) or (H, W) volume."""
        noise = noise_level(check_volume(volume, check_finite=False))
        if model_for_noise(noise, self.threshold) == CLEAN_MODEL:
            return self.names[0], self.clean, noise
        return self.names[1], self._noisy_segmenter(), noise

    def _noisy_segmenter(self):
        if self._noisy is None:  # loaded when a noisy volume first needs it
            self._noisy = self._load(self._noisy_source)
        return self._noisy

    def segment(self, volume, prompts, *args, **kwargs):
        """`Segmenter.segment` with the network `choose` picks; the result's ``model`` and ``noise`` say
        which ran and why."""
        name, segmenter, noise = self.choose(volume)
        result = segmenter.segment(volume, prompts, *args, **kwargs)
        result.model, result.noise = name, noise
        return result

    def iter_segment(self, volume, prompts, *args, **kwargs):
        """`Segmenter.iter_segment` with the network `choose` picks (the result says which and why)."""
        name, segmenter, noise = self.choose(volume)
        result = yield from segmenter.iter_segment(volume, prompts, *args, **kwargs)
        result.model, result.noise = name, noise
        return result

    def plan(self, volume, *args, **kwargs) -> SegmentPlan:
        """`Segmenter.plan` of the network `choose` picks; the plan records which (``model``) and why
        (``noise``), so `run` and every block of a dask run use the same network."""
        name, segmenter, noise = self.choose(volume)
        return replace(segmenter.plan(volume, *args, **kwargs), model=name, noise=noise)

    def run(self, volume, plan: SegmentPlan, prompts, *args, **kwargs):
        """`Segmenter.run` with the network the plan names (a plan that names none: `choose`'s)."""
        if plan.model is None:
            segmenter = self.choose(volume)[1]
        elif plan.model not in self.names:
            raise InputError(f"This plan names the model {plan.model!r}; these are {list(self.names)}.")
        else:
            segmenter = self.clean if plan.model == self.names[0] else self._noisy_segmenter()
        result = segmenter.run(volume, plan, prompts, *args, **kwargs)
        result.model, result.noise = plan.model, plan.noise
        return result

    def auto_scale(self, volume, prompts, *args, **kwargs) -> float:
        """`Segmenter.auto_scale` of the network `choose` picks for this volume."""
        return self.choose(volume)[1].auto_scale(volume, prompts, *args, **kwargs)

    def __getattr__(self, name: str):
        if name in ("clean", "_options"):  # not set yet (e.g. while unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.clean, name)


def segmenter_for(checkpoint=None, **options):
    """What a run without a model gets: None, the bundled models chosen by noise (`AutoSegmenter`);
    anything else, ``Segmenter(checkpoint)``. ``options``: ``device``, ``batch_size``, ``seed``."""
    return AutoSegmenter(**options) if checkpoint is None else Segmenter(checkpoint, **options)


def _name(source, default: str) -> str:
    if source is None or not isinstance(source, str | Path):
        return default
    return Path(source).name


def load_segmenter(checkpoint: str | None = None, device: str = "auto", batch_size: int = 8):
    """The Segmenter for this checkpoint (`segmenter_for`; None or ``"auto"``: the bundled models chosen
    by noise), loaded once per process and reused while the checkpoint file is unchanged: the CLI, every
    dask worker and the napari widget load models here."""
    checkpoint = None if checkpoint == AUTO_MODEL else checkpoint
    return _cached_segmenter(checkpoint, device, batch_size, _modified_time(checkpoint))


@functools.lru_cache(maxsize=2)
def _cached_segmenter(checkpoint, device, batch_size, modified):
    return segmenter_for(checkpoint, device=device, batch_size=batch_size)


load_segmenter.cache_clear = _cached_segmenter.cache_clear  # type: ignore[attr-defined]


def _modified_time(checkpoint: str | None) -> float | None:
    """The checkpoint's weights file time (a changed file is loaded again); None when it cannot be found
    (the Segmenter then reports it with the fix)."""
    if checkpoint is None:
        return None
    path = Path(checkpoint)
    if path.suffix == ".ckpt" and path.is_file():  # the released BiomedParse v2 weights
        return path.stat().st_mtime
    try:
        return checkpoint_paths(checkpoint)[1].stat().st_mtime
    except (CheckpointError, OSError):
        return None
