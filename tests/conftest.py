"""Shared fixtures: a small random-weight model (fast), the shipped model, sample images."""

from __future__ import annotations

import errno
import io
import socket
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from rgbatch import storage
from rgbatch.model import CodecConfig, ResidualGRUCodec
from rgbatch.weights import DEFAULT_WEIGHTS, save_weights

DATA = Path(__file__).parent / "data"

# One thread per test process: with the small tensors of the tests, more threads only
# contend with Ray workers and with each other.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> Path:
    """A width-0.125 model with random weights: fast, deterministic, useless for quality."""
    torch.manual_seed(1234)
    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    save_weights(path, ResidualGRUCodec(CodecConfig(width=0.125)))
    return path


@pytest.fixture(scope="session")
def default_weights() -> Path:
    if not DEFAULT_WEIGHTS.exists():
        pytest.fail(f"the shipped model {DEFAULT_WEIGHTS} is missing")
    return DEFAULT_WEIGHTS


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def smooth_image(rng, height, width):
    """A photo-like test image: smooth colour gradients plus a little texture."""
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([128 + 100 * np.sin(x / 17 + c) * np.cos(y / 23 - c) for c in range(3)], axis=-1)
    return np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)

pytest_plugins = ["conftest_ray"]  # the session Ray cluster (fixture `ray_cluster`)


def damage_page(part, row_group, column):
    """Flip the page header of one column chunk of the manifest part `part` (its footer intact):
    pyarrow's error shows only once a reading reaches that chunk."""
    import pyarrow.parquet as pq

    from rgbatch.row import COLUMNS
    chunk = pq.ParquetFile(part).metadata.row_group(row_group).column(COLUMNS.index(column))
    data = bytearray(Path(part).read_bytes())
    for i in range(chunk.data_page_offset, chunk.data_page_offset + 8):
        data[i] ^= 0xFF
    Path(part).write_bytes(bytes(data))


@pytest.fixture
def silent_port():
    """HOST:PORT of a socket that takes connections (the system's backlog) and never answers: a
    hung object store."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(64)
        yield f"127.0.0.1:{server.getsockname()[1]}"


class FullDisk(storage.AtomicOutput):
    """A part's temporary file on a disk that fills after `room` bytes."""
    room = 0

    def __init__(self, fs, path):
        super().__init__(fs, path)
        real, room = self.stream, self.room

        class Stream(io.RawIOBase):
            def writable(self):
                return True

            def write(self, data):
                nonlocal room
                if len(data) > room:
                    raise OSError(errno.ENOSPC, "No space left on device")
                room -= len(data)
                return real.write(data)

            def close(self):
                real.close()
                super().close()

        self.stream = pa.PythonFile(Stream(), mode="w")
