"""Reading source images into 8-bit RGB, with the conversions and refusals documented here.

| source                         | what rgbatch does                                            |
|--------------------------------|--------------------------------------------------------------|
| RGB, 8 bit                     | used as is                                                   |
| grayscale (L, 1-bit)           | converted to RGB (three equal channels)                     |
| palette (P)                    | converted to RGB through its palette (transparency dropped)  |
| RGBA, LA, PA                   | alpha dropped (the colour channels are kept as they are)     |
| 16-bit (I;16*, I) and 32-bit F | scaled to 8 bit by the image's own range type, then RGB      |
| CMYK, YCbCr, LAB, HSV          | converted to RGB by Pillow                                   |
| EXIF orientation               | applied, so the stored image is upright                      |
| animated / multi-frame         | the first frame only                                         |
| more than MAX_PIXELS (89.5 MP)  | refused before decoding (decompression-bomb guard)           |
| unreadable, truncated, empty   | refused with the reason                                      |
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps

# Pillow's own default limit (about 9459 x 9459): anything bigger is refused unread. The
# encoder also keeps every depth's reconstruction of an image for its statistics, so memory
# grows with the image; archives of bigger scans need their images split first.
MAX_PIXELS = Image.MAX_IMAGE_PIXELS


class ImageError(ValueError):
    """A source image that rgbatch cannot read, with a message for the user."""


def decode_image(data: bytes, max_pixels: int = MAX_PIXELS) -> tuple[np.ndarray, str]:
    """Bytes of an image file -> (HxWx3 uint8 array, source mode)."""
    if not data:
        raise ImageError("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our check follows
            image = Image.open(io.BytesIO(data))
            mode = image.mode
            width, height = image.size
            if width * height > max_pixels:
                raise ImageError(f"image of {width}x{height} pixels is over the limit of {max_pixels} "
                                 f"pixels (decompression-bomb guard); refused")
            image.load()
    except ImageError:
        raise
    except Image.DecompressionBombError as e:
        raise ImageError(f"refused as a possible decompression bomb: {e}") from None
    except Image.UnidentifiedImageError:
        raise ImageError("not an image file Pillow can read (unknown or corrupt format)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageError(f"corrupt or truncated image: {e}") from None
    return to_rgb(image), mode


def to_rgb(image: Image.Image) -> np.ndarray:
    """Any Pillow image -> upright HxWx3 uint8 RGB (see the table above)."""
    try:
        image = ImageOps.exif_transpose(image)
    except Exception:  # a broken EXIF block must not lose the picture itself
        pass
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        if image.mode == "F":
            top = 1.0 if array.max() <= 1.0 else 255.0
        image = Image.fromarray(np.clip(np.round(array / top * 255), 0, 255).astype(np.uint8), "L")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        image = image.convert("RGBA").convert("RGB") if image.mode != "RGBA" else image.convert("RGB")
    elif image.mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image, dtype=np.uint8).copy()


def read_image(path, max_pixels: int = MAX_PIXELS) -> tuple[np.ndarray, str]:
    """A local image file -> (HxWx3 uint8 array, source mode)."""
    with open(path, "rb") as f:
        return decode_image(f.read(), max_pixels)


def encode_png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image, "RGB").save(buffer, format="PNG")
    return buffer.getvalue()
