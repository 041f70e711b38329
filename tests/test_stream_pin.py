"""Pins the bytes of the shipped model's streams: a refactoring must leave them as they are.

The hashes were recorded from the code before the stage refactoring (issue 19). fp32 makes
the encoder's arithmetic the same on every machine (bf16 encodings may differ near a
binarizer's zero). Two crops, two tile sizes (one tile; four tiles side by side), depths 1,
3 and 6 as cuts of one encoding, every entropy coder (the adaptive one, coder id 2, since
session 11: its pins were recorded when it was added). Re-recorded when the shipped network
changed (session 14: model 96b4d338f4b84447, width 0.375, its tables refitted; session 16: model
ef78a35a81cc7fa3, its decoder trained on; session 21: model 9a50ea054365ccb0, its decoder trained
further), with the code unchanged. Exact decoding (session 18,
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
    ("kodim05_crop192.png", 0, "raw"): {1: "6d86ac84eac4b5da", 3: "c17a1e2f9a2f8a39", 6: "dd60a736705eb011"},
    ("kodim23_crop192.png", 0, "raw"): {1: "e46ad2e055345997", 3: "22624fb6027bc708", 6: "6761e2745b9a6416"},
    ("kodim05_crop192.png", 96, "raw"): {1: "2df38f7afbfa4f80", 3: "5280a3c7d40b574a", 6: "737d6af224d32bd7"},
    ("kodim23_crop192.png", 96, "raw"): {1: "ddd93fb97eacf041", 3: "4d13fcd42d84a138", 6: "c7ddd9f688c3b1af"},
    ("kodim05_crop192.png", 0, "context"): {1: "90b5f3a02a3ef8b4", 3: "9bbfb6af387b989f", 6: "461dc5ab3e4c9cb8"},
    ("kodim23_crop192.png", 0, "context"): {1: "756bec4a033fdf0c", 3: "98223ff0e715e52d", 6: "8371f9284ab23c11"},
    ("kodim05_crop192.png", 96, "context"): {1: "a089b23cfc2db52a", 3: "b3c5bdc226487cfe", 6: "ebdc5406e2f5282d"},
    ("kodim23_crop192.png", 96, "context"): {1: "8f49a4a537758f5c", 3: "4130744fd557df3b", 6: "65d73e5d24ba1003"},
    ("kodim05_crop192.png", 0, "adaptive"): {1: "39d2af803e5f5d02", 3: "d022bf2b5044d67e", 6: "7ed953554e8cd692"},
    ("kodim23_crop192.png", 0, "adaptive"): {1: "1248e28d47ce3656", 3: "d7ff8f38056c2c66", 6: "2bb07fd4fcd2db84"},
    ("kodim05_crop192.png", 96, "adaptive"): {1: "bbd2c2a4e6ac4644", 3: "5f6b614743ea5935", 6: "0343ad0a8338d248"},
    ("kodim23_crop192.png", 96, "adaptive"): {1: "dd089ab5ba16c8c6", 3: "4dd939025c1dacb7", 6: "d3f455704ca62608"},
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
    assert (by_size.iterations, by_size.bytes, _digest(by_size.blob)) == (2, [284, 448], "bbafc19f8198b5cf")
    assert (by_quality.iterations, _digest(by_quality.blob)) == (4, "670b0155459ccd0e")
    assert _digest(codec.decode(by_size.blob).tobytes()) == "6db12823ece62704"
    assert _digest(Codec.load(default_weights, precision="bf16").decode(by_size.blob).tobytes()) == "6db12823ece62704"


def test_the_exact_decoder_in_the_encoders_loop_makes_its_own_streams(default_weights):
    # codes near a binarizer's zero go the other way by depth 6 (from depth 3 with models before
    # 9a50ea054365ccb0); the first iteration's are the same
    image, _ = read_image(DATA / "kodim05_crop192.png")
    codec = Codec.load(default_weights, precision="fp32", coder="context", tile_size=96, decoding="exact-loop")
    blob = codec.encode(image, iterations=6, measure=False).blob
    got = {depth: _digest(bitstream.truncate(blob, depth)) for depth in (1, 3, 6)}
    assert got == {1: "a089b23cfc2db52a", 3: "b3c5bdc226487cfe", 6: "386f1b658651b05f"}
