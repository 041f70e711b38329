"""Coder id 2's adaptation (rgbatch/adapt.py): integer arithmetic, the tables at the start,
and adaptation that pays where the tables are wrong and costs little where they are right."""

import numpy as np
import pytest
import torch

from rgbatch import adapt
from rgbatch.context import CONTEXT_FEATURES, CONTEXT_PROBABILITIES, PROBABILITY_BITS
from rgbatch.entropy import AdaptiveCoder, ContextCoder

ONE = 2 ** PROBABILITY_BITS


def test_knots_rise_and_every_entry_has_its_place():
    assert np.all(np.diff(adapt.KNOTS) > 0) and adapt.KNOTS[0] >= 1 and adapt.KNOTS[-1] < ONE
    q = np.arange(1, ONE)
    lo, f = adapt.LOW_KNOT[q], adapt.WEIGHT[q]
    assert lo.min() == 0 and lo.max() == len(adapt.KNOTS) - 2
    assert f.min() == 0 and f.max() == adapt.ONE_WEIGHT
    inside = (q >= adapt.KNOTS[0]) & (q <= adapt.KNOTS[-1])
    assert np.all(adapt.KNOTS[lo[inside]] <= q[inside]) and np.all(q[inside] <= adapt.KNOTS[lo[inside] + 1])
    assert adapt.RECIPROCAL[0] == 2 ** 16 // adapt.PRIOR and adapt.RECIPROCAL[-1] == 2 ** 16 // 1024


def test_a_fresh_step_codes_the_table_s_entries():
    # before any bit, states are the table and the map the identity: coder id 1's entries, to within 1
    table = np.arange(1, ONE)
    step = adapt.StepState(table, k=15)
    for ctx, q in enumerate(table.tolist()):
        coded = step.entry(ctx)
        assert 1 <= coded < ONE
        if adapt.KNOTS[0] <= q <= adapt.KNOTS[-1]:
            assert abs(coded - q) <= 1, q


