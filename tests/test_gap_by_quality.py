"""`benchmarks/gap_by_quality.py`: the rate ratio at each MS-SSIM level, from a bench manifest's rows."""

import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
import gap_by_quality  # noqa: E402


def rows_of(curves):
    """A bench manifest's columns for {codec: {image: [(bpp, msssim), ...]}}."""
    out = {"codec": [], "path": [], "bpp": [], "msssim": []}
    for codec, images in curves.items():
        for path, points in images.items():
            for bpp, msssim in points:
                out["codec"].append(codec), out["path"].append(path), out["bpp"].append(bpp), out["msssim"].append(msssim)
    return pa.table(out)


def test_a_curve_that_needs_more_rate_everywhere_shows_it_at_every_level():
    db = np.linspace(8, 22, 16)
    msssim = 1 - 10 ** (-db / 10)
    base = np.exp(np.linspace(-3.5, 0.5, 16))
    # image b needs 25 % more than avif at every quality, image a 10 % more; jxl is rgbatch itself
    curves = {"avif": {"a": list(zip(base, msssim)), "b": list(zip(base, msssim))},
              "jxl": {"a": list(zip(1.1 * base, msssim)), "b": list(zip(1.25 * base, msssim))},
              "rgbatch-mixing2": {"a": list(zip(1.1 * base, msssim)), "b": list(zip(1.25 * base, msssim))}}
    table = gap_by_quality.table(rows_of(curves), levels=[9.0, 15.0, 21.0])
    for row in table:
        images, percent = row["avif"]
        assert images == 2 and percent == pytest.approx((np.sqrt(1.1 * 1.25) - 1) * 100)
        assert row["jxl"] == (2, pytest.approx(0.0))
        assert "avif-s2" not in row  # a reference the run lacks is left out
    # the depth (point number along rgbatch's curve, from 1) at which its mean curve reaches the level
    assert table[0]["depth"] == pytest.approx(1 + (9 - 8) / (14 / 15))
    assert gap_by_quality.table(rows_of(curves), levels=[23.0])[0]["avif"] == (0, None)  # no image reaches it


def test_a_manifest_without_the_codec_is_refused():
    with pytest.raises(ValueError, match="no rgbatch-mixing2 rows"):
        gap_by_quality.table(rows_of({"avif": {"a": [(0.1, 0.9)] * 4}}))
