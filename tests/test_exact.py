"""Exact decoding (rgbatch.exact): the same pixels whatever the order of the sums, the batch,
the thread count or the encoder's precision; within float noise of the float decoder."""

import copy
import hashlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rgbatch import exact
from rgbatch.codec import Codec
from rgbatch.exact import ACTIVATION_BITS, TABLE_BITS, TABLE_RANGE, UNIT, ExactConv, ExactDecoder, fine_table, table
from rgbatch.imageio import read_image
from rgbatch.metrics import msssim_many
from rgbatch.model import CodecConfig, ResidualGRUCodec

from conftest import DATA


def on_grid(x: torch.Tensor, bits: int) -> bool:
    return torch.equal(x * 2.0 ** bits, (x * 2.0 ** bits).round())


def test_tables_are_the_same_integers_everywhere_and_close_to_the_functions():
    # computed in `decimal`: pinned, so a Python that computed other digits fails here
    digests = {name: hashlib.sha256(np.array(table(name), "<i8").tobytes()).hexdigest()[:16]
               for name in ("sigmoid", "tanh")}
    assert digests == {"sigmoid": "238b13fcfda4e2c7", "tanh": "5b133f24399f619d"}
    decoder = ExactDecoder(ResidualGRUCodec(CodecConfig(width=0.125)))
    x = torch.arange(-20 * 2 ** 12, 20 * 2 ** 12, dtype=torch.float64) / 2 ** 12  # on the activation grid
    for name, f in (("sigmoid", torch.sigmoid), ("tanh", torch.tanh)):
        y = decoder.lookup(name, x * UNIT) / UNIT  # in units of the grid; it overwrites its input
        assert on_grid(y, ACTIVATION_BITS)
        # interpolation (6e-6 for tanh) and two roundings to the grid (7.6e-6 each)
        assert (y - f(x)).abs().max().item() < 1.5 * 2.0 ** -ACTIVATION_BITS


def test_the_fine_tables_are_the_coarse_tables_read_with_linear_interpolation():
    # every grid point of [-R, R], against the interpolation done in float64 (exact there) and
    # rounded half up: one read of the fine table is the same value
    for name, reach in TABLE_RANGE.items():
        coarse = torch.tensor(table(name), dtype=torch.float64) * 2.0 ** -ACTIVATION_BITS
        x = torch.arange(-reach * UNIT, reach * UNIT + 1, dtype=torch.float64) / UNIT
        position = (x + reach) * 2 ** TABLE_BITS
        below = position.floor().clamp(max=len(coarse) - 2)
        index = below.long()
        y = coarse[index] + (coarse[index + 1] - coarse[index]) * (position - below)
        expected = torch.floor(y * UNIT + 0.5) / UNIT
        assert torch.equal(torch.from_numpy(fine_table(name)) / UNIT, expected)


def test_an_exact_convolution_does_not_depend_on_the_order_of_its_sums():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(24, 40, 3, 1, 1)
    exact = ExactConv(conv, ACTIVATION_BITS, 64.0)
    assert exact.weight_bits == 24 and on_grid(exact.weight, 24)
    x = torch.floor(torch.rand(3, 24, 20, 20, dtype=torch.float64) * 2 ** 23 - 2 ** 22) * 2.0 ** -ACTIVATION_BITS
    y = exact(x * UNIT) / UNIT  # it computes in units of the grids
    assert on_grid(y, ACTIVATION_BITS)
    # the same sums in another order: channels permuted, and as one matrix product
    order = torch.randperm(24)
    permuted = exact.weight[:, order]
    y_permuted = F.conv2d(x[:, order], permuted, exact.bias, 1, 1)
    assert torch.equal(torch.floor(y_permuted * 2 ** 16 + 0.5) / 2 ** 16, y)
    columns = F.unfold(x, 3, padding=1)  # (N, 24 * 9, 400)
    y_matmul = (exact.weight.flatten(1) @ columns + exact.bias[:, None]).view(3, 40, 20, 20)
    assert torch.equal(torch.floor(y_matmul * 2 ** 16 + 0.5) / 2 ** 16, y)
    # and batch by batch, on fewer threads
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert torch.equal(torch.cat([exact(x[i:i + 1] * UNIT) / UNIT for i in range(3)]), y)
    finally:
        torch.set_num_threads(threads)


