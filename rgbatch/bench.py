"""`rgbatch bench`: rate, quality and speed of rgbatch against JPEG, WebP, AVIF and JPEG XL.

Every codec runs on the same images in the same run, and every decoded image is scored by
the same code (`rgbatch.metrics`: MS-SSIM and PSNR on RGB); rates are real stored bytes.

    report = bench("kodak/", "docs/bench", manifest="manifests/bench-kodak/bench.parquet")
    report.summary["codecs"]["jpeg420"]["bpp_at_msssim"]["0.95"]

One row per (codec, quality setting, image) goes to a Parquet manifest (columns in SCHEMA;
`quality` is the Pillow quality for classical codecs and the depth for rgbatch), and
`summarize` derives everything else from those rows alone, so a committed manifest can be
summarized again without re-running anything. The rules behind each summary number are in
docs/BENCH.md; in short:

* bpp at MS-SSIM t: per image, the rate where the codec's curve first reaches t, linear in
  MS-SSIM between the two neighbouring settings in log(bpp); then the mean over images. The
  mean is only given when every image reaches t (otherwise it would favour a codec that
  fails on the hard images); `reached` counts the images that do.
* BD-rate (Bjontegaard): average rate difference at equal quality, from cubic fits of
  log(bpp) against MS-SSIM in dB over the quality range both mean curves cover.
* Speed: megapixels per wall-clock second, encode and decode separately.
"""

from __future__ import annotations

import datetime as dt
import json
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import features

from . import classical, storage
from .classical_cache import ClassicalCache, image_digest
from .codec import Codec
from .codes import Codes, stream_sizes
from .entropy import CODERS, EntropyError, default_coder_name, get_coder
from .imageio import ImageError, read_image
from .manifest import BENCH_METADATA_KEY
from .metrics import msssim_many, psnr
from .options import check_count, figure, shown
from .train import IMAGE_SUFFIXES, list_images

TARGETS = (0.90, 0.95, 0.98)
SPEED_DEPTHS = (1, 2, 4, 8, 16)  # rgbatch is timed at these depths (those the run reaches)
METADATA_KEY = BENCH_METADATA_KEY

SCHEMA = pa.schema([
    ("codec", pa.string()),  # a classical codec (rgbatch.classical), or rgbatch-<entropy coder>
    ("quality", pa.int32()),  # Pillow quality setting, or rgbatch depth (iterations)
    ("path", pa.string()),  # relative to the benchmarked folder, '/'-separated
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("bytes", pa.int64()),  # size of the stored file / stream cut to this depth
    ("bpp", pa.float64()),
    ("msssim", pa.float64()),
    ("psnr", pa.float64()),
    ("encode_s", pa.float64()),  # null where not timed (rgbatch is timed on a few images and depths)
    ("decode_s", pa.float64()),
])


@dataclass
class BenchReport:
    rows: pa.Table
    summary: dict
    files: list[Path] = field(default_factory=list)  # what was written


def rgbatch_codec_name(coder: str) -> str:
    return f"rgbatch-{coder}"


def registered_coders() -> list[str]:
    """Names of the entropy coders this rgbatch knows, in coder-id order."""
    classes = {cls.coder_id: cls.name for cls in CODERS.values()}
    return [classes[i] for i in sorted(classes)]


def usable_coders(extra: dict, log=print) -> list[str]:
    """The registered coders that weights with these extra tensors can run (the rest logged)."""
    usable = []
    for name in registered_coders():
        try:
            get_coder(name, extra)
            usable.append(name)
        except EntropyError as e:
            log(f"{rgbatch_codec_name(name)} left out: {e}")
    return usable


