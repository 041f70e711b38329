"""One archive row: a source image as the manifest stores it (schema: docs/ARCHIVE.md).

The last stage of the codec's way down (rgbatch.codes):

    Source --sources.read_source--> Row (what reading learned) --Row.from_encoded(EncodedImage)--> ok Row
                                    Row.failed(why) ------------------------------------------> error Row

and the first on the way back: `Archive.rows()` (rgbatch.manifest) yields `Row`s, whose
`encoded()` is the `EncodedImage` of their blob and stats, so that cutting a row to a depth
and choosing the depth of a `Target` are the codes module's (`cut`, `keep`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .ratecontrol import Target
from .resample import SCALES

if TYPE_CHECKING:
    from .codes import EncodedImage
    from .imageio import Metadata

SCHEMA = pa.schema([
    ("path", pa.string()),  # relative to the sources' common root, '/'-separated
    ("source", pa.string()),  # where it was read from at compress time (local path or URI)
    ("source_hash", pa.string()),  # sha256 of the source file's bytes, hex
    ("source_bytes", pa.int64()),
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("mode", pa.string()),  # Pillow mode of the source, before conversion to RGB
    ("model_id", pa.string()),
    ("tile_size", pa.int32()),
    ("iterations", pa.int16()),  # depth stored in the blob
    ("coder", pa.string()),
    ("blob", pa.large_binary()),  # the progressive bitstream (docs/FORMAT.md)
    ("bytes", pa.list_(pa.int64())),  # per depth 1..iterations: stream size cut to that depth
    ("bpp", pa.list_(pa.float64())),
    ("msssim", pa.list_(pa.float64())),
    ("psnr", pa.list_(pa.float64())),
    ("status", pa.string()),  # "ok" or "error"
    ("error", pa.string()),  # why, for a user, when status is "error"
    ("read_seconds", pa.float64()),  # read, hash and decode of the source
    ("encode_seconds", pa.float64()),  # its share (by pixels) of its batch's encode time
    ("written_at", pa.timestamp("us", tz="UTC")),
    # added within format 1 (docs/ARCHIVE.md): a part written before them reads them as null
    ("scale", pa.float64()),  # each side coded at this scale of the image's (1, 0.75, 0.5: the header's scale code)
    ("last_steps", pa.int16()),  # coding steps the last chunk holds: 0 when whole (a partial last chunk otherwise)
    ("icc_profile", pa.binary()),  # the source's RGB ICC profile (rgbatch.imageio.Metadata); null: none, or not kept
    ("exif", pa.binary()),  # the source's EXIF block without its orientation tag; null: none, or not kept
    ("frames", pa.int32()),  # frames or pages of a source that has several (only the first is archived); null: one
    ("alpha", pa.binary()),  # the source's alpha channel, losslessly (rgbatch.imageio.encode_alpha); null: none, or opaque
    ("alpha_bytes", pa.int64()),  # its size beside the blob; 0: an opaque alpha channel (not stored); null: none
    # the source's modification time when read, where it was older than the reading by RACY_SECONDS
    # (sources.read_source): a rerun skips a source of this size and time unread; null: hashed again
    ("source_mtime", pa.timestamp("us", tz="UTC")),
    # the compress options that made the blob (pipeline.CompressOptions.shaping): a later source of
    # the same bytes takes this row's blob where its run's options and model are the same; null: not
    # known (a part older than session 48, a row `compact` cut to a smaller depth)
    ("options", pa.string()),
    # since session 50 (format 2): the sha256 of the blob, hex, on every ok row written since; a
    # row whose `shared_blob` is true stores no blob of its own (`blob` null) but the same bytes
    # as a row whose `blob` they are (`manifest.PartWriter`: a source of the same bytes as
    # another, the same stream stored once); null, false: the row's blob is its own
    ("blob_sha256", pa.string()),
    ("shared_blob", pa.bool_()),
    # since session 63: the source's XMP packet (UTF-8, without tiff:Orientation); null: none, not kept
    ("xmp", pa.binary()),
    # since session 64: the source's text chunks, comment and resolution (imageio.pack_notes: UTF-8 JSON); null: none
    ("notes", pa.binary()),
])
ADDED_COLUMNS = ("scale", "last_steps", "icc_profile", "exif", "frames", "alpha", "alpha_bytes", "source_mtime",
                 "options", "blob_sha256", "shared_blob", "xmp", "notes")
COLUMNS = SCHEMA.names


def schema_of(columns: list[str]) -> pa.Schema:
    """The manifest schema of these columns, in this order."""
    return pa.schema([SCHEMA.field(c) for c in columns])


def digests(hashes: pa.Array | pa.ChunkedArray, hex_digits: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(the sha256 digests in `hashes` (hex) as bytes, their first `hex_digits` / 2 bytes, in a
    numpy array of that width, a mask of the entries that are one): 32 bytes of memory each, where
    a hex digest as a Python string takes about 100. Null and other text (no sha256) are masked out."""
    sha256 = pc.fill_null(pc.match_substring_regex(hashes, "^[0-9a-f]{64}$"), False)
    heads = pc.utf8_slice_codeunits(hashes.filter(sha256), 0, hex_digits).to_numpy(zero_copy_only=False)
    return (np.frombuffer(bytes.fromhex(heads.astype(f"S{hex_digits}").tobytes().decode()), f"S{hex_digits // 2}"),
            sha256.to_numpy(zero_copy_only=False))


