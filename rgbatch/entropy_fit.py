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

import time

import numpy as np
import torch

from .entropy import (CONTEXT_FEATURES, CONTEXT_PROBABILITIES, MAX_LOOKBACK, PROBABILITY_BITS, Canvas,
                      is_causal, read_feature)

DEFAULT_CONTEXT_BITS = 8
DEFAULT_PRIOR = 4.0  # pseudo-counts pulled towards the parent context's estimate


def candidate_features(s: int, c: int, bits: int) -> list[tuple[int, int, int, int]]:
    """Features (dt, channel, dy, dx) worth trying for channel c of colour s: the same channel
    around the position in the two previous iterations, every channel at the position in the
    previous one, the channels already coded here in this iteration, and (second colour) the
    four neighbours of the first colour."""
    around = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    pool = [(1, c, dy, dx) for dy, dx in around] + [(2, c, 0, 0)]
    pool += [(1, ch, 0, 0) for ch in range(bits) if ch != c]
    pool += [(0, ch, 0, 0) for ch in range(c)]
    pool += [(0, c, dy, dx) for dy, dx in around if dy or dx]
    return [f for f in pool if is_causal(f, s, c)]


def _smoothed(n1: np.ndarray, n: np.ndarray, parent: np.ndarray, prior: float) -> np.ndarray:
    """Per-context P(1) of tables (..., 2**k), backed off to the parent tables (..., 2**(k-1))."""
    return (n1 + prior * np.repeat(parent, 2, axis=-1)) / (n + prior)


def _code_length(n1: np.ndarray, n: np.ndarray, p: np.ndarray) -> float:
    """Bits to code n bits (n1 ones) with P(1) = p, summed over every table entry."""
    p = np.clip(p, 2.0 ** -PROBABILITY_BITS, 1 - 2.0 ** -PROBABILITY_BITS)  # as the coder stores it
    return float(-(n1 * np.log2(p) + (n - n1) * np.log2(1 - p)).sum())


