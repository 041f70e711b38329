"""Where the bits go: per 16x16 block, the bits rgbatch spends up to each depth and the error left.

    python benchmarks/bitmaps.py ../shared/data/photos/val ../shared/data/kodak --depths 2 4 8 --sample 6 \
        --maps elementary_000.png budgie_015.png kodim23.png --out docs/bitmaps

Every image is encoded once to the deepest depth asked for (the shipped model unless --weights).
A code position is one 16x16 block of the image, so the code length of each bit under the
stream's coder (the codec's default, the adaptive coder since session 11; `code_lengths`:
-log2 P(bit) from its tables as they stand when the bit is coded, and the stream's bits) summed
over a position's 32 bits and its iterations is what that block costs up to a depth; the tiles' padding positions are counted apart. The error left is 1 - SSIM per
block (Gaussian window 11, sigma 1.5, the mean over R, G and B, as in MS-SSIM's finest scale)
and the block's PSNR, between the image and the reconstruction at that depth.

Blocks are split into quartiles of activity (the standard deviation of the block's luma in the
original, over all blocks of a folder): the table says, per quartile and depth, what share of
the bits the blocks take, their bits per pixel, and the error they keep. Smooth blocks that take
a large share of the bits while their error is already far below the rest pay for quality they
do not need; smooth blocks whose error stays high fail to reach it. For the images named in
--maps, a PNG per depth (OUT/<image>_depth<k>.png) shows the image, the bits per block and
1 - SSIM per block.
"""

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from pytorch_msssim.ssim import _fspecial_gauss_1d, gaussian_filter

from rgbatch import bitstream
from rgbatch.codec import Codec
from rgbatch.entropy import get_coder
from rgbatch.imageio import read_image
from rgbatch.model import BLOCK
from rgbatch.train import list_images

QUARTILES = ("smoothest 25 %", "2nd", "3rd", "busiest 25 %")


