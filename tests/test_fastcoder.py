"""The compiled context coder (rgbatch/fastcoder.py) against constriction, the reference it replaces:
the same bytes for every stream, the same bits decoded, and errors worded."""

import collections
import hashlib
from concurrent.futures import ThreadPoolExecutor

import constriction
import numpy as np
import pytest
import torch

from rgbatch import adapt, fastcoder
from rgbatch.codec import Codec
from rgbatch.context import CONTEXT_FEATURES, CONTEXT_PROBABILITIES, Canvas
from rgbatch.entropy import AdaptiveCoder, ContextCoder, EntropyError, GroupedMixingCoder, MixingCoder
from rgbatch.entropy_fit import candidate_features
from rgbatch.imageio import read_image

from conftest import DATA
from test_entropy import GOLDEN, SHAPES, hand_made_model, hashed_bits, sticky_codes

BERNOULLI = constriction.stream.model.Bernoulli(perfect=False)
KINDS = [ContextCoder, AdaptiveCoder, MixingCoder, GroupedMixingCoder]  # coder ids 1-4: the same kernels, without or
# with the map and the mixer (and its group model)


def sequence_kernel(q: np.ndarray):
    """The kernels set to code a plain sequence of bits with per-bit table entries q: bit i's
    context is its own index (K bits read from other planes of the canvas), so that every bit
    gets its own q. Returns (canvas, where its bits lie, the kernels' arguments after the canvas)."""
    n = q.size
    k = max(1, int(np.ceil(np.log2(n))))
    index = np.arange(n)
    # a canvas of n-position planes, one channel, no rows (width 0): two zero planes, the bits
    # (iteration 0 is plane 2), then bit j of each position's index in plane 3 + j, which the
    # kernels read as "channel 1 + j" of the iteration itself
    canvas = np.zeros((3 + k) * n, np.uint8)
    for j in range(k):
        canvas[(3 + j) * n + index] = (index >> (k - 1 - j)) & 1
    features = np.zeros((2, 1, k, 4), np.int64)
    features[..., 1] = np.arange(1, k + 1)
    table = np.ones((2, 1, 2 ** k), np.int64)
    table[0, 0, :n] = q
    reads, own = fastcoder.step_offsets(features[None], bits=1, plane=n, width=0)
    return canvas, slice(2 * n, 3 * n), (reads[0], own[0], index, index[:0], table, False)


def code_sequence(bits: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, int, np.ndarray]:
    """Code a plain sequence of bits with per-bit table entries q through the kernels (`sequence_kernel`).
    Returns the words, the decoder's status and the decoded bits."""
    canvas, plane, args = sequence_kernel(q)
    canvas[plane] = bits
    out = np.empty(fastcoder.max_words(bits.size), np.uint32)
    m = fastcoder.encode_iteration(canvas, *args, out, fastcoder.NOT_RECORDED, 2, *fastcoder.NOT_MIXED)
    words = out[:m].copy()
    return (words, *decode_sequence(words, q))


def decode_sequence(words: np.ndarray, q: np.ndarray) -> tuple[int, np.ndarray]:
    """The kernels' status and bits decoding `words` as a sequence of q.size bits of entries q."""
    canvas, plane, args = sequence_kernel(q)
    status = fastcoder.decode_iteration(canvas, *args, np.asarray(words, np.uint32), 2, *fastcoder.NOT_MIXED)
    return status, canvas[plane].astype(bool)


def constriction_words(bits: np.ndarray, q: np.ndarray) -> np.ndarray:
    encoder = constriction.stream.queue.RangeEncoder()
    encoder.encode(bits.astype(np.int32), BERNOULLI, q / 2.0 ** 15)
    return encoder.get_compressed()