def _counts(keys: np.ndarray, y: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    return (np.bincount(keys, weights=y, minlength=size), np.bincount(keys, minlength=size).astype(float))


def fit_channel(canvas: np.ndarray, width: int, positions: np.ndarray, folds: np.ndarray, s: int, c: int,
                context_bits: int, prior: float):
    """Features (K, 4) and probabilities (T, 2**K) of channel c, colour s."""
    iterations = canvas.shape[0] - MAX_LOOKBACK
    t = np.arange(iterations)[:, None]
    y = read_feature(canvas, width, t, (0, c, 0, 0), positions).ravel().astype(float)
    # (fold, iteration) of every bit: the key prefix of every count table
    group = (folds[None, :] * iterations + t).ravel()
    pool = candidate_features(s, c, canvas.shape[1])
    values = {f: read_feature(canvas, width, t, f, positions).ravel() for f in pool}

    ctx = np.zeros_like(group)
    # parents per fold: the level-0 estimate is pulled towards 1/2
    parent = np.full((2, iterations, 1), 0.5)
    chosen = []
    for k in range(1, context_bits + 1):
        size = 2 * iterations << k
        best = None
        for f in pool:
            if f in chosen:
                continue
            n1, n = _counts((group << k) + 2 * ctx + values[f], y, size)
            n1, n = n1.reshape(2, iterations, -1), n.reshape(2, iterations, -1)
            p = _smoothed(n1, n, parent, prior)
            # tables of fold 0 charged on fold 1 and vice versa
            cost = _code_length(n1[::-1], n[::-1], p)
            if best is None or cost < best[0]:
                best = (cost, f, p)
        if best is None:  # fewer candidates than context bits: repeat the last one (a no-op bit)
            best = (None, chosen[-1], np.repeat(parent, 2, axis=-1))
        _, f, parent = best
        chosen.append(f)
        ctx = 2 * ctx + values[f]

    # final tables from all tiles, smoothed level by level
    p = np.full((iterations, 1), 0.5)
    iteration = np.repeat(np.arange(iterations), positions.size)
    for k in range(1, context_bits + 1):
        n1, n = _counts((iteration << k) + (ctx >> (context_bits - k)), y, iterations << k)
        p = _smoothed(n1.reshape(iterations, -1), n.reshape(iterations, -1), p, prior)
    return np.array(chosen), p


def quantize(p: np.ndarray) -> np.ndarray:
    """Probabilities as the coder stores them: integers q, P(1) = q / 2**15, never 0 or 1."""
    one = 2 ** PROBABILITY_BITS
    return np.clip(np.round(p * one), 1, one - 1).astype(np.int16)


def fit_context_model(tiles: list[np.ndarray], context_bits: int = DEFAULT_CONTEXT_BITS,
                      prior: float = DEFAULT_PRIOR, log=None) -> dict[str, torch.Tensor]:
    """The context coder's tensors, fitted on per-tile bool codes (T, bits, rows, cols) that all
    have the same T (the model's max_iterations: shorter streams use the first rows)."""
    layout = Canvas(tuple(t.shape[1:] for t in tiles))
    canvas = layout.paint(tiles)
    iterations, bits = tiles[0].shape[:2]
    features = np.zeros((2, bits, context_bits, 4), np.int16)
    table = np.zeros((iterations, 2, bits, 2 ** context_bits), np.int16)
    for s, positions in enumerate(layout.positions):
        folds = layout.position_tiles[s] % 2
        for c in range(bits):
            chosen, p = fit_channel(canvas, layout.width, positions, folds, s, c, context_bits, prior)
            features[s, c] = chosen
            table[:, s, c] = quantize(p)
        if log:
            log(f"colour {s}: contexts of {bits} channels selected")
    return {CONTEXT_FEATURES: torch.from_numpy(features), CONTEXT_PROBABILITIES: torch.from_numpy(table)}


def training_crops(data_dir, images: int, crop: int, seed: int = 0) -> list[np.ndarray]:
    """Centre crops (at most crop x crop) of `images` images drawn at random from a folder."""
    from .imageio import read_image
    from .train import list_images

    paths = list_images(data_dir)
    if not paths:
        raise ValueError(f"no images in {data_dir}")
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(len(paths), min(images, len(paths)), replace=False))
    crops = []
    for i in chosen:
        image, _ = read_image(paths[i])
        h, w = image.shape[:2]
        ch, cw = min(crop, h), min(crop, w)
        y, x = (h - ch) // 2, (w - cw) // 2
        crops.append(image[y:y + ch, x:x + cw])
    return crops


def fit_entropy(weights, data_dir, out, images: int = 64, crop: int = 256, context_bits: int = DEFAULT_CONTEXT_BITS,
                prior: float = DEFAULT_PRIOR, device: str = "auto", seed: int = 0, log=None) -> str:
    """Write `out`: the weights of `weights` with a context model fitted on the codes of
    crops of training images (never the benchmark set). Returns the new model id."""
    from .codec import Codec
    from .weights import load_weights, save_weights

    if not 1 <= context_bits <= 12:
        raise ValueError(f"context bits must be 1..12, not {context_bits}")
    model, model_id, _, info = load_weights(weights)
    codec = Codec(model, model_id, device=device, coder="raw", tile_size=0)
    crops = training_crops(data_dir, images, crop, seed)
    if log:
        log(f"coding {len(crops)} crops of {crop} px at {codec.max_iterations} iterations")
    start = time.perf_counter()
    tiles = []
    for encoded in codec.encode_many(crops, codec.max_iterations, measure=False):
        tiles += codec.read_codes(encoded.blob)[2]
    if log:
        log(f"coded in {time.perf_counter() - start:.0f} s; selecting contexts")
    start = time.perf_counter()
    extra = fit_context_model(tiles, context_bits, prior, log)
    if log:
        log(f"fitted in {time.perf_counter() - start:.0f} s")
    info = {**info, "entropy": {"data": str(data_dir), "images": len(crops), "crop": crop,
                                "context_bits": context_bits, "prior": prior, "seed": seed}}
    return save_weights(out, model.cpu(), extra=extra, info=info)
