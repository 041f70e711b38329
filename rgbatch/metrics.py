"""Image quality: MS-SSIM (pytorch-msssim's, RGB, data range 1) and PSNR, on 8-bit images.

MS-SSIM runs pytorch-msssim's arithmetic with its Gaussian filter, organised so that the
reference's statistics are computed once for all the images measured against it (16
reconstructions of a Kodak image: 0.37 s against 0.67 s with the library's `ms_ssim`, one
thread). Tested equal to the library's value. Two forms: `Reference` (float tensors, batched,
differentiable: the training loss) and `QualityMeter` (uint8 images, measured in strips of
rows as an encoder's reconstructions come, so that memory stays flat in the image's size, on
the device the network runs on: the codec's and the bench's figures).

MS-SSIM needs the short side above 160 px for its five scales (an 11-px window at 1/16
scale). For smaller images rgbatch uses as many scales as fit, with the standard weights of
those scales renormalised to sum to one, and below 11 px a single-scale SSIM whose window is
the largest odd size that fits (a 1-px dimension is repeated to 2 px first). Every image, down to 1x1, gets a defined value, equal to the
standard MS-SSIM whenever the standard one is defined.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from pytorch_msssim import ssim
from pytorch_msssim.ssim import _fspecial_gauss_1d, gaussian_filter

MSSSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
WINDOW, SIGMA = 11, 1.5
C1, C2 = 0.01 ** 2, 0.03 ** 2  # data range 1


def _as_float(images: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 HxWx3 or NxHxWx3 -> float32 (N,3,H,W) in [0,1], on `device` (sent there as uint8)."""
    t = torch.from_numpy(np.array(images, copy=True)).to(device)  # a copy: the input may be read-only
    t = t[None] if t.ndim == 3 else t
    return t.permute(0, 3, 1, 2).float() / 255


def _scales(side: int) -> int:
    """Scales whose 11-px window fits the short side."""
    return sum(1 for s in range(len(MSSSIM_WEIGHTS)) if side > (WINDOW - 1) * 2 ** s)


class Reference:
    """MS-SSIM against one reference: its Gaussian statistics at every scale are computed once.

    An encoding measures 16 reconstructions against the same image; pytorch-msssim would
    recompute the reference's half of the work (its pyramid, its mean and variance maps) for
    each. The arithmetic is pytorch-msssim's `ms_ssim` (tested equal), with its window and
    weights; with fewer than five scales the weights of those scales are renormalised.

    Everything is filtered in the channels-last layout, where the library's Gaussian filter
    (a grouped convolution) runs 5-6x faster on the CPU than in the default layout; a
    training step (16 reconstructions of 16 patches) spent most of its MS-SSIM time there.
    """

    def __init__(self, x: torch.Tensor, scales: int):
        x = _channels_last(x)
        self.window = _fspecial_gauss_1d(WINDOW, SIGMA).repeat([x.shape[1], 1, 1, 1]).to(x.device, x.dtype)
        weights = torch.tensor(MSSSIM_WEIGHTS[:scales], dtype=x.dtype, device=x.device)
        self.weights = weights if scales == len(MSSSIM_WEIGHTS) else weights / weights.sum()
        self.levels = []  # (image, mean map, variance map) per scale
        for level in range(scales):
            mean = gaussian_filter(x, self.window)
            self.levels.append((x, mean, gaussian_filter(x * x, self.window) - mean.pow(2)))
            if level < scales - 1:
                x = _channels_last(_halve(x))

    def msssim(self, y: torch.Tensor) -> torch.Tensor:
        """Per image of y (N,C,H,W in [0,1], the reference's shape), differentiable. y may also
        hold k reconstructions of every reference image, (k*N, C, H, W) as k batches in a row
        (training: one batch per iteration); the reference's statistics serve them all."""
        n = self.levels[0][0].shape[0]
        k = y.shape[0] // n

        def against_reference(t):  # (k*N, ...) -> (k, N, ...): broadcasts with the reference's maps
            return t.view(k, n, *t.shape[1:])

        factors = []
        y = _channels_last(y)
        for level, (x, mean_x, var_x) in enumerate(self.levels):
            mean_y = against_reference(gaussian_filter(y, self.window))
            var_y = against_reference(gaussian_filter(y * y, self.window)) - mean_y.pow(2)
            xy = _channels_last((against_reference(y) * x).flatten(0, 1))
            covariance = against_reference(gaussian_filter(xy, self.window)) - mean_x * mean_y
            contrast_structure = (2 * covariance + C2) / (var_x + var_y + C2)
            if level < len(self.levels) - 1:
                factors.append(torch.relu(contrast_structure.flatten(3).mean(-1)))
                y = _channels_last(_halve(y))
            else:
                luminance = (2 * mean_x * mean_y + C1) / (mean_x.pow(2) + mean_y.pow(2) + C1)
                factors.append(torch.relu((luminance * contrast_structure).flatten(3).mean(-1)))
        quality = torch.prod(torch.stack(factors) ** self.weights.view(-1, 1, 1, 1), dim=0).mean(-1)
        return quality.flatten()


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last)


