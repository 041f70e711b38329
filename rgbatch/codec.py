"""The codec object: images in, progressive bitstreams out, and back.

    codec = Codec.load()                       # the shipped model, from weights/
    encoded = codec.encode(image, iterations=16)
    encoded.blob, encoded.bpp, encoded.msssim  # bytes, and per-depth rate and quality
    image_at_4 = codec.decode(encoded.blob, iterations=4)

Encoding runs in stages with typed values between them (rgbatch.codes, docs/ARCHITECTURE.md):

    image --tiling.cut + network--> Codes --coder--> chunks --bitstream.pack--> EncodedImage

and decoding runs them backwards; `encode_codes`, `pack`, `read_codes` and `decode_codes`
expose the stages. Every tile's reconstruction at every depth passes through a colour post-filter
the encoder fits to the original and sends where it pays for its bits (rgbatch.postfilter; its
record heads the depth's chunk, format v2): what the encoder measures, and what decoding
returns, is the filtered image. `post_filter=False` writes format v1 streams, without filters, as
do images of fewer than `post_filter_min_pixels` pixels (postfilter.MIN_PIXELS: there its bytes
cost more than it gains).
A weight file may carry a refiner (rgbatch.refine): then what every depth
decodes to, and what the encoder measures, is the network's image refined; codes and
streams are the same with or without it. Tiles of one or many images run through the network in batches
(`encode_many`, `decode_many`), so memory is bounded by the batch, not by the image.

Decoding computes in exact arithmetic by default (`decoding="exact"`, rgbatch.exact): the same
pixels on every machine, device, thread count and batch. The encoder's own loop, and so what it
measures, computes in the networks' precision (bf16 where native), 1.3-2.2x faster on a CPU: its
reconstructions are within a pixel level of the exact ones, its MS-SSIM within about 2e-5.
`decoding="exact-loop"` runs the exact decoder in the encoder's loop too, so that it measures
exactly what decoding returns (with "exact", images under EXACT_LOOP_PIXELS get it too: there a
level moves MS-SSIM by more than float noise is allowed); `decoding="float"` decodes in the networks' precision as well
(faster, but the pixels may differ by a level from machine to machine).

A codec may be called from several threads. The device stage of a call (the network, and the
MS-SSIM of its reconstructions, measured on the same device) holds the codec's device, one call
at a time; the entropy coder and packing run outside it. Two calls in flight on two threads
therefore overlap: while the device runs one call's network, the CPU codes the other's streams
(`rgbatch.pipeline`'s encoders do so: CompressOptions.overlap). The results are those of the
calls run one after the other.
"""

from __future__ import annotations

import copy
import ctypes
import functools
import math
import numbers
import threading
from collections import defaultdict
from dataclasses import replace

import numpy as np
import torch

from . import bitstream, postfilter
from .bitstream import BitstreamError
from .codes import Codes, EncodedImage, signs, stream_sizes
from .entropy import CODERS, EntropyError, get_coder
from .imageio import MAX_PIXELS
from .limits import check_max_pixels, layout
from .metrics import QualityMeter, msssim_tensor
from .model import DECODINGS, l1_loss
from .ratecontrol import Target, candidate_target, check_measured, choose_candidate, choose_depth, judged
from .options import OptionError, check_choice, check_count
from .refine import BandRefiner, load_refiner, refine_image
from .resample import candidates, downscale, upscale, upscale_rows, usable
from .tiling import RowBands, Tile, check_tile_size, cut_tile, paste, tile_grid, tile_size_for, to_uint8, to_unit
from .weights import load_weights, shipped_weights, trained_iterations, where_model_is


DEVICES = ("auto", "cpu", "cuda")
# a network batch holds at most this many pixels, unless one tile alone is bigger: on a GPU 8
# tiles of 512 x 512, so that big tiles (docs/TILING.md) run a few at a time; on a CPU a 256 x
# 256 tile's worth, since batching pays there only for small tiles (tiles of 64 px encode 1.5x
# as fast 16 a batch as one at a time) and costs on big ones (three Kodak images decode 15 %
# slower as one batch than one by one: docs/TILING.md, "Batches on a CPU")
BATCH_PIXELS = {"cuda": 8 * 512 * 512, "cpu": 256 * 256}
PRECISIONS = ("auto", "fp32", "bf16")


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise OptionError("device", "cuda was asked for, but torch sees no CUDA GPU")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError):  # torch's words list twenty kinds of device (until session 60)
        raise OptionError("device", f"must be auto, cpu or cuda (or cuda:N), not {device!r}") from None


def batch_pixels(device: str) -> int:
    """The pixels one network batch holds on `device` ("cpu", "cuda"): `BATCH_PIXELS`."""
    return BATCH_PIXELS.get(device, BATCH_PIXELS["cuda"])


MAX_SEARCH_STEPS = 100


def check_partial(target: Target, measure: bool, coder: str):
    """`partial` coding (Codec.encode_many) needs a coder that codes partial chunks (a context coder;
    "auto" is one with the shipped weights) and, with a target, the MS-SSIM of every candidate."""
    if target and not measure:
        raise OptionError("partial", "chooses by the MS-SSIM of every candidate: measuring must stay on")
    if not codes_partial(coder):
        raise OptionError("partial", f"needs a context coder (mixing2, mixing, adaptive or context): the {coder} coder codes whole "
                                     f"iterations only")


def codes_partial(coder: str) -> bool:
    """Whether `coder` codes partial chunks ("auto" is taken to: a context coder with the shipped weights)."""
    return coder == "auto" or getattr(CODERS.get(coder), "partial", False)


