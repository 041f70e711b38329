"""Exact decoding across devices: the same streams decoded on two devices, pixels compared.

    python benchmarks/exact_devices.py                       # cpu against cuda (on a GPU machine)
    python benchmarks/exact_devices.py --devices cpu cpu --threads 1   # here: one thread against two

Encodes the crops of tests/data with the shipped model (fp32, on the CPU), then decodes every
stream at depths 1, 4 and 16 on each device, with the exact decoder (rgbatch.exact, the default)
and the float one, and prints per decoding whether the two devices gave the same bytes, how
many pixels differ and by how much, and the seconds each decoding took. Exact decoding must
give identical bytes; the float decoder is there to show what it fixes.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from rgbatch.codec import Codec
from rgbatch.imageio import read_image

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", nargs=2, default=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=0, help="torch threads on the first device (0: default)")
    parser.add_argument("--depths", type=int, nargs="+", default=[1, 4, 16])
    args = parser.parse_args()
    images = {p.name: read_image(p)[0] for p in sorted(DATA.glob("*.png"))}
    encoder = Codec.load(precision="fp32", device="cpu", decoding="float")
    blobs = {name: encoder.encode(image, iterations=max(args.depths), measure=False).blob
             for name, image in images.items()}
    same = True
    for decoding in ("exact", "float"):
        codecs = [Codec.load(device=device, decoding=decoding) for device in args.devices]
        for name, blob in blobs.items():
            for depth in args.depths:
                decoded, seconds = [], []
                for n, codec in enumerate(codecs):
                    threads = torch.get_num_threads()
                    if n == 0 and args.threads:
                        torch.set_num_threads(args.threads)
                    start = time.perf_counter()
                    decoded.append(codec.decode(blob, depth).astype(int))
                    seconds.append(time.perf_counter() - start)
                    torch.set_num_threads(threads)
                diff = np.abs(decoded[0] - decoded[1])
                equal = not diff.any()
                same &= equal or decoding == "float"
                print(f"{decoding:5s} {name} depth {depth:2d}: {'same bytes' if equal else 'DIFFERENT'}"
                      f" ({(diff > 0).mean():.4%} of values differ, at most {diff.max()}); "
                      + " / ".join(f"{d} {s:.2f} s" for d, s in zip(args.devices, seconds)))
    print("exact decoding gave the same bytes on both" if same else "EXACT DECODING DIFFERED")
    raise SystemExit(0 if same else 1)


if __name__ == "__main__":
    main()
