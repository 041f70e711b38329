"""Rate control: how many iterations to keep per image, chosen from its per-depth stats.

A progressive stream cut to depth k is a valid stream of k iterations, so an image is
encoded once and cut to the depth its target asks for; `Codec.encode_many(target=...)` stops
the encoder there (the same stream for less work), `EncodedImage.at_target` cuts a stored
encoding (rgbatch.codes):

    quality  Target(msssim=Q)      the smallest depth whose MS-SSIM reaches Q
    size     Target(bpp=B)         the largest depth within B bits per pixel
             Target(max_bytes=N)   the largest depth within N bytes

(the CLI's --target-msssim, --target-bpp and --max-bytes).

With a quality and a size target together the size wins (the smaller depth). An image that
never reaches Q keeps every iteration; one whose first iteration is already over the size
keeps one iteration (the least a stream can hold). An image with a side under MIN_JUDGED_SIDE
pixels has no quality target (`judged`): it keeps every iteration within any size target.

Resampled coding (`resample="auto"`, rgbatch.resample) encodes an image at several scales and
keeps the encoding the target prefers (`choose_candidate`): for a quality target the fewest
bytes among those that reach it, for a size target the best MS-SSIM among those within it.
With `partial=True` the candidates also include streams whose last chunk holds only part of an
iteration (`Codec._partial`, docs/FORMAT.md "Partial last chunk"), chosen by the same rule.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from .options import OptionError, check_count, check_number, check_positive


@dataclass(frozen=True)
class Target:
    msssim: float | None = None
    bpp: float | None = None
    max_bytes: int | None = None

    def __post_init__(self):
        check_number("target.msssim", self.msssim)
        if self.msssim is not None and not 0 < self.msssim <= 1:
            raise OptionError("target.msssim", f"must be in (0, 1], not {self.msssim}")
        check_positive("target.bpp", self.bpp)
        check_count("target.max_bytes", self.max_bytes, 1)

    def __bool__(self) -> bool:
        return any(v is not None for v in (self.msssim, self.bpp, self.max_bytes))

    @property
    def limits_size(self) -> bool:
        return self.bpp is not None or self.max_bytes is not None

    def fits(self, size: int, pixels: int) -> bool:
        """Whether a stream of `size` bytes for an image of `pixels` is within the size limits."""
        return ((self.max_bytes is None or size <= self.max_bytes)
                and (self.bpp is None or 8 * size / pixels <= self.bpp))


def check_measured(target: Target, measure: bool):
    """A quality target reads the MS-SSIM of every depth: encodings must measure it. (And a
    target is a Target: 0.95 or None failed in an AttributeError until session 58.)"""
    if not isinstance(target, Target):
        raise OptionError("target", f"is {target!r}: give a Target (Target(msssim=0.95), Target() for none)")
    if target.msssim is not None and not measure:
        raise OptionError("target.msssim", "needs the MS-SSIM of every depth: measuring must stay on")


# MS-SSIM judges with an 11-px window (metrics.WINDOW); on an image with a side under it the window
# shrinks to what fits, at 1 px brightness alone: a 1 x 768 row passed 0.95 at depth 1 (19.8 dB),
# its 4-px-high version never reached it (33.7 dB at depth 16). A quality target there misleads.
MIN_JUDGED_SIDE = 11


def judged(target: Target, height: int, width: int) -> Target:
    """`target` for an image of this size: without its MS-SSIM goal where the image has a side
    under MIN_JUDGED_SIDE (since session 59; the image keeps every depth, within any size goal)."""
    if target.msssim is None or min(height, width) >= MIN_JUDGED_SIDE:
        return target
    return replace(target, msssim=None)


def choose_depth(target: Target, sizes: list[int], msssim: list[float], pixels: int) -> int:
    """Depth 1..len(sizes) to keep, from the stream size and MS-SSIM at each depth."""
    depths = len(sizes)
    if depths == 0:
        raise ValueError("an image with no stored iterations has no depth to choose")
    depth = depths
    if target.msssim is not None:
        if len(msssim) < depths:
            raise ValueError("a quality target needs the MS-SSIM of every depth (encode with measuring on)")
        depth = next((d for d, q in enumerate(msssim, start=1) if q >= target.msssim), depths)
    for d in range(depth, 0, -1):  # walk down to the first depth within every size limit
        if target.fits(sizes[d - 1], pixels):
            return d
    return 1


def choose_candidate(target: Target, sizes: list[int], msssim: list[float], pixels: int) -> int:
    """Which of several encodings of one image `target` prefers, each already cut to the depth
    it keeps (its stream's bytes and MS-SSIM there); the first one (the image coded as it is) is
    the fallback. Within the size limits: the fewest bytes among those that reach the quality
    target (the first of equals); otherwise, with a size target, the best MS-SSIM; otherwise the
    first."""
    fits = [i for i, size in enumerate(sizes) if target.fits(size, pixels)]
    if target.msssim is not None:
        reach = [i for i in fits if msssim[i] >= target.msssim]
        if reach:
            return min(reach, key=lambda i: sizes[i])
    if target.limits_size and fits:
        return max(fits, key=lambda i: msssim[i])
    return 0


def candidate_target(target: Target, sizes: list[int], msssim: list[float]) -> Target:
    """The target a further candidate encoding of an image runs to, after the candidates of
    `sizes` and `msssim` (choose_candidate, which prefers the earlier of equals): with a quality
    target alone it can only be chosen with fewer bytes than the smallest that reaches it, so it
    also stops at that size (the encoder then stops it where it can no longer win). What is
    chosen is the same; only the candidates that lose change."""
    if target.msssim is None or target.limits_size:
        return target
    reach = [size for size, q in zip(sizes, msssim) if q >= target.msssim]
    return replace(target, max_bytes=min(reach) - 1) if reach else target
