"""Tile size: speed, quality, rate and seams, measured on a folder of images.

For each tile size, encode the images (the default coder: adaptive since session 11) and report encode MP/s,
mean MS-SSIM and bpp at the deepest depth, the seam ratio (the mean absolute error of the
pixels next to a tile border, 2 px each side, divided by that of all other pixels: 1.0 means
borders are no worse than the rest; tile size 0, the whole image, has no borders), the
BD-rate (MS-SSIM in dB, over depths 1..--iterations, the mean curves) against the first tile
size given, and the bpp needed for MS-SSIM 0.90 / 0.95 (mean over the images that reach it
with every tile size).

    python benchmarks/tiling.py ../shared/data/photos/val --images 0 --iterations 16 --tile-sizes 512,1024,0
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from rgbatch.bench import bd_rate, bpp_at_quality, msssim_db
from rgbatch.codec import Codec
from rgbatch.imageio import read_image
from rgbatch.tiling import tile_grid
from rgbatch.train import list_images


def border_mask(height, width, tile_size, margin=2):
    mask = np.zeros((height, width), bool)
    for t in tile_grid(height, width, tile_size):
        if t.y:
            mask[max(0, t.y - margin):t.y + margin, :] = True
        if t.x:
            mask[:, max(0, t.x - margin):t.x + margin] = True
    return mask


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder")
    parser.add_argument("--weights", default=None)
    parser.add_argument("--images", type=int, default=6, help="the first N images (0: all)")
    parser.add_argument("--iterations", type=int, default=8)
    parser.add_argument("--tile-sizes", default="128,256,512,0")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    paths = list_images(args.folder)[:args.images or None]
    pixels = sum(read_image(p)[0][..., 0].size for p in paths)
    table = Table(title=f"tile size on {len(paths)} images of {args.folder}, depths 1-{args.iterations}")
    for col in ("tile", "encode MP/s", "MS-SSIM", "bpp", "seam ratio", "BD-rate", "bpp at 0.90", "bpp at 0.95"):
        table.add_column(col, justify="right")
    curves = {}
    for tile_size in (int(s) for s in args.tile_sizes.split(",")):
        codec = Codec.load(args.weights, tile_size=tile_size, batch_size=4, device="cpu")
        codec.encode(read_image(paths[0])[0], 1)  # warm-up, untimed: the first setting paid it (until session 62)
        seconds, border, rest, bpp, quality = 0.0, [], [], [], []
        for path in paths:  # one at a time: memory holds one image's reconstructions
            image = read_image(path)[0]
            start = time.perf_counter()
            enc = codec.encode(image, args.iterations, keep_reconstructions=True)
            seconds += time.perf_counter() - start
            error = np.abs(image.astype(np.int16) - enc.reconstructions[-1].astype(np.int16)).mean(axis=2)
            mask = border_mask(*image.shape[:2], tile_size)
            if mask.any():
                border.append(error[mask].mean())
            rest.append(error[~mask].mean())
            bpp.append(enc.bpp)
            quality.append(enc.msssim)
        curves[tile_size] = np.array(bpp), np.array(quality)
        ratio = f"{np.mean(border) / np.mean(rest):.3f}" if border else "-"
        table.add_row(str(tile_size or "whole"), f"{pixels / seconds / 1e6:.4f}", f"{np.mean(quality, 0)[-1]:.4f}",
                      f"{np.mean(bpp, 0)[-1]:.4f}", ratio, *_against(curves, tile_size))
    Console().print(table)


def _against(curves: dict, tile_size: int) -> list[str]:
    """BD-rate against the first tile size measured, and the bpp for MS-SSIM 0.90 and 0.95."""
    (ref_bpp, ref_q), (bpp, q) = next(iter(curves.values())), curves[tile_size]
    bd = bd_rate(ref_bpp.mean(0), msssim_db(ref_q.mean(0)), bpp.mean(0), msssim_db(q.mean(0)))
    cells = ["-" if bd is None else f"{bd:+.2f} %"]
    for target in (0.90, 0.95):
        needed = [[bpp_at_quality(b, m, target) for b, m in zip(*curves[t])] for t in curves]
        reached = [i for i in range(len(bpp)) if all(n[i] is not None for n in needed)]
        mine = needed[list(curves).index(tile_size)]
        cells.append(f"{np.mean([mine[i] for i in reached]):.4f}" if reached else "-")
    return cells


if __name__ == "__main__":
    main()
