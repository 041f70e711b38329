"""An archive's readings and the requests they make of its store (benchmarks/archive_requests.py)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))

import archive_requests  # noqa: E402

from rgbatch import manifest  # noqa: E402


def test_footers_read_at_listing_are_not_read_again_and_change_nothing_read(tmp_path, monkeypatch):
    archive_requests.build(tmp_path, parts=4, rows=8)
    cached = {name: archive_requests.counted(tmp_path, read) for name, read in archive_requests.READINGS.items()}
    monkeypatch.setattr(manifest, "FOOTER_CACHE_BYTES", 0)  # every footer read again by each reading
    uncached = {name: archive_requests.counted(tmp_path, read) for name, read in archive_requests.READINGS.items()}
    for name in archive_requests.READINGS:
        (got, counts), (expected, counts_without) = cached[name], uncached[name]
        assert got == expected
        assert counts["files opened"] == counts_without["files opened"]
        if name.startswith("listed"):
            assert counts == counts_without
        else:  # each reading reads every part's footer once less: `Archive.table` makes two readings
            assert counts_without["reads"] - counts["reads"] >= 4, name
