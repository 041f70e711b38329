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
    "kodim23_crop192.png": (0.90, 0.95),  # measured 0.931, 0.973 (model 3463638676cb6169)
    "kodim05_crop192.png": (0.80, 0.90),  # measured 0.820, 0.924
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
    assert bitstream.read_header(encoded.blob).coder_id == 4  # the mixing coder with its group model is the default
    raw = Codec.load(DEFAULT_WEIGHTS, coder="raw").encode(image, iterations=4, measure=False)
    context = Codec.load(DEFAULT_WEIGHTS, coder="context").encode(image, iterations=4, measure=False)
    adaptive = Codec.load(DEFAULT_WEIGHTS, coder="adaptive").encode(image, iterations=4, measure=False)
    mixing = Codec.load(DEFAULT_WEIGHTS, coder="mixing").encode(image, iterations=4, measure=False)
    assert len(context.blob) < 0.6 * len(raw.blob)  # measured 0.31 (models 023aa50247198e29, 3463638676cb6169)
    assert len(adaptive.blob) < len(context.blob)  # the map learns even on 144 code positions
    assert len(mixing.blob) < len(adaptive.blob)  # and the mixer beside it
    # and its group model: chunks are whole 32-bit words, so on 144 code positions its 0.4 % may
    # round to a tie (676 bytes each with model 3463638676cb6169; the benches measure the gain)
    assert len(encoded.blob) <= len(mixing.blob)
    for blob in (encoded.blob, mixing.blob, adaptive.blob, context.blob):  # same codes, fewer bytes
        assert (shipped.decode(blob) == shipped.decode(raw.blob)).all()


def test_bf16_and_fp32_give_the_same_quality_and_decode_each_others_streams(default_weights):
    # bf16 is the default where the CPU computes it natively (2x faster): it must not cost
    # quality, and a stream must decode on a machine that runs the other precision. The two
    # encodings differ where a binarizer input sits near 0; on a 192 px crop (144 code
    # positions) a few such bits move depth 1 by up to 0.004 (whole Kodak images: 0.0006)
    from rgbatch.metrics import msssim

    fp32, bf16 = (Codec.load(default_weights, precision=p) for p in ("fp32", "bf16"))
    differences = []
    for name in sorted(FLOORS):
        image, _ = read_image(DATA / name)
        a, b = (c.encode(image, iterations=4) for c in (fp32, bf16))
        differences += [y - x for x, y in zip(a.msssim, b.msssim)]
        assert msssim(image, fp32.decode(b.blob)) == pytest.approx(b.msssim[-1], abs=1e-3)
        assert msssim(image, bf16.decode(a.blob)) == pytest.approx(a.msssim[-1], abs=1e-3)
    assert max(abs(d) for d in differences) < 0.01, differences
    assert sum(differences) / len(differences) > -0.002, differences  # not worse on average
