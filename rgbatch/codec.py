"""The codec object: images in, progressive bitstreams out, and back.

    codec = Codec.load()                       # the shipped model, from weights/
    encoded = codec.encode(image, iterations=16)
    encoded.blob, encoded.bpp, encoded.msssim  # bytes, and per-depth rate and quality
    image_at_4 = codec.decode(encoded.blob, iterations=4)

Tiles of one or many images run through the network in batches (`encode_many`,
`decode_many`), so memory is bounded by the batch, not by the image.
"""

from __future__ import annotations

import copy
import math
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import torch

from . import bitstream
from .bitstream import BitstreamError
from .entropy import EntropyError, get_coder
from .imageio import MAX_PIXELS
from .limits import check_max_pixels, layout
from .metrics import msssim_many, msssim_scorer, msssim_tensor, psnr
from .model import BLOCK, ResidualGRUCodec, l1_loss
from .ratecontrol import Target, choose_depth
from .tiling import DEFAULT_TILE_SIZE, Tile, check_tile_size, cut, tile_grid
from .weights import load_weights, trained_iterations



@dataclass
class EncodedImage:
    blob: bytes
    width: int
    height: int
    iterations: int
    bytes: list[int] = field(default_factory=list)  # stream size cut to depth 1..k
    msssim: list[float] = field(default_factory=list)  # empty unless measured
    psnr: list[float] = field(default_factory=list)
    reconstructions: np.ndarray | None = None  # (k, H, W, 3) uint8, when asked for

    @property
    def bpp(self) -> list[float]:
        return [8 * n / (self.width * self.height) for n in self.bytes]


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but torch sees no CUDA GPU")
    return torch.device(device)


PRECISIONS = ("auto", "fp32", "bf16")
MAX_SEARCH_STEPS = 100
LOCKSTEP_TILES = 64  # tiles whose network states a target keeps alive at once (64 of 512 px, 16 MP: +1.2 GB peak)


