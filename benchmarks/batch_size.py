"""How encoding and decoding speed on a CPU depend on the batch: tiles of several images at once.

    OMP_NUM_THREADS=1 python benchmarks/batch_size.py --sides 64 128 256 --batches 1 4 16

Crops of SIDE x SIDE from Kodak images (each a tile of its own, as a thumbnail is) are encoded
with `Codec.encode_many` (MS-SSIM measured at every depth, as `compress` does) and decoded with
`Codec.decode_many`, `--batch` tiles a network batch, the pixel budget of a batch
(`codec.BATCH_PIXELS`) lifted so that the batch is what is asked; best of `--repeats` after a
warm-up. The CPU's `BATCH_PIXELS` (docs/TILING.md, "Batches on a CPU") is read off this table.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from rgbatch import codec as codec_module
from rgbatch.codec import Codec
from rgbatch.imageio import read_image

from _common import kodak_images


def crops(side: int, count: int) -> list[np.ndarray]:
    """`count` crops of side x side, taken in turn from the Kodak images at shifting places."""
    images = [read_image(p)[0] for p in kodak_images(8)]
    if side > min(min(image.shape[:2]) for image in images):
        raise SystemExit(f"--sides {side}: larger than a Kodak image")
    out = []
    for i in range(count):
        image = images[i % len(images)]
        y, x = (i * 37) % (image.shape[0] - side + 1), (i * 53) % (image.shape[1] - side + 1)
        out.append(np.ascontiguousarray(image[y:y + side, x:x + side]))
    return out


def best_seconds(run, repeats: int) -> float:
    run()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sides", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--images", type=int, default=16, help="crops per side")
    parser.add_argument("--iterations", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--no-decode", action="store_true", help="time encoding alone")
    parser.add_argument("--weights", default=None, help="default: the shipped model")
    args = parser.parse_args()

    codec_module.BATCH_PIXELS["cpu"] = 1 << 40  # the batch is --batch alone
    print(f"torch threads {torch.get_num_threads()}, depth {args.iterations}, {args.images} crops a side")
    print(f"{'side':>5} {'batch':>5} {'encode s/img':>12} {'encode MP/s':>11} {'decode s/img':>12}")
    for side in args.sides:
        images = crops(side, args.images)
        blobs = None
        for batch in args.batches:
            codec = Codec.load(args.weights, device="cpu", batch_size=batch)
            encode = best_seconds(lambda: codec.encode_many(images, args.iterations), args.repeats)
            blobs = blobs or [e.blob for e in codec.encode_many(images, args.iterations, measure=False)]
            decode = None if args.no_decode else best_seconds(
                lambda: codec.decode_many(blobs, [args.iterations] * len(blobs)), args.repeats)
            print(f"{side:>5} {batch:>5} {encode / len(images):>12.3f} {side * side * len(images) / encode / 1e6:>11.4f} "
                  f"{'-' if decode is None else f'{decode / len(images):.3f}':>12}", flush=True)


if __name__ == "__main__":
    main()
