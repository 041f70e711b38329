"""Damaged image files through the source reader (the long run is benchmarks/fuzz_images.py)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))

import fuzz_images  # noqa: E402


def test_damaged_image_files_are_read_or_refused_with_a_reason_never_a_crash_hang_or_bomb():
    counts, findings = fuzz_images.fuzz(120, 0, timeout=60)
    assert [finding[:4] for finding in findings] == []
    outcomes = {outcome for (_, _, outcome) in counts}
    assert outcomes == {"read", "refused"}  # damage both survived and refused
    assert {name for (name, _, _) in counts} == set(fuzz_images.seeds())  # every format mutated


def test_a_png_mutation_can_keep_its_chunks_valid():
    import zlib
    data = fuzz_images.seeds()["png-rgb"]
    broken = bytearray(data)
    broken[40] ^= 0xFF  # inside IHDR or IDAT: its CRC no longer matches
    fixed = fuzz_images.png_with_crcs(bytes(broken))
    length = int.from_bytes(fixed[8:12], "big")
    assert fixed[12 + length + 4:12 + length + 8] == zlib.crc32(fixed[12:12 + length + 4]).to_bytes(4, "big")
    assert fuzz_images.png_with_crcs(data) == data
