"""The archive commands end to end: compress (bad inputs included), report, restore, verify."""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import pickle
import signal
import struct
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from conftest import DATA, smooth_image
from rgbatch import storage
from rgbatch.cli import app
from rgbatch.codec import Codec
from rgbatch.manifest import SCHEMA, Archive, PartWriter
from rgbatch.model import CodecConfig, ResidualGRUCodec
from rgbatch.pipeline import CompressOptions, EncodeWorker
from rgbatch.ratecontrol import Target, choose_depth
from rgbatch.row import Row
from rgbatch.sources import expand_sources, read_source
from rgbatch.weights import save_weights

runner = CliRunner()
PATHS = ["a.png", "b.png", "sub/c.png"]


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def archive_images(folder, archive, weights, iterations=3, measure=True):
    """An archive written without Ray, by the same worker code the pipeline runs on actors, with
    the exact decoder in the encoder's loop: it records the quality `verify` re-measures, exactly."""
    _, found = expand_sources([str(folder)])
    options = CompressOptions(iterations=iterations, tile_size=32, batch_size=4, coder="raw", measure=measure,
                              decoding="exact-loop")
    worker = EncodeWorker(str(weights), "cpu", options)
    with PartWriter(archive, worker.model_id()) as writer:
        for source in found:
            info, image = read_source(source, None, 10**8)
            if image is None:  # an error row, as the pipeline writes it
                writer.add(info)
                continue
            for row in worker.encode([info], image):
                writer.add(row)


@pytest.fixture(scope="module")
def archive(tmp_path_factory, tiny_weights):
    root = tmp_path_factory.mktemp("archive")
    rng = np.random.default_rng(1)
    for i, path in enumerate(PATHS):
        (root / "src" / path).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(smooth_image(rng, 32 + 8 * i, 48)).save(root / "src" / path)
    archive_images(root / "src", root / "archive", tiny_weights)
    return root


def current(archive_dir) -> dict:
    return {r.path: r.to_dict() for r in Archive(archive_dir).rows()}


