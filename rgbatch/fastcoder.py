"""Compiled kernels of the context coder: contexts and range coding of a whole iteration in one loop.

The context coder (coder id 1, `rgbatch/entropy.py`, docs/ENTROPY.md) codes every bit of an
iteration with a probability looked up from its K context bits. Its streams were first made by
constriction (`stream.queue.RangeEncoder` with `model.Bernoulli(perfect=False)`), called from
numpy one step at a time; the decoder, which must take the 64 steps of an iteration one after
the other, spent most of its time in Python and numpy calls on small arrays. These kernels,
compiled by numba, walk the same positions in the same order, compute each context from the
canvas and code the bit in the same loop, with the same integer arithmetic as constriction's
range coder: the streams are byte for byte those constriction writes (tested on many streams),
so coder id 1 is unchanged. Only integers decide bits (docs/ENTROPY.md, "The range coder").

The canvas is `context.Canvas`'s bool array viewed as uint8, flattened: (2 + iterations, bits,
height * width). A feature (dt, channel, dy, dx) of step (t, s, c) reads the canvas at the flat
offset ((t + 2 - dt) * bits + channel) * plane + dy * width + dx from a position's flat index,
which `_step_offsets` computes once per step; the bit itself lives at offset
((t + 2) * bits + c) * plane.

Compiled once per machine and cached beside this file (numba's `cache=True`), so that later
processes, Ray workers included, load the machine code instead of compiling again. The kernels
release the GIL: threads coding different images run in parallel.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .context import PROBABILITY_BITS  # the tables' q: P(bit = 1) = q / 2**15

PRECISION = 24  # constriction's default: probabilities are integers out of 2**24
WORD_BITS = 32  # compressed words; the coder state is 64 bits
HEAD_ROOM = np.uint64(1 << (64 - WORD_BITS))  # the range stays >= 2**32 between symbols
FULL = np.uint64(2 ** 64 - 1)  # the initial range: nothing coded yet
WORD_MASK = np.uint64(2 ** 32 - 1)


def zero_cut(q: np.ndarray) -> np.ndarray:
    """Where the 24-bit interval of a bit splits, for table entries q (P(1) = q / 2**15):
    a 0 takes [0, cut), a 1 takes [cut, 2**24). This is constriction's Bernoulli(perfect=False)
    (`from_floating_point_probabilities_fast([1 - p, p])`: one unit of 2**24 reserved for
    each symbol, the rest shared by truncating (1 - p) * (2**24 - 2)), computed exactly in
    integers: for p = q / 2**15, (1 - p) * (2**24 - 2) is an exact float64 and its truncation
    is the integer division below. q in 1 .. 2**15 - 1 gives cuts in 512 .. 2**24 - 513."""
    q = np.asarray(q, np.int64)
    return ((2 ** PROBABILITY_BITS - q) * (2 ** PRECISION - 2) >> PROBABILITY_BITS) + 1


def max_words(symbols: int) -> int:
    """Room for the chunk of `symbols` bits: a bit costs at most 15.01 bits of the coder's range
    (its probability is at least 512 / 2**24, the range keeps >= 2**32 so scale >= 2**8), so
    half a word per bit, plus the words that seal the stream (one or two) and any held back."""
    return symbols // 2 + 8


@njit(cache=True, nogil=True)
def _write_held(out, n, first, count, carry):
    # words held back while the interval straddled a word boundary: a carry turns
    # first, ffff.. into first + 1, 0000..
    if carry:
        out[n] = (first + np.uint64(1)) & WORD_MASK
        fill = np.uint64(0)
    else:
        out[n] = first
        fill = WORD_MASK
    n += 1
    for _ in range(1, count):
        out[n] = fill
        n += 1
    return n


@njit(cache=True, nogil=True)
def _step_offsets(features_t, s, c, t, width, plane, offsets):
    """Canvas offsets of step (s, c)'s features from a position, as uint64 (negative ones wrap,
    and wrap back when a position is added: the sum is always a canvas index)."""
    bits = features_t.shape[1]
    for j in range(features_t.shape[2]):
        dt, ch, dy, dx = features_t[s, c, j, 0], features_t[s, c, j, 1], features_t[s, c, j, 2], features_t[s, c, j, 3]
        offsets[j] = np.uint64(((t + 2 - dt) * bits + ch) * plane + dy * width + dx)


@njit(cache=True, nogil=True, inline="always")
def _context(canvas, offsets, k, p):
    """The context of the bit at position p: its K feature bits as a binary number, first highest."""
    ctx = np.uint64(0)
    for j in range(k):
        ctx = (ctx << np.uint64(1)) | np.uint64(canvas[offsets[j] + p])
    return ctx


@njit(cache=True, nogil=True)
def encode_iteration(canvas, features_t, positions0, positions1, cuts_t, t, width, plane, out):
    """Code iteration t's bits: colour 0 then 1, channel 0..bits-1, positions in order.

    canvas: flat uint8 (2 + iterations, bits, plane); features_t (2, bits, K, 4) int64;
    positions0/1: flat indices of each colour's positions; cuts_t (2, bits, 2**K) int64 from
    `zero_cut`; out: uint32, at least `max_words` long. Returns the number of words written,
    or -1 if `out` is too short."""
    lower = np.uint64(0)
    rng = FULL
    held = 0  # words held back (constriction's "inverted situation")
    first_held = np.uint64(0)
    n = 0
    limit = out.shape[0] - 4
    bits = features_t.shape[1]
    k = features_t.shape[2]
    offsets = np.empty(k, np.uint64)
    one24 = np.uint64(1 << PRECISION)
    shift = np.uint64(PRECISION)
    word = np.uint64(WORD_BITS)
    for s in range(2):
        positions = positions0 if s == 0 else positions1
        for c in range(bits):
            _step_offsets(features_t, s, c, t, width, plane, offsets)
            table = cuts_t[s, c]
            base = np.uint64(((t + 2) * bits + c) * plane)
            for i in range(positions.shape[0]):
                p = np.uint64(positions[i])
                cut = np.uint64(table[_context(canvas, offsets, k, p)])
                scale = rng >> shift
                if canvas[base + p]:
                    new_lower = lower + scale * cut
                    rng = scale * (one24 - cut)
                else:
                    new_lower = lower
                    rng = scale * cut
                if held and new_lower + rng > new_lower:  # straddles no more: flush
                    if n + held > limit:
                        return -1
                    n = _write_held(out, n, first_held, held, new_lower < lower)
                    held = 0
                lower = new_lower
                if rng < HEAD_ROOM:
                    rng = rng << word
                    top = lower >> word
                    lower = lower << word
                    if held:
                        held += 1
                    elif lower + rng > lower:
                        if n > limit:
                            return -1
                        out[n] = top
                        n += 1
                    else:
                        held = 1
                        first_held = top
    # seal: words that pin a point inside the final interval
    if rng == FULL:
        return n
    if n + held + 2 > out.shape[0]:
        return -1
    point = lower + WORD_MASK
    if held:
        n = _write_held(out, n, first_held, held, point < lower)
    point_word = point >> word
    out[n] = point_word
    n += 1
    if (lower + rng) >> word == point_word:
        out[n] = 0
        n += 1
    return n


@njit(cache=True, nogil=True)
def decode_iteration(canvas, features_t, positions0, positions1, cuts_t, t, width, plane, words):
    """Decode iteration t into the canvas (the inverse of `encode_iteration`, same arguments
    but the chunk's uint32 `words`). Returns 0 if the chunk ended where its bits did, 1 if
    words were left over, 2 if it cannot be a chunk of this coder."""
    n_words = words.shape[0]
    point = np.uint64(0)
    read = 0
    while read < 2 and read < n_words:
        point = (point << np.uint64(WORD_BITS)) | np.uint64(words[read])
        read += 1
    if read == 1:
        point = point << np.uint64(WORD_BITS)
    lower = np.uint64(0)
    rng = FULL
    bits = features_t.shape[1]
    k = features_t.shape[2]
    offsets = np.empty(k, np.uint64)
    one24 = np.uint64(1 << PRECISION)
    shift = np.uint64(PRECISION)
    word = np.uint64(WORD_BITS)
    for s in range(2):
        positions = positions0 if s == 0 else positions1
        for c in range(bits):
            _step_offsets(features_t, s, c, t, width, plane, offsets)
            table = cuts_t[s, c]
            base = np.uint64(((t + 2) * bits + c) * plane)
            for i in range(positions.shape[0]):
                p = np.uint64(positions[i])
                cut = np.uint64(table[_context(canvas, offsets, k, p)])
                scale = rng >> shift
                x = point - lower
                if x >= scale << shift:  # a quantile past 2**24: no encoder wrote this
                    return 2
                threshold = scale * cut
                if x >= threshold:
                    canvas[base + p] = 1
                    lower = lower + threshold
                    rng = scale * (one24 - cut)
                else:
                    canvas[base + p] = 0
                    rng = threshold
                if rng < HEAD_ROOM:
                    lower = lower << word
                    rng = rng << word
                    point = point << word
                    if read < n_words:
                        point = point | np.uint64(words[read])
                        read += 1
    # constriction's maybe_exhausted: every word read, and the point where the encoder's seal puts it
    if read < n_words:
        return 1
    if rng != FULL and point - lower >= (HEAD_ROOM << np.uint64(1)) - np.uint64(1):
        return 1
    return 0


# -- the calls the context coder makes: one chunk at a time ----------------------------------------
def encode_chunk(canvas: np.ndarray, width: int, positions, features_t: np.ndarray, cuts_t: np.ndarray,
                 t: int) -> bytes:
    """The chunk of iteration t of a painted canvas (bool, (2 + iterations, bits, plane)):
    constriction's words, little-endian. `features_t` (2, bits, K, 4) int64, `cuts_t` (2, bits, 2**K)."""
    _, bits, plane = canvas.shape
    out = np.empty(max_words(bits * sum(p.size for p in positions)), np.uint32)
    n = encode_iteration(canvas.reshape(-1).view(np.uint8), features_t, *positions, cuts_t, t, width, plane, out)
    if n < 0:  # cannot happen for tables within 1 .. 2**15 - 1 (max_words); never write past the buffer
        raise RuntimeError("range coder output longer than its bound")
    return out[:n].astype("<u4").tobytes()


def decode_chunk(canvas: np.ndarray, width: int, positions, features_t: np.ndarray, cuts_t: np.ndarray, t: int,
                 chunk: bytes) -> int:
    """Decode chunk t into iteration t of the canvas (whose earlier iterations hold the bits
    decoded before). Returns `decode_iteration`'s status: 0 ok, 1 words left over, 2 invalid."""
    _, bits, plane = canvas.shape
    words = np.frombuffer(chunk, "<u4").astype(np.uint32)
    return decode_iteration(canvas.reshape(-1).view(np.uint8), features_t, *positions, cuts_t, t, width, plane,
                            words)
