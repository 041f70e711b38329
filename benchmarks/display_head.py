"""A display head: a small network on the decoder's last hidden state that corrects what each
depth shows (docs/TRAINING.md, "Refiner": "what might: feeding the refiner the decoder's last
hidden state"). The codes, the rate and the encoder's loop stay as they are; only the displayed
image of each depth changes, so it is measured like `display_decoder.py`: the same codes decoded
with and without the head, MS-SSIM per depth, BD-rate at the bench's rates.

    OMP_NUM_THREADS=1 python benchmarks/display_head.py --steps 1500 --out runs/s40/head.pt

The head reads, at half resolution, the last GRU's hidden state (the state the decoder keeps for
its next update: it knows what the bits said, the 8-bit pixels do not) beside the reconstruction
unshuffled by 2, and is told the depth (a learned bias per depth); its last convolution starts at
zero, so it starts as the identity. Trained with the decoder frozen on random 192 px crops of
the training folders (the model's own codes, signs, bf16 where native), loss mean log(1 - MS-SSIM)
over two random depths of each crop (every depth alike, as `fit-refiner`). Evaluated in fp32 on
the first `--images` of Kodak and photos/val, whole images, tile by tile (`--eval` alone evaluates
a saved head).
"""
import argparse, copy, json, random, sys, time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rgbatch.bench import bd_rate, msssim_db
from rgbatch.codec import Codec
from rgbatch.codes import signs
from rgbatch.imageio import read_image
from rgbatch.metrics import msssim_many, msssim_tensor
from rgbatch.tiling import paste, to_float, to_uint8
from rgbatch.train import list_images

SETS = {"kodak": ("../shared/data/kodak", "docs/bench/summary.json"),
        "photos": ("../shared/data/photos/val", "docs/bench-photos/summary.json")}


class DisplayHead(nn.Module):
    def __init__(self, hidden: int, channels: int = 48, blocks: int = 2, depths: int = 16):
        super().__init__()
        self.conv_in = nn.Conv2d(12 + hidden, channels, 3, padding=1)
        self.depth_bias = nn.Embedding(depths, blocks * channels)
        nn.init.zeros_(self.depth_bias.weight)
        self.blocks = nn.ModuleList(nn.Sequential(nn.ReLU(), nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(),
                                                  nn.Conv2d(channels, channels, 3, padding=1)) for _ in range(blocks))
        self.conv_out = nn.Conv2d(channels, 12, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x_hat, hidden, depth):
        """x_hat (N, 3, H, W) clamped to [-0.5, 0.5]; hidden (N, C, H/2, W/2); depth 1..16 per image."""
        h = self.conv_in(torch.cat([F.pixel_unshuffle(x_hat, 2), hidden.float()], 1))
        bias = self.depth_bias(depth - 1).view(len(depth), len(self.blocks), -1, 1, 1)
        for k, block in enumerate(self.blocks):
            h = h + block(h + bias[:, k])
        return x_hat + F.pixel_shuffle(self.conv_out(h), 2)


def crops(folders, count, size, seed):
    rng = random.Random(seed)
    paths = [p for f in folders for p in list_images(f)]
    out = []
    for path in rng.sample(paths, min(count, len(paths))):
        image, _ = read_image(path)
        h, w = image.shape[:2]
        if min(h, w) < size:
            continue
        y, x = rng.randrange(h - size + 1), rng.randrange(w - size + 1)
        out.append(image[y:y + size, x:x + size].copy())
    return out


def loop_states(model, x, depth):
    """(x_hat clamped, last hidden state) after each of `depth` iterations of the frozen loop."""
    enc_state, dec_state = model._blank_state()
    x_hat, out = None, []
    for t in range(depth):
        residual = x if x_hat is None else x - x_hat
        _, x_hat, enc_state, dec_state = model._step(residual, t, enc_state, dec_state, x_hat)
        out.append((x_hat.clamp(-0.5, 0.5), dec_state[3].float()))
    return out


