"""Vision backbone: a FocalNet (`fveseg.model.focalnet`, timm's layout) returning four feature maps at strides
4, 8, 16, 32."""

from __future__ import annotations

import torch
from torch import nn

from fveseg.model.focalnet import FocalNet, LayerNorm2d

__all__ = ["FocalNetBackbone"]


class FocalNetBackbone(nn.Module):
    """FocalNet feature extractor.

    Parameters
    ----------
    embed_dim : int
        Channels of the first stage; stage i has ``embed_dim * 2**i``.
    depths, focal_levels, focal_windows : tuple of 4 ints
        Blocks, focal levels and focal window per stage.
    use_conv_embed : bool
        Overlapping convolutional patch embedding (FocalNet's ``use_overlap_down``).
    use_post_norm, use_layerscale : bool
        FocalNet-L style post-normalisation and layer scale (1e-4).
    out_norm : bool
        A LayerNorm on each stage output (as the detectron2-style reference backbone does).
    drop_path_rate : float
        Stochastic depth, used in training only.

    Shapes
    ------
    ``forward(images (B, 3, H, W))`` -> list of 4 tensors (B, C_i, H / s_i, W / s_i), s = 4, 8, 16, 32.
    H and W must be multiples of 32.
    """

    strides = (4, 8, 16, 32)

    def __init__(
        self,
        embed_dim: int = 96,
        depths: tuple[int, ...] = (2, 2, 6, 2),
        focal_levels: tuple[int, ...] = (2, 2, 2, 2),
        focal_windows: tuple[int, ...] = (3, 3, 3, 3),
        use_conv_embed: bool = False,
        use_post_norm: bool = False,
        use_layerscale: bool = False,
        out_norm: bool = True,
        drop_path_rate: float = 0.1,
    ):
        super().__init__()
        self.body = FocalNet(
            embed_dim=embed_dim,
            depths=tuple(depths),
            focal_levels=tuple(focal_levels),
            focal_windows=tuple(focal_windows),
            use_overlap_down=use_conv_embed,
            use_post_norm=use_post_norm,
            layerscale_value=1e-4 if use_layerscale else None,
            drop_path_rate=drop_path_rate,
        )
        self.channels = tuple(embed_dim * 2**i for i in range(len(depths)))
        self.out_norms = nn.ModuleList([LayerNorm2d(c) if out_norm else nn.Identity() for c in self.channels])

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        return [norm(x) for x, norm in zip(self.body(images), self.out_norms)]
