"""FocalNet (Focal Modulation Networks, Yang et al. 2022), channels-first, in timm's layout.

The same modules, parameter names and arithmetic as ``timm.models.focalnet.FocalNet`` (timm 1.0), so the
checkpoints trained with timm's class load unchanged and give the same outputs (a test compares the two
on random weights). Written out here because importing timm costs half of the CLI's start-up: timm
imports torchvision's detection ops, and with them ``torch._dynamo``, for features fveseg never uses
(1.6 of the 3.3 s that ``import fveseg.pipeline`` took, ``python -X importtime``; docs/benchmarks.md).
Only what fveseg's two backbones use is here: the features of the four stages, no classifier head.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["FocalNet", "LayerNorm2d"]


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of a (B, C, H, W) tensor (timm's ``LayerNorm2d``, eps 1e-6 by default)."""

    def __init__(self, num_channels: int, eps: float = 1e-6):
        super().__init__(num_channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class LayerScale2d(nn.Module):
    """Per-channel scale ``gamma`` of a (B, C, H, W) tensor."""

    def __init__(self, dim: int, init_values: float):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_values)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma.view(1, -1, 1, 1)


class DropPath(nn.Module):
    """Stochastic depth: in training, zero whole samples of a residual branch with probability ``p``."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask.div_(keep)


def _trunc_normal(weight: torch.Tensor, std: float = 0.02) -> None:
    """timm's truncated normal in [-2, 2] (inverse CDF of a uniform draw; torch's own differs in its draws),
    so a model built from a seed starts from the weights timm's class gave it."""
    low, high = ((1.0 + math.erf(bound / std / math.sqrt(2.0))) / 2.0 for bound in (-2.0, 2.0))
    with torch.no_grad():
        weight.uniform_(2 * low - 1, 2 * high - 1).erfinv_().mul_(std * math.sqrt(2.0)).clamp_(-2.0, 2.0)


def _norm(dim: int) -> LayerNorm2d:
    return LayerNorm2d(dim, eps=1e-5)  # FocalNet's own norms; the output norms are the caller's


