"""The rgbatch bitstream, format v2 (documented in docs/FORMAT.md; v1 streams still read).

    header  magic "RGBC", version, coder id, iterations k, bits per position, model id,
            width, height, tile size, scale code, steps of the last chunk, then k x (chunk length,
            chunk CRC-32), header CRC-32
    chunks  k payloads, one per iteration, each holding that iteration's bits of every tile (the
            last one, when `steps` is not 0, only the first `steps` of its 2 x bits coding steps);
            in version 2 each chunk starts with the iteration's post-filter record (rgbatch.postfilter),
            which this module does not read: a chunk is bytes here

    trailer (optional: stream files of `rgbatch encode`) magic "RGBM", the lengths of an ICC
            profile and of an EXIF block, the two, CRC-32 of the trailer; or, for an image with
            an alpha channel, magic "RGBT": the same with the alpha channel's length and bytes
            (an 8-bit grey PNG; length 0: opaque) after the EXIF block; "RGBX" adds an XMP packet
            (session 63), "RGBN" an XMP packet and notes (text chunks, resolution: session 64)

A reader that wants depth j <= k reads the header and the first j chunks only; `truncate`
cuts a stream to depth j without touching a bit of the chunks it keeps (nor its trailer). The
stream ends with its last chunk or its trailer: a blob with other bytes after the last chunk is
refused. What a header may declare beyond the format's own rules (sizes, tiles, chunk lengths
per coder) is bounded in `limits.py`.

width x height is the image's size, what decoding returns; with a scale code other than 0
(rgbatch.resample) the network coded it at `coded_size`, which the tile grid follows, and the
decoder scales it back up.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from .imageio import MAX_METADATA_BYTES, Metadata, is_utf8, unpack_notes
from .options import OptionError
from .resample import SCALES, coded_size
from .tiling import check_tile_size

MAGIC = b"RGBC"
TILE_MULTIPLE = 32  # a stream's tile size is 0 or a multiple of this (a model may ask for a larger multiple)
VERSION = 2  # what `pack` writes: chunks start with a post-filter record (since session 30)
VERSIONS = (1, 2)  # what `read_header` reads
_FIXED = struct.Struct("<4sBBBB8sIIHBB")  # magic .. scale code, steps of the last chunk: 28 bytes
RAW_CODER_ID = 0  # entropy.RawCoder's: it codes whole iterations only (no partial last chunk)
_CHUNK = struct.Struct("<II")  # length, crc32
_CRC = struct.Struct("<I")
TRAILER_MAGIC = b"RGBM"
_TRAILER = struct.Struct("<4sII")  # magic, ICC profile length, EXIF length; then the two, then a CRC-32
ALPHA_TRAILER_MAGIC = b"RGBT"  # the same, and the alpha channel (since session 25)
_ALPHA_TRAILER = struct.Struct("<4sIII")  # magic, ICC profile, EXIF and alpha channel lengths
XMP_TRAILER_MAGIC = b"RGBX"  # the same, and an XMP packet (since session 63)
_XMP_TRAILER = struct.Struct("<4sIIII")  # magic, ICC profile, EXIF, alpha channel (NO_ALPHA: none) and XMP lengths
NOTES_TRAILER_MAGIC = b"RGBN"  # the same, and notes: text chunks and resolution as JSON (since session 64)
_NOTES_TRAILER = struct.Struct("<4sIIIII")  # magic, ICC profile, EXIF, alpha channel (or NO_ALPHA), XMP, notes lengths
NO_ALPHA = 0xFFFFFFFF
_LAYOUTS = {TRAILER_MAGIC: _TRAILER, ALPHA_TRAILER_MAGIC: _ALPHA_TRAILER, XMP_TRAILER_MAGIC: _XMP_TRAILER,
            NOTES_TRAILER_MAGIC: _NOTES_TRAILER}


def max_alpha_bytes(width: int, height: int) -> int:
    """The most bytes a trailer's alpha channel may take: an 8-bit grey PNG of width x height
    stores at most each row's bytes and filter byte, and its zlib and chunk framing; twice that
    and 64 KiB bounds it (and what a forged length can make a reader allocate)."""
    return 2 * (width + 1) * height + 65536


class BitstreamError(ValueError):
    """A code blob that cannot be decoded, with the reason."""


@dataclass(frozen=True)
class Header:
    coder_id: int
    iterations: int
    bits: int
    model_id: str  # 16 hex digits
    width: int
    height: int
    tile_size: int
    chunk_lengths: tuple[int, ...]
    chunk_crcs: tuple[int, ...]
    scale: int = 0  # rgbatch.resample's code: 0, the image coded as it is
    steps: int = 0  # coding steps the last chunk holds: 0, all of them (docs/FORMAT.md, "Partial last chunk")
    version: int = VERSION  # 1: chunks without post-filter records

    def steps_at(self, iterations: int) -> int:
        """Steps of the last chunk of this stream read to `iterations` (0: whole): only the
        stream's own last chunk may be partial."""
        return self.steps if iterations == self.iterations else 0

    @property
    def coded_size(self) -> tuple[int, int]:
        """(width, height) the network coded: the tile grid's size."""
        return coded_size(self.width, self.height, self.scale)

    @property
    def size(self) -> int:
        return header_size(self.iterations)

    def cumulative_bytes(self) -> list[int]:
        """Bytes of the whole stream when cut to depth 1, 2, ..., k."""
        return cumulative_bytes(self.chunk_lengths)

    def whole_iterations(self, length: int) -> int:
        """How many iterations the first `length` bytes of the stream hold whole: all k where
        nothing is missing, fewer where the stream was cut short (an interrupted download or copy;
        `unpack` checks their checksums as it reads them)."""
        end, whole = self.size, 0
        for n in self.chunk_lengths:
            end += n
            if end > length:
                break
            whole += 1
        return whole


