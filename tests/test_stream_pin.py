"""Pins the bytes of the shipped model's streams: a refactoring must leave them as they are.

The hashes were recorded from the code before the stage refactoring (issue 19). fp32 makes
the encoder's arithmetic the same on every machine (bf16 encodings may differ near a
binarizer's zero). Two crops, two tile sizes (one tile; four tiles side by side), depths 1,
3 and 6 as cuts of one encoding, every entropy coder (the adaptive one, coder id 2, since
session 11, the mixing one, coder id 3, since session 26, and coder id 4, since session 27: their
pins were recorded when they were added). Re-recorded when the shipped network
changed (session 14: model 96b4d338f4b84447, width 0.375, its tables refitted; session 16: model
ef78a35a81cc7fa3, its decoder trained on; session 21: model 9a50ea054365ccb0, its decoder trained
further; session 23: model eda0b20c4529a293, its decoder trained further and its tables refitted
with same-step contexts; session 24: model 023aa50247198e29, its decoder trained further; session 28: model
3463638676cb6169, its decoder trained further; session 37: model 3262af5edaeb715a, the same
network with its tables refitted on 752 crops of 512 px), with the code unchanged (the format v2
pins and the exact-loop ones too). Exact decoding (session 18,
rgbatch.exact) leaves the encoder's loop in float by default, so these bytes; the encoder with
the exact decoder in its loop ("exact-loop") has its own pins (the last test).

Since session 30 new streams are format v2, with a colour post-filter record at the head of each
chunk (rgbatch.postfilter): PINNED holds the format v1 streams, which `post_filter=False` still
writes byte for byte, and PINNED_V2 the format v2 ones, recorded when the format was added and
again in session 31, when the encoder began to price a filter's bits by the tile's last iteration
(postfilter.slope: other filters on and off, the same format).
"""

import hashlib

import pytest

from rgbatch import bitstream
from rgbatch.codec import Codec
from rgbatch.imageio import read_image
from rgbatch.ratecontrol import Target

from conftest import DATA

PINNED = {  # (crop, tile size, coder): {depth: sha256 of the stream cut there, first 16 hex digits}
    ("kodim05_crop192.png", 0, "raw"): {1: "e842ee420d83f5a3", 3: "9652c339ab9d6ff2", 6: "a8cd9ea9b7c1781d"},
    ("kodim23_crop192.png", 0, "raw"): {1: "244a9fd9169e2859", 3: "8f68a2ee00116580", 6: "6e34327de55283b5"},
    ("kodim05_crop192.png", 96, "raw"): {1: "8d4afe45c19b5468", 3: "60184910b1a2db7f", 6: "da7c652254864b7f"},
    ("kodim23_crop192.png", 96, "raw"): {1: "05d530b3187ba700", 3: "534c5ed87c413749", 6: "04ecece618d37662"},
    ("kodim05_crop192.png", 0, "context"): {1: "8bcf5e2a7ba05ea1", 3: "f6e389f89585d63f", 6: "a11b09d1e96321a6"},
    ("kodim23_crop192.png", 0, "context"): {1: "9de10e7aae1fa412", 3: "1e9b5be349b32fe8", 6: "fd9c3be9858abaf1"},
    ("kodim05_crop192.png", 96, "context"): {1: "c15f27611f268dcb", 3: "f37fdb525a15986c", 6: "3cd815745916aeb2"},
    ("kodim23_crop192.png", 96, "context"): {1: "ee8a44ed0ade1e5d", 3: "275f563f4399fe9f", 6: "9a90d2a2442d47ae"},
    ("kodim05_crop192.png", 0, "adaptive"): {1: "5b8ca5737f570bd3", 3: "0bfedf199eaa73be", 6: "0af640652746fbcf"},
    ("kodim23_crop192.png", 0, "adaptive"): {1: "4d1dbe2048b5d939", 3: "41441a2cc81bd024", 6: "85616a1c5489c662"},
    ("kodim05_crop192.png", 96, "adaptive"): {1: "1cfefc6c6f04468e", 3: "213dc3f060b33097", 6: "ad9c8a3db004566b"},
    ("kodim23_crop192.png", 96, "adaptive"): {1: "e1011c96b9e49139", 3: "1dc98504dd0b042e", 6: "cd8f8d21d5cef056"},
    ("kodim05_crop192.png", 0, "mixing"): {1: "58189b19031840f3", 3: "bccef162916cb634", 6: "39426cc979fe095f"},
    ("kodim23_crop192.png", 0, "mixing"): {1: "c77f85696c68cf74", 3: "1fbfd85ef22c8510", 6: "332ebfd4f5f88fea"},
    ("kodim05_crop192.png", 96, "mixing"): {1: "01ce919133df90d4", 3: "41764b24caefc718", 6: "fcb11482ffe8a474"},
    ("kodim23_crop192.png", 96, "mixing"): {1: "8443cbd3a62c50b7", 3: "af61454c1e0a4611", 6: "f618426ad825a42b"},
    ("kodim05_crop192.png", 0, "mixing2"): {1: "ba6a84a61370bfb8", 3: "a9974fa31831e5c3", 6: "eb4c5d2ee9b0f6d6"},
    ("kodim23_crop192.png", 0, "mixing2"): {1: "7a6fd271d1fbd52b", 3: "677e574180701f1a", 6: "6178d2432739bd60"},
    ("kodim05_crop192.png", 96, "mixing2"): {1: "b380d1a7be9be7f2", 3: "d56a81301f7d99a9", 6: "3eabdbfb95f6da9f"},
    ("kodim23_crop192.png", 96, "mixing2"): {1: "381ab2a9db43910c", 3: "ad377888ea0a2c49", 6: "7bba4c484fc701f4"},
}

