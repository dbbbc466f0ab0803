"""FocalNet-L backbone of the reference v2 model, built on `fveseg.model.focalnet` (timm's FocalNet layout).

timm's FocalNet layout carries the official D2FocalNet weights through a name mapping (`names.py`): the
official ``scaling_modulator`` is timm's ``normalize_modulator``, ``use_postln`` is ``use_post_norm``,
``use_conv_embed`` is ``use_overlap_down``, layer scale is ``layerscale_value``; timm runs channels-first
with 1x1 convolutions where the official code has ``nn.Linear`` (same weights, reshaped), and moves each
stage's downsampling to the start of the next stage. The official per-output ``norm0..3`` LayerNorms
(eps 1e-5) become ``out_norms``.
"""

from __future__ import annotations

import torch
from torch import nn

from fveseg.model.focalnet import FocalNet, LayerNorm2d

__all__ = ["ReferenceFocalNet"]


class ReferenceFocalNet(nn.Module):
    """FocalNet returning res2..res5 (strides 4, 8, 16, 32), each after its output LayerNorm.

    Parameters
    ----------
    embed_dim : int
        Channels of stage 1 (192 for FocalNet-L); stage i has ``embed_dim * 2**i``.
    depths, focal_levels, focal_windows : tuple of 4 ints
        Reference: (2, 2, 18, 2), (4, 4, 4, 4), (3, 3, 3, 3).

    Shapes
    ------
    ``forward(x (B, 3, H, W) float32)`` -> dict ``res2`` (B, 192, H/4, W/4) … ``res5`` (B, 1536, H/32, W/32).
    """

    def __init__(
        self,
        embed_dim: int = 192,
        depths: tuple[int, ...] = (2, 2, 18, 2),
        focal_levels: tuple[int, ...] = (4, 4, 4, 4),
        focal_windows: tuple[int, ...] = (3, 3, 3, 3),
    ):
        super().__init__()
        self.body = FocalNet(
            embed_dim=embed_dim,
            depths=tuple(depths),
            focal_levels=tuple(focal_levels),
            focal_windows=tuple(focal_windows),
            use_overlap_down=True,
            use_post_norm=True,
            normalize_modulator=True,
            layerscale_value=1e-4,
            drop_path_rate=0.0,
        )
        self.channels = tuple(embed_dim * 2**i for i in range(len(depths)))
        self.out_norms = nn.ModuleList([LayerNorm2d(c, eps=1e-5) for c in self.channels])

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {f"res{i + 2}": norm(y) for i, (y, norm) in enumerate(zip(self.body(x), self.out_norms))}