def test_every_table_entry_splits_the_range_as_constriction_does(rng):
    # all 32767 q in one stream, in random order: a cut off by one for any q changes the words
    q = rng.permutation(np.arange(1, 2 ** 15))
    for bits in (rng.random(q.size) < q / 2 ** 15, rng.random(q.size) < 0.5, np.ones(q.size, bool)):
        words, status, decoded = code_sequence(bits.astype(np.uint8), q)
        assert np.array_equal(words, constriction_words(bits, q))
        assert status == 0 and np.array_equal(decoded, bits)


def test_every_adaptive_state_has_its_knot_and_weight_without_a_clamp():
    # the kernels look a state's knot and weight up at q = state >> 9 unclamped: q = 0 (a state
    # below 2**9) must sit where q = 1 does, and the top state's q must be in the table
    assert fastcoder.PLACE[0] == fastcoder.PLACE[1] == 0
    assert adapt.STATE_ONE >> adapt.STATE_SHIFT == fastcoder.PLACE.size - 1
    for entry, bit in ((1, 1), (2 ** 15 - 1, 0), (1, 0), (2 ** 15 - 1, 1)):  # states driven to both ends
        state = adapt.StepState(np.array([entry]), k=1)
        for _ in range(20000):
            state.entry(0)
            state.learn(bit)
        values = state.states + [v for knots in state.maps for v in knots]
        assert 0 <= min(values) and max(values) <= adapt.STATE_ONE


@pytest.mark.parametrize("kind", ["uniform", "extreme", "constant", "unlikely"])
def test_the_kernels_write_constriction_s_words(kind, rng):
    # many short and long streams; the carries and held-back words of the range coder happen
    # in a good share of renormalisations, so these cover every branch many times over
    for trial in range(150):
        n = int(rng.integers(1, 4000)) if trial else 1
        q = {"uniform": lambda: rng.integers(1, 2 ** 15, n),
             "extreme": lambda: rng.choice([1, 2, 3, 2 ** 15 - 2, 2 ** 15 - 1], n),
             "constant": lambda: np.full(n, rng.integers(1, 2 ** 15)),
             "unlikely": lambda: rng.integers(1, 300, n)}[kind]()
        bits = rng.random(n) < (q / 2 ** 15 if kind != "unlikely" else 0.5)
        words, status, decoded = code_sequence(bits.astype(np.uint8), q)
        assert np.array_equal(words, constriction_words(bits, q)), (kind, trial)
        assert status == 0 and np.array_equal(decoded, bits)


def test_the_decoder_accepts_exactly_the_words_the_encoder_writes(rng):
    """A chunk decodes only if it is, word for word, what the encoder writes for the bits it
    decodes to; else the status says why (docs/ENTROPY.md, "The range coder, exactly"). The
    kernel reads that from its final state; here it is checked against constriction's encoder."""
    def why(words, bits, q):  # the status the definition gives: constriction's words for the decoded bits
        sealed = constriction_words(bits, q)
        if np.array_equal(words, sealed):
            return 0
        return 1 if len(words) > len(sealed) else 3 if len(words) < len(sealed) else 2
    seen = collections.Counter()
    for trial in range(3000):
        n = int(rng.integers(1, 200))
        q = [rng.integers(1, 2 ** 15, n), rng.integers(1, 300, n), rng.choice([1, 2 ** 15 - 1], n),
             np.full(n, 2 ** 14)][trial % 4]
        bits = rng.random(n) < 0.5
        words = constriction_words(bits, q)
        # the chunk cut by one word, several, to nothing, and grown: never its bits' words
        for data in [words[:m] for m in range(len(words))] + [np.append(words, w) for w in (0, 1, 2 ** 32 - 1)]:
            status, decoded = decode_sequence(data, q)
            assert status != 0, (trial, len(data), status)
            seen[status] += 1
        # the same words decoded as a longer sequence (a partial chunk read for more steps than it
        # holds), random words, the words of other bits: the status is the definition's
        longer = np.concatenate([q, rng.integers(1, 2 ** 15, int(rng.integers(1, 40)))])
        other = constriction_words(rng.random(n) < 0.5, q)
        for data, entries in ((words, longer), (rng.integers(0, 2 ** 32, int(rng.integers(0, 6)), np.uint32), q),
                              (other, q), (other[:-1], q)):
            status, decoded = decode_sequence(data, entries)
            if status != 2 or len(data) == len(constriction_words(decoded, entries)):  # 2 may stop early
                assert status == why(data, decoded, entries), (trial, status)
            seen[status, "forged"] += 1
    assert all(seen[s] for s in (1, 2, 3)) and all(seen[s, "forged"] > 100 for s in (0, 1, 2, 3)), seen


