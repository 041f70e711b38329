"""Variants of the adaptive coder (coder id 2) by ideal code length, on the same codes.

    python benchmarks/adaptive_variants.py --data ../shared/data/train --data ../shared/data/photos/train \
        --crop 384 --limit 12 [--cache DIR]

Coder id 2 (`rgbatch/adapt.py`, docs/ENTROPY.md "The adaptive coder") refines each table entry
by a context state (the table a prior worth PRIOR bits) and two adaptive probability maps, all
set afresh at every step of every chunk. This benchmark asks whether its constants, or maps that
carry what they learned from one iteration to the next (a chunk still depends only on chunks
<= t, which a decoder has), would code the same codes in fewer bits. Each variant is one
numba kernel with the kernels' integer arithmetic (`fastcoder._entry`, `_learn`) and its
parameters; the baseline row is coder id 2 exactly (checked against `code_lengths`). It prints,
per image set, the change of the ideal code length (sum of -log2 p) at depths 1, 4, 8 and 16
and the BD-rate (MS-SSIM in dB, depths 1-16) against coder id 2. Codes come from the
`context_tables.py` cache (whole images), or, with `--crop`, centre crops coded once and cached
the same way.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from numba import njit

sys.path.insert(0, str(Path(__file__).parent))
from context_tables import cached_codes  # noqa: E402  (the same cache of codes)

from rgbatch import adapt  # noqa: E402
from rgbatch.bench import bd_rate, msssim_db  # noqa: E402
from rgbatch.codec import Codec  # noqa: E402
from rgbatch.context import Canvas  # noqa: E402
from rgbatch.entropy import get_coder  # noqa: E402
from rgbatch.train import list_images  # noqa: E402

STATE_SHIFT, COUNT_BITS = adapt.STATE_SHIFT, 16
PLACE_LO, PLACE_W = adapt.LOW_KNOT.astype(np.int64), adapt.WEIGHT.astype(np.int64)


@njit(cache=True)
def _iteration_bits(canvas, reads, own, pos0, pos1, table_t, recip, cap, map_shift, state_part, map_part,
                    carry, carried, start, key_bits):
    """Ideal bits of one iteration under one variant; `carried` (steps, maps, knots) holds the
    maps a carrying variant starts from and leaves behind."""
    bits = own.shape[0]
    k = reads.shape[2]
    key_shift = k - min(k, key_bits)
    maps = carried.shape[1]
    cells = np.empty(table_t.shape[2], np.int64)
    knots = np.empty((maps, start.shape[0]), np.int64)
    one_weight = 1 << 12
    state_one = (1 << 24) - 1
    total = 0.0
    for step in range(2 * bits):
        s, c = step // bits, step % bits
        positions = pos0 if s == 0 else pos1
        offsets, table, base = reads[s, c], table_t[s, c], own[c]
        for ctx in range(table.shape[0]):
            cells[ctx] = table[ctx] << (STATE_SHIFT + COUNT_BITS)
        for m in range(maps):
            for j in range(start.shape[0]):
                if carry == 2 or (carry == 1 and m == 0):
                    knots[m, j] = carried[step, m, j]
                elif carry == 3 and m == 0:
                    knots[m, j] = carried[0, 0, j]
                else:
                    knots[m, j] = start[j]
        for i in range(positions.shape[0]):
            p = np.uint64(positions[i])
            ctx = np.int64(0)
            for j in range(offsets.shape[0]):
                ctx = (ctx << 1) | np.int64(canvas[offsets[j] + p])
            one = canvas[base + p]
            cell = cells[ctx]
            state = cell >> COUNT_BITS
            q15 = state >> STATE_SHIFT
            lo = PLACE_LO[q15]
            f = PLACE_W[q15]
            key = 1 + (ctx >> key_shift)
            mapped = ((knots[0, lo] * (one_weight - f) + knots[0, lo + 1] * f) >> 12) + \
                     ((knots[key, lo] * (one_weight - f) + knots[key, lo + 1] * f) >> 12)
            q = (state_part * state + map_part * mapped) >> (STATE_SHIFT + 4)
            q = min(max(q, 1), 32767)
            pr = q / 32768.0
            total -= np.log2(pr if one else 1.0 - pr)
            target = state_one if one else 0
            shift = 12 + map_shift
            half = 1 << (shift - 1)
            knots[0, lo] += ((target - knots[0, lo]) * (one_weight - f) + half) >> shift
            knots[0, lo + 1] += ((target - knots[0, lo + 1]) * f + half) >> shift
            knots[key, lo] += ((target - knots[key, lo]) * (one_weight - f) + half) >> shift
            knots[key, lo + 1] += ((target - knots[key, lo + 1]) * f + half) >> shift
            n = cell & ((1 << COUNT_BITS) - 1)
            state += ((target - state) * recip[n] + (1 << 15)) >> 16
            cells[ctx] = (state << COUNT_BITS) | min(n + 1, cap)
        for m in range(maps):
            for j in range(start.shape[0]):
                if carry == 2 or (carry == 1 and m == 0):
                    carried[step, m, j] = knots[m, j]
                elif carry == 3 and m == 0:
                    carried[0, 0, j] = knots[m, j]
    return total


# name: (prior, map rate shift, state part, map part, carry); coder id 2 is (32, 4, 4, 6, 0)
VARIANTS = {
    "coder id 2": (32, 4, 4, 6, 0),
    "prior 16": (16, 4, 4, 6, 0),
    "prior 64": (64, 4, 4, 6, 0),
    "map rate 1/8": (32, 3, 4, 6, 0),
    "map rate 1/32": (32, 5, 4, 6, 0),
    "state 6/16, maps 5/16": (32, 4, 6, 5, 0),
    "state 2/16, maps 7/16": (32, 4, 2, 7, 0),
    "shared map carried to the next iteration": (32, 4, 4, 6, 1),
    "both maps carried to the next iteration": (32, 4, 4, 6, 2),
    "one shared map for the whole image": (32, 4, 4, 6, 3),
}


def variant_bits(coder, codes, variant) -> np.ndarray:
    """Ideal bits per iteration of one image's codes (all tiles) under `variant`."""
    prior, map_shift, state_part, map_part, carry = variant
    cap = 1024 - prior
    recip = (1 << 16) // (np.arange(cap + 1, dtype=np.int64) + prior)
    start = adapt.START.astype(np.int64)
    iterations = codes.tiles[0].shape[0]
    out = np.zeros(iterations)
    layout = Canvas(tuple(tile.shape[1:] for tile in codes.tiles))  # every tile on one canvas, as the coder
    canvas = layout.paint(codes.tiles).reshape(-1).view(np.uint8)
    reads, own = coder._offsets(layout.height * layout.width, layout.width)
    carried = np.tile(start, (2 * coder.bits, adapt.MAPS, 1))
    for t in range(iterations):
        out[t] += _iteration_bits(canvas, reads[t], own[t], *layout.positions, coder.table[t], recip, cap,
                                  map_shift, state_part, map_part, carry, carried, start, adapt.KEY_BITS)
    return out


