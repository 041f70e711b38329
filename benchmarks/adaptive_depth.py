"""What a per-tile depth would save at equal image MS-SSIM (a coarse Johnston et al. 2018).

    python benchmarks/adaptive_depth.py --weights W --data ../shared/data/kodak [--tile 128] [--limit N]

Tiles are coded independently, so a tile cut at depth d simply shows its depth-d
reconstruction: no decoder change is needed to let easy tiles stop early. For each image,
encoded once with `--tile` px tiles:
  1. allocate greedily: from every tile at depth 1, give the next iteration to the tile
     whose step raises the image's MS-SSIM most per bit (measured on the mixed image);
  2. for each uniform depth d, take the first point of that path whose MS-SSIM reaches the
     uniform depth-d image's;
  3. compare bits (raw: 32 per code position per iteration, plus 4 bits per tile for its
     depth). Where the path needs more bits, an encoder would keep the uniform depth: 0.
This measures only; the bitstream has no per-tile depth (see docs/ENTROPY.md).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from rgbatch.codec import Codec
from rgbatch.imageio import read_image
from rgbatch.metrics import msssim
from rgbatch.tiling import tile_grid
from rgbatch.train import list_images

from _common import report

DEPTH_FIELD_BITS = 4  # a depth of 1..16 per tile


def mixed_image(reconstructions: np.ndarray, tiles, depths) -> np.ndarray:
    out = np.empty(reconstructions.shape[1:], np.uint8)
    for tile, d in zip(tiles, depths):
        window = (slice(tile.y, tile.y + tile.height), slice(tile.x, tile.x + tile.width))
        out[window] = reconstructions[d - 1][window]
    return out


def greedy_path(image: np.ndarray, reconstructions: np.ndarray, tiles, bits: np.ndarray):
    """(bits, MS-SSIM) after each step of a greedy allocation: from every tile at depth 1, each
    step gives one more iteration to the tile whose step raises the image's MS-SSIM most per
    bit (measured, not estimated: about tiles x depth MS-SSIM evaluations per image)."""
    iterations = reconstructions.shape[0]
    depth = np.ones(len(tiles), int)
    quality = msssim(image, mixed_image(reconstructions, tiles, depth))
    path = [(int((depth * bits).sum()), quality)]
    while (depth < iterations).any():
        best = None
        for i in np.flatnonzero(depth < iterations):
            depth[i] += 1
            q = msssim(image, mixed_image(reconstructions, tiles, depth))
            depth[i] -= 1
            if best is None or (q - quality) / bits[i] > best[0]:
                best = ((q - quality) / bits[i], i, q)
        _, i, quality = best
        depth[i] += 1
        path.append((int((depth * bits).sum()), quality))
    return path


def measure_image(codec: Codec, image: np.ndarray, iterations: int, depths_to_match) -> list[dict]:
    encoded = codec.encode(image, iterations, keep_reconstructions=True)
    tiles = tile_grid(*image.shape[:2], codec.tile_size)
    bits = np.array([codec.model.cfg.bits * np.prod(t.code_shape(codec.model.cfg)) for t in tiles])
    path = greedy_path(image, encoded.reconstructions, tiles, bits)
    rows = []
    for d in depths_to_match:
        uniform = int(d * bits.sum())
        reaching = [b + DEPTH_FIELD_BITS * len(tiles) for b, q in path if q >= encoded.msssim[d - 1]]
        # where the mixed depths need more bits (or never get there), an encoder would keep
        # the uniform depth: no saving is claimed
        rows.append({"depth": d, "msssim": encoded.msssim[d - 1], "uniform_bits": uniform,
                     "adaptive_bits": min(reaching + [uniform])})
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default=None)
    parser.add_argument("--data", default="../shared/data/kodak")
    parser.add_argument("--tile", type=int, default=128, help="tile size in pixels")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--depths", default="1,2,3,4,6,8,12,16", help="uniform depths to match")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    codec = Codec.load(args.weights, device="cpu", tile_size=args.tile, coder="raw")
    depths = [int(d) for d in args.depths.split(",")]
    per_depth = {d: [] for d in depths}
    for path in list_images(args.data)[:args.limit]:
        image, _ = read_image(path)
        for row in measure_image(codec, image, max(depths), depths):
            per_depth[row["depth"]].append(row)
        print(path.name, flush=True)
    summary = {"weights": str(args.weights or "default"), "tile": args.tile, "images": len(per_depth[depths[0]]),
               "depths": []}
    for d, rows in per_depth.items():
        uniform = sum(r["uniform_bits"] for r in rows)
        adaptive = sum(r["adaptive_bits"] for r in rows)
        summary["depths"].append({"depth": d, "mean_msssim": round(float(np.mean([r["msssim"] for r in rows])), 4),
                                  "saving_percent": round(100 * (1 - adaptive / uniform), 1),
                                  "images_helped": sum(r["adaptive_bits"] < r["uniform_bits"] for r in rows)})
    report(summary, args.json)


if __name__ == "__main__":
    main()
