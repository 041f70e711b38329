"""What widening the shipped model costs and keeps (docs/TRAINING.md, "Widening"):

    OMP_NUM_THREADS=1 python benchmarks/widening.py ../shared/data/kodak/kodim01.png ../shared/data/kodak/kodim02.png

For the shipped model and its widened copy (`rgbatch.widen`, --width): FLOPs per pixel per
iteration, the CPU time of encoding the first image at --depth in bf16 (one thread, best of
--repeats, after a warm-up), and on every image the code bits that differ between the two
at every depth, in fp32 (where the widened model must give the same codes) and in bf16
(where its rounding differs: the sums of split weights are not the same products), with the
MS-SSIM of both at every depth. For reference, the bits that differ between the shipped
model's own fp32 and bf16 codes.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch

from _common import report
from rgbatch.imageio import read_image
from rgbatch.model import flops_per_pixel
from rgbatch.metrics import msssim
from rgbatch.tiling import to_float, to_uint8
from rgbatch.weights import load_weights
from rgbatch.widen import widen


def in_precision(model, dtype):
    """A copy in `dtype`: set_precision converts the weights in place, and bf16 rounds them."""
    return copy.deepcopy(model).set_precision(dtype)


def codes(model, x, depth, dtype):
    """The codes (T, 1, bits, h, w) and the MS-SSIM of every depth's 8-bit image."""
    scores = []
    record = lambda t, x_hat: scores.append(round(msssim(to_uint8(x[0]), to_uint8(x_hat[0])), 5))
    return in_precision(model, dtype).encode(x, depth, on_iteration=record), scores


def encode_seconds(model, x, depth, repeats):
    model = in_precision(model, torch.bfloat16)
    model.encode(x[..., :64, :64], 2)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.process_time()
        model.encode(x, depth)
        times.append(time.process_time() - start)
    return min(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="+")
    parser.add_argument("--width", type=float, default=0.5)
    parser.add_argument("--depth", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", help="also write the summary here (JSON)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    narrow, mid, *_ = load_weights()
    wide = widen(narrow, args.width).eval()
    a = narrow.cfg.align  # whole images of Kodak's size; others cropped to the network's multiple
    images = [to_float(image[:image.shape[0] // a * a, :image.shape[1] // a * a].copy())[None]
              for image in (read_image(p)[0] for p in args.images)]
    summary = {"model": mid, "width": args.width, "depth": args.depth,
               "mflop_per_pixel_per_iteration": {w: round(flops_per_pixel(m.cfg) / 1e6, 4)
                                                 for w, m in (("narrow", narrow), ("wide", wide))},
               "bf16_encode_cpu_seconds": {w: round(encode_seconds(m, images[0], args.depth, args.repeats), 2)
                                           for w, m in (("narrow", narrow), ("wide", wide))},
               "bits_differing": []}
    for path, x in zip(args.images, images):
        (fp32, fp32_scores), (bf16, bf16_scores) = (
            zip(*(codes(m, x, args.depth, dtype) for m in (narrow, wide))) for dtype in (torch.float32, torch.bfloat16))
        summary["bits_differing"].append({
            "image": path, "bits": fp32[0].numel(),
            "wide_vs_shipped_fp32": int((fp32[1] != fp32[0]).sum()),
            "wide_vs_shipped_bf16_per_depth": (bf16[1] != bf16[0]).flatten(1).sum(1).tolist(),
            "shipped_bf16_vs_fp32_per_depth": (bf16[0] != fp32[0]).flatten(1).sum(1).tolist(),
            "msssim_fp32_shipped_wide": fp32_scores, "msssim_bf16_shipped_wide": bf16_scores})
    report(summary, args.out)


if __name__ == "__main__":
    main()
