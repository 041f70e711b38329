"""Context mixing in the first iterations: what coder ids 3 and 4 add to coder id 2.

Coder id 2 (`rgbatch.adapt`) codes each bit with q', its table entry refined by the step's
context states and maps. Its K context bits cannot say what a block sent before: the blocks
whose 64 bits of the two previous iterations are the same, and the bits they have sent so far in
this iteration, predict the rest of theirs (docs/ENTROPY.md, "Context mixing"). Coder id 3
(`entropy.MixingCoder`, "mixing") codes the bits of its first 4 iterations with a logistic mix,
in the manner of the PAQ compressors, of six inputs and a bias:

* stretch(q'), coder id 2's entry, and stretch(q), the bare table entry;
* the **history** model: a trie per group of positions whose blocks held the same 64 bits in
  iterations t-1 and t-2 (grouped once a chunk); a position starts at its group's root and
  descends one level along each bit it codes (channel 0, 1, ...), so the cell it reads is
  shared by the blocks of equal history that have sent the same bits so far;
* the **prefix** model: one trie over all positions of the bits sent so far in this iteration,
  two cells a node, chosen by the same channel's bit one iteration back;
* two **same-step pattern** models, fresh at every step (colour, channel): cells chosen by the
  bits the step has already coded at the four same-colour neighbours up-left, up-right, two up
  and two left (with the same channel's bit one iteration back), and by those four beside the
  same four one iteration back.

Coder id 4 (`entropy.GroupedMixingCoder`, "mixing2", session 27) adds a seventh input, the
**group** model: a cell per channel for each group of positions whose blocks held the same 32
bits in iteration t-1 (what those blocks sent on this channel so far, whatever they sent on the
others), and mixes its first 8 iterations. A `Design` says what a coder mixes (its coder class in `rgbatch.entropy` names it).

A cell is a probability in 16 bits with a count, moved 1/(count + 1.5) of the way to each bit
coded in it (at least 1/255.5); a new node's cell starts at 1/2. The mixer's weights start at
the design's `start` (fitted on training images' codes: the mean of their final weights, per
iteration) and learn from each bit by the mixing error times the input. Every chunk starts
afresh, so chunk t depends on iterations <= t only, as with coder ids 1 and 2; later iterations
are coded as coder id 2 codes them.

Integers only: stretch and squash are tables, their entries rounded far from any tie
(tests/test_mix.py checks the margins in exact arithmetic) and pinned by a digest that
`check_tables` verifies before a coder uses them, so that every machine mixes the same.
A trie holds at most `capacity(positions, bits)` nodes (MAX_NODES, or a root per position and one
more for larger images): a position whose next node cannot be made stays where it is, so the
mixer's memory stays within 28 bytes a node, 12 a canvas position and 4 a group's channel, whatever
the bits.

`IterationMixer` is the reference (plain Python, one bit at a time); the kernels of
`rgbatch/fastcoder.py` compute the same entries inside the range coder (tested equal).
docs/ENTROPY.md, "The mixing coder", states the arithmetic.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from .context import MAX_LOOKBACK, PROBABILITY_BITS

# stretch(p) = ln(p / (1 - p)) in 8 fractional bits, |x| <= ST_MAX, per 15-bit probability q (q = 0 as 1/2 of a unit)
ST_MAX = 3071
_q = np.arange(2 ** PROBABILITY_BITS)
STRETCH = np.clip(np.round(256 * np.log(np.maximum(_q, 0.5) / (2 ** PROBABILITY_BITS - _q))),
                  -ST_MAX, ST_MAX).astype(np.int32)
# squash(x) = 1 / (1 + e**-x) in 16 bits, for x = -ST_MAX - 1 .. ST_MAX (index x + ST_MAX + 1)
SQUASH = np.clip(np.round(65536 / (1 + np.exp(-np.arange(-ST_MAX - 1, ST_MAX + 1) / 256))), 2, 65534).astype(np.int32)
CELL_LIMIT = 254  # a cell's count stops here: from then on it moves 1/255.5 of the way
RECIPROCAL = (131072 // (2 * np.arange(CELL_LIMIT + 1) + 3)).astype(np.int32)  # 2**16 / (n + 1.5), floored
TABLES_DIGEST = "e463899dd87f674c"  # sha256 of STRETCH, SQUASH, RECIPROCAL (int32, little-endian), first 16 hex

CELL_BITS = 8  # a cell is p16 << CELL_BITS | count, in an int32
FRESH = 32768 << CELL_BITS  # a new cell: p = 1/2, no bits seen
BIAS = 64  # the bias input
WEIGHT_BITS = 16  # weights in 16 fractional bits
RATE_SHIFT = 17  # a weight moves by input x error / 2**17 (error in 16 bits; 2**16 measured the same)
INPUTS = 8  # q', table, history, prefix, pattern, pattern2, bias, group (coder id 4 only)
PATTERN_CELLS = 2 * 16 + 256  # a step's pattern cells: (bit one back, 4 neighbours), then (4 neighbours, each now and one back)


@dataclass(frozen=True)
class Design:
    """What a mixing coder mixes: its first `iterations` iterations, from the weights `start`
    ((iterations, INPUTS), 16 fractional bits), with the group model or without (its weight and
    input then stay 0)."""

    iterations: int
    start: np.ndarray
    group: bool

    def __post_init__(self):
        assert self.start.shape == (self.iterations, INPUTS) and (self.group or not self.start[:, 7].any())


# coder id 3: fitted on the codes of 8 + 8 training images (the first of train/ and photos/train/)
# by the model of session 24 (023aa50247198e29), the mean of the weights their chunks end with
# (`python benchmarks/mixing_start.py --coder mixing --fit ... --fit-images 8 --passes 1`)
MIXING = Design(4, np.array([[44978, 2872, 9986, 9986, 3320, 3320, -1355, 0],
                                [40741, 9709, 16977, 8941, 3724, 3595, -606, 0],
                                [37566, 14580, 20382, 10916, 4321, 2997, 818, 0],
                                [37953, 12884, 14252, 14810, 2658, 2719, 3421, 0]], np.int64), group=False)
# coder id 4: fitted on the same images' codes in two passes (the mean of the final weights of
# chunks started from coder id 2's entry alone, then of chunks started from those means:
# `python benchmarks/mixing_start.py --coder mixing2 --passes 2 --fit ... --fit-images 8`)
GROUPED = Design(8, np.array([[37722, 11237, 10444, 10444, 5158, 5158, -1988, -7623],
                                 [29793, 18855, 13913, 9102, 3217, 3585, -1612, 7602],
                                 [26353, 22918, 23802, 10119, 3369, 2813, 1458, 8070],
                                 [26919, 20118, 16792, 12984, 2378, 2506, 5939, 9673],
                                 [26746, 21816, 12795, 10582, 4858, 2843, 2643, 12363],
                                 [27731, 19382, 8889, 10268, 3612, 474, 2581, 14864],
                                 [32773, 11741, 8775, 6710, 875, 1575, -1137, 13535],
                                 [45031, 13375, 4553, 3762, 2704, -437, 377, 5419]], np.int64), group=True)
MAX_NODES = 1 << 22  # a trie's nodes at most (12 + 16 bytes each in the kernels' two tries)


class MixingError(RuntimeError):
    """This machine's stretch and squash tables are not the format's: it cannot mix bit-exactly."""


def tables_digest() -> str:
    h = hashlib.sha256()
    for table in (STRETCH, SQUASH, RECIPROCAL):
        h.update(table.astype("<i4").tobytes())
    return h.hexdigest()[:16]


def check_tables() -> None:
    """Raises MixingError unless the tables computed on this machine are the format's."""
    if tables_digest() != TABLES_DIGEST:
        raise MixingError(f"this machine's mixing tables (digest {tables_digest()}) are not the format's "
                          f"({TABLES_DIGEST}): its numpy rounds log/exp differently; coder id 3 cannot run here")


