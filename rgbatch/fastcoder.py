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
height * width). A feature of step (t, s, c) reads the canvas at a flat offset from a position's
flat index, `context.feature_offset` (the one definition of where a feature reads), which
`step_offsets` computes for every step of an iteration before the kernels run. Both kernels walk
the steps through the same helpers (`_step`, `_bit`: every context of a step and its table
entry, from which `_cut` splits the range); they differ only in the range coder's arithmetic.

The same kernels run coder id 2 (`adaptive`): there each table entry is refined, before it codes
a bit, by adaptive context states and probability maps that learn within the step how far the
tables are off for this image (`_entry`, `_learn`; `rgbatch/adapt.py`, docs/ENTROPY.md).
Integers only, so that every machine decodes what any machine encoded. A step's adaptive state
serves only that step's bits, so one small set of arrays (a cell per context, 8 KB at K = 10,
and the maps' 9 x 33 knots) is set afresh at the start of every step (`_fresh_state`) and stays
in the L1 cache. Measured (session 11): a state for all 64 steps at once (a 512 KB array per
chunk, its cells 0 until seen) made coder id 2 code 1.35x slower, and it made the 128 KB table
of knots and weights (PLACE) look slow, which it is not beside the small state.

Coder ids 3 and 4 (`mixing`, `mixing2`) run in them too: in their first iterations each entry is
then mixed with the table entry and four (coder id 4: five) models of the blocks' history and the
step's neighbours (`mix_setup`, `_mix_entry`, `_mix_learn`; `rgbatch/mix.py`, docs/ENTROPY.md,
"The mixing coder"), in the same loop; its tries and cells live in flat int32 arrays for the chunk.

