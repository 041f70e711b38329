import io
import lzma
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from rgbatch.cli import app
from rgbatch.imageio import read_image
from rgbatch.model import CodecConfig, ResidualGRUCodec
from rgbatch.tiling import to_float
import rgbatch.train as train_module
from rgbatch.train import (TrainingError, evaluate, export_weights, load_eval_set, load_training_state, lr_factor,
                           slim_checkpoint, train)
from rgbatch.weights import load_weights
from rgbatch.widen import _Widener, widen, widen_state

from conftest import DATA
from test_train import config  # a tiny, fast training run

TRAIN_STATE = Path(__file__).parents[1] / "weights" / "train-state.pt"
runner = CliRunner()


def crop(size=64):
    """A real 64 px crop (Kodak 23's parrots) in [-0.5, 0.5]."""
    return to_float(read_image(DATA / "kodim23_crop192.png")[0][40:40 + size, 60:60 + size].copy())[None]


def noise_image(size=64):
    return torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(5)) - 0.5


TIE = 1e-4  # a binarizer input this near 0 has its sign set by float rounding (sums in another order)


def assert_same_function(narrow, wide, x, iterations):
    """Same codes and reconstructions (to float rounding) at every iteration. A bit whose
    binarizer input is a tie (within float rounding of 0) may take either sign in the wider
    network; the two loops then go apart, so the comparison ends there (session 44's state met
    one: -9.5e-6 against +1.5e-6, at iteration 16 of the test crop). Any other bit differing fails."""
    inputs = []
    hook = narrow.binarizer.conv.register_forward_hook(lambda module, args, out: inputs.append(out.detach()))
    try:
        with torch.inference_mode():
            pairs = zip(narrow.eval().iterate(x, iterations), wide.eval().iterate(x, iterations))
            for t, ((codes, x_hat), (wide_codes, wide_x_hat)) in enumerate(pairs):
                differ = codes != wide_codes
                if differ.any():
                    ties = inputs[t][differ].abs() < TIE
                    assert ties.all(), f"iteration {t + 1}: {int((~ties).sum())} bits differ that are no ties"
                    return
                assert (x_hat - wide_x_hat).abs().max() < 1e-4, t
    finally:
        hook.remove()


@pytest.mark.parametrize("width", [0.75, 0.5])  # doubling the shipped 0.375, and 4/3: a third of the units copied
@pytest.mark.parametrize("image", [crop, noise_image])
def test_the_widened_shipped_model_computes_the_same_codes_and_images(default_weights, width, image):
    narrow, *_ = load_weights(default_weights)
    wide = widen(narrow, width)
    assert wide.cfg == CodecConfig(width=width)
    assert wide.decoder.grus[0].hidden_ch == CodecConfig(width=width).channels(512)
    assert wide.binarizer.conv.out_channels == 32 and wide.decoder.conv_out.out_channels == 3
    assert torch.equal(wide.log_gain, narrow.log_gain)
    assert_same_function(narrow, wide, image(), 16)


@pytest.mark.parametrize("width", [0.25, 0.5])  # x2 and x4: every unit copied three times
@pytest.mark.parametrize("residual_gru", [True, False])
def test_widening_random_models_of_other_configs(width, residual_gru):
    torch.manual_seed(0)
    narrow = ResidualGRUCodec(CodecConfig(width=0.125, residual_gru=residual_gru, reconstruction="additive"))
    wide = widen(narrow, width, seed=3)
    assert wide.cfg.residual_gru == residual_gru and wide.cfg.reconstruction == "additive"
    assert_same_function(narrow, wide, noise_image(32), 4)


def test_the_split_is_uneven_and_exact_in_fp32_and_for_fp16_weights():
    widener = _Widener(seed=0, spread=0.2, noise=0.0)
    w = torch.randn(4000)
    for k in (2, 3):
        parts = widener._split(w, k)
        assert torch.equal(sum(parts[1:], parts[0]), w)  # bit for bit, not just close
        shares = parts[0] / w
        assert 0.05 < shares.std() and shares.min() > 0  # uneven, random, never negative
    fp16_w = w.half().float()
    for part in widener._split(fp16_w, 2):  # parts of an fp16 weight are fp16 weights: an export keeps sums
        assert torch.equal(part.half().float(), part)
    even = _Widener(seed=0, spread=0.0, noise=0.0)._split(fp16_w, 2)
    assert torch.equal(even[0], even[1])


