"""The Parquet manifest: schema, row groups, atomic parts, current rows, what a rerun skips."""

from __future__ import annotations

import errno
import hashlib
from dataclasses import replace
import os
import signal
import socket
import subprocess
import sys
import datetime as dt
import time

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rgbatch import __version__, storage
from conftest import FullDisk, damage_page
from rgbatch.objectstore import worded
from rgbatch.manifest import DIGEST_KEY, FORMAT_VERSION, Archive, ArchiveBusy, ArchiveLock, PartWriter
from rgbatch.row import ADDED_COLUMNS, SCHEMA, Row


def error_row(path, source, message, **known):
    return Row(path, source, **known).failed(message)


def ok_row(path, blob=b"\x01\x02", source_hash="h", model_id="00112233aabbccdd", **changed):
    return Row.from_dict({"path": path, "source": f"/src/{path}", "source_hash": source_hash, "source_bytes": 100,
            "width": 4, "height": 2, "mode": "RGB", "model_id": model_id, "tile_size": 512, "iterations": 2,
            "coder": "raw", "blob": blob, "bytes": [1, 2], "bpp": [1.0, 2.0], "msssim": [0.5, 0.7],
            "psnr": [20.0, 25.0], "status": "ok", "error": None, "read_seconds": 0.1, "encode_seconds": 0.2, **changed})


def hashes(done: pa.Table) -> dict:
    """{path: source hash} of `Archive.done` (whose table also holds the size and time)."""
    return dict(zip(done["path"].to_pylist(), done["source_hash"].to_pylist()))


def parts(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("part-"))


def test_rows_round_trip_with_schema_metadata(tmp_path):
    with PartWriter(tmp_path, "00112233aabbccdd") as writer:
        writer.add(ok_row("a.png", blob=b"\x00" * 1000))
        writer.add(error_row("b.jpg", "/src/b.jpg", "not an image file", source_hash="x", source_bytes=5))
    [name] = parts(tmp_path)
    assert name.endswith(".parquet") and len(name) == len("part-") + 32 + len(".parquet")
    metadata = pq.read_schema(tmp_path / name).metadata
    assert metadata[b"rgbatch.format_version"] == b"1"  # no shared blob in it: format 1 (FORMAT_VERSION: 2)
    assert metadata[b"rgbatch.model_id"] == b"00112233aabbccdd"
    assert metadata[b"rgbatch.version"] == __version__.encode()

    manifest = Archive(tmp_path)
    a, b = manifest.rows()
    assert a.blob == b"\x00" * 1000 and a.bytes == [1, 2] and a.msssim == [0.5, 0.7]
    assert b.status == "error" and b.error == "not an image file" and b.blob is None and b.source_bytes == 5
    assert "blob" not in manifest.table().column_names  # the stats view leaves blobs on disk


def test_colour_profiles_and_exif_are_kept_once_per_row_group_and_out_of_the_footer(tmp_path):
    profile, exif, xmp, notes = b"ICC" * 1000, b"Exif\x00\x00" + b"\x07" * 500, b"<x:xmpmeta/>", b'{"dpi":[300,300]}'
    with PartWriter(tmp_path, "00112233aabbccdd") as writer:
        for i in range(8):  # one camera, one profile
            writer.add(ok_row(f"{i}.jpg", blob=bytes([i]) * 50, icc_profile=profile, exif=exif, xmp=xmp, notes=notes))
        writer.add(ok_row("plain.png"))
    [name] = parts(tmp_path)
    group = pq.ParquetFile(tmp_path / name).metadata.row_group(0)
    chunks = {group.column(i).path_in_schema: group.column(i) for i in range(group.num_columns)}
    for column in ("blob", "icc_profile", "exif", "xmp", "notes"):
        assert chunks[column].statistics is None or not chunks[column].statistics.has_min_max, column
    assert chunks["icc_profile"].total_compressed_size < len(profile)  # a dictionary and zstd: one copy, packed
    rows = {r.path: r for r in Archive(tmp_path).rows()}
    assert rows["3.jpg"].metadata() == (profile, exif, xmp, notes) and rows["plain.png"].metadata() == (None,) * 4
    assert "icc_profile" not in Archive(tmp_path).table().column_names  # the stats view leaves them on disk


def test_row_groups_and_parts_are_sized_for_blobs(tmp_path):
    with PartWriter(tmp_path, "00112233aabbccdd", row_group_rows=2, row_group_bytes=10_000, part_rows=4) as w:
        for i in range(5):
            w.add(ok_row(f"small{i}.png"))
        w.add(ok_row("big.png", blob=b"\xff" * 20_000))  # over the byte budget: its group closes at once
    files = [pq.ParquetFile(tmp_path / p) for p in parts(tmp_path)]
    assert sorted(f.metadata.num_rows for f in files) == [2, 4]
    assert sorted(f.metadata.num_row_groups for f in files) == [1, 2]
    assert len(Archive(tmp_path).table()) == 6


def test_a_part_appears_only_when_committed(tmp_path):
    writer = PartWriter(tmp_path, "00112233aabbccdd", row_group_rows=1)
    writer.add(ok_row("a.png"))  # a row group is on disk, in a hidden temporary file
    assert parts(tmp_path) == [] and Archive(tmp_path, create=True).parts == []
    writer.commit()
    assert len(parts(tmp_path)) == 1

    writer.add(ok_row("b.png"))
    writer.abort()  # a failed write: the part is dropped, temporary file included
    assert [p.name for p in tmp_path.iterdir()] == parts(tmp_path) and len(parts(tmp_path)) == 1


