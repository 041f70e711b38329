"""What a post-filter signalled per depth buys in BD-rate: the one the codec sends (format v2,
rgbatch.postfilter) against none, in the same run, and the forms measured before it was built:

    python benchmarks/post_filter.py ../shared/data/kodak manifests/bench-kodak/bench.parquet --every 3
    python benchmarks/post_filter.py ../shared/data/photos/val manifests/bench-photos/bench.parquet --every 3

The encoder, which has the original, fits a small linear filter to each depth's reconstruction
(least squares: the decoder's colour and sharpness errors of *this* image), quantizes its
coefficients and stores them at the head of the depth's chunk; the decoder applies it in integer
arithmetic (bit-exact: `Filter.apply`). A decoder-side refiner learned over many images found nothing to
correct (docs/TRAINING.md, "Refiner"): what is left is per image, so it has to be sent.

For every Nth image of a bench manifest's run this encodes the image again with the bench's model
and coder, once as the codec does (`built`: its filter fitted per tile on a subsample, sent where
its squared-error gain pays for its bits, `postfilter.worth`) and once without a filter (its
reconstructions at every depth, as `decode` gives them within a level); on the latter it fits each
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
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from _common import coder_bd_rates, image_set_parser, report, with_coder_rows
from rgbatch.bench import msssim_db, read_manifest, summarize
from rgbatch.codec import Codec
from rgbatch.imageio import read_image
from rgbatch.metrics import msssim_many
from rgbatch.postfilter import Filter, coefficient_bits


FILTERS = {"gain": Filter(cross=False), "colour": Filter(), "colour3x3": Filter(radius=1)}


def filtered_depths(image: np.ndarray, recs: np.ndarray, filt: Filter, base: list[float]):
    """Per depth: MS-SSIM with the filter where it helps (else the base), and the stream's filter
    bits up to that depth (on/off bits, coefficients as differences from the last filter sent)."""
    quality, bits, last, total = [], [], np.zeros((3, filt.size + 1), np.int64), 0
    for t, x in enumerate(recs):
        q = filt.fit(x, image)
        score = msssim_many(image, [filt.apply(x, q)])[0]
        total += 1
        if score > base[t]:
            total += coefficient_bits((q - last).ravel())
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
    codec = Codec.load(args.weights, precision=args.precision, post_filter=False)
    built_codec = Codec.load(args.weights, precision=args.precision)
    bench_model = summarize(rows)["run"].get("model_id")
    if bench_model != codec.model_id:
        raise SystemExit(f"the manifest's run coded with model {bench_model}, these weights are {codec.model_id}")
    names = [n for n in args.filters.split(",") if n]  # "": the built filter alone
    base, built, changed, free = {}, {}, {n: {} for n in names}, {n: {} for n in names}
    timing = {"encode_s": 0.0, "built_encode_s": 0.0}
    for path in paths:
        image, _ = read_image(args.folder / path)
        start = time.perf_counter()
        enc = codec.encode(image, args.iterations, keep_reconstructions=True)
        timing["encode_s"] += time.perf_counter() - start
        quality = msssim_many(image, enc.reconstructions)
        for t, (b, q) in enumerate(zip(enc.bytes, quality)):
            base[path, t + 1] = (b, q)
        start = time.perf_counter()
        enc_built = built_codec.encode(image, args.iterations)
        timing["built_encode_s"] += time.perf_counter() - start
        for t, (b, q) in enumerate(zip(enc_built.bytes, enc_built.msssim)):
            built[path, t + 1] = (b, q)
        gain = msssim_db(enc_built.msssim) - msssim_db(quality)
        line = [path, f"built: +{gain.mean():.3f} dB, +{enc_built.bytes[-1] - enc.bytes[-1]} B at depth {len(quality)}"]
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
    for name in ["built", *names]:
        for label, table in ([("built", built)] if name == "built" else
                             [(name, changed[name]), (name + " (coefficients free)", free[name])]):
            after = replaced(rows, args.coder_row, table)
            summary[label] = {"bd_rate_msssim": after,
                              "points": {k: None if after[k] is None or before[k] is None else before[k] - after[k]
                                         for k in after}}
    report(summary, args.json)


if __name__ == "__main__":
    main()
