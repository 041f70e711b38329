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
network with its tables refitted on 752 crops of 512 px; session 39: model d5d2f6edcbb8a36e, the same
network with its tables chosen from session 38's wider pool of features), with the code unchanged (the format v2
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
    ("kodim05_crop192.png", 0, "raw"): {1: "e2438375d3a5aed5", 3: "085f779da8bb7249", 6: "5e2e0d764fcbe85b"},
    ("kodim23_crop192.png", 0, "raw"): {1: "b73b799ec7502f1a", 3: "f1d9915b1cabb833", 6: "a660115d0b6f782a"},
    ("kodim05_crop192.png", 96, "raw"): {1: "2320884f083fe64c", 3: "11163a7cd559edf7", 6: "67d6c760b9f7ef5e"},
    ("kodim23_crop192.png", 96, "raw"): {1: "e551894ebb6f54b7", 3: "c1b3e113bd14b8fc", 6: "ca31d9474bfc11a0"},
    ("kodim05_crop192.png", 0, "context"): {1: "36401a5ed6d56d99", 3: "c79aac29edd93a19", 6: "ff5a7654b4038bf4"},
    ("kodim23_crop192.png", 0, "context"): {1: "51b347e01a1876e6", 3: "389640ac2e1656d1", 6: "e66d2b31d06c8533"},
    ("kodim05_crop192.png", 96, "context"): {1: "950af6c19a8385c7", 3: "af827d01e964fd33", 6: "33f2446594628d8f"},
    ("kodim23_crop192.png", 96, "context"): {1: "59701dde50dab9f5", 3: "d210f399d7dee5b2", 6: "02e74aabb396ee6b"},
    ("kodim05_crop192.png", 0, "adaptive"): {1: "7b2eb9e1c0dc7f30", 3: "2b4b71158a027765", 6: "c1b05fbb948b323f"},
    ("kodim23_crop192.png", 0, "adaptive"): {1: "b32c89fa8f37dc65", 3: "d0e5833a22a112d2", 6: "c381934f7e9508ec"},
    ("kodim05_crop192.png", 96, "adaptive"): {1: "52c1bb7df7863553", 3: "45b99c2d355272cb", 6: "09571d82d0fc2904"},
    ("kodim23_crop192.png", 96, "adaptive"): {1: "5a1bcd329e3732ff", 3: "77666187add095b2", 6: "0bb26ee2cb4b835c"},
    ("kodim05_crop192.png", 0, "mixing"): {1: "33fdee021c5b4417", 3: "e5dad0c72f250919", 6: "7e379d3318e2b390"},
    ("kodim23_crop192.png", 0, "mixing"): {1: "b53c75e85e59fbe3", 3: "1414eb9e88084a9d", 6: "ef52bba913b51af6"},
    ("kodim05_crop192.png", 96, "mixing"): {1: "7d9d02d1f0f83795", 3: "46b9007a633073b1", 6: "a7b053285b035d95"},
    ("kodim23_crop192.png", 96, "mixing"): {1: "3369f71a19fcbc94", 3: "b4a4e701a17588d5", 6: "0506be3adb6d7990"},
    ("kodim05_crop192.png", 0, "mixing2"): {1: "ced45edbc66e3874", 3: "bc9d349ee9733af3", 6: "6e3b95a997320ec9"},
    ("kodim23_crop192.png", 0, "mixing2"): {1: "8ffc173121966eb4", 3: "45a08de73e105640", 6: "8a4d1dca9964c51a"},
    ("kodim05_crop192.png", 96, "mixing2"): {1: "4a6afceb0108843e", 3: "4f0b6b123c899b8c", 6: "f8a7a260884a79be"},
    ("kodim23_crop192.png", 96, "mixing2"): {1: "ffc8a219ca51aeb0", 3: "94be72d20faeb010", 6: "2e4e59b071f747e1"},
}

