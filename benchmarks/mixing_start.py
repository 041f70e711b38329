"""Fit coder id 3's starting weights (`mix.START`) on training images, and measure the mixing coder
against coder id 2 with them:

    python benchmarks/mixing_start.py --fit ../shared/data/train --fit ../shared/data/photos/train \
        --fit-images 3 --data ../shared/data/kodak --data ../shared/data/photos/val --images 8

The starting weights of mixed iteration t are the mean, over the fit images' codes (the shipped
model's, cached by `benchmarks/context_tables.py`), of the weights the kernels end chunk t with
when it starts from coder id 2's entry alone (weight 1 on q', 0 elsewhere). Never fitted on the
sets measured. Then, per --data set, the BD-rate (MS-SSIM over depths 1-16) of coder id 3 with
those weights against coder id 2, both by ideal code lengths (`code_lengths`: what the range
coder codes with) and, with --bytes, by the real stream bytes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from context_tables import cached_codes, folder_codes, shipped_codes  # noqa: E402

from rgbatch import fastcoder, mix  # noqa: E402
from rgbatch.bench import bd_rate, msssim_db  # noqa: E402
from rgbatch.codec import Codec  # noqa: E402
from rgbatch.context import Canvas, ContextModel  # noqa: E402
from rgbatch.entropy import AdaptiveCoder, MixingCoder  # noqa: E402
from rgbatch.train import list_images  # noqa: E402


def final_weights(codes: list[np.ndarray], model: ContextModel) -> np.ndarray:
    """The weights each mixed chunk of these codes ends with, started from coder id 2's entry alone."""
    layout = Canvas(tuple(c.shape[1:] for c in codes))
    canvas = layout.paint(codes)
    reads, own = fastcoder.step_offsets(model.features, model.bits, layout.height * layout.width, layout.width)
    out = np.zeros((mix.MIXED_ITERATIONS, mix.INPUTS), np.int64)
    for t in range(min(mix.MIXED_ITERATIONS, codes[0].shape[0])):
        out[t, 0] = 1 << mix.WEIGHT_BITS
        fastcoder.encode_chunk(canvas, layout.positions, reads[t], own[t], model.table[t], True, mix_weights=out[t],
                               width=layout.width)
    return out


def fit(images: list, model: ContextModel) -> np.ndarray:
    return np.round(np.mean([final_weights(codes, model) for codes in images], axis=0)).astype(np.int64)


def measure(folder: str, codec: Codec, cache: Path, limit: int, real_bytes: bool) -> str:
    mixing, adaptive = MixingCoder(codec.extra), AdaptiveCoder(codec.extra)
    ideal = {"mixing": [], "adaptive": []}
    sizes = {"mixing": [], "adaptive": []}
    quality = []
    for path in list_images(folder)[:limit or None]:
        codes, msssim, pixels = cached_codes(codec, path, cache)
        quality.append(msssim)
        for name, coder in (("mixing", mixing), ("adaptive", adaptive)):
            bits = np.sum([x.sum(axis=(1, 2, 3)) for x in coder.code_lengths(codes.tiles)], axis=0)
            ideal[name].append(np.cumsum(bits) / pixels)
            if real_bytes:
                sizes[name].append(8 * np.cumsum([len(c) for c in coder.encode(codes.tiles)]) / pixels)
    q = msssim_db(np.mean(quality, axis=0))
    line = (f"{folder}: {len(quality)} images; coder id 3 against coder id 2, ideal lengths: BD-rate "
            f"{bd_rate(np.mean(ideal['adaptive'], 0), q, np.mean(ideal['mixing'], 0), q):+.2f} %")
    change = 100 * (np.mean(ideal["mixing"], 0) / np.mean(ideal["adaptive"], 0) - 1)
    line += "; rate change at depth 1 / 2 / 4 / 8 / 16: " + " / ".join(f"{change[d]:+.2f}" for d in (0, 1, 3, 7, 15))
    if real_bytes:
        line += (f"; real bytes: BD-rate "
                 f"{bd_rate(np.mean(sizes['adaptive'], 0), q, np.mean(sizes['mixing'], 0), q):+.2f} %")
    return line


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fit", action="append", default=[], help="a folder of training images (repeatable)")
    parser.add_argument("--fit-images", type=int, default=3, help="the first N images of each --fit folder")
    parser.add_argument("--data", action="append", default=[], help="an image set measured (repeatable)")
    parser.add_argument("--images", type=int, default=8, help="the first N images of each set (0: all)")
    parser.add_argument("--bytes", action="store_true", help="also measure the real stream bytes")
    parser.add_argument("--weights", default=None, help="the model (default: the shipped one)")
    parser.add_argument("--cache", default="runs/context-tables-cache", help="codes cache of context_tables.py")
    args = parser.parse_args()
    codec, cache = shipped_codes(args.weights, args.cache)
    model = ContextModel.from_tensors(codec.extra)
    if args.fit:
        images = folder_codes(codec, args.fit, args.fit_images, cache)
        start = fit(images, model)
        print(f"starting weights fitted on {len(images)} images (q', table, history, prefix, pattern, pattern2, bias):")
        print("START = np.array([" + ",\n                  ".join(str(row.tolist()) for row in start) + "], np.int64)",
              flush=True)
        mix.START[:] = start  # what the coders below start from
    for folder in args.data:
        print(measure(folder, codec, cache, args.images, args.bytes), flush=True)


if __name__ == "__main__":
    main()
