"""Fitting the context coder's tables from the codes of training images.

    extra = fit_context_model(tile_codes)       # per-tile bool codes (T, bits, rows, cols)
    fit_entropy("model.safetensors", "data/train", "model+entropy.safetensors")

The context of a bit is K earlier-coded bits chosen per (checkerboard colour, channel) by
greedy forward selection: each round adds the candidate feature that most lowers the
cross-validated code length (tables counted on one half of the tiles, charged on the
other half and vice versa), so a feature that only fits noise is not picked. The
probabilities are then counted on all tiles with back-off smoothing: a context seen n
times with n1 ones gets p = (n1 + prior * p_parent) / (n + prior), p_parent being the
estimate from its first K-1 features. docs/ENTROPY.md has the measurements.
"""

from __future__ import annotations

import hashlib
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from .context import (CONTEXT_FEATURES, CONTEXT_PROBABILITIES, MAX_LOOKBACK, PROBABILITY_BITS, Canvas,
                      is_causal, read_feature)
from .options import check_range
from .storage import NewFile

DEFAULT_CONTEXT_BITS = 10  # 8 before session 6: with 5x the fitting data, 10 measured 0.1-0.6 points better
DEFAULT_CROP = 512  # px; one centre crop of each image: whole images of our training set
DEFAULT_PRIOR = 4.0  # pseudo-counts pulled towards the parent context's estimate


def candidate_features(s: int, c: int, bits: int) -> list[tuple[int, int, int, int]]:
    """Features (dt, channel, dy, dx) worth trying for channel c of colour s: the same channel
    around the position in the previous iteration, every channel at the position in the two
    previous ones, the channels already coded here in this iteration, and the neighbours in this
    iteration that the decoder has: of the same channel (the row above in its own step; the
    first colour's four in the second pass) and of channels c-1 and c-2 (the diagonals in the
    first pass, all eight in the second). Session 38 added iteration t-2's other channels and
    the neighbours of c-1 and c-2 (docs/ENTROPY.md, "A wider pool")."""
    around = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    pool = [(1, c, dy, dx) for dy, dx in around] + [(2, c, 0, 0)]
    pool += [(1, ch, 0, 0) for ch in range(bits) if ch != c]
    pool += [(0, ch, 0, 0) for ch in range(c)]
    pool += [(0, c, dy, dx) for dy, dx in around if dy or dx]
    pool += [(2, ch, 0, 0) for ch in range(bits) if ch != c]
    pool += [(0, ch, dy, dx) for ch in (c - 1, c - 2) if ch >= 0 for dy, dx in around if dy or dx]
    return [f for f in pool if is_causal(f, s, c)]


def _smoothed(n1: np.ndarray, n: np.ndarray, prior_p, prior: float) -> np.ndarray:
    """P(1) per table entry from counts, pulled towards prior_p (the parent's estimate)."""
    return (n1 + prior * prior_p) / (n + prior)


def _code_length(n1: np.ndarray, n: np.ndarray, p: np.ndarray, axis=None):
    """Bits to code n bits (n1 ones) with P(1) = p, summed over table entries (along `axis`)."""
    p = np.clip(p, 2.0 ** -PROBABILITY_BITS, 1 - 2.0 ** -PROBABILITY_BITS)  # as the coder stores it
    return -(n1 * np.log2(p) + (n - n1) * np.log2(1 - p)).sum(axis=axis)