def random_model(rng, bits: int, iterations: int, k: int) -> dict[str, torch.Tensor]:
    """Random causal features (drawn from the fit's own candidates) and random tables."""
    features = np.empty((iterations, 2, bits, k, 4), np.int16)
    for s in range(2):
        for c in range(bits):
            pool = candidate_features(s, c, bits)
            for t in range(iterations):
                features[t, s, c] = [pool[i] for i in rng.choice(len(pool), k, replace=len(pool) < k)]
    table = rng.integers(1, 2 ** 15, (iterations, 2, bits, 2 ** k)).astype(np.int16)
    return {CONTEXT_FEATURES: torch.from_numpy(features), CONTEXT_PROBABILITIES: torch.from_numpy(table)}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("k", [1, 4, 10])
def test_both_engines_give_the_same_chunks_and_bits_on_many_tiles(k, kind, rng):
    extra = random_model(rng, bits=4, iterations=6, k=k)
    compiled, reference = kind(extra), kind(extra, engine="constriction")
    for codes in ([rng.random((6, *s)) < 0.3 for s in SHAPES], sticky_codes(rng, 6, SHAPES + [(4, 9, 7)])):
        chunks = compiled.encode(codes)
        assert chunks == reference.encode(codes)
        assert [compiled.encode_iteration(codes, t) for t in range(6)] == chunks
        shapes = [c.shape[1:] for c in codes]
        for depth in (1, 3, 6):
            ours, theirs = compiled.decode(chunks[:depth], shapes), reference.decode(chunks[:depth], shapes)
            assert all(np.array_equal(a, c[:depth]) and np.array_equal(b, c[:depth])
                       for a, b, c in zip(ours, theirs, codes))


@pytest.mark.parametrize("kind", KINDS)
def test_contexts_that_read_their_own_step_in_the_row_above_decode_in_both_engines(kind, rng):
    """A feature may read the bit its own step coded in the row above (dt 0, the same channel,
    dy -1): the kernels code a step position by position, the reference decoder row by row."""
    extra = random_model(rng, bits=4, iterations=3, k=4)
    features = extra[CONTEXT_FEATURES]
    for c in range(4):
        features[:, :, c, 0] = torch.tensor([0, c, -1, -1])
        features[:, :, c, 1] = torch.tensor([0, c, -1, 1])
    table = torch.full(extra[CONTEXT_PROBABILITIES].shape, 2 ** 14, dtype=torch.int16)
    table[..., : 2 ** 3] = 3000  # the bit up-left (the context's first bit) 0: a 1 is unlikely
    table[..., 3 * 2 ** 2:] = 29000  # up-left and up-right both 1: likely
    extra[CONTEXT_PROBABILITIES] = table
    compiled, reference = kind(extra), kind(extra, engine="constriction")
    codes = sticky_codes(rng, 3, SHAPES + [(4, 9, 7)])
    shapes = [c.shape[1:] for c in codes]
    chunks = compiled.encode(codes)
    assert chunks == reference.encode(codes)
    for coder in (compiled, reference):
        assert all(np.array_equal(a, b) for a, b in zip(coder.decode(chunks, shapes), codes))
        last = coder.encode_iteration(codes, 2, steps=5)
        assert len(coder.decode(chunks[:2] + [last], shapes, steps=5)) == len(codes)
    # diagonal stripes (each bit repeats the one up and to the left) cost less than the same bits shuffled
    striped = []
    for c in codes:
        rows, cols = c.shape[2:]
        base = rng.random((*c.shape[:2], rows + cols)) < 0.5
        striped.append(base[:, :, np.arange(cols)[None, :] - np.arange(rows)[:, None] + rows])
    shuffled = [c[:, :, rng.permutation(c.shape[2])][:, :, :, rng.permutation(c.shape[3])] for c in striped]
    # (coder id 3's history models find some of the shuffled bits' structure too: the same
    # permutation of every iteration keeps what a block sent before)
    assert sum(map(len, compiled.encode(striped))) < (0.85 if kind.design else 0.8) * sum(map(len, compiled.encode(shuffled)))


