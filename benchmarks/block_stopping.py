"""Does per-block early stopping (spatially adaptive bit rates, Johnston et al. 2018) pay?

    python benchmarks/block_stopping.py --weights W [W2 ...] --every 6 --criterion ssim --levels 0.9 0.95 0.98

Each 16x16 block stops once its reconstruction is good enough: by `mse` (mean squared error
below a level, pixels in [-0.5, 0.5]) or by `ssim` (the block's SSIM, from its own means,
variances and covariance per colour, above a level: busy blocks hide more error than flat
ones, as they do for MS-SSIM; `--pool 4` measures it on 4x4 averages, nearer MS-SSIM's coarse
scales, which weigh most), or by `gain` (its block SSIM rose less than a level in the last
iteration). From then on it sends no bits and the decoder receives 0 for them; the decoder
goes on updating its pixels, or with `--freeze` leaves them as they are
(`ResidualGRUCodec._step` with `active`). The block map is
counted: after each iteration, one continue/stop flag per block still active, at the binary
entropy of that iteration's share of stops (what an adaptive binary coder would spend).

Prints, per weight file, the mean (bpp, MS-SSIM) per iteration over the images with uniform
depth and with each level, and the rate saved against uniform depth at equal MS-SSIM
(interpolated on the uniform curve). Raw bits on both sides: the context coder's saving
comes on top of either.
"""

import argparse
import glob
import math

import numpy as np
import torch
import torch.nn.functional as F

from rgbatch.imageio import read_image
from rgbatch.metrics import msssim
from rgbatch.tiling import to_float, to_uint8
from rgbatch.model import BLOCK
from rgbatch.weights import DEFAULT_WEIGHTS, load_weights


def block_quality(x: torch.Tensor, x_hat: torch.Tensor, criterion: str, pool: int = 1) -> torch.Tensor:
    """(N, 1, H/16, W/16): higher is better, per block. `pool` > 1 measures SSIM on the
    images averaged over pool x pool pixels (MS-SSIM weighs its coarser scales most)."""
    x_hat = x_hat.clamp(-0.5, 0.5)
    if criterion == "mse":
        return -F.avg_pool2d(((x_hat - x) ** 2).mean(1, keepdim=True), BLOCK)
    # SSIM of the whole block per colour (8-bit scale constants), then the mean over colours
    a, b = (F.avg_pool2d((t + 0.5) * 255, pool) for t in (x, x_hat))
    size = BLOCK // pool
    mean_a, mean_b = F.avg_pool2d(a, size), F.avg_pool2d(b, size)
    var_a = F.avg_pool2d(a * a, size) - mean_a ** 2
    var_b = F.avg_pool2d(b * b, size) - mean_b ** 2
    cov = F.avg_pool2d(a * b, size) - mean_a * mean_b
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    ssim = ((2 * mean_a * mean_b + c1) * (2 * cov + c2)) / ((mean_a ** 2 + mean_b ** 2 + c1) * (var_a + var_b + c2))
    return ssim.mean(1, keepdim=True)


def binary_entropy(p: float) -> float:
    return 0.0 if p <= 0 or p >= 1 else -(p * math.log2(p) + (1 - p) * math.log2(1 - p))


def coded_curve(model, x, iterations: int, criterion: str, level: float | None, pool: int = 1,
                freeze: bool = False):
    """(bpp, MS-SSIM) after each iteration; level None = uniform depth. With criterion
    `gain`, a block stops when its block SSIM rose less than `level` in the last iteration
    (equal marginal returns, the rate-distortion optimum when returns diminish)."""
    enc_state, dec_state = model._blank_state()
    x_hat, bits, curve = None, 0.0, []
    active = torch.ones(1, 1, x.shape[2] // BLOCK, x.shape[3] // BLOCK)
    with torch.inference_mode():
        for t in range(iterations):
            residual = x if x_hat is None else x - x_hat
            n_active = active.sum().item()
            bits += model.cfg.bits * n_active
            _, x_hat, enc_state, dec_state = model._step(residual, t, enc_state, dec_state, x_hat,
                                                         None if level is None else active, freeze)
            if level is not None:
                quality = block_quality(x, x_hat, "ssim" if criterion == "gain" else criterion, pool)
                if criterion == "gain":
                    done = (quality - previous < level) if t else torch.zeros_like(quality, dtype=torch.bool)
                    previous = quality
                else:
                    done = quality >= level
                still = active * (~done).float()
                if t + 1 < iterations:  # the flags that open the next iteration
                    bits += n_active * binary_entropy(still.sum().item() / max(n_active, 1))
                active = still
            curve.append((bits / (x.shape[2] * x.shape[3]), msssim(to_uint8(x[0]), to_uint8(x_hat[0]))))
    return curve


def crop_to(image: np.ndarray, multiple: int) -> np.ndarray:
    h, w = image.shape[:2]
    return image[:h - h % multiple, :w - w % multiple]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", nargs="+", default=[str(DEFAULT_WEIGHTS)])
    parser.add_argument("--data", default="../shared/data/kodak")
    parser.add_argument("--every", type=int, default=6, help="take every n-th image")
    parser.add_argument("--iterations", type=int, default=16)
    parser.add_argument("--criterion", choices=["mse", "ssim", "gain"], default="ssim")
    parser.add_argument("--pool", type=int, default=1, help="measure block SSIM on pool x pool averages")
    parser.add_argument("--levels", type=float, nargs="+", default=[0.9, 0.95, 0.98],
                        help="block SSIM to reach (ssim), or mean squared error to get under (mse)")
    parser.add_argument("--freeze", action="store_true",
                        help="keep stopped blocks' pixels as they are (else the decoder goes on updating them)")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    paths = sorted(glob.glob(f"{args.data}/*.png"))[::args.every]
    # whole images, cropped to the network's alignment (32 px): no tiling, no padding
    images = [to_float(crop_to(read_image(p)[0], 32))[None] for p in paths]
    # a block is done once quality >= level; for mse, quality is minus the error
    levels = [(-level if args.criterion == "mse" else level) for level in args.levels]
    for weights in args.weights:
        model = load_weights(weights)[0].float().eval()
        uniform = np.mean([coded_curve(model, x, args.iterations, args.criterion, None) for x in images], axis=0)
        print(f"{weights}, {len(images)} images, criterion {args.criterion}")
        print("  uniform:", " ".join(f"{b:.3f}:{q:.4f}" for b, q in uniform))
        for shown, level in zip(args.levels, levels):
            curve = np.mean([coded_curve(model, x, args.iterations, args.criterion, level, args.pool, args.freeze)
                             for x in images], axis=0)
            print(f"  level {shown:g}:", " ".join(f"{b:.3f}:{q:.4f}" for b, q in curve))
            reachable = [(b, q) for b, q in curve if uniform[0, 1] <= q <= uniform[:, 1].max()]
            needed = [np.interp(q, np.maximum.accumulate(uniform[:, 1]), uniform[:, 0]) for _, q in reachable]
            print("    saved at equal MS-SSIM:", " ".join(f"{100 * (1 - b / u):.0f}%@{q:.3f}"
                                                        for (b, q), u in zip(reachable, needed)))


if __name__ == "__main__":
    main()