def test_a_context_learns_what_its_bits_say_and_stays_in_range(rng):
    # a table that says 1/2 for bits that are 1 nine times in ten: the context's state goes to 9/10
    bits = rng.random(4000) < 0.9
    entries = adapt.refine(np.array([ONE // 2]), np.zeros(bits.size, int), bits, k=1) / ONE
    assert entries[-1000:].mean() == pytest.approx(0.9, abs=0.03)
    extreme = adapt.refine(np.array([1]), np.zeros(5000, int), np.ones(5000, bool), k=1)  # the most confident wrong table
    assert 1 <= extreme.min() and extreme.max() < ONE and extreme[-1] > 0.99 * ONE


def test_the_map_carries_what_contexts_learn_to_contexts_rarely_seen(rng):
    # every context's table entry says 1/2 but bits are 1 nine times in ten: contexts seen once
    # each learn nothing themselves; the map learns it from all of them
    contexts = np.arange(4000) % 1024
    entries = adapt.refine(np.full(1024, ONE // 2), contexts, rng.random(4000) < 0.9, k=10) / ONE
    fresh = entries[:1024][-300:]  # first sightings, late in the chunk
    assert fresh.mean() > 0.75


def test_the_keyed_maps_learn_apart():
    # contexts starting 0 always code 0, those starting 1 always 1, the table says 1/2 for both
    # and each context is seen once: the shared map stays near 1/2, the keyed maps learn each side
    contexts = np.arange(2000) % 16  # k = 4: first 3 bits 000..111; the first bit splits 0 / 1
    entries = adapt.refine(np.full(16, ONE // 2), contexts, contexts >> 3, k=4)[-16:] / ONE
    assert entries[:8].max() < 0.4 and entries[8:].min() > 0.6


def flat_model(bits: int, iterations: int, q: int) -> dict[str, torch.Tensor]:
    """One context feature (the previous iteration's bit), every entry q."""
    features = torch.zeros((iterations, 2, bits, 1, 4), dtype=torch.int16)
    features[..., 0] = 1
    features[..., 1] = torch.arange(bits, dtype=torch.int16).view(1, 1, bits, 1)
    return {CONTEXT_FEATURES: features,
            CONTEXT_PROBABILITIES: torch.full((iterations, 2, bits, 2), q, dtype=torch.int16)}


def test_adaptation_pays_where_the_tables_are_wrong_and_costs_little_where_right(rng):
    shape = (2, 4, 40, 40)
    extra = flat_model(bits=4, iterations=2, q=2 ** 14)  # "1/2" everywhere
    size = {}
    for name, p in (("biased", 0.9), ("fair", 0.5)):
        codes = [rng.random(shape) < p]
        for kind in (ContextCoder, AdaptiveCoder):
            chunks = kind(extra).encode(codes)
            assert all(np.array_equal(a, b) for a, b in zip(kind(extra).decode(chunks, [shape[1:]]), codes))
            size[name, kind] = sum(map(len, chunks))
    n = np.prod(shape) / 8  # bytes of the raw bits
    entropy = -(0.9 * np.log2(0.9) + 0.1 * np.log2(0.1))
    assert size["biased", ContextCoder] >= n  # the table is right about nothing
    assert size["biased", AdaptiveCoder] < 1.1 * entropy * n  # the adaptation finds the bias
    assert size["fair", AdaptiveCoder] < 1.03 * size["fair", ContextCoder]  # and a right table loses little


def entries_as_the_doc_states(table_row, contexts, bits, k: int) -> list[int]:
    """docs/ENTROPY.md, "The adaptive coder", "Exactly.", steps 1-4 as they read there (a second
    implementation, from the doc alone: if the doc or adapt.py change apart, this fails)."""
    knots = [11, 18, 30, 49, 81, 133, 219, 360, 589, 961, 1554, 2486, 3906, 5978, 8813, 12371, 16384, 20397,
             23955, 26790, 28862, 30282, 31214, 31807, 32179, 32408, 32549, 32635, 32687, 32719, 32738, 32750, 32757]
    state, count = [int(q) << 9 for q in table_row], [0] * len(table_row)
    maps = [[x << 9 for x in knots] for _ in range(9)]
    out = []
    for ctx, bit in zip(contexts, bits):
        q = min(max(state[ctx] >> 9, 1), 32767)
        lo = min(max(max((i for i, x in enumerate(knots) if x <= q), default=0), 0), 31)
        f = ((min(max(q, 11), 32757) - knots[lo]) << 12) // (knots[lo + 1] - knots[lo])
        a, b = maps[0], maps[1 + (ctx >> (k - min(k, 3)))]
        m = ((a[lo] * (4096 - f) + a[lo + 1] * f) >> 12) + ((b[lo] * (4096 - f) + b[lo + 1] * f) >> 12)
        out.append(min(max((4 * state[ctx] + 6 * m) >> 13, 1), 32767))
        target = 2 ** 24 - 1 if bit else 0

        def move(v, w, s):
            return v + (((target - v) * w + 2 ** (s - 1)) >> s)
        state[ctx] = move(state[ctx], 65536 // (count[ctx] + 32), 16)
        count[ctx] = min(count[ctx] + 1, 992)
        for knots_of in (a, b):
            knots_of[lo], knots_of[lo + 1] = move(knots_of[lo], 4096 - f, 16), move(knots_of[lo + 1], f, 16)
    return out


@pytest.mark.parametrize("k", [1, 2, 3, 5, 10])
def test_the_arithmetic_docs_entropy_md_states_is_what_the_coder_computes(k, rng):
    # random tables with both extreme entries; bits as likely as the table says, nearly always 1, nearly never
    for p in (None, 0.95, 0.02):
        row = rng.integers(1, ONE, 2 ** k)
        row[:2] = 1, ONE - 1
        contexts = rng.integers(0, 2 ** k, 3000)
        bits = rng.random(contexts.size) < (row[contexts] / ONE if p is None else p)
        assert adapt.refine(row, contexts, bits, k).tolist() == entries_as_the_doc_states(row, contexts.tolist(),
                                                                                          bits.tolist(), k)