def resolve_partial(partial: bool | None, target: Target, measure: bool, coder: str) -> bool:
    """Whether a compression codes partial last iterations: None (the tool's default) where it can,
    that is with a target, measuring on and a context coder; True asks for it (`check_partial`'s
    errors where it cannot); False keeps whole iterations."""
    if partial is None:
        return bool(target) and measure and codes_partial(coder)
    if partial:
        check_partial(target, measure, coder)
    return partial


def partial_steps(bits: int) -> tuple[int, ...]:
    """Coding steps of a partial last iteration a target tries: 1/8 .. 7/8 of the 2 x bits steps
    (8, 16, .., 56 of the Residual-GRU's 64)."""
    return tuple(sorted({2 * bits * i // 8 for i in range(1, 8)} - {0}))


# pixels of tiles whose decoder state a partial last iteration keeps (Codec._resumed), one image at
# a time: the GRUs' hidden states (14.5 values a pixel at width 0.25) and the float32 reconstruction,
# 41 bytes a pixel in bf16, 70 in fp32: at most 0.7 / 1.2 GB, as the lockstep tiles' states (per
# encoder call: twice that with overlap, two calls at once)
RESUMED_PIXELS = 16 * 1024 * 1024
# images of fewer pixels run the exact decoder in the encoder's loop whenever decoding is exact
# (`decoding="exact"` too): on a few pixels the float loop's level here and there moved MS-SSIM
# by up to 3e-3 (a 16 x 16 crop in bf16; 5e-4 at 64 x 64, 1e-4 at 128 x 128), so that `verify`
# called a fresh archive of icons wrong and a quality target could be missed by as much
# (session 58). It costs them 1.8-2.5x the encoding time (0.14 -> 0.26 s at 16 x 16, depth 16,
# one bf16 core).
EXACT_LOOP_PIXELS = 64 * 64
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
    check_choice("precision", precision, PRECISIONS)
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return precision


def search_loss(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """Per image, what the shipped model was trained to lower: L1 + 0.5 (1 - MS-SSIM)."""
    quality = msssim_tensor(to_unit(x), to_unit(x_hat))
    return l1_loss(x, x_hat) + 0.5 * (1 - quality)


def check_images(images) -> list[np.ndarray]:
    """`images` as a list, or an OptionError unless each image is what the codec codes: an HxWx3
    uint8 array (RGB, 0-255) of at least one pixel. Until session 57 a float image in [0, 1] was
    coded as near black without a word (and measured against itself: MS-SSIM 0.99), a uint16 one
    as noise, a grey one failed in torch; until session 58 an empty one failed in torch, and a
    generator of images was used up by this check, nothing left to encode."""
    if isinstance(images, np.ndarray) and images.ndim < 4:  # one image, whose rows a list would take for images
        raise OptionError("images", "is one array: give a list of images (encode_many([image]), or encode(image))")
    images = _listed("images", images, (str, bytes), "images (HxWx3 uint8 arrays)")
    for i, image in enumerate(images):
        array = isinstance(image, np.ndarray)
        if not (array and image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8
                and image.shape[0] and image.shape[1]):
            what = f"a {image.dtype} array of shape {image.shape}" if array else f"a {type(image).__name__}"
            where = f"[{i}]" if len(images) > 1 else ""
            raise OptionError(f"image{where}", f"is {what}: the codec codes HxWx3 uint8 arrays (RGB, 0-255, "
                                               f"a pixel at least; rgbatch.imageio.read_image reads a file so)")
    return images


def _listed(option: str, values, single: tuple, what: str) -> list:
    """`values` (any iterable but one of `single`) as a list, or an OptionError asking for a list of
    `what` (None, a number, one stream failed in Python's words until session 61)."""
    if not isinstance(values, single):
        try:
            return list(values)
        except TypeError:
            pass
    raise OptionError(option, f"is {'one' if isinstance(values, single) else 'a'} {type(values).__name__}: give a "
                              f"list of {what}")


class Codec:
    """A model (any registered architecture, rgbatch.architectures) with its entropy coder,
    tiling and device settings, checked here once."""

    def __init__(self, model: torch.nn.Module, model_id: str, extra=None, info=None, *, device="auto",
                 tile_size: int | None = None, batch_size: int = 8, precision: str = "auto",
                 coder: str = "auto", search_steps: int = 0, refine: bool = True, decoding: str = "exact",
                 post_filter: bool = True, post_filter_min_pixels: int = postfilter.MIN_PIXELS):
        check_tile_size(tile_size, model.cfg.align)  # None: per image (tiling.tile_size_for)
        check_choice("device", device, DEVICES)  # until session 58 torch's words for "gpu"
        check_choice("decoding", decoding, DECODINGS)
        check_count("batch_size", batch_size, 1)  # until session 58 0 and -3 were taken as 1
        check_count("post_filter_min_pixels", post_filter_min_pixels, 0)
        self._options = dict(device=device, tile_size=tile_size, batch_size=batch_size, precision=precision,
                             coder=coder, search_steps=search_steps, refine=refine, decoding=decoding,
                             post_filter=post_filter, post_filter_min_pixels=post_filter_min_pixels)
        self._earlier = {}  # model id -> the codec of an earlier shipped model (for_model)
        self.shipped = False  # loaded as the shipped default (Codec.load without weights)
        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device)
        # decoding's arithmetic (rgbatch.exact; an architecture without `set_decoding` decodes in float)
        self.decoding = decoding if hasattr(model, "set_decoding") else "float"
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float32
        redecode = getattr(model, "decoding", "float") != self.decoding
        if model.net_dtype != dtype or redecode:
            model = copy.deepcopy(model)  # a copy: the caller's model (often shared) stays as it is
            if redecode:
                model.set_decoding(self.decoding)  # from the float32 weights, before bf16 lowers them
            model.set_precision(dtype)
        self.model = model.eval().to(self.device)
        self.model_id = model_id
        self.extra = extra or {}
        # the decoder-side refiner the weights carry, if any (`refine=False` leaves it out:
        # the network's own images, as benchmarks compare)
        refiner = load_refiner(self.extra) if refine else None
        self.refiner = None if refiner is None else refiner.set_precision(dtype).to(self.device)
        # the depth encodings get when none is asked for: the one the model was trained to
        self.default_iterations = trained_iterations(model.cfg, info or {})
        self.tile_size = tile_size
        self.batch_size = batch_size
        self.batch_pixels = batch_pixels(self.device.type)
        self.coder = get_coder(coder, self.extra)
        # encoder-side search of the bits (ResidualGRUCodec._search_step): same streams format,
        # better reconstructions at every depth, each iteration about 3 x steps decoder passes
        check_count("search_steps", search_steps, 0, MAX_SEARCH_STEPS)
        self.search_steps = search_steps
        # the encoder fits a colour post-filter per tile and depth and sends it where it pays
        # (rgbatch.postfilter, format v2); False writes format v1 streams, without filters, as
        # rgbatch did before session 30. Decoders apply what a stream holds.
        self.post_filter = post_filter
        self.post_filter_min_pixels = post_filter_min_pixels  # smaller (coded) images: format v1
        self.device_lock = threading.Lock()  # held by a call's device stage (the module's docstring)

    @classmethod
    def load(cls, weights=None, **options) -> "Codec":
        """The codec of a weight file (the shipped default when None)."""
        model, mid, extra, info = load_weights(weights)
        codec = cls(model, mid, extra, info, **options)
        codec.shipped = weights is None
        return codec

    def for_model(self, mid: str) -> "Codec":
        """This codec, or, when it is the shipped default and `mid` an earlier shipped default model
        (weights.EARLIER_MODELS), that model's codec with the same options, loaded once: what an
        archive or stream coded before an upgrade decodes with. Any other model id gets this
        codec, whose decoder refuses it, worded."""
        path = shipped_weights(mid) if self.shipped and mid != self.model_id else None
        if path is None:
            return self
        if mid not in self._earlier:
            model, _, extra, info = load_weights(path)
            self._earlier[mid] = Codec(model, mid, extra, info, **self._options)
        return self._earlier[mid]

    @property
    def max_iterations(self) -> int:
        return self.model.cfg.max_iterations

    def _batches(self, work, pixels):
        """Stacks of at most batch_size tensors, and of at most `batch_pixels` image pixels unless
        one tensor alone has more: `work` is (key, group, load) triples, grouped by `group`
        (tensors of one shape, `pixels(group)` image pixels each) in the order groups first
        appear; a tensor is loaded (`load()`) only when its batch is taken, so that memory holds
        one batch of inputs."""
        groups = defaultdict(list)
        for key, group, load in work:
            groups[group].append((key, load))
        for group, members in groups.items():
            size = max(1, min(self.batch_size, self.batch_pixels // pixels(group)))
            for i in range(0, len(members), size):
                chunk = members[i:i + size]
                yield [k for k, _ in chunk], torch.stack([load() for _, load in chunk])

    # -- encoding: network + tiling -> Codes -> coder -> chunks -> bitstream.pack ------------
    def encode(self, image: np.ndarray, iterations: int | None = None, measure: bool = True,
               keep_reconstructions: bool = False, target: Target = Target(), keep_codes: bool = False,
               resample="none", partial: bool = False) -> EncodedImage:
        return self.encode_many([image], iterations, measure, keep_reconstructions, target, keep_codes,
                                resample=resample, partial=partial)[0]

    def encode_many(self, images: list[np.ndarray], iterations: int | None = None,
                    measure: bool = True, keep_reconstructions: bool = False,
                    target: Target = Target(), keep_codes: bool = False, progress=None,
                    resample="none", partial: bool = False) -> list[EncodedImage]:
        """Encode HxWx3 uint8 images; with `measure`, MS-SSIM and PSNR at every depth.

        The encoder computes the reconstruction at every depth anyway (it codes residuals);
        `keep_reconstructions` returns them: exactly what `decode` gives at each depth with
        `decoding` "exact-loop" or "float" (and "exact" for images under EXACT_LOOP_PIXELS),
        within a few pixel levels of it with "exact" (the default: the float loop's level
        here and there, in bf16 up to 3 on some pixels, more where a post-filter amplifies it);
        `keep_codes` returns the `Codes` the stream stores (to re-code them with another coder).
        `target` (`ratecontrol.Target`): each image keeps the depth its quality or size target
        asks for, and the encoder stops there: the stream and stats are those of the full
        encoding cut to that depth, for only the iterations kept.

        Memory stays flat in the images' sizes: tiles are cut from the images as their batches
        run, and the reconstructions are measured in strips of rows as they come
        (`metrics.QualityMeter`), never held whole unless `keep_reconstructions` asks for them.
        `progress(tiles_done, tiles, pixels_done)` is called as tiles finish (of the images coded
        as they are).

        `resample` (rgbatch.resample, README "Resampled coding"): "none" codes each image as it
        is; "0.75" or "0.5" (or a scale code 1, 2) codes it downscaled by that (Pillow's
        LANCZOS), and the stream's header says so: decoding scales it back up; "auto", with a
        target, encodes every scale and keeps the encoding the target prefers
        (`ratecontrol.choose_candidate`), without one it is "none". Images whose coded side
        would be under 32 pixels are coded as they are. Whatever the scale, width, height, bytes,
        bpp, MS-SSIM, PSNR and reconstructions are of the full-size image (each depth's image
        upscaled as the decoder does, measured against the original), and a target stops a
        resampled encoding as any other. Scales are encoded one after the other, each for all
        the images that try it. A resampled image's meter holds each depth's coded-size
        reconstruction until it is whole: one depth at a time when tiles run in lockstep (a
        target, up to LOCKSTEP_TILES tiles), else up to every depth: 3 bytes per coded pixel and
        depth, 48 at 16 depths (`_UpscaledMeter`).

        `partial` (README, "Partial last iteration"), with a target: besides whole iterations, a
        stream may end with the first m of the next iteration's 2 x bits coding steps (m = 8, 16,
        .., 56; docs/FORMAT.md, "Partial last chunk"), each decoded and measured at full size; the
        candidate the target prefers is kept (`_partial`). With `resample`, within each scale.
        Without a target it changes nothing.
        """
        images = check_images(images)
        measure = measure or keep_reconstructions
        check_measured(target, measure)
        if partial:
            check_partial(target, measure, self.coder.name)
        scales, depth = candidates(resample, bool(target), measure), self._depth(iterations)
        tried = [[c for c in scales if usable(im.shape[1], im.shape[0], c)] or [0] for im in images]
        results = [[] for _ in images]  # per image, its encoding at each scale tried so far
        targets = [judged(target, *im.shape[:2]) for im in images]  # no MS-SSIM goal for a tiny side
        for code in sorted({c for codes in tried for c in codes}):
            coded = [i for i, codes in enumerate(tried) if code in codes]
            # a later scale needs only to beat the earlier ones: it stops where it no longer can
            goals = [candidate_target(targets[i], [e.bytes[-1] for e in results[i]], [e.msssim[-1] for e in results[i]])
                     for i in coded]
            runs = self._run_network([downscale(images[i], code) for i in coded], depth, measure, goals,
                                     keep_reconstructions, progress if code == 0 else None,
                                     originals=[images[i] for i in coded], scale=code)
            for i, run, goal in zip(coded, runs, goals):
                results[i].append(self._store(run, goal, keep_codes, partial))
        return [encodings[choose_candidate(goal, [e.bytes[-1] for e in encodings], [e.msssim[-1] for e in encodings],
                                           image.shape[0] * image.shape[1]) if len(encodings) > 1 else 0]
                for image, encodings, goal in zip(images, results, targets)]

    def encode_codes(self, images: list[np.ndarray], iterations: int | None = None) -> list[Codes]:
        """The network stage alone: the `Codes` of each image, not entropy-coded."""
        images = check_images(images)
        return [run.codes() for run in self._run_network(images, self._depth(iterations), False, Target(), False)]

    def _depth(self, iterations: int | None) -> int:
        iterations = self.default_iterations if iterations is None else iterations
        check_count("iterations", iterations, 1, self.max_iterations, " for this model")
        return iterations

    def _run_network(self, images: list[np.ndarray], iterations: int, measure: bool, target: Target | list[Target],
                     keep_reconstructions: bool = False, progress=None, originals=None, scale: int = 0) -> list[_Run]:
        """Every image through the network, tile batches at a time, up to `iterations` or its target
        (one for all, or one per image). With a scale code, `images` are `originals` downscaled
        (rgbatch.resample): what is measured, and what a target reads, is each depth's image
        scaled back up, against the original."""
        align = self.model.cfg.align
        # the bounds a decoder checks (limits.layout), so that every stream written passes them
        tile_sizes = [tile_size_for(self.tile_size, *im.shape[:2]) for im in images]
        runs = [_Run(im, layout(im.shape[1], im.shape[0], tile, math.inf, align), tile, iterations, measure,
                     keep_reconstructions, self.device, self.refiner, original, scale,
                     self.post_filter and im.shape[0] * im.shape[1] >= self.post_filter_min_pixels,
                     self._exact_loop(original))
                for im, tile, original in zip(images, tile_sizes, originals or images)]
        filtered = any(run.filtered for run in runs)
        # batches of tiles of one shape, a row of the tile grid (of every image) after the other:
        # an image's reconstructions then come top to bottom, measured and dropped as they come
        # (a small image's tiles go in batches of their own: `_exact_loop`)
        work = [((i, j), (band, t.padded_shape(align), run.exact_loop),
                 lambda im=run.image, t=t: cut_tile(im, t, align))
                for i, run in enumerate(runs) for j, (band, t) in enumerate(run.bands())]
        steps = ((keys, self.model.iterate(x.to(self.device), iterations, search_steps=self.search_steps,
                                           search_loss=search_loss,
                                           **({"exact_loop": True} if runs[keys[0][0]].exact_loop else {})))
                 for keys, x in self._batches(work, lambda group: group[1][0] * group[1][1]))
        tiles, done, pixels = len(work), 0, 0
        # To stop an image early, every batch advances one iteration at a time, so that an image
        # whose tiles sit in several batches is whole at each depth when its targets are checked.
        # That keeps every tile's network state alive at once: bounded to LOCKSTEP_TILES tiles;
        # beyond, batches run one after the other (as without a target) and are cut afterwards.
        targets = target if isinstance(target, list) else [target] * len(images)
        lockstep = any(targets) and len(work) <= LOCKSTEP_TILES
        with self.device_lock, torch.no_grad() if self.search_steps else torch.inference_mode():
            for group in ([list(steps)] if lockstep else ([batch] for batch in steps)):
                for t in range(iterations):
                    for keys, batch in group:
                        if all(runs[i].depth <= t for i, _ in keys):
                            continue  # every image of this batch has stopped
                        bits, x_hat = next(batch)
                        bits = (bits > 0).cpu().numpy()  # (N, C, h, w)
                        pixels_t = to_uint8(x_hat.clamp(-0.5, 0.5)) if measure or filtered else None
                        for n, (i, j) in enumerate(keys):
                            runs[i].tiles[j].append(bits[n])
                            q = runs[i].fit_filter(j, pixels_t[n], bits[n].size) if runs[i].filtered else None
                            if measure:
                                runs[i].reconstructed(t, j, postfilter.apply(pixels_t[n], q))
                    for run, goal in zip(runs, targets) if lockstep else ():
                        if run.meter:
                            run.meter.flush()
                        if run.depth > t and goal and self._reached(goal, run, t):
                            run.depth = t + 1
                for keys, _ in group:
                    for i, j in keys:
                        done += 1
                        pixels += runs[i].grid[j].height * runs[i].grid[j].width
                for i in {i for keys, _ in group for i, _ in keys}:
                    if runs[i].meter:
                        runs[i].meter.flush()
                if progress:
                    progress(done, tiles, pixels)
                release_freed_memory()  # after every batch, so that any caller's memory stays flat
        return runs

    def _exact_loop(self, original: np.ndarray | None) -> bool:
        """Whether an image (`original`: at full size) runs the exact decoder in the encoder's
        loop though `decoding` is "exact" (EXACT_LOOP_PIXELS); "exact-loop" runs it for all."""
        return (self.decoding == "exact" and original is not None
                and original.shape[0] * original.shape[1] < EXACT_LOOP_PIXELS)

    def _reached(self, target: Target, run: _Run, t: int) -> bool:
        """Whether an image's target says stop after iteration t: its quality (measured up to
        t) reached, or its stream over a size limit (the depth before is then the one kept).
        Codes the chunk of iteration t on the way, for a size target."""
        stop = False
        if target.msssim is not None:
            stop = run.meter.msssim(t) >= target.msssim
        if target.limits_size:
            codes = run.codes()
            run.chunks += self.frame(codes, [self.coder.encode_iteration(codes.tiles, t)], t)
            stop = stop or not target.fits(stream_sizes(run.chunks)[-1], run.original.shape[0] * run.original.shape[1])
        return stop

    def _store(self, run: _Run, target: Target, keep_codes: bool, partial: bool = False) -> EncodedImage:
        """The coder and packing stages of one image: its stream cut to the depth it keeps."""
        depth = run.depth
        quality = [run.meter.msssim(t) for t in range(depth)] if run.meter else []
        codes = run.codes().cut(depth)
        run.tiles = None  # stacked into `codes`: one copy of the bits, not two
        if len(run.chunks) < depth:
            run.chunks = self.code(codes)
        h, w = run.original.shape[:2]
        sizes = stream_sizes(run.chunks[:depth])  # cumulative: a cut keeps a prefix of them
        if target:  # the depth the target keeps, from every depth coded so far
            depth = choose_depth(target, sizes, quality, w * h)
        enc = EncodedImage(self.pack(codes, run.chunks[:depth]), w, h, depth, sizes[:depth], tile_size=codes.tile_size,
                           scale=run.scale)
        if run.meter:
            enc.msssim = quality[:depth]
            enc.psnr = [run.meter.psnr(t) for t in range(depth)]
        recon = run.recon if run.recon is not None else getattr(run.meter, "reconstructions", None)
        if recon is not None:
            enc.reconstructions = recon[:depth]
        if keep_codes:
            enc.codes = codes.cut(depth)
        return self._partial(enc, codes, run.chunks, run.original, target, run.exact_loop) if partial and target else enc

    def _partial(self, enc: EncodedImage, codes: Codes, chunks: list[bytes], original: np.ndarray,
                 target: Target, exact: bool = False) -> EncodedImage:
        """`enc` (whole iterations, at the depth `target` keeps) or, if the target prefers one
        (`ratecontrol.choose_candidate`), the stream whose last chunk holds the first m of
        `partial_steps` coding steps of the iteration after the last whole one `target` can keep:
        for a quality target the one before the first that reaches it, for a size target the
        last that fits (the first iteration where even that one does not). Each candidate is coded
        (its bytes) and, where it can be chosen, decoded (`_resumed`: what `decode_codes`, a
        decoder, gives, one decoder iteration from the state after the iterations before) and
        measured against `original`."""
        depth, pixels = enc.iterations, enc.width * enc.height
        reached = target.msssim is not None and enc.msssim[-1] >= target.msssim
        over = not target.fits(enc.bytes[-1], pixels)  # depth 1 over a size limit: a part may fit (since session 63)
        base = depth - 1 if reached or over else depth
        if base >= codes.iterations:  # no iteration after the last kept was coded
            return enc
        steps = partial_steps(self.model.cfg.bits)
        tries = [codes.partial(base + 1, m) for m in steps]
        last = [self.frame(c, [self.coder.encode_iteration(codes.tiles, base, m)], base)[0] for c, m in zip(tries, steps)]
        sizes = [bitstream.cumulative_bytes([*map(len, chunks[:base]), len(c)])[-1] for c in last]
        # decoded (the network's time) fewest bytes first, only those within the size limits, until
        # one reaches a quality target: those after it cannot be chosen (more bytes, choose_candidate)
        measured, decode = {}, self._resumed(codes, base, exact)
        for n in sorted((n for n in range(len(steps)) if target.fits(sizes[n], pixels)), key=lambda n: sizes[n]):
            # one image at a time, as `decode` of its stream: a batch of several images' tiles
            # may round differently (by 1 in a few pixels, measured)
            image = decode(tries[n])
            meter = QualityMeter(original, 1, device=self.device)
            meter.add(0, 0, image)
            meter.flush()
            measured[n] = image, meter.msssim(0), meter.psnr(0)
            if target.msssim is not None and measured[n][1] >= target.msssim:
                break
        order = list(measured)
        pick = choose_candidate(target, [enc.bytes[-1], *(sizes[n] for n in order)],
                                [enc.msssim[-1], *(measured[n][1] for n in order)], pixels) - 1
        if pick < 0:
            return enc
        n = order[pick]
        (image, quality, psnr), kept = measured[n], tries[n]
        return replace(enc, blob=self.pack(kept, [*chunks[:base], last[n]]), iterations=base + 1, steps=kept.steps,
                       bytes=[*stream_sizes(chunks[:base]), sizes[n]], msssim=[*enc.msssim[:base], quality],
                       psnr=[*enc.psnr[:base], psnr],
                       reconstructions=None if enc.reconstructions is None else np.concatenate(
                           [enc.reconstructions[:base], image[None]]),
                       codes=kept if enc.codes is not None else None)

    def pack(self, codes: Codes, chunks: list[bytes], coder=None) -> bytes:
        """The stream of an image's chunks (coded by `coder`, this codec's by default; framed: `frame`)."""
        return bitstream.pack(coder_id=(coder or self.coder).coder_id, bits=self.model.cfg.bits,
                              model_id=self.model_id, width=codes.width, height=codes.height,
                              tile_size=codes.tile_size, chunks=chunks, scale=codes.scale, steps=codes.steps,
                              version=1 if codes.filters is None else bitstream.VERSION)

    @staticmethod
    def frame(codes: Codes, payloads: list[bytes], start: int = 0) -> list[bytes]:
        """The chunks of iterations start, start + 1, ...: each iteration's post-filter record, then
        the coder's payload (format v2, rgbatch.postfilter); the payloads alone (format v1) for
        codes without filters (`post_filter=False`, or read from a v1 stream)."""
        return postfilter.frame(codes.filters, payloads, start)

    def code(self, codes: Codes, coder=None) -> list[bytes]:
        """The chunks of an image's codes, coded by `coder` (this codec's by default)."""
        return self.frame(codes, (coder or self.coder).encode(codes.tiles))

    # -- decoding: bitstream.unpack -> chunks -> coder -> Codes -> network + tiling ----------
    def read_codes(self, blob: bytes, iterations: int | None = None, max_pixels: int = MAX_PIXELS) -> Codes:
        """The `Codes` of a blob (its first `iterations`), checked against this codec's model and,
        before any decoding, against the bounds of `limits.layout` (BitstreamError otherwise)."""
        header = bitstream.read_header(blob)
        if header.model_id != self.model_id:
            raise BitstreamError(f"coded by model {header.model_id}, but the loaded model is {self.model_id}: "
                                 f"{where_model_is(header.model_id, not self.shipped)}")
        if header.bits != self.model.cfg.bits:
            raise BitstreamError(f"stream has {header.bits} bits per position, the model {self.model.cfg.bits}")
        if header.iterations > self.max_iterations:
            raise BitstreamError(f"the stream holds {header.iterations} iterations; the model makes at most "
                                 f"{self.max_iterations}")
        try:
            tiles = layout(header.width, header.height, header.tile_size, max_pixels, self.model.cfg.align,
                           header.scale)
        except ValueError as e:
            raise BitstreamError(str(e)) from None
        header, chunks = bitstream.unpack(blob, iterations)
        filters = None
        if header.version >= 2:
            try:
                filters, chunks = postfilter.unframe(chunks, len(tiles))
            except postfilter.RecordError as e:
                raise BitstreamError(str(e)) from None
        shapes = [(header.bits, *t.code_shape(self.model.cfg)) for t in tiles]
        try:
            # the codec's own coder when the stream used it (building a context coder takes 10 ms)
            coder = self.coder if header.coder_id == self.coder.coder_id else get_coder(header.coder_id, self.extra)
            steps = header.steps_at(len(chunks))
            codes = coder.decode(chunks, shapes, steps)
        except EntropyError as e:
            raise BitstreamError(str(e)) from None
        return Codes(header.width, header.height, header.tile_size, codes, header.scale, steps, filters)

    def decode(self, blob: bytes, iterations: int | None = None, max_pixels: int = MAX_PIXELS) -> np.ndarray:
        return self.decode_many([blob], iterations, max_pixels)[0]

    def decode_many(self, blobs: list[bytes], iterations: int | list[int] | None = None,
                    max_pixels: int = MAX_PIXELS) -> list[np.ndarray]:
        """HxWx3 uint8 images at depth `iterations` (per blob if a list; all stored if None).
        A stream that cannot be decoded, or that declares more than `max_pixels` pixels (or
        another bound of docs/FORMAT.md, "Limits"), raises BitstreamError and nothing else (a depth
        under 1, or of another kind than a whole number, an OptionError)."""
        check_max_pixels(max_pixels)
        blobs = _listed("blobs", blobs, (bytes, bytearray, memoryview), "streams (decode_many([blob]), or decode(blob))")
        depths = [iterations] * len(blobs) if iterations is None or isinstance(iterations, numbers.Number) else \
            _listed("iterations", iterations, (str,), "depths, or one depth")
        if len(depths) != len(blobs):  # zip dropped the blobs beyond the depths until session 58
            raise OptionError("iterations", f"lists {len(depths)} depth(s) for {len(blobs)} blob(s): give one each")
        for depth in depths:  # a depth over a stream's own is the stream's to refuse (BitstreamError)
            check_count("iterations", depth, 1)  # "1", 1.0, 0: TypeErrors and a BitstreamError until session 61
        return self.decode_codes([self.read_codes(b, k, max_pixels) for b, k in zip(blobs, depths)])

    def decode_codes(self, codes: list[Codes]) -> list[np.ndarray]:
        """The network stage of decoding: HxWx3 uint8 images from their `Codes`, scaled up to
        their full size where they were coded smaller (rgbatch.resample)."""
        images = [np.empty((c.coded_size[1], c.coded_size[0], 3), np.uint8) for c in codes]
        grids = [c.grid for c in codes]
        with self.device_lock:
            for keys, bits in self._code_batches(codes):
                for (i, j), p in zip(keys, to_uint8(self.model.decode(bits))):
                    paste(images[i], postfilter.apply(p, codes[i].filter_at(j)), grids[i][j])
            images = [self._refined(im, c) for im, c in zip(images, codes)]
        return [upscale(im, c.width, c.height) if c.scale else im for im, c in zip(images, codes)]

    def _code_batches(self, codes: list[Codes]):
        """`decode_codes`' batches of the images' tiles: (keys (image, tile), what the decoder
        reads of their bits, (iterations, N, bits, h, w) on the device). The batches (which tiles go
        together) are part of what a decoder computes: a batch of other tiles may round differently."""
        work = [((i, j), t.shape, lambda t=t, coded=coded: torch.from_numpy(signs(t, coded)))
                for i, c in enumerate(codes) for j, (t, coded) in enumerate(zip(c.tiles, c.coded()))]
        block = self.model.cfg.block
        for keys, bits in self._batches(work, lambda shape: shape[-2] * shape[-1] * block * block):
            yield keys, bits.transpose(0, 1).contiguous().to(self.device)

    def _refined(self, image: np.ndarray, codes: Codes) -> np.ndarray:
        return image if self.refiner is None else refine_image(self.refiner, image, codes.iterations)

    def _resumed(self, codes: Codes, base: int, exact: bool = False):
        """`decode_codes` of one image's `Codes` that share `codes`' first `base` iterations and
        have one more (its partial candidates), as a function: the decoder's state after `base`
        iterations (rgbatch.model.DecoderState) is computed at the first call and kept, per batch of
        `decode_codes`, so that each candidate costs one decoder iteration and gives what
        `decode_codes([candidate])` gives in the encoder loop's arithmetic (the same batches, the
        same operations; the exact decoder's image with `decoding="exact-loop"`, or `exact`). States are kept
        for at most RESUMED_PIXELS pixels of tiles; the batches beyond are decoded from scratch."""
        states = []

        def decode(candidate: Codes) -> np.ndarray:
            width, height = candidate.coded_size
            image, grid = np.empty((height, width, 3), np.uint8), candidate.grid
            with self.device_lock:
                if not states:
                    kept = 0
                    for keys, bits in self._code_batches([codes.cut(base)]):
                        kept += math.prod(bits.shape[1:2] + bits.shape[3:]) * self.model.cfg.block ** 2
                        states.append(self.model.decode_from(bits, loop=not exact) if kept <= RESUMED_PIXELS else None)
                for (keys, bits), state in zip(self._code_batches([candidate]), states):
                    x_hat = (self.model.decode_from(bits, loop=not exact) if state is None
                             else self.model.decode_from(bits[base:], state, loop=not exact)).x_hat.clamp(-0.5, 0.5)
                    for (_, j), p in zip(keys, to_uint8(x_hat)):
                        paste(image, postfilter.apply(p, candidate.filter_at(j)), grid[j])
                image = self._refined(image, candidate)
            return upscale(image, candidate.width, candidate.height) if candidate.scale else image

        return decode


def release_freed_memory():
    """Hand the memory freed by the network's temporaries back to the system. glibc keeps freed
    blocks in its heap, fragmented by the small arrays that outlive each tile (its bits): an
    encoder's RSS grew by about 1 GB over the 400 tiles of a 100 MP image, 0.1 GB when trimmed
    after each batch (a few ms); one `encode_codes` of 48 crops of 512 px left 2.7 GB of RSS untrimmed,
    0.6 GB trimmed (`fit-entropy` on 752 crops died for memory before the codec trimmed). Nothing where the C library is not glibc."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim():
    """glibc's malloc_trim, looked up once per process (None elsewhere)."""
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


class _Run:
    """One image on its way through the network: its tiles' bits so far and, when measured, its
    quality meter fed with each depth's reconstruction as rows of tiles complete."""

    def __init__(self, image: np.ndarray, grid: list[Tile], tile_size: int, iterations: int, measure: bool,
                 keep_reconstructions: bool, device: torch.device, refiner=None, original=None, scale: int = 0,
                 filtered: bool = False, exact_loop: bool = False):
        self.image, self.grid, self.tile_size = image, grid, tile_size
        self.filtered = filtered  # post-filters fitted (a format v2 stream) or not (v1)
        self.exact_loop = exact_loop  # the exact decoder in the encoder's loop (`Codec._exact_loop`)
        # the full-size image, of which `image` is the downscaled copy when scale is not 0 (rgbatch.resample)
        self.original, self.scale = (image, 0) if original is None else (original, scale)
        self.tiles = [[] for _ in grid]  # per tile, the bits of each iteration
        self.filters = [[] for _ in grid]  # per tile, the post-filter of each iteration (when fitted)
        self.errors = [None for _ in grid]  # per tile, its last reconstruction's error (postfilter.error)
        self.meter = None if not measure else (
            _UpscaledMeter(self.original, image.shape[0], iterations, device, keep_reconstructions) if scale
            else QualityMeter(image, iterations, device=device))
        self.rows = [RowBands(grid, image.shape[1]) for _ in range(iterations)] if measure else None
        # what each depth decodes to, refined band by band as the rows come (rgbatch.refine)
        self.refined = ([BandRefiner(refiner, t + 1, image.shape[0]) for t in range(iterations)]
                        if measure and refiner is not None else None)
        # every depth's reconstruction whole, only when the caller asks for them (a scaled image's: its meter's)
        self.recon = np.empty((iterations, *image.shape), np.uint8) if keep_reconstructions and not scale else None
        self.chunks = []  # chunks coded as the encoding goes (lockstep, size targets)
        self.depth = iterations  # where the image stops

    def bands(self) -> list[tuple[int, Tile]]:
        """(row of the tile grid, tile) of each tile, in the grid's order."""
        rows = {y: n for n, y in enumerate(sorted({t.y for t in self.grid}))}
        return [(rows[t.y], t) for t in self.grid]

    def reconstructed(self, t: int, j: int, pixels: np.ndarray):
        """Tile j's reconstruction at depth t (uint8, padding included)."""
        for y, band in self.rows[t].paste(pixels, self.grid[j]):
            for y, band in self.refined[t].add(y, band) if self.refined else [(y, band)]:
                self.meter.add(t, y, band)
                if self.recon is not None:
                    self.recon[t, y:y + len(band)] = band

    def fit_filter(self, j: int, pixels: np.ndarray, iteration_bits: int) -> np.ndarray:
        """Tile j's post-filter at its next iteration, from its reconstruction there (uint8, padding
        included), fitted to the tile's pixels of the coded image (rgbatch.postfilter.fit);
        `iteration_bits`: the bits that iteration sent for the tile."""
        tile = self.grid[j]
        original = self.image[tile.y:tile.y + tile.height, tile.x:tile.x + tile.width]
        x = pixels[:tile.height, :tile.width]
        error = postfilter.error(x, original)
        q = postfilter.fit(x, original, postfilter.last_on(self.filters[j]), self.errors[j], iteration_bits, error)
        self.filters[j].append(q)
        self.errors[j] = error
        return q

    def codes(self) -> Codes:
        height, width = self.original.shape[:2]
        filters = [np.stack(f) for f in self.filters] if self.filtered else None
        return Codes(width, height, self.tile_size, [np.stack(t) for t in self.tiles], self.scale, filters=filters)


class _UpscaledMeter:
    """The quality meter of a downscaled image's encoding (rgbatch.resample): each depth's
    reconstruction, added in rows at the coded size, is scaled up as the decoder does once it is
    whole and measured against the full-size image in strips (`QualityMeter`). It holds a depth's
    rows until that depth is whole: with a target (tiles in lockstep) one depth at a time,
    otherwise up to every depth of the image, 3 bytes per coded pixel and depth (48 at 16).
    `keep`: every depth's full-size image, as `reconstructions`."""

    def __init__(self, original: np.ndarray, coded_height: int, depths: int, device: torch.device, keep: bool = False):
        self.original, self.coded_height = original, coded_height
        self.meter = QualityMeter(original, depths, device=device)
        self.small = [[] for _ in range(depths)]  # per depth, the rows added so far
        self.reconstructions = np.empty((depths, *original.shape), np.uint8) if keep else None

    def add(self, t: int, y: int, rows: np.ndarray):
        self.small[t].append(rows)
        if sum(map(len, self.small[t])) < self.coded_height:
            return
        height, width = self.original.shape[:2]
        small, self.small[t] = np.concatenate(self.small[t]), []
        for row, big in upscale_rows(small, width, height):
            self.meter.add(t, row, big)
            self.meter.flush()
            if self.reconstructions is not None:
                self.reconstructions[t, row:row + len(big)] = big

    def flush(self):
        self.meter.flush()

    def msssim(self, t: int) -> float:
        return self.meter.msssim(t)

    def psnr(self, t: int) -> float:
        return self.meter.psnr(t)


def code_positions(width: int, height: int, tile_size: int, cfg) -> int:
    """Code positions per bit plane of an image: its rate is cfg.bits x this per iteration."""
    return sum(r * c for r, c in (t.code_shape(cfg) for t in tile_grid(height, width, tile_size)))


__all__ = ["Codec", "Codes", "EncodedImage", "code_positions", "resolve_device"]
