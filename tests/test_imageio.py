import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from rgbatch.imageio import ImageError, decode_image


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


def test_16_bit_is_scaled_not_clipped():
    array = np.full((2, 2), 65535, np.uint16)
    rgb, _ = decode_image(save(Image.fromarray(array)))
    assert (rgb == 255).all()
    half = np.full((2, 2), 32896, np.uint16)
    assert (decode_image(save(Image.fromarray(half)))[0] == 128).all()


def test_alpha_is_dropped_and_colours_kept():
    rgba = Image.new("RGBA", (2, 2), (10, 20, 30, 0))
    assert (decode_image(save(rgba))[0] == [10, 20, 30]).all()


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
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + chunk(b"IEND", b"")


def test_decompression_bombs_are_refused_unread():
    with pytest.raises(ImageError, match="bomb"):  # Pillow's own error size
        decode_image(png_header_only(100000, 100000))
    with pytest.raises(ImageError, match="limit"):  # over our limit, under Pillow's error size
        decode_image(png_header_only(10000, 10000))
    with pytest.raises(ImageError, match="limit"):
        decode_image(save(Image.new("RGB", (100, 100))), max_pixels=5000)
