"""What a per-tile depth would save at equal image MS-SSIM (a coarse Johnston et al. 2018).

    python benchmarks/adaptive_depth.py --weights W --data ../shared/data/kodak [--tile 128] [--limit N]

Tiles are coded independently, so a tile cut at depth d simply shows its depth-d
reconstruction: no decoder change is needed to let easy tiles stop early. For each image,
encoded once at full depth with `--tile` px tiles:
  1. order the (tile, next iteration) steps greedily by squared-error reduction per bit
     (every tile starts at depth 1; a step spends one iteration of one tile);
  2. for each uniform depth d, find the shortest prefix of that order whose mixed-depth
     image reaches the MS-SSIM of the uniform depth-d image (binary search on the prefix);
  3. report the bits of both (raw bits: 32 per code position per iteration; the per-tile
     depths would cost 4 bits per tile more, counted in). Where the mixed image needs more
     bits than the uniform one, the encoder would keep the uniform depth: saving 0.
This measures only; the bitstream has no per-tile depth (see docs/ENTROPY.md).
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from rgbatch.codec import Codec
from rgbatch.imageio import read_image
from rgbatch.metrics import msssim
from rgbatch.tiling import tile_grid
from rgbatch.train import list_images

DEPTH_FIELD_BITS = 4  # a depth of 1..16 per tile


def mixed_image(reconstructions: np.ndarray, tiles, depths) -> np.ndarray:
    out = np.empty(reconstructions.shape[1:], np.uint8)
    for tile, d in zip(tiles, depths):
        window = (slice(tile.y, tile.y + tile.height), slice(tile.x, tile.x + tile.width))
        out[window] = reconstructions[d - 1][window]
    return out


def greedy_order(image: np.ndarray, reconstructions: np.ndarray, tiles) -> list[int]:
    """Tile index of each step, largest SSIM-like gain per bit first.

    SSIM scores an error relative to the local contrast, so an iteration of a tile is worth
    its squared-error reduction divided by the tile's own energy of detail (variance of the
    image around 8x8 block means, plus a floor for flat tiles), per bit spent.
    """
    iterations = reconstructions.shape[0]
    error = np.array([[((r[t.y:t.y + t.height, t.x:t.x + t.width].astype(float)
                         - image[t.y:t.y + t.height, t.x:t.x + t.width]) ** 2).sum() for t in tiles]
                      for r in reconstructions])  # (depth, tile)
    detail = np.array([_detail(image[t.y:t.y + t.height, t.x:t.x + t.width]) for t in tiles])
    bits = np.array([32 * np.prod(t.code_shape) for t in tiles])
    index = np.arange(len(tiles))
    depth, order = np.ones(len(tiles), int), []
    while (depth < iterations).any():
        reduction = error[depth - 1, index] - error[np.minimum(depth, iterations - 1), index]
        gain = np.where(depth < iterations, reduction / detail / bits, -np.inf)
        best = int(np.argmax(gain))
        depth[best] += 1
        order.append(best)
    return order


def _detail(pixels: np.ndarray, block: int = 8, floor: float = 6.5) -> float:
    """Sum of squared deviations from 8x8 block means (floor: SSIM's C2 in 8-bit units)."""
    h, w = pixels.shape[0] // block * block, pixels.shape[1] // block * block
    x = pixels[:h, :w].astype(float).reshape(h // block, block, w // block, block, -1)
    variance = ((x - x.mean(axis=(1, 3), keepdims=True)) ** 2).mean()
    return (variance + floor ** 2 / 1) * pixels.shape[0] * pixels.shape[1]


def measure_image(codec: Codec, image: np.ndarray, iterations: int, depths_to_match) -> list[dict]:
    encoded = codec.encode(image, iterations, keep_reconstructions=True)
    tiles = tile_grid(*image.shape[:2], codec.tile_size)
    bits = np.array([32 * np.prod(t.code_shape) for t in tiles])
    order = greedy_order(image, encoded.reconstructions, tiles)

    def depths_after(steps: int) -> np.ndarray:
        depth = np.ones(len(tiles), int)
        np.add.at(depth, order[:steps], 1)
        return depth

    rows = []
    for d in depths_to_match:
        target = encoded.msssim[d - 1]
        low, high = 0, len(order)  # the full order ends at uniform full depth, which reaches it
        while low < high:
            mid = (low + high) // 2
            if msssim(image, mixed_image(encoded.reconstructions, tiles, depths_after(mid))) >= target:
                high = mid
            else:
                low = mid + 1
        depth = depths_after(low)
        adaptive = int((depth * bits).sum()) + DEPTH_FIELD_BITS * len(tiles)
        reached = msssim(image, mixed_image(encoded.reconstructions, tiles, depth)) >= target
        if not reached or adaptive >= d * bits.sum():
            # an encoder would keep the uniform depth (quality need not grow with depth, so the
            # search can miss): no saving claimed
            depth, adaptive = np.full(len(tiles), d), int(d * bits.sum())
        rows.append({"depth": d, "msssim": target, "uniform_bits": int(d * bits.sum()), "adaptive_bits": adaptive,
                     "tile_depths": depth.tolist()})
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
                                  "images_helped": sum(r["adaptive_bits"] < r["uniform_bits"] for r in rows),
                                  "mean_tile_depth_spread": round(float(np.mean([np.ptp(r["tile_depths"])
                                                                                  for r in rows])), 2)})
    print(json.dumps(summary, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1)


if __name__ == "__main__":
    main()