PINNED_V2 = {  # format v2 (session 30; session 31's filter price), as PINNED
    ("kodim05_crop192.png", 0, "raw"): {1: "dc496375c00a668d", 3: "277cd43f37f8bec1", 6: "20ccbdbf3d5f56d8"},
    ("kodim23_crop192.png", 0, "raw"): {1: "04f704c13bb75465", 3: "0edbc61e3fcba180", 6: "551c29f8a1fab784"},
    ("kodim05_crop192.png", 96, "raw"): {1: "55558635e7f91295", 3: "8edcaaddbab1acee", 6: "753d74ab73056812"},
    ("kodim23_crop192.png", 96, "raw"): {1: "760d5cc037811685", 3: "cc82c70cadb94b06", 6: "4b4c3e2693cfd684"},
    ("kodim05_crop192.png", 0, "context"): {1: "486975f9f2f3a905", 3: "2d3f45605d4a0bff", 6: "6ce83211bd37ab26"},
    ("kodim23_crop192.png", 0, "context"): {1: "d2b49dcc66a26661", 3: "512537a0e116b436", 6: "329eae7647187b0e"},
    ("kodim05_crop192.png", 96, "context"): {1: "2627326fe40ee961", 3: "6fc776b48afc0e57", 6: "8d1472266a98be4b"},
    ("kodim23_crop192.png", 96, "context"): {1: "e0c0b3b7ede2c60c", 3: "9bf92431fbdce1db", 6: "4e8cf6a3296810c1"},
    ("kodim05_crop192.png", 0, "adaptive"): {1: "dc1d027c1c954694", 3: "90470eac0c011cad", 6: "9e53db3457403114"},
    ("kodim23_crop192.png", 0, "adaptive"): {1: "c184567e10cebf04", 3: "f807e11cde7335ff", 6: "4de23633ae5f0bcf"},
    ("kodim05_crop192.png", 96, "adaptive"): {1: "6f44c98bcc5df738", 3: "6f0a1e4636115d61", 6: "77c30749dd7af951"},
    ("kodim23_crop192.png", 96, "adaptive"): {1: "cfca19f7f5d491fb", 3: "b7d4c63cb2386674", 6: "1539e0a5ea032cf6"},
    ("kodim05_crop192.png", 0, "mixing"): {1: "7307c273a7260c5e", 3: "d9c8cbd044a9f460", 6: "aa70c366cb0492de"},
    ("kodim23_crop192.png", 0, "mixing"): {1: "7ff032f7cf6a6313", 3: "eaf30aec84b272cd", 6: "323107b1137f98f6"},
    ("kodim05_crop192.png", 96, "mixing"): {1: "4a60170446c7e748", 3: "56b22af594b5e328", 6: "735d42ae04f43793"},
    ("kodim23_crop192.png", 96, "mixing"): {1: "c640b8f42c0bda18", 3: "233cb7e1a3ad80ce", 6: "f022923974536e81"},
    ("kodim05_crop192.png", 0, "mixing2"): {1: "f527d354cd16c661", 3: "36a70e8d7636b330", 6: "5545cf2d59392652"},
    ("kodim23_crop192.png", 0, "mixing2"): {1: "932891e6daa47bb3", 3: "aaf3c8cfcddac715", 6: "4b699fbe3a6c1f5a"},
    ("kodim05_crop192.png", 96, "mixing2"): {1: "1c1800a389b2d38f", 3: "3682cadb5f78fd08", 6: "d93c84b9e4101161"},
    ("kodim23_crop192.png", 96, "mixing2"): {1: "5cd3732abed62382", 3: "c1834fe157a49648", 6: "9aa422a5971da878"},
}
# a size and a quality target (context coder, 96 px tiles), and the pixels decoded at the size target
V2_TARGETS = {"size": (2, [285, 450], "99c7113d72ca3086"), "quality": (4, "30a0680c00bdd338"), "pixels": "57654671de8c824f"}
# "exact-loop", context coder, 96 px tiles
V2_EXACT_LOOP = {1: "2627326fe40ee961", 3: "776ecef985071854", 6: "216f80614b847b05"}