def test_leaving_the_block_on_an_error_commits_the_complete_rows(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with PartWriter(tmp_path, "00112233aabbccdd") as writer:
            writer.add(ok_row("a.png"))
            raise KeyboardInterrupt
    assert [r.path for r in Archive(tmp_path).rows()] == ["a.png"]


def test_current_row_is_the_latest_and_reruns_skip_only_ok_rows(tmp_path):
    with PartWriter(tmp_path, "00112233aabbccdd") as writer:  # first run
        writer.add(error_row("retried.png", "/src/retried.png", "truncated"))
        writer.add(ok_row("kept.png", source_hash="k1"))
        writer.add(ok_row("changed.png", source_hash="c1"))
        writer.add(error_row("broken.png", "/src/broken.png", "truncated"))
    with PartWriter(tmp_path, "00112233aabbccdd") as writer:  # second run
        writer.add(ok_row("retried.png", source_hash="r2"))
        writer.add(error_row("changed.png", "/src/changed.png", "now corrupt", source_hash="c2"))
    manifest = Archive(tmp_path)
    current = {r["path"]: (r["status"], r["source_hash"]) for r in manifest.table().to_pylist()}
    assert current == {"retried.png": ("ok", "r2"), "kept.png": ("ok", "k1"), "changed.png": ("error", "c2"),
                       "broken.png": ("error", None)}
    assert hashes(manifest.done()) == {"retried.png": "r2", "kept.png": "k1"}
    with PartWriter(tmp_path, "00112233aabbccdd") as writer:  # a damaged row is not done: a rerun redoes it
        writer.add(ok_row("kept.png", source_hash="k1", bytes=[1, None]))
    assert hashes(Archive(tmp_path).done()) == {"retried.png": "r2"}
    assert [r.path for r in manifest.rows(paths={"kept.png"})] == ["kept.png"]


def test_the_current_rows_are_those_a_row_by_row_choice_gives(tmp_path, rng):
    """Chosen in Arrow (`Archive.current_rows`): the same as the plain rule read row by row, ties,
    null times and null paths (each its own image) included."""
    times = [None] + [dt.datetime(2026, 12, 5, hour, tzinfo=dt.timezone.utc) for hour in (1, 2, 3)]
    for part in range(3):
        rows = [{"path": rng.choice(["a.png", "b.png", "c.png", "d.png", None]), "written_at": times[rng.integers(4)],
                 "status": rng.choice(["ok", "error", None])} for _ in range(rng.integers(0, 40))]
        pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA).replace_schema_metadata(
            {b"rgbatch.format_version": str(FORMAT_VERSION).encode(), b"rgbatch.model_id": b"x"}),
            tmp_path / f"part-{part:032x}.parquet", row_group_size=7)
    archive = Archive(tmp_path)
    best = {}
    for first, batch in archive._batches(["path", "status", "written_at"]):
        for position, row in enumerate(batch.to_pylist(), first):
            rank = (row["written_at"] or dt.datetime.min.replace(tzinfo=dt.timezone.utc), row["status"] == "ok")
            key = row["path"] if row["path"] is not None else position
            if key not in best or rank > best[key][0]:
                best[key] = rank, position, row["path"]
    current = archive.current_rows()
    assert current["position"].to_pylist() == sorted(position for _, position, _ in best.values())
    assert dict(zip(current["position"].to_pylist(), current["path"].to_pylist())) == {
        position: path for _, position, path in best.values()}
    assert archive.table(["path"]).num_rows == len(best)


def test_what_a_rerun_skips_is_read_a_few_row_groups_at_a_time(tmp_path, monkeypatch):
    from rgbatch import manifest
    for run in range(3):
        with PartWriter(tmp_path, "00112233aabbccdd") as writer:
            for i in range(150):
                if (i + run) % 7 == 0:
                    writer.add(error_row(f"{i}.png", f"/src/{i}.png", "truncated"))
                else:  # some damaged: not done
                    writer.add(ok_row(f"{i}.png", source_hash=f"h{run}", bytes=[1, None] if i % 11 == run else [1, 2]))
    expected = {f"{i}.png": "h2" for i in range(150) if (i + 2) % 7 and i % 11 != 2}
    assert hashes(Archive(tmp_path).done()) == expected
    monkeypatch.setattr(manifest, "CHUNK_ROWS", manifest.ROW_GROUP_ROWS)  # a row group at a time
    assert hashes(Archive(tmp_path).done()) == expected


def test_parts_of_another_model_are_read_alike(tmp_path):
    with PartWriter(tmp_path, "00112233aabbccdd") as writer:
        writer.add(ok_row("a.png"))
    with PartWriter(tmp_path, "ffffffffffffffff") as writer:
        writer.add(ok_row("b.png", model_id="ffffffffffffffff"))
    manifest = Archive(tmp_path)
    assert sorted(manifest.model_ids().values()) == ["00112233aabbccdd", "ffffffffffffffff"]
    assert manifest.table()["model_id"].to_pylist() == ["00112233aabbccdd", "ffffffffffffffff"]


def test_duckdb_queries_the_parts_directly(tmp_path):
    with PartWriter(tmp_path, "00112233aabbccdd") as writer:
        for i in range(3):
            writer.add(ok_row(f"{i}.png"))
    count, depth2 = duckdb.sql(f"SELECT count(*), sum(bytes[2]) FROM '{tmp_path}/part-*.parquet'").fetchall()[0]
    assert (count, depth2) == (3, 6)


def test_a_part_written_before_the_added_columns_reads_them_as_null_and_any_other_missing_is_refused(tmp_path):
    with PartWriter(tmp_path / "new", "00112233aabbccdd") as writer:
        writer.add(ok_row("a.png", scale=0.75, last_steps=24))
    [new] = parts(tmp_path / "new")
    table = pq.read_table(tmp_path / "new" / new)
    # parts written before session 33 have no schema digest (DIGEST_KEY)
    table = table.replace_schema_metadata({k: v for k, v in table.schema.metadata.items() if k != DIGEST_KEY})
    for name, dropped in (("old", ADDED_COLUMNS), ("broken", ("width",))):
        (tmp_path / name).mkdir()
        pq.write_table(table.drop_columns(list(dropped)), tmp_path / name / new)
    [a] = Archive(tmp_path / "new").rows()
    assert (a.scale, a.last_steps) == (0.75, 24)
    [a] = Archive(tmp_path / "old").rows()
    assert (a.scale, a.last_steps, a.iterations, a.blob) == (None, None, 2, b"\x01\x02")
    assert Archive(tmp_path / "old").table().column("scale").to_pylist() == [None]
    with pytest.raises(ValueError, match=r"lacks the columns \['width'\]"):
        Archive(tmp_path / "broken").table()


def test_a_part_whose_schema_does_not_match_its_digest_is_damaged_not_foreign(tmp_path):
    """Parquet's footer has no checksum: a flipped bit in a column's name or type read as another
    tool's part (exit 2). The digest in the schema metadata (since session 33) tells them apart."""
    with PartWriter(tmp_path, "00112233aabbccdd") as writer:
        writer.add(ok_row("a.png"))
    (part,) = parts(tmp_path)
    data = (tmp_path / part).read_bytes()
    footer = data[-8 - int.from_bytes(data[-8:-4], "little"):]
    at = len(data) - len(footer) + footer.index(b"source_bytes")  # a column's name in the footer's schema
    (tmp_path / part).write_bytes(data[:at] + b"sourcE" + data[at + 6:])
    archive = Archive(tmp_path)
    assert archive.parts == [] and archive.table().num_rows == 0
    assert archive.unreadable == [(part, "damaged manifest part, not a readable Parquet file (its schema does not "
                                         "match its digest): its images are left out; `compress` encodes them "
                                         "again; `compact` sets the part aside in damaged/")]


def test_unreadable_archives_are_worded_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no archive"):
        Archive(tmp_path / "missing")
    with pytest.raises(ValueError, match="holds no manifest parts"):
        Archive(tmp_path)
    (tmp_path / "part-0.parquet").write_bytes(b"not parquet")  # a damaged part: left out, said
    archive = Archive(tmp_path)
    assert archive.table().num_rows == 0 and archive.parts == []
    assert [p for p, _ in archive.unreadable] == ["part-0.parquet"]
    assert "damaged manifest part, not a readable Parquet file" in archive.unreadable[0][1]
    from rgbatch.archive import report  # every figure of nothing, the part listed (an empty mask once failed)
    summary = report(tmp_path, depth=2, min_msssim=0.9)["summary"]
    assert (summary["images"], summary["unreadable_parts"], summary["failures"][0]["path"]) == (0, 1, "part-0.parquet")


