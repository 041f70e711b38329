"""What the context entropy coder saves on Kodak, and what it costs in time.

    python benchmarks/entropy_savings.py --weights W --data ../shared/data/kodak [--limit N] [--json out.json]

Each image is encoded once by the network (raw coder, MS-SSIM measured at every depth);
its codes are then stored with the context coder too. Entropy coding is lossless, so the
quality at each depth is the same for both, and only the bytes differ. Reported:
  - mean bpp at every depth, raw and context-coded, and the saving in %
  - the bpp needed for MS-SSIM 0.90 / 0.95 (per image along its depth curve, then the mean)
  - seconds per image: network encode, context-coder encode and decode (all images), and
    network decode (the first --decode-timing-images only)
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from rgbatch.codes import stream_sizes
from rgbatch.bench import bpp_at_quality
from rgbatch.codec import Codec
from rgbatch.entropy import ContextCoder
from rgbatch.imageio import read_image
from rgbatch.train import list_images

from _common import report

TARGETS = (0.90, 0.95)


def measure_image(codec: Codec, coder: ContextCoder, image: np.ndarray, iterations: int, time_decode: bool) -> dict:
    start = time.perf_counter()
    raw = codec.encode(image, iterations)  # the codec's own coder is raw: only bit packing
    network_encode = time.perf_counter() - start

    network_decode = None
    if time_decode:
        start = time.perf_counter()
        codec.decode(raw.blob)
        network_decode = time.perf_counter() - start

    read = codec.read_codes(raw.blob)
    codes = read.tiles
    start = time.perf_counter()
    chunks = coder.encode(codes)
    entropy_encode = time.perf_counter() - start
    start = time.perf_counter()
    decoded = coder.decode(chunks, [c.shape[1:] for c in codes])
    entropy_decode = time.perf_counter() - start
    if not all(np.array_equal(a, b) for a, b in zip(decoded, codes)):
        raise AssertionError("context coder round trip is not exact")

    pixels = raw.width * raw.height
    # the chunks framed as a stream frames them (each iteration's post-filter record in front), as the
    # raw stream's bytes are: until session 62 the records were left out of the context side (~1 %)
    framed = stream_sizes(codec.frame(read, chunks))
    return {"bpp_raw": raw.bpp, "bpp_context": [8 * n / pixels for n in framed],
            "msssim": raw.msssim, "network_encode_s": network_encode, "network_decode_s": network_decode,
            "entropy_encode_s": entropy_encode, "entropy_decode_s": entropy_decode}


def summarize(rows: list[dict], targets=TARGETS) -> dict:
    mean = {k: np.mean([r[k] for r in rows if r[k] is not None], axis=0) for k in rows[0]}
    summary = {
        "images": len(rows),
        "depths": [{"depth": t + 1, "bpp_raw": round(float(mean["bpp_raw"][t]), 4),
                    "bpp_context": round(float(mean["bpp_context"][t]), 4),
                    "saving_percent": round(float(100 * (1 - mean["bpp_context"][t] / mean["bpp_raw"][t])), 1),
                    "msssim": round(float(mean["msssim"][t]), 4)} for t in range(len(mean["bpp_raw"]))],
        "seconds_per_image": {k[:-2]: round(float(mean[k]), 3) for k in mean if k.endswith("_s")},
    }
    # the coder's time against the network's, as docs/ENTROPY.md counts it ("coding and decoding together
    # add 10 % to encode time"): no share, so not named one (until session 62: "..._share_of_encode", 257 %)
    entropy = mean["entropy_encode_s"] + mean["entropy_decode_s"]
    summary["entropy_coding_vs_network_encode_percent"] = round(float(100 * entropy / mean["network_encode_s"]), 1)
    summary["entropy_decode_vs_network_decode_percent"] = round(
        float(100 * mean["entropy_decode_s"] / mean["network_decode_s"]), 1)
    for target in targets:
        for coder in ("raw", "context"):
            at = [bpp_at_quality(r[f"bpp_{coder}"], r["msssim"], target) for r in rows]
            reached = [b for b in at if b is not None]
            # a mean only over every image: leaving out the hard ones would flatter the result
            summary[f"bpp_at_msssim_{target:.2f}_{coder}"] = (round(float(np.mean(reached)), 4)
                                                             if len(reached) == len(rows) else None)
        summary[f"images_reaching_msssim_{target:.2f}"] = len(reached)
    return summary


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default=None, help="weights with a context model (default: the shipped model)")
    parser.add_argument("--data", default="../shared/data/kodak")
    parser.add_argument("--limit", type=int, default=None, help="first N images only")
    parser.add_argument("--iterations", type=int, default=None, help="depth to encode (default: the model's maximum)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--decode-timing-images", type=int, default=3,
                        help="time the network decode on the first N images only (it costs a decode each)")
    parser.add_argument("--targets", default=",".join(map(str, TARGETS)), help="MS-SSIM levels for the bpp-at-quality")
    parser.add_argument("--json", default=None, help="also write the summary here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    codec = Codec.load(args.weights, device="cpu", coder="raw")
    coder = ContextCoder(codec.extra)
    iterations = args.iterations or codec.max_iterations
    rows = []
    for i, path in enumerate(list_images(args.data)[:args.limit]):
        image, _ = read_image(path)
        rows.append(measure_image(codec, coder, image, iterations, time_decode=i < args.decode_timing_images))
        print(f"{path.name}: {100 * (1 - rows[-1]['bpp_context'][-1] / rows[-1]['bpp_raw'][-1]):.1f}% smaller "
              f"at depth {iterations}", flush=True)
    targets = [float(x) for x in args.targets.split(",")]
    summary = {"weights": str(args.weights or "default"), "model_id": codec.model_id, **summarize(rows, targets)}
    report(summary, args.json, {**summary, "per_image": rows})


if __name__ == "__main__":
    main()
