"""`benchmarks/orientation.py`: the eight orientations, and the trial's pick."""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
import orientation  # noqa: E402


def test_the_eight_orientations_are_the_dihedral_group():
    image = np.arange(2 * 3 * 3).reshape(2, 3, 3)
    seen = {orientation.orient(image, k).tobytes() + bytes(orientation.orient(image, k).shape) for k in range(8)}
    assert len(seen) == 8  # all different
    assert np.array_equal(orientation.orient(image, 0), image)
    assert np.array_equal(orientation.orient(image, 2), image[::-1, ::-1])
    assert np.array_equal(orientation.orient(image, 4), image[:, ::-1])
    assert orientation.orient(image, 1).shape == (3, 2, 3)


def test_the_trial_picks_the_point_above_the_identity_curve():
    bpp = np.array([0.1, 0.2, 0.4])
    db = np.array([10.0, 12.0, 14.0])  # 2 dB per doubling of the rate
    cheaper = (bpp * 0.9, db)  # the same quality for 10 % less
    worse = (bpp, db - 0.1)
    assert orientation.trial_pick([(bpp, db), worse, cheaper, worse], depth=1) == 2
    assert orientation.trial_pick([(bpp, db), worse, worse, worse], depth=2) == 0
