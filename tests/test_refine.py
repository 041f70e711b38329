import functools
import json
import threading
from dataclasses import replace

import numpy as np
import pytest
import torch

from rgbatch import refine
from rgbatch.codec import Codec
from rgbatch.model import CodecConfig, ResidualGRUCodec
from rgbatch.refine import (BandRefiner, Refiner, RefinerConfig, RefinerError, load_refiner, refine_image,
                            refiner_flops_per_pixel, refiner_tensors)
from rgbatch.weights import save_weights


def busy_refiner(seed=0, **config) -> Refiner:
    """A refiner that changes images (a fresh one is the identity: its last layer is zero)."""
    torch.manual_seed(seed)
    r = Refiner(RefinerConfig(**{"channels": 8, "blocks": 1, **config}))
    with torch.no_grad():
        for m in r.modules():
            if isinstance(m, torch.nn.Conv2d):
                torch.nn.init.normal_(m.weight, 0, 0.05)
        r.depth_bias.weight.normal_(0, 0.1)
    return r.eval()


def test_a_fresh_refiner_is_the_identity(rng):
    image = rng.integers(0, 256, (37, 29, 3), dtype=np.uint8)
    assert np.array_equal(Refiner().eval().refine_pixels(image, 5), image)


@pytest.mark.parametrize("height", [1, 7, 255, 256, 300, 700])
def test_refining_band_by_band_is_refining_the_whole_image(rng, monkeypatch, height):
    monkeypatch.setattr(refine, "BAND_ROWS", 64)
    r = busy_refiner()
    image = rng.integers(0, 256, (height, 45, 3), dtype=np.uint8)
    whole = r.refine_pixels(image, 3)
    assert not np.array_equal(whole, image)
    assert np.array_equal(refine_image(r, image, 3), whole)
    # rows arriving in uneven bands, as tile rows do, give the same pixels
    band, out, y = BandRefiner(r, 3, height), [], 0
    for step in (16, 48, 5, 100, 1000):
        out += band.add(y, image[y:y + step])
        y = min(height, y + step)
    assert [y for y, _ in out] == list(range(0, height, 64))
    assert np.array_equal(np.concatenate([rows for _, rows in out]), whole)


