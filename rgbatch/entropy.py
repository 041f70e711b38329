"""Entropy coders: turn the bits of each iteration into one chunk of bytes, and back.

A coder sees the codes of a whole image as one bool array per tile, shaped
(iterations, bits, rows, cols), and returns one chunk per iteration. Chunk t may depend on
iterations < t (the decoder has them), never on later ones, so that a stream cut to depth
k decodes. The coder id is stored in every bitstream header.

| id | coder   | notes |
|----|---------|-------|
| 0  | raw     | plain bit packing, as the paper's released encoder |
| 1  | context | range coding with probabilities from counted contexts (docs/ENTROPY.md) |

The context coder's parameters ship inside the weight file (`rgbatch fit-entropy`), so
they are part of the model id: a stream decodes only with the tables that coded it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

# constriction's Bernoulli model warns unless `perfect` is given; False is its recommended mode
import constriction

CONTEXT_FEATURES = "entropy.context.features"  # int16 (iterations, 2, bits, K, 4): dt, channel, dy, dx
CONTEXT_PROBABILITIES = "entropy.context.probabilities"  # int16 (iterations, 2, bits, 2**K)
PROBABILITY_BITS = 15  # P(bit = 1) = q / 2**15 with q in 1 .. 2**15 - 1
MAX_LOOKBACK = 2  # features may read iterations t-1 and t-2
GUTTER = 1  # zero positions around every tile, so that neighbours at offsets -1..1 read 0


class EntropyError(ValueError):
    """A chunk that does not decode to the size the header promises."""


class RawCoder:
    """Every bit stored as is, tile after tile, in (bits, rows, cols) order per iteration."""

    coder_id = 0
    name = "raw"

    def __init__(self, extra=None):
        pass

    def encode(self, codes: list[np.ndarray]) -> list[bytes]:
        return [self.encode_iteration(codes, t) for t in range(codes[0].shape[0])]

    def encode_iteration(self, codes: list[np.ndarray], t: int) -> bytes:
        """Chunk t alone (an encoder that stops as soon as a size is reached codes as it goes)."""
        return np.packbits(np.concatenate([c[t].ravel() for c in codes])).tobytes()

    def code_lengths(self, codes: list[np.ndarray]) -> list[np.ndarray]:
        """Bits each code bit costs: 1 (per tile, shaped like its codes; for `benchmarks/bitmaps.py`)."""
        return [np.ones(c.shape) for c in codes]

    def decode(self, chunks: list[bytes], shapes: list[tuple[int, int, int]]) -> list[np.ndarray]:
        sizes = [int(np.prod(s)) for s in shapes]
        total = sum(sizes)
        out = [np.empty((len(chunks), *s), bool) for s in shapes]
        for t, chunk in enumerate(chunks):
            if len(chunk) != (total + 7) // 8:
                raise EntropyError(f"iteration {t + 1} holds {len(chunk)} bytes, expected {(total + 7) // 8}")
            flat = np.unpackbits(np.frombuffer(chunk, np.uint8), count=total).astype(bool)
            for tile, piece in zip(out, np.split(flat, np.cumsum(sizes)[:-1])):
                tile[t] = piece.reshape(tile.shape[1:])
        return out


# -- the context coder ---------------------------------------------------------------------------
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

    def empty(self, iterations: int, bits: int) -> np.ndarray:
        return np.zeros((MAX_LOOKBACK + iterations, bits, self.height * self.width), bool)

    def paint(self, codes: list[np.ndarray]) -> np.ndarray:
        canvas = self.empty(codes[0].shape[0], self.shapes[0][0])
        view = canvas.reshape(*canvas.shape[:2], self.height, self.width)
        for c, x0 in zip(codes, self.left):
            view[MAX_LOOKBACK:, :, GUTTER:GUTTER + c.shape[2], x0:x0 + c.shape[3]] = c
        return canvas

    def cut(self, canvas: np.ndarray) -> list[np.ndarray]:
        view = canvas.reshape(*canvas.shape[:2], self.height, self.width)[MAX_LOOKBACK:]
        return [view[:, :, GUTTER:GUTTER + r, x0:x0 + c].copy() for (_, r, c), x0 in zip(self.shapes, self.left)]


def is_causal(feature, s: int, c: int):
    """Whether the decoder knows feature (dt, channel, dy, dx) when it codes channel c of
    colour s in the current iteration. Order: iteration, colour 0 then 1, channel 0..bits-1.
    Works on one feature or on an array of them (..., 4)."""
    dt, ch, dy, dx = np.moveaxis(np.asarray(feature), -1, 0)
    in_reach = (0 <= dt) & (dt <= MAX_LOOKBACK) & (abs(dy) <= GUTTER) & (abs(dx) <= GUTTER)
    neighbour = s ^ ((dy + dx) & 1)
    # earlier iterations are complete; in this one, the first colour before the second, and
    # the lower channels before the higher
    known = (dt > 0) | (neighbour < s) | ((neighbour == s) & (ch < c))
    return in_reach & known


def read_feature(canvas: np.ndarray, width: int, t, feature, positions: np.ndarray) -> np.ndarray:
    """The bit `feature` = (dt, channel, dy, dx) points at, seen from each position of
    iteration t (an int, or an array of shape (n, 1) to read many iterations at once). The
    four are ints, or int64 arrays of shape (m, 1) to read m features at once, one row each."""
    dt, ch, dy, dx = feature
    # one flat index instead of three index arrays: numpy's multi-array fancy indexing was 12x
    # slower than a gather from the flat canvas, and this gather is most of the coder's time
    _, bits, plane = canvas.shape
    offset = ((np.asarray(t) + MAX_LOOKBACK - dt) * bits + ch) * plane + dy * width + dx
    return canvas.reshape(-1)[offset + positions]


def context_index(canvas: np.ndarray, width: int, t, features: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Context of each position: the features' bits as a binary number, first feature highest.
    `features` (K, 4); or (m, K, 4), m feature sets at once: contexts (m, positions)."""
    features = np.asarray(features, np.int64)
    if features.ndim == 2:  # plain ints: the decoder calls this 64 times an iteration on small steps
        columns = features.tolist()
    else:  # each field of feature k as a column (m, 1), against the positions
        columns = [tuple(features[:, k, i, None] for i in range(4)) for k in range(features.shape[1])]
    ctx = 0  # an int64 array from the first feature on (K >= 1)
    for feature in columns:
        ctx = 2 * ctx + read_feature(canvas, width, t, feature, positions)
    return ctx


