"""Fuzz the decoder with hostile streams (issue 17; docs/FORMAT.md, "Guarantees"): real streams of
the shipped model, every coder (adaptive, context, raw), some with a partial last chunk, forged
with recomputed checksums, every header field and chunk length at zero, small, huge and maximum
values, chunks cut short, steps of the last chunk raised, cut, extended, bit-flipped, spliced, garbage.

    OMP_NUM_THREADS=1 python benchmarks/fuzz.py [--cases 20000] [--seed 0] [--max-pixels 16384]

Every case must decode to the image its bits say (a context-coded one from chunks that are the
encoder's own bytes for the codes decoded) or raise BitstreamError (rgbatch/fuzz.py), in
a time within `--slack` seconds plus `--factor` x the time a real stream of the declared size
and depth takes (measured first, at the pixel limit), and without the process's peak memory
growing past that real decoding's by more than `--memory-mb`. Prints the count of each outcome.
"""

from __future__ import annotations

import argparse
import collections
import platform
import resource
import signal
import time
from pathlib import Path

import numpy as np
import torch

from rgbatch import bitstream, fuzz
from rgbatch.codec import Codec
from rgbatch.imageio import MAX_PIXELS, read_image
from rgbatch.limits import layout

SOURCE = Path(__file__).parent.parent / "tests" / "data" / "kodim05_crop192.png"
# (coder, height, width, tile size, depth, steps of the last chunk: 0 whole) of the real streams mutated
SEEDS = [("mixing2", 64, 48, 512, 16, 0), ("mixing2", 80, 96, 32, 3, 40), ("mixing", 64, 48, 512, 16, 0),
         ("mixing", 80, 96, 32, 3, 40), ("adaptive", 64, 48, 512, 16, 0),
         ("adaptive", 80, 96, 32, 3, 40), ("context", 64, 48, 512, 16, 0),
         ("context", 80, 96, 32, 3, 0), ("context", 33, 40, 0, 2, 8), ("raw", 48, 40, 32, 4, 0), ("raw", 17, 70, 64, 1, 0)]
V1_SEEDS = [("mixing2", 64, 48, 512, 16, 0), ("context", 80, 96, 32, 3, 0)]  # format v1: no post-filter records


def machine() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        return f"{names[0]} x {len(names)}"
    except (OSError, IndexError):
        return platform.processor() or platform.machine()


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def declared_work(case: fuzz.Case, codec: Codec, max_pixels: int) -> int:
    """Padded pixels x depth a case's header asks for, if within the bounds (0 otherwise: such a
    stream must be refused before any work)."""
    try:
        header = bitstream.read_header(case.blob)
        tiles = layout(header.width, header.height, header.tile_size, max_pixels, scale=header.scale)
    except ValueError:
        return 0
    depth = min(header.iterations, codec.max_iterations)
    if case.iterations is not None:
        depth = min(depth, max(case.iterations, 0))
    return sum(r * c for r, c in (t.padded_shape(codec.model.cfg.align) for t in tiles)) * depth


def seconds_per_unit(codecs: dict, image: np.ndarray, max_pixels: int) -> float:
    """Decoding time of real streams at the pixel limit, depth 16, per padded pixel and iteration
    (the slower of tiles of 32 and of 512 pixels, of the two coders)."""
    side = int(max_pixels ** 0.5) // 32 * 32
    crop = np.ascontiguousarray(np.resize(image, (side, side, 3)))
    rates = []
    for codec in codecs.values():
        for tile in (32, 512):
            tiled = Codec(codec.model, codec.model_id, codec.extra, device="cpu", coder=codec.coder.name,
                          tile_size=tile, batch_size=codec.batch_size)
            blob = tiled.encode(crop, 16, measure=False).blob
            start = time.perf_counter()
            tiled.decode(blob, max_pixels=max_pixels)
            rates.append((time.perf_counter() - start) / (side * side * 16))
    return max(rates)


class Hung(Exception):
    pass


