"""The archive manifest: Parquet part files, one row per source image (schema in docs/ARCHIVE.md).

An archive is a folder (or object-store prefix) of `part-<uuid>.parquet` files. Every run of
`compress` adds new parts, each committed atomically; the manifest is their union. A path
may have several rows (a failed attempt and its retry, an older version of a changed
source): its *current* row is the latest written one, so no file is ever rewritten.

    archive = Archive("manifests/kodak")   # refuses what is no archive, worded
    archive.table()                        # current rows, without the blobs (Arrow)
    archive.rows(paths={...})              # current rows with their blobs, as `Row`s, part by part
    with archive.locked("compact"):        # one writer at a time
        with archive.writer(model_id) as writer:
            writer.add(row)
        archive.replace(old_parts, writer.parts)

Rows are `rgbatch.row.Row`s (the schema lives there); file access goes through
`rgbatch.storage` (bytes, listings, atomic writes).
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import errno
import fcntl
import hashlib
import itertools
import json
import os
import posixpath
import re
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import __version__, objectstore, storage
from .row import (ADDED_COLUMNS, COLUMNS, DESCRIPTIONS, METADATA_COLUMNS, OK, PER_DEPTH, SCHEMA, STATS_COLUMNS, Row,
                  digests, schema_of)

# Format 2 (session 50): rows may share a blob (`Row.shared_blob`), which a format-1 reader would
# take for damage and a format-1 `compact` would lose. A part is written in it only where it holds
# such a row (`PartWriter`), so an archive without copies stays readable by an older rgbatch.
FORMAT_VERSION = 2
READ_FORMATS = ("1", "2")
PART_PREFIX = "part-"
PART_SUFFIX = ".parquet"
SET_ASIDE = "damaged"  # the folder in an archive where `compact` moves its damaged parts (`Archive.set_aside`)
BENCH_METADATA_KEY = b"rgbatch.bench"  # in the schema of bench manifests (rgbatch.bench), not archives
# Row groups sized for blobs: a reader of one image loads one row group, so keep them a few MB
# (the Parquet default of a million rows would put a whole archive in one group).
ROW_GROUP_ROWS = 64
ROW_GROUP_BYTES = 8 << 20
# A part is committed after this many rows or seconds, bounding what an interruption loses.
PART_ROWS = 1024
COMMIT_SECONDS = 60.0
# rows a streamed reading holds at once (`Archive.chunks`)
CHUNK_ROWS = 1 << 16
RUN_BYTES = 16 << 20  # consecutive row groups read at once hold at most this (uncompressed, all their columns)
# what `done` reads: what `Row.problem` checks, and the source's location, hash, size and time
DONE_COLUMNS = ["path", "source", "source_hash", "source_bytes", "source_mtime", "status", "model_id", "width",
                "height", "iterations", *PER_DEPTH, "options", "shared_blob", "blob_sha256"]
DONE_KEPT = ["path", "source_hash", "source_bytes", "source_mtime"]  # the columns of `done`'s table, with `alike`
# Footers read at listing are kept for the readings that follow (parts never change once written),
# up to this many bytes of memory: beyond, read again. A decoded footer holds about 1 KB per column
# chunk (`FOOTER_CHUNK_BYTES`), ten times its bytes on disk: a full part's (16 row groups of 28
# columns) is 46 KB on disk and 470 KB kept (pyarrow 26), so 128 MB keep about 290 full parts.
FOOTER_CACHE_BYTES = 128 << 20
FOOTER_CHUNK_BYTES = 1024
SHARED_CACHE_BYTES = 32 << 20  # shared blobs `Archive.shared_blob` keeps, the latest given



def schema_metadata(model_id: str, version: int = FORMAT_VERSION) -> dict[bytes, bytes]:
    metadata = {b"rgbatch.format_version": str(version).encode(), b"rgbatch.model_id": model_id.encode(),
                b"rgbatch.version": __version__.encode()}
    return {**metadata, DIGEST_KEY: schema_digest(SCHEMA.with_metadata(metadata)).encode()}


# A part's footer has no checksum in Parquet: a flipped bit in a column's name or type, or in the
# format version, would read as another tool's part (exit 2). Since session 33 the schema metadata
# holds a digest of the rest of the schema, and a part whose schema does not match it is damaged.
DIGEST_KEY = b"rgbatch.schema_sha256"


def _leaf(field: pa.Field) -> str:
    """A column's path in a Parquet file, which its per-column settings are keyed by: a list's
    values are `NAME.list.element` (the per-depth lists were written uncompressed, keyed by their
    names, until session 59)."""
    return f"{field.name}.list.element" if pa.types.is_list(field.type) else field.name


def schema_digest(schema: pa.Schema) -> str:
    """The first 16 hex digits of the sha256 of a part's columns (names and types) and schema
    metadata, its own digest and Arrow's keys left out."""
    metadata = sorted((k, v) for k, v in (schema.metadata or {}).items()
                      if k != DIGEST_KEY and not k.startswith(b"ARROW:"))
    def text(t: pa.DataType) -> str:  # a list's item is named "item" when written, "element" when read
        return f"list<{text(t.value_type)}>" if pa.types.is_list(t) else str(t)
    return hashlib.sha256(repr(([(f.name, text(f.type)) for f in schema], metadata)).encode()).hexdigest()[:16]


def is_part(name: str) -> bool:
    return name.startswith(PART_PREFIX) and name.endswith(PART_SUFFIX)


# Times files (`times-<32 hex>.parquet`, since session 47): a rerun that finds an archived source
# unchanged by its hash, but with another size or modification time than its row records (touched,
# copied without its times), notes its size and time there, so that the next rerun skips it
# unread; `Archive.done` applies the notes of the path's current hash. Readers of rows ignore them.
TIMES_PREFIX = "times-"
TIMES_COLUMNS = ["path", "source_hash", "source_bytes", "source_mtime", "written_at"]
# times files a compress that writes one folds into one (`Archive.fold_times`) once there are this
# many: each rerun reads them all (on an object store a request each), and they are read whole
TIMES_FOLD = 16


def write_times(fs, root: str, table: pa.Table) -> str:
    """Write a table of `TIMES_COLUMNS` as a new times file of the archive at `root`, atomically;
    its path."""
    path = f"{root}/{TIMES_PREFIX}{uuid.uuid4().hex}{PART_SUFFIX}"
    with storage.open_atomic(fs, path) as output:
        pq.write_table(table.cast(schema_of(TIMES_COLUMNS)), output, compression="zstd", write_page_checksum=True)
    return path


def is_times(name: str) -> bool:
    return name.startswith(TIMES_PREFIX) and name.endswith(PART_SUFFIX)


class PartNotWritten(OSError):
    """A part file `PartWriter` could not write (`filename`: the archive)."""


class HeldBlobs:
    """The sha256 digests of the blobs an archive's rows hold whole: those of its parts as listed
    (`Archive.held_blobs`, a sorted array of 32 bytes each) and of the parts committed since by
    the writers given it (`PartWriter`), which store a row of one of these blobs as a reference
    (`Row.shared_blob`) instead of its bytes. A listed one counts once `read(digest)` gives its
    blob (read back whole the first time it is asked for): one that does not read back (damage in
    its row group's blob pages, which a rerun reads nowhere else) is stored again, not referred to.
    `listed` may be a function giving them, called at the first question (a rerun that writes no
    row reads no digest)."""

    def __init__(self, listed=None, read=None):
        self._listed = listed if listed is not None else np.zeros(0, "S32")
        self.read = read
        self.committed: set[bytes] = set()  # and the listed ones read back
        self.unread: set[bytes] = set()

    @property
    def listed(self) -> np.ndarray:
        if callable(self._listed):
            self._listed = self._listed()
        return self._listed

    def __contains__(self, digest: bytes) -> bool:
        if digest in self.committed:
            return True
        listed = self.listed  # sorted
        at = np.searchsorted(listed, digest)
        if digest in self.unread or at == len(listed) or listed[at] != digest:
            return False
        if self.read is not None and self.read(digest) is None:
            self.unread.add(digest)
            return False
        self.committed.add(digest)
        return True