def damaged_archive(tmp_path, rng, column):
    """An archive of two parts: 'older' holds an earlier row of 6.png, 'damaged' eight rows in two
    row groups of four, the second group's `column` damaged."""
    with PartWriter(tmp_path / "older", "00112233aabbccdd") as writer:
        writer.add(ok_row("6.png", source_hash="old"))
    with PartWriter(tmp_path, "00112233aabbccdd", row_group_rows=4) as writer:
        for i in range(8):
            writer.add(ok_row(f"{i}.png", blob=rng.bytes(4000)))
    (part,) = parts(tmp_path)
    (older,) = parts(tmp_path / "older")
    (tmp_path / "older" / older).rename(tmp_path / older)
    damage_page(tmp_path / part, 1, column)
    return part


def test_a_row_group_damaged_inside_is_left_out_and_the_rest_of_its_part_reads(tmp_path, rng):
    """Bits flipped in a part's pages (its footer reads) once stopped every command (exit 2): the
    row group is left out, as a part cut short is, and no result mixes in the rows its rows
    superseded (6.png's older row is current once its newer one does not read)."""
    part = damaged_archive(tmp_path, rng, "path")
    archive = Archive(tmp_path)
    assert part in [p.rsplit("/", 1)[-1] for p in archive.parts]  # the footer reads: found when read
    table = archive.table()
    assert table["path"].to_pylist() == ["0.png", "1.png", "2.png", "3.png", "6.png"]
    assert table["source_hash"].to_pylist() == ["h"] * 4 + ["old"]
    assert [p for p, _ in archive.unreadable] == [part] and archive.damaged_parts == {str(tmp_path / part)}
    assert "damaged manifest part, its row group 2 of 2 (4 rows) does not read" in archive.unreadable[0][1]
    assert hashes(archive.done()) == {"0.png": "h", "1.png": "h", "2.png": "h", "3.png": "h", "6.png": "old"}
    assert sorted(r.path for r in archive.rows()) == ["0.png", "1.png", "2.png", "3.png", "6.png"] and archive.missed == []


def test_a_row_group_whose_blobs_would_grow_past_any_stream_is_left_out_unread(tmp_path, rng):
    """A 22 KB part holding one 300 MB blob of zeros (zstd) took 2 GB to read (a helper's round,
    session 63): a coded stream does not compress, so such a group is damaged, left out unread."""
    with PartWriter(tmp_path / "w", "00112233aabbccdd") as writer:
        writer.add(ok_row("a.png", blob=rng.bytes(4000)))
        writer.add(ok_row("b.png", blob=rng.bytes(4000)))
    (part,) = parts(tmp_path / "w")
    table = pq.read_table(tmp_path / "w" / part)
    blobs = table["blob"].to_pylist()
    table = table.set_column(table.schema.get_field_index("blob"), table.schema.field("blob"),
                             pa.array([blobs[0], bytes(4 << 20)], table.schema.field("blob").type))
    pq.write_table(table, tmp_path / part, compression="zstd", row_group_size=1)
    archive = Archive(tmp_path)
    assert [r.path for r in archive.rows()] == ["a.png"]
    [(_, why)] = archive.unreadable
    assert "row group 2 of 2 (1 rows) does not read (its blobs would take" in why and "do not compress so" in why
    assert archive.table()["path"].to_pylist() == ["a.png"]  # left out of every later reading
    table = pq.read_table(tmp_path / "w" / part)  # metadata no source gives: more than 1 MiB a row
    table = table.set_column(table.schema.get_field_index("xmp"), table.schema.field("xmp"),
                             pa.array([None, bytes(8 << 20)], table.schema.field("xmp").type))
    (tmp_path / part).unlink()
    pq.write_table(table, tmp_path / part, compression="zstd", row_group_size=1)
    archive = Archive(tmp_path)
    assert [r.path for r in archive.rows()] == ["a.png"] and "its xmp column would take" in archive.unreadable[0][1]
    assert archive.table(["status"]).column_names == ["status"]  # sorted by path all the same (a KeyError until session 63)


def test_consecutive_row_groups_are_read_at_once_and_a_damaged_one_among_them_is_found(tmp_path, rng, monkeypatch):
    """`_batches` reads runs of consecutive row groups in one call (`_runs`, at most RUN_BYTES);
    a run holding a damaged group is read again group by group, which leaves that one out: the
    same rows as reading every group alone, here and with the damage."""
    from rgbatch import manifest

    with PartWriter(tmp_path, "00112233aabbccdd", row_group_rows=4) as writer:
        for i in range(16):
            writer.add(ok_row(f"{i:02d}.png", blob=rng.bytes(100)))
    (part,) = parts(tmp_path)
    calls = []
    read_row_groups = pq.ParquetFile.read_row_groups
    monkeypatch.setattr(pq.ParquetFile, "read_row_groups", lambda self, groups, **kw: calls.append(list(groups))
                        or read_row_groups(self, groups, **kw))
    whole = Archive(tmp_path).table()
    assert whole["path"].to_pylist() == [f"{i:02d}.png" for i in range(16)] and calls[0] == [0, 1, 2, 3]
    monkeypatch.setattr(manifest, "RUN_BYTES", 1)  # every group alone
    assert Archive(tmp_path).table().equals(whole)
    damage_page(tmp_path / part, 2, "path")
    for most in (1, 1 << 30):
        monkeypatch.setattr(manifest, "RUN_BYTES", most)
        archive = Archive(tmp_path)
        assert archive.table()["path"].to_pylist() == [f"{i:02d}.png" for i in (0, 1, 2, 3, 4, 5, 6, 7, 12, 13, 14, 15)]
        assert "its row group 3 of 4 (4 rows) does not read" in archive.unreadable[0][1]


def test_a_row_group_whose_blobs_are_damaged_gives_what_reads_and_names_what_it_did_not(tmp_path, rng):
    part = damaged_archive(tmp_path, rng, "blob")
    archive = Archive(tmp_path)
    assert archive.table().num_rows == 8 and archive.unreadable == []  # the blobs are not read for it
    assert [r.path for r in archive.rows()] == [f"{i}.png" for i in range(4)]  # the first row group
    assert [p for p, _ in archive.missed] == [f"{i}.png" for i in range(4, 8)]
    assert all(why.startswith(f"{part}: damaged manifest part, its row group 2 of 2") and "`compact`" in why
               for _, why in archive.missed)
    assert [p for p, _ in archive.unreadable] == [part]
    # from then on the group is left out: 6.png's older row is current again
    assert archive.table()["path"].to_pylist() == ["0.png", "1.png", "2.png", "3.png", "6.png"]


