"""Print the model card's tables from a bench summary, so that the card and README quote the
numbers `rgbatch bench` measured, not numbers copied by hand:

    python benchmarks/card_tables.py docs/bench/summary.json         # Kodak
    python benchmarks/card_tables.py docs/bench-photos/summary.json  # the high-resolution photos
"""

import argparse
import json

# Toderici et al. 2017, published curve (../shared/docs/anchors.md): depth -> (MS-SSIM, PSNR)
PAPER = {1: (0.8191, 23.01), 2: (0.9037, 25.65), 3: (0.9375, 27.14), 4: (0.9538, 28.27),
         6: (0.9715, 30.14), 8: (0.9796, 31.62), 12: (0.9868, 33.63), 16: (0.9887, 34.63)}
BASELINES = {"jpeg420": "JPEG 4:2:0 (Pillow, optimized Huffman)", "jpeg444": "JPEG 4:4:4", "webp": "WebP",
             "avif": "AVIF (speed 6, Pillow's default)", "avif-s2": "AVIF speed 2", "avif-s2-444": "AVIF speed 2, 4:4:4",
             "jxl": "JPEG XL (effort 7)", "jxl-e9": "JPEG XL (effort 9)"}
NAMES = {"rgbatch-mixing2": "mixing coder with groups (id 4, the default)", "rgbatch-mixing": "mixing coder (id 3)",
         "rgbatch-adaptive": "adaptive coder (id 2)",
         "rgbatch-context": "context coder (id 1)", "rgbatch-raw": "raw bits"}
# newest first: the first a summary has is its default
CODED = ("rgbatch-mixing2", "rgbatch-mixing", "rgbatch-adaptive", "rgbatch-context")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("summary")
    summary = json.load(open(parser.parse_args().summary))
    codecs = summary["codecs"]
    # the default coder: mixing2 (coder id 4) since session 27, mixing (id 3) in session 26, adaptive (id 2) from
    # session 11, context (id 1) before
    default = next(key for key in CODED if key in codecs)
    curves = {key: {p["quality"]: p for p in codecs[key]["curve"]}
              for key in ("rgbatch-raw", *reversed(CODED)) if key in codecs}
    print(f"model {summary['run']['model_id']}, {summary['images']} images of {summary['run']['image_dir']}, "
          f"{summary['run']['created']}\n")
    coded = [key for key in curves if key != "rgbatch-raw"]
    print("| depth | bpp raw | " + " | ".join(f"bpp {NAMES[key]}" for key in coded)
          + " | saving of the default | MS-SSIM | PSNR dB | Toderici 2017 MS-SSIM / PSNR (bpp) |")
    print("|---|---|" + "---|" * len(coded) + "---|---|---|---|")
    for depth, (paper_q, paper_psnr) in PAPER.items():
        r, c = curves["rgbatch-raw"][depth], curves[default][depth]
        print(f"| {depth} | {r['bpp']:.3f} | " + " | ".join(f"{curves[key][depth]['bpp']:.3f}" for key in coded)
              + f" | {100 * (1 - c['bpp'] / r['bpp']):.0f}% | {c['msssim']:.4f} | {c['psnr']:.2f} | "
              f"{paper_q:.4f} / {paper_psnr:.2f} ({0.125 * depth:.3f}) |")
    targets = summary["targets"]
    print("\n| codec | MS-SSIM " + " | ".join(targets) + " |")
    print("|---|" + "---|" * len(targets))
    names = {key: f"rgbatch, {NAMES[key]}" for key in (*CODED, "rgbatch-raw")}
    for key, name in (names | BASELINES).items():
        if key not in codecs:  # a summary from before that codec was benched
            continue
        at = codecs[key]["bpp_at_msssim"]
        print(f"| {name} | " + " | ".join(f"{at[t]['bpp']:.3f}" if at[t]["bpp"] is not None else "-"
                                          for t in targets) + " |")
    for key in (k for k in names if k in codecs):
        bd = codecs[key]["bd_rate_msssim"]
        print(f"\nBD-rate on MS-SSIM, {key}: " + ", ".join("- against " + k if v is None else f"{v:+.1f} % against {k}"
                                                          for k, v in bd.items()))
    speed = codecs[default]["speed_by_depth"]
    depths = " / ".join(speed)
    print(f"\nSpeed ({NAMES[default]}), depths {depths}: encode "
          + " / ".join(f"{v['encode_mp_s']:.2f}" for v in speed.values()) + " MP/s, decode "
          + " / ".join(f"{v['decode_mp_s']:.2f}" for v in speed.values()) + " MP/s")


if __name__ == "__main__":
    main()