def _digest(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()[:16]


@pytest.fixture(scope="module")
def codecs(default_weights):
    return {(coder, tile, post_filter): Codec.load(default_weights, precision="fp32", coder=coder, tile_size=tile,
                                                   post_filter=post_filter, post_filter_min_pixels=0)
            for coder in ("raw", "context", "adaptive", "mixing", "mixing2") for tile in (0, 96)
            for post_filter in (False, True)}


@pytest.mark.parametrize("name", ["kodim05_crop192.png", "kodim23_crop192.png"])
@pytest.mark.parametrize("coder", ["raw", "context", "adaptive", "mixing", "mixing2"])
@pytest.mark.parametrize("tile", [0, 96])
@pytest.mark.parametrize("version", [1, 2])
def test_streams_of_the_shipped_model_keep_their_bytes(codecs, name, coder, tile, version):
    image, _ = read_image(DATA / name)
    blob = codecs[coder, tile, version == 2].encode(image, iterations=6, measure=False).blob
    assert bitstream.read_header(blob).version == version
    got = {depth: _digest(bitstream.truncate(blob, depth)) for depth in (1, 3, 6)}
    assert got == (PINNED if version == 1 else PINNED_V2).get((name, tile, coder)), got


def test_target_encodings_and_decoding_keep_their_bytes(codecs, default_weights):
    # the encoder that stops at a target codes chunk by chunk (a size target) or measures as it
    # goes (a quality target); the decoder's pixels are pinned too: exact decoding (rgbatch.exact,
    # the default since session 18) gives them on every machine, in either encoder precision
    image, _ = read_image(DATA / "kodim05_crop192.png")
    codec = codecs["context", 96, False]  # format v1
    by_size = codec.encode(image, iterations=6, target=Target(max_bytes=600))
    by_quality = codec.encode(image, iterations=6, target=Target(msssim=0.9))
    assert (by_size.iterations, by_size.bytes, _digest(by_size.blob)) == (2, [284, 448], "b625372f9623d6f8")
    assert (by_quality.iterations, _digest(by_quality.blob)) == (4, "92ab3a2688761a42")
    assert _digest(codec.decode(by_size.blob).tobytes()) == "57654671de8c824f"
    assert _digest(Codec.load(default_weights, precision="bf16").decode(by_size.blob).tobytes()) == "57654671de8c824f"
    codec = codecs["context", 96, True]  # format v2: the post-filters in the stream and the decoded pixels
    by_size = codec.encode(image, iterations=6, target=Target(max_bytes=600))
    by_quality = codec.encode(image, iterations=6, target=Target(msssim=0.9))
    assert (by_size.iterations, by_size.bytes, _digest(by_size.blob)) == V2_TARGETS["size"]
    assert (by_quality.iterations, _digest(by_quality.blob)) == V2_TARGETS["quality"]
    assert _digest(codec.decode(by_size.blob).tobytes()) == V2_TARGETS["pixels"]
    assert _digest(Codec.load(default_weights, precision="bf16").decode(by_size.blob).tobytes()) == V2_TARGETS["pixels"]


def test_the_exact_decoder_in_the_encoders_loop_makes_its_own_streams(default_weights):
    # codes near a binarizer's zero may go the other way (by depth 6 with model 9a50ea054365ccb0,
    # from depth 3 before it and with 3463638676cb6169; with eda0b20c4529a293 and 023aa50247198e29
    # these six depths happened to agree)
    image, _ = read_image(DATA / "kodim05_crop192.png")
    codec = Codec.load(default_weights, precision="fp32", coder="context", tile_size=96, decoding="exact-loop",
                       post_filter=False)
    blob = codec.encode(image, iterations=6, measure=False).blob
    got = {depth: _digest(bitstream.truncate(blob, depth)) for depth in (1, 3, 6)}
    assert got == {1: "c15f27611f268dcb", 3: "838806c2fe629e57", 6: "5d979ca3db1582dd"}
    codec = Codec.load(default_weights, precision="fp32", coder="context", tile_size=96, decoding="exact-loop",
                       post_filter_min_pixels=0)
    blob = codec.encode(image, iterations=6, measure=False).blob
    got = {depth: _digest(bitstream.truncate(blob, depth)) for depth in (1, 3, 6)}
    assert got == V2_EXACT_LOOP, got
