"""What users do with an archive once written: report on it, restore images, verify it.

    report("manifests/kodak", depth=4)                 # sizes and qualities, and the cost at depth 4
    restore("manifests/kodak", "out/", target_msssim=0.95, select="*/beach*")
    verify("manifests/kodak")                          # checksums, decoding, MS-SSIM re-measured
    compact("manifests/kodak", depth=8)                # one part per model, blobs cut to depth 8

Each works on the current row of every path (`Archive`, rgbatch.manifest; rows are
`rgbatch.row.Row`s). Rows coded by a model other than the loaded one are refused one by one,
with the reason; the rest goes on. Parameters are checked here, where they enter, and errors
name them as these functions spell them (`OptionError`; the CLI says its flags).
"""

from __future__ import annotations

import collections
import contextlib
import fnmatch
import hashlib
import itertools
import json
import os
import posixpath
import re
import random
import tempfile
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import bitstream, objectstore, storage
from .imageio import (GREY_MODES, LOSSY_MODES, MAX_PIXELS, READING_WORDS, RESTORED_KEY, ImageError, base_mode,
                      decode_image_and_metadata, encode_png, max_source_bytes, open_image, png_text, reading_losses)
from .manifest import SHARED_CACHE_BYTES, Archive, PartWriter, sorted_by_path, split_damaged
from .entropy import CODERS
from .objectstore import named_endpoints, not_found, split_query, with_query, worded
from .limits import check_max_pixels
from .options import OptionError, check_count, check_one_of, check_range
from .ratecontrol import Target, check_measured
from .row import OK, Row, coding, hash_keys, schema_of, unheld_blob

if TYPE_CHECKING:  # the codec (torch) is imported by what decodes: `report` loaded it, 2 s, until session 63
    from .codec import Codec

IMAGE_FIELDS = ["path", "status", "error", "width", "height", "mode", "source_bytes", "model_id", "coder", "iterations",
                "scale", "last_steps", "alpha_bytes", "bytes", "bpp", "msssim", "psnr", "shared_blob"]
# re-measured vs recorded: same weights, so only float noise (fp32 vs bf16 decoding: at most 1.2e-4 measured on
# Kodak; an encoder's float loop vs the exact decoder: about 2e-5 in fp32)
MSSSIM_TOLERANCE = 1e-3
DECODE_GROUP = 8  # images decoded together (their tiles share batches)
# DuckDB's memory while it sorts a report's images by path: beyond it, it sorts on disk beside
# the spilled images (`_Spill`), so that `report --json` holds the same memory at any size
SORT_MEMORY = "256MB"


# -- report ------------------------------------------------------------------------------------------
# sums and counts of the ok rows at a `depth` per row (the means are taken over all chunks: `_Sums`)
_SUMS = """count(*) AS images, sum(bytes[depth])::BIGINT AS bytes, sum(width::BIGINT * height)::BIGINT AS pixels,
           sum(msssim[depth]) AS msssim_sum, count(msssim[depth]) AS msssim_count,
           sum(psnr[depth]) AS psnr_sum, count(psnr[depth]) AS psnr_count,
           min(msssim[depth]) AS min_msssim, sum(depth)::BIGINT AS depth_sum"""
_COST_SQL = f"SELECT {_SUMS} FROM images"
_DEPTH_SQL = f"""
    WITH per_depth AS (SELECT unnest(generate_series(1, len(bytes))) AS depth, * FROM images)
    SELECT depth, {_SUMS} FROM per_depth GROUP BY depth"""
_WORST_SQL = """
    SELECT path, msssim[-1] AS msssim, bpp[-1] AS bpp, iterations, scale, last_steps FROM images
    ORDER BY msssim[-1] NULLS LAST, path LIMIT {limit}"""
# per folder `levels` deep (the first components of the path's folder; "" for images at the top)
_FOLDER_SQL = """
    SELECT array_to_string(list_slice(string_split(regexp_replace(path, '/?[^/]*$', ''), '/'), 1, {levels}), '/')
               AS folder,
           count(*) AS images, sum(source_bytes)::BIGINT AS source_bytes,
           sum(CASE WHEN shared_blob THEN 0 ELSE bytes[-1] END + coalesce(alpha_bytes, 0))::BIGINT AS bytes,
           sum(CASE WHEN shared_blob THEN 0 ELSE width::BIGINT * height END)::BIGINT AS pixels,
           sum(msssim[-1]) AS msssim_sum, count(msssim[-1]) AS msssim_count
    FROM images GROUP BY folder"""
REPORT_COLUMNS = IMAGE_FIELDS + ["frames", "source_hash", "blob_sha256"]  # what `report` reads: not the blobs, times...


def _query(sql: str, images: pa.Table) -> list[dict]:
    with duckdb.connect() as con:
        con.register("images", images)
        return con.sql(sql).to_arrow_table().to_pylist()