# -- compress ---------------------------------------------------------------------------------------
def png_claiming(width, height) -> bytes:
    """A PNG header for a huge image, a few dozen bytes long: a decompression bomb, cheaply."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def save(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def pages(image: Image.Image, n: int) -> bytes:
    """A TIFF of n pages, the first `image`."""
    buffer = io.BytesIO()
    image.save(buffer, "TIFF", save_all=True, append_images=[image.rotate(90 * k) for k in range(1, n)])
    return buffer.getvalue()


def test_bad_inputs_are_error_rows_and_the_rest_is_archived(ray_cluster, tiny_weights, tmp_path, rng):
    rgb = Image.fromarray(smooth_image(rng, 32, 40))
    files = {
        "good.png": save(rgb, "PNG"),
        "good.jpg": save(rgb, "JPEG"),
        "cmyk.jpg": save(rgb.convert("CMYK"), "JPEG"),
        "16bit.png": save(Image.fromarray((np.arange(32 * 40, dtype=np.uint16).reshape(32, 40) * 50)), "PNG"),
        "rgba.png": save(rgb.convert("RGBA"), "PNG"),
        "rgb16.ppm": b"P6 40 32 65535\n" + (np.asarray(rgb).astype(">u2") * 257).tobytes(),  # 16-bit colour
        "pages.tiff": pages(rgb, 3),
        "one-pixel.png": save(Image.new("RGB", (1, 1), (200, 10, 10)), "PNG"),
        "empty.png": b"",
        "truncated.png": save(rgb, "PNG")[:300],
        "text.jpg": b"this is a shopping list, not a photo\n",
        "bomb.png": png_claiming(100_000, 100_000),
        # JPEG XL that Pillow cannot write (tests/fixtures/jxl): 19 extra channels beside grey; three frames
        "extra.jxl": (Path(__file__).parent / "fixtures" / "jxl" / "grey-19-extra-channels.jxl").read_bytes(),
        "animated.jxl": (Path(__file__).parent / "fixtures" / "jxl" / "animated-3-frames.jxl").read_bytes(),
    }
    for name, data in files.items():
        (tmp_path / "src" / name).parent.mkdir(exist_ok=True)
        (tmp_path / "src" / name).write_bytes(data)
    with open(tmp_path / "src" / "video.jpg", "wb") as f:  # sparse: 2 GB that take no disk, and are not read
        f.truncate(2 << 30)

    done = subprocess.run(
        [sys.executable, "-m", "rgbatch.cli", "compress", str(tmp_path / "src"), "--out", str(tmp_path / "archive"),
         "--weights", str(tiny_weights), "--iterations", "2", "--tile-size", "32",
         "--address", ray_cluster.address, "--json"], capture_output=True, text=True, timeout=900)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr and "Error" not in done.stderr
    result = json.loads(done.stdout)
    assert (result["ok"], result["failed"]) == (9, 6)

    rows = current(tmp_path / "archive")
    assert {p for p, r in rows.items() if r["status"] == "ok"} == {
        "good.png", "good.jpg", "cmyk.jpg", "16bit.png", "rgba.png", "rgb16.ppm", "pages.tiff", "one-pixel.png",
        "extra.jxl"}
    assert rows["pages.tiff"]["frames"] == 3 and rows["good.png"]["frames"] is None
    assert rows["cmyk.jpg"]["mode"] == "CMYK" and rows["rgba.png"]["mode"] == "RGBA" and rows["rgb16.ppm"]["mode"] == "RGB;16"
    assert rows["16bit.png"]["mode"].startswith("I") and (rows["one-pixel.png"]["width"], rows["one-pixel.png"]["height"]) == (1, 1)
    errors = {p: r["error"] for p, r in rows.items() if r["status"] == "error"}
    assert errors["empty.png"] == "empty file (0 bytes)"
    assert "truncated" in errors["truncated.png"]
    assert "not an image file" in errors["text.jpg"]
    assert "decompression" in errors["bomb.png"]
    assert errors["animated.jxl"].startswith("an animated JPEG XL: its reader decodes every frame and gives the last")
    assert rows["extra.jxl"]["mode"] == "L+extra"
    assert errors["video.jpg"] == ("it holds more than 1,431,655,760 bytes, more than an image of at most 89478485 "
                                   "pixels takes (16 bytes a pixel); refused (--max-pixels raises both limits)")
    # and the report says what reading lost besides the codec
    report = json.loads(run("report", tmp_path / "archive", "--json").stdout)
    assert report["summary"]["reading"] == {"reduced_to_8_bits": 2, "colour_converted": 1, "frames_dropped": 1,
                                            "extra_channels_dropped": 1, "alpha_kept": 1}
    said = " ".join(run("report", tmp_path / "archive").output.replace("│", " ").split())
    assert ("2 reduced from more than 8 bits a sample to 8; 1 converted to RGB from CMYK, YCbCr, LAB or HSV; 1 with only the "
            "first of their frames or pages kept; 1 with extra channels beyond colour and alpha dropped (a JPEG XL's "
            "depth, spot colours...); 1 with their alpha channel kept losslessly") in said


def test_a_dry_run_says_what_compress_would_do_and_writes_nothing(archive, tiny_weights, tmp_path):
    """`compress --dry-run`: the counts of `pipeline.plan`, as a table or JSON, exit 0; the options
    checked as a run checks them (exit 2); the archive not touched, a missing one not made."""
    before = sorted(p.name for p in (archive / "archive").iterdir())
    src = tmp_path / "src"
    shutil.copytree(archive / "src", src)
    Image.new("RGB", (8, 8)).save(src / "new.png")
    (src / "a.png").unlink()
    result = run("compress", src, "--out", archive / "archive", "--weights", tiny_weights, "--dry-run", "--json")
    assert result.exit_code == 0, result.output
    said = json.loads(result.stdout)
    assert (said["sources"], said["to_hash"], said["new"], said["not_listed"]) == (3, 2, 1, 1)  # copies: times moved
    assert said["unchanged"] == said["unreadable"] == 0
    assert said["examples"] == {"new": ["new.png"], "to_hash": ["b.png", "sub/c.png"], "not_listed": ["a.png"]}
    table = run("compress", src, "--out", archive / "archive", "--weights", tiny_weights, "--dry-run")
    words = " ".join(table.stdout.replace("│", " ").split())
    assert table.exit_code == 0 and "a dry run, nothing read or written" in words and "e.g. new.png" in words
    assert sorted(p.name for p in (archive / "archive").iterdir()) == before
    missing = run("compress", src, "--out", tmp_path / "new-archive", "--weights", tiny_weights, "--dry-run", "--json")
    assert json.loads(missing.stdout)["new"] == 3 and not (tmp_path / "new-archive").exists()
    bad = run("compress", src, "--out", tmp_path / "x", "--weights", tiny_weights, "--dry-run", "--depth", "99")
    assert bad.exit_code == 2 and "Traceback" not in bad.output and not (tmp_path / "x").exists()


def test_usage_errors_exit_2_with_one_line(tmp_path, archive, tiny_weights):
    (tmp_path / "a-file").write_bytes(b"")
    for args in (["restore", archive / "archive", "--out", tmp_path / "a-file"],
                 ["compress", archive / "src", "--out", tmp_path / "a-file"],
                 ["compress", tmp_path / "missing"],
                 ["compress", archive / "src", "--weights", tiny_weights, "--coder", "nope"],
                 ["compress", archive / "src", "--weights", tiny_weights, "--iterations", "17"],
                 # weights without context tables: "auto" is the raw coder, which codes whole iterations only
                 ["compress", archive / "src", "--weights", tiny_weights, "--target-bpp", "1", "--partial"],
                 ["compress", archive / "src", "--tile-size", "33"],
                 ["compress", archive / "src", "--target-msssim", "1.5"],
                 ["compress", archive / "src", "--target-msssim", ".9", "--no-measure"],
                 ["compress", archive / "src", "--precision", "fp8"],
                 ["compress", archive / "src", "--search-steps", "-1"],
                 ["compress", archive / "src", "--tile-size", "65536"],
                 ["compress", archive / "src", "--max-pixels", "0"],
                 ["report", archive / "archive", "--worst", "-1"],
                 ["verify", archive / "archive", "--sample", "-1"],
                 ["restore", archive / "archive", "--out", tmp_path / "o", "--batch-size", "0"],
                 ["report", tmp_path / "missing"],
                 ["restore", archive / "archive", "--out", tmp_path / "o", "--iterations", "2", "--target-msssim", ".9"],
                 ["restore", archive / "archive", "--out", tmp_path / "o", "--select", "nothing*"]):
        if args[0] == "compress" and "--out" not in args:  # should a check let one through: not in the repo
            args = [*args, "--out", tmp_path / "never"]
        result = run(*args)
        assert result.exit_code == 2, (args, result.output)
        assert result.stderr.startswith("error:")
        assert "Traceback" not in result.output
    bad = run("report", archive / "archive", "--min-msssim", "nan")  # named as given (until session 53: --target-msssim)
    assert bad.exit_code == 2 and bad.stderr.startswith("error: --min-msssim must be in (0, 1], not nan"), bad.stderr


# -- report -----------------------------------------------------------------------------------------
def test_report_json_answers_depth_and_quality_questions(archive):
    rows = current(archive / "archive")
    q = sorted(r["msssim"][1] for r in rows.values())[1]  # some images reach it at depth 2, some not
    result = run("report", archive / "archive", "--json", "--depth", "2", "--min-msssim", q)
    assert result.exit_code == 0
    report = json.loads(result.stdout)
    images = {i["path"]: i for i in report["images"]}
    assert set(images) == set(PATHS)
    for path, image in images.items():
        for key in ("status", "error", "width", "height", "bytes", "bpp", "msssim", "psnr"):
            assert image[key] == rows[path][key]

    s = report["summary"]
    assert (s["images"], s["ok"], s["failed"]) == (3, 3, 0)
    assert s["stored"]["bytes"] == sum(len(r["blob"]) for r in rows.values())
    assert s["at_depth"]["bytes"] == sum(r["bytes"][1] for r in rows.values())
    assert s["at_depth"]["mean_msssim"] == pytest.approx(np.mean([r["msssim"][1] for r in rows.values()]))
    chosen = [next((d for d, m in enumerate(r["msssim"], 1) if m >= q), 3) for r in rows.values()]
    assert s["at_msssim"]["bytes"] == sum(r["bytes"][d - 1] for r, d in zip(rows.values(), chosen))
    assert [d["images"] for d in s["by_depth"]] == [3, 3, 3]
    assert s["by_depth"][0]["bytes"] == sum(r["bytes"][0] for r in rows.values())

    table = run("report", archive / "archive")
    assert table.exit_code == 0 and "cost and quality" in table.stdout and "sub/c.png" in table.stdout


def test_a_report_added_up_a_row_group_at_a_time_is_the_report_of_one_reading(archive, tmp_path, monkeypatch):
    """`report` adds its summary up chunk by chunk (`Archive.chunks`): with chunks of one row
    group, over parts holding failures, damaged rows, images stored shallower and measured
    not at all, it says what one reading of the whole archive says (floats to rounding)."""
    from rgbatch import archive as archive_module, manifest

    rows = current(archive / "archive")
    folder = tmp_path / "mixed"
    for part in range(3):
        with PartWriter(folder, rows["a.png"]["model_id"]) as writer:
            for i in range(150):
                row = rows[PATHS[i % 3]]
                changes = [{}, {"status": "error", "error": f"failed {i}"}, {"bytes": [1, None, 3]},
                           {"msssim": [], "bpp": [], "psnr": []},
                           {"iterations": 2, **{k: row[k][:2] for k in ("bytes", "bpp", "msssim", "psnr")}},
                           {"scale": 0.5, "last_steps": 3}][(i + part) % 6]
                writer.add(Row.from_dict({**row, "path": f"{part}/{i:03d}.png", **changes}))
    whole = archive_module.report(folder, depth=2, min_msssim=0.3, worst=4, folders=1)
    whole_images = whole["images"].read_all()
    assert whole["summary"]["failed"] == 150 and whole_images.num_rows == 450
    assert sorted(f["folder"] for f in whole["summary"]["folders"]) == ["0", "1", "2"]  # one folder a part
    assert whole_images["path"].to_pylist() == sorted(whole_images["path"].to_pylist())
    monkeypatch.setattr(manifest, "CHUNK_ROWS", manifest.ROW_GROUP_ROWS)
    monkeypatch.setattr(archive_module, "SORT_MEMORY", "16MB")  # DuckDB's least
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "spill"))
    (tmp_path / "spill").mkdir()
    chunked = archive_module.report(folder, depth=2, min_msssim=0.3, worst=4, folders=1)
    assert [p.name for p in (tmp_path / "spill").iterdir()][0].startswith("rgbatch-report-")
    assert chunked["images"].read_all().equals(whole_images)
    assert list((tmp_path / "spill").iterdir()) == []  # the spilled images deleted once read

    def rounded(value):
        if isinstance(value, float):
            return round(value, 9)
        if isinstance(value, dict):
            return {k: rounded(v) for k, v in value.items()}
        return [rounded(v) for v in value] if isinstance(value, list) else value

    assert rounded(chunked["summary"]) == rounded(whole["summary"])
    assert "images" not in archive_module.report(folder, images=False)


def test_names_are_shown_as_they_are_never_read_as_styles(tiny_weights, tmp_path, rng):
    src = tmp_path / "src"
    (src / "x[").mkdir(parents=True)
    Image.fromarray(smooth_image(rng, 32, 32)).save(src / "x[" / "bold]y.png")  # "[/bold]": a closing style tag
    Image.fromarray(smooth_image(rng, 32, 32)).save(src / "new\nline.png")
    Image.fromarray(smooth_image(rng, 32, 32)).save(src / "\u202egnp.exe.png")  # a right-to-left override
    (src / "[red]empty.png").write_bytes(b"")
    archive_images(src, tmp_path / "archive", tiny_weights, iterations=2)

    result = run("report", tmp_path / "archive")
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    for name in ("x[/bold]y.png", "new\\nline.png", "[red]empty.png", "\\u202egnp.exe.png"):  # as escapes
        assert name in result.stdout
    assert "new\nline" not in result.stdout and "\u202e" not in result.stdout
    # a path in an error line
    missing = run("report", tmp_path / "x[" / "bold]")
    assert missing.exit_code == 2 and f"no archive at {tmp_path}/x[/bold]" in missing.output
    missing = run("report", tmp_path / "no\x1b[31mpe")
    assert missing.exit_code == 2 and f"no archive at {tmp_path}/no\\x1b[31mpe" in missing.output
    # a reason naming a source (raw until session 61)
    src.rename(tmp_path / "gone")
    checked = run("verify", tmp_path / "archive", "--sample", "10", "--weights", tiny_weights)
    said = " ".join(checked.stdout.split())  # as one line: the table wraps at 80 columns
    assert "src/new\\nline.png is gone" in said and "src/new\nline" not in checked.stdout, said


def test_names_its_terminal_cannot_encode_are_escaped_never_a_traceback(tiny_weights, tmp_path, rng):
    """Under a locale of another encoding than UTF-8 (latin-1 here), a path it cannot hold ended
    the command in a UnicodeEncodeError traceback (until session 53); now such characters are
    written as backslash escapes, and --json as \\u escapes that read back as the names."""
    src = tmp_path / "src"
    (src / "日本").mkdir(parents=True)
    Image.fromarray(smooth_image(rng, 32, 32)).save(src / "日本" / "写真 ü.png")
    (src / "日本" / "bad ü.png").write_bytes(b"x")
    archive_images(src, tmp_path / "archive", tiny_weights, iterations=1)
    latin = CliRunner(charset="latin-1")
    result = latin.invoke(app, ["report", str(tmp_path / "archive")])
    assert result.exit_code == 0 and result.exception is None, result.output
    assert "\\u65e5\\u672c/bad" in result.stdout  # 日本/bad ü.png, its ü in latin-1
    result = latin.invoke(app, ["report", str(tmp_path / "archive"), "--json"])
    assert result.exit_code == 0 and "\\u65e5" in result.stdout
    assert [i["path"] for i in json.loads(result.stdout)["images"]] == ["日本/bad ü.png", "日本/写真 ü.png"]


# -- restore -----------------------------------------------------------------------------------------
def test_restore_select_of_a_failed_image_says_it_failed(tiny_weights, tmp_path, rng):
    """`--select` naming an image whose compression failed said "no archived image matches it"
    until session 57 (found by its exploratory testing): the path is archived, as a failure."""
    src = tmp_path / "src"
    src.mkdir()
    Image.fromarray(smooth_image(rng, 32, 48)).save(src / "good.png")
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    archive_images(src, tmp_path / "archive", tiny_weights, iterations=1)
    result = run("restore", tmp_path / "archive", "--out", tmp_path / "o", "--select", "broken.png",
                 "--weights", tiny_weights)
    assert result.exit_code == 2, result.output
    assert "'broken.png': matches only images whose compression failed" in " ".join(result.stderr.split())
    result = run("restore", tmp_path / "archive", "--out", tmp_path / "o", "--select", "gone.png")
    assert result.exit_code == 2 and "'gone.png': no archived image matches it" in result.stderr


def test_restore_writes_pngs_at_the_asked_depth(archive, tiny_weights, tmp_path):
    rows = current(archive / "archive")
    codec = Codec.load(tiny_weights, device="cpu")
    result = run("restore", archive / "archive", "--out", tmp_path / "two", "--iterations", "2",
                 "--select", "sub/*", "--weights", tiny_weights)
    assert result.exit_code == 0, result.output
    assert [p.relative_to(tmp_path / "two").as_posix() for p in (tmp_path / "two").rglob("*.png")] == ["sub/c.png"]
    restored = np.asarray(Image.open(tmp_path / "two/sub/c.png"))
    assert np.array_equal(restored, codec.decode(rows["sub/c.png"]["blob"], iterations=2))
    # --depth is the same option (the report's word for it)
    assert run("restore", archive / "archive", "--out", tmp_path / "depth", "--depth", "2", "--select", "sub/*",
               "--weights", tiny_weights).exit_code == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "depth/sub/c.png")), restored)
    # --select repeated: the paths any of them matches (until session 57 only the last one counted,
    # the others dropped without a word); one that matches nothing is refused, as compact's --drop
    result = run("restore", archive / "archive", "--out", tmp_path / "both", "--depth", "1", "--select", "sub/*",
                 "--select", "a.png", "--weights", tiny_weights)
    assert result.exit_code == 0, result.output
    assert sorted(p.relative_to(tmp_path / "both").as_posix() for p in (tmp_path / "both").rglob("*.png")) == \
        ["a.png", "sub/c.png"]
    result = run("restore", archive / "archive", "--out", tmp_path / "typo", "--select", "sub/*", "--select", "a.pgn",
                 "--weights", tiny_weights)
    assert result.exit_code == 2 and "'a.pgn': no archived image matches it" in result.stderr
    assert not (tmp_path / "typo").exists()

    q = rows["a.png"]["msssim"][1]
    result = run("restore", archive / "archive", "--out", tmp_path / "q", "--target-msssim", q,
                 "--weights", tiny_weights, "--json")
    assert result.exit_code == 0
    depths = {w["path"]: w["depth"] for w in json.loads(result.stdout)["written"]}
    for path, row in rows.items():
        assert depths[path] == choose_depth(Target(msssim=q), row["bytes"], row["msssim"], 1)
        decoded = codec.decode(row["blob"], iterations=depths[path])
        assert np.array_equal(np.asarray(Image.open(tmp_path / "q" / path)), decoded)


def test_restore_never_writes_outside_its_folder(archive, tiny_weights, tmp_path):
    good = current(archive / "archive")["a.png"]
    with PartWriter(tmp_path / "evil", good["model_id"]) as writer:
        for path in ("../escaped.png", "/tmp/absolute.png", "fine/../../escaped2.png", "..\\escaped3.png",
                     "\\absolute2.png", "C:/drive.png", "c:drive2.png", "fine.png", "back\\slash.png", "Photos:/colon.png"):
            writer.add(Row.from_dict({**good, "path": path}))
    result = run("restore", tmp_path / "evil", "--out", tmp_path / "out", "--weights", tiny_weights, "--json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    # a POSIX name's backslash or colon is no separator, no drive
    assert sorted(w["path"] for w in report["written"]) == ["Photos:/colon.png", "back\\slash.png", "fine.png"]
    assert all("unsafe path" in why for _, why in report["failures"]) and len(report["failures"]) == 7
    assert sorted(p.name for p in tmp_path.rglob("*.png")) == ["back\\slash.png", "colon.png", "fine.png"]


def test_rows_of_another_model_are_refused_one_by_one(archive, tiny_weights, tmp_path, rng):
    torch.manual_seed(99)
    other = tmp_path / "other.safetensors"
    save_weights(other, ResidualGRUCodec(CodecConfig(width=0.125)))
    (tmp_path / "src").mkdir()
    Image.fromarray(smooth_image(rng, 32, 32)).save(tmp_path / "src/other.png")
    mixed = tmp_path / "mixed"
    archive_images(archive / "src", mixed, tiny_weights, iterations=2)
    archive_images(tmp_path / "src", mixed, other, iterations=2)

    report = json.loads(run("report", mixed, "--json").stdout)
    assert len(report["summary"]["model_ids"]) == 2  # report reads every part

    result = run("restore", mixed, "--out", tmp_path / "out", "--weights", tiny_weights, "--json")
    assert result.exit_code == 1
    restored = json.loads(result.stdout)
    assert sorted(w["path"] for w in restored["written"]) == PATHS
    [(path, why)] = restored["failures"]
    assert path == "other.png" and "coded by model" in why and "the weights that made it (--weights)" in why

    result = run("verify", mixed, "--weights", tiny_weights, "--json")
    assert result.exit_code == 1
    assert [p for p, _ in json.loads(result.stdout)["problems"]] == ["other.png"]


# -- verify ------------------------------------------------------------------------------------------
def test_verify_checks_blobs_and_remeasures_against_sources(archive, tiny_weights, tmp_path):
    result = run("verify", archive / "archive", "--weights", tiny_weights, "--json")
    assert result.exit_code == 0, result.output
    verified = json.loads(result.stdout)
    assert verified["checked"] == verified["decoded"] == 3 and verified["problems"] == []
    assert len(verified["remeasured"]) == 3
    for m in verified["remeasured"]:
        assert m["measured"] == pytest.approx(m["recorded"], abs=1e-6)

    # a damaged blob, recorded later than the good row so it is the current one
    row = current(archive / "archive")["b.png"]
    blob = bytearray(row["blob"])
    blob[-1] ^= 0xFF
    damaged = tmp_path / "damaged"
    archive_images(archive / "src", damaged, tiny_weights)
    with PartWriter(damaged, row["model_id"]) as writer:
        writer.add(Row.from_dict({**row, "blob": bytes(blob)}))
    # a --sources folder that is not there was a typo that passed: every source "gone", "archive
    # verified", exit 0 (until session 57, found by its exploratory testing): refused
    for where, said in ((tmp_path / "gone", "no such folder"), (archive / "src" / "a.png", "is a file, not a folder")):
        result = run("verify", damaged, "--weights", tiny_weights, "--sources", where)
        assert result.exit_code == 2 and f"error: --sources {where}" in result.stderr and said in result.stderr
    (tmp_path / "gone").mkdir()  # a folder that holds none of them
    result = run("verify", damaged, "--weights", tiny_weights, "--sources", tmp_path / "gone", "--json")
    assert result.exit_code == 1
    verified = json.loads(result.stdout)
    [(path, why)] = verified["problems"]
    assert path == "b.png" and "checksum" in why
    assert verified["remeasured"] == [] and len(verified["unmeasured"]) == 2  # sources not in --sources

    # --quick: every blob's checksums, only the sample decoded
    result = run("verify", damaged, "--weights", tiny_weights, "--quick", "--sample", "0", "--json")
    verified = json.loads(result.stdout)
    assert result.exit_code == 1 and [p for p, _ in verified["problems"]] == ["b.png"]
    assert (verified["checked"], verified["decoded"]) == (3, 0)
    result = run("verify", archive / "archive", "--weights", tiny_weights, "--quick", "--sample", "1", "--json")
    verified = json.loads(result.stdout)
    assert result.exit_code == 0 and verified["checked"] == 3 and verified["decoded"] == len(verified["remeasured"]) == 1


def test_the_alpha_channel_is_kept_losslessly_restored_reported_and_verified(tiny_weights, tmp_path, rng):
    src = tmp_path / "src"
    src.mkdir()
    colours, alpha = smooth_image(rng, 32, 64), rng.integers(0, 256, (32, 64), np.uint8)
    Image.fromarray(np.dstack([colours, alpha]), "RGBA").save(src / "logo.png")
    Image.fromarray(np.dstack([colours[..., 0], alpha[::-1]]), "LA").save(src / "grey.png")
    keyed = Image.fromarray(colours).convert("P")
    keyed.save(src / "keyed.png", transparency=int(np.asarray(keyed)[0, 0]))  # a tRNS key: alpha in all but name
    Image.fromarray(colours).convert("RGBA").save(src / "opaque.png")  # every pixel 255: kept in 0 bytes
    Image.fromarray(colours).save(src / "photo.png")
    expected = {name: np.asarray(Image.open(src / name).convert("RGBA"))[..., 3]
                for name in ("logo.png", "grey.png", "keyed.png", "opaque.png")}
    assert not expected["keyed.png"].all() and expected["keyed.png"].any()
    archive_images(src, tmp_path / "archive", tiny_weights, iterations=2)
    rows = current(tmp_path / "archive")
    assert rows["photo.png"]["alpha"] is None and rows["photo.png"]["alpha_bytes"] is None
    assert rows["opaque.png"]["alpha"] is None and rows["opaque.png"]["alpha_bytes"] == 0
    assert all(rows[name]["alpha_bytes"] == len(rows[name]["alpha"]) > 0 for name in ("logo.png", "grey.png", "keyed.png"))

    result = run("restore", tmp_path / "archive", "--out", tmp_path / "png", "--weights", tiny_weights)
    assert result.exit_code == 0, result.output
    for name, channel in expected.items():
        restored = Image.open(tmp_path / "png" / name)
        mode = "LA" if name == "grey.png" else "RGBA"  # a grey source restores grey (since session 58)
        assert restored.mode == mode and np.array_equal(np.asarray(restored)[..., -1], channel), name
    assert Image.open(tmp_path / "png" / "photo.png").mode == "RGB"
    report = json.loads(run("report", tmp_path / "archive", "--json").stdout)
    summary = report["summary"]
    assert {i["path"]: i["alpha_bytes"] for i in report["images"]} == {p: r["alpha_bytes"] for p, r in rows.items()}
    assert summary["reading"] == {"alpha_kept": 4}
    assert summary["alpha_bytes"] == sum(rows[name]["alpha_bytes"] for name in expected)
    result = run("verify", tmp_path / "archive", "--weights", tiny_weights, "--json")  # re-compared with the sources
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)["remeasured"]) == 5
    assert run("compact", tmp_path / "archive").exit_code == 0  # rewritten parts keep the channels
    assert {p: (r["alpha"], r["alpha_bytes"]) for p, r in current(tmp_path / "archive").items()} == \
        {p: (r["alpha"], r["alpha_bytes"]) for p, r in rows.items()}

    # a damaged alpha channel (written later: the current row) is refused, never restored without it
    logo = rows["logo.png"]
    with PartWriter(tmp_path / "archive", logo["model_id"]) as writer:
        writer.add(Row.from_dict({**logo, "alpha": logo["alpha"][:-20]}))
    result = run("verify", tmp_path / "archive", "--weights", tiny_weights, "--json")
    assert result.exit_code == 1
    [(path, why)] = json.loads(result.stdout)["problems"]
    assert path == "logo.png" and "alpha channel" in why
    result = run("restore", tmp_path / "archive", "--out", tmp_path / "again", "--weights", tiny_weights, "--json")
    assert result.exit_code == 1
    restored = json.loads(result.stdout)
    assert [p for p, _ in restored["failures"]] == ["logo.png"] and "damaged alpha channel" in restored["failures"][0][1]
    assert sorted(p.name for p in (tmp_path / "again").iterdir()) == ["grey.png", "keyed.png", "opaque.png", "photo.png"]


def test_an_archive_compressed_without_measuring_reports_restores_and_verifies(archive, tiny_weights, tmp_path):
    unmeasured = tmp_path / "unmeasured"
    archive_images(archive / "src", unmeasured, tiny_weights, measure=False)
    result = run("report", unmeasured, "--min-msssim", "0.5", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)["summary"]
    assert summary["stored"]["images"] == 3 and summary["stored"]["mean_msssim"] is None
    assert summary["at_msssim"]["images"] == 0 and summary["at_msssim"]["unmeasured"] == 3
    # by depth it still decodes; by quality each image says why not
    assert run("restore", unmeasured, "--out", tmp_path / "by-depth", "--iterations", "2",
               "--weights", tiny_weights).exit_code == 0
    assert len(list((tmp_path / "by-depth").rglob("*.png"))) == 3
    result = run("restore", unmeasured, "--out", tmp_path / "by-quality", "--target-msssim", "0.5",
                 "--weights", tiny_weights, "--json")
    assert result.exit_code == 1
    assert all("measuring off" in why for _, why in json.loads(result.stdout)["failures"])
    result = run("verify", unmeasured, "--weights", tiny_weights, "--precision", "fp32", "--json")
    assert result.exit_code == 0, result.output
    verified = json.loads(result.stdout)
    assert verified["decoded"] == 3 and all(m["recorded"] is None and 0 < m["measured"] <= 1
                                            for m in verified["remeasured"])


# -- compact ------------------------------------------------------------------------------------------
def test_compact_keeps_current_rows_only_and_cuts_depth_for_good(archive, tiny_weights, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(archive / "archive", work)
    before = current(work)
    # a second run's rows supersede the first's: twice the rows, the same current images
    archive_images(archive / "src", work, tiny_weights)
    assert Archive(work).total_rows() == 2 * len(before)

    result = run("compact", work, "--json")
    assert result.exit_code == 0, result.output
    compacted = json.loads(result.stdout)
    assert compacted["rows_before"] == 2 * len(before) and compacted["rows"] == len(before)
    assert compacted["parts"] == 1 and compacted["bytes"] < compacted["bytes_before"]
    after = current(work)
    assert Archive(work).total_rows() == len(before) and set(after) == set(before)
    assert all(after[p]["blob"] == before[p]["blob"] for p in before)  # same codes, nothing re-encoded

    # cut to depth 2: blobs truncated, stats of the kept depths, still decoding as before at 2
    result = run("compact", work, "--depth", "2", "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["cut"] == len(before)
    cut = current(work)
    codec = Codec.load(tiny_weights, device="cpu")
    for path, row in cut.items():
        assert row["iterations"] == 2 and len(row["msssim"]) == 2 and len(row["blob"]) == row["bytes"][-1]
        assert row["msssim"] == before[path]["msssim"][:2]
        assert np.array_equal(codec.decode(row["blob"]), codec.decode(before[path]["blob"], 2))
    assert run("compact", work, "--depth", "0").exit_code == 2


def test_compact_drops_images_for_good(archive, tiny_weights, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(archive / "archive", work)
    before = current(work)
    # a failed image beside them (its row as compress writes it)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "empty.png").write_bytes(b"")
    archive_images(tmp_path / "bad", work, tiny_weights)
    assert current(work)["empty.png"]["status"] == "error"

    # a glob that matches nothing is refused before any work: a typo drops nothing
    parts = sorted(os.listdir(work))
    refused = run("compact", work, "--drop", "sub/*.jpg")
    assert refused.exit_code == 2 and "--drop" in refused.output and "no archived image matches" in refused.output
    assert sorted(os.listdir(work)) == parts

    result = run("compact", work, "--drop", "sub/*", "--drop", "a.png", "--drop-failed")
    assert result.exit_code == 0, result.output
    assert "3 dropped" in result.stdout
    after = current(work)
    assert set(after) == {"b.png"} and after["b.png"]["blob"] == before["b.png"]["blob"]
    assert Archive(work).total_rows() == 1  # the dropped images' rows are gone from every part
    # dropping every image would leave no part: refused (deleting an archive is the user's to do)
    refused = run("compact", work, "--drop", "*")
    assert refused.exit_code == 2 and "delete the archive" in refused.output and set(current(work)) == {"b.png"}


def test_compact_drops_the_old_paths_of_moved_sources(archive, tmp_path):
    """`--drop-moved`: an image whose source is gone while another of the same bytes still has its
    source (a folder renamed) is left out; where every source of those bytes is gone (a disk
    unmounted), or an image has no other of its bytes, it stays."""
    good = current(archive / "archive")["a.png"]
    there = tmp_path / "there.png"
    there.write_bytes(b"x")
    gone = str(tmp_path / "gone.png")
    rows = {"old/a.png": ("h1", gone), "new/a.png": ("h1", str(there)),  # renamed: old/ goes
            "x/b.png": ("h2", gone), "y/b.png": ("h2", gone),  # both gone: kept
            "c.png": ("h3", gone),  # the only one of its bytes: kept
            "p/d.png": ("h4", str(there)), "q/d.png": ("h4", str(there))}  # both there: kept
    with PartWriter(tmp_path / "moved", good["model_id"]) as writer:
        for path, (sha256, source) in rows.items():
            writer.add(Row.from_dict({**good, "path": path, "source_hash": sha256 * 32, "source": source}))
    result = run("compact", tmp_path / "moved", "--drop-moved", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["dropped"] == 1 and set(current(tmp_path / "moved")) == set(rows) - {"old/a.png"}
    again = run("compact", tmp_path / "moved", "--drop-moved", "--json")  # nothing more to drop: no error
    assert again.exit_code == 0 and json.loads(again.stdout)["dropped"] == 0
    from rgbatch.archive import _moved
    for chunk in (1, 2, 3):  # read into Python a few rows (whole groups) at a time: the same answer
        assert _moved(Archive(tmp_path / "moved"), chunk) == set()
    with PartWriter(tmp_path / "moved", good["model_id"]) as writer:  # one more copy of h1, renamed too
        writer.add(Row.from_dict({**good, "path": "older/a.png", "source_hash": "h1" * 32, "source": gone}))
    for chunk in (1, 2, 3, 1 << 16):
        assert _moved(Archive(tmp_path / "moved"), chunk) == {"older/a.png"}


def test_an_interrupted_compact_leaves_every_image_readable(archive, tmp_path):
    from rgbatch.archive import compact

    work = tmp_path / "work"
    shutil.copytree(archive / "archive", work)
    before = current(work)

    def interrupt(done, total):
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        compact(work, depth=1, progress=interrupt)
    during = current(work)  # old parts all there, two rows already rewritten (cut) in a new part
    assert set(during) == set(before)
    assert sorted(r["iterations"] for r in during.values()) == [1, 1, 3]
    result = compact(work, depth=1)  # a rerun finishes the job
    assert result.rows == len(before) and result.parts == 1
    assert all(r["iterations"] == 1 for r in current(work).values())


def test_an_interrupted_drop_leaves_the_archive_as_it_was_until_a_rerun(archive, tmp_path):
    from rgbatch.archive import compact

    work = tmp_path / "work"
    shutil.copytree(archive / "archive", work)
    before = current(work)

    def interrupt(done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        compact(work, drop=("a.png",), progress=interrupt)
    during = current(work)  # the old parts all there (a copied row may be in a new one): nothing dropped yet
    assert {p: r["blob"] for p, r in during.items()} == {p: r["blob"] for p, r in before.items()}
    assert compact(work, drop=("a.png",)).dropped == 1
    assert set(current(work)) == set(before) - {"a.png"}


def test_a_full_disk_stops_compress_and_compact_with_one_line_and_keeps_what_was_committed(
        archive, tiny_weights, tmp_path, monkeypatch, ray_cluster):
    """docs/ARCHIVE.md: a full disk stops `compress` and `compact` with one line, exit 2; the parts
    committed before stand, and a `compact` stopped so has deleted nothing."""
    from rgbatch import storage
    from conftest import FullDisk as NoRoom

    work, fresh = tmp_path / "work", tmp_path / "fresh"
    shutil.copytree(archive / "archive", work)
    fresh.mkdir()
    Image.fromarray(smooth_image(np.random.default_rng(5), 40, 48)).save(fresh / "new.png")  # a new image
    before, files = current(work), sorted(p.name for p in work.glob("*.parquet"))
    monkeypatch.setattr(storage, "AtomicOutput", NoRoom)  # no room for a part's first byte
    said = {"compact": run("compact", work, "--depth", "1"),
            "compress": run("compress", fresh, "--out", work, "--weights", tiny_weights, "--iterations", "2",
                            "--tile-size", "32", "--address", ray_cluster.address)}
    for command, result in said.items():
        lines = result.stderr.strip().splitlines()
        assert result.exit_code == 2 and "Traceback" not in result.output, (command, result.output)
        assert lines[-1] == (f"error: {work}: cannot write a manifest part: No space left on device; the parts "
                             f"committed before are kept: mend the cause and rerun to go on"), (command, lines)
    assert sorted(p.name for p in work.glob("*.parquet")) == files and current(work) == before  # no new part
    assert [p.name for p in work.iterdir() if p.name.startswith(".tmp-")] == []


def test_compact_sets_a_damaged_part_aside_and_says_where(archive, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(archive / "archive", work)
    part = sorted(work.glob("part-*.parquet"))[0]
    part.write_bytes(part.read_bytes()[:-20])  # cut short: its footer gone
    result = run("compact", work)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "not cut (1)" in result.stdout and "kept as they were" not in result.stdout  # its rows are not kept
    assert "1 damaged part(s) set aside" in " ".join(result.stdout.split())
    assert f"damaged/{part.name}" in result.stdout.replace("\n", "")  # rich wraps long paths
    assert (work / "damaged" / part.name).exists() and not part.exists()
    assert run("compact", work).exit_code == 0  # from then on the archive reads whole
    report = run("report", work)
    assert report.exit_code == 0 and "1 damaged part(s) set aside in damaged/" in " ".join(report.stdout.split())


# -- hostile archives (issue 17, items 4-7 and 12) -----------------------------------------------------
def archive_of(tmp_path, archive, paths, name="hostile"):
    """An archive holding the image a.png once under each of `paths`."""
    good = current(archive / "archive")["a.png"]
    with PartWriter(tmp_path / name, good["model_id"]) as writer:
        for path in paths:
            writer.add(Row.from_dict({**good, "path": path}))
    return tmp_path / name


def pngs_under(folder) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() or p.is_symlink()}


def restore_json(*args):
    result = run("restore", *args, "--json")
    assert "Traceback" not in result.output
    return result.exit_code, json.loads(result.stdout)


def counted_decodings(monkeypatch) -> list:
    """The paths of the rows `restore` and `verify` decode, as they decode them."""
    from rgbatch import archive as archive_module
    decoded, decode = [], archive_module._decode_by_model

    def counted(codec, work, *args):
        decoded.extend(row.path for row, _ in work)
        return decode(codec, work, *args)

    monkeypatch.setattr(archive_module, "_decode_by_model", counted)
    return decoded


def test_an_interrupted_restore_resumes_without_decoding_again(archive, tiny_weights, tmp_path, monkeypatch):
    decoded = counted_decodings(monkeypatch)
    out = tmp_path / "out"
    code, first = restore_json(archive / "archive", "--out", out, "--iterations", "2", "--weights", tiny_weights)
    assert code == 0 and len(first["written"]) == len(PATHS) and first["skipped"] == []
    said = json.loads(Image.open(out / "a.png").info["rgbatch-restored"])
    assert said["path"] == "a.png" and said["depth"] == 2 and said["decoding"] == "exact"
    # an interruption leaves whole files only (written under a temporary name, then linked), and
    # the files of the images not reached yet missing
    before = (out / "sub/c.png").read_bytes()
    (out / "sub/c.png").unlink()
    decoded.clear()
    code, again = restore_json(archive / "archive", "--out", out, "--iterations", "2", "--weights", tiny_weights)
    assert code == 0 and [w["path"] for w in again["written"]] == ["sub/c.png"] == decoded
    assert sorted(w["path"] for w in again["skipped"]) == ["a.png", "b.png"] and again["failures"] == []
    assert (out / "sub/c.png").read_bytes() == before
    assert "1 image(s) written" in run("restore", archive / "archive", "--out", tmp_path / "two", "--iterations", "2",
                                       "--select", "a.png", "--weights", tiny_weights).output
    text = " ".join(run("restore", archive / "archive", "--out", tmp_path / "two", "--iterations", "2", "--weights",
                        tiny_weights).output.split())
    assert "2 image(s) written" in text and "1 restored there before, skipped" in text


def test_a_full_disk_or_a_folder_that_takes_no_file_stops_a_restore(archive, tiny_weights, tmp_path, monkeypatch):
    """Until session 59 a full disk, a read-only file system or a folder not allowed failed every
    image's write in turn, each decoded first; a subfolder's refusal stays its own images'."""
    refused, new_file = {}, storage.NewFile

    def refusing(fd, name, overwrite):
        if name in refused:
            raise OSError(refused[name], os.strerror(refused[name]))
        return new_file(fd, name, overwrite)

    monkeypatch.setattr(storage, "NewFile", refusing)
    restore = ("restore", archive / "archive", "--iterations", "2", "--weights", tiny_weights)
    refused.update({"c.png": errno.EACCES})  # in sub/: that folder's rights, that image's failure
    result = run(*restore, "--out", tmp_path / "one")
    assert result.exit_code == 1 and "cannot write the file: Permission denied" in result.output
    assert sorted(p.name for p in (tmp_path / "one").rglob("*.png")) == ["a.png", "b.png"]
    for name, code, said in [("a.png", errno.EACCES, "Permission denied"), ("b.png", errno.ENOSPC, "No space"),
                             ("c.png", errno.EROFS, "Read-only file system")]:
        refused.clear()
        refused[name] = code
        out = tmp_path / name
        result = run(*restore, "--out", out)
        text = " ".join(result.output.split())
        written = len(list(out.rglob("*.png")))
        assert result.exit_code == 2 and f"cannot write a file there: {said}" in text, text
        assert f"stopped, {written} image(s) written before it, whole: a rerun skips them" in text if written \
            else "stopped, no image written" in text
        refused.clear()
        assert run(*restore, "--out", out).exit_code == 0 and len(list(out.rglob("*.png"))) == len(PATHS)


