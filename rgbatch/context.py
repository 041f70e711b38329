"""The context model of the entropy coder: features, tables, and the one context index.

    model = ContextModel.from_tensors(extra)   # from a weight file's extra tensors (checked)
    model.coder()                              # the exact integer coder (rgbatch.entropy.ContextCoder)
    model.rate()                               # its code length in torch, for training (rgbatch.rate)
    model = ContextModel.fit(tile_codes)       # fitted on codes (rgbatch.entropy_fit)
    extra = model.tensors()                    # what a weight file stores

P(bit = 1 | iteration t, checkerboard colour s, channel c, context) = table[t, s, c, context]
/ 2**15, where the context is the bits K features (dt, channel, dy, dx) point at, read as a
binary number (`context_index`). docs/ENTROPY.md describes the model and the canvas.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # imported where tensors are made: a coder's name needs none (`report` loaded torch so)
    import torch

CONTEXT_FEATURES = "entropy.context.features"  # int16 (iterations, 2, bits, K, 4): dt, channel, dy, dx
CONTEXT_PROBABILITIES = "entropy.context.probabilities"  # int16 (iterations, 2, bits, 2**K)
PROBABILITY_BITS = 15  # P(bit = 1) = q / 2**15 with q in 1 .. 2**15 - 1
MAX_LOOKBACK = 2  # features may read iterations t-1 and t-2
GUTTER = 1  # zero positions around every tile, so that neighbours at offsets -1..1 read 0


class ContextModelError(ValueError):
    """Weights whose context model is missing or malformed, with the reason."""


@dataclass(frozen=True)
class Canvas:
    """All tiles of an image side by side in one zero-padded array, so that every coding step
    works on every tile at once. Tile i sits at rows GUTTER.., columns `left[i]`..; gutters
    and the space under short tiles stay 0, which is what neighbours outside a tile read.

    The array is (MAX_LOOKBACK + iterations, bits, height * width): the first MAX_LOOKBACK
    slabs are zero iterations, read by features that look back before iteration 1.
    """

    shapes: tuple[tuple[int, int, int], ...]  # (bits, rows, cols) per tile

    @property
    def height(self) -> int:
        return max(r for _, r, _ in self.shapes) + 2 * GUTTER

    @cached_property
    def left(self) -> list[int]:
        starts, x = [], GUTTER
        for _, _, cols in self.shapes:
            starts.append(x)
            x += cols + GUTTER
        return starts

    @property
    def width(self) -> int:
        return self.left[-1] + self.shapes[-1][2] + GUTTER

    @cached_property
    def _grid(self) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
        flats, tiles = [[], []], [[], []]
        for i, ((_, rows, cols), x0) in enumerate(zip(self.shapes, self.left)):
            y, x = np.mgrid[GUTTER:GUTTER + rows, x0:x0 + cols]
            flat = (y * self.width + x).ravel()
            parity = ((y + x) % 2).ravel()
            for s in (0, 1):
                flats[s].append(flat[parity == s])
                tiles[s].append(np.full(flats[s][-1].size, i))
        return tuple(np.concatenate(f) for f in flats), tuple(np.concatenate(t) for t in tiles)

    @property
    def positions(self) -> tuple[np.ndarray, ...]:
        """Flat indices of the code positions of each checkerboard colour, tile by tile."""
        return self._grid[0]

    @property
    def position_tiles(self) -> tuple[np.ndarray, ...]:
        """The tile of each of those positions."""
        return self._grid[1]

    def rows(self, s: int) -> list[slice]:
        """The positions of colour s as runs of one row of one tile each, in coding order."""
        flat = self.positions[s]
        key = self.position_tiles[s] * self.height + flat // self.width
        starts = np.flatnonzero(np.diff(key, prepend=-1))
        return [slice(a, b) for a, b in zip(starts.tolist(), [*starts[1:].tolist(), len(flat)])]

    def empty(self, iterations: int, bits: int) -> np.ndarray:
        return np.zeros((MAX_LOOKBACK + iterations, bits, self.height * self.width), bool)

    def paint(self, codes: list[np.ndarray]) -> np.ndarray:
        canvas = self.empty(codes[0].shape[0], self.shapes[0][0])
        view = canvas.reshape(*canvas.shape[:2], self.height, self.width)
        for c, x0 in zip(codes, self.left):
            view[MAX_LOOKBACK:, :, GUTTER:GUTTER + c.shape[2], x0:x0 + c.shape[3]] = c
        return canvas

    def coded(self, steps: int) -> np.ndarray:
        """A canvas of one iteration, True where its first `steps` coding steps code a bit (step
        s x bits + c: channel c at the positions of colour s; docs/ENTROPY.md, "Coding order"):
        what a partial last chunk holds (`cut` gives it per tile)."""
        bits = self.shapes[0][0]
        canvas = self.empty(1, bits)
        for s, positions in enumerate(self.positions):
            canvas[MAX_LOOKBACK, :min(max(steps - s * bits, 0), bits)][:, positions] = True
        return canvas

    def cut(self, canvas: np.ndarray) -> list[np.ndarray]:
        view = canvas.reshape(*canvas.shape[:2], self.height, self.width)[MAX_LOOKBACK:]
        return [view[:, :, GUTTER:GUTTER + r, x0:x0 + c].copy() for (_, r, c), x0 in zip(self.shapes, self.left)]


def is_causal(feature, s: int, c: int):
    """Whether the decoder knows feature (dt, channel, dy, dx) when it codes channel c of
    colour s in the current iteration. Order: iteration, colour 0 then 1, channel 0..bits-1,
    and within a step the positions tile by tile, row by row. Works on one feature or on an
    array of them (..., 4)."""
    dt, ch, dy, dx = np.moveaxis(np.asarray(feature), -1, 0)
    in_reach = (0 <= dt) & (dt <= MAX_LOOKBACK) & (abs(dy) <= GUTTER) & (abs(dx) <= GUTTER)
    neighbour = s ^ ((dy + dx) & 1)
    # earlier iterations are complete; in this one, the first colour before the second, the
    # lower channels before the higher, and in this step the rows above (`reads_step`)
    known = (dt > 0) | (neighbour < s) | ((neighbour == s) & ((ch < c) | ((ch == c) & (dy < 0))))
    return in_reach & known


def reads_step(feature, c: int):
    """Whether feature (dt, channel, dy, dx) of channel c reads a bit of its own coding step (the
    same channel in the row above, at the same colour: coded before the position, so a decoder
    must decode the step row by row). Works on one feature or on an array of them (..., 4)."""
    dt, ch, dy, _ = np.moveaxis(np.asarray(feature), -1, 0)
    return (dt == 0) & (ch == c) & (dy < 0)


def read_feature(canvas: np.ndarray, width: int, t, feature, positions: np.ndarray) -> np.ndarray:
    """The bit `feature` = (dt, channel, dy, dx) points at, seen from each position of
    iteration t (an int, or an array of shape (n, 1) to read many iterations at once). The
    four are ints, or int64 arrays of shape (m, 1) to read m features at once, one row each."""
    # one flat index instead of three index arrays: numpy's multi-array fancy indexing was 12x
    # slower than a gather from the flat canvas, and this gather is most of the coder's time
    _, bits, plane = canvas.shape
    return canvas.reshape(-1)[feature_offset(feature, t, bits, plane, width) + positions]


def feature_offset(feature, t, bits: int, plane: int, width: int):
    """Where feature (dt, channel, dy, dx) reads, seen from iteration t: its offset from a
    position's flat index in the flat canvas (MAX_LOOKBACK + iterations, bits, plane) of rows
    `width` wide. The four and t are ints or arrays that broadcast (numpy or torch). The one
    definition of where a feature reads: `read_feature` and the compiled coder's kernels
    (`fastcoder.step_offsets`) use it; the bit itself is feature (0, channel, 0, 0)."""
    dt, ch, dy, dx = feature
    return ((t + MAX_LOOKBACK - dt) * bits + ch) * plane + dy * width + dx


def context_index(canvas: np.ndarray, width: int, t, features: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Context of each position: the features' bits as a binary number, first feature highest.
    `features` (K, 4); or (m, K, 4), m feature sets at once: contexts (m, positions).

    The one definition of the context index: the coder and the fitting call it on numpy
    canvases (`Canvas`), the training code length (`rgbatch.rate`) on a torch canvas of
    patches, one tile each. Both kinds of arrays index alike."""
    if not _is_tensor(features):
        features = np.asarray(features, np.int64)
    if features.ndim == 2:  # plain ints: the decoder calls this 64 times an iteration on small steps
        columns = features.tolist()
    else:  # each field of feature k as a column (m, 1), against the positions
        columns = [tuple(features[:, k, i, None] for i in range(4)) for k in range(features.shape[1])]
    ctx = 0  # an int64 array from the first feature on (K >= 1)
    for feature in columns:
        ctx = 2 * ctx + read_feature(canvas, width, t, feature, positions)
    return ctx


