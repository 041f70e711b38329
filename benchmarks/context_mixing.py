"""Would logistic mixing of more context models code the shipped model's bits in fewer bits than coder id 2?

    python benchmarks/context_mixing.py --data ../shared/data/kodak --data ../shared/data/photos/val \
        --images 0 --fit ../shared/data/train --fit ../shared/data/photos/train --fit-images 3
    python benchmarks/context_mixing.py --data ../shared/data/kodak --speed [--fit ...]

A float prototype, measuring ideal code lengths (the sum of -log2 p over the bits), of issue 16's
"context model" lever (docs/ENTROPY.md, "Context mixing"). The adaptive coder (coder id 2) codes
each bit with q', its table entry refined by a context state and two adaptive maps per step. The
prototype keeps stretch(q') as one input of a PAQ-style logistic mixer (a weight vector learned
online, squashed; optionally an adaptive probability map, APM, after it) and adds adaptive
context models over what the K = 10 table bits cannot hold, each an input `stretch(p)`:

* `table`: the bare table entry;
* `history`: the same channel at the same position one, two and three iterations back;
* same-step neighbours (`step`, `step shared`, `step pattern`, `pattern2`): the same channel,
  this iteration, at the four same-colour positions the step has already coded (up-left,
  up-right, two up, two left; the kernels code a step's positions in order, so a decoder has
  them, but the tables, whose contexts a step computes before coding it, cannot read them),
  as counts, as a pattern, and with the same positions one iteration back;
* `cross`: the four direct neighbours of the first colour (second colour only), this iteration;
* `block`: how many of the channels already coded at this position changed since the previous
  iteration, with the quantized q';
* vector models (hashed): the block's 32 bits of the previous iteration (and the one before) with
  its bits coded so far this iteration, the channel's index, ...;
* `match`: the bit of the last position whose block had the same 64 bits in the two previous
  iterations, while their bits agree this iteration.

Every model's state and the mixer start afresh at every iteration (chunk), as coder id 2's do,
so chunk t still depends on iterations <= t only; the mixer starts as coder id 2 (weight 1 on q'),
or with `--fit`, from weights fitted on training images (the mean of the mixer's final weights
per iteration on their codes; never the measured sets). The codes and the MS-SSIM per depth come
from `benchmarks/context_tables.py`'s cache (the network runs once per image when missing); q'
of every bit is recorded by the real kernels (`fastcoder.encode_chunk`), so the baseline is
exactly what coder id 2 codes with. Per set it prints, for each variant, the BD-rate (MS-SSIM in
dB, depths 1-16: the MS-SSIM of a depth does not change, only its rate) against coder id 2's
ideal lengths, and the rate change at depths 1 / 2 / 4 / 8 / 16.

`--speed` times an integer sketch of one design (`integer_mix_iteration`: the 6-input mixer of
iterations 1-4, tables instead of log and exp, what a coder's kernels would run beside coder id
2's state) against coder id 2's kernels on the first image of each set, one thread, CPU time.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
from numba import njit

sys.path.insert(0, str(Path(__file__).parent))
from context_tables import cached_codes, folder_codes, shipped_codes  # noqa: E402

from rgbatch import fastcoder  # noqa: E402
from rgbatch.bench import bd_rate, msssim_db  # noqa: E402
from rgbatch.codec import Codec  # noqa: E402
from rgbatch.context import MAX_LOOKBACK, PROBABILITY_BITS, Canvas, ContextModel  # noqa: E402
from rgbatch.train import list_images  # noqa: E402

# inputs of the mixer, a bit each in a variant's `inputs` mask
(ADAPTIVE, TABLE, HISTORY, STEP, CROSS, BLOCK, VECTOR, VECTOR2, STEP_SHARED, STEP_PATTERN, VECTOR0, PREFIX,
 PATTERN2, MATCH) = (1 << i for i in range(14))
INPUTS = 14
HASH_BITS = 18  # slots of the vector models' hash tables
# what chooses the mixer's weight vector: one for all bits, or one per step (colour, channel)
SELECT_NONE, SELECT_STEP = 0, 1

STRETCH_LIMIT = 8.0  # |stretch(p)| at most 8: p in 3.4e-4 .. 1 - 3.4e-4
P_MIN = 1.0 / 2 ** PROBABILITY_BITS  # what the range coder can code


@njit(cache=True)
def stretch(p):
    return min(max(math.log(p / (1.0 - p)), -STRETCH_LIMIT), STRETCH_LIMIT)


@njit(cache=True)
def squash(x):
    return 1.0 / (1.0 + math.exp(-x))


@njit(cache=True)
def learn_state(p, n, slot, bit, limit):
    """An adaptive context model's cell: probability p[slot] after n[slot] bits, moved 1/(n + 1.5)
    of the way to the bit (at least 1/limit)."""
    p[slot] += (bit - p[slot]) / min(n[slot] + 1.5, limit)
    n[slot] += 1


@njit(cache=True, inline="always")
def _step(st, bits, plane, ti, positions0, positions1):
    """Step st of canvas iteration ti: its colour, channel, positions, and where its bits and the
    same channel's bits one iteration back start in the flat canvas."""
    s, c = st // bits, st % bits
    return s, c, (positions0 if s == 0 else positions1), (ti * bits + c) * plane, ((ti - 1) * bits + c) * plane


@njit(cache=True)
def _slot(p, n, check, row, key):
    """The slot of a hashed key in row `row` of the vector models' tables; a cell another key
    held starts afresh."""
    slot = (key >> 20) & (p.shape[1] - 1)
    if check[row, slot] != key:
        check[row, slot] = key
        p[row, slot] = 0.5
        n[row, slot] = 0
    return slot


