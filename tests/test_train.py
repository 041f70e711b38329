import io
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rgbatch.train import (PatchSampler, random_stops, snapshot_path, TrainConfig, TrainingError, export_weights,
                           iteration_losses, load_training_state, lr_factor, pack_crops, train)
from rgbatch.options import OptionError
from rgbatch.weights import load_weights

DATA = Path(__file__).parent / "data"


def config(tmp_path, **kw):
    base = dict(data_dir=str(DATA), out=str(tmp_path / "run.pt"), steps=4, batch_size=2, iterations=2,
                checkpoint_every=2, warmup=2, codec=dict(width=0.125, max_iterations=4))
    base.update(kw)
    return TrainConfig(**base)


def test_resume_continues_exactly(tmp_path):
    straight = train(config(tmp_path / "a"), log=lambda *_: None)
    half = config(tmp_path / "b", steps=2)
    train(half, log=lambda *_: None)
    resumed = train(config(tmp_path / "b"), resume=True, log=lambda *_: None)
    assert resumed["step"] == straight["step"] == 4
    for name, value in straight["model"].items():
        assert torch.equal(value, resumed["model"][name]), name


def test_resuming_a_finished_run_says_so_and_changes_nothing(tmp_path):
    """`make train` on a run at the end of its schedule (the CPU run reached 60000 in session 55)
    exited without a word; now it says so."""
    done = train(config(tmp_path, steps=2), log=lambda *_: None)
    before = (tmp_path / "run.pt").read_bytes()
    lines = []
    again = train(config(tmp_path, steps=2), resume=True, log=lines.append)
    assert any("the run has done its 2 steps: nothing to train" in line for line in lines)
    assert again["step"] == done["step"] == 2
    assert all(torch.equal(v, again["model"][k]) for k, v in done["model"].items())
    assert (tmp_path / "run.pt").read_bytes() == before  # not written again