# -- measuring ---------------------------------------------------------------------------------
def measure(image_dir, *, weights=None, iterations: int | None = None, limit: int | None = None,
            device: str = "auto", precision: str = "auto", decoding: str = "exact", search_steps: int = 0, classical_sweeps: dict[str, tuple[int, ...]] | None = None,
            coders: list[str] | None = None, speed_images: int = 2, speed_depths=SPEED_DEPTHS,
            classical_cache=None, log=print, progress=None) -> pa.Table:
    """Run every codec over the images of `image_dir`; one row per (codec, setting, image).

    `classical_sweeps` maps classical codec names to quality settings (default: every codec
    this Pillow supports, with its sweep from `rgbatch.classical`). rgbatch runs at depths
    1..`iterations` (default: the model's maximum) with each entropy coder in `coders`
    (default: every registered coder these weights can run), and is timed on the first
    `speed_images` images at `speed_depths` with the coder new encodings use (the others run the
    same network; the coders alone: benchmarks/coder_speed.py). `progress(done, total)` counts images.
    `classical_cache`: a file of classical results (`rgbatch.classical_cache`) read and added to,
    so that only what it lacks is encoded (None: measure everything).
    """
    check_count("speed_images", speed_images, 0, what=" (0: no timing)")
    image_dir = Path(image_dir)
    paths = list_images(image_dir)
    if limit is not None:
        check_count("limit", limit, 1, what=" image(s)")
        paths = paths[:limit]
    if not paths:
        raise ValueError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {image_dir}")
    if classical_sweeps is None:
        classical_sweeps = {name: classical.CLASSICAL_CODECS[name].qualities for name in classical.available_codecs()}
    specs = {name: classical.get_codec(name) for name in classical_sweeps}
    cache = ClassicalCache(classical_cache) if classical_cache is not None else None
    codec = Codec.load(weights, device=device, precision=precision, coder="raw",  # others re-code its codes
                       search_steps=search_steps, decoding=decoding)
    iterations = codec.max_iterations if iterations is None else iterations  # 0 is refused, not the default
    check_count("iterations", iterations, 1, codec.max_iterations, " for this model")
    if coders is None:
        coders = usable_coders(codec.extra, log)
    timed_coder = default_coder_name(codec.extra)
    if timed_coder not in coders:
        timed_coder = coders[0]
    timed_codec = Codec(codec.model, codec.model_id, codec.extra, device=device, precision=precision,
                        tile_size=codec.tile_size, batch_size=codec.batch_size, coder=timed_coder,
                        search_steps=search_steps, decoding=decoding)
    timed_depths = sorted({d for d in speed_depths if 1 <= d <= iterations})

    rows, skipped = [], []
    for index, path in enumerate(paths):
        _report(progress, index, len(paths))
        name = path.relative_to(image_dir).as_posix()
        if storage.utf8_name(name) != name:  # a manifest's strings are UTF-8
            log(f"skipping {storage.utf8_name(name)}: its name is not valid UTF-8 (shown with \\xNN escapes)")
            skipped.append(storage.utf8_name(name))
            continue
        try:
            image, _ = read_image(path)
        except (ImageError, OSError) as e:
            log(f"skipping {name}: {e}")
            skipped.append(name)
            continue
        height, width = image.shape[:2]

        def add(codec_name, quality, size, ms_ssim, psnr_db, encode_s=None, decode_s=None):
            rows.append({"codec": codec_name, "quality": quality, "path": name, "width": width, "height": height,
                         "bytes": size, "bpp": 8 * size / (width * height), "msssim": ms_ssim, "psnr": psnr_db,
                         "encode_s": encode_s, "decode_s": decode_s})

        digest = image_digest(image) if cache is not None else None
        for codec_name, qualities in classical_sweeps.items():
            for quality, result in _classical_results(image, digest, specs[codec_name], qualities, cache).items():
                add(codec_name, quality, result["bytes"], result["msssim"], result["psnr"],
                    result["encode_s"], result["decode_s"])
        if cache is not None:
            cache.flush()  # an xz cache: this image's results as one stream

        # The encoder's reconstruction at depth k is what decoding the stream cut to depth k
        # gives (tests/test_bench.py checks it), so one encode scores every depth.
        encoded = codec.encode(image, iterations, keep_codes=True)
        for coder in coders:
            sizes = encoded.bytes if coder == codec.coder.name else recoded_bytes(codec, encoded.codes, coder)
            timings = {}
            if index < speed_images and coder == timed_coder:
                if index == 0 and timed_depths:  # untimed: the first call loads (or compiles) the coder's kernels
                    _time_rgbatch(timed_codec, image, min(timed_depths))
                timings = {d: _time_rgbatch(timed_codec, image, d) for d in timed_depths}
            for depth in range(1, iterations + 1):
                encode_s, decode_s = timings.get(depth, (None, None))
                add(rgbatch_codec_name(coder), depth, sizes[depth - 1], encoded.msssim[depth - 1],
                    encoded.psnr[depth - 1], encode_s, decode_s)
    _report(progress, len(paths), len(paths))
    if not rows:
        raise ValueError(f"none of the {len(paths)} images under {image_dir} could be read")

    metadata = {
        "image_dir": str(image_dir), "images": len({r["path"] for r in rows}), "model_id": codec.model_id,
        "weights": str(weights) if weights else "default", "iterations": iterations, "coders": coders,
        "device": str(codec.device), "precision": codec.precision, "decoding": codec.decoding, "search_steps": codec.search_steps, "post_filter": codec.post_filter, "torch_threads": torch.get_num_threads(),
        "speed_images": min(speed_images, len(paths)), "speed_depths": timed_depths, "speed_coder": timed_coder,
        "libraries": {"torch": torch.__version__, "libjpeg-turbo": features.version("jpg"),
                      "libwebp": features.version("webp"), "libavif": features.version("avif"),
                      **{spec.package: spec.library for spec in specs.values() if spec.package}},
        "classical_cache": None if cache is None else {"path": str(cache.path), "hits": cache.hits,
                                                        "measured": cache.misses},
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(), "system": platform.platform(),
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "skipped": skipped,  # images that could not be read: the figures are of the others
    }
    table = pa.Table.from_pylist(rows, schema=SCHEMA)
    return table.replace_schema_metadata({METADATA_KEY: json.dumps(metadata).encode()})


