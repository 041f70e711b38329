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
import fnmatch
import glob
import hashlib
import os
import posixpath
import time
import uuid
from dataclasses import dataclass

import numpy as np
import pyarrow.fs as pafs
from PIL import Image

from .imageio import ImageError, decode_image
from .objectstore import not_found, split_query, with_query, worded

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
    with fs.open_input_stream(path) as f:
        return f.read()


def list_files(fs: pafs.FileSystem, root: str, recursive: bool = True) -> list[str]:
    """Paths of the regular files under `root`, sorted; hidden files and folders left out."""
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


def _expand_one(source: str) -> tuple[pafs.FileSystem, str, list[str]]:
    """(file system, root, files) of one SRC argument: a folder, a glob, or a list file."""
    if any(c in split_query(source)[0] for c in GLOB_CHARS) and not os.path.exists(source):
        if is_uri(source):
            fs, pattern = resolve(source)
            root = _glob_root(pattern)
            files = [p for p in list_files(fs, root) if fnmatch.fnmatch(p, pattern)]
        else:
            fs = pafs.LocalFileSystem()
            pattern = os.path.abspath(os.path.expanduser(source))
            root = _glob_root(pattern)
            files = sorted(p for p in glob.glob(pattern, recursive=True) if os.path.isfile(p))
        if not files:
            raise ValueError(f"no files match {source}")
        return fs, root, files
    fs, path = resolve(source)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.Directory:
        extensions = image_extensions()
        files = [p for p in list_files(fs, path) if posixpath.splitext(p)[1].lower() in extensions]
        if not files:
            raise ValueError(f"no image files under {source}")
        return fs, path, files
    if info.type != pafs.FileType.File:
        raise not_found(fs, path, f"no such file or folder: {source}")
    if posixpath.splitext(path)[1].lower() not in LIST_EXTENSIONS:
        return fs, posixpath.dirname(path), [path]  # a single image
    # a list file: one path per line, relative ones read from the list file's folder
    text = read_bytes(fs, path).decode("utf-8", errors="replace")
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
    queries = {split_query(str(s))[1] for s in sources}  # a URI's store options: kept on every location
    if len(kinds) > 1 or len(queries) > 1:
        raise ValueError(f"all sources must be on one file system, not on {sorted(kinds | queries)}")
    query = queries.pop()
    fs = expanded[0][0]
    root = posixpath.commonpath([r for _, r, _ in expanded]) if len(expanded) > 1 else expanded[0][1]
    seen, found = set(), []
    for _, _, files in expanded:
        for f in files:
            if f not in seen:
                seen.add(f)
                found.append(Source(with_query(uri(fs, f), query), posixpath.relpath(f, root)))
    return with_query(uri(fs, root), query), found


def read_source(source: Source, known_hash: str | None, max_pixels: int) -> tuple[dict, np.ndarray | None]:
    """(description, pixels) of one source: status "image", "skip" (its sha256 is `known_hash`:
    unchanged since archived, so not decoded) or "error" with the reason for the user."""
    start = time.perf_counter()
    info = {"path": source.path, "source": source.location}
    try:
        fs, path = resolve(source.location)
        data = read_bytes(fs, path)
    except (OSError, ValueError) as e:
        return {**info, "status": "error", "error": f"cannot read the file: {worded(e)}"}, None
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
    name = posixpath.basename(split_query(root)[0].rstrip("/").split("://")[-1])
    return name or "archive"