def header_size(iterations: int) -> int:
    return _FIXED.size + iterations * _CHUNK.size + _CRC.size


def cumulative_bytes(chunk_lengths) -> list[int]:
    """Bytes of a stream of these chunks when cut to depth 1, 2, ..., k (header included)."""
    total, out = 0, []
    for t, n in enumerate(chunk_lengths, start=1):
        total += n
        out.append(header_size(t) + total)
    return out


def pack(*, coder_id: int, bits: int, model_id: str, width: int, height: int, tile_size: int,
         chunks: list[bytes], scale: int = 0, steps: int = 0, version: int = VERSION) -> bytes:
    """The stream of an image of width x height pixels, coded at scale `scale` (0: as it is),
    its last chunk holding the first `steps` coding steps of its iteration (0: all), in format
    `version` (the chunks must be that version's)."""
    if not 1 <= len(chunks) <= 255:
        raise ValueError(f"a stream holds 1..255 iterations, not {len(chunks)}")
    if scale not in SCALES:
        raise ValueError(f"scale code {scale} is not one of {sorted(SCALES)}")
    problem = _steps_problem(steps, bits, coder_id)
    if problem:
        raise ValueError(problem)
    if version not in VERSIONS:
        raise ValueError(f"format version {version} is not one of {VERSIONS}")
    head = _FIXED.pack(MAGIC, version, coder_id, len(chunks), bits, bytes.fromhex(model_id),
                       width, height, tile_size, scale, steps)
    head += b"".join(_CHUNK.pack(len(c), zlib.crc32(c)) for c in chunks)
    head += _CRC.pack(zlib.crc32(head))
    return head + b"".join(chunks)


def read_header(blob: bytes) -> Header:
    """The header of a stream (or of any prefix that holds it), checked: its checksum, the
    values the format allows, and that what follows the last chunk, if anything, is one intact
    metadata trailer."""
    try:
        blob = memoryview(blob)
    except TypeError:  # None, a str: the caller's mistake, not a damaged stream
        raise OptionError("blob", f"is a {type(blob).__name__}: give the stream's bytes") from None
    if len(blob) < _FIXED.size:
        raise BitstreamError(f"truncated: {len(blob)} bytes is shorter than any rgbatch header")
    magic, version, coder_id, k, bits, mid, width, height, tile, scale, steps = _FIXED.unpack_from(blob)
    if magic != MAGIC:
        raise BitstreamError("not an rgbatch code (wrong magic bytes)")
    if version not in VERSIONS:
        raise BitstreamError(f"format version {version} is not supported (this rgbatch reads versions "
                             f"{', '.join(map(str, VERSIONS))})")
    end = header_size(k)
    if len(blob) < end:
        raise BitstreamError(f"truncated header: needs {end} bytes, has {len(blob)}")
    (crc,) = _CRC.unpack_from(blob, end - _CRC.size)
    if crc != zlib.crc32(blob[:end - _CRC.size]):
        raise BitstreamError("corrupted header (checksum mismatch)")
    table = list(_CHUNK.iter_unpack(blob[_FIXED.size:_FIXED.size + k * _CHUNK.size]))  # (length, CRC-32) each
    if k == 0 or width == 0 or height == 0 or bits == 0:
        raise BitstreamError(f"invalid header: {k} iterations of {bits} bits of a {width}x{height} image")
    problem = _steps_problem(steps, bits, coder_id)
    if problem:
        raise BitstreamError(f"invalid header: {problem}")
    if scale not in SCALES:
        raise BitstreamError(f"invalid header: scale code {scale} is not one of {sorted(SCALES)} (a newer format?)")
    try:
        check_tile_size(tile, TILE_MULTIPLE)
    except OptionError as e:
        raise BitstreamError(f"invalid header: tile size {e.reason}") from None
    lengths, crcs = zip(*table) if table else ((), ())
    stream_end = end + sum(lengths)
    header = Header(coder_id, k, bits, mid.hex(), width, height, tile, lengths, crcs, scale, steps, version)
    if len(blob) > stream_end:
        _read_trailer(blob, stream_end, header)
    return header


