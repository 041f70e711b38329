"""Fit a mixing coder's starting weights (`mix.Design.start`: coder id 3's or 4's) on training images,
and measure that coder against coder id 2 (and coder id 4 against coder id 3) with them:

    python benchmarks/mixing_start.py --coder mixing2 --passes 2 --fit ../shared/data/train \
        --fit ../shared/data/photos/train --fit-images 8 --data ../shared/data/kodak --data ../shared/data/photos/val --images 8

The starting weights of mixed iteration t are the mean, over the fit images' codes (the shipped
model's, cached by `benchmarks/context_tables.py`), of the weights the kernels end chunk t with
when it starts from coder id 2's entry alone (weight 1 on q', 0 elsewhere); with --passes 2,
again from those means (coder id 4's start: 0.04-0.06 points better than one pass in session 27).
Never fitted on the sets measured. Then, per --data set, the BD-rate (MS-SSIM over depths 1-16)
of the coder with those weights against coder id 2 (and coder id 3), by ideal code lengths
(`code_lengths`: what the range coder codes with) and, with --bytes, by the real stream bytes.
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
from rgbatch.entropy import CODERS, AdaptiveCoder, MixingCoder  # noqa: E402
from rgbatch.train import list_images  # noqa: E402


def final_weights(codes: list[np.ndarray], model: ContextModel, design: mix.Design, start: np.ndarray) -> np.ndarray:
    """The weights each mixed chunk of these codes ends with, started from `start`."""
    layout = Canvas(tuple(c.shape[1:] for c in codes))
    canvas = layout.paint(codes)
    reads, own = fastcoder.step_offsets(model.features, model.bits, layout.height * layout.width, layout.width)
    out = start.copy()
    for t in range(min(design.iterations, codes[0].shape[0])):
        fastcoder.encode_chunk(canvas, layout.positions, reads[t], own[t], model.table[t], True, mix_weights=out[t],
                               width=layout.width, grouped=design.group)
    return out


def fit(images: list, model: ContextModel, design: mix.Design, passes: int) -> np.ndarray:
    start = np.zeros_like(design.start)
    start[:, 0] = 1 << mix.WEIGHT_BITS  # coder id 2's entry alone
    for _ in range(passes):
        start = np.round(np.mean([final_weights(codes, model, design, start) for codes in images], axis=0)).astype(np.int64)
    return start


def measure(folder: str, codec: Codec, cache: Path, limit: int, real_bytes: bool, coder: str) -> str:
    coders = {"test": CODERS[coder](codec.extra), "adaptive": AdaptiveCoder(codec.extra)}
    if coder != MixingCoder.name:
        coders["mixing"] = MixingCoder(codec.extra)
    ideal = {name: [] for name in coders}
    sizes = {name: [] for name in coders}
    quality = []
    for path in list_images(folder)[:limit or None]:
        codes, msssim, pixels = cached_codes(codec, path, cache)
        quality.append(msssim)
        for name, entropy_coder in coders.items():
            bits = np.sum([x.sum(axis=(1, 2, 3)) for x in entropy_coder.code_lengths(codes.tiles)], axis=0)
            ideal[name].append(np.cumsum(bits) / pixels)
            if real_bytes:
                sizes[name].append(8 * np.cumsum([len(c) for c in entropy_coder.encode(codes.tiles)]) / pixels)
    q = msssim_db(np.mean(quality, axis=0))
    line = f"{folder}: {len(quality)} images; {coder}, ideal lengths:"
    for other in [name for name in coders if name != "test"]:
        line += f" BD-rate {bd_rate(np.mean(ideal[other], 0), q, np.mean(ideal['test'], 0), q):+.2f} % against {other}"
    change = 100 * (np.mean(ideal["test"], 0) / np.mean(ideal["adaptive"], 0) - 1)
    line += "; rate change against adaptive at depth 1 / 2 / 4 / 8 / 16: " + " / ".join(
        f"{change[d]:+.2f}" for d in (0, 1, 3, 7, 15))
    if real_bytes:
        for other in [name for name in coders if name != "test"]:
            line += (f"; real bytes: BD-rate "
                     f"{bd_rate(np.mean(sizes[other], 0), q, np.mean(sizes['test'], 0), q):+.2f} % against {other}")
    return line


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--coder", default="mixing2", help="the mixing coder: mixing (id 3) or mixing2 (id 4)")
    parser.add_argument("--passes", type=int, default=2, help="fitting passes, each from the last one's means")
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
    design = CODERS[args.coder].design
    if args.fit:
        images = folder_codes(codec, args.fit, args.fit_images, cache)
        start = fit(images, model, design, args.passes)
        print(f"starting weights of {args.coder} fitted on {len(images)} images in {args.passes} passes "
              "(q', table, history, prefix, pattern, pattern2, bias, group):")
        print("np.array([" + ",\n          ".join(str(row.tolist()) for row in start) + "], np.int64)", flush=True)
        design.start[:] = start  # what the coders below start from
    for folder in args.data:
        print(measure(folder, codec, cache, args.images, args.bytes, args.coder), flush=True)


if __name__ == "__main__":
    main()
