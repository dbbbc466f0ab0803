"""The reference v2 pixel decoder: an FPN with a 6-layer transformer encoder on the stride-32 map.

Module names follow the official ``TransformerEncoderPixelDecoder`` (``adapter_1..3``, ``layer_1..4``,
``mask_features``, ``input_proj``, ``transformer.encoder.layers.*``) so the weights map one to one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["ConvNorm", "sine_position_embedding", "ReferencePixelDecoder", "ReferencePixelFeatures"]


class ConvNorm(nn.Conv2d):
    """Conv2d followed by an optional norm and activation (detectron2's ``Conv2d``), same state-dict names."""

    def __init__(self, *args, norm: nn.Module | None = None, relu: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.norm = norm
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = super().forward(x)
        if self.norm is not None:
            x = self.norm(x)
        return F.relu(x) if self.relu else x


def sine_position_embedding(x: torch.Tensor, num_feats: int, temperature: float = 10000.0) -> torch.Tensor:
    """DETR's normalised sine embedding (scale 2π) for a (B, C, H, W) map -> (B, 2 * num_feats, H, W)."""
    b, _, h, w = x.shape
    ones = torch.ones((b, h, w), device=x.device, dtype=torch.float32)
    y_embed = ones.cumsum(1, dtype=torch.float32)
    x_embed = ones.cumsum(2, dtype=torch.float32)
    eps, scale = 1e-6, 2 * math.pi
    y_embed = y_embed / (y_embed[:, -1:, :] + eps) * scale
    x_embed = x_embed / (x_embed[:, :, -1:] + eps) * scale
    dim_t = torch.arange(num_feats, dtype=torch.float32, device=x.device)
    dim_t = temperature ** (2 * (dim_t // 2) / num_feats)
    pos_x = x_embed[:, :, :, None] / dim_t
    pos_y = y_embed[:, :, :, None] / dim_t
    pos_x = torch.stack((pos_x[:, :, :, 0::2].sin(), pos_x[:, :, :, 1::2].cos()), dim=4).flatten(3)
    pos_y = torch.stack((pos_y[:, :, :, 0::2].sin(), pos_y[:, :, :, 1::2].cos()), dim=4).flatten(3)
    return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2).to(x.dtype)


class _EncoderLayer(nn.Module):
    """Post-norm DETR encoder layer (self-attention with positions added to queries and keys, ReLU FFN)."""

    def __init__(self, d_model: int, nhead: int, ffn_dim: int):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead)
        self.linear1 = nn.Linear(d_model, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(self, src: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        q = k = src + pos
        src = self.norm1(src + self.self_attn(q, k, value=src, need_weights=False)[0])
        return self.norm2(src + self.linear2(F.relu(self.linear1(src))))


class _Encoder(nn.Module):
    def __init__(self, layers: int, d_model: int, nhead: int, ffn_dim: int):
        super().__init__()
        self.layers = nn.ModuleList([_EncoderLayer(d_model, nhead, ffn_dim) for _ in range(layers)])


class _TransformerEncoderOnly(nn.Module):
    def __init__(self, layers: int, d_model: int, nhead: int, ffn_dim: int):
        super().__init__()
        self.encoder = _Encoder(layers, d_model, nhead, ffn_dim)

    def forward(self, src: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        b, c, h, w = src.shape
        x = src.flatten(2).permute(2, 0, 1)
        pos = pos.flatten(2).permute(2, 0, 1)
        for layer in self.encoder.layers:
            x = layer(x, pos)
        return x.permute(1, 2, 0).reshape(b, c, h, w)


@dataclass
class ReferencePixelFeatures:
    """Pixel-decoder outputs for B images.

    Attributes
    ----------
    mask_features : torch.Tensor
        (B, mask_dim, H/4, W/4).
    transformer_encoder_features : torch.Tensor
        (B, conv_dim, H/32, W/32), the encoder output before ``layer_4``.
    multi_scale_features : list of torch.Tensor
        [(B, conv_dim, H/32, W/32), (…, H/16, W/16), (…, H/8, W/8)], the order the decoder uses.
    """

    mask_features: torch.Tensor
    transformer_encoder_features: torch.Tensor
    multi_scale_features: list[torch.Tensor]

    @property
    def batch_size(self) -> int:
        return self.mask_features.shape[0]


class ReferencePixelDecoder(nn.Module):
    """FPN + transformer encoder pixel decoder (conv/mask dim 512, GroupNorm(32), 6 encoder layers).

    ``forward({"res2": …, "res5": …})`` -> `ReferencePixelFeatures`.
    """

    def __init__(
        self,
        in_channels: tuple[int, ...] = (192, 384, 768, 1536),
        conv_dim: int = 512,
        mask_dim: int = 512,
        encoder_layers: int = 6,
        nheads: int = 8,
        ffn_dim: int = 2048,
    ):
        super().__init__()
        for idx, ch in enumerate(in_channels[:-1]):
            self.add_module(
                f"adapter_{idx + 1}", ConvNorm(ch, conv_dim, 1, bias=False, norm=nn.GroupNorm(32, conv_dim))
            )
            self.add_module(
                f"layer_{idx + 1}",
                ConvNorm(
                    conv_dim, conv_dim, 3, padding=1, bias=False, norm=nn.GroupNorm(32, conv_dim), relu=True
                ),
            )
        self.mask_features = nn.Conv2d(conv_dim, mask_dim, 3, padding=1)
        self.input_proj = nn.Conv2d(in_channels[-1], conv_dim, 1)
        self.transformer = _TransformerEncoderOnly(encoder_layers, conv_dim, nheads, ffn_dim)
        top = len(in_channels)
        self.add_module(
            f"layer_{top}",
            ConvNorm(
                conv_dim, conv_dim, 3, padding=1, bias=False, norm=nn.GroupNorm(32, conv_dim), relu=True
            ),
        )
        self.num_levels = top
        self.conv_dim = conv_dim

    def forward(self, features: dict[str, torch.Tensor]) -> ReferencePixelFeatures:
        top = self.num_levels
        x = features[f"res{top + 1}"]
        encoded = self.transformer(self.input_proj(x), sine_position_embedding(x, self.conv_dim // 2))
        y = getattr(self, f"layer_{top}")(encoded)
        multi_scale = [y]
        for idx in range(top - 1, 0, -1):  # res4 -> res2, coarse to fine
            lateral = getattr(self, f"adapter_{idx}")(features[f"res{idx + 1}"])
            y = getattr(self, f"layer_{idx}")(
                lateral + F.interpolate(y, size=lateral.shape[-2:], mode="nearest")
            )
            if len(multi_scale) < 3:
                multi_scale.append(y)
        return ReferencePixelFeatures(self.mask_features(y), encoded, multi_scale)
