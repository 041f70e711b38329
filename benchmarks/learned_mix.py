"""Would a learned probability model still pay beside the default coder (coder id 4)? A float study.

    python benchmarks/learned_mix.py --data ../shared/data/kodak --data ../shared/data/photos/val \
        --steps 1200 --rates 1 2 --threads 1

Session 13 measured a small convolutional network (`learned_context.BitPredictor`) against the
counted tables alone (coder id 1): 1.5 % of the bits. Coder ids 2-4 have taken part of that since.
This asks the question again against what is coded now: the network is trained on the codes
`fit-entropy --cache` keeps of the training crops (`entropy_fit.training_codes`; never an
evaluation image), then, on every image's codes of each `--data` set
(`context_tables.cached_codes`, the shipped network's), each iteration's bits get three ideal
code lengths (the sum of -log2 p): under the network's alone, under coder id 4's own
probabilities (`ContextCoder.probabilities`, what its kernels code with) and under a logistic
mix of coder id 4's probability and the network's, the mix's three weights (coder id 4, network,
bias) started at coder id 4 alone and learned step by step through the chunk (one gradient step
per coding step, colour by channel), as an integer mixer input would learn. Prints the bits
saved per iteration and the BD-rate (MS-SSIM in dB) of the mixed lengths against coder id 4's,
both ideal, over depths 1-16. It measures only: nothing here is bit-exact, and the question is
whether an integer network input to the mixer would pay for building it (docs/ENTROPY.md)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from rgbatch.bench import bd_rate, msssim_db
from rgbatch.codec import Codec
from rgbatch.context import GUTTER, Canvas
from rgbatch.entropy import get_coder
from rgbatch.entropy_fit import training_codes
from rgbatch.train import list_images

from context_tables import cached_codes
from learned_context import BitPredictor


def train_network(tiles, steps: int, size: int, batch: int, hidden: int, layers: int, seed: int = 0) -> BitPredictor:
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    model = BitPredictor(tiles[0].shape[1], tiles[0].shape[0], hidden, layers)
    optimizer = torch.optim.Adam(model.parameters(), 2e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    for step in range(steps):
        crops = []
        for i in rng.integers(0, len(tiles), batch):
            t = tiles[i]
            y = rng.integers(0, t.shape[2] - size + 1)
            x = rng.integers(0, t.shape[3] - size + 1)
            crops.append(t[:, :, y:y + size, x:x + size])
        x = torch.from_numpy(np.stack(crops)).float()
        loss = F.binary_cross_entropy_with_logits(model(x), x)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 100 == 0 or step == steps - 1:
            print(f"step {step}: {loss.item() / np.log(2):.4f} bits a bit", flush=True)
    return model.eval()


def network_probabilities(model: BitPredictor, tiles: list[np.ndarray]) -> list[np.ndarray]:
    """P(1) of every bit of every tile (iterations, bits, rows, cols), with each tile's checkerboard
    colours as the coder's canvas has them (`Canvas`: parity of canvas row + column)."""
    layout = Canvas(tuple(t.shape[1:] for t in tiles))
    out = []
    with torch.no_grad():
        for t, x0 in zip(tiles, layout.left):
            x = torch.from_numpy(t[None]).float()
            if (GUTTER + x0) % 2:  # the canvas's colour 0 starts at column 1 of this tile: shift by one
                x = F.pad(x, (1, 0))
                p = torch.sigmoid(model(x))[..., 1:]
            else:
                p = torch.sigmoid(model(x))
            out.append(p[0].double().numpy())
    return out


def stretch(p):
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def mixed_lengths(q4: np.ndarray, pn: np.ndarray, y: np.ndarray, rates) -> tuple[float, list[float], float]:
    """Ideal bits of one chunk's bits y under q4, under the online mix at each of `rates` (a
    list, one mixed length each) and under the network alone, steps in coding order (axis 0:
    colour x channel, then positions)."""
    w = np.tile([1.0, 0.0, 0.0], (len(rates), 1))
    rates = np.asarray(rates, dtype=float)[:, None]
    own = alone = 0.0
    mixed = np.zeros(len(rates))
    for a, b, bits in zip(q4, pn, y):
        x = np.stack([stretch(a), stretch(b), np.ones_like(a)])
        p = 1 / (1 + np.exp(-np.clip(w @ x, -30, 30)))  # (rates, positions)
        own -= np.sum(np.log2(np.where(bits, a, 1 - a)))
        alone -= np.sum(np.log2(np.clip(np.where(bits, b, 1 - b), 1e-9, 1)))
        mixed -= np.sum(np.log2(np.clip(np.where(bits, p, 1 - p), 1e-9, 1)), axis=1)
        w += rates * ((bits - p) @ x.T) / x.shape[1]
    return own, mixed.tolist(), alone