def with_metadata(blob: bytes, metadata: Metadata, alpha: bytes | None = None) -> bytes:
    """The stream with `metadata` (ICC profile, EXIF, XMP, notes) and `alpha` (an alpha channel as
    `imageio.encode_alpha` makes it; b"": an opaque one; None: none) in its trailer, replacing
    any it had; the stream alone when there is none of them (docs/FORMAT.md, "Metadata trailer")."""
    header = read_header(blob)
    end = _stream_end(header)
    if len(blob) < end:
        raise ValueError(f"a trailer follows a whole stream: this one is cut at byte {len(blob)} of {end}")
    stream = blob[:end]
    icc, exif, xmp, notes = (field or b"" for field in metadata)
    if not icc and not exif and not xmp and not notes and alpha is None:
        return stream
    for name, field in (("an ICC profile", icc), ("an EXIF block", exif), ("an XMP packet", xmp), ("notes", notes)):
        if len(field) > MAX_METADATA_BYTES:
            raise ValueError(f"{name} of {len(field)} bytes is over the trailer's {MAX_METADATA_BYTES} bytes")
    xmp.decode("utf-8")  # UnicodeDecodeError (a ValueError): the format's XMP is UTF-8
    unpack_notes(notes)  # ValueError: not what pack_notes makes
    if alpha is not None and len(alpha) > max_alpha_bytes(header.width, header.height):
        raise ValueError(f"an alpha channel of {len(alpha)} bytes is over the trailer's "
                         f"{max_alpha_bytes(header.width, header.height)} for a {header.width}x{header.height} image")
    if notes:  # the layouts before session 64's byte for byte where there are none
        trailer = (_NOTES_TRAILER.pack(NOTES_TRAILER_MAGIC, len(icc), len(exif),
                                       NO_ALPHA if alpha is None else len(alpha), len(xmp), len(notes))
                   + icc + exif + (alpha or b"") + xmp + notes)
    elif xmp:  # the layouts before session 63's byte for byte where there is none
        trailer = (_XMP_TRAILER.pack(XMP_TRAILER_MAGIC, len(icc), len(exif), NO_ALPHA if alpha is None else len(alpha),
                                     len(xmp)) + icc + exif + (alpha or b"") + xmp)
    elif alpha is None:
        trailer = _TRAILER.pack(TRAILER_MAGIC, len(icc), len(exif)) + icc + exif
    else:
        trailer = _ALPHA_TRAILER.pack(ALPHA_TRAILER_MAGIC, len(icc), len(exif), len(alpha)) + icc + exif + alpha
    return stream + trailer + _CRC.pack(zlib.crc32(trailer))


def read_metadata(blob: bytes) -> Metadata:
    """The ICC profile, EXIF block, XMP packet and notes of a stream's trailer (None without one), checked."""
    return read_trailer(blob)[0]


def read_trailer(blob: bytes) -> tuple[Metadata, bytes | None]:
    """The metadata and the alpha channel of a stream's trailer (its bytes; b"": opaque; None:
    none), checked."""
    header = read_header(blob)
    end = _stream_end(header)
    return _read_trailer(memoryview(blob), end, header) if len(blob) > end else (Metadata(), None)


def _stream_end(header: Header) -> int:
    return header.size + sum(header.chunk_lengths)