def _counts(keys: np.ndarray, y: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    return (np.bincount(keys.ravel(), weights=y.ravel(), minlength=size),
            np.bincount(keys.ravel(), minlength=size).astype(float))


def _children(p: np.ndarray) -> np.ndarray:
    """A table one context bit deeper that ignores the new bit."""
    return np.repeat(p, 2, axis=-1)


def fit_channel(canvas: np.ndarray, width: int, positions: np.ndarray, folds: np.ndarray, s: int, c: int,
                context_bits: int, prior: float):
    """Features (T, K, 4) and probabilities (T, 2**K) of channel c, colour s.

    Each iteration gets its own features: early iterations gain from many context bits, late
    ones (near-random bits) from few. An iteration whose cross-validated code length stops
    falling keeps its last useful level: its deeper tables repeat that level's probabilities.
    """
    iterations = canvas.shape[0] - MAX_LOOKBACK
    t = np.arange(iterations)[:, None]
    y = read_feature(canvas, width, t, (0, c, 0, 0), positions).astype(float)  # (T, n)
    pool = candidate_features(s, c, canvas.shape[1])
    values = np.stack([read_feature(canvas, width, t, f, positions) for f in pool])  # (F, T, n)
    group = folds[None, :] * iterations + t  # (fold, iteration) of every bit: the key prefix

    def fold_tables(ctx, k, parent):
        """Per-fold smoothed tables (2, T, 2**k) and each iteration's cross-validated bits."""
        n1, n = _counts((group << k) + ctx, y, 2 * iterations << k)
        n1, n = n1.reshape(2, iterations, -1), n.reshape(2, iterations, -1)
        p = _smoothed(n1, n, parent, prior)
        return p, _code_length(n1[::-1], n[::-1], p, axis=(0, 2))  # fold 0's tables on fold 1, and back

    ctx = np.zeros_like(group)
    parent, cost = fold_tables(ctx, 0, 0.5)  # level 0: one probability per iteration
    chosen = np.zeros((iterations, context_bits), int)  # indices into pool
    levels = np.zeros(iterations, int)  # context bits each iteration really uses
    for k in range(1, context_bits + 1):
        trial = np.array([fold_tables(2 * ctx + v, k, _children(parent))[1] for v in values])  # (F, T)
        trial[chosen[:, :k - 1].T, np.arange(iterations)] = np.inf  # each feature once per iteration
        best = trial.argmin(axis=0)
        chosen[:, k - 1] = best
        ctx = 2 * ctx + values[best, np.arange(iterations)]
        grows = (levels == k - 1) & (trial[best, np.arange(iterations)] < cost)
        p, new_cost = fold_tables(ctx, k, _children(parent))
        parent = np.where(grows[:, None], p, _children(parent))
        cost = np.where(grows, new_cost, cost)
        levels += grows

    # final tables from all tiles, level by level; past its level an iteration repeats the last
    n1, n = _counts(t + 0 * ctx, y, iterations)
    p = _smoothed(n1[:, None], n[:, None], 0.5, prior)
    for k in range(1, context_bits + 1):
        n1, n = _counts((t << k) + (ctx >> (context_bits - k)), y, iterations << k)
        deeper = _smoothed(n1.reshape(iterations, -1), n.reshape(iterations, -1), _children(p), prior)
        p = np.where((levels >= k)[:, None], deeper, _children(p))
    return np.array(pool)[chosen], p


def quantize(p: np.ndarray) -> np.ndarray:
    """Probabilities as the coder stores them: integers q, P(1) = q / 2**15, never 0 or 1."""
    one = 2 ** PROBABILITY_BITS
    return np.clip(np.round(p * one), 1, one - 1).astype(np.int16)


def fit_context_model(tiles: list[np.ndarray], context_bits: int = DEFAULT_CONTEXT_BITS,
                      prior: float = DEFAULT_PRIOR, log=None, workers: int = 0) -> dict[str, torch.Tensor]:
    """The context coder's tensors, fitted on per-tile bool codes (T, bits, rows, cols) that all
    have the same T (the model's max_iterations: shorter streams use the first rows).
    `workers`: channels fitted at once (0: one per CPU)."""
    layout = Canvas(tuple(t.shape[1:] for t in tiles))
    canvas = layout.paint(tiles)
    iterations, bits = tiles[0].shape[:2]
    features = np.zeros((iterations, 2, bits, context_bits, 4), np.int16)
    table = np.zeros((iterations, 2, bits, 2 ** context_bits), np.int16)
    for s, positions in enumerate(layout.positions):
        folds = layout.position_tiles[s] % 2
        # channels are fitted independently, and numpy's large array operations release the GIL
        with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
            fits = pool.map(lambda c: fit_channel(canvas, layout.width, positions, folds, s, c, context_bits, prior),
                            range(bits))
            for c, (chosen, p) in enumerate(fits):
                features[:, s, c] = chosen
                table[:, s, c] = quantize(p)
        if log:
            log(f"colour {s}: contexts of {bits} channels selected")
    return {CONTEXT_FEATURES: torch.from_numpy(features), CONTEXT_PROBABILITIES: torch.from_numpy(table)}


def _image_paths(data_dir) -> list[Path]:
    from .train import list_images

    folders = data_dir if isinstance(data_dir, (list, tuple)) else [data_dir]
    paths = [path for folder in folders for path in list_images(folder)]
    if not paths:
        raise ValueError(f"no images in {data_dir}")
    return paths


def training_crops(data_dir, images: int, crop: int, seed: int = 0, log=None) -> list[np.ndarray]:
    """Centre crops (at most crop x crop) of `images` images drawn at random from a folder, or
    from several folders together (every image when `images` is 0); an image that cannot be
    read is skipped with a line (until session 60 it ended the fit, unnamed)."""
    from .train import read_each

    paths = _image_paths(data_dir)
    rng = np.random.default_rng(seed)
    count = min(images, len(paths)) if images else len(paths)
    chosen = sorted(rng.choice(len(paths), count, replace=False))
    crops = []
    for _, image in read_each([paths[i] for i in chosen], log or print):
        h, w = image.shape[:2]
        ch, cw = min(crop, h), min(crop, w)
        y, x = (h - ch) // 2, (w - cw) // 2
        crops.append(image[y:y + ch, x:x + cw])
    if not crops:
        raise ValueError(f"no readable image among the {count} chosen in {data_dir}")
    return crops


def training_codes(codec, data_dir, images: int, crop: int, seed: int, cache=None, log=None) -> list[np.ndarray]:
    """The codes (one tile each) of the training crops at the model's full depth; with `cache`
    (a folder), kept there by model id, crop choice and the images' files (paths, sizes and
    times: until session 60 the folders' names alone, so that changed images refitted stale
    codes), so that a refit with other options (context bits, candidate features) skips the
    network. A cache file that cannot be read is made again."""
    file = None
    if cache:
        files = "\n".join(f"{p.resolve()} {(s := p.stat()).st_size} {s.st_mtime_ns}" for p in _image_paths(data_dir))
        where = hashlib.sha256(files.encode()).hexdigest()[:12]
        file = Path(cache) / f"{codec.model_id}-{where}-{images}x{crop}-seed{seed}.npz"
        if file.is_file():
            try:
                with np.load(file) as z:
                    return [z[f"tile{i}"] for i in range(len(z.files))]
            except Exception as e:  # cut short, not an .npz, not ours: coded again and replaced
                (log or print)(f"the cache file {file} cannot be read ({type(e).__name__}: {e}): coding again")
    crops = training_crops(data_dir, images, crop, seed, log)
    if log:
        log(f"coding {len(crops)} crops of {crop} px at {codec.max_iterations} iterations")
    start = time.perf_counter()
    tiles = [tile for codes in codec.encode_codes(crops, codec.max_iterations) for tile in codes.tiles]
    if log:
        log(f"coded in {time.perf_counter() - start:.0f} s")
    if file:
        with NewFile.replacing(file) as f:
            np.savez(f, **{f"tile{i}": t for i, t in enumerate(tiles)})
    return tiles


def fit_entropy(weights, data_dir, out, images: int = 0, crop: int = DEFAULT_CROP, context_bits: int = DEFAULT_CONTEXT_BITS,
                prior: float = DEFAULT_PRIOR, device: str = "auto", seed: int = 0, cache=None, log=None) -> str:
    """Write `out`: the weights of `weights` with a context model fitted on the codes of
    crops of training images (never the benchmark set). Returns the new model id."""
    from .codec import Codec
    from .refine import PREFIX as REFINER_PREFIX
    from .weights import load_weights, save_weights

    check_range("context_bits", context_bits, 1, 12)
    check_range("images", images, 0, what=" (0: all)")
    check_range("crop", crop, 32, what=" pixels")  # until session 53 a crop of 0 failed in torch's words
    model, model_id, kept, info = load_weights(weights)
    codec = Codec(model, model_id, device=device, coder="raw", tile_size=0)
    tiles = training_codes(codec, data_dir, images, crop, seed, cache, log)
    if log:
        log(f"selecting contexts of {len(tiles)} crops")
    start = time.perf_counter()
    # the new tables, and a refiner the file holds (dropped until session 60, its info left saying it was there)
    extra = {**{k: v for k, v in kept.items() if k.startswith(REFINER_PREFIX)},
             **fit_context_model(tiles, context_bits, prior, log)}
    if log:
        log(f"fitted in {time.perf_counter() - start:.0f} s")
    folders = data_dir if isinstance(data_dir, (list, tuple)) else [data_dir]
    info = {**info, "entropy": {"data": "+".join(str(d) for d in folders), "images": len(tiles), "crop": crop,
                                "context_bits": context_bits, "prior": prior, "seed": seed}}
    return save_weights(out, model.cpu(), extra=extra, info=info)
