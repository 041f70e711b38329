import numpy as np
import pytest
import torch
from pytorch_msssim import ms_ssim

from rgbatch.metrics import QualityMeter, msssim, msssim_many, msssim_tensor, psnr

from conftest import smooth_image


def test_msssim_is_the_pytorch_msssim_value_for_normal_images(rng):
    a = smooth_image(rng, 200, 240)
    b = np.clip(a.astype(int) + rng.integers(-20, 21, a.shape), 0, 255).astype(np.uint8)
    reference = ms_ssim(torch.from_numpy(a).permute(2, 0, 1)[None].float() / 255,
                        torch.from_numpy(b).permute(2, 0, 1)[None].float() / 255, data_range=1.0)
    assert msssim(a, b) == pytest.approx(float(reference), abs=1e-6)


def test_the_training_loss_is_the_library_value_per_image_and_differentiable():
    torch.manual_seed(0)
    x = torch.rand(3, 3, 176, 180)
    y = (x + 0.1 * torch.randn_like(x)).clamp(0, 1).requires_grad_()
    value = msssim_tensor(x, y)
    assert value.shape == (3,)
    assert torch.allclose(value, ms_ssim(x, y, data_range=1.0, size_average=False), atol=1e-6)
    value.sum().backward()
    assert y.grad.abs().sum() > 0


@pytest.mark.parametrize("side", [176, 64, 8])
def test_several_reconstructions_of_each_image_share_one_reference(side):
    # training scores 16 iterations' reconstructions of a batch, (16*N, ...), against the batch
    torch.manual_seed(0)
    x = torch.rand(2, 3, side, side)
    y = (x.repeat(3, 1, 1, 1) + 0.1 * torch.randn(6, 3, side, side)).clamp(0, 1).requires_grad_()
    shared = msssim_tensor(x, y)
    one_by_one = torch.stack([msssim_tensor(x[i % 2:i % 2 + 1], y[i:i + 1])[0] for i in range(6)])
    torch.testing.assert_close(shared, one_by_one)
    shared.sum().backward()
    assert (y.grad.flatten(1).abs().sum(1) > 0).all()


@pytest.mark.parametrize("shape", [(160, 500), (60, 60), (12, 40), (5, 5), (1, 1), (1, 9)])
def test_msssim_is_defined_for_small_images(rng, shape):
    a = smooth_image(rng, *shape)
    b = np.clip(a.astype(int) + 30, 0, 255).astype(np.uint8)
    assert msssim(a, a) == pytest.approx(1.0)
    assert 0 <= msssim(a, b) < 1


def test_psnr():
    a = np.zeros((4, 4, 3), np.uint8)
    assert psnr(a, a) == 100.0
    assert psnr(a, a + 1) == pytest.approx(20 * np.log10(255))


def test_batched_msssim_equals_one_by_one(rng):
    a = smooth_image(rng, 40, 50)
    others = np.stack([np.clip(a.astype(int) + d, 0, 255).astype(np.uint8) for d in (5, 20, 40, 60, 80)])
    assert msssim_many(a, others) == pytest.approx([msssim(a, o) for o in others], abs=1e-6)


def _noisy(rng, a, amounts=(3, 30, 90)):
    return [np.clip(a.astype(int) + rng.integers(-d, d + 1, a.shape), 0, 255).astype(np.uint8) for d in amounts]


def _library(a, b):
    as_float = lambda x: torch.from_numpy(x).permute(2, 0, 1)[None].float() / 255  # noqa: E731
    return float(ms_ssim(as_float(a), as_float(b), data_range=1.0))


