import io
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rgbatch import imageio
from rgbatch.imageio import ImageError, decode_image

DATA = Path(__file__).parent / "fixtures"  # jxl/, avif/: files Pillow cannot write (tests/fixtures/README.md)


def save(image, fmt="PNG", **kw):
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kw)
    return buffer.getvalue()


@pytest.mark.parametrize("mode", ["RGB", "L", "1", "P", "RGBA", "LA", "CMYK", "I;16", "I", "F"])
def test_every_mode_becomes_8_bit_rgb(mode):
    fmt = "JPEG" if mode == "CMYK" else ("TIFF" if mode in ("I", "F", "CMYK") else "PNG")
    image = Image.new(mode, (5, 3))
    rgb, source_mode = decode_image(save(image, fmt))
    assert rgb.shape == (3, 5, 3) and rgb.dtype == np.uint8
    assert source_mode == mode


@pytest.mark.parametrize("mode, fmt, recorded", [("P", "PNG", "PA"), ("L", "PNG", "LA"), ("RGB", "PNG", "RGBA"),
                                                 ("P", "GIF", "PA")])
def test_a_transparency_key_is_kept_as_an_alpha_channel(mode, fmt, recorded):
    # a palette or grey PNG with a tRNS chunk, a GIF's transparent index: the pixels are the
    # colours as stored, the mode says that transparency was there, and the key is the alpha
    image = Image.new(mode, (4, 2), 3 if mode != "RGB" else (3, 4, 5))
    image.paste(5 if mode != "RGB" else (5, 4, 3), (0, 0, 2, 1))
    if mode == "P":
        image.putpalette([10 * i % 256 for i in range(768)])
    transparency = 3 if mode != "RGB" else (3, 4, 5)
    decoded = imageio.decode_image_and_metadata(save(image, fmt, transparency=transparency))
    assert decoded.mode == recorded and recorded in imageio.ALPHA_MODES
    assert np.array_equal(decoded.pixels, np.asarray(image.convert("RGB")))
    assert np.array_equal(decoded.alpha, [[255, 255, 0, 0], [0, 0, 0, 0]])
    plain = imageio.decode_image_and_metadata(save(image, fmt))
    assert plain.mode == mode and plain.alpha is None  # without the key: the mode as it is, no alpha


@pytest.mark.parametrize("mode", ["RGB", "L", "1", "P", "RGBA", "LA", "PA", "La", "CMYK", "YCbCr", "I;16", "I", "F"])
def test_conversion_band_by_band_is_the_whole_image_conversion(monkeypatch, mode):
    rng = np.random.default_rng(1)
    image = Image.fromarray(rng.integers(0, 256, (37, 23, 3), np.uint8), "RGB")
    image = image.convert(mode) if mode not in ("I;16", "I", "F", "PA", "La") else (
        image.convert("P").convert("PA") if mode == "PA" else image.convert("LA").convert("La") if mode == "La" else
        Image.fromarray(rng.integers(0, 4000, (37, 23)).astype({"I;16": np.uint16, "I": np.int32, "F": np.float32}[mode])))
    whole = imageio.to_rgb(image.copy())
    monkeypatch.setattr(imageio, "BAND_PIXELS", 23 * 5)  # bands of 5 rows, the last one of 2
    assert np.array_equal(imageio.to_rgb(image), whole)


def test_decoding_holds_one_copy_of_the_pixels(monkeypatch):
    # the result and one band: no bytes copy of the whole image, no second array (Pillow's own
    # memory is not traced: it is the decoded image, freed when decode_image returns)
    import tracemalloc

    monkeypatch.setattr(imageio, "BAND_PIXELS", 2000 * 100)  # 15 bands, as a 100 MP image has 100

    rng = np.random.default_rng(2)
    array = np.repeat(rng.integers(0, 256, (1500, 1, 3), np.uint8), 2000, axis=1)
    data = save(Image.fromarray(array))
    tracemalloc.start()
    try:
        rgb, _ = decode_image(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert np.array_equal(rgb, array)
    assert peak < 1.2 * array.nbytes


def test_16_bit_is_scaled_not_clipped():
    array = np.full((2, 2), 65535, np.uint16)
    rgb, _ = decode_image(save(Image.fromarray(array)))
    assert (rgb == 255).all()
    half = np.full((2, 2), 32896, np.uint16)
    assert (decode_image(save(Image.fromarray(half)))[0] == 128).all()


def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_16(samples: np.ndarray, colour_type: int) -> bytes:
    """A 16-bit PNG of HxWxC uint16 samples (colour type 2: RGB, 4: grey and alpha, 6: RGBA)."""
    height, width = samples.shape[:2]
    rows = b"".join(b"\0" + row.astype(">u2").tobytes() for row in samples)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def tiff_16(samples: np.ndarray) -> bytes:
    """An uncompressed little-endian TIFF of HxWx3 uint16 RGB samples (Pillow writes none)."""
    height, width = samples.shape[:2]
    data = samples.astype("<u2").tobytes()
    tags = [(256, 3, 1, width), (257, 3, 1, height), (258, 3, 3, 8 + 2 + 9 * 12 + 4), (259, 3, 1, 1), (262, 3, 1, 2),
            (273, 4, 1, 8 + 2 + 9 * 12 + 4 + 6), (277, 3, 1, 3), (278, 3, 1, height), (279, 4, 1, len(data))]
    ifd = b"".join(struct.pack("<HHIHH" if kind == 3 and count == 1 else "<HHII", tag, kind, count, value,
                               *((0,) if kind == 3 and count == 1 else ())) for tag, kind, count, value in tags)
    return b"II*\0" + struct.pack("<IH", 8, len(tags)) + ifd + struct.pack("<I3H", 0, 16, 16, 16) + data


def png_grey(samples: np.ndarray, bits: int, key: int | None = None) -> bytes:
    """A grey PNG of HxW samples of `bits` bits (1, 2, 4, 8 or 16), with a transparency key."""
    height, width = samples.shape
    if bits == 16:
        rows = [row.astype(">u2").tobytes() for row in samples]
    else:
        rows = [np.packbits(np.unpackbits(row.astype(np.uint8)[:, None], axis=1)[:, 8 - bits:]).tobytes()
                for row in samples]
    trns = chunk(b"tRNS", struct.pack(">H", key)) if key is not None else b""
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bits, 0, 0, 0, 0)) + trns
            + chunk(b"IDAT", zlib.compress(b"".join(b"\0" + row for row in rows))) + chunk(b"IEND", b""))


