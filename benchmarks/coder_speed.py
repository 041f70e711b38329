"""Speed of the entropy coders alone, on the codes of real images (issue 18's coder target).

    python benchmarks/coder_speed.py --data ../shared/data/kodak --codes /tmp/kodak-codes.npz

Encodes every image once with the network (raw coder, depth = the largest of --depths; not
timed) to get its codes, or loads them from --codes if that file exists (and saves them there
if not), then times each coder on those codes at each depth: encode = codes to chunks, decode =
chunks to codes (checked equal), in megapixels of image per second, best of --repeats:

  - raw: bit packing (coder id 0);
  - context: the context coder (coder id 1) with its compiled kernels (rgbatch/fastcoder.py);
  - adaptive: coder id 2, the same kernels with the per-image adaptation (rgbatch/adapt.py), the default
    coder for new encodings from session 11 to 25 (its reference engine codes a bit at a time in Python:
    not timed);
  - mixing: coder id 3, the same kernels with coder id 2's adaptation and, in iterations 1-4, the mixer
    (rgbatch/mix.py), the default in session 26 (its reference engine: not timed either);
  - mixing2: coder id 4, coder id 3 with the group model, mixing iterations 1-8, the default since session 27;
  - context/constriction: the same coder, same bytes, through numpy and constriction (the
    implementation before the kernels; --no-reference skips it, it is the slow one).

All on one thread; then the context coders (each engine) in 1 and --workers processes, and
--workers threads of one process, coding the images between them: the rate of all together
(wall clock), to see whether the cost scales across cores, and each worker's rate by its own CPU
time (it stays that of one thread if nothing is shared: no lock, no GIL, no memory bandwidth
limit; the constriction engine holds the GIL, so its threads take turns). Torch and BLAS
are held to one thread. The first call of the kernels in a process loads them from numba's cache
(compiles them the first time on a machine): the time of that first call is printed apart and
not counted. --clock cpu times the one-thread rows by the thread's CPU time instead of the wall
clock, for a machine that other work shares (the scaling rows are always wall time).
--profile N first shows where the numpy + constriction engine spends its time.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from rgbatch.entropy import CODERS, ContextCoder, RawCoder  # noqa: E402

CLOCK = time.perf_counter  # of the one-thread rows; --clock cpu: the thread's CPU time
CODES: list[list[np.ndarray]] = []  # per image, per tile (iterations, bits, rows, cols); read by forked workers
PIXELS: list[int] = []


def load_codes(data: str, weights: str | None, limit: int, depth: int, cache: str | None):
    """(codes per image, pixels per image, the weight file's extra tensors)."""
    import torch

    from rgbatch.codec import Codec
    from rgbatch.imageio import read_image
    from rgbatch.train import list_images

    torch.set_num_threads(1)
    codec = Codec.load(weights, coder="raw")
    if cache and Path(cache).exists():
        stored = np.load(cache)
        if int(stored["depth"]) >= depth and int(stored["images"]) >= limit:
            codes = [[stored[f"{i}_{j}"][:depth] for j in range(int(stored[f"tiles_{i}"]))] for i in range(limit)]
            return codes, [int(p) for p in stored["pixels"][:limit]], codec.extra
    codes, pixels = [], []
    for path in list_images(Path(data))[:limit]:
        image, _ = read_image(path)
        codes.append(codec.encode_codes([image], depth)[0].tiles)
        pixels.append(image.shape[0] * image.shape[1])
    if cache:
        Path(cache).parent.mkdir(parents=True, exist_ok=True)
        arrays = {f"{i}_{j}": c for i, tiles in enumerate(codes) for j, c in enumerate(tiles)}
        arrays |= {f"tiles_{i}": np.array(len(t)) for i, t in enumerate(codes)}
        np.savez_compressed(cache, depth=depth, images=len(codes), pixels=np.array(pixels), **arrays)
    return codes, pixels, codec.extra


def make_coder(name: str, extra):
    if name == "raw":
        return RawCoder()
    if name in ("adaptive", "mixing", "mixing2"):
        return CODERS[name](extra, engine="compiled")
    return ContextCoder(extra, engine="constriction" if name.endswith("constriction") else "compiled")


def code_images(name: str, extra, depth: int, images: list[int]) -> tuple[float, float]:
    """Seconds to encode, and to decode, these images at this depth (one thread)."""
    coder = make_coder(name, extra)
    encode_s = decode_s = 0.0
    for i in images:
        tiles = [c[:depth] for c in CODES[i]]
        start = CLOCK()
        chunks = coder.encode(tiles)
        middle = CLOCK()
        _CHUNKS[(name, depth, i)] = chunks  # for the decode phase of the scaling rows
        decoded = coder.decode(chunks, [c.shape[1:] for c in tiles])
        decode_s += CLOCK() - middle
        encode_s += middle - start
        if not all(np.array_equal(a, b) for a, b in zip(decoded, tiles)):
            raise AssertionError(f"{name}: image {i} does not decode to its codes")
    return encode_s, decode_s


def rates(name: str, extra, depth: int, repeats: int) -> tuple[float, float]:
    """Encode and decode MP/s over all images on one thread, best of `repeats`."""
    megapixels = sum(PIXELS) / 1e6
    best_encode = best_decode = np.inf
    for _ in range(repeats):
        encode_s, decode_s = code_images(name, extra, depth, list(range(len(CODES))))
        best_encode, best_decode = min(best_encode, encode_s), min(best_decode, decode_s)
    return megapixels / best_encode, megapixels / best_decode


def pool_rates(pool, workers: int, name: str, depth: int, repeats: int) -> list[tuple[float, float]]:
    """[(wall MP/s of all workers together, mean of each worker's MP/s of its own CPU time)] for
    the encode phase and the decode phase, each timed as a whole; best of `repeats`."""
    shares = [list(range(w, len(CODES), workers)) for w in range(workers)]
    best = [(0.0, 0.0), (0.0, 0.0)]
    for _ in range(repeats):
        for phase, work in enumerate((encode_share, decode_share)):
            start = time.perf_counter()
            done = list(pool.map(work, [(name, depth, s) for s in shares]))
            wall = sum(PIXELS) / 1e6 / (time.perf_counter() - start)
            best[phase] = max(best[phase], (wall, float(np.mean([mp / cpu for mp, cpu in done]))))
    return best


_EXTRA = None  # the weight file's tables, for workers
_CHUNKS: dict = {}  # (coder, depth, image): chunks, filled by the one-thread rows before the pools fork


def warm_up(name: str):
    code_images(name, _EXTRA, 1, [0])  # each worker loads the kernels before it is timed


def encode_share(job) -> tuple[float, float]:
    """(megapixels, CPU seconds of this thread) to encode a share of the images."""
    name, depth, images = job
    coder = make_coder(name, _EXTRA)
    start = time.thread_time()
    for i in images:
        coder.encode([c[:depth] for c in CODES[i]])
    return sum(PIXELS[i] for i in images) / 1e6, time.thread_time() - start


def decode_share(job) -> tuple[float, float]:
    name, depth, images = job
    coder = make_coder(name, _EXTRA)
    start = time.thread_time()
    for i in images:
        coder.decode(_CHUNKS[(name, depth, i)], [c.shape[1:] for c in CODES[i]])
    return sum(PIXELS[i] for i in images) / 1e6, time.thread_time() - start


def profile_reference(extra, depth: int, images: int, console: Console):
    """Where the numpy + constriction engine spends its time (cProfile, CPU time): gathering
    contexts (`context_index`), constriction's coder calls, and the rest (probability lookups,
    writing bits back, Python). cProfile's cost per Python call slows the decoder's many small
    calls about 2x, so its shares lean towards the gathering."""
    import cProfile
    import pstats

    for phase in ("encode", "decode"):
        coder = make_coder("context/constriction", extra)
        work = [(CODES[i], coder.encode([c[:depth] for c in CODES[i]]) if phase == "decode" else None)
                for i in range(images)]
        profiler = cProfile.Profile(time.thread_time)
        profiler.enable()
        for tiles, chunks in work:
            if chunks is None:
                coder.encode([c[:depth] for c in tiles])
            else:
                coder.decode(chunks, [c.shape[1:] for c in tiles])
        profiler.disable()
        stats = pstats.Stats(profiler).stats  # {(file, line, name): (calls, primitive, own, cumulative, callers)}
        total = max(cumulative for _, _, _, cumulative, _ in stats.values())
        gather = sum(v[3] for k, v in stats.items() if k[2] == "context_index")
        coding = sum(v[2] for k, v in stats.items() if "RangeEncoder" in k[2] or "RangeDecoder" in k[2])
        megapixels = sum(PIXELS[:images]) / 1e6
        console.print(f"numpy + constriction {phase}, {images} images at depth {depth}: {megapixels / total:.2f} MP/s "
                      f"(CPU); contexts {100 * gather / total:.0f} %, constriction {100 * coding / total:.0f} %, "
                      f"the rest (lookups, writes, Python) {100 * (total - gather - coding) / total:.0f} %; constriction "
                      f"alone would run at {megapixels / coding:.1f} MP/s")


def main():
    global _EXTRA, CLOCK
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="../shared/data/kodak")
    parser.add_argument("--weights", help="weight file (default: the shipped model)")
    parser.add_argument("--limit", type=int, default=24, help="images (default: all 24 of Kodak)")
    parser.add_argument("--depths", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--codes", help="npz file to keep the codes in between runs")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="processes (and threads) for the scaling rows; 0: skip")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="one-thread rows timed by wall clock, or by the thread's CPU time (on a shared machine)")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="first profile the numpy + constriction engine on N images at the largest depth")
    parser.add_argument("--no-reference", action="store_true", help="skip the numpy + constriction implementation")
    args = parser.parse_args()

    console = Console()
    codes, pixels, extra = load_codes(args.data, args.weights, args.limit, max(args.depths), args.codes)
    CODES[:], PIXELS[:] = codes, pixels
    _EXTRA = extra
    CLOCK = time.thread_time if args.clock == "cpu" else time.perf_counter
    console.print(f"{len(CODES)} images, {sum(PIXELS) / 1e6:.2f} MP, {sum(len(c) for c in CODES)} tiles; "
                  f"cpu: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}")

    if args.profile:
        profile_reference(extra, max(args.depths), args.profile, console)
    names = ["raw", "context", "adaptive", "mixing", "mixing2", "context/constriction"]
    if ContextCoder(extra).engine == "compiled":
        start = time.perf_counter()
        code_images("context", extra, 1, [0])
        console.print(f"first call of the kernels in this process (cache load or compile): "
                      f"{time.perf_counter() - start:.2f} s")
        names = names[:5] if args.no_reference else names
    else:  # as on a machine without numba: the coder's "auto" engine is constriction there
        console.print("the compiled kernels do not import here (no numba): only the constriction engine is timed")
        names = ["raw", "context/constriction"]
    table = Table(title=f"entropy coders alone, one thread: MP/s (encode / decode) by {args.clock} time, "
                  f"best of {args.repeats}", title_justify="left")
    table.add_column("coder")
    for depth in args.depths:
        table.add_column(f"depth {depth}", justify="right")
    for name in names:
        cells = [f"{e:.1f} / {d:.1f}" for e, d in (rates(name, extra, depth, args.repeats) for depth in args.depths)]
        table.add_row(name, *cells)
    console.print(table)
    if args.workers < 2:
        return

    # forked after the one-thread rows, so that the workers see the chunks to decode
    scaling = Table(title="context coders, several workers: MP/s of all together by wall time (each "
                    "worker's own rate by its CPU time), encode / decode", title_justify="left")
    scaling.add_column("coder")
    scaling.add_column("workers")
    for depth in args.depths:
        scaling.add_column(f"depth {depth}", justify="right")
    fork = multiprocessing.get_context("fork")
    for name in names[1:]:  # the context coders and engines
        for workers, kind in [(1, "process"), (args.workers, "processes"), (args.workers, "threads")]:
            pool = (ThreadPoolExecutor(workers) if kind == "threads"
                    else ProcessPoolExecutor(workers, mp_context=fork, initializer=warm_up, initargs=(name,)))
            cells = []
            for depth in args.depths:
                (ew, ec), (dw, dc) = pool_rates(pool, workers, name, depth, args.repeats)
                cells.append(f"{ew:.1f} ({ec:.1f}) / {dw:.1f} ({dc:.1f})")
            pool.shutdown()
            scaling.add_row(name, f"{workers} {kind}", *cells)
    console.print(scaling)
    console.print(f"load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