@pytest.mark.parametrize("kind", KINDS)
def test_both_engines_code_a_partial_last_chunk_alike_and_decode_its_steps_only(kind, rng):
    """A partial last chunk (docs/FORMAT.md): the first m of the 2 x bits steps of its iteration,
    the same bytes in both engines; decoding gives those steps' bits and False for the others."""
    extra = random_model(rng, bits=4, iterations=3, k=4)
    compiled, reference = kind(extra), kind(extra, engine="constriction")
    codes = sticky_codes(rng, 3, SHAPES + [(4, 9, 7)])
    shapes = [c.shape[1:] for c in codes]
    chunks = compiled.encode(codes)
    layout = Canvas(tuple(shapes))
    for m in (1, 3, 4, 5, 7):
        last = compiled.encode_iteration(codes, 2, steps=m)
        assert last == reference.encode_iteration(codes, 2, steps=m)
        assert len(last) <= len(chunks[2]) and last != chunks[2]
        coded = layout.cut(layout.coded(m))  # the positions the first m steps code, per tile
        for coder in (compiled, reference):
            decoded = coder.decode(chunks[:2] + [last], shapes, steps=m)
            for got, want, mask in zip(decoded, codes, coded):
                assert np.array_equal(got[:2], want[:2])
                assert np.array_equal(got[2], want[2] & mask[0]) and 0 < mask.sum() < mask.size
    assert compiled.encode_iteration(codes, 2, steps=0) == chunks[2]
    with pytest.raises(EntropyError, match="steps"):
        compiled.encode_iteration(codes, 2, steps=8)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("engine", ContextCoder.ENGINES)
def test_golden_stream_pins_the_bytes_of_both_engines(engine, kind):
    coder = kind(hand_made_model(bits=4, iterations=5), engine=engine)
    codes = [hashed_bits((5, *s), i) for i, s in enumerate(SHAPES)]
    chunks = coder.encode(codes)
    digest = hashlib.sha256(b"".join(len(c).to_bytes(4, "little") + c for c in chunks)).hexdigest()
    assert digest[:16] == GOLDEN[kind]


@pytest.mark.parametrize("kind", KINDS)
def test_real_codes_of_the_shipped_model_round_trip_the_same_in_both_engines(default_weights, kind):
    codec = Codec.load(default_weights, coder="raw", precision="fp32", tile_size=128)
    image, _ = read_image(DATA / "kodim23_crop192.png")
    codes = codec.encode_codes([image], 8)[0].tiles  # 4 tiles: 8x8, 8x4, 4x8, 4x4 codes
    compiled, reference = kind(codec.extra), kind(codec.extra, engine="constriction")
    chunks = compiled.encode(codes)
    assert chunks == reference.encode(codes)
    shapes = [c.shape[1:] for c in codes]
    for decoded in (compiled.decode(chunks, shapes), reference.decode(chunks, shapes)):
        assert all(np.array_equal(a, b) for a, b in zip(decoded, codes))
    lengths, expected = compiled.code_lengths(codes), reference.code_lengths(codes)
    assert all(np.allclose(a, b, rtol=0, atol=1e-12) for a, b in zip(lengths, expected))
    # the ideal lengths are what the chunks hold, to the range coder's words and seal
    assert 0 <= sum(map(len, chunks)) * 8 - sum(x.sum() for x in lengths) < 8 * 8 * len(chunks)


