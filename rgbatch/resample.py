"""Resampled coding: code an image at a smaller size, and scale the decoded image back up.

    small = downscale(image, code)                  # the encoder's side: Pillow's LANCZOS
    big = upscale(decoded_small, width, height)     # the decoder's side: bit-exact everywhere

A stream's header holds a scale code (docs/FORMAT.md): 0 codes the image as it is, 1 at 3/4 of
each side, 2 at 1/2. On smooth photos a smaller image coded deeper reaches a quality target
with fewer bytes than the whole image (README, "Resampled coding"); the codec's
`resample="auto"` tries each scale and keeps the stream its target prefers.

The decoder's upscaler is a separable Lanczos-3 in integer arithmetic, so that every machine
and device decodes the same pixels: each output pixel's source position is computed exactly in
integers from the two sizes (pixel centres aligned, as Pillow does), its phase quantized to
1/64 of a pixel; each phase has 6 integer taps from `TABLE`, whose rows sum to 2**14; edge
pixels repeat; each pass (vertical, then horizontal) rounds once and clips to 0..255. The
table is computed in floating point when the module loads and rounded to integers: its digest
is pinned in tests/test_resample.py, so a machine whose maths library rounds one entry
otherwise fails the tests instead of decoding differently.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
from PIL import Image

from .options import OptionError

SCALES = {0: (1, 1), 1: (3, 4), 2: (1, 2)}  # code -> (numerator, denominator) of each side
SCALE_NAMES = {0: "1", 1: "0.75", 2: "0.5"}  # code -> the scale as `resample=` takes it
NAMES = {"none": 0, **{name: code for code, name in SCALE_NAMES.items()}}  # what `resample=` takes besides "auto" and a code
MIN_CODED_SIDE = 32  # a scale is used only when both coded sides keep at least this many pixels
PHASES = 64  # source positions are quantized to 1/64 of a pixel
TAPS = 6  # Lanczos-3: 3 source pixels each side
ONE = 1 << 14  # each row of TABLE sums to this
STRIP_ROWS = 256  # upscale works on strips of this many output rows (memory flat in the image's size)


def _lanczos3(x: float) -> float:
    if x == 0:
        return 1.0
    if abs(x) >= 3:
        return 0.0
    px = math.pi * x
    return 3 * math.sin(px) * math.sin(px / 3) / (px * px)


def _table() -> np.ndarray:
    """(PHASES, TAPS) int64: the taps for source pixels base-2 .. base+3 of an output pixel whose
    source position is base + phase / PHASES; each row sums to ONE exactly (its largest tap
    takes the rounding's remainder)."""
    rows = []
    for phase in range(PHASES):
        w = [_lanczos3(k - 2 - phase / PHASES) for k in range(TAPS)]
        total = sum(w)
        taps = [round(ONE * v / total) for v in w]
        taps[max(range(TAPS), key=lambda k: taps[k])] += ONE - sum(taps)
        rows.append(taps)
    return np.array(rows, np.int64)


TABLE = _table()


def check_code(code: int) -> int:
    """The code itself if it is a scale code; ValueError otherwise."""
    if code not in SCALES:
        raise ValueError(f"scale code {code} is not one of {sorted(SCALES)}")
    return code


def parse(resample) -> int | str:
    """What `resample=` asks for: a scale code, or "auto" (OptionError for anything else).
    Takes "none", "auto", "0.75", "0.5" (the CLI's --resample) and the codes 0, 1, 2."""
    if isinstance(resample, int) and not isinstance(resample, bool) and resample in SCALES:
        return resample
    if isinstance(resample, float) and f"{resample:g}" in NAMES:  # 0.75 as the number it names
        return NAMES[f"{resample:g}"]
    if isinstance(resample, str) and (resample == "auto" or resample in NAMES):
        return NAMES.get(resample, resample)
    raise OptionError("resample", f"must be one of none, auto, 0.75, 0.5 (or a scale code {sorted(SCALES)}), "
                                  f"not {resample!r}")


def candidates(resample, targeted: bool, measure: bool) -> list[int]:
    """The scale codes an encoding tries for `resample=` (checked: OptionError): "auto" with a
    target (`targeted`) tries every scale, and compares their MS-SSIM (`measure` must be on);
    without one it codes the image as it is."""
    choice = parse(resample)
    if choice != "auto":
        return [choice]
    if targeted and not measure:
        raise OptionError("resample", "auto compares each scale's MS-SSIM: measuring must stay on")
    return list(SCALES) if targeted else [0]


def coded_size(width: int, height: int, code: int) -> tuple[int, int]:
    """(width, height) an image of this size is coded at with scale `code`: each side times the
    scale, rounded half up, at least 1."""
    num, den = SCALES[check_code(code)]
    return tuple(max(1, (side * num + den // 2) // den) for side in (width, height))


def usable(width: int, height: int, code: int) -> bool:
    """Whether an image of this size may be coded at scale `code`: scale 0 always; a smaller
    one when both coded sides keep at least MIN_CODED_SIDE pixels."""
    return code == 0 or min(coded_size(width, height, code)) >= MIN_CODED_SIDE


def downscale(image: np.ndarray, code: int) -> np.ndarray:
    """The HxWx3 uint8 image the encoder codes at scale `code` (Pillow's LANCZOS; scale 0: the
    image itself). Only the encoder runs it, so it need not be the same on every machine."""
    if code == 0:
        return image
    width, height = coded_size(image.shape[1], image.shape[0], code)
    return np.asarray(Image.fromarray(image).resize((width, height), Image.LANCZOS))


def _taps(source: int, out: int) -> tuple[np.ndarray, np.ndarray]:
    """Per output pixel along one side: the 6 source indices (clamped to the edges) and their
    integer weights. Output pixel x's centre maps to source position (x + 1/2) source/out - 1/2,
    computed as round(PHASES x that) in integers."""
    x = np.arange(out, dtype=np.int64)
    position = ((2 * x + 1) * source * PHASES - out * PHASES + out) // (2 * out)  # round half up, floored division
    base, phase = position // PHASES, position % PHASES
    index = np.clip(base[:, None] + np.arange(-2, TAPS - 2), 0, source - 1)
    return index, TABLE[phase].astype(np.int32)


def _pass(source: np.ndarray, index: np.ndarray, weights: np.ndarray, axis: int) -> np.ndarray:
    """One pass along `axis` of int32 pixels: output i is the sum over the 6 taps k of
    source[index[i, k]] x weights[i, k], rounded once and clipped to 0..255. A tap at a time
    (six gathers of the output's size, not one of six times it). int32 holds every sum: 255 x
    the sum of a row's absolute taps is below 2**23."""
    shape = [1] * source.ndim
    shape[axis] = -1
    total = np.zeros(source.shape[:axis] + (len(index),) + source.shape[axis + 1:], np.int32)
    for k in range(TAPS):
        total += np.take(source, index[:, k], axis=axis) * weights[:, k].reshape(shape)
    return np.clip((total + ONE // 2) >> 14, 0, 255)


def upscale_rows(image: np.ndarray, width: int, height: int) -> Iterator[tuple[int, np.ndarray]]:
    """(y, rows) strips of the upscaled image, top to bottom, STRIP_ROWS at a time (uint8)."""
    src = image.astype(np.int32)
    rows_index, rows_weight = _taps(image.shape[0], height)
    cols_index, cols_weight = _taps(image.shape[1], width)
    for y in range(0, height, STRIP_ROWS):
        vertical = _pass(src, rows_index[y:y + STRIP_ROWS], rows_weight[y:y + STRIP_ROWS], axis=0)  # (strip, w, 3)
        yield y, _pass(vertical, cols_index, cols_weight, axis=1).astype(np.uint8)  # (strip, W, 3)


def upscale(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """The HxWx3 uint8 image scaled to width x height by the integer Lanczos-3 (the decoder's
    upscaler: the same bytes on every machine)."""
    if image.shape[:2] == (height, width):
        return image
    out = np.empty((height, width, 3), np.uint8)
    for y, rows in upscale_rows(image, width, height):
        out[y:y + len(rows)] = rows
    return out
