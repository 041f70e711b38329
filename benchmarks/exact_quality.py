"""Quality of exact decoding against the float decoder: the same streams, both decoders.

    OMP_NUM_THREADS=1 python benchmarks/exact_quality.py --images 4

Encodes the first N images of Kodak and of photos/val (whole: one tile each up to 2 MP; a bigger
image's centre crop of 768 px, so that it is one tile too) with the shipped model to depth 16 (fp32,
the encoder's loop in float: the default), decodes each depth with the exact decoder and with
the float one (rgbatch.exact), and prints per image the largest MS-SSIM difference over the
depths and per set the BD-rate (MS-SSIM in dB) of the exact decoder's mean curve against the
float decoder's.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from rgbatch.bench import bd_rate, msssim_db
from rgbatch.codec import Codec
from rgbatch.codes import signs
from rgbatch.imageio import read_image
from rgbatch.metrics import msssim_many
from rgbatch.tiling import to_uint8

SETS = {"kodak": Path("../shared/data/kodak"), "photos": Path("../shared/data/photos/val")}
CROP = 768


def images(folder: Path, n: int):
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))[:n]
    for path in paths:
        image = read_image(path)[0]
        height, width = image.shape[:2]
        if height * width > 2 << 20:  # one tile: a centre crop
            image = image[max(0, (height - CROP) // 2):][:CROP, max(0, (width - CROP) // 2):][:, :CROP]
        yield path.name, image


def curves(codec: Codec, codes, image) -> list[float]:
    """MS-SSIM at every depth of one single-tile image, decoding one iteration at a time."""
    [tile], [coded] = codes.tiles, codes.coded()
    bits = torch.from_numpy(signs(tile, coded)).unsqueeze(1).to(codec.device)  # (iterations, 1 tile, bits, h, w)
    state, quality = None, []
    for t in range(bits.shape[0]):
        state = codec.model.decode_from(bits[t:t + 1], state)
        pixels = to_uint8(state.x_hat.clamp(-0.5, 0.5))[0][:image.shape[0], :image.shape[1]]
        quality.append(msssim_many(image, [pixels])[0])
    return quality


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4)
    args = parser.parse_args()
    exact = Codec.load(precision="fp32")
    floating = Codec.load(precision="fp32", decoding="float")
    print(f"torch threads {torch.get_num_threads()}, shipped model {exact.model_id}")
    for name, folder in SETS.items():
        rates, quality = [], {"exact": [], "float": []}
        for image_name, image in images(folder, args.images):
            encoded = exact.encode(image, iterations=16, keep_codes=True, measure=False)
            rates.append(encoded.bpp)
            for label, codec in (("exact", exact), ("float", floating)):
                quality[label].append(curves(codec, encoded.codes, image))
            worst = np.abs(np.subtract(quality["exact"][-1], quality["float"][-1])).max()
            print(f"{name} {image_name}: largest |MS-SSIM difference| over depths 1-16 {worst:.2e}", flush=True)
        bpp = np.mean(rates, 0)
        result = bd_rate(bpp, msssim_db(np.mean(quality["float"], 0)), bpp, msssim_db(np.mean(quality["exact"], 0)))
        print(f"{name}, {len(rates)} images: BD-rate of the exact decoder against the float one {result:+.4f} %")


if __name__ == "__main__":
    main()
