"""Single-file encode / decode: `rgbatch encode` and `rgbatch decode`."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from rgbatch import bitstream, storage
from rgbatch.cli import app
from rgbatch.codec import Codec
from rgbatch.files import decode_file, encode_file
from rgbatch.imageio import encode_png, read_image
from rgbatch.ratecontrol import Target

from conftest import smooth_image


@pytest.fixture(scope="module")
def codec(tiny_weights):
    return Codec.load(tiny_weights)


@pytest.fixture
def png(tmp_path, rng):
    path = tmp_path / "in.png"
    path.write_bytes(encode_png(smooth_image(rng, 70, 90)))
    return path


def test_a_stream_file_decodes_at_every_depth(codec, png, tmp_path):
    kept = encode_file(png, tmp_path / "a.rgb", iterations=3, codec=codec)
    blob = (tmp_path / "a.rgb").read_bytes()
    assert kept["iterations"] == 3 and kept["bytes"] == len(blob)
    assert bitstream.read_header(blob).model_id == codec.model_id
    for depth in (1, 3):
        result = decode_file(tmp_path / "a.rgb", tmp_path / f"d{depth}.png", iterations=depth, codec=codec)
        image, _ = read_image(tmp_path / f"d{depth}.png")
        assert np.array_equal(image, codec.decode(blob, depth)) and result["iterations"] == depth
    # deeper than stored: the stored depth, said in the result
    assert decode_file(tmp_path / "a.rgb", tmp_path / "d9.png", iterations=9, codec=codec)["iterations"] == 3


def test_an_output_file_already_there_is_replaced_only_with_overwrite(codec, png, tiny_weights, tmp_path):
    encode_file(png, tmp_path / "a.rgb", iterations=1, codec=codec)
    decode_file(tmp_path / "a.rgb", tmp_path / "a.png", codec=codec)
    before = (tmp_path / "a.rgb").read_bytes(), (tmp_path / "a.png").read_bytes()
    runner = CliRunner()
    for args, said in ((["encode", str(png), "--out", str(tmp_path / "a.rgb"), "--iterations", "2"],
                        "already there: not overwritten"),
                       (["decode", str(tmp_path / "a.rgb"), "--out", str(tmp_path / "a.png")],
                        "already there: not overwritten"),
                       (["decode", str(tmp_path / "a.rgb"), "--out", str(tmp_path)], "a folder is there"),  # never
                       (["decode", str(tmp_path / "a.rgb"), "--out", f"{tmp_path}/new/", "--overwrite"],  # one meant
                        "names a folder (it ends in '/')"),
                       (["encode", str(png), "--out", f"{tmp_path}/new/"], "names a folder (it ends in '/')")):
        done = runner.invoke(app, args + ["--weights", str(tiny_weights)])
        assert done.exit_code == 2 and said in " ".join(done.output.split()), (said, done.output)
    assert ((tmp_path / "a.rgb").read_bytes(), (tmp_path / "a.png").read_bytes()) == before
    assert not (tmp_path / "new").exists()  # until session 49 a file named "new"
    done = runner.invoke(app, ["encode", str(png), "--out", str(tmp_path / "a.rgb"), "--iterations", "2",
                               "--weights", str(tiny_weights), "--overwrite"])
    assert done.exit_code == 0 and bitstream.read_header((tmp_path / "a.rgb").read_bytes()).iterations == 2
    assert decode_file(tmp_path / "a.rgb", tmp_path / "a.png", codec=codec, overwrite=True)["iterations"] == 2
    # a file where a folder of the path should be: said so, with or without --overwrite (until session
    # 57 "a file is already there ... the overwrite option replaces it", and with it the system's "File exists")
    for args in (["decode", str(tmp_path / "a.rgb"), "--out", str(tmp_path / "a.png" / "x.png")],
                 ["decode", str(tmp_path / "a.rgb"), "--out", str(tmp_path / "a.png" / "x.png"), "--overwrite"],
                 ["encode", str(png), "--out", str(tmp_path / "a.png" / "deeper" / "b.rgb")]):
        done = runner.invoke(app, args + ["--weights", str(tiny_weights)])
        said = " ".join(done.output.split())
        assert done.exit_code == 2 and f"{tmp_path / 'a.png'} is a file, not a folder: not written" in said, said


def test_a_fifo_or_character_device_named_as_the_output_is_written_into_never_replaced(
        codec, png, tiny_weights, tmp_path):
    """`--out /dev/null` renamed its PNG onto the name: run as root, it replaced the system's
    /dev/null with a file (and `--out /dev/stdout` the link). Since session 53 a FIFO or a character
    device is written into, as a shell's redirection writes, and a command writing to its own
    stdout says its line on stderr; a socket is refused. The character device here is a null
    device of the test's own (mknod: root only, else skipped)."""
    import socket
    import stat
    import threading

    encode_file(png, tmp_path / "a.rgb", iterations=1, codec=codec)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    decode_file(tmp_path / "a.rgb", fifo, codec=codec)  # no --overwrite needed: nothing is replaced
    reader.join(60)
    assert stat.S_ISFIFO(fifo.lstat().st_mode) and got[0][:8] == b"\x89PNG\r\n\x1a\n"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(tmp_path / "socket"))
        with pytest.raises(storage.NotWritten, match="a socket is there: not written"):
            encode_file(png, tmp_path / "socket", iterations=1, codec=codec, overwrite=True)
    null = tmp_path / "null"
    try:
        os.mknod(null, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("making a character device needs root")
    runner = CliRunner()
    for args in (["decode", str(tmp_path / "a.rgb")], ["encode", str(png), "--iterations", "1"]):
        done = runner.invoke(app, args + ["--out", str(null), "--weights", str(tiny_weights)])
        assert done.exit_code == 0, done.output
        assert stat.S_ISCHR(null.lstat().st_mode) and null.stat().st_rdev == os.makedev(1, 3)
    with open(null, "rb") as f:
        assert f.read() == b""  # still a null device
    # a command writing its file to its own stdout says its line on stderr: stdout holds the file alone
    done = subprocess.run([sys.executable, "-m", "rgbatch.cli", "decode", str(tmp_path / "a.rgb"), "--out",
                           "/dev/stdout", "--weights", str(tiny_weights)], capture_output=True, cwd=tmp_path)
    assert done.returncode == 0 and done.stdout[:8] == b"\x89PNG\r\n\x1a\n" and b"at depth 1 of 1" in done.stderr
    decode_file(tmp_path / "a.rgb", tmp_path / "a.png", codec=codec)
    assert done.stdout == (tmp_path / "a.png").read_bytes()


def test_a_size_target_keeps_the_depths_that_fit(codec, png, tmp_path):
    full = encode_file(png, tmp_path / "full.rgb", iterations=4, codec=codec)
    kept = encode_file(png, tmp_path / "cut.rgb", iterations=4, target=Target(max_bytes=full["bytes"] - 1), codec=codec)
    assert kept["iterations"] < 4 and kept["bytes"] <= full["bytes"] - 1


def test_a_stream_file_keeps_the_colour_profile_and_exif_and_decode_writes_them_back(codec, tiny_weights, tmp_path, rng):
    import io

    from PIL import Image, ImageCms
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif[0x010F] = "a camera"  # Make
    source = tmp_path / "in.jpg"
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"/>'
    Image.fromarray(smooth_image(rng, 40, 56)).save(source, "JPEG", icc_profile=srgb, exif=exif.tobytes(), xmp=xmp)
    kept = encode_file(source, tmp_path / "a.rgb", iterations=2, codec=codec)
    stripped = encode_file(source, tmp_path / "b.rgb", iterations=2, codec=codec, metadata=False)
    blob, bare = (tmp_path / "a.rgb").read_bytes(), (tmp_path / "b.rgb").read_bytes()
    assert blob.startswith(bare) and kept["metadata_bytes"] == len(blob) - len(bare) > len(srgb)
    assert bitstream.read_metadata(blob).xmp == xmp and blob[len(bare):len(bare) + 4] == b"RGBX"
    assert stripped["metadata_bytes"] == 0 and bitstream.read_metadata(bare) == bitstream.Metadata()
    for stream, profile in (("a.rgb", srgb), ("b.rgb", None)):
        for depth in (1, 2):  # at any depth
            decode_file(tmp_path / stream, tmp_path / "out.png", iterations=depth, codec=codec, overwrite=True)
            png = Image.open(io.BytesIO((tmp_path / "out.png").read_bytes()))
            assert png.info.get("icc_profile") == profile
            assert dict(png.getexif()) == ({0x010F: "a camera"} if profile else {})
            assert png.info.get("xmp") == (xmp if profile else None)
            assert np.array_equal(np.asarray(png), codec.decode(bare, depth))  # the same pixels
    for flag, expected in (("--metadata", blob), ("--strip-metadata", bare)):  # the command's option
        done = CliRunner().invoke(app, ["encode", str(source), "--out", str(tmp_path / "c.rgb"), "--iterations", "2",
                                        "--weights", str(tiny_weights), flag, "--overwrite"])
        assert done.exit_code == 0 and (tmp_path / "c.rgb").read_bytes() == expected, done.output
        assert ("bytes of them the trailer" in " ".join(done.output.split())) == (flag == "--metadata")


def test_a_stream_file_keeps_the_alpha_channel_whatever_the_metadata_option(codec, tmp_path, rng):
    from PIL import Image
    alpha = rng.integers(0, 256, (40, 56), np.uint8)
    Image.fromarray(np.dstack([smooth_image(rng, 40, 56), alpha]), "RGBA").save(tmp_path / "logo.png")
    Image.fromarray(smooth_image(rng, 40, 56)).convert("RGBA").save(tmp_path / "opaque.png")
    for name, expected in (("logo", alpha), ("opaque", np.full((40, 56), 255, np.uint8))):
        for metadata in (True, False):
            result = encode_file(tmp_path / f"{name}.png", tmp_path / "x.rgb", iterations=2, codec=codec, metadata=metadata,
                                 overwrite=True)
            assert result["alpha_bytes"] == result["metadata_bytes"] - 20 and (result["alpha_bytes"] == 0) == (name == "opaque")
            blob = (tmp_path / "x.rgb").read_bytes()
            for depth in (1, 2):
                decode_file(tmp_path / "x.rgb", tmp_path / "x.png", iterations=depth, codec=codec, overwrite=True)
                png = Image.open(tmp_path / "x.png")
                assert png.mode == "RGBA" and np.array_equal(np.asarray(png)[..., 3], expected), (name, depth)
                assert np.array_equal(np.asarray(png)[..., :3], codec.decode(blob, depth))
    # the trailer's bytes intact (its checksum recomputed) but no grey PNG of the image's size: a bad stream
    meta, png_bytes = bitstream.read_trailer(blob)
    forged = bitstream.with_metadata(blob, meta, png_bytes[:-12] + b"\0" * 12 if png_bytes else b"not a png")
    (tmp_path / "forged.rgb").write_bytes(forged)
    with pytest.raises(bitstream.BitstreamError, match="invalid metadata trailer"):
        decode_file(tmp_path / "forged.rgb", tmp_path / "y.png", codec=codec)


def test_a_file_cut_short_decodes_at_the_depth_of_its_whole_iterations_when_allowed(codec, tiny_weights, tmp_path, rng):
    from rgbatch.bitstream import BitstreamError
    from rgbatch.imageio import encode_png as png_of

    source = tmp_path / "in.png"
    alpha = np.full((70, 90), 200, np.uint8)  # a trailer after the last chunk: lost when the file is cut
    source.write_bytes(png_of(smooth_image(rng, 70, 90), alpha=alpha))
    encode_file(source, tmp_path / "a.rgb", iterations=4, codec=codec)
    blob = (tmp_path / "a.rgb").read_bytes()
    header = bitstream.read_header(blob)
    ends = [header.size + sum(header.chunk_lengths[:t]) for t in range(1, 5)]
    assert header.whole_iterations(len(blob)) == 4 and header.whole_iterations(ends[2] - 1) == 2

    # (cut at the last chunk's end, only the trailer is missing: a whole stream without one, as the format allows)
    for length, whole in ((ends[1], 2), (ends[2] + 5, 3), (ends[3], 4)):
        (tmp_path / "cut.rgb").write_bytes(blob[:length])
        if whole < 4:
            with pytest.raises(BitstreamError, match="truncated"):  # refused by default
                decode_file(tmp_path / "cut.rgb", tmp_path / "no.png", codec=codec)
        result = decode_file(tmp_path / "cut.rgb", tmp_path / "cut.png", codec=codec, allow_truncated=True,
                             overwrite=True)
        assert (result["iterations"], result["whole_iterations"], result["stored_iterations"]) == (whole, whole, 4)
        image, mode = read_image(tmp_path / "cut.png")
        assert np.array_equal(image, codec.decode(blob, whole)) and mode == "RGB"  # the alpha was in the trailer
    assert not (tmp_path / "no.png").exists()
    # an asked depth under the whole ones is kept; nothing whole, or a header cut short: refused
    (tmp_path / "cut.rgb").write_bytes(blob[:ends[2]])
    one = decode_file(tmp_path / "cut.rgb", tmp_path / "one.png", 1, codec=codec, allow_truncated=True)
    assert one["iterations"] == 1
    for length in (ends[0] - 1, header.size - 1):
        (tmp_path / "cut.rgb").write_bytes(blob[:length])
        with pytest.raises(BitstreamError, match="truncated"):
            decode_file(tmp_path / "cut.rgb", tmp_path / "no.png", codec=codec, allow_truncated=True)
    # damage is not truncation: a flipped byte in a whole chunk is refused either way
    damaged = bytearray(blob[:ends[2]])
    damaged[ends[0] + 2] ^= 1
    (tmp_path / "cut.rgb").write_bytes(bytes(damaged))
    with pytest.raises(BitstreamError, match="checksum"):
        decode_file(tmp_path / "cut.rgb", tmp_path / "no.png", codec=codec, allow_truncated=True)

    runner = CliRunner()
    (tmp_path / "cut.rgb").write_bytes(blob[:ends[1] + 3])
    done = runner.invoke(app, ["decode", str(tmp_path / "cut.rgb"), "--out", str(tmp_path / "cli.png"),
                               "--allow-truncated", "--weights", str(tiny_weights)])
    assert done.exit_code == 0, done.output
    assert "depth 2 of 4; the file is cut short: its first 2 iterations are whole" in " ".join(done.output.split())


def test_cli_round_trip_and_worded_errors(tiny_weights, png, tmp_path):
    runner = CliRunner()
    stream, restored = tmp_path / "x.rgb", tmp_path / "x.png"
    done = runner.invoke(app, ["encode", str(png), "--out", str(stream), "--iterations", "2",
                               "--weights", str(tiny_weights), "--json"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.output)["iterations"] == 2
    done = runner.invoke(app, ["decode", str(stream), "--out", str(restored), "--weights", str(tiny_weights)])
    assert done.exit_code == 0 and restored.exists(), done.output

    (tmp_path / "bad.rgb").write_bytes(stream.read_bytes()[:-3])  # truncated
    (tmp_path / "text.png").write_text("not an image")
    # a bad stream or image: the image failed (1); a missing file: set-up (2)
    for code, args in ((1, ["decode", str(tmp_path / "bad.rgb"), "--out", str(tmp_path / "y.png")]),
                       (1, ["encode", str(tmp_path / "text.png"), "--out", str(tmp_path / "y.rgb")]),
                       (2, ["encode", str(tmp_path / "missing.png"), "--out", str(tmp_path / "y.rgb")])):
        failed = runner.invoke(app, args + ["--weights", str(tiny_weights)])
        assert failed.exit_code == code and "error:" in failed.output and "Traceback" not in failed.output, failed.output
    assert not (tmp_path / "y.png").exists() and not (tmp_path / "y.rgb").exists()  # nothing half-written
    # each error line names the file it is about
    for args, said in ((["decode", str(tmp_path / "missing.rgb"), "--out", str(tmp_path / "y.png")],
                        f"no such file: {tmp_path / 'missing.rgb'}"),
                       (["encode", str(tmp_path), "--out", str(tmp_path / "y.rgb")],
                        f"{tmp_path}: not a regular file (a folder)"),
                       (["decode", str(stream), "--out", str(restored)],
                        f"{restored}: a file is already there")):
        failed = runner.invoke(app, args + ["--weights", str(tiny_weights)])
        assert failed.exit_code == 2 and said in " ".join(failed.output.split()), failed.output
    for args, said in ((["decode", str(tmp_path / "bad.rgb"), "--out", str(tmp_path / "y.png")],
                        f"{tmp_path / 'bad.rgb'}: truncated"),
                       (["encode", str(tmp_path / "text.png"), "--out", str(tmp_path / "y.rgb")],
                        f"{tmp_path / 'text.png'}: not an image file")):
        failed = runner.invoke(app, args + ["--weights", str(tiny_weights)])
        assert failed.exit_code == 1 and said in " ".join(failed.output.split()), failed.output


def test_cli_encode_takes_compress_s_tile_size_coder_and_pixel_limit(tiny_weights, png, tmp_path):
    """`encode` had none of the three (until session 62): a stream could not be made as an archive's
    were, and the pixel limit's refusal named a --max-pixels that encode did not take."""
    from rgbatch.bitstream import read_header
    from rgbatch.entropy import CODERS

    runner = CliRunner()
    stream = tmp_path / "x.rgb"
    done = runner.invoke(app, ["encode", str(png), "--out", str(stream), "--depth", "2", "--tile-size", "32",
                               "--coder", "raw", "--max-pixels", "6300", "--weights", str(tiny_weights)])
    assert done.exit_code == 0, done.output
    header = read_header(stream.read_bytes())
    assert (header.tile_size, CODERS[header.coder_id].name) == (32, "raw")
    refused = runner.invoke(app, ["encode", str(png), "--out", str(tmp_path / "y.rgb"), "--max-pixels", "100",
                                  "--weights", str(tiny_weights)])
    assert refused.exit_code == 1 and "over the limit of 100 pixels" in refused.output, refused.output
    assert "--max-pixels" in refused.output and not (tmp_path / "y.rgb").exists()
    for option in (["--tile-size", "33"], ["--tile-size", "65536"], ["--coder", "bogus"], ["--max-pixels", "0"]):
        bad = runner.invoke(app, ["encode", str(png), "--out", str(tmp_path / "z.rgb"), *option,
                                  "--weights", str(tiny_weights)])
        assert bad.exit_code == 2 and f"error: {option[0]} " in bad.output, bad.output


def test_cli_encode_resample_writes_a_resampled_stream_that_decodes_at_full_size(tiny_weights, tmp_path, rng):
    from PIL import Image
    from rgbatch.bitstream import read_header
    png, stream, restored = tmp_path / "p.png", tmp_path / "p.rgb", tmp_path / "r.png"
    Image.fromarray(smooth_image(rng, 72, 96)).save(png)
    runner = CliRunner()
    done = runner.invoke(app, ["encode", str(png), "--out", str(stream), "--iterations", "2", "--resample", "0.75",
                               "--weights", str(tiny_weights), "--json"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.output)["scale"] == 0.75 and read_header(stream.read_bytes()).scale == 1
    done = runner.invoke(app, ["decode", str(stream), "--out", str(restored), "--weights", str(tiny_weights)])
    assert done.exit_code == 0, done.output
    assert Image.open(restored).size == (96, 72)
    done = runner.invoke(app, ["encode", str(png), "--out", str(stream), "--resample", "auto", "--target-bpp", "1",
                               "--weights", str(tiny_weights), "--overwrite"])
    assert done.exit_code == 0, done.output
    bad = runner.invoke(app, ["encode", str(png), "--out", str(stream), "--resample", "2x"])
    assert bad.exit_code == 2 and "--resample must be one of" in bad.output


def test_cli_encode_partial_writes_a_partial_last_chunk_that_decodes_as_measured(default_weights, tiny_weights,
                                                                                 tmp_path):
    from conftest import DATA
    from rgbatch.metrics import msssim_many
    runner = CliRunner()
    stream, restored = tmp_path / "p.rgb", tmp_path / "p.png"
    done = runner.invoke(app, ["encode", str(DATA / "kodim23_crop192.png"), "--out", str(stream),
                               "--target-msssim", "0.94", "--partial", "--decoding", "exact-loop", "--json"])
    assert done.exit_code == 0, done.output
    kept = json.loads(done.output)
    blob = stream.read_bytes()
    assert kept["last_steps"] == bitstream.read_header(blob).steps > 0 and kept["bytes"] == len(blob)
    decoded = runner.invoke(app, ["decode", str(stream), "--out", str(restored), "--json"])
    assert decoded.exit_code == 0 and json.loads(decoded.output)["last_steps"] == kept["last_steps"], decoded.output
    shallower = runner.invoke(app, ["decode", str(stream), "--out", str(tmp_path / "s.png"), "--iterations",
                                    str(kept["iterations"] - 1), "--json"])  # a cut below drops the partial chunk
    assert shallower.exit_code == 0 and json.loads(shallower.output)["last_steps"] == 0, shallower.output
    image = read_image(restored)[0]
    assert msssim_many(read_image(DATA / "kodim23_crop192.png")[0], [image])[0] == pytest.approx(kept["msssim"], abs=1e-6)
    # the tiny model's coder is raw (no context tables): whole iterations only, a usage error
    failed = runner.invoke(app, ["encode", str(DATA / "kodim23_crop192.png"), "--out", str(tmp_path / "q.rgb"),
                                 "--target-msssim", "0.9", "--partial", "--weights", str(tiny_weights)])
    assert failed.exit_code == 2 and "raw coder codes whole iterations" in failed.output, failed.output


def test_cli_encode_with_a_target_codes_a_partial_last_iteration_by_default(default_weights, tiny_weights, tmp_path):
    from conftest import DATA
    runner = CliRunner()
    streams = {}
    for how in ("--partial", None, "--whole-iterations"):
        out = tmp_path / f"{how}.rgb"
        done = runner.invoke(app, ["encode", str(DATA / "kodim23_crop192.png"), "--out", str(out),
                                   "--target-msssim", "0.94", "--json", *([how] if how else [])])
        assert done.exit_code == 0, done.output
        streams[how] = out.read_bytes()
    assert streams[None] == streams["--partial"] and bitstream.read_header(streams[None]).steps > 0
    assert bitstream.read_header(streams["--whole-iterations"]).steps == 0
    assert len(streams["--whole-iterations"]) > len(streams[None])
    # the default asks nothing of a coder that codes whole iterations only (the tiny model's raw coder)
    done = runner.invoke(app, ["encode", str(DATA / "kodim23_crop192.png"), "--out", str(tmp_path / "raw.rgb"),
                               "--target-msssim", "0.5", "--weights", str(tiny_weights), "--json"])
    assert done.exit_code == 0 and json.loads(done.output)["last_steps"] == 0, done.output


def test_a_multi_page_source_is_encoded_from_its_first_page_and_says_so(codec, tiny_weights, tmp_path, rng):
    from PIL import Image
    first = smooth_image(rng, 48, 64)
    Image.fromarray(first).save(tmp_path / "pages.tiff", save_all=True, append_images=[Image.new("RGB", (64, 48))] * 2)
    kept = encode_file(tmp_path / "pages.tiff", tmp_path / "p.rgb", iterations=2, codec=codec)
    assert kept["frames"] == 3
    stream, blob = codec.encode(first, 2).blob, (tmp_path / "p.rgb").read_bytes()
    assert blob.startswith(stream)  # the first page's stream, a trailer of the TIFF's resolution (Pillow writes 1 dpi)
    assert bitstream.read_metadata(blob) == bitstream.Metadata(notes=b'{"dpi":[1.0,1.0]}')
    said = CliRunner().invoke(app, ["encode", str(tmp_path / "pages.tiff"), "--out", str(tmp_path / "q.rgb"),
                                    "--iterations", "1", "--weights", str(tiny_weights)])
    assert said.exit_code == 0 and "only the first of its 3 frames or pages" in " ".join(said.output.split())


def test_cli_encode_says_what_reading_the_source_lost(tiny_weights, tmp_path, rng):
    """`encode` named dropped frames only; a CMYK or 16-bit source's conversion was unsaid (until
    session 62), as `report` counts it for an archive."""
    from PIL import Image

    Image.fromarray(smooth_image(rng, 40, 48)).convert("CMYK").save(tmp_path / "c.jpg")
    done = CliRunner().invoke(app, ["encode", str(tmp_path / "c.jpg"), "--out", str(tmp_path / "c.rgb"), "--depth", "1",
                                    "--weights", str(tiny_weights)])
    assert done.exit_code == 0 and "; the source (CMYK) converted to RGB from CMYK" in " ".join(done.output.split())


@pytest.mark.parametrize("signum, code", [("SIGTERM", 143), ("SIGHUP", 129)])
def test_sigterm_ends_encode_and_decode_with_a_word_and_143(tiny_weights, tmp_path, rng, monkeypatch, signum, code):
    """SIGTERM killed `encode` and `decode` without a word (exit -15), where Ctrl-C said
    "interrupted", 130, and SIGHUP (a terminal gone) every command (a helper's round, session 64):
    as the archive commands' SIGTERM, "terminated (SIGTERM)", 143, or (SIGHUP), 129, nothing written.
    An ignored SIGHUP (`nohup`) stays ignored."""
    import signal
    import time

    from PIL import Image

    from rgbatch import files

    Image.fromarray(smooth_image(rng, 32, 32)).save(tmp_path / "a.png")
    assert CliRunner().invoke(app, ["encode", str(tmp_path / "a.png"), "--out", str(tmp_path / "a.rgb"), "--depth",
                                    "1", "--weights", str(tiny_weights)]).exit_code == 0

    signum = getattr(signal, signum)

    def terminated(*args, **kwargs):
        os.kill(os.getpid(), signum)
        time.sleep(10)

    monkeypatch.setattr(files, "decode_image_and_metadata", terminated)
    monkeypatch.setattr(files, "read_header", terminated)
    def untaken(signum, frame):  # the command's handler is not there: fail, rather than end the test run
        raise RuntimeError("the signal not taken by the command")

    before = signal.signal(signum, untaken)
    try:
        for command in (["encode", str(tmp_path / "a.png"), "--out", str(tmp_path / "b.rgb")],
                        ["decode", str(tmp_path / "a.rgb"), "--out", str(tmp_path / "b.png")]):
            done = CliRunner().invoke(app, [*command, "--weights", str(tiny_weights)])
            said = f"terminated ({signal.Signals(signum).name})"
            assert done.exit_code == code and said in done.output, done.output
            assert signal.getsignal(signum) is untaken  # as it was before the command
        signal.signal(signum, signal.SIG_IGN)
        from rgbatch.cli import _terminable

        with _terminable():  # nohup's: left ignored (SIGTERM is taken whatever)
            assert (signal.getsignal(signum) == signal.SIG_IGN) == (signum == signal.SIGHUP)
    finally:
        signal.signal(signum, before)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "a.rgb"]
