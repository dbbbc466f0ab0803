"""Tiling of slices larger than the model input, with overlap and smooth blending.

A slice (h, w) is centre-padded to at least (tile, tile), cut into tiles of ``tile`` pixels whose starts
step by ``tile - overlap`` (the last tile is flush with the far edge), and the per-tile outputs are blended
with weights that ramp linearly from ~0 to 1 over ``overlap`` pixels, so seams vanish. Slices smaller
than a tile are padded, never squashed: objects keep their pixel size.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

__all__ = ["tile_starts", "ramp_weights", "SliceTiler"]


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets covering ``length`` with tiles of ``tile``, at most ``tile - overlap`` apart."""
    if length <= tile:
        return [0]
    step = max(1, tile - overlap)
    starts = list(range(0, length - tile, step))
    return starts + [length - tile]


def ramp_weights(tile: int, overlap: int, device=None) -> torch.Tensor:
    """(tile, tile) float32 blending weights: min of the 1D ramps along y and x, floor 1e-3."""
    ramp = torch.ones(tile, device=device)
    if overlap > 0:
        edge = (torch.arange(overlap, device=device, dtype=torch.float32) + 1) / (overlap + 1)
        ramp[:overlap] = edge
        ramp[tile - overlap :] = torch.minimum(ramp[tile - overlap :], edge.flip(0))
    ramp = ramp.clamp_min(1e-3)
    return torch.minimum(ramp[:, None], ramp[None, :])


class SliceTiler:
    """Cut (B, C, h, w) images into model tiles and blend per-tile outputs back.

    Parameters
    ----------
    height, width : int
        Slice size (after any rescaling).
    tile : int
        Model input side (a multiple of 32).
    overlap : int
        Overlap between neighbouring tiles, pixels.
    """

    def __init__(self, height: int, width: int, tile: int, overlap: int):
        self.height, self.width, self.tile = height, width, tile
        self.padded = (max(height, tile), max(width, tile))
        self.offset = ((self.padded[0] - height) // 2, (self.padded[1] - width) // 2)
        self.starts = [
            (y, x)
            for y in tile_starts(self.padded[0], tile, overlap)
            for x in tile_starts(self.padded[1], tile, overlap)
        ]
        self.overlap = overlap if len(self.starts) > 1 else 0

    @property
    def tiles_per_slice(self) -> int:
        return len(self.starts)

    def split(self, images: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
        """(B, C, h, w) -> (B * T, C, tile, tile), tiles of slice b at rows b*T .. b*T + T-1."""
        oy, ox = self.offset
        pad_y, pad_x = self.padded[0] - self.height - oy, self.padded[1] - self.width - ox
        if oy or ox or pad_y or pad_x:
            images = F.pad(images, (ox, pad_x, oy, pad_y), value=fill)
        t = self.tile
        tiles = [images[:, :, y : y + t, x : x + t] for y, x in self.starts]
        return torch.stack(tiles, dim=1).flatten(0, 1)

    def merge(self, tiles: torch.Tensor) -> torch.Tensor:
        """(B * T, P, tile, tile) -> (B, P, h, w) blended."""
        t = self.tile
        count = self.tiles_per_slice
        tiles = tiles.unflatten(0, (-1, count))
        if count == 1:
            merged = tiles[:, 0]
        else:
            weight = ramp_weights(t, self.overlap, tiles.device).to(tiles.dtype)
            merged = tiles.new_zeros(tiles.shape[0], tiles.shape[2], *self.padded)
            total = tiles.new_zeros(self.padded)
            for i, (y, x) in enumerate(self.starts):
                merged[:, :, y : y + t, x : x + t] += tiles[:, i] * weight
                total[y : y + t, x : x + t] += weight
            merged = merged / total
        oy, ox = self.offset
        return merged[:, :, oy : oy + self.height, ox : ox + self.width]