def test_no_flipped_byte_of_a_part_reads_as_another_value(tmp_path, rng):
    """Parquet's zstd pages carry no checksum: one flipped bit could decode to another path or
    MS-SSIM. Parts carry page CRC-32s (since session 33), checked on reading: every byte of a
    row group's path and MS-SSIM chunks flipped in turn reads as the same table or leaves the group out."""
    from rgbatch.row import COLUMNS
    with PartWriter(tmp_path, "00112233aabbccdd", row_group_rows=4) as writer:
        for i in range(8):
            writer.add(ok_row(f"folder/image_{i:03d}.png", blob=rng.bytes(100)))
    (part,) = parts(tmp_path)
    good = (tmp_path / part).read_bytes()
    columns = ["path", "iterations", "msssim"]
    expected = Archive(tmp_path).table(columns).to_pylist()
    outcomes = set()
    for column in ("path", "msssim"):
        chunk = pq.ParquetFile(tmp_path / part).metadata.row_group(1).column(COLUMNS.index(column))
        start = chunk.dictionary_page_offset or chunk.data_page_offset
        for at in range(start, start + chunk.total_compressed_size):
            data = bytearray(good)
            data[at] ^= 1 << at % 8
            (tmp_path / part).write_bytes(bytes(data))
            archive = Archive(tmp_path)
            table = archive.table(columns).to_pylist()
            if archive.unreadable:
                assert table == expected[:4]
                outcomes.add("left out")
            else:
                assert table == expected
                outcomes.add("the same")
    assert "left out" in outcomes


def test_a_part_is_committed_on_time_whatever_its_row_count(tmp_path):
    writer = PartWriter(tmp_path, "00112233aabbccdd", commit_seconds=0.3)  # 64-row groups, 1024-row parts
    writer.add(ok_row("a.png"))
    writer.commit_if_due()
    assert parts(tmp_path) == []  # not due yet
    time.sleep(0.35)
    writer.add(ok_row("b.png"))  # checked on every row: the part is due, a and b are committed
    assert len(parts(tmp_path)) == 1 and writer.rows_committed == 2
    writer.add(ok_row("c.png"))
    time.sleep(0.35)
    writer.commit_if_due()  # and without a new row (the compress driver calls this while it waits)
    assert len(parts(tmp_path)) == 2 and writer.rows_committed == 3
    writer.close()
    assert len(parts(tmp_path)) == 2


HOLD_LOCK = """
import sys, time
from rgbatch.manifest import ArchiveLock
with ArchiveLock(sys.argv[1], "compress"):
    print("locked", flush=True)
    time.sleep(600)
"""


