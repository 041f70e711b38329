"""Decoder-side refinement: a small network that improves each depth's reconstruction.

The Residual-GRU decoder updates its reconstruction a little per iteration and never looks
back at the whole picture; at low depths its output shows the 16x16 blocks and bands of the
code grid, most of all in smooth areas (docs/bitmaps). DPICT (Lee et al., CVPR 2022) and
CTC (Jeon et al., CVPR 2023) end their progressive decoders with refinement networks chosen
by the rate reached; this is that idea for rgbatch: one network for every depth, told the
depth, applied to the decoded 8-bit image. The codes, streams and their sizes do not change;
only what a depth decodes to (and so its MS-SSIM) does.

    refiner = Refiner(RefinerConfig())
    better = refiner(x_hat, depth)     # (N, 3, H, W) in [-0.5, 0.5], depth 1..16 per image

Layers: pixel-unshuffle by 4 (48 channels at a quarter of the resolution: a 16x16 code
block is 4x4 positions), conv 3x3 to `channels`, `blocks` residual blocks (two 3x3
convolutions each) with a learned bias per depth at the input of each, conv 3x3 back to
48 channels (zero at start: the refiner starts as the identity), pixel-shuffle, added to
the input.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .config import JsonConfig
from .tiling import to_float, to_uint8


@dataclass(frozen=True)
class RefinerConfig(JsonConfig):
    channels: int = 64
    blocks: int = 3
    scale: int = 4  # pixel-unshuffle factor
    depths: int = 16

    def __post_init__(self):
        if self.channels < 1 or self.blocks < 1 or self.scale < 1 or self.depths < 1:
            raise ValueError(f"refiner sizes must be positive: {self}")

    @property
    def halo(self) -> int:
        """Rows above and below a band of rows (starting at a multiple of `scale`) that its
        refinement reads: each 3x3 convolution reaches one position (`scale` pixels) further."""
        return self.scale * (2 + 2 * self.blocks)


class _Block(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.a = nn.Conv2d(channels, channels, 3, padding=1)
        self.b = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, h):
        return h + self.b(F.relu(self.a(F.relu(h))))


class Refiner(nn.Module):
    def __init__(self, cfg: RefinerConfig = RefinerConfig()):
        super().__init__()
        self.cfg = cfg
        planes = 3 * cfg.scale ** 2
        self.conv_in = nn.Conv2d(planes, cfg.channels, 3, padding=1)
        self.depth_bias = nn.Embedding(cfg.depths, cfg.blocks * cfg.channels)
        nn.init.zeros_(self.depth_bias.weight)
        self.blocks = nn.ModuleList(_Block(cfg.channels) for _ in range(cfg.blocks))
        self.conv_out = nn.Conv2d(cfg.channels, planes, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)
        self.layout = torch.contiguous_format

    def forward(self, x: torch.Tensor, depth: int | torch.Tensor) -> torch.Tensor:
        """x (N, 3, H, W) in [-0.5, 0.5], H and W multiples of `cfg.scale`; depth 1.. per image
        (an int for all). Returns the refined image, not clamped."""
        n, s, c = x.shape[0], self.cfg.scale, self.cfg.channels
        depth = torch.as_tensor(depth, device=x.device).expand(n) - 1
        bias = self.depth_bias(depth).view(n, self.cfg.blocks, c, 1, 1).to(x.dtype)
        h = self.conv_in(F.pixel_unshuffle(x, s))
        for i, block in enumerate(self.blocks):
            h = block(h + bias[:, i])
        return x + F.pixel_shuffle(self.conv_out(h), s)

    def set_precision(self, dtype: torch.dtype) -> "Refiner":
        """Run in `dtype`; bf16 in the channels-last layout, as the codec's networks
        (`ResidualGRUCodec.set_precision`)."""
        self.layout = torch.contiguous_format if dtype == torch.float32 else torch.channels_last
        return self.to(dtype=dtype, memory_format=self.layout)

    @torch.inference_mode()
    def refine_pixels(self, pixels: np.ndarray, depth: int) -> np.ndarray:
        """HxWx3 uint8 rows of a decoded image at `depth`, refined (uint8), on the refiner's
        device and in its precision."""
        p = next(self.parameters())
        x = to_float(pixels)[None].to(p.device, p.dtype).contiguous(memory_format=self.layout)
        return to_uint8(self.refine(x, depth))[0]

    def refine(self, x: torch.Tensor, depth: int) -> torch.Tensor:
        """`forward` on an image of any size (edge-padded to a multiple of the scale), clamped."""
        h, w = x.shape[-2:]
        s = self.cfg.scale
        pad = (0, -w % s, 0, -h % s)
        y = F.pad(x, pad, mode="replicate") if any(pad) else x
        return self(y, depth)[..., :h, :w].clamp(-0.5, 0.5)


class RefinerError(ValueError):
    """Weights whose refiner is malformed, with the reason."""


PREFIX = "refine."  # the refiner's tensors in a weight file: its parameters (fp16) and its config
CONFIG = PREFIX + "config"  # int32 (channels, blocks, scale, depths)


def refiner_tensors(refiner: Refiner) -> dict[str, torch.Tensor]:
    """What a weight file stores for a refiner (among its extra tensors, so in its model id)."""
    c = refiner.cfg
    tensors = {PREFIX + k: v.detach().to(torch.float16).contiguous() for k, v in refiner.state_dict().items()}
    tensors[CONFIG] = torch.tensor([c.channels, c.blocks, c.scale, c.depths], dtype=torch.int32)
    return tensors


def load_refiner(extra: dict[str, torch.Tensor]) -> Refiner | None:
    """The refiner a weight file's extra tensors hold (None when they hold none)."""
    if CONFIG not in extra:
        return None
    try:
        channels, blocks, scale, depths = (int(v) for v in extra[CONFIG].tolist())
        with torch.random.fork_rng(devices=[]):  # its random start, replaced: a caller's random numbers stay theirs
            refiner = Refiner(RefinerConfig(channels, blocks, scale, depths))
        refiner.load_state_dict({k[len(PREFIX):]: v.float() for k, v in extra.items()
                                 if k.startswith(PREFIX) and k != CONFIG})
    except (RuntimeError, ValueError, TypeError) as e:
        raise RefinerError(f"the weight file's refiner does not fit its config: {e}") from None
    return refiner.eval()


