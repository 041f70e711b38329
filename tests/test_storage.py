"""Local paths and URIs, reading bytes, listing files, atomic writes."""

from __future__ import annotations

import os

import pyarrow.fs as pafs
import pytest

from rgbatch import storage


def touch(path, data=b"x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_resolve_local_paths_and_uris(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fs, path = storage.resolve("archive")
    assert isinstance(fs, pafs.LocalFileSystem) and path == str(tmp_path / "archive")
    fs, path = storage.resolve(f"file://{tmp_path}/archive")
    assert isinstance(fs, pafs.LocalFileSystem) and path == str(tmp_path / "archive")
    assert storage.uri(fs, path) == path
    with pytest.raises(ValueError, match="cannot open nosuch://x"):
        storage.resolve("nosuch://x")


def test_atomic_write_leaves_the_file_or_nothing(tmp_path):
    fs, root = storage.resolve(tmp_path)
    storage.write_atomic(fs, f"{root}/deep/a.bin", b"complete")
    assert (tmp_path / "deep/a.bin").read_bytes() == b"complete"

    with pytest.raises(RuntimeError):
        with storage.open_atomic(fs, f"{root}/deep/b.bin") as stream:
            stream.write(b"half")
            assert os.listdir(tmp_path / "deep") == ["a.bin"]  # no name at all so far (O_TMPFILE)
            raise RuntimeError("interrupted")
    assert sorted(os.listdir(tmp_path / "deep")) == ["a.bin"]  # no target, no temporary


def test_list_files_skips_hidden_files_and_folders(tmp_path):
    for name in ("a.png", "sub/b.png", ".hidden.png", ".git/c.png", "sub/.tmp-x-d.png"):
        touch(tmp_path / name)
    fs, root = storage.resolve(tmp_path)
    assert storage.list_files(fs, root) == [f"{root}/a.png", f"{root}/sub/b.png"]


def test_kind_says_what_a_path_is_on_any_file_system(tmp_path):
    touch(tmp_path / "a.png")
    (tmp_path / "dangling").symlink_to(tmp_path / "gone")
    local, root = storage.resolve(tmp_path)
    # a file system that is not the local one (as an object store is) goes by pyarrow's file info
    remote = pafs.SubTreeFileSystem(str(tmp_path), pafs.LocalFileSystem())
    assert [storage.kind(local, f"{root}/{p}") for p in ("a.png", "", "gone", "dangling")] == [
        "file", "folder", "missing", "a dangling symbolic link"]
    assert [storage.kind(remote, p) for p in ("a.png", "", "gone")] == ["file", "folder", "missing"]


def test_why_unwritable_says_why_a_folder_cannot_be_written_or_made(tmp_path, monkeypatch):
    """The nearest existing folder above a missing one is asked; a file in the way, a read-only
    file system and no permission are said; an object store's is not known without writing."""
    touch(tmp_path / "a-file")
    local, root = storage.resolve(tmp_path)
    assert storage.why_unwritable(local, f"{root}/new/deeper") is None
    assert storage.why_unwritable(local, f"{root}/a-file/arc") == f"{root}/a-file is a file, not a folder"
    (tmp_path / "fifo").symlink_to(tmp_path / "gone")
    assert "dangling" in storage.why_unwritable(local, f"{root}/fifo/arc")
    remote = pafs.SubTreeFileSystem(str(tmp_path), pafs.LocalFileSystem())
    assert storage.why_unwritable(remote, "a-file/arc") is None
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # tests run as root, whom permissions never stop
    assert storage.why_unwritable(local, f"{root}/new") == f"{root} is not writable (permission denied)"


def test_file_stat_regular_refuses_what_reading_refuses(tmp_path):
    os.mkfifo(tmp_path / "pipe.png")
    local, root = storage.resolve(tmp_path)
    assert storage.file_stat(local, f"{root}/pipe.png")[0] == 0  # a FIFO has a size and a time
    with pytest.raises(OSError, match="not a regular file"):
        storage.file_stat(local, f"{root}/pipe.png", regular=True)


def test_reading_what_is_no_regular_file_says_what_it_is(tmp_path):
    """A socket said "No such device or address" (it cannot be opened), a folder "(folder)", until
    session 62."""
    import socket

    local, root = storage.resolve(tmp_path)
    os.mkfifo(tmp_path / "pipe.png")
    (tmp_path / "folder.png").mkdir()
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(tmp_path / "socket.png"))
        for name, kind in (("pipe.png", "a FIFO"), ("folder.png", "a folder"), ("socket.png", "a socket")):
            with pytest.raises(ValueError) as refused:
                storage.read_bytes(local, f"{root}/{name}")
            assert str(refused.value) == f"not a regular file ({kind}): not read"


