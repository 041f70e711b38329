"""SRC arguments into sources (folders, globs, list files; links, loops, FIFOs), and reading one."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import signal

import pyarrow as pa
import pytest
from PIL import Image

from conftest import smooth_image
from rgbatch import sources as rs
from rgbatch import storage
from rgbatch.row import UNCHANGED, Row


def touch(path, data=b"x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_folder_source_is_recursive_and_keeps_only_image_files(tmp_path):
    for name in ("photos/a.png", "photos/2019/b.JPG", "photos/notes.txt", "photos/2019/c.webp"):
        touch(tmp_path / name)
    root, sources = rs.expand_sources([str(tmp_path / "photos")])
    assert root == str(tmp_path / "photos")
    assert [s.path for s in sources] == ["2019/b.JPG", "2019/c.webp", "a.png"]
    assert sources[0].location == str(tmp_path / "photos/2019/b.JPG")
    assert rs.archive_name(root) == "photos"
    # one source given alone, as a string or a path (until session 57 a string was read as its characters)
    assert rs.expand_sources(str(tmp_path / "photos")) == rs.expand_sources(tmp_path / "photos") == (root, sources)


def test_several_sources_share_their_common_root(tmp_path):
    touch(tmp_path / "photos/2019/a.png")
    touch(tmp_path / "photos/2020/a.png")
    root, sources = rs.expand_sources([str(tmp_path / "photos/2019"), str(tmp_path / "photos/2020"),
                                            str(tmp_path / "photos/2019/a.png")])  # named twice: kept once
    assert root == str(tmp_path / "photos")
    assert [s.path for s in sources] == ["2019/a.png", "2020/a.png"]


def test_glob_and_list_file_sources(tmp_path):
    for name in ("p/x/a.png", "p/y/b.png", "p/y/c.jpg"):
        touch(tmp_path / name)
    root, sources = rs.expand_sources([str(tmp_path / "p/*/*.png")])
    assert root == str(tmp_path / "p") and [s.path for s in sources] == ["x/a.png", "y/b.png"]

    listing = tmp_path / "p/list.txt"
    listing.write_text(f"# chosen images\nx/a.png\n\n{tmp_path}/p/y/c.jpg\n")
    root, sources = rs.expand_sources([str(listing)])
    assert root == str(tmp_path / "p") and [s.path for s in sources] == ["x/a.png", "y/c.jpg"]


def test_sources_that_are_not_there_are_worded_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        rs.expand_sources([str(tmp_path / "missing")])
    with pytest.raises(ValueError, match="no files match"):
        rs.expand_sources([str(tmp_path / "*.png")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no image files"):
        rs.expand_sources([str(tmp_path / "empty")])


def test_read_source_hashes_skips_and_words_errors(tmp_path, rng):
    Image.fromarray(smooth_image(rng, 32, 48)).save(tmp_path / "a.png")
    (tmp_path / "b.png").write_bytes(b"")
    good = rs.Source(str(tmp_path / "a.png"), "a.png")
    row, image = rs.read_source(good, None, 10**8)
    assert row.status is None and image.shape == (32, 48, 3) and (row.width, row.height) == (48, 32)
    assert row.source_hash == hashlib.sha256((tmp_path / "a.png").read_bytes()).hexdigest()
    assert (row.path, row.source, row.mode, row.source_bytes) == ("a.png", good.location, "RGB", len(
        (tmp_path / "a.png").read_bytes()))
    skipped, pixels = rs.read_source(good, row.source_hash, 10**8)  # unchanged since archived: not decoded
    assert skipped.status == UNCHANGED and pixels is None
    row, image = rs.read_source(rs.Source(str(tmp_path / "b.png"), "b.png"), None, 10**8)
    assert (row.status, row.error, image) == ("error", "empty file (0 bytes)", None)
    row, _ = rs.read_source(good, None, max_pixels=100)
    assert row.status == "error" and "decompression-bomb guard" in row.error and row.source_hash


def test_links_loops_fifos_are_listed_once_and_never_opened(tmp_path, rng):
    photos = tmp_path / "photos"
    Image.fromarray(smooth_image(rng, 32, 32)).save(touch(photos / "sub/a.png"))
    (photos / "loop").symlink_to(".")  # ln -s . loop
    (photos / "sub/up").symlink_to("..")
    (photos / "dangling.png").symlink_to(photos / "gone.png")
    os.mkfifo(photos / "fifo.png")
    fs, root = storage.resolve(photos)
    assert storage.list_files(fs, root) == [f"{root}/sub/a.png"]

    _, sources = rs.expand_sources([str(photos)])
    assert [s.path for s in sources] == ["dangling.png", "fifo.png", "sub/a.png"]  # no loop/loop/...
    _, globbed = rs.expand_sources([str(photos / "**/*.png")])
    assert [s.path for s in globbed] == ["dangling.png", "fifo.png", "sub/a.png"]

    signal.alarm(60)  # a FIFO opened for reading would wait for a writer forever
    try:
        errors = {s.path: rs.read_source(s, None, 10**8)[0].error for s in sources[:2]}
        listing = touch(tmp_path / "list.txt", f"{photos}/fifo.png\n{photos}/sub/a.png\n".encode())
        _, listed = rs.expand_sources([str(listing)])
        info, _ = rs.read_source(listed[0], None, 10**8)
        os.mkfifo(tmp_path / "fifo.txt")  # a list file that is a FIFO: refused, not waited on
        with pytest.raises(ValueError, match=r"fifo.txt: not a regular file \(a FIFO\)"):
            rs.expand_sources([str(tmp_path / "fifo.txt")])
    finally:
        signal.alarm(0)
    assert errors == {"dangling.png": "cannot read the file: a dangling symbolic link",
                      "fifo.png": "cannot read the file: not a regular file (a FIFO): not read"}
    assert info.status == "error" and "FIFO" in info.error
    gone, _ = rs.read_source(rs.Source(str(photos / "gone.png"), "gone.png"), None, 10**8)  # listed, then deleted
    assert gone.error == "cannot read the file: No such file or directory"


def test_reading_sources_does_not_import_torch():
    """Read tasks run in light worker processes: rgbatch.sources (and the Row it makes) needs no torch."""
    import subprocess
    import sys

    code = "import sys, rgbatch.sources; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_a_name_that_is_not_utf8_is_an_error_row_of_text(tmp_path, rng):
    photos = tmp_path / "photos"
    Image.fromarray(smooth_image(rng, 32, 32)).save(touch(photos / "a.png"))
    (photos / os.fsdecode(b"b\xff.png")).write_bytes((photos / "a.png").read_bytes())
    _, sources = rs.expand_sources([str(photos)])
    rows = [rs.read_source(s, None, 10**8)[0] for s in sources]
    assert [r.path for r in rows] == ["a.png", "b\\xff.png"]
    assert rows[0].status is None and rows[1].status == "error" and "not valid UTF-8" in rows[1].error
    assert rows[1].source == str(photos / "b\\xff.png")
    assert rows[1].source_hash is None  # never read


def test_names_that_are_not_utf8_clash_with_the_names_they_are_shown_as():
    sources = [rs.Source(f"/p/{name}", name) for name in
               ["a\\xff.png", os.fsdecode(b"a\xff.png"), os.fsdecode(b"b\xff.png"), os.fsdecode(b"c\xff\\xfe.png"),
                os.fsdecode(b"c\xff\xfe.png")]]
    assert rs.name_clashes(sources) == [sources[1], sources[4]]  # the first such form takes the path
    assert rs.name_clashes(sources[2:4]) == []
    assert rs.name_clashes(sources[2:4], archived={"b\\xff.png"}) == [sources[2]]  # an archived image's path


def test_a_list_file_s_lines_end_at_newlines_only(tmp_path, rng):
    """str.splitlines() also cut at U+2028, U+0085...: such names were listed as two (until session 61)."""
    photos = tmp_path / "photos"
    for name in ("a\u2028b.png", "c\x85d.png"):
        Image.fromarray(smooth_image(rng, 32, 32)).save(touch(photos / name))
    listing = touch(tmp_path / "list.txt", "photos/a\u2028b.png\r\nphotos/c\x85d.png\n".encode())
    _, listed = rs.expand_sources([str(listing)])
    assert sorted(s.path for s in listed) == ["a\u2028b.png", "c\x85d.png"]


def test_a_list_file_line_longer_than_any_path_is_refused(tmp_path):
    """A 100 MB line became a failure row of that path, which report took minutes and GBs to print
    (a helper's round, session 63)."""
    listing = touch(tmp_path / "list.txt", b"a.png\n" + b"b" * (rs.PATH_MAX + 1) + b".png\n")
    with pytest.raises(ValueError, match=r"list.txt: line 2 is 4,101 bytes, longer than any path"):
        rs.expand_sources([str(listing)])
    long_comment = touch(tmp_path / "comment.txt", b"# " + b"x" * rs.PATH_MAX + b"\n" + str(listing).encode())
    assert [s.path for s in rs.expand_sources([str(long_comment)])[1]] == ["list.txt"]  # a comment names no file


def test_a_list_file_s_line_is_the_name_as_written_spaces_included(tmp_path, rng):
    """A file named " a.png" was read as "a.png" (every line was stripped, until session 62): another
    image. Surrounding blanks are dropped only where no file has the name as written."""
    photos = tmp_path / "photos"
    for name in (" a.png", "a.png", "b.png"):
        Image.fromarray(smooth_image(rng, 32, 32)).save(touch(photos / name))
    listing = touch(photos / "list.txt", b" a.png\r\n  b.png \r\n\t\n # a comment\n")
    _, listed = rs.expand_sources([str(listing)])
    assert sorted(s.path for s in listed) == [" a.png", "b.png"]
    # a NUL, which no name holds: listed, to fail alone (its stat's ValueError stopped the command)
    listing.write_bytes(b"b.png\n c\0d.png \n")
    _, listed = rs.expand_sources([str(listing)])
    assert sorted(s.path for s in listed) == ["b.png", "c\x00d.png"]


def test_a_list_file_with_a_byte_order_mark_crlf_and_a_name_that_is_not_utf8(tmp_path, rng):
    photos = tmp_path / "photos"
    Image.fromarray(smooth_image(rng, 32, 32)).save(touch(photos / "a.png"))
    (photos / os.fsdecode(b"b\xe9.png")).write_bytes((photos / "a.png").read_bytes())
    listing = touch(tmp_path / "list.txt", b"\xef\xbb\xbfphotos/a.png\r\nphotos/b\xe9.png\r\n")
    _, listed = rs.expand_sources([str(listing)])
    rows = [rs.read_source(s, None, 10**8)[0] for s in listed]
    assert [r.path for r in rows] == ["a.png", "b\\xe9.png"]
    assert rows[0].status is None and "not valid UTF-8" in rows[1].error


def test_an_archive_given_as_the_last_source_is_a_usage_slip_that_names_out(tmp_path, monkeypatch):
    """`compress photos/ out/` for `compress photos/ --out out/`: the message says to pass --out,
    whether out/ is new or an archive already (it holds no images); a missing first source is
    worded as before, and so are an archive given with --out and a glob that matches nothing."""
    from rgbatch.cli import flag
    from rgbatch.options import OptionError
    from rgbatch.pipeline import compress

    touch(tmp_path / "photos/a.png")
    (tmp_path / "old").mkdir()
    touch(tmp_path / "old/part-1.parquet")
    monkeypatch.chdir(tmp_path)
    for last, reason in (("new", "no such file or folder: new"), ("old", "no image files under old")):
        with pytest.raises(OptionError) as e:
            compress(["photos", last])
        assert e.value.worded(flag) == (f"--out not given, and the last source fails: {reason}; if {last} is meant "
                                        f"for the archive, pass it as --out")
    with pytest.raises(FileNotFoundError, match="no such file or folder: missing$"):
        compress(["missing", "photos"])
    with pytest.raises(FileNotFoundError, match="no such file or folder: new$"):
        compress(["photos", "new"], str(tmp_path / "archive"))
    with pytest.raises(ValueError, match=r"^no files match photos/\*\.jpg$"):
        compress(["photos", "photos/*.jpg"])


def test_unchanged_checks_many_archived_sources_in_one_call(tmp_path):
    """A rerun's check (`sources.unchanged`): the same bytes are unchanged; changed bytes, a
    missing file and a folder in a file's place are not (`read_source` then says why)."""
    for name in ("a.png", "b.png", "c.png"):
        (tmp_path / name).write_bytes(name.encode())
    (tmp_path / "d.png").mkdir()
    known = {name: (hashlib.sha256(name.encode()).hexdigest(), None, None)  # no time recorded: hashed
             for name in ("a.png", "b.png", "c.png", "d.png", "e.png")}
    (tmp_path / "b.png").write_bytes(b"changed")
    names = sorted(known)
    same = rs.unchanged([rs.Source(str(tmp_path / n), n) for n in names], pa.table(dict(zip(rs.KNOWN, zip(*(known[n] for n in names))))))
    assert same == [True, False, True, False, False]


def test_a_source_of_the_archived_size_and_time_is_skipped_unread(tmp_path, monkeypatch, rng):
    """`read_source` records a source's modification time where it is RACY_SECONDS older than the
    reading; a rerun's check skips a source of that size and time unread (rsync's test), hashes
    one whose time moved, and with `rehash` every one (the one change the shortcut misses: other
    bytes of the same size written back with the same time)."""
    old, new = tmp_path / "old.png", tmp_path / "new.png"
    for path in (old, new):
        Image.fromarray(smooth_image(rng, 16, 16)).save(path)
    past = 1_700_000_000.25  # a file's time to the microsecond
    os.utime(old, (past, past))
    sources = [rs.Source(str(old), "old.png"), rs.Source(str(new), "new.png")]
    rows = [rs.read_source(source, None, 10**8)[0] for source in sources]
    assert rows[0].source_mtime.timestamp() == past and rows[0].source_bytes == old.stat().st_size
    assert rows[1].source_mtime is None  # written just now: a time that may not change with the bytes
    known = Row.to_arrow(rows).select(rs.KNOWN)
    monkeypatch.setattr(rs, "RACY_SECONDS", 3600)  # new.png's time stays too recent to note, however slow the test
    read = []
    monkeypatch.setattr(rs, "read_bytes", lambda fs, path, *limit: read.append(path) or storage.read_bytes(fs, path, *limit))
    assert rs.unchanged(sources, known) == [True, True] and read == [str(new)]
    assert rs.unchanged(sources, known, rehash=True) == [True, True] and read == [str(new), str(old), str(new)]
    os.utime(old, (past + 1, past + 1))  # touched: hashed again, the same bytes: its size and time now, to note
    now = (old.stat().st_size, rows[0].source_mtime + dt.timedelta(seconds=1))
    assert rs.unchanged(sources[:1], known.slice(0, 1)) == [now]
    assert read[-1] == str(old)
    data = bytearray(old.read_bytes())
    data[-5] ^= 1  # other bytes of the same size, the time put back
    old.write_bytes(bytes(data))
    os.utime(old, (past, past))
    assert rs.unchanged(sources[:1], known.slice(0, 1)) == [True]  # what the shortcut trusts
    assert rs.unchanged(sources[:1], known.slice(0, 1), rehash=True) == [False]
    # a row without its size recorded: the file read at most `max_bytes` (since session 53: all of it)
    unsized = known.slice(1, 1).set_column(1, "source_bytes", pa.array([None], pa.int64()))
    size = new.stat().st_size
    assert rs.unchanged(sources[1:], unsized, max_bytes=size) == [True]
    assert rs.unchanged(sources[1:], unsized, max_bytes=size - 1) == [False]  # read_source refuses it, worded


def test_paths_relative_to_the_root_are_relpaths_own():
    """`_relative`, the listing's fast `posixpath.relpath`, gives relpath's answer on paths
    normal and not (double slashes, dots, a root with a trailing slash, the file system's root,
    an object store's keys)."""
    import itertools
    import posixpath

    paths = ["/a/b/c.png", "/a//b/c.png", "/a/b/../c.png", "/a/./b.png", "/a/b/./", "/a/.hidden/x", "/a/..b/c",
             "/a/b.", "/", "/a/", "/ab/c", "bucket/x/y.png", "bucket/x//y.png", "bucket//z.png", "a"]
    roots = ["/a", "/", "/a/b/", "/a/b", "/ab", "bucket", "bucket/x", "a"]
    for path, root in itertools.product(paths, roots):
        if path.startswith("/") == root.startswith("/"):
            assert rs._relative(path, root) == posixpath.relpath(path, root), (path, root)
