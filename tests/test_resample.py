import hashlib

import numpy as np
import pytest
from PIL import Image

from rgbatch import resample
from rgbatch.imageio import read_image
from rgbatch.metrics import msssim_many

from conftest import DATA

# the decoder's upscaler taps: a machine that computes another table must fail here, not decode otherwise
TABLE_SHA256 = "77da12c9c6ff8dbd63fc389439b8a99074c1c9b4d027e5015caa21bc925c6d7a"


def test_the_table_is_the_pinned_one():
    assert hashlib.sha256(resample.TABLE.astype("<i8").tobytes()).hexdigest() == TABLE_SHA256
    assert resample.TABLE.shape == (resample.PHASES, resample.TAPS)
    assert (resample.TABLE.sum(axis=1) == resample.ONE).all()
    assert resample.TABLE[0].tolist() == [0, 0, resample.ONE, 0, 0, 0]  # phase 0: the source pixel itself


@pytest.mark.parametrize("size, code, coded", [((768, 512), 0, (768, 512)), ((768, 512), 1, (576, 384)),
                                               ((768, 512), 2, (384, 256)), ((101, 33), 1, (76, 25)),
                                               ((101, 33), 2, (51, 17)), ((1, 1), 2, (1, 1)), ((3, 2), 1, (2, 2))])
def test_coded_size(size, code, coded):
    assert resample.coded_size(*size, code) == coded


def test_unknown_codes_and_small_images():
    with pytest.raises(ValueError, match="scale code 3"):
        resample.coded_size(10, 10, 3)
    assert resample.usable(20, 20, 0)
    assert not resample.usable(62, 200, 2) and resample.usable(63, 200, 2)
    assert not resample.usable(200, 41, 1) and resample.usable(200, 42, 1)


@pytest.mark.parametrize("code", [1, 2])
def test_down_and_up_is_pillows_lanczos_within_1e3(code):
    image, _ = read_image(DATA / "kodim23_crop192.png")
    small = resample.downscale(image, code)
    assert small.shape == (*resample.coded_size(192, 192, code)[::-1], 3) and small.dtype == np.uint8
    ours = resample.upscale(small, 192, 192)
    pillow = np.asarray(Image.fromarray(small).resize((192, 192), Image.LANCZOS))
    assert ours.shape == image.shape and ours.dtype == np.uint8
    q_ours, q_pillow = msssim_many(image, [ours, pillow])
    assert abs(q_ours - q_pillow) < 1e-3
    assert np.abs(ours.astype(int) - pillow).mean() < 1


def test_upscale_of_a_constant_image_is_constant():
    for value in (0, 1, 128, 255):
        small = np.full((7, 11, 3), value, np.uint8)
        assert (resample.upscale(small, 29, 13) == value).all()


def test_upscale_in_strips_is_the_same_and_exact(monkeypatch, rng):
    small = rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)
    whole = resample.upscale(small, 61, 79)
    monkeypatch.setattr(resample, "STRIP_ROWS", 7)
    assert np.array_equal(resample.upscale(small, 61, 79), whole)
    # one output pixel by hand, in integers: the pinned table, edge pixels clamped
    index, weights = resample._taps(30, 61)
    assert index[0].tolist() == [0, 0, 0, 0, 1, 2]  # clamped at the left edge
    assert index[-1].tolist() == [27, 28, 29, 29, 29, 29]  # and at the right one
    rows_index, rows_weight = resample._taps(40, 79)
    y, x, c = 37, 20, 1
    vertical = [min(255, max(0, (int(small[rows_index[y], i, c] @ rows_weight[y]) + 8192) >> 14)) for i in range(30)]
    expected = min(255, max(0, (int(np.array(vertical)[index[x]] @ weights[x]) + 8192) >> 14))
    assert whole[y, x, c] == expected


def test_upscale_of_a_1mp_output_is_vectorised(rng):
    small = rng.integers(0, 256, (500, 500, 3), dtype=np.uint8)
    assert resample.upscale(small, 1000, 1000).shape == (1000, 1000, 3)  # seconds, not minutes (benchmarks time it)