class FocalModulation(nn.Module):
    """Query times a gated sum of depth-wise convolved contexts at ``focal_level`` widths and a global one."""

    def __init__(self, dim: int, focal_window: int, focal_level: int, normalize_modulator: bool = False):
        super().__init__()
        self.focal_level = focal_level
        self.normalize_modulator = normalize_modulator
        self.input_split = [dim, dim, focal_level + 1]
        self.f = nn.Conv2d(dim, 2 * dim + focal_level + 1, kernel_size=1)
        self.h = nn.Conv2d(dim, dim, kernel_size=1)
        self.act = nn.GELU()
        self.proj = nn.Conv2d(dim, dim, kernel_size=1)
        self.focal_layers = nn.ModuleList()
        for level in range(focal_level):
            size = 2 * level + focal_window
            conv = nn.Conv2d(dim, dim, kernel_size=size, groups=dim, padding=size // 2, bias=False)
            self.focal_layers.append(nn.Sequential(conv, nn.GELU()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, ctx, gates = torch.split(self.f(x), self.input_split, 1)
        ctx_all = 0
        for level, focal_layer in enumerate(self.focal_layers):
            ctx = focal_layer(ctx)
            ctx_all = ctx_all + ctx * gates[:, level : level + 1]
        ctx_global = self.act(ctx.mean((2, 3), keepdim=True))
        ctx_all = ctx_all + ctx_global * gates[:, self.focal_level :]
        if self.normalize_modulator:
            ctx_all = ctx_all / (self.focal_level + 1)
        return self.proj(q * self.h(ctx_all))


class Mlp(nn.Module):
    """1×1 convolution, GELU, 1×1 convolution."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, kernel_size=1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, dim, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class FocalNetBlock(nn.Module):
    """Focal modulation and an MLP, each a residual branch (pre-norm, or post-norm with ``use_post_norm``)."""

    def __init__(
        self,
        dim: int,
        focal_level: int,
        focal_window: int,
        use_post_norm: bool,
        normalize_modulator: bool,
        layerscale_value: float | None,
        drop_path: float,
        mlp_ratio: float = 4.0,
    ):
        super().__init__()
        self.norm1 = nn.Identity() if use_post_norm else _norm(dim)
        self.modulation = FocalModulation(dim, focal_window, focal_level, normalize_modulator)
        self.norm1_post = _norm(dim) if use_post_norm else nn.Identity()
        self.ls1 = nn.Identity() if layerscale_value is None else LayerScale2d(dim, layerscale_value)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.Identity() if use_post_norm else _norm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.norm2_post = _norm(dim) if use_post_norm else nn.Identity()
        self.ls2 = nn.Identity() if layerscale_value is None else LayerScale2d(dim, layerscale_value)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path1(self.ls1(self.norm1_post(self.modulation(self.norm1(x)))))
        return x + self.drop_path2(self.ls2(self.norm2_post(self.mlp(self.norm2(x)))))


class Downsample(nn.Module):
    """Strided convolution (overlapping with ``overlap``: 7×7 for stride 4, 3×3 for 2) and a norm."""

    def __init__(self, in_chs: int, out_chs: int, stride: int, overlap: bool):
        super().__init__()
        kernel, padding = ({4: 7, 2: 3}[stride], {4: 2, 2: 1}[stride]) if overlap else (stride, 0)
        self.proj = nn.Conv2d(in_chs, out_chs, kernel_size=kernel, stride=stride, padding=padding)
        self.norm = _norm(out_chs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x))


class FocalNetStage(nn.Module):
    """Downsampling by 2 (except the first stage) and ``depth`` blocks."""

    def __init__(self, dim: int, out_dim: int, downsample: bool, overlap: bool, drop_paths: list, **block):
        super().__init__()
        self.downsample = Downsample(dim, out_dim, 2, overlap) if downsample else nn.Identity()
        self.blocks = nn.ModuleList([FocalNetBlock(out_dim, drop_path=rate, **block) for rate in drop_paths])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        for block in self.blocks:
            x = block(x)
        return x


class FocalNet(nn.Module):
    """The stem (stride 4) and four stages of a FocalNet; ``forward`` returns the four stage outputs.

    Parameters
    ----------
    embed_dim : int
        Channels of the first stage; stage i has ``embed_dim * 2**i``.
    depths, focal_levels, focal_windows : tuple of ints, one per stage
    use_overlap_down, use_post_norm, normalize_modulator : bool
        Overlapping downsampling convolutions, post-norm blocks and a modulator divided by the number of
        levels (FocalNet-L as released uses all three).
    layerscale_value : float or None
        Initial layer scale (None: none).
    drop_path_rate : float
        Stochastic depth of the last block, rising linearly from 0 (training only).
    in_chans : int

    Shapes
    ------
    ``forward(x (B, in_chans, H, W))`` -> list of (B, embed_dim * 2**i, H / 2**(i + 2), W / 2**(i + 2)).
    """

    def __init__(
        self,
        embed_dim: int = 96,
        depths: tuple[int, ...] = (2, 2, 6, 2),
        focal_levels: tuple[int, ...] = (2, 2, 2, 2),
        focal_windows: tuple[int, ...] = (3, 3, 3, 3),
        use_overlap_down: bool = False,
        use_post_norm: bool = False,
        normalize_modulator: bool = False,
        layerscale_value: float | None = None,
        drop_path_rate: float = 0.1,
        in_chans: int = 3,
    ):
        super().__init__()
        dims = [embed_dim * 2**i for i in range(len(depths))]
        self.stem = Downsample(in_chans, dims[0], 4, use_overlap_down)
        # on the CPU even while a model is built on the meta device (checkpoint conversion)
        rates = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        stages, start = [], 0
        for i, depth in enumerate(depths):
            stages.append(
                FocalNetStage(
                    dims[max(i - 1, 0)],
                    dims[i],
                    downsample=i > 0,
                    overlap=use_overlap_down,
                    drop_paths=rates[start : start + depth],
                    focal_level=focal_levels[i],
                    focal_window=focal_windows[i],
                    use_post_norm=use_post_norm,
                    normalize_modulator=normalize_modulator,
                    layerscale_value=layerscale_value,
                )
            )
            start += depth
        self.layers = nn.Sequential(*stages)
        for module in self.modules():  # timm's initialisation: truncated normal, zero bias
            if isinstance(module, nn.Conv2d):
                _trunc_normal(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        outputs = []
        for stage in self.layers:
            x = stage(x)
            outputs.append(x)
        return outputs