BAND_ROWS = 256  # rows refined per call (a multiple of every scale used): memory flat in image size


class BandRefiner:
    """Refines one image at one depth as its rows arrive, top to bottom, holding only a band
    and its halo: output rows [k * BAND_ROWS, (k + 1) * BAND_ROWS) are always computed from the
    same window of input rows, so an encoder fed tile rows and a decoder fed the whole image
    give the same pixels.

        band = BandRefiner(refiner, depth, height)
        for y, rows in band.add(y, rows): ...      # uint8 rows in, refined uint8 rows out
    """

    def __init__(self, refiner: Refiner, depth: int, height: int):
        self.refiner, self.depth, self.height = refiner, depth, height
        self.halo = refiner.cfg.halo
        self.rows: np.ndarray | None = None  # input rows [self.top, self.top + len(self.rows))
        self.top = 0
        self.done = 0  # rows output so far

    def add(self, y: int, rows: np.ndarray) -> list[tuple[int, np.ndarray]]:
        have = self.top + (0 if self.rows is None else len(self.rows))
        if y != have:
            raise ValueError(f"rows must come in order: expected row {have}, got {y}")
        self.rows = rows if self.rows is None else np.concatenate([self.rows, rows])
        have += len(rows)
        out = []
        while self.done < self.height:
            end = min(self.done + BAND_ROWS, self.height)
            if have < min(end + self.halo, self.height):
                break
            lo, hi = max(0, self.done - self.halo), min(self.height, end + self.halo)
            refined = self.refiner.refine_pixels(self.rows[lo - self.top:hi - self.top], self.depth)
            out.append((self.done, refined[self.done - lo:end - lo]))
            self.done = end
            keep = max(0, self.done - self.halo)  # rows the next band reads from
            self.rows, self.top = self.rows[keep - self.top:], keep
        return out


def refine_image(refiner: Refiner, image: np.ndarray, depth: int) -> np.ndarray:
    """A whole decoded image refined, band by band (what `BandRefiner` gives, in one piece)."""
    band = BandRefiner(refiner, depth, image.shape[0])
    return np.concatenate([rows for _, rows in band.add(0, image)])


def refiner_flops_per_pixel(cfg: RefinerConfig) -> float:
    """Multiply-adds x2 per image pixel of one refinement."""
    planes = 3 * cfg.scale ** 2
    convs = 2 * planes * cfg.channels + 2 * cfg.blocks * cfg.channels ** 2
    return 2 * 9 * convs / cfg.scale ** 2


__all__ = ["BandRefiner", "Refiner", "RefinerConfig", "RefinerError", "load_refiner", "refine_image",
           "refiner_flops_per_pixel", "refiner_tensors"]