def test_rows_out_of_order_are_refused(rng):
    band = BandRefiner(busy_refiner(), 1, 100)
    band.add(0, np.zeros((10, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="in order"):
        band.add(20, np.zeros((10, 8, 3), np.uint8))


def test_the_depth_changes_the_refinement(rng):
    r = busy_refiner()
    image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    assert not np.array_equal(r.refine_pixels(image, 1), r.refine_pixels(image, 16))


def test_a_weight_file_carries_the_refiner_in_its_model_id(tmp_path, rng):
    torch.manual_seed(1)
    model = ResidualGRUCodec(CodecConfig(width=0.125))
    r = busy_refiner(blocks=2)
    plain = save_weights(tmp_path / "plain.safetensors", model)
    refined = save_weights(tmp_path / "refined.safetensors", model, refiner_tensors(r))
    assert plain != refined
    state = torch.random.get_rng_state()
    loaded = load_refiner(refiner_tensors(r))
    assert loaded.cfg == r.cfg and torch.equal(torch.random.get_rng_state(), state)  # a caller's random numbers kept
    # the file stores fp16: the loaded refiner is the original with its weights rounded so
    rounded = Refiner(r.cfg).eval()
    rounded.load_state_dict({k: v.half().float() for k, v in r.state_dict().items()})
    image = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
    assert np.array_equal(loaded.refine_pixels(image, 2), rounded.refine_pixels(image, 2))
    assert load_refiner({}) is None


def test_a_malformed_refiner_is_a_clear_error():
    tensors = refiner_tensors(busy_refiner())
    tensors[refine.CONFIG] = torch.tensor([9, 1, 4, 16], dtype=torch.int32)
    with pytest.raises(RefinerError, match="does not fit its config"):
        load_refiner(tensors)
    tensors[refine.CONFIG] = torch.tensor([0, 1, 4, 16], dtype=torch.int32)
    with pytest.raises(RefinerError):
        load_refiner(tensors)


@pytest.fixture(scope="module")
def refined_weights(tmp_path_factory):
    torch.manual_seed(1234)
    path = tmp_path_factory.mktemp("refined") / "refined.safetensors"
    save_weights(path, ResidualGRUCodec(CodecConfig(width=0.125)), refiner_tensors(busy_refiner(seed=3)))
    return path


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_the_codec_measures_and_decodes_the_refined_images(refined_weights, rng, monkeypatch, precision):
    from rgbatch.metrics import msssim

    monkeypatch.setattr(refine, "BAND_ROWS", 32)  # several bands, tile rows of 64
    image = rng.integers(0, 256, (150, 90, 3), dtype=np.uint8)
    # one tile a batch: the refiner's float sums then do not depend on how tiles are batched; the
    # exact decoder in the encoder's loop, so that it measures the decoder's images
    codec = Codec.load(refined_weights, tile_size=64, batch_size=1, precision=precision, decoding="exact-loop")
    plain = Codec.load(refined_weights, tile_size=64, batch_size=1, precision=precision, refine=False,
                       decoding="exact-loop")
    assert codec.refiner is not None and plain.refiner is None
    encoded = codec.encode(image, iterations=3, keep_reconstructions=True)
    network = plain.encode(image, iterations=3, keep_reconstructions=True)
    assert encoded.blob == network.blob  # the refiner changes no code
    for k in range(1, 4):
        decoded = codec.decode(encoded.blob, iterations=k)
        assert np.array_equal(decoded, encoded.reconstructions[k - 1])
        assert np.array_equal(plain.decode(encoded.blob, iterations=k), network.reconstructions[k - 1])
        assert not np.array_equal(decoded, network.reconstructions[k - 1])
        assert msssim(image, decoded) == pytest.approx(encoded.msssim[k - 1], abs=1e-6)


def test_refinement_costs_what_its_layers_say():
    cfg = RefinerConfig()
    planes, c = 48, cfg.channels
    expected = 2 * 9 * (2 * planes * c + 2 * cfg.blocks * c * c) / 16
    assert refiner_flops_per_pixel(cfg) == expected
    assert cfg.halo == 4 * (2 + 2 * cfg.blocks)


def test_fit_refiner_trains_resumes_and_attaches(tmp_path, rng, monkeypatch):
    from PIL import Image

    from rgbatch import refine_fit
    from rgbatch.weights import load_weights

    monkeypatch.setattr(refine_fit, "VALIDATION", 4)
    data = tmp_path / "data"
    data.mkdir()
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (200, 230, 3), dtype=np.uint8)).save(data / f"{i}.png")
    torch.manual_seed(0)
    weights = tmp_path / "tiny.safetensors"
    save_weights(weights, ResidualGRUCodec(CodecConfig(width=0.125, max_iterations=3)))
    logs = []
    state, out = tmp_path / "refiner.pt", tmp_path / "refined.safetensors"
    small = RefinerConfig(channels=8, blocks=1)
    pairs = refine_fit.make_pairs(weights, [data], tmp_path / "pairs", log=logs.append)
    orig, rec = np.load(pairs / "orig.npy"), np.load(pairs / "rec.npy")
    assert orig.shape == (12, 192, 192, 3) and rec.shape == (12, 3, 192, 192, 3)  # 2 crops an image, 3 depths
    refiner = refine_fit.train_refiner(pairs, state, steps=4, batch_size=2, config=small, checkpoint_every=2,
                                       validate_every=2, log=logs.append)
    assert torch.load(state, weights_only=True)["step"] == 4
    assert any("gain per depth" in m for m in logs)
    refine_fit.train_refiner(pairs, state, steps=6, batch_size=2, config=small, log=logs.append)
    assert "resuming the refiner's training at step 4" in logs
    assert torch.load(state, weights_only=True)["step"] == 6
    stop = threading.Event()
    stop.set()  # fit-refiner's Ctrl-C or SIGTERM: the state as it is, no weight file
    refine_fit.train_refiner(pairs, state, steps=100, batch_size=2, config=small, log=logs.append, stop=stop)
    assert torch.load(state, weights_only=True)["step"] == 6
    monkeypatch.setattr(refine_fit, "make_pairs", lambda *a, **k: pairs)
    monkeypatch.setattr(refine_fit, "train_refiner", functools.partial(refine_fit.train_refiner, batch_size=2,
                                                                       config=small))
    assert refine_fit.fit_refiner(weights, [data], out, state, steps=100, log=logs.append, stop=stop) is None
    assert not out.exists() and torch.load(state, weights_only=True)["step"] == 6
    mid = refine_fit.attach_refiner(weights, refiner, out)
    model, loaded_id, extra, info = load_weights(out)
    assert loaded_id == mid and load_refiner(extra).cfg == small and "refiner" in info
    # the codes are those of the weights without it
    image = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    refined_codes = Codec.load(out).encode(image, 2, keep_codes=True).codes.tiles
    plain_codes = Codec.load(weights).encode(image, 2, keep_codes=True).codes.tiles
    assert all(np.array_equal(a, b) for a, b in zip(refined_codes, plain_codes))


