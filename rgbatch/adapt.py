"""Per-image adaptation of the context coder's probabilities: what coder id 2 adds to coder id 1.

The context coder's tables (`rgbatch.context`) are counted on training images; an image of
large smooth areas makes its bits more predictable than the tables say, a dense texture less.
The adaptive coder (`entropy.AdaptiveCoder`) codes every bit with a probability learned, in
two stages, from the bits already coded in the same chunk:

1. **Context states.** Each context of each step (colour, channel) keeps its own estimate,
   starting at its table entry and moving toward every bit coded in that context by 1/(n + 32)
   after n of them (at least 1/1024): the table is a prior worth 32 bits.
2. **Maps** (adaptive probability maps, as in the PAQ family of compressors): piecewise-linear
   functions of the context state through 33 knots that start on the identity and move toward
   every bit coded near them. Each step has one for all its bits, which carries what all its
   contexts learn to the contexts seen rarely, and one for each value of the context's first
   KEY_BITS bits (the features the fit picked first: mostly the same channel one and two
   iterations back).

The coded entry is a quarter context state and three eighths each map. Integers only, so
every machine computes the same entries; each step of each chunk starts afresh, so chunk t depends on
nothing but the bits of iterations <= t, as with coder id 1.

    entries = refine(table_row, contexts, bits, k)   # the q each bit of one step is coded with

`StepState` and `refine` are the reference (plain Python, one bit at a time); the kernels of
`rgbatch/fastcoder.py` compute the same entries inside the range coder (tested equal).
docs/ENTROPY.md, "The adaptive coder", states the arithmetic.
"""

from __future__ import annotations

import numpy as np

from .context import PROBABILITY_BITS

STATE_BITS = 24  # context states and knots are probabilities in 24 bits
STATE_SHIFT = STATE_BITS - PROBABILITY_BITS  # from a table entry q (15 bits) to 24 bits
STATE_ONE = (1 << STATE_BITS) - 1  # certainty of a 1

# 1. context states: after n bits a state moves 1/(n + PRIOR) of the way to the next one
PRIOR = 32
COUNT_CAP = 1024 - PRIOR  # from then on, 1/1024
RATE_BITS = 16
RECIPROCAL = (1 << RATE_BITS) // (np.arange(COUNT_CAP + 1, dtype=np.int64) + PRIOR)  # 2**16 / (n + PRIOR)

# 2. maps: 33 knots at the table entries nearest 2**15 * sigmoid(-8 + i / 2), i = 0..32, evenly
# spaced in log-odds; written out so that no machine's exp() decides a bit
KNOTS = np.array([11, 18, 30, 49, 81, 133, 219, 360, 589, 961, 1554, 2486, 3906, 5978, 8813,
                  12371, 16384, 20397, 23955, 26790, 28862, 30282, 31214, 31807, 32179, 32408,
                  32549, 32635, 32687, 32719, 32738, 32750, 32757], np.int64)
START = KNOTS << STATE_SHIFT  # knots start on the identity
WEIGHT_BITS = 12  # an entry lies between two knots at weights (ONE_WEIGHT - f, f) / ONE_WEIGHT
ONE_WEIGHT = 1 << WEIGHT_BITS
MAP_RATE_SHIFT = 4  # a coded bit moves the two knots around its entry 1/16 of the way (times their weight)
KEY_BITS = 3  # a step's second map is chosen by its context's first 3 bits (all of them if K < 3)
MAPS = 1 + 2 ** KEY_BITS  # maps per step: the shared one first, then one per key

# the coded entry, in sixteenths: 4 state + 6 shared map + 6 keyed map
STATE_PART, MAP_PART = 4, 6


def knot_positions() -> tuple[np.ndarray, np.ndarray]:
    """For every q in 0 .. 2**15 - 1: the knot below it (0 .. 31) and its weight toward the
    knot above (0 .. ONE_WEIGHT); q beyond the outer knots sits on them. Integers only."""
    q = np.arange(2 ** PROBABILITY_BITS, dtype=np.int64)
    lo = np.clip(np.searchsorted(KNOTS, q, side="right") - 1, 0, len(KNOTS) - 2)
    inside = np.clip(q, KNOTS[0], KNOTS[-1]) - KNOTS[lo]
    return lo, (inside << WEIGHT_BITS) // (KNOTS[lo + 1] - KNOTS[lo])


LOW_KNOT, WEIGHT = knot_positions()


def clamp_entry(x: int) -> int:
    return min(max(x, 1), 2 ** PROBABILITY_BITS - 1)


def move(value: int, target: int, weight: int, shift: int) -> int:
    """`value` moved weight / 2**shift of the way to `target`, rounded to nearest (Python's >>
    floors, as the kernels' int64 shifts do)."""
    return value + (((target - value) * weight + (1 << (shift - 1))) >> shift)


def key_shift(k: int) -> int:
    """How far a context of k bits shifts right to leave its first KEY_BITS bits, its map's key."""
    return k - min(k, KEY_BITS)


class StepState:
    """The adaptive state of one step (colour, channel) of one chunk: its contexts' states and
    its maps, for contexts of k bits. `entry(context)` gives the entry the next bit is coded
    with, `learn(bit)` then moves what gave it toward the bit."""

    def __init__(self, table_row: np.ndarray, k: int):
        self.states = (np.asarray(table_row, np.int64) << STATE_SHIFT).tolist()
        self.counts = [0] * len(self.states)
        self.maps = [START.tolist() for _ in range(MAPS)]  # the shared map, then one per key
        self.shift = key_shift(k)
        self._at = None

    def entry(self, context: int) -> int:
        state = self.states[context]
        q = clamp_entry(state >> STATE_SHIFT)
        lo, f = int(LOW_KNOT[q]), int(WEIGHT[q])
        shared, keyed = self.maps[0], self.maps[1 + (context >> self.shift)]
        self._at = context, shared, keyed, lo, f
        mapped = _interpolate(shared, lo, f) + _interpolate(keyed, lo, f)
        return clamp_entry((STATE_PART * state + MAP_PART * mapped) >> (STATE_SHIFT + 4))

    def learn(self, bit) -> None:
        context, shared, keyed, lo, f = self._at
        target = STATE_ONE if bit else 0
        n = self.counts[context]
        self.states[context] = move(self.states[context], target, int(RECIPROCAL[n]), RATE_BITS)
        self.counts[context] = min(n + 1, COUNT_CAP)
        for knots in (shared, keyed):
            knots[lo] = move(knots[lo], target, ONE_WEIGHT - f, WEIGHT_BITS + MAP_RATE_SHIFT)
            knots[lo + 1] = move(knots[lo + 1], target, f, WEIGHT_BITS + MAP_RATE_SHIFT)


def _interpolate(knots: list[int], lo: int, f: int) -> int:
    return (knots[lo] * (ONE_WEIGHT - f) + knots[lo + 1] * f) >> WEIGHT_BITS


def refine(table_row: np.ndarray, contexts: np.ndarray, bits: np.ndarray, k: int) -> np.ndarray:
    """The entries one step's bits are coded with, in coding order, from the step's table row
    (contexts of k bits), the contexts of its bits and the bits: adaptive state that starts
    afresh and learns from each bit after it is coded."""
    maps = StepState(table_row, k)
    out = np.empty(len(contexts), np.int64)
    for i, (ctx, bit) in enumerate(zip(np.asarray(contexts).tolist(), np.asarray(bits).tolist())):
        out[i] = maps.entry(ctx)
        maps.learn(bit)
    return out
