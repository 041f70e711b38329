"""Parameters are checked where they enter, in the library's words; the CLI names its flags."""

import numpy as np
import pytest
from typer.testing import CliRunner

from rgbatch.cli import app, flag
from rgbatch.codec import Codec
from rgbatch.options import OptionError
from rgbatch.pipeline import CompressOptions
from rgbatch.ratecontrol import Target
from rgbatch.train import TrainConfig, train

from conftest import DATA


@pytest.mark.parametrize("make, option", [
    (lambda: Target(msssim=1.5), "target.msssim"),
    (lambda: Target(max_bytes=0), "target.max_bytes"),
    (lambda: CompressOptions(search_steps=-1).check(), "search_steps"),
    (lambda: CompressOptions(precision="fp8").check(), "precision"),
    (lambda: CompressOptions(target=Target(msssim=0.9), measure=False).check(), "target.msssim"),
    (lambda: train(TrainConfig(data_dir=str(DATA), out="never.pt", iterations=5, codec=dict(width=0.125, max_iterations=4))),
     "iterations"),
])
def test_errors_name_the_parameter_as_the_library_spells_it(make, option):
    with pytest.raises(OptionError) as caught:
        make()
    assert caught.value.option == option and str(caught.value).startswith(option) and "--" not in str(caught.value)


def test_the_codec_checks_its_parameters_against_its_model(tiny_weights):
    with pytest.raises(OptionError, match="tile_size must be 0 .* multiple of 32"):
        Codec.load(tiny_weights, tile_size=48)
    codec = Codec.load(tiny_weights, device="cpu")
    with pytest.raises(OptionError, match="iterations must be 1..16 for this model, not 17"):
        codec.encode_codes([np.zeros((32, 32, 3), np.uint8)], 17)


def test_the_cli_says_its_own_flags(tmp_path):
    assert flag("target.max_bytes") == "--max-bytes" and flag("search_steps") == "--search-steps"
    result = CliRunner().invoke(app, ["compress", str(DATA), "--out", str(tmp_path / "a"), "--target-msssim", "1.5"])
    assert result.exit_code == 2 and "--target-msssim must be in (0, 1], not 1.5" in result.stderr
    result = CliRunner().invoke(app, ["compress", str(DATA), "--out", str(tmp_path / "a"), "--search-steps", "-1"])
    assert result.exit_code == 2 and "--search-steps must be 0..100, not -1" in result.stderr
