"""Requests an archive's readings make of its store: what `report`, a `compress` rerun and a
`restore` cost on object storage, where each is a round trip (docs/ARCHIVE.md, "Object stores").

    python benchmarks/archive_requests.py [--parts 50] [--rows 64]

Builds an archive of `--parts` parts of `--rows` rows each (synthetic rows, 2 kB blobs) on the
local disk, then reads it through a file system that counts its calls: file infos (an object
store's HEAD or LIST), files opened, and reads of an opened file (ranged GETs). Prints the
counts per part of each reading: an `Archive` listed, its stats table (`report`), `done()` (what
a `compress` rerun skips) and every row with its blob (`restore`, `verify`, `compact`).
"""

from __future__ import annotations

import argparse
import collections
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs

from rgbatch import storage
from rgbatch.manifest import Archive, PartWriter
from rgbatch.row import Row


class CountingFile:
    """A local file whose reads are counted (each is one ranged GET on an object store)."""

    def __init__(self, path: str, counts: collections.Counter):
        self.file, self.counts, self.closed = open(path, "rb"), counts, False

    def read(self, size=-1):
        self.counts["reads"] += 1
        return self.file.read(size)

    def seek(self, offset, whence=0):
        return self.file.seek(offset, whence)

    def tell(self):
        return self.file.tell()

    def close(self):
        self.closed = True
        self.file.close()

    def readable(self):
        return True

    def seekable(self):
        return True

    def writable(self):
        return False


class CountingHandler(pafs.FileSystemHandler):
    """The local file system, its calls counted."""

    def __init__(self, counts: collections.Counter):
        self.local, self.counts = pafs.LocalFileSystem(), counts

    def __eq__(self, other):
        return isinstance(other, CountingHandler)

    def __ne__(self, other):
        return not self == other

    def get_type_name(self):
        return "counting"

    def normalize_path(self, path):
        return path

    def get_file_info(self, paths):
        self.counts["file infos"] += len(paths)
        return self.local.get_file_info(paths)

    def get_file_info_selector(self, selector):
        self.counts["listings"] += 1
        return self.local.get_file_info(selector)

    def open_input_file(self, path):
        self.counts["files opened"] += 1
        return pa.PythonFile(CountingFile(path, self.counts), mode="r")

    def open_input_stream(self, path):
        return self.open_input_file(path)

    def create_dir(self, path, recursive):
        self.local.create_dir(path, recursive=recursive)

    def delete_dir(self, path):
        self.local.delete_dir(path)

    def delete_dir_contents(self, path, missing_dir_ok=False):
        self.local.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)

    def delete_root_dir_contents(self):
        raise NotImplementedError

    def delete_file(self, path):
        self.local.delete_file(path)

    def move(self, src, dest):
        self.local.move(src, dest)

    def copy_file(self, src, dest):
        self.local.copy_file(src, dest)

    def open_output_stream(self, path, metadata):
        return self.local.open_output_stream(path)

    def open_append_stream(self, path, metadata):
        raise NotImplementedError


def build(folder: Path, parts: int, rows: int):
    rng = np.random.default_rng(0)
    for part in range(parts):
        with PartWriter(folder, "00112233aabbccdd") as writer:
            for i in range(rows):
                path = f"folder/{part:04d}/{i:04d}.png"
                writer.add(Row.from_dict({
                    "path": path, "source": f"/src/{path}", "source_hash": "h", "source_bytes": 100, "width": 64,
                    "height": 64, "mode": "RGB", "model_id": "00112233aabbccdd", "tile_size": 512, "iterations": 2,
                    "coder": "raw", "blob": rng.bytes(2048), "bytes": [1024, 2048], "bpp": [1.0, 2.0],
                    "msssim": [0.5, 0.7], "psnr": [20.0, 25.0], "status": "ok", "error": None,
                    "read_seconds": 0.1, "encode_seconds": 0.2}))


READINGS = {
    "listed (Archive)": lambda archive: None,
    "stats table (report)": lambda archive: archive.table(),
    "done (a compress rerun)": lambda archive: archive.done(),
    "every row with its blob (restore)": lambda archive: [(r.path, r.blob) for r in archive.rows()],
}


def counted(folder, read) -> tuple[object, collections.Counter]:
    """(what `read(Archive(folder))` returns, the calls it made of the file system)."""
    counts = collections.Counter()
    counting = pafs.PyFileSystem(CountingHandler(counts))
    resolve = storage.resolve
    storage.resolve = lambda location: (counting, resolve(location)[1])
    try:
        return read(Archive(folder)), counts
    finally:
        storage.resolve = resolve


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", type=int, default=50)
    parser.add_argument("--rows", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        build(Path(tmp), args.parts, args.rows)
        print(f"{args.parts} parts of {args.rows} rows; per part:")
        for name, read in READINGS.items():
            _, counts = counted(tmp, read)
            print(f"  {name:36s} " + ", ".join(f"{what} {n / args.parts:.2f}" for what, n in sorted(counts.items())))


if __name__ == "__main__":
    main()
