"""Odd option values through the command line (the long run is benchmarks/fuzz_options.py)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))

import fuzz_options  # noqa: E402


def test_odd_option_values_end_in_an_exit_code_never_an_escape(tiny_weights, tmp_path):
    """Every value-taking option of report, decode and encode (found by asking the CLI), each odd
    value of its type once, then 40 random pairs: exit 0, 1 or 2, no traceback, the archive as it
    was. Found so far (session 53): `decode --max-pixels 99999999999999999999` ended in an
    OverflowError traceback (a read allocated its limit first)."""
    scene = fuzz_options.Scene(tmp_path, str(tiny_weights))
    commands = ("report", "decode", "encode")
    counts, findings = fuzz_options.fuzz(scene, commands, pairs=40, seed=0, timeout=300, log=lambda _: None)
    assert findings == []
    for command in commands:  # each ran, refused and accepted values
        assert counts[command, 2] > 0 and counts[command, 0] > 0, counts
    assert {"--depth", "--max-pixels", "--out", "--weights"} <= {flag for flag, _ in fuzz_options.options("decode")}


def test_what_a_case_leaves_in_its_current_folder_is_a_finding_unless_a_value_names_it(tmp_path):
    """Each case runs in a fresh current folder (since session 55): `restore --out ""` wrote its
    PNGs there until session 54 unseen by this fuzzer; a relative value may write there."""
    for name in ("abc", "a.png", "é"):
        (tmp_path / name).mkdir()
    given = [("--out", "abc/x.png"), ("--html", "é/ü"), ("--sources", "/elsewhere/a.png"), ("--out", "")]
    assert fuzz_options.strays(tmp_path, given) == ["a.png"]
    assert fuzz_options.strays(tmp_path, [("--out", "a.png")] + given) == []
