"""Pins the bytes of the shipped model's streams: a refactoring must leave them as they are.

The hashes were recorded from the code before the stage refactoring (issue 19). fp32 makes
the encoder's arithmetic the same on every machine (bf16 encodings may differ near a
binarizer's zero). Two crops, two tile sizes (one tile; four tiles side by side), depths 1,
3 and 6 as cuts of one encoding, every entropy coder (the adaptive one, coder id 2, since
session 11: its pins were recorded when it was added).
"""

import hashlib

import pytest

from rgbatch import bitstream
from rgbatch.codec import Codec
from rgbatch.imageio import read_image
from rgbatch.ratecontrol import Target

from conftest import DATA

PINNED = {  # (crop, tile size, coder): {depth: sha256 of the stream cut there, first 16 hex digits}
    ("kodim05_crop192.png", 0, "raw"): {1: "7b09a88163bc0d2f", 3: "9db82d2740194ea6", 6: "b34abb4f322e020c"},
    ("kodim23_crop192.png", 0, "raw"): {1: "6af504688bf939cf", 3: "83ff84cb10926b53", 6: "5b24cfa668142a93"},
    ("kodim05_crop192.png", 96, "raw"): {1: "99379c5160a53e4c", 3: "0173096d650c211e", 6: "1fda73b7c01dc3e5"},
    ("kodim23_crop192.png", 96, "raw"): {1: "c5f28ae583929b31", 3: "f03b470db7cdaa0d", 6: "d03853a934a99bc9"},
    ("kodim05_crop192.png", 0, "context"): {1: "f5588f0cc349206d", 3: "bdfb54f5a4ba0837", 6: "c553fdedd46bc866"},
    ("kodim23_crop192.png", 0, "context"): {1: "7e0d66ec3bd0efc7", 3: "4a5ab94ad0a8ad43", 6: "cddb23e6d34efcd9"},
    ("kodim05_crop192.png", 96, "context"): {1: "a79c2188ed9a8b90", 3: "a398cc79c31a9375", 6: "dd5aa20d2a58fca6"},
    ("kodim23_crop192.png", 96, "context"): {1: "11ca0985fbd1f050", 3: "514be63f96da2898", 6: "73fe0334350ed9f5"},
    ("kodim05_crop192.png", 0, "adaptive"): {1: "2d21d3a776841a37", 3: "852afac926f9e896", 6: "ab0865af84cd8f22"},
    ("kodim23_crop192.png", 0, "adaptive"): {1: "4b91ad9ebe628726", 3: "a5c8465bf2038626", 6: "bfe4579c0e111b71"},
    ("kodim05_crop192.png", 96, "adaptive"): {1: "4e95135c7617b24b", 3: "f67550b5b38751bc", 6: "e4a34e24d0b3adbb"},
    ("kodim23_crop192.png", 96, "adaptive"): {1: "901b6ddba13c1a0c", 3: "722d34fbf0f829f3", 6: "3db2407b906beb1b"},
}


def _digest(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()[:16]


@pytest.fixture(scope="module")
def codecs(default_weights):
    return {(coder, tile): Codec.load(default_weights, precision="fp32", coder=coder, tile_size=tile)
            for coder in ("raw", "context", "adaptive") for tile in (0, 96)}


@pytest.mark.parametrize("name", ["kodim05_crop192.png", "kodim23_crop192.png"])
@pytest.mark.parametrize("coder", ["raw", "context", "adaptive"])
@pytest.mark.parametrize("tile", [0, 96])
def test_streams_of_the_shipped_model_keep_their_bytes(codecs, name, coder, tile):
    image, _ = read_image(DATA / name)
    blob = codecs[coder, tile].encode(image, iterations=6, measure=False).blob
    got = {depth: _digest(bitstream.truncate(blob, depth)) for depth in (1, 3, 6)}
    assert got == PINNED.get((name, tile, coder)), got


def test_target_encodings_and_decoding_keep_their_bytes(codecs):
    # the encoder that stops at a target codes chunk by chunk (a size target) or measures as it
    # goes (a quality target); the decoder's pixels are pinned too
    image, _ = read_image(DATA / "kodim05_crop192.png")
    codec = codecs["context", 96]
    by_size = codec.encode(image, iterations=6, target=Target(max_bytes=600))
    by_quality = codec.encode(image, iterations=6, target=Target(msssim=0.9))
    assert (by_size.iterations, by_size.bytes, _digest(by_size.blob)) == (2, [296, 472], "fec6889e19f1100e")
    assert (by_quality.iterations, _digest(by_quality.blob)) == (4, "3ccd9ae2f1825440")
    assert _digest(codec.decode(by_size.blob).tobytes()) == "bc11341079f2abd3"
