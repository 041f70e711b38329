"""BD-rate of other context models (entropy tables) and coders against a model's own, on the same codes.

    python benchmarks/context_tables.py --data ../shared/data/kodak --data ../shared/data/photos/val \
        runs/entropy-full.safetensors [--weights W] [--coders context,adaptive] [--cache DIR] [--limit N]

A context model or coder changes the bytes only: every image is encoded once by the network of
`--weights` (the shipped model by default; its codes and MS-SSIM at every depth kept in
`--cache`, so later calls skip the network), then its codes are stored with each of `--coders`
(coder id 1 `context`, coder id 2 `adaptive`) using the tables of `--weights` and of every
weight file given (each must hold the same network: the same codes). Per image set it prints
the mean bpp at depths 1, 4 and 16, the bpp needed for MS-SSIM 0.90 / 0.95 / 0.98 (mean over
the images that reach it), and the BD-rate (MS-SSIM in dB) of each against the context coder
with the tables of `--weights`: the measure of the "context model" levers of issue 16.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from rgbatch.bench import bd_rate, bpp_at_quality, msssim_db
from rgbatch.codec import Codec
from rgbatch.codes import Codes, stream_sizes
from rgbatch.entropy import get_coder
from rgbatch.imageio import read_image
from rgbatch.train import list_images
from rgbatch.weights import read_weight_file

TARGETS = (0.90, 0.95, 0.98)


def cached_codes(codec: Codec, path: Path, cache: Path) -> tuple[Codes, np.ndarray, int]:
    """(codes, MS-SSIM per depth, pixels) of one image, from the cache or the network."""
    tiles = "auto" if codec.tile_size is None else codec.tile_size  # the codes depend on the tiling
    file = cache / f"{path.parent.name}-{path.stem}-{codec.model_id}-tiles{tiles}.npz"
    if not file.is_file():
        image, _ = read_image(path)
        encoded = codec.encode(image, keep_codes=True)
        c = encoded.codes
        np.savez(file, msssim=encoded.msssim, shape=[c.width, c.height, c.tile_size],
                 **{f"tile{i}": t for i, t in enumerate(c.tiles)})
    z = np.load(file)
    width, height, tile_size = (int(v) for v in z["shape"])
    tiles = [z[f"tile{i}"] for i in range(len(z.files) - 2)]
    return Codes(width, height, tile_size, tiles), z["msssim"], width * height


def shipped_codes(weights, cache: str) -> tuple[Codec, Path]:
    """The model whose codes the coder benchmarks measure (raw coder: they re-code its codes),
    and the folder its codes are cached in (made if missing)."""
    folder = Path(cache)
    folder.mkdir(parents=True, exist_ok=True)
    return Codec.load(weights, coder="raw", refine=False), folder


def folder_codes(codec: Codec, folders: list, limit: int, cache: Path) -> list[list[np.ndarray]]:
    """The tiles' codes of the first `limit` images of each folder (`cached_codes`): the training
    images other benchmarks fit their constants on."""
    return [cached_codes(codec, path, cache)[0].tiles for folder in folders for path in list_images(folder)[:limit]]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tables", nargs="*", help="weight files whose context models are compared")
    parser.add_argument("--weights", default=None, help="the model that codes (default: the shipped one)")
    parser.add_argument("--data", action="append", required=True, help="an image set (repeatable)")
    parser.add_argument("--coders", default="context,adaptive", help="comma-separated coder names")
    parser.add_argument("--cache", default="runs/context-tables-cache")
    parser.add_argument("--limit", type=int, default=0, help="the first N images of each set (0: all)")
    args = parser.parse_args()
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    codec = Codec.load(args.weights, coder="raw", refine=False)
    tables = {"reference": codec.extra}
    for path in args.tables:
        config, _, extra, _ = read_weight_file(path)
        if config != codec.model.cfg:
            parser.error(f"{path} holds another network than {args.weights or 'the shipped model'}")
        tables[Path(path).stem] = extra
    # the first row, what every BD-rate is against: the context coder with the tables of --weights
    coders = {"reference, context": get_coder("context", codec.extra)}
    coders |= {f"{name}, {coder}": get_coder(coder, extra) for name, extra in tables.items()
               for coder in args.coders.split(",")}
    for folder in args.data:
        start = time.time()
        sizes = {name: [] for name in coders}
        quality = []
        for path in list_images(folder)[:args.limit or None]:
            codes, msssim, pixels = cached_codes(codec, path, cache)
            quality.append(msssim)
            for name, coder in coders.items():
                sizes[name].append(8 * np.array(stream_sizes(coder.encode(codes.tiles))) / pixels)
        quality = np.array(quality)
        print(f"\n{folder}: {len(quality)} images ({time.time() - start:.0f} s)")
        print("| tables, coder | BD-rate | " + " | ".join(f"bpp at {t:.2f}" for t in TARGETS) + " | bpp at depths 1 / 4 / 16 |")
        print("|---|---|" + "---|" * len(TARGETS) + "---|")
        reference = np.array(sizes["reference, context"])
        for name, bpp in sizes.items():
            bpp = np.array(bpp)
            bd = bd_rate(reference.mean(0), msssim_db(quality.mean(0)), bpp.mean(0), msssim_db(quality.mean(0)))
            # the mean over the images that reach the quality (the same images for every table)
            at = [np.nanmean([bpp_at_quality(b, q, t) or np.nan for b, q in zip(bpp, quality)]) for t in TARGETS]
            print(f"| {name} | {bd:+.2f} % | " + " | ".join(f"{v:.4f}" for v in at)
                  + f" | {bpp.mean(0)[0]:.4f} / {bpp.mean(0)[3]:.4f} / {bpp.mean(0)[-1]:.4f} |")


if __name__ == "__main__":
    main()
