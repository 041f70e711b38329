"""Commands on a large archive, in small (benchmarks/large_archive.py)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))

import large_archive  # noqa: E402

from rgbatch.manifest import Archive  # noqa: E402


@pytest.mark.slow
def test_the_large_archive_benchmark_runs_every_command_and_its_rerun_encodes_only_the_new(tiny_weights, tmp_path):
    results = large_archive.run(tmp_path / "work", rows=150, seeds=3, weights=str(tiny_weights))
    assert {name: code for name, (_, _, code) in results.items()} == dict.fromkeys(results, 0)
    assert all(seconds > 0 and peak > 0 for seconds, peak, _ in results.values())
    archive = Archive(tmp_path / "work" / "archive")
    assert archive.total_rows() == 173  # 150 written, skipped by the rerun by size and time; 20 new, 3 copies
    rows = {row.path: row for row in archive.rows()}
    for i in range(3):  # each copy took the row of its seed's (img000000i.png's), not encoded
        copy, seeded = rows[f"copies/{i:03d}.png"], rows[f"d000/img{i:07d}.png"]
        assert copy.blob == seeded.blob and copy.encode_seconds == 0 and copy.options == seeded.options
    assert len(list((tmp_path / "work" / "restored").rglob("*.png"))) == 10
