"""Throughput of an encode worker on one GPU, without Ray (issue 18's GPU target).

    python benchmarks/gpu_worker.py                                  # on a lent GPU machine
    python benchmarks/gpu_worker.py --device cpu --size 64 --images 2 --depths 1 2 --encoders 1   # smoke test

Runs what each Ray encoder of `rgbatch compress` runs (`Codec.encode_many` on a batch of
images, the codec loaded as `pipeline.EncodeWorker` loads it), in --encoders threads that share
the GPU, as ENCODERS_PER_GPU Ray actors share it (the coder's kernels, torch and numpy release
the GIL), on --images images of --size px (random smooth images, or the first of --data):

  - network: raw coder, no quality measured (the network's speed in the worker);
  - + coder: the context coder (the default);
  - + coder + MS-SSIM: and MS-SSIM / PSNR at every depth (what `compress` does by default);
  - decode: the context-coded streams back to pixels.

Per depth: MP/s of all encoders together (wall clock, after a warm-up pass), and the GPU's
mean utilisation over the pass (nvidia-smi, sampled every 0.1 s; "n/a" without it). Prints
the coder engine in use ("compiled" needs numba on that machine; else the constriction engine
codes the same bytes, slower). Needs only torch and rgbatch's own dependencies minus Ray and
pyarrow.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from rgbatch.codec import Codec
from rgbatch.entropy import ContextCoder


class GpuMonitor:
    """Mean GPU utilisation (%) while in a `with` block, from nvidia-smi every 0.1 s."""

    def __init__(self):
        self.samples: list[float] = []
        self.tool = shutil.which("nvidia-smi")
        self._stop = threading.Event()

    def _poll(self):
        while not self._stop.is_set():
            out = subprocess.run([self.tool, "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                                  "--id=0"], capture_output=True, text=True)
            if out.returncode == 0 and out.stdout.strip():
                self.samples.append(float(out.stdout.split()[0]))
            self._stop.wait(0.1)

    def __enter__(self):
        if self.tool:
            self._thread = threading.Thread(target=self._poll, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.tool:
            self._stop.set()
            self._thread.join()

    @property
    def mean(self) -> str:
        return f"{np.mean(self.samples):.0f} %" if self.samples else "n/a"


def test_images(count: int, size: int, data: str | None) -> list[np.ndarray]:
    if data and Path(data).is_dir():
        from rgbatch.imageio import read_image
        from rgbatch.train import list_images
        return [read_image(p)[0] for p in list_images(Path(data))[:count]]
    rng = np.random.default_rng(0)
    images = []
    for _ in range(count):  # smooth random images: codes with some structure, unlike white noise
        coarse = rng.random((size // 32 + 2, size // 32 + 2, 3))
        image = np.kron(coarse, np.ones((32, 32, 1)))[:size, :size]
        images.append((255 * np.clip(image + 0.05 * rng.standard_normal(image.shape), 0, 1)).astype(np.uint8))
    return images


def run_pass(codecs: list[Codec], images, work) -> tuple[float, str, list]:
    """Seconds and GPU utilisation of `work(codec, share)` over all images, one share per encoder."""
    shares = [images[i::len(codecs)] for i in range(len(codecs))]
    with ThreadPoolExecutor(len(codecs)) as pool, GpuMonitor() as gpu:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        results = list(pool.map(work, codecs, shares))
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    return seconds, gpu.mean, results


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", help="weight file (default: the shipped model)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--depths", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--size", type=int, default=1024, help="side of the random images (px)")
    parser.add_argument("--data", help="a folder of images to use instead (the first --images)")
    parser.add_argument("--encoders", type=int, default=4, help="encoder threads sharing the device")
    parser.add_argument("--batch-size", type=int, default=8, help="tiles per network batch (compress: 8 on a GPU)")
    parser.add_argument("--call-images", type=int, default=4, help="images per encode_many call (per worker call)")
    args = parser.parse_args()

    torch.set_num_threads(1)  # each encoder thread: one torch CPU thread, as compress's workers
    images = test_images(args.images, args.size, args.data)
    megapixels = sum(im.shape[0] * im.shape[1] for im in images) / 1e6
    options = dict(device=args.device, precision=args.precision, batch_size=args.batch_size)
    setups = {"network": dict(coder="raw", measure=False), "+ coder": dict(coder="auto", measure=False),
              "+ coder + MS-SSIM": dict(coder="auto", measure=True)}
    codecs = {name: [Codec.load(args.weights, coder=s["coder"], **options) for _ in range(args.encoders)]
              for name, s in setups.items()}
    first = codecs["+ coder"][0]
    engine = first.coder.engine if isinstance(first.coder, ContextCoder) else "none (raw)"
    gpu_name = torch.cuda.get_device_name() if first.device.type == "cuda" else "-"
    print(f"device {first.device} ({gpu_name}), precision {first.precision}, {args.encoders} encoders, "
          f"{len(images)} images = {megapixels:.1f} MP, coder engine {engine}, {os.cpu_count()} CPUs")

    def encoder(depth: int, measure: bool):
        def work(codec: Codec, share):
            blobs = []
            for i in range(0, len(share), args.call_images):
                blobs += [e.blob for e in codec.encode_many(share[i:i + args.call_images], depth, measure)]
            return blobs
        return work

    def decoder(codec: Codec, share):
        return [codec.decode_many(share[i:i + args.call_images]) for i in range(0, len(share), args.call_images)]

    print(f"{'depth':>5} | " + " | ".join(f"{name:>24}" for name in [*setups, "decode"]) + "   (MP/s, GPU use)")
    for depth in args.depths:
        cells, blobs = [], None
        for name, setup in setups.items():
            work = encoder(depth, setup["measure"])
            run_pass(codecs[name], images[:len(codecs[name])], work)  # warm-up: kernels, allocator, coder cache
            seconds, gpu, results = run_pass(codecs[name], images, work)
            cells.append(f"{megapixels / seconds:10.2f} MP/s, {gpu:>5}")
            if name == "+ coder":
                blobs = [b for r in results for b in r]
        decoders = codecs["+ coder"]
        run_pass(decoders, blobs[:len(decoders)], decoder)
        seconds, gpu, _ = run_pass(decoders, blobs, decoder)
        cells.append(f"{megapixels / seconds:10.2f} MP/s, {gpu:>5}")
        print(f"{depth:>5} | " + " | ".join(f"{c:>24}" for c in cells), flush=True)


if __name__ == "__main__":
    main()
