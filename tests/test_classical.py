import numpy as np
import pytest

from rgbatch import classical
from rgbatch.imageio import read_image
from rgbatch.metrics import msssim

from conftest import DATA, smooth_image

CODECS = classical.available_codecs()


def test_this_pillow_runs_every_codec():
    # pyproject asks for a Pillow with AVIF built in; a missing codec would silently shrink the bench
    assert CODECS == list(classical.CLASSICAL_CODECS)


@pytest.mark.parametrize("name", CODECS)
def test_round_trip_gives_the_image_back_approximately(name, rng):
    image = smooth_image(rng, 72, 104)
    result = classical.run(image, name, quality=90)
    assert result.decoded.shape == image.shape and result.decoded.dtype == np.uint8
    assert msssim(image, result.decoded) > 0.95
    assert result.encode_s > 0 and result.decode_s > 0
    assert np.array_equal(classical.decode(result.data), result.decoded)


@pytest.mark.parametrize("name", CODECS)
def test_higher_quality_costs_more_bytes_and_looks_better(name):
    image, _ = read_image(DATA / "kodim23_crop192.png")
    low, high = classical.CLASSICAL_CODECS[name].qualities[0], classical.CLASSICAL_CODECS[name].qualities[-1]
    lo, hi = classical.run(image, name, low), classical.run(image, name, high)
    assert len(hi.data) > len(lo.data)
    assert msssim(image, hi.decoded) > msssim(image, lo.decoded)


SLOW = {"avif-s2", "avif-s2-444", "jxl-e9"}  # shorter sweeps, up to about MS-SSIM 0.99


@pytest.mark.parametrize("name", CODECS)
def test_sweep_spans_the_rate_range_of_rgbatch(name):
    # rgbatch covers 0.125..2 bpp (16 depths) before entropy coding, up to MS-SSIM 0.99 on Kodak;
    # each sweep must reach past both ends on a real photo, or bpp-at-quality and BD-rate would
    # have to extrapolate (the slow settings, whose points cost most, stop at the quality end)
    image, _ = read_image(DATA / "kodim05_crop192.png")
    qualities = classical.CLASSICAL_CODECS[name].qualities
    low, high = (classical.run(image, name, q) for q in (qualities[0], qualities[-1]))
    assert 8 * len(low.data) / (192 * 192) < 0.5
    if name in SLOW:
        assert msssim(image, high.decoded) > 0.985  # kodim05, a hard image: ~0.99 on Kodak
    else:
        assert 8 * len(high.data) / (192 * 192) > 2.5


def test_slow_settings_are_the_same_codec_at_a_slower_speed():
    assert {n: classical.CLASSICAL_CODECS[n].options for n in sorted(SLOW)} == {
        "avif-s2": {"speed": 2, "subsampling": "4:2:0"}, "avif-s2-444": {"speed": 2, "subsampling": "4:4:4"},
        "jxl-e9": {"effort": 9}}
    assert classical.CLASSICAL_CODECS["jxl"].options == {"effort": 7}  # libjxl's default


def test_avif_444_keeps_more_chroma_than_420():
    image, _ = read_image(DATA / "kodim05_crop192.png")
    assert len(classical.encode(image, "avif-s2-444", 60)) > len(classical.encode(image, "avif-s2", 60))


def test_jpeg_444_keeps_more_chroma_than_420():
    image, _ = read_image(DATA / "kodim05_crop192.png")
    assert len(classical.encode(image, "jpeg444", 75)) > len(classical.encode(image, "jpeg420", 75))


def test_stored_bytes_are_a_real_file_of_that_format(rng):
    image = smooth_image(rng, 40, 40)
    assert classical.encode(image, "jpeg420", 50)[:2] == b"\xff\xd8"
    assert classical.encode(image, "webp", 50)[8:12] == b"WEBP"
    assert classical.encode(image, "avif", 50)[4:8] == b"ftyp"
    assert classical.encode(image, "jxl", 50)[:2] == b"\xff\x0a"  # a bare JPEG XL codestream


def test_a_missing_plugin_is_a_worded_error(monkeypatch):
    monkeypatch.setattr(classical.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ValueError, match="the pillow-jxl-plugin package is not installed, so jxl cannot run"):
        classical.get_codec("jxl")


def test_unknown_codec_is_a_worded_error(rng):
    with pytest.raises(ValueError, match="unknown classical codec 'jpegxl'"):
        classical.encode(smooth_image(rng, 16, 16), "jpegxl", 50)
