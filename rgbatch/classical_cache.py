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

    cache = ClassicalCache("runs/classical-cache.jsonl")
    cache.get(image_digest(image), codec, 50)  # None, or {"bytes", "msssim", "psnr", "encode_s", "decode_s"}
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from .classical import ClassicalCodec

CACHE_VERSION = 1
FIELDS = ("bytes", "msssim", "psnr", "encode_s", "decode_s")


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
        self.entries: dict[str, dict] = {}
        self.hits = self.misses = 0
        if self.path.is_file():
            for line in self.path.read_text(errors="replace").splitlines():
                try:
                    entry = json.loads(line)
                    self.entries[entry["key"]] = {f: entry[f] for f in FIELDS}
                except (ValueError, KeyError, TypeError):
                    continue  # a line cut short by a crash, or not ours

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
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = (json.dumps({"key": key, **entry}) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)


__all__ = ["CACHE_VERSION", "ClassicalCache", "entry_key", "image_digest"]
