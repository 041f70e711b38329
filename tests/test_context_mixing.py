import sys
from pathlib import Path

import numpy as np
import pytest

from rgbatch.codec import Codec
from rgbatch.context import MAX_LOOKBACK, ContextModel
from rgbatch.entropy import AdaptiveCoder
from rgbatch.imageio import read_image

from conftest import DATA

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
import context_mixing as cm  # noqa: E402


@pytest.fixture(scope="module")
def shipped_codes():
    codec = Codec.load(precision="fp32")
    image, _ = read_image(DATA / "kodim05_crop192.png")
    codes = codec.encode(image[:160, :176], 4, measure=False, keep_codes=True).codes.tiles
    return codes, ContextModel.from_tensors(codec.extra)


def test_baseline_is_what_coder_id_2_codes_with(shipped_codes):
    codes, model = shipped_codes
    lengths = cm.image_lengths(codes, model, {})["coder id 2"]
    expected = sum(b.sum(axis=(1, 2, 3)) for b in AdaptiveCoder(model=model).code_lengths(codes))
    np.testing.assert_allclose(lengths, expected, rtol=1e-12)


def test_the_mixer_alone_with_no_learning_codes_as_coder_id_2(shipped_codes):
    codes, model = shipped_codes
    variant = (cm.ADAPTIVE, cm.SELECT_NONE, 0.0, 255.0, 0.0, 0)
    lengths = cm.image_lengths(codes, model, {"mixer": variant})
    # weights stay (1, 0, ...): squash(stretch(q')) = q', but stretch is clipped at +-8
    np.testing.assert_allclose(lengths["mixer"], lengths["coder id 2"], rtol=2e-3)


@pytest.mark.parametrize("variant", ["all (14 inputs)", "all, APM", "all, weights per step"])
def test_a_bit_changes_no_earlier_bits_length(shipped_codes, variant):
    """The decoder could compute every probability: changing one bit changes only the lengths
    of bits coded after it (later positions of its step, later steps, later iterations)."""
    codes, model = shipped_codes
    layout, canvas, entries = cm.coded_entries(codes, model)
    before = cm.mixed_lengths(layout, canvas, entries, cm.VARIANTS[variant])
    t, s, c, i = 2, 0, 5, len(layout.positions[0]) // 2
    position = layout.positions[s][i]
    changed = [tile.copy() for tile in codes]
    flipped = layout.paint(changed)
    flipped[MAX_LOOKBACK + t, c, position] ^= True
    changed = layout.cut(flipped)
    layout, canvas, entries = cm.coded_entries(changed, model)
    after = cm.mixed_lengths(layout, canvas, entries, cm.VARIANTS[variant])
    earlier = np.zeros(canvas.shape, bool)  # every bit coded before the flipped one
    earlier[:MAX_LOOKBACK + t] = True
    earlier[MAX_LOOKBACK + t, :c, layout.positions[0]] = True
    earlier[MAX_LOOKBACK + t, c, layout.positions[0][:i]] = True
    assert np.array_equal(before[earlier], after[earlier])
    assert not np.array_equal(before[MAX_LOOKBACK + t], after[MAX_LOOKBACK + t])


def test_the_integer_sketch_codes_as_the_float_prototype(shipped_codes):
    codes, model = shipped_codes
    layout, canvas, entries = cm.coded_entries(codes, model)
    sketch = np.array(cm.sketch_lengths(layout, canvas, entries, cm.NONE))
    floats = cm.mixed_lengths(layout, canvas, entries, cm.VARIANTS[cm.SMALL])[MAX_LOOKBACK:].sum(axis=(1, 2))
    reference = cm.coder_2_lengths(layout, canvas, entries)
    assert len(sketch) == 4 and sketch.sum() < reference.sum()
    np.testing.assert_allclose(sketch, floats, rtol=0.01)  # 16-bit tables, logits clipped at 12 instead of 8