def _classical_results(image, digest, spec, qualities, cache) -> dict[int, dict]:
    """Size, MS-SSIM, PSNR and times of `image` stored by one codec at each quality: from the
    cache where it has them, measured (and added to it) where not."""
    results = {q: cache.get(digest, spec, q) for q in qualities} if cache is not None else {}
    todo = [q for q in qualities if results.get(q) is None]
    runs = [classical.run(image, spec, quality) for quality in todo]
    scores = msssim_many(image, np.stack([r.decoded for r in runs])) if runs else []
    for quality, run, ms_ssim in zip(todo, runs, scores):
        results[quality] = {"bytes": len(run.data), "msssim": float(ms_ssim), "psnr": float(psnr(image, run.decoded)),
                            "encode_s": run.encode_s, "decode_s": run.decode_s}
        if cache is not None:
            cache.put(digest, spec, quality, results[quality])
    return {q: results[q] for q in qualities}


def _report(progress, done, total):
    if progress is not None:
        progress(done, total)


def _time_rgbatch(codec: Codec, image: np.ndarray, depth: int) -> tuple[float, float]:
    """Wall-clock seconds to encode an image to `depth`, and to decode that stream."""
    start = time.perf_counter()
    blob = codec.encode(image, depth, measure=False).blob
    encoded = time.perf_counter()
    codec.decode(blob)
    return encoded - start, time.perf_counter() - encoded


def recoded_bytes(codec: Codec, codes: Codes, coder: str) -> list[int]:
    """Stream sizes at depth 1..k of an image's codes stored with another entropy coder.

    Entropy coders are lossless, so the codes (and the quality at every depth) stay the same;
    only the bytes change, and the network need not run again.
    """
    return stream_sizes(codec.code(codes, get_coder(coder, codec.extra)))


