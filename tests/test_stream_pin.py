"""Pins the bytes of the shipped model's streams: a refactoring must leave them as they are.

The hashes were recorded from the code before the stage refactoring (issue 19). fp32 makes
the encoder's arithmetic the same on every machine (bf16 encodings may differ near a
binarizer's zero). Two crops, two tile sizes (one tile; four tiles side by side), depths 1,
3 and 6 as cuts of one encoding, every entropy coder (the adaptive one, coder id 2, since
session 11: its pins were recorded when it was added). Re-recorded when the shipped network
changed (session 14: model 07675362c6391602, width 0.375), with the code unchanged.
"""

import hashlib

import pytest

from rgbatch import bitstream
from rgbatch.codec import Codec
from rgbatch.imageio import read_image
from rgbatch.ratecontrol import Target

from conftest import DATA

PINNED = {  # (crop, tile size, coder): {depth: sha256 of the stream cut there, first 16 hex digits}
    ("kodim05_crop192.png", 0, "raw"): {1: "c79df40f71374070", 3: "bace55f46a79bb71", 6: "92c148bcf3d219cc"},
    ("kodim23_crop192.png", 0, "raw"): {1: "080de13ccebe6208", 3: "262826cb835b59a9", 6: "aa2aeb136e773830"},
    ("kodim05_crop192.png", 96, "raw"): {1: "7cfd5ba645961494", 3: "e729c740ee6f4cb9", 6: "99cf252d40a22cc8"},
    ("kodim23_crop192.png", 96, "raw"): {1: "1d0d141d64a2e7e1", 3: "5f14e765fb785cfa", 6: "1227e9a3d53d095e"},
    ("kodim05_crop192.png", 0, "context"): {1: "0909dd1a9a357457", 3: "3137d824ab49df24", 6: "ff7ebd0182760832"},
    ("kodim23_crop192.png", 0, "context"): {1: "7d10867e32800ae6", 3: "226bebc60e5604bc", 6: "120f1332b8ec7a44"},
    ("kodim05_crop192.png", 96, "context"): {1: "9fd8a4fb6643f33f", 3: "305579ea77be1603", 6: "8c2dc4f69c8ac25f"},
    ("kodim23_crop192.png", 96, "context"): {1: "3b1b35ce596dad4a", 3: "461d734b1f20301c", 6: "4af315e55e366e65"},
    ("kodim05_crop192.png", 0, "adaptive"): {1: "26a81df84726126b", 3: "148289aeac41adab", 6: "e8ea10f50e26d331"},
    ("kodim23_crop192.png", 0, "adaptive"): {1: "82478335e5d687df", 3: "0280260ae688d13b", 6: "5668974ac892ffe1"},
    ("kodim05_crop192.png", 96, "adaptive"): {1: "0185a1f78fd962fe", 3: "e1707689ecb0e783", 6: "36c7277bd7c9c4b0"},
    ("kodim23_crop192.png", 96, "adaptive"): {1: "6e1e7f0fa36fe2ae", 3: "6dc5e633d52b4aa8", 6: "141a359f0694bb87"},
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
    assert (by_size.iterations, by_size.bytes, _digest(by_size.blob)) == (2, [284, 448], "f7fd0ac02f35b9b6")
    assert (by_quality.iterations, _digest(by_quality.blob)) == (4, "a8921f93852150b0")
    assert _digest(codec.decode(by_size.blob).tobytes()) == "1957e82903e1cbb6"
