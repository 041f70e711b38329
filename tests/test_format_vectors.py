"""docs/FORMAT.md's test vectors: the streams printed there are what rgbatch writes, their fields
are where the page's tables say, and they decode to the pixels it states.

The vectors are of the shipped model (its model id is in them): re-recorded when it changes,
as tests/test_stream_pin.py's pins are.
"""

import hashlib
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from rgbatch import bitstream
from rgbatch.cli import app
from rgbatch.codec import Codec
from rgbatch.imageio import EXIF_HEADER, read_image

from conftest import DATA

FORMAT = (Path(__file__).parents[1] / "docs" / "FORMAT.md").read_text()
SECTION = FORMAT.split("## Test vectors\n", 1)[1].split("\n## ", 1)[0]


def _vector(name: str) -> bytes:
    block = re.search(rf"```text vector-{name}\n(.*?)```", SECTION, re.S).group(1)
    return bytes.fromhex(block)


def _pixel_digests() -> tuple[str, str]:
    depth1, depth2 = re.findall(r"`([0-9a-f]{64})`", SECTION)
    return depth1, depth2


@pytest.fixture(scope="module")
def corner():
    image, _ = read_image(DATA / "kodim05_crop192.png")
    return np.ascontiguousarray(image[:16, :16])


def test_the_fields_are_where_the_tables_say():
    a = _vector("a")
    assert len(a) == 80 and a[:4] == b"RGBC" and tuple(a[4:8]) == (1, 0, 2, 32)
    assert a[8:16].hex() == "944a14d2eda4db38"
    assert struct.unpack_from("<IIHBB", a, 16) == (16, 16, 0, 0, 0)
    (n1, crc1), (n2, crc2) = struct.iter_unpack("<II", a[28:44])
    assert (n1, crc1, n2, crc2) == (16, 0xa1a816d4, 16, 0x9688a591)
    assert struct.unpack_from("<I", a, 44)[0] == zlib.crc32(a[:44]) == 0xab318060
    assert zlib.crc32(a[48:64]) == crc1 and zlib.crc32(a[64:80]) == crc2
    assert a[48:52].hex() == "ffffff70"  # bit planes 0-5: 1111, plane 6: 0111, plane 7: 0000
    header = bitstream.read_header(a)
    assert (header.version, header.coder_id, header.iterations, header.chunk_lengths) == (1, 0, 2, (16, 16))

    b, c = _vector("b"), _vector("c")
    assert len(b) == 108 and tuple(b[4:8]) == (1, 4, 2, 32)
    assert bitstream.read_header(b).chunk_lengths == (8, 4)
    assert b[60:64] == b"RGBM" and struct.unpack_from("<II", b, 64) == (0, 32)
    assert b[72:78] == EXIF_HEADER and struct.unpack_from("<I", b, 104)[0] == zlib.crc32(b[60:104]) == 0xcedd5d54
    metadata = bitstream.read_metadata(b)
    assert metadata.icc_profile is None and metadata.exif == b[72:104]
    assert len(c) == 62 and tuple(c[4:8]) == (2, 4, 2, 32)
    assert bitstream.read_header(c).chunk_lengths == (9, 5)
    assert c[48:] == b"\x00" + b[48:56] + b"\x00" + b[56:60]  # each chunk: its record `00`, then stream B's


def test_the_exif_block_of_stream_b_says_artist_rgb():
    exif = Image.Exif()
    exif.load(bitstream.read_metadata(_vector("b")).exif)
    assert dict(exif) == {0x013B: "rgb"}


def test_every_vector_decodes_to_the_stated_pixels(default_weights):
    codec = Codec.load(default_weights)
    for name in "abc":
        for depth, digest in zip((1, 2), _pixel_digests()):
            pixels = codec.decode(_vector(name), iterations=depth)
            assert pixels.shape == (16, 16, 3)
            assert hashlib.sha256(pixels.tobytes()).hexdigest() == digest, (name, depth)
    first = {depth: tuple(codec.decode(_vector("a"), iterations=depth)[0, 0]) for depth in (1, 2)}
    assert first == {1: (113, 109, 98), 2: (99, 98, 81)}


def test_rgbatch_writes_these_streams(default_weights, corner, tmp_path):
    assert tuple(corner[0, 0]) == (119, 127, 127)
    raw = Codec.load(default_weights, precision="fp32", coder="raw", post_filter=False)
    assert raw.encode(corner, iterations=2, measure=False).blob == _vector("a")
    mixing2 = Codec.load(default_weights, precision="fp32", coder="mixing2", post_filter_min_pixels=0)
    assert mixing2.encode(corner, iterations=2, measure=False).blob == _vector("c")
    exif = Image.Exif()
    exif[0x013B] = "rgb"
    Image.fromarray(corner).save(tmp_path / "corner.png", exif=exif.tobytes())
    done = CliRunner().invoke(app, ["encode", str(tmp_path / "corner.png"), "--depth", "2", "--precision", "fp32",
                                    "--out", str(tmp_path / "b.rgb"), "--weights", str(default_weights)])
    assert done.exit_code == 0, done.output
    assert (tmp_path / "b.rgb").read_bytes() == _vector("b")
