"""Entropy coders: turn the bits of each iteration into one chunk of bytes, and back.

A coder sees the codes of a whole image as one bool array per tile, shaped
(iterations, bits, rows, cols), and returns one chunk per iteration. Chunk t may depend on
iterations < t (the decoder has them), never on later ones, so that a stream cut to depth
k decodes. The coder id is stored in every bitstream header.

| id | coder | notes |
|----|-------|-------|
| 0  | raw   | plain bit packing, as the paper's released encoder |
"""

from __future__ import annotations

import numpy as np


class EntropyError(ValueError):
    """A chunk that does not decode to the size the header promises."""


class RawCoder:
    """Every bit stored as is, tile after tile, in (bits, rows, cols) order per iteration."""

    coder_id = 0
    name = "raw"

    def encode(self, codes: list[np.ndarray]) -> list[bytes]:
        iterations = codes[0].shape[0]
        return [np.packbits(np.concatenate([c[t].ravel() for c in codes])).tobytes() for t in range(iterations)]

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


CODERS = {RawCoder.coder_id: RawCoder, RawCoder.name: RawCoder}


def get_coder(key, extra=None):
    """The coder for an id (from a header) or a name (from the user)."""
    try:
        cls = CODERS[key]
    except KeyError:
        known = sorted(k for k in CODERS if isinstance(k, str))
        raise EntropyError(f"unknown entropy coder {key!r} (this rgbatch knows {known})") from None
    return cls()
