"""What the Segmenter decides once per volume, before any slice is segmented for good: `SegmentPlan`.

`fveseg.inference.Segmenter.plan` computes it (view axis, FVE order, intensity range, in-plane scale, z
resampling, and for `fveseg.inference.AutoSegmenter` the network chosen by the volume's noise);
`Segmenter.run` answers any number of prompts with it. A plan is small and pickles to a few hundred
bytes, so the dask path computes it once and ships it to every block.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

__all__ = ["SegmentPlan"]


@dataclass(frozen=True)
class SegmentPlan:
    """The per-volume decisions of `fveseg.inference.Segmenter.plan`.

    Attributes
    ----------
    shape : (D, H, W)
        The volume the plan was made for; `Segmenter.run` refuses any other.
    axis : int
        Slicing (view) axis of the volume the network sees.
    order : int
        FVE order.
    intensity_range : (lo, hi)
        Intensities mapped to 0 and 255, from the whole volume.
    scale : float
        In-plane rescaling before the network (the automatic scale resolved).
    z_factor : float or None
        z resampled by this factor to the pixel size before the network (``isotropic``), else None.
    model, noise : str or None, float or None
        The network `fveseg.inference.AutoSegmenter` chose and the noise that chose it.
    """

    shape: tuple[int, int, int]
    axis: int
    order: int
    intensity_range: tuple[float, float]
    scale: float = 1.0
    z_factor: float | None = None
    model: str | None = None
    noise: float | None = None
    # Work the planning did that a run may reuse in this process: the probe's window results by scale and
    # prompts, and the z-resampled volume. Large, so never pickled and never compared.
    reuse: dict = field(default_factory=dict, repr=False, compare=False)

    def __getstate__(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "reuse"}

    def __setstate__(self, state: dict) -> None:
        for name, value in {**state, "reuse": {}}.items():
            object.__setattr__(self, name, value)
