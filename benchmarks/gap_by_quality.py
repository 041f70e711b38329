"""Where along the quality axis rgbatch loses to each classical codec, from a bench manifest:

    python benchmarks/gap_by_quality.py manifests/bench-kodak/bench.parquet
    python benchmarks/gap_by_quality.py manifests/bench-photos/bench.parquet --codec rgbatch-mixing2 --step 1

BD-rate is one number for the whole shared MS-SSIM interval, integrated in dB (`bench.bd_rate`).
This splits it up: at each MS-SSIM level (in dB, -10 log10(1 - MS-SSIM)) it prints the rate
rgbatch needs against each classical codec, as the geometric mean over the images whose curves
both reach that level (`bench.bpp_at_quality`, the same interpolation as the bench's bpp at
0.90 / 0.95 / 0.98), and the depth at which rgbatch's mean curve reaches it: the depths (and so
the iterations) that a lever has to improve.
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import numpy as np

from rgbatch.bench import bpp_at_quality, msssim_db, read_manifest

REFERENCES = ("avif", "avif-s2", "avif-s2-444", "jxl")


def curves(rows) -> dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """{codec: {image: (bpp, MS-SSIM in dB)}} of a bench manifest's rows (a pyarrow Table)."""
    points = defaultdict(lambda: defaultdict(list))
    for codec, path, bpp, msssim in zip(*(rows.column(k).to_pylist() for k in ("codec", "path", "bpp", "msssim"))):
        points[codec][path].append((bpp, msssim))
    return {codec: {path: (np.array([p[0] for p in pts]), msssim_db([p[1] for p in pts])) for path, pts in images.items()}
            for codec, images in points.items()}


def rate_ratio(test: dict, reference: dict, level: float) -> tuple[int, float | None]:
    """(images, percent): the rate `test` needs over `reference`'s at MS-SSIM `level` dB, the
    geometric mean over the images both curves reach it on (None where none does)."""
    logs = []
    for path, (bpp, db) in test.items():
        if path not in reference:
            continue
        ours, theirs = bpp_at_quality(bpp, db, level), bpp_at_quality(*reference[path], level)
        if ours is not None and theirs is not None:
            logs.append(np.log(ours / theirs))
    return len(logs), (float((np.exp(np.mean(logs)) - 1) * 100) if logs else None)


def depth_reaching(test: dict, level: float) -> float | None:
    """The depth (interpolated) at which the mean of `test`'s per-image dB curves reaches `level`
    (the bench's rgbatch rows list one point per depth, in order of rate)."""
    mean = np.mean([db[np.argsort(bpp)] for bpp, db in test.values()], axis=0)
    above = np.flatnonzero(mean >= level)
    if not len(above):
        return None
    i = above[0]
    return 1.0 if i == 0 else float(i + (level - mean[i - 1]) / (mean[i] - mean[i - 1]))


def table(rows, codec: str = "rgbatch-mixing2", references=REFERENCES, levels=None) -> list[dict]:
    """One row per MS-SSIM level: its dB, the depth reaching it, and per reference (images, percent)."""
    all_curves = curves(rows)
    if codec not in all_curves:
        raise ValueError(f"the manifest has no {codec} rows (it has {', '.join(sorted(all_curves))})")
    test = all_curves[codec]
    references = [r for r in references if r in all_curves]
    if levels is None:
        levels = np.arange(8, 23)
    return [{"db": float(level), "msssim": float(1 - 10 ** (-level / 10)), "depth": depth_reaching(test, level),
             **{ref: rate_ratio(test, all_curves[ref], level) for ref in references}} for level in levels]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("manifest", help="a bench manifest (rgbatch bench --manifest)")
    parser.add_argument("--codec", default="rgbatch-mixing2", help="the rgbatch rows compared")
    parser.add_argument("--low", type=float, default=8.0, help="lowest MS-SSIM level, dB")
    parser.add_argument("--high", type=float, default=22.0, help="highest MS-SSIM level, dB")
    parser.add_argument("--step", type=float, default=1.0, help="dB between levels")
    args = parser.parse_args()
    try:
        rows = table(read_manifest(args.manifest), args.codec, levels=np.arange(args.low, args.high + 1e-9, args.step))
    except ValueError as e:
        parser.exit(2, f"gap_by_quality: {e}\n")
    references = [k for k in rows[0] if k not in ("db", "msssim", "depth")]
    print("| MS-SSIM dB | MS-SSIM | depth | " + " | ".join(f"vs {r} (images)" for r in references) + " |")
    print("|---|---|---|" + "---|" * len(references))
    for row in rows:
        depth = "-" if row["depth"] is None else f"{row['depth']:.1f}"
        cells = ["-" if row[r][1] is None else f"{row[r][1]:+.1f} % ({row[r][0]})" for r in references]
        print(f"| {row['db']:g} | {row['msssim']:.4f} | {depth} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
