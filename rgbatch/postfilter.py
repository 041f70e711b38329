"""The colour post-filter: a small linear filter per tile and depth that the encoder fits to the
original (least squares), sends at the head of the depth's chunk (format v2, docs/FORMAT.md,
"Post-filter record"), and every decoder applies in integers, so that a depth's image is the
same on every machine.

    q = fit(reconstruction, original)        # (3, 4) int32: a colour matrix and an offset
    y = apply(reconstruction, q)             # y_c = x_c + ((sum_k q_ck (x_k - 128) + 64 q_c3 + 64) >> 7)

What it corrects is per image: depth 1 often gets an image's mean colour wrong by several levels,
which no decoder trained on many images can know (docs/TRAINING.md, "Refiner"), and the colour
balance of later depths drifts by less. Built (session 30), it gains 0.14 BD-rate points against
AVIF on Kodak and 2.0-2.1 on photos/val, for 3 % more encoding time (docs/BENCH.md, "A
post-filter sent per depth"); priced by each tile's last iteration too (session 31, `slope`)
0.07 and 0.04 points more, PSNR at depth 1 +0.6 / +2.1 dB over no filter (+0.8 / +2.1 in session
30, which sent more depth-1 filters); images under MIN_PIXELS get none.

A filter of zeros is the identity (the record says "off": one bit). `Filter` is the general form
the benchmark also measures (a neighbourhood, channels mixed or not); the codec sends `COLOUR`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

SHIFT = 7  # matrix coefficients in units of 2^-SHIFT; offsets in half levels
MAX_COEFFICIENT = 4096  # |q| a record may hold: every sum of `apply` stays below 2^24, exact in float32 (docs/FORMAT.md)
MAX_PREFIX = 14  # Exp-Golomb leading zeros a reader accepts: differences up to +-2 MAX_COEFFICIENT fit
SUBSAMPLE = 4  # the encoder fits on every 4th pixel of every 4th row (1/16 of them)
# images (at the size coded) of fewer pixels get no filter, and a format v1 stream: below 256 x 256
# the record's byte a depth and the coefficients cost more than the filters gain (docs/BENCH.md,
# "The filter's price per depth", session 31; from session 30 to 31 the bound was 2^18 pixels)
MIN_PIXELS = 1 << 16
RATE_PRICE = 1.0  # how dearly the encoder counts a filter's bits, against the high-rate bound (`worth`)
# ... and against the tile's own last iteration: what a bit of it bought in squared error (`slope`),
# which at low depths is many times the high-rate bound (session 31: 8 lost least on small images)
SLOPE_PRICE = 8


class RecordError(ValueError):
    """A post-filter record that cannot be read, with the reason."""


@dataclass(frozen=True)
class Filter:
    """y_c = x_c + ((sum_k a_ck f_k + b_c 2^(shift-1) + 2^(shift-1)) >> shift), clipped to 0..255:
    the features f_k are the reconstruction's pixels minus 128 at `radius` around each pixel
    (point-symmetric pairs summed), of every colour channel (`cross`) or of channel c alone; a_ck
    in units of 2^-shift, b_c in half levels. Coefficients: (3, size + 1) integers."""

    radius: int = 0
    cross: bool = True
    shift: int = SHIFT

    def offsets(self) -> list[tuple[int, int]]:
        r = self.radius
        return [(dy, dx) for dy in range(-r, r + 1) for dx in range(-r, r + 1) if (dy, dx) >= (0, 0)]

    @property
    def size(self) -> int:
        return len(self.offsets()) * (3 if self.cross else 1)

    def features(self, x: np.ndarray) -> list[np.ndarray]:
        """Per output channel, its (H x W, K) int32 features, from an HxWx3 uint8 image (one array
        for all three when they read every channel)."""
        r, (h, w) = self.radius, x.shape[:2]
        pad = np.pad(x.astype(np.int32) - 128, ((r, r), (r, r), (0, 0)), mode="edge")
        shifted = lambda dy, dx: pad[r + dy:r + dy + h, r + dx:r + dx + w]
        taps = [shifted(dy, dx) + (shifted(-dy, -dx) if (dy, dx) != (0, 0) else 0) for dy, dx in self.offsets()]
        of = lambda channels: np.stack([tap[..., j] for tap in taps for j in channels], -1).reshape(h * w, -1)
        return [of(range(3))] * 3 if self.cross else [of([c]) for c in range(3)]

    def fit(self, x: np.ndarray, target: np.ndarray) -> np.ndarray:
        """Integer coefficients (3, K + 1) that bring x nearest target in squared error, quantized
        (and bounded by MAX_COEFFICIENT)."""
        out = []
        for c, f in enumerate(self.features(x)):
            f = np.concatenate([f.astype(np.float64), np.ones((len(f), 1))], 1)
            residual = target[..., c].reshape(-1).astype(np.float64) - x[..., c].reshape(-1)
            # the normal equations by einsum, not a BLAS product (whose threads compete with torch's)
            w = np.linalg.lstsq(np.einsum("ni,nj->ij", f, f), np.einsum("ni,n->i", f, residual), rcond=None)[0]
            out.append(np.rint(np.concatenate([w[:-1] * 2 ** self.shift, w[-1:] * 2])))
        return np.clip(np.array(out), -MAX_COEFFICIENT, MAX_COEFFICIENT).astype(np.int32)

    def apply(self, x: np.ndarray, q: np.ndarray) -> np.ndarray:
        """x filtered by coefficients q, in integers: the same pixels on every machine."""
        y = np.empty_like(x)
        half = 1 << (self.shift - 1)
        for c, f in enumerate(self.features(x)):
            acc = f @ q[c, :-1].astype(np.int32) + (int(q[c, -1]) * half + half)
            y[..., c] = np.clip(x[..., c] + (acc >> self.shift).reshape(x.shape[:2]), 0, 255)
        return y


COLOUR = Filter()  # what format v2 sends: a 3x3 colour matrix and an offset per tile and depth
COEFFICIENTS = (3, COLOUR.size + 1)


def apply(x: np.ndarray, q: np.ndarray | None) -> np.ndarray:
    """An HxWx3 uint8 image (a tile's reconstruction, padding included) through the colour filter
    q: `COLOUR.apply`'s pixels, computed in float32, where every product and partial sum is an
    integer below 2^24 (|q| <= MAX_COEFFICIENT), so exact in any order; itself when q is None or
    zeros (the identity). Elementwise, not a matrix product: a BLAS library's threads would
    compete with the network's on the same cores (measured: encoding 15 % slower)."""
    if q is None or not q.any():
        return x
    channels = [x[..., k].astype(np.float32) for k in range(3)]
    q = q.astype(np.int64)
    half = 1 << (SHIFT - 1)
    y = np.empty_like(x)
    for c in range(3):
        acc = channels[0] * np.float32(q[c, 0])
        acc += channels[1] * np.float32(q[c, 1])
        acc += channels[2] * np.float32(q[c, 2])
        acc += np.float32(q[c, 3] * half + half - 128 * q[c, :3].sum())
        acc *= np.float32(1 / (1 << SHIFT))
        np.floor(acc, out=acc)
        acc += channels[c]
        np.clip(acc, 0, 255, out=acc)
        y[..., c] = acc
    return y


def fit(x: np.ndarray, original: np.ndarray, previous: np.ndarray | None = None,
        last_error: float | None = None, iteration_bits: int = 0, current_error: float | None = None) -> np.ndarray:
    """The filter the encoder sends for a tile's reconstruction x (HxWx3 uint8, the tile's own
    pixels) of `original`: COLOUR fitted on every SUBSAMPLE-th pixel of every SUBSAMPLE-th row,
    or zeros (off) where, on those pixels, it does not lower the squared error by more than its
    bits are worth (`worth`). `previous`: the tile's last filter sent, what its coefficients are
    coded against (zeros: none). `last_error`: the tile's `error` at its previous depth (None at
    the first: the flat grey the decoder starts from) and `iteration_bits` the bits an iteration
    sends for the tile, which price the filter's bits at the tile's own last step (`slope`; 0:
    the high-rate bound alone). `current_error`: x's own `error`, where the caller has it (the
    encoder keeps it as the next depth's `last_error`).

    Deciding by MS-SSIM instead (the filtered and unfiltered tile measured at every depth) kept
    0.13 BD-rate points more against AVIF on Kodak and 0.3 on photos/val, but took 87 % more
    encoding time; at half resolution 0.04 more on Kodak for 18 % (docs/BENCH.md, "Built")."""
    xs, os = x[::SUBSAMPLE, ::SUBSAMPLE], original[::SUBSAMPLE, ::SUBSAMPLE]
    q = COLOUR.fit(xs, os)
    if not q.any():
        return q
    before = error(x, original) if current_error is None else current_error
    after = _sse(apply(xs, q), os)
    bits = 1 + coefficient_bits(q - (0 if previous is None else previous))
    last = _sse(np.full_like(xs, 128), os) if last_error is None else last_error
    price = slope(last, before, iteration_bits)
    return q if worth(before - after, bits, before, xs.shape[0] * xs.shape[1], price) else np.zeros_like(q)


def error(x: np.ndarray, original: np.ndarray) -> float:
    """The squared error of a tile's reconstruction on the pixels `fit` measures: its `last_error`
    at the next depth."""
    return _sse(x[::SUBSAMPLE, ::SUBSAMPLE], original[::SUBSAMPLE, ::SUBSAMPLE])


def slope(last_error: float, error: float, iteration_bits: int) -> float:
    """A filter bit's price from the tile's last iteration: SLOPE_PRICE times the squared error
    (on the measured pixels) that each of its `iteration_bits` bits bought. At depths 1-3 an
    iteration's bits buy many times the high-rate bound of `worth` (which alone made filters on
    128-256 px images cost 2-9 % BD-rate, docs/BENCH.md); later it is below it. The raw bits
    stand for the coded ones, which the encoder only knows after its loop: hence the factor."""
    return SLOPE_PRICE * max(0.0, last_error - error) / iteration_bits if iteration_bits else 0.0


def worth(gain: float, bits: int, sse: float, pixels: int, price: float = 0.0) -> bool:
    """Whether lowering the squared error of `pixels` pixels (`sse` before) by `gain` pays for `bits`
    (pixels: those measured, one in SUBSAMPLE^2 of the tile's): at high rate one more bit spread
    over a tile lowers its squared error by about 2 ln 2 times its mean squared error (D ~ 2^-2R),
    which RATE_PRICE scales; `price` (a bit's worth in the measured pixels' squared error, `slope`)
    raises it where the codec's own curve is steeper. Measured on 8 + 8 images (session 30): prices
    0 to 8 x the bound kept the same BD-rate points within 0.01, 16 and 32 up to 0.03 fewer on Kodak."""
    bound = RATE_PRICE * 2 * math.log(2) * sse / (max(pixels, 1) * SUBSAMPLE ** 2)
    return gain > max(bound, price) * bits


def _sse(a: np.ndarray, b: np.ndarray) -> float:
    d = a.astype(np.int32) - b
    return float(np.einsum("ijk,ijk->", d, d, dtype=np.int64))


# -- the record: per tile, one bit (on/off) and, when on, 12 signed Exp-Golomb codes ---------------
def coefficient_bits(values) -> int:
    """Bits of the signed Exp-Golomb codes (order 0) of integers: 0 -> 1 bit, +-1 -> 3, +-2..3 -> 5, ..."""
    u = np.abs(np.asarray(values, np.int64)) * 2 - (np.asarray(values) > 0)
    return int(np.sum(2 * np.floor(np.log2(u + 1)) + 1))


def write_record(filters: list[np.ndarray], previous: list[np.ndarray]) -> bytes:
    """One chunk's record: per tile, in grid order, 0 (off), or 1 and the filter's 12 coefficients
    as differences from `previous` (the tile's last filter sent, zeros before any), each a signed
    Exp-Golomb code; bits most significant first, the last byte padded with zeros."""
    bits = []
    for q, last in zip(filters, previous):
        if not q.any():
            bits.append("0")
            continue
        bits.append("1")
        for v in (q - last).ravel().tolist():
            u = 2 * v - 1 if v > 0 else -2 * v
            code = bin(u + 1)[2:]
            bits.append("0" * (len(code) - 1) + code)
    text = "".join(bits)
    text += "0" * (-len(text) % 8)
    return int(text, 2).to_bytes(len(text) // 8, "big") if text else b""


def read_record(chunk: bytes, previous: list[np.ndarray]) -> tuple[list[np.ndarray], int]:
    """The filters of one chunk's record (zeros: off) for tiles whose last filters sent are
    `previous`, and the record's length in bytes (where the coder's payload starts).
    RecordError where the chunk ends inside the record, a code is longer than MAX_PREFIX allows,
    a coefficient leaves +-MAX_COEFFICIENT, or the record is not the one `write_record` writes for
    what it holds (a filter of zeros sent as on, padding bits not 0): every record has one spelling."""
    reader = _Bits(chunk)
    out = []
    for last in previous:
        if not reader.bit():
            out.append(np.zeros(COEFFICIENTS, np.int32))
            continue
        delta = np.array([reader.signed() for _ in range(last.size)], np.int64).reshape(COEFFICIENTS)
        q = last + delta
        if np.abs(q).max() > MAX_COEFFICIENT:
            raise RecordError(f"a post-filter coefficient of {int(np.abs(q).max())} is over the format's {MAX_COEFFICIENT}")
        if not q.any():
            raise RecordError("a post-filter record sends the identity (its on bit must be 0)")
        out.append(q.astype(np.int32))
    if reader.at % 8 and chunk[reader.at >> 3] & (0xFF >> (reader.at % 8)):
        raise RecordError("a post-filter record's padding bits are not 0")
    return out, reader.bytes_read


class _Bits:
    def __init__(self, data: bytes):
        self.data, self.at = data, 0

    def bit(self) -> int:
        if self.at >= 8 * len(self.data):
            raise RecordError("the chunk ends inside its post-filter record")
        b = (self.data[self.at >> 3] >> (7 - (self.at & 7))) & 1
        self.at += 1
        return b

    def signed(self) -> int:
        zeros = 0
        while not self.bit():
            zeros += 1
            if zeros > MAX_PREFIX:
                raise RecordError(f"a post-filter code of more than {MAX_PREFIX} leading zeros")
        u = 1
        for _ in range(zeros):
            u = 2 * u + self.bit()
        u -= 1
        return (u + 1) // 2 if u % 2 else -(u // 2)

    @property
    def bytes_read(self) -> int:
        return (self.at + 7) // 8


def last_on(filters) -> np.ndarray:
    """The last filter sent of a tile's filters so far (a sequence of (3, 4), zeros: off), int64;
    zeros before any: what a record codes the next against."""
    sent = [q for q in filters if q.any()]
    return sent[-1].astype(np.int64) if sent else np.zeros(COEFFICIENTS, np.int64)


def last_sent(filters: list[np.ndarray], depth: int) -> list[np.ndarray]:
    """Per tile, `last_on` of its filters before `depth` (0-based iteration). `filters`: per tile,
    (iterations, 3, 4)."""
    return [last_on(f[:depth]) for f in filters]


def frame(filters: list[np.ndarray] | None, chunks: list[bytes], start: int = 0) -> list[bytes]:
    """Chunks of iterations start, start + 1, ... with their records in front (format v2); `filters`
    per tile (iterations, 3, 4). None: no filters were fitted, the chunks of a format v1 stream (the
    coder's payloads alone)."""
    if filters is None:
        return list(chunks)
    return [write_record([f[t] for f in filters], last_sent(filters, t)) + chunk for t, chunk in enumerate(chunks, start)]


def unframe(chunks: list[bytes], tiles: int) -> tuple[list[np.ndarray], list[bytes]]:
    """The filters (per tile, (iterations, 3, 4)) and the coder's payloads of format v2 chunks;
    RecordError naming the iteration whose record cannot be read."""
    previous = [np.zeros(COEFFICIENTS, np.int64)] * tiles
    per_depth, payloads = [], []
    for t, chunk in enumerate(chunks):
        try:
            filters, n = read_record(chunk, previous)
        except RecordError as e:
            raise RecordError(f"iteration {t + 1} post-filter record: {e}") from None
        previous = [f.astype(np.int64) if f.any() else p for f, p in zip(filters, previous)]
        per_depth.append(filters)
        payloads.append(chunk[n:])
    return [np.stack([d[j] for d in per_depth]) for j in range(tiles)], payloads


__all__ = ["COLOUR", "Filter", "RecordError", "apply", "fit", "frame", "read_record", "unframe", "write_record"]