def test_resuming_a_file_that_is_no_checkpoint_is_a_worded_error(tmp_path):
    (tmp_path / "run.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(TrainingError, match="is not a training checkpoint") as refused:
        train(config(tmp_path), resume=True, log=lambda *_: None)
    # one line, without torch's advice to load the file as code
    assert "\n" not in str(refused.value) and "weights_only" not in str(refused.value)
    (tmp_path / "run.pt").write_bytes(b"")  # a bare EOFError: an IndexError traceback until session 55 (fuzz_options)
    with pytest.raises(TrainingError) as refused:
        export_weights(tmp_path / "run.pt", tmp_path / "w.safetensors")
    assert str(refused.value) == (f"{tmp_path / 'run.pt'} is not a training checkpoint (EOFError: it ends at once "
                                  f"(empty, or cut short))")


def test_a_patch_that_is_no_whole_number_of_blocks_is_refused(tmp_path):
    with pytest.raises(TrainingError, match="patch 30 must be a multiple of 16"):
        train(config(tmp_path, patch=30), log=lambda *_: None)


@pytest.mark.parametrize("change, said", [
    (dict(checkpoint_every=0), "checkpoint_every must be at least 1, not 0"),  # was a ZeroDivisionError
    (dict(batch_size=0), "batch_size must be at least 1, not 0"),  # was torch's words on a gradient's shape
    (dict(rate_weight=float("nan")), "rate_weight must be at least 0, not nan"),  # trained on NaN losses
    (dict(msssim_weight=-1.0), "msssim_weight must be at least 0, not -1.0"),
    (dict(steps=-1), "steps must be at least 1, not -1"),
    (dict(lr=0.0), "lr must be positive, not 0.0"),
    (dict(lr=float("inf")), "lr must be finite, not inf"),  # trained NaN into every checkpoint (session 60)
    (dict(loss_weighting="gian"), "loss_weighting must be one of uniform, gain, not 'gian'"),  # trained uniform
    (dict(hard_fraction=2.0), "hard_fraction must be 0..1, not 2.0"),
    (dict(threads=-1), "threads must be at least 0 (0: torch's default), not -1")])
def test_a_run_s_numbers_are_checked_before_it_starts(tmp_path, change, said):
    with pytest.raises(OptionError, match=re.escape(said)):
        train(config(tmp_path, **change), log=lambda *_: None)
    assert not (tmp_path / "run.pt").exists()


class _RunsCode:
    """Unpickling this would create a file: what a forged checkpoint could do with any code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


@pytest.mark.parametrize("use", ["resume", "export"])
def test_a_checkpoint_that_would_run_code_is_refused_unrun(tmp_path, use):
    train(config(tmp_path, steps=2), log=lambda *_: None)
    state = torch.load(tmp_path / "run.pt", weights_only=True)
    state["history"].append(_RunsCode(tmp_path / "ran"))
    torch.save(state, tmp_path / "run.pt")
    with pytest.raises(TrainingError, match="is not a training checkpoint"):
        if use == "resume":
            train(config(tmp_path), resume=True, log=lambda *_: None)
        else:
            export_weights(tmp_path / "run.pt", tmp_path / "w.safetensors")
    assert not (tmp_path / "ran").exists()


def test_a_resumed_run_can_change_the_scale_of_its_learning_rate(tmp_path):
    train(config(tmp_path, steps=2), log=lambda *_: None)
    lines = []
    cfg = config(tmp_path, steps=3, lr=1e-4)
    state = train(cfg, resume=True, log=lines.append)
    assert any("learning rate scale 0.0005 -> 0.0001 from step 2" in line for line in lines)
    assert not any("rate weight" in line for line in lines)  # unchanged: not logged
    assert state["history"][-1]["lr"] == pytest.approx(1e-4 * lr_factor(3, cfg))
    assert state["scheduler"]["base_lrs"] == [1e-4]


def test_a_resumed_run_says_when_its_rate_weight_changes(tmp_path):
    train(config(tmp_path, steps=2), log=lambda *_: None)
    lines = []
    state = train(config(tmp_path, steps=3, rate_weight=8.0), resume=True, log=lines.append)
    assert "rate weight 0 -> 8 from step 2" in lines and state["step"] == 3


def test_msssim_loss_adds_its_term_and_changes_the_training(tmp_path):
    plain = train(config(tmp_path / "a", steps=2, checkpoint_every=1), log=lambda *_: None)
    mixed = train(config(tmp_path / "b", steps=2, checkpoint_every=1, msssim_weight=1.0), log=lambda *_: None)
    # same seed, same first batch and model: the first loss differs by the mean (1 - MS-SSIM)
    extra = mixed["history"][0]["loss"] - plain["history"][0]["loss"]
    assert 0.05 < extra < 1.0
    assert not torch.equal(plain["model"]["log_gain"], mixed["model"]["log_gain"])


def test_checkpoints_and_evaluation_are_recorded(tmp_path):
    cfg = config(tmp_path, eval_dir=str(DATA), eval_every=2, eval_images=1, eval_crop=64)
    state = train(cfg, log=lambda *_: None)
    assert Path(cfg.out).exists() and Path(cfg.out).with_name("run.best.pt").exists()
    assert [len(h["msssim"]) for h in state["history"]] == [2, 2]
    assert not list(Path(cfg.out).parent.glob("*.tmp"))
    export_weights(cfg.out, tmp_path / "w.safetensors")
    *_, info = load_weights(tmp_path / "w.safetensors")
    # the weight file says which step its evaluation scored, and the loss it was trained with
    assert info["last_eval"] == {"step": 4, "msssim": state["history"][-1]["msssim"]}
    assert info["loss"] == {"loss_weighting": cfg.loss_weighting, "msssim_weight": cfg.msssim_weight,
                            "msssim_loss": cfg.msssim_loss, "rate_weight": cfg.rate_weight}


def test_clear_errors(tmp_path):
    train(config(tmp_path), log=lambda *_: None)
    with pytest.raises(TrainingError, match="exists"):
        train(config(tmp_path), log=lambda *_: None)
    with pytest.raises(TrainingError, match="is for model"):
        train(config(tmp_path, codec=dict(width=0.25, max_iterations=4)), resume=True, log=lambda *_: None)
    with pytest.raises(TrainingError, match="no checkpoint"):
        train(config(tmp_path / "none"), resume=True)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(TrainingError, match="no usable training image"):
        train(config(tmp_path / "e", data_dir=str(empty)))
    with pytest.raises(TrainingError, match="no usable training image"):
        train(config(tmp_path / "big", patch=256))


def test_patches_are_in_range_and_hard_ones_are_busier(rng):
    sampler = PatchSampler(DATA, 32, rng)
    x = sampler.batch(64)
    assert x.shape == (64, 3, 32, 32) and x.min() >= -0.5 and x.max() <= 0.5
    busy = sampler.batch(64, hard_fraction=1.0)
    energy = lambda t: (t[..., 1:, :] - t[..., :-1, :]).abs().mean()
    assert energy(busy) > energy(x)


def test_without_turns_patches_keep_their_way_up(tmp_path):
    image = np.arange(32 * 32 * 3, dtype=np.uint32).reshape(32, 32, 3).astype(np.uint8)
    image[..., 0] = np.arange(32)[:, None] * 8  # rows differ: a turned patch is not a flipped one
    np.save(tmp_path / "one.npy", image[None])
    upright = {image.tobytes(), image[:, ::-1].tobytes()}
    flips_only = PatchSampler(str(tmp_path / "one.npy"), 32, np.random.default_rng(0), turns=False).sample(40)
    assert {p.tobytes() for p in flips_only} == upright  # both, and nothing else
    turned = PatchSampler(str(tmp_path / "one.npy"), 32, np.random.default_rng(0)).sample(40)
    assert len({p.tobytes() for p in turned} - upright) > 0


def test_random_stops_mask_a_share_of_patches_block_by_block():
    torch.manual_seed(0)
    assert random_stops(8, 64, 64, 16, 0.0, 16) is None
    stops = random_stops(400, 64, 32, 16, 0.5, 16)
    assert stops.shape == (400, 1, 4, 2)
    assert stops.min() >= 1 and stops.max() <= 16
    masked = (stops < 16).flatten(1).any(1).float().mean().item()
    assert 0.4 < masked < 0.6  # about half the patches, each with blocks of many counts
    assert stops[(stops < 16).flatten(1).any(1)].unique().numel() == 16


def test_training_with_stopped_blocks_runs_to_a_finite_loss(tmp_path):
    state = train(config(tmp_path, steps=2, stop_fraction=1.0), log=lambda *_: None)
    assert state["step"] == 2 and 0 < state["history"][-1]["loss"] < 1


def test_learning_rate_warms_up_then_decays():
    cfg = TrainConfig(data_dir="", out="", steps=1000, warmup=100, min_lr_fraction=0.1)
    assert lr_factor(0, cfg) < lr_factor(99, cfg) == 1.0
    assert lr_factor(1000, cfg) == pytest.approx(0.1)
    assert lr_factor(500, cfg) < lr_factor(200, cfg)


def test_a_packed_training_set_trains_and_a_checkpoint_exports(tmp_path):
    pack = tmp_path / "crops.npy"
    assert pack_crops(DATA, pack, crop=64, per_image=3) == (6, 64, 64, 3)
    cfg = config(tmp_path, data_dir=str(pack), steps=2)
    train(cfg, log=lambda *_: None)
    mid = export_weights(cfg.out, tmp_path / "w.safetensors")
    model, loaded_id, _, info = load_weights(tmp_path / "w.safetensors")
    assert loaded_id == mid and info["steps"] == 2 and model.cfg.width == 0.125
    assert info["last_eval"] is None  # this run evaluated nothing


def test_a_jpeg_pack_is_a_folder_of_crops_that_trains(tmp_path):
    pack = tmp_path / "crops"
    assert pack_crops(DATA, pack, crop=64, per_image=2, jpeg_quality=95) == (4, 64, 64, 3)
    crops = sorted(pack.glob("*.jpg"))
    assert len(crops) == 4 and sum(p.stat().st_size for p in crops) < 4 * 64 * 64 * 3
    array = tmp_path / "crops.npy"
    pack_crops(DATA, array, crop=64, per_image=2)  # the same seed draws the same crops
    images = PatchSampler(pack, 64, np.random.default_rng(0)).images
    assert np.abs(images[0].astype(int) - np.load(array)[0]).mean() < 3  # JPEG at 95, 4:4:4
    state = train(config(tmp_path, data_dir=str(pack), steps=2), log=lambda *_: None)
    assert state["step"] == 2
    with pytest.raises(TrainingError, match="not empty"):
        pack_crops(DATA, pack, crop=64, jpeg_quality=95)
    with pytest.raises(TrainingError, match="folder"):
        pack_crops(DATA, tmp_path / "crops2.npy", crop=64, jpeg_quality=95)


@pytest.mark.parametrize("change, said", [(dict(crop=0), "crop must be at least 16 pixels, not 0"),
                                           (dict(per_image=0), "per_image must be 1..1024, not 0"),
                                           (dict(per_image=10**20), "per_image must be 1..1024"),
                                           (dict(jpeg_quality=101), "jpeg_quality must be 0..100 (0: a .npy array)"),
                                           (dict(out="pack"), "'pack' is no .npy file name")])
def test_a_pack_s_numbers_are_checked(tmp_path, monkeypatch, change, said):
    """Until session 53 a crop of 0 or -1 wrote a pack of empty images, a count of 0 crops an
    image said no image was large enough, and an array pack named without .npy was written as
    NAME.npy, the command then failing to find NAME (a traceback)."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(OptionError, match=re.escape(said)):
        pack_crops(DATA, **{"out": "pack.npy", "crop": 64, **change})
    assert list(tmp_path.iterdir()) == []


def test_an_interrupted_jpeg_pack_leaves_no_crops_under_its_name(tmp_path, monkeypatch):
    """The crops are written into a hidden folder renamed onto the pack's name once complete (an
    empty folder there is replaced): until session 55 an interrupted pack left some crops there,
    a smaller pack that trained as if whole."""
    (tmp_path / "empty").mkdir()
    assert pack_crops(DATA, tmp_path / "empty", crop=64, jpeg_quality=90)[0] == 4
    assert len(list((tmp_path / "empty").glob("*.jpg"))) == 4
    save, calls = Image.Image.save, []

    def interrupted(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return save(self, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        pack_crops(DATA, tmp_path / "pack", crop=64, jpeg_quality=90)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]


def test_a_jpeg_pack_keeps_to_its_byte_limit(tmp_path):
    # what `make gpu-kit` does with the room a device call has left: whole crops, a random subset
    every = pack_crops(DATA, tmp_path / "all", crop=64, per_image=4, jpeg_quality=92)
    sizes = sorted(p.stat().st_size for p in (tmp_path / "all").glob("*.jpg"))
    limit = sum(sizes[:3]) + sizes[0] // 2
    kept = pack_crops(DATA, tmp_path / "some", crop=64, per_image=4, jpeg_quality=92, max_mib=limit / 2**20)
    files = sorted((tmp_path / "some").glob("*.jpg"))
    assert 1 <= kept[0] == len(files) < every[0] and sum(p.stat().st_size for p in files) <= limit
    assert [p.name for p in files] == [f"{i:05d}.jpg" for i in range(kept[0])]
    assert pack_crops(DATA, tmp_path / "roomy", crop=64, per_image=4, jpeg_quality=92, max_mib=1000) == every
    with pytest.raises(OptionError, match="max_mib 0.0001 is too small: not one crop of 64 px fits"):
        pack_crops(DATA, tmp_path / "none", crop=64, jpeg_quality=92, max_mib=0.0001)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["all", "roomy", "some"]  # no folder, no hidden one
    with pytest.raises(OptionError, match="max_mib limits a JPEG pack: give jpeg_quality too"):
        pack_crops(DATA, tmp_path / "array.npy", crop=64, max_mib=1)
    with pytest.raises(OptionError, match="max_mib must be at least 0"):
        pack_crops(DATA, tmp_path / "neg", crop=64, jpeg_quality=92, max_mib=-1)
    from typer.testing import CliRunner

    from rgbatch.cli import app

    done = CliRunner().invoke(app, ["pack", str(DATA), "--out", str(tmp_path / "cli"), "--crop", "64", "--per-image",
                                    "4", "--jpeg-quality", "92", "--max-mib", str(limit / 2**20)])
    assert done.exit_code == 0 and f"{kept[0]} crops of 64x64" in " ".join(done.output.split())
    refused = CliRunner().invoke(app, ["pack", str(DATA), "--out", str(tmp_path / "cli2"), "--crop", "64",
                                       "--jpeg-quality", "92", "--max-mib", "0.0001"])
    assert refused.exit_code == 2 and "Traceback" not in refused.output
    assert "--max-mib 0.0001 is too small" in refused.output
    refused = CliRunner().invoke(app, ["pack", str(DATA), "--out", str(tmp_path / "a.npy"), "--max-mib", "1"])
    assert refused.exit_code == 2
    assert "--max-mib limits a JPEG pack: give --jpeg-quality too" in " ".join(refused.output.split())


def test_a_time_limit_stops_the_run_at_a_checkpoint(tmp_path):
    cfg = config(tmp_path, steps=100, checkpoint_every=50, time_limit=1e-9)
    lines = []
    state = train(cfg, log=lines.append)
    assert state["step"] == 1 and state["history"][-1]["step"] == 1
    assert torch.load(cfg.out, weights_only=True)["step"] == 1
    assert any("time limit" in line for line in lines)
    resumed = train(config(tmp_path, steps=3, checkpoint_every=50), resume=True, log=lambda *_: None)
    assert resumed["step"] == 3


def test_a_run_asked_to_stop_ends_after_its_step_with_a_checkpoint_and_resumes_exactly(tmp_path):
    """`train`'s Ctrl-C or SIGTERM sets `stop`: the run writes the step it was in (3, between its
    checkpoints every 50) and a resumed run ends where an uninterrupted one does, bit for bit."""
    straight = train(config(tmp_path / "a", steps=5, checkpoint_every=50), log=lambda *_: None)
    stop, lines = threading.Event(), []
    cfg = config(tmp_path / "b", steps=5, checkpoint_every=50)
    state = train(cfg, log=lines.append, progress=lambda step, loss, rate: step == 3 and stop.set(), stop=stop)
    assert state["step"] == 3 and torch.load(cfg.out, weights_only=True)["step"] == 3
    assert any("stopped at step 3: asked to stop" in line for line in lines)
    resumed = train(config(tmp_path / "b", steps=5, checkpoint_every=50), resume=True, log=lambda *_: None)
    assert resumed["step"] == 5
    assert all(torch.equal(v, resumed["model"][k]) for k, v in straight["model"].items())


def test_a_run_asked_to_stop_before_its_first_step_writes_nothing(tmp_path):
    stop = threading.Event()
    stop.set()
    seen = []
    state = train(config(tmp_path), log=lambda *_: None, progress=lambda *a: seen.append(a), stop=stop)
    assert state["step"] == 0 and not (tmp_path / "run.pt").exists()
    assert seen == [(0, None, 0.0)]  # the start, said once: no step


def test_snapshots_are_kept_and_export_can_average_them(tmp_path):
    cfg = config(tmp_path, snapshot_every=2)
    train(cfg, log=lambda *_: None)
    first, second = snapshot_path(cfg.out, 2), snapshot_path(cfg.out, 4)
    assert first.is_file() and second.is_file()
    export_weights(cfg.out, tmp_path / "avg.safetensors", average=[first])
    averaged, *_, info = load_weights(tmp_path / "avg.safetensors")
    assert info["averaged_steps"] == [2, 4]
    models = [torch.load(p, weights_only=True)["model"] for p in (first, second)]
    for name, value in averaged.state_dict().items():  # fp16 on disk
        assert torch.allclose(value.float(), (models[0][name] + models[1][name]) / 2, atol=2e-3), name
    with pytest.raises(TrainingError, match="multiple of"):
        train(config(tmp_path / "bad", snapshot_every=3), log=lambda *_: None)
    with pytest.raises(TrainingError, match="no checkpoint"):
        export_weights(cfg.out, tmp_path / "x.safetensors", average=[tmp_path / "missing.pt"])


def test_several_sources_train_together_and_name_their_data(tmp_path):
    pack = tmp_path / "crops.npy"
    pack_crops(DATA, pack, crop=64, per_image=3)
    sampler = PatchSampler([str(DATA), str(pack)], 64, np.random.default_rng(0))
    assert len(sampler.images) == 2 + 6
    cfg = config(tmp_path, data_dir=[str(DATA), str(pack)], steps=2)
    train(cfg, log=lambda *_: None)
    export_weights(cfg.out, tmp_path / "w.safetensors")
    assert load_weights(tmp_path / "w.safetensors")[3]["data"] == "data+crops.npy"


def test_training_the_decoder_alone_leaves_the_encoder_and_says_so_on_resume(tmp_path):
    before = train(config(tmp_path, steps=2), log=lambda *_: None)["model"]
    lines = []
    after = train(config(tmp_path, steps=4, train_part="decoder"), resume=True, log=lines.append)
    assert "trained part all -> decoder from step 2" in lines and after["step"] == 4
    changed = {name for name, value in after["model"].items() if not torch.equal(value, before[name])}
    assert changed and all(name.startswith("decoder.") or name == "log_gain" for name in changed)
    assert any(name.startswith("decoder.") for name in changed)


def test_training_the_decoder_alone_refuses_a_rate_term(tmp_path):
    with pytest.raises(TrainingError, match="rate_weight 4 prices the codes, which train_part 'decoder'"):
        train(config(tmp_path, train_part="decoder", rate_weight=4.0), log=lambda *_: None)
    with pytest.raises(OptionError, match="train_part must be one of all, encoder, decoder"):
        train(config(tmp_path, train_part="coder"), log=lambda *_: None)


def test_training_the_encoder_alone_leaves_the_decoder_and_may_price_the_codes(tmp_path):
    before = train(config(tmp_path, steps=2), log=lambda *_: None)["model"]
    lines = []
    after = train(config(tmp_path, steps=4, train_part="encoder", rate_weight=4.0), resume=True, log=lines.append)
    assert "trained part all -> encoder from step 2" in lines and after["step"] == 4
    changed = {name for name, value in after["model"].items() if not torch.equal(value, before[name])}
    assert changed and all(name.startswith(("encoder.", "binarizer.")) for name in changed)
    assert any(name.startswith("encoder.") for name in changed) and "binarizer.conv.weight" in changed
    assert after["history"][-1]["bits_per_bit"]  # the codes it changes are priced


def test_training_on_signs_is_an_option_said_on_resume_and_checked(tmp_path):
    train(config(tmp_path, steps=2), log=lambda *_: None)
    lines = []
    after = train(config(tmp_path, steps=4, binarize="sign"), resume=True, log=lines.append)
    assert "binarize stochastic -> sign from step 2" in lines and after["train_config"]["binarize"] == "sign"
    with pytest.raises(OptionError, match="binarize must be one of stochastic, sign"):
        train(config(tmp_path, out=str(tmp_path / "other.pt"), binarize="round"), log=lambda *_: None)


def test_a_display_decoder_trains_on_the_codes_of_the_model_as_the_run_started(tmp_path):
    before = train(config(tmp_path, steps=2), log=lambda *_: None)["model"]
    half = train(config(tmp_path, steps=3, train_part="display"), resume=True, log=lambda *_: None)
    after = train(config(tmp_path, steps=4, train_part="display"), resume=True, log=lambda *_: None)
    for state in (half, after):  # kept, and resumed, as the run started
        assert all(torch.equal(value, before[name]) for name, value in state["reference"].items())
    assert not torch.equal(after["model"]["decoder.conv_out.weight"], before["decoder.conv_out.weight"])
    assert torch.equal(after["model"]["encoder.conv.weight"], before["encoder.conv.weight"])
    # its export says what it is (a file that decodes the reference's codes), and the CLI says so
    from typer.testing import CliRunner

    from rgbatch.cli import app

    done = CliRunner().invoke(app, ["export", str(tmp_path / "run.pt"), "--out", str(tmp_path / "disp.safetensors")])
    assert done.exit_code == 0 and "a display decoder" in " ".join(done.output.split()), done.output
    assert load_weights(tmp_path / "disp.safetensors")[3]["train_part"] == "display"


def test_the_msssim_term_in_db_counts_every_depth_by_its_msssim_in_db(tmp_path):
    from rgbatch.metrics import msssim_tensor
    from rgbatch.tiling import to_unit
    torch.manual_seed(0)
    model = None  # iteration_losses reads it only for loss_weighting="gain"
    x = torch.rand(2, 3, 64, 64) - 0.5
    outputs = torch.stack([x + 0.2 * torch.randn_like(x), x + 0.02 * torch.randn_like(x)])
    plain = iteration_losses(model, x, outputs, config(tmp_path))
    linear = iteration_losses(model, x, outputs, config(tmp_path, msssim_weight=2.0))
    db = iteration_losses(model, x, outputs, config(tmp_path, msssim_weight=2.0, msssim_loss="db"))
    quality = torch.stack([msssim_tensor(to_unit(x), to_unit(o)).mean() for o in outputs])
    torch.testing.assert_close(linear, plain + 2 * (1 - quality))
    torch.testing.assert_close(db, plain + 2 * torch.log10(1 - quality))
    assert db[1] < db[0] and (db[0] - db[1]) > (linear[0] - linear[1])  # the good depth is not a rounding error
    with pytest.raises(OptionError, match="msssim_loss must be one of linear, db"):
        train(config(tmp_path, msssim_loss="log"), log=lambda *_: None)


# -- the command line: Ctrl-C and SIGTERM end the run after its step, with a checkpoint ----------------
def test_the_first_signal_asks_and_the_second_ends_at_once():
    from rich.console import Console

    from rgbatch.cli import Terminated, _stopping

    for signum, second in ((signal.SIGINT, KeyboardInterrupt), (signal.SIGTERM, Terminated)):
        stop, console = threading.Event(), Console(file=io.StringIO())
        # as from a terminal: a suite started in the background (`nohup make test &`) has SIGINT ignored
        mine = signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL
        before = signal.signal(signum, mine)
        try:
            with pytest.raises(second):
                with _stopping(stop, console) as received:
                    os.kill(os.getpid(), signum)
                    assert stop.is_set() and received == [signum]
                    assert "stopping after the step under way" in console.file.getvalue()
                    os.kill(os.getpid(), signum)
            assert signal.getsignal(signum) is mine  # as it was
        finally:
            signal.signal(signum, before)


def test_a_hang_up_asks_once_whatever_its_sighups():
    """A hang-up's second SIGHUP (the kernel's after the shell's) is no second signal: it ended
    the run at once, losing its step (a helper's review, session 64)."""
    from rich.console import Console

    from rgbatch.cli import _stopping

    before = signal.signal(signal.SIGHUP, signal.SIG_DFL)
    try:
        stop = threading.Event()
        with _stopping(stop, Console(file=io.StringIO())) as received:
            os.kill(os.getpid(), signal.SIGHUP)
            os.kill(os.getpid(), signal.SIGHUP)
            time.sleep(0.1)
        assert stop.is_set() and received == [signal.SIGHUP]
        assert signal.getsignal(signal.SIGHUP) == signal.SIG_DFL  # as it was
    finally:
        signal.signal(signal.SIGHUP, before)


def test_a_signal_ignored_at_the_start_stays_ignored():
    from rich.console import Console

    from rgbatch.cli import _stopping

    before = signal.signal(signal.SIGINT, signal.SIG_IGN)  # a shell's background job
    try:
        stop = threading.Event()
        with _stopping(stop, Console(file=io.StringIO())) as received:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.1)
        assert not stop.is_set() and received == []
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_train_sent_a_signal_writes_the_step_it_was_in_and_says_so(tmp_path, signum):
    """Until session 56 a Ctrl-C or SIGTERM lost the steps since the last checkpoint (up to 50 of
    `make train`'s, 7 minutes); a SIGHUP (a terminal gone) until session 64's review."""
    out = tmp_path / "run.pt"
    args = [sys.executable, "-m", "rgbatch", "train", str(DATA), "--out", str(out), "--steps", "100000",
            "--batch-size", "1", "--patch", "32", "--iterations", "2", "--width", "0.125", "--max-iterations", "4",
            "--checkpoint-every", "5", "--threads", "1"]
    run = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                           preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 120
        while not out.exists() and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)  # the first checkpoint: the steps run
        time.sleep(0.3)
        run.send_signal(signum)
        _, err = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            run.kill()
    said = " ".join(err.split())
    assert run.returncode == 128 + signum, err
    step = int(re.search(r"stopped at step (\d+), its checkpoint written; --resume goes on from it", said)[1])
    assert step >= 5 and load_training_state(out)["step"] == step
    assert "Traceback" not in err and not [p for p in tmp_path.iterdir() if p != out]


