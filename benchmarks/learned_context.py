"""How much a learned probability model could add to the counted context coder.

    python benchmarks/learned_context.py --images 160 --held-out 32 --steps 600 --threads 1

Codes centre crops (256 px) of training images with the shipped model (never Kodak), then
trains a small convolutional network to predict every bit from everything the decoder has
when it decodes that bit: all 32 channels of the two previous iterations and the running
mean of all earlier ones in a 5x5 neighbourhood, the iteration, for the second checkerboard
colour the first colour's bits of this iteration around it, and the lower channels at the
same position. It reports, per iteration, the cross-entropy (bits per coded bit) of the
network and of the shipped counted coder (`ContextCoder`, real stream bytes) on held-out
crops. It measures only: the network is not bit-exact across machines as it stands, and the
question is whether building an integer version would pay (docs/ENTROPY.md).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rgbatch.codec import Codec
from rgbatch.entropy import ContextCoder
from rgbatch.entropy_fit import training_crops

from _common import report


def previous_iterations(codes: torch.Tensor) -> torch.Tensor:
    """(B, T, C, H, W) bits 0/1 -> per iteration t, what the decoder knows from iterations < t:
    bits of t-1 and t-2 (+-1, 0 before iteration 1), the mean of all earlier ones, t one-hot."""
    signs = codes * 2 - 1
    batch, iterations, _, height, width = codes.shape
    zero = torch.zeros_like(signs[:, :1])
    back1 = torch.cat([zero, signs[:, :-1]], 1)
    back2 = torch.cat([zero, zero, signs[:, :-2]], 1)
    mean = back1.cumsum(1) / torch.arange(iterations).clamp(min=1).view(1, -1, 1, 1, 1)
    t = F.one_hot(torch.arange(iterations), iterations).float().view(1, iterations, iterations, 1, 1)
    return torch.cat([back1, back2, mean, t.expand(batch, -1, -1, height, width)], 2)


class BitPredictor(nn.Module):
    """Logits of every bit; causal in the coder's order (iteration, colour 0 then 1, channel)."""

    def __init__(self, bits: int, iterations: int, hidden: int = 96, layers: int = 2):
        super().__init__()
        past = [nn.Conv2d(3 * bits + iterations, hidden, 3, padding=1), nn.ReLU()]
        for _ in range(layers - 1):  # each 3x3 layer widens the view of the past by one position a side
            past += [nn.Conv2d(hidden, hidden, 3, padding=1), nn.ReLU()]
        self.past = nn.Sequential(*past)
        # the first colour's bits of this iteration, seen from the second colour's positions
        # only (added after the spatial layers, so that nothing carries them further)
        self.first_colour = nn.Conv2d(bits, hidden, 3, padding=1)
        self.head = nn.Sequential(nn.ReLU(), nn.Conv2d(hidden, hidden, 1), nn.ReLU(), nn.Conv2d(hidden, bits, 1))
        self.channels = nn.Parameter(torch.zeros(bits, bits))  # lower channels at the same position

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        batch, iterations, bits, height, width = codes.shape
        current = (codes * 2 - 1).flatten(0, 1)
        y, x = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
        second = ((y + x) % 2).float()
        h = self.past(previous_iterations(codes).flatten(0, 1))
        h = h + second * self.first_colour(current * (1 - second))
        logits = self.head(h) + torch.einsum("dc,nchw->ndhw", self.channels.tril(-1), current)
        return logits.view(batch, iterations, bits, height, width)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/train")
    parser.add_argument("--images", type=int, default=160)
    parser.add_argument("--held-out", type=int, default=32)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    codec = Codec.load(coder="raw", tile_size=0)
    crops = training_crops(args.data, args.images, 256, seed=1)  # not the crops the tables were fitted on
    crops = [c for c in crops if c.shape[:2] == (256, 256)]  # one shape to stack: smaller images left out
    if len(crops) <= args.held_out:  # (until session 62 a ValueError of numpy's on a smaller image)
        raise SystemExit(f"{len(crops)} image(s) of at least 256 x 256 in {args.data}: more than --held-out "
                         f"{args.held_out} are needed")
    codes = np.stack([c.tiles[0] for c in codec.encode_codes(crops, codec.max_iterations)])
    train, held_out = torch.from_numpy(codes[:-args.held_out]).float(), codes[-args.held_out:]
    print(f"coded {len(codes)} crops", flush=True)

    counted = ContextCoder(codec.extra)
    stream_bits = np.sum([[8 * len(c) for c in counted.encode([tile])] for tile in held_out], axis=0)
    counted_rate = stream_bits / held_out[:, 0].size

    model = BitPredictor(codes.shape[2], codes.shape[1])
    optimizer = torch.optim.Adam(model.parameters(), 2e-3)
    start = time.perf_counter()
    for step in range(args.steps):
        x = train[torch.randint(0, len(train), (16,))]
        loss = F.binary_cross_entropy_with_logits(model(x), x)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        x = torch.from_numpy(held_out).float()
        learned_rate = (F.binary_cross_entropy_with_logits(model(x), x, reduction="none").mean((0, 2, 3, 4))
                        / np.log(2)).numpy()
    result = {"images": args.images, "held_out": args.held_out, "steps": args.steps,
              "train_seconds": round(time.perf_counter() - start),
              "counted_bits_per_bit": [round(float(v), 4) for v in counted_rate],
              "learned_bits_per_bit": [round(float(v), 4) for v in learned_rate],
              "counted_mean": round(float(counted_rate.mean()), 4), "learned_mean": round(float(learned_rate.mean()), 4)}
    report(result, args.json)


if __name__ == "__main__":
    main()
