"""Rate-distortion plots of a bench summary: MS-SSIM or PSNR against bpp, one curve per codec.

Drawn with matplotlib's Agg canvas (no display, no global pyplot state). Each curve is the
codec's mean over the images at each quality setting (rgbatch: at each depth), as in
`rgbatch.bench.summarize`.
"""

from __future__ import annotations

import io

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

# Toderici et al. 2017, Residual GRU before entropy coding, on Kodak: (iteration, bpp, MS-SSIM,
# PSNR dB). Source: ../shared/docs/anchors.md, from tensorflow/compression
# results/image_compression/kodak/MS-SSIM_sRGB_RGB/toderici-2017-cvpr.txt and the PSNR file
# beside it. Measured by other code than rgbatch.metrics, so drawn for orientation only.
TODERICI_2017 = (
    (1, 0.125, 0.8191, 23.01),
    (2, 0.250, 0.9037, 25.65),
    (3, 0.375, 0.9375, 27.14),
    (4, 0.500, 0.9538, 28.27),
    (6, 0.750, 0.9715, 30.14),
    (8, 1.000, 0.9796, 31.62),
    (12, 1.500, 0.9868, 33.63),
    (16, 2.000, 0.9887, 34.63),
)
METRICS = {"msssim": ("MS-SSIM (RGB)", 2), "psnr": ("PSNR (RGB, dB)", 3)}  # label, column of TODERICI_2017


def rate_distortion_plot(summary: dict, metric: str, title: str = "") -> bytes:
    """The `metric` ("msssim" or "psnr") vs bpp plot of a bench summary, as PNG bytes."""
    label, column = METRICS[metric]
    fig = Figure(figsize=(7.5, 5.5), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    # Show the range rgbatch covers (classical sweeps reach further up, where nothing is compared).
    rgbatch_rates = [p["bpp"] for name, e in summary["codecs"].items() if name.startswith("rgbatch-")
                     for p in e["curve"]]
    x_max = 1.05 * max(rgbatch_rates) if rgbatch_rates else 2.6
    visible = {True: [], False: []}  # values within the x range, of rgbatch and of the others
    for name, entry in summary["codecs"].items():
        is_rgbatch = name.startswith("rgbatch-")
        points = [(p["bpp"], p[metric]) for p in sorted(entry["curve"], key=lambda p: p["bpp"])]
        visible[is_rgbatch] += [y for x, y in points if x <= x_max]
        ax.plot(*zip(*points), marker="o" if is_rgbatch else ".", linewidth=2.2 if is_rgbatch else 1.2,
                markersize=4, label=name, zorder=3 if is_rgbatch else 2)
    ax.plot([row[1] for row in TODERICI_2017], [row[column] for row in TODERICI_2017], color="gray",
            linestyle="--", marker="x", linewidth=1, label="Toderici 2017, published (other metric code)")
    if metric == "msssim":
        for target in summary.get("targets", []):
            ax.axhline(float(target), color="lightgray", linewidth=0.8, zorder=0)
        # Classical codecs start far down at their lowest settings; cut those tails at 0.7, but
        # never hide any part of an rgbatch curve.
        others = max(0.7, min(visible[False] + [TODERICI_2017[0][2]]))
        ax.set_ylim(min(visible[True] + [others]) - 0.01, 1.0)
    ax.set_xlim(0, x_max)
    ax.set_xlabel("bits per pixel (stored bytes)")
    ax.set_ylabel(label)
    ax.set_title(title or f"{label} vs rate")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


__all__ = ["TODERICI_2017", "rate_distortion_plot"]
