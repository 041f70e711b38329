"""What the Ray pipeline costs over a plain loop, and how it scales from 1 to 2 workers.

    python benchmarks/pipeline_overhead.py --images 8 --crop 256 --iterations 4 --threads 1

Both sides encode the same images with the same model (the shipped one, or a random model
of the shipped width when it is missing: the same work), measuring MS-SSIM/PSNR at every
depth as `compress` does, with the same torch threads per encoder.

* loop: a fresh Python process reads each file and calls `Codec.encode`;
* batched loop: the same with `Codec.encode_many` over groups of images worth `--batch-size`
  tiles (8: the pipeline's GPU default, 16 its CPU default), each network batch within the
  device's pixel budget (`codec.BATCH_PIXELS`: on a CPU one 256 x 256 tile's worth, so big
  images go one at a time there, as in the plain loop, and thumbnails 16 at a time);
* pipeline: `rgbatch.pipeline.compress` with its defaults into a fresh archive, on a local
  Ray started beforehand (its start is reported apart); the loops run with no Ray up. Its
  calls hold what the batched loop's groups hold, so pipeline vs batched loop is the cost of
  Ray alone (actors, object store, reads as tasks, the Parquet writer).

A fresh process for the loops, because every compress run starts fresh encoder processes:
both sides pay Python start, imports, model load and the first-call warm-up of torch. The
measurements are interleaved and repeated (`--repeats`), each reported by its fastest run,
because on a shared machine the load drifts more than the differences measured.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import tempfile
import time
from pathlib import Path

from PIL import Image

from _common import kodak_images


def prepare_images(folder: Path, count: int, crop: int) -> list[Path]:
    """The first `count` Kodak images, centre-cropped to crop x crop when crop > 0."""
    paths = kodak_images(count)
    if not crop:
        return paths
    out = []
    for path in paths:
        image = Image.open(path)
        left, top = (image.width - crop) // 2, (image.height - crop) // 2
        out.append(folder / path.name)
        image.crop((left, top, left + crop, top + crop)).save(out[-1])
    return out


def encode_loop(paths, weights, iterations, tile_size, batch_size, threads, batched):
    """The plain loop (run in a fresh process): load the model, read and encode every image."""
    import torch

    from rgbatch.codec import Codec
    from rgbatch.imageio import read_image
    from rgbatch.tiling import tile_grid

    torch.set_num_threads(threads)
    codec = Codec.load(weights, device="cpu", tile_size=tile_size, batch_size=batch_size)
    if not batched:
        for path in paths:
            codec.encode(read_image(path)[0], iterations)
        return
    group, tiles = [], 0
    for image in [read_image(path)[0] for path in paths] + [None]:  # None flushes the last group
        count = len(tile_grid(*image.shape[:2], tile_size)) if image is not None else 0
        if group and (image is None or tiles + count > batch_size):
            codec.encode_many(group, iterations)
            group, tiles = [], 0
        if image is not None:
            group.append(image)
            tiles += count


def timed_loop(*args) -> float:
    start = time.perf_counter()
    process = multiprocessing.get_context("spawn").Process(target=encode_loop, args=args)
    process.start()
    process.join()
    if process.exitcode:
        raise SystemExit(f"the loop failed (exit code {process.exitcode})")
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--crop", type=int, default=0, help="centre crop size in pixels (0: whole images)")
    parser.add_argument("--iterations", type=int, default=4)
    parser.add_argument("--tile-size", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per encoder, loop included")
    parser.add_argument("--weights", default=None)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    import torch

    from rgbatch.model import CodecConfig, ResidualGRUCodec
    from rgbatch.pipeline import CompressOptions, compress, ray_session
    from rgbatch.weights import DEFAULT_WEIGHTS, save_weights

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        weights = args.weights or (DEFAULT_WEIGHTS if DEFAULT_WEIGHTS.exists() else None)
        if weights is None:
            torch.manual_seed(0)
            weights = tmp / "random-width-0.25.safetensors"
            save_weights(weights, ResidualGRUCodec(CodecConfig(width=0.25)))
        weights = str(weights)
        (tmp / "images").mkdir()
        paths = prepare_images(tmp / "images", args.images, args.crop)
        listing = tmp / "images.txt"
        listing.write_text("\n".join(str(p) for p in paths))
        pixels = sum(Image.open(p).width * Image.open(p).height for p in paths)

        worker_counts = [int(w) for w in args.workers.split(",")]
        times = {name: [] for name in ["loop", "batched_loop", *[f"pipeline_{w}_workers" for w in worker_counts]]}
        ray_start = []
        loop_args = (paths, weights, args.iterations, args.tile_size, args.batch_size, args.threads)
        for repeat in range(args.repeats):
            times["loop"].append(timed_loop(*loop_args, False))
            times["batched_loop"].append(timed_loop(*loop_args, True))
            start = time.perf_counter()
            with ray_session(num_cpus=os.cpu_count()):
                ray_start.append(time.perf_counter() - start)
                for workers in worker_counts:
                    options = CompressOptions(iterations=args.iterations, tile_size=args.tile_size,
                                              workers=workers, device="cpu", weights=weights,
                                              threads=args.threads)  # its default batch size
                    result = compress([str(listing)], str(tmp / f"archive-{workers}-{repeat}"), options)
                    assert result.ok == len(paths), result.failures
                    times[f"pipeline_{workers}_workers"].append(result.seconds)

    best = {name: min(runs) for name, runs in times.items()}
    results = {"images": len(paths), "megapixels": pixels / 1e6, "iterations": args.iterations,
               "threads_per_encoder": args.threads, "cpus": os.cpu_count(), "weights": weights,
               "ray_start_seconds": min(ray_start),
               **{name: {"seconds": best[name], "mp_per_s": pixels / 1e6 / best[name], "runs": runs}
                  for name, runs in times.items()}}
    for workers in worker_counts:
        name = f"pipeline_{workers}_workers"
        results[name]["vs_loop"] = best[name] / best["loop"] - 1
        results[name]["overhead_vs_batched_loop"] = best[name] / best["batched_loop"] - 1
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
