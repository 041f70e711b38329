"""Where archives and sources live: local paths or object-store URIs, through pyarrow.fs.

    fs, path = resolve("manifests/kodak")        # a local folder (made absolute)
    fs, path = resolve("s3://bucket/archive")    # any URI pyarrow.fs knows (s3, gs, hdfs, file)

Sources: `expand_sources` turns SRC arguments (folders, globs, list files) into `Source`s,
and `read_source` reads, hashes and decodes one (in a Ray task: this module does not import
torch, so the processes running reads start light).

Every file rgbatch writes goes through `open_atomic`: the bytes go to a hidden temporary
name beside the target, which is moved onto the target only once complete, so a reader
(or a rerun after a crash) never sees half a file.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import hashlib
import os
import posixpath
import stat
import time
import uuid
from dataclasses import dataclass

import numpy as np
import pyarrow.fs as pafs
from PIL import Image

from .imageio import ImageError, decode_image

TEMP_PREFIX = ".tmp-"  # temporary files are hidden; listings skip them
GLOB_CHARS = "*?["
LIST_EXTENSIONS = (".txt", ".lst", ".list")  # a SRC file with one of these lists paths


def is_uri(location: str) -> bool:
    return "://" in str(location)


def resolve(location) -> tuple[pafs.FileSystem, str]:
    """A local path or a URI -> (file system, path inside it)."""
    location = str(location)
    if is_uri(location):
        try:
            return pafs.FileSystem.from_uri(location)
        except Exception as e:  # pyarrow raises ArrowInvalid / OSError with a readable reason
            raise ValueError(f"cannot open {location}: {e}") from None
    return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(location))


def uri(fs: pafs.FileSystem, path: str) -> str:
    """The location string of a path, as `resolve` reads it back."""
    if isinstance(fs, pafs.LocalFileSystem):
        return path
    scheme = {"gcs": "gs"}.get(fs.type_name, fs.type_name)
    return f"{scheme}://{path}"


def exists(fs: pafs.FileSystem, path: str) -> bool:
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def is_dir(fs: pafs.FileSystem, path: str) -> bool:
    return fs.get_file_info(path).type == pafs.FileType.Directory


def read_bytes(fs: pafs.FileSystem, path: str) -> bytes:
    """The bytes of a file. A local path must name a regular file: a FIFO, socket or device is
    refused without waiting on it (opened non-blocking, checked before reading)."""
    if not isinstance(fs, pafs.LocalFileSystem):
        with fs.open_input_stream(path) as f:
            return f.read()
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        kind = _kind(os.fstat(fd).st_mode)
        if kind != "file":
            raise ValueError(f"not a regular file ({kind}): not read")
        os.set_blocking(fd, True)
        with os.fdopen(os.dup(fd), "rb") as f:
            return f.read()
    finally:
        os.close(fd)


_KINDS = {stat.S_IFREG: "file", stat.S_IFDIR: "folder", stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket",
          stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device", stat.S_IFLNK: "a symbolic link"}


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
    if recursive and isinstance(fs, pafs.LocalFileSystem):
        return walk_local(root)[0]
    selector = pafs.FileSelector(root, recursive=recursive)
    found = []
    for info in fs.get_file_info(selector):
        relative = posixpath.relpath(info.path, root)
        if info.type == pafs.FileType.File and not any(p.startswith(".") for p in relative.split("/")):
            found.append(info.path)
    return sorted(found)


def temp_path(path: str) -> str:
    """A hidden name beside `path` (its folder created) to write to before `publish`."""
    head, name = posixpath.split(path)
    return posixpath.join(head, f"{TEMP_PREFIX}{uuid.uuid4().hex[:12]}-{name}")


def publish(fs: pafs.FileSystem, tmp: str, path: str):
    """Move a complete temporary file onto its name: a rename on local disks, and object
    stores publish an object whole."""
    fs.move(tmp, path)


def discard(fs: pafs.FileSystem, tmp: str):
    with contextlib.suppress(OSError):
        fs.delete_file(tmp)


@contextlib.contextmanager
def open_atomic(fs: pafs.FileSystem, path: str):
    """An output stream whose bytes appear at `path` only if the block completes."""
    parent = posixpath.dirname(path)
    if parent:
        fs.create_dir(parent, recursive=True)
    tmp = temp_path(path)
    stream = fs.open_output_stream(tmp)
    try:
        yield stream
        stream.close()
        publish(fs, tmp, path)
    except BaseException:
        stream.close()
        discard(fs, tmp)
        raise


def write_atomic(fs: pafs.FileSystem, path: str, data: bytes):
    with open_atomic(fs, path) as stream:
        stream.write(data)


class NotWritten(ValueError):
    """An output file that was not written, with the reason for the user."""


def write_new(fs: pafs.FileSystem, root: str, relative: str, data: bytes, overwrite: bool = False) -> str:
    """Write `data` atomically at `root/relative` and return its path; NotWritten if it cannot be.

    An existing file is never replaced unless `overwrite`. On a local disk no symbolic link
    below `root` is followed (every folder is opened with O_NOFOLLOW relative to the one
    before, the file is created under a temporary name and linked to its own), so nothing
    lands outside `root` whatever links are already there. Object stores have no links; an
    existing object is checked for before writing (not atomically: another writer may slip in).
    """
    target = f"{root}/{relative}"
    if not isinstance(fs, pafs.LocalFileSystem):
        if not overwrite and exists(fs, target):
            raise NotWritten("a file is already there: not overwritten (--overwrite replaces it)")
        write_atomic(fs, target, data)
        return target
    os.makedirs(root, exist_ok=True)
    limit = os.pathconf(root, "PC_PATH_MAX")
    if len(os.fsencode(target)) >= limit:  # could be made folder by folder, but no program could open it
        raise NotWritten(f"path of {len(os.fsencode(target))} bytes is over the system's limit of {limit}: not written")
    *folders, name = relative.split("/")
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            for folder in folders:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(folder, dir_fd=fd)
                inner = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                os.close(fd)
                fd = inner
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.ENOTDIR):
                raise NotWritten(f"{folder!r} is a symbolic link or a file, not a folder: not followed, "
                                 f"not written") from None
            raise NotWritten(f"cannot make the folder {folder!r}: {e.strerror}") from None
        _write_in(fd, name, data, overwrite)
    finally:
        os.close(fd)
    return target


def _write_in(fd: int, name: str, data: bytes, overwrite: bool):
    """Write `name` in the folder open as `fd`: a temporary file first, then linked (or, to
    overwrite, renamed) onto the name, so the name holds the old file or the whole new one."""
    tmp = f"{TEMP_PREFIX}{uuid.uuid4().hex}"
    try:
        out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666, dir_fd=fd)
        with os.fdopen(out, "wb") as f:
            f.write(data)
        if overwrite:
            os.replace(tmp, name, src_dir_fd=fd, dst_dir_fd=fd)  # a link in the way is replaced, not followed
        else:
            os.link(tmp, name, src_dir_fd=fd, dst_dir_fd=fd, follow_symlinks=False)  # fails if name exists
    except FileExistsError:
        raise NotWritten("something is already there: not overwritten (--overwrite replaces a file)") from None
    except IsADirectoryError:
        raise NotWritten("a folder is in the way: not written") from None
    except OSError as e:
        raise NotWritten(f"cannot write the file: {e.strerror}") from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=fd)


# -- sources -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Source:
    """One source image: where to read it, and the path it is known by in the archive."""
    location: str  # local path or URI
    path: str  # relative to the common root of all sources, '/'-separated


def image_extensions() -> set[str]:
    """File name extensions Pillow can open (lower case, with the dot)."""
    return {ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}


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


def _glob_local(pattern: str, root: str) -> list[str]:
    """Local files matching a glob, found by `walk_local` (each folder once: `glob.glob` follows
    a link loop such as `ln -s . loop` down 40 levels, exponentially with two loops)."""
    files, skipped = walk_local(root)
    wanted = posixpath.relpath(pattern, root).split("/")
    return sorted(p for p in files + [p for p, _ in skipped if p != root]
                  if _glob_match(posixpath.relpath(p, root).split("/"), wanted))


def _expand_one(source: str) -> tuple[pafs.FileSystem, str, list[str]]:
    """(file system, root, files) of one SRC argument: a folder, a glob, or a list file.

    Local files that are not regular files (dangling symbolic links, FIFOs, sockets,
    devices) are kept in the list: reading them fails with the reason, so each becomes an
    error row instead of vanishing without a word (and none is ever opened for reading)."""
    if any(c in source for c in GLOB_CHARS) and not os.path.exists(source):
        if is_uri(source):
            fs, pattern = resolve(source)
            root = _glob_root(pattern)
            files = [p for p in list_files(fs, root) if fnmatch.fnmatch(p, pattern)]
        else:
            fs = pafs.LocalFileSystem()
            pattern = os.path.abspath(os.path.expanduser(source))
            root = _glob_root(pattern)
            files = _glob_local(pattern, root)
        if not files:
            raise ValueError(f"no files match {source}")
        return fs, root, files
    fs, path = resolve(source)
    if isinstance(fs, pafs.LocalFileSystem):
        kind = local_kind(path)
    else:
        kind = {pafs.FileType.Directory: "folder", pafs.FileType.File: "file"}.get(
            fs.get_file_info(path).type, "missing")
    if kind == "folder":
        extensions = image_extensions()
        if isinstance(fs, pafs.LocalFileSystem):
            files, skipped = walk_local(path)
            files = sorted(files + [p for p, _ in skipped if p != path])
        else:
            files = list_files(fs, path)
        files = [p for p in files if posixpath.splitext(p)[1].lower() in extensions]
        if not files:
            raise ValueError(f"no image files under {source}")
        return fs, path, files
    if kind == "missing":
        raise FileNotFoundError(f"no such file or folder: {source}")
    if posixpath.splitext(path)[1].lower() not in LIST_EXTENSIONS:
        return fs, posixpath.dirname(path), [path]  # a single image
    # a list file: one path per line, relative ones read from the list file's folder
    try:
        text = read_bytes(fs, path).decode("utf-8", errors="replace")
    except ValueError as e:
        raise ValueError(f"{source}: {e}") from None
    names = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    base = posixpath.dirname(path)
    files = [n if (posixpath.isabs(n) or is_uri(n)) else posixpath.normpath(posixpath.join(base, n)) for n in names]
    if any(is_uri(f) for f in files):
        raise ValueError(f"{source}: list files name local paths only (list an object store by its folder URI)")
    if not files:
        raise ValueError(f"{source} lists no files")
    return fs, posixpath.commonpath([posixpath.dirname(f) for f in files]), files


def expand_sources(sources: list[str]) -> tuple[str, list[Source]]:
    """(common root, sources) of SRC arguments; paths are relative to the common root.

    Several SRC arguments share the root above all of them, so `photos/2019 photos/2020`
    gives the paths `2019/...` and `2020/...`; a file named twice is kept once.
    """
    if not sources:
        raise ValueError("give at least one source folder, glob or list file")
    expanded = [_expand_one(str(s)) for s in sources]
    kinds = {fs.type_name for fs, _, _ in expanded}
    if len(kinds) > 1:
        raise ValueError(f"all sources must be on one file system, not on {sorted(kinds)}")
    fs = expanded[0][0]
    root = posixpath.commonpath([r for _, r, _ in expanded]) if len(expanded) > 1 else expanded[0][1]
    seen, found = set(), []
    for _, _, files in expanded:
        for f in files:
            if f not in seen:
                seen.add(f)
                found.append(Source(uri(fs, f), posixpath.relpath(f, root)))
    return uri(fs, root), found


def read_source(source: Source, known_hash: str | None, max_pixels: int) -> tuple[dict, np.ndarray | None]:
    """(description, pixels) of one source: status "image", "skip" (its sha256 is `known_hash`:
    unchanged since archived, so not decoded) or "error" with the reason for the user."""
    start = time.perf_counter()
    info = {"path": source.path, "source": source.location}
    try:
        fs, path = resolve(source.location)
        data = read_bytes(fs, path)
    except FileNotFoundError as e:
        why = "a dangling symbolic link" if os.path.islink(source.location) else e
        return {**info, "status": "error", "error": f"cannot read the file: {why}"}, None
    except (OSError, ValueError) as e:
        return {**info, "status": "error", "error": f"cannot read the file: {e}"}, None
    info.update(source_hash=hashlib.sha256(data).hexdigest(), source_bytes=len(data))
    if info["source_hash"] == known_hash:
        return {**info, "status": "skip"}, None
    try:
        image, mode = decode_image(data, max_pixels)
    except ImageError as e:
        return {**info, "status": "error", "error": str(e), "read_seconds": time.perf_counter() - start}, None
    except Exception as e:  # Pillow plugins raise all sorts; the user needs the reason, not a traceback
        return {**info, "status": "error", "error": f"cannot decode the image: {type(e).__name__}: {e}"}, None
    info.update(status="image", width=image.shape[1], height=image.shape[0], mode=mode,
                read_seconds=time.perf_counter() - start)
    return info, image


def archive_name(root: str) -> str:
    """The default archive name of a source root: its last folder name."""
    name = posixpath.basename(root.rstrip("/").split("://")[-1])
    return name or "archive"