def test_copies_get_the_incoming_weights_and_split_the_outgoing_ones_noise_only_the_copies():
    torch.manual_seed(0)
    narrow = ResidualGRUCodec(CodecConfig(width=0.125))
    wide = widen(narrow, 0.25)
    units = _Widener(seed=0, spread=0.2, noise=0.0).unit_map(8, 16)  # the first draw: the encoder's conv
    assert sorted(units[8:].tolist()) == list(range(8))  # doubling copies every unit once
    old_conv, conv = narrow.encoder.conv.weight, wide.encoder.conv.weight
    old_reader, reader = narrow.encoder.grus[0].input_conv.weight, wide.encoder.grus[0].input_conv.weight
    hidden = narrow.encoder.grus[0].hidden_ch  # reader rows < hidden: its update term of the original units
    for copy, unit in enumerate(units[8:].tolist(), start=8):
        assert torch.equal(conv[copy], old_conv[unit]) and torch.equal(conv[unit], old_conv[unit])
        parts = reader[:hidden, unit], reader[:hidden, copy]
        assert torch.equal(parts[0] + parts[1], old_reader[:hidden, unit])
        assert not torch.allclose(parts[0], parts[1])  # split unevenly, weight by weight
    noisy = widen(narrow, 0.25, noise=0.01)
    assert torch.equal(noisy.encoder.conv.weight[:8], conv[:8])
    assert not torch.equal(noisy.encoder.conv.weight[8:], conv[8:])
    with torch.inference_mode():
        x = noise_image(32)
        assert 0 < (noisy.eval()(x, 2) - wide.eval()(x, 2)).abs().max() < 0.05


def test_a_width_that_is_not_larger_is_refused():
    model = ResidualGRUCodec(CodecConfig(width=0.25))
    for width in (0.25, 0.125):
        with pytest.raises(ValueError, match="not larger"):
            widen(model, width)
    with pytest.raises(ValueError, match="spread"):
        widen(model, 0.5, spread=0.3)
    for noise in (float("nan"), float("inf"), -1.0):  # NaN filled the model with NaN, exit 0 (session 60)
        with pytest.raises(ValueError, match="noise must be at least 0 and finite"):
            widen(model, 0.5, noise=noise)


def test_a_widened_state_evaluates_as_the_narrow_one_and_resumes_with_a_fresh_warm_adam(tmp_path):
    narrow = train(config(tmp_path, rate_weight=1.0), log=lambda *_: None)
    wide_path = tmp_path / "wide.pt"
    wide = widen_state(tmp_path / "run.pt", wide_path, 0.25)
    assert wide["optimizer"] is None and wide["step"] == 4 and wide["train_config"]["codec"]["width"] == 0.25
    assert wide["widened"] == [{"step": 4, "from_width": 0.125, "width": 0.25, "seed": 0, "spread": 0.2, "noise": 0.0}]
    assert wide["history"] == narrow["history"]
    for name, counts in narrow["rate"].items():  # the codes stay the same, so their counts stay valid
        assert torch.equal(torch.as_tensor(wide["rate"][name]), torch.as_tensor(counts)), name

    # the first evaluation is the narrow model's (rounded to fp16, as an export writes it); in
    # float64, where the wider convolutions' other kernels round below what 8-bit pixels show (in
    # float32 they moved MS-SSIM by 2.6e-6 on an AVX2 CPU)
    models = []
    for state in (narrow, wide):
        model = ResidualGRUCodec(CodecConfig(**state["train_config"]["codec"]))
        model.load_state_dict({k: v.half().float() for k, v in state["model"].items()})
        models.append(model.set_precision(torch.float64))
    crops = load_eval_set(DATA, 2, 64)
    assert evaluate(models[1], crops, 4) == evaluate(models[0], crops, 4)

    # resumed at the new width: Adam starts again, the learning rate warms up from step 4
    lines = []
    cfg = config(tmp_path, out=str(wide_path), steps=100, warmup=4, time_limit=1e-9,
                 codec=dict(width=0.25, max_iterations=4))
    resumed = train(cfg, resume=True, log=lines.append)
    assert any("Adam starts again at step 4" in line for line in lines)
    assert resumed["step"] == 5 and resumed["restart"] == 4 and resumed["widened"] == wide["widened"]
    assert resumed["history"][-1]["lr"] == pytest.approx(5e-4 * lr_factor(5, cfg, restart=4))
    assert lr_factor(5, cfg, restart=4) == pytest.approx(lr_factor(5, cfg) / 2)
    assert resumed["optimizer"]["state"]  # Adam's moments again, kept from now on
    again = train(config(tmp_path, out=str(wide_path), steps=6, warmup=4, codec=dict(width=0.25, max_iterations=4)),
                  resume=True, log=lambda *_: None)
    assert again["step"] == 6 and again["restart"] == 4

    # the narrow width cannot resume it; the export says it was widened
    with pytest.raises(TrainingError, match="is for model"):
        train(config(tmp_path, out=str(wide_path), steps=8), resume=True, log=lambda *_: None)
    export_weights(wide_path, tmp_path / "w.safetensors")
    assert load_weights(tmp_path / "w.safetensors")[3]["widened"] == wide["widened"]
    with pytest.raises(TrainingError, match="exists"):
        widen_state(tmp_path / "run.pt", wide_path, 0.25)


