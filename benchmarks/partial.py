"""Partial last iteration (README, "Partial last iteration"): the rate a quality target needs with
whole iterations and with `partial=True`, per image and per target, from real streams.

    OMP_NUM_THREADS=1 python benchmarks/partial.py ../shared/data/kodak --every 3 --threads 1
    OMP_NUM_THREADS=1 python benchmarks/partial.py ../shared/data/kodak --every 6 --from-scratch

For each image and MS-SSIM target, `Codec.encode(target=...)` (whole iterations: the first
depth reaching the target) and `Codec.encode(target=..., partial=True)` (that, or depth k - 1
plus the first m of iteration k's 64 coding steps, whichever is fewer bytes reaching it; with
`--resample auto`, also at scales 3/4 and 1/2: the two levers together); each
partial stream is decoded and checked to give the MS-SSIM its encoder recorded. Means are over the
images whose whole-iteration stream reaches the target; "overshoot" is the mean MS-SSIM above
the target; "partial" counts the images that keep a partial last chunk. Times: the encodings
summed over the images and targets. `--from-scratch` also times `partial=True` as session 12
coded it, every candidate decoded from scratch (`codec.RESUMED_PIXELS = 0`: no decoder state
kept), interleaved with the others so that all three see the same machine, and checks that it
writes the same streams.
"""

from __future__ import annotations

import time
from unittest import mock

import numpy as np
import torch

from _common import image_set_parser, report
from rgbatch import codec as codec_module
from rgbatch.codec import Codec
from rgbatch.imageio import read_image
from rgbatch.metrics import msssim_many
from rgbatch.ratecontrol import Target

TARGETS = (0.90, 0.93, 0.95, 0.97, 0.98)


def main():
    parser = image_set_parser(__doc__)
    parser.add_argument("--resample", default="none",
                        help="resampled coding on the partial side too (none, auto, 0.75, 0.5): the two levers together")
    parser.add_argument("--from-scratch", action="store_true",
                        help="also time partial=True with every candidate decoded from scratch (session 12)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    # float decoding, the arithmetic of the encoder's loop, so that a decoder gives exactly what was
    # measured (the exact decoder, the default since session 18, differs by ~1e-5: README, "Exact decoding")
    codec = Codec.load(args.weights, precision=args.precision, decoding="float")
    paths = sorted(args.folder.glob("*.png"))[::args.every]
    results = {q: [] for q in TARGETS}  # per target: (whole, partial) EncodedImage of each image
    seconds = {"whole": 0.0, "partial": 0.0, **({"from_scratch": 0.0} if args.from_scratch else {})}
    for path in paths:
        image = read_image(path)[0]
        line = []
        for q in TARGETS:
            goal = Target(msssim=q)
            pair = []
            for name, partial in (("whole", False), ("partial", True)):
                start = time.perf_counter()
                pair.append(codec.encode(image, args.iterations, target=goal, partial=partial,
                                         resample=args.resample if partial else "none"))
                seconds[name] += time.perf_counter() - start
            whole, part = pair
            if args.from_scratch:
                start = time.perf_counter()
                with mock.patch.object(codec_module, "RESUMED_PIXELS", 0):
                    scratch = codec.encode(image, args.iterations, target=goal, partial=True, resample=args.resample)
                seconds["from_scratch"] += time.perf_counter() - start
                assert scratch.blob == part.blob, path  # the same candidates, the same choice
            decoded = codec.decode(part.blob)  # what a decoder gives is what the encoder measured
            assert abs(msssim_many(image, [decoded])[0] - part.msssim[-1]) < 1e-6, path
            results[q].append((whole, part))
            line.append(f"{q}: {whole.bpp[-1]:.3f} -> {part.bpp[-1]:.3f} bpp"
                        + (f" ({part.steps} steps of {part.iterations})" if part.steps else ""))
        print(f"{path.name}: " + "; ".join(line), flush=True)

    rows = {}
    for q, pairs in results.items():
        kept = [(w, p) for w, p in pairs if w.msssim[-1] >= q]
        if not kept:
            continue
        whole = np.mean([w.bpp[-1] for w, _ in kept])
        part = np.mean([p.bpp[-1] for _, p in kept])
        rows[f"{q:.2f}"] = {
            "images": len(kept), "bpp_whole": float(whole), "bpp_partial": float(part),
            "change_pct": 100 * (part / whole - 1),
            "overshoot_whole": float(np.mean([w.msssim[-1] - q for w, _ in kept])),
            "overshoot_partial": float(np.mean([p.msssim[-1] - q for _, p in kept])),
            "partial_kept": sum(1 for _, p in kept if p.steps)}
    pixels = sum(w.width * w.height for w, _ in results[TARGETS[0]])
    summary = {"folder": str(args.folder), "images": len(paths), "megapixels": pixels / 1e6,
               "iterations": args.iterations, "precision": codec.precision, "threads": args.threads,
               "resample": args.resample,
               "at_msssim": rows, "encode_seconds": {k: round(v, 2) for k, v in seconds.items()},
               "partial_time_vs_whole": seconds["partial"] / seconds["whole"],
               **({"from_scratch_time_vs_whole": seconds["from_scratch"] / seconds["whole"]}
                  if args.from_scratch else {})}
    print("target  images  bpp whole  bpp partial  change   overshoot whole  overshoot partial  partial kept")
    for q, r in rows.items():
        print(f"{q}    {r['images']:6d}  {r['bpp_whole']:9.4f}  {r['bpp_partial']:11.4f}  {r['change_pct']:+6.1f} %"
              f"   {r['overshoot_whole']:15.4f}  {r['overshoot_partial']:17.4f}  {r['partial_kept']:12d}")
    # every stream written with partial=True (its bytes, depth and steps), to compare two versions' choices
    streams = {f"{path.name} {q:.2f}": [p.bytes[-1], p.iterations, p.steps, p.scale]
               for q, pairs in results.items() for path, (_, p) in zip(paths, pairs)}
    report(summary, args.json, {**summary, "streams": streams})


if __name__ == "__main__":
    main()