def native_bf16(device: torch.device) -> bool:
    """Whether the device computes bfloat16 in hardware (CPUs with AVX-512 BF16, recent GPUs):
    there the networks run 2x faster in bf16 at the same quality (README, "Speed of the network");
    elsewhere bf16 is emulated and slower than fp32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    is_supported = getattr(torch.cpu, "_is_avx512_bf16_supported", None)  # private; absent in some torch builds
    return device.type == "cpu" and is_supported is not None and is_supported()


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return precision


def search_loss(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """Per image, what the shipped model was trained to lower: L1 + 0.5 (1 - MS-SSIM)."""
    quality = msssim_tensor(x + 0.5, (x_hat + 0.5).clamp(0, 1))
    return l1_loss(x, x_hat) + 0.5 * (1 - quality)


def _to_uint8_batch(x: torch.Tensor) -> np.ndarray:
    """(N,3,h,w) float in [-0.5,0.5] -> (N,h,w,3) uint8."""
    return ((x.float() + 0.5).clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


class Codec:
    def __init__(self, model: ResidualGRUCodec, model_id: str, extra=None, info=None, *, device="auto",
                 tile_size: int = DEFAULT_TILE_SIZE, batch_size: int = 8, precision: str = "auto",
                 coder: str = "auto", search_steps: int = 0):
        check_tile_size(tile_size)
        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device)
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float32
        if model.net_dtype != dtype:  # a copy: the caller's model (often shared) stays as it is
            model = copy.deepcopy(model).set_precision(dtype)
        self.model = model.eval().to(self.device)
        self.model_id = model_id
        self.extra = extra or {}
        # the depth encodings get when none is asked for: the one the model was trained to
        self.default_iterations = trained_iterations(model.cfg, info or {})
        self.tile_size = tile_size
        self.batch_size = max(1, batch_size)
        self.coder = get_coder(coder, self.extra)
        # encoder-side search of the bits (ResidualGRUCodec._search_step): same streams format,
        # better reconstructions at every depth, each iteration about 3 x steps decoder passes
        if not 0 <= search_steps <= MAX_SEARCH_STEPS:
            raise ValueError(f"search steps must be 0..{MAX_SEARCH_STEPS}, not {search_steps}")
        self.search_steps = search_steps

    @classmethod
    def load(cls, weights=None, **options) -> "Codec":
        """The codec of a weight file (the shipped default when None)."""
        model, mid, extra, info = load_weights(weights)
        return cls(model, mid, extra, info, **options)

    @property
    def max_iterations(self) -> int:
        return self.model.cfg.max_iterations

    def _batches(self, tiles: list[tuple[int, torch.Tensor]]):
        """Group (key, tensor) pairs by shape into stacks of at most batch_size."""
        by_shape = defaultdict(list)
        for key, tensor in tiles:
            by_shape[tuple(tensor.shape)].append((key, tensor))
        for group in by_shape.values():
            for i in range(0, len(group), self.batch_size):
                chunk = group[i:i + self.batch_size]
                yield [k for k, _ in chunk], torch.stack([t for _, t in chunk])

    # -- encoding ---------------------------------------------------------------------------
    def encode(self, image: np.ndarray, iterations: int | None = None, measure: bool = True,
               keep_reconstructions: bool = False, target: Target = Target()) -> EncodedImage:
        return self.encode_many([image], iterations, measure, keep_reconstructions, target)[0]

    def encode_many(self, images: list[np.ndarray], iterations: int | None = None,
                    measure: bool = True, keep_reconstructions: bool = False,
                    target: Target = Target()) -> list[EncodedImage]:
        """Encode HxWx3 uint8 images; with `measure`, MS-SSIM and PSNR at every depth.

        The encoder computes the reconstruction at every depth anyway (it codes residuals);
        `keep_reconstructions` returns them, exactly what `decode` gives at each depth.
        `target` (`ratecontrol.Target`): each image keeps the depth its quality or size target
        asks for, and the encoder stops there: the stream and stats are those of the full
        encoding cut to that depth, for only the iterations kept.
        """
        measure = measure or keep_reconstructions
        if target.msssim is not None and not measure:
            raise ValueError("a quality target needs the MS-SSIM of every depth: encode with measuring on")
        iterations = self.default_iterations if iterations is None else iterations
        if not 1 <= iterations <= self.max_iterations:
            raise ValueError(f"iterations must be 1..{self.max_iterations}, not {iterations}")
        grids = [layout(im.shape[1], im.shape[0], self.tile_size, max_pixels=math.inf) for im in images]
        work = [((i, j), t) for i, im in enumerate(images) for j, t in enumerate(cut(im, grids[i]))]
        codes = [[[] for _ in g] for g in grids]  # per image, per tile, the bits of each iteration
        # per image, per depth, the reconstruction as stored uint8 (filled tile by tile)
        recon = [np.empty((iterations, *im.shape), np.uint8) if measure else None for im in images]
        quality = [[] for _ in images]  # MS-SSIM per depth, measured as the encoding goes (lockstep)
        scorers = [None] * len(images)  # each image's MS-SSIM against its own statistics, computed once
        chunks = [[] for _ in images]  # chunks coded as the encoding goes (lockstep, size targets)
        depth = [iterations] * len(images)  # where each image stops
        runs = ((keys, self.model.iterate(x.to(self.device), iterations, search_steps=self.search_steps,
                                          search_loss=search_loss)) for keys, x in self._batches(work))
        # To stop an image early, every batch advances one iteration at a time, so that an image
        # whose tiles sit in several batches is whole at each depth when its targets are checked.
        # That keeps every tile's network state alive at once: bounded to LOCKSTEP_TILES tiles;
        # beyond, batches run one after the other (as without a target) and are cut afterwards.
        lockstep = bool(target) and len(work) <= LOCKSTEP_TILES
        with torch.no_grad() if self.search_steps else torch.inference_mode():
            for group in ([list(runs)] if lockstep else ([run] for run in runs)):
                for t in range(iterations):
                    for keys, steps in group:
                        if all(depth[i] <= t for i, _ in keys):
                            continue  # every image of this batch has stopped
                        bits, x_hat = next(steps)
                        bits = (bits > 0).cpu().numpy()  # (N, C, h, w)
                        pixels = _to_uint8_batch(x_hat.clamp(-0.5, 0.5)) if measure else None
                        for n, (i, j) in enumerate(keys):
                            codes[i][j].append(bits[n])
                            if measure:
                                tile = grids[i][j]
                                recon[i][t, tile.y:tile.y + tile.height, tile.x:tile.x + tile.width] = \
                                    pixels[n, :tile.height, :tile.width]
                    for i, image in enumerate(images if lockstep else ()):
                        if depth[i] <= t:
                            continue
                        if target.msssim is not None:
                            scorers[i] = scorers[i] or msssim_scorer(image)
                            quality[i] += scorers[i](recon[i][t:t + 1])
                        if self._reached(target, image, codes[i], t, quality[i], chunks[i]):
                            depth[i] = t + 1

        results = []
        for i, image in enumerate(images):
            h, w = image.shape[:2]
            if len(quality[i]) < depth[i] and measure:
                quality[i] = msssim_many(image, recon[i][:depth[i]])
            if len(chunks[i]) < depth[i]:
                chunks[i] = self.coder.encode([np.stack(c[:depth[i]]) for c in codes[i]])
            if target:  # the depth the target keeps, from every depth coded so far
                sizes = bitstream.cumulative_bytes(len(c) for c in chunks[i][:depth[i]])
                depth[i] = choose_depth(target, sizes, quality[i][:depth[i]], w * h)
            blob = bitstream.pack(coder_id=self.coder.coder_id, bits=self.model.cfg.bits, model_id=self.model_id,
                                  width=w, height=h, tile_size=self.tile_size, chunks=chunks[i][:depth[i]])
            enc = EncodedImage(blob, w, h, depth[i], bitstream.read_header(blob).cumulative_bytes())
            if measure:
                enc.msssim = quality[i][:depth[i]]
                enc.psnr = [psnr(image, r) for r in recon[i][:depth[i]]]
            if keep_reconstructions:
                enc.reconstructions = recon[i][:depth[i]]
            results.append(enc)
        return results

    def _reached(self, target: Target, image, codes, t: int, quality: list, chunks: list) -> bool:
        """Whether an image's target says stop after iteration t: its quality (measured up to
        t) reached, or its stream over a size limit (the depth before is then the one kept).
        Codes the chunk of iteration t on the way, for a size target."""
        stop = target.msssim is not None and quality[-1] >= target.msssim
        if target.limits_size:
            chunks.append(self.coder.encode_iteration([np.stack(c) for c in codes], t))
            size = bitstream.cumulative_bytes(map(len, chunks))[-1]
            stop = stop or not target.fits(size, image.shape[0] * image.shape[1])
        return stop

    # -- decoding ---------------------------------------------------------------------------
    def read_codes(self, blob: bytes, iterations: int | None = None, max_pixels: int = MAX_PIXELS):
        """(header, tiles, per-tile bool codes) of a blob, checked against this codec's model and,
        before any decoding, against the bounds of `limits.layout` (BitstreamError otherwise)."""
        header = bitstream.read_header(blob)
        if header.model_id != self.model_id:
            raise BitstreamError(f"coded by model {header.model_id}, but the loaded model is {self.model_id}; "
                                 f"decode with the weights that made it")
        if header.bits != self.model.cfg.bits:
            raise BitstreamError(f"stream has {header.bits} bits per position, the model {self.model.cfg.bits}")
        if header.iterations > self.max_iterations:
            raise BitstreamError(f"the stream holds {header.iterations} iterations; the model makes at most "
                                 f"{self.max_iterations}")
        try:
            tiles = layout(header.width, header.height, header.tile_size, max_pixels)
        except ValueError as e:
            raise BitstreamError(str(e)) from None
        header, chunks = bitstream.unpack(blob, iterations)
        shapes = [(header.bits, *t.code_shape) for t in tiles]
        try:
            # the codec's own coder when the stream used it (building a context coder takes 10 ms)
            coder = self.coder if header.coder_id == self.coder.coder_id else get_coder(header.coder_id, self.extra)
            codes = coder.decode(chunks, shapes)
        except EntropyError as e:
            raise BitstreamError(str(e)) from None
        return header, tiles, codes

    def decode(self, blob: bytes, iterations: int | None = None, max_pixels: int = MAX_PIXELS) -> np.ndarray:
        return self.decode_many([blob], iterations, max_pixels)[0]

    def decode_many(self, blobs: list[bytes], iterations: int | list[int] | None = None,
                    max_pixels: int = MAX_PIXELS) -> list[np.ndarray]:
        """HxWx3 uint8 images at depth `iterations` (per blob if a list; all stored if None).
        A stream that cannot be decoded, or that declares more than `max_pixels` pixels (or
        another bound of docs/FORMAT.md, "Limits"), raises BitstreamError and nothing else."""
        check_max_pixels(max_pixels)
        depths = iterations if isinstance(iterations, list) else [iterations] * len(blobs)
        parsed = [self.read_codes(b, k, max_pixels) for b, k in zip(blobs, depths)]
        images = [np.empty((h.height, h.width, 3), np.uint8) for h, _, _ in parsed]
        work = [((i, j), torch.from_numpy(c).float() * 2 - 1)
                for i, (_, _, codes) in enumerate(parsed) for j, c in enumerate(codes)]
        for keys, codes in self._batches(work):
            x_hat = self.model.decode(codes.transpose(0, 1).contiguous().to(self.device))
            for (i, j), p in zip(keys, _to_uint8_batch(x_hat)):
                tile: Tile = parsed[i][1][j]
                images[i][tile.y:tile.y + tile.height, tile.x:tile.x + tile.width] = p[:tile.height, :tile.width]
        return images


def code_positions(width: int, height: int, tile_size: int) -> int:
    """Code positions per bit plane of an image: its rate is 32 bits x this per iteration."""
    return sum(r * c for r, c in (t.code_shape for t in tile_grid(height, width, tile_size)))


__all__ = ["BLOCK", "Codec", "EncodedImage", "code_positions", "resolve_device"]
