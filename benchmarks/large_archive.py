"""Commands on a large archive: the seconds and peak memory of `report`, `report --json`,
`restore --select`, `verify --quick` and a `compress` rerun (docs/ARCHIVE.md, "Large archives").

    python benchmarks/large_archive.py [--rows 200000] [--work /tmp/rgbatch-large] [--weights W]

Encodes `--seed` random 64 x 64 thumbnails with the model (in this process, by the worker code
`compress` runs on its actors), then writes their rows again under `--rows` new paths
(`PartWriter`: part files as `compress` writes them), each path's source a hard link to its
seed image, dated a day back (so that a rerun finds it unchanged by its size and time). Then
runs each command as `rgbatch` in a process of its own and prints its wall time and peak
resident memory (`os.wait4`); the rerun also finds 20 new thumbnails to encode and 20 copies of
archived ones (their rows copied: every archived row is alike, made with `compress`'s options).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from rgbatch.manifest import Archive, PartWriter
from rgbatch.pipeline import CompressOptions, EncodeWorker, resolve_options
from rgbatch.sources import expand_sources, read_source
from rgbatch.storage import file_stat, resolve


def thumbnails(folder: Path, names: list[str], seed: int):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name in names:
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(folder / name)


def build(work: Path, rows: int, seeds: int, weights: str | None):
    """The archive `work/archive` of `rows` rows and its sources `work/src`."""
    thumbnails(work / "seed", [f"{i:03d}.png" for i in range(seeds)], seed=0)
    day_ago = time.time() - 86400
    for path in (work / "seed").iterdir():
        os.utime(path, (day_ago, day_ago))
    options, weights, _, _ = resolve_options(CompressOptions(weights=weights))  # `compress`'s: its rows alike
    worker = EncodeWorker(weights, "cpu", options)
    seeded = []
    for source in expand_sources([str(work / "seed")])[1]:
        info, image = read_source(source, None, 10**8)
        seeded += worker.encode([info], image)
    # every blob stored whole, as distinct images' are (`compress` would store these copies' once)
    with PartWriter(work / "archive", worker.model_id(), share=False) as writer:
        for i in range(rows):
            row = seeded[i % len(seeded)]
            path = f"d{i // 1000:03d}/img{i:07d}.png"
            link = work / "src" / path
            link.parent.mkdir(parents=True, exist_ok=True)
            os.link(work / "seed" / row.path, link)
            writer.add(dataclasses.replace(row, path=path, source=str(link),
                                           source_mtime=file_stat(*resolve(str(link)))[1]))


def timed(args: list[str], cwd: Path) -> tuple[float, float, int]:
    """(seconds, peak resident GB, exit code) of `rgbatch ARGS` in a process of its own, run in
    `cwd`: `python -m` puts its working folder first on sys.path, so from inside a checkout it
    would run that checkout's rgbatch whatever PYTHONPATH names (a comparison of two checkouts
    measured one twice)."""
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "rgbatch.cli", *args], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, cwd=cwd)
    _, status, usage = os.wait4(process.pid, 0)
    return time.perf_counter() - start, usage.ru_maxrss / 1e6, os.waitstatus_to_exitcode(status)


def run(work: Path, rows: int, seeds: int, weights: str | None) -> dict[str, tuple[float, float, int]]:
    """{command: (seconds, peak GB, exit code)} on a fresh archive of `rows` rows in `work`."""
    shutil.rmtree(work, ignore_errors=True)
    start = time.perf_counter()
    build(work, rows, seeds, weights)
    archive = str(work / "archive")
    print(f"built {rows} rows in {len(Archive(archive).parts)} parts in {time.perf_counter() - start:.0f} s")
    thumbnails(work / "src" / "new", [f"{i:02d}.png" for i in range(20)], seed=1)
    (work / "src" / "copies").mkdir()
    for i in range(min(seeds, 20)):  # archived images under new paths (a folder renamed): their rows copied
        shutil.copyfile(work / "seed" / f"{i:03d}.png", work / "src" / "copies" / f"{i:03d}.png")
    weights = ["--weights", weights] if weights else []
    commands = {
        "report": ["report", archive],
        "report --json": ["report", archive, "--json"],
        "restore --select (10 images)": ["restore", archive, "--out", str(work / "restored"),
                                         "--select", "d000/img000000*", *weights],
        "verify --quick --sample 2": ["verify", archive, "--quick", "--sample", "2", *weights],
        "compress rerun (20 new, 20 copies)": ["compress", str(work / "src"), "--out", archive, *weights],
    }
    return {name: timed(command, work) for name, command in commands.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=60, help="thumbnails encoded, their rows written again")
    parser.add_argument("--work", type=Path, default=Path("/tmp/rgbatch-large"))
    parser.add_argument("--weights", default=None)
    args = parser.parse_args()
    results = run(args.work.resolve(), args.rows, args.seed, args.weights and str(Path(args.weights).resolve()))
    print(f"{'command':30s} {'seconds':>8s} {'peak GB':>8s} {'exit':>5s}")
    for name, (seconds, peak, code) in results.items():
        print(f"{name:30s} {seconds:8.1f} {peak:8.2f} {code:5d}")


if __name__ == "__main__":
    main()