def train(args, codec):
    model = copy.deepcopy(codec.model).eval().requires_grad_(False)  # the codec's stays fp32 for `evaluate`
    if args.bf16:
        model.set_precision(torch.bfloat16)
    pool = crops(args.data, args.crops, args.patch, 0)
    print(f"{len(pool)} crops of {args.patch} px", flush=True)
    head = DisplayHead(model.decoder.grus[3].hidden_ch, args.channels, args.blocks)
    opt = torch.optim.Adam(head.parameters(), lr=args.lr)
    start, rng = 0, np.random.default_rng(1)
    if Path(args.out).exists():
        state = torch.load(args.out, weights_only=True)
        head.load_state_dict(state["head"]), opt.load_state_dict(state["opt"])
        start = state["step"]
    t0, losses = time.time(), []
    for step in range(start, args.steps):
        batch = np.stack([pool[i] for i in rng.choice(len(pool), args.batch, replace=False)])
        x = to_float(batch)
        depths = rng.integers(1, 17, (args.batch, 2))
        with torch.no_grad():
            states = loop_states(model, x, int(depths.max()))
        xs = torch.cat([states[d - 1][0][i:i + 1] for i in range(args.batch) for d in depths[i]])
        hs = torch.cat([states[d - 1][1][i:i + 1] for i in range(args.batch) for d in depths[i]])
        ref = x.repeat_interleave(2, 0)
        d = torch.from_numpy(depths.reshape(-1)).long()
        out = head(xs, hs, d)
        loss = torch.log(1 - msssim_tensor(ref + 0.5, out.clamp(-0.5, 0.5) + 0.5) + 1e-6).mean()
        with torch.no_grad():
            before = torch.log(1 - msssim_tensor(ref + 0.5, xs + 0.5) + 1e-6).mean()
        opt.zero_grad()
        loss.backward()
        for g in opt.param_groups:
            g["lr"] = args.lr * min(1.0, (step + 1) / 100)
        opt.step()
        losses.append(float(before - loss.detach()))
        if (step + 1) % 50 == 0 or step + 1 == args.steps:  # the last step's too (until session 62: none
            # written where --steps was no multiple of 50)
            torch.save({"head": head.state_dict(), "opt": opt.state_dict(), "step": step + 1,
                        "config": [args.channels, args.blocks]}, args.out)
            print(f"step {step + 1}: gain in log(1 - MS-SSIM) {np.mean(losses[-50:]):+.4f} (last 50), "
                  f"{(step + 1 - start) / (time.time() - t0):.2f} steps/s", flush=True)
    return head


@torch.inference_mode()
def evaluate(codec, head, images: int):
    model = codec.model
    for name, (folder, summary) in SETS.items():
        curve = json.load(open(summary))["codecs"]["rgbatch-mixing2"]["curve"]
        bpp = [p["bpp"] for p in curve]
        scores = {"plain": [], "head": []}
        for path in list_images(folder)[:images]:
            image, _ = read_image(path)
            codes = codec.encode_codes([image], 16)[0]
            recs = {k: np.zeros((16,) + image.shape, np.uint8) for k in scores}
            for tile, bits in zip(codes.grid, codes.tiles):
                code = torch.from_numpy(signs(bits))[:, None]
                state = None
                for t in range(16):
                    state = model.decode_from(code[t:t + 1], state)
                    x_hat = state.x_hat.clamp(-0.5, 0.5)
                    paste(recs["plain"][t:t + 1], to_uint8(x_hat), tile)
                    out = head(x_hat, state.hidden[3], torch.tensor([t + 1])).clamp(-0.5, 0.5)
                    paste(recs["head"][t:t + 1], to_uint8(out), tile)
            for k in scores:
                scores[k].append(msssim_many(image, recs[k]))
            print(name, path.name, " ".join(f"{a:.4f}/{b:.4f}" for a, b in
                                            zip(scores["plain"][-1], scores["head"][-1])), flush=True)
        plain, better = np.mean(scores["plain"], 0), np.mean(scores["head"], 0)
        print(f"{name}: MS-SSIM per depth plain / head:",
              " ".join(f"{k + 1}:{a:.4f}/{b:.4f}" for k, (a, b) in enumerate(zip(plain, better))))
        print(f"{name}: BD-rate of the head against the plain decoder (same codes, {images} images): "
              f"{bd_rate(bpp, msssim_db(plain), bpp, msssim_db(better)):+.2f} %", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", default=None)
    p.add_argument("--data", nargs="+", default=["../shared/data/train", "../shared/data/photos/train"])
    p.add_argument("--out", default="runs/display-head.pt")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--patch", type=int, default=192)
    p.add_argument("--crops", type=int, default=600)
    p.add_argument("--channels", type=int, default=48)
    p.add_argument("--blocks", type=int, default=2)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--eval", action="store_true", help="only evaluate the head saved at --out")
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True)
    args = p.parse_args()
    torch.set_num_threads(1)
    codec = Codec.load(args.weights, decoding="float", precision="fp32")
    if args.eval:
        channels, blocks = torch.load(args.out, weights_only=True)["config"]
        head = DisplayHead(codec.model.decoder.grus[3].hidden_ch, channels, blocks)
        head.load_state_dict(torch.load(args.out, weights_only=True)["head"])
    else:
        head = train(args, codec)
    evaluate(codec, head.eval(), args.images)


if __name__ == "__main__":
    sys.exit(main())