def capacity(positions: int, bits: int, most: int = MAX_NODES) -> int:
    """Nodes of each trie for a chunk of `positions` positions of `bits` channels: every position
    may make one node a channel, and the history trie has a root per group (at most one per
    position); at most `most` (MAX_NODES), but never less than a root per position and one more."""
    return min(positions * (bits + 1) + 1, max(most, positions + 1))


def neighbours(width: int) -> np.ndarray:
    """Flat offsets of the four same-colour neighbours the pattern models read, in a canvas plane
    `width` positions wide: up-left, up-right, two up, two left (all coded before in the step;
    reads beyond a tile's gutter fall on zeros or on earlier positions of the same step)."""
    return np.array([-width - 1, -width + 1, -2 * width, -2], np.int64)


def history_keys(canvas: np.ndarray, t: int, order: np.ndarray, back: int = 2) -> np.ndarray:
    """Each position's key of iteration t's history (int64): its bits of iteration t-1, channel 0
    first, shifted in from the right, then (`back` 2, the history model's) bit k of iteration t-2
    xored in at bit 32 + k % 32; with `back` 1 (the group model's) iteration t-1's alone.
    `canvas`: (MAX_LOOKBACK + iterations, bits, plane), bool or uint8; `order`: flat positions."""
    keys = np.zeros(order.size, np.int64)
    ti = MAX_LOOKBACK + t
    for k in range(canvas.shape[1]):
        keys = (keys << np.int64(1)) | canvas[ti - 1, k, order].astype(np.int64)
    for k in range(canvas.shape[1] if back == 2 else 0):
        keys ^= canvas[ti - 2, k, order].astype(np.int64) << np.int64(32 + k % 32)
    return keys


def _group(keys: np.ndarray, order: np.ndarray) -> tuple[dict, int]:
    """Each position's group (its key's rank among the distinct keys), and the number of groups."""
    ranks = {key: i for i, key in enumerate(sorted(set(keys.tolist())))}
    return {p: ranks[k] for p, k in zip(order.tolist(), keys.tolist())}, len(ranks)


