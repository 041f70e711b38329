import sys
from pathlib import Path

import numpy as np
import pytest

from rgbatch import bitstream, postfilter
from rgbatch.codec import Codec
from rgbatch.imageio import read_image

from conftest import DATA

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
import bitmaps  # noqa: E402


@pytest.fixture(scope="module")
def shipped():
    return Codec.load(precision="fp32")  # the shipped model carries the context coder's tables


def test_block_bits_add_up_to_each_chunk_of_the_stream(shipped):
    image, _ = read_image(DATA / "kodim05_crop192.png")
    image = image[:150, :170]  # not a multiple of 16 or 32: edge blocks and padding positions
    blob = shipped.encode(image, 3, measure=False).blob
    bits, padding = bitmaps.block_bits(shipped, blob)
    assert bits.shape == (3, 10, 11)  # ceil(150 / 16), ceil(170 / 16)
    header, chunks = bitstream.unpack(blob)
    if header.version >= 2:  # the coder's payloads, after each depth's post-filter record
        _, chunks = postfilter.unframe(chunks, 1)
    for t, chunk in enumerate(chunks):
        coded = bits[t].sum() + padding[t]
        # the range coder writes 32-bit words and quantizes the probabilities: a few bytes more
        assert 0 <= 8 * len(chunk) - coded <= 64 + 0.01 * coded, t
    assert padding.min() > 0  # 150 px pad to 160, 170 to 192: padding positions cost bits too


def test_raw_coder_costs_one_bit_per_code_bit(shipped):
    image, _ = read_image(DATA / "kodim23_crop192.png")
    raw = Codec(shipped.model, shipped.model_id, shipped.extra, coder="raw", precision="fp32")
    bits, padding = bitmaps.block_bits(raw, raw.encode(image, 2, measure=False).blob)
    assert np.all(bits == 32) and np.all(padding == 0)


def test_block_error_and_activity(rng):
    image = np.full((40, 48, 3), 128, np.uint8)
    image[:16, :16] = rng.integers(0, 256, (16, 16, 3))  # one busy block
    activity = bitmaps.block_activity(image)
    assert activity.shape == (3, 3) and activity[0, 0] > 50 and np.all(activity.ravel()[1:] < 1e-3)
    assert np.allclose(bitmaps.ssim_map(image, image), 1)
    worse = image.copy()
    worse[32:, 32:] += 20
    error = 1 - bitmaps._block_mean(bitmaps.ssim_map(image, worse))
    assert error[2, 2] > error[0, 0] >= 0