def test_a_folder_refusing_files_is_one_error_across_ray_workers():
    error = storage.FolderRefuses("cannot write a file there: No space left on device", errno.ENOSPC, 3)
    again = pickle.loads(pickle.dumps(error))  # as Ray hands it over
    assert (type(again), str(again), again.errno, again.written) == (storage.FolderRefuses, str(error), errno.ENOSPC, 3)


def test_verify_says_when_a_source_reads_otherwise_since_an_older_archive(tiny_weights, tmp_path, rng, monkeypatch):
    """A CMYK image with a profile of its own reads through that profile since session 62: `verify` of
    an archive compressed before re-measures it against the new reading, and says so (a review's
    finding: it said only "re-measured 0.95, the manifest says 0.96", exit 1)."""
    from rgbatch import imageio

    src = tmp_path / "src"
    src.mkdir()
    icc = (Path(__file__).parent / "fixtures" / "icc" / "cmyk-lut.icc").read_bytes()
    Image.fromarray(smooth_image(rng, 48, 64)).convert("CMYK").save(src / "c.jpg", quality=95, icc_profile=icc)
    with monkeypatch.context() as before:  # compressed as sessions before 62 read it: Pillow's conversion
        before.setattr(imageio, "cmyk_transform", lambda image: None)
        archive_images(src, tmp_path / "archive", tiny_weights)
    result = run("verify", tmp_path / "archive", "--weights", tiny_weights, "--json")
    problems = dict(json.loads(result.stdout)["problems"])
    assert result.exit_code == 1 and "MS-SSIM re-measured" in problems["c.jpg"]
    assert "is read through that profile since session 62" in problems["c.jpg"]


