"""The HTML report: one self-contained page, checked as built and as a real browser renders it."""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from conftest import smooth_image
from rgbatch.cli import app
from rgbatch.htmlreport import render, shown_depths, write_html_report
from test_cli_archive import archive_images

DATA_URI = re.compile(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)" alt="([^"]*)"')


@pytest.fixture(scope="module")
def archive(tmp_path_factory, tiny_weights):
    root = tmp_path_factory.mktemp("html")
    rng = np.random.default_rng(2)
    for name, (h, w) in {"a.png": (40, 48), "big/b.png": (96, 80)}.items():
        (root / "src" / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(smooth_image(rng, h, w)).save(root / "src" / name)
    archive_images(root / "src", root / "archive", tiny_weights, iterations=3)
    return root


def images_of(page: str) -> dict[str, Image.Image]:
    return {alt: Image.open(io.BytesIO(base64.b64decode(data))) for data, alt in DATA_URI.findall(page)}


def test_shown_depths_double_up_to_the_stored_one():
    assert shown_depths(1) == [1]
    assert shown_depths(3) == [1, 2, 3]
    assert shown_depths(16) == [1, 2, 4, 8, 16]


def test_the_page_holds_tables_curve_and_images_side_by_side(archive, tiny_weights):
    out = archive / "report.html"
    result = write_html_report(archive / "archive", out, show=2, weights=tiny_weights, crop=64)
    page = out.read_text()
    assert set(result["shown"]) == {"a.png", "big/b.png"}
    for table in ("summary", "by-depth", "worst"):
        assert f'<table id="{table}">' in page
    assert page.count("<tr><td>") >= 3 + 2  # three depths, two worst images
    assert re.search("<tr><td>coding</td><td>coder [a-z0-9]+; all at scale 1; whole iterations</td></tr>", page)
    assert "<tr><td>copies</td><td>none (no source&#x27;s bytes are stored twice)</td></tr>" in page
    assert "<th>depth</th></tr></thead>" in page and "<td>3</td></tr>" in page  # the worst images' depth
    # the text report's head, fact by fact (`summary_facts`: they had drifted, "model" and "1.2x" there)
    text = " ".join(CliRunner().invoke(app, ["report", str(archive / "archive")]).output.replace("│", " ").split())
    ratio = f"{result['summary']['compression_ratio']:.1f}x"
    assert f"<tr><td>compression ratio</td><td>{ratio}</td></tr>" in page and f"compression ratio {ratio}" in text
    assert "<tr><td>models</td>" in page and f"models {result['summary']['model_ids'][0]}" in text
    # a resampled image and a partial last chunk, as the page says them
    summary = {**result["summary"], "coding": {"scale": {"1": 1, "0.75": 1}, "partial_last_chunk": 1, "unknown": 0}}
    summary["worst"] = [{**summary["worst"][0], "iterations": 3, "last_steps": 24, "scale": 0.75}]
    said = render(summary, [])
    assert "<td>1 of 2 coded smaller (scale 0.75: 1); 1 with a partial last chunk</td>" in said
    assert "<td>3 (24 steps) at 0.75</td>" in said
    # names as the text report shows them: control and bidi characters escaped (raw until session 61)
    summary["worst"] = [{**summary["worst"][0], "path": "esc\x1b[2J\u202egnp.exe.png"}]
    assert "<td>esc\\x1b[2J\\u202egnp.exe.png</td>" in render(summary, [])
    images = images_of(page)
    assert "rate-quality curve" in images
    for path in result["shown"]:
        assert f"{path} original" in images
        for depth in (1, 2, 3):
            assert f"{path} at depth {depth}" in images
    assert images["a.png at depth 3"].size == (48, 40)  # small images whole
    assert images["big/b.png at depth 1"].size == (64, 64)  # larger ones as a centre crop
    assert "src=\"http" not in page and "src='http" not in page  # nothing outside the page


def test_an_unreachable_source_is_said_and_the_restored_images_still_shown(archive, tiny_weights, tmp_path):
    shutil.copytree(archive / "archive", tmp_path / "archive")
    shutil.copytree(archive / "src", tmp_path / "src")
    archive_images(tmp_path / "src", tmp_path / "moved", tiny_weights)
    shutil.rmtree(tmp_path / "src")
    result = write_html_report(tmp_path / "moved", tmp_path / "page.html", select="a.*", weights=tiny_weights)
    page = (tmp_path / "page.html").read_text()
    assert result["shown"] == ["a.png"]
    assert "a.png original" not in images_of(page) and "a.png at depth 3" in images_of(page)
    assert "is gone" in page


def test_report_html_from_the_command_line(archive, tiny_weights, tmp_path):
    result = CliRunner().invoke(app, ["report", str(archive / "archive"), "--html", str(tmp_path / "r.html"),
                                      "--show", "1", "--weights", str(tiny_weights)])
    assert result.exit_code == 0, result.output
    assert "1 shown" in result.output and (tmp_path / "r.html").exists()
    result = CliRunner().invoke(app, ["report", str(archive / "archive"), "--html", str(tmp_path / "s.html"),
                                      "--select", "nothing*"])
    assert result.exit_code == 2 and "no archived image matches" in result.output
    result = CliRunner().invoke(app, ["report", str(archive / "archive"), "--html", str(tmp_path / "s.html"),
                                      "--select", "a.png", "--select", "nothing*"])  # each must match
    assert result.exit_code == 2 and "'nothing*': no archived image matches" in result.output
    result = CliRunner().invoke(app, ["report", str(archive / "archive"), "--html", str(tmp_path / "t.html"),
                                      "--depth", "2"])
    assert result.exit_code == 2 and "--html writes the page alone" in result.output
    for page_only in (["--show", "1"], ["--select", "a.png"], ["--weights", str(tiny_weights)], ["--overwrite"]):
        result = CliRunner().invoke(app, ["report", str(archive / "archive")] + page_only)  # taken, unused until session 61
        assert result.exit_code == 2 and "are the HTML page's: give --html FILE too" in result.output
    # a page already there is replaced only with --overwrite (until session 53: silently), refused before any work
    before = (tmp_path / "r.html").read_bytes()
    result = CliRunner().invoke(app, ["report", str(archive / "archive"), "--html", str(tmp_path / "r.html"),
                                      "--show", "0"])
    assert result.exit_code == 2 and "already there: not overwritten" in result.output
    assert (tmp_path / "r.html").read_bytes() == before
    result = CliRunner().invoke(app, ["report", str(archive / "archive"), "--html", str(tmp_path / "r.html"),
                                      "--show", "0", "--overwrite"])
    assert result.exit_code == 0 and "0 shown" in result.output and (tmp_path / "r.html").read_bytes() != before


# -- in a real browser -------------------------------------------------------------------------------
CHECK = """<script>window.addEventListener("load", () => {
  const shown = [...document.images].filter(i => i.complete && i.naturalWidth > 0 && i.width > 0).length;
  const rows = document.querySelectorAll("table tbody tr").length;
  document.body.insertAdjacentHTML("beforeend",
    `<p id="rendered">images ${document.images.length} shown ${shown} rows ${rows}</p>`);
});</script></body>"""


def browser() -> str | None:
    return next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


@pytest.mark.slow
@pytest.mark.skipif(browser() is None, reason="no headless browser: install Debian's chromium "
                                              "(apt-get install -y chromium; .ci/run does)")
def test_a_headless_browser_renders_the_images_and_tables(archive, tiny_weights, tmp_path):
    page = tmp_path / "page.html"
    write_html_report(archive / "archive", page, show=2, weights=tiny_weights)
    expected_images = len(images_of(page.read_text()))
    checked = tmp_path / "checked.html"  # the page plus a script reporting what the browser drew
    checked.write_text(page.read_text().replace("</body>", CHECK))
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000"]
    dom = subprocess.run([browser(), *flags, "--dump-dom", checked.as_uri()], capture_output=True, text=True,
                         timeout=120).stdout
    found = re.search(r'id="rendered">images (\d+) shown (\d+) rows (\d+)<', dom)
    assert found, dom[-2000:]
    images, shown, rows = map(int, found.groups())
    assert images == shown == expected_images > 0
    assert rows >= 3 + 2 + 7  # depths, worst images, summary facts
    shot = tmp_path / "shot.png"
    subprocess.run([browser(), *flags, "--window-size=1000,1400", f"--screenshot={shot}", page.as_uri()],
                   capture_output=True, timeout=120)
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
    assert pixels.std() > 10  # not a blank page
