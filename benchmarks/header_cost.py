"""What the stream header costs in BD-rate, from a bench manifest (no encoding):

    python benchmarks/header_cost.py manifests/bench-kodak/bench.parquet manifests/bench-photos/bench.parquet

A stream at depth k carries 32 + 8k bytes of header (docs/FORMAT.md: magic, model id, sizes, a
length and a CRC-32 per chunk, the header's CRC-32). This takes bytes off every rgbatch row of the
manifest (per chunk and fixed, as a more compact header would) and summarizes the run again with
`rgbatch.bench.summarize`: the BD-rate of the coder against each classical codec before and after.
It measures what a format change would buy before anyone builds it; the last line of each set is
the whole header gone, the bound on any such change.
"""

import argparse

import pyarrow as pa
import pyarrow.parquet as pq

from _common import coder_bd_rates, with_coder_rows
from rgbatch import bitstream

# (bytes off per chunk, fixed bytes off): a varint length and a 16-bit CRC per chunk; that and a
# shorter fixed part; no header at all (format v1's: bitstream.header_size)
WHOLE = (bitstream.header_size(1) - bitstream.header_size(0), bitstream.header_size(0))
SAVINGS = ((4, 0), (6, 8), WHOLE)


def without_header_bytes(rows: pa.Table, codec: str, per_chunk: int, fixed: int) -> pa.Table:
    """The rows with `per_chunk` bytes a depth and `fixed` bytes taken off each of `codec`'s."""
    return with_coder_rows(rows, codec, lambda row: (row["bytes"] - per_chunk * row["quality"] - fixed, row["msssim"]))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("manifests", nargs="+", help="bench.parquet of `rgbatch bench` runs")
    parser.add_argument("--codec", default="rgbatch-mixing2", help="the rgbatch coder's rows (default: the default coder)")
    args = parser.parse_args()
    for path in args.manifests:
        rows = pq.read_table(path)
        before = coder_bd_rates(rows, args.codec)
        print(f"{path}: BD-rate (MS-SSIM) of {args.codec} against each classical codec")
        print("bytes off (a chunk + fixed) | " + " | ".join(before))
        print("0 + 0 | " + " | ".join(f"{v:+.2f} %" for v in before.values()))
        for per_chunk, fixed in SAVINGS:
            after = coder_bd_rates(without_header_bytes(rows, args.codec, per_chunk, fixed), args.codec)
            print(f"{per_chunk} + {fixed} | " + " | ".join(f"{after[k]:+.2f} %" for k in before))


if __name__ == "__main__":
    main()