def test_bands_of_rows_decode_the_same_values(monkeypatch):
    # one row a band, in the GRUs and in the convolutions' im2col, against whole tensors: the
    # same reconstruction and states (the reset gates' extra row at the bands' edges included)
    torch.manual_seed(0)
    decoder = ExactDecoder(ResidualGRUCodec(CodecConfig(width=0.125)))
    codes = torch.where(torch.rand(3, 2, 32, 5, 3) < 0.5, -1.0, 1.0)  # 3 iterations of 2 images, 80 x 48

    def decode():
        x_hat, hidden = None, [None] * 4
        for t in range(len(codes)):
            x_hat, hidden = decoder.step(codes[t], t, hidden, x_hat)
        return [x_hat, *hidden]

    whole = decode()
    monkeypatch.setattr(exact, "BAND_BYTES", 1)
    monkeypatch.setattr(exact, "COLUMN_BYTES", 1)
    banded = decode()
    assert all(torch.equal(a, b) for a, b in zip(whole, banded))


def test_weights_too_large_for_exact_sums_are_refused():
    conv = torch.nn.Conv2d(8, 8, 3, 1, 1)
    with torch.no_grad():
        conv.weight.fill_(1e9)
    with pytest.raises(ValueError, match="too large for exact decoding"):
        ExactConv(conv, ACTIVATION_BITS, 64.0)
    model = ResidualGRUCodec(CodecConfig(width=0.125))
    with torch.no_grad():
        model.log_gain.fill_(-20.0)  # updates scaled up e^20 times: their products would not be exact
    with pytest.raises(ValueError, match="decoder outputs too large for exact decoding"):
        ExactDecoder(model)


@pytest.fixture(scope="module")
def shipped(default_weights):
    return Codec.load(default_weights, precision="fp32")


def test_exact_decoding_is_the_same_alone_in_a_batch_on_one_thread_and_from_a_bf16_codec(shipped, default_weights):
    image, _ = read_image(DATA / "kodim23_crop192.png")
    other, _ = read_image(DATA / "kodim05_crop192.png")
    blob, other_blob = (shipped.encode(im, iterations=3, measure=False).blob for im in (image, other))
    alone = shipped.decode(blob)
    assert np.array_equal(shipped.decode_many([other_blob, blob])[1], alone)  # tiles of one shape: one batch
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert np.array_equal(shipped.decode(blob), alone)
    finally:
        torch.set_num_threads(threads)
    assert np.array_equal(Codec.load(default_weights, precision="bf16").decode(blob), alone)


def test_exact_decoding_is_within_float_noise_of_the_float_decoder_and_exact_in_an_exact_loop(shipped, default_weights):
    image, _ = read_image(DATA / "kodim23_crop192.png")
    encoded = shipped.encode(image, iterations=6)  # the encoder's loop in float, by default
    floating = Codec.load(default_weights, precision="fp32", decoding="float")
    looped = Codec.load(default_weights, precision="fp32", decoding="exact-loop")
    assert (shipped.decoding, floating.decoding, looped.decoding) == ("exact", "float", "exact-loop")
    exact_encoded = looped.encode(image, iterations=6, keep_reconstructions=True)
    for depth in (1, 3, 6):
        exact, approximate = shipped.decode(encoded.blob, depth), floating.decode(encoded.blob, depth)
        # a level apart at most, which the post-filter (docs/FORMAT.md) can turn into two
        assert np.abs(exact.astype(int) - approximate).max() <= 2
        assert (exact != approximate).mean() < 0.01
        # the encoder measured its float reconstruction, the float decoder's image
        assert msssim_many(image, [exact])[0] == pytest.approx(encoded.msssim[depth - 1], abs=2e-5)
        assert np.array_equal(approximate, encoded_reconstruction(shipped, image, depth))
        # with the exact decoder in its loop, it measures what decoding returns, on any codec
        decoded = shipped.decode(exact_encoded.blob, depth)
        assert np.array_equal(decoded, exact_encoded.reconstructions[depth - 1])
        assert msssim_many(image, [decoded])[0] == pytest.approx(exact_encoded.msssim[depth - 1], abs=1e-6)