@pytest.mark.parametrize("kind", KINDS)
def test_threads_code_at_once_and_give_the_same_chunks(rng, kind):
    coder = kind(random_model(rng, bits=4, iterations=4, k=6))
    images = [sticky_codes(rng, 4, [(4, 20, 24), (4, 20, 8)]) for _ in range(6)]
    alone = [coder.encode(codes) for codes in images]
    with ThreadPoolExecutor(3) as pool:
        assert list(pool.map(coder.encode, images)) == alone
        decoded = list(pool.map(lambda c: coder.decode(c, [(4, 20, 24), (4, 20, 8)]), alone))
    assert all(np.array_equal(a, b) for d, codes in zip(decoded, images) for a, b in zip(d, codes))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("engine", ContextCoder.ENGINES)
def test_a_chunk_no_encoder_wrote_is_a_worded_error(engine, kind, rng):
    coder = kind(hand_made_model(bits=4, iterations=5), engine=engine)
    chunk = coder.encode([rng.random((1, *SHAPES[0])) < 0.5])[0]
    with pytest.raises(EntropyError, match="more bytes"):
        coder.decode([chunk + bytes(64)], SHAPES[:1])
    # a point past the top of the first interval: constriction's "invalid data"
    with pytest.raises(EntropyError, match="not a chunk of the context coder"):
        coder.decode([b"\xff" * 8], SHAPES[:1])
    # random words: test_truncated_and_garbage_chunks_end_the_same_in_both_engines


def outcome(coder, chunks, shapes, steps=0):
    """What decoding gives: the codes, or the EntropyError's words."""
    try:
        return coder.decode(chunks, shapes, steps)
    except EntropyError as e:
        return str(e)


def same_outcome(engines, chunks, shapes, steps=0):
    """Decodes with every engine: the same worded refusal, or the same codes."""
    first, *others = [outcome(coder, chunks, shapes, steps) for coder in engines]
    for other in others:
        assert type(other) is type(first)
        assert other == first if isinstance(first, str) else all(map(np.array_equal, other, first)), (first, other)
    return first


@pytest.mark.parametrize("kind", KINDS)
def test_truncated_and_garbage_chunks_end_the_same_in_both_engines(kind, rng):
    # a real chunk cut word by word: refused, in the same words by both engines; random words:
    # refused alike, or decoded to the same bits, and then they are the words an encoder writes for them
    model = hand_made_model(bits=4, iterations=5)
    engines = [kind(model, engine="compiled"), kind(model, engine="constriction")]
    shapes = [(4, 12, 10)]
    chunk = engines[0].encode(sticky_codes(rng, 1, shapes))[0]
    cuts = [chunk[:n] for n in range(0, len(chunk), 4)]  # every cut of it
    garbage = [rng.integers(0, 256, 4 * n, dtype=np.uint8).tobytes() for n in (1, 2, 3, 10, 50, 50, 50, 200)]
    for data in cuts + garbage:
        got = same_outcome(engines, [data], shapes)
        if isinstance(got, str):
            assert got.startswith("iteration 1 "), got
        else:
            assert data not in cuts and engines[0].encode(got) == [data]
    assert "ends before its bits are decoded" in same_outcome(engines, [chunk[:-4]], shapes)


