"""Encode and decode time of one image with each entropy coder, in CPU seconds of one thread,
to compare two checkouts side by side (a refactoring must leave them within noise), or two weight
files in one run (issue 16's limit on a wider model's encoding time):

    OMP_NUM_THREADS=1 PYTHONPATH=/path/to/other/checkout python benchmarks/codec_speed.py
    OMP_NUM_THREADS=1 python benchmarks/codec_speed.py [--image ../shared/data/kodak/kodim23.png]
    OMP_NUM_THREADS=1 python benchmarks/codec_speed.py --weights old.safetensors --weights new.safetensors \
        --iterations 16 --precision auto --coders adaptive

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
    parser.add_argument("--coders", nargs="+", default=["context", "raw"])
    parser.add_argument("--weights", action="append", help="a weight file (repeat to compare; default: the shipped one)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    image, _ = read_image(args.image)
    print(f"rgbatch from {rgbatch.__file__}; {args.image}, depth {args.iterations}, {args.precision}, 1 thread")
    codecs = {(weights, coder): Codec.load(weights, coder=coder, precision=args.precision)
              for weights in args.weights or [None] for coder in args.coders}
    times, sizes = {key: ([], []) for key in codecs}, {}
    for _ in range(args.repeats):  # the files and coders in turn, so that a machine's drift hits all alike
        for key, codec in codecs.items():
            codec.encode(image[:128, :128], 2, measure=False)  # warm-up
            start = time.process_time()
            blob = codec.encode(image, args.iterations, measure=False).blob
            encoded = time.process_time()
            codec.decode(blob)
            times[key][0].append(encoded - start)
            times[key][1].append(time.process_time() - encoded)
            sizes[key] = len(blob)
    for (weights, coder), (encode_s, decode_s) in times.items():
        print(f"{weights or 'shipped'} ({codecs[weights, coder].model_id}) {coder:8s} "
              f"encode {statistics.median(encode_s):.3f} s (min {min(encode_s):.3f}), "
              f"decode {statistics.median(decode_s):.3f} s (min {min(decode_s):.3f}), {sizes[weights, coder]} bytes")


if __name__ == "__main__":
    main()
