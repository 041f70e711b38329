"""Rate-aware choice of the bits, simulated (measured in session 36, not built: docs/ENTROPY.md,
"Rate-aware bits").

The decoder takes any bits, so an encoder may send, where the binarizer was unsure of a sign
(|s| small, s its tanh output), the value the entropy coder expects, and save bits. Each
iteration, a bit flips where the bits the flip saves under the default coder (id 4, given the
earlier iterations as sent), times `lam`, outweigh |s|:

    log2(P(other) / P(sign)) > |s| / lam        ("lam:L"; "lam:L:A:B" in iterations A..B-1 only)

    python benchmarks/rate_aware_bits.py ../shared/data/kodak --every 6 --rules lam:0.01 lam:0.02 lam:0.04

Each image is coded whole (one tile, padded to a multiple of 16 by repeating its edges), float
decoder, no post-filter; bytes are the chunks of coder id 4, MS-SSIM at every depth. Prints per
image and rule the BD-rate (MS-SSIM in dB) over depths 1-16 against the binarizer's signs and the
share of bits flipped, then the mean over the images.
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F
from _common import image_set_parser, report

from rgbatch.bench import bd_rate, msssim_db
from rgbatch.codec import Codec
from rgbatch.imageio import read_image
from rgbatch.metrics import msssim_many
from rgbatch.train import list_images


def parse_rule(rule: str) -> tuple[float, int, int]:
    """"lam:L[:A:B]" -> (L, A, B); "none" -> (0, 0, 0)."""
    if rule == "none":
        return 0.0, 0, 0
    parts = rule.split(":")
    if parts[0] != "lam" or len(parts) not in (2, 4):
        raise SystemExit(f"a rule is lam:L or lam:L:A:B, not {rule!r}")
    return float(parts[1]), *(int(p) for p in (parts[2:] or [0, 10 ** 6]))


def flips(soft: np.ndarray, p_one: np.ndarray, lam: float) -> np.ndarray:
    """Where the rule flips the binarizer's signs (soft >= 0 is +1)."""
    p = np.where(soft >= 0, p_one, 1 - p_one)  # of the sign
    saving = np.log2((1 - p) / p)
    return (saving > 0) & (np.abs(soft) < lam * saving)


class RateAwareBinarizer(torch.nn.Module):
    """The model's binarizer with the rule applied: the model's own encoding loop calls it once
    an iteration, so the encoder and decoder run as `ResidualGRUCodec.encode` runs them."""

    def __init__(self, binarizer: torch.nn.Module, coder, rule: str):
        super().__init__()
        self.conv, self.coder = binarizer.conv, coder
        self.lam, self.first, self.last = parse_rule(rule)
        self.codes, self.flipped = [], 0  # the bits sent so far (bool, one image)

    def forward(self, features):
        soft = torch.tanh(self.conv(features))
        values = soft[0].float().numpy()
        bits = values >= 0
        t = len(self.codes)
        if self.lam and self.first <= t < self.last:
            p_one = self.coder.probabilities([np.stack(self.codes + [bits])], t)[0]
            flip = flips(values, p_one, self.lam)
            self.flipped += int(flip.sum())
            bits = bits ^ flip
        self.codes.append(bits)
        return torch.from_numpy(np.where(bits, 1.0, -1.0))[None].to(soft.dtype)


def encode(codec: Codec, image: np.ndarray, iterations: int, rule: str):
    """(bpp, MS-SSIM) at depths 1..iterations and the share of bits flipped, under `rule`."""
    model, coder = codec.model, codec.coder
    h, w = image.shape[:2]
    x = torch.from_numpy(image.copy()).permute(2, 0, 1)[None].float() / 255 - 0.5
    x = F.pad(x, (0, -w % 16, 0, -h % 16), mode="replicate")
    decoded = []

    def keep(t, x_hat):
        decoded.append(((x_hat[0, :, :h, :w] + 0.5) * 255).round().byte().permute(1, 2, 0).numpy())

    signs, model.binarizer = model.binarizer, RateAwareBinarizer(model.binarizer, coder, rule)
    try:
        model.encode(x, iterations, on_iteration=keep)
        codes, flipped = model.binarizer.codes, model.binarizer.flipped
    finally:
        model.binarizer = signs
    sizes = np.cumsum([len(c) for c in coder.encode([np.stack(codes)])])
    quality = np.array(msssim_many(image, decoded))  # the reference's scales computed once, not per depth
    return 8 * sizes / (h * w), quality, flipped / sum(c.size for c in codes)


def main():
    parser = image_set_parser(__doc__)
    parser.add_argument("--rules", nargs="+", default=["lam:0.01", "lam:0.02", "lam:0.04"])
    args = parser.parse_args()
    for rule in args.rules:
        parse_rule(rule)  # refused before any work
    torch.set_num_threads(args.threads)
    codec = Codec.load(args.weights, precision=args.precision, decoding="float")
    if not hasattr(codec.coder, "probabilities"):
        raise SystemExit("these weights carry no context model: nothing to weigh the bits by")
    results = {}
    for path in list_images(args.folder)[::args.every]:
        (image, _), started = read_image(path), time.time()
        base_bpp, base_q, _ = encode(codec, image, args.iterations, "none")
        results[path.name] = row = {}
        for rule in args.rules:
            bpp, q, share = encode(codec, image, args.iterations, rule)
            row[rule] = {"bd_rate": bd_rate(base_bpp, msssim_db(base_q), bpp, msssim_db(q)), "flipped": share}
            print(f"{path.name} {rule}: BD-rate {row[rule]['bd_rate']:+.2f} %, {100 * share:.2f} % of the bits "
                  f"flipped", flush=True)
        print(f"  ({time.time() - started:.0f} s)", flush=True)
    summary = {rule: float(np.mean([r[rule]["bd_rate"] for r in results.values()])) for rule in args.rules}
    report({"mean_bd_rate": summary, "images": results}, args.json)


if __name__ == "__main__":
    main()
