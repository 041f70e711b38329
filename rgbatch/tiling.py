"""Cutting images into tiles the network can code, and putting reconstructions back.

An image of any size is covered by a grid of tiles of `tile_size` pixels (a multiple of 32);
the last row and column of tiles take what remains. Each tile is padded by edge replication
up to a multiple of 32, coded on its own, and cropped back after decoding. `tile_size=0`
means one tile for the whole image. The layout depends only on (height, width, tile_size),
so a decoder rebuilds it from the bitstream header.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .model import ALIGN, BLOCK

DEFAULT_TILE_SIZE = 512  # see docs/TILING.md for the measurement behind it


def align(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


@dataclass(frozen=True)
class Tile:
    y: int  # top-left corner in the image
    x: int
    height: int  # pixels of the image inside the tile
    width: int

    @property
    def padded_shape(self) -> tuple[int, int]:
        return align(self.height), align(self.width)

    @property
    def code_shape(self) -> tuple[int, int]:
        """Code positions (rows, columns) of this tile per bit plane."""
        h, w = self.padded_shape
        return h // BLOCK, w // BLOCK


def check_tile_size(tile_size: int):
    if tile_size < 0 or tile_size % ALIGN:
        raise ValueError(f"tile size must be 0 (whole image) or a positive multiple of {ALIGN}, not {tile_size}")


def tile_grid(height: int, width: int, tile_size: int) -> list[Tile]:
    """The tiles of an image, row by row."""
    check_tile_size(tile_size)
    if height < 1 or width < 1:
        raise ValueError(f"image of {width}x{height} pixels has nothing to code")
    th = tile_size or height
    tw = tile_size or width
    return [Tile(y, x, min(th, height - y), min(tw, width - x))
            for y in range(0, height, th) for x in range(0, width, tw)]


def cut(image: np.ndarray, tiles: list[Tile]) -> list[torch.Tensor]:
    """HxWx3 uint8 -> one (3, h32, w32) float tensor in [-0.5, 0.5] per tile, edge-padded."""
    full = torch.from_numpy(np.require(image, requirements=["C", "W"])).permute(2, 0, 1).float() / 255 - 0.5
    out = []
    for t in tiles:
        crop = full[:, t.y:t.y + t.height, t.x:t.x + t.width]
        ph, pw = t.padded_shape
        pad = (0, pw - t.width, 0, ph - t.height)
        # replicate padding needs a batch dim; a 1-px side can only repeat itself, which is right
        out.append(F.pad(crop[None], pad, mode="replicate")[0] if any(pad) else crop)
    return out


def merge(parts: list[torch.Tensor], tiles: list[Tile], height: int, width: int) -> torch.Tensor:
    """Per-tile reconstructions (3, h32, w32) -> (3, H, W), cropping the padding away."""
    out = torch.empty(3, height, width, dtype=parts[0].dtype)
    for part, t in zip(parts, tiles):
        out[:, t.y:t.y + t.height, t.x:t.x + t.width] = part[:, :t.height, :t.width]
    return out