def test_verify_quick_ends_its_progress_at_every_row(archive, tiny_weights):
    """`verify --quick` left its bar at the last group decoded (93/150 in a log: a helper's round,
    session 64): the rows checked after it are counted too."""
    from rgbatch.archive import verify

    calls = []
    result = verify(archive / "archive", weights=tiny_weights, sample=0, quick=True,  # none decoded
                    progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (result.checked, result.checked) == (len(PATHS), len(PATHS))


def test_a_log_of_stderr_says_how_far_the_work_is_and_what_failed(archive, tiny_weights, tmp_path, monkeypatch):
    """Where stderr is no terminal (a CI log), rich drew the bar at the end alone, and failures
    were on stdout alone (a helper's round, session 64): a plain line every PROGRESS_LOG_SECONDS,
    and one saying how many failed."""
    from rgbatch import cli

    monkeypatch.setattr(cli, "PROGRESS_LOG_SECONDS", 0.0)
    done = run("restore", archive / "archive", "--out", tmp_path / "r", "--weights", tiny_weights)
    assert done.exit_code == 0 and f"restore: {len(PATHS)}/{len(PATHS)} images" in done.stderr, done.stderr
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "a.png").write_bytes(b"in the way")
    done = run("restore", archive / "archive", "--out", tmp_path / "s", "--weights", tiny_weights)
    assert done.exit_code == 1 and "not restored: 1 (listed on stdout)" in done.stderr, done.stderr


def test_verify_quick_refuses_a_blob_whose_coder_is_unknown_or_not_its_rows(archive, tiny_weights, tmp_path):
    """A blob whose header's coder id was changed and its checksum recomputed (a forgery, or a
    writer's bug) passed `verify --quick` until session 59: only decoding refused it."""
    import zlib

    from rgbatch.entropy import CODERS

    row = current(archive / "archive")["b.png"]
    for coder_id, said in ((5, "unknown entropy coder id 5"), (CODERS["raw"].coder_id if row["coder"] != "raw"
                                                                 else CODERS["context"].coder_id, "its header says coder")):
        blob = bytearray(row["blob"])
        blob[5] = coder_id
        end = 28 + 8 * blob[6]  # the header's CRC over the bytes before it (docs/FORMAT.md)
        blob[end:end + 4] = zlib.crc32(bytes(blob[:end])).to_bytes(4, "little")
        forged = tmp_path / f"forged{coder_id}"
        archive_images(archive / "src", forged, tiny_weights)
        with PartWriter(forged, row["model_id"]) as writer:
            writer.add(Row.from_dict({**row, "blob": bytes(blob), "blob_sha256": None}))
        result = run("verify", forged, "--weights", tiny_weights, "--quick", "--sample", "0", "--json")
        [(path, why)] = json.loads(result.stdout)["problems"]
        assert result.exit_code == 1 and path == "b.png" and said in why, why


def test_verify_quick_refuses_a_row_whose_coding_or_metadata_its_blob_and_sources_never_gave(archive, tiny_weights,
                                                                                             tmp_path):
    """A crafted part's scale NaN and last steps -3 were "verified" (report then counted a scale of
    nan), a 64 MB EXIF block restored into a PNG (a helper's round, session 63; over 1 MiB a row
    and another MiB, its row group is left out unread: `manifest._inflated`)."""
    row = current(archive / "archive")["b.png"]
    for changed, said in (({"scale": float("nan"), "last_steps": -3}, "its scale nan and last chunk's steps -3"),
                          ({"exif": b"Exif\0\0" + bytes(1 << 20)}, "its exif holds 1,048,582 bytes")):
        forged = tmp_path / f"forged{len(said)}"
        with PartWriter(forged, row["model_id"]) as writer:
            writer.add(Row.from_dict({**row, **changed}))
        result = run("verify", forged, "--weights", tiny_weights, "--quick", "--sample", "0", "--json")
        [(path, why)] = json.loads(result.stdout)["problems"]
        assert result.exit_code == 1 and path == "b.png" and said in why, why


def test_verify_gives_up_on_a_source_whose_read_does_not_end(archive, tiny_weights, monkeypatch):
    """A sampled source on a store that stopped answering: after --read-timeout seconds verify
    lists it as not checked (exit 1) and goes on with the others (until session 54 it waited)."""
    import threading

    answered, read = threading.Event(), storage.read_bytes

    def hanging(fs, path, *rest):
        if path.endswith("b.png"):
            answered.wait()
        return read(fs, path, *rest)

    monkeypatch.setattr(storage, "read_bytes", hanging)
    try:
        result = run("verify", archive / "archive", "--weights", tiny_weights, "--read-timeout", "0.3", "--json")
    finally:
        answered.set()
    assert result.exit_code == 1, result.output
    verified = json.loads(result.stdout)
    [(path, why)] = verified["unreachable"]
    assert path == "b.png" and "reading took more than 0.3 s: given up" in why and "could not reach source" in why
    assert verified["problems"] == [] and len(verified["remeasured"]) == 2 and verified["decoded"] == 3
    result = run("verify", archive / "archive", "--weights", tiny_weights, "--read-timeout", "-1")
    assert result.exit_code == 2 and "--read-timeout must be at least 0" in result.output


