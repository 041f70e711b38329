"""Reading source images into 8-bit RGB, with the conversions and refusals documented here.

| source                         | what rgbatch does                                            |
|--------------------------------|--------------------------------------------------------------|
| file formats                   | what Pillow reads, AVIF included, and JPEG XL and HEIF/HEIC  |
|                                | (the pillow-jxl-plugin and pillow-heif packages)             |
| RGB, 8 bit                     | used as is                                                   |
| grayscale (L, 1-bit)           | converted to RGB (three equal channels); restored grey      |
| palette (P)                    | converted to RGB through its palette                         |
| RGBA, LA, PA (and RGBa, La)    | the colours coded as they are; the alpha channel kept        |
|                                | losslessly beside them (`Decoded.alpha`; archives and stream |
|                                | files store it as an 8-bit grey PNG, `encode_alpha`)         |
| transparency key (tRNS) on P,  | an alpha channel in all but name: kept as one; the mode      |
| grey (1 to 16 bits) or RGB     | recorded as PA, LA (LA;16) or RGBA; grey keys applied here   |
| 16-bit grey (I;16*; PGM's I)   | scaled to 8 bit from 65535 as white, then RGB (`_white`)     |
| 32-bit I, float F              | by their values: white 65535 (a value over 255) or 255; F:   |
|                                | 1.0, or 255 where a finite value is over 1.0 (not tone-      |
|                                | mapped); NaN black, infinities black or white                |
| 16-bit RGB, RGBA, LA (PNG,     | 8 bits a sample, as Pillow reads them (high bytes; a PPM's   |
| TIFF, PPM), 10- and 12-bit     | scaled); the mode recorded with the file's bits (RGB;16,     |
| HEIF, JPEG XL and AVIF colour  | RGBA;10, LA;16...; a JPEG XL's and an AVIF's from its        |
| of more than 8 bits            | header), so that `report` counts the reduction               |
| CMYK, YCbCr, LAB, HSV          | converted to RGB by Pillow; CMYK with its own ICC profile    |
|                                | through that profile into sRGB (LittleCMS: `colour.py`)      |
| EXIF orientation               | applied, so the stored image is upright (a JPEG XL: its      |
|                                | codestream's, which its decoder applies; an EXIF one is      |
|                                | ignored, as the format says, its tag dropped)                |
| ICC profile (RGB)              | kept (`Metadata`; an archive restores it); others dropped    |
|                                | (a grey or CMYK profile: the pixels kept are RGB)            |
| a HEIF's, an AVIF's nclx colour| kept as an ICC profile made from it (`colour.nclx_icc`)      |
| description (no ICC profile)   | where not sRGB's; PQ and HLG (HDR) values read as sRGB       |
| XMP                            | kept (`Metadata`), its tiff:Orientation removed (the pixels  |
|                                | are upright), where UTF-8 and at most 1 MiB (since session 63)|
| PNG text chunks (tEXt, zTXt,   | kept (`Metadata.notes`, since session 64): every keyword's   |
| iTXt: generation parameters,   | text but XMP's (kept as XMP), ImageMagick's "Raw profile     |
| titles, comments...), a JPEG's | type" ones (their EXIF is kept as EXIF) and a restore's own  |
| or GIF's comment, resolution   | (`RESTORED_KEY`); a comment as the text "Comment"; the dots  |
| (DPI)                          | per inch; at most 1 MiB together (more: the text dropped)    |
| gAMA, cHRM, sRGB chunks        | not kept (an ICC profile is)                                 |
| EXIF                           | kept, its orientation tag removed once applied; a TIFF's     |
|                                | descriptive tags and Exif / GPS IFDs as an EXIF block; an    |
|                                | ImageMagick PNG's ("Raw profile type exif" text chunk)       |
| a JPEG XL's extra channels     | dropped (its reader gives colour and alpha alone); the mode  |
| beyond alpha (depth, spot      | recorded with `+extra` (`L+extra`), so that `report` counts  |
| colours, thermal...)           | the loss                                                     |
| animated / multi-frame         | the first frame (page) only; the count is recorded, so that  |
|                                | `report` counts it (`frames`); an animated JPEG XL refused   |
|                                | unread (its reader decodes every frame and gives the last)   |
| more than max_pixels (default  | refused before decoding (decompression-bomb guard; a JPEG    |
| MAX_PIXELS, Pillow's 89.5 MP)  | XL's size read from its header, `jxl_header`, and refused    |
|                                | too where its colour and extra channels, all decoded, hold   |
|                                | more samples than RGBA at the limit); a larger limit raises  |
|                                | Pillow's own to match                                        |
| a file of more bytes than 16   | refused before it is read whole (`max_source_bytes`: twice   |
| a pixel of max_pixels (at      | an uncompressed 16-bit RGBA image at the limit; a video      |
| least 256 MiB)                 | named .jpg would fill the memory)                            |
| PNG metadata over Pillow's     | the picture read without its text and ICC chunks (over 1 MiB |
| text limits (1 MiB a chunk)    | a profile is not kept anyway)                                |
| unreadable, truncated, empty   | refused with the reason                                      |
"""

from __future__ import annotations

import io
import json
import math
import os
import re
from typing import NamedTuple

import numpy as np
import pillow_jxl  # noqa: F401  (registers its JPEG XL reader with Pillow on import)
from PIL import ExifTags, Image, ImageCms, ImageOps, PngImagePlugin
from pillow_heif import register_heif_opener

from .colour import cmyk_transform, nclx_icc
from .options import OptionError, check_count

register_heif_opener()  # HEIF / HEIC: libheif applies the file's rotation and sets the EXIF orientation to 1

# Pillow's own default limit (about 9459 x 9459): anything bigger is refused unread unless the
# caller raises it (`compress --max-pixels`); memory stays flat in the image's size beyond the
# image itself (README, "Inputs").
MAX_PIXELS = Image.MAX_IMAGE_PIXELS