def test_a_run_whose_loss_is_no_longer_finite_stops_without_writing_over_its_checkpoint(tmp_path):
    """A learning rate too large trained on, checkpointing NaN weights over the good ones (session 60)."""
    cfg = config(tmp_path, steps=2)
    train(cfg, log=lambda *_: None)
    good = Path(cfg.out).read_bytes()
    with pytest.raises(TrainingError, match="kept as it was"):
        train(config(tmp_path, steps=8, lr=1e30), resume=True, log=lambda *_: None)
    assert Path(cfg.out).read_bytes() == good
    with pytest.raises(TrainingError, match="no checkpoint written"):
        train(config(tmp_path / "new", steps=8, lr=1e30), log=lambda *_: None)


def test_a_snapshot_resumes_with_adam_and_the_random_states_started_again(tmp_path):
    """A snapshot (and a state widened or slimmed from one) keeps neither Adam nor the random
    states: resuming it ended in a KeyError (session 60)."""
    cfg = config(tmp_path, snapshot_every=2)
    train(cfg, log=lambda *_: None)
    said = []
    snapshot = snapshot_path(cfg.out, 2)
    state = train(config(tmp_path, out=str(snapshot), steps=4), resume=True, log=said.append)
    assert state["step"] == 4 and any("Adam starts again" in m for m in said)
    assert any("random states start from the seed" in m for m in said)


