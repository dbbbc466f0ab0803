"""Pixel decoder: FPN over the backbone stages, optionally a transformer encoder on stride 32.

Output (`PixelFeatures`): one map per stride 32, 16, 8, 4 (``conv_dim`` channels) for the decoder's
cross-attention, and the stride-4 ``mask`` feature (``mask_dim`` channels) that query embeddings are
dotted with.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["PixelDecoder", "PixelFeatures", "sine_position_encoding"]


@dataclass
class PixelFeatures:
    """Image features shared by every prompt.

    Attributes
    ----------
    maps : dict[int, Tensor]
        stride -> (B, conv_dim, H / stride, W / stride), strides 32, 16, 8, 4.
    mask : Tensor
        (B, mask_dim, H / 4, W / 4) mask feature.
    image_size : tuple[int, int]
        (H, W) of the network input.
    """

    maps: dict[int, torch.Tensor]
    mask: torch.Tensor
    image_size: tuple[int, int]

    @property
    def batch_size(self) -> int:
        return self.mask.shape[0]

    def index_select(self, index: torch.Tensor) -> PixelFeatures:
        """Features of images ``index`` (e.g. ``repeat_interleave`` to pair images with prompts)."""
        return PixelFeatures({s: m[index] for s, m in self.maps.items()}, self.mask[index], self.image_size)


def sine_position_encoding(channels: int, height: int, width: int, device=None, dtype=None) -> torch.Tensor:
    """DETR-style 2D sine position encoding, (channels, height, width); half the channels each for y, x."""
    half = channels // 2
    scale = 2 * math.pi
    y = (torch.arange(height, device=device, dtype=torch.float32) + 1) / (height + 1e-6) * scale
    x = (torch.arange(width, device=device, dtype=torch.float32) + 1) / (width + 1e-6) * scale
    dim_t = torch.arange(half, device=device, dtype=torch.float32)
    dim_t = 10000 ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / half)
    pos_y = y[:, None] / dim_t  # (H, half)
    pos_x = x[:, None] / dim_t  # (W, half)
    pos_y = torch.stack((pos_y[:, 0::2].sin(), pos_y[:, 1::2].cos()), dim=2).flatten(1)
    pos_x = torch.stack((pos_x[:, 0::2].sin(), pos_x[:, 1::2].cos()), dim=2).flatten(1)
    pos = torch.cat(
        (pos_y[:, None, :].expand(height, width, half), pos_x[None, :, :].expand(height, width, half)), dim=2
    )
    if pos.shape[2] < channels:  # odd channel count
        pos = nn.functional.pad(pos, (0, channels - pos.shape[2]))
    return pos.permute(2, 0, 1).to(dtype=dtype)


def _conv_norm(cin: int, cout: int, kernel: int, groups: int, act: bool) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False), nn.GroupNorm(groups, cout)]
    if act:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class PixelDecoder(nn.Module):
    """FPN with an optional transformer encoder on the coarsest map.

    Parameters
    ----------
    in_channels : tuple of 4 ints
        Backbone channels at strides 4, 8, 16, 32.
    conv_dim, mask_dim : int
        FPN width and mask-feature width.
    encoder_layers : int
        Post-norm transformer encoder layers over the stride-32 tokens (0: none).
    nheads, ffn_dim : int
        Encoder heads and feed-forward width.
    groups : int
        GroupNorm groups (``conv_dim`` must be divisible by it).
    """

    strides = (4, 8, 16, 32)

    def __init__(
        self,
        in_channels: tuple[int, ...],
        conv_dim: int = 256,
        mask_dim: int = 256,
        encoder_layers: int = 0,
        nheads: int = 8,
        ffn_dim: int = 1024,
        groups: int = 32,
    ):
        super().__init__()
        groups = math.gcd(groups, conv_dim)
        self.conv_dim = conv_dim
        self.input_proj = nn.Sequential(
            nn.Conv2d(in_channels[-1], conv_dim, 1), nn.GroupNorm(groups, conv_dim)
        )
        self.encoder = None
        if encoder_layers > 0:
            layer = nn.TransformerEncoderLayer(conv_dim, nheads, ffn_dim, dropout=0.0, batch_first=True)
            self.encoder = nn.TransformerEncoder(layer, encoder_layers, enable_nested_tensor=False)
        self.top_conv = _conv_norm(conv_dim, conv_dim, 3, groups, act=True)
        # lateral (1x1) and output (3x3) convs for strides 16, 8, 4
        self.laterals = nn.ModuleList(
            [_conv_norm(c, conv_dim, 1, groups, act=False) for c in in_channels[:-1]]
        )
        self.outputs = nn.ModuleList(
            [_conv_norm(conv_dim, conv_dim, 3, groups, act=True) for _ in in_channels[:-1]]
        )
        self.mask_proj = nn.Conv2d(conv_dim, mask_dim, 3, padding=1)

    def forward(self, stages: list[torch.Tensor]) -> PixelFeatures:
        top = self.input_proj(stages[-1])
        if self.encoder is not None:
            b, c, h, w = top.shape
            pos = sine_position_encoding(c, h, w, top.device, top.dtype).flatten(1).T
            tokens = top.flatten(2).transpose(1, 2)
            for layer in self.encoder.layers:
                tokens = _encoder_layer_with_pos(layer, tokens, pos)
            top = tokens.transpose(1, 2).reshape(b, c, h, w)
        y = self.top_conv(top)
        maps = {32: y}
        for i in range(len(stages) - 2, -1, -1):
            lateral = self.laterals[i](stages[i])
            y = lateral + nn.functional.interpolate(y, size=lateral.shape[-2:], mode="nearest")
            y = self.outputs[i](y)
            maps[self.strides[i]] = y
        mask = self.mask_proj(maps[4])
        image_size = (stages[0].shape[-2] * 4, stages[0].shape[-1] * 4)
        return PixelFeatures(maps, mask, image_size)


def _encoder_layer_with_pos(
    layer: nn.TransformerEncoderLayer, x: torch.Tensor, pos: torch.Tensor
) -> torch.Tensor:
    """DETR encoder layer: position added to queries and keys only, post-norm."""
    qk = x + pos
    attn = layer.self_attn(qk, qk, x, need_weights=False)[0]
    x = layer.norm1(x + layer.dropout1(attn))
    return layer.norm2(x + layer._ff_block(x))
