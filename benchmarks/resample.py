"""Resampled coding (README, "Resampled coding"): the rate a quality target needs with scale 1
only and with `resample="auto"`, per image and per target, from real streams.

    OMP_NUM_THREADS=1 python benchmarks/resample.py ../shared/data/photos/val --every 3 --threads 1

Each image is encoded once at every scale (1, 3/4, 1/2: `Codec.encode(resample=code)`, the real
streams, upscaled by the decoder's integer Lanczos and measured at full size against the
original) to the full depth. For each MS-SSIM target, "scale 1" is the stream that scale cut
to the first depth reaching the target, "auto" the candidate `ratecontrol.choose_candidate`
prefers among the three so cut: what `Codec.encode_many(target=..., resample="auto")` writes
(checked on the first image). Means are over the images whose scale-1 stream reaches the
target. "interpolated" rows give the same means from each curve interpolated between depths
(`bench.bpp_at_quality`, as `rgbatch bench` compares codecs). Times: the encoding time of each
scale to the full depth summed over the images (auto without a target would pay all three),
and, with a target (`--time-target`, 0.95), `Codec.encode(target=...)` against
`Codec.encode(target=..., resample="auto")`, whose stream is checked to be the one computed here.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from _common import image_set_parser, report
from rgbatch.bench import bpp_at_quality
from rgbatch.codec import Codec
from rgbatch.imageio import read_image
from rgbatch.ratecontrol import Target, choose_candidate
from rgbatch.resample import SCALE_NAMES, SCALES, usable

TARGETS = (0.90, 0.93, 0.95, 0.97, 0.98)


def encode_scales(codec: Codec, image: np.ndarray, iterations: int) -> tuple[dict, dict]:
    """Every usable scale's encoding of the image to `iterations`, and its encoding seconds."""
    encodings, seconds = {}, {}
    for code in SCALES:
        if usable(image.shape[1], image.shape[0], code):
            start = time.perf_counter()
            encodings[code] = codec.encode(image, iterations, resample=code)
            seconds[code] = time.perf_counter() - start
    return encodings, seconds


def at_target(encodings: dict, goal: Target, pixels: int) -> tuple[int, float, bool]:
    """(scale auto keeps, its bpp, whether scale 1 reaches the target) for one image."""
    cut = {code: e.at_target(goal) for code, e in encodings.items()}
    codes = list(cut)
    pick = codes[choose_candidate(goal, [cut[c].bytes[-1] for c in codes], [cut[c].msssim[-1] for c in codes], pixels)]
    return pick, cut[pick].bpp[-1], cut[0].msssim[-1] >= goal.msssim


def main():
    parser = image_set_parser(__doc__)
    parser.add_argument("--time-target", type=float, default=0.95, help="MS-SSIM target of the timed encodings")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    codec = Codec.load(args.weights, precision=args.precision)
    paths = sorted(args.folder.glob("*.png"))[::args.every]
    codec.encode(read_image(paths[0])[0], 1)  # warm-up, untimed (the first image's scale 1 paid it until session 62)
    images, seconds, targeted = [], {code: 0.0 for code in SCALES}, {"scale_1": 0.0, "auto": 0.0}
    for path in paths:
        image = read_image(path)[0]
        encodings, took = encode_scales(codec, image, args.iterations)
        for code, s in took.items():
            seconds[code] += s
        goal = Target(msssim=args.time_target)
        for name, resample in (("scale_1", "none"), ("auto", "auto")):
            start = time.perf_counter()
            chosen = codec.encode(image, args.iterations, target=goal, resample=resample)
            targeted[name] += time.perf_counter() - start
        pick, _, _ = at_target(encodings, goal, image.shape[0] * image.shape[1])
        # the codec's own auto keeps what this benchmark computes
        assert (chosen.scale, chosen.blob) == (pick, encodings[pick].at_target(goal).blob), path
        images.append((path.name, image.shape[0] * image.shape[1], encodings))
        print(f"{path.name}: " + ", ".join(f"scale {SCALE_NAMES[c]} {took[c]:.1f} s" for c in took)
              + f"; at MS-SSIM {goal.msssim} auto keeps scale {SCALE_NAMES[pick]}", flush=True)

    rows = {}
    for q in TARGETS:
        goal, full, auto, full_i, auto_i, picks = Target(msssim=q), [], [], [], [], []
        for name, pixels, encodings in images:
            pick, bpp, reached = at_target(encodings, goal, pixels)
            if not reached:
                continue
            full.append(encodings[0].at_target(goal).bpp[-1])
            auto.append(bpp)
            picks.append(SCALE_NAMES[pick])
            curves = [bpp_at_quality(e.bpp, e.msssim, q) for e in encodings.values()]
            full_i.append(curves[0])
            auto_i.append(min(c for c in curves if c is not None))
        if not full:  # no image reaches it at this depth
            continue
        rows[f"{q:.2f}"] = {
            "images": len(full), "bpp_scale_1": float(np.mean(full)), "bpp_auto": float(np.mean(auto)),
            "change_pct": 100 * (np.mean(auto) / np.mean(full) - 1),
            "interpolated_scale_1": float(np.mean(full_i)), "interpolated_best": float(np.mean(auto_i)),
            "interpolated_change_pct": 100 * (np.mean(auto_i) / np.mean(full_i) - 1),
            "auto_picks": {name: picks.count(name) for name in SCALE_NAMES.values()}}
    megapixels = sum(pixels for _, pixels, _ in images) / 1e6
    summary = {"folder": str(args.folder), "images": len(images), "megapixels": megapixels,
               "iterations": args.iterations, "precision": codec.precision, "threads": args.threads,
               "at_msssim": rows,
               "encode_seconds": {SCALE_NAMES[c]: round(s, 2) for c, s in seconds.items()},
               "all_scales_time_vs_scale_1": sum(seconds.values()) / seconds[0],
               f"encode_seconds_at_msssim_{args.time_target}": {k: round(v, 2) for k, v in targeted.items()},
               "auto_time_vs_scale_1_with_target": targeted["auto"] / targeted["scale_1"]}
    print("target  images  bpp scale 1  bpp auto  change   (interpolated: scale 1, best, change)  auto picks 1/0.75/0.5")
    for q, r in rows.items():
        print(f"{q}    {r['images']:6d}  {r['bpp_scale_1']:11.4f}  {r['bpp_auto']:8.4f}  {r['change_pct']:+6.1f} %"
              f"   ({r['interpolated_scale_1']:.4f}, {r['interpolated_best']:.4f}, {r['interpolated_change_pct']:+.1f} %)"
              f"  {'/'.join(str(v) for v in r['auto_picks'].values())}")
    report(summary, args.json)


if __name__ == "__main__":
    main()