# A source file is read only up to this many bytes a pixel of the pixel limit (`max_source_bytes`):
# twice an uncompressed 16-bit RGBA image at the limit, room for a TIFF's pages or a PSD's layers;
# a bigger file (a video named .jpg) is refused before it fills the memory
SOURCE_BYTES_PER_PIXEL = 16
MIN_SOURCE_BYTES = 1 << 28  # 256 MiB, whatever the pixel limit


def max_source_bytes(max_pixels: int) -> int:
    """The most bytes of a source file read for images of at most `max_pixels` pixels."""
    return max(MIN_SOURCE_BYTES, SOURCE_BYTES_PER_PIXEL * max_pixels)


def too_big_text(error: Exception, max_pixels: int) -> str:
    """Why a source file over `max_source_bytes` is refused (`storage.FileTooBig`), for the user."""
    return (f"{error}, more than an image of at most {max_pixels} pixels takes ({SOURCE_BYTES_PER_PIXEL} bytes a "
            f"pixel); refused (--max-pixels raises both limits)")


# What an archive keeps of a source besides its pixels, each at most this big (larger: dropped)
MAX_METADATA_BYTES = 1 << 20


# Source modes (the table above) whose conversion to 8-bit RGB loses something, by what it loses
# (a key, and words that follow a count): what `rgbatch report` counts, from the rows' `mode` column
# RGB and RGBA sources of more than 8 bits a sample, which Pillow and its plugins read as 8 (`_sample_bits`):
# recorded as RGB;16, RGBA;10 ... (the mode, then the file's bits a sample)
# and grey with alpha (a 16-bit PNG's, a 16-bit grey PNG with a transparency key: LA;16; a JPEG XL's)
WIDE_MODES = tuple(f"{mode};{bits}" for mode in ("RGB", "RGBA", "LA") for bits in (10, 12, 16))
# modes with an alpha channel (a transparency key: recorded so)
ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La", *(mode for mode in WIDE_MODES if mode.startswith(("RGBA;", "LA;"))))
# grey sources (with or without alpha, of any depth): restored as grey PNGs (`encode_png`'s `grey`)
GREY_MODES = ("1", "L", "LA", "La", "LA;10", "LA;12", "LA;16", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")
# a JPEG XL's extra channels beyond its alpha (depth, spot colours, a selection mask, thermal...),
# which its reader drops: the mode recorded with this after it (`L+extra`, `RGBA+extra`)
EXTRA_CHANNELS = "+extra"
# modes whose values are no RGB's (YCbCr's are RGB's, encoded): an RGB profile such a file carries
# does not describe them
NOT_RGB = ("CMYK", "LAB", "HSV")
LOSSY_MODES = {  # by the mode without EXTRA_CHANNELS (`base_mode`)
    # since session 25 the alpha channel is kept (the `alpha` column); dropped: rows of older parts
    "alpha_dropped": (ALPHA_MODES, "with their alpha channel dropped"),
    "reduced_to_8_bits": (("I;16", "I;16B", "I;16L", "I;16N", "I", "F", *WIDE_MODES),
                          "reduced from more than 8 bits a sample to 8"),
    "colour_converted": ((*NOT_RGB, "YCbCr"), "converted to RGB from CMYK, YCbCr, LAB or HSV"),
}

# what reading lost, in words (after a count of images): report's reading summary and encode's line
READING_WORDS = {**{loss: words for loss, (_, words) in LOSSY_MODES.items()},
                 "frames_dropped": "with only the first of their frames or pages kept",
                 "extra_channels_dropped": "with extra channels beyond colour and alpha dropped (a JPEG XL's "
                                           "depth, spot colours...)",
                 "alpha_kept": "with their alpha channel kept losslessly"}


# modes whose transparency key (`info["transparency"]`) is an alpha channel in all but name, and
# the mode with an alpha channel that the archive's `mode` column records for them (a 16-bit grey
# PNG's: LA;16, with the file's bits)
KEYED_ALPHA = {"P": "PA", "L": "LA", "RGB": "RGBA", "1": "LA", "I;16": "LA", "I": "LA"}
# grey modes whose key rgbatch applies itself (`to_alpha`): Pillow ignores one on 1-bit and 16-bit
# grey, and compares a 2- or 4-bit PNG's with its samples already scaled to 8 bits
GREY_KEYED = ("1", "L", "I;16", "I")


def base_mode(mode: str | None) -> str | None:
    """A recorded mode without what follows the picture's own (EXTRA_CHANNELS)."""
    return mode.removesuffix(EXTRA_CHANNELS) if mode else mode


def reading_losses(mode: str | None, alpha_kept: bool = True) -> list[str]:
    """What reading a source of this recorded mode into 8-bit RGB lost: LOSSY_MODES' names, and
    "extra_channels_dropped" (an alpha channel is lost only where none was kept: archives' rows
    before session 25)."""
    losses = [loss for loss, (lossy, _) in LOSSY_MODES.items()
              if base_mode(mode) in lossy and not (loss == "alpha_dropped" and alpha_kept)]
    return losses + (["extra_channels_dropped"] if mode and mode.endswith(EXTRA_CHANNELS) else [])


class ImageError(ValueError):
    """A source image that rgbatch cannot read, with a message for the user."""


class Metadata(NamedTuple):
    """What a source says about its pixels, kept beside them in an archive (docs/ARCHIVE.md) and
    written back by `restore`: its ICC profile, only where that describes RGB data (a CMYK or
    grayscale profile does not fit the RGB pixels rgbatch stores, so it is dropped), its EXIF
    block (capture time, camera, ...) without the orientation tag, which the pixels already follow,
    its XMP packet (ratings, keywords, captions, edits: UTF-8, without tiff:Orientation) and its
    notes: text chunks, comment and resolution (`pack_notes`: UTF-8 JSON; since session 64)."""

    icc_profile: bytes | None = None
    exif: bytes | None = None
    xmp: bytes | None = None
    notes: bytes | None = None


def decode_image(data: bytes, max_pixels: int = MAX_PIXELS) -> tuple[np.ndarray, str]:
    """Bytes of an image file -> (HxWx3 uint8 array, source mode)."""
    return decode_image_and_metadata(data, max_pixels)[:2]


class Decoded(NamedTuple):
    """A source read into 8-bit RGB (`decode_image_and_metadata`)."""

    pixels: np.ndarray  # HxWx3 uint8, upright
    mode: str  # the source's Pillow mode as the file states it (a transparency key: with alpha)
    metadata: Metadata
    frames: int = 1  # frames or pages in the file (animations, multi-page TIFFs): only the first is read
    alpha: np.ndarray | None = None  # HxW uint8, upright: the alpha channel (or transparency key); None: none


# an EXIF block is kept as a JPEG's APP1 segment holds it (Pillow's `Image.Exif.tobytes()`): these 6
# bytes, then the TIFF header onwards; Pillow gives a WebP's and a JPEG XL's without them (docs/FORMAT.md)
EXIF_HEADER = b"Exif\x00\x00"


def decode_image_and_metadata(data: bytes, max_pixels: int = MAX_PIXELS) -> Decoded:
    """`decode_image`, the source's `Metadata` and its number of frames."""
    image, mode = open_image(data, max_pixels)
    rgb = to_rgb(image)  # first: applying the orientation takes its tag out of the EXIF block
    alpha = to_alpha(image) if base_mode(mode) in ALPHA_MODES else None  # upright too: to_rgb turned the image
    icc, exif = image.info.get("icc_profile"), image.info.get("exif") or tiff_exif(image) or _raw_profile_exif(image)
    icc = icc if isinstance(icc, bytes) and icc[16:20] == b"RGB " and len(icc) <= MAX_METADATA_BYTES else None
    if base_mode(mode) in NOT_RGB:  # an RGB profile on CMYK, LAB or HSV values describes no pixels kept
        icc = None
    if icc is None and isinstance(image.info.get("nclx_profile"), dict) and base_mode(mode) not in GREY_MODES:
        icc = nclx_icc(image.info["nclx_profile"])  # a HEIF's, an AVIF's colours by code points (not grey's)
    if isinstance(exif, bytes) and exif and not exif.startswith(EXIF_HEADER):  # a WebP's, a JPEG XL's
        exif = EXIF_HEADER + exif
    exif = exif if isinstance(exif, bytes) and 0 < len(exif) <= MAX_METADATA_BYTES else None
    try:  # last: counting seeks to every frame's header, and one that does not parse leaves the image on
        frames = max(1, int(getattr(image, "n_frames", 1)))  # it (a TIFF's page of another size, unchecked)
    except Exception:  # a damaged later frame: the first was read
        frames = 1
    return Decoded(rgb, mode, Metadata(icc, exif, _xmp(image), _notes(image)), frames, alpha)


XMP_ORIENTATION = re.compile(rb'\s*tiff:Orientation\s*=\s*["\'][0-9]["\']'
                             rb'|<tiff:Orientation>\s*[0-9]\s*</tiff:Orientation>')


def is_utf8(data: bytes) -> bool:
    """Whether `data` is UTF-8 text: XMP's encoding, which a trailer, a row and a PNG's iTXt hold."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _xmp(image: Image.Image) -> bytes | None:
    """A source's XMP packet (Pillow's `info["xmp"]`: a JPEG's APP1, a PNG's iTXt, a TIFF's tag
    700, a WebP's, HEIF's or AVIF's box) as UTF-8 bytes, without tiff:Orientation, since the
    pixels are upright (Pillow takes it out only where the EXIF block had one); None where there
    is none, or it is over MAX_METADATA_BYTES or not UTF-8 (XMP's own encoding; until session 63
    no XMP was kept)."""
    xmp = image.info.get("xmp")
    if not xmp or (image.format == "PNG" and isinstance(xmp, str)):  # a PNG's text chunk named "xmp" (a note);
        return None  # its XMP iTXt Pillow gives as bytes
    try:
        xmp = xmp.encode("utf-8") if isinstance(xmp, str) else bytes(xmp).rstrip(b"\0")
    except (UnicodeError, TypeError, ValueError):  # a lone surrogate, a value of another type
        return None
    return XMP_ORIENTATION.sub(b"", xmp) if 0 < len(xmp) <= MAX_METADATA_BYTES and is_utf8(xmp) else None


RESTORED_KEY = "rgbatch-restored"  # the PNG text chunk that says what a restored file holds (`archive`)


def is_keyword(key) -> bool:
    """Whether `key` can name a PNG text chunk (1-79 Latin-1 characters) that notes keep: not XMP's
    (kept as XMP), not ImageMagick's "Raw profile type ..." (hex dumps of EXIF, IPTC, ICC: an EXIF
    one's orientation, applied, would turn the restored image again), not a restore's own."""
    if not isinstance(key, str) or not 0 < len(key) < 80 or key in ("XML:com.adobe.xmp", RESTORED_KEY):
        return False
    return _encodes(key, "latin-1") and "\0" not in key and not key.startswith("Raw profile type ")


def pack_notes(text: dict[str, str], dpi: tuple[float, float] | None) -> bytes | None:
    """`Metadata.notes`: a source's text chunks (keyword: text) and resolution in dots per inch,
    as the UTF-8 JSON object `{"text": {...}, "dpi": [x, y]}` (each key only where there is one),
    None for neither; the text dropped where the whole is over MAX_METADATA_BYTES."""
    if sum(len(key) + len(value) for key, value in text.items()) > MAX_METADATA_BYTES:  # Pillow reads up to 64 MB
        text = {}
    notes = {"text": text} if text else {}
    if dpi:
        notes["dpi"] = [round(float(value), 4) for value in dpi]
    packed = json.dumps(notes, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    if len(packed) > MAX_METADATA_BYTES:
        return pack_notes({}, dpi)
    return packed if notes else None


def unpack_notes(notes: bytes | None) -> tuple[dict[str, str], tuple[float, float] | None]:
    """(text, dpi) of `Metadata.notes`, or ValueError where they are not what `pack_notes` makes
    (other keys of the object are left for later versions, unread)."""
    if not notes:
        return {}, None
    if len(notes) > MAX_METADATA_BYTES:
        raise ValueError(f"notes of {len(notes)} bytes are over the limit of {MAX_METADATA_BYTES}")
    try:
        value = json.loads(notes.decode("utf-8"))
    except ValueError as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise ValueError(f"notes are not UTF-8 JSON ({e})") from None
    except RecursionError:  # [[[[...: no error of the row's or the trailer's until session 64's review
        raise ValueError("notes are not UTF-8 JSON (nested too deeply)") from None
    if not isinstance(value, dict):
        raise ValueError("notes are not a JSON object")
    text, dpi = value.get("text", {}), value.get("dpi")
    if not isinstance(text, dict) or not all(is_keyword(k) and isinstance(v, str) and _encodes(v)
                                             for k, v in text.items()):  # "\ud800" stopped the PNG writer
        raise ValueError("notes' text is not PNG keywords and their text")
    if dpi is not None and not (isinstance(dpi, list) and len(dpi) == 2 and all(map(_is_resolution, dpi))):
        raise ValueError("notes' dpi is not two positive numbers")
    return text, (dpi[0], dpi[1]) if dpi else None


def _is_resolution(value) -> bool:
    """Dots per inch a PNG's pHYs chunk can hold (pixels per metre, 1 .. 2^31 - 1)."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            and 0.0254 <= value <= 5.4e7)


def _notes(image: Image.Image) -> bytes | None:
    """A source's `Metadata.notes`: a PNG's text chunks (`is_keyword`'s), a JPEG's or GIF's comment
    as the text "Comment" (UTF-8, else Latin-1), its resolution (Pillow's `info["dpi"]`: a PNG's
    pHYs, a JPEG's JFIF density in dots per inch or cm, a TIFF's or BMP's); until session 64 none."""
    text, comments = {}, [image.info.get("comment")]
    if image.format == "PNG":  # its text chunks, after the pixels too (loaded); an APNG's (whose `text` would
        text = image.info if getattr(image, "is_animated", False) else image.text  # decode every frame): info's
        text = {k: v for k, v in text.items() if isinstance(v, str) and is_keyword(k)}  # (Pillow's own keys clash)
    elif image.format in ("JPEG", "MPO"):  # every COM segment (Pillow's `info` holds the last)
        comments = [data for marker, data in getattr(image, "applist", ()) if marker == "COM"]
    comments = [c.rstrip(b"\0") for c in comments if isinstance(c, bytes) and c.strip(b"\0")]  # NUL: C's end
    if comments:
        text = {"Comment": "\n".join(c.decode("utf-8") if is_utf8(c) else c.decode("latin-1") for c in comments)}
    text = {k: str(v) for k, v in text.items() if _encodes(str(v))}
    dpi = image.info.get("dpi")
    if image.format in ("JPEG", "MPO") and image.info.get("jfif_unit") not in (1, 2):  # Pillow's 72 where the
        dpi = None  # EXIF block names none (a resolution it names stays in the block, kept)
    try:
        dpi = (float(dpi[0]), float(dpi[1])) if isinstance(dpi, tuple) and len(dpi) == 2 else None
    except (TypeError, ValueError, ZeroDivisionError):  # an EXIF rational of 0/0
        dpi = None
    return pack_notes(text, dpi if dpi and all(map(_is_resolution, dpi)) else None)


def _encodes(text: str, encoding: str = "utf-8") -> bool:
    """Whether `text` is encodable in `encoding` (in UTF-8, a lone surrogate is not)."""
    try:
        text.encode(encoding)
    except UnicodeError:
        return False
    return True


def _raw_profile_exif(image: Image.Image) -> bytes | None:
    """The EXIF block ImageMagick writes into a PNG as a text chunk ("Raw profile type exif"),
    which Pillow reads but gives no `info["exif"]` for (applied, not kept, until session 62)."""
    if "Raw profile type exif" not in image.info:
        return None
    try:
        exif = image.getexif()  # its orientation already taken out by `to_rgb`
        return exif.tobytes() if len(exif) else None
    except Exception:  # a damaged block: the picture is read without it
        return None


# The descriptive tags of a TIFF's first IFD that an EXIF block carries too (ImageDescription, Make,
# Model, Software, DateTime, Artist, HostComputer, Copyright): its structural tags (sizes, strips,
# compression, resolution) describe the file, not the picture
TIFF_EXIF_TAGS = (0x010E, 0x010F, 0x0110, 0x0131, 0x0132, 0x013B, 0x013C, 0x8298)
EXIF_IFDS = (0x8769, 0x8825)  # the Exif and GPS sub-IFDs (exposure, capture time, position)


def tiff_exif(image: Image.Image) -> bytes | None:
    """The EXIF block of a TIFF, which Pillow gives no `info["exif"]` for: its descriptive tags and
    its Exif and GPS sub-IFDs as a fresh block (no orientation: `to_rgb` has applied it), or None
    when it has none of them or they cannot be read."""
    if image.format != "TIFF":
        return None
    try:
        tags, exif = image.getexif(), Image.Exif()  # Pillow warns of each damaged tag it skips (the CLI hides it)
        for tag in TIFF_EXIF_TAGS:
            if tag in tags:
                exif[tag] = tags[tag]
        for tag in EXIF_IFDS:
            if tag in tags and (ifd := tags.get_ifd(tag)):
                exif[tag] = dict(ifd)
        return exif.tobytes() if len(exif) else None
    except Exception:  # a damaged IFD: the picture is kept, its metadata dropped
        return None


def open_image(data: bytes, max_pixels: int = MAX_PIXELS) -> tuple[Image.Image, str]:
    """Bytes of an image file -> (the loaded Pillow image, its mode as the file states it), or
    ImageError saying why not."""
    try:
        return _open_image(data, max_pixels)
    except ImageError as e:
        # Pillow refuses a whole PNG whose ICC profile or text chunk inflates past its limits
        # (MAX_TEXT_CHUNK, MAX_TEXT_MEMORY): metadata rgbatch would drop anyway (over
        # MAX_METADATA_BYTES, a profile's or the notes' whole text), so the picture is read without it
        if "MAX_TEXT" not in str(e) or (stripped := _png_without(data, PNG_TEXT_CHUNKS)) is None:
            raise
        return _open_image(stripped, max_pixels)


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_TEXT_CHUNKS = (b"iCCP", b"tEXt", b"zTXt", b"iTXt")  # ancillary: the pixels do not depend on them


def _png_without(data: bytes, kinds: tuple[bytes, ...]) -> bytes | None:
    """The PNG `data` with its chunks of the given kinds left out, or None where it is no PNG or its
    chunk list does not parse (the caller's error stands)."""
    if not data.startswith(PNG_SIGNATURE):
        return None
    kept, at = [PNG_SIGNATURE], len(PNG_SIGNATURE)
    while at + 12 <= len(data):
        length, kind = int.from_bytes(data[at:at + 4], "big"), data[at + 4:at + 8]
        end = at + 12 + length
        if end > len(data):
            return None
        if kind not in kinds:
            kept.append(data[at:end])
        at = end
        if kind == b"IEND":
            break
    return b"".join(kept)


def _allow_in_pillow(max_pixels: int):
    """Pillow warns of an image of more than its own limit when it opens the file, and refuses
    one of more than twice that, whatever the caller's: a larger `max_pixels` raises Pillow's
    limit to match it, so that an image within it is neither (for this process, and never
    lowered, so that threads asking for different limits cannot undo each other; every image is
    still held to its caller's `max_pixels` by `_open_image`). No warnings filter is set: the
    process's filters are a host program's (until session 63 `warnings.catch_warnings` swapped
    them during reading, and threads interleaving it left one installed or undid the host's)."""
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and max_pixels > limit:
        Image.MAX_IMAGE_PIXELS = max_pixels


JXL_CODESTREAM, JXL_CONTAINER = b"\xff\x0a", b"\x00\x00\x00\x0cJXL \r\n\x87\n"
JXL_RATIOS = (None, (1, 1), (12, 10), (4, 3), (3, 2), (16, 9), (5, 4), (2, 1))  # SizeHeader's width / height


class JXLHeader(NamedTuple):
    width: int
    height: int
    bits: int  # a sample's, 8 where the header says nothing else (floats: their bits)
    extra_channels: int = 0  # alpha and any other: each decoded beside the colour
    animated: bool = False


def jxl_header(data: bytes) -> JXLHeader | None:
    """The size, bits a sample, number of extra channels and whether it is an animation, as a JPEG
    XL file declares them (ISO/IEC 18181-1: the SizeHeader and the start of the ImageMetadata that
    follow the codestream's signature, found in a container's `jxlc` or first `jxlp` boxes), or
    None where `data` is no JPEG XL file or its header is cut short. pillow-jxl-plugin decodes the
    whole file when Pillow opens it, before any size can be asked: every extra channel and every
    frame of an animation (giving the last). Read first, this lets the pixel limit refuse a bomb
    unread as it does other formats' (119 KB of lossless JPEG XL hold 900 MP of one colour; 623
    bytes, 1 MP and 200 extra channels), and says the bits of colour samples that the plugin reads
    as 8 without saying so."""
    if data.startswith(JXL_CODESTREAM):
        stream = data[:64]
    elif data.startswith(JXL_CONTAINER):
        stream = b""
        for kind, start, end in _boxes(data, 0, len(data)):
            if kind == b"jxlc":
                stream += data[start:end]
            elif kind == b"jxlp":  # a part of the codestream after its 4-byte index
                stream += data[start + 4:end]
            if len(stream) >= 64:
                break
        if not stream.startswith(JXL_CODESTREAM):
            return None
    else:
        return None
    header = stream[2:64]  # after the signature
    bits, left = int.from_bytes(header, "little"), 8 * len(header)  # read from the lowest bit up

    def read(count: int) -> int:
        nonlocal bits, left
        if count > left:
            raise EOFError
        value, bits, left = bits & ((1 << count) - 1), bits >> count, left - count
        return value

    def u32(*choices: tuple[int, int]) -> int:  # one of four (offset, bits that follow)
        offset, count = choices[read(2)]
        return offset + read(count)

    def size(small, large) -> tuple[int, int]:  # height, then a ratio or the width: each read by `small` or `large`
        dimension = small if read(1) else large
        height, ratio = dimension(), read(3)
        width = height * JXL_RATIOS[ratio][0] // JXL_RATIOS[ratio][1] if ratio else dimension()
        return width, height

    image_size = (lambda: 8 * (1 + read(5)), lambda: u32((1, 9), (1, 13), (1, 18), (1, 30)))  # in eighths, or whole
    preview_size = (lambda: 8 * u32((16, 0), (32, 0), (1, 5), (33, 9)),
                    lambda: u32((1, 6), (65, 8), (321, 10), (1345, 12)))
    try:
        width, height = size(*image_size)
        if read(1):  # all_default: 8-bit samples, no extra channel, a still image
            return JXLHeader(width, height, 8)
        animated = False
        if read(1):  # extra_fields
            read(3)  # orientation
            if read(1):  # an intrinsic size
                size(*image_size)
            if read(1):  # a preview
                size(*preview_size)
            animated = bool(read(1))
            if animated:  # ticks a second, loops, timecodes
                u32((100, 0), (1000, 0), (1, 10), (1, 30)), u32((1, 0), (1001, 0), (1, 8), (1, 10))
                u32((0, 0), (0, 3), (0, 16), (0, 32)), read(1)
        if read(1):  # float samples: their bits, then the exponent's
            depth = u32((32, 0), (16, 0), (24, 0), (1, 6))
            read(4)
        else:
            depth = u32((8, 0), (10, 0), (12, 0), (1, 6))
        read(1)  # modular_16bit_buffers
        extra = u32((0, 0), (1, 0), (2, 4), (1, 12))
    except EOFError:
        return None
    return JXLHeader(width, height, depth, extra, animated)


def _boxes(data: bytes, start: int, end: int):
    """(kind, payload start, payload end) of each ISO BMFF box in data[start:end] (JPEG XL's
    container, AVIF's and HEIF's files), a box running past `end` cut there."""
    while start + 8 <= end:
        size, kind, body = int.from_bytes(data[start:start + 4], "big"), data[start + 4:start + 8], start + 8
        if size == 1:  # a 64-bit size follows
            size, body = int.from_bytes(data[body:body + 8], "big"), body + 8
        stop = end if size == 0 else min(end, start + size)
        if stop < body:
            return
        yield kind, body, stop
        start = stop


def _avif_properties(data: bytes, kind: bytes):
    """(payload start, end) of each `kind` property box of an AVIF file (`meta` / `iprp` / `ipco`)."""
    def inside(start: int, end: int, path: tuple[bytes, ...]):
        for box, body, stop in _boxes(data, start, end):
            if box == path[0]:
                yield from inside(body + 4 * (box == b"meta"), stop, path[1:]) if path[1:] else [(body, stop)]

    return inside(0, len(data), (b"meta", b"iprp", b"ipco", kind))


def avif_bits(data: bytes) -> int | None:
    """The bits a sample of an AVIF file's coded images, 8, 10 or 12 (the largest its `av1C`
    properties declare: AV1's high_bitdepth and twelve_bit flags), or None where it declares
    none. Pillow's AVIF reader gives 8 bits a sample whatever the file holds, and says nothing of it."""
    flags = [data[body + 2] for body, stop in _avif_properties(data, b"av1C")
             if stop - body >= 3]  # marker and version; profile and level; tier, high_bitdepth, twelve_bit...
    return max((12 if flag & 0x20 else 10) if flag & 0x40 else 8 for flag in flags) if flags else None


def avif_nclx(data: bytes) -> dict | None:
    """An AVIF file's nclx colour description (its `colr` property of that type: H.273 primaries
    and transfer code points, `colour.nclx_icc`'s input), or None where it has none, or several
    that disagree. Pillow's AVIF reader gives the ICC profile of a `colr` box, not this."""
    points = {data[body + 4:body + 8] for body, stop in _avif_properties(data, b"colr")
              if stop - body >= 11 and data[body:body + 4] == b"nclx"}
    if len(points) != 1:
        return None
    points = points.pop()
    return {"color_primaries": int.from_bytes(points[:2], "big"),
            "transfer_characteristics": int.from_bytes(points[2:], "big")}



def _open_image(data: bytes, max_pixels: int) -> tuple[Image.Image, str]:
    if not data:
        raise ImageError("empty file (0 bytes)")
    jxl = jxl_header(data)
    if jxl:  # a reader that decodes on opening: what it would decode asked first
        _check_jxl(jxl, max_pixels)
    _allow_in_pillow(max_pixels)
    image = None
    try:
        image = Image.open(io.BytesIO(data))
        # a transparency key (a PNG's tRNS, a GIF's transparent index) is an alpha channel in
        # all but name: recorded as the mode with alpha, and kept as one
        mode = KEYED_ALPHA.get(image.mode, image.mode) if "transparency" in image.info else image.mode
        raw = _raw_mode(image)
        if image.mode == "RGBA" and raw.startswith("LA"):  # Pillow reads 16-bit LA as RGBA
            mode = "LA"
        low = {"L;2": 2, "L;4": 4}.get(raw) if image.mode == "L" else None
        if low and isinstance(image.info.get("transparency"), int):  # scaled as the samples are
            image.info["transparency"] *= 255 // ((1 << low) - 1)  # (Pillow compares it unscaled)
        bits = _sample_bits(image, jxl.bits if jxl else avif_bits(data) if image.format == "AVIF" else None)
        if image.format == "AVIF" and "icc_profile" not in image.info and (nclx := avif_nclx(data)):
            image.info["nclx_profile"] = nclx  # as pillow-heif gives a HEIF's (`decode_image_and_metadata`)
        mode += f";{bits}" if f"{mode};{bits}" in WIDE_MODES else ""
        mode += EXTRA_CHANNELS if jxl and jxl.extra_channels > (image.mode in ALPHA_MODES) else ""
        _check_pixels(image.size, max_pixels)
        image.load()
    except ImageError:
        raise
    except Image.DecompressionBombError as e:
        raise ImageError(f"refused as a possible decompression bomb: {e}") from None
    except Image.UnidentifiedImageError:
        raise ImageError("not an image file Pillow can read (unknown or corrupt format)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageError(f"corrupt or truncated image: {e}") from None
    except RuntimeError:  # a plugin's decoder on damaged data (pillow-jxl-plugin's says "build libjxl")
        decoder = f"the {image.format} decoder" if image is not None and image.format else "its decoder"
        raise ImageError(f"corrupt or truncated image: {decoder} refused it") from None
    except MemoryError:
        raise ImageError("its reader ran out of memory (a corrupt image, or too big for this machine)") from None
    except Exception as e:  # a damaged field of a type Pillow does not expect (a TIFF's strip offsets as fractions)
        raise ImageError(f"corrupt image: {type(e).__name__}: {e}") from None
    return image, mode


def _check_pixels(size: tuple[int, int], max_pixels: int):
    if size[0] * size[1] > max_pixels:
        raise ImageError(f"image of {size[0]}x{size[1]} pixels is over the limit of {max_pixels} "
                         f"pixels (decompression-bomb guard); refused")


def _check_jxl(header: JXLHeader, max_pixels: int):
    """Refuse, before pillow-jxl-plugin decodes it, a JPEG XL over the pixel limit, one whose
    channels (3 of colour and its extra ones, all decoded) hold more samples than an RGBA image at
    the limit, and an animation (the plugin decodes every frame and gives the last, not the first
    that rgbatch keeps of other animations)."""
    if header.animated:
        raise ImageError("an animated JPEG XL: its reader decodes every frame and gives the last, not the first "
                         "that rgbatch keeps of an animation; refused (save its first frame as a still image)")
    _check_pixels(header[:2], max_pixels)
    planes = 3 + header.extra_channels
    if planes > 4 and header.width * header.height * planes > 4 * max_pixels:
        raise ImageError(f"image of {header.width}x{header.height} pixels with {header.extra_channels} extra "
                         f"channels (each decoded beside the colour) holds more samples than {max_pixels} pixels "
                         f"of RGBA, the limit (decompression-bomb guard); refused")


def _sample_bits(image: Image.Image, declared: int | None = None) -> int:
    """The bits a sample of an opened (not yet loaded) RGB or RGBA image's file, where they are
    more than the 8 that Pillow's mode holds, else 8: 16-bit RGB, RGBA and LA PNGs and TIFFs and
    16-bit PPMs, read keeping each sample's high byte (a PPM's scaled to 255; their decoder's raw
    mode or a PPM's maximum value says so), 10- or 12-bit HEIF (pillow-heif's `bit_depth`), and
    JPEG XL and AVIF of more than 8 bits (their headers' bits: `declared`)."""
    bits = image.info.get("bit_depth") if declared is None else declared
    if isinstance(bits, int) and bits > 8:
        return next((wide for wide in (10, 12, 16) if wide >= bits), 16)  # deeper and float: said as 16
    if not image.tile:
        return 8
    codec, args = image.tile[0][0], _tile_args(image)
    if codec == "ppm":
        return 16 if len(args) > 1 and isinstance(args[1], int) and args[1] > 255 else 8
    return 16 if ";16" in _raw_mode(image) else 8


def _tile_args(image: Image.Image) -> tuple:
    """The arguments of the decoder of an opened, not yet loaded, image's first tile."""
    if not image.tile:
        return ()
    args = image.tile[0][3]
    return (args,) if isinstance(args, str) else tuple(args or ())


def _raw_mode(image: Image.Image) -> str:
    """The raw mode of an opened, not yet loaded, image's file ("LA;16B", "L;4"...; "": not said)."""
    args = _tile_args(image)
    return args[0] if args and isinstance(args[0], str) else ""


BAND_PIXELS = 1 << 20  # pixels converted at once: a 100 MP image needs its Pillow image, the array and 6 MB


def _without_orientation(image: Image.Image):
    """Take the orientation tag out of an image's EXIF block, unapplied: a JPEG XL's pixels are
    turned by its codestream's orientation as libjxl decodes them, and an EXIF orientation is
    ignored (ISO/IEC 18181-2; libjxl's encoder sets it to 1 as it moves it into the codestream), so
    that an image whose EXIF still says another (Pillow writes one as it is) is stored as every JPEG
    XL viewer shows it, and restored without a tag that would turn it again."""
    exif = image.getexif()
    if exif.get(ExifTags.Base.Orientation, 1) != 1:
        del exif[ExifTags.Base.Orientation]
        image.info["exif"] = exif.tobytes()


def to_rgb(image: Image.Image) -> np.ndarray:
    """Any Pillow image -> upright HxWx3 uint8 RGB (see the table above), converted band by
    band into one array: besides the decoded image, only the result and one band are held."""
    try:
        if image.format == "JXL" and not getattr(image, "jpeg", False):
            _without_orientation(image)  # its decoder has turned it by the codestream's orientation
        else:  # a JPEG XL holding a JPEG: that JPEG's pixels and EXIF (pillow-jxl-plugin's `jpeg`)
            ImageOps.exif_transpose(image, in_place=True)
    except Exception:  # a broken EXIF block must not lose the picture itself
        pass
    top, transform = _white(image), cmyk_transform(image)
    rgb = np.empty((image.height, image.width, 3), np.uint8)
    for rows, band in _bands(image):
        rgb[rows] = _band_to_rgb(band, top) if transform is None else ImageCms.applyTransform(band, transform)
    return rgb


def _bands(image: Image.Image):
    """(rows, the image's band of those rows) of at most BAND_PIXELS pixels each, top to bottom."""
    step = max(1, BAND_PIXELS // image.width)
    for y in range(0, image.height, step):
        yield slice(y, y + step), image.crop((0, y, image.width, min(y + step, image.height)))


def _white(image: Image.Image) -> float | None:
    """The value of white of a grey image of more than 8 bits a sample (None: any other): 65535
    where the file says 16 bits (16-bit PNGs and TIFFs, and PGMs, whose maximum value Pillow
    scales to 65535: a dark PGM was read as 8 bits, bright, until session 60); else, a 32-bit
    integer image's by its values (65535 if any is over 255, else 255) and a float image's (1.0 if
    none is over 1.0, else 255: HDR values over 1.0 are read so, not tone-mapped)."""
    if image.mode.startswith("I;16") or (image.mode == "I" and (
            image.format in ("PPM", "PNG") or _tiff_bits(image) == 16)):
        return 65535.0
    if image.mode not in ("I", "F"):
        return None
    high = image.getextrema()[1]
    if image.mode == "F":
        if not np.isfinite(high):  # a NaN or infinity among the values: white was 255, and an image
            high = _finite_max(image)  # of 0..1 stored black, until session 62
        return 1.0 if high <= 1.0 else 255.0
    return 65535.0 if high > 255 else 255.0


def _finite_max(image: Image.Image) -> float:
    """The largest finite value of a float image (0.0: none), band by band as `to_rgb`."""
    high = 0.0
    for _, band in _bands(image):
        values = np.asarray(band, dtype=np.float32)
        high = max(high, float(np.max(values, where=np.isfinite(values), initial=0.0)))
    return high


def _tiff_bits(image: Image.Image) -> int | None:
    """A TIFF's bits a sample (None: not a TIFF, or not said)."""
    bits = getattr(image, "tag_v2", {}).get(258) if image.format == "TIFF" else None
    bits = bits[0] if isinstance(bits, tuple) and bits else bits
    return bits if isinstance(bits, int) else None


def _band_to_rgb(image: Image.Image, top: float | None) -> np.ndarray:
    if top is not None:
        array = np.nan_to_num(np.asarray(image, dtype=np.float64) / top * 255, nan=0.0)  # NaN black, inf white
        image = Image.fromarray(np.clip(np.round(array), 0, 255).astype(np.uint8), "L")
    if image.mode == "La":  # premultiplied grey: Pillow converts it to LA only
        image = image.convert("LA")
    if image.mode in ALPHA_MODES or (image.mode == "P" and "transparency" in image.info):
        # a palette's transparency table through RGBA, as Pillow advises: straight to RGB it printed
        # its warning ("Palette images with Transparency expressed in bytes...") until session 62
        image = image.convert("RGBA").convert("RGB") if image.mode != "RGBA" else image.convert("RGB")
    elif image.mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image, dtype=np.uint8)


def to_alpha(image: Image.Image) -> np.ndarray:
    """The alpha channel of an upright Pillow image that has one (or a transparency key), HxW
    uint8, band by band as `to_rgb`; premultiplied modes (RGBa, La) through Pillow's RGBA."""
    alpha = np.empty((image.height, image.width), np.uint8)
    key = _grey_key(image)
    for rows, band in _bands(image):
        if key is not None:
            alpha[rows] = np.where(np.asarray(band).astype(np.int64) == key, 0, 255)
            continue
        band = band.convert("LA") if band.mode == "La" else band  # premultiplied grey: to LA only
        band = band if band.mode in ("RGBA", "LA") else band.convert("RGBA")
        alpha[rows] = np.asarray(band.getchannel("A"), dtype=np.uint8)
    return alpha


def _grey_key(image: Image.Image) -> int | None:
    """A grey image's transparency key as its loaded samples hold it (None: none): a 1-bit
    image's 0 or 1 (Pillow says 0 or 255); a 2- or 4-bit PNG's was scaled to 8 bits on opening."""
    key = image.info.get("transparency")
    if image.mode not in GREY_KEYED or not isinstance(key, int):
        return None
    return int(key != 0) if image.mode == "1" else key


def encode_alpha(alpha: np.ndarray | None) -> bytes | None:
    """An alpha channel (HxW uint8) as archives and stream files keep it, losslessly: an 8-bit
    grey PNG; b"" for an opaque one (every pixel 255: nothing to store); None for none."""
    if alpha is None:
        return None
    if alpha.min() == 255:
        return b""
    buffer = io.BytesIO()
    Image.fromarray(alpha, "L").save(buffer, format="PNG")
    return buffer.getvalue()


def decode_alpha(data: bytes, width: int, height: int) -> np.ndarray:
    """`encode_alpha`'s bytes -> the HxW uint8 alpha channel of a width x height image (b"": every
    pixel 255), or ImageError saying why they are not that (another format, mode or size, a
    damaged PNG)."""
    if not data:
        return np.full((height, width), 255, np.uint8)
    try:
        image, _ = open_image(data, max(1, width * height))
    except ImageError as e:
        raise ImageError(f"damaged alpha channel: {e}") from None
    if image.format != "PNG" or image.mode != "L" or image.size != (width, height):
        raise ImageError(f"damaged alpha channel: a {image.format} {image.mode} image of {image.size[0]}x"
                         f"{image.size[1]} pixels, not an 8-bit grey PNG of {width}x{height}")
    return np.asarray(image, dtype=np.uint8)


def read_image(path, max_pixels: int = MAX_PIXELS) -> tuple[np.ndarray, str]:
    """A local image file -> (HxWx3 uint8 array, source mode)."""
    if not isinstance(path, (str, os.PathLike)):  # open() takes a number as a file descriptor
        raise OptionError("path", f"is {path!r}: give a file's path")
    check_count("max_pixels", max_pixels, 1)
    with open(path, "rb") as f:
        return decode_image(f.read(), max_pixels)


def encode_png(image: np.ndarray, metadata: Metadata = Metadata(), text: dict[str, str] | None = None,
               alpha: np.ndarray | None = None, grey: bool = False) -> bytes:
    """A PNG of the HxWx3 uint8 array (RGBA with an HxW `alpha`), with the ICC profile (iCCP),
    EXIF (eXIf), XMP (iTXt `XML:com.adobe.xmp`) and notes (text chunks, pHYs) given, and `text`
    as tEXt chunks (before the pixels: `png_text` reads them without decoding). With `grey`, an 8-bit grey PNG (LA with
    `alpha`) of the channels' mean, rounded: a grey source's restored image, whose decoded
    channels differ by the codec's colour noise (up to 60 levels at depth 1, 20 at depth 16 on a
    grey Kodak crop; the mean is nearer the source at every depth, MSE 1-11 % lower, MS-SSIM
    0.0003-0.008 higher)."""
    options = {k: v for k, v in metadata._asdict().items() if v}
    if grey and options.get("icc_profile", b"")[16:20] == b"RGB ":  # the PNG format forbids an RGB profile on
        del options["icc_profile"]  # grey pixels (a grey source's that had one: written so until session 62)
    xmp = options.pop("xmp", None)  # Pillow writes no PNG's XMP: the iTXt chunk XMP's specification names
    notes, dpi = unpack_notes(options.pop("notes", None))
    if dpi:
        options["dpi"] = dpi
    if text or xmp or notes:
        info = PngImagePlugin.PngInfo()
        for key, value in {**notes, **(text or {})}.items():  # iTXt where not Latin-1, compressed where long
            info.add_text(key, value, zip=len(value) > 1024)
        if xmp:
            info.add_itxt("XML:com.adobe.xmp", xmp.decode("utf-8"))
        options["pnginfo"] = info
    buffer = io.BytesIO()
    if grey:
        picture = Image.fromarray(((image.sum(axis=2, dtype=np.uint16) + 1) // 3).astype(np.uint8), "L")
    else:
        picture = Image.fromarray(image, "RGB")
    if alpha is not None:
        picture.putalpha(Image.fromarray(alpha, "L"))
    picture.save(buffer, format="PNG", **options)
    return buffer.getvalue()


def png_text(file) -> dict[str, str]:
    """The tEXt chunks before the pixels of a PNG file object (`encode_png`'s `text`); {} for
    anything that is not a readable PNG. Reads the header chunks only."""
    try:
        with Image.open(file, formats=["PNG"]) as image:
            return {k: v for k, v in image.info.items() if isinstance(k, str) and isinstance(v, str)}
    except Exception:  # not a PNG, truncated, a decompression bomb's header: none of ours
        return {}