@pytest.mark.parametrize("bits, recorded", [(1, "LA"), (2, "LA"), (4, "LA"), (8, "LA"), (16, "LA;16")])
def test_a_grey_pngs_transparency_key_is_its_alpha_at_every_depth(bits, recorded):
    """Pillow ignored the key of a 1-bit and a 16-bit grey PNG (the alpha dropped, unsaid) and
    compared a 2- or 4-bit one with its samples already scaled to 8 bits (no pixel transparent):
    until session 60."""
    top = (1 << bits) - 1
    samples = np.arange(6 * 8).reshape(6, 8) % (top + 1)
    key = top if bits < 8 else 40  # 8 bits: 40, among the samples (0..47)
    decoded = imageio.decode_image_and_metadata(png_grey(samples, bits, key))
    assert decoded.mode == recorded and recorded in imageio.ALPHA_MODES and recorded in imageio.GREY_MODES
    assert np.array_equal(decoded.alpha, np.where(samples == key, 0, 255))
    assert np.array_equal(decoded.pixels[..., 0], np.round(samples / top * 255))
    plain = imageio.decode_image_and_metadata(png_grey(samples, bits))
    assert plain.alpha is None and np.array_equal(plain.pixels, decoded.pixels)


def test_a_dark_16_bit_grey_image_is_read_by_its_files_range_whatever_its_values():
    """A PGM of more than 8 bits is mode I to Pillow, as a 32-bit TIFF is: white was chosen from the
    values, so a dark 16-bit PGM (all under 256 of 65535) was read as 8-bit, bright (session 60)."""
    samples = np.arange(93, 93 + 12 * 8).reshape(12, 8).astype(np.uint16)  # near black in 16 bits
    black = np.round(samples / 65535 * 255)
    for data in (b"P5 8 12 65535\n" + samples.astype(">u2").tobytes(), png_grey(samples, 16),
                 save(Image.fromarray(samples), "TIFF")):
        decoded = imageio.decode_image_and_metadata(data)
        assert np.array_equal(decoded.pixels[..., 0], black), decoded.mode
        assert decoded.mode in imageio.LOSSY_MODES["reduced_to_8_bits"][0]
    ten_bit = b"P5 8 12 1023\n" + (samples // 64).astype(">u2").tobytes()  # maxval 1023: Pillow scales it to 65535
    assert imageio.decode_image_and_metadata(ten_bit).pixels.max() <= 1


@pytest.mark.parametrize("kind", ["PNG RGB", "PNG RGBA", "PNG LA", "TIFF RGB", "PPM RGB"])
def test_16_bit_colour_is_read_as_its_high_bytes_and_recorded_as_reduced(kind):
    """Pillow reads 16-bit RGB, RGBA and LA PNGs, 16-bit RGB TIFFs and PPMs as 8-bit RGB or RGBA
    (each sample's high byte; a PPM's scaled): the mode recorded says so (`RGB;16`, `RGBA;16`), so that `report`
    counts it among the images reduced to 8 bits; an alpha channel is kept."""
    samples = np.random.default_rng(0).integers(0, 65536, (3, 5, 4), dtype=np.uint16)
    channels = {"RGB": 3, "RGBA": 4, "LA": 2}[kind.split()[1]]
    data = {"PNG": lambda: png_16(samples[..., :channels], {3: 2, 4: 6, 2: 4}[channels]),
            "TIFF": lambda: tiff_16(samples[..., :3]),
            "PPM": lambda: b"P6 5 3 65535\n" + samples[..., :3].astype(">u2").tobytes()}[kind.split()[0]]()
    decoded = imageio.decode_image_and_metadata(data)
    high = (samples >> 8).astype(np.uint8)
    colours = np.repeat(high[..., :1], 3, axis=2) if channels == 2 else high[..., :3]
    if kind.startswith("PPM"):  # Pillow scales a PPM's samples by its maximum value: within one of the high byte
        assert np.abs(decoded.pixels.astype(int) - colours).max() <= 1
    else:
        assert np.array_equal(decoded.pixels, colours)
    assert decoded.mode == {3: "RGB;16", 4: "RGBA;16", 2: "LA;16"}[channels]  # LA: Pillow's RGBA (session 60)
    assert decoded.mode in imageio.LOSSY_MODES["reduced_to_8_bits"][0]
    if channels == 3:
        assert decoded.alpha is None
    else:
        assert np.array_equal(decoded.alpha, high[..., channels - 1])
    eight = (samples >> 8).astype(np.uint8)[..., :3]  # the same picture in 8 bits: nothing reduced
    for fmt in ("PNG", "TIFF", "PPM"):
        assert decode_image(save(Image.fromarray(eight), fmt))[1] == "RGB"


def test_10_bit_heif_is_recorded_as_reduced():
    """pillow-heif reads a 10-bit HEIF as 8-bit RGB: the mode recorded says its bits."""
    import pillow_heif

    samples = np.random.default_rng(0).integers(0, 65536, (16, 16, 3), dtype=np.uint16)
    buffer = io.BytesIO()
    pillow_heif.from_bytes(mode="RGB;16", size=(16, 16), data=samples.tobytes()).save(buffer, quality=-1)
    decoded = imageio.decode_image_and_metadata(buffer.getvalue())
    assert decoded.mode == "RGB;10" and decoded.mode in imageio.LOSSY_MODES["reduced_to_8_bits"][0]
    assert decoded.pixels.shape == (16, 16, 3) and decoded.alpha is None
    eight = io.BytesIO()
    pillow_heif.from_bytes(mode="RGB", size=(16, 16), data=(samples >> 8).astype(np.uint8).tobytes()).save(eight)
    assert imageio.decode_image_and_metadata(eight.getvalue()).mode == "RGB"


@pytest.mark.parametrize("mode", ["RGBA", "LA", "PA", "RGBa", "La"])
def test_alpha_is_kept_beside_the_colours_band_by_band(monkeypatch, mode):
    rng = np.random.default_rng(3)
    rgba = Image.fromarray(rng.integers(0, 256, (37, 23, 4), np.uint8), "RGBA")
    image = {"PA": lambda: rgba.convert("P").convert("PA"), "La": lambda: rgba.convert("LA").convert("La")}.get(
        mode, lambda: rgba.convert(mode))()
    whole = np.asarray((image.convert("LA") if mode == "La" else image).convert("RGBA"))[..., 3]
    monkeypatch.setattr(imageio, "BAND_PIXELS", 23 * 5)  # bands of 5 rows, the last one of 2
    assert np.array_equal(imageio.to_alpha(image), whole)
    if mode in ("RGBA", "LA"):  # what a PNG holds: colours as they are, the alpha beside them
        decoded = imageio.decode_image_and_metadata(save(image))
        assert np.array_equal(decoded.pixels, np.asarray(image.convert("RGB")))
        assert np.array_equal(decoded.alpha, whole)


def test_alpha_follows_the_exif_orientation():
    image = Image.new("RGBA", (4, 2), (9, 9, 9, 255))
    image.putpixel((0, 0), (9, 9, 9, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise: the top-left pixel goes to the top right
    decoded = imageio.decode_image_and_metadata(save(image, "PNG", exif=exif))
    assert decoded.pixels.shape[:2] == decoded.alpha.shape == (4, 2)
    assert decoded.alpha[0, 1] == 0 and decoded.alpha.sum() == 255 * 7


def test_an_alpha_channel_is_stored_as_a_grey_png_and_checked_when_read():
    alpha = np.random.default_rng(4).integers(0, 256, (7, 5), np.uint8)
    data = imageio.encode_alpha(alpha)
    assert np.array_equal(imageio.decode_alpha(data, 5, 7), alpha)
    assert imageio.encode_alpha(None) is None and imageio.encode_alpha(np.full((7, 5), 255, np.uint8)) == b""
    assert (imageio.decode_alpha(b"", 5, 7) == 255).all() and imageio.decode_alpha(b"", 5, 7).shape == (7, 5)
    for bad, why in ((data, "of 5x7"), (data[:-30], "damaged alpha channel"), (b"junk", "damaged alpha channel"),
                     (save(Image.new("RGB", (5, 7))), "RGB image")):
        with pytest.raises(ImageError, match=why):
            imageio.decode_alpha(bad, 7, 5) if why == "of 5x7" else imageio.decode_alpha(bad, 5, 7)
    rgba = Image.open(io.BytesIO(imageio.encode_png(np.zeros((7, 5, 3), np.uint8), alpha=alpha)))
    assert rgba.mode == "RGBA" and np.array_equal(np.asarray(rgba)[..., 3], alpha)


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (4, 2), (0, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees
    rgb, _ = decode_image(save(image, "JPEG", exif=exif))
    assert rgb.shape[:2] == (4, 2)


def test_bad_files_are_refused_with_reasons():
    good = save(Image.new("RGB", (64, 64), (1, 2, 3)))
    with pytest.raises(ImageError, match="empty"):
        decode_image(b"")
    with pytest.raises(ImageError, match="not an image"):
        decode_image(b"hello, I am text")
    with pytest.raises(ImageError, match="truncated|corrupt"):
        decode_image(good[: len(good) // 2])


def png_header_only(width, height):
    """A PNG that claims width x height pixels and holds none: costs nothing to make."""
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + chunk(b"IEND", b"")


def test_decompression_bombs_are_refused_unread(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", imageio.MAX_PIXELS)  # as Pillow's own (a test before raised it)
    with pytest.raises(ImageError, match="bomb"):  # Pillow's own error size
        decode_image(png_header_only(100000, 100000))
    # over our limit, under Pillow's error size: Pillow's warning is the caller's to filter (the library
    # swapped the process's filters to hide it until session 63; the command hides Pillow's warnings)
    with pytest.raises(ImageError, match="limit"), pytest.warns(Image.DecompressionBombWarning):
        decode_image(png_header_only(10000, 10000))
    with pytest.raises(ImageError, match="limit"):
        decode_image(save(Image.new("RGB", (100, 100))), max_pixels=5000)


def jxl_container(codestream: bytes, split: int | None = None) -> bytes:
    """A JPEG XL container (signature, ftyp, then the codestream in one `jxlc` box, or in two
    `jxlp` boxes cut at byte `split`)."""
    def box(kind, payload):
        return struct.pack(">I", 8 + len(payload)) + kind + payload
    head = imageio.JXL_CONTAINER + box(b"ftyp", b"jxl \0\0\0\0jxl ")
    if split is None:
        return head + box(b"jxlc", codestream)
    return head + box(b"jxlp", struct.pack(">I", 0) + codestream[:split]) + \
        box(b"jxlp", struct.pack(">I", 1 | 1 << 31) + codestream[split:])


@pytest.mark.parametrize("size", [(64, 48), (200, 100), (8, 8), (16, 9), (120, 100), (513, 1), (7, 1200), (331, 257)])
def test_a_jpeg_xls_size_is_read_from_its_header(size):
    buffer = io.BytesIO()
    Image.new("RGB", size, (10, 20, 30)).save(buffer, "JXL", quality=80)
    codestream = buffer.getvalue()
    assert codestream.startswith(imageio.JXL_CODESTREAM) and imageio.jxl_header(codestream)[:2] == size
    for split in (None, 3, 5):  # the header whole in `jxlc`, or cut across two `jxlp` boxes
        container = jxl_container(codestream, split)
        assert imageio.jxl_header(container)[:2] == size
        assert decode_image(container)[0].shape == (size[1], size[0], 3)  # the reader agrees on the boxes
    for data in (codestream[:3], jxl_container(codestream)[:42], b"\xff\xd8\xff", save(Image.new("RGB", (9, 9)))):
        assert imageio.jxl_header(data) is None  # cut short, not a JPEG XL file


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "AVIF", "JXL", "HEIF", "TIFF", "GIF", "BMP", "TGA", "PCX", "PPM"])
def test_every_format_over_the_pixel_limit_is_refused_before_it_is_decoded(fmt, monkeypatch):
    buffer = io.BytesIO()
    Image.new("RGB", (1200, 900), (80, 120, 200)).save(buffer, fmt)  # 1.08 MP of one colour
    opened = Image.open

    def open_without_decoding(*args, **kwargs):
        image = opened(*args, **kwargs)  # pillow-jxl-plugin would decode here: never called for a JPEG XL
        assert fmt != "JXL"
        image.load = lambda: pytest.fail(f"a {fmt} over the limit was decoded")
        return image

    monkeypatch.setattr(Image, "open", open_without_decoding)
    with pytest.raises(ImageError, match="1200x900 pixels is over the limit of 1000000"):
        decode_image(buffer.getvalue(), max_pixels=1_000_000)
    monkeypatch.undo()
    assert decode_image(buffer.getvalue(), max_pixels=1_080_000)[0].shape == (900, 1200, 3)  # at the limit: read


def jxl_bits(*fields: tuple[int, int]) -> bytes:
    """A codestream's signature and its header's (value, bits) fields, packed from the lowest bit up."""
    value, at = 0, 0
    for field, count in fields:
        value, at = value | field << at, at + count
    return imageio.JXL_CODESTREAM + value.to_bytes((at + 7) // 8, "little")


def test_a_jpeg_xls_bits_extra_channels_and_animation_are_read_past_its_preview():
    large = lambda n: ((3, 2), (n - 1, 30))  # noqa: E731  (a dimension of the last kind: 1 + 30 bits)
    size = [(0, 1), *large(300), (0, 3), *large(500)]  # 500 x 300
    extra = [(0, 1), (1, 1), (5, 3), (1, 1), (0, 1), *large(30), (2, 3)]  # orientation, an intrinsic 36 x 30
    preview = [(1, 1), (0, 1), (3, 2), (7, 12), (0, 3), (2, 2), (10, 10)]  # a preview of 331 x 1352
    animation = [(1, 1), (2, 2), (23, 10), (1, 2), (1, 2), (5, 3), (1, 1)]  # 24 / 1001 ticks, 5 loops, timecodes
    channels = {0: [(0, 2)], 1: [(1, 2)], 5: [(2, 2), (3, 4)], 4096: [(3, 2), (4095, 12)]}  # extra channels
    for depth, fields in ((10, [(0, 1), (1, 2)]), (12, [(0, 1), (2, 2)]), (16, [(0, 1), (3, 2), (15, 6)]),
                          (32, [(1, 1), (0, 2), (7, 4)])):
        for count, counted in channels.items():
            for animated in (False, True):
                header = jxl_bits(*size, *extra, *preview, *(animation if animated else [(0, 1)]), *fields, (1, 1),
                                  *counted)
                assert imageio.jxl_header(header) == (500, 300, depth, count, animated)
                assert imageio.jxl_header(header[:-1]) is None  # its last field cut short
    assert imageio.jxl_header(jxl_bits(*size, (1, 1))) == (500, 300, 8, 0, False)  # all_default


def test_a_jpeg_xl_of_more_than_8_bits_is_recorded_as_reduced():
    buffer = io.BytesIO()
    Image.fromarray(np.full((40, 48), 40000, np.uint16)).save(buffer, "JXL", lossless=True)
    assert imageio.jxl_header(buffer.getvalue()) == (48, 40, 16, 0, False)  # the file's own header
    assert imageio.decode_image_and_metadata(buffer.getvalue()).mode == "I;16"
    # colour: pillow-jxl-plugin gives 8 bits a sample whatever the file holds (tests/fixtures/README.md)
    for bits in (16, 12):
        decoded = imageio.decode_image_and_metadata((DATA / "jxl" / f"rgb-{bits}-bit.jxl").read_bytes())
        assert decoded.mode == f"RGB;{bits}" and decoded.pixels.shape == (40, 48, 3)
        # the sample of 16 bits (x * 1300, y * 1500, (x + y) * 700) at x = y = 5 read as 8 bits
        assert decoded.pixels[5, 5].tolist() == [round(v / 65535 * 255) for v in (6500, 7500, 7000)]


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_an_avif_of_more_than_8_bits_is_recorded_as_reduced(mode):
    buffer = io.BytesIO()
    Image.new(mode, (48, 40), (9, 99, 199, 120)[:len(mode)]).save(buffer, "AVIF", quality=90)
    data = bytearray(buffer.getvalue())
    assert imageio.avif_bits(bytes(data)) == 8 and imageio.avif_bits(save(Image.new("RGB", (8, 8)))) is None
    flags = data.index(b"av1C") + 6  # its third byte: tier, high_bitdepth, twelve_bit, ...
    for flag, bits in ((0x40, 10), (0x60, 12), (0x20, 8)):  # twelve_bit alone means nothing
        forged = bytearray(data)
        forged[flags] |= flag
        assert imageio.avif_bits(bytes(forged)) == bits
    # files of 10 and 12 bits (tests/fixtures/README.md: Pillow writes 8, and libavif refuses a file edited
    # to claim more): Pillow reads them as 8 bits a sample, and their headers say how many they held
    for bits in (10, 12) if mode == "RGB" else (10,):
        decoded = imageio.decode_image_and_metadata((DATA / "avif" / f"{mode.lower()}-{bits}-bit.avif").read_bytes())
        assert decoded.mode == f"{mode};{bits}" and decoded.pixels.shape == (40, 48, 3)
        expected = [v / ((1 << bits) - 1) * 255 for v in (400, 450, 400)]  # the samples at x = y = 5, lossy
        assert np.abs(decoded.pixels[5, 5] - np.array(expected)).max() <= 4
        assert decoded.alpha is None if mode == "RGB" else (np.abs(decoded.alpha - 700 / 1023 * 255) <= 1).all()


def test_a_jpeg_xl_bomb_is_refused_before_its_reader_decodes_it(monkeypatch):
    # pillow-jxl-plugin decodes the whole picture when Pillow opens the file: the size is asked first
    buffer = io.BytesIO()
    Image.new("RGB", (1200, 900), (80, 120, 200)).save(buffer, "JXL", lossless=True)
    data = buffer.getvalue()
    assert len(data) < 2000  # one colour: a bomb's proportions
    monkeypatch.setattr(Image, "open", lambda *a, **k: pytest.fail("opened"))
    for image in (data, jxl_container(data, 4)):
        with pytest.raises(ImageError, match="1200x900 pixels is over the limit of 1000000"):
            decode_image(image, max_pixels=1_000_000)


def test_an_animated_jpeg_xl_is_refused_not_read_as_its_last_frame(monkeypatch):
    data = (DATA / "jxl" / "animated-3-frames.jxl").read_bytes()  # red, green, then blue
    assert imageio.jxl_header(data) == (48, 40, 8, 0, True)
    assert Image.open(io.BytesIO(data)).getpixel((0, 0)) == (0, 0, 200)  # the plugin's: every frame, then the last
    monkeypatch.setattr(Image, "open", lambda *a, **k: pytest.fail("opened"))  # nor decoded to be refused
    for image in (data, jxl_container(data, 7)):
        with pytest.raises(ImageError, match="an animated JPEG XL: its reader decodes every frame and gives the last"):
            decode_image(image)


def test_a_jpeg_xls_extra_channels_count_against_the_pixel_limit(monkeypatch):
    data = (DATA / "jxl" / "grey-19-extra-channels.jxl").read_bytes()  # 48 x 40: 1,920 pixels, 22 planes decoded
    assert imageio.jxl_header(data) == (48, 40, 8, 19, False)
    pixels, mode = decode_image(data, max_pixels=48 * 40 * 22 // 4)  # as many samples as RGBA at the limit
    assert mode == "L+extra" and (pixels == 100).all()  # the extra channels dropped, and said so
    buffer = io.BytesIO()
    Image.new("RGBA", (48, 40), (1, 2, 3, 4)).save(buffer, "JXL", lossless=True)
    assert imageio.jxl_header(buffer.getvalue()) == (48, 40, 8, 1, False)  # alpha: one extra channel
    assert decode_image(buffer.getvalue(), max_pixels=48 * 40)[1] == "RGBA"  # RGBA at the limit: read
    monkeypatch.setattr(Image, "open", lambda *a, **k: pytest.fail("opened"))
    with pytest.raises(ImageError, match="48x40 pixels with 19 extra channels .* holds more samples than 10000 "
                                         "pixels of RGBA"):
        decode_image(data, max_pixels=10_000)  # more than the image's 1,920, less than its 22 planes' 10,560 / 4


def test_a_damaged_later_page_leaves_the_first_as_read():
    # counting a TIFF's pages seeks to each; one whose header does not parse (here: no strip offsets)
    # left Pillow's image on it, 48x5000, which was then read past the pixel limit (found by
    # benchmarks/fuzz_images.py): the pages are counted once the first is read
    pages = [Image.new("RGB", (48, 40), (200, 30, 90)), Image.new("RGB", (48, 5000), (10, 20, 30))]
    buffer = io.BytesIO()
    pages[0].save(buffer, "TIFF", save_all=True, append_images=pages[1:])
    data = bytearray(buffer.getvalue())
    struct.pack_into("<H", data, tiff_entry(data, 1, 273), 65000)  # the second page's StripOffsets: an unknown tag
    decoded = imageio.decode_image_and_metadata(bytes(data), max_pixels=48 * 40 * 2)
    assert decoded.pixels.shape == (40, 48, 3) and (decoded.pixels == (200, 30, 90)).all() and decoded.frames == 1


def tiff_entry(data: bytes, page: int, tag: int) -> int:
    """Where a little-endian TIFF's IFD entry for `tag` on `page` starts (tag, type, count, value)."""
    assert data[:4] == b"II*\0"
    ifd = struct.unpack_from("<I", data, 4)[0]
    for _ in range(page):
        ifd = struct.unpack_from("<I", data, ifd + 2 + 12 * struct.unpack_from("<H", data, ifd)[0])[0]
    entries = [ifd + 2 + 12 * i for i in range(struct.unpack_from("<H", data, ifd)[0])]
    return next(at for at in entries if struct.unpack_from("<H", data, at)[0] == tag)


@pytest.mark.parametrize("kind", [5, 11])  # RATIONAL, FLOAT
def test_a_field_of_an_unexpected_type_is_a_worded_error(kind):
    # Pillow's TIFF reader raised TypeError for strip offsets that are fractions (found by
    # benchmarks/fuzz_images.py): `rgbatch encode` ended in a traceback
    buffer = io.BytesIO()
    Image.new("RGB", (48, 40), (200, 30, 90)).save(buffer, "TIFF")
    data = bytearray(buffer.getvalue())
    struct.pack_into("<H", data, tiff_entry(data, 0, 273) + 2, kind)
    with pytest.raises(ImageError, match="corrupt image: TypeError"):
        decode_image(bytes(data))


def test_a_larger_pixel_limit_than_pillows_is_honoured(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # put back after the test
    claim = png_header_only(20000, 10000)  # 200 MP: past twice Pillow's limit, which refuses it on opening
    with pytest.raises(ImageError, match="bomb"):
        decode_image(claim)
    # asked for 400 MP, the image is read (and found to hold no pixels), not refused as a bomb
    with pytest.raises(ImageError, match="truncated|corrupt"):
        decode_image(claim, max_pixels=400_000_000)
    # a smaller limit asked afterwards is still this call's own
    with pytest.raises(ImageError, match="over the limit of 100000000"):
        decode_image(claim, max_pixels=100_000_000)


def test_metadata_keeps_an_rgb_profile_and_the_exif_without_its_orientation():
    from PIL import ImageCms

    from rgbatch.imageio import MAX_METADATA_BYTES, Metadata, decode_image_and_metadata, encode_png
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif[0x0112], exif[0x010F] = 8, "a camera"  # Orientation, Make
    buffer = io.BytesIO()
    Image.new("RGB", (20, 10), (200, 30, 40)).save(buffer, "JPEG", icc_profile=srgb, exif=exif.tobytes())
    pixels, mode, metadata, *_ = decode_image_and_metadata(buffer.getvalue())
    assert pixels.shape == (20, 10, 3) and mode == "RGB" and metadata.icc_profile == srgb
    kept = Image.Exif()
    kept.load(metadata.exif)
    assert dict(kept) == {0x010F: "a camera"}
    # a grayscale image's gray profile does not describe the RGB pixels stored: dropped
    gray = io.BytesIO()
    Image.new("L", (8, 8)).save(gray, "PNG", icc_profile=srgb[:16] + b"GRAY" + srgb[20:])
    assert decode_image_and_metadata(gray.getvalue())[2] == Metadata()
    # nor is a profile over the limit kept (a JPEG's may span 255 markers of 64 KB)
    huge = io.BytesIO()
    Image.new("RGB", (8, 8)).save(huge, "JPEG", icc_profile=srgb + bytes(MAX_METADATA_BYTES))
    assert decode_image_and_metadata(huge.getvalue())[2].icc_profile is None
    # and what is kept goes back into a PNG as it came
    again = Image.open(io.BytesIO(encode_png(pixels, metadata)))
    assert again.info["icc_profile"] == srgb and dict(again.getexif()) == {0x010F: "a camera"}
    assert "icc_profile" not in Image.open(io.BytesIO(encode_png(pixels))).info


def test_a_png_whose_metadata_inflates_past_pillows_limits_is_read_without_it():
    from PIL import PngImagePlugin

    from rgbatch.imageio import Metadata, decode_image_and_metadata
    pixels = np.random.default_rng(0).integers(0, 256, (16, 24, 3), np.uint8)
    profile = bytes(16) + b"RGB " + bytes(2 << 20)  # a 2 MiB profile: over MAX_TEXT_CHUNK and MAX_METADATA_BYTES
    text = PngImagePlugin.PngInfo()
    text.add_text("comment", "x" * (2 << 20), zip=True)  # a zTXt chunk that inflates to 2 MiB
    for options in ({"icc_profile": profile}, {"pnginfo": text}):
        data = save(Image.fromarray(pixels), "PNG", **options)
        with pytest.raises(ValueError, match="MAX_TEXT_CHUNK"):  # what Pillow alone does
            Image.open(io.BytesIO(data)).load()
        decoded = decode_image_and_metadata(data)
        assert np.array_equal(decoded.pixels, pixels) and decoded.metadata == Metadata()
    # the same words on a file whose chunks do not parse stay the refusal
    cut = save(Image.fromarray(pixels), "PNG", icc_profile=profile)
    with pytest.raises(ImageError, match="MAX_TEXT_CHUNK"):
        decode_image(cut[: len(cut) - 40])


@pytest.mark.parametrize("fmt", ["HEIF", "JXL", "AVIF"])
def test_phone_and_modern_formats_are_read_upright_with_their_metadata(fmt):
    from rgbatch.imageio import decode_image_and_metadata
    from rgbatch.sources import image_extensions
    assert {".heic", ".heif", ".jxl", ".avif"} <= image_extensions()  # found in source folders
    picture = np.zeros((32, 64, 3), np.uint8)
    picture[:, :32] = (220, 40, 30)  # red left half: a turn shows
    exif = Image.Exif()
    exif[0x0112], exif[0x010F] = 6, "a phone"  # rotate 90 degrees clockwise to view
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, fmt, quality=95, exif=exif.tobytes())
    pixels, mode, metadata, *_ = decode_image_and_metadata(buffer.getvalue())
    if fmt == "JXL":  # Pillow writes the EXIF block alone: the codestream says no turn, and it prevails
        assert pixels.shape == (32, 64, 3) and pixels[:, :16, 0].mean() > 150 > pixels[:, -16:, 0].mean()
    else:  # the plugins turned the EXIF's orientation into the format's own (irot, imir)
        assert pixels.shape == (64, 32, 3)  # turned once, not twice
        assert pixels[:16, :, 0].mean() > 150 > pixels[-16:, :, 0].mean()  # the red half on top after the turn
    kept = Image.Exif()
    kept.load(metadata.exif)
    assert kept.get(0x010F) == "a phone" and kept.get(0x0112, 1) == 1


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "JXL", "AVIF", "TIFF"])
def test_an_exif_block_is_kept_in_one_form_whatever_the_format(fmt):
    """docs/FORMAT.md: `Exif\\0\\0` then the TIFF header, as Pillow gives a JPEG's; a WebP's and a
    JPEG XL's came without the 6 bytes until session 59 (one format, two spellings)."""
    from rgbatch.imageio import EXIF_HEADER, decode_image_and_metadata

    exif = Image.Exif()
    exif[0x010F] = "a camera"
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(buffer, fmt, exif=exif.tobytes())
    kept = decode_image_and_metadata(buffer.getvalue()).metadata.exif
    assert kept.startswith(EXIF_HEADER) and kept[6:8] in (b"MM", b"II")
    again = Image.Exif()
    again.load(kept)
    assert again.get(0x010F) == "a camera"


def test_a_jpeg_xl_is_turned_by_its_codestream_not_its_exif(tmp_path):
    """A JPEG XL's orientation is its codestream's, which libjxl applies as it decodes; an EXIF
    orientation is ignored (ISO/IEC 18181-2; every JPEG XL viewer shows such a file unturned), and
    its tag dropped so that a restored PNG is not turned by it either. A JPEG XL holding a JPEG
    (lossless transcoding) gives that JPEG, whose EXIF orientation the codestream's repeats: turned."""
    picture = np.zeros((32, 64, 3), np.uint8)
    picture[:, :32] = (220, 40, 30)
    exif = Image.Exif()
    exif[0x0112], exif[0x010F] = 6, "a phone"
    Image.fromarray(picture).save(tmp_path / "phone.jpg", quality=95, exif=exif.tobytes())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pillow-jxl-plugin says it transcodes the JPEG
        Image.open(tmp_path / "phone.jpg").save(tmp_path / "transcoded.jxl", lossless_jpeg=True)
    Image.fromarray(picture).save(tmp_path / "pixels.jxl", lossless=True, exif=exif.tobytes())
    for name, shape in (("phone.jpg", (64, 32, 3)), ("transcoded.jxl", (64, 32, 3)), ("pixels.jxl", (32, 64, 3))):
        decoded = imageio.decode_image_and_metadata((tmp_path / name).read_bytes())
        assert decoded.pixels.shape == shape, name
        kept = Image.Exif()
        kept.load(decoded.metadata.exif)
        assert kept.get(0x010F) == "a phone" and kept.get(0x0112, 1) == 1, name


@pytest.mark.parametrize("fmt", ["HEIF", "JXL", "AVIF"])
def test_damaged_files_of_the_plugins_formats_are_worded_errors(fmt):
    buffer = io.BytesIO()
    Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(buffer, fmt, quality=80)
    data = buffer.getvalue()
    for cut in (len(data) // 2, 40, 12):
        with pytest.raises(ImageError, match="corrupt|not an image") as caught:
            decode_image(data[:cut])
        assert "libjxl" not in str(caught.value)  # pillow-jxl-plugin's words are for its builders


def test_a_tiffs_exif_is_kept_without_its_structure():
    # Pillow gives a TIFF no info["exif"]: its descriptive tags and Exif IFD are the EXIF block
    from rgbatch.imageio import decode_image_and_metadata, tiff_exif
    exif = Image.Exif()
    exif[0x0112], exif[0x010F], exif[0x0132] = 6, "a scanner", "2020:01:01 10:00:00"  # Orientation, Make, DateTime
    exif[0x8769] = {0x829A: (1, 250)}  # the Exif IFD: ExposureTime
    buffer = io.BytesIO()
    Image.new("RGB", (20, 10), (200, 30, 40)).save(buffer, "TIFF", exif=exif.tobytes())
    pixels, mode, metadata, *_ = decode_image_and_metadata(buffer.getvalue())
    assert pixels.shape == (20, 10, 3) and mode == "RGB"  # turned upright
    kept = Image.Exif()
    kept.load(metadata.exif)
    assert dict(kept.items()) | {0x8769: 0} == {0x010F: "a scanner", 0x0132: "2020:01:01 10:00:00", 0x8769: 0}
    assert kept.get_ifd(0x8769) == {0x829A: (1, 250)}
    # a TIFF with only its structure (sizes, strips, resolution) has no EXIF to keep
    plain = io.BytesIO()
    Image.new("RGB", (8, 8)).save(plain, "TIFF", dpi=(300, 300))
    assert decode_image_and_metadata(plain.getvalue())[2].exif is None
    assert tiff_exif(Image.new("RGB", (8, 8))) is None  # not a TIFF
    # an Exif IFD that points past the end of the file: the picture and the readable tags are kept
    data = bytearray(buffer.getvalue())
    entry = data.find(struct.pack("<HHI", 0x8769, 4, 1))  # IFD0's entry for it: tag, LONG, one value
    data[entry + 8:entry + 12] = struct.pack("<I", 10 ** 9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow's about the damaged tags it skips
        pixels, _, metadata, *_ = decode_image_and_metadata(bytes(data))
    kept = Image.Exif()
    kept.load(metadata.exif)
    assert pixels.shape == (20, 10, 3) and kept.get(0x010F) == "a scanner" and kept.get_ifd(0x8769) == {}


@pytest.mark.parametrize("fmt", ["GIF", "TIFF", "WEBP", "PNG"])
def test_a_multi_frame_source_gives_its_first_frame_and_its_frame_count(fmt):
    from rgbatch.imageio import decode_image_and_metadata
    colours = [(200, 30, 40), (30, 200, 40), (30, 40, 200)]
    frames = [Image.new("RGB", (16, 8), c) for c in colours]
    buffer = io.BytesIO()
    frames[0].save(buffer, fmt, save_all=True, append_images=frames[1:], **({"lossless": True} if fmt == "WEBP" else {}))
    pixels, mode, _, count, _ = decode_image_and_metadata(buffer.getvalue())
    assert count == 3 and pixels.shape == (8, 16, 3)
    assert np.abs(pixels.astype(int) - colours[0]).max() <= 2  # the first frame, after counting them all
    single = io.BytesIO()
    frames[0].save(single, fmt)
    assert decode_image_and_metadata(single.getvalue()).frames == 1


def test_a_float_image_s_nan_and_infinite_values_leave_its_white_alone(rng):
    """A float TIFF of values in 0..1 with one NaN or infinity was stored almost black (white taken as
    255) with a numpy warning, until session 62."""
    values = rng.random((40, 30)).astype(np.float32)
    values[:3, :3] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pixels, mode = decode_image(save(Image.fromarray(values), "TIFF"))
    expected = np.round(np.nan_to_num(values, nan=0.0) * 255).astype(np.uint8)
    assert mode == "F" and np.array_equal(pixels[..., 0], expected) and np.all(pixels[:3, :3] == 0)
    values[:] = np.nan  # nothing but NaN: black
    assert not decode_image(save(Image.fromarray(values), "TIFF"))[0].any()
    values = rng.random((40, 30)).astype(np.float32)  # an infinity: white, and white stays 1.0
    values[0, 0], values[0, 1] = np.inf, -np.inf
    pixels = decode_image(save(Image.fromarray(values), "TIFF"))[0][..., 0]
    assert (pixels[0, 0], pixels[0, 1]) == (255, 0) and pixels[1:].max() > 200


def test_a_camera_s_mpo_is_found_in_a_folder(tmp_path):
    """Pillow opens MPO files with its JPEG reader: `.mpo` was no image extension, and such files
    were left out of a folder's sources without a word (until session 62)."""
    from rgbatch.sources import expand_sources, image_extensions

    picture = Image.new("RGB", (32, 24), (200, 30, 40))
    picture.save(tmp_path / "stereo.mpo", save_all=True, append_images=[picture])
    assert ".mpo" in image_extensions() and ".pdf" not in image_extensions()  # PDF: Pillow writes it only
    _, found = expand_sources([str(tmp_path)])
    assert [s.path for s in found] == ["stereo.mpo"]
    decoded = imageio.decode_image_and_metadata((tmp_path / "stereo.mpo").read_bytes())
    assert decoded.frames == 2 and decoded.pixels.shape == (24, 32, 3)


def test_reading_a_source_prints_no_warning_of_pillow_s():
    """Pillow's advice on converting a palette image with a transparency table ("should be converted
    to RGBA images") was printed by `verify` and `report --html` (until session 62)."""
    image = Image.new("P", (20, 20))
    image.putpalette([i % 256 for i in range(768)])
    data = save(image, "PNG", transparency=bytes([0, 128] + [255] * 254))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        decoded = imageio.decode_image_and_metadata(data)
    assert decoded.mode == "PA" and decoded.alpha[0, 0] == 0 and caught == []


def test_an_exif_block_imagemagick_wrote_into_a_png_text_chunk_is_kept():
    """ImageMagick writes a PNG's EXIF as a "Raw profile type exif" text chunk: its orientation was
    applied, the block itself not kept (until session 62)."""
    from PIL import PngImagePlugin

    exif = Image.Exif()
    exif[0x0112], exif[0x010F] = 6, "a camera"  # turn 90 degrees clockwise to view
    block = exif.tobytes()
    info = PngImagePlugin.PngInfo()
    info.add_text("Raw profile type exif", f"\nexif\n{len(block):8d}\n{block.hex()}\n", zip=True)
    decoded = imageio.decode_image_and_metadata(save(Image.new("RGB", (48, 32)), "PNG", pnginfo=info))
    kept = Image.Exif()
    kept.load(decoded.metadata.exif)
    assert decoded.pixels.shape == (48, 32, 3) and dict(kept) == {0x010F: "a camera"}


def test_reading_in_threads_leaves_the_warning_filters_as_they_were():
    # catch_warnings swaps the process's filters: threads interleaving it left an "ignore" installed
    import threading

    png, tiff = save(Image.new("RGB", (8, 8))), save(Image.new("RGB", (8, 8)), "TIFF")
    before = list(warnings.filters)

    def read():
        for _ in range(200):
            imageio.open_image(png)
            imageio.png_text(io.BytesIO(png))
            imageio.tiff_exif(Image.open(io.BytesIO(tiff)))

    threads = [threading.Thread(target=read) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert warnings.filters == before


XMP = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
       b'<rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/" xmlns:xmp="http://ns.adobe.com/xap/1.0/" '
       b"tiff:Orientation='6' xmp:Rating=\"4\"/></rdf:RDF></x:xmpmeta>")  # single quotes: kept until session 63's review


@pytest.mark.parametrize("fmt, options", [("JPEG", {"xmp": XMP}), ("WEBP", {"xmp": XMP}), ("AVIF", {"xmp": XMP}),
                                          ("TIFF", {"tiffinfo": {700: XMP}}), ("PNG", "itxt")])
def test_an_xmp_packet_is_kept_without_its_orientation(fmt, options):
    """No XMP was kept until session 63 (ratings, keywords, captions): now the packet, as UTF-8,
    without tiff:Orientation (the pixels are upright), written back into a PNG's iTXt chunk."""
    from PIL import PngImagePlugin

    if options == "itxt":
        info = PngImagePlugin.PngInfo()
        info.add_itxt("XML:com.adobe.xmp", XMP.decode())
        options = {"pnginfo": info}
    decoded = imageio.decode_image_and_metadata(save(Image.new("RGB", (16, 8), (200, 30, 40)), fmt, **options))
    assert b'xmp:Rating="4"' in decoded.metadata.xmp and b"Orientation" not in decoded.metadata.xmp
    again = imageio.decode_image_and_metadata(imageio.encode_png(decoded.pixels, decoded.metadata))
    assert again.metadata[:3] == decoded.metadata[:3]  # notes: a TIFF's 1 dpi is 0.9906 in a PNG's pHYs


def test_an_xmp_packet_that_is_not_utf8_or_over_the_limit_is_dropped():
    from rgbatch.imageio import MAX_METADATA_BYTES

    for xmp in (b"<x:xmpmeta>\xff\xfe</x:xmpmeta>", b"<x/>" + b" " * MAX_METADATA_BYTES):
        assert imageio.decode_image_and_metadata(save(Image.new("RGB", (8, 8)), "WEBP", xmp=xmp)).metadata.xmp is None


def test_text_chunks_comments_and_resolution_are_kept_and_written_back():
    """No PNG text (generation parameters, titles), comment or resolution was kept until session 64:
    now a PNG's text chunks (tEXt, zTXt, iTXt) but XMP's, ImageMagick's raw profiles and a
    restore's own, a JPEG's or GIF's comment as "Comment", and the dots per inch, as notes that
    `encode_png` writes back (text chunks, pHYs)."""
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a cat on a sofa, steps: 20")
    info.add_itxt("Title", "Café ☕")  # not Latin-1: iTXt
    info.add_text("workflow", "{" + "x" * 5000 + "}", zip=True)  # zTXt
    info.add_text("rgbatch-restored", "{}")  # a restore's, describing that restore: not the source's
    info.add_text("Raw profile type exif", "\nexif\n 2\n0000\n")  # its EXIF is kept as EXIF
    info.add_itxt("XML:com.adobe.xmp", "<x/>")  # kept as XMP
    picture = Image.new("RGB", (16, 8), (200, 30, 40))
    decoded = imageio.decode_image_and_metadata(save(picture, "PNG", pnginfo=info, dpi=(300, 300)))
    text, dpi = imageio.unpack_notes(decoded.metadata.notes)
    assert text == {"parameters": "a cat on a sofa, steps: 20", "Title": "Café ☕",
                    "workflow": "{" + "x" * 5000 + "}"}
    assert dpi == pytest.approx((300, 300), abs=1e-3) and decoded.metadata.xmp == b"<x/>"
    written = Image.open(io.BytesIO(imageio.encode_png(decoded.pixels, decoded.metadata, {"rgbatch-restored": "ours"})))
    written.load()
    assert {k: written.info[k] for k in text} == text and written.info["rgbatch-restored"] == "ours"
    assert written.info["dpi"] == pytest.approx((300, 300), abs=1e-3)
    assert imageio.decode_image_and_metadata(imageio.encode_png(decoded.pixels, decoded.metadata)).metadata == (
        decoded.metadata)  # read again: the same
    jpeg = imageio.decode_image_and_metadata(save(picture, "JPEG", comment=b"scan 12 \xe9", dpi=(600, 600)))
    assert imageio.unpack_notes(jpeg.metadata.notes) == ({"Comment": "scan 12 é"}, (600, 600))  # Latin-1: not UTF-8
    two = save(picture, "JPEG", comment=b"second\0")  # every COM segment (Pillow's info: the last), no NUL
    two = two[:2] + b"\xff\xfe\x00\x07first" + two[2:]
    assert imageio.unpack_notes(imageio.decode_image_and_metadata(two).metadata.notes)[0] == {"Comment": "first\nsecond"}
    named = PngImagePlugin.PngInfo()
    named.add_text("xmp", "not XMP")  # a text chunk named as Pillow's own key: a note, not an XMP packet (review)
    kept = imageio.decode_image_and_metadata(save(picture, "PNG", pnginfo=named)).metadata
    assert (kept.xmp, imageio.unpack_notes(kept.notes)[0]) == (None, {"xmp": "not XMP"})
    gif = imageio.decode_image_and_metadata(save(picture, "GIF", comment="holiday ✈".encode()))
    assert imageio.unpack_notes(gif.metadata.notes) == ({"Comment": "holiday ✈"}, None)
    exif = Image.Exif()
    exif[0x010F] = "a camera"  # no resolution: Pillow says 72 dpi, which the file does not
    assert imageio.decode_image_and_metadata(save(picture, "JPEG", exif=exif.tobytes())).metadata.notes is None
    assert imageio.decode_image_and_metadata(save(picture, "WEBP")).metadata.notes is None


def test_notes_over_the_limit_keep_the_resolution_alone_and_bad_ones_are_refused():
    from rgbatch.imageio import MAX_METADATA_BYTES, pack_notes, unpack_notes

    assert pack_notes({"big": "x" * MAX_METADATA_BYTES}, (72, 72)) == b'{"dpi":[72.0,72.0]}'
    assert pack_notes({"big": "x" * MAX_METADATA_BYTES}, None) is None and pack_notes({}, None) is None
    for bad in (b"{", b"[]", b'{"text":[]}', b'{"text":{"":"x"}}', b'{"text":{"' + b"k" * 80 + b'":"x"}}',
                b'{"text":{"XML:com.adobe.xmp":"x"}}', b'{"dpi":[1]}', b'{"dpi":[NaN,1]}', b'{"dpi":[true,1]}',
                b'{"dpi":[1e9,1]}', b'{"text":{"\\u263a":"x"}}', b"{}" + b" " * MAX_METADATA_BYTES,
                b'{"x":' + b"[" * 200000 + b"]" * 200000 + b"}",  # RecursionError, which no check took (review)
                b'{"text":{"k":"\\ud800"}}'):  # a lone surrogate, which stopped the PNG writer (review)
        with pytest.raises(ValueError, match="notes"):
            unpack_notes(bad)