def test_copies_are_decoded_once_by_restore_and_verify(archive, tiny_weights, tmp_path, monkeypatch):
    """Rows of one image under several paths (copies: docs/ARCHIVE.md, "Sources of the same
    bytes") are decoded once: within a group one decoding serves them, in a later group the PNG
    written is read back; each file holds the decoded pixels and its own path. A file that no
    longer says it holds that stream is not read back. `verify` decodes a copy's blob once too
    (but the sampled image's: re-measured against its source)."""
    from rgbatch import archive as archive_module
    decoded = counted_decodings(monkeypatch)
    monkeypatch.setattr(archive_module, "DECODE_GROUP", 2)
    paths = ["a.png", "x/a.png", "y/a.png", "z/a.png", "z/b.png"]
    copies, out = archive_of(tmp_path, archive, paths, "copies"), tmp_path / "out"
    code, result = restore_json(copies, "--out", out, "--iterations", "2", "--weights", tiny_weights)
    assert code == 0 and sorted(w["path"] for w in result["written"]) == paths
    assert decoded == ["a.png"]  # x/a.png in its group, the others read back
    row = next(Archive(copies).rows({"a.png"}))
    expected = Codec.load(tiny_weights, device="cpu").decode(row.blob, 2)
    for path in paths:
        image = Image.open(out / path)
        assert np.array_equal(np.asarray(image), expected)
        assert json.loads(image.info["rgbatch-restored"])["path"] == path

    decoded.clear()  # verify: the first group decodes its blob once, the later copies are not decoded again
    result = run("verify", copies, "--sample", "1", "--weights", tiny_weights, "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["decoded"] == len(paths)
    assert decoded == ["a.png", "z/a.png"]  # x/a.png in a.png's group; z/a.png the one sampled (seed 0)

    text = archive_module.restored_text(row, 2, "exact")
    assert archive_module._restored_pixels(*storage.resolve(str(out / "z/a.png")), row, text) is not None
    deeper = archive_module.restored_text(row, 3, "exact")  # the file holds depth 2, not 3
    assert archive_module._restored_pixels(*storage.resolve(str(out / "z/a.png")), row, deeper) is None
    assert archive_module._restored_pixels(*storage.resolve(str(out / "gone.png")), row, text) is None


def test_copies_are_ok_rows_of_one_source_hash_and_model():
    from rgbatch.archive import _copies

    table = pa.table({"path": list("abcdefg"), "status": ["ok", "ok", "ok", "error", "ok", "ok", "ok"],
                      "source_hash": ["h", "h", None, "h", None, "h", "k"], "model_id": list("mmmmmnm")})
    assert _copies(table) == {"a", "b"}  # not a null hash, an error row, another model's, another hash


def test_report_counts_the_sources_stored_more_than_once(archive, tmp_path):
    """`report`'s copies: the rows beyond one of each source's bytes (its hash, whatever the
    model), and what they store beyond the smallest alone (a row sharing another's blob stores
    none of it: `shared`, `shared_bytes`); none in an archive of distinct images."""
    from rgbatch.archive import copies_text

    copies = archive_of(tmp_path, archive, ["a.png", "x/a.png", "y/a.png"], "copies")  # one blob, held by a.png
    with PartWriter(copies, "m2") as writer:  # a row of the same bytes by another model, cut smaller, counts too
        writer.add(Row.from_dict({**current(archive / "archive")["b.png"], "path": "b.png"}))
        cut = Row.from_dict({**current(archive / "archive")["a.png"], "path": "z/a.png", "model_id": "m2"}).cut(1)
        writer.add(cut)
    blob, small = len(current(archive / "archive")["a.png"]["blob"]), len(cut.blob)
    summary = json.loads(run("report", copies, "--json").stdout)["summary"]
    # stored: a's blob once and the cut one; keeping the cut one alone would store only it
    assert summary["copies"] == {"images": 3, "sources": 1, "bytes": blob, "shared": 2, "shared_bytes": 2 * blob,
                                  "same_stream": 0}
    assert copies_text(summary["copies"]) == (
        f"3 image(s) the same source bytes as another (1 source(s) archived more than once: {blob:,} bytes stored "
        f"beyond one each; 2 of their rows share another's blob, {2 * blob:,} bytes stored once)")
    # the costs count each stream once (until session 58 a shared blob again for every row sharing it)
    stored = blob + small + len(current(archive / "archive")["b.png"]["blob"])
    assert (summary["stored"]["bytes"], summary["stored"]["images"], summary["blob_bytes"]) == (stored, 3, stored)
    at_depth = json.loads(run("report", copies, "--depth", "1", "--json").stdout)["summary"]["at_depth"]
    compacted = tmp_path / "compacted"
    shutil.copytree(copies, compacted)
    assert run("compact", compacted, "--depth", "1").exit_code == 0
    after = json.loads(run("report", compacted, "--json").stdout)["summary"]
    assert at_depth["bytes"] == after["blob_bytes"] == after["stored"]["bytes"]  # what --depth 1 said it would cost
    table = " ".join(run("report", copies).stdout.replace("│", " ").split())  # the facts table's row, wrapped
    assert "copies 3 image(s) the same source" in table and f"{blob:,} bytes stored beyond" in table
    assert f"{stored:,} in blobs" in table and "each stream once: 2 image(s) share another's" in table
    assert summary["compression_ratio"] == pytest.approx(summary["source_bytes"] / summary["blob_bytes"])  # no alpha
    summary = json.loads(run("report", archive / "archive", "--json").stdout)["summary"]
    assert summary["copies"] == {"images": 0, "sources": 0, "bytes": 0, "shared": 0, "shared_bytes": 0,
                                  "same_stream": 0}
    assert copies_text(summary["copies"]) == "none (no source's bytes are stored twice)"


def test_report_says_apart_other_pictures_whose_stream_came_out_the_same(archive, tmp_path):
    """Two sources whose streams are the same bytes (tiny images at depth 1: a helper's 20,000 8 x 8
    noise images gave 3,774) share one blob, but are no copies: until session 59 the report said
    "copies: none" above a table of "3,774 copies"."""
    from rgbatch.archive import copies_text

    same = tmp_path / "same"
    a = current(archive / "archive")["a.png"]
    with PartWriter(same, a["model_id"]) as writer:
        writer.add(Row.from_dict(a))
        writer.add(Row.from_dict({**a, "path": "other.png", "source_hash": "f" * 64}))
    summary = json.loads(run("report", same, "--json").stdout)["summary"]
    assert summary["copies"]["images"] == 0 and summary["copies"]["shared"] == summary["copies"]["same_stream"] == 1
    assert copies_text(summary["copies"]) == ("1 image(s) of other sources whose stream came out the same as "
                                              "another's (the same pixels in another file, or tiny images at low "
                                              "depths), stored once")
    table = " ".join(run("report", same).stdout.replace("│", " ").split())
    assert "none (no source's" not in table and "each stream once: 1 image(s) share another's" in table


def test_report_adds_up_the_pixels_of_images_over_2_gigapixels(archive, tmp_path):
    """width * height of two INT32 columns overflowed in DuckDB beyond 2^31 pixels: one such row
    (an image compressed with a raised --max-pixels) made the whole report an error, exit 2 (a
    helper's round, session 63)."""
    huge = tmp_path / "huge"
    a = current(archive / "archive")["a.png"]
    with PartWriter(huge, a["model_id"]) as writer:
        writer.add(Row.from_dict({**a, "width": 100_000, "height": 100_000}))
    summary = json.loads(run("report", huge, "--folders", "1", "--json").stdout)["summary"]
    assert summary["pixels"] == 10**10 and summary["folders"][0]["images"] == 1


def test_report_escapes_the_model_ids_and_coders_a_manifest_holds(archive, tmp_path):
    """A crafted part's model id or coder with ESC bytes cleared the terminal (session 63's round)."""
    odd = tmp_path / "odd"
    a = current(archive / "archive")["a.png"]
    with PartWriter(odd, "\x1b]0;title\x07m") as writer:
        writer.add(Row.from_dict({**a, "model_id": "\x1b]0;title\x07m", "coder": "\x1b[2Jc"}))
    text = run("report", odd).stdout
    assert "\x1b" not in text and "\\x1b]0;title\\x07m" in text and "\\x1b[2Jc" in text


def test_report_adds_up_each_folder_a_chosen_number_of_levels_deep(archive, tmp_path):
    """`report --folders N`: per folder N levels deep (images higher up under their own folder,
    "" at the top), the ok images' count, source bytes, stored bytes, bpp and mean MS-SSIM,
    largest first; the table shows them, `--html` refuses the option."""
    rows = current(archive / "archive")
    summary = json.loads(run("report", archive / "archive", "--folders", "1", "--json").stdout)["summary"]
    top, sub = summary["folders"]
    assert (top["folder"], top["images"], sub["folder"], sub["images"]) == ("", 2, "sub", 1)
    assert top["bytes"] == len(rows["a.png"]["blob"]) + len(rows["b.png"]["blob"])
    assert sub["source_bytes"] == rows["sub/c.png"]["source_bytes"]
    assert sub["mean_msssim"] == pytest.approx(rows["sub/c.png"]["msssim"][-1])
    assert sub["bpp"] == pytest.approx(8 * len(rows["sub/c.png"]["blob"]) / (rows["sub/c.png"]["width"]
                                                                          * rows["sub/c.png"]["height"]))
    deep = archive_of(tmp_path, archive, ["x/y/z/a.png", "x/y/b.png", "x/c.png", "d.png", "e.png"], "deep")
    folders = json.loads(run("report", deep, "--folders", "2", "--json").stdout)["summary"]["folders"]
    # bytes, then name: x/y/z/a.png, written first, holds the blob the others share (they store none)
    assert [(f["folder"], f["images"], f["bytes"] > 0) for f in folders] == [("x/y", 2, True), ("", 2, False),
                                                                            ("x", 1, False)]
    table = run("report", deep, "--folders", "2").stdout
    assert "by folder, 2 level(s) deep" in table and "(top level)" in table and "x/y" in table
    assert run("report", deep, "--folders", "1", "--html", tmp_path / "p.html").exit_code == 2


def test_one_bad_row_never_stops_a_restore(archive, tiny_weights, tmp_path):
    deep = "/".join(["d" * 200] * 21) + "/deep.png"  # 4,200 characters, every name short enough
    paths = ["nul\0byte.png", "x" * 300 + ".png", deep, "f.png", "f.png/inner.png", "folder.png", "good.png"]
    hostile = archive_of(tmp_path, archive, paths)
    out = tmp_path / "out"
    (out / "folder.png").mkdir(parents=True)  # a folder where a PNG goes
    code, restored = restore_json(hostile, "--out", out, "--weights", tiny_weights)
    assert code == 1
    written = {w["path"]: w["file"] for w in restored["written"]}
    failed = dict(restored["failures"])
    assert set(written) | set(failed) == set(paths) and not set(written) & set(failed)
    assert {"good.png", "f.png", "f.png/inner.png"} <= set(written)
    assert written["f.png"].endswith("/f.png.png")  # the folder f.png/ keeps its name, the file moves aside
    assert "NUL" in failed["nul\0byte.png"] and "x" * 300 + ".png" in failed
    assert "folder" in failed["folder.png"]
    assert pngs_under(out) == {str(Path(f).relative_to(out)) for f in written.values()}  # counts are files


def test_restored_names_of_odd_paths_and_of_many():
    from rgbatch.archive import png_names

    names = png_names(["a.png", "A.PNG", "a", "a.jpg", "x/.png", "x/..png", "x/b.", "x/b.tar.gz", "x//y.png",
                       "p.png/q.png", "p.png", "P.PNG/z/w.jpg", "t/.hidden", "s.Png.png"])
    assert names == {"a.png": "a.png.png", "A.PNG": "A.PNG", "a": "a~2.png", "a.jpg": "a.jpg.png",
                     "x/.png": "x/.png.png", "x/..png": "x/..png", "x/b.": "x/b..png", "x/b.tar.gz": "x/b.tar.png",
                     "x//y.png": "x/y.png", "p.png/q.png": "p.png/q.png", "p.png": "p.png.png",
                     "P.PNG/z/w.jpg": "P.PNG/z/w.png", "t/.hidden": "t/.hidden.png", "s.Png.png": "s.Png.png"}
    many = [f"d{i % 7}/{i:06d}.jpg" for i in range(30_000)] + ["d0/000000.png"]
    names = png_names(many)  # linear in the paths (it was quadratic: restore on 200,000 images never began)
    assert names["d0/000000.png"] == "d0/000000.png" and names["d0/000000.jpg"] == "d0/000000.jpg.png"
    assert len(set(names.values())) == len(many)


def test_restored_names_never_collide_and_nothing_is_overwritten(archive, tiny_weights, tmp_path):
    paths = ["photo", "photo.png", "a.jpg", "a.png", "a.jpg.png", "A.PNG", "x//y.png", "x/y.png"]
    hostile = archive_of(tmp_path, archive, paths)
    out = tmp_path / "out"
    code, restored = restore_json(hostile, "--out", out, "--weights", tiny_weights)
    assert code == 0, restored
    names = {w["path"]: str(Path(w["file"]).relative_to(out)) for w in restored["written"]}
    assert len(names) == len(paths) and len({n.casefold() for n in names.values()}) == len(paths)
    assert pngs_under(out) == set(names.values())
    assert names["photo.png"] == "photo.png" and names["photo"] == "photo~2.png"
    assert names["A.PNG"] == "A.PNG" and names["a.png"] == "a.png.png"  # told apart where case is not
    assert names["a.jpg.png"] == "a.jpg.png" and names["a.jpg"] == "a.jpg~2.png"
    assert names["x//y.png"] == "x/y.png" and names["x/y.png"] == "x/y.png.png"

    # the same names whatever --select picks
    code, one = restore_json(hostile, "--out", tmp_path / "one", "--select", "a.jpg", "--weights", tiny_weights)
    assert code == 0 and pngs_under(tmp_path / "one") == {"a.jpg~2.png"}

    # again into the same folder: what it restored before is skipped, another file refused, none touched
    (out / "a.jpg.png").write_bytes(b"mine")
    code, again = restore_json(hostile, "--out", out, "--weights", tiny_weights)
    assert code == 1 and again["written"] == [] and len(again["skipped"]) == len(paths) - 1
    assert [path for path, why in again["failures"] if "not overwritten" in why] == ["a.jpg.png"]
    assert (out / "a.jpg.png").read_bytes() == b"mine"
    # and at another depth every file is another image: refused
    code, deeper = restore_json(hostile, "--out", out, "--weights", tiny_weights, "--iterations", "1")
    assert code == 1 and deeper["written"] == deeper["skipped"] == [] and len(deeper["failures"]) == len(paths)
    code, forced = restore_json(hostile, "--out", out, "--weights", tiny_weights, "--overwrite")
    assert code == 0 and len(forced["written"]) == len(paths) and (out / "a.jpg.png").read_bytes() != b"mine"


def test_restore_never_follows_a_symbolic_link_in_its_folder(archive, tiny_weights, tmp_path):
    hostile = archive_of(tmp_path, archive, ["link/x.png", "file-link.png", "fine.png"])
    outside, out = tmp_path / "outside", tmp_path / "out"
    outside.mkdir()
    out.mkdir()
    (out / "link").symlink_to(outside)
    (outside / "victim.png").write_bytes(b"keep me")
    (out / "file-link.png").symlink_to(outside / "victim.png")
    for extra in ([], ["--overwrite"]):
        code, restored = restore_json(hostile, "--out", out, "--weights", tiny_weights, *extra)
        assert code == 1
        assert dict(restored["failures"]).keys() >= {"link/x.png"}
        assert os.listdir(outside) == ["victim.png"] and (outside / "victim.png").read_bytes() == b"keep me"
    assert not (out / "file-link.png").is_symlink()  # --overwrite replaced the link itself, not its target
    # a linked folder holding the image as restored before, elsewhere: not taken for --out's own (it was
    # "restored there before, skipped", exit 0, until session 62; a copy of --out then lacked it)
    elsewhere, linked = tmp_path / "elsewhere", tmp_path / "linked"
    assert restore_json(hostile, "--out", elsewhere, "--weights", tiny_weights)[0] == 0
    linked.mkdir()
    (linked / "link").symlink_to(elsewhere / "link")
    code, restored = restore_json(hostile, "--out", linked, "--weights", tiny_weights)
    assert code == 1 and [s["path"] for s in restored["skipped"]] == [], restored
    assert "is a symbolic link or a file, not a folder: not followed" in dict(restored["failures"])["link/x.png"]


def write_part(folder, table: pa.Table, version: bytes = b"1", name="part-" + "0" * 32 + ".parquet"):
    folder.mkdir(exist_ok=True)
    pq.write_table(table.replace_schema_metadata({b"rgbatch.format_version": version, b"rgbatch.model_id": b"x"}),
                   folder / name)


def test_null_and_wrongly_typed_cells_are_worded_errors(archive, tiny_weights, tmp_path):
    good = current(archive / "archive")
    rows = [{**good["a.png"], "path": None}, {**good["b.png"], "model_id": None},
            {**good["sub/c.png"], "blob": None}, {**good["a.png"], "path": "fine.png"}]
    nulls = tmp_path / "nulls"
    write_part(nulls, pa.Table.from_pylist(rows, schema=SCHEMA))
    result = run("report", nulls, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)["summary"]
    assert (summary["ok"], summary["failed"]) == (2, 2)  # report reads no blobs: verify finds the null one
    assert all("damaged row" in f["error"] for f in summary["failures"])
    assert run("report", nulls).exit_code == 0
    code, restored = restore_json(nulls, "--out", tmp_path / "out", "--weights", tiny_weights)
    assert code == 1 and [w["path"] for w in restored["written"]] == ["fine.png"] and len(restored["failures"]) == 3
    result = run("verify", nulls, "--weights", tiny_weights, "--json")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert len(json.loads(result.stdout)["problems"]) == 3
    result = run("compact", nulls, "--json")  # copied as they are, and listed
    assert result.exit_code == 1 and "Traceback" not in result.output

    table = pa.Table.from_pylist([good["a.png"]], schema=SCHEMA)
    typed = tmp_path / "typed"
    write_part(typed, table.set_column(table.schema.get_field_index("width"), "width", pa.array(["wide"])))
    versioned = tmp_path / "versioned"
    write_part(versioned, table, version=b"one")
    for folder, words in ((typed, "'width' is string"), (versioned, "format 'one'")):
        for command in (["report"], ["verify", "--weights", tiny_weights],
                        ["restore", "--out", tmp_path / "never", "--weights", tiny_weights], ["compact"]):
            result = run(command[0], folder, *command[1:])
            assert result.exit_code == 2, (command, result.output)
            message = " ".join(result.stderr.split())  # one line, wrapped by rich to the terminal's width
            assert message.startswith("error:") and words in message and "part-" in message
            assert "Traceback" not in result.output and "optional" not in message  # no schema dump


# -- runs: a second writer, SIGTERM (issue 17, items 9 and 11) -------------------------------------------
def compress_command(src, out, weights, *extra):
    return [sys.executable, "-m", "rgbatch.cli", "compress", str(src), "--out", str(out), "--weights", str(weights),
            "--iterations", "2", "--tile-size", "32", *map(str, extra)]


def command_line(process) -> str:
    """A process's command line ("" once it is gone, or a zombie)."""
    import psutil  # Ray's own copy, on the path once ray is imported

    try:
        return " ".join(process.cmdline())
    except psutil.Error:
        return ""


def test_a_second_compress_into_a_busy_archive_is_refused(archive, tiny_weights, tmp_path, ray_cluster):
    from rgbatch.manifest import ArchiveLock

    work = tmp_path / "work"
    shutil.copytree(archive / "archive", work)
    with ArchiveLock(work, "compress"):  # a run in another process would hold it so; compact must wait
        compacting = run("compact", work)
    assert compacting.exit_code == 2 and "being written by compress" in " ".join(compacting.stderr.split())
    with ArchiveLock(tmp_path / "busy", "compress"):
        done = subprocess.run(compress_command(archive / "src", tmp_path / "busy", tiny_weights,
                                               "--address", ray_cluster.address),
                              capture_output=True, text=True, timeout=600)
    message = " ".join(done.stderr.split())
    assert done.returncode == 2, done.stderr
    assert message.startswith("error:") and "is being written by compress (pid" in message
    assert "Traceback" not in done.stderr and Archive(tmp_path / "busy", create=True).parts == []


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL])
def test_a_killed_compress_ends_cleanly_and_takes_its_ray_along(tiny_weights, tmp_path, rng, signum):
    import ray  # noqa: F401  (a dependency; it puts its own copy of psutil on the path)
    import psutil

    def signalled_run(images: int, out):
        """A compress of `images` new images, sent `signum` once its encoder has run 3 s; the
        process, the processes it started, and whether it was still running when signalled."""
        src = out.with_name(out.name + "-src")
        src.mkdir()
        for i in range(images):
            Image.fromarray(smooth_image(rng, 96, 96)).save(src / f"{i:04d}.png")
        # as from a terminal: a suite started in the background (`nohup make test &`) hands its
        # children SIGINT ignored, which Python and a user's compress then rightly keep ignoring
        run = subprocess.Popen(compress_command(src, out, tiny_weights, "--workers", "1"),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        family = set()
        try:
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline and run.poll() is None:
                children = psutil.Process(run.pid).children(recursive=True)
                family |= set(children)
                if any("EncodeWorker" in command_line(p) for p in children):
                    break
                time.sleep(0.5)
            time.sleep(3)  # some images encoded
            family |= set(psutil.Process(run.pid).children(recursive=True))
            running = run.poll() is None
            if signum == signal.SIGINT:  # a terminal's Ctrl-C: to its whole process group, Ray's workers too
                os.killpg(run.pid, signum)
            else:
                run.send_signal(signum)
        except BaseException:
            run.kill()
            raise
        return run, family, running

    # a fast or loaded machine can finish the first run's images before the signal (or be
    # closing a finished archive as it comes, and exit 0 with every image in it): then the
    # premise did not hold, and a run 4x the size is signalled instead
    for images in (300, 1200):
        run, family, running = signalled_run(images, tmp_path / f"out{images}")
        try:
            _, err = run.communicate(timeout=120)
        finally:
            if run.poll() is None:
                run.kill()
        if running and (run.returncode != 0 or images == 1200):
            break
    assert running, "both compress runs ended before the signal came"
    if signum != signal.SIGKILL:
        assert (run.returncode, signum) in ((143, signal.SIGTERM), (130, signal.SIGINT)), err
        assert ("terminated" if signum == signal.SIGTERM else "interrupted") in err
        assert "what was finished is committed" in " ".join(err.split())  # either way (until session 57: SIGTERM's)
        assert "Traceback" not in err and "SIGABRT" not in err and "*** " not in err
        # Ray's "(raylet) Task EncodeWorker.encode failed. There are infinite retries remaining" for
        # each call in flight as its actor was killed (until session 60: `pipeline.end_actors`)
        assert "(raylet)" not in err and "retries remaining" not in err, err
    gone, alive = psutil.wait_procs(family, timeout=30)
    assert not alive, [command_line(p) for p in alive]  # the Ray the run started is shut down with it
    out = Archive(tmp_path / f"out{images}", create=True)
    rows = out.table() if out.parts else None
    assert rows is None or set(rows["status"].to_pylist()) == {"ok"}  # what was committed is whole


@pytest.mark.slow
def test_a_compress_terminated_while_its_ray_starts_ends_as_terminated(tiny_weights, tmp_path, rng):
    """SIGTERM while `ray.init` starts the run's Ray (its GCS server up, the run not yet encoding):
    exit 143 and the same line as later, no traceback, and nothing of that Ray left. Until session
    54 Ray's own handler, in place for the whole of its start, made it exit 15 (or 1 after a head
    node's drain, or, raised inside a finalizer, a traceback and a run that went on), and a signal
    while its core worker connected a C++ stack dump and SIGABRT (`pipeline._signals_held`)."""
    import ray  # noqa: F401  (a dependency; it puts its own copy of psutil on the path)
    import psutil

    (tmp_path / "src").mkdir()
    Image.fromarray(smooth_image(rng, 40, 40)).save(tmp_path / "src" / "a.png")
    run = subprocess.Popen(compress_command(tmp_path / "src", tmp_path / "out", tiny_weights, "--workers", "1"),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    family = set()
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and run.poll() is None:
            with contextlib.suppress(psutil.Error):
                family |= set(psutil.Process(run.pid).children(recursive=True))
            if any("gcs_server" in command_line(p) for p in family):
                break
            time.sleep(0.02)
        starting = run.poll() is None and not any("EncodeWorker" in command_line(p) for p in family)
        run.send_signal(signal.SIGTERM)
        _, err = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            run.kill()
    assert starting, "the run was not starting its Ray when signalled"
    assert run.returncode == 143, err
    assert "terminated (SIGTERM)" in err and "Traceback" not in err and "*** " not in err  # no C++ stack dump
    _, alive = psutil.wait_procs(family, timeout=30)
    assert not alive  # the Ray it was starting went with it (its own shutdown, else rgbatch.raywatch)


def test_an_empty_output_name_is_refused_not_taken_for_the_current_folder(archive, tiny_weights, tmp_path,
                                                                        monkeypatch):
    """`--out ""` (a shell's unset variable): until session 54 `restore` wrote its PNGs into the
    current folder, `compress` took it for its default archive, `verify --sources ""` for the
    recorded places, and `encode`/`decode` said ": a folder is there"."""
    monkeypatch.chdir(tmp_path)
    result = run("restore", archive / "archive", "--out", "", "--weights", tiny_weights)
    assert result.exit_code == 2 and "--out is empty" in result.output
    for dry_run in ((), ("--dry-run",)):
        result = run("compress", archive / "src", "--out", "", "--weights", tiny_weights, *dry_run)
        assert result.exit_code == 2 and "--out is empty" in result.output
    result = run("verify", archive / "archive", "--sources", "", "--weights", tiny_weights)
    assert result.exit_code == 2 and "--sources is empty" in result.output
    result = run("encode", archive / "src" / "a.png", "--out", "", "--weights", tiny_weights)
    assert result.exit_code == 2 and "the output file's name is empty" in result.output
    assert list(tmp_path.iterdir()) == []


def test_restore_lists_its_files_in_path_order_whatever_order_the_parts_hold(archive, tiny_weights, tmp_path):
    """`restore --json` listed files in the order the parts held their rows and the workers
    finished (a helper's round, session 64): now in path order, as `report`'s."""
    rows = current(archive / "archive")
    for path in sorted(rows, reverse=True):  # one part each, the last path first
        with PartWriter(tmp_path / "a", rows[path]["model_id"]) as writer:
            writer.add(Row.from_dict(rows[path]))
    result = run("restore", tmp_path / "a", "--out", tmp_path / "r", "--weights", tiny_weights, "--json")
    assert [w["path"] for w in json.loads(result.stdout)["written"]] == sorted(rows), result.output


def test_a_report_of_failures_alone_costs_0_bytes_and_words_them_as_the_table_does(tmp_path):
    """An archive of failed images said `stored.bytes` null beside `blob_bytes` 0 (a helper's round,
    session 64). Its failures are as the archive holds them, in the rows and the summary alike."""
    with PartWriter(tmp_path / "a", "00112233aabbccdd") as writer:
        writer.add(Row(path="big.png").failed("20x20 pixels, over the limit of 100 pixels (max_pixels)"))
    summary = json.loads(run("report", tmp_path / "a", "--json").stdout)["summary"]
    assert (summary["stored"]["images"], summary["stored"]["bytes"], summary["blob_bytes"]) == (0, 0, 0)
    assert summary["failures"] == [{"path": "big.png", "error": "20x20 pixels, over the limit of 100 pixels "
                                                                "(max_pixels)"}]


def test_restore_and_verify_take_the_pixel_limit_of_decoding(archive, tiny_weights, tmp_path):
    """Images are 32x48, 40x48 and 48x48: a limit of 1600 pixels refuses the two larger, each
    alone (an archive compressed with `compress --max-pixels` above the default restores with
    the same option)."""
    result = run("restore", archive / "archive", "--out", tmp_path / "r", "--weights", tiny_weights,
                 "--max-pixels", 1600, "--json")
    assert result.exit_code == 1, result.output
    restored = json.loads(result.stdout)
    assert [w["path"] for w in restored["written"]] == ["a.png"]
    assert sorted(p for p, _ in restored["failures"]) == ["b.png", "sub/c.png"]
    assert all("over the limit" in why and why.endswith("(--max-pixels)") for _, why in restored["failures"])  # as
    # the table says it (JSON said `(max_pixels)` until session 64)
    result = run("verify", archive / "archive", "--weights", tiny_weights, "--max-pixels", 1600, "--json")
    assert result.exit_code == 1
    problems = json.loads(result.stdout)["problems"]
    assert sorted(p for p, _ in problems) == ["b.png", "sub/c.png"]
    assert all("over the limit" in why and why.endswith("(--max-pixels)") for _, why in problems)
    assert run("restore", archive / "archive", "--out", tmp_path / "z", "--max-pixels", 0).exit_code == 2
    assert run("verify", archive / "archive", "--weights", tiny_weights, "--json").exit_code == 0  # the default limit


def test_compress_resample_then_restore_returns_full_size_images(ray_cluster, tiny_weights, tmp_path, rng):
    from rgbatch import bitstream
    (tmp_path / "src").mkdir()
    sizes = {"big.png": (80, 96), "small.png": (40, 50)}  # half of 40 is under 32 pixels: coded as it is
    for name, (h, w) in sizes.items():
        Image.fromarray(smooth_image(rng, h, w)).save(tmp_path / "src" / name)
    assert run("compress", tmp_path / "src", "--out", tmp_path / "x", "--resample", "0.3").exit_code == 2
    result = run("compress", tmp_path / "src", "--out", tmp_path / "archive", "--weights", tiny_weights,
                 "--iterations", "3", "--resample", "0.5", "--address", ray_cluster.address, "--json")
    assert result.exit_code == 0, result.output
    rows = current(tmp_path / "archive")
    scales = {path: bitstream.read_header(row["blob"]).scale for path, row in rows.items()}
    assert scales == {"big.png": 2, "small.png": 0}
    assert {path: row["scale"] for path, row in rows.items()} == {"big.png": 0.5, "small.png": 1.0}
    assert (rows["big.png"]["width"], rows["big.png"]["height"]) == (96, 80)
    report = json.loads(run("report", tmp_path / "archive", "--json").stdout)
    coders = report["summary"]["coding"].pop("coder")
    assert report["summary"]["coding"] == {"scale": {"1": 1, "0.5": 1}, "partial_last_chunk": 0, "unknown": 0}
    assert coders == {report["images"][0]["coder"]: 2}  # one coder, named in each image too
    assert {i["path"]: i["scale"] for i in report["images"]} == {"big.png": 0.5, "small.png": 1.0}
    text = run("report", tmp_path / "archive").output
    assert "1 of 2 coded smaller (scale 0.5: 1)" in text and "3 at 0.5" in text  # the worst images' depth column
    result = run("restore", tmp_path / "archive", "--out", tmp_path / "restored", "--iterations", "2",
                 "--weights", tiny_weights)
    assert result.exit_code == 0, result.output
    codec = Codec.load(tiny_weights, device="cpu")
    for name, (h, w) in sizes.items():
        restored = np.asarray(Image.open(tmp_path / "restored" / name))
        assert restored.shape == (h, w, 3)
        assert np.array_equal(restored, codec.decode(rows[name]["blob"], iterations=2))


def test_compress_partial_then_restore_returns_the_measured_image(ray_cluster, default_weights, tmp_path):
    """A partial last iteration, the default with a target (no flag): a row may end with a partial
    last chunk; restore gives the image whose MS-SSIM the manifest records (exactly, with the exact
    decoder in the encoder's loop)."""
    from rgbatch import bitstream
    from rgbatch.imageio import read_image
    from rgbatch.metrics import msssim_many

    (tmp_path / "src").mkdir()
    shutil.copy(DATA / "kodim23_crop192.png", tmp_path / "src" / "a.png")
    assert run("compress", tmp_path / "src", "--out", tmp_path / "x", "--target-msssim", "0.9", "--partial",
               "--coder", "raw").exit_code == 2
    result = run("compress", tmp_path / "src", "--out", tmp_path / "archive", "--target-msssim", "0.94",
                 "--tile-size", "128", "--decoding", "exact-loop", "--address", ray_cluster.address, "--json")
    assert result.exit_code == 0, result.output
    row = current(tmp_path / "archive")["a.png"]
    header = bitstream.read_header(row["blob"])
    assert header.steps and row["iterations"] == header.iterations  # tests/test_partial.py: 24 steps of 4
    assert (row["last_steps"], row["scale"]) == (header.steps, 1.0)
    report = json.loads(run("report", tmp_path / "archive", "--json").stdout)
    assert report["summary"]["coding"]["partial_last_chunk"] == 1 and report["images"][0]["last_steps"] == header.steps
    text = " ".join(run("report", tmp_path / "archive").output.replace("│", " ").split())  # as the table wraps it
    assert "1 with a partial last chunk" in text and f"{header.iterations} ({header.steps} steps)" in text
    result = run("restore", tmp_path / "archive", "--out", tmp_path / "restored")
    assert result.exit_code == 0, result.output
    restored = np.asarray(Image.open(tmp_path / "restored" / "a.png"))
    codec = Codec.load(default_weights)
    assert np.array_equal(restored, codec.decode(row["blob"]))
    original = read_image(DATA / "kodim23_crop192.png")[0]
    assert row["msssim"][-1] >= 0.94
    assert msssim_many(original, [restored])[0] == pytest.approx(row["msssim"][-1], abs=1e-6)


def _exif(orientation: int, taken: str) -> bytes:
    exif = Image.Exif()
    exif[0x0112], exif[0x0132] = orientation, "2020:01:02 03:04:05"  # Orientation, DateTime
    exif.get_ifd(0x8769)[0x9003] = taken  # the Exif IFD's DateTimeOriginal
    return exif.tobytes()


def test_restore_writes_back_the_sources_colour_profile_and_exif(ray_cluster, tiny_weights, tmp_path, rng):
    from PIL import ImageCms
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    cmyk_profile = srgb[:16] + b"CMYK" + srgb[20:]  # a profile for other data than RGB: not kept
    (tmp_path / "src").mkdir()
    xmp = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
           b'<rdf:Description xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmp:Rating="5"/></rdf:RDF></x:xmpmeta>')
    Image.fromarray(smooth_image(rng, 32, 64)).save(tmp_path / "src" / "photo.jpg", quality=95, icc_profile=srgb,
                                                     exif=_exif(6, "2019:05:06 07:08:09"), xmp=xmp)
    Image.fromarray(smooth_image(rng, 32, 32)).convert("CMYK").save(tmp_path / "src" / "print.jpg",
                                                                    icc_profile=cmyk_profile)
    Image.fromarray(smooth_image(rng, 32, 32)).save(tmp_path / "src" / "plain.png")
    from PIL import PngImagePlugin

    text = PngImagePlugin.PngInfo()
    text.add_text("parameters", "a cat, steps: 20")  # a generated image's: no text was kept until session 64
    Image.fromarray(smooth_image(rng, 32, 32)).save(tmp_path / "src" / "made.png", pnginfo=text, dpi=(300, 300))
    for archive, flags in (("kept", []), ("stripped", ["--strip-metadata"])):
        result = run("compress", tmp_path / "src", "--out", tmp_path / archive, "--weights", tiny_weights,
                     "--iterations", "2", "--address", ray_cluster.address, *flags)
        assert result.exit_code == 0, result.output
        result = run("restore", tmp_path / archive, "--out", tmp_path / f"{archive}-png", "--weights", tiny_weights)
        assert result.exit_code == 0, result.output
    photo = Image.open(tmp_path / "kept-png" / "photo.png")
    assert photo.size == (32, 64)  # upright: the orientation applied to the pixels, and its tag gone
    assert photo.info["icc_profile"] == srgb
    exif = photo.getexif()
    assert 0x0112 not in exif and exif[0x0132] == "2020:01:02 03:04:05"
    assert exif.get_ifd(0x8769)[0x9003] == "2019:05:06 07:08:09"
    assert photo.info["xmp"] == xmp  # a rating kept (no XMP was, until session 63)
    made = Image.open(tmp_path / "kept-png" / "made.png")
    assert made.info["parameters"] == "a cat, steps: 20" and made.info["dpi"] == pytest.approx((300, 300), abs=1e-3)
    assert "parameters" not in Image.open(tmp_path / "stripped-png" / "made.png").info
    for name in ("print.png", "plain.png"):
        restored = Image.open(tmp_path / "kept-png" / name)
        assert "icc_profile" not in restored.info and not restored.getexif(), name
    for name in ("photo.png", "print.png", "plain.png"):
        restored = Image.open(tmp_path / "stripped-png" / name)
        assert "icc_profile" not in restored.info and not restored.getexif() and "xmp" not in restored.info, name
    rows = current(tmp_path / "kept")
    assert rows["photo.jpg"]["icc_profile"] == srgb and rows["plain.png"]["exif"] is None
    assert rows["made.png"]["notes"] == b'{"text":{"parameters":"a cat, steps: 20"},"dpi":[299.9994,299.9994]}'
    assert rows["plain.png"]["notes"] is None


def test_verify_allows_a_recorded_msssim_one_level_away_where_a_level_moves_it_much(rng):
    """The recorded MS-SSIM is the encoder loop's; the exact decoder matches it within a level,
    which on a dark flat image moves MS-SSIM by thousandths (verify called such images wrong)."""
    from rgbatch.archive import MSSSIM_TOLERANCE, level_tolerance
    from rgbatch.metrics import msssim

    black = np.zeros((16, 16, 3), np.uint8)
    decoded = black + 2
    assert level_tolerance(black, decoded, msssim(black, decoded)) > 2e-3
    photo = np.asarray(Image.open(DATA / "kodim23_crop192.png"))
    near = np.clip(photo.astype(int) + rng.integers(-1, 2, photo.shape), 0, 255).astype(np.uint8)
    assert level_tolerance(photo, near, msssim(photo, near)) == MSSSIM_TOLERANCE


def test_a_report_whose_images_cannot_be_sorted_says_so_before_any_output(archive, tmp_path, monkeypatch):
    """`report --json` spills its images to TMPDIR (`archive._Spill`): a full disk there, or
    DuckDB refusing, is one worded error (exit 2) and leaves no temporary folder."""
    from rgbatch import archive as archive_module

    class FullDisk(pq.ParquetWriter):
        def write_table(self, *args, **kwargs):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with monkeypatch.context() as patch:
        patch.setattr(archive_module.pq, "ParquetWriter", FullDisk)
        result = runner.invoke(app, ["report", str(archive / "archive"), "--json"])
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.strip() == (f"error: {tmp_path}: cannot sort the report's images in a temporary folder there "
                                     f"(No space left on device): set TMPDIR to a folder with room")
    monkeypatch.setattr(archive_module, "SORT_MEMORY", "no size")  # DuckDB refuses it
    result = runner.invoke(app, ["report", str(archive / "archive"), "--json"])
    assert result.exit_code == 2 and result.stdout == "" and "set TMPDIR" in result.stderr
    assert [p.name for p in tmp_path.iterdir()] == []


@pytest.mark.parametrize("args", [("bench", "SRC", "--out", ""), ("bench", "SRC", "--manifest", ""),
                                  ("train", "SRC", "--out", ""), ("pack", "SRC", "--out", ""),
                                  ("info", "--weights", ""), ("restore", "ARCHIVE", "--out", "x", "--weights", ""),
                                  ("slim", "", "--out", "x.pt")])
def test_an_empty_file_or_folder_option_is_refused_for_every_command(archive, tmp_path, monkeypatch, args):
    """Options typed as paths became '.' before rgbatch saw them: until session 55 `bench --out ""`
    wrote its summary and plots into the current folder, `info --weights ""` said "no weight file
    at ."; now typer refuses the empty value (`cli.path`), exit 2, before any work."""
    monkeypatch.chdir(tmp_path)
    args = [str(archive / "src") if a == "SRC" else str(archive / "archive") if a == "ARCHIVE" else a for a in args]
    result = run(*args)
    assert result.exit_code == 2 and "is empty: give a file or folder name" in result.output
    assert list(tmp_path.iterdir()) == []


CTRL_C = """
import os, signal, sys, time
import typer
from rgbatch.__main__ import start_quietly
start_quietly()  # as the rgbatch script starts
from rgbatch.cli import user_errors
if sys.argv[1] == "start":  # as if still importing
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.5)
try:
    with user_errors():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.5)
except typer.Exit as e:
    sys.exit(e.exit_code)
os.kill(os.getpid(), signal.SIGINT)  # on its way out
time.sleep(0.5)
print("went on")
"""


@pytest.mark.parametrize("errors", ["user_errors", "archive_errors"])
def test_an_error_raised_while_unwinding_from_ctrl_c_is_the_ctrl_c(errors, capsys):
    """A Ctrl-C inside a part's writing, whose closing then wrote to the closed file: "error: I/O
    operation on closed file", exit 2 (benchmarks/fuzz_kill.py seed 20, session 57). The
    Ctrl-C is what happened: "interrupted", 130; an error of its own stays one."""
    import typer

    from rgbatch import cli

    guard = getattr(cli, errors)
    with pytest.raises(typer.Exit) as ended:
        with guard():
            try:
                raise KeyboardInterrupt
            finally:
                raise ValueError("I/O operation on closed file")
    assert ended.value.exit_code == 130 and capsys.readouterr().err.startswith("interrupted")
    with pytest.raises(typer.Exit) as ended:
        with guard():
            try:
                raise OSError("disk full")
            finally:
                raise ValueError("I/O operation on closed file")
    assert ended.value.exit_code == 2 and "error: I/O operation on closed file" in capsys.readouterr().err


@pytest.mark.parametrize("ignored", [False, True])
@pytest.mark.parametrize("when", ["start", "work"])
def test_ctrl_c_while_a_command_starts_ends_it_quietly_and_while_it_works_as_interrupted(when, ignored):
    """A Ctrl-C while a command still imports ended it with a KeyboardInterrupt traceback, or,
    raised inside Ray's extension module as it loaded, was printed and swallowed there: the
    command went on with all its work (benchmarks/fuzz_kill.py, session 55). Until its handling is
    in place (`cli.user_errors`) SIGINT now has the default action (`rgbatch.__main__`): killed, no
    output (a shell's 130); within it "interrupted", exit 130. A SIGINT the command was started
    ignoring (a shell's background job) stays ignored."""
    handler = signal.SIG_IGN if ignored else signal.SIG_DFL
    done = subprocess.run([sys.executable, "-c", CTRL_C, when], capture_output=True, text=True, timeout=60,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, handler))
    if ignored:
        assert (done.returncode, done.stdout, done.stderr) == (0, "went on\n", "")
    elif when == "start":
        assert (done.returncode, done.stderr) == (-signal.SIGINT, "")
    else:
        assert done.returncode == 130 and done.stderr.strip() == "interrupted"


