"""What stopping the encoder at a rate-control target saves, against coding every iteration
and cutting afterwards (the same streams; docs/ARCHIVE.md, "compress").

    python benchmarks/target_speed.py [--data ../shared/data/kodak] [--every 6] [--iterations 16]
"""

from __future__ import annotations

import argparse
import time

from rgbatch.codec import Codec
from rgbatch.imageio import read_image
from rgbatch.ratecontrol import Target
from rgbatch.train import list_images

TARGETS = (Target(msssim=0.95), Target(msssim=0.98), Target(bpp=0.25), Target(bpp=1.0))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/kodak")
    parser.add_argument("--every", type=int, default=6, help="every Nth image of the folder")
    parser.add_argument("--iterations", type=int, default=16)
    args = parser.parse_args()
    images = [read_image(p)[0] for p in list_images(args.data)[::args.every]]
    codec = Codec.load()
    codec.encode(images[0], 2)  # warm-up: the first call's costs went to the first target's row (until session 62)
    for target in TARGETS:
        start = time.perf_counter()
        cut = [codec.encode(image, args.iterations).at_target(target) for image in images]
        full_s = time.perf_counter() - start
        start = time.perf_counter()
        stopped = [codec.encode(image, args.iterations, target=target) for image in images]
        stopped_s = time.perf_counter() - start
        same = all(a.blob == b.blob and a.msssim == b.msssim for a, b in zip(cut, stopped))
        print(f"{target}: depths {[e.iterations for e in stopped]}, every iteration then cut {full_s:.1f} s, "
              f"stopping at the target {stopped_s:.1f} s ({full_s / stopped_s:.1f}x), same streams: {same}")


if __name__ == "__main__":
    main()
