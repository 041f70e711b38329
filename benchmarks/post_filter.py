"""What a post-filter signalled per depth would buy in BD-rate, measured before anyone builds it:

    python benchmarks/post_filter.py ../shared/data/kodak manifests/bench-kodak/bench.parquet --every 3
    python benchmarks/post_filter.py ../shared/data/photos/val manifests/bench-photos/bench.parquet --every 3

The encoder, which has the original, would fit a small linear filter to each depth's reconstruction
(least squares: the decoder's colour and sharpness errors of *this* image), quantize its
coefficients and store them beside the depth's chunk; the decoder would apply it in integer
arithmetic (bit-exact: `apply`). A decoder-side refiner learned over many images found nothing to
correct (docs/TRAINING.md, "Refiner"): what is left is per image, so it has to be sent.

For every Nth image of a bench manifest's run this encodes the image again with the bench's model
and coder (its reconstructions at every depth, as `decode` gives them within a level), fits each
filter of FILTERS per depth, and charges its coefficients: signed Exp-Golomb codes of their
difference from the last depth that sent a filter, plus one on/off bit a depth (on where it raises
that depth's MS-SSIM; a stream cut at depth k carries the filters of depths 1..k). The manifest's
rows of those images (every codec), with the coder's bytes and MS-SSIM replaced, are summarized
again (`rgbatch.bench.summarize`): BD-rate against every classical codec of the run without a
filter, with one, and with one whose coefficients cost nothing (the bound). Also printed: the
filter's time (fit, apply, the second MS-SSIM) against the encoding's, since it would add to
issue 16's 2x encoding-time budget.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from _common import coder_bd_rates, image_set_parser, report, with_coder_rows
from rgbatch.bench import msssim_db, read_manifest, summarize
from rgbatch.codec import Codec
from rgbatch.imageio import read_image
from rgbatch.metrics import msssim_many


@dataclass(frozen=True)
class Filter:
    """y_c = x_c + round((sum_k a_ck f_k + b_c 2^(shift-1)) / 2^shift), clipped to 0..255: the features f_k
    are the reconstruction's pixels minus 128 at `radius` around each pixel (point-symmetric pairs
    summed), of every colour channel (`cross`) or of channel c alone; a_ck in units of 2^-shift, b_c
    in half levels."""
    radius: int = 0
    cross: bool = True
    shift: int = 7

    def offsets(self) -> list[tuple[int, int]]:
        r = self.radius
        return [(dy, dx) for dy in range(-r, r + 1) for dx in range(-r, r + 1) if (dy, dx) >= (0, 0)]

    def features(self, x: np.ndarray) -> list[np.ndarray]:
        """Per output channel, its (H x W, K) int32 features, from an HxWx3 uint8 image (one array
        for all three when they read every channel)."""
        r, (h, w) = self.radius, x.shape[:2]
        pad = np.pad(x.astype(np.int32) - 128, ((r, r), (r, r), (0, 0)), mode="edge")
        shifted = lambda dy, dx: pad[r + dy:r + dy + h, r + dx:r + dx + w]
        taps = [shifted(dy, dx) + (shifted(-dy, -dx) if (dy, dx) != (0, 0) else 0) for dy, dx in self.offsets()]
        of = lambda channels: np.stack([tap[..., j] for tap in taps for j in channels], -1).reshape(h * w, -1)
        return [of(range(3))] * 3 if self.cross else [of([c]) for c in range(3)]

    def fit(self, x: np.ndarray, target: np.ndarray) -> np.ndarray:
        """Integer coefficients (3, K + 1) that bring x nearest target in squared error, quantized."""
        out = []
        for c, f in enumerate(self.features(x)):
            f = np.concatenate([f.astype(np.float64), np.ones((len(f), 1))], 1)
            residual = target[..., c].reshape(-1).astype(np.float64) - x[..., c].reshape(-1)
            w = np.linalg.lstsq(f.T @ f, f.T @ residual, rcond=None)[0]
            out.append(np.rint(np.concatenate([w[:-1] * 2 ** self.shift, w[-1:] * 2])))
        return np.array(out, np.int64)

    def apply(self, x: np.ndarray, q: np.ndarray) -> np.ndarray:
        """x filtered by coefficients q, in integers: the same pixels on every machine."""
        y = np.empty_like(x)
        half = 1 << (self.shift - 1)
        for c, f in enumerate(self.features(x)):
            acc = f.astype(np.int64) @ q[c, :-1] + q[c, -1] * half
            y[..., c] = np.clip(x[..., c] + ((acc + half) >> self.shift).reshape(x.shape[:2]), 0, 255)
        return y

    @property
    def size(self) -> int:
        return len(self.offsets()) * (3 if self.cross else 1)


FILTERS = {"gain": Filter(cross=False), "colour": Filter(), "colour3x3": Filter(radius=1)}


def exp_golomb_bits(values) -> int:
    """Bits of signed Exp-Golomb codes (order 0) of integers: 0 -> 1 bit, +-1 -> 3, +-2..3 -> 5, ..."""
    u = np.abs(values) * 2 - (np.asarray(values) > 0)
    return int(np.sum(2 * np.floor(np.log2(u + 1)) + 1))


def filtered_depths(image: np.ndarray, recs: np.ndarray, filt: Filter, base: list[float]):
    """Per depth: MS-SSIM with the filter where it helps (else the base), and the stream's filter
    bits up to that depth (on/off bits, coefficients as differences from the last filter sent)."""
    quality, bits, last, total = [], [], np.zeros((3, filt.size + 1), np.int64), 0
    for t, x in enumerate(recs):
        q = filt.fit(x, image)
        score = msssim_many(image, [filt.apply(x, q)])[0]
        total += 1
        if score > base[t]:
            total += exp_golomb_bits((q - last).ravel())
            last = q
        quality.append(max(score, base[t]))
        bits.append(total)
    return quality, bits


def replaced(rows: pa.Table, codec: str, table: dict) -> dict:
    """BD-rates of the run with `codec`'s rows replaced: table[(path, depth)] = (bytes, MS-SSIM)."""
    return coder_bd_rates(with_coder_rows(rows, codec, lambda row: table[row["path"], row["quality"]]), codec)