@pytest.mark.parametrize("kind", KINDS)
def test_a_chunk_cut_short_is_refused_at_every_depth_in_both_engines(kind, rng):
    """The gap of session 12: a chunk cut by a word, by several, or to nothing, its checksums
    recomputed, decoded to wrong bits. No longer: a chunk must be its bits' words, and no prefix
    of an encoder's chunk is one (docs/ENTROPY.md, "The range coder, exactly")."""
    model = random_model(rng, bits=4, iterations=6, k=6)
    engines = [kind(model, engine="compiled"), kind(model, engine="constriction")]
    shapes = [(4, 9, 7), (4, 4, 4)]
    codes = sticky_codes(rng, 6, shapes)
    chunks = engines[0].encode(codes)
    reasons = collections.Counter()
    for t in (0, 2, 5):  # depths 1, 3 and 6
        words = len(chunks[t]) // 4
        for cut in sorted({1, 2, 3, words // 2, words}):
            short = chunks[t][:-4 * cut]
            for rest in ([], chunks[t + 1:]):  # the cut chunk last, or followed by the others
                got = same_outcome(engines, chunks[:t] + [short] + rest, shapes)
                assert isinstance(got, str) and got.startswith(f"iteration {t + 1} "), (t, cut, got)
                reasons[got.split(" ", 2)[2].split(";")[0]] += 1
    assert reasons["ends before its bits are decoded (cut short or forged)"] > 5, reasons


@pytest.mark.parametrize("kind", KINDS)
def test_a_partial_chunk_read_for_more_steps_than_it_holds_is_refused_or_is_the_encoder_s(kind, rng):
    """Header byte 27 raised above the steps a partial last chunk holds: refused, unless the chunk
    is also, word for word, what the encoder writes for the bits the extra steps decode to (a
    valid chunk of those steps: a range decoder reads some bits from any point; more likely the
    fewer positions a step has). Both engines alike."""
    model = random_model(rng, bits=4, iterations=3, k=4)
    engines = [kind(model, engine="compiled"), kind(model, engine="constriction")]
    seen = collections.Counter()
    for shapes, images in (([(4, 3, 5), (4, 2, 2)], 6), ([(4, 12, 10), (4, 9, 7)], 2)):  # 19 and 183 positions
        for _ in range(images):
            codes = sticky_codes(rng, 3, shapes)
            for m in (1, 3, 4, 6):
                chunks = engines[0].encode(codes)[:2] + [engines[0].encode_iteration(codes, 2, steps=m)]
                assert same_outcome(engines, chunks, shapes, m)[0].shape == codes[0].shape  # as written: decodes
                for more in range(m + 1, 8):
                    got = same_outcome(engines, chunks, shapes, more)
                    if isinstance(got, str):
                        assert got.startswith("iteration 3 "), got
                        seen[shapes[0][1], "refused"] += 1
                    else:
                        assert engines[0].encode_iteration(got, 2, steps=more) == chunks[2]
                        seen[shapes[0][1], "the encoder's"] += 1
    assert seen[12, "the encoder's"] == 0 and seen[12, "refused"] > 20, seen  # a step of 90+ positions
    assert seen[3, "refused"] > 20, seen


def test_a_model_that_reads_outside_the_canvas_is_refused():
    extra = hand_made_model(bits=4, iterations=5)
    extra[CONTEXT_FEATURES][2, 1, 3, 0] = torch.tensor([1, 4, 0, 0])  # channel 4 of 0..3
    with pytest.raises(EntropyError, match="channel that does not exist"):
        ContextCoder(extra)


def test_the_kernels_are_the_default_and_numba_is_optional(monkeypatch):
    extra = hand_made_model(bits=4, iterations=5)
    assert ContextCoder(extra).engine == "compiled"  # numba is a dependency: these tests test the kernels
    with pytest.raises(ValueError, match="engine"):
        ContextCoder(extra, engine="fast")
    def uncachable(name, package=None):  # numba, where the package folder and the home are read-only
        raise RuntimeError("cannot cache function '_fresh_state': no locator available for file 'fastcoder.py'")

    monkeypatch.setattr("rgbatch.entropy.import_module", uncachable)  # a set-up error until session 63
    assert ContextCoder(extra).engine == "constriction"
    monkeypatch.setattr("rgbatch.entropy._import_kernels", lambda: None)  # a machine without numba
    assert ContextCoder(extra).engine == "constriction"
    with pytest.raises(EntropyError, match="needs numba"):
        ContextCoder(extra, engine="compiled")