def test_a_slim_checkpoint_drops_adams_moments_and_resumes(tmp_path):
    train(config(tmp_path), log=lambda *_: None)
    slim = slim_checkpoint(tmp_path / "run.pt", tmp_path / "slim.pt")
    assert slim["optimizer"] is None and slim["step"] == 4
    assert (tmp_path / "slim.pt").stat().st_size < (tmp_path / "run.pt").stat().st_size / 2
    resumed = train(config(tmp_path, out=str(tmp_path / "slim.pt"), steps=5), resume=True, log=lambda *_: None)
    assert resumed["step"] == 5 and resumed["restart"] == 4
    with pytest.raises(TrainingError, match="exists"):
        slim_checkpoint(tmp_path / "run.pt", tmp_path / "slim.pt")


def test_a_half_slim_checkpoint_exports_the_same_model_and_resumes(tmp_path):
    # weights/train-state.pt is one: the model in fp16, as shipped, to leave room in a GPU's carry
    train(config(tmp_path), log=lambda *_: None)
    slim_checkpoint(tmp_path / "run.pt", tmp_path / "slim.pt")
    half = slim_checkpoint(tmp_path / "run.pt", tmp_path / "half.pt", half=True)
    floats = [v for v in half["model"].values() if v.is_floating_point()]
    assert floats and all(v.dtype == torch.float16 for v in floats)
    assert (tmp_path / "half.pt").stat().st_size < (tmp_path / "slim.pt").stat().st_size * 0.75
    assert export_weights(tmp_path / "half.pt", tmp_path / "h.safetensors") == \
        export_weights(tmp_path / "slim.pt", tmp_path / "s.safetensors")
    resumed = train(config(tmp_path, out=str(tmp_path / "half.pt"), steps=5), resume=True, log=lambda *_: None)
    assert resumed["step"] == 5 and all(v.dtype == torch.float32 for v in resumed["model"].values()
                                        if v.is_floating_point())
    committed = load_training_state(TRAIN_STATE)
    assert committed["optimizer"] is None and all(v.dtype == torch.float16 for v in committed["model"].values()
                                                  if v.is_floating_point())


def test_a_compact_checkpoint_stores_its_model_against_a_packaged_file(tmp_path, monkeypatch):
    # weights/train-state.pt since session 24: the decoder-alone run's model as its XOR against the
    # shipped file (the encoder's part is zeros), compressed; resuming and exporting rebuild it
    packaged = tmp_path / "models"
    packaged.mkdir()
    monkeypatch.setattr(train_module, "DEFAULT_WEIGHTS", packaged / "default.safetensors")
    train(config(tmp_path), log=lambda *_: None)
    base_id = export_weights(tmp_path / "run.pt", packaged / "default.safetensors")
    train(config(tmp_path, steps=6, train_part="decoder"), resume=True, log=lambda *_: None)
    half = slim_checkpoint(tmp_path / "run.pt", tmp_path / "half.pt", half=True)
    compact = slim_checkpoint(tmp_path / "run.pt", tmp_path / "compact.pt", half=True,
                              base=packaged / "default.safetensors")
    assert (tmp_path / "compact.pt").stat().st_size < (tmp_path / "half.pt").stat().st_size * 0.75
    loaded = load_training_state(tmp_path / "compact.pt")
    assert loaded.keys() == half.keys() == compact.keys() and loaded["step"] == 6
    assert all(torch.equal(loaded["model"][k], v) for k, v in half["model"].items())
    assert export_weights(tmp_path / "compact.pt", tmp_path / "c.safetensors") == \
        export_weights(tmp_path / "half.pt", tmp_path / "h.safetensors") != base_id
    kept = tmp_path / "kept.pt"
    kept.write_bytes((tmp_path / "compact.pt").read_bytes())
    resumed = train(config(tmp_path, out=str(tmp_path / "compact.pt"), steps=7, train_part="decoder"),
                    resume=True, log=lambda *_: None)
    assert resumed["step"] == 7
    with pytest.raises(TrainingError, match="not among the packaged models"):
        slim_checkpoint(tmp_path / "run.pt", tmp_path / "x.pt", base=tmp_path / "h.safetensors")
    (packaged / "default.safetensors").unlink()  # its base gone: a worded error, never another model
    with pytest.raises(TrainingError, match=f"against model {base_id}, which is not among the packaged"):
        load_training_state(kept)
    state = torch.load(io.BytesIO(lzma.decompress(kept.read_bytes())), weights_only=True)
    for junk in ("x", {"base": "../../default", "xor": []}):
        forged = tmp_path / "forged.pt"
        forged.write_bytes(lzma.compress(_saved({**state, "model_delta": junk})))
        with pytest.raises(TrainingError, match="without its delta|which is not among the packaged"):
            load_training_state(forged)


