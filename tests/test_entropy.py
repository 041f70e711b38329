import hashlib
import os

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from rgbatch import bitstream
from rgbatch.cli import app
from rgbatch.codec import Codec
from rgbatch.context import CONTEXT_FEATURES, CONTEXT_PROBABILITIES, PROBABILITY_BITS, is_causal
from rgbatch.entropy import (AdaptiveCoder, ContextCoder, EntropyError, GroupedMixingCoder, MixingCoder, RawCoder,
                             get_coder)
from rgbatch.entropy_fit import candidate_features, fit_context_model
from rgbatch.options import OptionError
from rgbatch.weights import load_weights

from conftest import DATA, smooth_image

SHAPES = [(4, 3, 5), (4, 2, 2), (4, 6, 1)]  # (bits, rows, cols) of three unequal tiles


def hashed_bits(shape, salt: int) -> np.ndarray:
    """Bits from integer hashing only: the same on every machine and numpy version (P(1) = 3/8)."""
    x = np.arange(np.prod(shape), dtype=np.uint64) + np.uint64(salt * 1_000_003)
    return ((x * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(61) < 3).reshape(shape)


def hand_made_model(bits: int, iterations: int) -> dict[str, torch.Tensor]:
    """A fixed context model built from integers. Per iteration: the previous two iterations,
    then the right neighbour (second colour) or, alternating by iteration, the neighbour below
    in the previous iteration or the channel coded just before (first colour)."""
    def third(t, s, c):
        if s:
            return (0, c, 0, 1)
        return (1, c, 1, 0) if t % 2 or c == 0 else (0, c - 1, 0, 0)
    features = [[[[(1, c, 0, 0), (2, c, 0, 0), third(t, s, c)] for c in range(bits)] for s in range(2)]
                for t in range(iterations)]
    size = iterations * 2 * bits * 8
    table = 1 + (np.arange(size) * 7919) % (2 ** PROBABILITY_BITS - 1)
    return {CONTEXT_FEATURES: torch.tensor(features, dtype=torch.int16),
            CONTEXT_PROBABILITIES: torch.from_numpy(table.reshape(iterations, 2, bits, 8).astype(np.int16))}


def sticky_codes(rng, iterations, shapes, flip=0.1):
    """Codes whose bits repeat the previous iteration's, each flipped with probability `flip`."""
    tiles = []
    for bits, rows, cols in shapes:
        codes = np.empty((iterations, bits, rows, cols), bool)
        codes[0] = rng.random((bits, rows, cols)) < 0.5
        for t in range(1, iterations):
            codes[t] = codes[t - 1] ^ (rng.random((bits, rows, cols)) < flip)
        tiles.append(codes)
    return tiles


GOLDEN = {ContextCoder: "a8d8b84d79d66759",  # pinned since session 3
          AdaptiveCoder: "7f57549cc6748164",  # since session 11
          MixingCoder: "7af1dfa0f95f8568",  # since session 26
          GroupedMixingCoder: "c4a6e5a19d4e7f62"}  # since session 27


@pytest.fixture(scope="module", params=[ContextCoder, AdaptiveCoder, MixingCoder, GroupedMixingCoder],
                ids=lambda kind: kind.name)
def coder(request):
    return request.param(hand_made_model(bits=4, iterations=5))


@pytest.mark.parametrize("make", [lambda: RawCoder(), lambda: ContextCoder(hand_made_model(4, 5)),
                                  lambda: AdaptiveCoder(hand_made_model(4, 5)), lambda: MixingCoder(hand_made_model(4, 5)),
                                  lambda: GroupedMixingCoder(hand_made_model(4, 5))])
def test_round_trip_is_exact_at_every_depth(make, rng):
    coder = make()
    codes = [rng.random((5, *s)) < 0.3 for s in SHAPES]
    chunks = coder.encode(codes)
    assert len(chunks) == 5
    for k in range(1, 6):
        decoded = coder.decode(chunks[:k], SHAPES)
        assert all(np.array_equal(d, c[:k]) for d, c in zip(decoded, codes))


def test_chunk_t_depends_only_on_iterations_up_to_t(coder, rng):
    codes = [rng.random((5, *s)) < 0.5 for s in SHAPES]
    chunks = coder.encode(codes)
    changed = [c.copy() for c in codes]
    for c in changed:
        c[3:] = ~c[3:]
    assert coder.encode(changed)[:3] == chunks[:3]
    assert coder.encode([c[:3] for c in codes]) == chunks[:3]


def test_probabilities_of_an_iteration_are_what_it_is_coded_with(coder, rng):
    codes = [rng.random((5, *s)) < 0.3 for s in SHAPES]
    lengths = coder.code_lengths(codes)
    for t in range(5):
        later = [c.copy() for c in codes]
        for c in later:
            c[t + 1:] = ~c[t + 1:]  # iterations after t play no part
        for tile, p_one, length in zip(codes, coder.probabilities(later, t), lengths):
            np.testing.assert_allclose(-np.log2(np.where(tile[t], p_one, 1 - p_one)), length[t])


def test_streams_are_the_same_bytes_on_every_machine(coder):
    # integer tables and integer-made codes: any machine must produce exactly these bytes
    codes = [hashed_bits((5, *s), i) for i, s in enumerate(SHAPES)]
    chunks = coder.encode(codes)
    digest = hashlib.sha256(b"".join(len(c).to_bytes(4, "little") + c for c in chunks)).hexdigest()
    assert digest[:16] == GOLDEN[type(coder)]
    assert all(np.array_equal(d, c) for d, c in zip(coder.decode(chunks, SHAPES), codes))


def test_probabilities_are_exact_binary_fractions(coder):
    # the reference engine hands constriction q / 2**15: exact, so every machine splits alike
    p = coder.table / 2.0 ** PROBABILITY_BITS
    assert np.array_equal(p * 2 ** PROBABILITY_BITS, coder.table)
    assert 0 < p.min() and p.max() < 1
    # and so are the entries each bit is coded with, coder id 2's refined ones included: every
    # bit's probability, 2**-length, is a whole number of 2**-15 in 1 .. 2**15 - 1
    codes = [hashed_bits((5, *s), i) for i, s in enumerate(SHAPES)]
    lengths = coder.code_lengths(codes)
    for length in lengths:
        units = 2.0 ** (PROBABILITY_BITS - length)
        assert np.allclose(units, np.round(units), rtol=0, atol=1e-6)
        assert 1 <= np.round(units).min() and np.round(units).max() <= 2 ** PROBABILITY_BITS - 1
    # coder id 2 codes with entries of its own: the adaptation changes what the table says
    table_lengths = ContextCoder(hand_made_model(bits=4, iterations=5)).code_lengths(codes)
    same = all(np.array_equal(a, b) for a, b in zip(lengths, table_lengths))
    assert same == (type(coder) is ContextCoder)


def test_every_candidate_feature_is_known_to_the_decoder():
    for s in range(2):
        for c in range(32):
            pool = candidate_features(s, c, 32)
            assert all(is_causal(f, s, c) for f in pool)
            assert (0, c, 0, 0) not in pool  # the bit itself
    assert not is_causal((0, 5, 0, 0), 0, 5)  # same channel, same iteration
    assert not is_causal((0, 3, 0, 1), 0, 9)  # other colour, not coded yet in the first pass
    assert is_causal((0, 3, 0, 1), 1, 0)  # ... but coded in the second
    for s in range(2):  # the same channel in the row above, at the same colour: coded earlier in the step
        assert is_causal((0, 7, -1, -1), s, 7) and is_causal((0, 7, -1, 1), s, 7)
        assert not is_causal((0, 7, 1, -1), s, 7) and not is_causal((0, 7, 1, 1), s, 7)
        assert (0, 7, -1, 1) in candidate_features(s, 7, 32)


def test_features_shared_by_all_iterations_are_read_as_such(rng):
    extra = hand_made_model(4, 5)
    shared = {**extra, CONTEXT_FEATURES: extra[CONTEXT_FEATURES][1]}
    per_iteration = {**extra, CONTEXT_FEATURES: extra[CONTEXT_FEATURES][1:2].expand(5, -1, -1, -1, -1)}
    codes = [rng.random((5, *s)) < 0.5 for s in SHAPES]
    assert ContextCoder(shared).encode(codes) == ContextCoder(per_iteration).encode(codes)


def test_a_model_that_reads_the_future_is_refused():
    extra = hand_made_model(4, 5)
    extra[CONTEXT_FEATURES][3, 0, 2, 0] = torch.tensor([0, 2, 0, 0])
    with pytest.raises(EntropyError, match="reads the future"):
        ContextCoder(extra)


def test_fitting_channels_in_parallel_gives_the_same_model(rng):
    tiles = sticky_codes(rng, 4, [(4, 8, 8)] * 6)
    one, many = (fit_context_model(tiles, context_bits=3, workers=w) for w in (1, 3))
    assert all(torch.equal(one[k], many[k]) for k in one)


def test_fitting_finds_the_previous_iteration_and_codes_near_the_entropy(rng):
    extra = fit_context_model(sticky_codes(rng, 6, [(3, 8, 8)] * 8), context_bits=2)
    features = extra[CONTEXT_FEATURES].numpy()
    for s in range(2):
        for c in range(3):
            # iteration 1 has nothing to go on; every later one first asks the one before
            assert all(tuple(features[t, s, c, 0]) == (1, c, 0, 0) for t in range(1, 6))
    coder = ContextCoder(extra)
    fresh = sticky_codes(rng, 6, [(3, 16, 16)] * 4)
    coded = sum(len(c) for c in coder.encode(fresh))
    raw = sum(len(c) for c in RawCoder().encode(fresh))
    flip_entropy = -(0.1 * np.log2(0.1) + 0.9 * np.log2(0.9))
    assert coded / raw < (1 + 5 * flip_entropy) / 6 + 0.05  # first iteration is incompressible


def test_unknown_coders_and_missing_tables_are_worded_errors():
    with pytest.raises(OptionError, match="coder must be one of .*raw, auto, not 'zip'"):  # a name: the caller's
        get_coder("zip")
    with pytest.raises(EntropyError, match="unknown entropy coder 9"):  # an id: a stream's
        get_coder(9)
    with pytest.raises(EntropyError, match="fit-entropy"):
        get_coder("context", {})
    assert isinstance(get_coder("auto", {}), RawCoder)
    assert type(get_coder("auto", hand_made_model(4, 5))) is GroupedMixingCoder  # the default since session 27 (3, 2 before)
    assert type(get_coder(1, hand_made_model(4, 5))) is ContextCoder  # and ids 1 and 2 are still known
    assert type(get_coder(2, hand_made_model(4, 5))) is AdaptiveCoder


def test_chunks_of_the_wrong_size_are_refused(coder, rng):
    chunks = coder.encode([rng.random((1, *SHAPES[0])) < 0.5])
    with pytest.raises(EntropyError, match="32-bit words"):
        coder.decode([chunks[0] + b"\0"], SHAPES[:1])
    with pytest.raises(EntropyError, match="more bytes"):
        coder.decode([chunks[0] + bytes(64)], SHAPES[:1])


# -- with a model: the fit-entropy command and the codec ---------------------------------------
@pytest.fixture(scope="module")
def fitted_weights(tiny_weights, tmp_path_factory):
    out = tmp_path_factory.mktemp("entropy") / "fitted.safetensors"
    result = CliRunner().invoke(app, ["fit-entropy", str(tiny_weights), "--data", str(DATA), "--out", str(out),
                                      "--images", "2", "--crop", "64", "--context-bits", "2", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    return out


def test_fit_entropy_adds_the_tables_to_the_weights(tiny_weights, fitted_weights):
    model, mid, extra, info = load_weights(fitted_weights)
    _, tiny_id, tiny_extra, _ = load_weights(tiny_weights)
    assert set(extra) == {CONTEXT_FEATURES, CONTEXT_PROBABILITIES} and not tiny_extra
    assert mid != tiny_id  # the tables are part of the model id
    assert info["entropy"]["images"] == 2
    assert extra[CONTEXT_PROBABILITIES].shape == (model.cfg.max_iterations, 2, model.cfg.bits, 4)


def test_codec_uses_the_mixing_coder_and_decodes_as_raw_would(fitted_weights, rng):
    image = smooth_image(rng, 90, 140)
    default = Codec.load(fitted_weights, tile_size=64, device="cpu")
    raw = Codec.load(fitted_weights, tile_size=64, device="cpu", coder="raw")
    context = Codec.load(fitted_weights, tile_size=64, device="cpu", coder="context")
    a, b = default.encode(image, 4, measure=False), raw.encode(image, 4, measure=False)
    c = context.encode(image, 4, measure=False)
    assert bitstream.read_header(a.blob).coder_id == GroupedMixingCoder.coder_id
    assert bitstream.read_header(c.blob).coder_id == ContextCoder.coder_id
    for k in range(1, 5):
        cut = bitstream.truncate(a.blob, k)
        assert np.array_equal(default.decode(cut), raw.decode(b.blob, iterations=k))
        # coder id 1's streams (every archive before session 11) decode by their header's id
        assert np.array_equal(default.decode(bitstream.truncate(c.blob, k)), raw.decode(b.blob, iterations=k))
        assert len(cut) == a.bytes[k - 1]


def test_weights_without_tables_cannot_use_the_context_coder(tiny_weights):
    assert Codec.load(tiny_weights, device="cpu").coder.name == "raw"
    with pytest.raises(ValueError, match="no context model"):
        Codec.load(tiny_weights, device="cpu", coder="context")


def test_fit_entropy_on_a_missing_folder_is_one_line_and_exit_2(tiny_weights, tmp_path):
    result = CliRunner().invoke(app, ["fit-entropy", str(tiny_weights), "--data", str(tmp_path / "nope"),
                                      "--out", str(tmp_path / "w.safetensors")])
    message = " ".join(result.output.split())  # rich wraps long lines
    assert result.exit_code == 2
    assert "Traceback" not in message and "is not a folder" in message


def test_fit_entropy_reads_several_folders_together(tmp_path):
    from rgbatch.entropy_fit import training_crops
    other = tmp_path / "more"
    other.mkdir()
    (other / "copy.png").write_bytes(next(DATA.glob("*.png")).read_bytes())
    assert len(training_crops(DATA, 0, 64)) + 1 == len(training_crops([DATA, other], 0, 64))


def test_fit_entropy_keeps_the_crops_codes_for_a_refit(tiny_weights, tmp_path, monkeypatch):
    args = ["fit-entropy", str(tiny_weights), "--data", str(DATA), "--images", "2", "--crop", "64",
            "--context-bits", "2", "--device", "cpu", "--cache", str(tmp_path / "codes")]
    first = CliRunner().invoke(app, args + ["--out", str(tmp_path / "a.safetensors")])
    assert first.exit_code == 0, first.output
    assert len(list((tmp_path / "codes").glob("*.npz"))) == 1

    def no_network(*_, **__):
        raise AssertionError("the refit ran the network")

    monkeypatch.setattr(Codec, "encode_codes", no_network)
    second = CliRunner().invoke(app, args + ["--out", str(tmp_path / "b.safetensors")])
    assert second.exit_code == 0, second.output
    assert (load_weights(tmp_path / "a.safetensors")[2][CONTEXT_PROBABILITIES]
            == load_weights(tmp_path / "b.safetensors")[2][CONTEXT_PROBABILITIES]).all()


def test_fit_entropys_cache_follows_the_images_and_a_damaged_one_is_made_again(tiny_weights, tmp_path, monkeypatch):
    """The cache was keyed by the folders' names: changed images refitted stale codes; a damaged
    cache file ended the fit in a traceback (session 60). An unreadable image is skipped by name."""
    from PIL import Image

    from rgbatch import entropy_fit

    data = tmp_path / "data"
    data.mkdir()
    for name in ("kodim05_crop192.png", "kodim23_crop192.png"):
        Image.open(DATA / name).save(data / name)
    (data / "empty.png").write_bytes(b"")
    codec = Codec.load(tiny_weights)
    said = []
    first = entropy_fit.training_codes(codec, data, 0, 64, 0, tmp_path / "codes", said.append)
    assert len(first) == 2 and any("empty.png: empty file" in m for m in said)
    (cached,) = (tmp_path / "codes").glob("*.npz")
    Image.open(DATA / "kodim05_crop192.png").rotate(90).save(data / "kodim23_crop192.png")  # another picture
    os.utime(data / "kodim23_crop192.png", ns=(1, 1))
    second = entropy_fit.training_codes(codec, data, 0, 64, 0, tmp_path / "codes", said.append)
    assert len(list((tmp_path / "codes").glob("*.npz"))) == 2 and not all(np.array_equal(a, b) for a, b in zip(first, second))
    (current,) = set((tmp_path / "codes").glob("*.npz")) - {cached}
    current.write_bytes(current.read_bytes()[:300])  # cut short
    again = entropy_fit.training_codes(codec, data, 0, 64, 0, tmp_path / "codes", said.append)
    assert all(np.array_equal(a, b) for a, b in zip(second, again)) and any("cannot be read" in m for m in said)
    assert len(np.load(current).files) == 2  # made again


def test_fit_entropy_keeps_a_refiner_and_export_tables_from_takes_the_tables_alone(tiny_weights, tmp_path):
    """fit-entropy dropped the file's refiner (its info still saying it had one); `export
    --tables-from` copied the other file's refiner with its tables (session 60)."""
    from rgbatch.refine import PREFIX, Refiner, RefinerConfig, refiner_tensors
    from rgbatch.train import TrainConfig, train
    from rgbatch.weights import save_weights

    model = load_weights(tiny_weights)[0]
    refined = tmp_path / "refined.safetensors"
    save_weights(refined, model, refiner_tensors(Refiner(RefinerConfig(channels=8, blocks=1))))
    out = tmp_path / "fitted.safetensors"
    done = CliRunner().invoke(app, ["fit-entropy", str(refined), "--data", str(DATA), "--out", str(out), "--images", "2",
                                    "--crop", "64", "--context-bits", "2", "--device", "cpu"])
    assert done.exit_code == 0, done.output
    extra = load_weights(out)[2]
    assert any(k.startswith(PREFIX) for k in extra) and CONTEXT_PROBABILITIES in extra
    train(TrainConfig(data_dir=str(DATA), out=str(tmp_path / "run.pt"), steps=1, batch_size=2, iterations=2,
                      checkpoint_every=1, codec=dict(width=0.125, max_iterations=4)), log=lambda *_: None)
    exported = tmp_path / "exported.safetensors"
    done = CliRunner().invoke(app, ["export", str(tmp_path / "run.pt"), "--out", str(exported), "--tables-from", str(out)])
    assert done.exit_code == 0, done.output
    extra = load_weights(exported)[2]
    assert CONTEXT_PROBABILITIES in extra and not any(k.startswith(PREFIX) for k in extra)
    again = CliRunner().invoke(app, ["export", str(tmp_path / "run.pt"), "--out", str(exported)])
    assert again.exit_code == 2 and "--overwrite" in again.output  # replaced without a word until session 60
    assert CliRunner().invoke(app, ["export", str(tmp_path / "run.pt"), "--out", str(exported), "--overwrite"]).exit_code == 0


def test_fit_entropy_writes_into_its_weights_but_replaces_another_file_only_when_asked(tiny_weights, tmp_path):
    """Any existing --out was replaced without a word (session 60); the refit in place, the
    documented use, needs no option."""
    import shutil

    weights = tmp_path / "w.safetensors"
    shutil.copy(tiny_weights, weights)
    (tmp_path / "other.safetensors").write_bytes(b"precious")
    args = ["--data", str(DATA), "--images", "2", "--crop", "64", "--context-bits", "2", "--device", "cpu"]
    refused = CliRunner().invoke(app, ["fit-entropy", str(weights), "--out", str(tmp_path / "other.safetensors"), *args])
    assert refused.exit_code == 2 and "--overwrite" in refused.output
    assert (tmp_path / "other.safetensors").read_bytes() == b"precious"
    in_place = CliRunner().invoke(app, ["fit-entropy", str(weights), "--out", str(weights), *args])
    assert in_place.exit_code == 0, in_place.output
    assert CONTEXT_PROBABILITIES in load_weights(weights)[2]
    asked = CliRunner().invoke(app, ["fit-entropy", str(weights), "--out", str(tmp_path / "other.safetensors"),
                                     "--overwrite", *args])
    assert asked.exit_code == 0 and load_weights(tmp_path / "other.safetensors")[1] == load_weights(weights)[1]
