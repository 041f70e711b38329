"""The mixers of coder ids 3 and 4 (rgbatch/mix.py): tables, reference against the kernels, bounds."""

import hashlib
import sys
from decimal import Decimal, getcontext
from pathlib import Path

import numpy as np
import pytest

from rgbatch import fastcoder, mix
from rgbatch.context import MAX_LOOKBACK, Canvas, ContextModel
from rgbatch.entropy import AdaptiveCoder, EntropyError, GroupedMixingCoder, MixingCoder

from test_entropy import SHAPES, sticky_codes
from test_fastcoder import random_model


def _rounding_margin(values) -> Decimal:
    """How near the exact values come to a rounding tie (x.5): the tables round them to integers."""
    return min(abs(v - v.to_integral_value(rounding="ROUND_FLOOR") - Decimal("0.5")) for v in values)


def test_stretch_and_squash_round_far_from_any_tie():
    """Every machine's log and exp (float64, within a few ulps) give the same integer tables:
    the exact values lie at least 1e-7 from a tie (stretch's are at most 3072 in size, where a
    float64 ulp is 5e-13)."""
    getcontext().prec = 40
    scale = 2 ** 15
    stretch = [256 * (max(Decimal(q), Decimal("0.5")) / (scale - q)).ln() for q in range(scale)]
    inside = [v for v in stretch if abs(v) < mix.ST_MAX + Decimal("0.5")]
    assert _rounding_margin(inside) > Decimal("1e-7")
    assert [int(v.to_integral_value()) if abs(v) < mix.ST_MAX else int(np.sign(v)) * mix.ST_MAX
            for v in stretch] == mix.STRETCH.tolist()
    squash = [Decimal(65536) / (1 + (Decimal(-x) / 256).exp()) for x in range(-mix.ST_MAX - 1, mix.ST_MAX + 1)]
    assert _rounding_margin(squash) > Decimal("1e-4")
    assert [min(max(int(v.to_integral_value()), 2), 65534) for v in squash] == mix.SQUASH.tolist()
    assert mix.RECIPROCAL.tolist() == [2 ** 17 // (2 * n + 3) for n in range(mix.CELL_LIMIT + 1)]


def test_the_tables_are_pinned_and_a_machine_that_computes_others_is_refused(monkeypatch):
    mix.check_tables()
    h = hashlib.sha256(b"".join(t.astype("<i4").tobytes() for t in (mix.STRETCH, mix.SQUASH, mix.RECIPROCAL)))
    assert h.hexdigest()[:16] == mix.TABLES_DIGEST
    changed = mix.STRETCH.copy()
    changed[1000] += 1
    monkeypatch.setattr(mix, "STRETCH", changed)
    with pytest.raises(EntropyError, match="cannot run here"):
        MixingCoder(random_model(np.random.default_rng(0), bits=4, iterations=2, k=2))


def test_history_keys_group_the_blocks_of_equal_history():
    canvas = np.zeros((MAX_LOOKBACK + 3, 33, 4), bool)
    canvas[MAX_LOOKBACK + 0, :, 0] = canvas[MAX_LOOKBACK + 0, :, 1] = True  # positions 0 and 1: the same bits
    canvas[MAX_LOOKBACK + 0, 32, 2] = True  # channel 32 of 33 folds onto channel 0's bit of t-2
    canvas[MAX_LOOKBACK + 1, 5, 3] = True
    order = np.arange(4)
    keys = mix.history_keys(canvas, 2, order)  # iteration 2 reads 1 and 0
    assert keys[0] == keys[1] != keys[2] != keys[3]
    assert len(set(mix.history_keys(canvas, 0, order).tolist())) == 1  # iteration 0: all one group
    groups = mix.history_keys(canvas, 2, order, back=1)  # the group model's: iteration 1 alone
    assert groups[0] == groups[1] == groups[2] != groups[3]


def test_each_design_mixes_its_first_iterations_from_its_start():
    assert [(c.coder_id, c.design.iterations, c.design.group) for c in (MixingCoder, GroupedMixingCoder)] \
        == [(3, 4, False), (4, 8, True)]
    assert not mix.MIXING.start[:, 7].any()  # coder id 3 has no group model: its weight stays 0
    with pytest.raises(AssertionError):
        mix.Design(2, np.ones((2, mix.INPUTS), np.int64), group=False)


def _recorded(canvas, layout, model, t, design, most=mix.MAX_NODES):
    """The entries the kernels code iteration t's bits with (`design`), with tries of at most `most` nodes."""
    plane = layout.height * layout.width
    reads, own = fastcoder.step_offsets(model.features, model.bits, plane, layout.width)
    record = np.zeros(canvas.shape, np.int64)
    n = sum(p.size for p in layout.positions)
    at, history, prefix, used, groups = fastcoder.mix_setup(canvas.reshape(-1).view(np.uint8), *layout.positions,
                                                            own[t], plane, mix.capacity(n, model.bits, most), design.group)
    cells = np.full(groups * model.bits, mix.FRESH, np.int32) if design.group else fastcoder.NO_NODES
    out = np.empty(fastcoder.max_words(model.bits * n), np.uint32)
    words = fastcoder.encode_iteration(canvas.reshape(-1).view(np.uint8), reads[t], own[t], *layout.positions,
                                       model.table[t], True, out, record.reshape(-1), 2 * model.bits,
                                       design.start[t].copy(), at, history, prefix, used,
                                       np.empty(mix.PATTERN_CELLS, np.int32), cells,
                                       mix.neighbours(layout.width).view(np.uint64))
    assert words > 0
    return record[MAX_LOOKBACK + t]


def _reference(canvas, layout, model, t, design, most=mix.MAX_NODES):
    """The same entries by `mix.IterationMixer` over coder id 2's own (`adapt` via the kernels)."""
    adaptive = np.zeros(canvas.shape, np.int64)
    bare = np.zeros(canvas.shape, np.int64)
    plane = layout.height * layout.width
    reads, own = fastcoder.step_offsets(model.features, model.bits, plane, layout.width)
    for entries, refine in ((adaptive, True), (bare, False)):
        fastcoder.encode_chunk(canvas, layout.positions, reads[t], own[t], model.table[t], refine, entries)
    mixer = mix.IterationMixer(canvas.copy(), layout.positions, t, layout.width, design, most)
    out = np.zeros(canvas.shape[1:], np.int64)
    for positions in layout.positions:
        for c in range(model.bits):
            mixer.start_step()
            for p in positions.tolist():
                out[c, p] = mixer.entry(p, c, adaptive[MAX_LOOKBACK + t, c, p], bare[MAX_LOOKBACK + t, c, p])
                mixer.learn(canvas[MAX_LOOKBACK + t, c, p])
    return out, mixer


@pytest.mark.parametrize("design", [mix.MIXING, mix.GROUPED], ids=["mixing", "mixing2"])
@pytest.mark.parametrize("most", [mix.MAX_NODES, 150, 1])
def test_the_kernels_mix_as_the_reference_does_also_with_full_tries(rng, most, design):
    model = ContextModel.from_tensors(random_model(rng, bits=4, iterations=4, k=5))
    codes = sticky_codes(rng, 4, SHAPES + [(4, 9, 7)])
    layout = Canvas(tuple(c.shape[1:] for c in codes))
    canvas = layout.paint(codes)
    n = sum(p.size for p in layout.positions)
    full = []
    for t in range(4):
        expected, mixer = _reference(canvas, layout, model, t, design, most)
        assert np.array_equal(_recorded(canvas, layout, model, t, design, most), expected)
        assert max(len(mixer.history), len(mixer.prefix)) <= mix.capacity(n, 4, most)
        full.append(len(mixer.history) == mix.capacity(n, 4, most))
    # where the tries filled up (a root per position and one node more, at the least), positions
    # stayed where they were from then on
    assert any(full) == (most < mix.MAX_NODES)
    with pytest.raises(ValueError, match="a root per position"):
        fastcoder.mix_setup(canvas.reshape(-1).view(np.uint8), *layout.positions, np.zeros(4, np.uint64),
                            layout.height * layout.width, n, False)


def test_the_tries_hold_at_most_max_nodes():
    assert mix.capacity(10, 32) == 10 * 33 + 1
    assert mix.capacity(10 ** 6, 32) == mix.MAX_NODES
    assert mix.capacity(10 ** 7, 32) == 10 ** 7 + 1  # images past the default --max-pixels: a root per position


def test_mixing_codes_history_that_repeats_in_fewer_bytes(rng):
    """Blocks whose history repeats send the same bits: the history trie learns them where coder
    id 2's contexts (a handful of neighbours) cannot."""
    extra = random_model(rng, bits=8, iterations=4, k=4)
    patterns = rng.random((3, 4, 8)) < 0.5  # three kinds of block, each its own bits at every iteration
    kinds = rng.integers(0, 3, (20, 24))
    codes = [np.moveaxis(patterns[kinds], (0, 1), (2, 3)).copy()]  # (4, 8, 20, 24)
    mixed, adaptive = MixingCoder(extra).encode(codes), AdaptiveCoder(extra).encode(codes)
    assert sum(map(len, mixed[1:])) < 0.7 * sum(map(len, adaptive[1:]))
    assert all(np.array_equal(a, b) for a, b in zip(MixingCoder(extra).decode(mixed, [codes[0].shape[1:]]), codes))


def test_the_group_model_codes_what_blocks_of_equal_bits_one_iteration_back_send_in_fewer_bytes(rng):
    """Channels 4-7 of each iteration follow from its blocks' channels 0-3 one iteration back,
    whatever they held two back: the groups of equal bits one iteration back (coder id 4) learn
    them from more blocks than the history trie's groups of equal 64 bits (coder id 3), and
    coder id 4 mixes iterations 5-8 too."""
    extra = random_model(rng, bits=8, iterations=5, k=4)
    patterns, follow = rng.random((3, 4)) < 0.5, rng.random((5, 3, 4)) < 0.5
    kinds = rng.integers(0, 3, (5, 20, 24))  # each block's kind at each iteration, drawn afresh
    codes = np.zeros((5, 8, 20, 24), bool)
    for t in range(5):
        codes[t, :4] = np.moveaxis(patterns[kinds[t]], 2, 0)
        codes[t, 4:] = np.moveaxis(follow[t][kinds[t - 1]], 2, 0) if t else False
    grouped, mixed = GroupedMixingCoder(extra).encode([codes]), MixingCoder(extra).encode([codes])
    assert sum(map(len, grouped[1:4])) < 0.97 * sum(map(len, mixed[1:4]))  # 0.88-0.96 over six seeds
    assert len(grouped[4]) < 0.6 * len(mixed[4])  # iteration 5: mixed by coder id 4 only (0.29-0.43)
    assert np.array_equal(GroupedMixingCoder(extra).decode(grouped, [codes.shape[1:]])[0], codes)


def test_a_chunk_leaves_its_final_weights_for_fitting_the_start(rng):
    """`benchmarks/mixing_start.py` fits START from the weights the kernels end each chunk with."""
    extra = random_model(rng, bits=4, iterations=2, k=4)
    model = ContextModel.from_tensors(extra)
    codes = sticky_codes(rng, 2, SHAPES)
    layout = Canvas(tuple(c.shape[1:] for c in codes))
    canvas = layout.paint(codes)
    reads, own = fastcoder.step_offsets(model.features, model.bits, layout.height * layout.width, layout.width)
    weights = mix.MIXING.start[1].copy()
    chunk = fastcoder.encode_chunk(canvas, layout.positions, reads[1], own[1], model.table[1], True, mix_weights=weights,
                                   width=layout.width)
    assert chunk == MixingCoder(extra).encode(codes)[1]  # the same chunk as the coder's
    _, mixer = _reference(canvas, layout, model, 1, mix.MIXING)
    assert weights.tolist() == mixer.weights != mix.MIXING.start[1].tolist()


@pytest.mark.parametrize("design", [mix.MIXING, mix.GROUPED], ids=["mixing", "mixing2"])
def test_the_start_is_fitted_as_the_mean_of_the_final_weights_pass_after_pass(rng, design):
    """`benchmarks/mixing_start.py`: one pass averages the final weights of chunks started from
    coder id 2's entry alone; a second averages those of chunks started from the first's means."""
    sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
    import mixing_start

    model = ContextModel.from_tensors(random_model(rng, bits=4, iterations=design.iterations, k=4))
    images = [sticky_codes(rng, design.iterations, SHAPES) for _ in range(2)]
    alone = np.zeros_like(design.start)
    alone[:, 0] = 1 << mix.WEIGHT_BITS
    first = mixing_start.fit(images, model, design, passes=1)
    finals = [mixing_start.final_weights(codes, model, design, alone) for codes in images]
    assert np.array_equal(first, np.round(np.mean(finals, axis=0)).astype(np.int64))
    assert first.shape == design.start.shape and first[:, 7].any() == design.group  # no group weight for coder id 3
    second = [mixing_start.final_weights(codes, model, design, first) for codes in images]
    assert np.array_equal(mixing_start.fit(images, model, design, passes=2),
                          np.round(np.mean(second, axis=0)).astype(np.int64))
