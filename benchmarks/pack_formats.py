"""Which image format packs the most training crops into a GPU call's 64 MiB at a given fidelity:
the bytes per crop and PSNR of `rgbatch pack`'s random crops in each format Pillow here writes
(docs/TRAINING.md, "On a GPU"):

    python benchmarks/pack_formats.py ../shared/data/train --every 7 --crop 192
"""

from __future__ import annotations

import argparse
import io

import numpy as np
from PIL import Image

from rgbatch.metrics import psnr
from rgbatch.train import load_training_images, random_crops

FORMATS = {  # name: Pillow's save options
    "jpeg q92 4:4:4": dict(format="JPEG", quality=92, subsampling=0),
    "jpeg q95 4:4:4": dict(format="JPEG", quality=95, subsampling=0),
    "avif q85 4:4:4": dict(format="AVIF", quality=85, subsampling="4:4:4", speed=6),
    "avif q90 4:4:4": dict(format="AVIF", quality=90, subsampling="4:4:4", speed=6),
    "jxl q93": dict(format="JXL", quality=93, effort=7),
    "jxl q95": dict(format="JXL", quality=95, effort=7),
    "webp q95": dict(format="WEBP", quality=95),
}


def measure(crops, options) -> tuple[float, float, float]:
    """(KiB per crop, mean PSNR, worst PSNR) of `crops` (HxWx3 uint8) saved with Pillow's `options`."""
    sizes, quality = [], []
    for crop in crops:
        buffer = io.BytesIO()
        Image.fromarray(crop).save(buffer, **options)
        sizes.append(buffer.tell())
        quality.append(psnr(crop, np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))))
    return float(np.mean(sizes)) / 1024, float(np.mean(quality)), float(np.min(quality))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder")
    parser.add_argument("--every", type=int, default=7, help="every Nth image")
    parser.add_argument("--crop", type=int, default=192)
    args = parser.parse_args()
    try:
        import pillow_jxl  # noqa: F401  (registers JXL with Pillow)
    except ImportError:
        pass
    Image.init()  # every plugin, so that Image.SAVE lists what this Pillow writes
    crops = random_crops(load_training_images(args.folder)[::args.every], args.crop, 1, np.random.default_rng(0))
    print(f"{len(crops)} crops of {args.crop} px")
    for name, options in FORMATS.items():
        if options["format"] not in Image.SAVE:
            print(f"{name:16s} not written by this Pillow")
            continue
        kib, mean, worst = measure(crops, options)
        print(f"{name:16s} {kib:6.1f} KiB a crop, PSNR {mean:.2f} dB (worst {worst:.2f})")


if __name__ == "__main__":
    main()