Compiled once per machine and cached beside this file (numba's `cache=True`), so that later
processes, Ray workers included, load the machine code instead of compiling again. The kernels
release the GIL: threads coding different images run in parallel. numba compiles the constants
of `adapt` and `mix` into the machine code and its cache keys on this file alone: after changing
one of them (a new format's constants), delete `rgbatch/__pycache__/fastcoder*.nb*` (measured in
session 26: a changed `mix.RATE_SHIFT` kept its old value in the cached kernels until then).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from . import adapt, mix
from .adapt import (COUNT_CAP, KEY_BITS, MAP_PART, MAP_RATE_SHIFT, MAPS, ONE_WEIGHT, RATE_BITS, STATE_ONE,
                    STATE_PART, STATE_SHIFT, WEIGHT_BITS)
from .context import PROBABILITY_BITS, feature_offset  # the tables' q: P(bit = 1) = q / 2**15

PRECISION = 24  # constriction's default: probabilities are integers out of 2**24
WORD_BITS = 32  # compressed words; the coder state is 64 bits
HEAD_ROOM = np.uint64(1 << (64 - WORD_BITS))  # the range stays >= 2**32 between symbols
FULL = np.uint64(2 ** 64 - 1)  # the initial range: nothing coded yet
WORD_MASK = np.uint64(2 ** 32 - 1)
WORD = np.uint64(WORD_BITS)  # the constants the kernels use, as uint64 (numba compiles them in)
SHIFT = np.uint64(PRECISION)
ONE = np.uint64(1 << PRECISION)  # probability 1


def max_words(symbols: int) -> int:
    """Room for the chunk of `symbols` bits: a bit costs at most 15.01 bits of the coder's range
    (its probability is at least 512 / 2**24, the range keeps >= 2**32 so scale >= 2**8), so
    half a word per bit, plus the words that seal the stream (one or two) and any held back."""
    return symbols // 2 + 8


# coder id 2's adaptation (`adapt`): module-level arrays, which numba compiles in as constants;
# narrow and packed, so that they and the state stay in the CPU's caches (measured: each load
# in the chain of a bit costs)
MAP_START = adapt.START.astype(np.int32)
PLACE = ((adapt.LOW_KNOT << 16) | adapt.WEIGHT).astype(np.int32)  # per q: its knot << 16 | weight
RECIPROCAL = adapt.RECIPROCAL.astype(np.int32)
COUNT_BITS = 16  # a context's cell: state << COUNT_BITS | count (of the bits it has coded)

# coder id 3's mixing (`mix`), compiled in the same way
STRETCH, SQUASH, MIX_RECIPROCAL = mix.STRETCH.astype(np.int16), mix.SQUASH.astype(np.uint16), mix.RECIPROCAL
NO_MIX = np.empty(0, np.int64)  # the weights of an iteration that is not mixed
NO_NODES = np.empty(0, np.int32)
NO_NEAR = np.empty(0, np.uint64)
# the kernels' mixer arguments of an iteration that is not mixed. Always passed: numba keys an
# omitted default array by its identity, so a kernel with array defaults compiled again in every
# process (measured: 6.4 s for each process's first chunk instead of 0.3)
NOT_MIXED = (NO_MIX, NO_NODES, NO_NODES, NO_NODES, 0, NO_NODES, NO_NODES, NO_NEAR)


@njit(cache=True, nogil=True)
def _fresh_state(table, cells, knots):
    """Coder id 2's state at the start of a step (`adapt.StepState`): a cell per context, its
    state at its table entry and its count 0, and every map's knots on the identity, 24-bit.
    A step's state serves its bits only, so each step starts afresh in the same arrays."""
    for ctx in range(table.shape[0]):
        cells[ctx] = table[ctx] << (STATE_SHIFT + COUNT_BITS)
    for row in range(knots.shape[0]):
        knots[row, :] = MAP_START


@njit(cache=True, nogil=True, inline="always")
def _cut(q):
    """Where the 24-bit interval of a bit splits, for its entry q (P(1) = q / 2**15): a 0 takes
    [0, cut), a 1 takes [cut, 2**24). This is constriction's Bernoulli(perfect=False)
    (`from_floating_point_probabilities_fast([1 - p, p])`: one unit of 2**24 reserved for
    each symbol, the rest shared by truncating (1 - p) * (2**24 - 2)), computed exactly in
    integers: for p = q / 2**15, (1 - p) * (2**24 - 2) is an exact float64 and its truncation
    is the integer division below. q in 1 .. 2**15 - 1 gives cuts in 512 .. 2**24 - 513."""
    return ((np.uint64(2 ** PROBABILITY_BITS) - q) * np.uint64(2 ** PRECISION - 2) >> np.uint64(PROBABILITY_BITS)) + np.uint64(1)


@njit(cache=True, nogil=True, inline="always")
def _clamp(x):
    return min(max(x, 1), 2 ** PROBABILITY_BITS - 1)


@njit(cache=True, nogil=True, inline="always")
def _move(value, target, weight, shift):
    # `adapt.move`
    return value + (((target - value) * weight + (np.int64(1) << (shift - 1))) >> shift)


@njit(cache=True, nogil=True, inline="always")
def _entry(cells, knots, ctx, key_shift):
    """`adapt.StepState.entry`: the entry the bit of context `ctx` is coded with, from its step's
    cells and maps (row 0 shared, row 1 + the context's first bits keyed: `ctx >> key_shift`);
    and the context's cell, the knot and weight the maps learn at, and the keyed map's row."""
    cell = cells[ctx]
    state = cell >> COUNT_BITS
    # state is 0 .. STATE_ONE (a move never passes its target), so its q is 0 .. 2**15 - 1: no
    # clamp, as q = 0 has the place of q = 1 (tested)
    place = np.int64(PLACE[np.uint64(state >> STATE_SHIFT)])
    lo = np.uint64(place >> 16)
    f = place & 0xffff
    hi = lo + np.uint64(1)
    key = np.uint64(1) + (ctx >> key_shift)
    mapped = ((np.int64(knots[0, lo]) * (ONE_WEIGHT - f) + np.int64(knots[0, hi]) * f) >> WEIGHT_BITS) + \
             ((np.int64(knots[key, lo]) * (ONE_WEIGHT - f) + np.int64(knots[key, hi]) * f) >> WEIGHT_BITS)
    return _clamp((STATE_PART * state + MAP_PART * mapped) >> (STATE_SHIFT + 4)), cell, lo, f, key


@njit(cache=True, nogil=True, inline="always")
def _learn(cells, knots, ctx, cell, lo, f, key, bit):
    """`adapt.StepState.learn`: the context's state and the step's two maps moved toward the coded bit."""
    target = STATE_ONE if bit else 0
    shift = WEIGHT_BITS + MAP_RATE_SHIFT
    hi = lo + np.uint64(1)
    knots[0, lo] = _move(np.int64(knots[0, lo]), target, ONE_WEIGHT - f, shift)
    knots[0, hi] = _move(np.int64(knots[0, hi]), target, f, shift)
    knots[key, lo] = _move(np.int64(knots[key, lo]), target, ONE_WEIGHT - f, shift)
    knots[key, hi] = _move(np.int64(knots[key, hi]), target, f, shift)
    n = cell & ((1 << COUNT_BITS) - 1)
    state = _move(cell >> COUNT_BITS, target, np.int64(RECIPROCAL[np.uint64(n)]), RATE_BITS)
    cells[ctx] = (state << COUNT_BITS) | min(n + 1, COUNT_CAP)


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


# -- coder ids 3 and 4: the mixer of an iteration (`mix.IterationMixer`) ------------------------------
@njit(cache=True, nogil=True)
def _rank(keys, order, at, base):
    """Each position's group, the rank of its key among the distinct keys (by one sort), written
    at `at[base + position]`; returns the number of groups."""
    by_key = np.argsort(keys)
    groups = 0
    for j in range(keys.shape[0]):
        if j == 0 or keys[by_key[j]] != keys[by_key[j - 1]]:
            groups += 1
        at[base + order[by_key[j]]] = groups - 1
    return groups


@njit(cache=True, nogil=True)
def mix_setup(canvas, positions0, positions1, own, plane, capacity, grouped):
    """The mixer's state at the start of a chunk: `at` (3 x plane), each position's node in the
    history trie (its group's root: `mix.history_keys`, computed here in the same loop order as
    the reference and grouped by one sort), in the prefix trie (the root) and, with `grouped`
    (coder id 4), its group of equal bits in iteration t-1 times bits, where its group's cells
    start (else 0); the tries, flat: 3 x capacity
    (node i at 3i: child 0, child 1, cell) and 4 x capacity (child 0, child 1, cell after a 0,
    after a 1 one iteration back); the history trie's nodes used; and the groups of iteration t-1
    (0 without `grouped`). `own`: where each channel of the iteration lies (`step_offsets`);
    `plane`: positions a canvas plane holds. (The keys in numpy, `mix.history_keys`, measured
    1.8 ms a chunk of budgie_003, 11 ns a bit: more than the mixing of some bits; here they cost 2-4.)"""
    order = np.concatenate((positions0, positions1))
    n = order.shape[0]
    if capacity < n + 1:  # `mix.capacity` never gives less: a root per position fits
        raise ValueError("a trie's capacity must hold a root per position")
    keys = np.zeros(n, np.int64)
    bits = own.shape[0]
    back = np.uint64(bits * plane)  # one iteration's span of the flat canvas
    for k in range(bits):  # iteration t-1, channel 0 first, shifted in from the right
        one = own[k] - back
        for j in range(n):
            keys[j] = (keys[j] << 1) | np.int64(canvas[one + np.uint64(order[j])])
    at = np.zeros(3 * plane, np.int32)
    groups = 0
    if grouped:
        groups = _rank(keys, order, at, 2 * plane)
        at[2 * plane:] *= bits  # where a group's cells start: one per channel
    for k in range(bits):  # iteration t-2 xored in at bit 32 + k % 32
        two = own[k] - back - back
        for j in range(n):
            keys[j] = keys[j] ^ (np.int64(canvas[two + np.uint64(order[j])]) << (32 + (k & 31)))
    history = np.empty(3 * capacity, np.int32)
    prefix = np.empty(4 * capacity, np.int32)
    used = _rank(keys, order, at, 0)
    for i in range(used):
        history[3 * i] = history[3 * i + 1] = -1
        history[3 * i + 2] = mix.FRESH
    prefix[0] = prefix[1] = -1
    prefix[2] = prefix[3] = mix.FRESH
    return at, history, prefix, used, groups


@njit(cache=True, nogil=True, inline="always")
def _mix_entry(w0, w1, w2, w3, w4, w5, w6, w7, at, history, prefix, patterns, groups, canvas, near, bit, back,
               position, channel, q_adaptive, q_table):
    """The entry q a mixed bit is coded with (`mix.IterationMixer.entry`), and what
    learning from it needs: its stretched inputs, squashed p16, trie nodes, bit one iteration back,
    pattern cells and group cell (the position's group's cell of `channel`; the input is 0
    without the group model, `groups` empty)."""
    plane = np.uint64(at.shape[0] // 3)
    node, pnode = np.uint64(at[position]), np.uint64(at[plane + position])
    back_bit = np.uint64(canvas[bit - back])
    pattern = pattern2 = np.uint64(0)
    for j in range(4):
        now = np.uint64(canvas[bit + near[j]])
        pattern = (pattern << np.uint64(1)) | now
        pattern2 = (pattern2 << np.uint64(2)) | (now << np.uint64(1)) | np.uint64(canvas[bit + near[j] - back])
    g1, g2 = back_bit * np.uint64(16) + pattern, np.uint64(32) + pattern2
    x0 = np.int64(STRETCH[q_adaptive])
    x1 = np.int64(STRETCH[q_table])
    x2 = np.int64(STRETCH[np.uint64(history[np.uint64(3) * node + np.uint64(2)] >> (mix.CELL_BITS + 1))])
    x3 = np.int64(STRETCH[np.uint64(prefix[np.uint64(4) * pnode + np.uint64(2) + back_bit] >> (mix.CELL_BITS + 1))])
    x4 = np.int64(STRETCH[np.uint64(patterns[g1] >> (mix.CELL_BITS + 1))])
    x5 = np.int64(STRETCH[np.uint64(patterns[g2] >> (mix.CELL_BITS + 1))])
    g3 = x7 = np.int64(0)
    if groups.shape[0]:
        g3 = np.int64(at[plane + plane + position]) + channel
        x7 = np.int64(STRETCH[np.uint64(groups[g3] >> (mix.CELL_BITS + 1))])
    dot = (w0 * x0 + w1 * x1 + w2 * x2 + w3 * x3 + w4 * x4 + w5 * x5 + w6 * mix.BIAS + w7 * x7) >> mix.WEIGHT_BITS
    p16 = np.int64(SQUASH[min(max(dot, -mix.ST_MAX - 1), mix.ST_MAX) + mix.ST_MAX + 1])
    return _clamp(p16 >> 1), (x0, x1, x2, x3, x4, x5, x7, p16), (node, pnode, back_bit, g1, g2, g3)


@njit(cache=True, nogil=True, inline="always")
def _learn_cell(cell, bit):
    p, n = cell >> mix.CELL_BITS, cell & ((1 << mix.CELL_BITS) - 1)
    p += ((((bit << 16) - bit) - p) * np.int64(MIX_RECIPROCAL[n]) + 32768) >> 16
    return np.int32((p << mix.CELL_BITS) | min(n + 1, mix.CELL_LIMIT))


@njit(cache=True, nogil=True, inline="always")
def _descend(trie, stride, node, bit, used):
    """The child along `bit` of the trie node at flat offset `node` (nodes of `stride` int32: two
    children, then cells), made with fresh cells the first time if the trie has room (-1 if not);
    and the nodes used."""
    child = np.int64(trie[node + bit])
    if child < 0 and used < trie.shape[0] // stride:
        child = used
        trie[node + bit] = child
        at = np.uint64(stride * child)
        trie[at] = trie[at + np.uint64(1)] = -1
        for k in range(2, stride):
            trie[at + np.uint64(k)] = mix.FRESH
        used += 1
    return child, used


@njit(cache=True, nogil=True, inline="always")
def _mix_learn(w0, w1, w2, w3, w4, w5, w6, w7, at, history, prefix, patterns, groups, used, prefix_used, position,
               inputs, where, bit):
    """`mix.IterationMixer.learn`: the weights, the cells and the position's nodes moved by the
    coded bit (`inputs`, `where`: what `_mix_entry` returned). Returns the weights and the nodes
    used in each trie."""
    x0, x1, x2, x3, x4, x5, x7, p16 = inputs
    node, pnode, back_bit, g1, g2, g3 = where
    error = (bit << 16) - p16
    half = np.int64(1) << (mix.RATE_SHIFT - 1)
    w0 += (x0 * error + half) >> mix.RATE_SHIFT
    w1 += (x1 * error + half) >> mix.RATE_SHIFT
    w2 += (x2 * error + half) >> mix.RATE_SHIFT
    w3 += (x3 * error + half) >> mix.RATE_SHIFT
    w4 += (x4 * error + half) >> mix.RATE_SHIFT
    w5 += (x5 * error + half) >> mix.RATE_SHIFT
    w6 += (mix.BIAS * error + half) >> mix.RATE_SHIFT
    ubit = np.uint64(bit)
    h, pr = np.uint64(3) * node, np.uint64(4) * pnode
    history[h + np.uint64(2)] = _learn_cell(np.int64(history[h + np.uint64(2)]), bit)
    prefix[pr + np.uint64(2) + back_bit] = _learn_cell(np.int64(prefix[pr + np.uint64(2) + back_bit]), bit)
    patterns[g1] = _learn_cell(np.int64(patterns[g1]), bit)
    patterns[g2] = _learn_cell(np.int64(patterns[g2]), bit)
    if groups.shape[0]:  # coder id 4's group model (x7 is 0 without it: w7 would not move)
        w7 += (x7 * error + half) >> mix.RATE_SHIFT
        groups[g3] = _learn_cell(np.int64(groups[g3]), bit)
    child, used = _descend(history, 3, h, ubit, used)
    if child >= 0:
        at[position] = child
    child, prefix_used = _descend(prefix, 4, pr, ubit, prefix_used)
    if child >= 0:
        at[np.uint64(at.shape[0] // 3) + position] = child
    return w0, w1, w2, w3, w4, w5, w6, w7, used, prefix_used


@njit(cache=True, nogil=True, inline="always")
def _start_weights(weights):
    """The mixer's weights as locals (all 0 when the iteration is not mixed: `weights` empty)."""
    if weights.shape[0] == 0:
        return (np.int64(0), np.int64(0), np.int64(0), np.int64(0), np.int64(0), np.int64(0), np.int64(0),
                np.int64(0))
    return weights[0], weights[1], weights[2], weights[3], weights[4], weights[5], weights[6], weights[7]


@njit(cache=True, nogil=True, inline="always")
def _keep_weights(weights, w0, w1, w2, w3, w4, w5, w6, w7):
    weights[0], weights[1], weights[2], weights[3] = w0, w1, w2, w3
    weights[4], weights[5], weights[6], weights[7] = w4, w5, w6, w7


@njit(cache=True, nogil=True, inline="always")
def _back(own, at):
    """One iteration's span of the flat canvas (bits x plane: `at` has three entries per position
    of a plane), where the same channel's bit one iteration back lies; 0 when not mixing."""
    return np.uint64(own.shape[0] * (at.shape[0] // 3))


def step_offsets(features: np.ndarray, bits: int, plane: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Features (iterations, 2, bits, K, 4) as the kernels read them, on a canvas of `bits`
    channels, planes of `plane` positions and rows `width` wide: for every iteration and step
    (colour s, channel c), the flat canvas offsets of its K features from a position
    (iterations, 2, bits, K), and where each channel's own bits lie (iterations, bits), by
    `context.feature_offset`. As uint64: negative offsets wrap, and wrap back when a position
    is added (the sum is always a canvas index), so that numba adds no check for negative
    indices. The kernels take one iteration's rows."""
    t = np.arange(len(features))
    fields = np.moveaxis(np.asarray(features, np.int64), -1, 0)
    reads = feature_offset(fields, t[:, None, None, None], bits, plane, width)
    own = feature_offset((0, np.arange(bits), 0, 0), t[:, None], bits, plane, width)
    reads, own = (np.ascontiguousarray(a, np.int64).view(np.uint64) for a in (reads, own))
    reads.flags.writeable = own.flags.writeable = False  # shared by the images of one size (ContextCoder)
    return reads, own


# Both kernels walk the steps with these helpers. `_step` is inlined by numba (its array
# views then cost nothing), `_bit` by LLVM: as fast as one hand-written loop, where both
# inlined by numba encoded 16 % slower and both by LLVM 10 % (depth 16, session 10).
@njit(cache=True, nogil=True, inline="always")
def _step(reads, own, positions0, positions1, table_t, step):
    """Step `step` of an iteration, colour step // bits then channel step % bits: its positions,
    its features' offsets, its table, and where its bits lie."""
    bits = own.shape[0]
    s, c = step // bits, step % bits
    return (positions0 if s == 0 else positions1), reads[s, c], table_t[s, c], own[c]


@njit(cache=True, nogil=True)
def _bit(canvas, offsets, table, base, position):
    """Where the step's bit at `position` lies, its context (the bits its K features read as a
    binary number, first highest: `context.context_index`) and its table entry q."""
    p = np.uint64(position)
    ctx = np.uint64(0)
    for j in range(offsets.shape[0]):
        ctx = (ctx << np.uint64(1)) | np.uint64(canvas[offsets[j] + p])
    return base + p, ctx, table[ctx]


@njit(cache=True, nogil=True)
def encode_iteration(canvas, reads, own, positions0, positions1, table_t, adaptive, out, record, steps,
                     weights, at, history, prefix, used, patterns, groups, near):
    """Code one iteration's bits: colour 0 then 1, channel 0..bits-1, positions in order; its
    first `steps` coding steps (2 x bits: all of them).

    canvas: flat uint8 (2 + iterations, bits, plane); reads, own: `step_offsets` of the
    iteration; positions0/1: flat indices of each colour's positions; table_t (2, bits, 2**K)
    int64, the iteration's table entries q; adaptive: refine them as coder id 2 does (`_entry`, `_learn`);
    out: uint32, at least `max_words` long; record: int64 like the canvas, where the q each bit
    was coded with is written (empty: not recorded). Coder ids 3 and 4: `weights` (int64,
    INPUTS long; empty: not mixed) and the mixer's state from `mix_setup` (`at`, the two tries,
    the history trie's nodes used; `groups`, coder id 4's cells, empty for coder id 3), changed
    in place. Returns the number of words written, or -1 if `out` is too short."""
    lower = np.uint64(0)
    rng = FULL
    held = 0  # words held back (constriction's "inverted situation")
    first_held = np.uint64(0)
    n = 0
    limit = out.shape[0] - 4
    cells, knots = np.empty(table_t.shape[2], np.int64), np.empty((MAPS, MAP_START.shape[0]), np.int32)
    key_shift = np.uint64(reads.shape[2] - min(reads.shape[2], KEY_BITS))  # K context bits keep KEY_BITS
    cell = f = np.int64(0)
    lo = key = np.uint64(0)
    mixing, back, prefix_used = weights.shape[0] > 0, _back(own, at), 1
    w0, w1, w2, w3, w4, w5, w6, w7 = _start_weights(weights)
    channel = np.int64(0)
    for step in range(steps):
        positions, offsets, table, base = _step(reads, own, positions0, positions1, table_t, step)
        if adaptive:
            _fresh_state(table, cells, knots)
        if mixing:
            patterns[:] = mix.FRESH
            channel = np.int64(step % own.shape[0])
        for i in range(positions.shape[0]):
            bit, ctx, q = _bit(canvas, offsets, table, base, positions[i])
            one = canvas[bit]
            q_table = q
            if adaptive:
                q, cell, lo, f, key = _entry(cells, knots, ctx, key_shift)
                _learn(cells, knots, ctx, cell, lo, f, key, one)
            if mixing:
                position = np.uint64(positions[i])
                q, inputs, where = _mix_entry(w0, w1, w2, w3, w4, w5, w6, w7, at, history, prefix, patterns, groups,
                                              canvas, near, bit, back, position, channel, q, q_table)
                w0, w1, w2, w3, w4, w5, w6, w7, used, prefix_used = _mix_learn(
                    w0, w1, w2, w3, w4, w5, w6, w7, at, history, prefix, patterns, groups, used, prefix_used, position,
                    inputs, where, np.int64(one))
            if record.shape[0]:
                record[bit] = q
            cut = _cut(np.uint64(q))
            scale = rng >> SHIFT
            if one:
                new_lower = lower + scale * cut
                rng = scale * (ONE - cut)
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
                rng = rng << WORD
                top = lower >> WORD
                lower = lower << WORD
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
    if mixing:  # the weights the chunk ends with (`mix` fits its starting weights from them)
        _keep_weights(weights, w0, w1, w2, w3, w4, w5, w6, w7)
    # seal: words that pin a point inside the final interval
    if rng == FULL:
        return n
    if n + held + 2 > out.shape[0]:
        return -1
    point = lower + WORD_MASK
    if held:
        n = _write_held(out, n, first_held, held, point < lower)
    point_word = point >> WORD
    out[n] = point_word
    n += 1
    if (lower + rng) >> WORD == point_word:
        out[n] = 0
        n += 1
    return n


@njit(cache=True, nogil=True)
def decode_iteration(canvas, reads, own, positions0, positions1, table_t, adaptive, words, steps,
                     weights, at, history, prefix, used, patterns, groups, near):
    """Decode one iteration's first `steps` coding steps into the canvas (the inverse of
    `encode_iteration`, same arguments but the chunk's uint32 `words`, the mixer's too). Returns 0 if `words` are
    exactly those `encode_iteration` writes for the bits decoded, else why not: 1 more words than
    it writes, 3 fewer (the decoder ran out of data: a chunk cut short, or decoded for more steps
    than it holds), 2 as many but not its (no encoder wrote them: a point outside the interval,
    or last words that are not its seal). The range coder's state and the count of words taken
    are the encoder's, so this takes no re-encoding (docs/ENTROPY.md, "The range coder, exactly")."""
    n_words = words.shape[0]
    point = np.uint64(0)
    for read in range(2):  # words past the end read as 0
        point = point << WORD
        if read < n_words:
            point = point | np.uint64(words[read])
    read = 2  # words the decoder has taken, those past the end included
    lower = np.uint64(0)
    rng = FULL
    cells, knots = np.empty(table_t.shape[2], np.int64), np.empty((MAPS, MAP_START.shape[0]), np.int32)
    key_shift = np.uint64(reads.shape[2] - min(reads.shape[2], KEY_BITS))
    ctx = np.uint64(0)
    cell = f = np.int64(0)
    lo = key = np.uint64(0)
    mixing, back, prefix_used = weights.shape[0] > 0, _back(own, at), 1
    w0, w1, w2, w3, w4, w5, w6, w7 = _start_weights(weights)
    channel = np.int64(0)
    position = np.uint64(0)
    inputs = (np.int64(0), np.int64(0), np.int64(0), np.int64(0), np.int64(0), np.int64(0), np.int64(0), np.int64(0))
    where = (np.uint64(0), np.uint64(0), np.uint64(0), np.uint64(0), np.uint64(0), np.int64(0))
    for step in range(steps):
        positions, offsets, table, base = _step(reads, own, positions0, positions1, table_t, step)
        if adaptive:
            _fresh_state(table, cells, knots)
        if mixing:
            patterns[:] = mix.FRESH
            channel = np.int64(step % own.shape[0])
        for i in range(positions.shape[0]):
            bit, ctx, q = _bit(canvas, offsets, table, base, positions[i])
            q_table = q
            if adaptive:
                q, cell, lo, f, key = _entry(cells, knots, ctx, key_shift)
            if mixing:
                position = np.uint64(positions[i])
                q, inputs, where = _mix_entry(w0, w1, w2, w3, w4, w5, w6, w7, at, history, prefix, patterns, groups,
                                              canvas, near, bit, back, position, channel, q, q_table)
            cut = _cut(np.uint64(q))
            scale = rng >> SHIFT
            x = point - lower
            if x >= scale << SHIFT:  # a quantile past 2**24: no encoder wrote this
                return 2
            threshold = scale * cut
            one = x >= threshold
            if one:
                canvas[bit] = 1
                lower = lower + threshold
                rng = scale * (ONE - cut)
            else:
                canvas[bit] = 0
                rng = threshold
            if adaptive:
                _learn(cells, knots, ctx, cell, lo, f, key, one)
            if mixing:
                w0, w1, w2, w3, w4, w5, w6, w7, used, prefix_used = _mix_learn(
                    w0, w1, w2, w3, w4, w5, w6, w7, at, history, prefix, patterns, groups, used, prefix_used, position,
                    inputs, where, np.int64(one))
            if rng < HEAD_ROOM:
                lower = lower << WORD
                rng = rng << WORD
                point = point << WORD
                if read < n_words:
                    point = point | np.uint64(words[read])
                read += 1
    if mixing:
        _keep_weights(weights, w0, w1, w2, w3, w4, w5, w6, w7)
    # the chunk must be the words the encoder writes for these bits: one per shift of the range
    # (read - 2 of them), then its seal, the point word and a word 0 if the top of the range
    # shares the point word (`encode_iteration`); nothing for no bit
    if rng == FULL:
        return 1 if n_words else 0
    point_word = (lower + WORD_MASK) >> WORD
    written = read - 1 + ((lower + rng) >> WORD == point_word)
    if n_words > written:
        return 1
    if n_words < written:
        return 3
    if point != point_word << WORD:  # the last words are not the seal
        return 2
    return 0


# -- the calls the context coder makes: one chunk at a time ----------------------------------------
NOT_RECORDED = np.empty(0, np.int64)


def _mixer(canvas: np.ndarray, positions, own_t: np.ndarray, weights, width: int, grouped: bool) -> tuple:
    """The kernels' mixer arguments for a chunk: its starting weights (an int64 array the kernels
    move, and leave at the chunk's final weights), `mix_setup`'s state, the step's pattern cells,
    the group model's cells (`grouped`: coder id 4; else none) and the neighbours' offsets (as
    uint64: they wrap back when added); none for an iteration that is not mixed."""
    if weights is None:
        return NOT_MIXED
    _, bits, plane = canvas.shape
    n = sum(p.size for p in positions)
    at, history, prefix, used, groups = mix_setup(canvas.reshape(-1).view(np.uint8), *positions, own_t, plane,
                                                  mix.capacity(n, bits), grouped)
    cells = np.full(groups * bits, mix.FRESH, np.int32) if grouped else NO_NODES
    near = mix.neighbours(width).view(np.uint64)
    return weights, at, history, prefix, used, np.empty(mix.PATTERN_CELLS, np.int32), cells, near


def encode_chunk(canvas: np.ndarray, positions, reads_t: np.ndarray, own_t: np.ndarray, table_t: np.ndarray,
                 adaptive: bool = False, record: np.ndarray = NOT_RECORDED, steps: int = 0, mix_weights=None,
                 width: int = 0, grouped: bool = False) -> bytes:
    """The chunk of one iteration of a painted canvas (bool, (2 + iterations, bits, plane)):
    constriction's words, little-endian. `reads_t`, `own_t`: that iteration's `step_offsets`;
    `table_t` (2, bits, 2**K) int64: its table; `adaptive`: coder id 2's map; `record`: the
    canvas's shape, int64, to receive the q each bit was coded with; `steps`: the first coding
    steps alone (0: all, 2 x bits); `mix_weights`: coder id 3's or 4's weights of this iteration,
    int64 (None: not mixed; left at the chunk's final weights), on canvas planes `width` wide;
    `grouped`: with coder id 4's group model."""
    _, bits, _ = canvas.shape
    out = np.empty(max_words(bits * sum(p.size for p in positions)), np.uint32)
    n = encode_iteration(canvas.reshape(-1).view(np.uint8), reads_t, own_t, *positions, table_t, adaptive, out,
                         record.reshape(-1), steps or 2 * bits, *_mixer(canvas, positions, own_t, mix_weights, width, grouped))
    if n < 0:  # cannot happen for tables within 1 .. 2**15 - 1 (max_words); never write past the buffer
        raise RuntimeError("range coder output longer than its bound")
    return out[:n].astype("<u4").tobytes()


def decode_chunk(canvas: np.ndarray, positions, reads_t: np.ndarray, own_t: np.ndarray, table_t: np.ndarray,
                 chunk: bytes, adaptive: bool = False, steps: int = 0, mix_weights=None, width: int = 0,
                 grouped: bool = False) -> int:
    """Decode a chunk into its iteration of the canvas (whose earlier iterations hold the bits
    decoded before), its first `steps` coding steps (0: all). Returns `decode_iteration`'s
    status: 0 ok, 1 words left over, 2 not the encoder's words, 3 too few words."""
    words = np.frombuffer(chunk, "<u4").astype(np.uint32)
    return decode_iteration(canvas.reshape(-1).view(np.uint8), reads_t, own_t, *positions, table_t, adaptive, words,
                            steps or 2 * canvas.shape[1], *_mixer(canvas, positions, own_t, mix_weights, width, grouped))
