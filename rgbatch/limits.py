"""Bounds on what a stream may declare, checked from its header before the decoder does any
work (docs/FORMAT.md, "Limits"), so that decoding time and memory follow the declared size.

    tiles = layout(width, height, tile_size, max_pixels)   # or ValueError with the reason

- `max_pixels`: the image, width x height (the size decoding returns, also when the stream was
  coded smaller: rgbatch.resample), at most this (default `imageio.MAX_PIXELS`, the
  same limit that reading source images has); the caller may raise or lower it.
- The tiles (of the coded size, `resample.coded_size`), padded to multiples of the model's alignment (32 pixels for the Residual-GRU),
  code at most `PADDING_ALLOWANCE` times that: an image 1 pixel wide codes 32 columns, and
  would otherwise cost 32 times its size.
- One tile, which the network runs through whole, at most `MAX_TILE_PIXELS` (padded); the
  encoder refuses bigger tiles too, so every stream it writes passes.
"""

from __future__ import annotations

from .bitstream import TILE_MULTIPLE
from .imageio import MAX_PIXELS
from .options import check_count
from .resample import coded_size
from .tiling import Tile, align, check_tile_size, tile_grid

ALIGN = TILE_MULTIPLE  # the padding these bounds are stated for (the Residual-GRU's); a codec passes its model's
MAX_TILE_PIXELS = 4096 * 4096  # the network peaks at about 330 B a pixel of a tile in bf16, 530 B in fp32, 0.85 KB exact (docs/FORMAT.md)
PADDING_ALLOWANCE = 2


def check_max_pixels(max_pixels: int):
    check_count("max_pixels", max_pixels, 1)


def layout(width: int, height: int, tile_size: int, max_pixels: float = MAX_PIXELS,
           multiple: int = ALIGN, scale: int = 0) -> list[Tile]:
    """The tiles of a width x height image coded at scale `scale` (resample.coded_size), if it is
    within the bounds; ValueError otherwise. The bounds are checked in constant time, before the
    tile list (at most max_pixels / 1024 tiles) is made. `multiple`: the model's alignment
    (`cfg.align`), which tiles are padded to."""
    if width * height > max_pixels:
        raise ValueError(f"an image of {width}x{height} pixels is over the limit of {max_pixels} pixels "
                         f"(max_pixels)")
    width, height = coded_size(width, height, scale)
    check_tile_size(tile_size, multiple)
    rows, cols = (align(min(tile_size or side, side), multiple) for side in (height, width))  # the first tile
    if rows * cols > MAX_TILE_PIXELS:
        raise ValueError(f"one tile of {cols}x{rows} pixels is over the limit of {MAX_TILE_PIXELS} pixels a tile "
                         f"(the network codes a tile whole); use a smaller tile size")
    coded = padded_extent(height, tile_size, multiple) * padded_extent(width, tile_size, multiple)
    if coded > PADDING_ALLOWANCE * max_pixels:
        raise ValueError(f"the tiles of a {width}x{height} image, padded to multiples of {multiple} pixels, code {coded} "
                         f"pixels, over {PADDING_ALLOWANCE} x the limit of {max_pixels} pixels (max_pixels)")
    return tile_grid(height, width, tile_size)


def padded_extent(length: int, tile_size: int, multiple: int = ALIGN) -> int:
    """Pixels the tiles along one side code, each padded to a multiple of `multiple`: the whole
    tiles as they are, the last one aligned (tiling.tile_grid's rule)."""
    if not tile_size:
        return align(length, multiple)
    return length // tile_size * tile_size + align(length % tile_size, multiple)
