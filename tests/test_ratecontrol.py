"""Choosing the depth kept per image, and the encoder that stops there (cutting: tests/test_codes.py)."""

from __future__ import annotations

import pytest

from conftest import smooth_image
from rgbatch.codec import Codec
from rgbatch.ratecontrol import Target, choose_depth

SIZES = [100, 200, 300, 400]  # bytes at depth 1..4
QUALITY = [0.80, 0.90, 0.95, 0.97]
PIXELS = 800  # so bpp = sizes / 100: 1, 2, 3, 4


@pytest.mark.parametrize("target, depth", [
    (Target(msssim=0.90), 2),  # reached exactly at depth 2
    (Target(msssim=0.91), 3),
    (Target(msssim=0.99), 4),  # never reached: keep everything
    (Target(bpp=2.5), 2),
    (Target(bpp=0.5), 1),  # even depth 1 is over: one iteration is the least a stream holds
    (Target(max_bytes=300), 3),
    (Target(msssim=0.96, max_bytes=250), 2),  # the size limit wins over the quality
    (Target(msssim=0.85, bpp=3.0), 2),  # the quality is reached before the size limit
    (Target(), 4),
])
def test_choose_depth(target, depth):
    assert choose_depth(target, SIZES, QUALITY, PIXELS) == depth


def test_targets_are_checked():
    for bad in (dict(msssim=1.5), dict(msssim=0), dict(bpp=-1), dict(max_bytes=0)):
        with pytest.raises(ValueError):
            Target(**bad)
    with pytest.raises(ValueError, match="MS-SSIM of every depth"):
        choose_depth(Target(msssim=0.9), SIZES, [], PIXELS)


@pytest.mark.parametrize("lockstep_tiles", [32, 4])
def test_an_encoder_that_stops_at_the_target_gives_the_cut_full_encoding(default_weights, rng, monkeypatch,
                                                                          lockstep_tiles):
    # two images whose tiles share batches (32 px tiles, 3 to a batch), coded by the shipped
    # model with its context coder: each stops at its own depth, with the bytes and stats the
    # full encoding cut by the target would have; with more tiles than may run in lockstep
    # (4), the batches run one after the other and are cut afterwards, alike
    from conftest import DATA
    from rgbatch import codec as codec_module
    from rgbatch.imageio import read_image

    monkeypatch.setattr(codec_module, "LOCKSTEP_TILES", lockstep_tiles)
    codec = Codec.load(default_weights, device="cpu", tile_size=32, batch_size=3)
    images = [read_image(DATA / "kodim23_crop192.png")[0][:64, :96], smooth_image(rng, 40, 70)]
    full = codec.encode_many(images, iterations=6)
    quality = (full[0].msssim[1] + full[0].msssim[2]) / 2  # image 0 reaches it at depth 3
    size = (full[0].bytes[3] + full[0].bytes[4]) // 2  # image 0 fits 4 iterations, not 5
    targets = [Target(msssim=quality), Target(max_bytes=size), Target(bpp=8 * size / (64 * 96)),
               Target(msssim=quality, max_bytes=full[0].bytes[1]), Target(max_bytes=1)]
    for target, depth in zip(targets, [3, 4, 4, 2, 1]):
        stopped = codec.encode_many(images, iterations=6, target=target)
        assert stopped[0].iterations == depth, target
        for whole, early in zip(full, stopped):
            expected = whole.at_target(target)
            assert early.iterations == expected.iterations and early.blob == expected.blob
            assert early.bytes == expected.bytes and early.psnr == expected.psnr
            assert early.msssim == pytest.approx(expected.msssim, abs=1e-6)


def test_the_candidate_a_target_prefers():
    from rgbatch.ratecontrol import choose_candidate
    sizes, quality, pixels = [1000, 700, 400], [0.96, 0.955, 0.94], 100 * 100
    assert choose_candidate(Target(msssim=0.95), sizes, quality, pixels) == 1  # the fewest bytes reaching it
    assert choose_candidate(Target(msssim=0.93), sizes, quality, pixels) == 2
    assert choose_candidate(Target(msssim=0.99), sizes, quality, pixels) == 0  # none reaches it: the first
    assert choose_candidate(Target(msssim=0.95), [700, 700, 400], quality, pixels) == 0  # the first of equals
    assert choose_candidate(Target(max_bytes=800), sizes, quality, pixels) == 1  # the best quality within the size
    assert choose_candidate(Target(bpp=8 * 500 / pixels), sizes, quality, pixels) == 2
    assert choose_candidate(Target(max_bytes=300), sizes, quality, pixels) == 0  # none fits: the first
    assert choose_candidate(Target(msssim=0.95, max_bytes=800), sizes, quality, pixels) == 1
    assert choose_candidate(Target(msssim=0.97, max_bytes=800), sizes, quality, pixels) == 1  # best within the size


def test_a_further_candidate_stops_where_it_can_no_longer_win():
    from rgbatch.ratecontrol import candidate_target
    q = Target(msssim=0.95)
    assert candidate_target(q, [], []) == q  # the first candidate: the target itself
    assert candidate_target(q, [900, 700], [0.96, 0.94]) == Target(msssim=0.95, max_bytes=899)
    assert candidate_target(q, [900, 700], [0.96, 0.955]) == Target(msssim=0.95, max_bytes=699)
    assert candidate_target(q, [900], [0.94]) == q  # nothing reaches it yet: no bound
    for size_target in (Target(max_bytes=800), Target(msssim=0.95, bpp=1.0)):  # a size target compares quality
        assert candidate_target(size_target, [900], [0.96]) == size_target


def test_an_image_msssim_cannot_judge_has_no_quality_target(tiny_weights, rng):
    """A side under 11 px shrinks MS-SSIM's window (1 px: brightness alone): until session 59 a
    1 x 768 row passed 0.95 at depth 1 (19.8 dB). Such an image keeps every depth, within any
    size target; the rest keep theirs."""
    from rgbatch.ratecontrol import MIN_JUDGED_SIDE, judged

    target = Target(msssim=0.5, max_bytes=10**6)
    assert judged(target, 10, 500) == Target(max_bytes=10**6) and judged(target, MIN_JUDGED_SIDE, 500) == target
    assert judged(Target(bpp=2.0), 1, 1) == Target(bpp=2.0)
    codec = Codec.load(tiny_weights, precision="fp32")
    thin, square = smooth_image(rng, 4, 96), smooth_image(rng, 48, 48)
    plain = codec.encode_many([thin, square], iterations=4)
    aimed = codec.encode_many([thin, square], iterations=4, target=Target(msssim=plain[1].msssim[1]))
    assert aimed[0].iterations == 4 and aimed[0].blob == plain[0].blob  # every depth, as without a target
    assert aimed[1].iterations < 4  # judged: cut where its quality is reached
    assert aimed[0].choose_depth(Target(msssim=0.01)) == 4 == plain[0].choose_depth(Target(msssim=0.01))