def test_one_writer_at_a_time_and_a_killed_one_leaves_nothing_behind(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(ArchiveBusy, match=rf"compress \(pid {holder.pid} on {socket.gethostname()}"):
            with ArchiveLock(tmp_path):
                pass
        # what a writer killed mid-part leaves: its temporary part; and files that are not its own
        leftover = tmp_path / f".tmp-{'a' * 12}-part-{'b' * 32}.parquet"
        leftover.write_bytes(b"half a part")
        times = tmp_path / f".tmp-{'c' * 12}-times-{'d' * 32}.parquet"
        times.write_bytes(b"half a times file")
        (tmp_path / ".tmp-notes.txt").write_bytes(b"someone else's")
        with pytest.raises(ArchiveBusy):
            ArchiveLock(tmp_path).__enter__()
        assert leftover.exists()  # never removed while its writer may be running
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with ArchiveLock(tmp_path) as lock:  # the kernel released the lock of the killed holder
        assert sorted(lock.removed) == sorted([leftover.name, times.name])
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", ".tmp-notes.txt"]


def test_a_run_that_wrote_nothing_leaves_no_archive_folder_it_made(tmp_path):
    with ArchiveLock(tmp_path / "new", "compress"):  # refused at set-up: nothing written
        assert (tmp_path / "new" / ".lock").exists()
    assert not (tmp_path / "new").exists()
    (tmp_path / "given").mkdir()  # a folder the user made stays
    with ArchiveLock(tmp_path / "given", "compress"):
        pass
    assert [p.name for p in (tmp_path / "given").iterdir()] == [".lock"]
    with ArchiveLock(tmp_path / "written", "compress"):  # a run that wrote a part keeps its folder
        (tmp_path / "written" / "part-x.parquet").write_bytes(b"")
    assert (tmp_path / "written" / "part-x.parquet").exists()


def test_a_signal_while_the_lock_is_taken_leaves_no_folder_it_made(tmp_path, monkeypatch):
    """SIGTERM just as `compress` made a new archive's folder left it, holding `.lock` alone (3 of
    16 tries, a helper's round, session 64): `__exit__` never runs where `__enter__` raises."""
    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr("rgbatch.manifest.socket.gethostname", interrupted)  # while the holder is written
    with pytest.raises(KeyboardInterrupt):
        with ArchiveLock(tmp_path / "new", "compress"):
            pass
    assert not (tmp_path / "new").exists()
    (tmp_path / "given").mkdir()
    with pytest.raises(KeyboardInterrupt):
        with ArchiveLock(tmp_path / "given", "compress"):
            pass
    assert (tmp_path / "given").is_dir()  # a folder the user made stays


def test_an_archive_whose_first_run_has_committed_nothing_says_who_writes_it(tmp_path):
    """`compact` (any reader) of an archive during its first `compress` said "holds no manifest
    parts" until session 57 (found by its exploratory testing): now who is writing it."""
    with ArchiveLock(tmp_path / "new", "compress"):  # another open file: as another process's lock
        with pytest.raises(ArchiveBusy, match=rf"holds no manifest parts yet: it is being written by compress "
                                              rf"\(pid {os.getpid()} on "):
            Archive(tmp_path / "new")
    (tmp_path / "given").mkdir()
    with ArchiveLock(tmp_path / "given", "compress"):
        pass
    with pytest.raises(ValueError, match=r"holds no manifest parts \(part-"):  # no run holds it: as before
        Archive(tmp_path / "given")


def test_what_is_not_an_archive_says_what_it_is_and_what_to_run(tmp_path):
    import shutil
    from pathlib import Path

    bench = tmp_path / "bench-kodak" / "bench.parquet"
    bench.parent.mkdir()
    shutil.copy(Path(__file__).parent.parent / "manifests" / "bench-kodak" / "bench.parquet", bench)
    with pytest.raises(ValueError, match=f"bench manifest, not an archive: `rgbatch bench {bench}`"):
        Archive(bench)
    with pytest.raises(ValueError, match=f"bench manifest, not an archive: `rgbatch bench {bench}`"):
        Archive(bench.parent)
    with PartWriter(tmp_path / "archive", "00112233aabbccdd") as writer:
        writer.add(ok_row("a.png"))
    [part] = parts(tmp_path / "archive")
    with pytest.raises(ValueError, match=f"one part file of an archive: give the archive folder \\({tmp_path}/archive\\)"):
        Archive(tmp_path / "archive" / part)


def test_only_errors_of_damaged_bytes_make_a_part_damaged():
    """A store's or the system's failure (credentials, network) is no damage: a part left out for it
    would have its images encoded again."""
    import pyarrow as pa

    from rgbatch.manifest import _damage
    assert _damage(pa.ArrowInvalid("Parquet magic bytes not found in footer.")) == "Parquet magic bytes not found in footer."
    assert _damage(OSError("Couldn't deserialize thrift:\nNo more data")) == "Couldn't deserialize thrift: No more data"
    assert _damage(OSError("Invalid flatbuffers message.")) == "Invalid flatbuffers message."  # the footer's Arrow schema
    assert _damage(OSError("AWS Error NETWORK_CONNECTION during GetObject operation: curlCode: 7")) is None
    assert _damage(OSError("AWS Error ACCESS_DENIED during HeadObject operation: InvalidAccessKeyId")) is None
    assert _damage(PermissionError(13, "Permission denied")) is None


def test_compact_copies_what_a_damaged_part_gives_and_sets_the_part_aside(tmp_path, rng):
    """docs/ARCHIVE.md, "Damaged or foreign manifests": the row group is found damaged while its blobs
    are copied, so 6.png's older row, current again, is copied too (once lost: deleted with its
    part); the damaged part moves whole into damaged/, out of every later reading."""
    from rgbatch.archive import compact

    part = damaged_archive(tmp_path, rng, "blob")
    damaged = (tmp_path / part).read_bytes()

    def interrupt(done, total):
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # the two rows copied are committed, nothing set aside
        compact(tmp_path, progress=interrupt)
    assert (tmp_path / part).exists() and not (tmp_path / "damaged").exists()
    result = compact(tmp_path)  # the rerun finishes the job
    assert [p for p, _ in result.problems] == [part] + [f"{i}.png" for i in range(4, 8)] and result.exit_code == 1
    assert result.set_aside == [str(tmp_path / "damaged" / part)]
    assert (tmp_path / "damaged" / part).read_bytes() == damaged and not (tmp_path / part).exists()
    archive = Archive(tmp_path)
    table = archive.table(["path", "source_hash"])
    assert table["path"].to_pylist() == ["0.png", "1.png", "2.png", "3.png", "6.png"]
    assert table["source_hash"].to_pylist() == ["h"] * 4 + ["old"]
    assert len(list(archive.rows())) == 5 and archive.unreadable == [] and archive.missed == []
    again = compact(tmp_path)
    assert (again.problems, again.set_aside, again.rows) == ([], [], 5)


def test_compact_refuses_before_writing_where_damaged_is_no_folder(tmp_path):
    with PartWriter(tmp_path, "00112233aabbccdd") as writer:
        writer.add(ok_row("a.png"))
    (tmp_path / "damaged").write_text("a user's file")
    from rgbatch.archive import compact

    with pytest.raises(ValueError, match="damaged is a file, not a folder: `compact` sets damaged parts aside"):
        compact(tmp_path)
    assert len(parts(tmp_path)) == 1 and (tmp_path / "damaged").read_text() == "a user's file"


def test_an_archive_whose_every_part_was_set_aside_is_empty_not_missing(tmp_path):
    with PartWriter(tmp_path, "00112233aabbccdd") as writer:
        writer.add(ok_row("a.png"))
    (part,) = parts(tmp_path)
    (tmp_path / part).write_bytes((tmp_path / part).read_bytes()[:50])  # its footer gone
    from rgbatch.archive import compact, report

    result = compact(tmp_path)
    assert result.set_aside == [str(tmp_path / "damaged" / part)] and result.rows == 0 and result.exit_code == 1
    summary = report(tmp_path)["summary"]
    assert (summary["images"], summary["set_aside_parts"], Archive(tmp_path).unreadable) == (0, 1, [])
    (tmp_path / part).write_bytes(b"moved back, then set aside again: a second name")
    assert compact(tmp_path).set_aside == [str(tmp_path / "damaged" / f"{part}.2")]
    (tmp_path / "elsewhere" / "photos").mkdir(parents=True)  # without damaged/: no archive
    with pytest.raises(ValueError, match="holds no manifest parts"):
        Archive(tmp_path / "elsewhere")


def test_split_damaged_finds_what_row_problem_finds_row_by_row(rng):
    """The arrow pass (`_suspects`) only narrows the rows `Row.problem` reads: the same split
    as asking every row, for rows damaged in every way it checks, with and without columns."""
    from rgbatch.manifest import split_damaged
    from rgbatch.row import COLUMNS

    good = dict(path="a.png", status="ok", width=4, height=3, iterations=2, model_id="m", blob=b"x",
                bytes=[10, 20], bpp=[0.1, 0.2], msssim=[0.9, 0.95], psnr=[30.0, 31.0])
    changes = [{}, {"path": None}, {"path": ""}, {"width": 0}, {"height": None}, {"iterations": None},
               {"model_id": ""}, {"blob": b""}, {"blob": None}, {"bytes": [10]}, {"bytes": None},
               {"bpp": [0.1, None]}, {"msssim": []}, {"msssim": None}, {"psnr": [30.0, 31.0, 32.0]},
               {"status": "error", "width": None, "bytes": None}, {"status": None, "path": None},
               {"bytes": [None, 20]}, {"iterations": 3}, {"msssim": [], "bpp": [], "psnr": []}]
    rows = [Row(**{**good, "path": f"{i}.png", **change}) for i, change in enumerate(changes)]
    rows = [rows[i] for i in rng.permutation(len(rows))] * 3
    for columns in (COLUMNS, ["path", "status", "width", "bytes", "msssim"], ["status", "width"], ["path"]):
        table = Row.to_arrow(rows).select(columns)
        read = Row.from_arrow(table)  # the rows as the table holds them: the columns not read are null
        kept, damaged = split_damaged(table)
        assert damaged == [(r.path, r.problem(columns)) for r in read if r.problem(columns)]
        assert kept.to_pylist() == [r for r, row in zip(table.to_pylist(), read) if not row.problem(columns)]
        if columns is COLUMNS:
            assert len(damaged) == 42  # 14 of the 20 kinds of row, three times each


@pytest.mark.parametrize("room", [0, 100])  # the part's header fails; a row group fails
def test_a_full_disk_is_one_worded_error_and_leaves_no_temporary_file(tmp_path, monkeypatch, room):
    with PartWriter(tmp_path, "00112233aabbccdd") as writer:
        writer.add(ok_row("a.png"))  # committed before the disk is full
    monkeypatch.setattr(storage, "AtomicOutput", type("Full", (FullDisk,), {"room": room}))
    with pytest.raises(OSError) as raised:
        with PartWriter(tmp_path, "00112233aabbccdd", row_group_rows=1) as writer:
            writer.add(ok_row("b.png"))
    assert raised.value.errno == errno.ENOSPC and raised.value.filename == str(tmp_path)
    assert worded(raised.value) == (f"{tmp_path}: cannot write a manifest part: No space left on device; the parts "
                                    f"committed before are kept: mend the cause and rerun to go on")
    assert [p.name for p in tmp_path.iterdir()] == parts(tmp_path)  # no temporary file left
    assert [r.path for r in Archive(tmp_path).rows()] == ["a.png"]


def test_a_lock_that_cannot_be_written_is_one_worded_error(tmp_path, monkeypatch):
    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "pwrite", full)
    with pytest.raises(OSError) as raised:
        with ArchiveLock(tmp_path / "A"):
            pass
    assert worded(raised.value) == (f"{tmp_path / 'A' / '.lock'}: cannot write the archive's lock file: "
                                    f"No space left on device")
    monkeypatch.undo()
    with ArchiveLock(tmp_path / "A"):  # released: the next writer takes it
        pass