def _halve(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, 2, padding=[s % 2 for s in x.shape[2:]])


def msssim(a: np.ndarray, b: np.ndarray) -> float:
    """MS-SSIM of two uint8 HxWx3 images."""
    return msssim_many(a, b[None])[0]


def msssim_many(reference: np.ndarray, images) -> list[float]:
    """MS-SSIM of each of N images (NxHxWx3 uint8, or a list of HxWx3) against one reference."""
    meter = QualityMeter(reference, len(images))
    for t, image in enumerate(images):
        meter.add(t, 0, image)
    meter.flush()
    return [meter.msssim(t) for t in range(len(images))]


STRIP_PIXELS = 1_000_000  # pixels of the full-scale MS-SSIM map measured at once (memory: 0.2-0.3 GB)
# Full-scale pixels of the maps one pass computes, the depths of a strip together: on a GPU the
# 16 depths of a 1 MP strip (3-5 GB); on a CPU one depth a pass, which is fastest there (Kodak,
# 16 depths, one thread: 0.49 s one at a time, 1.1 s all at once: the maps outgrow the caches).
PASS_PIXELS = {"cpu": 0, "cuda": 16 * STRIP_PIXELS}
CACHE_PIXELS = 4_000_000  # up to this size the reference's statistics are kept between flushes


@dataclass(frozen=True)
class _Strip:
    rows: tuple[int, int]  # rows of the image whose PSNR this strip sums (a partition of the image)
    maps: list[tuple[int, int]]  # per scale, rows of that scale's SSIM map summed here (a partition of the map)
    need: list[tuple[int, int]]  # per scale, rows of the image at that scale that those rows read


