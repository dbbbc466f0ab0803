"""A small 3D refinement network over the stacked 2D outputs: image + probability -> 3D foreground.

The 2D network sees one slice (and its FVE context) at a time; `Refiner3D` sees a block of slices of the
image and of the network's gated probability together and corrects the foreground in 3D (noise that
fires in one slice only, caps of a nucleus, dim blobs with no support in their neighbours). It predicts a
correction of the probability's logit, initialised to zero, so an untrained refiner returns the
network's own probability.

Layers: two 3x3x3 convolutions per level, three levels joined by in-plane pooling only (1 x 2 x 2: stacks
are often only a few slices deep and coarse in z), upsampling with skip connections; 89 k parameters at
width 8, 354 k at width 16. Saved as safetensors + JSON (`save_refiner`, `load_refiner`), like the 2D
checkpoints.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from fveseg.errors import CheckpointError, OutputExistsError

__all__ = ["ARCHITECTURE", "Refiner3D", "save_refiner", "load_refiner", "EPSILON"]

#: The ``architecture`` name in a refiner's JSON.
ARCHITECTURE = "refiner3d"
#: Probabilities are clipped to [EPSILON, 1 - EPSILON] before their logit is taken.
EPSILON = 1e-3


def _block(channels_in: int, channels_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(channels_in, channels_out, 3, padding=1),
        nn.GroupNorm(min(4, channels_out), channels_out),
        nn.SiLU(),
        nn.Conv3d(channels_out, channels_out, 3, padding=1),
        nn.GroupNorm(min(4, channels_out), channels_out),
        nn.SiLU(),
    )


class Refiner3D(nn.Module):
    """3D U-Net on (image, probability) blocks; returns the refined foreground logit.

    Parameters
    ----------
    width : int
        Channels of the first level (doubled at each of the two lower levels).
    with_image : bool
        Inputs (image, probability); False: the probability alone.

    Forward: ``(B, C, D, H, W)`` float32 (image scaled to about [0, 1], then the probability in [0, 1]; the
    probability last); H and W multiples of 4 -> ``(B, 1, D, H, W)`` logits.
    """

    architecture = ARCHITECTURE

    def __init__(self, width: int = 16, with_image: bool = True):
        super().__init__()
        self.width, self.with_image = width, with_image
        self.down1 = _block(1 + with_image, width)
        self.down2 = _block(width, 2 * width)
        self.bottom = _block(2 * width, 4 * width)
        self.up2 = _block(4 * width + 2 * width, 2 * width)
        self.up1 = _block(2 * width + width, width)
        self.head = nn.Conv3d(width, 1, 1)
        nn.init.zeros_(self.head.weight)  # start as the identity: the network's own probability
        nn.init.zeros_(self.head.bias)
        self.metadata: dict = {}

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        pool = (1, 2, 2)
        first = self.down1(inputs)
        second = self.down2(F.max_pool3d(first, pool))
        bottom = self.bottom(F.max_pool3d(second, pool))
        up = F.interpolate(bottom, size=second.shape[2:], mode="nearest")
        up = self.up2(torch.cat([up, second], 1))
        up = F.interpolate(up, size=first.shape[2:], mode="nearest")
        up = self.up1(torch.cat([up, first], 1))
        probability = inputs[:, -1:].clamp(EPSILON, 1 - EPSILON)
        return torch.logit(probability) + self.head(up)


def save_refiner(
    model: Refiner3D, path: str | Path, metadata: dict | None = None, overwrite: bool = False
) -> Path:
    """Write ``<path>.safetensors`` and ``<path>.json`` (never over existing files unless ``overwrite``)."""
    from safetensors.torch import save_file

    base = Path(path).with_suffix("")
    weights, description = base.with_suffix(".safetensors"), base.with_suffix(".json")
    for target in (weights, description):
        if target.exists() and not overwrite:
            raise OutputExistsError(f"{target} already exists (fix: choose another path or pass overwrite)")
    base.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    meta = {"format": "fveseg-refiner", "architecture": ARCHITECTURE, "width": model.width,
            "with_image": model.with_image}  # fmt: skip
    meta.update(metadata or model.metadata)
    description.write_text(json.dumps(meta, indent=1))
    return description


def load_refiner(path: str | Path, map_location: str = "cpu") -> Refiner3D:
    """Read a refiner written by `save_refiner` (eval mode, ``metadata`` set)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    base = Path(path).with_suffix("")
    weights, description = base.with_suffix(".safetensors"), base.with_suffix(".json")
    try:
        meta = json.loads(description.read_text())
        state = load_file(str(weights), device=map_location)
    except (OSError, ValueError, SafetensorError) as error:
        raise CheckpointError(
            f"cannot read the refiner {base} ({error}); re-save or re-install it"
        ) from error
    if meta.get("architecture") != ARCHITECTURE:
        raise CheckpointError(f"{description} describes {meta.get('architecture')!r}, not a {ARCHITECTURE}")
    model = Refiner3D(int(meta.get("width", 16)), bool(meta.get("with_image", True)))
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise CheckpointError(f"the weights in {weights} do not match the refiner ({error})") from error
    model.metadata = meta
    return model.eval()