def test_done_applies_the_latest_times_note_of_a_paths_current_hash(tmp_path):
    """`Archive.done` takes a path's size and time from its latest note of the same hash; notes of
    another hash (the source changed since) and times files that do not read are passed over."""
    at = lambda seconds: dt.datetime.fromtimestamp(seconds, dt.timezone.utc)  # noqa: E731
    with PartWriter(tmp_path, "00112233aabbccdd") as writer:
        for path in ("a.png", "b.png", "c.png"):
            writer.add(replace(ok_row(path), source_hash=path[0] * 64, source_bytes=10, source_mtime=at(100)))
        writer.write_times([("a.png", "a" * 64, 11, at(200)), ("b.png", "x" * 64, 12, at(300))])
        time.sleep(0.01)
        writer.write_times([("a.png", "a" * 64, 13, at(400))])
    (tmp_path / "times-0123456789abcdef0123456789abcdef.parquet").write_bytes(b"PAR1 damaged")
    done = {r["path"]: (r["source_bytes"], r["source_mtime"]) for r in Archive(tmp_path).done().to_pylist()}
    assert done == {"a.png": (13, at(400)), "b.png": (10, at(100)), "c.png": (10, at(100))}
    assert [r.path for r in Archive(tmp_path).rows()] == ["a.png", "b.png", "c.png"]  # rows readers ignore them


def test_compact_writes_the_noted_times_into_the_rows_and_deletes_the_times_files(tmp_path):
    from rgbatch.archive import compact

    at = lambda seconds: dt.datetime.fromtimestamp(seconds, dt.timezone.utc)  # noqa: E731
    with PartWriter(tmp_path, "00112233aabbccdd") as writer:
        for path in ("a.png", "b.png"):
            writer.add(replace(ok_row(path), source_hash=path[0] * 64, source_bytes=10, source_mtime=at(100)))
        writer.write_times([("a.png", "a" * 64, 11, at(200)), ("b.png", "x" * 64, 12, at(300))])
    before = Archive(tmp_path).done()
    assert compact(tmp_path).exit_code == 0
    assert not list(tmp_path.glob("times-*"))
    after = Archive(tmp_path).done()
    assert after.sort_by("path").equals(before.sort_by("path"))
    assert {r.path: (r.source_bytes, r.source_mtime) for r in Archive(tmp_path).rows()} == {
        "a.png": (11, at(200)), "b.png": (10, at(100))}


def test_times_files_fold_into_one_that_says_what_they_said(tmp_path):
    """`Archive.fold_times`: the latest note of each (path, hash) in one file, the others deleted;
    `done` the same before and after, and a later note still wins."""
    import time

    at = lambda seconds: dt.datetime.fromtimestamp(seconds, dt.timezone.utc)  # noqa: E731
    with PartWriter(tmp_path, "00112233aabbccdd") as writer:
        for path in ("a.png", "b.png", "c.png"):
            writer.add(replace(ok_row(path), source_hash=path[0] * 64, source_bytes=10, source_mtime=at(100)))
        for size in (11, 12, 13):  # a.png noted three times: the last wins
            writer.write_times([("a.png", "a" * 64, size, at(100 + size))])
            time.sleep(0.01)
        writer.write_times([("b.png", "b" * 64, 20, at(200)), ("gone.png", "g" * 64, 1, at(1))])
        (tmp_path / "times-0123456789abcdef0123456789abcdef.parquet").write_bytes(b"damaged")
    archive = Archive(tmp_path)
    assert len(archive.times_files) == 5 and len(writer.times_written) == 4
    before, notes = archive.done(), archive.notes(dated=True)
    assert archive.fold_times() == 5
    folded = Archive(tmp_path)
    assert len(folded.times_files) == 1 and folded.done().sort_by("path").equals(before.sort_by("path"))
    assert folded.notes(dated=True).sort_by("path").equals(notes.sort_by("path"))
    assert {r["path"]: r["source_bytes"] for r in folded.done().to_pylist()} == {"a.png": 13, "b.png": 20, "c.png": 10}
    with PartWriter(tmp_path, "00112233aabbccdd") as writer:
        writer.write_times([("a.png", "a" * 64, 14, at(114))])
    assert {r["path"]: r["source_bytes"] for r in Archive(tmp_path).done().to_pylist()}["a.png"] == 14


def test_a_file_of_a_name_that_is_not_utf8_beside_the_parts_is_passed_over(tmp_path):
    """pyarrow's listing cannot give such a name (it raised UnicodeDecodeError out of every command)."""
    with PartWriter(tmp_path, "00112233aabbccdd") as writer:
        writer.add(ok_row("a.png"))
    (tmp_path / os.fsdecode(b"stray\xff.png")).write_bytes(b"x")
    assert [r.path for r in Archive(tmp_path).rows()] == ["a.png"]
    (tmp_path.parent / "folder").mkdir()
    (tmp_path.parent / "folder" / os.fsdecode(b"img\xff.png")).write_bytes(b"x")
    with pytest.raises(ValueError, match="holds no manifest parts"):
        Archive(tmp_path.parent / "folder")


# -- shared blobs (format 2) --------------------------------------------------------------------------
def stored_blobs(folder) -> dict:
    """{path: (blob as stored, shared_blob, blob_sha256)} of every row of the archive's parts."""
    found = {}
    for name in parts(folder):
        for r in pq.read_table(folder / name, columns=["path", "blob", "shared_blob", "blob_sha256"]).to_pylist():
            found[r["path"]] = (r["blob"], r["shared_blob"], r["blob_sha256"])
    return found


def test_a_blob_is_stored_once_and_every_row_of_it_reads_it(tmp_path):
    """A row of the same blob as one its writer holds (its own part or a committed one) or as one
    of the archive (`held`) stores its digest alone; `rows` gives every row its blob, and an
    error row, a blob of its own, stays as it is."""
    blob, other = b"\x05" * 300, b"\x06" * 200
    with PartWriter(tmp_path, "00112233aabbccdd", row_group_rows=2, part_rows=3) as writer:
        stored = [writer.add(ok_row(p, blob=b)) for p, b in (("a.png", blob), ("b.png", other), ("c.png", blob),
                                                             ("d.png", blob))]  # d in the writer's second part
        writer.add(error_row("e.png", "/src/e.png", "broken"))
    # the first part closed early, in format 1, where the first shared row came: [a, b], [c], [d, e]
    assert stored == [300, 200, 0, 0] and len(writer.parts) == 3
    with PartWriter(tmp_path, "00112233aabbccdd", held=Archive(tmp_path).held_blobs()) as writer:
        assert writer.add(ok_row("f.png", blob=other)) == 0  # the archive holds it
    on_disk = stored_blobs(tmp_path)
    digest = hashlib.sha256(blob).hexdigest()
    assert on_disk["a.png"] == (blob, None, digest) and on_disk["b.png"][:2] == (other, None)
    assert on_disk["c.png"] == on_disk["d.png"] == (None, True, digest) and on_disk["f.png"][:2] == (None, True)
    assert on_disk["e.png"] == (None, None, None)
    rows = {r.path: r for r in Archive(tmp_path).rows()}
    assert [rows[f"{p}.png"].blob for p in "acdbf"] == [blob] * 3 + [other] * 2 and rows["e.png"].blob is None
    assert all(r.problem() is None for r in rows.values())
    assert [r.blob for r in Archive(tmp_path).rows({"d.png"})] == [blob]  # asked for alone, too
    versions = {}
    for name in parts(tmp_path):
        paths = tuple(pq.read_table(tmp_path / name, columns=["path"])["path"].to_pylist())
        versions[paths] = pq.read_schema(tmp_path / name).metadata[b"rgbatch.format_version"]
    # a part holding a shared row is format 2, the others format 1 (readable by an older rgbatch)
    assert versions == {("a.png", "b.png"): b"1", ("c.png",): b"2", ("d.png", "e.png"): b"2", ("f.png",): b"2"}