# -- summarizing -------------------------------------------------------------------------------
def bpp_at_quality(bpp, quality, target: float) -> float | None:
    """Rate at which one image's curve first reaches `target` (None if it never does).

    Points are taken in order of rate; between the last point below the target and the first
    at or above it, quality is linear in log(bpp). If the lowest-rate point is already at the
    target, its rate is returned (an upper bound: the codec cannot go lower).
    """
    order = np.argsort(bpp)
    bpp, quality = np.asarray(bpp, float)[order], np.asarray(quality, float)[order]
    above = np.flatnonzero(quality >= target)
    if len(above) == 0:
        return None
    i = above[0]
    if i == 0:
        return float(bpp[0])
    f = (target - quality[i - 1]) / (quality[i] - quality[i - 1])
    return float(np.exp(np.log(bpp[i - 1]) + f * (np.log(bpp[i]) - np.log(bpp[i - 1]))))


def msssim_db(value):
    """MS-SSIM as -10 log10(1 - MS-SSIM): spreads out the top of the scale, where codecs differ."""
    return -10 * np.log10(np.maximum(1 - np.asarray(value, float), 1e-10))


def bd_rate(reference_bpp, reference_quality, test_bpp, test_quality) -> float | None:
    """Bjontegaard delta rate (percent) of a test curve against a reference curve.

    The classic method (G. Bjontegaard, VCEG-M33, 2001): fit log(rate) as a cubic polynomial of
    quality for each curve (least squares), integrate both over the quality interval the two
    curves share, and turn the mean log-rate difference into a percentage. Negative: the test
    codec needs that much less rate for the same quality. None without 4 points per curve or
    without a shared quality interval.
    """
    fits, ranges = [], []
    for bpp, quality in ((reference_bpp, reference_quality), (test_bpp, test_quality)):
        bpp, quality = np.asarray(bpp, float), np.asarray(quality, float)
        if len(bpp) < 4 or len(np.unique(quality)) < 4:
            return None
        fits.append(np.polyint(np.polyfit(quality, np.log(bpp), 3)))
        ranges.append((quality.min(), quality.max()))
    low, high = max(r[0] for r in ranges), min(r[1] for r in ranges)
    if not high > low:
        return None
    reference, test = ((np.polyval(f, high) - np.polyval(f, low)) / (high - low) for f in fits)
    return float((np.exp(test - reference) - 1) * 100)


def summarize(rows: pa.Table, targets=TARGETS) -> dict:
    """Every summary number of a bench run, from its rows (see the module docstring)."""
    db = duckdb.connect()
    db.register("rows", rows)
    images = db.execute("select count(distinct path) from rows").fetchone()[0]
    codecs = {}
    for name in sorted((n for (n,) in db.execute("select distinct codec from rows").fetchall()), key=_display_order):
        curve = db.execute("""select quality, avg(bpp), avg(msssim), avg(psnr), count(*) from rows
                              where codec = $codec group by quality order by quality""", {"codec": name}).fetchall()
        per_image = db.execute("""select path, list(bpp order by quality), list(msssim order by quality)
                                  from rows where codec = $codec group by path""", {"codec": name}).fetchall()
        at_target = {}
        for target in targets:
            needed = [bpp_at_quality(b, m, target) for _, b, m in per_image]
            reached = [x for x in needed if x is not None]
            at_target[f"{target:.2f}"] = {"bpp": float(np.mean(reached)) if len(reached) == len(needed) else None,
                                          "reached": len(reached), "images": len(needed)}
        codecs[name] = {
            "curve": [{"quality": q, "bpp": b, "msssim": m, "psnr": p, "images": n} for q, b, m, p, n in curve],
            "bpp_at_msssim": at_target,
            **_speed(db, "codec = $codec", {"codec": name}),
        }
        if name.startswith("rgbatch-"):
            codecs[name]["speed_by_depth"] = {
                str(depth): _speed(db, "codec = $codec and quality = $depth", {"codec": name, "depth": depth})
                for (depth,) in db.execute("""select distinct quality from rows where codec = $codec
                                              and encode_s is not null order by quality""", {"codec": name}).fetchall()}
    for name, entry in codecs.items():
        if name.startswith("rgbatch-"):
            entry["bd_rate_msssim"] = {
                other: bd_rate(*bd_curve(codecs[other]), *bd_curve(entry))
                for other in codecs if not other.startswith("rgbatch-")}
    metadata = json.loads((rows.schema.metadata or {}).get(METADATA_KEY, b"{}"))
    return {"images": images, "targets": [f"{t:.2f}" for t in targets], "codecs": codecs, "run": metadata}


