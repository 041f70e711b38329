"""The classical codecs rgbatch is compared with: JPEG, WebP, AVIF and JPEG XL through Pillow.

Every codec is run as a user would run it from Pillow, with its defaults except the
quality setting (the sweep below) and the settings named here:

| codec        | Pillow format | settings                                              | library        |
|--------------|---------------|-------------------------------------------------------|----------------|
| jpeg420      | JPEG          | 4:2:0 chroma subsampling, optimized Huffman tables    | libjpeg-turbo  |
| jpeg444      | JPEG          | 4:4:4 (no chroma subsampling), optimized Huffman      | libjpeg-turbo  |
| webp         | WEBP          | lossy, method 4 (Pillow's default)                    | libwebp        |
| avif         | AVIF          | 4:2:0, speed 6, all cores (Pillow's defaults)         | libavif (aom)  |
| avif-s2      | AVIF          | 4:2:0, speed 2 (slow, smaller), all cores             | libavif (aom)  |
| avif-s2-444  | AVIF          | 4:4:4 (no chroma subsampling), speed 2, all cores     | libavif (aom)  |
| jxl          | JXL           | lossy (VarDCT), effort 7 (libjxl's default)           | libjxl, through the pillow-jxl-plugin package |
| jxl-e9       | JXL           | lossy, effort 9 (effort 10, the slowest, wrote files within 0.1 % of these) | the same |

Optimized Huffman tables make JPEG files a few percent smaller at no loss, as any archive
tool would store them. The JPEG, WebP and AVIF (speed 6) sweeps reach from about 0.1 bpp to above
2.5 bpp on Kodak, the range rgbatch covers at depths 1..16 (0.125 bpp per depth before entropy
coding). The slow settings sweep fewer points, from their lowest quality to about MS-SSIM 0.99
(the top of rgbatch's curve; JPEG XL at effort 9 needs quality 90 for 0.98 on some photos): AVIF at speed 2 costs 10-20x the time of speed 6. At their lowest
setting (AVIF quality 0, JPEG XL quality 0, i.e. distance 25, the largest libjxl allows) smooth
photos are already above MS-SSIM 0.90: no setting of these codecs goes lower there, and the
bench then takes that lowest rate (docs/BENCH.md).

Rates are the real byte counts of the files Pillow writes (headers included); images are
decoded back from those bytes by `rgbatch.imageio.decode_image`, the reader rgbatch uses for
its own inputs, and encode and decode times are wall-clock seconds on this machine.
"""

from __future__ import annotations

import importlib
import importlib.util
import io
import time
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version

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
    plugin: str | None = None  # Python module that adds the format to Pillow (imported before use)
    package: str | None = None  # its distribution name, for the version recorded with results

    @property
    def available(self) -> bool:
        if self.plugin is not None:
            return importlib.util.find_spec(self.plugin) is not None
        return self.feature is None or bool(features.check(self.feature))

    @property
    def library(self) -> str:
        """The version of what encodes: Pillow's library, or the plugin package's version."""
        if self.package is not None:
            try:
                return f"{self.package} {version(self.package)}"
            except PackageNotFoundError:
                return f"{self.package} (not installed)"
        return f"{self.feature or 'jpg'} {features.version(self.feature or 'jpg')}"



CLASSICAL_CODECS = {c.name: c for c in (
    # JPEG below quality 5 only adds blocking: its MS-SSIM falls faster than its rate.
    ClassicalCodec("jpeg420", "JPEG", (5, 10, 15, 20, 30, 40, 50, 60, 70, 80, 90, 95),
                   {"subsampling": "4:2:0", "optimize": True}),
    ClassicalCodec("jpeg444", "JPEG", (5, 10, 15, 20, 30, 40, 50, 60, 70, 80, 90, 95),
                   {"subsampling": "4:4:4", "optimize": True}),
    ClassicalCodec("webp", "WEBP", (0, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95), {"method": 4}, "webp"),
    ClassicalCodec("avif", "AVIF", (0, 10, 20, 30, 40, 50, 60, 70, 80, 90), {}, "avif"),
    ClassicalCodec("avif-s2", "AVIF", (0, 15, 30, 45, 60, 75), {"speed": 2, "subsampling": "4:2:0"}, "avif"),
    ClassicalCodec("avif-s2-444", "AVIF", (0, 15, 30, 45, 60, 75), {"speed": 2, "subsampling": "4:4:4"}, "avif"),
    # libjxl maps quality to a distance (q 30..100: 0.1 + 0.09 (100 - q)); quality 0 is distance 25
    ClassicalCodec("jxl", "JXL", (0, 10, 20, 30, 45, 60, 75, 90), {"effort": 7}, plugin="pillow_jxl",
                   package="pillow-jxl-plugin"),
    ClassicalCodec("jxl-e9", "JXL", (0, 15, 30, 45, 60, 75, 90), {"effort": 9}, plugin="pillow_jxl",
                   package="pillow-jxl-plugin"),
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
        missing = f"the {codec.package} package is not installed" if codec.plugin else \
            f"this Pillow was built without {codec.feature} support"
        raise ValueError(f"{missing}, so {name} cannot run")
    return _load_plugin(codec)


def _load_plugin(codec: ClassicalCodec) -> ClassicalCodec:
    if codec.plugin is not None:
        importlib.import_module(codec.plugin)  # registers its format with Pillow
    return codec


def encode(image: np.ndarray, codec: str | ClassicalCodec, quality: int) -> bytes:
    """The file bytes of an HxWx3 uint8 image stored by `codec` at `quality`."""
    codec = get_codec(codec) if isinstance(codec, str) else _load_plugin(codec)
    buffer = io.BytesIO()
    Image.fromarray(image, "RGB").save(buffer, format=codec.format, quality=quality, **codec.options)
    return buffer.getvalue()


def decode(data: bytes) -> np.ndarray:
    """HxWx3 uint8 RGB of a JPEG, WebP, AVIF or JPEG XL file's bytes (JPEG XL once `get_codec`
    has registered the plugin)."""
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