def crop_images(folder: str, limit: int, crop: int, out: Path) -> list[Path]:
    """Centre crops of at most `crop` px of the first `limit` images, saved once as PNG."""
    from PIL import Image
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for path in list_images(folder)[:limit]:
        file = out / f"{Path(folder).name}-{path.stem}-c{crop}.png"
        if not file.is_file():
            image = Image.open(path).convert("RGB")
            w, h = image.size
            cw, ch = min(w, crop) // 32 * 32, min(h, crop) // 32 * 32
            image.crop(((w - cw) // 2, (h - ch) // 2, (w - cw) // 2 + cw, (h - ch) // 2 + ch)).save(file)
        paths.append(file)
    return paths


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", action="append", required=True, help="an image set (repeatable)")
    parser.add_argument("--weights", default=None, help="the model (default: the shipped one)")
    parser.add_argument("--cache", default="runs/context-tables-cache")
    parser.add_argument("--limit", type=int, default=8, help="the first N images of each set (0: all)")
    parser.add_argument("--crop", type=int, default=0, help="centre crops of at most this size (0: whole images)")
    parser.add_argument("--variants", default="", help="comma-separated names (default: all)")
    args = parser.parse_args()
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    codec = Codec.load(args.weights, coder="raw", refine=False)
    coder = get_coder("adaptive", codec.extra)
    names = [v.strip() for v in args.variants.split(",") if v.strip()] or list(VARIANTS)
    for folder in args.data:
        started = time.time()
        paths = (crop_images(folder, args.limit, args.crop, cache / "crops") if args.crop
                 else list_images(folder)[:args.limit or None])
        bits = {name: [] for name in names}
        quality, pixels = [], []
        for i, path in enumerate(paths):
            codes, msssim, n = cached_codes(codec, path, cache)
            quality.append(msssim)
            pixels.append(n)
            for name in names:
                bits[name].append(variant_bits(coder, codes, VARIANTS[name]))
            if i == 0:  # the baseline kernel is coder id 2 (its ideal code lengths)
                exact = sum(float(length.sum(axis=(1, 2, 3)).sum()) for length in coder.code_lengths(codes.tiles))
                ours = float(variant_bits(coder, codes, VARIANTS["coder id 2"]).sum())
                assert abs(exact - ours) < 1e-6 * exact, (exact, ours)
        quality, pixels = np.array(quality), np.array(pixels)[:, None]
        print(f"\n{folder}: {len(paths)} images{f', {args.crop} px crops' if args.crop else ''} "
              f"({time.time() - started:.0f} s)")
        print("| variant | BD-rate | rate at depth 1 / 4 / 8 / 16 |")
        print("|---|---|---|")
        base = np.cumsum(np.array(bits["coder id 2"]), axis=1) / pixels
        for name in names:
            bpp = np.cumsum(np.array(bits[name]), axis=1) / pixels
            db = msssim_db(quality.mean(0))
            bd = bd_rate(base.mean(0), db, bpp.mean(0), db)
            change = 100 * (bpp.mean(0) / base.mean(0) - 1)
            print(f"| {name} | {bd:+.2f} % | " + " / ".join(f"{change[d - 1]:+.2f}" for d in (1, 4, 8, 16)) + " % |")


if __name__ == "__main__":
    main()
