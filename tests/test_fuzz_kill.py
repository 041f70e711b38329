"""Interrupted writers, at random moments (the long run is benchmarks/fuzz_kill.py)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))

import fuzz_kill  # noqa: E402


@pytest.mark.slow
def test_compress_restore_and_compact_killed_at_random_moments_resume_to_the_same_archive(tmp_path):
    """One case of 4 images: compress, restore, compact and train (a tiny model) each sent SIGKILL,
    SIGTERM or SIGINT 1-3 times, then run to the end: every interrupted command ends as its signal
    says, the archive is whole and no temporary file is left after every kill, and the final
    archive, PNGs, compacted rows and trained model are an uninterrupted run's, no image encoded
    twice. Found so far: SIGTERM while the run's Ray started made compress exit 15, or 1 with a
    traceback, or die of SIGABRT (session 54); a Ctrl-C while compress imported Ray was swallowed
    there, the command going on (session 55)."""
    counts, findings = fuzz_kill.fuzz(cases=1, seed=4, images=4, tmp=tmp_path)
    assert findings == []
    assert counts["cases clean"] == 1 and counts["kills"] >= 3