def test_evaluation_images_that_cannot_serve_are_skipped_by_name(tmp_path):
    """An evaluation image under 32 px failed every evaluation (the run unable to pass it), an
    unreadable one ended the run unnamed (session 60)."""
    folder = tmp_path / "eval"
    folder.mkdir()
    Image.open(DATA / "kodim05_crop192.png").save(folder / "a.png")
    Image.new("RGB", (20, 20)).save(folder / "b.png")
    (folder / "c.png").write_bytes(b"")
    said = []
    state = train(config(tmp_path, eval_dir=str(folder), eval_every=2, eval_images=3, eval_crop=64, steps=2),
                  log=said.append)
    assert len(state["history"][-1]["msssim"]) == 2  # evaluated (on a.png alone)
    assert any("b.png: 20x20 pixels" in m for m in said) and any("c.png: empty file" in m for m in said)
    from rgbatch.train import load_eval_set

    assert [tuple(c.shape) for c in load_eval_set(folder, 3, 64, log=lambda *_: None)] == [(1, 3, 64, 64)]


def test_an_option_train_refuses_is_one_line_without_a_progress_bar(tmp_path):
    """Until session 61 the bar was drawn before the options were checked: "step 0/1 loss 0.00000
    ..." above the error."""
    from typer.testing import CliRunner

    from rgbatch.cli import app

    result = CliRunner().invoke(app, ["train", str(DATA), "--out", str(tmp_path / "m.pt"), "--lr", "-1", "--steps", "1"])
    assert result.exit_code == 2 and result.output.splitlines() == ["error: --lr must be positive, not -1.0"]


