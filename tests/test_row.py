"""The archive row: made from a read source and its encoding, to and from Arrow, cut to a depth."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from conftest import smooth_image
from rgbatch import bitstream
from rgbatch.codec import Codec
from rgbatch.ratecontrol import Target
from rgbatch.row import COLUMNS, SCHEMA, Row


@pytest.fixture(scope="module")
def encoded(tiny_weights):
    codec = Codec.load(tiny_weights, device="cpu", tile_size=32, coder="raw")
    image = smooth_image(np.random.default_rng(3), 40, 48)
    return codec, codec.encode(image, 4, measure=True)


def test_an_ok_row_is_the_read_row_and_its_encoding(encoded):
    codec, enc = encoded
    read = Row("a.png", "/src/a.png", source_hash="h", source_bytes=9, width=48, height=40, mode="RGB",
               read_seconds=0.5)
    row = read.from_encoded(enc, codec.model_id, codec.tile_size, codec.coder.name, 1.5)
    assert (row.status, row.error, row.iterations, row.blob, row.bytes) == ("ok", None, 4, enc.blob, enc.bytes)
    assert row.bpp == enc.bpp and row.msssim == enc.msssim and row.read_seconds == 0.5
    assert row.problem() is None
    failed = read.failed("encoding failed: boom")
    assert (failed.status, failed.error, failed.source_hash, failed.width, failed.blob) == (
        "error", "encoding failed: boom", "h", 48, None)


def test_rows_round_trip_through_arrow(encoded):
    codec, enc = encoded
    row = Row("a.png", "/src/a.png").from_encoded(enc, codec.model_id, 32, "raw", 0.1)
    table = Row.to_arrow([row, Row("b.png", "/src/b.png").failed("empty file (0 bytes)")])
    assert table.schema == SCHEMA and table.column_names == COLUMNS
    assert Row.from_arrow(table) == [row, Row("b.png", "/src/b.png", status="error", error="empty file (0 bytes)")]
    assert Row.from_dict(row.to_dict()) == row
    with pytest.raises(TypeError):
        Row.from_dict({"path": "a.png", "colour": "red"})


def test_cut_and_keep_are_the_codes_modules(encoded):
    codec, enc = encoded
    row = Row("a.png").from_encoded(enc, codec.model_id, 32, "raw", 0.1, '{"iterations":4}')
    assert row.options == '{"iterations":4}'
    for depth in (1, 2, 3):
        cut, want = row.cut(depth), enc.cut(depth)
        assert (cut.blob, cut.iterations, cut.bytes, cut.bpp, cut.msssim, cut.psnr) == (
            want.blob, depth, want.bytes, want.bpp, want.msssim, want.psnr)
        assert bitstream.read_header(cut.blob).iterations == depth and cut.problem() is None
        assert cut.options is None  # the options made a deeper blob: no copy may take it for theirs
    assert row.cut(4) is row and row.cut(9) is row
    q = enc.msssim[1]
    for target in (Target(msssim=q), Target(max_bytes=enc.bytes[2]), Target(bpp=enc.bpp[0])):
        assert row.keep(target=target) == enc.choose_depth(target)
    last = Target(msssim=enc.msssim[-1])
    assert row.keep(2, last) == min(2, enc.choose_depth(last)) and row.keep(9) == 4 and row.keep() == 4
    unmeasured = Row("b.png", blob=enc.blob, width=48, height=40, iterations=4, bytes=enc.bytes, status="ok")
    assert unmeasured.cut(2).msssim == [] and unmeasured.keep(target=Target(max_bytes=enc.bytes[1])) == 2


def test_a_row_records_its_scale_and_partial_last_chunk_and_a_cut_below_drops_the_chunk(default_weights):
    from conftest import DATA
    from rgbatch.imageio import read_image

    codec = Codec.load(default_weights, precision="fp32", tile_size=128)
    image = read_image(DATA / "kodim23_crop192.png")[0]
    enc = codec.encode(image, 16, target=Target(msssim=0.94), partial=True)  # 48 steps of 4 (models ef78a35a81cc7fa3, 9a50ea054365ccb0, eda0b20c4529a293)
    row = Row("a.png").from_encoded(enc, codec.model_id, 128, codec.coder.name, 0.1)
    assert (row.scale, row.last_steps, row.iterations) == (1.0, 48, 4)
    assert row.cut(3).last_steps == 0 and row.cut(3).scale == 1.0
    small = codec.encode(image, 2, resample="0.75")
    assert Row("b.png").from_encoded(small, codec.model_id, 128, codec.coder.name, 0.1).scale == 0.75
    # a row of a part written before those columns: read from its blob's header
    old = replace(row, scale=None, last_steps=None)
    assert old.with_coding() == row and old.cut(3).with_coding() == row.cut(3)
    assert replace(old, status="error").with_coding().scale is None  # error rows and damaged blobs: unknown
    assert replace(old, blob=b"garbage").with_coding().last_steps is None


def test_a_row_says_what_is_damaged_in_the_columns_read():
    row = Row("a.png", model_id="m", blob=b"x", width=4, height=2, iterations=2, bytes=[1, 2], msssim=[0.5],
              status="ok")
    assert row.problem() == "damaged row: msssim does not hold one value per stored depth (2)"
    assert row.problem(["path", "width", "height", "iterations", "bytes"]) is None
    assert Row(None, status="ok").problem() == "damaged row: no path"
    assert Row("a.png", status="ok", width=0).problem(["width"]) == "damaged row: width is 0"
    assert Row("a.png", status="error").problem() is None  # an error row says what it is
    # metadata no source gives: more than is kept of a source's, a profile not of RGB data (a crafted
    # part's 64 MB profile was restored into a PNG and verified until session 63)
    from rgbatch.imageio import MAX_METADATA_BYTES

    whole = replace(row, msssim=[0.5, 0.6])
    rgb = bytes(16) + b"RGB " + bytes(108)
    assert replace(whole, icc_profile=rgb, exif=b"Exif\0\0" + bytes(10)).problem() is None
    assert replace(whole, exif=bytes(MAX_METADATA_BYTES + 1)).problem() == (
        f"damaged row: its exif holds {MAX_METADATA_BYTES + 1:,} bytes, over the {MAX_METADATA_BYTES:,} kept of a "
        f"source's")
    assert replace(whole, icc_profile=bytes(16) + b"CMYK" + bytes(108)).problem() == (
        "damaged row: its icc_profile is not a profile of RGB data")
    assert replace(whole, icc_profile=b"x").problem(["path", "width"]) is None  # not read
    assert replace(whole, xmp=b"\xff<x/>").problem() == "damaged row: its xmp is not UTF-8"
    assert replace(whole, xmp=bytes(MAX_METADATA_BYTES + 1)).problem().startswith("damaged row: its xmp holds")
    assert replace(whole, notes=b'{"text":{"k":"v"},"dpi":[300,300]}').problem() is None  # session 64's notes
    assert replace(whole, notes=b'{"dpi":"300"}').problem() == "damaged row: its notes' dpi is not two positive numbers"
    assert replace(whole, notes=b"<x/>").problem().startswith("damaged row: its notes are not UTF-8 JSON")
