"""Encode and decode time of one image with each entropy coder, in CPU seconds of one thread,
to compare two checkouts side by side (a refactoring must leave them within noise):

    OMP_NUM_THREADS=1 PYTHONPATH=/path/to/other/checkout python benchmarks/codec_speed.py
    OMP_NUM_THREADS=1 python benchmarks/codec_speed.py [--image ../shared/data/kodak/kodim23.png]

CPU time, not wall time: on a machine shared with other work, wall times of the same run
varied by 1.5x here, CPU times by about 10 %. Run the two checkouts alternately, a few times.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import rgbatch
from rgbatch.codec import Codec
from rgbatch.imageio import read_image


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default="../shared/data/kodak/kodim23.png")
    parser.add_argument("--iterations", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--precision", default="fp32")
    args = parser.parse_args()
    torch.set_num_threads(1)
    image, _ = read_image(args.image)
    print(f"rgbatch from {rgbatch.__file__}; {args.image}, depth {args.iterations}, {args.precision}, 1 thread")
    for coder in ("context", "raw"):
        codec = Codec.load(coder=coder, precision=args.precision)
        codec.encode(image[:128, :128], 2, measure=False)  # warm-up
        encode_s, decode_s = [], []
        for _ in range(args.repeats):
            start = time.process_time()
            blob = codec.encode(image, args.iterations, measure=False).blob
            encoded = time.process_time()
            codec.decode(blob)
            encode_s.append(encoded - start)
            decode_s.append(time.process_time() - encoded)
        print(f"{coder:8s} encode {statistics.median(encode_s):.3f} s (min {min(encode_s):.3f}), "
              f"decode {statistics.median(decode_s):.3f} s (min {min(decode_s):.3f}), {len(blob)} bytes")


if __name__ == "__main__":
    main()