def steps_of(arrays: list[np.ndarray], layout: Canvas) -> list[np.ndarray]:
    """One iteration's values (bits, rows, cols) per tile -> its coding steps: colour s, channel c,
    the positions of colour s tile by tile (a list of 1-D arrays, colour-major)."""
    canvas = np.zeros((arrays[0].shape[0], layout.height, layout.width))
    for a, x0 in zip(arrays, layout.left):
        canvas[:, GUTTER:GUTTER + a.shape[1], x0:x0 + a.shape[2]] = a
    canvas = canvas.reshape(canvas.shape[0], -1)
    return [canvas[c, positions] for positions in layout.positions for c in range(canvas.shape[0])]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", action="append", required=True)
    parser.add_argument("--train-data", action="append", default=None,
                        help="training folders (repeatable; default: both of ../shared/data), never an evaluation set")
    parser.add_argument("--fit-cache", default="runs/fit/codes",
                        help="where `fit-entropy --cache` keeps their crops' codes (coded there first if missing)")
    parser.add_argument("--weights", default=None)
    parser.add_argument("--cache", default="runs/context-tables-cache")
    parser.add_argument("--limit", type=int, default=0)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=16, help="crop of the code grid a training sample takes")
    parser.add_argument("--rates", type=float, nargs="+", default=[0.05, 0.2, 0.5])
    parser.add_argument("--hidden", type=int, default=96, help="the network's width")
    parser.add_argument("--layers", type=int, default=2, help="its 3x3 layers over the past iterations")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--network", default=None, help="keep the trained network here; read it if there")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    codec = Codec.load(args.weights, coder="raw", refine=False)
    start = time.time()
    if args.network and Path(args.network).is_file():
        model = BitPredictor(codec.model.cfg.bits, codec.max_iterations, args.hidden, args.layers)
        model.load_state_dict(torch.load(args.network))
        model.eval()
    else:
        folders = args.train_data or ["../shared/data/train", "../shared/data/photos/train"]
        tiles = [t for t in training_codes(codec, folders, 0, 512, 0, cache=args.fit_cache, log=print)
                 if min(t.shape[2:]) >= args.size]  # fit-entropy's own crops: all images, 512 px, seed 0
        model = train_network(tiles, args.steps, args.size, args.batch, args.hidden, args.layers)
        print(f"trained in {time.time() - start:.0f} s")
        if args.network:
            torch.save(model.state_dict(), args.network)
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    coder = get_coder("mixing2", codec.extra)
    for folder in args.data:
        quality, own, alone, mixed = [], [], [], {r: [] for r in args.rates}
        for path in list_images(folder)[:args.limit or None]:
            codes, msssim, pixels = cached_codes(codec, path, cache)
            tiles = [t.astype(bool) for t in codes.tiles]
            layout = Canvas(tuple(t.shape[1:] for t in tiles))
            pn = network_probabilities(model, tiles)
            rows = {r: [] for r in args.rates}
            own_rows, alone_rows = [], []
            for t in range(tiles[0].shape[0]):
                q4 = steps_of(coder.probabilities(tiles, t), layout)
                net = steps_of([p[t] for p in pn], layout)
                y = steps_of([c[t] for c in tiles], layout)
                o, ms, a = mixed_lengths(q4, net, y, args.rates)
                for r, m in zip(args.rates, ms):
                    rows[r].append(m / pixels)
                own_rows.append(o / pixels)
                alone_rows.append(a / pixels)
            quality.append(msssim)
            own.append(np.cumsum(own_rows))
            alone.append(np.cumsum(alone_rows))
            for r in args.rates:
                mixed[r].append(np.cumsum(rows[r]))
        quality, own = np.mean(quality, 0), np.mean(own, 0)
        per_iteration = np.diff(own, prepend=0)
        print(f"\n{folder}: {len(mixed[args.rates[0]])} images; ideal bpp of coder id 4 at depths 1 / 4 / 16: "
              f"{own[0]:.4f} / {own[3]:.4f} / {own[-1]:.4f}")
        a = np.mean(alone, 0)
        print("the network alone: saved per iteration "
              + " ".join(f"{100 * s:.1f}" for s in 1 - np.diff(a, prepend=0) / per_iteration) + " %")
        for r in args.rates:
            m = np.mean(mixed[r], 0)
            saved = 1 - np.diff(m, prepend=0) / per_iteration
            bd = bd_rate(own, msssim_db(quality), m, msssim_db(quality))
            print(f"mix rate {r}: BD-rate {bd:+.2f} %; saved per iteration "
                  + " ".join(f"{100 * s:.1f}" for s in saved) + " %")


if __name__ == "__main__":
    main()
