"""Tile size: speed, quality and seams, measured on Kodak images.

For each tile size, encode the images at a fixed depth and report encode MP/s, mean
MS-SSIM and bpp, and the seam ratio: the mean absolute error of the pixels next to a tile
border (2 px each side) divided by that of all other pixels. 1.0 means borders are no
worse than the rest; tile size 0 (whole image) has no borders.

    python benchmarks/tiling.py ../shared/data/kodak --images 6 --iterations 8
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

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
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--iterations", type=int, default=8)
    parser.add_argument("--tile-sizes", default="128,256,512,0")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    images = [read_image(p)[0] for p in list_images(args.folder)[:args.images]]
    pixels = sum(im.shape[0] * im.shape[1] for im in images)
    table = Table(title=f"tile size on {len(images)} images, depth {args.iterations}")
    for col in ("tile", "encode MP/s", "MS-SSIM", "bpp", "seam ratio"):
        table.add_column(col, justify="right")
    for tile_size in (int(s) for s in args.tile_sizes.split(",")):
        codec = Codec.load(args.weights, tile_size=tile_size, batch_size=4, device="cpu")
        start = time.perf_counter()
        encoded = codec.encode_many(images, args.iterations, keep_reconstructions=True)
        seconds = time.perf_counter() - start
        border, rest = [], []
        for image, enc in zip(images, encoded):
            error = np.abs(image.astype(np.int16) - enc.reconstructions[-1].astype(np.int16)).mean(axis=2)
            mask = border_mask(*image.shape[:2], tile_size)
            if mask.any():
                border.append(error[mask].mean())
            rest.append(error[~mask].mean())
        ratio = f"{np.mean(border) / np.mean(rest):.3f}" if border else "-"
        table.add_row(str(tile_size or "whole"), f"{pixels / seconds / 1e6:.4f}",
                      f"{np.mean([e.msssim[-1] for e in encoded]):.4f}",
                      f"{np.mean([e.bpp[-1] for e in encoded]):.4f}", ratio)
    Console().print(table)


if __name__ == "__main__":
    main()
