"""Damaged manifest parts through every archive command (the long run is benchmarks/fuzz_manifest.py)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))

import fuzz_manifest  # noqa: E402


def test_damaged_parts_give_failures_or_worded_refusals_never_a_wrong_image(tiny_weights, tmp_path):
    counts, escapes, refusals = fuzz_manifest.fuzz(12, 0, str(tiny_weights), tmp_path)
    assert escapes == []
    assert sum(n for (command, _), n in counts.items() if command == "restore") == 12
    assert counts["restore", "failures"] > 0  # the damage was seen, not only survived
