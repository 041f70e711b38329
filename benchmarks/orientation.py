"""Would coding each image in its best orientation pay? The 8 rotations and flips of every Nth
image, each encoded to depth 16 with the shipped model and coder id 4; per image, the BD-rate
(MS-SSIM in dB, over depths 1-16) of each orientation against the image as it is, the best of
the 8 (an oracle: 8 encodings), and the orientation a cheap trial would pick (its depth-`--trial`
point, bytes and MS-SSIM, the best against the identity's local slope):

    OMP_NUM_THREADS=1 python benchmarks/orientation.py ../shared/data/kodak --every 4 --limit 6
    OMP_NUM_THREADS=1 python benchmarks/orientation.py ../shared/data/photos/val --every 6 --limit 4

A stream would carry the orientation (3 bits) and the decoder undo it; what it costs is the
encoder's trials (docs/TRAINING.md, "Orientation", session 41).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from _common import image_set_parser, report
from rgbatch.bench import bd_rate, msssim_db
from rgbatch.codec import Codec
from rgbatch.imageio import read_image
from rgbatch.train import list_images


def orient(image: np.ndarray, k: int) -> np.ndarray:
    """Orientation k of 8 of an HxWxC image: k % 4 quarter turns, then a left-right flip if k >= 4."""
    turned = np.rot90(image, k % 4)
    return np.ascontiguousarray(turned[:, ::-1] if k >= 4 else turned)


def trial_pick(curves, depth: int) -> int:
    """The orientation whose depth-`depth` point (log bpp, dB) lies highest against the local slope of
    orientation 0's curve there (`curves`: per orientation (bpp, dB) per depth, from depth 1)."""
    log_bpp = [np.log(bpp) for bpp, _ in curves]
    db = [q for _, q in curves]
    d = depth - 1
    slope = (db[0][d + 1] - db[0][d]) / (log_bpp[0][d + 1] - log_bpp[0][d])
    return int(np.argmax([q[d] - slope * b[d] for b, q in zip(log_bpp, db)]))


def main():
    parser = image_set_parser(__doc__)
    parser.add_argument("--limit", type=int, default=None, help="at most this many images")
    parser.add_argument("--trial", type=int, default=1, help="the depth a trial encodes to")
    args = parser.parse_args()
    if args.iterations < 4:  # a BD-rate needs four points of each curve (a TypeError until session 62)
        parser.error("--iterations must be at least 4: a BD-rate takes four depths")
    torch.set_num_threads(args.threads)
    codec = Codec.load(args.weights, precision=args.precision, decoding="float")
    paths = list_images(args.folder)[::args.every][:args.limit]
    per_image = {}
    for path in paths:
        image, _ = read_image(path)
        start, curves = time.time(), []
        for k in range(8):
            encoded = codec.encode(orient(image, k), args.iterations)
            curves.append((8 * np.array(encoded.bytes, float) / (image.shape[0] * image.shape[1]), msssim_db(encoded.msssim)))
        bd = [bd_rate(*curves[0], *curve) for curve in curves]
        pick = trial_pick(curves, args.trial)
        per_image[path.name] = {"bd_rate": [round(b, 3) for b in bd], "best": round(min(bd), 3), "trial_pick": pick,
                                "trial": round(bd[pick], 3)}
        print(path.name, " ".join(f"{b:+.2f}" for b in bd), f"best {min(bd):+.2f}, trial picks {pick}: {bd[pick]:+.2f}",
              f"({time.time() - start:.0f} s)", flush=True)
    rates = np.array([v["bd_rate"] for v in per_image.values()])
    report({"images": len(per_image), "mean_per_orientation": rates.mean(0).round(2).tolist(),
            "mean_best": round(float(rates.min(1).mean()), 2),
            f"mean_trial_depth{args.trial}": round(float(np.mean([v["trial"] for v in per_image.values()])), 2),
            "per_image": per_image}, args.json)


if __name__ == "__main__":
    main()