# five scales with odd heights and widths at several scales (avg_pool2d's padded rows), fewer
# scales, single-scale SSIM; strips of 16-32 rows, so that every scale's map spans several
@pytest.mark.parametrize("shape", [(333, 517), (517, 203), (161, 400), (40, 50), (8, 9)])
def test_msssim_measured_in_strips_is_the_whole_image_value(rng, shape):
    a = smooth_image(rng, *shape)
    others = _noisy(rng, a)
    whole = QualityMeter(a, 3, strip_pixels=10 ** 9)
    strips = QualityMeter(a, 3, strip_pixels=1)
    assert len(whole.strips) == 1 and (len(strips.strips) > 2 or min(shape) < 11)
    for t, b in enumerate(others):
        whole.add(t, 0, b)
        for y in range(0, shape[0], 37):  # bands that do not line up with the strips
            strips.add(t, y, b[y:y + 37])
            strips.flush()
    whole.flush()
    for t, b in enumerate(others):
        # the documented tolerance (float32 rounding of the maps; the sums are float64)
        assert strips.msssim(t) == pytest.approx(whole.msssim(t), abs=1e-6)
        if min(shape) > 160:
            assert strips.msssim(t) == pytest.approx(_library(a, b), abs=1e-6)
        assert strips.psnr(t) == whole.psnr(t) == psnr(a, b)


def test_depths_measured_in_separate_flushes_give_the_same_values(rng):
    # an encoder that stops at a quality measures each depth whole before the next one comes
    a = smooth_image(rng, 250, 300)
    others = _noisy(rng, a)
    together = msssim_many(a, others)
    meter = QualityMeter(a, 3, strip_pixels=5000)
    for t, b in enumerate(others):
        with pytest.raises(ValueError, match="measured up to"):
            meter.msssim(t)
        meter.add(t, 0, b[:100])
        meter.add(t, 100, b[100:])
        meter.flush()
        assert meter.msssim(t) == pytest.approx(together[t], abs=1e-6)
    with pytest.raises(ValueError, match="in order"):
        meter.add(0, 0, others[0])


def test_a_meter_holds_only_the_rows_its_next_strips_need(rng):
    a = smooth_image(rng, 600, 200)
    meter = QualityMeter(a, 1, strip_pixels=16 * 200)
    for y in range(0, 600, 50):
        meter.add(0, y, a[y:y + 50])
        meter.flush()
        held = sum(r.shape[0] for _, r in meter.pieces[0])
        assert held <= 50 + 16 * 12  # a band, plus the 5th scale's halo (10 rows there) and pooling
    assert meter.msssim(0) == pytest.approx(1.0)


def _measured(a, others, **options) -> list[tuple[float, float]]:
    meter = QualityMeter(a, len(others), **options)
    for y in range(0, a.shape[0], 64):  # bands of a tile row, every depth's in each flush (as the codec)
        for t, b in enumerate(others):
            meter.add(t, y, b[y:y + 64])
        meter.flush()
    return [(meter.msssim(t), meter.psnr(t)) for t in range(len(others))]


@pytest.mark.parametrize("shape", [(333, 517), (40, 50)])
def test_depths_measured_together_in_one_pass_give_the_values_of_one_at_a_time(rng, shape):
    # what a GPU does (PASS_PIXELS): the depths of a strip stacked, the reference's statistics broadcast
    a = smooth_image(rng, *shape)
    others = _noisy(rng, a, amounts=(2, 5, 10, 30, 60, 90))
    one_at_a_time = _measured(a, others, strip_pixels=100 * 517, pass_pixels=0)
    for pass_pixels in (3 * 100 * 517, 10 ** 9):  # the six depths in passes of three, and all at once
        assert _measured(a, others, strip_pixels=100 * 517, pass_pixels=pass_pixels) == one_at_a_time


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on a lent machine)")
def test_quality_measured_on_the_gpu_is_the_cpus(rng):
    a = smooth_image(rng, 333, 517)
    others = _noisy(rng, a)
    on_gpu, on_cpu = _measured(a, others, device="cuda"), _measured(a, others)
    assert [m for m, _ in on_gpu] == pytest.approx([m for m, _ in on_cpu], abs=1e-6)
    assert [p for _, p in on_gpu] == [p for _, p in on_cpu]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on a lent machine)")
def test_the_training_loss_runs_on_the_gpu(rng):
    x, y = (torch.from_numpy(rng.random((2, 3, 64, 64), dtype=np.float32)) for _ in range(2))
    torch.testing.assert_close(msssim_tensor(x.cuda(), y.cuda()).cpu(), msssim_tensor(x, y), rtol=1e-4, atol=1e-5)