class PartWriter:
    """Streams rows into part files: row groups of a few MB, each part committed atomically.

    Leaving the `with` block commits what was added, also on an exception or Ctrl-C, since
    every added row is complete; only a failure of the writing itself discards the part.

    An ok row's blob is stored once (`add`): a row of the same blob as one `held` holds (the
    archive's, `Archive.held_blobs`, and those this writer committed) or as one of its own part
    stores none, only its digest (`Row.shared_blob`), so that sources of the same bytes (a photo
    in two albums) cost one stream. Only a committed part's blobs are referred to from another part.
    `share=False` stores every blob whole (each row readable on its own, as before format 2).
    """

    def __init__(self, archive, model_id: str, *, row_group_rows: int = ROW_GROUP_ROWS,
                 row_group_bytes: int = ROW_GROUP_BYTES, part_rows: int = PART_ROWS,
                 commit_seconds: float = COMMIT_SECONDS, held: HeldBlobs | None = None, share: bool = True):
        self.fs, self.root = storage.resolve(archive)
        self.model_id = model_id
        self._version = 1  # of the open part: 2 once a row group with a shared row is written into it
        self.row_group_rows, self.row_group_bytes = row_group_rows, row_group_bytes
        self.part_rows, self.commit_seconds = part_rows, commit_seconds
        self.parts: list[str] = []  # committed by this writer
        self.times_written: list[str] = []  # the times files it wrote (`write_times`)
        self.rows_committed = 0
        self._buffer: list[Row] = []
        self._buffer_bytes = 0
        self._writer = None  # the open part: ParquetWriter on a storage.AtomicOutput
        self._output = None
        self._part_rows = 0
        self._part_started = 0.0
        self.held = held if held is not None else HeldBlobs()
        self.share = share
        self._part_blobs: set[bytes] = set()  # digests of the blobs the open part holds (committed with it)

    def add(self, row: Row, archived: bool = True) -> int:
        """Add a row (written in its part's next row group); the bytes its blob takes there: none
        where another row holds the same blob (its digest and `shared_blob` stored instead).
        `archived=False`: only the blobs this writer stored count (a new encoding, which can only
        be an archived image's where the same source bytes are, copied instead: `compress` then
        reads no index of the archive's blobs)."""
        if not self.pending:
            self._part_started = time.monotonic()  # a part's clock starts at its first row
        if row.blob:  # the digest recomputed: a cut blob, a row read from an older part
            digest = hashlib.sha256(row.blob).digest()
            held = digest in self._part_blobs or digest in (self.held if archived else self.held.committed)
            shared = self.share and row.status == OK and held
            row = replace(row, blob=None if shared else row.blob, blob_sha256=digest.hex(), shared_blob=shared or None)
            if not shared and row.status == OK:
                self._part_blobs.add(digest)
        self._buffer.append(replace(row, written_at=dt.datetime.now(dt.timezone.utc)))
        self._buffer_bytes += len(row.blob or b"") + len(row.alpha or b"")
        if len(self._buffer) >= self.row_group_rows or self._buffer_bytes >= self.row_group_bytes:
            self._write_row_group()
        if self._part_rows + len(self._buffer) >= self.part_rows:
            self.commit()
        else:
            self.commit_if_due()
        return len(row.blob or b"")

    @property
    def pending(self) -> int:
        """Rows added but not committed yet."""
        return self._part_rows + len(self._buffer)

    def commit_if_due(self):
        """Commit if the oldest uncommitted row is `commit_seconds` old (checked on every row
        added, and by the compress driver about once a second while it waits)."""
        if self.pending and time.monotonic() - self._part_started >= self.commit_seconds:
            self.commit()

    def _start_part(self, version: int):
        if self._output is not None:  # a part whose header could not be written: its temporary file
            self._output.discard()
        self._output = storage.AtomicOutput(self.fs, f"{self.root}/{PART_PREFIX}{uuid.uuid4().hex}{PART_SUFFIX}")
        self._version, self._schema = version, SCHEMA.with_metadata(schema_metadata(self.model_id, version))
        self._writer = pq.ParquetWriter(
            self._output.stream, self._schema, compression={_leaf(f): "none" if f.name == "blob" else "zstd"
                                                            for f in SCHEMA},
            # blobs are incompressible bits: no dictionary, and no min/max statistics (which
            # would copy whole blobs into the footer; nor of ICC profiles and EXIF blocks, whose
            # dictionary keeps one copy of a profile many images share)
            use_dictionary=[c for c in COLUMNS if c != "blob"],
            write_statistics=[c for c in COLUMNS if c != "blob" and c not in METADATA_COLUMNS],
            # a CRC-32 on every page (since session 33), checked by every reading (`Archive._open`):
            # Parquet's pages have none otherwise, and a flipped bit in a zstd page can decode
            # to another path or MS-SSIM without an error
            write_page_checksum=True)
        self._part_rows = 0

    @contextlib.contextmanager
    def _writing(self):
        """A failure to write a part (a full disk, a store refusing) as one worded OSError naming
        the archive, the part dropped; the parts committed before stay, and a rerun goes on from them."""
        try:
            yield
        except PartNotWritten:
            raise
        except OSError as e:  # pyarrow's own: "[Errno 28] Error writing bytes to file. Detail: ..."
            self.abort()  # the part's writer is broken: its part and the rows not committed are dropped
            # a store's error in words (without them the raw AWS text, and with it the rest of
            # this message, ended up inside the store's hint: session 58)
            reason = os.strerror(e.errno) if e.errno else objectstore.worded(e)
            raise PartNotWritten(e.errno, f"cannot write a manifest part: {reason}; the parts committed before "
                                          f"are kept: mend the cause and rerun to go on",
                                 storage.uri(self.fs, self.root)) from e

    def _write_row_group(self):
        if not self._buffer:
            return
        version = 2 if any(row.shared_blob for row in self._buffer) else 1  # the format its rows need
        if self._writer is not None and version > self._version:
            self._close_part()  # the open format-1 part committed as it is; a format-2 one takes these rows
        with self._writing():
            if self._writer is None:
                self._start_part(version)
            self._writer.write_table(Row.to_arrow(self._buffer, self._schema), row_group_size=len(self._buffer))
        self._part_rows += len(self._buffer)
        self._buffer, self._buffer_bytes = [], 0

    def commit(self):
        """Write what is buffered, close the current part and move it into place."""
        self._write_row_group()
        self._close_part()

    def _close_part(self):
        """Close the current part (if any) and move it into place."""
        if self._writer is None:
            return
        with self._writing():
            self._writer.close()
            self._output.commit()
        self.parts.append(self._output.path)
        self.rows_committed += self._part_rows
        # the blobs of rows still buffered (a part closed early for its format) go into the next part
        buffered = {bytes.fromhex(r.blob_sha256) for r in self._buffer if r.blob and r.status == OK}
        self.held.committed |= self._part_blobs - buffered
        self._writer = self._output = None
        self._part_rows, self._part_blobs = 0, buffered

    def write_times(self, notes: list[tuple[str, str, int, dt.datetime]]):
        """Write (path, source hash, size, modification time) notes of unchanged sources whose
        size or time moved into a new times file (`TIMES_PREFIX`), atomically."""
        if not notes:
            return
        columns = [list(c) for c in zip(*notes)] + [[dt.datetime.now(dt.timezone.utc)] * len(notes)]
        table = pa.Table.from_arrays([pa.array(c) for c in columns], schema=schema_of(TIMES_COLUMNS))
        self.times_written.append(write_times(self.fs, self.root, table))

    def abort(self):
        """Drop the uncommitted rows and the temporary file."""
        self._buffer, self._part_rows, self._part_blobs = [], 0, set()
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.close()
        if self._output is not None:  # also a part whose header could not be written (no `_writer`)
            self._output.discard()
        self._writer = self._output = None

    def close(self):
        try:
            self.commit()
        except BaseException:
            self.abort()
            raise

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def is_bench_manifest(fs, path: str) -> bool:
    """Whether a Parquet file is a bench manifest (`rgbatch bench`), by its schema metadata. Only a
    plain file is read: a FIFO given as the archive hung report, restore, verify and compact with
    no end (deaf to signals, blocked in the open) until session 58."""
    if not storage.is_regular_file(fs, path):
        return False
    try:
        return BENCH_METADATA_KEY in (pq.read_schema(storage.open_input(fs, path)).metadata or {})
    except (pa.ArrowInvalid, OSError):
        return False


