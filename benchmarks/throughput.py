"""Encode and decode throughput of the rgbatch network, per depth, and its FLOPs per pixel.

    python benchmarks/throughput.py                       # widths 0.25 and 1.0, fp32 and bf16, CPU
    python benchmarks/throughput.py --size 512 --device cuda --repeats 3
    python benchmarks/throughput.py --weights rgbatch/models/default.safetensors   # + its entropy coder

Times the `Codec` API as users call it (tiling, network, bit packing with the raw coder) on
one random SIZE x SIZE image, best of --repeats after a warm-up, with the decoder in each of
--decodings (exact, the default since session 18, exact-loop or float: rgbatch.exact); encode to depth k runs k
iterations of encoder and decoder, decode from depth k runs k iterations of the decoder.
Random weights (the speed of the network does not depend on their values), or with
--weights a shipped model and its own coder (the context coder runs on the CPU whatever
the device, so it bounds a GPU's throughput). FLOPs are counted from the layer
shapes (`rgbatch.model.run_flops_per_pixel`: multiply-adds x2 of what a run of k iterations
computes, the first one without the GRUs' hidden-state convolutions), and each run's GFLOP/s is
stated against the machine's matmul peak in its precision, measured first (a large product
in torch, the same threads): how close the network comes to what the hardware does.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from rgbatch.codec import Codec
from rgbatch.model import CodecConfig, ResidualGRUCodec, flops_per_pixel, parameter_count, run_flops_per_pixel
from rgbatch.weights import load_weights, model_id, stored_tensors


def random_codec(width: float, device: str, precision: str, decoding: str) -> Codec:
    torch.manual_seed(0)
    model = ResidualGRUCodec(CodecConfig(width=width))
    return Codec(model, model_id(model.cfg, stored_tensors(model)), device=device, precision=precision,
                 decoding=decoding)


CLOCK = time.perf_counter  # --clock cpu: the calling thread's CPU time (one torch thread, a shared CPU)


def best_seconds(run, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = CLOCK()
        run()
        times.append(CLOCK() - start)
    return min(times)


def matmul_peak(device: str, precision: str, size: int, repeats: int = 3) -> float:
    """The machine's measured matmul peak in GFLOP/s: the best of products of side size / 2
    and size in this precision (torch's own kernels, the threads torch is given), best of
    `repeats` each after a warm-up."""
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    device = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                          "cpu" if device == "auto" else device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    best = 0.0
    for n in (size // 2, size):
        a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))

        def run():
            for _ in range(4):
                a @ b
            sync()

        run()
        best = max(best, 4 * 2 * n ** 3 / best_seconds(run, repeats) / 1e9)
    return best


def measure(codec: Codec, image: np.ndarray, depths: list[int], repeats: int) -> list[dict]:
    codec.decode(codec.encode(image, 1, measure=False).blob)  # warm-up: allocations, kernel choice
    megapixels = image.shape[0] * image.shape[1] / 1e6
    cfg = codec.model.cfg
    rows = []
    for depth in depths:
        blob = codec.encode(image, depth, measure=False).blob
        encode_s = best_seconds(lambda: codec.encode(image, depth, measure=False), repeats)
        decode_s = best_seconds(lambda: codec.decode(blob), repeats)
        rows.append({"depth": depth, "encode_mp_s": megapixels / encode_s, "decode_mp_s": megapixels / decode_s,
                     "encode_gflop_s": run_flops_per_pixel(cfg, depth) * megapixels / 1e3 / encode_s,
                     "decode_gflop_s": run_flops_per_pixel(cfg, depth, part="decode") * megapixels / 1e3 / decode_s})
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--widths", type=float, nargs="+", default=[0.25, 1.0])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--depths", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--decodings", nargs="+", default=["exact"], choices=["exact", "exact-loop", "float"],
                        help="the decoder's arithmetic, in decoding and in the encoder's loop (rgbatch.exact)")
    parser.add_argument("--size", type=int, default=512, help="image side in pixels (512: one default tile)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    parser.add_argument("--weights", help="time this weight file (and its coder) instead of random widths")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="time by wall clock, or by this thread's CPU time (with --threads 1 on a CPU that "
                             "other work shares)")
    parser.add_argument("--peak-size", type=int, default=0,
                        help="matrix side for the matmul peak (0: 2048 on a CPU, 8192 on a GPU)")
    args = parser.parse_args()
    global CLOCK
    if args.clock == "cpu":
        if args.threads != 1 or args.device not in ("cpu", "auto") or torch.cuda.is_available():
            parser.error("--clock cpu times one CPU thread: give --threads 1, on a CPU")
        CLOCK = time.thread_time
    if args.threads:
        torch.set_num_threads(args.threads)

    console = Console()
    image = np.random.default_rng(0).integers(0, 256, (args.size, args.size, 3), dtype=np.uint8)
    flops = Table(title="model cost (per pixel, per iteration)", title_justify="left")
    for column in ("width", "parameters", "encode MFLOP/px", "decode MFLOP/px"):
        flops.add_column(column, justify="right")
    stored = load_weights(args.weights) if args.weights else None  # (model, id, extra, info), read once
    if stored:
        args.widths = [stored[0].cfg.width]
    for width in args.widths:
        cfg = CodecConfig(width=width)
        flops.add_row(f"{width:g}", f"{parameter_count(ResidualGRUCodec(cfg)) / 1e6:.2f} M",
                      f"{flops_per_pixel(cfg) / 1e6:.3f}", f"{flops_per_pixel(cfg, part='decode') / 1e6:.3f}")
    console.print(flops)

    peak_size = args.peak_size or (8192 if args.device != "cpu" and torch.cuda.is_available() else 2048)
    peaks = {p: matmul_peak(args.device, p, peak_size) for p in args.precisions}
    console.print("measured matmul peak (" + f"side {peak_size // 2} and {peak_size}, {torch.get_num_threads()} "
                  "torch threads): "
                  + ", ".join(f"{p} {g:.1f} GFLOP/s" for p, g in peaks.items()))

    speed = Table(title=f"throughput on {args.device} ({torch.get_num_threads()} torch threads, "
                        f"{os.cpu_count()} CPUs), one {args.size}x{args.size} image, best of {args.repeats}",
                  title_justify="left")
    for column in ("width", "precision", "decoding", "depth", "encode MP/s", "decode MP/s", "encode GFLOP/s", "decode GFLOP/s",
                   "% of matmul peak (enc / dec)"):
        speed.add_column(column, justify="right")
    for width in args.widths:
        for precision, decoding in ((p, d) for p in args.precisions for d in args.decodings):
            codec = (Codec(*stored, device=args.device, precision=precision, decoding=decoding) if stored
                     else random_codec(width, args.device, precision, decoding))
            for row in measure(codec, image, args.depths, args.repeats):
                speed.add_row(f"{width:g}", precision, decoding, str(row["depth"]), f"{row['encode_mp_s']:.4f}",
                              f"{row['decode_mp_s']:.4f}", f"{row['encode_gflop_s']:.1f}",
                              f"{row['decode_gflop_s']:.1f}",
                              f"{100 * row['encode_gflop_s'] / peaks[precision]:.0f} / "
                              f"{100 * row['decode_gflop_s'] / peaks[precision]:.0f} %")
            console.print(f"done: width {width:g} {precision} {decoding}", style="dim")
    console.print(speed)


if __name__ == "__main__":
    main()