def test_pairs_and_a_state_made_from_another_model_are_refused_not_reused(tmp_path, rng, monkeypatch):
    """Until session 56 a kept folder of pairs (and a state trained on them) was reused whatever
    weights or data `fit-refiner` was given: a refiner for another model's codes, without a word."""
    from PIL import Image

    from rgbatch import refine_fit
    from rgbatch.options import OptionError

    monkeypatch.setattr(refine_fit, "VALIDATION", 4)
    data = tmp_path / "data"
    data.mkdir()
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (200, 200, 3), dtype=np.uint8)).save(data / f"{i}.png")
    weights = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        weights.append(tmp_path / f"tiny{seed}.safetensors")
        save_weights(weights[-1], ResidualGRUCodec(CodecConfig(width=0.125, max_iterations=2)))
    quiet = lambda _: None  # noqa: E731
    a = refine_fit.make_pairs(weights[0], [data], tmp_path / "a", log=quiet)
    assert json.loads((a / "pairs.json").read_text()) == refine_fit.made_from(weights[0], [data])
    assert refine_fit.make_pairs(weights[0], [str(data)], a, log=quiet) == a  # the same: reused
    for other in ((weights[1], [data], 0), (weights[0], [data, data], 0), (weights[0], [data], 1)):
        with pytest.raises(OptionError, match=r"holds training pairs made from model .*; this run is for model"):
            refine_fit.make_pairs(other[0], other[1], a, seed=other[2], log=quiet)
    state = tmp_path / "refiner.pt"
    refine_fit.train_refiner(a, state, steps=1, batch_size=2, config=RefinerConfig(channels=8, blocks=1), log=quiet)
    b = refine_fit.make_pairs(weights[1], [data], tmp_path / "b", log=quiet)
    with pytest.raises(OptionError, match="holds a refiner training state made from model"):
        refine_fit.train_refiner(b, state, steps=2, batch_size=2, log=quiet)
    (a / "pairs.json").unlink()  # pairs of before session 56
    with pytest.raises(OptionError, match=r"with no record of the model and data used"):
        refine_fit.make_pairs(weights[0], [data], a, log=quiet)


def test_making_pairs_stops_after_its_batch_and_goes_on_from_there(tmp_path, rng):
    """Until session 57 Ctrl-C during `fit-refiner`'s pair-making (an hour on a CPU) waited for
    every pair, and a rerun made them all again; now it stops after the batch under way and the
    rerun codes only the crops left, to the same pairs as a run never stopped."""
    from PIL import Image

    from rgbatch import refine_fit

    data = tmp_path / "data"
    data.mkdir()
    for i in range(6):  # 12 crops: batches of 8 and 4
        Image.fromarray(rng.integers(0, 256, (200, 230, 3), dtype=np.uint8)).save(data / f"{i}.png")
    torch.manual_seed(0)
    weights = tmp_path / "tiny.safetensors"
    save_weights(weights, ResidualGRUCodec(CodecConfig(width=0.125, max_iterations=2)))
    whole = refine_fit.make_pairs(weights, [data], tmp_path / "whole", log=lambda _: None)
    stop, logs = threading.Event(), []

    def log(message):
        logs.append(message)
        stop.set()  # the signal comes while the first batch is coded

    pairs = tmp_path / "pairs"
    assert refine_fit.make_pairs(weights, [data], pairs, log=log, stop=stop) is None
    assert logs[-1] == f"pairs: stopped after 8/12 crops coded, kept in {pairs}: the same command goes on from them"
    assert sorted(p.name for p in pairs.iterdir()) == ["rec.tmp.json", "rec.tmp.npy"]
    logs.clear()
    assert refine_fit.make_pairs(weights, [data], pairs, log=logs.append) == pairs
    assert logs[0] == f"pairs: going on after 8/12 crops coded before ({pairs})"
    assert [m.split(" (")[0] for m in logs[1:]] == ["pairs: 12/12 crops coded"]
    assert sorted(p.name for p in pairs.iterdir()) == ["orig.npy", "pairs.json", "rec.npy"]
    for name in ("orig.npy", "rec.npy"):
        assert np.array_equal(np.load(pairs / name), np.load(whole / name))
    # a record of another seed's crops, or a map cut short, is not gone on from: made anew
    for spoil in ("seed", "cut"):
        stop.clear()
        other = tmp_path / spoil
        refine_fit.make_pairs(weights, [data], other, log=log, stop=stop)
        if spoil == "seed":
            record = json.loads((other / "rec.tmp.json").read_text())
            (other / "rec.tmp.json").write_text(json.dumps({**record, "seed": 1}))
        else:
            with open(other / "rec.tmp.npy", "r+b") as f:
                f.truncate(100)
        logs.clear()
        refine_fit.make_pairs(weights, [data], other, log=logs.append)
        assert [m.split(" (")[0] for m in logs] == ["pairs: 8/12 crops coded", "pairs: 12/12 crops coded"]
        assert np.array_equal(np.load(other / "rec.npy"), np.load(whole / "rec.npy"))
    # fit_refiner stopped while it makes pairs: no training state, no weight file
    state, out = tmp_path / "refiner.pt", tmp_path / "refined.safetensors"
    assert refine_fit.fit_refiner(weights, [data], out, state, log=logs.append, stop=stop) is None
    assert logs[-1].startswith("pairs: stopped after 0/12 crops coded") and not state.exists() and not out.exists()


