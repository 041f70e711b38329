"""The adaptive map of coder id 2 (rgbatch/apm.py): integer arithmetic, identity at the start,
and adaptation that pays where the tables are wrong and costs little where they are right."""

import numpy as np
import torch

from rgbatch import apm
from rgbatch.context import CONTEXT_FEATURES, CONTEXT_PROBABILITIES, PROBABILITY_BITS
from rgbatch.entropy import AdaptiveCoder, ContextCoder


def test_knots_rise_and_every_entry_has_its_place():
    assert np.all(np.diff(apm.KNOTS) > 0) and apm.KNOTS[0] >= 1 and apm.KNOTS[-1] < 2 ** PROBABILITY_BITS
    q = np.arange(1, 2 ** PROBABILITY_BITS)
    lo, f = apm.LOW_KNOT[q], apm.WEIGHT[q]
    assert lo.min() == 0 and lo.max() == len(apm.KNOTS) - 2
    assert f.min() == 0 and f.max() == apm.ONE_WEIGHT
    inside = (q >= apm.KNOTS[0]) & (q <= apm.KNOTS[-1])
    assert np.all(apm.KNOTS[lo[inside]] <= q[inside]) and np.all(q[inside] <= apm.KNOTS[lo[inside] + 1])


def test_a_fresh_map_codes_the_table_s_entries():
    # before any bit, the map is the identity: the first bit of a step costs what coder id 1 charges
    knots = apm.START.tolist()
    for q in range(1, 2 ** PROBABILITY_BITS):
        coded, _, _ = apm.predict(knots, q)
        assert 1 <= coded < 2 ** PROBABILITY_BITS
        if apm.KNOTS[0] <= q <= apm.KNOTS[-1]:
            assert abs(coded - q) <= 1, q


def test_the_map_learns_what_the_bits_say_and_stays_in_range(rng):
    # a table that says 1/2 for bits that are 1 nine times in ten: the map moves to 9/10, and
    # the coded entry, a quarter table and three quarters map, to 0.8
    bits = rng.random(4000) < 0.9
    entries = apm.refine(np.full(bits.size, 2 ** 14), bits)
    assert abs(entries[-1000:].mean() / 2 ** PROBABILITY_BITS - (0.5 + 3 * 0.9) / 4) < 0.02
    extreme = apm.refine(np.full(5000, 1), np.ones(5000, bool))  # the most confident wrong table
    assert 1 <= extreme.min() and extreme.max() < 2 ** PROBABILITY_BITS


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
    assert size["biased", AdaptiveCoder] < 1.15 * entropy * n  # the map finds the bias (to its quarter of table)
    assert size["fair", AdaptiveCoder] < 1.03 * size["fair", ContextCoder]  # and a right table loses little
