"""Parameters are checked where they enter, in the library's words; the CLI names its flags."""

import numpy as np
import pytest
from typer.testing import CliRunner

from rgbatch.archive import compact, report, restore, verify
from rgbatch.cli import app, flag
from rgbatch.codec import Codec
from rgbatch.files import decode_file
from rgbatch.options import OptionError
from rgbatch.pipeline import CompressOptions
from rgbatch.ratecontrol import Target
from rgbatch.train import TrainConfig, train

from conftest import DATA

ARCHIVE = DATA.parent / "archive_v1" / "archive"


@pytest.mark.parametrize("make, option", [
    (lambda: Target(msssim=1.5), "target.msssim"),
    (lambda: Target(max_bytes=0), "target.max_bytes"),
    (lambda: CompressOptions(search_steps=-1).check(), "search_steps"),
    (lambda: CompressOptions(batch_size=float("nan")).check(), "batch_size"),  # NaN is within no range
    (lambda: CompressOptions(precision="fp8").check(), "precision"),
    (lambda: CompressOptions(target=Target(msssim=0.9), measure=False).check(), "target.msssim"),
    (lambda: train(TrainConfig(data_dir=str(DATA), out="never.pt", iterations=5, codec=dict(width=0.125, max_iterations=4))),
     "iterations"),
    (lambda: train(TrainConfig(data_dir=str(DATA), out="never.pt", snapshot_every=3, checkpoint_every=2)),
     "snapshot_every"),
    (lambda: report(ARCHIVE, depth=0), "depth"),
    (lambda: report(ARCHIVE, worst=-1), "worst"),
    (lambda: compact(ARCHIVE, depth=0), "depth"),
    (lambda: verify(ARCHIVE, sample=-1), "sample"),
    (lambda: restore(ARCHIVE, "never", batch_size=0), "batch_size"),
    (lambda: restore(ARCHIVE, "never", iterations=2, target_msssim=0.9), "iterations"),
    (lambda: restore(ARCHIVE, "never", select="nothing*"), "select"),
    (lambda: decode_file("never.rgb", "never.png", iterations=0), "iterations"),
    (lambda: decode_file("never.rgb", "never.png", max_pixels=0), "max_pixels"),
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


def test_an_error_naming_several_parameters_names_each_as_the_cli_does(tmp_path):
    with pytest.raises(OptionError) as caught:
        restore(ARCHIVE, tmp_path / "o", iterations=2, target_msssim=0.9)
    assert str(caught.value) == "iterations and target_msssim exclude each other: give one, not both"
    assert caught.value.worded(flag) == "--depth and --target-msssim exclude each other: give one, not both"
    runner = CliRunner()
    result = runner.invoke(app, ["restore", str(ARCHIVE), "--out", str(tmp_path / "o"), "--iterations", "2",
                                 "--target-msssim", ".9"])
    assert result.exit_code == 2 and "--depth and --target-msssim exclude each other" in result.stderr
    result = runner.invoke(app, ["report", str(ARCHIVE), "--depth", "0"])
    assert result.exit_code == 2 and "error: --depth must be at least 1, not 0" in result.stderr
    result = runner.invoke(app, ["train", str(DATA), "--out", str(tmp_path / "t.pt"), "--snapshot-every", "3",
                                 "--checkpoint-every", "2"])
    assert result.exit_code == 2 and "--snapshot-every 3 must be a multiple of --checkpoint-every 2" in result.stderr
    result = runner.invoke(app, ["train", str(DATA), "--out", str(tmp_path / "none.pt"), "--resume"])
    assert result.exit_code == 2 and "--resume asks to continue" in result.stderr


def test_the_python_api_refuses_wrong_types_and_shapes_in_its_own_words(tiny_weights, tmp_path, monkeypatch):
    """What a program passing the wrong thing got until session 58 (a helper's round of the API):
    torch's or numpy's TypeError deep inside, or worse, a silent wrong result (a blob dropped, a
    generator's images never encoded, a file named "None", 0 taken as 1, True as 1)."""
    import re

    def refused(call, said):
        with pytest.raises(OptionError, match=re.escape(said)):
            call()

    for options, said in ((dict(device="gpu"), "device must be one of auto, cpu, cuda, not 'gpu'"),
                          (dict(device=None), "device must be one of auto, cpu, cuda, not None"),
                          (dict(batch_size=2.5), "batch_size must be a whole number, not 2.5"),
                          (dict(batch_size=0), "batch_size must be at least 1, not 0"),
                          (dict(search_steps=1.5), "search_steps must be a whole number, not 1.5"),
                          (dict(tile_size=64.0), "tile_size must be a whole number, not 64.0"),
                          (dict(post_filter_min_pixels="x"), "post_filter_min_pixels must be a number, not 'x'"),
                          (dict(post_filter_min_pixels=-5), "post_filter_min_pixels must be at least 0, not -5")):
        refused(lambda: Codec.load(tiny_weights, **options), said)
    codec = Codec.load(tiny_weights, device="cpu", tile_size=32)
    image = np.zeros((32, 32, 3), np.uint8)
    encoded = codec.encode(image, 2)
    for call, said in ((lambda: codec.encode(np.zeros((0, 32, 3), np.uint8)), "image is a uint8 array of shape (0, 32, 3)"),
                       (lambda: codec.encode(image, 2.5), "iterations must be a whole number, not 2.5"),
                       (lambda: codec.encode(image, True), "iterations must be a number, not True"),
                       (lambda: codec.decode(None), "blob is a NoneType: give the stream's bytes"),
                       (lambda: codec.decode_many([encoded.blob] * 2, [1]), "iterations lists 1 depth(s) for 2 blob(s)"),
                       (lambda: encoded.cut(None), "depth must be a number, not None"),
                       (lambda: encoded.cut(3), "depth must be 1..2 for this image, not 3"),
                       (lambda: Target(msssim="0.9"), "target.msssim must be a number, not '0.9'"),
                       (lambda: Target(msssim=True), "target.msssim must be a number, not True"),
                       (lambda: Target(max_bytes=1.5), "target.max_bytes must be a whole number, not 1.5"),
                       (lambda: CompressOptions(threads=-1).check(), "threads must be at least 0"),
                       (lambda: CompressOptions(iterations=2.5).check(), "iterations must be a whole number, not 2.5"),
                       (lambda: CompressOptions(workers=1.5).check(), "workers must be a whole number, not 1.5"),
                       (lambda: restore(ARCHIVE, tmp_path / "o", target_msssim=1.5), "target_msssim must be in (0, 1]"),
                       (lambda: verify(ARCHIVE, sample=1.5), "sample must be a whole number, not 1.5")):
        refused(call, said)
    monkeypatch.chdir(tmp_path)
    refused(lambda: restore(ARCHIVE, None, iterations=1), "out is None: give a path or URI")
    refused(lambda: decode_file(DATA / "x.rgb", None), "out is None: give a path or URI")
    assert not (tmp_path / "None").exists()
    # a generator's images are encoded, each; np.int64 is a whole number
    assert [e.blob for e in codec.encode_many((im for im in [image, image]), np.int64(2))] == [encoded.blob] * 2


def test_the_python_api_takes_the_natural_forms_and_refuses_the_wrong_kind(tiny_weights, tmp_path):
    """A Target where one is meant (0.95 or None failed in an AttributeError), `resample=0.75` as
    the number it names (refused as "not 0.75"), one glob or path as a str (compact's drop took
    its letters as globs, `rows("a.png")` gave nothing), a file descriptor number for a path (read
    as the open descriptor), PNG bytes under a .jpg name (written without a word)."""
    import re
    import shutil

    from rgbatch.codec import Codec
    from rgbatch.files import encode_file
    from rgbatch.imageio import read_image
    from rgbatch.manifest import Archive
    from rgbatch.resample import parse

    codec = Codec.load(tiny_weights, device="cpu")
    image = np.zeros((32, 32, 3), np.uint8)
    for call in (lambda: codec.encode(image, target=0.95), lambda: codec.encode(image, target=None),
                 lambda: encode_file(DATA / "kodim05_crop192.png", tmp_path / "x.rgb", target=0.95, codec=codec),
                 lambda: compact(ARCHIVE, target=0.95)):
        with pytest.raises(OptionError, match=re.escape("target is 0.95: give a Target") + "|" +
                                              re.escape("target is None: give a Target")):
            call()
    assert (parse(0.75), parse(0.5), parse("0.75")) == (1, 2, 1)
    assert [row.path for row in Archive(ARCHIVE).rows("a.png")] == ["a.png"]
    work = tmp_path / "copy"
    shutil.copytree(ARCHIVE, work)
    with pytest.raises(OptionError, match=re.escape("drop 'zzz*': no archived image matches it")):
        compact(work, drop="zzz*")
    assert compact(work, drop="a.png").dropped == 1
    with pytest.raises(OptionError, match="path is 0: give a file's path"):
        read_image(0)
    with pytest.raises(OptionError, match="max_pixels must be at least 1, not 0"):
        read_image(DATA / "kodim05_crop192.png", max_pixels=0)
    encode_file(DATA / "kodim05_crop192.png", tmp_path / "x.rgb", iterations=1, codec=codec)
    with pytest.raises(OptionError, match=re.escape("decode writes a PNG, not a .jpg file: give a name ending in .png")):
        decode_file(tmp_path / "x.rgb", tmp_path / "x.jpg", codec=codec)
    assert not (tmp_path / "x.jpg").exists()


def test_shown_escapes_what_a_line_cannot_show_as_it_is():
    from rgbatch.options import shown

    assert shown("photo é 日本 a b.png") == "photo é 日本 a b.png"  # printable: as it is
    # control, format (bidi, zero-width), separators but the space, a lone surrogate (a name not UTF-8)
    assert shown("a\nb\x1b[1m\u202ec\u200bd\u2028e\xa0f\udcff") == "a\\nb\\x1b[1m\\u202ec\\u200bd\\u2028e\\xa0f\\udcff"


def test_the_cli_names_flags_at_a_library_message_s_end_only():
    from rgbatch.cli import cli_words

    assert cli_words("x.rgb: a file is already there: not overwritten (the overwrite option replaces it)") == (
        "x.rgb: a file is already there: not overwritten (--overwrite replaces it)")
    assert cli_words("an image of 9x9 pixels is over the limit of 10 pixels (max_pixels)").endswith("(--max-pixels)")
    assert cli_words("no archive at /tmp/x (max_pixels)") == "no archive at /tmp/x (max_pixels)"  # a name
    assert cli_words("no archive at /tmp/the overwrite option") == "no archive at /tmp/the overwrite option"