class ContextCoder:
    """Binary range coding (constriction) of every bit with a probability looked up from
    fixed tables: P(bit | iteration, colour, channel, K context bits). See docs/ENTROPY.md.

    Within an iteration the bits are coded in 2 x bits steps, checkerboard colour 0 then 1,
    channel 0..bits-1 inside; a step is one channel of one colour at every position of every
    tile, with contexts from bits coded in earlier steps. The decoder takes the steps one
    vectorised call at a time; the encoder, which knows every bit, computes all contexts of an
    iteration at once and codes it in one call (the same stream, 30 % less time).
    """

    coder_id = 1
    name = "context"

    def __init__(self, extra=None):
        extra = extra or {}
        if CONTEXT_FEATURES not in extra or CONTEXT_PROBABILITIES not in extra:
            raise EntropyError("these weights carry no context model for the entropy coder; "
                               "add one with `rgbatch fit-entropy`, or use the raw coder")
        self.features = _as_numpy(extra[CONTEXT_FEATURES]).astype(np.int64)
        table = _as_numpy(extra[CONTEXT_PROBABILITIES]).astype(np.int64)
        if self.features.ndim == 4:  # the first fits shared one set of features by all iterations
            self.features = np.broadcast_to(self.features, (table.shape[0], *self.features.shape))
        iterations, passes, bits, k, _ = self.features.shape
        if self.features.shape[4] != 4 or passes != 2 or table.shape != (iterations, 2, bits, 2 ** k):
            raise EntropyError(f"malformed context model: features {self.features.shape}, table {table.shape}")
        if table.min() < 1 or table.max() >= 2 ** PROBABILITY_BITS:
            raise EntropyError("malformed context model: probabilities outside 1 .. 2**15-1")
        for s in range(2):
            for c in range(bits):
                if not is_causal(self.features[:, s, c], s, c).all():
                    raise EntropyError(f"malformed context model: a feature of channel {c} reads the future")
        # q / 2**15 is exact in float64, and constriction quantizes a float the same way on every
        # machine, so encoder and decoder agree bit for bit
        self.probabilities = table / 2.0 ** PROBABILITY_BITS
        self.bits = bits

    @property
    def max_iterations(self) -> int:
        return self.probabilities.shape[0]

    def _check(self, shapes, iterations: int):
        if any(s[0] != self.bits for s in shapes):
            raise EntropyError(f"the context model codes {self.bits} bits per position, not {shapes[0][0]}")
        if iterations > self.max_iterations:
            raise EntropyError(f"the context model covers {self.max_iterations} iterations, not {iterations}")

    def encode(self, codes: list[np.ndarray]) -> list[bytes]:
        layout = Canvas(tuple(c.shape[1:] for c in codes))
        self._check(layout.shapes, codes[0].shape[0])
        canvas = layout.paint(codes)
        return [self._code_iteration(layout, canvas, t) for t in range(codes[0].shape[0])]

    def encode_iteration(self, codes: list[np.ndarray], t: int) -> bytes:
        """Chunk t alone, from iterations 0..t of `codes` (the same bytes as `encode`'s)."""
        codes = [c[:t + 1] for c in codes]
        layout = Canvas(tuple(c.shape[1:] for c in codes))
        self._check(layout.shapes, t + 1)
        return self._code_iteration(layout, layout.paint(codes), t)

    def _code_iteration(self, layout: Canvas, canvas: np.ndarray, t: int) -> bytes:
        # every bit is known: one call codes the iteration in the decoder's order (colour,
        # then channel, then position), the same stream as one call per step
        channels = np.arange(self.bits)[:, None]
        symbols, probabilities = [], []
        for s, positions in enumerate(layout.positions):
            symbols.append(canvas[MAX_LOOKBACK + t][:, positions].ravel())
            contexts = context_index(canvas, layout.width, t, self.features[t, s], positions)  # (bits, n)
            probabilities.append(self.probabilities[t, s, channels, contexts].ravel())
        encoder = constriction.stream.queue.RangeEncoder()
        encoder.encode(np.concatenate(symbols).astype(np.int32), BERNOULLI, np.concatenate(probabilities))
        return encoder.get_compressed().astype("<u4").tobytes()

    def code_lengths(self, codes: list[np.ndarray]) -> list[np.ndarray]:
        """The ideal code length -log2 P(bit) of every code bit under this model, per tile shaped
        like its codes (iterations, bits, rows, cols): where the bits of a stream go, position by
        position (`benchmarks/bitmaps.py`). A chunk's bytes exceed its sum by the range coder's
        rounding to 32-bit words and its quantization of the probabilities (a few bytes)."""
        layout = Canvas(tuple(c.shape[1:] for c in codes))
        self._check(layout.shapes, codes[0].shape[0])
        canvas = layout.paint(codes)
        lengths = np.zeros(canvas.shape)
        channels = np.arange(self.bits)[:, None]
        for t in range(codes[0].shape[0]):
            for s, positions in enumerate(layout.positions):
                contexts = context_index(canvas, layout.width, t, self.features[t, s], positions)
                p_one = self.probabilities[t, s, channels, contexts]
                ones = canvas[MAX_LOOKBACK + t][:, positions]
                lengths[MAX_LOOKBACK + t][:, positions] = -np.log2(np.where(ones, p_one, 1 - p_one))
        return layout.cut(lengths)

    def decode(self, chunks: list[bytes], shapes: list[tuple[int, int, int]]) -> list[np.ndarray]:
        layout = Canvas(tuple(tuple(s) for s in shapes))
        self._check(layout.shapes, len(chunks))
        canvas = layout.empty(len(chunks), self.bits)
        for t, chunk in enumerate(chunks):
            if len(chunk) % 4:
                raise EntropyError(f"iteration {t + 1} holds {len(chunk)} bytes, not a whole number of 32-bit words")
            decoder = constriction.stream.queue.RangeDecoder(np.frombuffer(chunk, "<u4").astype(np.uint32))
            plane = canvas[MAX_LOOKBACK + t]
            # step by step: a step's contexts read the channels decoded before it
            for s, positions in enumerate(layout.positions):
                for c in range(self.bits):
                    contexts = context_index(canvas, layout.width, t, self.features[t, s, c], positions)
                    plane[c, positions] = decoder.decode(BERNOULLI, self.probabilities[t, s, c, contexts])
            if not decoder.maybe_exhausted():
                raise EntropyError(f"iteration {t + 1} holds more bytes than its bits need")
        return layout.cut(canvas)


BERNOULLI = constriction.stream.model.Bernoulli(perfect=False)


def _as_numpy(x) -> np.ndarray:
    return x.numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


CODERS = {cls_key: cls for cls in (RawCoder, ContextCoder) for cls_key in (cls.coder_id, cls.name)}


def default_coder_name(extra=None) -> str:
    """The coder for new encodings: the context coder when the weights carry its model."""
    extra = extra or {}
    return ContextCoder.name if CONTEXT_PROBABILITIES in extra else RawCoder.name


def get_coder(key, extra=None):
    """The coder for an id (from a header) or a name (from the user; "auto" = the default)."""
    if key == "auto":
        key = default_coder_name(extra)
    try:
        cls = CODERS[key]
    except KeyError:
        known = sorted(k for k in CODERS if isinstance(k, str))
        raise EntropyError(f"unknown entropy coder {key!r} (this rgbatch knows {known + ['auto']})") from None
    return cls(extra)