def _learn_cell(cell: int, bit: int) -> int:
    p, n = cell >> CELL_BITS, cell & ((1 << CELL_BITS) - 1)
    p += ((((bit << 16) - bit) - p) * int(RECIPROCAL[n]) + 32768) >> 16
    return (p << CELL_BITS) | min(n + 1, CELL_LIMIT)


class IterationMixer:
    """The mixer of one chunk (iteration t) of a canvas whose earlier iterations are known, on
    canvas planes `width` positions wide, as `design` mixes: call `start_step()` at each step
    (colour, channel), then `entry(position, c, q_adaptive, q_table)` for each bit in coding order
    and `learn(bit)`. The reference the kernels are tested against."""

    def __init__(self, canvas: np.ndarray, positions: tuple[np.ndarray, np.ndarray], t: int, width: int,
                 design: Design = MIXING, most: int = MAX_NODES):
        self.canvas, self.t, self.flat = canvas, t, canvas.reshape(-1)
        self.offsets = neighbours(width).tolist()
        order = np.concatenate(positions)
        self.weights = design.start[t].tolist()
        self.limit = capacity(order.size, canvas.shape[1], most)  # nodes of each trie (tests set fewer)
        # the history trie: a root per distinct key; node -> [child 0, child 1, cell]
        self.at, roots = _group(history_keys(canvas, t, order), order)
        self.history = [[-1, -1, FRESH] for _ in range(roots)]
        # the prefix trie: node -> [child 0, child 1, cell if the bit one iteration back is 0, ... 1]
        self.prefix = [[-1, -1, FRESH, FRESH]]
        self.at_prefix = dict.fromkeys(order.tolist(), 0)
        self.patterns = [FRESH] * PATTERN_CELLS
        # the group model: a cell per (group of equal bits in iteration t-1, channel)
        self.group, groups = _group(history_keys(canvas, t, order, back=1), order) if design.group else ({}, 0)
        self.groups = [FRESH] * (groups * canvas.shape[1])
        self._last = None

    def start_step(self) -> None:
        self.patterns = [FRESH] * PATTERN_CELLS

    def entry(self, position: int, c: int, q_adaptive: int, q_table: int) -> int:
        _, bits, plane = self.canvas.shape
        here = ((MAX_LOOKBACK + self.t) * bits + c) * plane + position  # flat, as the kernels read
        back = int(self.flat[here - bits * plane])
        pattern = pattern2 = 0
        for d in self.offsets:
            now, before = int(self.flat[here + d]), int(self.flat[here + d - bits * plane])
            pattern, pattern2 = pattern << 1 | now, pattern2 << 2 | now << 1 | before
        cells = (back * 16 + pattern, 32 + pattern2)
        node, pnode = self.at[position], self.at_prefix[position]
        cell = self.group[position] * bits + c if self.group else -1
        x = [int(STRETCH[q_adaptive]), int(STRETCH[q_table]), int(STRETCH[self.history[node][2] >> (CELL_BITS + 1)]),
             int(STRETCH[self.prefix[pnode][2 + back] >> (CELL_BITS + 1)])]
        x += [int(STRETCH[self.patterns[i] >> (CELL_BITS + 1)]) for i in cells] + [BIAS]
        x += [int(STRETCH[self.groups[cell] >> (CELL_BITS + 1)]) if cell >= 0 else 0]
        dot = sum(w * v for w, v in zip(self.weights, x)) >> WEIGHT_BITS
        p16 = int(SQUASH[min(max(dot, -ST_MAX - 1), ST_MAX) + ST_MAX + 1])
        self._last = position, here, back, cells, cell, x, p16
        return min(max(p16 >> 1, 1), 2 ** PROBABILITY_BITS - 1)

    def learn(self, bit: int) -> None:
        """Learn the bit just coded, and write it into the canvas (a decoder that writes a run's
        bits together after decoding them would have later bits read stale neighbours)."""
        position, here, back, cells, cell, x, p16 = self._last
        bit = int(bit)
        self.flat[here] = bit
        error = (bit << 16) - p16
        self.weights = [w + ((v * error + (1 << (RATE_SHIFT - 1))) >> RATE_SHIFT) for w, v in zip(self.weights, x)]
        node, pnode = self.at[position], self.at_prefix[position]
        self.history[node][2] = _learn_cell(self.history[node][2], bit)
        self.prefix[pnode][2 + back] = _learn_cell(self.prefix[pnode][2 + back], bit)
        for i in cells:
            self.patterns[i] = _learn_cell(self.patterns[i], bit)
        if cell >= 0:
            self.groups[cell] = _learn_cell(self.groups[cell], bit)
        self.at[position] = self._descend(self.history, node, bit, [-1, -1, FRESH])
        self.at_prefix[position] = self._descend(self.prefix, pnode, bit, [-1, -1, FRESH, FRESH])

    def _descend(self, trie: list, node: int, bit: int, fresh: list) -> int:
        """The child of `node` along `bit`, made the first time if the trie has room; else `node`."""
        child = trie[node][bit]
        if child < 0 and len(trie) < self.limit:
            child = trie[node][bit] = len(trie)
            trie.append(fresh)
        return child if child >= 0 else node
