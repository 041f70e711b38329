"""An archive written by an earlier rgbatch (tests/archive_v1, made by main 30ec257 before the
`Row` / `Archive` refactoring) still reads, reports, restores, verifies and compacts, and the
code of today writes the same rows for its images with the model that made it (the shipped
default until session 14, packaged beside today's: weights.EARLIER_MODELS). Restoring and
verifying it name no weights: its rows decode with that packaged model."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rgbatch.archive import coding_text, compact, report, restore, verify
from rgbatch.bitstream import BitstreamError
from rgbatch.codec import Codec
from rgbatch.files import decode_file
from rgbatch.manifest import Archive
from rgbatch.pipeline import CompressOptions, EncodeWorker
from rgbatch.ratecontrol import Target
from rgbatch.sources import Source, read_source
from rgbatch.weights import DEFAULT_WEIGHTS, EARLIER_MODELS, load_weights, shipped_weights

V1 = Path(__file__).parent / "archive_v1"
V1_MODEL = "89626a567b299efc"  # the shipped default when the archive was written


def test_the_old_archive_reads_as_rows():
    archive = Archive(V1 / "archive")
    assert len(archive.parts) == 2 and archive.total_rows() == 3
    rows = {r.path: r for r in archive.rows()}
    assert sorted(rows) == ["a.png", "sub/b.png", "text.jpg"]
    a, b, text = rows["a.png"], rows["sub/b.png"], rows["text.jpg"]
    assert (a.status, a.iterations, a.coder, a.tile_size, len(a.msssim)) == ("ok", 3, "context", 32, 3)
    assert (b.status, b.iterations, b.coder, b.msssim) == ("ok", 2, "raw", [])
    assert text.status == "error" and "not an image file" in text.error and text.blob is None
    assert all(r.problem() is None for r in rows.values())
    assert set(archive.done()["path"].to_pylist()) == {"a.png", "sub/b.png"}


def test_todays_code_writes_the_same_rows():
    rows = {r.path: r for r in Archive(V1 / "archive").rows()}
    # the old archive's default coder was `context` (coder id 1); today's default is `mixing2`; its
    # streams are format v1: without post-filter records; its encoder's loop was float (since
    # session 58 an image under 4,096 pixels, as these, runs the exact decoder in it by default)
    for path, options in (("a.png", CompressOptions(iterations=3, tile_size=32, precision="fp32", coder="context",
                                                    post_filter=False, decoding="float")),
                          ("sub/b.png", CompressOptions(iterations=2, tile_size=0, precision="fp32", measure=False,
                                                        coder="raw", post_filter=False, decoding="float"))):
        read, image = read_source(Source(str(V1 / "src" / path), path), None, 10**8)
        [row] = EncodeWorker(shipped_weights(V1_MODEL), "cpu", options).encode([read], image)
        old = rows[path]
        for column in ("path", "source_hash", "source_bytes", "width", "height", "mode", "model_id", "tile_size",
                       "iterations", "coder", "blob", "bytes", "bpp", "status", "error"):
            assert getattr(row, column) == getattr(old, column), column
        assert row.msssim == pytest.approx(old.msssim, abs=1e-6) and row.psnr == pytest.approx(old.psnr, abs=1e-4)
    read, _ = read_source(Source(str(V1 / "src/text.jpg"), "text.jpg"), None, 10**8)
    assert (read.status, read.error, read.source_hash) == ("error", rows["text.jpg"].error, rows["text.jpg"].source_hash)


def test_report_restore_verify_compact_the_old_archive(default_weights, tmp_path):
    assert Codec.load().model_id != V1_MODEL  # the archive's model is not today's default
    summary = report(V1 / "archive", depth=1, min_msssim=0.5)["summary"]
    assert (summary["ok"], summary["failed"], summary["at_msssim"]["unmeasured"]) == (2, 1, 1)
    assert summary["at_depth"]["bytes"] == 64 + 72
    # written before the scale and last_steps columns: read from the blobs' headers
    # its two images coded by two coders, which the report names (since session 61)
    assert summary["coding"] == {"coder": {"context": 1, "raw": 1}, "scale": {"1": 2}, "partial_last_chunk": 0,
                                 "unknown": 0}
    assert coding_text(summary["coding"]).startswith("coders context: 1, raw: 1; all at scale 1")

    restored = restore(V1 / "archive", tmp_path / "out", iterations=2)
    assert restored.failures == [] and sorted(w["path"] for w in restored.written) == ["a.png", "sub/b.png"]
    codec = Codec.load(shipped_weights(V1_MODEL))
    a = next(Archive(V1 / "archive").rows({"a.png"}))
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out/a.png")), codec.decode(a.blob, 2))

    verified = verify(V1 / "archive", sources=V1 / "src")
    assert [p for p, _ in verified.problems] == ["text.jpg"] and verified.decoded == 2
    assert {m["path"] for m in verified.remeasured} == {"a.png", "sub/b.png"}

    work = tmp_path / "copy"
    shutil.copytree(V1 / "archive", work)
    done = compact(work, target=Target(max_bytes=100))
    assert (done.rows, done.cut, done.problems) == (3, 2, [])
    rows = {r.path: r for r in Archive(work).rows()}
    assert rows["a.png"].iterations == 2 and rows["a.png"].bytes == [64, 88] and len(rows["a.png"].blob) == 88
    assert rows["sub/b.png"].iterations == 1 and rows["sub/b.png"].msssim == []
    assert [(r.scale, r.last_steps) for r in rows.values() if r.ok] == [(1.0, 0), (1.0, 0)]  # compacted: recorded


def test_a_stream_of_an_earlier_model_decodes_with_its_packaged_weights(tmp_path):
    a = next(Archive(V1 / "archive").rows({"a.png"}))
    stream = tmp_path / "a.rgb"
    stream.write_bytes(a.blob)
    decode_file(stream, tmp_path / "a.png", 2)  # the shipped default loaded: the stream's own model decodes
    expected = Codec.load(shipped_weights(V1_MODEL)).decode(a.blob, 2)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "a.png")), expected)
    named = Codec.load(DEFAULT_WEIGHTS)  # weights named by the caller are used as they are
    with pytest.raises(BitstreamError, match=f"coded by model {V1_MODEL}"):
        decode_file(stream, tmp_path / "b.png", 2, named)
    assert not (tmp_path / "b.png").exists()


@pytest.mark.parametrize("mid", EARLIER_MODELS)
def test_every_earlier_default_is_packaged_under_its_own_id(mid):
    # an archive written before an upgrade restores only if its model's file ships beside today's
    # (each default since session 14: 96b4d338f4b84447 and ef78a35a81cc7fa3 were left out when
    # they were replaced, until session 21)
    _, got, _, _ = load_weights(shipped_weights(mid))
    assert got == mid and got != load_weights()[1]