V1_ARCHIVE = Path(__file__).parent / "archive_v1" / "archive"


@pytest.mark.parametrize("args", [["report", str(V1_ARCHIVE)], ["report", str(V1_ARCHIVE), "--json"],
                                  ["report", str(V1_ARCHIVE), "--html", "/dev/stdout", "--show", "0"],
                                  ["compress", "-h"]])
def test_a_reader_that_stops_ends_the_command_quietly_with_141(args):
    """`rgbatch report A | head -1` exited 1, the code of failed images (rich's and click's quiet
    exit on a closed pipe); now 141, as a shell reports a program killed by SIGPIPE, nothing on
    stderr. A page written to /dev/stdout so too (until session 61: exit 1), and a command's help
    (typer's console, until session 62: exit 1)."""
    command = [sys.executable, "-m", "rgbatch", *args]
    run = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    run.stdout.close()  # before the command has written anything: it still imports
    assert (run.wait(timeout=60), run.stderr.read()) == (141, b"")


def test_a_system_error_outside_a_command_is_not_called_the_output_s(monkeypatch, capsys):
    """`main` words an OSError that escapes a command: "writing the output" only for a failed write
    (stdout on a full disk); out of file descriptors was said so too until session 62."""
    import errno

    import rgbatch.__main__
    from rgbatch import cli

    monkeypatch.setattr(rgbatch.__main__, "start_quietly", lambda: None)  # the test process's own signals
    monkeypatch.setattr(cli.signalwatch, "watch", lambda: None)
    for error, said in ((OSError(errno.EMFILE, "Too many open files", "/x/y.py"), "/x/y.py: Too many open files"),
                        (OSError(errno.ENOSPC, "No space left on device"),
                         "writing the output: No space left on device")):
        def failing():
            raise error

        monkeypatch.setattr(cli, "app", failing)
        monkeypatch.setattr(cli, "_quiet_stdout", lambda: None)
        with pytest.raises(SystemExit) as ended:
            cli.main()
        assert ended.value.code == 2 and capsys.readouterr().err == f"error: {said}\n"