def test_a_part_closed_early_for_its_format_takes_none_of_the_buffered_rows_blobs(tmp_path):
    """A shared row coming after a format-1 row group closes that part; the rows buffered with it,
    and the blobs they hold, go into the format-2 part that follows, which fails alone."""
    blob = b"\x0e" * 100
    writer = PartWriter(tmp_path, "00112233aabbccdd", row_group_rows=3)
    writer.add(ok_row("a.png", blob=blob))
    writer._write_row_group()  # [a] written: a format-1 part
    writer.add(ok_row("b.png", blob=b"\x0f" * 100))
    writer.add(ok_row("c.png", blob=blob))  # shared: the buffer [b, c] needs format 2
    writer._write_row_group()
    assert len(writer.parts) == 1 and hashlib.sha256(b"\x0f" * 100).digest() not in writer.held.committed
    writer.abort()  # the format-2 part is lost, and b's blob with it
    assert writer.add(ok_row("d.png", blob=b"\x0f" * 100)) == 100 and writer.add(ok_row("e.png", blob=blob)) == 0
    writer.close()
    assert sorted(r.path for r in Archive(tmp_path).rows()) == ["a.png", "d.png", "e.png"]


def test_a_writer_refers_only_to_blobs_of_parts_that_were_committed(tmp_path, monkeypatch):
    """A part that cannot be written takes its blobs with it: the writer's next part stores them."""
    writer = PartWriter(tmp_path, "00112233aabbccdd")
    writer.add(ok_row("a.png", blob=b"\x07" * 100))
    writer.abort()  # as a part that cannot be written is dropped
    assert writer.add(ok_row("b.png", blob=b"\x07" * 100)) == 100
    writer.close()
    assert stored_blobs(tmp_path)["b.png"][:2] == (b"\x07" * 100, None)


def test_a_row_whose_shared_blob_no_row_holds_is_a_problem_and_encoded_again(tmp_path):
    """Its holder's part gone (set aside by `compact`, deleted by hand): the row is a problem of
    `rows` (named, never another blob), not done for a rerun of `compress`, which encodes it again."""
    blob = b"\x08" * 100
    with PartWriter(tmp_path, "00112233aabbccdd") as writer:
        writer.add(ok_row("a.png", blob=blob))
    [holder] = parts(tmp_path)
    with PartWriter(tmp_path, "00112233aabbccdd", held=Archive(tmp_path).held_blobs()) as writer:
        writer.add(ok_row("b.png", blob=blob))
        writer.add(ok_row("c.png", blob=b"\x09" * 50))
    assert sorted(hashes(Archive(tmp_path).done())) == ["a.png", "b.png", "c.png"]
    (tmp_path / holder).rename(tmp_path / "elsewhere.parquet")
    archive = Archive(tmp_path)
    rows = {r.path: r for r in archive.rows()}
    assert rows["b.png"].blob is None and "no row of the archive holding it reads whole" in rows["b.png"].problem()
    assert sorted(hashes(archive.done())) == ["c.png"]  # b.png is encoded again
    from rgbatch.archive import report

    summary = report(tmp_path, images=False)["summary"]  # a failure, as restore finds it
    assert summary["ok"] == 1 and [f["path"] for f in summary["failures"]] == ["b.png"]
    assert "no row of the archive holding it reads whole" in summary["failures"][0]["error"]
    from rgbatch.archive import compact

    result = compact(tmp_path)  # leaves it out, as a damaged part's rows: the archive reads whole then
    assert [p for p, _ in result.problems] == ["b.png"] and "left out" in result.problems[0][1]
    assert [r.path for r in Archive(tmp_path).rows()] == ["c.png"] and compact(tmp_path).exit_code == 0


def test_verify_checks_a_shared_blob_once_and_any_other_bytes_again(tmp_path, monkeypatch):
    """The rows of one shared blob (copies) are given one bytes object, whose checksums `verify`
    checks once; a row's own bytes, or a shared row's bytes of another object, are checked."""
    from rgbatch import archive as archive_module, bitstream

    blob = bitstream.pack(coder_id=0, bits=32, model_id="00112233aabbccdd", width=4, height=2, tile_size=512,
                          chunks=[b"\x01" * 5, b"\x02" * 7])
    sizes = bitstream.read_header(blob).cumulative_bytes()
    with PartWriter(tmp_path, "00112233aabbccdd") as writer:
        for path in ("a.png", "b.png", "c.png"):
            writer.add(ok_row(path, blob=blob, bytes=sizes))
    rows = list(Archive(tmp_path).rows())
    assert [r.shared_blob for r in rows] == [None, True, True] and rows[1].blob is rows[2].blob
    checked = []
    check = bitstream.check
    monkeypatch.setattr(bitstream, "check", lambda data: checked.append(data) or check(data))
    shared = archive_module._SharedChecks()
    assert [archive_module._check_blob(r, shared) for r in rows + rows] == [None] * 6
    assert len(checked) == 3  # a.png's own blob at each of its two checks, b.png's and c.png's once
    forged = replace(rows[2], blob=bytearray(blob))  # the same digest, other bytes: checked, and found damaged
    forged.blob[-1] ^= 1
    assert archive_module._check_blob(forged, shared).startswith("damaged blob: corrupted data in iteration 2")


def test_a_holder_whose_blob_is_not_its_digest_gives_no_blob(tmp_path):
    """`Archive.shared_blob` hands out a blob only where its sha256 is the digest asked for."""
    with PartWriter(tmp_path, "00112233aabbccdd") as writer:
        writer.add(ok_row("a.png", blob=b"\x0a" * 100))
        writer.add(ok_row("b.png", blob=b"\x0a" * 100))
    [name] = parts(tmp_path)
    table = pq.read_table(tmp_path / name)
    blobs = table["blob"].to_pylist()
    blobs[0] = b"\x0b" * 100  # the holder's bytes changed, its digest not
    table = table.set_column(table.schema.get_field_index("blob"), "blob", pa.array(blobs, pa.large_binary()))
    pq.write_table(table, tmp_path / name)
    rows = {r.path: r for r in Archive(tmp_path).rows()}
    assert rows["b.png"].blob is None and rows["b.png"].problem()


