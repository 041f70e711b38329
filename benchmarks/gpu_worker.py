"""Throughput of the encode workers of one GPU, without Ray (issue 18's GPU target).

    python benchmarks/gpu_worker.py                       # on a lent GPU machine (make gpu-bench): minutes
    python benchmarks/gpu_worker.py --device cpu --size 64 --images 4 --depths 1 2 --encoders 1   # smoke test

Runs what `rgbatch compress` runs on a GPU machine, without Ray: --encoders processes (as its
ENCODERS_PER_GPU encoder actors), each with its own codec on the one device, encode --images
random smooth images of --size px between them, --call-images images per `Codec.encode_many`
call (one encoder call). Each encoder runs its calls one after the other (seq), or two at a
time on two threads that share its codec (ovl, as `compress --overlap`: one call's network and
MS-SSIM on the device while the other call's entropy coder runs). Per depth, the MP/s of all
encoders together (wall clock from the first encoder's start to the last one's end, after a
warm-up call in each; the fastest of --repeats) and the GPU's mean use over that time
(nvidia-smi every 0.1 s; "n/a" without it), for:

  - network: the raw coder (bit packing), nothing measured: the network's speed in a worker;
  - + coder: the weights' default coder (the adaptive coder, coder id 2, for the shipped model
    since session 11; the context coder, id 1, before);
  - + coder + MS-SSIM: and MS-SSIM and PSNR at every depth, measured on the device (what
    compress records by default);

then decoding (restore) at the deepest depth, the entropy-coded streams back to pixels.

It first prints the machine and the context coder's engine in the encoders: "compiled" needs
numba there; without numba the constriction engine codes the same bytes, several times slower
and holding the GIL (README, "Speed of the entropy coder"). And it checks the device's MS-SSIM
against the CPU's on the reconstructions of two images (their largest difference). Needs torch,
numpy and rgbatch's own dependencies (constriction, pytorch-msssim, safetensors), not Ray.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import subprocess
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import numpy as np

SETUPS = {  # name: (coder, measure)
    "network": ("raw", False),
    "+ coder": ("auto", False),
    "+ coder + MS-SSIM": ("auto", True),
}
MODES = {"seq": False, "ovl": True}  # calls in flight per encoder: one, or two overlapped


class GpuMonitor:
    """The GPU's utilisation (%) sampled every 0.1 s by nvidia-smi while in a `with` block."""

    def __init__(self):
        self.samples: list[tuple[float, float]] = []  # (time.perf_counter(), %)
        self.tool = shutil.which("nvidia-smi")
        self._stop = threading.Event()

    def _poll(self):
        while not self._stop.is_set():
            out = subprocess.run([self.tool, "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                                  "--id=0"], capture_output=True, text=True)
            if out.returncode == 0 and out.stdout.strip():
                self.samples.append((time.perf_counter(), float(out.stdout.split()[0])))
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

    def mean(self, start: float, end: float) -> str:
        """Mean use over [start, end] (perf_counter: one clock for all processes on Linux)."""
        inside = [u for t, u in self.samples if start <= t <= end]
        return f"{np.mean(inside):3.0f} %" if inside else "  n/a"


def test_images(count: int, size: int, data: str | None) -> list[np.ndarray]:
    if data:
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


# -- in each encoder process ---------------------------------------------------------------------
_ARGS = None
_CODECS: dict = {}  # setup name: this encoder's codec
_IMAGES: list[np.ndarray] = []
_BARRIER = None  # all encoders start each timed pass together


def start_encoder(args, barrier):
    global _ARGS, _BARRIER
    import torch

    from rgbatch.codec import Codec

    _ARGS, _BARRIER = args, barrier
    torch.set_num_threads(args.threads)
    _IMAGES[:] = test_images(args.images, args.size, args.data)
    options = dict(device=args.device, precision=args.precision, batch_size=args.batch_size)
    _CODECS.update({name: Codec.load(args.weights, coder=coder, **options) for name, (coder, _) in SETUPS.items()})


def describe() -> dict:
    """This encoder's device, precision and context coder engine."""
    import torch

    codec = _CODECS["+ coder"]
    try:
        import rgbatch.fastcoder  # noqa: F401  (what the coder's "auto" engine tried)
        import numba
        kernels = f"numba {numba.__version__}"
    except ImportError as e:
        kernels = f"{type(e).__name__}: {e}"
    return dict(device=str(codec.device), precision=codec.precision, engine=getattr(codec.coder, "engine", "none"),
                coder=codec.coder.name, kernels=kernels, torch=torch.__version__, cuda=torch.version.cuda,
                gpu=torch.cuda.get_device_name() if codec.device.type == "cuda" else "-")


def calls_of(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def in_flight(work, calls: list, overlap: bool) -> list:
    """`work(call)` of each call, in order: one call at a time, or two on two threads (overlapped)."""
    with ThreadPoolExecutor(2 if overlap else 1) as pool:
        return list(pool.map(work, calls))


def timed(work, calls: list, overlap: bool):
    """(start, end, results) of the calls after a warm-up call, all encoders starting together."""
    import torch

    work(calls[0])  # warm-up: kernels loaded or compiled, allocator, cuDNN's choices
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    sync()
    _BARRIER.wait(timeout=600)
    start = time.perf_counter()
    results = in_flight(work, calls, overlap)
    sync()
    return start, time.perf_counter(), results


def encode_share(rank: int, setup: str, depth: int, overlap: bool):
    """Encoder `rank`'s share of the images: (start, end, their blobs)."""
    codec, measure = _CODECS[setup], SETUPS[setup][1]
    share = _IMAGES[rank::_ARGS.encoders]

    def work(call):
        return [e.blob for e in codec.encode_many(call, depth, measure)]

    start, end, blobs = timed(work, calls_of(share, _ARGS.call_images), overlap)
    return start, end, [b for call in blobs for b in call]


def decode_share(blobs: list[bytes], overlap: bool):
    codec = _CODECS["+ coder"]
    start, end, _ = timed(codec.decode_many, calls_of(blobs, _ARGS.call_images), overlap)
    return start, end, None


def check_msssim(depth: int) -> tuple[float, float, int]:
    """(largest |MS-SSIM on the device - on the CPU|, largest |PSNR difference|, values compared)
    over the reconstructions of two images at every depth up to `depth`."""
    from rgbatch.metrics import QualityMeter

    encoded = _CODECS["+ coder + MS-SSIM"].encode_many(_IMAGES[:2], depth, keep_reconstructions=True)
    msssim_diff = psnr_diff = 0.0
    for image, enc in zip(_IMAGES, encoded):
        meter = QualityMeter(image, depth)  # on the CPU
        for t, reconstruction in enumerate(enc.reconstructions):
            meter.add(t, 0, reconstruction)
        meter.flush()
        msssim_diff = max([msssim_diff] + [abs(meter.msssim(t) - enc.msssim[t]) for t in range(depth)])
        psnr_diff = max([psnr_diff] + [abs(meter.psnr(t) - enc.psnr[t]) for t in range(depth)])
    return msssim_diff, psnr_diff, 2 * depth


# -- the driver ------------------------------------------------------------------------------------
def run_pass(pool, gpu: GpuMonitor, megapixels: float, task, jobs) -> tuple[float, str, list]:
    """(MP/s, GPU use, results) of one task per encoder, run together."""
    results = list(pool.map(task, *zip(*jobs)))
    start, end = min(r[0] for r in results), max(r[1] for r in results)
    return megapixels / (end - start), gpu.mean(start, end), [r[2] for r in results]


def engine_line(info: dict) -> str:
    if info["engine"] == "compiled":
        return f"compiled kernels ({info['kernels']})"
    if info["engine"] == "constriction":
        return (f"constriction: the compiled kernels did not import ({info['kernels']}); the same bytes, several "
                f"times slower, and constriction holds the GIL")
    return f"{info['coder']} (these weights carry no context coder)"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", help="weight file (default: the shipped model)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--depths", type=int, nargs="+", default=[1, 4, 16], help="decoding: the deepest")
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--size", type=int, default=1024, help="side of the random images (px)")
    parser.add_argument("--data", help="a folder of images to use instead (the first --images)")
    parser.add_argument("--encoders", type=int, default=4, help="encoder processes sharing the device")
    parser.add_argument("--threads", type=int, default=0, help="torch threads per encoder (0: the CPUs shared out)")
    parser.add_argument("--batch-size", type=int, default=8, help="tiles per network batch (compress: 8 on a GPU)")
    parser.add_argument("--call-images", type=int, default=4, help="images per encode_many call (one encoder call)")
    parser.add_argument("--repeats", type=int, default=1, help="passes of each kind, interleaved; the fastest is shown")
    args = parser.parse_args()
    args.threads = args.threads or max(1, (os.cpu_count() or 1) // args.encoders)
    if args.images < args.encoders:
        parser.error("--images must be at least --encoders (each encoder codes a share)")

    images = test_images(args.images, args.size, args.data)
    megapixels = sum(im.shape[0] * im.shape[1] for im in images) / 1e6
    ranks = range(args.encoders)
    deepest = max(args.depths)
    spawn = multiprocessing.get_context("spawn")  # a fresh process per encoder, as Ray's actors (and CUDA needs)
    with ProcessPoolExecutor(args.encoders, mp_context=spawn, initializer=start_encoder,
                             initargs=(args, spawn.Barrier(args.encoders))) as pool, GpuMonitor() as gpu:
        info = pool.submit(describe).result()
        print(f"device {info['device']} ({info['gpu']}), torch {info['torch']} (CUDA {info['cuda']}), "
              f"{os.cpu_count()} CPUs; precision {info['precision']}; {args.encoders} encoder processes of "
              f"{args.threads} torch thread(s), {args.batch_size} tiles a batch, {args.call_images} images a call; "
              f"{len(images)} images = {megapixels:.1f} MP", flush=True)
        print(f"context coder engine: {engine_line(info)}", flush=True)
        msssim_diff, psnr_diff, count = pool.submit(check_msssim, deepest).result()
        print(f"MS-SSIM measured on {info['device']} vs on the CPU, {count} values: largest difference "
              f"{msssim_diff:.1e} (PSNR {psnr_diff:.1e} dB)", flush=True)

        best, streams = {}, None  # (setup, mode, depth): (MP/s, GPU use) of its fastest pass

        def measure(key, task, jobs):
            rate, use, results = run_pass(pool, gpu, megapixels, task, jobs)
            best[key] = max(best.get(key, (0.0, "")), (rate, use))
            return results

        def cell(key):
            return f"{best[key][0]:9.3g} MP/s ({best[key][1]})"

        print("MP/s (GPU use) of all encoders; seq: one call at a time per encoder, ovl: two overlapped")
        print(f"{'depth':>5} | " + " | ".join(f"{f'{n} {m}':>23}" for n in SETUPS for m in MODES), flush=True)
        for depth in args.depths:
            for _ in range(args.repeats):  # the kinds interleaved: a shared machine drifts
                for name in SETUPS:
                    for mode, overlap in MODES.items():
                        results = measure((name, mode, depth), encode_share, [(r, name, depth, overlap) for r in ranks])
                        if name == "+ coder" and depth == deepest:
                            streams = results  # per encoder, the blobs of its share
            cells = [cell((name, mode, depth)) for name in SETUPS for mode in MODES]
            print(f"{depth:>5} | " + " | ".join(f"{c:>23}" for c in cells), flush=True)
        for _ in range(args.repeats):
            for mode, overlap in MODES.items():
                measure(("decode", mode, deepest), decode_share, [(b, overlap) for b in streams])
        print(f"decode at depth {deepest}: " + ", ".join(f"{m} {cell(('decode', m, deepest)).strip()}" for m in MODES))

        full = max(best["+ coder + MS-SSIM", m, deepest][0] for m in MODES)
        network = max(best["network", m, deepest][0] for m in MODES)
        print(f"depth {deepest}, the best with coder and MS-SSIM: {full:.2f} MP/s, {100 * full / network:.0f} % of "
              f"the network's best ({network:.2f} MP/s); issue 18's targets on an H100/H200: 50 MP/s and 60 %")

if __name__ == "__main__":
    main()