def hash_keys(hashes: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """(the first 8 bytes of each sha256 in `hashes` as uint64, a mask of the entries that are one,
    as `digests`): a source's bytes in 8 bytes of memory."""
    heads, sha256 = digests(hashes, 16)
    return np.frombuffer(heads.tobytes(), ">u8").astype(np.uint64), sha256


DESCRIPTIONS = ("icc_profile", "exif", "xmp", "notes")  # imageio.Metadata's fields, each at most MAX_METADATA_BYTES
METADATA_COLUMNS = (*DESCRIPTIONS, "alpha")  # restored with the pixels, read with the blobs (not stats)
STATS_COLUMNS = [c for c in COLUMNS if c != "blob" and c not in METADATA_COLUMNS]
PER_DEPTH = ("bytes", "bpp", "msssim", "psnr")

OK, ERROR = "ok", "error"  # the statuses a manifest holds
UNCHANGED = "unchanged"  # read_source only: the source is the one archived (nothing to write)


@dataclass
class Row:
    """One manifest row; every column may be null (a damaged or foreign part: `problem`).

    `status` is None while the image is read but not yet encoded (rgbatch.sources)."""

    path: str | None = None
    source: str | None = None
    source_hash: str | None = None
    source_bytes: int | None = None
    width: int | None = None
    height: int | None = None
    mode: str | None = None
    model_id: str | None = None
    tile_size: int | None = None
    iterations: int | None = None
    coder: str | None = None
    blob: bytes | None = None
    bytes: list[int] | None = None
    bpp: list[float] | None = None
    msssim: list[float] | None = None
    psnr: list[float] | None = None
    status: str | None = None
    error: str | None = None
    read_seconds: float | None = None
    encode_seconds: float | None = None
    written_at: dt.datetime | None = None
    scale: float | None = None
    last_steps: int | None = None
    icc_profile: bytes | None = None
    exif: bytes | None = None
    frames: int | None = None
    alpha: bytes | None = None
    alpha_bytes: int | None = None
    source_mtime: dt.datetime | None = None
    options: str | None = None
    blob_sha256: str | None = None
    shared_blob: bool | None = None
    xmp: bytes | None = None
    notes: bytes | None = None

    # -- made --------------------------------------------------------------------------------------
    def failed(self, message: str) -> "Row":
        """This image as an error row (`Row(path, source).failed(why)` when nothing else is
        known): what was learned of it kept, the reason added."""
        return replace(self, status=ERROR, error=message)

    def from_encoded(self, encoded: EncodedImage, model_id: str, tile_size: int, coder: str,
                     seconds: float, options: str | None = None) -> "Row":
        """This read image's ok row, from its encoding (with `options`, the text of the options
        that made it)."""
        return replace(self, status=OK, error=None, width=encoded.width, height=encoded.height, model_id=model_id,
                       tile_size=tile_size, iterations=encoded.iterations, coder=coder, blob=encoded.blob, bytes=encoded.bytes,
                       bpp=encoded.bpp, msssim=encoded.msssim, psnr=encoded.psnr, encode_seconds=seconds,
                       scale=scale_factor(encoded.scale), last_steps=encoded.steps, options=options)

    @classmethod
    def from_dict(cls, values: dict) -> "Row":
        """A row from {column: value} (missing columns null; an unknown one is a TypeError)."""
        return cls(**values)

    @classmethod
    def from_arrow(cls, batch: pa.RecordBatch | pa.Table) -> list["Row"]:
        # column by column: a third faster than the batch's rows as dictionaries
        names = batch.column_names
        return [cls(**dict(zip(names, values))) for values in zip(*(column.to_pylist() for column in batch.columns))]

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @staticmethod
    def to_arrow(rows: list["Row"], schema: pa.Schema = SCHEMA) -> pa.Table:
        return pa.Table.from_pylist([row.to_dict() for row in rows], schema=schema)

    # -- read ----------------------------------------------------------------------------------------
    @property
    def ok(self) -> bool:
        return self.status == OK

    def problem(self, columns=COLUMNS) -> str | None:
        """Why an ok row cannot be used (null or inconsistent cells among `columns`, those read),
        or None. An error row is never a problem here: it says what it is."""
        if not self.ok:
            return None
        if not isinstance(self.path, str) or not self.path:
            return "damaged row: no path"
        for name in ("width", "height", "iterations"):
            value = getattr(self, name)
            if name in columns and (value is None or value < 1):
                return f"damaged row: {name} is {value}"
        if "model_id" in columns and not self.model_id:
            return "damaged row: no model id"
        if "blob" in columns and not self.blob:
            if self.shared_blob:  # `Archive.rows` found no row holding it whole
                return unheld_blob(self.blob_sha256)
            return "damaged row: no blob"
        depth = self.iterations
        for name in PER_DEPTH:
            values = getattr(self, name)
            if name not in columns or depth is None or (name != "bytes" and not values):  # empty: --no-measure
                continue
            if values is None or len(values) != depth or None in values:
                return f"damaged row: {name} does not hold one value per stored depth ({depth})"
        return self._metadata_problem(columns)

    def _metadata_problem(self, columns) -> str | None:
        """Metadata no source gives (`imageio.decode_image_and_metadata` keeps at most
        MAX_METADATA_BYTES of each, an ICC profile of RGB data alone, XMP in UTF-8, notes as
        `pack_notes` makes them): a crafted part's 64 MB profile was written into a restored PNG,
        and verified, until session 63."""
        held = {name: value for name in DESCRIPTIONS if name in columns and (value := getattr(self, name))}
        if not held:
            return None
        from .imageio import MAX_METADATA_BYTES, is_utf8, unpack_notes

        for name, value in held.items():
            if len(value) > MAX_METADATA_BYTES:
                return (f"damaged row: its {name} holds {len(value):,} bytes, over the {MAX_METADATA_BYTES:,} "
                        f"kept of a source's")
        if "icc_profile" in held and held["icc_profile"][16:20] != b"RGB ":
            return "damaged row: its icc_profile is not a profile of RGB data"
        if not is_utf8(held.get("xmp", b"")):  # restore's PNG writer stopped the whole command on it (session 63)
            return "damaged row: its xmp is not UTF-8"
        try:
            unpack_notes(held.get("notes"))
        except ValueError as e:
            return f"damaged row: its {e}"
        return None

    def metadata(self) -> "Metadata":
        """What `restore` writes beside the pixels (rgbatch.imageio.Metadata)."""
        from .imageio import Metadata

        return Metadata(self.icc_profile or None, self.exif or None, self.xmp or None, self.notes or None)

    def alpha_channel(self):
        """The alpha channel `restore` writes with the pixels (HxW uint8; every pixel 255 for an
        opaque one, which is not stored), or None; ImageError (rgbatch.imageio) for a damaged or
        missing one."""
        from .imageio import ImageError, decode_alpha

        if self.alpha_bytes is None:
            return None
        if len(self.alpha or b"") != self.alpha_bytes:
            raise ImageError(f"damaged alpha channel: {len(self.alpha or b'')} bytes, the row says {self.alpha_bytes}")
        return decode_alpha(self.alpha or b"", self.width, self.height)

    def encoded(self) -> EncodedImage:
        """The blob and per-depth stats as the codec's `EncodedImage` (no quality: empty lists)."""
        from .codes import EncodedImage  # here: the read tasks, which make rows, do not import torch

        return EncodedImage(self.blob, self.width, self.height, self.iterations, list(self.bytes),
                            list(self.msssim or []), list(self.psnr or []))

    def keep(self, depth: int | None = None, target: Target = Target()) -> int:
        """The depth to keep: all stored, at most `depth`, and at most what `target` chooses
        (`EncodedImage.choose_depth`, from the row's stats)."""
        keep = self.iterations if depth is None else min(depth, self.iterations)
        return min(keep, self.encoded().choose_depth(target)) if target else keep

    def cut(self, depth: int) -> "Row":
        """This row with its blob cut to `depth` iterations (`EncodedImage.cut`) and the stats of
        the kept depths, its `options` no longer known (they made a deeper blob); BitstreamError
        for a blob that cannot be cut."""
        if depth >= self.iterations:
            return self
        cut = self.encoded().cut(depth)
        return replace(self, blob=cut.blob, iterations=cut.iterations, bytes=cut.bytes, bpp=cut.bpp,
                       msssim=cut.msssim, psnr=cut.psnr, last_steps=cut.steps, options=None, blob_sha256=None,
                       shared_blob=None)

    def with_coding(self) -> "Row":
        """This row with `scale` and `last_steps` read from its blob's header where they are null (a
        row of a part written before those columns); as it is where they are known, or where
        it has no readable blob."""
        if not self.ok or (self.scale is not None and self.last_steps is not None) or not self.blob:
            return self
        from .bitstream import BitstreamError, read_header

        try:
            header = read_header(self.blob)
        except BitstreamError:
            return self
        scale, last_steps = coding(header, self.iterations)
        return replace(self, scale=scale, last_steps=last_steps)


def unheld_blob(sha256: str | None) -> str:
    """Why a row sharing another's blob (`shared_blob`) is no image where no row holds it whole."""
    return (f"its blob is stored in another row (sha256 {str(sha256)[:16]}...), and no row of the archive "
            f"holding it reads whole")


def coding(header, iterations: int) -> tuple[float, int]:
    """(scale, last_steps) of a stream's header (`bitstream.Header`) cut to `iterations`: what a row records."""
    return scale_factor(header.scale), header.steps_at(iterations)


def scale_factor(code: int) -> float:
    """The `scale` column of a header's scale code (rgbatch.resample.SCALES)."""
    numerator, denominator = SCALES[code]
    return numerator / denominator


__all__ = ["ADDED_COLUMNS", "COLUMNS", "ERROR", "METADATA_COLUMNS", "OK", "PER_DEPTH", "Row", "SCHEMA", "STATS_COLUMNS",
           "UNCHANGED", "digests", "hash_keys", "unheld_blob"]