def not_an_archive(location: str, fs, root: str, files: list[str] | None = None) -> Exception:
    """The error for a location that is no archive, saying what it is and what to run instead."""
    if files is None:  # not a folder
        if not storage.exists(fs, root):
            return objectstore.not_found(fs, root, f"no archive at {location}")
        if is_part(root.rsplit("/", 1)[-1]):
            folder = location.rsplit("/", 1)[0] if "/" in location else "."
            return ValueError(f"{location} is one part file of an archive: give the archive folder ({folder})")
        if is_bench_manifest(fs, root):
            return ValueError(f"{location} is a bench manifest, not an archive: `rgbatch bench {location}` "
                              f"summarises it")
        return ValueError(f"{location} is {storage.described(fs, root)}, not an archive folder")
    benches = [f for f in files if f.endswith(PART_SUFFIX) and is_bench_manifest(fs, f)]
    if benches:
        name = posixpath.join(location, benches[0].rsplit("/", 1)[-1])
        return ValueError(f"{location} holds a bench manifest, not an archive: `rgbatch bench {name}` summarises it")
    if holder := ArchiveLock.holder(fs, root):  # its first run has committed nothing yet
        return ArchiveBusy(f"{location} holds no manifest parts yet: it is being written by {holder}; wait for it "
                           f"to commit its first part, or to end")
    return ValueError(f"{location} holds no manifest parts ({PART_PREFIX}*{PART_SUFFIX})")


class ArchiveChanged(RuntimeError):
    """A part listed when the archive was opened went away while it was read: a `compact` (or
    another writer's clean-up) ran meanwhile. Readers take no lock, so they say so and the command
    is run again (until session 58: `report` ended in an unexpected TypeError, `restore` and
    `verify` called the part "not a readable Parquet file")."""

    def __init__(self, part: str):
        super().__init__(f"{part.rsplit('/', 1)[-1]} went away while the archive was read: the archive was "
                         f"changed meanwhile (a compact?); run the command again")


