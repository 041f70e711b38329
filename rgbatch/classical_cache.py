"""A cache of classical codec results, so that benching a new model re-encodes only rgbatch.

What a classical codec does to an image does not depend on the model being benched: the size,
MS-SSIM, PSNR and times of one image stored by one codec setting at one quality are measured
once and then read back. An entry is keyed by

* the image's content: sha256 of its shape and RGB pixels (a renamed or moved file still hits),
* the codec's name, Pillow format, fixed options and library version (an upgrade measures again),
* the quality setting,
* CACHE_VERSION, raised whenever the metric code or the meaning of a field changes.

The file holds one JSON object per line, appended as results come, so a run cut short keeps
what it measured and the next one goes on from there; a line cut short by a crash is skipped.
Each line is one `write` to a file opened for appending, so two bench runs (e.g. Kodak and
photos side by side) can share one file. Times are those of the run that measured the entry.

A path ending in `.xz` holds the lines xz-compressed, a stream per `flush` (the bench flushes
after each image), appended the same way: an eighth of the bytes (the committed cache of both
sets, 3504 lines, 1.35 MB as text, 0.15 MB as one stream, 0.17 MB as a stream per image). A
stream cut short by a crash is skipped, the streams after it are read.

    cache = ClassicalCache("runs/classical-cache.jsonl")
    cache.get(image_digest(image), codec, 50)  # None, or {"bytes", "msssim", "psnr", "encode_s", "decode_s"}
"""

from __future__ import annotations

import hashlib
import json
import lzma
import os
from pathlib import Path

import numpy as np

from .classical import ClassicalCodec
from .options import OptionError

CACHE_VERSION = 1
FIELDS = ("bytes", "msssim", "psnr", "encode_s", "decode_s")
XZ_MAGIC = b"\xfd7zXZ\x00"  # how an xz stream begins
TEXT_START = b'{"key": '  # how a text cache's lines begin


def image_digest(image: np.ndarray) -> str:
    """sha256 of an image's shape and pixels."""
    digest = hashlib.sha256(repr(image.shape).encode())
    digest.update(np.ascontiguousarray(image).tobytes())
    return digest.hexdigest()


def entry_key(digest: str, codec: ClassicalCodec, quality: int) -> str:
    setting = {"version": CACHE_VERSION, "codec": codec.name, "format": codec.format, "options": codec.options,
               "library": codec.library, "quality": quality, "image": digest}
    return json.dumps(setting, sort_keys=True)


class ClassicalCache:
    def __init__(self, path):
        self.path = Path(path)
        self.compressed = self.path.suffix == ".xz"
        self.entries: dict[str, dict] = {}
        self.hits = self.misses = 0
        self._pending: list[bytes] = []  # lines not yet written (`.xz`: written as one stream by `flush`)
        self._check_ours()
        if self.path.is_file():
            for line in self._lines():
                try:
                    entry = json.loads(line)
                    self.entries[entry["key"]] = {f: entry[f] for f in FIELDS}
                except (ValueError, KeyError, TypeError):
                    continue  # a line cut short by a crash, or not ours

    def _check_ours(self):
        """Refuse (OptionError) a file that does not begin as a cache does: lines were appended
        to whatever the path named until session 60 (a Parquet manifest, a PNG: damaged)."""
        if self.path.exists() and not self.path.is_file():
            raise OptionError("classical_cache", f"{self.path} is not a file")
        if not self.path.is_file():
            return
        with open(self.path, "rb") as f:
            head = f.read(len(XZ_MAGIC))
        if head and head != (XZ_MAGIC if self.compressed else TEXT_START)[:len(head)]:  # a first line cut short: ours
            raise OptionError("classical_cache", f"{self.path} is not a cache of classical results (it does not begin "
                                                 f"as one): not written to; give a new file or a cache")

    def get(self, digest: str, codec: ClassicalCodec, quality: int) -> dict | None:
        entry = self.entries.get(entry_key(digest, codec, quality))
        if entry is None:
            self.misses += 1
        else:
            self.hits += 1
        return entry

    def put(self, digest: str, codec: ClassicalCodec, quality: int, result: dict) -> None:
        key = entry_key(digest, codec, quality)
        entry = {f: result[f] for f in FIELDS}
        self.entries[key] = entry
        self._pending.append((json.dumps({"key": key, **entry}) + "\n").encode())
        if not self.compressed:
            self.flush()

    def flush(self) -> None:
        """Append the lines put since the last flush (a text file: each line as it is put)."""
        if not self._pending:
            return
        data = b"".join(self._pending)
        self._pending = []
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            if not self.compressed and (end := os.lseek(fd, 0, os.SEEK_END)) and os.pread(fd, 1, end - 1) != b"\n":
                data = b"\n" + data  # after a line cut short by a crash: the next begins its own
            os.write(fd, lzma.compress(data, preset=9) if self.compressed else data)
        finally:
            os.close(fd)

    def _lines(self) -> list[str]:
        if not self.compressed:
            return self.path.read_text(errors="replace").splitlines()
        data, text = self.path.read_bytes(), []
        while data:
            stream = lzma.LZMADecompressor(lzma.FORMAT_XZ)
            try:
                text.append(stream.decompress(data))
                data = stream.unused_data if stream.eof else b""  # not at its end: cut short, the file's last
            except lzma.LZMAError:  # damaged: go on at the next stream
                data = data[max(1, data.find(XZ_MAGIC, 1)):] if XZ_MAGIC in data[1:] else b""
        return b"".join(text).decode(errors="replace").splitlines()


__all__ = ["CACHE_VERSION", "ClassicalCache", "entry_key", "image_digest"]