def _read_trailer(blob: memoryview, start: int, header: Header) -> tuple[Metadata, bytes | None]:
    """The trailer from byte `start` (the end of the last chunk) to the end of `blob`, or
    BitstreamError: bytes there that are not exactly one whole, intact trailer are refused."""
    extra = len(blob) - start
    magic = bytes(blob[start:start + 4])
    layout = _LAYOUTS.get(magic)
    if layout is None or extra < layout.size + _CRC.size:
        raise BitstreamError(f"{extra} bytes after the last chunk (the stream ends at byte {start}) are not a "
                             f"metadata trailer; refused")
    lengths = list(layout.unpack_from(blob, start)[1:])
    alpha_none = layout is _TRAILER or (len(lengths) > 3 and lengths[2] == NO_ALPHA)
    if len(lengths) > 3 and alpha_none:
        lengths[2] = 0
    bounds = (MAX_METADATA_BYTES, MAX_METADATA_BYTES, max_alpha_bytes(header.width, header.height), MAX_METADATA_BYTES,
              MAX_METADATA_BYTES)
    for length, bound in zip(lengths, bounds):
        if length > bound:
            raise BitstreamError(f"invalid metadata trailer: a field of {length} bytes is over the limit of {bound}")
    need = layout.size + sum(lengths) + _CRC.size
    if extra != need:
        raise BitstreamError(f"{'truncated' if extra < need else 'invalid'} metadata trailer: its fields need "
                             f"{need} bytes after the last chunk, {extra} are there")
    body_end = start + need - _CRC.size
    if _CRC.unpack_from(blob, body_end)[0] != zlib.crc32(blob[start:body_end]):
        raise BitstreamError("corrupted metadata trailer (checksum mismatch)")
    fields, at = [], start + layout.size
    for length in lengths:
        fields.append(bytes(blob[at:at + length]))
        at += length
    alpha = None if alpha_none else fields[2]
    xmp, notes = (fields + [b""] * 3)[3:5]
    if not is_utf8(xmp):  # decode's PNG writer stopped on it (session 63's review)
        raise BitstreamError("invalid metadata trailer: its XMP packet is not UTF-8")
    try:
        unpack_notes(notes)
    except ValueError as e:
        raise BitstreamError(f"invalid metadata trailer: {e}") from None
    return Metadata(fields[0] or None, fields[1] or None, xmp or None, notes or None), alpha


def _steps_problem(steps: int, bits: int, coder_id: int) -> str:
    """Why `steps` cannot be a stream's steps of the last chunk ("" if it can): 0, or 1 .. 2 x bits - 1
    for the context coders; the raw coder codes whole iterations only."""
    if steps and coder_id == RAW_CODER_ID:
        return f"the raw coder codes whole iterations, but the last chunk holds {steps} steps"
    if steps and not steps < 2 * bits:
        return f"the last chunk holds {steps} steps, not 0 (whole) or 1..{2 * bits - 1}"
    return ""


def unpack(blob: bytes, iterations: int | None = None) -> tuple[Header, list[bytes]]:
    """Header and the first `iterations` chunks (all by default), every checksum verified."""
    header = read_header(blob)
    k = header.iterations if iterations is None else iterations
    if not 1 <= k <= header.iterations:
        raise BitstreamError(f"the stream holds {header.iterations} iterations; cannot decode {k}")
    return header, [bytes(chunk) for chunk in _checked_chunks(blob, header, k)]


def check(blob: bytes) -> Header:
    """The header of a whole stream, every checksum verified, no chunk copied (`verify`)."""
    header = read_header(blob)
    for _ in _checked_chunks(blob, header, header.iterations):
        pass
    return header


def _checked_chunks(blob: bytes, header: Header, k: int):
    """The first `k` chunks of a stream as views into it, each checked against its CRC-32."""
    view, offset = memoryview(blob), header.size
    for t in range(k):
        n = header.chunk_lengths[t]
        chunk = view[offset:offset + n]
        if len(chunk) < n:
            raise BitstreamError(f"truncated: iteration {t + 1} needs {n} bytes, only {len(chunk)} are there")
        if zlib.crc32(chunk) != header.chunk_crcs[t]:
            raise BitstreamError(f"corrupted data in iteration {t + 1} (checksum mismatch)")
        yield chunk
        offset += n


def truncate(blob: bytes, iterations: int) -> bytes:
    """The same stream cut to its first `iterations` iterations (a partial last chunk is kept only
    when `iterations` is the stream's own: the chunks before it are whole)."""
    header, chunks = unpack(blob, iterations)
    cut = pack(coder_id=header.coder_id, bits=header.bits, model_id=header.model_id, width=header.width,
               height=header.height, tile_size=header.tile_size, chunks=chunks, scale=header.scale,
               steps=header.steps_at(iterations), version=header.version)
    return cut + bytes(blob[_stream_end(header):])  # the trailer, if any: the image's at every depth