def _alarm(*_):
    raise Hung()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=20000,
                        help="random mutations, after the systematic cases (every header field and chunk length of "
                             "every seed at its test values)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-pixels", type=int, default=2**14,
                        help="the decoder's pixel limit in the run (low, so that forged sizes under it decode fast)")
    parser.add_argument("--weights", default=None)
    parser.add_argument("--slack", type=float, default=0.5, help="seconds allowed on top of the proportional bound")
    parser.add_argument("--factor", type=float, default=3.0, help="times a real stream's decoding time allowed")
    parser.add_argument("--memory-mb", type=float, default=200.0, help="peak memory growth allowed (MB)")
    parser.add_argument("--timeout", type=int, default=120, help="seconds after which a case counts as hung")
    args = parser.parse_args()
    torch.set_num_threads(1)

    shipped = Codec.load(args.weights, device="cpu")
    codecs = {"context": shipped, "raw": Codec(shipped.model, shipped.model_id, shipped.extra, device="cpu",
                                                coder="raw")}
    image = read_image(SOURCE)[0]
    seeds = []
    for (coder, h, w, tile, depth, steps), post_filter in [(seed, True) for seed in SEEDS] + [(seed, False) for seed in V1_SEEDS]:
        codec = Codec(shipped.model, shipped.model_id, shipped.extra, device="cpu", coder=coder, tile_size=tile,
                      post_filter=post_filter, post_filter_min_pixels=0)
        crop = np.ascontiguousarray(image[:h, :w])
        seeds.append(fuzz.Seed.partial(codec, crop, depth, steps) if steps else
                     fuzz.Seed.of(shipped, codec.encode(crop, depth, measure=False).blob))
    rate = seconds_per_unit(codecs, image, args.max_pixels)
    baseline = peak_mb()
    print(f"{machine()}, torch {torch.__version__}, 1 thread, "
          f"{shipped.precision}; {len(seeds)} seeds; limit {args.max_pixels} pixels; a real stream decodes in "
          f"{rate * 1e9:.1f} s per Gpx-iteration; peak memory after it {baseline:.0f} MB", flush=True)

    signal.signal(signal.SIGALRM, _alarm)
    outcomes, kinds = collections.Counter(), collections.Counter()
    worst = (0.0, "")
    bad = []
    start = time.perf_counter()
    for i, case in enumerate(fuzz.cases(seeds, np.random.default_rng(args.seed), args.cases)):
        bound = args.slack + args.factor * rate * declared_work(case, shipped, args.max_pixels)
        signal.alarm(args.timeout)
        began = time.perf_counter()
        try:
            outcome = fuzz.run(shipped, case, args.max_pixels)
        except Hung:
            outcome = f"HUNG over {args.timeout} s"
        finally:
            signal.alarm(0)
        took = time.perf_counter() - began
        if took > bound:
            outcome = f"OVER TIME BOUND ({outcome.split(':')[0]})"
        if peak_mb() > baseline + args.memory_mb:
            outcome = f"OVER MEMORY BOUND ({outcome.split(':')[0]})"
            baseline = peak_mb()  # count each growth once
        worst = max(worst, (took / bound, case.kind))
        outcomes[outcome] += 1
        kinds[outcome.split(":")[0].split(" (")[0]] += 1
        if outcome.startswith(("WRONG", "ESCAPED", "HUNG", "OVER")):
            bad.append((case.kind, outcome))
        if (i + 1) % 1000 == 0:
            print(f"  {i + 1} cases, {time.perf_counter() - start:.0f} s, {dict(kinds)}", flush=True)

    # declared sizes the bounds refuse at the default limit: refused, each within the slack
    oversize = collections.Counter()
    slowest = 0.0
    for seed in seeds[:2]:
        for case in fuzz.oversize_cases(seed, MAX_PIXELS):
            began = time.perf_counter()
            outcome = fuzz.run(shipped, case, MAX_PIXELS)
            took = time.perf_counter() - began
            slowest = max(slowest, took)
            if took > args.slack:
                outcome = f"OVER TIME BOUND ({outcome.split(':')[0]})"
            oversize[outcome] += 1
            if not outcome.startswith("refused"):
                bad.append((case.kind, outcome))
    print(f"\nsizes over the bounds at the default limit ({MAX_PIXELS} pixels): {sum(oversize.values())} cases, "
          f"slowest {slowest * 1000:.0f} ms")
    for outcome, n in sorted(oversize.items(), key=lambda x: (-x[1], x[0])):
        print(f"  {n} {outcome}")

    total = sum(outcomes.values())
    print(f"\nthe fuzz run: {total} cases ({total - args.cases} systematic, {args.cases} random, seed {args.seed}) "
          f"in {time.perf_counter() - start:.0f} s; peak memory {peak_mb():.0f} MB; slowest case "
          f"{worst[0]:.2f} of its time bound ({worst[1]})\n")
    print("| outcome | cases |\n|---|---|")
    for outcome, n in sorted(outcomes.items(), key=lambda x: (-x[1], x[0])):
        print(f"| {outcome} | {n} |")
    print(f"\nin all: {dict(kinds)}")
    for kind, outcome in bad[:20]:
        print(f"FAILED ({kind}): {outcome}")
    raise SystemExit(1 if bad else 0)


if __name__ == "__main__":
    main()