def test_names_that_are_not_utf8_are_escaped_and_refused_as_paths(tmp_path):
    """A POSIX name may hold bytes that are not UTF-8 (Python: lone surrogates); pyarrow's paths
    and a manifest's strings cannot: the name is shown with \\xNN escapes and refused clearly."""
    bad = os.fsdecode(b"caf\xe9.png")
    assert storage.utf8_name("café/a.png") == "café/a.png"
    assert storage.utf8_name(bad) == "caf\\xe9.png"
    assert storage.utf8_name("\ud800x") == "\\ud800x"  # no file system gives it; still text
    with pytest.raises(ValueError, match=r"caf\\xe9.png: the name is not valid UTF-8"):
        storage.resolve(tmp_path / bad)


def test_read_bytes_reads_at_most_max_bytes(tmp_path, monkeypatch):
    """A file over `max_bytes` is FileTooBig: a local one by its size, unread (a sparse file of
    1 TiB costs nothing here); one that grew after its size was asked, or a store's, once
    `max_bytes` + 1 bytes are read, never more."""
    fs = pafs.LocalFileSystem()
    (tmp_path / "small").write_bytes(b"x" * 100)
    assert storage.read_bytes(fs, str(tmp_path / "small"), 100) == b"x" * 100
    with open(tmp_path / "huge", "wb") as f:
        f.truncate(1 << 40)
    for path, limit in ((tmp_path / "small", 99), (tmp_path / "huge", 1 << 30)):
        with pytest.raises(storage.FileTooBig, match=f"it holds more than {limit:,} bytes"):
            storage.read_bytes(fs, str(path), limit)
    sizes = []
    stat = os.fstat

    def smaller(fd):  # the size asked before reading, then the file grows
        status = stat(fd)
        sizes.append(status.st_size)
        return os.stat_result((status.st_mode, *status[1:6], 10, *status[7:]))

    monkeypatch.setattr(os, "fstat", smaller)
    with pytest.raises(storage.FileTooBig):
        storage.read_bytes(fs, str(tmp_path / "small"), 50)
    assert sizes == [100]
    monkeypatch.undo()
    with pytest.raises(storage.FileTooBig):  # a store's stream (no size asked): read up to the limit and one byte
        storage.read_bytes(pafs.SubTreeFileSystem(str(tmp_path), fs), "small", 99)


def test_read_bytes_within_gives_up_on_a_read_that_does_not_end(tmp_path, monkeypatch):
    """`read_bytes_within`: a read's bytes or its own error; one still running after the limit
    (a store that stopped answering) is ReadTimeout, the caller going on without it."""
    import threading
    import time

    fs = pafs.LocalFileSystem()
    touch(tmp_path / "a", b"abc")
    assert storage.read_bytes_within(5, fs, str(tmp_path / "a")) == b"abc"
    with pytest.raises(FileNotFoundError):
        storage.read_bytes_within(5, fs, str(tmp_path / "gone"))
    with pytest.raises(storage.FileTooBig):
        storage.read_bytes_within(5, fs, str(tmp_path / "a"), 2)
    answered, read = threading.Event(), storage.read_bytes
    monkeypatch.setattr(storage, "read_bytes", lambda *a: answered.wait() and read(*a))  # a store that hangs
    start = time.monotonic()
    with pytest.raises(storage.ReadTimeout, match="reading took more than 0.2 s: given up"):
        storage.read_bytes_within(0.2, fs, str(tmp_path / "a"))
    assert time.monotonic() - start < 5
    stuck = [t for t in threading.enumerate() if t.name == f"read {tmp_path / 'a'}"]
    assert len(stuck) == 1 and stuck[0].daemon  # left to itself: the process may exit without it
    answered.set()
    stuck[0].join(5)
    assert not stuck[0].is_alive()
    for no_limit in (0, float("inf")):  # read in this thread
        assert storage.read_bytes_within(no_limit, fs, str(tmp_path / "a")) == b"abc"


