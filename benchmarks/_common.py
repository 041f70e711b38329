"""What several benchmarks share (imported as `_common`: a benchmark runs with this folder on its path)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

# a tiny model's training (`rgbatch train` options but --out, --steps and the checkpoints): the fuzzers' runs
TINY_TRAINING = ["--batch-size", "1", "--patch", "32", "--iterations", "2", "--width", "0.125", "--max-iterations", "4",
                 "--threads", "1"]


# Kodak beside the checkout, as the project lays it out (../shared/data/kodak)
KODAK = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "kodak"


def kodak_images(count: int) -> list[Path]:
    """The first `count` Kodak images; a worded exit where there are none (a checkout elsewhere:
    batch_size.py divided by zero until session 62)."""
    paths = sorted(KODAK.glob("*.png"))[:count]
    if not paths:
        raise SystemExit(f"no Kodak images in {KODAK}")
    return paths


def report(summary: dict, path: str | None, saved: dict | None = None):
    """Print a benchmark's summary as JSON, and write it (or `saved`, a fuller record) to `path` if one is given."""
    print(json.dumps(summary, indent=1))
    if path:
        with open(path, "w") as f:
            json.dump(summary if saved is None else saved, f, indent=1)


def image_set_parser(doc: str) -> argparse.ArgumentParser:
    """The arguments of a benchmark that encodes a folder of PNGs with one codec (folder, every
    Nth image, depth, torch threads, precision, weights, --json); a benchmark adds its own."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--every", type=int, default=1, help="every Nth image (sorted by name)")
    parser.add_argument("--iterations", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--weights", default=None)
    parser.add_argument("--json", default=None, help="also write the summary here")
    return parser


def with_coder_rows(rows, codec: str, change):
    """A bench manifest's rows (a pyarrow Table) with each of `codec`'s rows changed by `change(row)`,
    which returns its new (bytes, MS-SSIM); bpp follows the bytes. What a format or codec change
    would do to a run, before anyone builds it."""
    import pyarrow as pa

    out = rows.to_pylist()
    for row in out:
        if row["codec"] == codec:
            row["bytes"], row["msssim"] = change(row)
            row["bpp"] = 8 * row["bytes"] / (row["width"] * row["height"])
    return pa.Table.from_pylist(out, schema=rows.schema)


def coder_bd_rates(rows, codec: str) -> dict:
    """BD-rate (MS-SSIM) of `codec`'s rows against every other codec of the run (`rgbatch.bench.summarize`)."""
    from rgbatch.bench import summarize

    return summarize(rows)["codecs"][codec]["bd_rate_msssim"]