def _display_order(codec: str):
    """rgbatch first, then the classical codecs in the order of rgbatch.classical."""
    known = list(classical.CLASSICAL_CODECS)
    return (not codec.startswith("rgbatch-"), known.index(codec) if codec in known else len(known), codec)


def bd_curve(entry):
    """A bench summary entry as (bpp, MS-SSIM in dB) points, the axes BD-rate is measured on."""
    return [p["bpp"] for p in entry["curve"]], msssim_db([p["msssim"] for p in entry["curve"]])


def _speed(db, where: str, params: dict) -> dict:
    """Encode and decode MP/s over the timed rows that match: all pixels over all seconds."""
    pixels = "width::bigint * height"  # int32 columns: a 50k x 50k image would overflow
    encode, decode = db.execute(f"""select sum({pixels}) filter (where encode_s is not null) / sum(encode_s) / 1e6,
                                           sum({pixels}) filter (where decode_s is not null) / sum(decode_s) / 1e6
                                    from rows where {where}""", params).fetchone()
    return {"encode_mp_s": encode, "decode_mp_s": decode}


# -- the whole run -----------------------------------------------------------------------------
OUTPUT_NAMES = ("summary.json", "msssim.png", "psnr.png")  # the files of OUT_DIR


def bench(image_dir, out_dir, manifest=None, overwrite: bool = False, **options) -> BenchReport:
    """Measure (options as `measure`), then write the manifest, summary.json and the plots.

    The manifest goes to `manifest` (default OUT_DIR/bench.parquet). Where they cannot be
    written (a file where OUT_DIR should be, a folder where the manifest should, or, unless
    `overwrite`, an earlier run's files there), that is said before the measuring, not after it.
    """
    manifest = manifest or Path(out_dir) / "bench.parquet"
    _checked_outputs(out_dir, manifest, overwrite)
    rows = measure(image_dir, **options)
    return write_outputs(rows, out_dir, manifest, overwrite=overwrite)


def _checked_outputs(out_dir, manifest, overwrite: bool) -> list[Path]:
    """OUT_DIR's files (OUTPUT_NAMES), after checking them and the manifest, if any, as
    `storage.output_file` checks one: NotWritten for the first that cannot be written."""
    if (what := storage.described(*storage.resolve(out_dir))) not in ("a folder", "missing"):
        raise storage.NotWritten(f"{out_dir}: {what} is there, not a folder")
    files = [Path(out_dir, name) for name in OUTPUT_NAMES]
    for file in [*([Path(manifest)] if manifest is not None else []), *files]:
        storage.output_file(file, overwrite=overwrite)
    return files


def read_manifest(path) -> pa.Table:
    """The rows of a bench manifest written by `bench`."""
    try:
        rows = pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as e:
        raise ValueError(f"{path} is neither a folder of images nor a bench manifest (Parquet): {e}") from None
    if METADATA_KEY not in (rows.schema.metadata or {}) or not set(SCHEMA.names) <= set(rows.column_names):
        raise ValueError(f"{path} is not an rgbatch bench manifest")
    return rows


def write_outputs(rows: pa.Table, out_dir, manifest=None, overwrite: bool = False) -> BenchReport:
    """summary.json, msssim.png and psnr.png of a run's rows in `out_dir`, and the rows as a
    Parquet manifest at `manifest` when given: each written whole or not at all, and none
    unless all can be (an earlier run's files are replaced only with `overwrite`)."""
    from .plots import rate_distortion_plot

    summary_path, *plots = _checked_outputs(out_dir, manifest, overwrite)
    summary = summarize(rows)
    contents = []
    if manifest is not None:
        buffer = pa.BufferOutputStream()
        pq.write_table(rows, buffer)
        contents.append((Path(manifest), buffer.getvalue().to_pybytes()))
    contents.append((summary_path, (json.dumps(summary, indent=1) + "\n").encode()))
    title = f"{summary['images']} images of {image_set(summary)}"
    contents += [(path, rate_distortion_plot(summary, metric, title=title)) for metric, path in zip(("msssim", "psnr"), plots)]
    for path, data in contents:
        storage.write_output(*storage.resolve(path), data, overwrite=overwrite)
    return BenchReport(rows, summary, [path for path, _ in contents])


