"""The adaptive map of coder id 2: per image, how far the context tables are off, learned as it codes.

The context coder's tables (`rgbatch.context`) are counted on training images; an image of
large smooth areas makes its bits more predictable than the tables say, a dense texture less.
The adaptive coder (`entropy.AdaptiveCoder`) codes every bit with its table entry q refined by a
map learned from the bits already coded in the same chunk (an adaptive probability map, as in
the PAQ family of compressors): one map per step (colour, channel), a piecewise-linear
function of q through 33 knots, each knot a 16-bit probability that starts on the identity
and moves toward every bit coded near it. The coded entry is a quarter table, three quarters
map. Integers only, so every machine computes the same entries; each chunk starts afresh, so
chunk t depends on nothing but the bits of iterations <= t, as with coder id 1.

    entries = refine(table_entries, bits)   # the q each bit of one step is coded with

`refine` is the reference (plain Python, one bit at a time); `rgbatch/fastcoder.py`'s kernels
compute the same entries inside the range coder (tested equal). docs/ENTROPY.md, "The adaptive
coder", states the arithmetic.
"""

from __future__ import annotations

import numpy as np

from .context import PROBABILITY_BITS

# 33 knots at the table entries nearest 2**15 * sigmoid(-8 + i / 2), i = 0..32: spaced evenly
# in log-odds; written out so that no machine's exp() decides a bit
KNOTS = np.array([11, 18, 30, 49, 81, 133, 219, 360, 589, 961, 1554, 2486, 3906, 5978, 8813,
                  12371, 16384, 20397, 23955, 26790, 28862, 30282, 31214, 31807, 32179, 32408,
                  32549, 32635, 32687, 32719, 32738, 32750, 32757], np.int64)
WEIGHT_BITS = 12  # an entry lies between two knots at weights (ONE_WEIGHT - f, f) / ONE_WEIGHT
ONE_WEIGHT = 1 << WEIGHT_BITS
RATE_SHIFT = 4  # a coded bit moves the two knots around its entry 1/16 of the way (times their weight)
TABLE_PART, MAP_PART = 2, 3  # coded entry = (2 q + 3 map(q)) >> 3, the map in 16 bits: 1/4 table, 3/4 map
MAP_ONE = 65535  # a knot's value for certainty of a 1 (16 bits)
START = KNOTS << 1  # knots start on the identity: the first bit of a step is coded as coder id 1 would


def knot_positions() -> tuple[np.ndarray, np.ndarray]:
    """For every table entry q in 0 .. 2**15 - 1: the knot below it (0 .. 31) and its weight
    toward the knot above (0 .. ONE_WEIGHT); entries beyond the outer knots sit on them."""
    q = np.arange(2 ** PROBABILITY_BITS, dtype=np.int64)
    lo = np.clip(np.searchsorted(KNOTS, q, side="right") - 1, 0, len(KNOTS) - 2)
    inside = np.clip(q, KNOTS[0], KNOTS[-1]) - KNOTS[lo]
    return lo, (inside << WEIGHT_BITS) // (KNOTS[lo + 1] - KNOTS[lo])


LOW_KNOT, WEIGHT = knot_positions()


def refine(entries: np.ndarray, bits: np.ndarray) -> np.ndarray:
    """The entries one step's bits are coded with, in coding order: table entries q (int, 1 ..
    2**15 - 1) refined by a map that starts afresh and learns from each bit after it is coded."""
    knots = START.tolist()
    out = np.empty(len(entries), np.int64)
    for i, (q, bit) in enumerate(zip(np.asarray(entries).tolist(), np.asarray(bits).tolist())):
        out[i], lo, f = predict(knots, q)
        learn(knots, lo, f, bit)
    return out


def predict(knots: list[int], q: int) -> tuple[int, int, int]:
    """(coded entry, knot, weight) of table entry q under the map `knots`."""
    lo, f = int(LOW_KNOT[q]), int(WEIGHT[q])
    mapped = (knots[lo] * (ONE_WEIGHT - f) + knots[lo + 1] * f) >> WEIGHT_BITS
    coded = (TABLE_PART * q + MAP_PART * mapped) >> 3
    return min(max(coded, 1), 2 ** PROBABILITY_BITS - 1), lo, f


def learn(knots: list[int], lo: int, f: int, bit) -> None:
    """Move knots lo and lo + 1 toward the coded bit; Python's >> floors as the kernels' does."""
    target = MAP_ONE if bit else 0
    shift = WEIGHT_BITS + RATE_SHIFT
    knots[lo] += ((target - knots[lo]) * (ONE_WEIGHT - f)) >> shift
    knots[lo + 1] += ((target - knots[lo + 1]) * f) >> shift