def test_a_checkpoint_that_cannot_be_written_is_refused_before_the_first_step(tmp_path):
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(TrainingError, match=re.escape(f"cannot write {tmp_path / 'file' / 'run.pt'}")):
        train(config(tmp_path, out=str(tmp_path / "file" / "run.pt")), log=lambda *_: None)


def test_an_array_pack_replaces_a_file_only_when_asked_and_a_bad_pack_is_named(tmp_path):
    from rgbatch.train import load_training_images

    pack = tmp_path / "crops.npy"
    pack.write_bytes(b"precious")
    from rgbatch.storage import NotWritten

    with pytest.raises(NotWritten, match="exists: not replaced"):
        pack_crops(DATA, pack, crop=64, per_image=3)
    assert pack.read_bytes() == b"precious"
    assert pack_crops(DATA, pack, crop=np.int64(64), per_image=3, overwrite=True) == (6, 64, 64, 3)
    # written crop by crop: the bytes np.save writes of the same crops stacked (numpy ints in plain form)
    from rgbatch.train import random_crops

    stacked = io.BytesIO()
    np.save(stacked, np.stack(random_crops(load_training_images(DATA), 64, 3, np.random.default_rng(0))))
    assert pack.read_bytes() == stacked.getvalue()
    for name, array in [("float.npy", np.random.default_rng(0).random((2, 8, 8, 3))),
                        ("grey.npy", np.zeros((2, 8, 8), np.uint8)), ("scalar.npy", np.array(3))]:
        np.save(tmp_path / name, array)
        with pytest.raises(TrainingError, match=re.escape(f"{tmp_path / name} is not a pack of crops")):
            load_training_images(tmp_path / name)
    (tmp_path / "text.npy").write_text("hello")
    with pytest.raises(TrainingError, match="is not a readable .npy pack"):
        load_training_images(tmp_path / "text.npy")
