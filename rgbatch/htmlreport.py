"""An archive as one self-contained HTML page, for people to look at.

    write_html_report("manifests/kodak", "kodak.html")

The page holds the archive's size and quality table (per depth, from `rgbatch.archive.report`),
its rate-quality curve (matplotlib), the worst images, and for a few images (the worst ones, or
those matching a glob) the original beside the restored image at several depths with their
bytes and MS-SSIM. Every image is embedded as a data URI, so the page is one file that can be
mailed or archived. Images wider or taller than `crop` pixels are shown as a centre crop at
native resolution: a codec is judged on its pixels, not on a scaled-down thumbnail.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, field

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from . import storage
from .archive import (SourceUnreachable, _source_image, check_every_glob_matches, depth_text, report, select_globs,
                      selects, summary_facts)
from .codec import Codec
from .imageio import encode_png
from .manifest import Archive
from .objectstore import named_endpoints
from .row import Row
from .metrics import msssim
from .options import check_count, figure, shown
from .weights import where_model_is

CROP = 512  # shown pixels per side at most (a centre crop of larger images)
SHOWN = 3  # images shown side by side by default


@dataclass
class ShownImage:
    """One image of the page: its crops as PNG bytes, per depth, with its size and quality."""
    path: str
    width: int
    height: int
    original: bytes | None  # PNG of the source's crop; None when the source is not reachable
    note: str = ""  # why the original is missing, or why nothing could be decoded
    depths: list[dict] = field(default_factory=list)  # depth, label (`depth_text`), bytes, bpp, msssim, png


def shown_depths(stored: int) -> list[int]:
    """The depths shown for an image stored `stored` deep: 1, 2, 4, 8, ... and the stored one."""
    depths, d = [], 1
    while d < stored:
        depths.append(d)
        d *= 2
    return depths + [stored]


def centre_crop(image: np.ndarray, size: int = CROP) -> np.ndarray:
    h, w = image.shape[:2]
    top, left = max(0, (h - size) // 2), max(0, (w - size) // 2)
    return image[top:top + size, left:left + size]


def show_image(row: Row, codec: Codec, crop: int = CROP, endpoints: frozenset[str] = frozenset()) -> ShownImage:
    """Decode one archived image at its shown depths, beside its source when reachable (`endpoints`:
    `archive._source_image`'s)."""
    try:
        source, note = _source_image(row, None, endpoints=endpoints)
        source = None if source is None else source.pixels
    except SourceUnreachable as e:
        source, note = None, str(e)
    page = ShownImage(row.path, row.width, row.height,
                      encode_png(centre_crop(source, crop)) if source is not None else None, note)
    codec = codec.for_model(row.model_id)  # an earlier shipped model's rows: its packaged weights
    if row.model_id != codec.model_id:
        page.note = f"coded by model {row.model_id}, not the loaded {codec.model_id}: {where_model_is(row.model_id, not codec.shipped)}"
        return page
    depths = shown_depths(row.iterations)
    for depth, image in zip(depths, codec.decode_many([row.blob] * len(depths), depths)):
        quality = row.msssim[depth - 1] if row.msssim else None
        if quality is None and source is not None:  # compressed with --no-measure: measure it now
            quality = msssim(source, image)
        # the stored depth as the tables say it: a partial last chunk's steps, a scale (`depth_text`)
        label = depth_text(depth, row.last_steps, row.scale) if depth == row.iterations else str(depth)
        page.depths.append({"depth": depth, "label": label, "bytes": row.bytes[depth - 1], "bpp": row.bpp[depth - 1],
                             "msssim": quality, "png": encode_png(centre_crop(image, crop))})
    return page


def curve_png(by_depth: list[dict]) -> bytes:
    """The archive's rate-quality curve: mean MS-SSIM (and PSNR) against bpp over the depths."""
    fig = Figure(figsize=(7, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    measured = [r for r in by_depth if r["mean_msssim"] is not None]
    if measured:
        ax.plot([r["bpp"] for r in measured], [r["mean_msssim"] for r in measured], marker="o", label="MS-SSIM")
        for r in measured:
            ax.annotate(str(r["depth"]), (r["bpp"], r["mean_msssim"]), textcoords="offset points",
                        xytext=(4, -10), fontsize=7)
        ax.set_ylabel("mean MS-SSIM (RGB)")
    else:
        ax.text(0.5, 0.5, "no MS-SSIM recorded (compressed with measuring off)", ha="center",
                transform=ax.transAxes)
    ax.set_xlabel("bits per pixel (stored bytes; points labelled by depth)")
    ax.set_title("rate and quality of the archive at each depth")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


# -- the page ---------------------------------------------------------------------------------------
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
td, h1, h3 { white-space: pre-wrap; }  /* a name's runs of spaces as they are: "a  b.png" is not "a b.png" */
figure { display: inline-block; margin: 0 0.5em 1em 0; vertical-align: top; }
figcaption { font-size: 0.85em; }
.note { color: #a40; }
"""


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def _table(header: list[str] | None, rows: list[list], table_id: str) -> str:
    head = "<thead><tr>" + "".join(f"<th>{_text(h)}</th>" for h in header) + "</tr></thead>" if header else ""
    body = "".join("<tr>" + "".join(f"<td>{_text(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table id="{table_id}">{head}<tbody>{body}</tbody></table>'


def _text(value) -> str:
    """Text of the page: escaped for HTML, and names shown as the text report shows them (`shown`:
    control and invisible format characters as escapes; raw on the page until session 61)."""
    return html.escape(shown(value))


def _figure(png: bytes, caption: str, alt: str) -> str:
    return (f'<figure><img src="{_data_uri(png)}" alt="{_text(alt)}">'
            f"<figcaption>{_text(caption)}</figcaption></figure>")


def _image_section(image: ShownImage, crop: int) -> str:
    cropped = f" (centre {crop}x{crop} crop, native pixels)" if max(image.width, image.height) > crop else ""
    parts = [f'<section class="image"><h3>{_text(image.path)}</h3>'
             f"<p>{image.width}x{image.height}{_text(cropped)}</p>"]
    if image.note:
        parts.append(f'<p class="note">{_text(image.note)}</p>')
    if image.original is not None:
        parts.append(_figure(image.original, "original", f"{image.path} original"))
    for d in image.depths:
        caption = f"depth {d['label']}: {d['bytes']:,} bytes, {d['bpp']:.3f} bpp, MS-SSIM {figure(d['msssim'], '.4f')}"
        parts.append(_figure(d["png"], caption, f"{image.path} at depth {d['depth']}"))
    return "".join(parts) + "</section>"


def render(summary: dict, images: list[ShownImage], crop: int = CROP) -> str:
    """The page of a report summary (`rgbatch.archive.report(...)["summary"]`) and shown images."""
    s = summary
    facts = [*summary_facts(s), ("bpp as stored", figure(s["stored"]["bpp"], ".4f")),
             ("mean MS-SSIM as stored", figure(s["stored"]["mean_msssim"], ".4f"))]
    by_depth = [[r["depth"], r["images"], f"{r['bytes']:,}", figure(r["bpp"], ".4f"), figure(r["mean_msssim"], ".4f"),
                 figure(r["mean_psnr"], ".2f")] for r in s["by_depth"]]
    worst = [[r["path"], figure(r["msssim"], ".4f"), figure(r["bpp"], ".4f"),
              depth_text(r["iterations"], r["last_steps"], r["scale"])] for r in s["worst"]]
    failures = [[f["path"], f["error"]] for f in s["failures"]]
    body = [f"<h1>rgbatch archive {_text(s['archive'])}</h1>",
            _table(None, facts, "summary"),
            "<h2>Size and quality per depth</h2>"
            + (f"<p>Each stored stream once: {s['copies']['shared']:,} image(s) share another's.</p>"
               if s["copies"]["shared"] else ""),
            _table(["depth", "images", "bytes", "bpp", "mean MS-SSIM", "mean PSNR dB"], by_depth, "by-depth"),
            "<h2>Rate and quality</h2>", _figure(curve_png(s["by_depth"]), "mean over the images stored at least "
                                                 "that deep", "rate-quality curve"),
            "<h2>Worst images (MS-SSIM as stored)</h2>",
            _table(["path", "MS-SSIM", "bpp", "depth"], worst, "worst")]
    if failures:
        body += ["<h2>Failed images</h2>", _table(["path", "reason"], failures, "failures")]
    body.append("<h2>Images side by side</h2>")
    body += [_image_section(image, crop) for image in images] or ["<p>no image chosen</p>"]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>rgbatch archive {_text(s['archive'])}</title><style>{STYLE}</style></head>"
            f"<body>{''.join(body)}</body></html>\n")


def write_html_report(archive, out, show: int = SHOWN, select: str | list[str] | None = None, worst: int = 5,
                      weights=None, device: str = "auto", precision: str = "auto", crop: int = CROP,
                      overwrite: bool = False) -> dict:
    """Write the page of `archive` to `out` (a local path or URI, atomically; a file there is
    replaced only with `overwrite`, checked before any work: `storage.output_file`); returns the
    report's summary and the paths shown. Shown: the archived paths matching `select` (a glob,
    or several: any), else the `show` worst images (at most `show` either way)."""
    check_count("show", show, 0)
    check_count("crop", crop, 32, what=" pixels")
    fs, path = storage.output_file(out, overwrite)
    summary = report(archive, worst=max(worst, show), images=False)["summary"]
    worst_paths = [r["path"] for r in summary["worst"]]
    summary["worst"] = summary["worst"][:worst]
    man = Archive(archive)
    if globs := select_globs(select):
        table = man.table(["path", "status"])
        paths = [p for p, st in zip(table["path"].to_pylist(), table["status"].to_pylist())
                 if st == "ok" and selects(p, globs)]
        check_every_glob_matches("select", globs, paths)
        paths = paths[:show]
    else:
        paths = worst_paths[:show]
    images = []
    if paths:
        codec = Codec.load(weights, device=device, precision=precision)
        rows = {r.path: r for r in man.rows(set(paths))}
        paths = [p for p in paths if p in rows]  # a part damaged inside gives none of its rows (`Archive.missed`)
        endpoints = named_endpoints(man.location)
        images = [show_image(rows[p], codec, crop, endpoints) for p in paths]
    storage.write_output(fs, path, render(summary, images, crop).encode(), overwrite)
    return {"out": storage.uri(fs, path, str(out)), "summary": summary, "shown": paths}


__all__ = ["ShownImage", "curve_png", "render", "show_image", "shown_depths", "write_html_report"]
