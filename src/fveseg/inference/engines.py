"""Engines: how one architecture turns a batch of slices into outputs, and the registry that picks one.

`fveseg.inference.Segmenter` owns the one batch loop (slice ranges on the volume's batch grid, seeds,
cancel, progress, outputs, the existence hysteresis); an engine supplies what differs between
architectures:

* ``axis(shape, spacing)``, ``order(order)``, ``value_range(volume)``: the plan's defaults;
* ``check(shape, axis, order, scale)``: refuse what the architecture cannot run;
* ``encode_text(prompts)``: the prompts' embeddings, once per run;
* ``batches(volume, plan, first, stop)``: the network inputs of slices ``first:stop`` in batches on the
  grid, as ``(first, inputs)``;
* ``predict(inputs, text, plan, generator, mask_threshold, exist_threshold)``: probabilities and edges
  (P, B, ...) float16, labels (B, ...) and existence (P, B) float32;
* ``rescales`` (automatic scale and z resampling apply) and ``regates`` (the existence hysteresis applies).

`ENGINES` maps a model's ``architecture`` attribute to its engine: `NetworkEngine` for the BiomedParse-V
checkpoints this project trains, `fveseg.inference.reference_engine.ReferenceEngine` for the released
BiomedParse v2 weights.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from fveseg import fve
from fveseg.errors import InputError
from fveseg.inference.device import autocast
from fveseg.inference.gate import semantic_labels
from fveseg.inference.reference_engine import ReferenceEngine
from fveseg.inference.tiling import SliceTiler
from fveseg.model.biomedparse import ARCHITECTURE
from fveseg.model.checkpoint import DEFAULT_METADATA
from fveseg.normalize.intensity import apply_range
from fveseg.normalize.intensity import intensity_range as volume_intensity_range

__all__ = ["ENGINES", "NetworkEngine", "engine_for"]


class NetworkEngine:
    """BiomedParse-V checkpoints: FVE of any order (`fveseg.fve.encoding.encode_volume`), the
    checkpoint's intensity mapping (`fveseg.normalize.intensity`), in-plane rescaling, tiling of slices
    larger than the input (`fveseg.inference.tiling`), per-slice existence gate and argmax
    (`fveseg.inference.gate.semantic_labels`) and, after all slices, the gate's hysteresis.

    Parameters
    ----------
    model : torch.nn.Module
        A `fveseg.model.BiomedParseV` (or a module with its ``encode_image``/``decode``), on ``device``.
    metadata : dict
        The checkpoint's metadata (`fveseg.model.checkpoint.full_metadata`).
    device : torch.device
    batch_size : int
        Slices (or tiles) per network call.
    overlap : int
        Tile overlap in pixels.
    """

    architecture = ARCHITECTURE
    rescales = True
    regates = True

    def __init__(self, model, metadata: dict, device: torch.device, batch_size: int, overlap: int):
        self.model, self.metadata, self.device = model, metadata, device
        self.batch_size, self.overlap = batch_size, overlap
        self.input_size = int(metadata["input_size"])
        norm = metadata.get("normalization", DEFAULT_METADATA["normalization"])
        self._mean = torch.tensor(norm["mean"], dtype=torch.float32, device=device).view(1, 3, 1, 1)
        self._std = torch.tensor(norm["std"], dtype=torch.float32, device=device).view(1, 3, 1, 1)

    def axis(self, shape: tuple[int, int, int], spacing) -> int:
        """The paper's view rule (`fveseg.fve.select_view`)."""
        return fve.select_view(shape, spacing)

    def order(self, order: int | None) -> int:
        """The given FVE order, else the checkpoint's."""
        return int(self._fve.get("order", 1) if order is None else order)

    def value_range(self, volume) -> tuple[float, float]:
        """The volume's intensity range with the checkpoint's modality rules."""
        intensity = self.metadata.get("intensity") or {}
        return volume_intensity_range(volume, intensity.get("modality") or "auto", intensity.get("window"))

    def check(self, shape: tuple[int, int, int], axis: int, order: int, scale: float) -> None:
        side = min(s for i, s in enumerate(shape) if i != axis)
        if order > 1 and 2 ** (order - 1) > side:
            raise InputError(
                f"FVE order {order} halves each slice {order - 1} times, more than its {side} pixels allow "
                "(fix: --order 1, the order the bundled models were trained with)"
            )

    @property
    def _fve(self) -> dict:
        return self.metadata.get("fve", DEFAULT_METADATA["fve"])

    def encode_text(self, prompts: list[str]):
        """The prompts' embeddings, computed once per run and shared by every batch."""
        return self.model.encode_text(prompts).to(self.device)

    def batches(self, volume, plan, first: int, stop: int):
        """``(first, images)``: FVE images (B, 3, h, w) of slices ``first:stop``, ``batch_size`` at a time."""
        return fve.encode_volume(
            volume,
            order=plan.order,
            axis=plan.axis,
            pad=self._fve.get("pad", "edge"),
            downsample=self._fve.get("downsample", "mean"),
            start=first,
            stop=stop,
            batch_size=self.batch_size,
            channels_first=True,  # the network's layout: no interleaving, no permute
            use_compiled=False,  # numba's load time (0.5-0.9 s a process) exceeds what it saves here
        )

    def predict(
        self, images: np.ndarray, text, plan, generator, mask_threshold: float, exist_threshold: float
    ):
        """FVE images (B, 3, h, w) -> probabilities, edges (P, B, h, w) float16, labels (B, h, w) and
        existence (P, B) float32."""
        lo, hi = plan.intensity_range
        scale = float(plan.scale)
        batch = torch.from_numpy(apply_range(images, lo, hi)).to(self.device).float()
        h, w = batch.shape[-2:]
        if scale != 1.0:
            size = (max(1, round(h * scale)), max(1, round(w * scale)))
            batch = F.interpolate(batch, size=size, mode="bilinear", align_corners=False, antialias=scale < 1)
        tiler = SliceTiler(batch.shape[-2], batch.shape[-1], self.input_size, self.overlap)
        tiles = (tiler.split(batch, fill=0.0) - self._mean) / self._std
        masks, edges, exist = [], [], []
        with autocast(self.device):
            for start in range(0, tiles.shape[0], self.batch_size):
                features = self.model.encode_image(tiles[start : start + self.batch_size])
                out = self.model.decode(features, text, generator=generator, return_aux=False)
                masks.append(out["mask_logits"].float().sigmoid())
                edges.append(out["edge_logits"].float().sigmoid())
                exist.append(out["exist_logits"].float().sigmoid())
        masks, edges = tiler.merge(torch.cat(masks)), tiler.merge(torch.cat(edges))
        exist = torch.cat(exist).unflatten(0, (-1, tiler.tiles_per_slice)).amax(1)  # any tile -> present
        if scale != 1.0:
            masks = F.interpolate(masks, size=(h, w), mode="bilinear", align_corners=False)
            edges = F.interpolate(edges, size=(h, w), mode="bilinear", align_corners=False)
        # (B, P, ..) -> (P, B, ..) float16, converted by torch (4x faster than numpy, same values)
        to_np = lambda t: t.transpose(0, 1).half().cpu().numpy()  # noqa: E731
        probs = to_np(masks)  # labels from the stored values: rethreshold agrees
        exist = exist.T.cpu().numpy()
        labels = semantic_labels(probs, exist, mask_threshold, exist_threshold)
        return probs, to_np(edges), labels, exist


#: A model's ``architecture`` attribute -> the engine that runs it.
ENGINES: dict[str, type] = {
    NetworkEngine.architecture: NetworkEngine,
    ReferenceEngine.architecture: ReferenceEngine,
}


def engine_for(model, metadata: dict, device: torch.device, batch_size: int, overlap: int):
    """The registered engine of ``model.architecture`` (BiomedParse-V when the attribute is absent)."""
    architecture = getattr(model, "architecture", ARCHITECTURE)
    if architecture not in ENGINES:
        raise InputError(f"no engine runs architecture {architecture!r}; known: {sorted(ENGINES)}")
    return ENGINES[architecture](model, metadata, device, batch_size, overlap)