def block_bits(codec: Codec, blob: bytes) -> tuple[np.ndarray, np.ndarray]:
    """(iterations, rows, cols) code length in bits of each image block at each iteration, and
    (iterations,) bits of the tiles' padding positions outside the image."""
    codes = codec.read_codes(blob)
    lengths = get_coder(bitstream.read_header(blob).coder_id, codec.extra).code_lengths(codes.tiles)
    rows, cols = -(-codes.height // BLOCK), -(-codes.width // BLOCK)
    padded = np.zeros((codes.iterations, rows + 2, cols + 2))  # tiles pad by up to 31 px: 1 block
    for tile, length in zip(codes.grid, lengths):
        r, c = length.shape[2:]
        padded[:, tile.y // BLOCK:tile.y // BLOCK + r, tile.x // BLOCK:tile.x // BLOCK + c] += length.sum(axis=1)
    inside = padded[:, :rows, :cols]
    return inside, padded.sum(axis=(1, 2)) - inside.sum(axis=(1, 2))


def _block_mean(values: np.ndarray) -> np.ndarray:
    """(H, W) -> (rows, cols) mean over each 16x16 block (the last ones cut by the edge)."""
    h, w = values.shape
    rows, cols = -(-h // BLOCK), -(-w // BLOCK)
    padded = np.full((rows * BLOCK, cols * BLOCK), np.nan)
    padded[:h, :w] = values
    return np.nanmean(padded.reshape(rows, BLOCK, cols, BLOCK), axis=(1, 3))


def ssim_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(H, W) SSIM of two HxWx3 uint8 images, mean over channels (edges reflected)."""
    x, y = (torch.from_numpy(im).permute(2, 0, 1)[None].double() for im in (a, b))
    win = _fspecial_gauss_1d(11, 1.5).repeat(3, 1, 1, 1).double()
    x, y = (F.pad(t, (5, 5, 5, 5), mode="reflect") for t in (x, y))
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_x, mu_y = gaussian_filter(x, win), gaussian_filter(y, win)
    var_x = gaussian_filter(x * x, win) - mu_x ** 2
    var_y = gaussian_filter(y * y, win) - mu_y ** 2
    cov = gaussian_filter(x * y, win) - mu_x * mu_y
    ssim = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2))
    return ssim[0].mean(0).numpy()


def block_activity(image: np.ndarray) -> np.ndarray:
    """(rows, cols) standard deviation of each block's luma (BT.601)."""
    luma = image.astype(float) @ np.array([0.299, 0.587, 0.114])
    mean = _block_mean(luma)
    return np.sqrt(np.maximum(_block_mean(luma ** 2) - mean ** 2, 0))


def measure(codec: Codec, image: np.ndarray, depths: list[int]) -> dict:
    """Per-block activity, and per depth the bits (cumulative) and error of every block."""
    encoded = codec.encode(image, max(depths), keep_reconstructions=True)
    bits, padding = block_bits(codec, encoded.blob)
    out = {"activity": block_activity(image), "bytes": encoded.bytes, "msssim": encoded.msssim,
           "padding_bits": padding, "coder": codec.coder.name, "depths": {}}
    for k in depths:
        recon = encoded.reconstructions[k - 1]
        mse = _block_mean(((image.astype(float) - recon) ** 2).mean(axis=2))
        out["depths"][k] = {"bits": bits[:k].sum(axis=0), "one_minus_ssim": 1 - _block_mean(ssim_map(image, recon)),
                            "psnr": 10 * np.log10(255 ** 2 / np.maximum(mse, 1e-3))}
    return out


def quartile_table(results: list[dict], depths: list[int]) -> list[str]:
    """Markdown rows: per depth and activity quartile, share of bits, bpp and error."""
    activity = np.concatenate([r["activity"].ravel() for r in results])
    edges = np.quantile(activity, [0.25, 0.5, 0.75])
    quartile = np.digitize(activity, edges)
    lines = ["| depth | blocks (luma std) | share of bits | bpp | 1 - SSIM | PSNR dB |", "|---|---|---|---|---|---|"]
    bounds = [0, *edges, activity.max()]
    for k in depths:
        bits = np.concatenate([r["depths"][k]["bits"].ravel() for r in results])
        error = np.concatenate([r["depths"][k]["one_minus_ssim"].ravel() for r in results])
        psnr = np.concatenate([r["depths"][k]["psnr"].ravel() for r in results])
        for q, name in enumerate(QUARTILES):
            m = quartile == q
            lines.append(f"| {k} | {name} ({bounds[q]:.1f}-{bounds[q + 1]:.1f}) | {bits[m].sum() / bits.sum():.0%} | "
                         f"{bits[m].mean() / BLOCK ** 2:.3f} | {error[m].mean():.4f} | {np.median(psnr[m]):.1f} |")
    return lines


def heat_map(image: np.ndarray, result: dict, depth: int, name: str, path: Path) -> Path:
    """The image, its bits per block and its 1 - SSIM per block at one depth, side by side."""
    level = result["depths"][depth]
    fig = Figure(figsize=(13, 3.6), dpi=72)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3)
    step = max(1, image.shape[1] // 400)  # a thumbnail keeps the PNG small
    axes[0].imshow(image[::step, ::step])
    axes[0].set_title(f"{name}: depth {depth}, {8 * result['bytes'][depth - 1] / image[..., 0].size:.3f} bpp, "
                      f"MS-SSIM {result['msssim'][depth - 1]:.4f}", fontsize=9)
    shown = axes[1].imshow(level["bits"] / BLOCK ** 2, cmap="magma", vmin=0)
    axes[1].set_title(f"bits per pixel of each 16x16 block ({result['coder']} coder)", fontsize=9)
    fig.colorbar(shown, ax=axes[1], fraction=0.035)
    error = np.clip(level["one_minus_ssim"], 1e-4, 1)
    shown = axes[2].imshow(error, cmap="viridis", norm=LogNorm(vmin=1e-3, vmax=0.5))
    axes[2].set_title("1 - SSIM of each block", fontsize=9)
    fig.colorbar(shown, ax=axes[2], fraction=0.035)
    for ax in axes:
        ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(path)
    return path


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--weights", default=None, help="weight file (default: the shipped model)")
    parser.add_argument("--depths", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--sample", type=int, default=None,
                        help="N images of each folder, spread evenly over its sorted list, and those of --maps")
    parser.add_argument("--maps", nargs="*", default=[], help="file names of the images to draw heat maps of")
    parser.add_argument("--out", type=Path, default=Path("docs/bitmaps"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    codec = Codec.load(args.weights)
    depths = sorted(set(args.depths))
    print(f"model {codec.model_id}, coder {codec.coder.name}, depths {depths}\n")
    for folder in args.folders:
        results = []
        paths = list_images(folder)
        step = max(1, -(-len(paths) // args.sample)) if args.sample else 1
        for path in [p for i, p in enumerate(paths) if i % step == 0 or p.name in args.maps]:
            image, _ = read_image(path)
            result = measure(codec, image, depths)
            results.append(result)
            if path.name in args.maps:
                args.out.mkdir(parents=True, exist_ok=True)
                for k in depths:
                    print("wrote", heat_map(image, result, k, path.stem, args.out / f"{path.stem}_depth{k}.png"))
        blocks = sum(r["activity"].size for r in results)
        print(f"\n{folder}: {len(results)} images, {blocks} blocks; activity quartiles over all of them\n")
        print("\n".join(quartile_table(results, depths)) + "\n")


if __name__ == "__main__":
    main()
