"""Image quality: MS-SSIM (pytorch-msssim's, RGB, data range 1) and PSNR, on 8-bit images.

MS-SSIM runs pytorch-msssim's arithmetic with its Gaussian filter, organised so that the
reference's statistics are computed once for all the images measured against it (`Reference`;
16 reconstructions of a Kodak image: 0.37 s against 0.67 s with the library's `ms_ssim`, one
thread). Tested equal to the library's value.

MS-SSIM needs the short side above 160 px for its five scales (an 11-px window at 1/16
scale). For smaller images rgbatch uses as many scales as fit, with the standard weights of
those scales renormalised to sum to one, and below 11 px a single-scale SSIM whose window is
the largest odd size that fits (a 1-px dimension is repeated to 2 px first). Every image, down to 1x1, gets a defined value, equal to the
standard MS-SSIM whenever the standard one is defined.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from pytorch_msssim import ssim
from pytorch_msssim.ssim import _fspecial_gauss_1d, gaussian_filter

MSSSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
WINDOW, SIGMA = 11, 1.5
C1, C2 = 0.01 ** 2, 0.03 ** 2  # data range 1
LARGE_IMAGE_PIXELS = 4_000_000  # above this, MS-SSIM is measured channel by channel (memory)


def _as_float(images: np.ndarray) -> torch.Tensor:
    """uint8 HxWx3 or NxHxWx3 -> float32 (N,3,H,W) in [0,1]."""
    t = torch.from_numpy(np.array(images, copy=True))  # a copy: the input may be read-only
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


def msssim_many(reference: np.ndarray, images: np.ndarray) -> list[float]:
    """MS-SSIM of each of N images (NxHxWx3 uint8) against one reference."""
    return msssim_scorer(reference)(images)


def msssim_scorer(reference: np.ndarray):
    """score(images) -> MS-SSIM of each of N images (NxHxWx3 uint8) against `reference`, whose
    statistics are computed once for every call (an encoder that stops at a quality scores
    one depth at a time).

    One image at a time against the reference's statistics (one at a time measured 2.3-2.9x
    faster than batches of four on this CPU). Large images go one channel at a time, each call
    computing a channel's statistics afresh: the filters' float32 intermediates of a 40 MP RGB
    image take several GB, and MS-SSIM of an RGB image is the mean of its channels' values."""
    # _as_float leaves the colours interleaved (channels-last strides), the layout in which the
    # library's Gaussian filter runs fastest here (6x a contiguous NCHW copy): no copies
    ref = _as_float(reference)
    scales = _scales(min(ref.shape[-2:]))
    if scales < 2:  # tiny images: single-scale SSIM, cost irrelevant
        return lambda images: [msssim_tensor(ref, _as_float(y)).item() for y in images]
    if ref.shape[-2] * ref.shape[-1] <= LARGE_IMAGE_PIXELS:
        stats = Reference(ref, scales)
        return lambda images: [stats.msssim(_as_float(y)).item() for y in images]

    def channel_by_channel(images):
        totals = np.zeros(len(images))
        for c in range(ref.shape[1]):
            stats = Reference(ref[:, c:c + 1], scales)
            for i, image in enumerate(images):
                totals[i] += stats.msssim(_as_float(image[..., c:c + 1])).item()
        return (totals / ref.shape[1]).tolist()
    return channel_by_channel


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
