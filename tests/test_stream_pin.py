"""Pins the bytes of the shipped model's streams: a refactoring must leave them as they are.

The hashes were recorded from the code before the stage refactoring (issue 19). fp32 makes
the encoder's arithmetic the same on every machine (bf16 encodings may differ near a
binarizer's zero). Two crops, two tile sizes (one tile; four tiles side by side), depths 1,
3 and 6 as cuts of one encoding, every entropy coder (the adaptive one, coder id 2, since
session 11: its pins were recorded when it was added). Re-recorded when the shipped network
changed (session 14: model 96b4d338f4b84447, width 0.375, its tables refitted; session 16: model
ef78a35a81cc7fa3, its decoder trained on), with the code unchanged. Exact decoding (session 18,
rgbatch.exact) leaves the encoder's loop in float by default, so these bytes; the encoder with
the exact decoder in its loop ("exact-loop") has its own pins (the last test).
"""

import hashlib

import pytest

from rgbatch import bitstream
from rgbatch.codec import Codec
from rgbatch.imageio import read_image
from rgbatch.ratecontrol import Target

from conftest import DATA

PINNED = {  # (crop, tile size, coder): {depth: sha256 of the stream cut there, first 16 hex digits}
    ("kodim05_crop192.png", 0, "raw"): {1: "05c3c28d769b860a", 3: "71b13bb507c044e9", 6: "0dc89f06a25c235c"},
    ("kodim23_crop192.png", 0, "raw"): {1: "e790ac0739633442", 3: "557d1ba11973afe7", 6: "c4102d6310697511"},
    ("kodim05_crop192.png", 96, "raw"): {1: "609a4de44f8e63f2", 3: "3b32587d035bd5f8", 6: "4bae7557f5b13fdc"},
    ("kodim23_crop192.png", 96, "raw"): {1: "0dc48bf67b32e6d0", 3: "f0ca830a6bf87deb", 6: "76af9821842f8c16"},
    ("kodim05_crop192.png", 0, "context"): {1: "e7408b29326ef37c", 3: "b230c88f992c080d", 6: "97c8006e70ce39a7"},
    ("kodim23_crop192.png", 0, "context"): {1: "0d2eda7741fbe47b", 3: "e8e9940ff88d112e", 6: "e4442df862db47e8"},
    ("kodim05_crop192.png", 96, "context"): {1: "cdbae15ef9226366", 3: "1650fcd980b2a2dd", 6: "0ac6fd575e4a7b3a"},
    ("kodim23_crop192.png", 96, "context"): {1: "08f58a0ba9d73759", 3: "3a047286ba412ba0", 6: "3c2623da6b6792a3"},
    ("kodim05_crop192.png", 0, "adaptive"): {1: "13c618684ee4ab17", 3: "e471dcc8601bfe4c", 6: "ee00e531be850fe7"},
    ("kodim23_crop192.png", 0, "adaptive"): {1: "4da6dafd9e47eb20", 3: "c757ce96ca8461c2", 6: "a62c1846358f568c"},
    ("kodim05_crop192.png", 96, "adaptive"): {1: "6b17aa358398fe4e", 3: "a145e5bcbc4045d9", 6: "5da9f999781c3342"},
    ("kodim23_crop192.png", 96, "adaptive"): {1: "1bccd4a2e124bdc1", 3: "3b8e838fbd37c11e", 6: "031b8cd9ebd0dc62"},
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


def test_target_encodings_and_decoding_keep_their_bytes(codecs, default_weights):
    # the encoder that stops at a target codes chunk by chunk (a size target) or measures as it
    # goes (a quality target); the decoder's pixels are pinned too: exact decoding (rgbatch.exact,
    # the default since session 18) gives them on every machine, in either encoder precision
    image, _ = read_image(DATA / "kodim05_crop192.png")
    codec = codecs["context", 96]
    by_size = codec.encode(image, iterations=6, target=Target(max_bytes=600))
    by_quality = codec.encode(image, iterations=6, target=Target(msssim=0.9))
    assert (by_size.iterations, by_size.bytes, _digest(by_size.blob)) == (2, [284, 452], "9d788973cde81d4e")
    assert (by_quality.iterations, _digest(by_quality.blob)) == (4, "e1e8d4832c6cb0bd")
    assert _digest(codec.decode(by_size.blob).tobytes()) == "3510a92b84343c58"
    assert _digest(Codec.load(default_weights, precision="bf16").decode(by_size.blob).tobytes()) == "3510a92b84343c58"


def test_the_exact_decoder_in_the_encoders_loop_makes_its_own_streams(default_weights):
    # codes near a binarizer's zero go the other way from depth 3; the first iteration's are the same
    image, _ = read_image(DATA / "kodim05_crop192.png")
    codec = Codec.load(default_weights, precision="fp32", coder="context", tile_size=96, decoding="exact-loop")
    blob = codec.encode(image, iterations=6, measure=False).blob
    got = {depth: _digest(bitstream.truncate(blob, depth)) for depth in (1, 3, 6)}
    assert got == {1: "cdbae15ef9226366", 3: "9f6d1d7859edbfa8", 6: "1b8bd5da65f3ca95"}
