"""Compare models (or training checkpoints) on the same benchmark, from their bench summaries:

    rgbatch export runs/a.pt --out runs/a-net.safetensors
    rgbatch fit-entropy runs/a-net.safetensors --data ../shared/data/train --out runs/a.safetensors \
        --images 240 --crop 384            # the same fit for every model compared
    rgbatch bench ../shared/data/kodak --weights runs/a.safetensors --out runs/bench-a \
        --manifest runs/bench-a/bench.parquet
    ...the same for b...
    python benchmarks/compare_models.py runs/bench-a/summary.json runs/bench-b/summary.json

Prints MS-SSIM and coded bpp per depth for each model (the default mixing coder, or the adaptive
coder where a summary has no mixing coder's bytes; `--coder context` for the context coder alone), the bpp each model and each
classical codec needs for MS-SSIM 0.90 / 0.95 / 0.98, and the BD-rate (MS-SSIM) of each model
against the first and against every classical codec of its own run. Compare runs of one image set. Decisions between
checkpoints rest on this (docs/TRAINING.md), not on the loss, which the rate weight changes.
"""

import argparse
import json
from pathlib import Path

from rgbatch.bench import bd_curve, bd_rate

CODERS = {"mixing2": "rgbatch-mixing2", "mixing": "rgbatch-mixing", "adaptive": "rgbatch-adaptive", "context": "rgbatch-context", "raw": "rgbatch-raw"}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("summaries", nargs="+", help="summary.json of each model's bench run; the first is the reference")
    parser.add_argument("--coder", choices=sorted(CODERS), default="mixing2",
                        help="whose bytes: the mixing coder with groups (id 4, the default one since session 27), the "
                             "mixing coder (id 3, session 26's), the adaptive "
                             "coder (id 2), the context coder (id 1) or raw bits")
    args = parser.parse_args()
    coded = CODERS[args.coder]
    missing = [p for p in args.summaries if not Path(p).is_file()]
    if missing:
        parser.error(f"no bench summary at {', '.join(missing)} (run `rgbatch bench` first)")
    runs = {Path(p).parent.name: json.load(open(p)) for p in args.summaries}
    older = {CODERS["mixing2"]: CODERS["mixing"], CODERS["mixing"]: CODERS["adaptive"]}  # before sessions 27, 26
    while coded in older and any(coded not in run["codecs"] for run in runs.values()):
        print(f"(some summaries have no {coded} bytes: {older[coded]}'s compared)\n")
        coded = older[coded]
    curves = {name: {p["quality"]: p for p in run["codecs"][coded]["curve"]} for name, run in runs.items()}
    raw = {name: {p["quality"]: p for p in run["codecs"]["rgbatch-raw"]["curve"]} for name, run in runs.items()}
    depths = sorted(set.intersection(*(set(c) for c in curves.values())))

    print("| depth | " + " | ".join(f"{name} MS-SSIM / bpp (saving)" for name in runs) + " |")
    print("|---|" + "---|" * len(runs))
    for depth in depths:
        cells = []
        for name in runs:
            point, raw_bpp = curves[name][depth], raw[name][depth]["bpp"]
            cells.append(f"{point['msssim']:.4f} / {point['bpp']:.3f} ({100 * (1 - point['bpp'] / raw_bpp):.0f}%)")
        print(f"| {depth} | " + " | ".join(cells) + " |")

    reference = next(iter(runs))
    classical = [c for c in runs[reference]["codecs"] if not c.startswith("rgbatch-")]
    sets = {run["run"].get("image_dir") for run in runs.values()}
    if len(sets) > 1:
        print(f"\nwarning: these runs measured different folders ({', '.join(map(str, sorted(sets, key=str)))})")

    targets = runs[reference]["targets"]
    print("\n| bpp at MS-SSIM | " + " | ".join(targets) + " |")
    print("|---|" + "---|" * len(targets))
    rows = [(name, run["codecs"][coded]) for name, run in runs.items()]
    rows += [(c, runs[reference]["codecs"][c]) for c in classical]
    for name, entry in rows:
        at = entry["bpp_at_msssim"]
        print(f"| {name} | " + " | ".join(f"{at[t]['bpp']:.3f}" if at[t]["bpp"] is not None else
                                          f"- ({at[t]['reached']}/{at[t]['images']})" for t in targets) + " |")
    print(f"\n| model | model id | BD-rate vs {reference} | " + " | ".join(f"vs {c}" for c in classical) + " |")
    print("|---|---|---|" + "---|" * len(classical))
    for name, run in runs.items():
        against_reference = bd_rate(*bd_curve(runs[reference]["codecs"][coded]), *bd_curve(run["codecs"][coded]))
        against = run["codecs"][coded]["bd_rate_msssim"]
        print(f"| {name} | {run['run'].get('model_id', '?')} | {against_reference:+.1f}% | " + " | ".join(
            f"{against[c]:+.1f}%" if against.get(c) is not None else "-" for c in classical) + " |")


if __name__ == "__main__":
    main()