def test_the_command_hides_the_image_readers_warnings_and_the_library_sets_no_filter(monkeypatch, capsys):
    """Pillow's warnings about the files it reads (a damaged TIFF tag skipped) are the command's to
    hide: the library hid them by swapping the process's warning filters, which threads interleaved
    (a host's filters undone, or one of its own left installed: session 63)."""
    import warnings

    import rgbatch.__main__
    from rgbatch import cli

    monkeypatch.setattr(rgbatch.__main__, "start_quietly", lambda: None)
    monkeypatch.setattr(cli.signalwatch, "watch", lambda: None)
    monkeypatch.setattr(cli, "app", lambda: warnings.warn_explicit("Possibly corrupt EXIF data", UserWarning,
                                                                   "TiffImagePlugin.py", 1, "PIL.TiffImagePlugin"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cli.main()
        warnings.warn("a host's own", UserWarning)
    assert [str(w.message) for w in caught] == ["a host's own"]


def test_an_unexpected_exception_is_one_line_with_exit_2(monkeypatch):
    """docs/ARCHIVE.md: "an unexpected exception too: `error: unexpected <kind>: <message>`, exit 2"."""
    from rgbatch import archive

    def broken(*args, **kwargs):
        raise TypeError("boom")

    monkeypatch.setattr(archive, "report", broken)
    result = run("report", V1_ARCHIVE)
    assert (result.exit_code, result.stderr) == (2, "error: unexpected TypeError: boom\n")


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
@pytest.mark.parametrize("as_json", [False, True])
@pytest.mark.parametrize("what", ["report", "compress --dry-run"])
def test_output_onto_a_full_disk_is_one_line_not_a_traceback(as_json, what, tmp_path):
    """`compress --dry-run` said `error: [Errno 28] No space left on device` (until session 64)."""
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    command = [sys.executable, "-m", "rgbatch", *(["report", str(V1_ARCHIVE)] if what == "report" else
                                                  ["compress", str(tmp_path), "--out", str(tmp_path / "x"), "--dry-run"])]
    command += ["--json"] if as_json else []
    with open("/dev/full", "w") as full:
        run = subprocess.run(command, stdout=full, stderr=subprocess.PIPE, text=True, timeout=60)
    last = run.stderr.splitlines()[-1]  # after the dry run's lines of what it reads
    assert (run.returncode, last, run.stderr.count("error")) == (2, "error: writing the output: No space left on device", 1)


def test_a_closed_stdout_is_one_line_and_a_closed_stderr_is_dev_null():
    """Started without a stdout (`>&-`), `report --json` ended in a traceback, exit 1; without a
    stderr, Ray (compress) did not start (a helper's round, session 63). A missing descriptor is
    opened on /dev/null, so that no file the command opens takes its number."""
    command = [sys.executable, "-m", "rgbatch", "report", str(V1_ARCHIVE), "--json"]
    run = subprocess.run(command, stderr=subprocess.PIPE, text=True, timeout=60, preexec_fn=lambda: os.close(1))
    assert (run.returncode, run.stderr) == (2, "error: writing the output: Bad file descriptor\n")
    probe = ("import os, sys; from rgbatch import cli; cli._standard_streams(); "
             "print(sys.stderr is not None, os.path.realpath(f'/proc/self/fd/2'), file=sys.stdout)")
    run = subprocess.run([sys.executable, "-c", probe], stdout=subprocess.PIPE, text=True, timeout=60,
                         preexec_fn=lambda: os.close(2))
    assert run.stdout.split() == ["True", os.devnull]


def test_a_command_with_a_progress_bar_on_a_terminal_ends(tmp_path):
    """With stderr a terminal rich's progress bar proxies sys.stderr into `err`, whose stream wrote
    into sys.stderr: the text fed itself for ever (a hang, session 63's review). A pseudo-terminal."""
    import pty

    archive = tmp_path / "archive"
    shutil.copytree(V1_ARCHIVE, archive)
    main, terminal = pty.openpty()
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        run = subprocess.run([sys.executable, "-m", "rgbatch", "compact", str(archive), "--depth", "1"],
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=terminal, env=env, timeout=60)
    finally:
        os.close(terminal)
        os.close(main)
    assert run.returncode == 0 and b"2 image(s) cut to a smaller depth" in run.stdout, run.stdout


def test_diagnostics_that_cannot_be_written_do_not_stop_the_command(monkeypatch):
    """`2>/dev/full`: compress stopped at its first progress line, exit 1, the error said nowhere
    (the error about the error failed too); stderr holds diagnostics alone, so they are dropped."""
    from rgbatch import cli

    class Full(io.StringIO):
        def write(self, text):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(sys, "stderr", Full())
    cli._note("4 source(s); the archive holds 0 image(s); 1 cpu encoder(s)")  # raised until session 63
    cli.err.print("error: x")


def test_a_cluster_picked_by_ray_address_is_said(monkeypatch, tmp_path):
    """RAY_ADDRESS exported for other work sent compress to that cluster unsaid (session 63)."""
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")
    said = "on the Ray cluster at 127.0.0.1:1 (RAY_ADDRESS; --address names another)"
    assert said in run("compress", tmp_path / "missing", "--out", tmp_path / "a").stderr
    assert said not in run("compress", tmp_path / "missing", "--out", tmp_path / "a", "--address", "x:1").stderr
    assert said not in run("restore", V1_ARCHIVE, "--out", tmp_path / "r").stderr  # no --workers: no Ray


def test_a_locale_of_another_encoding_reads_names_as_utf8(tmp_path):
    """LC_ALL=C with UTF-8 mode and the locale coercion off: Python reads a file name's bytes as
    ASCII, and a valid UTF-8 name was refused as "not valid UTF-8" (session 63): the command runs
    itself again in UTF-8 mode."""
    archive = tmp_path / "日本"
    shutil.copytree(V1_ARCHIVE, archive)
    env = {**os.environ, "LC_ALL": "C", "PYTHONCOERCECLOCALE": "0", "PYTHONUTF8": "0"}
    run = subprocess.run([sys.executable, "-m", "rgbatch", "report", str(archive), "--json"], capture_output=True,
                         env=env, timeout=60)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["summary"]["ok"] == 2


def test_a_report_needs_no_torch():
    """`report` imported torch through the codec, tiling and the context model it never used: 2 s
    and 190 MB of a small report's 2.5 s and 350 MB (a helper's round, session 63)."""
    code = f"import sys; from rgbatch import archive; archive.report({str(V1_ARCHIVE)!r}); print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_restore_says_what_it_restored_shallower_and_what_was_never_archived(tmp_path):
    """`restore --depth 3` of an archive holding one image 2 deep and one failure of `compress`
    said only "2 image(s) written", exit 0 (a helper's round, session 58)."""
    result = run("restore", V1_ARCHIVE, "--out", tmp_path / "o", "--depth", "3")
    text = " ".join(result.stdout.split())
    assert result.exit_code == 0, result.output
    assert "2 image(s) written under" in text and "1 of them stored shallower than --depth 3: at their depth" in text
    assert ("1 image(s) failed at compress time and are not archived: nothing to restore (`rgbatch report` lists "
            "them)") in text
    result = run("restore", V1_ARCHIVE, "--out", tmp_path / "j", "--depth", "3", "--json")
    assert json.loads(result.stdout)["not_archived"] == 1


def test_a_grey_source_restores_as_a_grey_png_of_the_decoded_channels_mean(tiny_weights, tmp_path, rng):
    """The codec codes colour: a grey source's decoded channels differ (up to 60 levels at depth
    1 on a grey Kodak crop), and `restore` wrote that colour noise as an RGB PNG until session 58.
    Now a grey PNG of the channels' mean, rounded (nearer the source at every depth); a copy of it
    read back from its restored file is the same grey."""
    src = tmp_path / "src"
    src.mkdir()
    grey = smooth_image(rng, 32, 64)[..., 1]
    Image.fromarray(grey, "L").save(src / "grey.png")
    (src / "copy").mkdir()
    Image.fromarray(grey, "L").save(src / "copy" / "grey.png")
    archive_images(src, tmp_path / "archive", tiny_weights, iterations=2)
    result = run("restore", tmp_path / "archive", "--out", tmp_path / "png", "--weights", tiny_weights)
    assert result.exit_code == 0, result.output
    row = current(tmp_path / "archive")["grey.png"]
    decoded = Codec.load(tiny_weights, device="cpu").decode(row["blob"]).astype(np.uint16)
    for name in ("grey.png", "copy/grey.png"):
        restored = Image.open(tmp_path / "png" / name)
        assert restored.mode == "L" and np.array_equal(np.asarray(restored), (decoded.sum(axis=2) + 1) // 3), name
