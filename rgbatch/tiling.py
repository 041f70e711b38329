"""Cutting images into tiles the network can code, and putting reconstructions back.

An image of any size is covered by a grid of tiles of `tile_size` pixels (a multiple of the
model's alignment, 32 for the Residual-GRU); the last row and column of tiles take what
remains. Each tile is padded by edge replication up to a multiple of the alignment, coded on
its own, and cropped back after decoding. `tile_size=0` means one tile for the whole image.
The layout depends only on (height, width, tile_size), so a decoder rebuilds it from the
bitstream header. Alignment and block size come from the model's config (`cfg.align`,
`cfg.block`): tiling knows no architecture.

This module also owns the one conversion between stored pixels and network inputs:
uint8 [0, 255] <-> float [-0.5, 0.5] (`to_float`, `to_uint8`), and network pixels as the
[0, 1] that MS-SSIM reads (`to_unit`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .options import OptionError, check_count, check_range

if TYPE_CHECKING:  # torch is imported where tensors are made: the layout alone needs none (`report`
    import torch  # loaded it through limits and bitstream: 2 s and 190 MB, until session 63)

# Tile sizes by default (tile_size None), per image (docs/TILING.md has the measurements: seams
# cost rate and quality, big tiles memory and speed): an image of at most WHOLE_IMAGE_PIXELS
# pixels (a network batch's worth) is coded whole; a bigger one in tiles of DEFAULT_TILE_SIZE.
# Until session 10 every image was cut into tiles of 512.
WHOLE_IMAGE_PIXELS = 2**21
WHOLE_IMAGE_ALIGN = 32  # counted padded to the Residual-GRU's alignment (the rule is the encoder's, not the format's)
DEFAULT_TILE_SIZE = 1024


def align(n: int, multiple: int) -> int:
    """n rounded up to a multiple of `multiple`."""
    return -(-n // multiple) * multiple


@dataclass(frozen=True)
class Tile:
    y: int  # top-left corner in the image
    x: int
    height: int  # pixels of the image inside the tile
    width: int

    def padded_shape(self, multiple: int) -> tuple[int, int]:
        """(rows, columns) of the tile padded to the model's alignment."""
        return align(self.height, multiple), align(self.width, multiple)

    def code_shape(self, cfg) -> tuple[int, int]:
        """Code positions (rows, columns) of this tile per bit plane, for a model config with
        `align` and `block` (pixels per code position along a side)."""
        h, w = self.padded_shape(cfg.align)
        return h // cfg.block, w // cfg.block


MAX_TILE_SIZE = 65504  # the largest multiple of 32 the stream header's u16 tile-size field holds


def check_tile_size(tile_size: int | None, multiple: int | None = None):
    """None (chosen per image: `tile_size_for`), 0 (whole images) or a positive multiple (of the
    model's alignment, where given) up to MAX_TILE_SIZE (a `Codec` took more, and failed packing
    its first stream, until session 62)."""
    if tile_size is None:
        return
    check_count("tile_size", tile_size, 0, MAX_TILE_SIZE, " (0: the whole image; the stream header's 16-bit field, "
                                                          "docs/FORMAT.md)")
    if multiple and tile_size % multiple:
        raise OptionError("tile_size", f"must be 0 (whole image) or a positive multiple of {multiple}, not {tile_size}")


def tile_size_for(tile_size: int | None, height: int, width: int) -> int:
    """The tile size an image is coded with: `tile_size`, or by default (None) 0, the whole
    image, up to WHOLE_IMAGE_PIXELS pixels and at most 9/8 of that padded to WHOLE_IMAGE_ALIGN,
    and DEFAULT_TILE_SIZE beyond. Padded too: a strip 1 pixel high codes 32 rows, so that one of
    0.5 MP coded whole took 16.7 MP of the network's work at once (4.4 GB to encode, 8.2 GB to
    decode) and one of 1 MP was over a tile's limit, until session 59; the 9/8 keeps every image
    of ordinary shape under 2 MP whole, as before (1448 x 1448 pads to 1.03 times its pixels)."""
    if tile_size is not None:
        return tile_size
    padded = align(height, WHOLE_IMAGE_ALIGN) * align(width, WHOLE_IMAGE_ALIGN)
    whole = height * width <= WHOLE_IMAGE_PIXELS and padded <= WHOLE_IMAGE_PIXELS * 9 // 8
    return 0 if whole else DEFAULT_TILE_SIZE


