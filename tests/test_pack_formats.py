"""`benchmarks/pack_formats.py`: bytes and fidelity of a crop in a format."""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
import pack_formats  # noqa: E402


def test_a_higher_quality_costs_bytes_and_gains_fidelity():
    rng = np.random.default_rng(0)
    crops = [(np.add.outer(np.arange(64), np.arange(64))[..., None] * 2 + rng.integers(0, 20, (64, 64, 3))).astype(np.uint8)]
    low = pack_formats.measure(crops, dict(format="JPEG", quality=50, subsampling=0))
    high = pack_formats.measure(crops, dict(format="JPEG", quality=95, subsampling=0))
    assert high[0] > low[0] > 0 and high[1] > low[1] > 20
    assert low[2] == low[1]  # one crop: its worst is its mean
