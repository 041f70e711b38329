"""The values that flow between the codec's stages.

    image --network+tiling--> Codes --coder--> chunks --bitstream.pack--> blob (EncodedImage)

`Codes` are the bits of one image, per tile and per iteration, before any entropy coding:
what the network produced, what a coder turns into chunks and back, what entropy fitting
and benchmarks read. `EncodedImage` is a packed stream with its sizes (and, when measured,
its quality) at every depth; a progressive stream cut to depth k is a valid stream of k
iterations, so `cut` and `at_target` choose what to keep without running the network again.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from . import bitstream
from .context import Canvas
from .options import OptionError, check_count
from .ratecontrol import Target, choose_depth, judged
from .resample import coded_size
from .tiling import Tile, tile_grid


@dataclass
class Codes:
    """The bits of one image: per tile (row by row), bool (iterations, bits, rows, cols).
    width x height is the image's size; the network coded it at `coded_size` (scale code
    `scale`, rgbatch.resample), which the tile grid follows. `steps`: the last iteration holds
    only its first `steps` coding steps (a partial last chunk, docs/FORMAT.md; 0: all), its other
    bits unknown (False here; the decoder reads them as 0, neither +1 nor -1). `filters`: per tile,
    the colour post-filter of each iteration, int32 (iterations, 3, 4), zeros where none is sent
    (rgbatch.postfilter); None: none at all (a format v1 stream)."""

    width: int
    height: int
    tile_size: int
    tiles: list[np.ndarray]
    scale: int = 0
    steps: int = 0
    filters: list[np.ndarray] | None = None

    @property
    def coded_size(self) -> tuple[int, int]:
        """(width, height) of the image the network coded."""
        return coded_size(self.width, self.height, self.scale)

    @property
    def iterations(self) -> int:
        return self.tiles[0].shape[0]

    @property
    def grid(self) -> list[Tile]:
        width, height = self.coded_size
        return tile_grid(height, width, self.tile_size)

    def cut(self, depth: int) -> "Codes":
        """The codes of the first `depth` iterations (whole ones, below the last)."""
        return replace(self, tiles=[t[:depth] for t in self.tiles], steps=self.steps if depth == self.iterations else 0,
                       filters=None if self.filters is None else [f[:depth] for f in self.filters])

    def partial(self, depth: int, steps: int) -> "Codes":
        """The codes of the first `depth` iterations, the last one of its first `steps` coding steps
        (its other bits False, as decoding gives them), without a post-filter at that depth (one was
        fitted to the whole iteration)."""
        kept = replace(self.cut(depth), steps=steps)
        kept.tiles = [t.copy() for t in kept.tiles]
        if kept.filters is not None:
            kept.filters = [f.copy() for f in kept.filters]
            for f in kept.filters:
                f[-1] = 0
        for tile, coded in zip(kept.tiles, kept.coded()):
            if coded is not None:
                tile[-1] &= coded
        return kept

    def filter_at(self, j: int) -> np.ndarray | None:
        """Tile j's post-filter at the last iteration (None or zeros: none)."""
        return None if self.filters is None else self.filters[j][-1]

    def coded(self) -> list[np.ndarray | None]:
        """Per tile, which bits of the last iteration the codes hold: bool (bits, rows, cols), the
        first `steps` coding steps' (docs/ENTROPY.md, "Coding order"); None where it is whole."""
        if not self.steps:
            return [None] * len(self.tiles)
        layout = Canvas(tuple(t.shape[1:] for t in self.tiles))
        return [c[0] for c in layout.cut(layout.coded(self.steps))]


def signs(tile: np.ndarray, coded: np.ndarray | None = None) -> np.ndarray:
    """What the decoder reads of a tile's bits (`Codes.tiles`): float32 +1 / -1, and 0 for the bits
    of its last iteration outside `coded` (`Codes.coded`: those a partial last chunk does not hold)."""
    out = tile.astype(np.float32) * 2 - 1
    if coded is not None:
        out[-1] *= coded
    return out


def stream_sizes(chunks) -> list[int]:
    """Bytes of the stream of these chunks cut to depth 1, 2, ..., k (header included)."""
    return bitstream.cumulative_bytes(map(len, chunks))


@dataclass
class EncodedImage:
    blob: bytes
    width: int
    height: int
    iterations: int
    bytes: list[int] = field(default_factory=list)  # stream size cut to depth 1..k
    msssim: list[float] = field(default_factory=list)  # empty unless measured
    psnr: list[float] = field(default_factory=list)
    reconstructions: np.ndarray | None = None  # (k, H, W, 3) uint8, when asked for
    codes: Codes | None = None  # the codes of the k iterations, when asked for
    tile_size: int = 0  # the tile size the stream was coded with (its header's)
    scale: int = 0  # its header's scale code (rgbatch.resample): 0, coded at width x height
    steps: int = 0  # coding steps its last chunk holds (0: all; a partial last chunk, docs/FORMAT.md)

    @property
    def bpp(self) -> list[float]:
        return [8 * n / (self.width * self.height) for n in self.bytes]

    def choose_depth(self, target: Target) -> int:
        """The depth `target` keeps (ratecontrol.choose_depth), from this image's stats."""
        return choose_depth(judged(target, self.height, self.width), self.bytes, self.msssim, self.width * self.height)

    def cut(self, depth: int) -> "EncodedImage":
        """The same image stored to `depth` iterations (1..its own): blob truncated, stats of the
        kept depths."""
        if depth is None:  # kept as the image's depth until session 58
            raise OptionError("depth", "must be a number, not None")
        check_count("depth", depth, 1, self.iterations, " for this image")
        if depth == self.iterations:
            return self
        return replace(self, blob=bitstream.truncate(self.blob, depth), iterations=depth, steps=0,
                       bytes=self.bytes[:depth], msssim=self.msssim[:depth], psnr=self.psnr[:depth],
                       reconstructions=None if self.reconstructions is None else self.reconstructions[:depth],
                       codes=None if self.codes is None else self.codes.cut(depth))

    def at_target(self, target: Target) -> "EncodedImage":
        """Cut to the depth `target` asks for (unchanged without a target)."""
        if not (target is None or isinstance(target, Target)):  # a bare 0.9 failed as an AttributeError until session 61
            raise OptionError("target", f"is a {type(target).__name__}: give a Target (Target(msssim=0.9))")
        return self.cut(self.choose_depth(target)) if target else self