PINNED_V2 = {  # format v2 (session 30; session 31's filter price), as PINNED
    ("kodim05_crop192.png", 0, "raw"): {1: "79605b4b5ac7bb39", 3: "b51a4d6384c18897", 6: "1f447dba9e1df9ac"},
    ("kodim23_crop192.png", 0, "raw"): {1: "b7f0c70f9b326a68", 3: "e4c526b057346a1b", 6: "061d762e96299ece"},
    ("kodim05_crop192.png", 96, "raw"): {1: "f4b6d9411b2af976", 3: "f3a9138c3da612b3", 6: "aa80e1beab6eadb7"},
    ("kodim23_crop192.png", 96, "raw"): {1: "ea631b1c24fb6106", 3: "a94d060ecb56a135", 6: "907f556d51a8c5fa"},
    ("kodim05_crop192.png", 0, "context"): {1: "c8a288c93d2ff83e", 3: "01ab0dc231b80c7d", 6: "ce99cec711051a69"},
    ("kodim23_crop192.png", 0, "context"): {1: "b9badd056032c054", 3: "f2fc25b906ad8274", 6: "afe08c695fad2573"},
    ("kodim05_crop192.png", 96, "context"): {1: "9ca8fdc0aab3db29", 3: "4f8b76aae6c46db9", 6: "d633043fadf12a7d"},
    ("kodim23_crop192.png", 96, "context"): {1: "dc7327ff3605e08f", 3: "b91233cbd1fe3415", 6: "a7b8c576e9dab796"},
    ("kodim05_crop192.png", 0, "adaptive"): {1: "f74750ba320f6241", 3: "db9a86f5f5129fe8", 6: "9313e139379e5d9f"},
    ("kodim23_crop192.png", 0, "adaptive"): {1: "e26f941d4952e67e", 3: "0129ffdfdb1fc77a", 6: "a57e221897f97c92"},
    ("kodim05_crop192.png", 96, "adaptive"): {1: "85baadc4c2428ee2", 3: "29b5271625269bed", 6: "26637c8f8a6e4d2c"},
    ("kodim23_crop192.png", 96, "adaptive"): {1: "31eff97db35d97ef", 3: "5f3edbc079ee13b9", 6: "3c44869c5b48afc1"},
    ("kodim05_crop192.png", 0, "mixing"): {1: "eccf6c07feb26998", 3: "f3bd63142ed223ab", 6: "585667e537266848"},
    ("kodim23_crop192.png", 0, "mixing"): {1: "7915c7efe0adb2d8", 3: "747f07f865231517", 6: "c564dca1d6155ce3"},
    ("kodim05_crop192.png", 96, "mixing"): {1: "d6b45975186f7c04", 3: "1ddd612b4d88120f", 6: "dd474053638c1481"},
    ("kodim23_crop192.png", 96, "mixing"): {1: "96970e04353e555f", 3: "8b8c37b9bc9babcc", 6: "a4e0411fd613cac8"},
    ("kodim05_crop192.png", 0, "mixing2"): {1: "eb44d661eefc51ae", 3: "1c5008d24ce561b7", 6: "8984bd7cfb406dc3"},
    ("kodim23_crop192.png", 0, "mixing2"): {1: "49a73bd3db7af402", 3: "db3aef8bc5e2a0c5", 6: "42f1c88b25c467ad"},
    ("kodim05_crop192.png", 96, "mixing2"): {1: "ef558445c3e4c3cd", 3: "a9d408a0092025fd", 6: "622badd80f4f2de2"},
    ("kodim23_crop192.png", 96, "mixing2"): {1: "20250b1d2dc4e577", 3: "d43acc1216e52a34", 6: "df8a51c4707a27be"},
}
# a size and a quality target (context coder, 96 px tiles), and the pixels decoded at the size target
V2_TARGETS = {"size": (2, [289, 454], "c3613d6cfd19182e"), "quality": (4, "5d7d67e91b08f520"), "pixels": "57654671de8c824f"}
# "exact-loop", context coder, 96 px tiles
V2_EXACT_LOOP = {1: "9ca8fdc0aab3db29", 3: "76496da31db89540", 6: "0ca427cada348175"}

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
    assert (by_size.iterations, by_size.bytes, _digest(by_size.blob)) == (2, [288, 452], "603b163c97a0770c")
    assert (by_quality.iterations, _digest(by_quality.blob)) == (4, "1b734cc7cf495be3")
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
    assert got == {1: "950af6c19a8385c7", 3: "d1d0acd91732692b", 6: "385614907bb7e3ab"}
    codec = Codec.load(default_weights, precision="fp32", coder="context", tile_size=96, decoding="exact-loop",
                       post_filter_min_pixels=0)
    blob = codec.encode(image, iterations=6, measure=False).blob
    got = {depth: _digest(bitstream.truncate(blob, depth)) for depth in (1, 3, 6)}
    assert got == V2_EXACT_LOOP, got