def test_compact_stores_each_blob_once_and_keeps_a_shared_one_whose_holder_it_drops(tmp_path):
    """`compact` writes with a writer of its own: the first current row of a blob holds it; a
    copy whose holder is dropped (or superseded) holds it from then on."""
    from rgbatch.archive import compact

    blob = b"\x0c" * 100
    with PartWriter(tmp_path, "00112233aabbccdd") as writer:
        for path in ("a.png", "b.png", "c.png"):
            writer.add(ok_row(path, blob=blob))
    assert compact(tmp_path, drop=("a.png",)).exit_code == 0
    on_disk = stored_blobs(tmp_path)
    assert sorted(on_disk) == ["b.png", "c.png"]
    assert on_disk["b.png"][:2] == (blob, None) and on_disk["c.png"][:2] == (None, True)
    assert [r.blob for r in Archive(tmp_path).rows()] == [blob, blob]


def test_a_blob_the_archive_holds_is_referred_to_only_once_it_reads_back(tmp_path, monkeypatch):
    """A holder whose blob does not read back (its pages damaged: a rerun reads no blobs) is not
    referred to: a new row of that blob (the copy encoded again) stores it whole."""
    blob = b"\x0d" * 100
    with PartWriter(tmp_path, "00112233aabbccdd") as writer:
        writer.add(ok_row("a.png", blob=blob))
    archive = Archive(tmp_path)
    monkeypatch.setattr(archive, "_blob_at", lambda position: None)
    held = archive.held_blobs()
    with PartWriter(tmp_path, "00112233aabbccdd", held=held) as writer:
        assert writer.add(ok_row("b.png", blob=blob)) == 100
    monkeypatch.undo()
    with PartWriter(tmp_path, "00112233aabbccdd", held=Archive(tmp_path).held_blobs()) as writer:
        assert writer.add(ok_row("c.png", blob=blob)) == 0  # read back: referred to


def test_a_part_that_goes_away_while_the_archive_is_read_is_said_so(tmp_path):
    """Readers take no lock: a `compact` meanwhile deletes the parts they listed. `report` ended in
    an unexpected TypeError (a gone part's size is None) and `restore` / `verify` called the part
    "not a readable Parquet file" (a helper's round, session 58); now one worded error, rerun."""
    import shutil
    from pathlib import Path

    from rgbatch.manifest import ArchiveChanged

    archive = tmp_path / "archive"
    shutil.copytree(Path(__file__).parent / "archive_v1" / "archive", archive)
    listed = Archive(archive)
    gone = listed.parts[0]
    os.unlink(gone)
    for read in (listed.part_bytes, lambda: list(listed.rows())):
        with pytest.raises(ArchiveChanged, match=rf"^{os.path.basename(gone)} went away while the archive was read: "
                                                 r"the archive was changed meanwhile \(a compact\?\); run the command"):
            read()


def test_every_column_but_the_blobs_is_compressed(tmp_path):
    """The per-depth lists were written uncompressed until session 59: Parquet keys a column's
    settings by its leaf path (`bytes.list.element`), not by its name."""
    with PartWriter(tmp_path / "a", "00112233aabbccdd") as writer:
        for i in range(20):
            writer.add(ok_row(f"{i}.png", blob=bytes([i]) * 64, source_hash=str(i)))
    (part,) = (tmp_path / "a").glob("part-*.parquet")
    group = pq.ParquetFile(part).metadata.row_group(0)
    kinds = {group.column(i).path_in_schema: group.column(i).compression for i in range(group.num_columns)}
    assert kinds.pop("blob") == "UNCOMPRESSED" and set(kinds.values()) == {"ZSTD"}, kinds
    assert {"bytes.list.element", "msssim.list.element"} <= set(kinds)


def test_the_schema_digest_is_what_archive_md_says():
    """An independent writer can compute it from docs/ARCHIVE.md alone ("Parquet schema metadata")."""
    from rgbatch.manifest import schema_digest, schema_metadata
    from rgbatch.row import SCHEMA

    schema = SCHEMA.with_metadata(schema_metadata("00112233aabbccdd", 1))
    columns = [(f.name, f"list<{f.type.value_type}>" if pa.types.is_list(f.type) else str(f.type)) for f in schema]
    metadata = sorted((k, v) for k, v in schema.metadata.items() if k != DIGEST_KEY and not k.startswith(b"ARROW:"))
    assert ("bytes", "list<int64>") in columns and ("written_at", "timestamp[us, tz=UTC]") in columns
    assert schema_digest(schema) == hashlib.sha256(repr((columns, metadata)).encode("utf-8")).hexdigest()[:16]
    assert schema.metadata[DIGEST_KEY] == schema_digest(schema).encode()


def test_a_part_the_system_cannot_open_is_no_damaged_part(tmp_path, monkeypatch):
    """Out of file descriptors (`ulimit -n`), `report` and `compact` called a sound part "not a
    readable Parquet file" (a helper's round, session 62): the system's failure is said as such,
    and the part is neither listed as damaged nor set aside."""
    import shutil
    from pathlib import Path

    from rgbatch.objectstore import worded

    archive = tmp_path / "archive"
    shutil.copytree(Path(__file__).parent / "archive_v1" / "archive", archive)
    listed = Archive(archive)

    def no_descriptors(fs, path):
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(storage, "open_input", no_descriptors)
    with pytest.raises(OSError) as raised:
        list(listed.rows())
    assert worded(raised.value) == f"{listed.parts[0]}: cannot read the manifest part: Too many open files"
    assert listed.unreadable == []


def test_replacing_parts_deletes_the_oldest_first(tmp_path, monkeypatch):
    """`compact` deleted the old parts in name order: interrupted after deleting the part holding
    a path's newest row, the older row of another part became current again (a dropped image came
    back, stale; a helper's round, session 64). The oldest go first now."""
    with PartWriter(tmp_path, "00112233aabbccdd") as writer:
        writer.add(ok_row("x.png", blob=b"old"))
    [old] = parts(tmp_path)
    with PartWriter(tmp_path, "00112233aabbccdd") as writer:
        writer.add(ok_row("x.png", blob=b"new"))
    [new] = set(parts(tmp_path)) - {old}
    (tmp_path / old).rename(tmp_path / f"part-{'f' * 32}.parquet")  # the newest first in name order
    (tmp_path / new).rename(tmp_path / f"part-{'0' * 32}.parquet")
    man = Archive(tmp_path)
    deleted = []

    def interrupted(fs, part):
        deleted.append(part.rsplit("/", 1)[-1])
        raise KeyboardInterrupt

    monkeypatch.setattr("rgbatch.manifest.storage.delete", interrupted)
    with pytest.raises(KeyboardInterrupt):
        man.replace(list(man.parts), [])
    assert deleted == [f"part-{'f' * 32}.parquet"]  # the old row's part: the new row is still current