def test_read_bytes_takes_memory_for_the_bytes_there_are_not_the_limit(tmp_path, monkeypatch):
    """A read of `max_bytes` allocates them all before reading (Python's and pyarrow's): until
    session 53 a --max-pixels of 10^11 (1.6 TB of `max_source_bytes`) made every read a
    MemoryError, 10^20 an OverflowError. Now a file of known size is read at once, a stream of
    unknown size READ_CHUNK at a time, whatever the limit; a file that grows while it is read is
    read on past its size, up to the limit."""
    fs = pafs.LocalFileSystem()
    data = bytes(range(256)) * 1000
    (tmp_path / "a").write_bytes(data)
    store = pafs.SubTreeFileSystem(str(tmp_path), fs)
    monkeypatch.setattr(storage, "READ_CHUNK", 1000)  # several chunks from the store
    for limit in (len(data), 16 * 10**20, None):
        assert storage.read_bytes(fs, str(tmp_path / "a"), limit) == data
        assert storage.read_bytes(store, "a", limit) == data
    with pytest.raises(storage.FileTooBig):
        storage.read_bytes(store, "a", len(data) - 1)
    stat = os.fstat
    monkeypatch.setattr(os, "fstat", lambda fd: os.stat_result((*stat(fd)[:6], 10, *stat(fd)[7:])))
    assert storage.read_bytes(fs, str(tmp_path / "a"), 10**20) == data  # "grown" past its size asked


def test_a_rename_never_puts_a_file_in_place_of_a_fifo_or_device(tmp_path):
    """Every complete file rgbatch writes is renamed onto its name (`publish`, `replace_file`:
    weight files, checkpoints, archive parts); until session 53 a FIFO or device there was
    replaced (as root, `export --out /dev/null` replaced the system's /dev/null). Now it is
    refused, the temporary file deleted; a file or a dangling link there is still replaced."""
    import stat

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    (tmp_path / "tmp").write_bytes(b"new")
    with pytest.raises(storage.NotWritten, match="a FIFO is there: not replaced by a file"):
        storage.replace_file(tmp_path / "tmp", fifo)
    assert stat.S_ISFIFO(fifo.lstat().st_mode) and not (tmp_path / "tmp").exists()
    with pytest.raises(storage.NotWritten):
        storage.write_atomic(pafs.LocalFileSystem(), str(fifo), b"new")
    assert stat.S_ISFIFO(fifo.lstat().st_mode) and sorted(p.name for p in tmp_path.iterdir()) == ["fifo"]
    os.symlink(tmp_path / "nowhere", tmp_path / "dangling")
    (tmp_path / "file").write_bytes(b"old")
    for name in ("file", "dangling"):
        (tmp_path / "tmp").write_bytes(b"new")
        storage.replace_file(tmp_path / "tmp", tmp_path / name)
        assert (tmp_path / name).read_bytes() == b"new" and not (tmp_path / name).is_symlink()


def test_a_file_written_has_no_name_until_whole(tmp_path, monkeypatch):
    """`write_new` writes a file without a name (O_TMPFILE) and links it when whole, so a process
    killed while writing leaves nothing behind (a killed restore left a hidden temporary file per
    image it was writing, until session 54); where the file system has no O_TMPFILE, a hidden
    temporary name as before, removed whatever happens."""
    fs = pafs.LocalFileSystem()
    seen, link = [], os.link

    def linking(src, dst, *args, **kwargs):
        seen.append(sorted(os.listdir(tmp_path / "out")))
        return link(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "link", linking)
    storage.write_new(fs, str(tmp_path / "out"), "a.png", b"a")
    storage.write_new(fs, str(tmp_path / "out"), "a.png", b"b", overwrite=True)
    assert seen[0] == [] and (tmp_path / "out" / "a.png").read_bytes() == b"b"
    with pytest.raises(storage.NotWritten, match="already there"):
        storage.write_new(fs, str(tmp_path / "out"), "a.png", b"c")
    assert os.listdir(tmp_path / "out") == ["a.png"]
    monkeypatch.delattr(os, "O_TMPFILE")  # a system without: a hidden name while writing
    seen.clear()
    storage.write_new(fs, str(tmp_path / "out"), "b.png", b"d")
    assert [name.startswith(storage.TEMP_PREFIX) for name in seen[0]] == [True, False]
    assert sorted(os.listdir(tmp_path / "out")) == ["a.png", "b.png"] and (tmp_path / "out" / "b.png").read_bytes() == b"d"


