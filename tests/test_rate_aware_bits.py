"""`benchmarks/rate_aware_bits.py`: the rule flips what it says, and its encodings are what the codec makes."""

import sys
from pathlib import Path

import numpy as np
import pytest

from rgbatch.codec import Codec
from rgbatch.imageio import read_image

from conftest import DATA

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
import rate_aware_bits  # noqa: E402


def test_the_rule_flips_only_unsure_bits_the_coder_expects_otherwise():
    soft = np.array([0.01, 0.01, 0.9, -0.01, 0.01])
    p_one = np.array([0.01, 0.99, 0.01, 0.99, 0.45])
    # an unsure +1 coded at 1 % and an unsure -1 at 1 % flip; an expected +1, a confident +1 (0.9 >
    # 0.02 x 6.6 bits) and an unsure +1 that would save 0.3 bit (0.01 > 0.02 x 0.3) do not
    assert rate_aware_bits.flips(soft, p_one, 0.02).tolist() == [True, False, False, True, False]


def test_rules_are_parsed_or_refused():
    assert rate_aware_bits.parse_rule("lam:0.02:0:4") == (0.02, 0, 4)
    assert rate_aware_bits.parse_rule("none") == (0.0, 0, 0)
    with pytest.raises(SystemExit):
        rate_aware_bits.parse_rule("tau:0.1")


def test_without_flips_it_codes_what_the_codec_codes():
    codec = Codec.load(precision="fp32", decoding="float")
    image = read_image(DATA / "kodim05_crop192.png")[0][:64, :96]
    bpp, quality, flipped = rate_aware_bits.encode(codec, image, 3, "none")
    codes = Codec.load(precision="fp32", decoding="float", post_filter=False, tile_size=0).encode(
        image, 3, keep_codes=True).codes.tiles
    assert flipped == 0 and len(bpp) == len(quality) == 3
    assert 8 * sum(len(c) for c in codec.coder.encode(codes)) / (64 * 96) == pytest.approx(bpp[-1])
    _, _, flipped = rate_aware_bits.encode(codec, image, 3, "lam:0.05")
    assert 0 < flipped < 0.1
