"""Pins the bytes of the shipped model's streams: a refactoring must leave them as they are.

The hashes were recorded from the code before the stage refactoring (issue 19). fp32 makes
the encoder's arithmetic the same on every machine (bf16 encodings may differ near a
binarizer's zero). Two crops, two tile sizes (one tile; four tiles side by side), depths 1,
3 and 6 as cuts of one encoding, every entropy coder (the adaptive one, coder id 2, since
session 11: its pins were recorded when it was added). Re-recorded when the shipped network
changed (session 14: model 96b4d338f4b84447, width 0.375, its tables refitted), with the code unchanged.
"""

import hashlib

import pytest

from rgbatch import bitstream
from rgbatch.codec import Codec
from rgbatch.imageio import read_image
from rgbatch.ratecontrol import Target

from conftest import DATA

PINNED = {  # (crop, tile size, coder): {depth: sha256 of the stream cut there, first 16 hex digits}
    ("kodim05_crop192.png", 0, "raw"): {1: "dc96cfd54dcdfa1b", 3: "fc18a88865645ae6", 6: "20f4c0cc93368345"},
    ("kodim23_crop192.png", 0, "raw"): {1: "6fc2ca7825672137", 3: "0264a49c4d61e480", 6: "0914b5b079fab776"},
    ("kodim05_crop192.png", 96, "raw"): {1: "f132d2944a8c2f15", 3: "d1eeef326d8133d3", 6: "dd18224eb725a0dc"},
    ("kodim23_crop192.png", 96, "raw"): {1: "bcf328a7ec842bcd", 3: "9c7959c5c05c1ee1", 6: "5f36746e3cf01e5c"},
    ("kodim05_crop192.png", 0, "context"): {1: "86894ac2bca65346", 3: "5cb484b4306e9c53", 6: "b05ef4b08611c527"},
    ("kodim23_crop192.png", 0, "context"): {1: "84158d743ac650cf", 3: "39f7d1d0e0efd4d3", 6: "67cbdf6e8717b785"},
    ("kodim05_crop192.png", 96, "context"): {1: "104a80cf0d2c934b", 3: "087c86c6b489111f", 6: "d3439682e659c97f"},
    ("kodim23_crop192.png", 96, "context"): {1: "2475d1d9402f9872", 3: "3fb0bfed568054be", 6: "805caf71e935de5c"},
    ("kodim05_crop192.png", 0, "adaptive"): {1: "01c3c1c99de48886", 3: "6bb1ba2f75a52547", 6: "f596183998c5fa33"},
    ("kodim23_crop192.png", 0, "adaptive"): {1: "4f534c38196d8979", 3: "1086c3673e0d57b5", 6: "191da09407ac081d"},
    ("kodim05_crop192.png", 96, "adaptive"): {1: "48d2de291fb239c3", 3: "29784c8c4a971313", 6: "06987853165bdbbb"},
    ("kodim23_crop192.png", 96, "adaptive"): {1: "f9a47945f684842f", 3: "cf02b4377550b87d", 6: "c8475f2a5e6b9cfd"},
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
    assert (by_size.iterations, by_size.bytes, _digest(by_size.blob)) == (2, [280, 444], "ef8a04243a089468")
    assert (by_quality.iterations, _digest(by_quality.blob)) == (4, "fb327205219f0ee5")
    assert _digest(codec.decode(by_size.blob).tobytes()) == "1957e82903e1cbb6"