def tile_grid(height: int, width: int, tile_size: int) -> list[Tile]:
    """The tiles of an image, row by row."""
    check_range("tile_size", tile_size, 0, what=" (0: the whole image)")
    if height < 1 or width < 1:
        raise ValueError(f"image of {width}x{height} pixels has nothing to code")
    th = tile_size or height
    tw = tile_size or width
    return [Tile(y, x, min(th, height - y), min(tw, width - x))
            for y in range(0, height, th) for x in range(0, width, tw)]


def to_float(pixels: np.ndarray) -> torch.Tensor:
    """(..., H, W, 3) uint8 -> (..., 3, H, W) float32 in [-0.5, 0.5] (a view's strides kept)."""
    import torch

    return torch.from_numpy(pixels).movedim(-1, -3).float() / 255 - 0.5


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """Float pixels in [-0.5, 0.5] (a reconstruction may stray out) -> [0, 1], same dtype."""
    return (x + 0.5).clamp(0, 1)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(..., 3, H, W) float in [-0.5, 0.5] -> (..., H, W, 3) uint8, rounded as a stored image is
    (float64 stays float64: an exact decoder's multiples of 2**-24 round exactly, rgbatch.exact)."""
    import torch

    x = x if x.dtype == torch.float64 else x.float()
    return (to_unit(x) * 255).round().to(torch.uint8).movedim(-3, -1).cpu().numpy()


def cut(image: np.ndarray, tiles: list[Tile], multiple: int) -> list[torch.Tensor]:
    """HxWx3 uint8 -> one (3, h, w) float tensor in [-0.5, 0.5] per tile (`cut_tile`)."""
    return [cut_tile(image, t, multiple) for t in tiles]


def cut_tile(image: np.ndarray, tile: Tile, multiple: int) -> torch.Tensor:
    """One tile of an HxWx3 uint8 image as a (3, h, w) float tensor in [-0.5, 0.5], edge-padded
    to a multiple of `multiple` (the model's alignment). Only the tile's pixels are copied (the
    image may be read-only, as Ray's shared-memory arrays are)."""
    import torch.nn.functional as F

    crop = to_float(np.array(image[tile.y:tile.y + tile.height, tile.x:tile.x + tile.width]))
    ph, pw = tile.padded_shape(multiple)
    pad = (0, pw - tile.width, 0, ph - tile.height)
    # replicate padding needs a batch dim; a 1-px side can only repeat itself, which is right
    return F.pad(crop[None], pad, mode="replicate")[0] if any(pad) else crop


def paste(image: np.ndarray, part: np.ndarray, tile: Tile):
    """Write a tile's reconstruction (..., h, w, 3), padding included, into `image`
    (..., H, W, 3) at the tile's place, cropping the padding away."""
    image[..., tile.y:tile.y + tile.height, tile.x:tile.x + tile.width, :] = part[..., :tile.height, :tile.width, :]


class RowBands:
    """An image's reconstruction pasted tile by tile into full-width uint8 bands, one per row of
    its tile grid, each band handed on (top to bottom) once all its tiles are in: what a
    measure of the whole image needs, without ever holding the whole image."""

    def __init__(self, grid: list[Tile], width: int):
        self.width = width
        self.rows = sorted({(t.y, t.height) for t in grid})
        self.missing = {y: 0 for y, _ in self.rows}  # tiles not yet pasted, per band
        for t in grid:
            self.missing[t.y] += 1
        self.bands = {}
        self.next = 0  # index in self.rows of the next band to hand on

    def paste(self, part: np.ndarray, tile: Tile) -> list[tuple[int, np.ndarray]]:
        """Paste one tile; returns the (first row, band) of every band now complete, in order."""
        if tile.y not in self.bands:
            self.bands[tile.y] = np.empty((tile.height, self.width, 3), np.uint8)
        paste(self.bands[tile.y], part, Tile(0, tile.x, tile.height, tile.width))
        self.missing[tile.y] -= 1
        done = []
        while self.next < len(self.rows) and not self.missing[self.rows[self.next][0]]:
            y = self.rows[self.next][0]
            done.append((y, self.bands.pop(y)))
            self.next += 1
        return done