class ContextModel:
    """Features (T, 2, bits, K, 4) and integer probability tables (T, 2, bits, 2**K) of the
    context coder, checked: every feature causal, every probability in 1 .. 2**15 - 1."""

    def __init__(self, features, table):
        features = _as_numpy(features).astype(np.int64)
        table = _as_numpy(table).astype(np.int64)
        if features.ndim == 4:  # the first fits shared one set of features by all iterations
            features = np.broadcast_to(features, (table.shape[0], *features.shape))
        iterations, passes, bits, k, _ = features.shape
        if features.shape[4] != 4 or passes != 2 or table.shape != (iterations, 2, bits, 2 ** k):
            raise ContextModelError(f"malformed context model: features {features.shape}, table {table.shape}")
        if table.min() < 1 or table.max() >= 2 ** PROBABILITY_BITS:
            raise ContextModelError("malformed context model: probabilities outside 1 .. 2**15-1")
        channels = features[..., 1]
        if channels.min() < 0 or channels.max() >= bits:  # the compiled coder reads the canvas unchecked
            raise ContextModelError("malformed context model: a feature reads a channel that does not exist")
        for s in range(2):
            for c in range(bits):
                if not is_causal(features[:, s, c], s, c).all():
                    raise ContextModelError(f"malformed context model: a feature of channel {c} reads the future")
        self.features, self.table = features, table

    @classmethod
    def from_tensors(cls, extra: dict | None) -> "ContextModel":
        """The context model among a weight file's extra tensors."""
        extra = extra or {}
        if CONTEXT_FEATURES not in extra or CONTEXT_PROBABILITIES not in extra:
            raise ContextModelError("these weights carry no context model for the entropy coder; "
                                    "add one with `rgbatch fit-entropy`, or use the raw coder")
        return cls(extra[CONTEXT_FEATURES], extra[CONTEXT_PROBABILITIES])

    @classmethod
    def fit(cls, tiles: list[np.ndarray], **options) -> "ContextModel":
        """Fitted on per-tile bool codes (T, bits, rows, cols) (`entropy_fit.fit_context_model`)."""
        from .entropy_fit import fit_context_model

        return cls.from_tensors(fit_context_model(tiles, **options))

    def tensors(self) -> dict[str, torch.Tensor]:
        """The tensors a weight file stores (int16)."""
        import torch

        return {CONTEXT_FEATURES: torch.from_numpy(np.ascontiguousarray(self.features, np.int16)),
                CONTEXT_PROBABILITIES: torch.from_numpy(self.table.astype(np.int16))}

    @property
    def iterations(self) -> int:
        return self.table.shape[0]

    @property
    def bits(self) -> int:
        return self.table.shape[2]

    def coder(self):
        """The exact integer coder of this model."""
        from .entropy import ContextCoder

        return ContextCoder(model=self)

    def rate(self, **options):
        """This model's code length in torch, the training term (`rgbatch.rate.ContextRate`)."""
        import torch

        from .rate import ContextRate

        return ContextRate(torch.from_numpy(np.ascontiguousarray(self.features)), torch.from_numpy(self.table), **options)


def _is_tensor(x) -> bool:
    torch = sys.modules.get("torch")  # not imported: no tensor exists
    return torch is not None and isinstance(x, torch.Tensor)


def _as_numpy(x) -> np.ndarray:
    return x.numpy() if _is_tensor(x) else np.asarray(x)
