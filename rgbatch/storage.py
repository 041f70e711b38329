"""Where archives and sources live: local paths or object-store URIs, through pyarrow.fs.

    fs, path = resolve("manifests/kodak")        # a local folder (made absolute)
    fs, path = resolve("s3://bucket/archive")    # any URI pyarrow.fs knows (s3, gs, hdfs, file)

Bytes in and out: `read_bytes` (a local path must be a regular file: never a FIFO or a
device), `list_files` / `walk_local` (symbolic links followed, each folder once), and
atomic writes. Every file rgbatch writes goes through `open_atomic`, `write_new` or (weights,
checkpoints, packs) `NewFile` (a memory map: `replace_file`): on a local disk the bytes go to a
file without a name (O_TMPFILE) in the target's folder, linked onto the target only once
complete, so a reader (or a rerun after a crash) never sees half a file and a killed process
leaves nothing behind; on an object store (and a local file system without O_TMPFILE) to a
hidden temporary name moved onto the target. A FIFO or device at the target is never replaced
by a file: an output file the user names is written into it (`output_file`, `write_output`:
/dev/null, /dev/stdout), any other write refused.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import os
import posixpath
import re
import stat
import threading
import urllib.parse
import uuid

import pyarrow as pa
import pyarrow.fs as pafs

from .objectstore import split_query, with_query
from .options import OptionError


TEMP_PREFIX = ".tmp-"  # temporary files are hidden; listings skip them


def is_uri(location: str) -> bool:
    return "://" in str(location)


def resolve(location) -> tuple[pafs.FileSystem, str]:
    """A local path or a URI -> (file system, path inside it). A URI's path is read as typed, its
    `%XX` escapes decoded (`uri` writes a key's `%`, `#` or space so): see `_typed`."""
    location = str(location)
    if is_uri(location):
        try:
            fs, path = pafs.FileSystem.from_uri(_typed(location))
        except Exception as e:  # pyarrow raises ArrowInvalid / OSError with a readable reason
            raise ValueError(f"cannot open {location}: {e}") from None
        return _with_stall_limit(fs), path
    path = os.path.abspath(os.path.expanduser(location))
    if utf8_name(path) != path:  # pyarrow's file systems take UTF-8 paths only
        raise ValueError(f"{utf8_name(path)}: the name is not valid UTF-8 (shown with \\xNN escapes); "
                         f"rgbatch reads and writes UTF-8 names only: rename it (e.g. with convmv)")
    return pafs.LocalFileSystem(), path


def _typed(location: str) -> str:
    """A URI as pyarrow reads it, of a location as a user types it: in the path after the bucket,
    the characters a URI cannot hold as they are escaped (a space, a non-ASCII letter, `#`, `[`,
    and a `%` that starts no `%XX` escape), the escapes given kept. Until session 62 pyarrow cut the
    path at a `#` (`s3://b/arch#2` wrote the archive `s3://b/arch`, without a word) and refused a
    space or an `é` with its parser's words. A `?` starts the URI's query (its options)."""
    base, query = split_query(location)
    scheme, _, rest = base.partition("://")
    bucket, slash, path = rest.partition("/")
    path = urllib.parse.quote(re.sub(r"%(?![0-9A-Fa-f]{2})", "%25", path), safe="/%:@!$&'()*+,;=~")
    return with_query(f"{scheme}://{bucket}{slash}{path}", query)


# seconds an S3 request may go without a byte moving (pyarrow's `request_timeout`: curl's low-speed
# limit, not a limit on a long transfer) or a connection take to open (`connect_timeout`), after
# which it fails and is retried (three attempts): pyarrow sets none, so that an endpoint which
# accepts the connection and never answers held every command for good, deaf to Ctrl-C and
# SIGTERM (blocked in pyarrow's C++ code; until session 59)
STORE_STALL_SECONDS = 60.0


def _with_stall_limit(fs: pafs.FileSystem) -> pafs.FileSystem:
    """An S3 file system given `STORE_STALL_SECONDS` where its URI set no limit (a URI cannot:
    pyarrow refuses the query); other file systems as they are."""
    if not isinstance(fs, pafs.S3FileSystem):
        return fs
    rebuild, (options,) = fs.__reduce__()  # the URI's options, as pyarrow pickles the file system
    limits = {k: STORE_STALL_SECONDS for k in ("connect_timeout", "request_timeout") if options.get(k, 0) < 0}
    return rebuild({**options, **limits}) if limits else fs


def absolute(location) -> str:
    """A location that names the same file from any working folder (a Ray actor's is not the
    caller's): a local path made absolute, a URI as it is (its query kept)."""
    location = str(location)
    return location if is_uri(location) else os.path.abspath(os.path.expanduser(location))


def utf8_name(name: str) -> str:
    """`name` as UTF-8 text (a manifest's strings, pyarrow's paths) can hold it: a POSIX file name
    may hold bytes that are not UTF-8, which Python reads as lone surrogates (PEP 383); they
    become `\\xNN` escapes. A valid name comes back unchanged."""
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        pass
    try:
        raw = name.encode("utf-8", "surrogateescape")  # the file system's own bytes
    except UnicodeEncodeError:  # a surrogate no file system gave
        return name.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


def uri(fs: pafs.FileSystem, path: str, reached: str = "") -> str:
    """The location string of a path, as `resolve` reads it back: an object's key percent-encoded
    where a URI gives its characters a meaning (until session 58 `pct%41.png` was read back as
    `pctA.png`, `h#x.png` as `h`, both archived with another object's pixels without a word, and a
    space or a non-ASCII letter did not parse), with the query of the location `reached` through
    (the store's options: an endpoint; until session 59 the files `restore`, `encode`, `decode`,
    `report --html` and `compact` named were printed without it)."""
    if is_local(fs):
        return path
    scheme = {"gcs": "gs"}.get(fs.type_name, fs.type_name)
    return with_query(f"{scheme}://{urllib.parse.quote(path, safe='/')}", split_query(reached)[1])


def joined(folder: str, relative: str) -> str:
    """The location of `relative` (a '/'-separated path) under `folder` (a local path or a URI
    without its query): a URI's part percent-encoded as `uri` writes it."""
    return posixpath.join(folder, urllib.parse.quote(relative, safe="/") if is_uri(folder) else relative)


def is_local(fs: pafs.FileSystem) -> bool:
    return isinstance(fs, pafs.LocalFileSystem)


def exists(fs: pafs.FileSystem, path: str) -> bool:
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def is_dir(fs: pafs.FileSystem, path: str) -> bool:
    return fs.get_file_info(path).type == pafs.FileType.Directory


def is_regular_file(fs: pafs.FileSystem, path: str) -> bool:
    """A plain file is there: not a folder, and on a local disk not a symbolic link, a FIFO or a
    device either (reading one of those could hang or leave the folder)."""
    if is_local(fs):
        try:
            return stat.S_ISREG(os.lstat(path).st_mode)
        except OSError:
            return False
    return fs.get_file_info(path).type == pafs.FileType.File


def is_regular_file_below(fs: pafs.FileSystem, root: str, relative: str) -> bool:
    """`is_regular_file` of `root/relative` reached through real folders alone: on a local disk no
    symbolic link below `root` is followed, as `write_new` follows none (restore took a file
    through a linked folder in --out for its own until session 62)."""
    if not is_local(fs):
        return is_regular_file(fs, f"{root}/{relative}")
    path = root
    for folder in relative.split("/")[:-1]:
        path = f"{path}/{folder}"
        try:
            if not stat.S_ISDIR(os.lstat(path).st_mode):
                return False
        except OSError:
            return False
    return is_regular_file(fs, f"{root}/{relative}")


def size(fs: pafs.FileSystem, path: str) -> int:
    return fs.get_file_info(path).size


def file_stat(fs: pafs.FileSystem, path: str, regular: bool = False) -> tuple[int | None, dt.datetime | None]:
    """(size, modification time in UTC, to the microsecond) of a file, symbolic links followed;
    an object store's time is its own (None where it gives none). `regular`: a local path that
    is not a regular file (a FIFO, a device) raises OSError, as reading it would."""
    if is_local(fs):
        info = os.stat(path)
        if regular and not stat.S_ISREG(info.st_mode):
            raise OSError(errno.EINVAL, f"not a regular file ({_article(_kind(info.st_mode))})", path)
        return info.st_size, _utc(info.st_mtime_ns)
    info = fs.get_file_info(path)
    return info.size, _utc(info.mtime_ns)


def why_unwritable(fs: pafs.FileSystem, folder: str) -> str | None:
    """Why a local folder cannot be written in, or made where it is missing (the nearest
    existing folder above it is checked), or None: it can, as far as the system says without
    writing. Of an object store's, only whether its bucket is there is known without writing
    (until session 57 `compress --out` into a missing bucket encoded every image first)."""
    if not is_local(fs):
        from .objectstore import ENDPOINT_HINT

        bucket = folder.strip("/").split("/", 1)[0]
        try:
            missing = bool(bucket) and fs.get_file_info(bucket).type == pafs.FileType.NotFound
        except OSError:  # not allowed to ask (a key that may only put objects): writing will tell
            return None
        return f"no bucket '{bucket}' at this endpoint ({ENDPOINT_HINT})" if missing else None
    path = os.path.abspath(folder)
    while not os.path.lexists(path):
        path = os.path.dirname(path)
    what = local_kind(path)
    if what != "folder":
        return f"{path} is {'a file' if what == 'file' else what}, not a folder"
    if os.statvfs(path).f_flag & os.ST_RDONLY:
        return f"{path} is on a read-only file system"
    if not os.access(path, os.W_OK | os.X_OK):
        return f"{path} is not writable (permission denied)"
    return None


def _utc(ns: int | None) -> dt.datetime | None:
    return None if ns is None else dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(microseconds=ns // 1000)


def open_input(fs: pafs.FileSystem, path: str):
    """A random-access file to read (as Parquet readers want)."""
    return fs.open_input_file(path)


def delete(fs: pafs.FileSystem, path: str):
    fs.delete_file(path)


class FileTooBig(ValueError):
    """A file holding more bytes than its reader allows (`read_bytes`' `max_bytes`)."""

    def __init__(self, max_bytes: int):
        super().__init__(f"it holds more than {max_bytes:,} bytes")
        self.max_bytes = max_bytes


def read_bytes(fs: pafs.FileSystem, path: str, max_bytes: int | None = None) -> bytes:
    """The bytes of a file, at most `max_bytes` of them (more: FileTooBig, a local file's known
    by its size before reading, memory bounded either way). A local path must name a regular file:
    a FIFO, socket or device is refused without waiting on it (opened non-blocking, checked before
    reading)."""
    if not is_local(fs):
        with fs.open_input_stream(path) as f:
            data = _read_at_most(f, max_bytes)
    else:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        except OSError as e:  # a socket cannot be opened: "No such device or address" (until session 62)
            if e.errno != errno.ENXIO:
                raise
            raise ValueError(_not_regular(local_kind(path))) from None
        try:
            status = os.fstat(fd)
            kind = _kind(status.st_mode)
            if kind != "file":
                raise ValueError(_not_regular(kind))
            if max_bytes is not None and status.st_size > max_bytes:
                raise FileTooBig(max_bytes)
            os.set_blocking(fd, True)
            with os.fdopen(os.dup(fd), "rb") as f:
                data = _read_at_most(f, max_bytes, status.st_size)
        finally:
            os.close(fd)
    if max_bytes is not None and len(data) > max_bytes:  # grown since its size was asked, or a store's
        raise FileTooBig(max_bytes)
    return data


# seconds a source's read may take by default (compress's and verify's --read-timeout): an image at
# the pixel limit reads in seconds (89 MP of lossless JPEG XL: 3 s on a 2-core AMD EPYC)
READ_TIMEOUT = 600.0


class ReadTimeout(OSError):
    """A read that did not end within its limit (`read_bytes_within`): a store that stopped answering."""


def read_bytes_within(seconds: float, fs: pafs.FileSystem, path: str, max_bytes: int | None = None) -> bytes:
    """`read_bytes` waited for at most `seconds` (0: no limit), else ReadTimeout. The read runs in
    a daemon thread, which a read past the limit is left to (a thread cannot be stopped, a read
    stuck on a mount cannot even be killed): the caller goes on, and the process may exit without
    it; each such read holds its memory until it ends. For a command's own reads of a few
    sources (`verify`'s sample); a compress's reads are Ray tasks, killed when late."""
    if not seconds or seconds >= threading.TIMEOUT_MAX:  # no limit, or none a wait can take
        return read_bytes(fs, path, max_bytes)
    outcome = []

    def read():
        try:
            outcome.append((read_bytes(fs, path, max_bytes), None))
        except BaseException as e:  # handed to the caller
            outcome.append((None, e))

    reader = threading.Thread(target=read, name=f"read {path}", daemon=True)
    reader.start()
    reader.join(seconds)
    if not outcome:
        raise ReadTimeout(f"reading took more than {seconds:g} s: given up (a store or mount that "
                          f"stopped answering; the limit is --read-timeout)")
    data, error = outcome[0]
    if error is not None:
        raise error
    return data


READ_CHUNK = 1 << 24  # bytes read at a time from a file of unknown size (`_read_at_most`)


def _read_at_most(f, max_bytes: int | None, size: int | None = None) -> bytes:
    """An open file's bytes up to one past `max_bytes` (enough to know it holds more; None: all),
    read at once where its `size` is known, else READ_CHUNK at a time: memory follows the bytes
    there are, not the limit (a read of `max_bytes` allocates them all first: a --max-pixels of
    10^11 made every read a MemoryError, and 10^19 an OverflowError, until session 53)."""
    if max_bytes is None:
        return f.read()
    parts, got = [], 0
    step = READ_CHUNK if size is None else size + 1
    while got <= max_bytes and (part := f.read(min(step, max_bytes + 1 - got))):
        parts.append(part)
        got, step = got + len(part), READ_CHUNK
    return parts[0] if len(parts) == 1 else b"".join(parts)


_KINDS = {stat.S_IFREG: "file", stat.S_IFDIR: "folder", stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket",
          stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device", stat.S_IFLNK: "a symbolic link"}


def _not_regular(kind: str) -> str:
    """Why a local path that is no regular file is not read."""
    return f"not a regular file ({_article(kind)}): not read"


def _article(kind: str) -> str:
    """A `_kind` in a sentence: "a folder", "a FIFO" ("folder" until session 62)."""
    return {"file": "a file", "folder": "a folder"}.get(kind, kind)


def _kind(mode: int) -> str:
    return _KINDS.get(stat.S_IFMT(mode), "not a regular file")


def local_kind(path: str) -> str:
    """What a local path is once symbolic links are followed: "file", "folder", or why it is
    neither ("a FIFO", "a dangling symbolic link", ...)."""
    try:
        return _kind(os.stat(path).st_mode)
    except FileNotFoundError:
        return "a dangling symbolic link" if os.path.islink(path) else "missing"
    except OSError as e:  # a symbolic link loop (ELOOP), no permission...
        return f"unreadable ({e.strerror})"
    except ValueError:  # a NUL in the name (a list file's line): no file has such a name
        return "missing"


def kind(fs: pafs.FileSystem, path: str) -> str:
    """What a path is: "file", "folder", "missing", or for a local path why it is neither (`local_kind`)."""
    if is_local(fs):
        return local_kind(path)
    return {pafs.FileType.Directory: "folder", pafs.FileType.File: "file"}.get(fs.get_file_info(path).type, "missing")


def described(fs: pafs.FileSystem, path: str) -> str:
    """What is at a path, for a message: "a file", "a folder", "a character device", "missing"..."""
    return _article(kind(fs, path))


def walk_local(root: str) -> tuple[list[str], list[tuple[str, str]]]:
    """(regular files, [(path, why skipped)]) under a local folder, sorted; hidden files and
    folders left out. Symbolic links are followed, but each folder is listed once (a link loop
    such as `ln -s . loop` adds nothing); dangling links, FIFOs, sockets and devices are
    returned as skipped, never opened."""
    files, skipped, seen = [], [], set()
    folders = [root]
    while folders:
        folder = folders.pop()
        try:
            info = os.stat(folder)
            entries = list(os.scandir(folder))
        except OSError as e:
            skipped.append((folder, f"folder not readable ({e.strerror})"))
            continue
        if (info.st_dev, info.st_ino) in seen:
            continue
        seen.add((info.st_dev, info.st_ino))
        for entry in entries:
            if entry.name.startswith("."):
                continue
            kind = local_kind(entry.path)
            if kind == "folder":
                folders.append(entry.path)
            elif kind == "file":
                files.append(entry.path)
            else:
                skipped.append((entry.path, kind))
    return sorted(files), sorted(skipped)


def list_files(fs: pafs.FileSystem, root: str, recursive: bool = True) -> list[str]:
    """Paths of the regular files under `root`, sorted; hidden files and folders left out
    (local folders: `walk_local`, whose skipped entries this leaves out)."""
    if recursive and is_local(fs):
        return walk_local(root)[0]
    return list(listed_files(fs, root, recursive))


def listed_files(fs: pafs.FileSystem, root: str, recursive: bool = True) -> dict[str, tuple[int, dt.datetime | None]]:
    """{path: (size, modification time)} of the regular files under `root`, sorted, hidden files
    and folders left out, as one listing gives them (an object store's: no request per file)."""
    found = {}
    for info in fs.get_file_info(pafs.FileSelector(root, recursive=recursive)):
        try:
            path = info.path
        except UnicodeDecodeError:  # a local name that is not UTF-8: no part, and pyarrow opens no such file
            continue
        relative = posixpath.relpath(path, root)
        if info.type == pafs.FileType.File and not any(p.startswith(".") for p in relative.split("/")):
            found[path] = (info.size, _utc(info.mtime_ns))
    return dict(sorted(found.items()))


def temp_name(name: str) -> str:
    """A hidden name for a file being written as `name` in the same folder: `.tmp-<12 hex>-<name>`,
    or `.tmp-<32 hex>` where that would pass a file system's 255 bytes."""
    hidden = f"{TEMP_PREFIX}{uuid.uuid4().hex[:12]}-{name}"
    return hidden if len(hidden.encode("utf-8", "surrogateescape")) <= 255 else f"{TEMP_PREFIX}{uuid.uuid4().hex}"


def temp_path(path: str) -> str:
    """A hidden name beside `path`: an object store's temporary object before `publish`, a JPEG
    pack's folder before it is renamed."""
    head, name = posixpath.split(path)
    return posixpath.join(head, temp_name(name))


def publish(fs: pafs.FileSystem, tmp: str, path: str):
    """Move a complete temporary file onto its name: a rename on local disks (never onto a
    special file: `replace_file`), and object stores publish an object whole."""
    if is_local(fs):
        replace_file(tmp, path)
    else:
        fs.move(tmp, path)


def replace_file(tmp, path):
    """Rename the local file `tmp` onto `path` (`os.replace`), unless something other than a
    file is there once links are followed (a folder, a FIFO, a device such as /dev/null, a
    socket): then `tmp` is deleted and NotWritten raised. Until session 53 a rename put a file in its place: as
    root, `rgbatch export ... --out /dev/null` replaced the system's /dev/null."""
    try:
        _refuse_unreplaceable(path)
        os.replace(tmp, path)
    except BaseException:  # the temporary file never stays behind
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _refuse_unreplaceable(path):
    """NotWritten where something other than a file is at the local `path` once links are
    followed (a folder, a FIFO, a device such as /dev/null, a socket): no file replaces it."""
    what = local_kind(str(path))
    if what not in ("file", "missing", "a dangling symbolic link"):
        raise NotWritten(f"{path}: {what} is there: not replaced by a file")


def discard(fs: pafs.FileSystem, tmp: str):
    with contextlib.suppress(OSError):
        fs.delete_file(tmp)


class NewFile:
    """A local file being written (`file`, binary) that is put at its name only once whole:
    `commit` links it onto `name` in the folder open as `folder` (an fd), or with `overwrite`
    renames it over what is there, so the name holds the old file or the whole new one; `discard`
    drops it. Until then it has no name (O_TMPFILE: a process killed while writing leaves nothing
    behind; a killed `restore` left a hidden temporary file until session 54, found by
    benchmarks/fuzz_kill.py, and a killed `compress` or `train` its part or checkpoint until
    session 55), or where the system or file system has none a hidden one (`temp_name`), removed
    whatever happens but a kill. A context manager too: committed if the block completes.
    Raises the system's OSErrors (FileExistsError: something is at the name, not `overwrite`)."""

    def __init__(self, folder: int, name: str, overwrite: bool, owns_folder: bool = False):
        self.folder, self.name, self.overwrite, self._owns_folder = folder, name, overwrite, owns_folder
        self.tmp = None  # its hidden name, while it has one
        try:
            if not os.path.isdir("/proc/self/fd"):  # what links such a file to a name
                raise OSError(errno.ENOTSUP, "no /proc")
            fd = os.open(".", os.O_WRONLY | os.O_TMPFILE, 0o666, dir_fd=folder)
        except (OSError, AttributeError):  # no O_TMPFILE here (the system, or the file system)
            self.tmp = temp_name(name)
            try:
                fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666, dir_fd=folder)
            except BaseException:
                self.tmp = None
                self.discard()
                raise
        self.file = os.fdopen(fd, "wb")

    @classmethod
    def replacing(cls, path) -> "NewFile":
        """A new file for the local `path` (its folder made), replacing a file there on commit;
        NotWritten at once where something other than a file is there once links are followed
        (a folder, a FIFO, a device such as /dev/null: see `replace_file`)."""
        path = os.path.abspath(path)
        _refuse_unreplaceable(path)
        folder, name = os.path.split(path)
        os.makedirs(folder, exist_ok=True)
        return cls(os.open(folder, os.O_RDONLY | os.O_DIRECTORY), name, overwrite=True, owns_folder=True)

    def commit(self):
        try:
            self.file.flush()
            if self.overwrite:
                self._keep_mode()
            if self.tmp is None:  # a name for it: `name` itself, or, to replace a file, a hidden one renamed over it
                if not self.overwrite:
                    os.link(f"/proc/self/fd/{self.file.fileno()}", self.name, dst_dir_fd=self.folder)  # fails if name exists
                    return
                tmp = temp_name(self.name)
                os.link(f"/proc/self/fd/{self.file.fileno()}", tmp, dst_dir_fd=self.folder)
                self.tmp = tmp
            if self.overwrite:
                os.replace(self.tmp, self.name, src_dir_fd=self.folder, dst_dir_fd=self.folder)  # a link in the way is replaced, not followed
                self.tmp = None
            else:
                os.link(self.tmp, self.name, src_dir_fd=self.folder, dst_dir_fd=self.folder, follow_symlinks=False)
        finally:
            self.discard()

    def _keep_mode(self):
        """The permissions of the file it replaces, as `cp` keeps them (a file of mode 640 became
        644 until session 63); a link in the way is replaced, its target's mode not taken."""
        with contextlib.suppress(OSError):
            there = os.stat(self.name, dir_fd=self.folder, follow_symlinks=False)
            if stat.S_ISREG(there.st_mode):
                os.fchmod(self.file.fileno(), stat.S_IMODE(there.st_mode))

    def discard(self):
        """Close and drop the file (after `commit`, only its hidden name, if any)."""
        if getattr(self, "file", None) is not None:
            with contextlib.suppress(OSError):
                self.file.close()
            self.file = None
        if self.tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.tmp, dir_fd=self.folder)
            self.tmp = None
        if self._owns_folder:
            os.close(self.folder)
            self._owns_folder = False

    def __enter__(self):
        return self.file

    def __exit__(self, kind, value, traceback):
        if kind is None:
            self.commit()
        else:
            self.discard()


class AtomicOutput:
    """An output stream whose bytes appear at `path` (its folder created) once `commit` is
    called; `discard` drops them. On a local disk a `NewFile` (no name until then); on an object
    store a hidden temporary object, moved onto `path` (the store publishes an object whole)."""

    def __init__(self, fs: pafs.FileSystem, path: str):
        self.fs, self.path = fs, path
        if is_local(fs):
            self._new = NewFile.replacing(path)
            self.stream = pa.PythonFile(self._new.file, mode="w")
            return
        self._new, self.tmp = None, temp_path(path)
        parent = posixpath.dirname(path)
        if parent:
            fs.create_dir(parent, recursive=True)
        self.stream = fs.open_output_stream(self.tmp)

    def commit(self):
        if self._new is not None:
            self.stream.flush()
            self._new.commit()
        else:
            self.stream.close()
            publish(self.fs, self.tmp, self.path)

    def discard(self):
        if self._new is not None:
            self._new.discard()
        else:
            with contextlib.suppress(Exception):
                self.stream.close()
            discard(self.fs, self.tmp)


@contextlib.contextmanager
def open_atomic(fs: pafs.FileSystem, path: str):
    """An output stream whose bytes appear at `path` only if the block completes."""
    output = AtomicOutput(fs, path)
    try:
        yield output.stream
        output.commit()
    except BaseException:
        output.discard()
        raise


def write_atomic(fs: pafs.FileSystem, path: str, data: bytes):
    with open_atomic(fs, path) as stream:
        stream.write(data)


ALREADY_THERE = "a file is already there: not overwritten (the overwrite option replaces it)"


class NotWritten(ValueError):
    """An output file that was not written, with the reason for the user."""


class FolderRefuses(NotWritten):
    """A write that fails whatever the file (`write_new`): the output folder takes no new file (a
    read-only file system, one not allowed) or the disk is full. A command writing many files
    stops at the first (until session 59 `restore` decoded every image to fail each write)."""

    def __init__(self, reason: str, errno_: int, written: int = 0):
        super().__init__(reason)
        self.errno, self.written = errno_, written  # written: the files its command wrote before it

    def __reduce__(self):  # rebuilt as itself where a Ray worker raised it
        return type(self), (str(self), self.errno, self.written)


# a new file's creation failing so fails any other file in that folder: with EACCES or EPERM in the
# folder the user named (a subfolder's own rights are its files' concern), anywhere with the others
_REFUSED = (errno.EACCES, errno.EPERM)
_NO_ROOM = (errno.EROFS, errno.ENOSPC, errno.EDQUOT)


def _refuses(e: OSError, in_root: bool) -> bool:
    return e.errno in _NO_ROOM or (in_root and e.errno in _REFUSED)


# special files an output file the user names is written into, never replaced (`output_file`)
STREAMED = ("a FIFO", "a character device")


def check_location(option: str, value):
    """A path or URI (a str or os.PathLike): None, a number, ... refused, not written under their
    text (`out=None` wrote ./None until session 58)."""
    if not isinstance(value, (str, os.PathLike)):
        raise OptionError(option, f"is {value!r}: give a path or URI")


def output_file(out, overwrite: bool = False) -> tuple[pafs.FileSystem, str]:
    """(file system, path) of one output file the user names (`encode` / `decode --out`, `report
    --html`), refused (NotWritten) before any work where a folder is there or meant (a name
    ending in "/"), a file is there and not `overwrite`, or a block device or socket. A FIFO or
    a character device (/dev/null, /dev/stdout, a terminal) is written into (`write_output`), as
    by a shell's redirection: until session 53 the file written was renamed onto it, so that
    `--out /dev/null` run as root replaced the system's /dev/null with a PNG."""
    check_location("out", out)
    if not str(out):
        raise NotWritten("the output file's name is empty: give one")
    if str(out).endswith("/"):
        raise NotWritten(f"{out}: names a folder (it ends in '/'): give the file's name")
    fs, path = resolve(out)
    what = kind(fs, path)
    if what == "folder":
        raise NotWritten(f"{out}: a folder is there: not written")
    if what in ("a block device", "a socket"):
        raise NotWritten(f"{out}: {what} is there: not written")
    if what.startswith("unreadable"):  # a file where a folder of the path should be, no permission...
        raise NotWritten(f"{out}: {why_unwritable(fs, posixpath.dirname(path)) or what}: not written")
    if what not in ("missing", *STREAMED) and not overwrite:
        raise NotWritten(f"{out}: {ALREADY_THERE}")
    return fs, path


def write_output(fs: pafs.FileSystem, path: str, data: bytes, overwrite: bool = False):
    """Write an output file of `output_file`: atomically (`write_new`), or into the FIFO or
    character device there. NotWritten, led by the path, if it cannot be."""
    try:
        if is_local(fs) and local_kind(path) in STREAMED:
            try:
                with open(path, "wb") as f:
                    f.write(data)
            except BrokenPipeError:  # its reader stopped (`| head`): the CLI's quiet 141, as for stdout
                raise
            except OSError as e:
                raise NotWritten(f"cannot write into it: {e.strerror or e}") from None
        else:
            write_new(fs, posixpath.dirname(path), posixpath.basename(path), data, overwrite)
    except NotWritten as e:
        raise NotWritten(f"{uri(fs, path)}: {e}") from None


def is_stdout(fs: pafs.FileSystem, path: str) -> bool:
    """Whether a local path is this process's standard output (`--out /dev/stdout`): the
    command's own text then goes to stderr."""
    try:
        return is_local(fs) and os.path.samestat(os.stat(path), os.fstat(1))
    except (OSError, ValueError):
        return False


def write_new(fs: pafs.FileSystem, root: str, relative: str, data: bytes, overwrite: bool = False) -> str:
    """Write `data` atomically at `root/relative` and return its path; NotWritten if it cannot be.

    An existing file is never replaced unless `overwrite`. On a local disk no symbolic link
    below `root` is followed (every folder is opened with O_NOFOLLOW relative to the one
    before, the file is created under a temporary name and linked to its own), so nothing
    lands outside `root` whatever links are already there. Object stores have no links; an
    existing object is checked for before writing (not atomically: another writer may slip in).
    """
    target = f"{root}/{relative}"
    if not is_local(fs):
        if not overwrite and exists(fs, target):
            raise NotWritten(ALREADY_THERE)
        write_atomic(fs, target, data)
        return target
    try:
        os.makedirs(root, exist_ok=True)
    except OSError as e:  # the folder named cannot be made (its parent refuses, a file in the way)
        raise FolderRefuses(f"cannot make the folder: {e.strerror or e}", e.errno) from None
    limit = os.pathconf(root, "PC_PATH_MAX")
    if len(os.fsencode(target)) >= limit:  # could be made folder by folder, but no program could open it
        raise NotWritten(f"path of {len(os.fsencode(target))} bytes is over the system's limit of {limit}: not written")
    *folders, name = relative.split("/")
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for depth, folder in enumerate(folders):
            try:
                os.mkdir(folder, dir_fd=fd)
            except FileExistsError:
                pass
            except OSError as e:  # a new folder refused: in the folder named, no image's could be made
                if _refuses(e, in_root=depth == 0):
                    raise FolderRefuses(f"cannot make a folder there: {e.strerror}", e.errno) from None
                raise NotWritten(f"cannot make the folder {folder!r}: {e.strerror}") from None
            try:  # an existing subfolder that cannot be entered is its own images' concern
                inner = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise NotWritten(f"{folder!r} is a symbolic link or a file, not a folder: not followed, "
                                     f"not written") from None
                raise NotWritten(f"cannot open the folder {folder!r}: {e.strerror}") from None
            os.close(fd)
            fd = inner
        _write_in(fd, name, data, overwrite, in_root=not folders)
    finally:
        os.close(fd)
    return target


def _write_in(fd: int, name: str, data: bytes, overwrite: bool, in_root: bool = False):
    """Write `name` in the folder open as `fd` (a `NewFile`): NotWritten, worded, if it cannot be;
    FolderRefuses where no file could be: the folder takes no new file (`in_root`: the folder the
    user named refuses it) or the disk is full. Putting the whole file at its name may fail for
    that name alone (another's file in a sticky folder, an immutable one): that file's failure."""
    try:
        new = NewFile(fd, name, overwrite)
    except OSError as e:
        if _refuses(e, in_root):
            raise FolderRefuses(f"cannot write a file there: {e.strerror}", e.errno) from None
        raise NotWritten(f"cannot write the file: {e.strerror}") from None
    try:
        with new as f:
            f.write(data)
    except FileExistsError:
        raise NotWritten("something is already there: not overwritten (the overwrite option replaces a file)") from None
    except IsADirectoryError:
        raise NotWritten("a folder is in the way: not written") from None
    except OSError as e:
        if e.errno in _NO_ROOM:
            raise FolderRefuses(f"cannot write a file there: {e.strerror}", e.errno) from None
        raise NotWritten(f"cannot write the file: {e.strerror}") from None