KILLED_WHILE_WRITING = """
import os, signal, sys
import pyarrow.fs as pafs
from rgbatch import storage
folder = sys.argv[1]
new = storage.NewFile.replacing(folder + "/checkpoint.pt")
new.file.write(b"half a checkpoint")
output = storage.AtomicOutput(pafs.LocalFileSystem(), folder + "/part-x.parquet")
output.stream.write(b"half a part")
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.parametrize("tmpfile", [True, False])
def test_a_process_killed_while_writing_leaves_the_old_file_and_nothing_else(tmp_path, tmpfile):
    """Checkpoints, weights, packs (`NewFile`) and archive parts (`AtomicOutput`) have no name
    until whole since session 55: a killed `train` left `<checkpoint>.tmp` (tens of MB) and a
    killed `compress` its hidden part until the next run took the archive's lock. Where the
    system has no O_TMPFILE, a hidden name as before."""
    import subprocess
    import sys

    (tmp_path / "checkpoint.pt").write_bytes(b"the last whole checkpoint")
    code = KILLED_WHILE_WRITING if tmpfile else "import os\ndel os.O_TMPFILE\n" + KILLED_WHILE_WRITING
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True)
    assert done.returncode == -9, done.stderr
    left = sorted(p.name for p in tmp_path.iterdir())
    if tmpfile:
        assert left == ["checkpoint.pt"]
    else:  # what the archive's next writer (`ArchiveLock`) and the user see: hidden names
        hidden = [name for name in left if name != "checkpoint.pt"]
        assert len(hidden) == 2 and all(name.startswith(storage.TEMP_PREFIX) for name in hidden)
    assert (tmp_path / "checkpoint.pt").read_bytes() == b"the last whole checkpoint"


@pytest.mark.parametrize("tmpfile", [True, False])
def test_a_new_file_replaces_a_file_when_whole_and_never_a_fifo(tmp_path, monkeypatch, tmpfile):
    if not tmpfile:
        monkeypatch.delattr(os, "O_TMPFILE")
    target = tmp_path / "sub" / "weights.safetensors"
    with storage.NewFile.replacing(target) as f:  # its folder made
        f.write(b"first")
        assert os.listdir(tmp_path / "sub") == ([] if tmpfile else [os.listdir(tmp_path / "sub")[0]])
    assert target.read_bytes() == b"first"
    with pytest.raises(RuntimeError):
        with storage.NewFile.replacing(target) as f:
            f.write(b"half")
            raise RuntimeError("interrupted")
    with storage.NewFile.replacing(target) as f:
        f.write(b"second")
    assert target.read_bytes() == b"second" and os.listdir(tmp_path / "sub") == ["weights.safetensors"]
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask
    target.chmod(0o640)  # a replaced file's permissions are kept, as `cp` keeps them (644 until session 63)
    with storage.NewFile.replacing(target) as f:
        f.write(b"third")
    assert target.stat().st_mode & 0o777 == 0o640
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(storage.NotWritten, match="a FIFO is there: not replaced by a file"):
        storage.NewFile.replacing(tmp_path / "fifo")
    long = "x" * 250  # its hidden name would pass 255 bytes: a shorter one
    with storage.NewFile.replacing(tmp_path / long) as f:
        f.write(b"long")
    assert (tmp_path / long).read_bytes() == b"long"
    assert sorted(os.listdir(tmp_path)) == ["fifo", "sub", long]


def test_what_stops_a_writer_of_many_files_and_what_fails_one_file(tmp_path, monkeypatch):
    """`write_new`'s FolderRefuses (a command writing many files stops: every file would fail)
    against NotWritten (this file's own failure, the others go on): a review's cases."""
    import errno

    fs = pafs.LocalFileSystem()
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(storage.FolderRefuses, match="cannot make the folder"):  # the folder named: no file fits
        storage.write_new(fs, str(tmp_path / "file" / "out"), "a.png", b"x")
    (tmp_path / "out" / "locked").mkdir(parents=True)
    real_open = os.open

    def no_entry(path, flags, *args, **kwargs):
        if path == "locked":
            raise PermissionError(errno.EACCES, "Permission denied")
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", no_entry)  # an existing subfolder that cannot be entered: its own files'
    with pytest.raises(storage.NotWritten, match="cannot open the folder 'locked'") as refused:
        storage.write_new(fs, str(tmp_path / "out"), "locked/a.png", b"x")
    assert not isinstance(refused.value, storage.FolderRefuses)
    monkeypatch.undo()
    (tmp_path / "out" / "b.png").write_bytes(b"old")

    def immutable(*args, **kwargs):
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "replace", immutable)  # the name alone refuses (another's file in a sticky folder)
    with pytest.raises(storage.NotWritten, match="Operation not permitted") as refused:
        storage.write_new(fs, str(tmp_path / "out"), "b.png", b"new", overwrite=True)
    assert not isinstance(refused.value, storage.FolderRefuses) and (tmp_path / "out" / "b.png").read_bytes() == b"old"