@njit(cache=True)
def mix_iteration(canvas, plane, width, bits, t, positions0, positions1, q_adaptive, q_table, inputs, select,
                  rate, limit, apm_rate, out, start, final, match):
    """Ideal code length (bits) of iteration t of the canvas under the mixer; `out` gets each
    bit's length at its canvas index (q_adaptive, q_table: the entries coder id 2 and the table give).
    Each bit's probability reads only what the decoder has when it decodes it."""
    ti = MAX_LOOKBACK + t
    # the adaptive models, fresh for the chunk: probability and count per context
    history = np.full(2 * bits * 8, 0.5)
    history_n = np.zeros(2 * bits * 8)
    step = np.full(2 * bits * 2 * 5 * 5, 0.5)
    step_n = np.zeros(2 * bits * 2 * 5 * 5)
    cross = np.full(2 * bits * 2 * 5 * 5, 0.5)
    cross_n = np.zeros(2 * bits * 2 * 5 * 5)
    shared = np.full(2 * 12 * 5 * 5, 0.5)
    shared_n = np.zeros(2 * 12 * 5 * 5)
    pattern = np.full(2 * bits * 2 * 16, 0.5)
    pattern_n = np.zeros(2 * bits * 2 * 16)
    block = np.full(2 * 4 * 4 * 2 * 12, 0.5)
    block_n = np.zeros(2 * 4 * 4 * 2 * 12)
    sets = 2 * bits if select == SELECT_STEP else 1
    # the vector models: a hashed cell per (channel, the block's bits one (and two) iterations
    # back, the channels already coded at the block this iteration); a check word per slot
    slots = 1 << HASH_BITS
    vec_p = np.full((4, slots), 0.5)  # rows: v1 + prefix, v1 + v2 + prefix, v1 alone, prefix + b1
    vec_n = np.zeros((4, slots), np.int64)
    vec_check = np.full((4, slots), -1, np.int64)
    pattern2 = np.full(2 * bits * 256, 0.5)
    pattern2_n = np.zeros(2 * bits * 256)
    # the match model: the position `match[p]` coded before p whose block had the same bits one
    # and two iterations back; predicts its bit while its bits this iteration agreed with p's
    matched = np.full(2 * 2 * 4 + 1, 0.5)
    matched_n = np.zeros(2 * 2 * 4 + 1)
    agree = np.ones(plane, np.uint8)
    weights = np.zeros((sets, INPUTS + 1))
    if start.shape[0] > t:  # given starting weights per iteration
        weights[:] = start[t]
    else:
        weights[:, 0] = 1.0  # start as coder id 2
    apm = np.empty((2 * bits, 33))
    for i in range(33):
        apm[:, i] = squash((i - 16) / 2.0)
    x = np.zeros(INPUTS + 1)
    total = 0.0
    for st in range(2 * bits):
        s, c, positions, own, prev = _step(st, bits, plane, ti, positions0, positions1)
        for i in range(positions.shape[0]):
            p = positions[i]
            bit = canvas[own + p]
            b1 = canvas[prev + p]
            b2 = canvas[prev - bits * plane + p]
            b3 = canvas[prev - 2 * bits * plane + p] if ti >= 3 else 0
            # the step's earlier positions of the same colour: ones and changes since t-1
            sn = 0
            sf = 0
            sp = 0
            sp2 = 0
            for d in (-width - 1, -width + 1, -2 * width, -2):
                v = canvas[own + p + d]
                sn += v
                sp = sp << 1 | v
                sp2 = (sp2 << 2) | (v << 1) | canvas[prev + p + d]
                sf += v != canvas[prev + p + d]
            # second colour: the four direct neighbours, coded in the first pass
            dn = 0
            df = 0
            if s == 1:
                for d in (-width, width, -1, 1):
                    v = canvas[own + p + d]
                    dn += v
                    df += v != canvas[prev + p + d]
            # channels already coded at this position, this iteration: how many changed
            nf = 0
            for k in range(c):
                nf += canvas[(ti * bits + k) * plane + p] != canvas[((ti - 1) * bits + k) * plane + p]
            flips = 0 if c == 0 else min(1 + (4 * nf) // (c + 1), 4)  # 0: none coded yet
            # the block's 32 bits one and two iterations back and its prefix this iteration
            v1 = np.int64(0)
            v2 = np.int64(0)
            pre = np.int64(1)
            for k in range(bits):
                v1 = (v1 << 1) | canvas[((ti - 1) * bits + k) * plane + p]
                v2 = (v2 << 1) | canvas[((ti - 2) * bits + k) * plane + p]
                if k < c:
                    pre = (pre << 1) | canvas[(ti * bits + k) * plane + p]
            key1 = (v1 * np.int64(0x9E3779B97F4A7C15) + pre * np.int64(0xC2B2AE3D27D4EB4F) + c) * np.int64(0x165667B19E3779F9)
            key2 = (key1 + v2 * np.int64(0x27D4EB2F165667C5)) * np.int64(0x9E3779B97F4A7C15)
            key0 = (v1 * np.int64(0x9E3779B97F4A7C15) + c + 1) * np.int64(0xC2B2AE3D27D4EB4F)
            key3 = (pre * np.int64(0x165667B19E3779F9) + (c << 1 | b1) + 7) * np.int64(0x27D4EB2F165667C5)
            slot1 = _slot(vec_p, vec_n, vec_check, 0, key1)
            slot2 = _slot(vec_p, vec_n, vec_check, 1, key2)
            slot0 = _slot(vec_p, vec_n, vec_check, 2, key0)
            slot3 = _slot(vec_p, vec_n, vec_check, 3, key3)
            qa = q_adaptive[own + p] / 2.0 ** PROBABILITY_BITS
            qt = q_table[own + p] / 2.0 ** PROBABILITY_BITS
            sa = stretch(qa)
            h = (st * 8) + (b1 << 2 | b2 << 1 | b3)
            g = ((st * 2 + b1) * 5 + sn) * 5 + min(sf, 4)
            r = ((st * 2 + b1) * 5 + dn) * 5 + min(df, 4)
            qb = min(max(int((sa + 6.0) / 1.0), 0), 11)
            b = (((s * 4 + min(c // 8, 3)) * 4 + min(flips, 3)) * 2 + b1) * 12 + qb
            x[0] = sa if inputs & ADAPTIVE else 0.0
            x[1] = stretch(qt) if inputs & TABLE else 0.0
            x[2] = stretch(history[h]) if inputs & HISTORY else 0.0
            x[3] = stretch(step[g]) if inputs & STEP else 0.0
            x[4] = stretch(cross[r]) if inputs & CROSS and s == 1 else 0.0
            x[5] = stretch(block[b]) if inputs & BLOCK else 0.0
            x[6] = stretch(vec_p[0, slot1]) if inputs & VECTOR else 0.0
            x[7] = stretch(vec_p[1, slot2]) if inputs & VECTOR2 else 0.0
            e = ((s * 12 + qb) * 5 + sn) * 5 + min(sf, 4)
            m = (st * 2 + b1) * 16 + sp
            x[8] = stretch(shared[e]) if inputs & STEP_SHARED else 0.0
            x[9] = stretch(pattern[m]) if inputs & STEP_PATTERN else 0.0
            m2 = st * 256 + sp2
            x[10] = stretch(vec_p[2, slot0]) if inputs & VECTOR0 else 0.0
            x[11] = stretch(vec_p[3, slot3]) if inputs & PREFIX else 0.0
            x[12] = stretch(pattern2[m2]) if inputs & PATTERN2 else 0.0
            q_match = match[p]
            if q_match >= 0:
                mm = ((canvas[own + q_match] * 2 + agree[p]) * 4) + c // 8
            else:
                mm = 16
            x[13] = stretch(matched[mm]) if inputs & MATCH else 0.0
            x[14] = 0.25
            w = weights[st if select == SELECT_STEP else 0]
            z = 0.0
            for j in range(INPUTS + 1):
                z += w[j] * x[j]
            pm = squash(z)
            if apm_rate > 0:
                a = (min(max(z, -7.999), 7.999) + 8.0) * 2.0
                lo = int(a)
                f = a - lo
                pa = apm[st, lo] * (1 - f) + apm[st, lo + 1] * f
                apm[st, lo] += (bit - apm[st, lo]) * apm_rate * (1 - f)
                apm[st, lo + 1] += (bit - apm[st, lo + 1]) * apm_rate * f
                pf = 0.5 * pm + 0.5 * pa
            else:
                pf = pm
            pf = min(max(pf, P_MIN), 1.0 - P_MIN)
            length = -math.log2(pf if bit else 1.0 - pf)
            out[own + p] = length
            total += length
            err = bit - pm
            for j in range(INPUTS + 1):
                w[j] += rate * err * x[j]
            learn_state(history, history_n, h, bit, limit)
            learn_state(step, step_n, g, bit, limit)
            learn_state(cross, cross_n, r, bit, limit)
            learn_state(block, block_n, b, bit, limit)
            learn_state(shared, shared_n, e, bit, limit)
            learn_state(pattern, pattern_n, m, bit, limit)
            learn_state(vec_p[0], vec_n[0], slot1, bit, limit)
            learn_state(vec_p[1], vec_n[1], slot2, bit, limit)
            learn_state(vec_p[2], vec_n[2], slot0, bit, limit)
            learn_state(vec_p[3], vec_n[3], slot3, bit, limit)
            learn_state(pattern2, pattern2_n, m2, bit, limit)
            learn_state(matched, matched_n, mm, bit, limit)
            if q_match >= 0 and canvas[own + q_match] != bit:
                agree[p] = 0
    if final.shape[0] > t:  # the mean weights at the end of the chunk
        for j in range(INPUTS + 1):
            final[t, j] = weights[:, j].mean()
    return total


# -- an integer sketch of the 6-input design, to measure what it would cost a coder -------------------
# stretch in 8 fractional bits (|x| <= 3071, logits within +-12), probabilities in 16 bits; tables
# instead of log/exp, as a coder's kernels would have them (one definition on every machine)
ST_MAX = 3071
STRETCH_Q = np.clip(np.round(256 * np.log(np.maximum(np.arange(2 ** PROBABILITY_BITS), 0.5)
                                          / (2 ** PROBABILITY_BITS - np.arange(2 ** PROBABILITY_BITS)))),
                    -ST_MAX, ST_MAX).astype(np.int32)  # per 15-bit q
SQUASH16 = np.clip(np.round(65536 / (1 + np.exp(-np.arange(-ST_MAX - 1, ST_MAX + 1) / 256))), 2, 65534).astype(np.int32)
RECIPROCAL16 = (65536 / (np.arange(4096) + 1.5)).astype(np.int32)  # a cell's rate after n bits
CELL_LIMIT = 254  # from then on 1/255.5 (the float prototype: 1/255)
SMALL_INPUTS = 7  # q', table, step pattern, pattern2, vector2, prefix, bias


@njit(cache=True, inline="always")
def _cell_stretch(cells, i):
    return np.int64(STRETCH_Q[(cells[i] >> 16) >> 1])


@njit(cache=True, inline="always")
def _cell_learn(cells, i, bit):
    """A cell is p16 << 16 | count: p moves 1/(count + 1.5) of the way to the bit."""
    p, n = cells[i] >> 16, cells[i] & 0xffff
    p += (((bit << 16) - bit - p) * np.int64(RECIPROCAL16[n]) + 32768) >> 16
    cells[i] = (p << 16) | min(n + 1, CELL_LIMIT)


@njit(cache=True, inline="always")
def _probe(table, checks, key, slot_bits):
    """The slot of a hashed key: its cell, reset when another key held it."""
    slot = np.int64(np.uint64(key) >> np.uint64(64 - slot_bits))
    check = np.int32((key >> 8) & 0x7fffffff)
    if checks[slot] != check:
        checks[slot] = check
        table[slot] = np.int64(32768) << 16
    return slot


@njit(cache=True, inline="always")
def _descend(children, cells, node, bit, used):
    """The child of trie node `node` along `bit`, made (its cell fresh) the first time; returns
    (child, nodes used)."""
    child = children[2 * node + bit]
    if child < 0:
        child = used
        children[2 * node + bit] = child
        cells[child] = np.int64(32768) << 16
        used += 1
    return child, used


@njit(cache=True, inline="always")
def _group_roots(keys, order, cells, at):
    """One trie root (a fresh cell) per distinct history key, by one sort; `at[position]` gets its
    root. Returns the roots made."""
    by_key = np.argsort(keys)
    used = 0
    for j in range(order.shape[0]):
        if j == 0 or keys[by_key[j]] != keys[by_key[j - 1]]:
            cells[used] = np.int64(32768) << 16
            used += 1
        at[order[by_key[j]]] = used - 1
    return used


# how the sketch finds the cells of its two block-history models (vector2, prefix)
UNHASHED, HASHED, TRIE = 0, 1, 2


@njit(cache=True)
def integer_mix_iteration(canvas, plane, width, bits, t, positions0, positions1, q_adaptive, q_table, start, measure,
                          hashed, patterns=True):
    """The 6-input mixer of iteration t in integers (what a coder would run beside coder id 2's
    state; q' and the table entry are read from what the kernels recorded). Returns the ideal
    length of the iteration's bits when `measure` (else 0: timing only). `hashed`: how the two
    block-history models find their cells: UNHASHED leaves them out (their inputs 0: what the
    rest costs), HASHED probes hash tables keyed by the history and the prefix, TRIE walks
    dense tries instead (the same cells without collisions: a node per (history group, prefix
    so far), groups labelled once per chunk, one array step a bit). Without `patterns`, the two
    same-step pattern models are left out (their inputs 0): the 4-input design."""
    ti = MAX_LOOKBACK + t
    n = positions0.shape[0] + positions1.shape[0]
    slot_bits = 1
    while (1 << slot_bits) < 2 * n * bits:
        slot_bits += 1
    vector = np.empty(1 << slot_bits, np.int64)
    vector_check = np.full(1 << slot_bits, -1, np.int32)
    prefix_cells = np.empty(1 << slot_bits, np.int64)
    prefix_check = np.full(1 << slot_bits, -1, np.int32)
    pattern = np.empty(2 * 16, np.int64)
    pattern2 = np.empty(256, np.int64)
    weights = start.copy()
    x = np.zeros(SMALL_INPUTS, np.int64)
    # the block's bits one and two iterations back, and its prefix this iteration, per position
    v1 = np.zeros(plane, np.int64)
    v2 = np.zeros(plane, np.int64)
    prefix = np.ones(plane, np.int64)
    for positions in (positions0, positions1):
        for i in range(positions.shape[0]):
            p = positions[i]
            a = np.int64(0)
            b = np.int64(0)
            for k in range(bits):
                a = (a << 1) | canvas[((ti - 1) * bits + k) * plane + p]
                b = (b << 1) | canvas[((ti - 2) * bits + k) * plane + p]
            v1[p] = a
            v2[p] = b
    # TRIE: every position's node in the history trie (roots: its group of equal (v1, v2)) and in
    # the prefix trie (one root), walked down one level per channel coded
    nodes = n * (bits + 1) + 1
    children = np.full(2 * nodes if hashed == TRIE else 0, -1, np.int32)
    history_cells = np.empty(nodes if hashed == TRIE else 0, np.int64)
    prefix_children = np.full(2 * nodes if hashed == TRIE else 0, -1, np.int32)
    prefix_tree = np.empty(2 * nodes if hashed == TRIE else 0, np.int64)  # a cell per (node, b1)
    at = np.zeros(plane if hashed == TRIE else 0, np.int32)
    at_prefix = np.zeros(plane if hashed == TRIE else 0, np.int32)
    used = 0
    prefix_used = 1
    if hashed == TRIE:
        order = np.concatenate((positions0, positions1))
        used = _group_roots((v1[order] << 32) | v2[order], order, history_cells, at)
        prefix_tree[0] = prefix_tree[1] = np.int64(32768) << 16
    total = 0.0
    for st in range(2 * bits):
        s, c, positions, own, prev = _step(st, bits, plane, ti, positions0, positions1)
        pattern[:] = np.int64(32768) << 16
        pattern2[:] = np.int64(32768) << 16
        for i in range(positions.shape[0]):
            p = positions[i]
            bit = np.int64(canvas[own + p])
            b1 = (v1[p] >> (bits - 1 - c)) & 1
            sp = np.int64(0)
            sp2 = np.int64(0)
            if patterns:
                for d in (-width - 1, -width + 1, -2 * width, -2):
                    v = np.int64(canvas[own + p + d])
                    sp = sp << 1 | v
                    sp2 = (sp2 << 2) | (v << 1) | canvas[prev + p + d]
            g = b1 * 16 + sp
            x[0] = STRETCH_Q[q_adaptive[own + p]]
            x[1] = STRETCH_Q[q_table[own + p]]
            x[2] = _cell_stretch(pattern, g) if patterns else 0
            x[3] = _cell_stretch(pattern2, sp2) if patterns else 0
            if hashed == HASHED:
                key = (v1[p] * np.int64(-7046029254386353131) + v2[p] * np.int64(0x27D4EB2F165667C5)
                       + prefix[p] * np.int64(0x165667B19E3779F9) + c) * np.int64(-4417276706812531889)
                kp = (prefix[p] * np.int64(0x27D4EB2F165667C5) + (c << 1 | b1) + 7) * np.int64(-7046029254386353131)
                hv = _probe(vector, vector_check, key, slot_bits)
                hp = _probe(prefix_cells, prefix_check, kp, slot_bits)
                x[4] = _cell_stretch(vector, hv)
                x[5] = _cell_stretch(prefix_cells, hp)
            elif hashed == TRIE:
                hv = np.int64(at[p])
                hp = 2 * np.int64(at_prefix[p]) + b1
                x[4] = _cell_stretch(history_cells, hv)
                x[5] = _cell_stretch(prefix_tree, hp)
            else:
                hv = hp = 0
                x[4] = x[5] = 0
            x[6] = 64
            dot = np.int64(0)
            for j in range(SMALL_INPUTS):
                dot += weights[j] * x[j]
            dot = min(max(dot >> 16, -ST_MAX - 1), ST_MAX)
            p16 = np.int64(SQUASH16[dot + ST_MAX + 1])
            q = min(max(p16 >> 1, 1), 2 ** PROBABILITY_BITS - 1)  # what the range coder would code
            if measure:
                total -= math.log2(q / 2 ** PROBABILITY_BITS if bit else 1 - q / 2 ** PROBABILITY_BITS)
            err = (bit << 16) - p16
            for j in range(SMALL_INPUTS):
                weights[j] += (x[j] * err + 65536) >> 17
            if patterns:
                _cell_learn(pattern, g, bit)
                _cell_learn(pattern2, sp2, bit)
            if hashed == HASHED:
                _cell_learn(vector, hv, bit)
                _cell_learn(prefix_cells, hp, bit)
            elif hashed == TRIE:
                _cell_learn(history_cells, hv, bit)
                _cell_learn(prefix_tree, hp, bit)
                child, used = _descend(children, history_cells, at[p], bit, used)
                at[p] = child
                node = prefix_children[2 * at_prefix[p] + bit]
                if node < 0:  # a new prefix: its two cells (b1 = 0, 1) fresh
                    node = prefix_used
                    prefix_children[2 * at_prefix[p] + bit] = node
                    prefix_tree[2 * node] = prefix_tree[2 * node + 1] = np.int64(32768) << 16
                    prefix_used += 1
                at_prefix[p] = node
            prefix[p] = (prefix[p] << 1) | bit
    return total


@njit(cache=True)
def lean_mix_iteration(canvas, plane, bits, t, positions0, positions1, q_adaptive, q_table, start, measure,
                       final=np.zeros(0, np.int64), rate_shift=17, cell_limit=CELL_LIMIT):
    """The 4-input design (q', the table entry, the two block-history models as tries, and a
    bias) written for speed: the inputs and weights in locals, each position's history read
    channel by channel (a plane at a time), the trie cells and children in small int arrays.
    The same arithmetic as `integer_mix_iteration(..., TRIE, patterns=False)` with its weights
    x[2], x[3] left out; returns the ideal length when `measure`; `final` (7 long, if given)
    receives the weights at the end of the chunk; `rate_shift`, `cell_limit`: the mixer's rate
    (2**-rate_shift) and the cells' count limit, for session 26's variants (docs/ENTROPY.md)."""
    ti = MAX_LOOKBACK + t
    order = np.concatenate((positions0, positions1))
    n = order.shape[0]
    keys = np.zeros(n, np.int64)
    for k in range(bits):  # the blocks' 64 bits of iterations t-1 and t-2, a plane at a time
        one, two = ((ti - 1) * bits + k) * plane, ((ti - 2) * bits + k) * plane
        for j in range(n):
            keys[j] = (keys[j] << 1) | canvas[one + order[j]]
    for k in range(bits):
        two = ((ti - 2) * bits + k) * plane
        for j in range(n):
            keys[j] = keys[j] ^ (np.int64(canvas[two + order[j]]) << (32 + (k & 31)))
    nodes = n * (bits + 1) + 1
    children = np.full(2 * nodes, -1, np.int32)
    cells = np.empty(nodes, np.int64)
    prefix_children = np.full(2 * nodes, -1, np.int32)
    prefix_cells = np.empty(2 * nodes, np.int64)
    at = np.empty(plane, np.int32)
    at_prefix = np.zeros(plane, np.int32)
    used = _group_roots(keys, order, cells, at)
    prefix_cells[0] = prefix_cells[1] = np.int64(32768) << 16
    prefix_used = 1
    w0, w1, w4, w5, w6 = start[0], start[1], start[4], start[5], start[6]
    total = 0.0
    for st in range(2 * bits):
        s, c = st // bits, st % bits
        positions = positions0 if s == 0 else positions1
        own, prev = (ti * bits + c) * plane, ((ti - 1) * bits + c) * plane
        for i in range(positions.shape[0]):
            p = positions[i]
            bit = np.int64(canvas[own + p])
            b1 = np.int64(canvas[prev + p])
            node = at[p]
            pnode = at_prefix[p]
            hp = 2 * pnode + b1
            x0 = np.int64(STRETCH_Q[q_adaptive[own + p]])
            x1 = np.int64(STRETCH_Q[q_table[own + p]])
            c4, c5 = cells[node], prefix_cells[hp]
            x4 = np.int64(STRETCH_Q[(c4 >> 16) >> 1])
            x5 = np.int64(STRETCH_Q[(c5 >> 16) >> 1])
            dot = (w0 * x0 + w1 * x1 + w4 * x4 + w5 * x5 + w6 * 64) >> 16
            dot = min(max(dot, -ST_MAX - 1), ST_MAX)
            p16 = np.int64(SQUASH16[dot + ST_MAX + 1])
            if measure:
                q = min(max(p16 >> 1, 1), 2 ** PROBABILITY_BITS - 1)
                total -= math.log2(q / 2 ** PROBABILITY_BITS if bit else 1 - q / 2 ** PROBABILITY_BITS)
            err = (bit << 16) - p16
            half = np.int64(1) << (rate_shift - 1)
            w0 += (x0 * err + half) >> rate_shift
            w1 += (x1 * err + half) >> rate_shift
            w4 += (x4 * err + half) >> rate_shift
            w5 += (x5 * err + half) >> rate_shift
            w6 += (64 * err + half) >> rate_shift
            target = (bit << 16) - bit
            p4, n4 = c4 >> 16, c4 & 0xffff
            cells[node] = ((p4 + (((target - p4) * np.int64(RECIPROCAL16[n4]) + 32768) >> 16)) << 16) | min(n4 + 1, cell_limit)
            p5, n5 = c5 >> 16, c5 & 0xffff
            prefix_cells[hp] = ((p5 + (((target - p5) * np.int64(RECIPROCAL16[n5]) + 32768) >> 16)) << 16) | min(n5 + 1, cell_limit)
            child = children[2 * node + bit]
            if child < 0:
                child = used
                children[2 * node + bit] = child
                cells[child] = np.int64(32768) << 16
                used += 1
            at[p] = child
            child = prefix_children[2 * pnode + bit]
            if child < 0:
                child = prefix_used
                prefix_children[2 * pnode + bit] = child
                prefix_cells[2 * child] = prefix_cells[2 * child + 1] = np.int64(32768) << 16
                prefix_used += 1
            at_prefix[p] = child
    if final.shape[0]:
        final[0], final[1], final[4], final[5], final[6] = w0, w1, w4, w5, w6
    return total


# name: (inputs, weight selection, mixer rate, state rate limit, APM rate, iterations mixed (0: all;
# later ones are coded as coder id 2 codes them))
SAME_STEP = STEP | STEP_SHARED | STEP_PATTERN | PATTERN2
VECTORS = VECTOR | VECTOR2 | VECTOR0 | PREFIX
ALL = (1 << INPUTS) - 1
VARIANTS = {
    "coder id 2 through the mixer alone": (ADAPTIVE, SELECT_NONE, 0.002, 255.0, 0.0, 0),
    "+ table": (ADAPTIVE | TABLE, SELECT_NONE, 0.002, 255.0, 0.0, 0),
    "+ history, cross, block": (ADAPTIVE | HISTORY | CROSS | BLOCK, SELECT_NONE, 0.002, 255.0, 0.0, 0),
    "+ same-step neighbours (4 models)": (ADAPTIVE | SAME_STEP, SELECT_NONE, 0.002, 255.0, 0.0, 0),
    "+ vector models (4)": (ADAPTIVE | VECTORS, SELECT_NONE, 0.002, 255.0, 0.0, 0),
    "all (14 inputs)": (ALL, SELECT_NONE, 0.002, 255.0, 0.0, 0),
    "all, APM": (ALL, SELECT_NONE, 0.002, 255.0, 0.02, 0),
    "all, weights per step": (ALL, SELECT_STEP, 0.002, 255.0, 0.0, 0),
    "all, iterations 1-4 only": (ALL, SELECT_NONE, 0.002, 255.0, 0.0, 4),
    "+ table, same-step, vectors (10 inputs), iterations 1-4 only":
        (ADAPTIVE | TABLE | SAME_STEP | VECTORS, SELECT_NONE, 0.002, 255.0, 0.0, 4),
    "+ table, step pattern, pattern2, vector2, prefix (6 inputs), iterations 1-4 only":
        (ADAPTIVE | TABLE | STEP_PATTERN | PATTERN2 | VECTOR2 | PREFIX, SELECT_NONE, 0.002, 255.0, 0.0, 4),
    "+ table, step pattern, pattern2 (4 inputs, no hashing), iterations 1-4 only":
        (ADAPTIVE | TABLE | STEP_PATTERN | PATTERN2, SELECT_NONE, 0.002, 255.0, 0.0, 4),
    "+ match": (ADAPTIVE | MATCH, SELECT_NONE, 0.002, 255.0, 0.0, 0),
    "+ table, step pattern, pattern2, match (5 inputs), iterations 1-4 only":
        (ADAPTIVE | TABLE | STEP_PATTERN | PATTERN2 | MATCH, SELECT_NONE, 0.002, 255.0, 0.0, 4),
    "+ table, vector2, prefix (4 inputs), iterations 1-4 only":
        (ADAPTIVE | TABLE | VECTOR2 | PREFIX, SELECT_NONE, 0.002, 255.0, 0.0, 4),
    "+ vector2, prefix (3 inputs), iterations 1-4 only": (ADAPTIVE | VECTOR2 | PREFIX, SELECT_NONE, 0.002, 255.0, 0.0, 4),
    "+ table, vector models (6 inputs), iterations 1-4 only": (ADAPTIVE | TABLE | VECTORS, SELECT_NONE, 0.002, 255.0, 0.0, 4),
    "+ table, vector models (6 inputs)": (ADAPTIVE | TABLE | VECTORS, SELECT_NONE, 0.002, 255.0, 0.0, 0),
}

# the variants --fit also measures with fitted starting weights
FITTED = ("all (14 inputs)", "all, iterations 1-4 only", "+ table, same-step, vectors (10 inputs), iterations 1-4 only",
          "+ table, step pattern, pattern2, vector2, prefix (6 inputs), iterations 1-4 only",
          "+ table, step pattern, pattern2 (4 inputs, no hashing), iterations 1-4 only",
          "+ table, step pattern, pattern2, match (5 inputs), iterations 1-4 only",
          "+ table, vector2, prefix (4 inputs), iterations 1-4 only", "+ vector2, prefix (3 inputs), iterations 1-4 only",
          "+ table, vector models (6 inputs), iterations 1-4 only", "+ table, vector models (6 inputs)")


def coded_entries(codes, model: ContextModel):
    """An image's canvas (`context.Canvas`) and the entries coder id 2 (True) and the bare tables
    (False) code each bit with, as the kernels record them (int64, shaped like the canvas)."""
    layout = Canvas(tuple(c.shape[1:] for c in codes))
    canvas = layout.paint(codes)
    reads, own = fastcoder.step_offsets(model.features, model.bits, layout.height * layout.width, layout.width)
    entries = {}
    for adaptive in (True, False):
        entries[adaptive] = np.ones(canvas.shape, np.int64)
        for t in range(codes[0].shape[0]):
            fastcoder.encode_chunk(canvas, layout.positions, reads[t], own[t], model.table[t], adaptive, entries[adaptive])
    return layout, canvas, entries


NONE = np.zeros((0, INPUTS + 1))


def matches(canvas: np.ndarray, layout: Canvas, t: int) -> np.ndarray:
    """For every position of iteration t (flat canvas index; -1 elsewhere), the last position
    coded before it in every step whose block had the same 64 bits in iterations t-1 and t-2:
    first-colour positions match earlier first-colour ones, second-colour positions any
    first-colour one or an earlier second-colour one."""
    order = np.concatenate(layout.positions)  # the order of every step: colour 0, then colour 1
    history = canvas[MAX_LOOKBACK + t - 2:MAX_LOOKBACK + t][:, :, order].reshape(-1, order.size)  # (64, n)
    keys = np.packbits(history, axis=0).T.copy().view(np.uint64).ravel()
    by_key = np.argsort(keys, kind="stable")  # within a key, in coding order
    same = np.r_[False, keys[by_key][1:] == keys[by_key][:-1]]
    found = np.full(order.size, -1)
    found[by_key[same]] = order[by_key[np.flatnonzero(same) - 1]]
    out = np.full(canvas.shape[2], -1)
    out[order] = found
    return out


def mixed_lengths(layout: Canvas, canvas: np.ndarray, entries: dict, variant: tuple, start=NONE, final=NONE) -> np.ndarray:
    """Every bit's ideal length under a variant of the mixer, shaped like the canvas (0 off the code
    positions). `start`: the mixer's weights at the start of each iteration (default: coder id 2's
    input alone); `final`: receives the mean weights at the end of each iteration."""
    inputs, select, rate, limit, apm_rate, iterations = variant
    out = np.zeros(canvas.size)
    for t in range(min(canvas.shape[0] - MAX_LOOKBACK, iterations or canvas.shape[0])):
        mix_iteration(canvas.reshape(-1).view(np.uint8), layout.height * layout.width, layout.width, canvas.shape[1], t,
                      *layout.positions, entries[True].reshape(-1), entries[False].reshape(-1), inputs, select, rate,
                      limit, apm_rate, out, start, final, matches(canvas, layout, t))
    return out.reshape(canvas.shape)


def fitted_start(images: list, model: ContextModel, variant: tuple) -> np.ndarray:
    """Starting weights per iteration for a variant: its mixer's mean weights at the end of each
    iteration of these images' codes (training images: never the sets measured)."""
    finals = []
    for codes in images:
        layout, canvas, entries = coded_entries(codes, model)
        finals.append(np.zeros((canvas.shape[0] - MAX_LOOKBACK, INPUTS + 1)))
        mixed_lengths(layout, canvas, entries, variant, final=finals[-1])
    return np.mean(finals, axis=0)


def coder_2_lengths(layout: Canvas, canvas: np.ndarray, entries: dict) -> np.ndarray:
    """The ideal bits of each iteration as coder id 2 codes them."""
    p_one = entries[True] / 2.0 ** PROBABILITY_BITS
    positions = np.concatenate(layout.positions)  # gutters have entries 1 and bits 0: not coded
    return -np.log2(np.where(canvas, p_one, 1 - p_one))[MAX_LOOKBACK:, :, positions].sum(axis=(1, 2))


def image_lengths(codes, model: ContextModel, variants: dict, starts: dict | None = None) -> dict:
    """Per variant (and 'coder id 2'), the ideal bits of each iteration of one image's codes;
    `starts`: starting weights of some variants (`fitted_start`), by name."""
    layout, canvas, entries = coded_entries(codes, model)
    lengths = {"coder id 2": coder_2_lengths(layout, canvas, entries)}
    for name, variant in variants.items():
        start = (starts or {}).get(name, NONE)
        mixed = mixed_lengths(layout, canvas, entries, variant, start)[MAX_LOOKBACK:].sum(axis=(1, 2))
        mixed[variant[-1] or len(mixed):] = lengths["coder id 2"][variant[-1] or len(mixed):]
        lengths[name] = mixed
    return lengths


SMALL = "+ table, step pattern, pattern2, vector2, prefix (6 inputs), iterations 1-4 only"
SMALL_ORDER = [ADAPTIVE, TABLE, STEP_PATTERN, PATTERN2, VECTOR2, PREFIX]  # the float inputs the sketch's x[0..5] are


def integer_start(start: np.ndarray, iterations: int) -> np.ndarray:
    """The sketch's starting weights (16 fractional bits) per iteration from the float prototype's
    (`fitted_start` of SMALL), or coder id 2's input alone."""
    out = np.zeros((iterations, SMALL_INPUTS), np.int64)
    out[:, 0] = 1 << 16
    for t in range(min(len(start), iterations)):
        out[t] = np.round(65536 * start[t, [flag.bit_length() - 1 for flag in SMALL_ORDER] + [INPUTS]])
    return out


def sketch_lengths(layout: Canvas, canvas: np.ndarray, entries: dict, start: np.ndarray, measure: bool = True,
                   hashed: int = HASHED, patterns: bool = True) -> list[float]:
    """The integer sketch's ideal bits of each iteration it mixes (0 each unless `measure`), from
    float starting weights (`fitted_start` of SMALL; NONE: coder id 2's input alone)."""
    mixed = min(VARIANTS[SMALL][-1], canvas.shape[0] - MAX_LOOKBACK)
    weights = integer_start(start, mixed)
    flat, qa, qt = canvas.reshape(-1).view(np.uint8), entries[True].reshape(-1), entries[False].reshape(-1)
    return [integer_mix_iteration(flat, layout.height * layout.width, layout.width, canvas.shape[1], t, *layout.positions,
                                  qa, qt, weights[t], measure, hashed, patterns) for t in range(mixed)]


def lean_lengths(layout: Canvas, canvas: np.ndarray, entries: dict, start: np.ndarray, measure: bool = True) -> list[float]:
    """`lean_mix_iteration`'s ideal bits of each iteration it mixes (as `sketch_lengths`)."""
    mixed = min(VARIANTS[SMALL][-1], canvas.shape[0] - MAX_LOOKBACK)
    weights = integer_start(start, mixed)
    flat, qa, qt = canvas.reshape(-1).view(np.uint8), entries[True].reshape(-1), entries[False].reshape(-1)
    return [lean_mix_iteration(flat, layout.height * layout.width, canvas.shape[1], t, *layout.positions, qa, qt,
                               weights[t], measure) for t in range(mixed)]


def lean_start(images: list, model: ContextModel, iterations: int = 4) -> np.ndarray:
    """`lean_mix_iteration`'s starting weights per iteration: the mean of its final weights on
    these images' codes (training images), each chunk started as coder id 2 (weight 1 on q')."""
    start = np.zeros((iterations, SMALL_INPUTS), np.int64)
    start[:, 0] = 1 << 16
    finals = []
    for codes in images:
        layout, canvas, entries = coded_entries(codes, model)
        flat, qa, qt = canvas.reshape(-1).view(np.uint8), entries[True].reshape(-1), entries[False].reshape(-1)
        final = np.zeros((iterations, SMALL_INPUTS), np.int64)
        for t in range(min(iterations, canvas.shape[0] - MAX_LOOKBACK)):
            lean_mix_iteration(flat, layout.height * layout.width, canvas.shape[1], t, *layout.positions, qa, qt,
                               start[t], False, final[t])
        finals.append(final)
    return np.round(np.mean(finals, axis=0)).astype(np.int64)


def lean_rows(folders: list, codec: Codec, model: ContextModel, cache: Path, limit: int, start: np.ndarray) -> None:
    """BD-rate of coder id 2 with iterations 1-4 coded by `lean_mix_iteration` (ideal lengths)
    against coder id 2, per image set."""
    for folder in folders:
        curves, reference, quality = [], [], []
        for path in list_images(folder)[:limit or None]:
            codes, msssim, pixels = cached_codes(codec, path, cache)
            layout, canvas, entries = coded_entries(codes.tiles, model)
            base = coder_2_lengths(layout, canvas, entries)
            mixed = base.copy()
            flat, qa, qt = canvas.reshape(-1).view(np.uint8), entries[True].reshape(-1), entries[False].reshape(-1)
            for t in range(min(len(start), len(base))):
                mixed[t] = lean_mix_iteration(flat, layout.height * layout.width, canvas.shape[1], t, *layout.positions,
                                              qa, qt, start[t], True)
            curves.append(np.cumsum(mixed) / pixels)
            reference.append(np.cumsum(base) / pixels)
            quality.append(msssim)
        quality = msssim_db(np.mean(quality, axis=0))
        bpp, ref = np.mean(curves, axis=0), np.mean(reference, axis=0)
        change = 100 * (bpp / ref - 1)
        print(f"{folder}: {len(curves)} images; the 4-input integer mixer with tries (`lean_mix_iteration`, fitted "
              f"start), iterations 1-{len(start)}: BD-rate {bd_rate(ref, quality, bpp, quality):+.2f} % against coder id 2; "
              "rate change at depth 1 / 2 / 4 / 8 / 16: " + " / ".join(f"{change[d]:+.2f}" for d in (0, 1, 3, 7, 15)))


def speed(codes, pixels: int, model: ContextModel, start: np.ndarray, repeats: int = 3) -> None:
    """Coder id 2's encoding time (the kernels, all iterations) beside the integer sketch's of
    iterations 1-4, one thread, CPU time; and the sketch's ideal lengths beside the float SMALL's."""
    layout, canvas, entries = coded_entries(codes, model)
    reads, own = fastcoder.step_offsets(model.features, model.bits, layout.height * layout.width, layout.width)

    def coder_id_2():
        for t in range(canvas.shape[0] - MAX_LOOKBACK):
            fastcoder.encode_chunk(canvas, layout.positions, reads[t], own[t], model.table[t], True)

    runs = {"coder id 2": coder_id_2, "sketch": partial(sketch_lengths, layout, canvas, entries, start, False),
            "unhashed": partial(sketch_lengths, layout, canvas, entries, start, False, UNHASHED),
            "trie": partial(sketch_lengths, layout, canvas, entries, start, False, TRIE),
            "trie, no patterns": partial(sketch_lengths, layout, canvas, entries, start, False, TRIE, False),
            "lean": partial(lean_lengths, layout, canvas, entries, start, False)}
    times = {}
    for name, run in runs.items():
        run()  # compiled
        begin = time.process_time()
        for _ in range(repeats):
            run()
        times[name] = (time.process_time() - begin) / repeats
    lengths = np.array(sketch_lengths(layout, canvas, entries, start))
    depth, mixed = canvas.shape[0] - MAX_LOOKBACK, len(lengths)
    coded = model.bits * sum(p.size for p in layout.positions)  # bits of one iteration
    print(f"coder id 2: {1e9 * times['coder id 2'] / (depth * coded):.1f} ns a bit, {pixels / times['coder id 2'] / 1e6:.1f} "
          f"MP/s at depth {depth}; the 6-input integer mixer of iterations 1-{mixed}: "
          f"{1e9 * times['sketch'] / (mixed * coded):.1f} ns a mixed bit more; together "
          f"{pixels / (times['coder id 2'] + times['sketch']) / 1e6:.1f} MP/s at depth {depth} (encoding; one thread, CPU time); "
          f"without its two hashed models {1e9 * times['unhashed'] / (mixed * coded):.1f} ns, "
          f"{pixels / (times['coder id 2'] + times['unhashed']) / 1e6:.1f} MP/s; with tries instead of hashing "
          f"{1e9 * times['trie'] / (mixed * coded):.1f} ns, {pixels / (times['coder id 2'] + times['trie']) / 1e6:.1f} MP/s; "
          f"tries without the two pattern models (4 inputs) {1e9 * times['trie, no patterns'] / (mixed * coded):.1f} ns, "
          f"{pixels / (times['coder id 2'] + times['trie, no patterns']) / 1e6:.1f} MP/s; the same written for speed "
          f"(`lean_mix_iteration`) {1e9 * times['lean'] / (mixed * coded):.1f} ns, "
          f"{pixels / (times['coder id 2'] + times['lean']) / 1e6:.1f} MP/s")
    reference = coder_2_lengths(layout, canvas, entries)[:mixed]
    floats = mixed_lengths(layout, canvas, entries, VARIANTS[SMALL], start)[MAX_LOOKBACK:MAX_LOOKBACK + mixed]
    tries = np.array(sketch_lengths(layout, canvas, entries, start, hashed=TRIE))
    lean = np.array(lean_lengths(layout, canvas, entries, start))
    print(f"iterations 1-{mixed}, ideal bits against coder id 2's: integer sketch {100 * (lengths.sum() / reference.sum() - 1):+.2f} %, "
          f"with tries {100 * (tries.sum() / reference.sum() - 1):+.2f} %, lean (4 inputs) "
          f"{100 * (lean.sum() / reference.sum() - 1):+.2f} %, "
          f"float prototype {100 * (floats.sum() / reference.sum() - 1):+.2f} %")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", action="append", required=True, help="an image set (repeatable)")
    parser.add_argument("--images", type=int, default=6, help="the first N images of each set (0: all)")
    parser.add_argument("--weights", default=None, help="the model (default: the shipped one)")
    parser.add_argument("--cache", default="runs/context-tables-cache", help="codes cache of context_tables.py")
    parser.add_argument("--variants", default="all", help="semicolon-separated names from VARIANTS, or all")
    parser.add_argument("--fit", action="append", default=[],
                        help="a folder of training images whose codes give the variants fitted starting weights, "
                             "printed as more rows (repeatable)")
    parser.add_argument("--fit-images", type=int, default=4, help="the first N images of each --fit folder")
    parser.add_argument("--lean", action="store_true",
                        help="BD-rate of the 4-input integer mixer with tries (lean_mix_iteration), its start fitted "
                             "on the --fit images")
    parser.add_argument("--speed", action="store_true",
                        help="time coder id 2 and the integer sketch of the 6-input mixer on the first image of each --data")
    args = parser.parse_args()
    variants = dict(VARIANTS) if args.variants == "all" else {v: VARIANTS[v] for v in args.variants.split(";")}
    if args.speed:  # the sketch's design alone (its fitted start with --fit)
        variants = {SMALL: VARIANTS[SMALL]}
    codec, cache = shipped_codes(args.weights, args.cache)
    model = ContextModel.from_tensors(codec.extra)
    if args.lean:
        images = folder_codes(codec, args.fit, args.fit_images, cache)
        lean_rows(args.data, codec, model, cache, args.images, lean_start(images, model))
        return
    starts = {}
    if args.fit:
        images = folder_codes(codec, args.fit, args.fit_images, cache)
        for name, variant in list(variants.items()):
            if name in FITTED:
                starts[f"{name}, fitted start"] = fitted_start(images, model, variant)
                variants[f"{name}, fitted start"] = variant
        print(f"starting weights fitted on {len(images)} images of {', '.join(args.fit)}")
    if args.speed:
        for folder in args.data:
            path = list_images(folder)[0]
            codes, _, pixels = cached_codes(codec, path, cache)
            print(f"{path}:")
            speed(codes.tiles, pixels, model, starts.get(f"{SMALL}, fitted start", NONE))
        return
    for folder in args.data:
        start = time.time()
        curves, quality = {}, []
        for path in list_images(folder)[:args.images or None]:
            codes, msssim, pixels = cached_codes(codec, path, cache)
            quality.append(msssim)
            for name, bits in image_lengths(codes.tiles, model, variants, starts).items():
                curves.setdefault(name, []).append(np.cumsum(bits) / pixels)
        quality = msssim_db(np.mean(quality, axis=0))
        reference = np.mean(curves["coder id 2"], axis=0)
        print(f"\n{folder}: {len(curves['coder id 2'])} images ({time.time() - start:.0f} s); "
              f"coder id 2's ideal bpp at depths 1 / 4 / 16: {reference[0]:.4f} / {reference[3]:.4f} / {reference[15]:.4f}")
        print("| model | BD-rate vs coder id 2 | rate change at depth 1 / 2 / 4 / 8 / 16 |")
        print("|---|---|---|")
        for name, bpp in curves.items():
            bpp = np.mean(bpp, axis=0)
            change = 100 * (bpp / reference - 1)
            print(f"| {name} | {bd_rate(reference, quality, bpp, quality):+.2f} % | "
                  + " / ".join(f"{change[d]:+.2f}" for d in (0, 1, 3, 7, 15) if d < len(change)) + " |", flush=True)


if __name__ == "__main__":
    main()
