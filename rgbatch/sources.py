"""Source images: what SRC arguments name, and reading one.

    root, found = expand_sources(["~/photos/2019", "~/photos/2020"])   # Source(location, path)
    row, pixels = read_source(found[0], known_hash=None, max_pixels=MAX_PIXELS)

`expand_sources` turns SRC arguments (folders, globs, list files) into `Source`s; `read_source`
reads, hashes and decodes one into the start of its manifest row (in a Ray task: this module does not import torch, so the
processes running reads start light).
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import hashlib
import os
import posixpath
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from .imageio import ImageError, decode_image_and_metadata, encode_alpha, max_source_bytes, too_big_text
from .objectstore import not_found, split_query, with_query, worded
from .row import UNCHANGED, Row
from .storage import (FileTooBig, file_stat, is_local, is_uri, kind, listed_files, read_bytes, resolve, uri, utf8_name,
                      walk_local)

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.fs as pafs  # only storage.py calls pyarrow.fs

GLOB_CHARS = "*?["
LIST_EXTENSIONS = (".txt", ".lst", ".list")  # a SRC file with one of these lists paths
RACY_SECONDS = 2  # a modification time nearer the reading than this is not recorded (`stat_before_reading`)


@dataclass(frozen=True, slots=True)  # slots: a million of them listed hold 264 MB, 30 MB less
class Source:
    """One source image: where to read it, and the path it is known by in the archive."""
    location: str  # local path or URI
    path: str  # relative to the common root of all sources, '/'-separated
    # (size, modification time) as an object store's listing gave them: a rerun's check and a
    # reading ask the store for them no more (`file_stat`); None: asked (local files)
    listed: tuple[int, dt.datetime | None] | None = None


def image_extensions() -> set[str]:
    """File name extensions Pillow can open (lower case, with the dot). A camera's MPO (`.mpo`) is
    opened by the JPEG reader, not by an opener of its own: such files were left out of folders,
    without a word, until session 62 (PDF and Palm are formats Pillow writes only)."""
    extensions = Image.registered_extensions()  # first: it loads the plugins, which fill Image.OPEN
    opened = {*Image.OPEN, *(("MPO",) if "JPEG" in Image.OPEN else ())}
    return {ext for ext, fmt in extensions.items() if fmt in opened}


def _glob_root(pattern: str) -> str:
    """The folder part of a glob before its first wildcard."""
    parts = pattern.split("/")
    fixed = []
    for part in parts[:-1]:
        if any(c in part for c in GLOB_CHARS):
            break
        fixed.append(part)
    return "/".join(fixed) or "/"


def _glob_match(parts: list[str], pattern: list[str]) -> bool:
    """Whether path components match glob components (`*`, `?`, `[...]` within a name; `**`
    any number of folders), as `glob.glob(recursive=True)` matches them."""
    if not pattern:
        return not parts
    if pattern[0] == "**":
        return any(_glob_match(parts[i:], pattern[1:]) for i in range(len(parts) + 1))
    return bool(parts) and fnmatch.fnmatchcase(parts[0], pattern[0]) and _glob_match(parts[1:], pattern[1:])


def _globbed(paths, pattern: str, root: str) -> list[str]:
    """Those of `paths` (under `root`, the glob's fixed folder) that `pattern` matches (`_glob_match`)."""
    wanted = posixpath.relpath(pattern, root).split("/")
    return [p for p in paths if _glob_match(posixpath.relpath(p, root).split("/"), wanted)]


def _glob_local(pattern: str, root: str) -> list[str]:
    """Local files matching a glob, found by `walk_local` (each folder once: `glob.glob` follows
    a link loop such as `ln -s . loop` down 40 levels, exponentially with two loops)."""
    files, skipped = walk_local(root)
    return sorted(_globbed(files + [p for p, _ in skipped if p != root], pattern, root))


def _expand_one(source: str) -> tuple[pafs.FileSystem, str, dict[str, tuple | None]]:
    """(file system, root, {file: (size, time) as an object store's listing gave them, else None})
    of one SRC argument: a folder, a glob, or a list file.

    Local files that are not regular files (dangling symbolic links, FIFOs, sockets,
    devices) are kept in the list: reading them fails with the reason, so each becomes an
    error row instead of vanishing without a word (and none is ever opened for reading)."""
    if any(c in split_query(source)[0] for c in GLOB_CHARS) and not os.path.exists(source):
        fs, pattern = resolve(source)
        root = _glob_root(pattern)
        if is_uri(source):
            # matched as local paths are (until session 57 `*` crossed folders there, and `**/*.jpg`
            # missed the files at the top)
            listed = listed_files(fs, root)
            files = {p: listed[p] for p in _globbed(listed, pattern, root)}
        else:
            files = dict.fromkeys(_glob_local(pattern, root))
        if not files:
            raise ValueError(f"no files match {source}")
        return fs, root, files
    fs, path = resolve(source)
    what = kind(fs, path)
    if what == "folder":
        extensions = image_extensions()
        if is_local(fs):
            files, skipped = walk_local(path)
            files = dict.fromkeys(sorted(files + [p for p, _ in skipped if p != path]))
        else:
            files = listed_files(fs, path)
        files = {p: listed for p, listed in files.items() if posixpath.splitext(p)[1].lower() in extensions}
        if not files:
            raise ValueError(f"no image files under {source}")
        return fs, path, files
    if what == "missing":
        raise not_found(fs, path, f"no such file or folder: {source}")
    if posixpath.splitext(path)[1].lower() not in LIST_EXTENSIONS:
        return fs, posixpath.dirname(path), {path: None}  # a single image
    # a list file: one path per line, relative ones read from the list file's folder
    try:
        # a byte order mark (Windows editors write one) is no part of the first name; bytes that are
        # not UTF-8 stay the file system's (PEP 383), so such a name is found and refused by name
        text = read_bytes(fs, path).decode("utf-8-sig", errors="surrogateescape")
    except ValueError as e:
        raise ValueError(f"{source}: {e}") from None
    # lines end at "\n" (and "\r\n") only: splitlines() also cut names at U+2028, U+0085... (until session 61)
    base = posixpath.dirname(path)
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    named = [(number, line) for number, line in enumerate(lines, start=1)
             if line.strip() and not line.lstrip().startswith("#")]  # not blank, not a comment
    for number, line in named:  # a line of 100 MB became a failure row of that path, which report then
        if len(line) > PATH_MAX and (size := len(line.encode("utf-8", "surrogateescape"))) > PATH_MAX:  # took
            raise ValueError(f"{source}: line {number} is {size:,} bytes, longer than any path ({PATH_MAX:,}): "
                             f"not a list of file names")  # minutes and GBs to print (until session 63)
    files = [_listed(fs, base, line) for _, line in named]
    if any(is_uri(f) for f in files):
        raise ValueError(f"{source}: list files name local paths only (list an object store by its folder URI)")
    if not files:
        raise ValueError(f"{source} lists no files")
    return fs, posixpath.commonpath([posixpath.dirname(f) for f in files]), dict.fromkeys(files)


PATH_MAX = 4096  # Linux's longest path, in bytes (a character is one byte or more)


def _listed(fs: pafs.FileSystem, base: str, line: str) -> str:
    """The path a list file's line names: the line as written (a name may begin or end with a
    space), or, where no file has that name, the line without its surrounding blanks (an editor's
    stray indent or trailing space). Until session 62 every line was stripped: a file named
    " a.png" was read as "a.png", another file or none."""
    def located(name):
        return name if (posixpath.isabs(name) or is_uri(name)) else posixpath.normpath(posixpath.join(base, name))
    stripped = line.strip()
    if stripped == line or is_uri(stripped) or kind(fs, located(line)) != "missing":
        return located(line)
    return located(stripped)


def _expand_each(sources: list[str]):
    """`_expand_one` of each SRC argument; an error says which one failed in its `source`
    attribute (the message's wording aside: `pipeline.compress` words a misplaced archive)."""
    for source in sources:
        try:
            yield _expand_one(str(source))
        except (ValueError, OSError) as e:
            e.source = str(source)
            raise


def expand_sources(sources: list[str]) -> tuple[str, list[Source]]:
    """(common root, sources) of SRC arguments; paths are relative to the common root.

    Several SRC arguments share the root above all of them, so `photos/2019 photos/2020`
    gives the paths `2019/...` and `2020/...`; a file named twice is kept once.
    """
    if isinstance(sources, (str, os.PathLike)):  # one, as a library caller may give it (not its characters)
        sources = [sources]
    if not sources:
        raise ValueError("give at least one source folder, glob or list file")
    expanded = list(_expand_each(sources))
    kinds = {fs.type_name for fs, _, _ in expanded}
    queries = {split_query(str(s))[1] for s in sources}  # a URI's store options: kept on every location
    if len(kinds) > 1 or len(queries) > 1:  # (the query '' was listed among the kinds until session 62)
        where = (sorted(kinds) if len(kinds) > 1
                 else [f"{next(iter(kinds))} with {q or 'no options'}" for q in sorted(queries)])
        raise ValueError(f"all sources must be on one file system, not on {' and '.join(where)}")
    query = queries.pop()
    fs = expanded[0][0]
    root = posixpath.commonpath([r for _, r, _ in expanded]) if len(expanded) > 1 else expanded[0][1]
    seen, found = set(), []
    for _, _, files in expanded:
        for f, listed in files.items():
            if f not in seen:
                seen.add(f)
                found.append(Source(with_query(uri(fs, f), query), _relative(f, root, not is_local(fs)), listed))
    return with_query(uri(fs, root), query), found


def _relative(path: str, root: str, object_key: bool = False) -> str:
    """`posixpath.relpath(path, root)` in a tenth of its time where `path` is already a normal
    path under `root` (a folder's listing: a million sources' paths in 0.3 s instead of 3.3). An
    `object_key` under `root` is taken as it is: a key is a name, not a path (`d/../up.png` was
    archived as `up.png` until session 58; restore refuses such a path as unsafe, by name)."""
    prefix = root if root.endswith("/") else root + "/"
    rest = path[len(prefix):]
    if path.startswith(prefix) and (object_key or (not rest.startswith("/") and posixpath.normpath(rest) == rest)):
        return rest  # a key's `//` too: `src//a.png` was archived as `a.png`, and `src/a.png` lost, until session 62
    return posixpath.relpath(path, root)


NOT_UTF8 = ("its name is not valid UTF-8 (shown with \\xNN escapes): an archive keeps names as UTF-8 text; "
            "rename the file (e.g. with convmv)")


def name_clashes(found: list[Source], archived: set[str] = frozenset()) -> list[Source]:
    """The sources whose name is not UTF-8 and whose `\\xNN` form (`utf8_name`: the path their
    failure row takes) is another source's path, an earlier such source's form, or among
    `archived` (paths of ok rows: another file's, as such a name is never archived). They fail
    without a row, so that a path's row is always its own file's: until session 61 a file named
    `bad\\xff.png` and one named so in bytes gave one row, whichever came back first (the image
    lost on every run), and such a name's failure replaced an archived image's row."""
    valid = {s.path for s in found if utf8_name(s.path) == s.path} | set(archived)
    forms, clashing = set(), []
    for source in found:
        form = utf8_name(source.path)
        if form != source.path:
            if form in valid or form in forms:
                clashing.append(source)
            forms.add(form)
    return clashing


def source_row(source: Source) -> Row:
    """The start of a source's manifest row: its path and location (`storage.utf8_name`)."""
    return Row(utf8_name(source.path), utf8_name(source.location))


def read_source(source: Source, known_hash: str | None, max_pixels: int,
                metadata: bool = True) -> tuple[Row, np.ndarray | None]:
    """(row, pixels) of one source: the `Row` of what reading learned (status None: read, to be
    encoded; with `metadata`, its ICC profile and EXIF: rgbatch.imageio.Metadata), its status
    `UNCHANGED` (its sha256 is `known_hash`: unchanged since archived, so not decoded) or an
    error row with the reason for the user."""
    start = time.perf_counter()
    row = source_row(source)
    if (row.path, row.source) != (source.path, source.location):
        return row.failed(NOT_UTF8), None
    try:
        fs, path = resolve(source.location)
        size, mtime = stat_before_reading(fs, path, source.listed)
        data = read_bytes(fs, path, max_source_bytes(max_pixels))
    except FileNotFoundError as e:
        why = "a dangling symbolic link" if os.path.islink(source.location) else e.strerror or e
        return row.failed(f"cannot read the file: {why}"), None
    except FileTooBig as e:
        return row.failed(too_big_text(e, max_pixels)), None
    except (OSError, ValueError) as e:
        return row.failed(f"cannot read the file: {worded(e)}"), None
    row.source_hash, row.source_bytes = hashlib.sha256(data).hexdigest(), len(data)
    row.source_mtime = mtime if size == len(data) else None
    if row.source_hash == known_hash:
        row.status = UNCHANGED
        return row, None
    try:
        decoded = decode_image_and_metadata(data, max_pixels)
    except ImageError as e:
        row.read_seconds = time.perf_counter() - start
        return row.failed(str(e)), None
    except Exception as e:  # Pillow plugins raise all sorts; the user needs the reason, not a traceback
        return row.failed(f"cannot decode the image: {type(e).__name__}: {e}"), None
    image = decoded.pixels
    row.width, row.height, row.mode = image.shape[1], image.shape[0], decoded.mode
    row.frames = decoded.frames if decoded.frames > 1 else None
    alpha = encode_alpha(decoded.alpha)  # kept whatever `metadata` says: it is part of the picture
    if alpha is not None:
        row.alpha, row.alpha_bytes = alpha or None, len(alpha)  # opaque: 0 bytes, none stored
    if metadata:
        row.icc_profile, row.exif, row.xmp, row.notes = decoded.metadata
    row.read_seconds = time.perf_counter() - start
    return row, image


def stat_before_reading(fs, path: str, listed: tuple | None = None) -> tuple[int | None, dt.datetime | None]:
    """(size, modification time) of a source about to be read (`listed`: as its listing gave
    them), the time None unless it is RACY_SECONDS older than now: a file written again within
    the same tick of its file system's clock (a second, two on FAT) could keep its time with other
    bytes, so such a time vouches for nothing and a rerun hashes the file again (git's "racily
    clean" entries)."""
    try:
        size, mtime = listed or file_stat(fs, path)
    except (OSError, ValueError):  # reading it says why
        return None, None
    now = dt.datetime.now(dt.timezone.utc)
    return size, mtime if mtime is not None and mtime < now - dt.timedelta(seconds=RACY_SECONDS) else None


KNOWN = ("source_hash", "source_bytes", "source_mtime")  # what `unchanged` knows of an archived source


def as_archived(stat: tuple, size: int | None, mtime: dt.datetime | None) -> bool:
    """Whether a source's (size, modification time) now are those recorded when it was archived:
    a rerun then skips it unread (rsync's test; no time recorded: never)."""
    return mtime is not None and stat == (size, mtime)


def unchanged(sources: list[Source], known: pa.Table, rehash: bool = False, max_bytes: int | None = None) -> list:
    """Whether each source is still as archived, `known` a table of its `KNOWN` (sha256, size,
    modification time) of then, a row per source: its size and time are (not read: rsync's
    test; as the object store's listing gave them, or a local file's stat), else its sha256 is
    (read, hashed; every source with `rehash`). A
    rerun's check of many archived sources in one task (a task per source cost 2 ms each, 43 s
    for 20,000 thumbnails). Each answer is False (changed, or it does not read: `read_source`
    then says why), True, or, for one unchanged by its hash whose size or time moved (touched,
    copied without its times), its (size, time) now, where recordable (`stat_before_reading`):
    a note for the next rerun (`PartWriter.write_times`). A source is read at most its archived
    size (more: changed), or `max_bytes` where none was recorded (more: `read_source` refuses it).
    `known` (`Archive.done`'s rows) is read into Python here, in the task, not by the driver."""
    known = zip(*(known[c].to_pylist() for c in KNOWN))

    def same(source: Source, sha256: str, size: int | None, mtime: dt.datetime | None):
        try:
            fs, path = resolve(source.location)
            stat = source.listed or file_stat(fs, path)  # one stat: the check's, and the note's if hashed
            if not rehash and as_archived(stat, size, mtime):
                return True
            now = stat_before_reading(fs, path, stat)
            data = read_bytes(fs, path, max_bytes if size is None else size)  # more: changed (FileTooBig)
        except (OSError, ValueError):
            return False
        if hashlib.sha256(data).hexdigest() != sha256:
            return False
        return now if now[1] is not None and now[0] == len(data) and now != (size, mtime) else True

    return [same(source, *archived) for source, archived in zip(sources, known)]


def archive_name(root: str) -> str:
    """The default archive name of a source root: its last folder name."""
    name = posixpath.basename(split_query(root)[0].rstrip("/").split("://")[-1])
    return name or "archive"