class _Copies:
    """Sources stored more than once (the same bytes under several paths: docs/ARCHIVE.md, "Sources
    of the same bytes"), counted over chunks of ok rows from the first 8 bytes of their hashes and
    what each row stores (blob, unless it shares another row's, and alpha channel) and would store
    alone: 24 bytes a row until `result`; and the rows sharing another's blob, with the bytes that saves."""

    def __init__(self):
        self.keys, self.costs, self.alone = [np.zeros(0, np.uint64)], [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
        self.flags = [np.zeros(0, bool)]  # rows sharing another's blob
        self.shared, self.shared_bytes = 0, 0

    def add(self, ok: pa.Table):
        keys, sha256 = hash_keys(ok["source_hash"])
        blob, shared = _last(ok["bytes"]), pc.fill_null(ok["shared_blob"], False)
        self.shared += pc.sum(shared.cast(pa.int64())).as_py() or 0
        self.shared_bytes += pc.sum(pc.if_else(shared, blob, 0)).as_py() or 0
        alpha = pc.fill_null(ok["alpha_bytes"], 0)
        self.keys.append(keys)
        self.costs.append(pc.add(pc.if_else(shared, 0, blob), alpha).to_numpy()[sha256])
        self.alone.append(pc.add(blob, alpha).to_numpy()[sha256])
        self.flags.append(shared.to_numpy(zero_copy_only=False)[sha256])

    def result(self) -> dict:
        """images: rows beyond the first of each source; sources: those held more than once; bytes:
        what those rows store beyond the smallest of each source's alone; shared: the rows whose blob
        is another's (`Row.shared_blob`), shared_bytes: their blobs' bytes, stored once; same_stream:
        those of them whose source is held once (another picture whose stream came out the same: a
        tiny image at a low depth), not a copy."""
        keys, costs, alone = np.concatenate(self.keys), np.concatenate(self.costs), np.concatenate(self.alone)
        order = np.argsort(keys, kind="stable")
        keys, costs, alone, flags = keys[order], costs[order], alone[order], np.concatenate(self.flags)[order]
        shared = {"shared": self.shared, "shared_bytes": self.shared_bytes}
        if not len(keys):
            return {"images": 0, "sources": 0, "bytes": 0, "same_stream": 0, **shared}
        starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
        held = np.diff(np.r_[starts, len(keys)])
        many = held > 1
        extra = np.maximum(np.add.reduceat(costs, starts)[many] - np.minimum.reduceat(alone, starts)[many], 0)
        same_stream = int((flags & (np.repeat(held, held) == 1)).sum())
        return {"images": int(held[many].sum() - many.sum()), "sources": int(many.sum()), "bytes": int(extra.sum()),
                "same_stream": same_stream, **shared}


def _last(lists: pa.ChunkedArray) -> pa.Array:
    """The last element of each list (0 for an empty or null one): a row's stored bytes from its
    per-depth `bytes`."""
    lists = lists.combine_chunks()
    offsets = lists.offsets.to_numpy()  # into `values`, which ignores a slice's offset
    values = np.r_[0, pc.fill_null(lists.values, 0).to_numpy()]  # shifted by one: [0] stands for an empty list
    return pa.array(values[np.where(offsets[1:] > offsets[:-1], offsets[1:], 0)], pa.int64())


class _Sums:
    """A cost row (`_SUMS`) added up over chunks: images, bytes, bpp, mean MS-SSIM and PSNR, and
    for a cost at a depth per image also the lowest MS-SSIM and the mean depth."""

    def __init__(self):
        self.total = dict.fromkeys(("images", "bytes", "pixels", "msssim_sum", "msssim_count", "psnr_sum", "psnr_count",
                                    "depth_sum"), 0)
        self.min_msssim = None

    def add(self, sums: dict) -> "_Sums":
        for key in self.total:
            self.total[key] += sums[key] or 0
        least = sums["min_msssim"]
        if least is not None:
            self.min_msssim = least if self.min_msssim is None else min(least, self.min_msssim)
        return self

    def result(self, cost: bool = True) -> dict:
        t = self.total
        row = {"images": t["images"], "bytes": t["bytes"],  # 0 for none (null until session 64, beside blob_bytes 0)
               "bpp": 8.0 * t["bytes"] / t["pixels"] if t["pixels"] else None,
               "mean_msssim": t["msssim_sum"] / t["msssim_count"] if t["msssim_count"] else None,
               "mean_psnr": t["psnr_sum"] / t["psnr_count"] if t["psnr_count"] else None}
        if cost:
            row.update(min_msssim=self.min_msssim, mean_depth=t["depth_sum"] / t["images"] if t["images"] else None)
        return row


def _at(depths: list[int], images: pa.Table) -> dict:
    """The `_SUMS` of `images` cut to `depths` (one per row)."""
    return _query(_COST_SQL, images.append_column("depth", pa.array(depths, pa.int64())))[0]


def _msssim_target(option: str, msssim: float | None) -> Target:
    """The Target of a command's MS-SSIM option, an error named as that option (`--min-msssim`,
    `--target-msssim`), not as a target's field (`target.msssim`: restore's until session 58)."""
    try:
        return Target(msssim=msssim)
    except OptionError as e:
        raise OptionError(option, e.reason) from None


def _by_path(rows: list) -> list:
    """(path, ...) pairs in path order, null paths last (as the archive's tables are sorted)."""
    return sorted(rows, key=lambda row: (row[0] is None, row[0] or ""))


def report(archive, depth: int | None = None, min_msssim: float | None = None, worst: int = 5,
           images: bool = True, folders: int | None = None) -> dict:
    """{"images": reader, "summary": {...}}: what the archive holds, costs and looks like; the
    images a `pyarrow.RecordBatchReader` of `IMAGE_FIELDS`, one row per image, sorted by path
    (`.read_all()`: a Table; `rgbatch report --json` writes it a batch at a time). The summary is
    added up a chunk of rows at a time (`Archive.chunks`) and the images are spilled to a
    temporary file as they come and sorted there (`_Spill`), so that an archive of any size is
    reported on in bounded memory.

    summary.stored: totals at the stored depths; summary.by_depth: per depth, over the images
    stored at least that deep; summary.at_depth / at_msssim: what the archive would cost cut
    to `depth` iterations / to the smallest depth reaching `min_msssim` per image; summary.folders
    (with `folders`): per folder that many levels deep, what its ok images store, largest first.
    Costs count each stream once: a row sharing another's blob (a copy, or a picture whose stream
    came out the same: `Row.shared_blob`) is
    left out of them (images, bytes, pixels, quality), as the archive stores it once (until
    session 58 its bytes were counted again at every depth: "as stored" said more than the
    blobs take, `--depth K` more than `compact --depth K` then stored); a folder's bytes and
    bpp leave out its copies' too, its image count and mean MS-SSIM count them.
    """
    check_count("depth", depth, 1)
    check_count("worst", worst, 0)
    check_count("folders", folders, 1)
    target = _msssim_target("min_msssim", min_msssim)
    man = Archive(archive)
    summary, spill = man.read_whole(lambda: _summarize(man, depth, target, worst, images, folders))
    summary = {"archive": man.location, "parts": len(man.parts), "part_bytes": man.part_bytes(), **summary,
               "unreadable_parts": len(man.unreadable), "set_aside_parts": len(man.set_aside_parts())}
    summary["failures"] += [{"path": path, "error": why} for path, why in man.unreadable]
    summary = {key: summary[key] for key in _SUMMARY_KEYS if key in summary}
    del man  # its footers and current rows (150 MB a million rows) are freed before DuckDB sorts the images
    return {"images": spill.sorted(), "summary": summary} if images else {"summary": summary}


_SUMMARY_KEYS = ("archive", "parts", "part_bytes", "images", "ok", "failed", "unreadable_parts", "set_aside_parts",
                 "model_ids", "source_bytes", "pixels", "stored", "blob_bytes", "alpha_bytes", "compression_ratio", "coding",
                 "reading", "copies", "by_depth", "worst", "failures", "at_depth", "at_msssim", "folders")


def _summarize(man: Archive, depth: int | None, target: Target, worst: int, images: bool,
               folders: int | None = None) -> tuple[dict, "_Spill | None"]:
    """(the summary `report` adds up chunk by chunk, the rows of `IMAGE_FIELDS` spilled if `images`)."""
    by_folder: dict[str, dict] = {}
    count = dict.fromkeys(("images", "ok", "source_bytes", "alpha_bytes", "pixels", "shallower", "not_reached",
                           "unmeasured", "partial_last_chunk", "unknown"), 0)
    stored, at_depth, at_msssim, by_depth, copies = _Sums(), _Sums(), _Sums(), {}, _Copies()
    models, failed, damaged, worst_rows = set(), [], [], []
    scales, coders, reading = collections.Counter(), collections.Counter(), collections.Counter()
    spill = _Spill(schema_of(IMAGE_FIELDS)) if images else None
    for chunk in man.chunks(REPORT_COLUMNS):
        chunk = _with_coding(man, chunk)
        if spill:
            spill.add(chunk.select(IMAGE_FIELDS))
        usable, bad = split_damaged(chunk)
        unheld = man.unheld(usable)  # sharing a blob no row holds: failures, as `restore` finds them
        if pc.any(unheld).as_py():
            lost = usable.filter(unheld)
            bad += [(p, unheld_blob(h)) for p, h in zip(lost["path"].to_pylist(), lost["blob_sha256"].to_pylist())]
            usable = usable.filter(pc.invert(unheld))
        damaged += bad
        is_ok = pc.fill_null(pc.equal(usable["status"], OK), False)
        ok = usable if pc.all(is_ok).as_py() else usable.filter(is_ok)  # the usual chunk: no copy
        failed += usable.filter(pc.invert(is_ok)).select(["path", "error"]).to_pylist()
        count["images"] += chunk.num_rows
        count["ok"] += ok.num_rows
        count["source_bytes"] += pc.sum(ok["source_bytes"]).as_py() or 0
        count["alpha_bytes"] += pc.sum(ok["alpha_bytes"]).as_py() or 0  # alpha channels kept beside the blobs
        count["pixels"] += pc.sum(pc.multiply(ok["width"].cast(pa.int64()), ok["height"])).as_py() or 0
        models.update(ok["model_id"].to_pylist())
        copies.add(ok)
        shared = pc.fill_null(ok["shared_blob"], False)
        streams = ok.filter(pc.invert(shared)) if pc.any(shared).as_py() else ok  # each stored stream once
        for row in _query(_FOLDER_SQL.format(levels=int(folders)), ok) if folders else ():
            sums = by_folder.setdefault(row.pop("folder"), dict.fromkeys(row, 0))
            for key, value in row.items():
                sums[key] += value or 0
        coding = coding_summary(ok)
        scales.update(coding["scale"])
        coders.update(coding["coder"])
        count["partial_last_chunk"] += coding["partial_last_chunk"]
        count["unknown"] += coding["unknown"]
        reading.update(reading_summary(ok))
        stored_depths = streams["iterations"].to_pylist()
        stored.add(_at(stored_depths, streams))
        for row in _query(_DEPTH_SQL, streams):
            by_depth.setdefault(row["depth"], _Sums()).add(row)
        worst_rows = sorted(worst_rows + _query(_WORST_SQL.format(limit=int(worst)), ok),
                            key=lambda r: (r["msssim"] is None, r["msssim"] or 0.0, r["path"]))[:worst]
        if depth is not None:
            at_depth.add(_at([min(depth, k) for k in stored_depths], streams))
            count["shallower"] += sum(k < depth for k in stored_depths)
        if target.msssim is not None:
            rows = Row.from_arrow(streams.select(["bytes", "msssim", "width", "height", "iterations"]))
            measured = pa.array([bool(r.msssim) for r in rows], pa.bool_())  # not those compressed with --no-measure
            rows = [r for r in rows if r.msssim]
            chosen = [r.keep(target=target) for r in rows]
            at_msssim.add(_at(chosen, streams.filter(measured)))
            count["not_reached"] += sum(r.msssim[d - 1] < target.msssim for r, d in zip(rows, chosen))
            count["unmeasured"] += len(measured) - len(rows)
    stored = stored.result()
    blob_bytes = stored["bytes"] or 0  # what the blobs take: each stream once
    summary = {
        "images": count["images"], "ok": count["ok"], "failed": len(failed) + len(damaged),
        "model_ids": sorted(models), "source_bytes": count["source_bytes"], "pixels": count["pixels"],
        "stored": stored, "blob_bytes": blob_bytes, "alpha_bytes": count["alpha_bytes"],
        "compression_ratio": count["source_bytes"] / (blob_bytes + count["alpha_bytes"]) if stored["bytes"] else None,
        "coding": {"coder": dict(sorted(coders.items(), key=lambda item: (-item[1], item[0]))),
                   "scale": dict(sorted(scales.items(), key=lambda item: -float(item[0]))),
                   "partial_last_chunk": count["partial_last_chunk"], "unknown": count["unknown"]},
        "reading": {loss: reading[loss] for loss in READING_WORDS if reading.get(loss)},
        "copies": copies.result(),
        "by_depth": [{"depth": d, **by_depth[d].result(cost=False)} for d in sorted(by_depth)],
        "worst": worst_rows,
        "failures": ([{"path": p, "error": e} for p, e in _by_path([(r["path"], r["error"]) for r in failed])]
                     + [{"path": p, "error": why} for p, why in _by_path(damaged)]),
    }
    if depth is not None:
        summary["at_depth"] = {"depth": depth, **at_depth.result(), "shallower": count["shallower"]}
    if target.msssim is not None:
        summary["at_msssim"] = {"msssim": target.msssim, **at_msssim.result(), "not_reached": count["not_reached"],
                                "unmeasured": count["unmeasured"]}
    if folders:
        summary["folders"] = sorted(({"folder": name, "images": t["images"], "source_bytes": t["source_bytes"],
                                      "bytes": t["bytes"], "bpp": 8 * t["bytes"] / t["pixels"] if t["pixels"] else None,
                                      "mean_msssim": t["msssim_sum"] / t["msssim_count"] if t["msssim_count"] else None}
                                     for name, t in by_folder.items()), key=lambda f: (-f["bytes"], f["folder"]))
    return summary, spill


class _Spill:
    """A report's images, written a chunk at a time to a Parquet file in a temporary folder (in
    `TMPDIR`) and read back sorted by path (nulls last, then as written) by DuckDB within
    `SORT_MEMORY`, on disk beyond. The sort runs before the first row is given, so that a full
    disk is one worded OSError before any output. The folder is deleted once the sorted rows are
    read to the end, or when the reader is dropped."""

    def __init__(self, schema: pa.Schema):
        self.schema = schema
        with self._worded():
            self.folder = tempfile.TemporaryDirectory(prefix="rgbatch-report-")
            self.path = f"{self.folder.name}/images.parquet"
            self.writer = pq.ParquetWriter(self.path, schema, compression="zstd")

    @contextlib.contextmanager
    def _worded(self):
        try:
            yield
        except (OSError, duckdb.Error) as e:
            if hasattr(self, "folder"):
                self.folder.cleanup()
            reason = os.strerror(e.errno) if getattr(e, "errno", None) else " ".join(str(e).split())
            raise OSError(getattr(e, "errno", None), f"cannot sort the report's images in a temporary folder "
                                                     f"there ({reason}): set TMPDIR to a folder with room",
                          tempfile.gettempdir()) from None

    def add(self, table: pa.Table):
        with self._worded():
            self.writer.write_table(table.cast(self.schema))

    def sorted(self) -> pa.RecordBatchReader:
        folder, schema = self.folder, self.schema
        with self._worded():
            self.writer.close()
            con = duckdb.connect(config={"memory_limit": SORT_MEMORY, "temp_directory": folder.name})
            rows = con.sql("SELECT * EXCLUDE (file_row_number) FROM read_parquet(?, file_row_number = true) "
                           "ORDER BY path NULLS LAST, file_row_number", params=[self.path]).to_arrow_reader(1024)
            try:
                first = [rows.read_next_batch()]  # the sort
            except StopIteration:
                first = []

        def batches():
            try:
                for batch in itertools.chain(first, rows):
                    yield batch.cast(schema)
            finally:
                con.close()
                folder.cleanup()

        return pa.RecordBatchReader.from_batches(schema, batches())


def _checked(man: Archive, columns: list[str], keep: tuple[str, ...] = ()) -> tuple[pa.Table, list[tuple[str | None, str]]]:
    """(the current rows' path, status and error (where among `columns`) and `keep` in path order,
    without their damaged ok rows; [(path, why)] of those, in path order): `split_damaged` on
    `columns` a chunk at a time (`Archive.chunks`), so that a plan holds the paths, not the
    per-depth lists the check reads."""
    kept = [c for c in ("path", "status", "error") if c in columns] + list(keep)

    def read():
        tables, damaged = [], []
        for chunk in man.chunks(columns):
            usable, bad = split_damaged(chunk)
            tables.append(usable.select(kept))
            damaged += bad
        return sorted_by_path(tables, schema_of(kept)), _by_path(damaged)

    return man.read_whole(read)


def _with_coding(man: Archive, table: pa.Table) -> pa.Table:
    """`table` with the `scale` and `last_steps` of its ok rows from parts written before those
    columns read from their blobs' headers (`Row.with_coding`; the blobs of those rows only,
    part by part)."""
    paths, status = table["path"].to_pylist(), table["status"].to_pylist()
    scales, steps = table["scale"].to_pylist(), table["last_steps"].to_pylist()
    unknown = {p for p, st, sc, k in zip(paths, status, scales, steps) if st == OK and p and None in (sc, k)}
    if not unknown:
        return table
    read = {}
    for row in man.rows(unknown):
        row = row.with_coding()
        read[row.path] = row.scale, row.last_steps
    scales, steps = zip(*(read.get(p, (sc, k)) for p, sc, k in zip(paths, scales, steps)))
    table = table.set_column(table.schema.get_field_index("scale"), "scale", pa.array(scales, pa.float64()))
    return table.set_column(table.schema.get_field_index("last_steps"), "last_steps", pa.array(steps, pa.int16()))


def coding_summary(ok: pa.Table) -> dict:
    """How the ok rows were coded: images per entropy coder (its name; "?" where a row says none),
    per scale ("1", "0.75", "0.5"), those whose last chunk is partial, and those whose blob said
    neither (unreadable header)."""
    scales = [s for s in ok["scale"].to_pylist() if s is not None]
    return {"coder": dict(sorted(collections.Counter(c or "?" for c in ok["coder"].to_pylist()).items())),
            "scale": {f"{s:g}": scales.count(s) for s in sorted(set(scales), reverse=True)},
            "partial_last_chunk": sum(1 for k in ok["last_steps"].to_pylist() if k),
            "unknown": ok.num_rows - len(scales)}


def reading_summary(ok: pa.Table) -> dict:
    """What reading the ok rows' sources into 8-bit RGB lost, beside the codec: images per loss
    (rgbatch.imageio.LOSSY_MODES, from the `mode` column; an alpha channel is lost only where no
    `alpha` was kept: rows of parts before session 25), only the losses that occurred; and the
    images whose alpha channel was kept (`alpha_kept`, losslessly beside the blob)."""
    kept = [n is not None for n in ok["alpha_bytes"].to_pylist()]
    lost = collections.Counter(loss for m, k in zip(ok["mode"].to_pylist(), kept) for loss in reading_losses(m, k))
    counts = {loss: lost[loss] for loss in (*LOSSY_MODES, "extra_channels_dropped")}
    counts["frames_dropped"] = sum(1 for n in ok["frames"].to_pylist() if n and n > 1)
    counts["alpha_kept"] = sum(kept)
    return {loss: n for loss, n in counts.items() if n}


def reading_text(reading: dict) -> str:
    """A report's `reading` summary in words."""
    return "; ".join(f"{n} {READING_WORDS[loss]}" for loss, n in reading.items()) or "nothing lost (8-bit sources)"


def copies_text(copies: dict) -> str:
    """A report's `copies` summary in words."""
    same = copies.get("same_stream", 0)
    also = (f"{same:,} image(s) of other sources whose stream came out the same as another's (the "
            f"same pixels in another file, or tiny images at low depths), stored once") if same else ""
    if not copies["images"]:
        return also or "none (no source's bytes are stored twice)"
    copied = copies["shared"] - same
    saved = f", {copies['shared_bytes']:,} bytes stored once" if copied and not same else ""
    shared = f"; {copied} of their rows share another's blob{saved}" if copied else ""
    return (f"{copies['images']} image(s) the same source bytes as another ({copies['sources']} source(s) archived "
            f"more than once: {copies['bytes']:,} bytes stored beyond one each{shared})" + (f"; {also}" if also else ""))


def bytes_text(summary: dict) -> str:
    """A report's archive bytes in words: in blobs (`blob_bytes`: a blob rows share counted once),
    in alpha channels (if any), in part files."""
    alpha = f"{summary['alpha_bytes']:,} in alpha channels, " if summary["alpha_bytes"] else ""
    return f"{summary['blob_bytes']:,} in blobs, {alpha}{summary['part_bytes']:,} in {summary['parts']} part file(s)"


def coding_text(coding: dict) -> str:
    """A report's `coding` summary in words."""
    scales, partial, coders = coding["scale"], coding["partial_last_chunk"], coding.get("coder", {})
    smaller = {s: n for s, n in scales.items() if s != "1"}
    # several coders in one archive (`compress --coder` changed between runs): its figures mix them
    words = [f"coder {next(iter(coders))}" if len(coders) == 1 else
             "coders " + ", ".join(f"{c}: {n}" for c, n in coders.items())] if coders else []
    words += [f"{sum(smaller.values())} of {sum(scales.values())} coded smaller (scale "
             + ", ".join(f"{s}: {n}" for s, n in smaller.items()) + ")" if smaller else "all at scale 1",
             f"{partial} with a partial last chunk" if partial else "whole iterations"]
    if coding["unknown"]:
        words.append(f"{coding['unknown']} unknown (header unreadable)")
    return "; ".join(words)


def summary_facts(summary: dict) -> list[tuple[str, str]]:
    """The head of a report in words, (label, text) each: the text report's table and the HTML
    page's (built twice until session 62, they had drifted: "model" and "models", "1.2x" and "1.2")."""
    s = summary
    return [("images", f"{s['images']} ({s['ok']} ok, {s['failed']} failed)"),
            ("models", ", ".join(s["model_ids"]) or "-"),
            ("source bytes", f"{s['source_bytes']:,}"),
            ("archive bytes", bytes_text(s)),
            ("compression ratio", f"{s['compression_ratio']:.1f}x" if s["compression_ratio"] else "-"),
            ("coding", coding_text(s["coding"]) if s["ok"] else "-"),
            ("reading", reading_text(s["reading"]) if s["ok"] else "-"),
            ("copies", copies_text(s["copies"]))]


def depth_text(iterations: int | None, last_steps: int | None, scale: float | None = None) -> str:
    """An image's stored depth, saying a partial last chunk ("5 (24 steps)": 4 whole iterations
    and the first 24 coding steps of the 5th) and a scale other than 1 ("at 0.75")."""
    text = "-" if iterations is None else str(iterations)
    if last_steps:
        text += f" ({last_steps} steps)"
    if scale is not None and scale != 1:
        text += f" at {scale:g}"
    return text


# -- shared by restore and verify ---------------------------------------------------------------------
def safe_relative_path(path: str) -> str:
    """A manifest path that stays inside the folder it is joined to, or ValueError."""
    if not isinstance(path, str) or not path:
        raise ValueError("the row has no path: not written")
    if "\0" in path:
        raise ValueError(f"path {path!r} holds a NUL character: not written")
    # a backslash or a colon is a name's character on POSIX (compress archives `a\\b.png` and
    # `Photos:/a.png`) and a separator or a drive on Windows: refused only where either reading
    # would leave the folder
    pieces = path.replace("\\", "/").split("/")
    if (path.startswith(("/", "\\")) or ".." in pieces or "://" in path or re.match(r"[A-Za-z]:", path)):
        raise ValueError(f"unsafe path {path!r} in the manifest (absolute, or with '..'): not written")
    return posixpath.normpath(path)


def _model_problem(row: Row, codec: Codec) -> str | None:
    if row.model_id != codec.model_id:
        from .weights import where_model_is

        return (f"coded by model {row.model_id}, but the loaded weights are model {codec.model_id}: "
                f"{where_model_is(row.model_id, not codec.shipped)}")
    return None


def _decode_each(codec: Codec, work: list[tuple[Row, int]], max_pixels: int = MAX_PIXELS):
    """(row, image or None, error or None) for (row, depth) pairs: decoded as one batch, and one
    by one when the batch fails, so that one damaged blob fails alone. Streams of images over
    `max_pixels` pixels are refused (docs/FORMAT.md, "Limits")."""
    try:
        images = codec.decode_many([row.blob for row, _ in work], [d for _, d in work], max_pixels)
        yield from ((row, image, None) for (row, _), image in zip(work, images))
        return
    except Exception:
        pass
    for row, depth in work:
        try:
            yield row, codec.decode(row.blob, depth, max_pixels), None
        except Exception as e:
            yield row, None, f"cannot decode: {e}"


def _decode_by_model(codec: Codec, work: list[tuple[Row, int]], max_pixels: int = MAX_PIXELS):
    """_decode_each per model id in `work` (Codec.for_model: rows of an earlier shipped model decode
    with its packaged weights when the shipped one was loaded), in the order of `work`."""
    results = {}
    for mid in dict.fromkeys(row.model_id for row, _ in work):
        part = [(row, depth) for row, depth in work if row.model_id == mid]
        for out in _decode_each(codec.for_model(mid), part, max_pixels):
            results[id(out[0])] = out
    return [results[id(row)] for row, _ in work]


def _decode_once(codec: Codec, work: list[tuple[Row, int]], max_pixels: int = MAX_PIXELS):
    """`_decode_by_model`, each (model, blob, depth) of `work` decoded once: copies (`_copies`, the
    same blob under several paths) share one decoding."""
    if not work:  # a group read back whole
        return []
    same = {}
    for i, (row, depth) in enumerate(work):
        same.setdefault((row.model_id, row.blob, depth), []).append(i)
    decoded = [None] * len(work)
    for ids, (_, image, error) in zip(same.values(), _decode_by_model(codec, [work[ids[0]] for ids in same.values()],
                                                                       max_pixels)):
        for i in ids:
            decoded[i] = work[i][0], image, error
    return decoded


def _blob_key(row: Row) -> tuple[str, bytes]:
    """A row's model and its blob's sha256: copies' (`_copies`) are the same."""
    return row.model_id, hashlib.sha256(row.blob).digest()


def _in_groups(items, size: int):
    group = []
    for item in items:
        group.append(item)
        if len(group) == size:
            yield group
            group = []
    if group:
        yield group


# -- restore -------------------------------------------------------------------------------------------
@dataclass
class RestoreResult:
    out: str
    written: list[dict] = field(default_factory=list)  # path, file, depth
    failures: list[tuple[str, str]] = field(default_factory=list)  # (path, error)
    skipped: list[dict] = field(default_factory=list)  # path, file, depth: restored there already (`RESTORED_KEY`)
    not_archived: int = 0  # selected paths whose current row is a failure of `compress`: nothing to restore

    @property
    def exit_code(self) -> int:
        return 1 if self.failures else 0


def restored_text(row: Row, depth: int, decoding: str) -> str | None:
    """What a PNG restored from `row` at `depth` holds, as its `RESTORED_KEY` chunk says it: the
    archived path, the sha256 of the stream cut to that depth (what was decoded), the depth and
    the decoder's arithmetic; None where the blob cannot be cut (decoding will say why)."""
    try:
        stream = row.cut(depth).blob
    except bitstream.BitstreamError:
        return None
    return json.dumps({"path": row.path, "stream_sha256": hashlib.sha256(stream).hexdigest(), "depth": int(depth),
                       "decoding": "float" if decoding == "float" else "exact"}, sort_keys=True)


def _stream_key(row: Row, text: str | None) -> tuple | None:
    """What decoding `row` to a restored text's depth gives pixels of: its model and the text's
    stream digest, depth and arithmetic (not its path); None without a text (a blob not cut)."""
    if text is None:
        return None
    fields = json.loads(text)
    return row.model_id, fields["stream_sha256"], fields["depth"], fields["decoding"]


def _copies(table: pa.Table) -> set[str]:
    """The paths of the ok rows of `table` (path, status, source hash, model id) whose source hash
    and model another has: copies (docs/ARCHIVE.md, "Sources of the same bytes"), whose blobs
    `restore` and `verify` decode once. It only says where to look: one decoding serves two rows
    only where their blobs (or streams cut to the depth) are the same."""
    return set(_copies_of(table, ("source_hash", "model_id"))["path"].to_pylist())


def _copies_of(table: pa.Table, keys: tuple[str, ...] = ("source_hash",)) -> pa.Table:
    """The ok rows of `table` with a source hash whose `keys` another ok row has too."""
    ok = table.filter(pc.and_(pc.fill_null(pc.equal(table["status"], OK), False), pc.is_valid(table["source_hash"])))
    counts = ok.group_by(list(keys), use_threads=False).aggregate([([], "count_all")])
    counts = counts.filter(pc.greater(counts["count_all"], 1)).drop_columns(["count_all"])
    return ok.join(counts, keys=list(keys), join_type="left semi")


def _restored_pixels(fs, target: str, row: Row, text: str, max_pixels: int = MAX_PIXELS) -> np.ndarray | None:
    """The RGB pixels of the PNG at `target` restored from the same stream as `row` to `text`'s
    depth (its `RESTORED_KEY` says so: read back, not decoded again), or None where it does not
    read or say so (gone, changed, damaged: the stream is decoded instead)."""
    try:
        image, _ = open_image(storage.read_bytes(fs, target, max_source_bytes(max_pixels)), max_pixels)
        there = image.info.get(RESTORED_KEY)
        if (image.format != "PNG" or image.size != (row.width, row.height)
                or image.mode not in ("RGB", "RGBA", "L", "LA")  # a grey source's (`encode_png`'s `grey`)
                or not isinstance(there, str) or _stream_key(row, there) != _stream_key(row, text)):
            return None
    except (ImageError, OSError, ValueError, KeyError, TypeError):  # a foreign text: not JSON, other fields
        return None
    return np.asarray(image.convert("RGB"))


def _restored_there(fs, root: str, name: str) -> str | None:
    """The `RESTORED_KEY` chunk of the plain file `name` under `root` ("" for a file without one:
    not a restore's), or None where no plain file is (nothing, or a folder or link, there or on the
    way: `write_new` says)."""
    if not storage.is_regular_file_below(fs, root, name):
        return None
    target = f"{root}/{name}"
    try:
        with storage.open_input(fs, target) as file:
            return png_text(file).get(RESTORED_KEY, "")
    except OSError:
        return ""


def png_names(paths: list[str]) -> dict[str, str]:
    """Output file of each (safe, normalised) path, all distinct, even where letter case is not
    told apart, and none the name of a folder another output needs:

    1. a `.png` path keeps its name; any other path has its suffix replaced by `.png`
       (`2019/a.jpg` -> `2019/a.png`, `photo` -> `photo.png`);
    2. if that name is taken, the whole name plus `.png` (`a.jpg` -> `a.jpg.png`);
    3. if that is taken too, `~2`, `~3`, ... before `.png` (`a.jpg~2.png`).

    Names are given in path order, PNGs keeping their own name first, so they depend only on
    the set of paths (restore names the current ok paths of the whole archive, whatever
    `--select` picks)."""
    def own(path: str) -> str:
        name = path.rpartition("/")[2]
        if len(name) > 4 and name[-4:].lower() == ".png":  # PurePosixPath's suffix is .png (quicker)
            return path
        pure = PurePosixPath(path)
        return str(pure.with_suffix(".png")) if pure.suffix else path + ".png"

    normal = {p: posixpath.normpath(p) for p in paths}  # x//y.png is x/y.png on disk
    folders = {PurePosixPath(folder) for folder in set(map(posixpath.dirname, normal.values()))}  # each once
    taken = {str(f).casefold() for folder in folders for f in [folder, *folder.parents] if str(f) != "."}
    names = {}
    for path in sorted(normal, key=lambda p: (own(normal[p]) != normal[p], p)):
        candidates = itertools.chain([own(normal[path]), normal[path] + ".png"],
                                     (f"{normal[path]}~{n}.png" for n in itertools.count(2)))  # lazily
        names[path] = next(c for c in candidates if c.casefold() not in taken)
        taken.add(names[path].casefold())
    return names


def select_globs(select: str | list[str] | None) -> tuple[str, ...]:
    """`select` (restore's, the HTML report's) as globs: none (every path), one, or several."""
    try:
        globs = () if select is None else (select,) if isinstance(select, str) else tuple(select)
    except TypeError:  # not iterable (a number): a TypeError until session 61
        globs = None
    if globs is None or not all(isinstance(g, str) for g in globs):
        raise OptionError("select", f"must be a glob or globs, not {select!r}")
    return globs


def selects(path: str, globs: tuple[str, ...]) -> bool:
    """Whether `globs` (`select_globs`) pick an archived path: any matches it, or there are none."""
    return not globs or any(fnmatch.fnmatchcase(path, glob) for glob in globs)


def check_every_glob_matches(name: str, globs: tuple[str, ...], paths: list[str], failed: list[str] = ()):
    """OptionError for the first of `globs` that matches none of `paths`: a mistyped glob would
    pick nothing, silently (until session 57 a repeated --select kept only the last); said so
    where it matches only `failed` paths (whose compression failed: no image)."""
    for glob in globs:
        if not any(fnmatch.fnmatchcase(p, glob) for p in paths):
            if any(fnmatch.fnmatchcase(p, glob) for p in failed):
                raise OptionError(name, f"{glob!r}: matches only images whose compression failed (no image is "
                                        f"archived for them: `rgbatch report` says why; compress them again)")
            hint = " (in a glob '[...]' is a set of characters: a literal '[' is written '[[]')" if "[" in glob else ""
            raise OptionError(name, f"{glob!r}: no archived image matches it{hint}")


def restore(archive, out, iterations: int | None = None, target_msssim: float | None = None,
            select: str | list[str] | None = None, weights=None, device: str = "auto", batch_size: int = 8,
            precision: str = "auto", decoding: str = "exact", overwrite: bool = False, progress=None,
            max_pixels: int = MAX_PIXELS, workers: int = 0, address: str | None = None) -> RestoreResult:
    """Write the archived images as PNGs under `out`, at `iterations` (at most what each image
    stores) or per image the smallest depth reaching `target_msssim`; default all stored.

    `select` is a glob on the archived paths, or several (a path matching any). File names:
    `png_names`. A file already there is never replaced unless `overwrite`, and no symbolic
    link below `out` is followed. Every
    image that cannot be restored is a failure with its reason; the others are written. A folder
    that takes no file at all (a full disk, a read-only file system, an `out` not allowed or not
    made) stops it at the first: `storage.FolderRefuses`, saying how many were written before.
    `progress(done, total)` is called per group of images. `workers` > 0 decodes and writes on
    that many Ray actors (`address`: a Ray cluster; else RAY_ADDRESS or a local Ray), each
    with its own codec: on a cluster `out` must be a store every node reaches.
    """
    check_one_of("iterations", "target_msssim", iterations, target_msssim)
    check_count("iterations", iterations, 1)
    check_count("batch_size", batch_size, 1)
    check_count("workers", workers, 0)
    check_max_pixels(max_pixels)
    storage.check_location("out", out)
    if not str(out):  # the current folder, as a path (`--out "$UNSET"`): until session 54 written into
        raise OptionError("out", "is empty: give the folder to write the PNGs under ('.' for the current one)")
    target = _msssim_target("target_msssim", target_msssim)
    globs = select_globs(select)
    man = Archive(archive)
    table, damaged = _checked(man, ["path", "status", "model_id", "width", "height", "iterations", "bytes", "msssim",
                                    "source_hash"], keep=("source_hash", "model_id"))
    result = RestoreResult(out=str(out))
    safe, failed = [], []  # every current ok path that stays inside `out`; those of failures
    for path, status in zip(table["path"].to_pylist(), table["status"].to_pylist()):
        if status != OK:
            failed.append(path or "")
        else:
            try:
                safe_relative_path(path)
            except ValueError as e:
                if selects(path, globs):
                    result.failures.append((path, str(e)))
                continue
            safe.append(path)
    selected = [p for p in safe if selects(p, globs)]
    copies = _copies(table.filter(pc.is_in(table["path"], pa.array(selected, pa.string()))) if globs else table)
    del table
    result.not_archived = sum(selects(p, globs) for p in failed)
    result.failures += [(p, why) for p, why in damaged if selects(p or "", globs)]
    result.failures += man.unreadable  # whatever `select` says: its images may be among them
    if globs and not result.failures:
        check_every_glob_matches("select", globs, selected, failed)
    fs, root = storage.resolve(out)
    if storage.exists(fs, root) and not storage.is_dir(fs, root):
        raise OptionError("out", f"{out} is {storage.described(fs, root)}, not a folder")
    if not storage.is_local(fs) and (why := storage.why_unwritable(fs, root)):  # a local one's: per image
        raise OptionError("out", f"{out}: {why}")
    options = dict(weights=weights, device=device, batch_size=batch_size, precision=precision, decoding=decoding)
    from .codec import Codec

    codec = Codec.load(**options)
    names = png_names(safe)  # of every current ok path: the same names whatever is selected
    total = len(selected) + len(result.failures)

    def usable(row: Row) -> bool:
        problem = row.problem() or _model_problem(row, codec.for_model(row.model_id))
        if not problem and target and not row.msssim:
            problem = "no MS-SSIM recorded (compressed with measuring off): restore it at a fixed depth (iterations)"
        if problem:
            result.failures.append((row.path, problem))
        return problem is None

    def to_do(row: Row, depth: int, text: str | None) -> bool:
        """False for an image whose file is there already: restored so before (the same stream
        and depth: skipped, so that an interrupted restore resumes) or another file (refused
        unless `overwrite`), either way without decoding it."""
        target = f"{root}/{names[row.path]}"
        there = None if overwrite else _restored_there(fs, root, names[row.path])
        if there is None:
            return True
        if text is not None and there == text:
            result.skipped.append({"path": row.path, "file": storage.uri(fs, target, str(out)), "depth": depth})
            if row.path in copies:
                restored.setdefault(_stream_key(row, text), target)
        else:
            result.failures.append((row.path, f"{names[row.path]}: {storage.ALREADY_THERE}"))
        return False

    # the streams of copies restored (written, or there already): (model, stream, depth, arithmetic) -> file,
    # so that another copy's PNG is read back from it, not decoded again; and those of copies on their way
    restored, restoring = {}, {}

    def groups(size: int = DECODE_GROUP):
        for group in _in_groups((r for r in man.rows(set(selected)) if usable(r)), size):
            work = [(r, r.keep(iterations, target)) for r in group]
            work = [(r, depth, restored_text(r, depth, codec.decoding), names[r.path]) for r, depth in work]
            work = [w for w in work if to_do(*w[:3])]
            for row, _, text, _ in work:
                if row.path in copies and text is not None:
                    restoring[row.path] = _stream_key(row, text)
            yield [(*w, restored.get(restoring.get(w[0].path))) for w in work]

    # closed when the loop ends, however (an error, the caller's progress raising): its Ray ends then, not
    # when the generator is collected (until session 61 a kept exception held it, and another call waited)
    on_ray = (_on_ray(groups, len(selected), workers, address, options, "restore", storage.absolute(out), overwrite,
                      max_pixels) if workers else None)
    if workers:
        done = (([], _each(work, why)) if why else _seen_here(fs, root, names, *written_failed)
                for work, written_failed, why in on_ray)
    else:
        done = (_restore_group(codec, fs, root, work, overwrite, max_pixels, str(out)) for work in groups())
    with contextlib.closing(on_ray) if on_ray else contextlib.nullcontext():
        try:
            for written, failures in done:
                result.written += written
                result.failures += failures
                for w in written:
                    if w["path"] in restoring:
                        restored.setdefault(restoring.pop(w["path"]), f"{root}/{names[w['path']]}")
                if progress:
                    progress(len(result.written) + len(result.failures) + len(result.skipped), total)
        except storage.FolderRefuses as e:  # full, read-only, not allowed: no image more could be written
            written = len(result.written) + e.written
            at_least = "at least " if workers else ""  # other actors' groups may have finished, unread
            before = (f"{at_least}{written} image(s) written before it, whole: a rerun skips them"
                      if written or workers else "no image written")
            before += f" ({len(result.skipped)} restored by an earlier run)" if result.skipped else ""
            raise storage.FolderRefuses(f"{out}: {e}; stopped, {before}", e.errno, written) from None
    result.failures += man.missed  # rows of a part whose pages turned out damaged
    result.written.sort(key=lambda w: w["path"])  # in path order, as `report`'s, whatever order the work
    result.skipped.sort(key=lambda w: w["path"])  # finished in (the order parts hold their rows in, until session 64)
    result.failures = _by_path(result.failures)
    return result


def _restore_group(codec: Codec, fs, root: str, work: list, overwrite: bool, max_pixels: int, out: str = ""):
    """Decode one group of (row, depth, restored text, file name, a file restored from the same
    stream or None) and write its PNGs under `root` (of `out`, the location as given): (written
    [{path, file, depth}], failures [(path, why)])."""
    written, failures = [], []
    for (row, image, error), (_, depth, text, name, _) in zip(_group_images(codec, fs, work, max_pixels), work):
        if error:
            failures.append((row.path, error))
            continue
        try:
            file = storage.write_new(fs, root, name, encode_png(
                image, row.metadata(), {RESTORED_KEY: text} if text else None, row.alpha_channel(),
                grey=base_mode(row.mode) in GREY_MODES), overwrite)
        except ImageError as e:  # a damaged alpha channel: no image rather than one without it
            failures.append((row.path, str(e)))
            continue
        except storage.FolderRefuses as e:  # every other image would fail too: the command stops (`restore`)
            e.written = len(written)
            raise
        except storage.NotWritten as e:
            failures.append((row.path, f"{name}: {e}"))
            continue
        written.append({"path": row.path, "file": storage.uri(fs, file, out), "depth": depth})
    return written, failures


def _group_images(codec: Codec, fs, work: list, max_pixels: int) -> list[tuple[Row, np.ndarray | None, str | None]]:
    """(row, image or None, error or None) of each item of a restore group (`_restore_group`): read
    back from the file restored from the same stream where there is one (`_restored_pixels`), else
    decoded (`_decode_once`)."""
    images = [(row, _restored_pixels(fs, like, row, text, max_pixels) if like else None, None)
              for row, _, text, _, like in work]
    to_decode = [i for i, (_, pixels, _) in enumerate(images) if pixels is None]
    for i, decoded in zip(to_decode, _decode_once(codec, [work[i][:2] for i in to_decode], max_pixels)):
        images[i] = decoded
    return images


NOT_SEEN = ("written by a restore worker where this command does not see it: on a cluster, --out must be "
            "storage every node reaches (object storage, a shared file system)")


def _seen_here(fs, root: str, names: dict[str, str], written: list, failures: list):
    """An actor's (written, failures) as this command sees them: a file it wrote that is not there
    for the command (on a cluster, an `--out` on the disk of the actor's own node) fails its image."""
    seen, failures = [], list(failures)
    for w in written:
        name = names[w["path"]]
        if storage.is_regular_file(fs, f"{root}/{name}"):
            seen.append(w)
        else:
            failures.append((w["path"], f"{name}: {NOT_SEEN}"))
    return seen, failures


class ArchiveWorker:
    """A Ray actor of `restore` and `verify` with `workers`: its own codec, one group of images at a time."""

    def __init__(self, threads: int, options: dict):
        import torch

        from .codec import Codec

        torch.set_num_threads(threads)
        self.codec = Codec.load(**options)

    def restore(self, work: list, out: str, overwrite: bool, max_pixels: int):
        fs, root = storage.resolve(out)
        return _restore_group(self.codec, fs, root, work, overwrite, max_pixels, out)

    def verify(self, work: list, sources, max_pixels: int, read_timeout: float, endpoints: frozenset = frozenset()):
        return _verify_group(self.codec, work, sources, max_pixels, read_timeout, endpoints)


def _each(work: list, why: str) -> list[tuple[str, str]]:
    """(path, why) of each image of a group an actor failed on (its items start with the row)."""
    return [(item[0].path, why) for item in work]


GROUPS_IN_FLIGHT = 2  # per actor: one decoding, one waiting (blobs held: a group's each)


def _on_ray(groups, images: int, workers: int, address: str | None, options: dict, method: str, *args):
    """(group, what `ArchiveWorker.<method>(group, *args)` returned, None), or (group, None, why the
    actor failed), for each of `groups(size)` on `workers` Ray actors, as they finish; `size` gives
    every actor two of the `images` groups at least (at most DECODE_GROUP images, whose tiles
    share a GPU's batches). An actor that fails (its node lost, its codec not loaded) takes no
    more groups: the rest goes on, and the groups it had are failures of their images."""
    from .pipeline import HeadWatch, end_actors, plan_workers, ray_session

    with ray_session(address) as ray:
        device, count, threads, gpu_share = plan_workers(ray, options["device"], workers)
        actor_class = ray.remote(ArchiveWorker).options(num_cpus=1, num_gpus=gpu_share)
        weights = options["weights"] and storage.absolute(options["weights"])
        actors = [actor_class.remote(threads, {**options, "device": device, "weights": weights}) for _ in range(count)]
        free, pending = list(range(count)) * GROUPS_IN_FLIGHT, {}  # an actor's free slots
        size = max(1, min(DECODE_GROUP, images // (count * GROUPS_IN_FLIGHT)))
        head = HeadWatch(ray, kept="the images written so far are whole; a rerun skips them" if method == "restore" else "")

        def finished():
            while not (ready := ray.wait(list(pending), num_returns=1, timeout=1.0)[0]):
                head.check()  # a cluster that went away ends the command (`ClusterGone`)
            (ref,) = ready
            actor, group = pending.pop(ref)
            try:
                done = ray.get(ref)
            except Exception as e:  # the actor takes no more groups: its free slots go
                if isinstance(getattr(e, "cause", None), storage.FolderRefuses):  # the command's to end
                    raise e.cause from None
                free[:] = [a for a in free if a != actor]
                return group, None, f"{method} worker failed: {' '.join(str(e).split())[:300]}"
            free.append(actor)
            return group, done, None

        try:
            for group in groups(size):
                if not group:
                    continue
                while pending and not free:
                    yield finished()
                if not free:  # every actor failed
                    yield group, None, f"{method} worker failed: none is left"
                    continue
                actor = free.pop()
                pending[getattr(actors[actor], method).remote(group, *args)] = actor, group
            while pending:
                yield finished()
        finally:
            end_actors(ray, actors)


# -- verify ----------------------------------------------------------------------------------------------
@dataclass
class VerifyResult:
    archive: str
    checked: int = 0  # blobs checked (checksums, header, decoding)
    decoded: int = 0
    remeasured: list[dict] = field(default_factory=list)  # path, recorded, measured
    unmeasured: list[tuple[str, str]] = field(default_factory=list)  # sampled but source gone / changed
    problems: list[tuple[str, str]] = field(default_factory=list)  # (path, what is wrong)
    unreachable: list[tuple[str, str]] = field(default_factory=list)  # not checked: a source not reached, a worker lost

    @property
    def exit_code(self) -> int:
        return 1 if self.problems or self.unreachable else 0

    def add(self, other: "VerifyResult"):
        """Count in what a group's checking found (`_verify_group`)."""
        self.checked += other.checked
        self.decoded += other.decoded
        for name in ("remeasured", "unmeasured", "problems", "unreachable"):
            getattr(self, name).extend(getattr(other, name))


def level_tolerance(source: np.ndarray, image: np.ndarray, measured: float) -> float:
    """How far a recorded MS-SSIM may lie from `measured` (of `image` against `source`): float
    noise (`MSSSIM_TOLERANCE`), or what one level of every pixel moves it, where that is more.
    The encoder records the quality of its own loop's reconstruction, which the exact decoder
    matches within a level (README, "Exact decoding"); on a dark flat image a level moves
    MS-SSIM by several thousandths (an all-black 16 x 16 image: 0.0025), so a fixed tolerance
    called such images wrong."""
    from .metrics import msssim

    shifted = [msssim(source, np.clip(image.astype(np.int16) + d, 0, 255).astype(np.uint8)) for d in (-1, 1)]
    return max(MSSSIM_TOLERANCE, *(abs(m - measured) for m in shifted))


class _SharedChecks:
    """`bitstream.check` of the blobs of rows sharing one (copies): the rows of one blob are given
    the same bytes object (`Archive.shared_blob`, which gives it only where its sha256 is the row's
    digest), whose chunks are checked once. The latest checked are kept, SHARED_CACHE_BYTES of
    them, each with its bytes object: a hit is that very object, so nothing else passes unchecked."""

    def __init__(self):
        self.checked, self.bytes = collections.OrderedDict(), 0  # id(blob) -> (blob, header, per-depth sizes)

    def check(self, row: Row) -> tuple[bitstream.Header, list[int]]:
        """The header of the row's blob, every checksum verified, and its per-depth sizes."""
        held = self.checked.get(id(row.blob)) if row.shared_blob else None
        if held is not None and held[0] is row.blob:
            self.checked.move_to_end(id(row.blob))
            return held[1:]
        header = bitstream.check(row.blob)
        sizes = header.cumulative_bytes()
        if row.shared_blob:
            self.checked[id(row.blob)] = row.blob, header, sizes
            self.bytes += len(row.blob)
            while self.bytes > SHARED_CACHE_BYTES:
                self.bytes -= len(self.checked.popitem(last=False)[1][0])
        return header, sizes


def _check_blob(row: Row, shared: _SharedChecks) -> str | None:
    """Checksums of every chunk, the header against the row, and the whole blob's sha256 where
    the row records it (rows written since session 50)."""
    try:
        header, sizes = shared.check(row)
    except bitstream.BitstreamError as e:
        return f"damaged blob: {e}"
    if (header.width, header.height, header.iterations) != (row.width, row.height, row.iterations):
        return (f"blob holds {header.width}x{header.height} at {header.iterations} iterations, the row says "
                f"{row.width}x{row.height} at {row.iterations}")
    coder = CODERS.get(header.coder_id)  # a forged id passed `--quick` until session 59 (only decoding refused it)
    if coder is None or (row.coder is not None and coder.name != row.coder):
        said = f"coder {coder.name}" if coder else f"unknown entropy coder id {header.coder_id}"
        return f"damaged blob: its header says {said}, the row {row.coder}"
    if sizes != list(row.bytes) or len(row.blob) != row.bytes[-1]:
        return "blob sizes do not match the row's per-depth bytes"
    coded = coding(header, row.iterations)  # what report counts (a scale of NaN, unchecked, until session 63)
    if (row.scale, row.last_steps) != coded and (row.scale, row.last_steps) != (None, None):
        return (f"damaged row: its scale {row.scale} and last chunk's steps {row.last_steps} are not its blob's "
                f"({coded[0]}, {coded[1]})")
    # a shared row's blob was handed out only where it has the digest (`Archive.shared_blob`)
    if row.blob_sha256 is not None and not row.shared_blob and hashlib.sha256(row.blob).hexdigest() != row.blob_sha256:
        return "damaged blob or row: the blob's sha256 is not the one its row records"
    try:
        row.alpha_channel()
    except ImageError as e:
        return str(e)
    return None


class SourceUnreachable(OSError):
    """A source that could not be reached (as opposed to one that is gone): nothing was checked."""


def _source_image(row: Row, sources, read_timeout: float = storage.READ_TIMEOUT,
                  endpoints: frozenset[str] = frozenset()) -> tuple:
    """(the row's source read as compress read it: rgbatch.imageio.Decoded, None) if it is still
    there unchanged, else (None, why not); SourceUnreachable where it was not reached, a read past
    `read_timeout` seconds (0: no limit) among them, or where the location the row records names
    an endpoint other than `endpoints` (`objectstore.named_endpoints`: not followed)."""
    location = row.source
    if sources is None and location and (named := objectstore.endpoints(location) - endpoints):
        raise SourceUnreachable(f"source {location} not read: its endpoint {min(named)} is neither the archive's nor "
                                f"AWS_ENDPOINT_URL's (an archive's rows do not pick the hosts rgbatch talks to): "
                                f"AWS_ENDPOINT_URL, or verify --sources, names where to look")
    if sources is not None:
        try:
            folder, query = split_query(str(sources))
            location = with_query(storage.joined(folder, safe_relative_path(row.path)), query)
        except ValueError as e:
            return None, f"no source to look for: {e}"
    if not location:
        return None, "no source recorded"
    try:
        fs, path = storage.resolve(location)
        data = storage.read_bytes_within(read_timeout, fs, path, row.source_bytes)
    except FileNotFoundError:
        return None, f"source {location} is gone"
    except storage.FileTooBig:  # more bytes than archived
        return None, f"source {location} changed since it was archived"
    except (OSError, ValueError) as e:  # not reached (endpoint, credentials, network): not checked
        raise SourceUnreachable(f"could not reach source {location}: {worded(e)}") from None
    if hashlib.sha256(data).hexdigest() != row.source_hash:
        return None, f"source {location} changed since it was archived"
    try:
        return decode_image_and_metadata(data), None
    except ImageError as e:
        return None, f"source {location} no longer reads: {e}"


def verify(archive, weights=None, device: str = "auto", sample: int = 8, sources=None, seed: int = 0,
           batch_size: int = 8, precision: str = "auto", decoding: str = "exact", progress=None,
           max_pixels: int = MAX_PIXELS, workers: int = 0, address: str | None = None,
           quick: bool = False, read_timeout: float = storage.READ_TIMEOUT) -> VerifyResult:
    """Check every current row: blob checksums and header, decoding at the stored depth, and
    for `sample` random images whose source is still there, MS-SSIM re-measured against it.
    `quick` decodes the sampled images alone: the checksums, headers and models of every row
    are checked as ever, in seconds for a million rows, where decoding them all takes hours
    on a CPU (a thumbnail of 64 px: 0.3 s at depth 16).

    `sources` replaces the recorded source locations with a folder holding the same relative
    paths. Images that failed at compress time count as problems: the archive lacks them.
    `workers` > 0 decodes and re-measures on that many Ray actors (`address` as for `restore`;
    on a cluster the sources must be where every node reaches them); the checksums and headers
    are checked here, as the rows are read. A source whose read takes more than `read_timeout`
    seconds (0: no limit) is unreachable: a store that stopped answering does not hold verify up.
    """
    check_count("sample", sample, 0)
    check_count("batch_size", batch_size, 1)
    check_count("workers", workers, 0)
    check_range("read_timeout", read_timeout, 0, what=" seconds (0: no limit)")
    check_max_pixels(max_pixels)
    if sources is not None and not str(sources):
        raise OptionError("sources", "is empty: give the folder holding the sources now, or leave it out")
    sources = sources and storage.absolute(sources)  # the same for an actor, whose working folder is not ours
    if sources:  # a typo made every source gone and the archive "verified"
        fs, root = storage.resolve(sources)
        if (what := storage.kind(fs, root)) != "folder":
            raise OptionError("sources", str(not_found(fs, root, f"{sources}: no such folder")) if what == "missing"
                              else f"{sources} is {storage.described(fs, root)}, not a folder")
    man = Archive(archive)
    copied = () if quick else ("source_hash", "model_id")  # --quick decodes the sampled images alone: no copies
    table, damaged = _checked(man, ["path", "status", "error", "width", "height", "iterations", "model_id",
                                    "bytes", "bpp", "msssim", "psnr", *copied[:1]], keep=copied)
    copies = _copies(table) if copied else set()
    table = table.select(["path", "status", "error"])
    ok_paths = [p for p, s in zip(table["path"].to_pylist(), table["status"].to_pylist()) if s == OK]
    sampled = set(random.Random(seed).sample(ok_paths, min(sample, len(ok_paths))))
    options = dict(weights=weights, device=device, batch_size=batch_size, precision=precision, decoding=decoding)
    from .codec import Codec

    codec = Codec.load(**options)
    result = VerifyResult(archive=man.location, problems=list(damaged) + man.unreadable)
    for path, status, error in zip(*(table[c].to_pylist() for c in ("path", "status", "error"))):
        if status != OK:
            result.problems.append((path, f"not archived (failed at compress time: {error})"))

    shared = _SharedChecks()

    def checked(row: Row) -> bool:
        result.checked += 1
        problem = row.problem() or _check_blob(row, shared) or _model_problem(row, codec.for_model(row.model_id))
        if problem:
            result.problems.append((row.path, problem))
        if progress and result.checked % 1024 == 0:  # as rows are read too: --quick decodes few groups
            progress(result.checked, len(ok_paths))
        return problem is None

    decoded = set()  # the blobs of copies decoded well (`_copies`: the same blob under several paths)

    def again(row: Row) -> bool:
        """A copy not sampled whose blob has decoded well: counted as decoded, not decoded again."""
        if row.path in copies and row.path not in sampled and _blob_key(row) in decoded:
            result.decoded += 1
            return True
        return False

    def groups(size: int = DECODE_GROUP):
        rows = (r for r in man.rows(set(ok_paths)) if checked(r) and (not quick or r.path in sampled) and not again(r))
        yield from _in_groups(((r, r.path in sampled) for r in rows), size)

    endpoints = named_endpoints(man.location)
    on_ray = (_on_ray(groups, len(ok_paths), workers, address, options, "verify", sources, max_pixels, read_timeout,
                      endpoints) if workers else None)  # closed when the loop ends, however (`restore`)
    if workers:
        done = ((work, VerifyResult(archive="", unreachable=_each(work, why)) if why else part)
                for work, part, why in on_ray)
    else:
        done = ((work, _verify_group(codec, work, sources, max_pixels, read_timeout, endpoints)) for work in groups())
    with contextlib.closing(on_ray) if on_ray else contextlib.nullcontext():
        for work, part in done:
            result.add(part)
            failed = {path for path, _ in part.problems + part.unreachable}
            decoded.update(_blob_key(row) for row, _ in work if row.path in copies and row.path not in failed)
            if progress:
                progress(result.checked, len(ok_paths))
    if progress:  # the rows checked after the last group decoded (--quick: most), which the bar left at 93/150
        progress(result.checked, len(ok_paths))
    result.problems += man.missed  # rows of a part whose pages turned out damaged
    return result


def _verify_group(codec: Codec, work: list[tuple[Row, bool]], sources, max_pixels: int,
                  read_timeout: float, endpoints: frozenset[str] = frozenset()) -> VerifyResult:
    """Decode one group of (row, sampled) at its stored depth and re-measure the sampled ones
    against their sources: what `verify` found of them (`decoded`, `remeasured`, `unmeasured`,
    `problems`, `unreachable`)."""
    from .metrics import msssim

    result = VerifyResult(archive="")
    sampled = {row.path for row, chosen in work if chosen}
    for row, image, error in _decode_once(codec, [(r, r.iterations) for r, _ in work], max_pixels):
        if error:
            result.problems.append((row.path, error))
            continue
        result.decoded += 1
        if row.path not in sampled:
            continue
        try:
            source, why_not = _source_image(row, sources, read_timeout, endpoints)
        except SourceUnreachable as e:
            result.unreachable.append((row.path, str(e)))
            continue
        if why_not:
            result.unmeasured.append((row.path, why_not))
            continue
        measured = msssim(source.pixels, image)
        recorded = row.msssim[-1] if row.msssim else None  # None: compressed with --no-measure
        result.remeasured.append({"path": row.path, "recorded": recorded, "measured": measured})
        difference = None if recorded is None else abs(measured - recorded)
        if (difference is not None and difference > MSSSIM_TOLERANCE  # spares level_tolerance's two MS-SSIMs
                and difference > level_tolerance(source.pixels, image, measured)):
            result.problems.append((row.path, f"MS-SSIM re-measured {measured:.5f}, the manifest "
                                                 f"says {recorded:.5f}{READ_OTHERWISE.get(base_mode(row.mode), '')}"))
        if row.alpha_bytes is not None and not np.array_equal(row.alpha_channel(), source.alpha):
            result.problems.append((row.path, "the alpha channel differs from the source's"))
    return result


# sources of these modes that session 62 reads otherwise than before: an archive compressed earlier
# recorded the MS-SSIM against the old reading, which `verify` says beside the difference
READ_OTHERWISE = {
    "CMYK": " (a CMYK source with a colour profile of its own is read through that profile since session 62: "
            "an archive compressed before measured Pillow's conversion)",
    "F": " (a float source's NaN and infinite values leave its white alone since session 62: an archive "
         "compressed before measured the older reading)"}


# -- compact -------------------------------------------------------------------------------------------
@dataclass
class CompactResult:
    archive: str
    rows_before: int = 0  # in all parts, superseded ones included
    rows: int = 0  # current rows written
    cut: int = 0  # blobs cut to fewer iterations
    dropped: int = 0  # images left out for good (`drop`, `drop_failed`)
    parts_before: int = 0
    parts: int = 0
    bytes_before: int = 0  # of the part files
    bytes: int = 0
    problems: list[tuple[str, str]] = field(default_factory=list)  # rows not cut, and why (each kept as is, or left out)
    set_aside: list[str] = field(default_factory=list)  # damaged parts moved into damaged/: their new places

    @property
    def exit_code(self) -> int:
        return 1 if self.problems else 0


def compact(archive, depth: int | None = None, target: Target = Target(), progress=None,
            drop: tuple[str, ...] = (), drop_failed: bool = False, drop_moved: bool = False) -> CompactResult:
    """Rewrite an archive as its current rows only, one set of parts per model, dropping
    superseded rows (failed attempts retried, older versions of changed sources); with
    `depth` or a rate `target`, cut each blob to that depth for good (the smaller of the two).
    `drop` (globs on the archived paths), `drop_failed` (the images whose current row is a
    failure) and `drop_moved` (`_moved`: the old paths of moved sources) leave images out for
    good: a later `compress` of their sources encodes them again.

    The new parts are committed before any old part is deleted, and their rows are the
    latest written, so an interruption at any point leaves a consistent archive (rerun to
    finish). No other command may write to the archive meanwhile.
    """
    check_count("depth", depth, 1)
    check_measured(target, True)
    drop = select_globs(drop)  # one glob as a str too (its letters were globs until session 58)
    man = Archive(archive)  # refuses, worded, what is no archive before anything is locked or written
    dropped = _dropped_paths(man, drop, drop_failed, drop_moved)  # the archive as it is now: no writer adds to `man`
    with man.locked("compact"):
        return _compact_locked(man, depth, target, progress, dropped)


def _dropped_paths(man: Archive, drop: tuple[str, ...], drop_failed: bool, drop_moved: bool = False) -> set[str]:
    """The archived paths `compact` leaves out. Refused before any work: a glob that matches
    none (a mistyped one would drop nothing, silently), and leaving nothing (no parts would be
    left: that is deleting the archive, which the user does, not `compact`)."""
    current = man.current_rows()
    paths = set(current["path"].drop_null().to_pylist())
    dropped = set()
    for glob in drop:
        matched = {p for p in paths if fnmatch.fnmatchcase(p, glob)}
        if not matched:
            raise OptionError("drop", f"{glob!r}: no archived image matches it")
        dropped |= matched
    if drop_failed:
        table = man.table(["path", "status"])
        dropped |= {p for p, status in zip(table.column("path").to_pylist(), table.column("status").to_pylist())
                    if p is not None and status != OK}
    if drop_moved:
        dropped |= _moved(man)
    if dropped and len(dropped) == current.num_rows:
        raise OptionError("drop", f"it would drop all {len(dropped)} image(s) of the archive, leaving no part: "
                                  f"delete the archive's folder instead")
    return dropped


def _moved(man: Archive, chunk: int = 1 << 16) -> set[str]:
    """The archived paths of moved sources: ok rows whose source file is gone while another ok
    row of the same bytes (source hash, whatever its model) still has its source: a renamed or
    moved folder's old paths, whose images the archive holds under their new ones. Where every
    source of those bytes is gone (a disk unmounted, a bucket unreachable), or cannot be asked
    (no permission, a store's failure), none is dropped. Only the sources of bytes archived more
    than once are looked at (a `stat` each), sorted by their hash and read into Python `chunk`
    rows (whole groups) at a time."""
    copies = _copies_of(man.table(["path", "status", "source", "source_hash"])).sort_by("source_hash")
    hashes = copies["source_hash"].combine_chunks()
    starts = np.flatnonzero(np.r_[True, pc.not_equal(hashes[1:], hashes[:-1]).to_numpy(zero_copy_only=False)])
    ends = np.r_[starts[1:], len(hashes)]
    moved, first = set(), 0
    while first < len(starts):  # groups first..last-1, their rows start..end
        last = max(first + 1, int(np.searchsorted(starts, starts[first] + chunk)))
        start, end = int(starts[first]), int(ends[last - 1])
        rows = copies.slice(start, end - start)
        gone = [_source_gone(source) for source in rows["source"].to_pylist()]
        paths = rows["path"].to_pylist()
        for a, b in zip(starts[first:last] - start, ends[first:last] - start):
            if not all(gone[a:b]):
                moved.update(path for path, is_gone in zip(paths[a:b], gone[a:b]) if is_gone)
        first = last
    return moved


def _source_gone(location: str | None) -> bool:
    """Whether a row's source file is no longer there (asked, and answered so: missing, or a
    dangling symbolic link); a folder, a FIFO... there now is not a source, but not gone either."""
    try:
        return storage.kind(*storage.resolve(location)) in ("missing", "a dangling symbolic link")
    except (OSError, ValueError, TypeError):  # a store's failure, no location: not known gone
        return False


def _compact_locked(man: Archive, depth: int | None, target: Target, progress, dropped: set[str]) -> CompactResult:
    man.set_aside_folder()  # refused now, not after the new parts are written
    old_parts = list(man.parts)
    result = CompactResult(archive=man.location, parts_before=len(old_parts), bytes_before=man.part_bytes(),
                           rows_before=man.total_rows())
    total = man.current_rows().num_rows - len(dropped)
    fallback_model = next(iter(sorted(set(man.table(["path", "model_id"])["model_id"].drop_null().to_pylist()))), "")
    notes = man.notes()  # the sizes and times of touched sources: written into their rows, the times files deleted
    noted = {(path, sha256): (size, time)
             for path, sha256, size, time in zip(*(notes[c].to_pylist() for c in notes.column_names))}
    writers: dict[str, PartWriter] = {}
    missed, paths = [], None
    try:
        while True:  # a row group found damaged while copying: a row its rows superseded is current again
            for row in man.rows(paths):
                if row.path in dropped:
                    result.dropped += 1
                    continue
                if (row.path, row.source_hash) in noted:
                    row.source_bytes, row.source_mtime = noted[row.path, row.source_hash]
                _compact_row(man, row, writers, fallback_model, depth, target, result)
                if progress:
                    progress(result.rows, total)
            missed += [(path, why) for path, why in man.missed if path not in dropped]
            if not man.missed:
                break
            paths = {path for path, _ in man.missed if path is not None}
    except BaseException:
        for writer in writers.values():  # what was added is complete: keep it, delete nothing
            with contextlib.suppress(OSError):  # one that cannot write drops its part; the others commit theirs
                writer.close()
        raise
    for writer in writers.values():
        writer.close()
    new_parts = [p for w in writers.values() for p in w.parts]
    # a damaged part (unreadable when listed, or a row group of it found damaged while reading):
    # its readable rows are copied (committed above), then it is set aside, whole, in damaged/, so
    # that no reading meets it again and `compress` encodes again the images it did not give
    result.problems[:0] = man.unreadable + missed
    damaged = man.damaged_parts
    for part in man.unreadable_parts + sorted(damaged):
        result.set_aside.append(storage.uri(man.fs, man.set_aside(part), man.location))
    man.replace([p for p in old_parts if p not in damaged], new_parts)
    man.delete_times()  # their notes are in the rows now
    result.parts = len(new_parts)
    result.bytes = man.part_bytes(new_parts)
    return result


def _compact_row(man: Archive, row: Row, writers: dict, fallback_model: str, depth: int | None, target: Target,
                 result: CompactResult):
    """Copy one current row into its model's new parts (cut to the depth asked for, where it can be).
    A row sharing a blob that no readable row holds is left out, as the rows of a damaged part
    are: `compress` encodes its image again."""
    problem = row.problem()
    if problem and row.shared_blob and row.blob is None:
        result.problems.append((row.path, f"{problem}: left out; `compress` encodes it again"))
        return
    if problem:
        result.problems.append((row.path, f"{problem}: kept as is"))
    else:  # a row of a part older than the scale and last_steps columns gets them
        row = row.with_coding()
        if row.status == OK and (depth is not None or target):
            row = _cut_row(row, depth, target, result)
    model = row.model_id or fallback_model
    if model not in writers:
        writers[model] = man.writer(model)
    writers[model].add(row)
    result.rows += 1


def _cut_row(row: Row, depth: int | None, target: Target, result: CompactResult) -> Row:
    """The row with its blob cut to the depth asked for (as it was, with a problem noted, when
    that cannot be done safely)."""
    if target.msssim is not None and not row.msssim:
        result.problems.append((row.path, "no MS-SSIM recorded (compressed with measuring off): kept as is"))
        return row
    keep = row.keep(depth, target)
    if keep >= row.iterations:
        return row
    try:
        row = row.cut(keep)
    except bitstream.BitstreamError as e:
        result.problems.append((row.path, f"damaged blob, kept as is: {e}"))
        return row
    result.cut += 1
    return row


__all__ = ["CompactResult", "RestoreResult", "VerifyResult", "bytes_text", "coding_summary", "coding_text", "compact", "depth_text",
           "png_names", "reading_summary", "reading_text", "report", "restore", "safe_relative_path", "verify"]
