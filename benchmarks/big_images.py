"""Peak memory and time of `rgbatch compress` on one big photo-like image (issue 20, item 3).

    python benchmarks/big_images.py --megapixels 25 100 --iterations 2

For each size, makes a deterministic synthetic photo (an upscaled random colour field: smooth
regions and soft edges, plus fine texture and sensor-like noise), saves it as PNG, and runs
`rgbatch compress` on it alone in a subprocess, with MS-SSIM measured and with `--no-measure`
(`--modes`). While it runs, the memory of the whole process tree (the driver, Ray's daemons,
its read workers and encoder actors) is sampled: the peak of the summed RSS (shared memory,
such as Ray's object store, counted in every process that maps it) and of the summed PSS
(shared pages split between the processes that share them: what the tree really holds), with
the largest process at the peak. Prints one line per run and, with --json, the rows as JSON.

The compress runs with `--workers 1`; under `nice` (default 10), so that other work on a
shared machine keeps its share. Record the machine beside the figures (README, "Inputs").
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

import ray  # noqa: F401  (puts Ray's own psutil on the path)
import psutil  # noqa: E402

Image.MAX_IMAGE_PIXELS = None  # the benchmark's own images; compress gets --max-pixels


def photo(megapixels: float, seed: int = 0) -> np.ndarray:
    """A deterministic 3:2 photo-like HxWx3 uint8 image of about `megapixels`."""
    width = int(round((megapixels * 1e6 * 1.5) ** 0.5))
    height = int(round(megapixels * 1e6 / width))
    rng = np.random.default_rng(seed)
    field = rng.integers(0, 256, (height // 96 + 2, width // 96 + 2, 3), np.uint8)
    image = np.array(Image.fromarray(field).resize((width, height), Image.BICUBIC))
    x = np.arange(width, dtype=np.float32)
    for y in range(0, height, 256):  # texture and noise band by band: bounded memory
        band = image[y:y + 256].astype(np.float32)
        rows = np.arange(y, y + band.shape[0], dtype=np.float32)[:, None, None]
        band += 12 * np.sin(x[None, :, None] / 7.0 + rows / 11.0) * np.sin(rows / 23.0)
        band += np.random.default_rng([seed, y]).normal(0, 4, band.shape)
        image[y:y + 256] = np.clip(band, 0, 255)
    return image


class TreeSampler:
    """Peak summed RSS and PSS of a process and all its descendants, sampled in a thread."""

    def __init__(self, pid: int, interval: float = 0.25):
        self.root, self.interval = psutil.Process(pid), interval
        self.rss = self.pss = 0
        self.largest = ("", 0)  # (name, PSS) of the largest process at the PSS peak
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stopped.is_set():
            try:
                processes = [self.root] + self.root.children(recursive=True)
            except psutil.NoSuchProcess:
                return
            rss = pss = 0
            largest = ("", 0)
            for p in processes:
                try:
                    info = p.memory_full_info()
                    name = " ".join(p.cmdline()[:3])[-60:] or p.name()
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
                rss += info.rss
                pss += info.pss
                largest = max(largest, (name, info.pss), key=lambda item: item[1])
            self.rss = max(self.rss, rss)
            if pss > self.pss:
                self.pss, self.largest = pss, largest
            self.stopped.wait(self.interval)

    def stop(self):
        self.stopped.set()
        self.thread.join()


def run(source: Path, archive: Path, iterations: int, measure: bool, nice: int) -> dict:
    pixels = Image.open(source).size
    command = ["nice", "-n", str(nice), str(Path(sys.executable).parent / "rgbatch"), "compress", str(source),
               "--out", str(archive), "--iterations", str(iterations), "--workers", "1",
               "--max-pixels", str(pixels[0] * pixels[1]), "--json"] + ([] if measure else ["--no-measure"])
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    sampler = TreeSampler(process.pid)
    out, _ = process.communicate()
    seconds = time.perf_counter() - start
    sampler.stop()
    result = json.loads(out) if process.returncode == 0 else {}
    return {"megapixels": round(pixels[0] * pixels[1] / 1e6, 1), "size": f"{pixels[0]}x{pixels[1]}",
            "iterations": iterations, "measure": measure, "exit": process.returncode,
            "peak_rss_gb": round(sampler.rss / 1e9, 2), "peak_pss_gb": round(sampler.pss / 1e9, 2),
            "largest_process": sampler.largest[0], "largest_pss_gb": round(sampler.largest[1] / 1e9, 2),
            "wall_seconds": round(seconds, 1), "compress_seconds": round(result.get("seconds", 0), 1),
            "megapixels_per_second": round(result.get("megapixels_per_second", 0), 3)}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--megapixels", type=float, nargs="+", default=[25.0])
    parser.add_argument("--iterations", type=int, default=2)
    parser.add_argument("--modes", nargs="+", choices=("measure", "no-measure"), default=["measure", "no-measure"])
    parser.add_argument("--nice", type=int, default=10)
    parser.add_argument("--json", action="store_true", help="print the rows as JSON at the end")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="big_images_") as work:
        for megapixels in args.megapixels:
            source = Path(work) / f"photo_{megapixels:g}mp.png"
            image = photo(megapixels)
            Image.fromarray(image).save(source, compress_level=1)
            del image
            for mode in args.modes:
                row = run(source, Path(work) / f"archive_{megapixels:g}_{mode}", args.iterations, mode == "measure",
                          args.nice)
                rows.append(row)
                print(f"{row['megapixels']:6.1f} MP ({row['size']}) depth {row['iterations']} {mode:10s} "
                      f"exit {row['exit']}: peak {row['peak_pss_gb']:.2f} GB PSS ({row['peak_rss_gb']:.2f} GB RSS; "
                      f"largest {row['largest_pss_gb']:.2f} GB: {row['largest_process']}), "
                      f"{row['wall_seconds']:.0f} s wall, {row['megapixels_per_second']:.3f} MP/s", flush=True)
    if args.json:
        print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