class Archive:
    """An archive: its part files, each path's current row, and writing (one writer at a time).

    `Archive(location)` reads an archive and refuses, worded, what is none (a missing folder,
    a bench manifest, one part file); `Archive(location, create=True)` is one that may not
    exist yet (compress writes it).
    """

    def __init__(self, location, create: bool = False):
        self.location, self.create = str(location), create
        self.fs, self.root = storage.resolve(location)
        self._list()

    def _list(self):
        self.parts: list[str] = []
        self.times_files: list[str] = []  # `TIMES_PREFIX`
        self.unreadable: list[tuple[str, str]] = []  # (part file name, why): `_readable`, `_leave_out`
        self.unreadable_parts: list[str] = []  # the parts `_readable` left out (their paths)
        self.missed: list[tuple[str | None, str]] = []  # (path, why): `rows`
        self._current = None
        self._damaged: dict[tuple[str, int], tuple[range, str]] = {}  # (part, row group): its positions, why
        self._numbers: dict[str, int] = {}  # a row's position: its part's number << 32 | its index in the part
        self._numbered: list[str] = []  # the parts by their numbers
        self._footers: dict[str, pq.FileMetaData] = {}  # of parts read at listing, FOOTER_CACHE_BYTES of them
        self._footer_bytes = 0
        self._holders = None  # (digests, positions) of the rows holding a blob whole: `_holder_index`
        self._group = None  # (part, row group, its blobs): the last one `_blob_at` read
        self._starts: dict[str, np.ndarray] = {}  # a part's row groups' first rows: `_blob_at`
        self._shared = collections.OrderedDict()  # digest -> blob, the latest `shared_blob` gave (SHARED_CACHE_BYTES)
        self._shared_bytes = 0
        if self.create and not storage.exists(self.fs, self.root):
            return
        if not storage.is_dir(self.fs, self.root):
            if self.create:
                raise NotADirectoryError(f"the archive {self.location} is {storage.described(self.fs, self.root)}, "
                                         f"not a folder")
            raise not_an_archive(self.location, self.fs, self.root)
        files = storage.list_files(self.fs, self.root, recursive=False)
        parts = sorted(p for p in files if is_part(p.rsplit("/", 1)[-1]))
        self.times_files = sorted(p for p in files if is_times(p.rsplit("/", 1)[-1]))
        if not parts and not self.create and not storage.is_dir(self.fs, posixpath.join(self.root, SET_ASIDE)):
            raise not_an_archive(self.location, self.fs, self.root, files)  # (every part set aside: an empty archive)
        for part in parts:
            why = self._readable(part)
            if why:
                self.unreadable.append((part.rsplit("/", 1)[-1], why))
                self.unreadable_parts.append(part)
            else:
                self.parts.append(part)

    def _readable(self, part: str) -> str | None:
        """Why a part file is no Parquet file at all (cut short, its footer damaged), or None. Such a
        part is left out of every reading and never deleted or rewritten: the images in it are
        failures of `report`, `restore`, `verify` and `compact`, and `compress` encodes them
        again (their new rows in new parts). A part whose footer reads but whose pages do not is
        found only by a reading that reaches the damage (`_batches`). A readable part of another
        format or schema is still an error (`_open`): it may be a newer rgbatch's. `compact` sets
        damaged parts aside (`set_aside`)."""
        try:
            file = pq.ParquetFile(storage.open_input(self.fs, part), page_checksum_verification=True)
            schema = file.schema_arrow
        except OSError as e:
            why = _damage(e)  # None: the store's or the system's failure, `_open`'s error (exit 2)
        except Exception as e:  # whatever else a damaged footer makes pyarrow raise (bad UTF-8, a 128-bit int)
            why = " ".join(f"{type(e).__name__}: {e}".split())
        else:
            digest = (schema.metadata or {}).get(DIGEST_KEY)  # none: a part written before session 33
            why = None if digest in (None, schema_digest(schema).encode()) else "its schema does not match its digest"
            if not why and self._footer_bytes < FOOTER_CACHE_BYTES:
                self._footers[part] = file.metadata  # `_open` reads it no more
                self._footer_bytes += file.metadata.num_row_groups * file.metadata.num_columns * FOOTER_CHUNK_BYTES
        if why:
            return (f"damaged manifest part, not a readable Parquet file ({why}): its images are left out; "
                    f"`compress` encodes them again; `compact` sets the part aside in {SET_ASIDE}/")
        return None

    # -- writing -------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def locked(self, command: str) -> Iterator["ArchiveLock"]:
        """Hold the archive's lock (`ArchiveLock`: taking it removes the temporary parts of killed
        writers, `lock.removed`); the parts are listed again once it is held."""
        with ArchiveLock(self.location, command) as lock:
            self._list()
            yield lock

    def writer(self, model_id: str, held: HeldBlobs | None = None, **sizes) -> "PartWriter":
        return PartWriter(self.location, model_id, held=held, **sizes)

    def replace(self, old_parts: list[str], new_parts: list[str]):
        """Delete `old_parts`, whose rows `new_parts` (committed) now hold: the oldest first, so that
        an interruption meanwhile leaves each path's newest row among those left (in name order, an
        interrupted `compact --drop` could leave an older row of a dropped path, current again:
        a helper's round, session 64)."""
        for part in sorted(old_parts, key=self._written_last):
            storage.delete(self.fs, part)
        self.parts = sorted(set(self.parts) - set(old_parts) | set(new_parts))
        self._current = self._holders = self._group = None

    def _written_last(self, part: str) -> dt.datetime:
        """When the newest row of `part` was written, from its footer's statistics (`_NEVER` where
        they do not say: a part without them, or not readable)."""
        newest = _NEVER
        with contextlib.suppress(Exception):  # the order of deleting alone depends on it
            metadata = self._open(part).metadata
            for group in map(metadata.row_group, range(metadata.num_row_groups)):
                for column in map(group.column, range(group.num_columns)):
                    stats = column.statistics
                    if column.path_in_schema == "written_at" and stats is not None and stats.has_min_max:
                        last = stats.max  # a foreign part's without a zone: UTC, as `_choose_current` reads it
                        newest = max(newest, last if last.tzinfo else last.replace(tzinfo=dt.timezone.utc))
        return newest

    def set_aside(self, part: str) -> str:
        """Move a damaged part (`unreadable_parts`, `damaged_parts`) into the archive's `damaged/`
        folder, out of every reading but never deleted or rewritten (moved back, it is read again);
        its new path. A name already there gets a number (a part set aside, moved back, set aside)."""
        folder = self.set_aside_folder()
        self.fs.create_dir(folder, recursive=True)
        name = posixpath.basename(part)
        target, n = posixpath.join(folder, name), 1
        while storage.exists(self.fs, target):
            n += 1
            target = posixpath.join(folder, f"{name}.{n}")
        self.fs.move(part, target)  # a rename on a local disk; an object store copies, then deletes
        self.parts = [p for p in self.parts if p != part]
        self._current = None
        return target

    def set_aside_folder(self) -> str:
        """The archive's `damaged/` folder (`set_aside`), refusing, worded, a file or anything but
        a folder by that name: `compact` calls it before it writes (ValueError)."""
        folder = posixpath.join(self.root, SET_ASIDE)
        what = storage.kind(self.fs, folder)
        if what not in ("folder", "missing"):
            raise ValueError(f"{storage.uri(self.fs, folder)} is {'a file' if what == 'file' else what}, not a "
                             f"folder: `compact` sets damaged parts aside there; move it away and run it again")
        return folder

    def set_aside_parts(self) -> list[str]:
        """The files in the archive's `damaged/` folder (`set_aside`): parts no command reads."""
        folder = posixpath.join(self.root, SET_ASIDE)
        return storage.list_files(self.fs, folder, recursive=False) if storage.is_dir(self.fs, folder) else []

    def part_bytes(self, parts: list[str] | None = None) -> int:
        """Bytes of the part files (all of them by default); ArchiveChanged where one has gone."""
        sizes = {p: storage.size(self.fs, p) for p in (self.parts if parts is None else parts)}
        if gone := [p for p, size in sizes.items() if size is None]:
            raise ArchiveChanged(gone[0])
        return sum(sizes.values())

    # -- reading -------------------------------------------------------------------------------------
    def _open(self, part: str) -> pq.ParquetFile:
        try:
            file = pq.ParquetFile(storage.open_input(self.fs, part), metadata=self._footers.get(part),
                                  page_checksum_verification=True)
        except FileNotFoundError:
            raise ArchiveChanged(part) from None
        except (pa.ArrowInvalid, OSError) as e:
            if isinstance(e, OSError) and _damage(e) is None:  # the system's or the store's failure (too many
                # open files, no permission): no damage, until session 62 worded as if it were
                reason = os.strerror(e.errno) if e.errno else " ".join(str(e).split())  # pyarrow's strerror: long
                raise OSError(e.errno, f"cannot read the manifest part: {reason}", part) from None
            raise ValueError(f"{part} is not a readable Parquet file: {e}") from None
        schema = file.schema_arrow  # built anew at each reading of the property: 6 s for 3000 parts
        metadata = schema.metadata or {}
        version = metadata.get(b"rgbatch.format_version", b"0").decode("utf-8", "replace")
        if version not in READ_FORMATS:
            raise ValueError(f"{part} has manifest format {version!r}; this rgbatch reads formats "
                             f"{' and '.join(READ_FORMATS)}")
        for name in set(schema.names) & set(COLUMNS):
            found, wanted = schema.field(name).type, SCHEMA.field(name).type
            if _type_family(found) != _type_family(wanted):
                raise ValueError(f"{part}: column {name!r} is {found}, not {wanted} (docs/ARCHIVE.md, schema)")
        return file

    def total_rows(self) -> int:
        """Rows in all parts, superseded ones included."""
        return sum(self._open(p).metadata.num_rows for p in self.parts)

    def model_ids(self) -> dict[str, str]:
        """Model id recorded in each part's schema metadata."""
        return {p: self._open(p).schema_arrow.metadata[b"rgbatch.model_id"].decode() for p in self.parts}

    def _batches(self, columns: list[str], wanted=None) -> Iterator[tuple[int, pa.RecordBatch]]:
        """(position of the batch's first row, batch) of every part, in part order, a row group at
        a time; with `wanted`, only of the row groups whose positions (a range) it accepts. A row
        group whose pages do not read (bits flipped inside a part whose footer reads: its CRC-32s,
        or zstd, or the encodings say so) is left out of this and every later reading
        (`_leave_out`); the damage shows only once a reading reaches it."""
        for part in list(self.parts):
            file = self._open(part)
            names = file.schema_arrow.names
            missing = [c for c in columns if c not in names]
            if set(missing) - set(ADDED_COLUMNS):
                raise ValueError(f"{part} lacks the columns {sorted(set(missing) - set(ADDED_COLUMNS))}")
            schema = schema_of(columns)
            read = [c for c in columns if c not in missing]
            groups, end = [], self._number(part) << 32
            for group in range(file.num_row_groups):
                rows = range(end, end + file.metadata.row_group(group).num_rows)
                end = rows.stop
                if (part, group) not in self._damaged and (wanted is None or wanted(rows)):
                    if why := _inflated(file.metadata.row_group(group), read):
                        self._leave_out(part, group, file.num_row_groups, rows, why)
                        continue
                    groups.append((group, rows))
            for run in _runs(file, groups, RUN_BYTES):
                for position, batch in self._run_batches(part, file, run, read):
                    for name in missing:  # a part written before the column was added: null
                        batch = batch.append_column(name, pa.nulls(batch.num_rows, SCHEMA.field(name).type))
                    try:  # a part written by another tool may use wider types (int64 sizes, string views)
                        batch = batch.select(columns).cast(schema)  # and drops the metadata: parts differ in model id only
                    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
                        raise ValueError(f"{part}: a column does not fit the manifest schema: {e}") from None
                    yield position, batch

    def _run_batches(self, part: str, file: pq.ParquetFile, run: list[tuple[int, range]], columns: list[str]):
        """(position, batch) of consecutive row groups' `columns` (`_runs`): read in one call (a
        reading per row group cost 0.4 ms each, half of reading a million rows' stats), a batch a
        row group; where that fails as damage does, or gives another count of rows, group by
        group (`_group_batches`), which finds the damaged one."""
        if len(run) > 1 and columns:
            try:
                table = file.read_row_groups([group for group, _ in run], columns=columns)
            except (pa.ArrowInvalid, OSError) as e:
                if not _damage(e):  # the store's or the system's failure: an error (exit 2)
                    raise
                table = None
            if table is not None and table.num_rows == sum(len(rows) for _, rows in run):
                offset = 0
                for _, rows in run:
                    position = rows.start
                    for batch in table.slice(offset, len(rows)).to_batches():
                        yield position, batch
                        position += batch.num_rows
                    offset += len(rows)
                return
        for group, rows in run:
            yield from self._group_batches(part, file, group, rows, columns)

    def _group_batches(self, part: str, file: pq.ParquetFile, group: int, rows: range, columns: list[str]):
        """(position, batch) of one row group's `columns` as the file holds them (`_batches` passes
        no group known damaged), and what it gave before the damage where it turns out so."""
        batches, position = file.iter_batches(batch_size=ROW_GROUP_ROWS, row_groups=[group], columns=columns), rows.start
        while True:
            try:
                batch = next(batches, None)
            except (pa.ArrowInvalid, OSError) as e:
                why = _damage(e)
                if not why:  # the store's or the system's failure: an error (exit 2)
                    raise
                break
            if batch is None:  # a damaged page header may read as a page of no values
                why = None if position == rows.stop else f"it gave {position - rows.start} of its {len(rows)} rows"
                break
            if position + batch.num_rows > rows.stop:
                why = f"it gave more than its {len(rows)} rows"
                break
            yield position, batch
            position += batch.num_rows
        if why:
            self._leave_out(part, group, file.num_row_groups, rows, why)

    def _number(self, part: str) -> int:
        """The part's number in its rows' positions (`_batches`), given at its first reading."""
        if part not in self._numbers:
            self._numbers[part] = len(self._numbered)
            self._numbered.append(part)
        return self._numbers[part]

    def _leave_out(self, part: str, group: int, groups: int, rows: range, why: str):
        """Leave a damaged row group out of every reading from now on (listed in `unreadable`; the
        part is never deleted or rewritten); the current rows are chosen again without it."""
        why = (f"damaged manifest part, its row group {group + 1} of {groups} ({len(rows)} rows) does not read "
               f"({why}): its rows are left out; `compact` copies the part's other rows and sets it aside in "
               f"{SET_ASIDE}/, `compress` then encodes again what it held")
        self._damaged[part, group] = rows, why
        self.unreadable.append((posixpath.basename(part), why))
        self._current = None

    @property
    def damaged_parts(self) -> set[str]:
        """The parts, among `parts`, with a row group found damaged so far (`_batches`)."""
        return {part for part, _ in self._damaged}

    def read_whole(self, read):
        """`read()` (a reading of this archive's current rows), again without the row groups it
        found damaged until one reading finds none, so that no result mixes rows that a damaged
        group's rows would have superseded."""
        while True:
            damaged = len(self._damaged)
            result = read()
            if len(self._damaged) == damaged:
                return result

    def current_rows(self) -> pa.Table:
        """Each path's current row (latest written, ok before error; the first written of equals):
        a table of its `position` (`_batches`) and `path`, in position order. Chosen in Arrow: a
        million rows in 5 s, 37 MB kept (about 300 MB while chosen), where a dict took 10 s and 360 MB."""
        if self._current is None:
            self._current = self.read_whole(self._choose_current)
        return self._current

    def _choose_current(self) -> pa.Table:
        positions, batches = [], []
        for first, batch in self._batches(["path", "status", "written_at"]):
            positions.append(np.arange(first, first + batch.num_rows, dtype=np.int64))
            batches.append(batch)
        rows = pa.Table.from_batches(batches, schema=schema_of(["path", "status", "written_at"]))
        rows = pa.table({
            "position": np.concatenate(positions) if positions else np.zeros(0, np.int64),
            "path": rows["path"].cast(pa.large_string()).combine_chunks(),  # no 2 GiB limit on the paths
            "written": pc.fill_null(rows["written_at"], pa.scalar(_NEVER, rows.schema.field("written_at").type)),
            "ok": pc.fill_null(pc.equal(rows["status"], OK), False)})  # a null time counts as the oldest
        rows = rows.take(pc.sort_indices(rows, [("path", "ascending"), ("written", "ascending"), ("ok", "ascending"),
                                                ("position", "descending")]))
        path = rows["path"].combine_chunks()
        last = np.ones(rows.num_rows, dtype=bool)  # the last row of each path's run; a null path: each its own
        last[:-1] = pc.fill_null(pc.not_equal(path[:-1], path[1:]), True).to_numpy(zero_copy_only=False)
        return rows.filter(pa.array(last)).select(["position", "path"]).sort_by("position")

    def _current_batches(self, columns: list[str], keep: np.ndarray, given: np.ndarray | None = None
                         ) -> Iterator[pa.RecordBatch]:
        """Batches of the rows at the positions `keep` (sorted), the others left out unread into
        Python; `given[i]` is set where a batch gave `keep[i]` (those it does not: rows of parts found
        damaged). Row groups holding none of `keep` are not read (`restore --select` reads the blobs
        it needs)."""
        def among(first: int, stop: int) -> slice:
            return slice(*np.searchsorted(keep, [first, stop]))

        def holds(rows: range) -> bool:
            found = among(rows.start, rows.stop)
            return found.stop > found.start

        for first, batch in self._batches(columns, wanted=holds):
            found = among(first, first + batch.num_rows)
            if given is not None:
                given[found] = True
            if found.stop - found.start == batch.num_rows:
                yield batch
            elif found.stop > found.start:
                yield batch.take(pa.array(keep[found] - first))

    def _kept(self, paths: set[str] | None) -> np.ndarray:
        if isinstance(paths, (str, bytes)):  # one path is a set of one, not of its letters (until session 58)
            paths = {paths}
        current = self.current_rows()
        if paths is not None:
            current = current.filter(pc.is_in(current["path"], value_set=pa.array(sorted(paths), pa.large_string())))
        return current["position"].to_numpy()

    def table(self, columns: list[str] = STATS_COLUMNS) -> pa.Table:
        """The current rows as one table, sorted by path (no blobs by default: they can be large).
        It holds every row: a reading of any size goes through `chunks`. `columns` without "path"
        are sorted by it all the same (a KeyError until session 63)."""
        read = columns if "path" in columns else ["path", *columns]
        table = self.read_whole(lambda: sorted_by_path(list(self.chunks(read)), schema_of(read)))
        return table.select(columns)

    def chunks(self, columns: list[str], rows: int | None = None) -> Iterator[pa.Table]:
        """The current rows' `columns`, at most `rows` (CHUNK_ROWS) at a time, in the parts'
        order: a reading in bounded memory (inside `read_whole`, which reads again where a
        damaged row group turns up half-way)."""
        batches, schema = self._current_batches(columns, self._kept(None)), schema_of(columns)
        while chunk := list(itertools.islice(batches, max(1, (rows or CHUNK_ROWS) // ROW_GROUP_ROWS))):
            yield pa.Table.from_batches(chunk, schema=schema).combine_chunks()  # one array a column: faster to compute on

    def rows(self, paths: set[str] | None = None) -> Iterator[Row]:
        """Current rows (blobs included), part by part so memory stays bounded. Where a part's
        pages turn out damaged half-way, what was yielded stands, the part is in `unreadable`
        and the current rows it did not give are in `missed` once the rows are read: [(path, why)]."""
        current, self.missed = self.current_rows(), []
        keep = self._kept(paths)
        given = np.zeros(len(keep), dtype=bool)
        for batch in self._current_batches(COLUMNS, keep, given):
            for row in Row.from_arrow(batch):
                if row.shared_blob and row.blob is None and row.ok:
                    row.blob = self.shared_blob(row.blob_sha256)  # None: `Row.problem` says why
                yield row
        lost = keep[~given]  # in the parts' order
        lost_paths = current["path"].take(np.searchsorted(current["position"].to_numpy(), lost)).to_pylist()
        for position, path in zip(lost.tolist(), lost_paths):
            part, why = next((part, why) for (part, _), (rows, why) in self._damaged.items() if position in rows)
            self.missed.append((path, f"{posixpath.basename(part)}: {why}"))

    # -- shared blobs (format 2) ------------------------------------------------------------------------
    def _holder_index(self) -> tuple[np.ndarray, np.ndarray]:
        """(digests, sorted, and the positions of the rows holding those blobs whole: ok rows
        whose blob is their own, superseded ones too), read once, 40 bytes a row."""
        if self._holders is None:
            found, where, batches, positions = [np.zeros(0, "S32")], [np.zeros(0, np.int64)], [], []

            def add():  # a chunk's batches at once: per batch of 64 rows the calls cost twice the reading
                table = pa.Table.from_batches(batches)
                whole = pc.and_(pc.fill_null(pc.equal(table["status"], OK), False),
                                pc.invert(pc.fill_null(table["shared_blob"], False)))
                held, sha256 = digests(table["blob_sha256"])
                keep = whole.to_numpy(zero_copy_only=False)[sha256]
                found.append(held[keep])
                where.append(np.concatenate(positions)[sha256][keep])
                batches.clear()
                positions.clear()

            if any("blob_sha256" in self._open(part).schema_arrow.names for part in self.parts):
                for first, batch in self._batches(["status", "blob_sha256", "shared_blob"]):
                    batches.append(batch)
                    positions.append(np.arange(first, first + batch.num_rows, dtype=np.int64))
                    if len(batches) * ROW_GROUP_ROWS >= CHUNK_ROWS:
                        add()
                if batches:
                    add()
            found, where = np.concatenate(found), np.concatenate(where)
            order = np.argsort(found, kind="stable")
            self._holders = found[order], where[order]
        return self._holders

    def held_blobs(self) -> HeldBlobs:
        """The digests of the blobs this archive's rows hold whole, for a writer to refer to (each
        read back before the first reference to it)."""
        return HeldBlobs(lambda: self._holder_index()[0], read=lambda digest: self.shared_blob(digest.hex()))

    def shared_blob(self, sha256: str | None) -> bytes | None:
        """The blob of this hex digest, from a row holding it whole whose blob reads and has that
        digest (the first of several), or None."""
        try:
            digest = bytes.fromhex(sha256 or "")
        except ValueError:
            return None
        if digest in self._shared:  # copies come in runs: a folder and its copy
            self._shared.move_to_end(digest)
            return self._shared[digest]
        held, positions = self._holder_index()
        for position in positions[np.searchsorted(held, digest, "left"):np.searchsorted(held, digest, "right")]:
            blob = self._blob_at(int(position))
            if blob is not None and hashlib.sha256(blob).digest() == digest:
                self._shared[digest] = blob
                self._shared_bytes += len(blob)
                while self._shared_bytes > SHARED_CACHE_BYTES:
                    self._shared_bytes -= len(self._shared.popitem(last=False)[1])
                return blob
        return None

    def _blob_at(self, position: int) -> bytes | None:
        """The blob of the row at `position` (`_batches`), or None where its row group is damaged
        (found so now or before) or its part is gone."""
        number, index = position >> 32, position & 0xFFFFFFFF
        part = self._numbered[number] if number < len(self._numbered) else None
        if part not in self.parts:
            return None
        if part not in self._starts:
            metadata = self._open(part).metadata
            groups = [metadata.row_group(g).num_rows for g in range(metadata.num_row_groups)]
            self._starts[part] = np.cumsum([0] + groups)
        starts = self._starts[part]
        group = int(np.searchsorted(starts, index, "right")) - 1
        if not 0 <= group < len(starts) - 1 or (part, group) in self._damaged:
            return None
        start = int(starts[group])
        if self._group is None or self._group[:2] != (part, group):
            try:
                self._group = part, group, self._open(part).read_row_group(group, columns=["blob"])["blob"]
            except (pa.ArrowInvalid, OSError) as e:
                if not _damage(e):  # the store's or the system's failure: an error (exit 2)
                    raise
                return None
        blobs = self._group[2]
        return blobs[index - start].as_py() if index - start < len(blobs) else None

    def done(self, alike: tuple[str, str] | None = None) -> pa.Table:
        """The images whose current row is ok (and not damaged, see `Row.problem`): what a rerun
        skips (`sources.unchanged`), as a table of `DONE_KEPT` (path, source hash, size and
        modification time; the texts large strings, in one chunk: `take` is 100x faster than on
        many), `alike`: whether the row was made by the model and options of `alike` (its
        model id and `Row.options` text), so that a new source of its bytes may take its row
        (rgbatch.pipeline), and `source`: the location it was read from (a changed source of
        another location does not replace it while that one is there: `_Run.claimed`). Read and
        checked a chunk at a time (`chunks`); a million rows hold about 100 MB (a dictionary of
        them held 370 MB and took twice the time), and their locations about as much again."""
        def read() -> pa.Table:
            kept = [self.empty_done()]
            for chunk in self.chunks(DONE_COLUMNS):
                table, _ = split_damaged(chunk)
                table = table.filter(pc.fill_null(pc.equal(table["status"], OK), False))
                table = table.filter(pc.invert(self.unheld(table)))
                same = pa.array(np.zeros(table.num_rows, dtype=bool)) if alike is None else pc.fill_null(
                    pc.and_(pc.equal(table["model_id"], alike[0]), pc.equal(table["options"], alike[1])), False)
                kept.append(table.select(DONE_KEPT).append_column("alike", same)
                            .append_column("source", table["source"]).cast(kept[0].schema))
            return pa.concat_tables(kept).combine_chunks()

        return self._noted(self.read_whole(read)) if self.parts else self.empty_done()

    def unheld(self, table: pa.Table) -> pa.Array:
        """Which rows of `table` (with `shared_blob` and `blob_sha256`) share a blob that no row of
        the archive's readable parts holds whole (the holder's part damaged, set aside): no image,
        a failure of `report` (`row.unheld_blob`'s words), which `compress` encodes again. The
        index of holders is read only where a row shares a blob."""
        shared = pc.fill_null(table["shared_blob"], False)
        if not pc.any(shared).as_py():
            return pa.array(np.zeros(table.num_rows, dtype=bool))
        wanted, sha256 = digests(table["blob_sha256"])
        found = np.zeros(table.num_rows, dtype=bool)
        found[sha256] = np.isin(wanted, self._holder_index()[0])
        return pc.and_(shared, pa.array(~found))

    def notes(self, files: list[str] | None = None, dated: bool = False) -> pa.Table:
        """The latest note of each (path, source hash) in the times files (`TIMES_PREFIX`; `files`,
        else this archive's): a table of `DONE_KEPT`, with `written_at` where `dated`. A times file
        that does not read is passed over (no note is better than a wrong one: its sources are
        hashed again)."""
        schema = _DONE_SCHEMA.append(SCHEMA.field("written_at"))
        notes = [schema.empty_table()]
        for path in self.times_files if files is None else files:
            try:
                table = pq.ParquetFile(storage.open_input(self.fs, path), page_checksum_verification=True).read(
                    columns=TIMES_COLUMNS)
                notes.append(table.cast(schema))
            except Exception:  # damaged, foreign
                continue
        notes = pa.concat_tables(notes)
        notes = notes.take(pc.sort_indices(notes, [("written_at", "descending")]))
        keys = pc.binary_join_element_wise(notes["path"], notes["source_hash"], pa.scalar("\n", pa.large_string()))
        keys = keys.combine_chunks()
        first = pc.index_in(keys, value_set=keys)  # each (path, hash): its latest note
        latest = notes.filter(pc.equal(first, pa.array(np.arange(notes.num_rows), pa.int32())))
        return (latest if dated else latest.drop_columns(["written_at"])).combine_chunks()

    def fold_times(self, more: list[str] = ()) -> int:
        """Write the latest notes of this archive's times files (and of `more`, written since it
        was listed) as one times file and delete them: what `compress` does once there are
        `TIMES_FOLD`. The number of files folded. Interrupted between the writing and the
        deletions, a note is in two files, which say the same; a file that does not read is
        deleted with its notes, as they were passed over."""
        files = [*self.times_files, *more]
        write_times(self.fs, self.root, self.notes(files, dated=True))
        return self.delete_times(files)

    def delete_times(self, files: list[str] | None = None) -> int:
        """Delete times files (`files`, else this archive's as listed) whose notes are kept
        elsewhere: in one times file (`fold_times`), in the rows (`compact`). The number deleted."""
        files = self.times_files if files is None else files
        for path in files:
            storage.delete(self.fs, path)
        return len(files)

    def _noted(self, done: pa.Table) -> pa.Table:
        """`done` with the size and time of the latest note of a path's current hash (`notes`)."""
        notes = self.notes()
        if not notes.num_rows or not done.num_rows:
            return done
        joined = done.join(notes, keys=["path", "source_hash"], join_type="left outer", right_suffix=" noted",
                           use_threads=False)
        return pa.table({"path": joined["path"], "source_hash": joined["source_hash"],
                         **{c: pc.coalesce(joined[c + " noted"], joined[c]) for c in ("source_bytes", "source_mtime")},
                         "alike": joined["alike"], "source": joined["source"]}, schema=done.schema).combine_chunks()

    @staticmethod
    def empty_done() -> pa.Table:
        """`done` of an archive without images."""
        return _DONE_SCHEMA.append(pa.field("alike", pa.bool_())).append(pa.field("source", pa.large_string())) \
            .empty_table()


# `notes`' table; `done`'s without `alike`
_DONE_SCHEMA = pa.schema([pa.field(f.name, pa.large_string() if f.type == pa.string() else f.type)
                          for f in schema_of(DONE_KEPT)])


LOCK_NAME = ".lock"
# what a writer of parts and times files leaves behind when killed where the file system has no
# O_TMPFILE (`storage.NewFile`; anywhere until session 55): the hidden name of a part or times file
_TEMP_PART = re.compile(re.escape(storage.TEMP_PREFIX) + r"[0-9a-f]{12}-(?:" + re.escape(PART_PREFIX) + "|"
                        + re.escape(TIMES_PREFIX) + r")[0-9a-f]{32}" + re.escape(PART_SUFFIX))


def check_writable(fs, root: str, location: str):
    """Refuse, worded, an archive folder that cannot be written in or made (a read-only file
    system, no permission: `storage.why_unwritable`), before any work: taking the lock and
    `compress --dry-run` ask. An object store's is known only by writing."""
    why = storage.why_unwritable(fs, root)
    if why:
        raise OSError(errno.EACCES, f"the archive cannot be written: {why}", location)


class ArchiveBusy(RuntimeError):
    """Another run is writing the archive."""


class ArchiveLock:
    """One writer per archive: `compress` and `compact` hold this while they run.

    Local archives: the file `ARCHIVE/.lock` holds the holder's pid, host, command and start
    time, and is locked with flock(2) for as long as the holder lives; the kernel releases
    the lock when the process ends, however (kill -9 included), so a lock never goes stale.
    Taking it, a run removes the temporary part and times files (`.tmp-*-part-*.parquet`,
    `.tmp-*-times-*.parquet`) that a killed writer of this archive left behind where the file
    system has no O_TMPFILE (elsewhere they have no name: `storage.NewFile`): no one else can be
    writing them. A folder that taking it made is removed on leaving where it holds
    nothing but the lock (a run refused at set-up: until session 57 it left an "archive" that
    every reader called one without parts), and where taking it fails (a signal meanwhile: until
    session 64 left).

    Object stores have no such lock (pyarrow.fs cannot create an object exclusively): there
    nothing is locked and no temporary object is removed; run one writer at a time.
    """

    def __init__(self, archive, command: str = "compress"):
        self.location, self.command = str(archive), command
        self.fs, self.root = storage.resolve(archive)
        self.path = f"{self.root}/{LOCK_NAME}"
        self.removed: list[str] = []  # temporary parts of killed runs, removed on taking the lock
        self.made = False  # whether taking the lock made the archive's folder
        self._fd = None

    def __enter__(self):
        if storage.is_local(self.fs):
            self._take()
        else:  # no lock to take; whether its bucket is there is known before any work
            check_writable(self.fs, self.root, self.location)
        return self

    @staticmethod
    def holder(fs, root: str) -> str | None:
        """Who holds the lock of the local archive folder `root` (`_holder_of`), or None where no
        one does (or it is no local folder)."""
        if not storage.is_local(fs):
            return None
        try:
            fd = os.open(f"{root}/{LOCK_NAME}", os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        except BlockingIOError:
            return _holder_of(fd)
        except OSError:
            return None
        finally:
            os.close(fd)

    def __exit__(self, *exc):
        self._release()
        return False

    def _release(self):
        """Unlock; a folder this run made that holds nothing but the lock goes too (a run that wrote
        nothing: refused at set-up, or stopped by a signal while it took the lock)."""
        if self.made:
            with contextlib.suppress(OSError):
                if self._fd is not None and os.listdir(self.root) == [LOCK_NAME]:
                    os.unlink(self.path)
                os.rmdir(self.root)  # only where empty: never a folder another run has written into
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def _take(self):
        if os.path.exists(self.root) and not os.path.isdir(self.root):
            raise NotADirectoryError(f"the archive {self.location} is {storage.described(self.fs, self.root)}, "
                                     f"not a folder")
        check_writable(self.fs, self.root, self.location)
        self.made = not os.path.exists(self.root)
        try:
            self._lock()
        except BaseException:  # refused, or a signal on the way: the folder it made was left until session 64
            self._release()
            raise
        for name in os.listdir(self.root):
            if _TEMP_PART.fullmatch(name):
                storage.discard(self.fs, f"{self.root}/{name}")
                self.removed.append(name)

    def _lock(self):
        """Make the folder, take its lock, write who holds it (`_holder_of`)."""
        try:
            os.makedirs(self.root, exist_ok=True)
        except OSError as e:  # what the check cannot see (root writing under /proc)
            raise OSError(e.errno, f"cannot make the archive folder: {e.strerror}", self.location) from None
        self._fd = fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)  # `_release` closes it, however
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._fd = None  # not ours: `_release` must not remove the holder's lock file
            try:
                holder = _holder_of(fd)
            finally:
                os.close(fd)
            raise ArchiveBusy(f"the archive {self.location} is being written by {holder}: wait for it to end "
                              f"(the lock {self.path} is released when it exits or is killed)") from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "command": self.command,
                                      "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
                                     ).encode(), 0)
        except OSError as e:  # a full disk: said with the file, before any work
            raise OSError(e.errno, f"cannot write the archive's lock file: {e.strerror}", self.path) from None


def _holder_of(fd: int) -> str:
    """The holder a lock file names, in words: "compress (pid N on HOST, since TIME)"."""
    try:
        h = json.loads(os.pread(fd, 4096, 0).decode("utf-8", "replace"))
        return f"{h['command']} (pid {h['pid']} on {h['host']}, since {h['started']})"
    except (ValueError, KeyError, TypeError, OSError):
        return "another process"


_NEVER = dt.datetime.min.replace(tzinfo=dt.timezone.utc)


def _type_family(t: pa.DataType) -> str:
    """What a column holds, whatever its width: a part is refused only when this differs."""
    for family, test in (("integer", pa.types.is_integer), ("float", pa.types.is_floating),
                         ("string", lambda t: pa.types.is_string(t) or pa.types.is_large_string(t)),
                         ("binary", lambda t: pa.types.is_binary(t) or pa.types.is_large_binary(t)),
                         ("timestamp", pa.types.is_timestamp)):
        if test(t):
            return family
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return f"list of {_type_family(t.value_type)}"
    return str(t)


# what a failure of the object store or the system says (credentials, network, permissions: its
# images are not to be encoded again); pyarrow's errors about a Parquet file's bytes say none of it
# (thrift, zstd, CRC, page headers, encodings, types: too many to list, a damaged footer's above all)
_STORE_WORDS = ("aws error", "google", "gcs", "azure", "curl", "http", "connect", "network",
                "timed out", "timeout", "credential", "access denied", "permission", "throttl", "unavailable")


def _runs(file: pq.ParquetFile, groups: list[tuple[int, range]], most: int):
    """`groups` (row group, its rows) in runs of consecutive row groups holding at most `most`
    bytes together (each group's whole size, uncompressed: a bound on what a reading of some of
    its columns holds), each read at once (`Archive._run_batches`)."""
    run, size = [], 0
    for group, rows in groups:
        bytes_ = file.metadata.row_group(group).total_byte_size
        if run and (group != run[-1][0] + 1 or size + bytes_ > most):
            yield run
            run, size = [], 0
        run.append((group, rows))
        size += bytes_
    if run:
        yield run


# coded streams do not compress: a row group's blobs that its footer says grow more than this on
# reading (plus a MiB) are no streams (a 22 KB part of one 300 MB blob of zeros took 2 GB to read
# until session 63): the group is left out unread
INFLATION = 16


def _inflated(group: pq.RowGroupMetaData, columns: list[str]) -> str | None:
    """Why a row group's columns among `columns`, read, would hold what no rows of rgbatch's do,
    from its footer's sizes: blobs (coded streams) that compress more than INFLATION times, or
    metadata of more than MAX_METADATA_BYTES a row (a 150 MiB XMP cell of zeros, 17 KB on disk,
    took 1 GB to read until session 63's review); or None."""
    from .imageio import MAX_METADATA_BYTES

    for i in range(group.num_columns):
        chunk = group.column(i)
        name, size, stored = chunk.path_in_schema, chunk.total_uncompressed_size, chunk.total_compressed_size
        if name not in columns:
            continue
        if name == "blob" and size > INFLATION * stored + (1 << 20):
            return f"its blobs would take {size:,} bytes from {stored:,} in the file: coded streams do not compress so"
        if name in DESCRIPTIONS and size > group.num_rows * MAX_METADATA_BYTES + (1 << 20):
            return f"its {name} column would take {size:,} bytes, more than {MAX_METADATA_BYTES:,} a row"
    return None


def _damage(error: Exception) -> str | None:
    """`error` in one line where it says a part's bytes are damaged, else None: an OSError with an
    errno (the system's) or in a store's words is no damage."""
    text = " ".join(str(error).split())
    if isinstance(error, OSError) and (error.errno is not None or any(w in text.lower() for w in _STORE_WORDS)):
        return None
    return text


def sorted_by_path(tables: list[pa.Table], schema: pa.Schema) -> pa.Table:
    """`tables` (of `schema`; none: an empty table) as one, sorted by `path` (nulls last), a
    column at a time. The list is emptied, so that each given column is freed as it is sorted
    where nothing else holds it: not two whole tables at once."""
    table = pa.concat_tables([schema.empty_table(), *tables])
    tables.clear()
    order, ordered = pc.sort_indices(table["path"]), []
    for name in schema.names:
        ordered.append(table[name].take(order))
        table = table.drop_columns([name])
    return pa.Table.from_arrays(ordered, schema=schema)


def split_damaged(table: pa.Table) -> tuple[pa.Table, list[tuple[str | None, str]]]:
    """(the table without its damaged ok rows, [(path, why)] of those rows; `Row.problem`). Only
    the rows `_suspects` finds are read into Python, so that an archive of a million rows is
    checked in seconds and in little memory."""
    suspects = np.flatnonzero(_suspects(table))
    maybe = table.take(suspects)
    problems = [row.problem(table.column_names) for row in Row.from_arrow(maybe)]
    paths = maybe.column("path").to_pylist() if "path" in maybe.column_names else [None] * maybe.num_rows
    damaged = [(p, why) for p, why in zip(paths, problems) if why]
    keep = np.ones(table.num_rows, dtype=bool)
    keep[suspects[[why is not None for why in problems]]] = False
    return (table.filter(pa.array(keep)) if damaged else table), damaged


def _suspects(table: pa.Table) -> np.ndarray:
    """Which rows `Row.problem` may find damaged, column by column in arrow: ok rows with a null,
    empty or non-positive cell among those it checks, or a per-depth list of another length
    than the stored depth or holding a null. More than it finds, never fewer: it decides."""
    found = np.zeros(table.num_rows, dtype=bool)
    if "status" not in table.column_names:
        return found  # no row is ok
    start = 0
    for batch in table.to_batches():
        column = {name: batch.column(name) for name in batch.schema.names}
        bad = np.full(batch.num_rows, "path" not in column)  # every ok row then lacks its path
        for name in ("path", "model_id", "blob"):
            if name in column:
                bad |= pc.fill_null(pc.equal(pc.binary_length(column[name]), 0), True).to_numpy(zero_copy_only=False)
        for name in ("width", "height", "iterations"):
            if name in column:
                bad |= pc.fill_null(pc.less(column[name], 1), True).to_numpy(zero_copy_only=False)
        for name in PER_DEPTH:
            if name in column and "iterations" in column:
                values = column[name]
                length = pc.list_value_length(values)
                other = pc.not_equal(length, column["iterations"])
                if name != "bytes":  # null or empty: not measured (--no-measure)
                    other = pc.and_(other, pc.not_equal(length, 0))
                bad |= pc.fill_null(other, name == "bytes").to_numpy(zero_copy_only=False)
                holes = pc.filter(pc.list_parent_indices(values), pc.is_null(pc.list_flatten(values)))
                bad[holes.to_numpy(zero_copy_only=False)] = True
        ok = pc.fill_null(pc.equal(column["status"], OK), False).to_numpy(zero_copy_only=False)
        found[start:start + batch.num_rows] = ok & bad
        start += batch.num_rows
    return found
