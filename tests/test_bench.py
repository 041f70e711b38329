import dataclasses
import json
import os
import sys
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image
from typer.testing import CliRunner

from rgbatch import bitstream, entropy
from rgbatch.bench import (SCHEMA, bd_rate, bench, bpp_at_quality, measure, read_manifest, recoded_bytes, summarize,
                           summary_tables)
from rgbatch.classical import CLASSICAL_CODECS, decode, encode
from rgbatch.cli import app
from rgbatch.codec import Codec
from rgbatch.imageio import read_image
from rgbatch.metrics import msssim

from conftest import DATA

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
import header_cost  # noqa: E402
import post_filter  # noqa: E402

SWEEPS = {"jpeg420": (10, 50, 90), "webp": (20, 80)}


@pytest.fixture(scope="module")
def small_run(tiny_weights, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    report = bench(DATA, out / "plots", out / "manifests" / "bench.parquet", weights=tiny_weights, iterations=3,
                   classical_sweeps=SWEEPS, speed_images=1, speed_depths=(1, 3), log=lambda message: None)
    return report, out


# -- the summary rules, on numbers worked out by hand --------------------------------------------
def test_bpp_at_quality_interpolates_linearly_in_log_bpp():
    # half way from 0.8 to 0.9 in quality is half way from 0.1 to 0.4 in log rate: 0.2
    assert bpp_at_quality([0.4, 0.1], [0.9, 0.8], 0.85) == pytest.approx(0.2)


def test_bpp_at_quality_takes_the_first_crossing_of_a_bumpy_curve():
    expected = np.exp(np.log(0.1) + (0.9 - 0.8) / 0.12 * (np.log(0.2) - np.log(0.1)))
    assert bpp_at_quality([0.1, 0.2, 0.3, 0.4], [0.8, 0.92, 0.88, 0.95], 0.9) == pytest.approx(expected)


def test_bpp_at_quality_at_the_ends_of_the_curve():
    assert bpp_at_quality([0.2, 0.5], [0.93, 0.97], 0.9) == 0.2  # already there at the lowest setting
    assert bpp_at_quality([0.2, 0.5], [0.93, 0.97], 0.98) is None  # never there


def test_bd_rate_of_a_curve_shifted_in_rate():
    quality = np.array([10.0, 12, 15, 18, 20])
    bpp = np.exp(0.1 * quality - 2) + 0.01 * quality ** 2 / 100  # any smooth increasing curve
    assert bd_rate(bpp, quality, bpp, quality) == pytest.approx(0)
    assert bd_rate(bpp, quality, 0.8 * bpp, quality) == pytest.approx(-20)
    assert bd_rate(0.8 * bpp, quality, bpp, quality) == pytest.approx(25)


def test_bd_rate_needs_a_shared_quality_range_and_four_points():
    quality = np.array([10.0, 12, 15, 18])
    bpp = np.array([0.2, 0.3, 0.5, 0.9])
    assert bd_rate(bpp, quality, bpp, quality + 10) is None
    assert bd_rate(bpp, quality, bpp[:3], quality[:3]) is None


def _rows(points):
    """A bench table from (codec, quality, path, bpp, msssim, encode_s) tuples of 100x100 images."""
    return pa.Table.from_pylist([
        {"codec": c, "quality": q, "path": p, "width": 100, "height": 100, "bytes": round(b * 1250), "bpp": b,
         "msssim": m, "psnr": 30.0, "encode_s": s, "decode_s": s} for c, q, p, b, m, s in points], schema=SCHEMA)


def test_mean_bpp_is_given_only_when_every_image_reaches_the_target():
    rows = _rows([("jpeg420", 10, "a.png", 0.1, 0.80, 0.01), ("jpeg420", 90, "a.png", 0.4, 0.96, 0.02),
                  ("jpeg420", 10, "b.png", 0.2, 0.85, 0.01), ("jpeg420", 90, "b.png", 0.8, 0.93, 0.04)])
    needed = summarize(rows)["codecs"]["jpeg420"]["bpp_at_msssim"]
    a, b = bpp_at_quality([0.1, 0.4], [0.80, 0.96], 0.90), bpp_at_quality([0.2, 0.8], [0.85, 0.93], 0.90)
    assert needed["0.90"] == {"bpp": pytest.approx((a + b) / 2), "reached": 2, "images": 2}
    assert needed["0.95"] == {"bpp": None, "reached": 1, "images": 2}


def test_speed_is_all_pixels_over_all_seconds_of_the_timed_rows():
    rows = _rows([("rgbatch-raw", 1, "a.png", 0.1, 0.8, 0.02), ("rgbatch-raw", 1, "b.png", 0.1, 0.8, 0.03),
                  ("rgbatch-raw", 2, "a.png", 0.2, 0.9, None)])
    entry = summarize(rows)["codecs"]["rgbatch-raw"]
    assert entry["speed_by_depth"] == {"1": {"encode_mp_s": pytest.approx(2e4 / 0.05 / 1e6),
                                             "decode_mp_s": pytest.approx(2e4 / 0.05 / 1e6)}}


# -- a whole run on two small crops ---------------------------------------------------------------
def test_rows_hold_every_codec_setting_and_image(small_run):
    report, _ = small_run
    rows = report.rows.to_pylist()
    assert report.rows.schema.names == SCHEMA.names
    assert len(rows) == 2 * (3 + 2 + 3)
    assert {(r["codec"], r["quality"]) for r in rows} == (
        {("jpeg420", q) for q in SWEEPS["jpeg420"]} | {("webp", q) for q in SWEEPS["webp"]}
        | {("rgbatch-raw", d) for d in (1, 2, 3)})
    for r in rows:
        assert r["bpp"] == pytest.approx(8 * r["bytes"] / (r["width"] * r["height"]))
    timed = {(r["path"], r["quality"]) for r in rows if r["codec"] == "rgbatch-raw" and r["encode_s"] is not None}
    assert timed == {("kodim05_crop192.png", 1), ("kodim05_crop192.png", 3)}


def test_rgbatch_rows_are_what_decoding_the_cut_stream_gives(small_run, tiny_weights):
    # the bench scores each depth from the encoder's own reconstruction; it must be the decoder's in
    # the encoder's arithmetic (its loop in float, by default: the exact decoder's within 2e-5, test_exact.py)
    report, _ = small_run
    image, _ = read_image(DATA / "kodim23_crop192.png")
    codec = Codec.load(tiny_weights, decoding="float")
    blob = codec.encode(image, 3, measure=False).blob
    rows = sorted((r for r in report.rows.to_pylist() if r["codec"] == "rgbatch-raw"
                   and r["path"] == "kodim23_crop192.png"), key=lambda r: r["quality"])
    for r in rows:
        cut = bitstream.truncate(blob, r["quality"])
        assert r["bytes"] == len(cut)
        assert r["msssim"] == pytest.approx(msssim(image, codec.decode(cut)), abs=1e-6)


def test_classical_rows_score_the_decoded_file(small_run):
    report, _ = small_run
    image, _ = read_image(DATA / "kodim05_crop192.png")
    row = next(r for r in report.rows.to_pylist() if (r["codec"], r["quality"], r["path"]) ==
               ("webp", 20, "kodim05_crop192.png"))
    data = encode(image, CLASSICAL_CODECS["webp"], 20)
    assert row["bytes"] == len(data)
    assert row["msssim"] == pytest.approx(msssim(image, decode(data)), abs=1e-6)


def test_header_cost_takes_the_whole_header_off_rgbatch_rows_alone(small_run):
    # benchmarks/header_cost.py: its bound is the stream without its header, the other codecs as measured
    report, _ = small_run
    rows = report.rows.to_pylist()
    cut = header_cost.without_header_bytes(report.rows, "rgbatch-raw", *header_cost.WHOLE).to_pylist()
    for before, after in zip(rows, cut):
        if before["codec"] == "rgbatch-raw":
            assert after["bytes"] == before["bytes"] - bitstream.header_size(before["quality"])
            assert after["bpp"] == pytest.approx(8 * after["bytes"] / (after["width"] * after["height"]))
        else:
            assert after == before


def test_post_filter_charges_every_depth_and_never_lowers_quality():
    image, _ = read_image(DATA / "kodim23_crop192.png")
    rng = np.random.default_rng(0)
    recs = np.stack([np.clip(image + rng.normal(0, s, image.shape), 0, 255).astype(np.uint8) for s in (12, 6, 3)])
    recs[1] = np.clip(recs[1].astype(int) + 20, 0, 255)  # a depth with a cast a filter fixes
    base = [msssim(image, r) for r in recs]
    quality, bits = post_filter.filtered_depths(image, recs, post_filter.FILTERS["colour"], base)
    assert all(q >= b for q, b in zip(quality, base)) and quality[1] > base[1]
    assert bits[0] >= 1 and all(b - a >= 1 for a, b in zip(bits, bits[1:]))  # an on/off bit a depth at least
    assert bits[1] - bits[0] > 1  # the filter sent at depth 2 costs its coefficients


def test_outputs_are_written_and_the_manifest_summarizes_again(small_run):
    report, out = small_run
    manifest, summary_file, *plots = report.files
    assert manifest == out / "manifests" / "bench.parquet"
    assert json.loads(summary_file.read_text()) == json.loads(json.dumps(report.summary))
    assert [p.name for p in plots] == ["msssim.png", "psnr.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in plots)
    assert summarize(read_manifest(manifest)) == report.summary
    assert report.summary["run"]["model_id"] == Codec.load(report.summary["run"]["weights"]).model_id


def test_summary_curves_are_the_means_over_images(small_run):
    report, _ = small_run
    rows = report.rows.to_pylist()
    for point in report.summary["codecs"]["jpeg420"]["curve"]:
        mine = [r for r in rows if r["codec"] == "jpeg420" and r["quality"] == point["quality"]]
        assert point["bpp"] == pytest.approx(np.mean([r["bpp"] for r in mine]))
        assert point["msssim"] == pytest.approx(np.mean([r["msssim"] for r in mine]))
    assert set(report.summary["codecs"]["rgbatch-raw"]["bd_rate_msssim"]) == {"jpeg420", "webp"}
    assert len(summary_tables(report.summary)) == 3


class ZlibCoder:
    """A stand-in second entropy coder: the raw chunks, deflated (lossless, smaller)."""

    coder_id, name = 99, "zlib"

    def __init__(self, extra=None):
        self.raw = entropy.RawCoder()

    def encode(self, codes):
        return [zlib.compress(c, 9) for c in self.raw.encode(codes)]

    def decode(self, chunks, shapes):
        return self.raw.decode([zlib.decompress(c) for c in chunks], shapes)


def test_every_registered_coder_gets_its_own_rows(monkeypatch, tiny_weights, tmp_path):
    monkeypatch.setitem(entropy.CODERS, ZlibCoder.coder_id, ZlibCoder)
    monkeypatch.setitem(entropy.CODERS, ZlibCoder.name, ZlibCoder)
    report = bench(DATA, tmp_path, weights=tiny_weights, iterations=2, limit=1, classical_sweeps={},
                   coders=["raw", "zlib"], speed_images=1, speed_depths=(2,))
    rows = {(r["codec"], r["quality"]): r for r in report.rows.to_pylist()}
    # timed once, with the coder new encodings use (raw for these weights): the network is the same
    assert [k for k, r in rows.items() if r["encode_s"] is not None] == [("rgbatch-raw", 2)]
    assert report.summary["run"]["speed_coder"] == "raw"
    image, _ = read_image(DATA / "kodim05_crop192.png")
    zlib_codec = Codec.load(tiny_weights, coder="zlib")
    assert [rows["rgbatch-zlib", d]["bytes"] for d in (1, 2)] == zlib_codec.encode(image, 2, measure=False).bytes
    for d in (1, 2):
        assert rows["rgbatch-zlib", d]["msssim"] == rows["rgbatch-raw", d]["msssim"]
    codes = Codec.load(tiny_weights).encode(image, 2, measure=False, keep_codes=True).codes
    assert recoded_bytes(zlib_codec, codes, "zlib") == [rows["rgbatch-zlib", d]["bytes"] for d in (1, 2)]


# -- the command line ------------------------------------------------------------------------------
def test_cli_bench_prints_json_and_rereads_its_manifest(tiny_weights, tmp_path, monkeypatch):
    for name, spec in CLASSICAL_CODECS.items():  # every codec, at one quality (the slow ones take seconds)
        monkeypatch.setitem(CLASSICAL_CODECS, name, dataclasses.replace(spec, qualities=spec.qualities[:1]))
    runner = CliRunner()
    result = runner.invoke(app, ["bench", str(DATA), "--out", str(tmp_path), "--weights", str(tiny_weights),
                                 "--manifest", str(tmp_path / "bench.parquet"), "--iterations", "2", "--limit", "1",
                                 "--speed-images", "0", "--classical-cache", str(tmp_path / "cache.jsonl"), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert set(summary["codecs"]) == {"rgbatch-raw", *CLASSICAL_CODECS}
    assert summary["images"] == 1
    again = runner.invoke(app, ["bench", str(tmp_path / "bench.parquet"), "--json"])
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout) == summary


@pytest.mark.parametrize("source, message", [("missing-folder", "no such file or folder"),
                                             ("kodim05_crop192.png", "neither a folder of images nor")])
def test_cli_bench_refuses_bad_sources_in_one_line(source, message, tmp_path):
    path = DATA / source if source.endswith(".png") else tmp_path / source
    result = CliRunner().invoke(app, ["bench", str(path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    words = " ".join(result.output.split())  # rich wraps long lines
    assert message in words and "Traceback" not in words


@pytest.mark.parametrize("chosen, codecs", [("none", {"rgbatch-raw"}), ("webp,jpeg420", {"rgbatch-raw", "webp", "jpeg420"})])
def test_cli_bench_measures_only_the_classical_settings_asked(chosen, codecs, tiny_weights, tmp_path):
    result = CliRunner().invoke(app, ["bench", str(DATA), "--out", str(tmp_path), "--weights", str(tiny_weights),
                                      "--iterations", "1", "--limit", "1", "--speed-images", "0", "--no-cache",
                                      "--manifest", str(tmp_path / "bench.parquet"), "--classical", chosen, "--json"])
    assert result.exit_code == 0, result.output
    assert set(json.loads(result.stdout)["codecs"]) == codecs


def test_cli_bench_refuses_bad_options_and_outputs_before_measuring(tiny_weights, tmp_path, monkeypatch):
    """`--iterations 0` ran all 16 depths, `--speed-images -1` timed "-1 images", and an output
    that could not be written (a file where --out's folder goes, a folder where the manifest
    goes) failed after the whole measuring, leaving its files half written (until session 53).
    Now each is refused first, and every output is written whole or not at all."""
    import rgbatch.bench

    measured = []
    monkeypatch.setattr(rgbatch.bench, "measure", lambda *a, **k: measured.append(1) or pytest.fail("measured"))
    (tmp_path / "a-file").write_bytes(b"")
    base = ["bench", str(DATA), "--weights", str(tiny_weights), "--classical", "none", "--limit", "1"]
    for more, said in ((["--out", str(tmp_path / "a-file")], "a file is there, not a folder"),
                       (["--out", str(tmp_path / "o"), "--manifest", str(tmp_path)], "a folder is there: not written")):
        result = CliRunner().invoke(app, base + more)
        assert result.exit_code == 2 and said in " ".join(result.output.split()), result.output
    monkeypatch.undo()
    for more, said in ((["--iterations", "0"], "--depth must be 1..16 for this model, not 0"),
                       (["--speed-images", "-1"], "--speed-images must be at least 0 (0: no timing), not -1")):
        result = CliRunner().invoke(app, base + ["--out", str(tmp_path / "o")] + more)
        assert result.exit_code == 2 and said in " ".join(result.output.split()), result.output
    result = CliRunner().invoke(app, base + ["--out", str(tmp_path / "o"), "--manifest", str(tmp_path / "m" / "b.parquet"),
                                             "--iterations", "1", "--speed-images", "0", "--no-cache"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["msssim.png", "psnr.png", "summary.json"]
    assert [p.name for p in (tmp_path / "m").iterdir()] == ["b.parquet"]  # no temporary left beside it
    assert measured == []


def test_cli_bench_replaces_an_earlier_runs_files_only_when_told(tiny_weights, tmp_path, monkeypatch):
    """A second run into the same outputs replaced the first's results without a word (a
    `--limit 5` look replaced a whole folder's manifest) until session 57: now it is refused
    before measuring, naming the file, and `--overwrite` replaces them; summarizing a manifest
    again into a folder that has results writes nothing unless told."""
    import rgbatch.bench

    base = ["bench", str(DATA), "--weights", str(tiny_weights), "--classical", "none", "--limit", "1",
            "--iterations", "1", "--speed-images", "0", "--no-cache", "--out", str(tmp_path / "o")]
    for manifest in ("m.parquet", "o/bench.parquet"):
        (tmp_path / "o").mkdir(exist_ok=True)
        command = base + ["--manifest", str(tmp_path / manifest)]
        assert CliRunner().invoke(app, command).exit_code == 0
        before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
        for gone in [tmp_path / manifest, *(tmp_path / "o" / name for name in rgbatch.bench.OUTPUT_NAMES)]:
            others = {p: d for p, d in before.items() if p != gone}
            gone.unlink()  # any one of the four there is enough to refuse the run
            with monkeypatch.context() as m:
                m.setattr(rgbatch.bench, "measure", lambda *a, **k: pytest.fail("measured"))
                result = CliRunner().invoke(app, command)
            assert result.exit_code == 2, result.output
            assert "already there: not overwritten (--overwrite replaces it)" in " ".join(result.output.split())
            assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == others
            gone.write_bytes(before[gone])
        again = CliRunner().invoke(app, command + ["--overwrite"])
        assert again.exit_code == 0, again.output
        assert {p for p in tmp_path.rglob("*") if p.is_file()} == set(before)
        for path in before:
            path.unlink()
    # the tables of a manifest drawn again into a folder with results: refused, then replaced
    assert CliRunner().invoke(app, base + ["--manifest", str(tmp_path / "m.parquet")]).exit_code == 0
    (tmp_path / "o" / "psnr.png").unlink()
    summarize = ["bench", str(tmp_path / "m.parquet"), "--out", str(tmp_path / "o")]
    result = CliRunner().invoke(app, summarize)
    assert result.exit_code == 2 and "summary.json: a file is already there" in " ".join(result.output.split())
    assert not (tmp_path / "o" / "psnr.png").exists()  # none written unless all can be
    assert CliRunner().invoke(app, summarize + ["--overwrite"]).exit_code == 0
    assert (tmp_path / "o" / "psnr.png").exists()


def test_cli_bench_refuses_what_it_would_not_use(tmp_path):
    """Until session 61 a manifest summarized again took --depth, --weights... and ignored them,
    --no-cache took a --classical-cache it did not read, and a missing source "is not a folder"."""
    result = CliRunner().invoke(app, ["bench", str(tmp_path / "nothere"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and f"no such file or folder: {tmp_path / 'nothere'}" in result.output
    result = CliRunner().invoke(app, ["bench", str(DATA), "--no-cache", "--classical-cache", str(tmp_path / "c.jsonl")])
    assert result.exit_code == 2 and "--no-cache measures without a cache: drop --classical-cache" in result.output
    manifest = Path(__file__).parent.parent / "manifests" / "bench-kodak" / "bench.parquet"  # the committed one
    result = CliRunner().invoke(app, ["bench", str(manifest), "--depth", "3", "--classical", "all"])  # given: refused
    said = " ".join(result.output.split())
    assert result.exit_code == 2 and "is a bench manifest, summarized again without measuring: --depth, --classical" in said
    result = CliRunner().invoke(app, ["bench", str(DATA / "kodim05_crop192.png"), "--depth", "3"])  # no manifest
    assert result.exit_code == 2 and "neither a folder of images nor a bench manifest" in " ".join(result.output.split())


def test_cli_bench_refuses_an_unknown_classical_setting(tmp_path):
    result = CliRunner().invoke(app, ["bench", str(DATA), "--out", str(tmp_path), "--classical", "avif,zip"])
    words = " ".join(result.output.split())
    assert result.exit_code == 2 and "unknown classical setting(s) zip" in words and "Traceback" not in words


def test_an_image_whose_name_is_not_utf8_is_skipped_with_a_word(tiny_weights, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    image = np.asarray(Image.open(sorted(DATA.glob("*.png"))[0]))[:32, :32]
    Image.fromarray(image).save(folder / "a.png")
    Image.fromarray(image).save(folder / os.fsdecode(b"b\xe9.png"))
    said = []
    rows = measure(folder, weights=tiny_weights, iterations=1, classical_sweeps={}, speed_images=0, log=said.append)
    assert set(rows["path"].to_pylist()) == {"a.png"}
    assert [s for s in said if s.startswith("skipping")] == [
        "skipping b\\xe9.png: its name is not valid UTF-8 (shown with \\xNN escapes)"]


def test_a_bench_that_skipped_an_image_says_so_and_exits_1(tiny_weights, tmp_path):
    """It exited 0, the skip one line among the progress (session 60, a helper's finding); the
    figures are still written, of the other images, and a re-summary of them exits 0."""
    folder = tmp_path / "images 😀"
    folder.mkdir()
    Image.fromarray(np.asarray(Image.open(sorted(DATA.glob("*.png"))[0]))[:32, :32]).save(folder / "a.png")
    (folder / "broken.png").write_bytes(b"\x89PNG not one")
    result = CliRunner().invoke(app, ["bench", str(folder), "--out", str(tmp_path / "out"), "--weights",
                                      str(tiny_weights), "--iterations", "1", "--speed-images", "0", "--classical",
                                      "none", "--manifest", str(tmp_path / "bench.parquet"), "--json"])
    assert result.exit_code == 1, result.output
    assert json.loads(result.stdout)["run"]["skipped"] == ["broken.png"]
    assert "1 image(s) skipped (named above): the figures are of the other 1" in " ".join(result.stderr.split())
    assert CliRunner().invoke(app, ["bench", str(tmp_path / "bench.parquet"), "--json"]).exit_code == 0
    latin = CliRunner(charset="latin-1").invoke(app, ["bench", str(tmp_path / "bench.parquet"), "--json"])
    assert json.loads(latin.stdout)["run"]["image_dir"].endswith("images 😀")  # \u escapes (Python's \U0001f600,
    # invalid JSON, until session 64)
