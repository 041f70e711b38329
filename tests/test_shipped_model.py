"""Guards the shipped weights: a random or broken model cannot pass these.

Floors sit a few hundredths under what the shipped model measured on these two committed
Kodak crops (weights/MODEL_CARD.md); a random model scores about 0.1.
"""

import pytest

from rgbatch import bitstream
from rgbatch.codec import Codec
from rgbatch.imageio import read_image
from rgbatch.weights import DEFAULT_WEIGHTS

from conftest import DATA

FLOORS = {  # crop: MS-SSIM floor at depth 2, at depth 4
    "kodim23_crop192.png": (0.94, 0.97),  # measured 0.961, 0.983 (model bcafeac153069e2f)
    "kodim05_crop192.png": (0.87, 0.93),  # measured 0.895, 0.950
}


@pytest.fixture(scope="module")
def shipped(default_weights):
    return Codec.load(default_weights)


@pytest.mark.parametrize("name", sorted(FLOORS))
def test_the_shipped_model_reaches_its_quality_floor(shipped, name):
    image, _ = read_image(DATA / name)
    encoded = shipped.encode(image, iterations=4)
    at_2, at_4 = FLOORS[name]
    assert encoded.msssim[1] >= at_2 and encoded.msssim[3] >= at_4, encoded.msssim
    assert encoded.msssim[0] < encoded.msssim[1] < encoded.msssim[3]  # every iteration adds quality


def test_the_shipped_entropy_model_beats_raw_bits(shipped):
    # a smooth crop: its codes repeat across iterations and neighbours (busy crops like
    # kodim05 save only a few percent at these depths)
    image, _ = read_image(DATA / "kodim23_crop192.png")
    encoded = shipped.encode(image, iterations=4, measure=False)
    assert bitstream.read_header(encoded.blob).coder_id == 1  # the context coder is the default
    raw = Codec.load(DEFAULT_WEIGHTS, coder="raw").encode(image, iterations=4, measure=False)
    assert len(encoded.blob) < 0.95 * len(raw.blob)  # measured 0.90 (model bcafeac153069e2f)
    assert (shipped.decode(encoded.blob) == shipped.decode(raw.blob)).all()  # same codes, fewer bytes


def test_bf16_and_fp32_give_the_same_quality_and_decode_each_others_streams(default_weights):
    # bf16 is the default where the CPU computes it natively (2x faster): it must not cost
    # quality, and a stream must decode on a machine that runs the other precision
    image, _ = read_image(DATA / "kodim05_crop192.png")
    fp32, bf16 = (Codec.load(default_weights, precision=p) for p in ("fp32", "bf16"))
    a, b = (c.encode(image, iterations=4) for c in (fp32, bf16))
    assert a.msssim == pytest.approx(b.msssim, abs=0.003)  # measured within 0.0005
    from rgbatch.metrics import msssim
    crossed = msssim(image, fp32.decode(b.blob))
    assert crossed == pytest.approx(b.msssim[-1], abs=0.003)
