import dataclasses
import json

import pytest

from rgbatch import classical
from rgbatch.bench import measure
from rgbatch.classical_cache import ClassicalCache, image_digest

from conftest import DATA, smooth_image

RESULT = {"bytes": 1234, "msssim": 0.95, "psnr": 31.5, "encode_s": 0.01, "decode_s": 0.002}


def test_results_come_back_from_the_file(tmp_path, rng):
    path = tmp_path / "cache.jsonl"
    digest, jpeg = image_digest(smooth_image(rng, 24, 32)), classical.get_codec("jpeg420")
    cache = ClassicalCache(path)
    assert cache.get(digest, jpeg, 50) is None
    cache.put(digest, jpeg, 50, {**RESULT, "not kept": 1})
    again = ClassicalCache(path)
    assert again.get(digest, jpeg, 50) == RESULT
    assert (again.hits, again.misses) == (1, 0)


def test_the_key_is_the_content_the_setting_and_the_quality(tmp_path, rng):
    image = smooth_image(rng, 24, 32)
    jpeg = classical.get_codec("jpeg420")
    cache = ClassicalCache(tmp_path / "cache.jsonl")
    cache.put(image_digest(image), jpeg, 50, RESULT)
    assert cache.get(image_digest(image.copy()), jpeg, 50) == RESULT  # same pixels, another array
    changed = image.copy()
    changed[0, 0, 0] ^= 1
    assert cache.get(image_digest(changed), jpeg, 50) is None
    assert cache.get(image_digest(image.reshape(32, 24, 3)), jpeg, 50) is None  # same bytes, other shape
    assert cache.get(image_digest(image), jpeg, 60) is None
    assert cache.get(image_digest(image), classical.get_codec("jpeg444"), 50) is None
    assert cache.get(image_digest(image), dataclasses.replace(jpeg, options={"optimize": False}), 50) is None


def test_a_line_cut_short_is_skipped(tmp_path, rng):
    path = tmp_path / "cache.jsonl"
    digest, jpeg = image_digest(smooth_image(rng, 8, 8)), classical.get_codec("jpeg420")
    ClassicalCache(path).put(digest, jpeg, 10, RESULT)
    with open(path, "a") as f:
        f.write('{"key": "half a line')  # a run killed mid-write
    cache = ClassicalCache(path)
    assert cache.get(digest, jpeg, 10) == RESULT
    cache.put(digest, jpeg, 20, RESULT)  # on a line of its own: until session 60 joined to the broken one, lost
    assert ClassicalCache(path).get(digest, jpeg, 10) == ClassicalCache(path).get(digest, jpeg, 20) == RESULT


@pytest.mark.parametrize("name, data", [("bench.parquet", b"PAR1\x15\x04 not json"), ("x.png", b"\x89PNG\r\n"),
                                        ("c.jsonl.xz", b"plain text, not xz")])
def test_a_file_that_is_no_cache_is_refused_not_appended_to(tmp_path, name, data):
    """Lines were appended to whatever --classical-cache named: a Parquet manifest, a PNG (session 60)."""
    from rgbatch.options import OptionError

    (tmp_path / name).write_bytes(data)
    with pytest.raises(OptionError, match="is not a cache of classical results"):
        ClassicalCache(tmp_path / name)
    assert (tmp_path / name).read_bytes() == data


def test_an_xz_cache_is_written_a_stream_per_flush_and_read_past_a_stream_cut_short(tmp_path, rng):
    import lzma

    path = tmp_path / "cache.jsonl.xz"
    digest, jpeg = image_digest(smooth_image(rng, 8, 8)), classical.get_codec("jpeg420")
    cache = ClassicalCache(path)
    cache.put(digest, jpeg, 10, RESULT)
    assert not path.exists()  # until flushed
    cache.put(digest, jpeg, 20, RESULT)
    cache.flush()
    one = path.read_bytes()
    assert lzma.decompress(one).decode().count("\n") == 2
    with open(path, "ab") as f:
        f.write(lzma.compress(b'{"key": "a stream cut short by a crash", "bytes": 1}\n')[:-9])
    again = ClassicalCache(path)
    assert again.get(digest, jpeg, 10) == again.get(digest, jpeg, 20) == RESULT
    again.put(digest, jpeg, 30, RESULT)
    again.flush()  # appended after the cut stream: read, the cut one skipped
    third = ClassicalCache(path)
    assert len(third.entries) == 3 and third.get(digest, jpeg, 30) == RESULT
    with open(path, "r+b") as f:  # a damaged first stream: the later ones still read
        f.seek(len(one) // 2)
        f.write(b"\x00" * 8)
    assert set(ClassicalCache(path).entries) == {k for k in third.entries if '"quality": 30' in k}


def test_a_second_bench_encodes_only_rgbatch(tiny_weights, tmp_path, monkeypatch):
    options = dict(weights=tiny_weights, iterations=1, limit=1, coders=["raw"], speed_images=0,
                   classical_sweeps={"jpeg420": (10, 90), "jxl": (20,)}, classical_cache=tmp_path / "c.jsonl.xz",
                   log=lambda message: None)
    first = measure(DATA, **options)
    monkeypatch.setattr(classical, "run", lambda *a: pytest.fail("a classical codec ran again"))
    second = measure(DATA, **options)
    assert second.to_pylist() == first.to_pylist()
    run = json.loads(second.schema.metadata[b"rgbatch.bench"])
    assert run["classical_cache"]["hits"] == 3 and run["classical_cache"]["measured"] == 0


def test_a_cache_cut_short_in_its_first_bytes_is_still_taken_as_one(tmp_path):
    import lzma

    (tmp_path / "a.jsonl").write_bytes(b'{"ke')
    (tmp_path / "a.jsonl.xz").write_bytes(lzma.compress(b'{"key": 1}\n')[:4])
    for name in ("a.jsonl", "a.jsonl.xz"):
        assert ClassicalCache(tmp_path / name).entries == {}