def _pyramid_sides(side: int, scales: int) -> list[int]:
    """A side's length at each scale (avg_pool2d with padding: halved, rounded up)."""
    sides = [side]
    for _ in range(1, scales):
        sides.append(-(-sides[-1] // 2))
    return sides


def _plan(height: int, scales: int, strip_rows: int) -> list[_Strip]:
    """Strips of `strip_rows` full-scale rows (a multiple of 2**(scales-1)) and, at each scale,
    the rows of the map and of the image each one covers: map rows are split where the strips'
    rows fall at that scale; the image rows are the map's plus the window's 10-row halo, plus
    what the next scale's rows are pooled from (avg_pool2d pairs rows 2j-p, 2j+1-p, where p is
    1 for an odd height: the zero row it pads on top)."""
    heights = _pyramid_sides(height, scales)
    bounds = list(range(0, height, strip_rows)) + [height]
    strips = []
    for lo, hi in zip(bounds, bounds[1:]):
        maps = [(min(lo >> s, h - WINDOW + 1), h - WINDOW + 1 if hi == height else min(hi >> s, h - WINDOW + 1))
                for s, h in enumerate(heights)]
        need = [None] * scales
        for s in reversed(range(scales)):
            spans = [(maps[s][0], maps[s][1] + WINDOW - 1)] if maps[s][1] > maps[s][0] else []
            if s == 0:
                spans.append((lo, hi))
            if s + 1 < scales and need[s + 1]:
                p = heights[s] % 2
                spans.append((max(2 * need[s + 1][0] - p, 0), 2 * need[s + 1][1] - p))
            need[s] = (min(a for a, _ in spans), max(b for _, b in spans)) if spans else None
        strips.append(_Strip((lo, hi), maps, need))
    return strips


class QualityMeter:
    """MS-SSIM and PSNR of reconstructions of one image at several depths, measured in strips of
    rows, so that no depth's reconstruction is ever held whole, nor any float copy of the image.

        meter = QualityMeter(image, depths=16)
        meter.add(t, y, rows)     # rows y, y+1, ... of depth t's reconstruction, top to bottom
        meter.flush()             # measures every strip whose rows have all come
        meter.msssim(t), meter.psnr(t)

    MS-SSIM is a product over scales of means of SSIM maps; a mean is a sum over a partition of
    the map, so each strip sums its part of every scale's map (float64), from the image rows it
    reads with their halo (`_plan`), pooled exactly as pytorch-msssim pools the whole image.
    The figure is pytorch-msssim's up to float32 rounding (tests/test_metrics.py: within 1e-6
    of the library's whole-image value). Strips hold about STRIP_PIXELS pixels of the full
    scale (at least 2**(scales-1) rows); the reference's statistics are computed once per strip for every
    depth measured in one flush. PSNR sums squared errors exactly (integers).

    The rows a meter keeps are views of what `add` was given, dropped once no strip needs them.
    Images whose short side leaves fewer than two scales get single-scale SSIM (`msssim_tensor`),
    measured whole (they are at most 20 pixels on one side).

    The maps are computed on `device` (the codec's: the device the network runs on), in float32,
    the depths of a strip ready in one flush together in one pass of up to `pass_pixels`
    full-scale pixels (PASS_PIXELS: every depth at once on a GPU, one at a time on a CPU);
    the rows go there as uint8 and only the sums come back. On a CPU the maps are channels-last
    (the Gaussian filter's grouped convolution runs 5-6x faster so); on a GPU they stay in the
    default layout, where torch runs its own depthwise kernel in plain float32 (channels-last
    would go to cuDNN, which may compute float32 convolutions in TF32).
    """

    def __init__(self, reference: np.ndarray, depths: int, strip_pixels: int | None = None,
                 device: torch.device | str = "cpu", pass_pixels: int | None = None):
        self.reference = reference
        self.device = torch.device(device)
        self.pass_pixels = PASS_PIXELS.get(self.device.type, 0) if pass_pixels is None else pass_pixels
        self.layout = _channels_last if self.device.type == "cpu" else torch.Tensor.contiguous
        strip_pixels = strip_pixels or STRIP_PIXELS
        height, width = reference.shape[:2]
        self.scales = _scales(min(height, width))
        if self.scales >= 2:
            step = 2 ** (self.scales - 1)
            strip_rows = max(step, strip_pixels // width // step * step)
            self.strips = _plan(height, self.scales, strip_rows)
            self.heights, self.widths = _pyramid_sides(height, self.scales), _pyramid_sides(width, self.scales)
            weights = np.array(MSSSIM_WEIGHTS[:self.scales])  # renormalised when scales are missing, as in Reference
            self.weights = weights if self.scales == len(MSSSIM_WEIGHTS) else weights / weights.sum()
            self.window = _fspecial_gauss_1d(WINDOW, SIGMA).repeat([3, 1, 1, 1]).to(self.device)
        else:
            self.strips = [_Strip((0, height), [], [(0, height)])]
        self.cache = {}  # strip -> the reference's statistics, kept for depths still to come
        self.caching = height * width <= CACHE_PIXELS
        self.pieces = [[] for _ in range(depths)]  # per depth, (first row, rows) not yet measured
        self.received = [0] * depths  # rows added per depth
        self.next = [0] * depths  # the next strip to measure per depth
        self.sums = np.zeros((depths, max(self.scales, 1), 3))  # per depth, scale and channel: map sums
        self.squared_errors = np.zeros(depths, np.int64)
        self.tiny = [None] * depths  # single-scale SSIM of tiny images

    def add(self, depth: int, y: int, rows: np.ndarray):
        if y != self.received[depth]:
            raise ValueError(f"rows of depth {depth} must come in order: row {self.received[depth]} next, not {y}")
        self.pieces[depth].append((y, rows))
        self.received[depth] += rows.shape[0]

    def flush(self):
        """Measure every strip whose rows have come, for all the depths that have them."""
        while True:
            ready = [t for t, k in enumerate(self.next)
                     if k < len(self.strips) and self.received[t] >= self.strips[k].need[0][1]]
            if not ready:
                return
            k = min(self.next[t] for t in ready)
            depths = [t for t in ready if self.next[t] == k]
            self._measure(k, depths)
            for t in depths:
                self.next[t] = k + 1
                keep = self.strips[k + 1].need[0][0] if k + 1 < len(self.strips) else self.received[t]
                self.pieces[t] = [(y, r) for y, r in self.pieces[t] if y + r.shape[0] > keep]

    def _rows(self, depth: int, lo: int, hi: int) -> np.ndarray:
        parts = [r[max(lo - y, 0):hi - y] for y, r in self.pieces[depth] if y < hi and y + r.shape[0] > lo]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _measure(self, k: int, depths: list[int]):
        strip = self.strips[k]
        lo, hi = strip.need[0]
        a, b = strip.rows
        reference = self.reference[lo:hi]
        for t in depths:
            rows = self._rows(t, lo, hi)
            diff = reference[a - lo:b - lo].astype(np.int32) - rows[a - lo:b - lo]
            self.squared_errors[t] += np.sum(diff * diff, dtype=np.int64)
        if self.scales < 2:
            for t in depths:
                self.tiny[t] = msssim_tensor(_as_float(reference), _as_float(self._rows(t, lo, hi))).item()
            return
        stats = self.cache.pop(k, None)
        if stats is None:
            stats = self._statistics(self._pyramid(reference, strip), strip)
        if self.caching and any(self.next[t] <= k for t in range(len(self.next)) if t not in depths):
            self.cache[k] = stats  # depths still to come will measure this strip (an encoder stopping at a target)
        per_pass = max(1, self.pass_pixels // ((hi - lo) * self.reference.shape[1]))
        for i in range(0, len(depths), per_pass):
            group = depths[i:i + per_pass]
            rows = np.stack([self._rows(t, lo, hi) for t in group])
            self.sums[group] += self._sums(stats, self._pyramid(rows, strip), strip)

    def _pyramid(self, rows: np.ndarray, strip: _Strip) -> list[torch.Tensor | None]:
        """The strip's image (rows HxWx3, or N images of them NxHxWx3) at every scale (rows
        `strip.need[s]`), float in [0, 1] on the meter's device, in its layout."""
        levels = [self.layout(_as_float(rows, self.device))]
        for s in range(1, self.scales):
            if strip.need[s] is None:
                levels.append(None)
                continue
            p = self.heights[s - 1] % 2
            first, last = 2 * strip.need[s][0] - p, 2 * strip.need[s][1] - p
            offset = strip.need[s - 1][0]
            part = levels[-1][:, :, max(first, 0) - offset:last - offset]
            if first < 0:  # the zero row avg_pool2d pads an odd height with on top
                part = F.pad(part, (0, 0, 1, 0))
            levels.append(self.layout(F.avg_pool2d(part, 2, padding=[0, self.widths[s - 1] % 2])))
        return levels

    def _map_input(self, levels, strip: _Strip, s: int) -> torch.Tensor | None:
        """The rows scale s's map rows of this strip read (None where the strip has none)."""
        first, last = strip.maps[s]
        if last <= first:
            return None
        offset = strip.need[s][0]
        return levels[s][:, :, first - offset:last + WINDOW - 1 - offset]

    def _statistics(self, levels, strip: _Strip) -> list:
        """Per scale, the reference's (rows its map reads, their mean, their variance), or None."""
        stats = []
        for s in range(self.scales):
            x = self._map_input(levels, strip, s)
            if x is None:
                stats.append(None)
                continue
            mean = gaussian_filter(x, self.window)
            stats.append((x, mean, gaussian_filter(x * x, self.window) - mean.pow(2)))
        return stats

    def _sums(self, stats, levels, strip: _Strip) -> np.ndarray:
        """Per image of `levels` (the depths of one pass), scale and channel, the sum of this
        strip's rows of the map pytorch-msssim averages: contrast-structure, and at the last scale
        luminance times contrast-structure. The reference's statistics broadcast over the images."""
        sums = torch.zeros((levels[0].shape[0], self.scales, 3), dtype=torch.float64, device=self.device)
        for s, reference in enumerate(stats):
            if reference is None:
                continue
            x, mean_x, var_x = reference
            y = self._map_input(levels, strip, s)
            mean_y = gaussian_filter(y, self.window)
            var_y = gaussian_filter(y * y, self.window).sub_(mean_y.pow(2))
            covariance = gaussian_filter(self.layout(x * y), self.window).sub_(mean_x * mean_y)
            # (2 covariance + C2) / (var_x + var_y + C2), in place: a strip's maps are its memory
            value = covariance.mul_(2).add_(C2).div_(var_y.add_(var_x).add_(C2))
            if s == self.scales - 1:
                value = (2 * mean_x * mean_y + C1) / (mean_x.pow(2) + mean_y.pow(2) + C1) * value
            sums[:, s] = value.sum(dim=(2, 3), dtype=torch.float64)
        return sums.cpu().numpy()

    def _measured(self, depth: int):
        if self.next[depth] < len(self.strips):
            raise ValueError(f"depth {depth} is measured up to strip {self.next[depth]} of {len(self.strips)}")

    def msssim(self, depth: int) -> float:
        """MS-SSIM of depth `depth`, once all its rows have come and been flushed."""
        self._measured(depth)
        if self.scales < 2:
            return self.tiny[depth]
        counts = np.array([(h - WINDOW + 1) * (w - WINDOW + 1) for h, w in zip(self.heights, self.widths)])
        factors = np.maximum(self.sums[depth] / counts[:, None], 0)  # (scales, channels)
        return float(np.mean(np.prod(factors ** self.weights[:, None], axis=0)))

    def psnr(self, depth: int) -> float:
        """PSNR in dB of depth `depth` (100 for a reconstruction equal to the image), once measured."""
        self._measured(depth)
        mse = self.squared_errors[depth] / self.reference.size
        return 100.0 if mse == 0 else float(10 * np.log10(255.0 ** 2 / mse))


def msssim_tensor(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """MS-SSIM per image of two float (N,3,H,W) batches in [0,1], differentiable (training loss).
    y may hold k reconstructions of each image of x, (k*N, 3, H, W) as k batches in a row."""
    side = min(x.shape[-2:])
    scales = _scales(side)
    if scales >= 2:
        return Reference(x, scales).msssim(y)
    x = x.repeat(y.shape[0] // x.shape[0], 1, 1, 1)
    if side == 1:  # the library drops size-1 dimensions; two equal pixels mean the same
        x, y = (F.pad(t, (0, x.shape[-1] == 1, 0, x.shape[-2] == 1), mode="replicate") for t in (x, y))
    win = WINDOW if side >= WINDOW else side - (1 - side % 2)
    return ssim(x, y, data_range=1.0, size_average=False, win_size=win)


def psnr(a, b) -> float:
    """PSNR in dB of two uint8 images; 100 for identical images."""
    mse = np.mean((a.astype(np.float32) - b.astype(np.float32)) ** 2, dtype=np.float64)
    return 100.0 if mse == 0 else float(10 * np.log10(255.0 ** 2 / mse))