def _saved(state) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def test_export_writes_the_tables_of_another_file_with_the_network(tmp_path, default_weights):
    # what a decoder-alone run ships with: its network, the shipped entropy model (Signs, TRAINING.md)
    train(config(tmp_path), log=lambda *_: None)
    done = CliRunner().invoke(app, ["export", str(tmp_path / "run.pt"), "--out", str(tmp_path / "t.safetensors"),
                                    "--tables-from", str(default_weights)])
    assert done.exit_code == 0, done.output
    export_weights(tmp_path / "run.pt", tmp_path / "bare.safetensors")
    net, mid, extra, _ = load_weights(tmp_path / "t.safetensors")
    bare, bare_mid, bare_extra, _ = load_weights(tmp_path / "bare.safetensors")
    shipped = load_weights(default_weights)[2]
    assert bare_extra == {} and sorted(extra) == sorted(shipped) and extra and mid != bare_mid
    assert all(torch.equal(extra[k], shipped[k]) for k in shipped)
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), bare.state_dict().values()))
    missing = CliRunner().invoke(app, ["export", str(tmp_path / "run.pt"), "--out", str(tmp_path / "x.safetensors"),
                                       "--tables-from", str(tmp_path / "none.safetensors")])
    assert missing.exit_code == 2 and "Traceback" not in missing.output and not (tmp_path / "x.safetensors").exists()


def test_the_committed_run_widened_and_exported_codes_as_its_own_export(tmp_path):
    # weights/train-state.pt is the shipped file's run: its export is the shipped network (MODEL_CARD.md)
    narrow_id = export_weights(TRAIN_STATE, tmp_path / "narrow.safetensors")
    state = widen_state(TRAIN_STATE, tmp_path / "wide.pt", 0.5)
    assert state["train_config"]["codec"]["width"] == 0.5
    wide_id = export_weights(tmp_path / "wide.pt", tmp_path / "wide.safetensors")
    narrow, *_ = load_weights(tmp_path / "narrow.safetensors")
    wide, _, _, info = load_weights(tmp_path / "wide.safetensors")
    assert wide_id != narrow_id and wide.cfg.width == 0.5 and info["widened"][0]["from_width"] == 0.25
    assert info["widened"][-1]["from_width"] == 0.375  # the shipped run was widened once already (session 14)
    assert_same_function(narrow, wide, crop(), 16)


def test_the_cli_widens_slims_and_refuses_what_it_cannot(tmp_path):
    train(config(tmp_path), log=lambda *_: None)
    run, junk, notes = tmp_path / "run.pt", tmp_path / "junk.pt", tmp_path / "notes.pt"
    junk.write_bytes(b"not a checkpoint")
    torch.save({"step": 1}, notes)
    result = runner.invoke(app, ["widen", str(run), "--width", "0.25", "--out", str(tmp_path / "wide.pt")])
    assert result.exit_code == 0 and "resume with --width 0.25" in result.output, result.output
    for args in (["widen", str(run), "--width", "0.125", "--out", str(tmp_path / "w2.pt")],  # not larger
                 ["widen", str(run), "--width", "0.25", "--out", str(tmp_path / "wide.pt")],  # exists
                 ["widen", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "w3.pt")],
                 ["slim", str(run), "--out", str(run)],
                 ["widen", str(junk), "--out", str(tmp_path / "w4.pt")],  # not a checkpoint
                 ["slim", str(junk), "--out", str(tmp_path / "s2.pt")],
                 ["slim", str(notes), "--out", str(tmp_path / "s3.pt")]):  # a .pt that holds no training state
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and "error" in result.output and "Traceback" not in result.output, args
    assert "not larger" in runner.invoke(app, ["widen", str(run), "--width", "0.125", "--out", "x.pt"]).output
    result = runner.invoke(app, ["slim", str(run), "--out", str(tmp_path / "slim.pt")])
    assert result.exit_code == 0 and (tmp_path / "slim.pt").is_file(), result.output
