"""The classical codecs rgbatch is compared with: JPEG, WebP and AVIF through Pillow.

Every codec is run as a user would run it from Pillow, with its defaults except the
quality setting (the sweep below) and the settings named here:

| codec    | Pillow format | settings                                              | library        |
|----------|---------------|-------------------------------------------------------|----------------|
| jpeg420  | JPEG          | 4:2:0 chroma subsampling, optimized Huffman tables    | libjpeg-turbo  |
| jpeg444  | JPEG          | 4:4:4 (no chroma subsampling), optimized Huffman      | libjpeg-turbo  |
| webp     | WEBP          | lossy, method 4 (Pillow's default)                    | libwebp        |
| avif     | AVIF          | 4:2:0, speed 6, all cores (Pillow's defaults)         | libavif        |

Optimized Huffman tables make JPEG files a few percent smaller at no loss, as any archive
tool would store them. The quality sweeps reach from about 0.1 bpp to above 2.5 bpp on Kodak,
the range rgbatch covers at depths 1..16 (0.125 bpp per depth before entropy coding).

Rates are the real byte counts of the files Pillow writes (headers included); images are
decoded back from those bytes by `rgbatch.imageio.decode_image`, the reader rgbatch uses for
its own inputs, and encode and decode times are wall-clock seconds on this machine.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, features

from .imageio import decode_image


@dataclass(frozen=True)
class ClassicalCodec:
    name: str
    format: str  # Pillow format name
    qualities: tuple[int, ...]  # the sweep, low to high quality
    options: dict = field(default_factory=dict)  # fixed Pillow save options besides quality
    feature: str | None = None  # Pillow feature the codec needs (None: always built in)

    @property
    def available(self) -> bool:
        return self.feature is None or bool(features.check(self.feature))


CLASSICAL_CODECS = {c.name: c for c in (
    # JPEG below quality 5 only adds blocking: its MS-SSIM falls faster than its rate.
    ClassicalCodec("jpeg420", "JPEG", (5, 10, 15, 20, 30, 40, 50, 60, 70, 80, 90, 95),
                   {"subsampling": "4:2:0", "optimize": True}),
    ClassicalCodec("jpeg444", "JPEG", (5, 10, 15, 20, 30, 40, 50, 60, 70, 80, 90, 95),
                   {"subsampling": "4:4:4", "optimize": True}),
    ClassicalCodec("webp", "WEBP", (0, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95), {"method": 4}, "webp"),
    ClassicalCodec("avif", "AVIF", (0, 10, 20, 30, 40, 50, 60, 70, 80, 90), {}, "avif"),
)}


@dataclass
class ClassicalResult:
    data: bytes  # the file as stored
    decoded: np.ndarray  # HxWx3 uint8, decoded back from `data`
    encode_s: float
    decode_s: float


def get_codec(name: str) -> ClassicalCodec:
    try:
        codec = CLASSICAL_CODECS[name]
    except KeyError:
        raise ValueError(f"unknown classical codec {name!r} (known: {', '.join(CLASSICAL_CODECS)})") from None
    if not codec.available:
        raise ValueError(f"this Pillow was built without {codec.feature} support, so {name} cannot run")
    return codec


def encode(image: np.ndarray, codec: str | ClassicalCodec, quality: int) -> bytes:
    """The file bytes of an HxWx3 uint8 image stored by `codec` at `quality`."""
    codec = get_codec(codec) if isinstance(codec, str) else codec
    buffer = io.BytesIO()
    Image.fromarray(image, "RGB").save(buffer, format=codec.format, quality=quality, **codec.options)
    return buffer.getvalue()


def decode(data: bytes) -> np.ndarray:
    """HxWx3 uint8 RGB of a JPEG, WebP or AVIF file's bytes."""
    return decode_image(data)[0]


def run(image: np.ndarray, codec: str | ClassicalCodec, quality: int) -> ClassicalResult:
    """Encode and decode one image, timing both."""
    start = time.perf_counter()
    data = encode(image, codec, quality)
    encoded = time.perf_counter()
    decoded = decode(data)
    decoded_at = time.perf_counter()
    return ClassicalResult(data, decoded, encoded - start, decoded_at - encoded)


def available_codecs() -> list[str]:
    return [name for name, codec in CLASSICAL_CODECS.items() if codec.available]


__all__ = ["CLASSICAL_CODECS", "ClassicalCodec", "ClassicalResult", "available_codecs", "decode", "encode",
           "get_codec", "run"]