# -- display -----------------------------------------------------------------------------------
def image_set(summary: dict) -> str:
    """The measured folder as tables and plots name it: its last two path parts (photos/val)."""
    parts = Path(summary["run"].get("image_dir", "")).parts
    return shown("/".join(p for p in parts[-2:] if p not in ("..", ".")) or "the set")


def summary_tables(summary: dict) -> list:
    """The summary as rich tables: rate at equal MS-SSIM and speed, BD-rates, rgbatch per depth."""
    from rich.table import Table

    run, codecs = summary["run"], summary["codecs"]
    rate = Table(title=f"{image_set(summary)}: bpp needed for MS-SSIM (mean of {summary['images']} images; '-' when not every image "
                       f"reaches it) and speed on {run.get('device', '?')} (rgbatch: at its deepest timed depth)",
                 title_justify="left")
    rate.add_column("codec")
    for target in summary["targets"]:
        rate.add_column(f"@ {target}", justify="right")
    rate.add_column("encode MP/s", justify="right")
    rate.add_column("decode MP/s", justify="right")
    for name, entry in codecs.items():
        cells = []
        for target in summary["targets"]:
            t = entry["bpp_at_msssim"][target]
            cells.append(figure(t["bpp"], ".3f") if t["reached"] == t["images"] else f"- ({t['reached']}/{t['images']})")
        speed = entry
        if entry.get("speed_by_depth"):  # rgbatch: speed at its deepest timed depth
            speed = entry["speed_by_depth"][max(entry["speed_by_depth"], key=int)]
        rate.add_row(name, *cells, figure(speed["encode_mp_s"], ".3f"), figure(speed["decode_mp_s"], ".3f"))
    tables = [rate]

    rgbatch = {n: e for n, e in codecs.items() if "bd_rate_msssim" in e}
    if rgbatch:
        others = list(next(iter(rgbatch.values()))["bd_rate_msssim"])
        bd = Table(title=f"{image_set(summary)}: BD-rate on MS-SSIM (negative: rgbatch needs that much less rate)",
                   title_justify="left")
        bd.add_column("codec")
        for other in others:
            bd.add_column(f"vs {other}", justify="right")
        for name, entry in rgbatch.items():
            bd.add_row(name, *("-" if entry["bd_rate_msssim"][o] is None else f"{entry['bd_rate_msssim'][o]:+.1f}%"
                               for o in others))
        tables.append(bd)

    for name, entry in rgbatch.items():
        depth = Table(title=f"{name} per depth (speed timed on {run.get('speed_images', '?')} image(s))",
                      title_justify="left")
        for column in ("depth", "bpp", "MS-SSIM", "PSNR dB", "encode MP/s", "decode MP/s"):
            depth.add_column(column, justify="right")
        for point in entry["curve"]:
            speed = entry["speed_by_depth"].get(str(point["quality"]), {})
            depth.add_row(str(point["quality"]), f"{point['bpp']:.3f}", f"{point['msssim']:.4f}",
                          f"{point['psnr']:.2f}", figure(speed.get("encode_mp_s"), ".3f"),
                          figure(speed.get("decode_mp_s"), ".3f"))
        tables.append(depth)
    return tables


__all__ = ["BenchReport", "SCHEMA", "TARGETS", "bd_rate", "bench", "bpp_at_quality", "image_set", "measure", "msssim_db",
           "read_manifest", "recoded_bytes", "registered_coders", "summarize", "summary_tables", "usable_coders",
           "write_outputs"]