def test_an_image_of_a_few_pixels_is_measured_as_it_decodes_in_any_precision(default_weights):
    """On a few pixels the float loop's level here and there moved MS-SSIM by up to 3e-3 (a 16 x
    16 crop in bf16): `verify` called a fresh archive of icons wrong, a target could be missed by as
    much. Under EXACT_LOOP_PIXELS the loop runs the exact decoder: the codes "exact-loop" makes,
    every depth measured as it decodes; at the limit and beyond, the float loop as before."""
    from rgbatch.codec import EXACT_LOOP_PIXELS

    image, _ = read_image(DATA / "kodim23_crop192.png")
    icon, thumbnail = image[40:56, 60:76], image[:64, :64]
    assert icon.shape[0] * icon.shape[1] < EXACT_LOOP_PIXELS == thumbnail.shape[0] * thumbnail.shape[1]
    for precision in ("fp32", "bf16"):
        shipped = Codec.load(default_weights, precision=precision)
        looped = Codec.load(default_weights, precision=precision, decoding="exact-loop")
        encoded, both = shipped.encode(icon, 6, keep_reconstructions=True), shipped.encode_many([icon, thumbnail], 6)
        assert encoded.blob == looped.encode(icon, 6).blob == both[0].blob  # in a batch of its own
        assert both[1].blob == shipped.encode(thumbnail, 6).blob
        for depth in range(1, 7):
            decoded = shipped.decode(encoded.blob, depth)
            assert np.array_equal(decoded, encoded.reconstructions[depth - 1])
            assert msssim_many(icon, [decoded])[0] == pytest.approx(encoded.msssim[depth - 1], abs=1e-6)


def encoded_reconstruction(codec, image, depth):
    return codec.encode(image, iterations=depth, keep_reconstructions=True).reconstructions[-1]


def test_the_model_switches_decoding_and_keeps_the_callers_model_float(default_weights):
    model = ResidualGRUCodec(CodecConfig(width=0.125))
    codec = Codec(model, "m")
    assert codec.decoding == "exact" and codec.model is not model and model.exact is None
    assert model.set_decoding("exact").decoding == "exact" and model.set_decoding("float").exact is None
    assert model.set_decoding("exact-loop").exact_loop and not model.set_decoding("exact").exact_loop
    with pytest.raises(ValueError, match="decoding must be one of"):
        model.set_decoding("fast")
    from rgbatch.options import OptionError
    with pytest.raises(OptionError, match="decoding must be one of"):
        Codec(model, "m", decoding="fast")
    codes = torch.where(torch.rand(2, 1, 32, 2, 2) < 0.5, 1.0, -1.0)
    wide = copy.deepcopy(model).set_decoding("exact").to("cpu")
    assert wide.decode(codes).dtype == torch.float64
    # a model lowered to bf16 (a float-decoding bf16 codec's) has no float32 weights to build the
    # exact decoder from: refused (its pixels differed from every other exact decoder's until session 63)
    lowered = Codec(model, "m", precision="bf16", decoding="float").model
    with pytest.raises(OptionError, match="built from the float32 weights"):
        Codec(lowered, "m", precision="bf16", decoding="exact")
    assert Codec(lowered, "m", precision="bf16", decoding="float").decoding == "float"


def test_the_device_benchmark_finds_the_same_bytes_on_one_thread_and_two():
    import subprocess
    import sys
    from pathlib import Path
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "exact_devices.py"
    done = subprocess.run([sys.executable, str(script), "--devices", "cpu", "cpu", "--threads", "1", "--depths", "1"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "exact decoding gave the same bytes on both" in done.stdout
    assert done.stdout.count("exact kodim") == 2 and "exact kodim05_crop192.png depth  1: same bytes" in done.stdout


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on a lent machine)")
def test_exact_decoding_on_a_gpu_gives_the_cpus_pixels(shipped, default_weights):
    image, _ = read_image(DATA / "kodim23_crop192.png")
    blob = shipped.encode(image, iterations=4, measure=False).blob
    assert np.array_equal(Codec.load(default_weights, device="cuda").decode(blob), shipped.decode(blob))