def test_a_refiner_state_that_is_not_one_or_would_run_code_is_a_worded_error(tmp_path, monkeypatch):
    from rgbatch import refine_fit
    from rgbatch.train import TrainingError
    from test_train import _RunsCode

    monkeypatch.setattr(refine_fit, "VALIDATION", 4)
    pairs = tmp_path / "pairs"
    pairs.mkdir()
    np.save(pairs / "orig.npy", np.zeros((8, 1), np.uint8))  # enough crops: the state is read before them
    np.save(pairs / "rec.npy", np.zeros((8, 1), np.uint8))
    state = tmp_path / "refiner.pt"
    for saved in (b"not a pickle", {"model": {}, "step": 3}, {"cfg": "{}", "model": [_RunsCode(tmp_path / "ran")]}):
        state.write_bytes(saved) if isinstance(saved, bytes) else torch.save(saved, state)
        with pytest.raises(TrainingError, match="is not a refiner training state"):
            refine_fit.train_refiner(pairs, state, steps=1, batch_size=2, log=lambda *_: None)
    assert not (tmp_path / "ran").exists()


def test_a_resampled_stream_is_refined_at_its_coded_size_then_scaled_up(refined_weights, rng, monkeypatch):
    from rgbatch.resample import upscale

    monkeypatch.setattr(refine, "BAND_ROWS", 32)
    image = rng.integers(0, 256, (150, 90, 3), dtype=np.uint8)
    codec = Codec.load(refined_weights, tile_size=64, batch_size=1, precision="fp32", decoding="exact-loop")
    encoded = codec.encode(image, iterations=2, keep_reconstructions=True, keep_codes=True, resample="0.5")
    assert encoded.scale == 2
    small = codec.decode_codes([replace(encoded.codes, width=45, height=75, scale=0)])[0]  # refined, 45 x 75
    for k in (1, 2):
        assert np.array_equal(codec.decode(encoded.blob, iterations=k), encoded.reconstructions[k - 1])
    assert np.array_equal(encoded.reconstructions[-1], upscale(small, 90, 150))


def test_fit_refiner_checks_its_state_and_out_before_making_pairs(tmp_path, monkeypatch):
    """A checkpoint of another kind as --state, or a state named *.pairs, was found out after
    every pair was made (hours on real data); an existing --out was replaced (session 60)."""
    from rgbatch import refine_fit
    from rgbatch.options import OptionError
    from rgbatch.train import TrainingError
    from rgbatch.storage import NotWritten

    def no_pairs(*_, **__):
        raise AssertionError("pairs were made")

    monkeypatch.setattr(refine_fit, "make_pairs", no_pairs)
    weights, out = tmp_path / "w.safetensors", tmp_path / "out.safetensors"
    torch.save({"train_config": {}, "model": {}, "step": 2}, tmp_path / "run.pt")  # a training run's, not a refiner's
    with pytest.raises(TrainingError, match="is not a refiner training state"):
        refine_fit.fit_refiner(weights, [tmp_path], out, tmp_path / "run.pt", log=lambda *_: None)
    with pytest.raises(OptionError, match="ends in .pairs"):
        refine_fit.fit_refiner(weights, [tmp_path], out, tmp_path / "x.pairs", log=lambda *_: None)
    out.write_bytes(b"precious")
    with pytest.raises(NotWritten, match="--overwrite"):
        refine_fit.fit_refiner(weights, [tmp_path], out, tmp_path / "new.pt", log=lambda *_: None)
    assert out.read_bytes() == b"precious"
    # a state there: the same command going on (a run its time limit stopped wrote --out), replaced
    torch.save({"model": {}, "opt": {}, "step": 3, "cfg": "{}"}, tmp_path / "going-on.pt")
    with pytest.raises(AssertionError, match="pairs were made"):
        refine_fit.fit_refiner(weights, [tmp_path], out, tmp_path / "going-on.pt", log=lambda *_: None)
