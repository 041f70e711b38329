"""Would per-block early stopping (spatially adaptive depth, Johnston et al. 2018) pay with
the decoder as trained? An upper-bound-style probe, not a codec:

    python benchmarks/block_stopping.py --weights W --every 6 --taus 3e-4 1e-4 3e-5

Each 16x16 block stops once the mean squared error of its reconstruction falls below tau
(pixels in [-0.5, 0.5]); from then on its 32 bits per iteration are not counted and the
decoder receives 0 for them (a value it never saw in training). With --freeze (default) the
decoder, which would know the block map, also leaves those pixels as they are. The depth map
itself is not counted. Prints the mean (bpp, MS-SSIM) per iteration over the images and the
rate saved against uniform depth at equal MS-SSIM.
"""

import argparse
import glob

import numpy as np
import torch
import torch.nn.functional as F

from rgbatch.imageio import read_image
from rgbatch.metrics import from_uint8, msssim, to_uint8
from rgbatch.weights import DEFAULT_WEIGHTS, load_weights


def coded_curve(model, x, iterations: int, tau: float, freeze: bool) -> list[tuple[float, float]]:
    enc_state, dec_state = model._blank_state()
    x_hat, bits, curve = None, 0, []
    active = torch.ones(1, 1, x.shape[2] // 16, x.shape[3] // 16)
    with torch.inference_mode():
        for t in range(iterations):
            residual = x if x_hat is None else x - x_hat
            gain = model.gain(t)
            features, enc_state = model.encoder(residual * gain, enc_state)
            code = model.binarizer(features) * active
            bits += 32 * active.sum().item()
            update, dec_state = model.decoder(code, dec_state)
            update = update / gain
            if freeze:
                update = update * F.interpolate(active, scale_factor=16)
            x_hat = update if x_hat is None else x_hat + update
            error = F.avg_pool2d(((x_hat.clamp(-0.5, 0.5) - x) ** 2).mean(1, keepdim=True), 16)
            active = active * (error > tau).float()
            curve.append((bits / (x.shape[2] * x.shape[3]), msssim(to_uint8(x[0]), to_uint8(x_hat[0]))))
    return curve


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default=str(DEFAULT_WEIGHTS))
    parser.add_argument("--data", default="../shared/data/kodak")
    parser.add_argument("--every", type=int, default=6, help="take every n-th image")
    parser.add_argument("--iterations", type=int, default=16)
    parser.add_argument("--taus", type=float, nargs="+", default=[3e-4, 1e-4, 3e-5])
    parser.add_argument("--no-freeze", dest="freeze", action="store_false")
    args = parser.parse_args()
    model = load_weights(args.weights)[0].float().eval()
    paths = sorted(glob.glob(f"{args.data}/*.png"))[::args.every]
    images = [from_uint8(read_image(p)[0])[None] for p in paths]
    uniform = np.mean([coded_curve(model, x, args.iterations, 0.0, False) for x in images], axis=0)
    print(f"{len(images)} images; uniform:", " ".join(f"{b:.3f}:{q:.4f}" for b, q in uniform))
    for tau in args.taus:
        curve = np.mean([coded_curve(model, x, args.iterations, tau, args.freeze) for x in images], axis=0)
        print(f"tau {tau:g}:", " ".join(f"{b:.3f}:{q:.4f}" for b, q in curve))
        reachable = [(b, q) for b, q in curve if uniform[0, 1] <= q <= uniform[:, 1].max()]
        needed = [np.interp(q, np.maximum.accumulate(uniform[:, 1]), uniform[:, 0]) for _, q in reachable]
        print("   saved at equal MS-SSIM:", " ".join(f"{100 * (1 - b / u):.0f}%@{q:.3f}"
                                                     for (b, q), u in zip(reachable, needed)))


if __name__ == "__main__":
    main()
