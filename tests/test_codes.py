"""The values between the codec's stages: Codes in, chunks and a stream out, and back."""

import numpy as np
import pytest

from rgbatch import bitstream
from rgbatch.codec import Codec
from rgbatch.codes import Codes, stream_sizes
from rgbatch.entropy import RawCoder
from rgbatch.ratecontrol import Target

from conftest import smooth_image


@pytest.fixture(scope="module")
def codec(tiny_weights):
    # post-filters on these small images too (the codec sends them from postfilter.MIN_PIXELS up)
    return Codec.load(tiny_weights, device="cpu", tile_size=64, batch_size=3, decoding="exact-loop",
                      post_filter_min_pixels=0)


def test_the_stages_compose_to_encode_and_decode(codec, rng):
    images = [smooth_image(rng, 70, 100), smooth_image(rng, 33, 40)]
    codes = codec.encode_codes(images, 3)
    assert [len(c.tiles) for c in codes] == [4, 1] and codes[0].tiles[0].shape == (3, 32, 4, 4)
    encoded = codec.encode_many(images, 3, keep_codes=True, keep_reconstructions=True)
    for c, e in zip(codes, encoded):
        chunks = codec.code(c)  # each iteration's post-filter record, then the coder's payload
        assert codec.pack(c, chunks) == e.blob and stream_sizes(chunks) == e.bytes  # coder, then packing
        back = codec.read_codes(e.blob)  # unpacking, the records, then the coder
        assert (back.width, back.height, back.tile_size) == (c.width, c.height, c.tile_size)
        assert all(np.array_equal(a, b) for a, b in zip(back.tiles, c.tiles))
        assert all(np.array_equal(a, b) for a, b in zip(back.filters, c.filters))
        assert all(np.array_equal(a, b) for a, b in zip(e.codes.tiles, c.tiles))
    decoded = codec.decode_codes([c.cut(2) for c in codes])
    assert all(np.array_equal(d, e.reconstructions[1]) for d, e in zip(decoded, encoded))


def test_cut_keeps_a_decodable_prefix_and_its_stats(tiny_weights, rng):
    # moved from tests/test_ratecontrol.py with EncodedImage.cut (formerly ratecontrol.cut)
    codec = Codec.load(tiny_weights, device="cpu", tile_size=32, post_filter_min_pixels=0)  # format v2: records kept
    image = smooth_image(rng, 40, 48)
    full = codec.encode(image, iterations=3, keep_codes=True, keep_reconstructions=True)
    short = full.cut(2)
    assert short.blob == bitstream.truncate(full.blob, 2) and len(short.blob) == full.bytes[1]
    assert short.iterations == 2 and short.bytes == full.bytes[:2]
    assert short.msssim == full.msssim[:2] and short.psnr == full.psnr[:2] and short.bpp == full.bpp[:2]
    assert short.codes.iterations == 2 and np.array_equal(short.reconstructions, full.reconstructions[:2])
    assert np.array_equal(codec.decode(short.blob), codec.decode(full.blob, iterations=2))

    # at_target() cuts where choose_depth says: a budget of exactly depth 2's bytes keeps depth 2
    assert full.choose_depth(Target(max_bytes=full.bytes[1])) == 2
    assert full.at_target(Target(max_bytes=full.bytes[1])).blob == short.blob
    assert full.at_target(Target()) is full


def test_codes_of_another_coder_cost_other_bytes_for_the_same_bits(codec, rng):
    codes = Codes(48, 40, 64, [np.random.default_rng(0).random((3, 32, 3, 3)) < 0.5])
    assert codes.cut(1).iterations == 1 and codes.grid[0].width == 48
    raw = RawCoder().encode(codes.tiles)
    assert stream_sizes(raw) == bitstream.cumulative_bytes([3 * 3 * 32 // 8] * 3)