def main():
    parser = image_set_parser(__doc__)
    parser.add_argument("manifest", help="a bench manifest of the same images (`rgbatch bench ... --manifest`)")
    parser.add_argument("--coder-row", default="rgbatch-mixing2", help="the manifest's codec whose bytes are used")
    parser.add_argument("--filters", default="colour,colour3x3", help=f"of {','.join(FILTERS)}")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = read_manifest(args.manifest)
    paths = sorted({p for p, c in zip(rows["path"].to_pylist(), rows["codec"].to_pylist()) if c == args.coder_row})
    paths = paths[::args.every]
    rows = rows.filter(pc.is_in(rows["path"], pa.array(paths)))
    codec = Codec.load(args.weights, precision=args.precision)
    bench_model = summarize(rows)["run"].get("model_id")
    if bench_model != codec.model_id:
        raise SystemExit(f"the manifest's run coded with model {bench_model}, these weights are {codec.model_id}")
    names = args.filters.split(",")
    base, changed, free, timing = {}, {n: {} for n in names}, {n: {} for n in names}, {"encode_s": 0.0}
    for path in paths:
        image, _ = read_image(args.folder / path)
        start = time.perf_counter()
        enc = codec.encode(image, args.iterations, keep_reconstructions=True)
        timing["encode_s"] += time.perf_counter() - start
        quality = msssim_many(image, enc.reconstructions)
        for t, (b, q) in enumerate(zip(enc.bytes, quality)):
            base[path, t + 1] = (b, q)
        line = [path]
        for name in names:
            start = time.perf_counter()
            filtered, bits = filtered_depths(image, enc.reconstructions, FILTERS[name], quality)
            timing[name + "_s"] = timing.get(name + "_s", 0.0) + time.perf_counter() - start
            for t, (b, q, n) in enumerate(zip(enc.bytes, filtered, bits)):
                changed[name][path, t + 1] = (b + (n + 7) // 8, q)
                free[name][path, t + 1] = (b, q)
            gain = msssim_db(filtered) - msssim_db(quality)
            line.append(f"{name}: +{gain.mean():.3f} dB, {(bits[-1] + 7) // 8} B at depth {len(bits)}")
        print("  ".join(line), flush=True)
    summary = {"model_id": codec.model_id, "images": len(paths), "timing": timing}
    before = replaced(rows, args.coder_row, base)
    summary["no filter"] = before
    for name in names:
        for label, table in ((name, changed[name]), (name + " (coefficients free)", free[name])):
            after = replaced(rows, args.coder_row, table)
            summary[label] = {"bd_rate_msssim": after,
                              "points": {k: None if after[k] is None or before[k] is None else before[k] - after[k]
                                         for k in after}}
    report(summary, args.json)


if __name__ == "__main__":
    main()
