"""One image to one stream file, and back: the codec without an archive.

    encode_file("photo.png", "photo.rgb", target=Target(msssim=0.95))
    decode_file("photo.rgb", "photo-4.png", iterations=4)

A stream file is exactly one bitstream (docs/FORMAT.md): self-describing (model id, size,
iterations), checksummed, progressive (its first k chunks are a valid depth-k stream), with the
source's ICC profile and EXIF block in its metadata trailer (`metadata=False`: none), and its
alpha channel (always), which `decode_file` writes into the PNG.
Paths may be local or URIs that `pyarrow.fs` opens; outputs are written atomically, and an
existing output file is replaced only with `overwrite` (checked before any work, and again as
the file is linked into place: `storage.output_file`, `storage.write_new`); a FIFO or character
device named as the output (/dev/null, /dev/stdout) is written into, never replaced.
"""

from __future__ import annotations

import contextlib
import posixpath

from . import storage
from .bitstream import BitstreamError, read_header, read_trailer, with_metadata
from .codec import Codec, resolve_partial
from .imageio import (MAX_PIXELS, ImageError, Metadata, decode_alpha, decode_image_and_metadata, encode_alpha, encode_png,
                      max_source_bytes, too_big_text)
from .limits import check_max_pixels
from .objectstore import not_found
from .options import OptionError, check_count
from .ratecontrol import Target, check_measured
from .row import scale_factor


def encode_file(source, out, iterations: int | None = None, target: Target = Target(), codec: Codec | None = None,
                max_pixels: int = MAX_PIXELS, resample: str = "none", partial: bool | None = None,
                metadata: bool = True, overwrite: bool = False) -> dict:
    """Encode one image file into a stream file; returns what was kept (depth, bytes of the file,
    quality, the scale it was coded at: `resample`, the coding steps of its last chunk: `partial`,
    Codec.encode_many, by default where the target and coder allow: `resolve_partial`, 0 when
    whole; and the bytes of the source's metadata kept in the trailer: `metadata`)."""
    check_measured(target, True)
    check_max_pixels(max_pixels)
    codec = codec or Codec.load()
    partial = resolve_partial(partial, target, True, codec.coder.name)
    out_fs, out_path = storage.output_file(out, overwrite)
    with _naming(source, ImageError):
        source_image = decode_image_and_metadata(_read(source, max_pixels, ImageError), max_pixels)
    encoded = codec.encode(source_image.pixels, iterations, measure=True, target=target, resample=resample,
                           partial=partial)
    alpha_bytes = encode_alpha(source_image.alpha)  # part of the picture: kept whatever `metadata` says
    blob = with_metadata(encoded.blob, source_image.metadata if metadata else Metadata(), alpha_bytes)
    storage.write_output(out_fs, out_path, blob, overwrite)
    return {"source": str(source), "out": storage.uri(out_fs, out_path, str(out)), "mode": source_image.mode,
            "frames": source_image.frames,
            "alpha_bytes": None if alpha_bytes is None else len(alpha_bytes),  # in the trailer; 0: opaque
            "width": encoded.width, "height": encoded.height, "iterations": encoded.iterations, "bytes": len(blob),
            "metadata_bytes": len(blob) - len(encoded.blob),
            "bpp": encoded.bpp[-1], "msssim": encoded.msssim[-1], "psnr": encoded.psnr[-1],
            "scale": scale_factor(encoded.scale), "last_steps": encoded.steps, "model_id": codec.model_id}


OTHER_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".webp", ".avif", ".jxl", ".gif", ".tif", ".tiff", ".bmp", ".heic", ".heif"}


def decode_file(source, out, iterations: int | None = None, codec: Codec | None = None,
                max_pixels: int = MAX_PIXELS, overwrite: bool = False, allow_truncated: bool = False) -> dict:
    """Decode a stream file (at most `iterations` deep) into a PNG file; a stream that declares
    more than `max_pixels` pixels is refused (BitstreamError, docs/FORMAT.md "Limits").
    `allow_truncated`: a file cut short (an interrupted download or copy) decodes at the depth
    of the iterations it holds whole, each checked by its checksum, without the metadata trailer
    (which comes after the last chunk); by default it is refused as truncated."""
    check_count("iterations", iterations, 1)
    check_max_pixels(max_pixels)
    storage.check_location("out", out)
    suffix = posixpath.splitext(str(out))[1].lower()
    if suffix in OTHER_IMAGE_SUFFIXES:  # PNG bytes under another format's name until session 58
        raise OptionError("out", f"{out}: decode writes a PNG, not a {suffix} file: give a name ending in .png")
    codec = codec or Codec.load()
    out_fs, out_path = storage.output_file(out, overwrite)
    with _naming(source, BitstreamError):
        blob = _read(source, max_pixels, BitstreamError)
        header = read_header(blob)
        stored = header.iterations
        depth = stored if iterations is None else min(iterations, stored)
        whole = header.whole_iterations(len(blob)) if allow_truncated else stored
        if whole == 0:
            raise BitstreamError(f"truncated: the file ends ({len(blob)} bytes) before its first iteration does "
                                 f"({header.size + header.chunk_lengths[0]} bytes)")
        depth = min(depth, whole)
        image = codec.for_model(header.model_id).decode(blob, depth, max_pixels=max_pixels)
        metadata, alpha = read_trailer(blob)
        if alpha is not None:
            try:
                alpha = decode_alpha(alpha, image.shape[1], image.shape[0])
            except ImageError as e:  # intact bytes (the trailer's checksum holds) that are no such PNG: a bad stream
                raise BitstreamError(f"invalid metadata trailer: {e}") from None
    storage.write_output(out_fs, out_path, encode_png(image, metadata, alpha=alpha), overwrite)
    return {"source": str(source), "out": storage.uri(out_fs, out_path, str(out)), "width": image.shape[1],
            "height": image.shape[0], "iterations": depth, "stored_iterations": stored,
            "whole_iterations": whole,  # fewer than stored: the file is cut short (`allow_truncated`)
            "last_steps": header.steps_at(depth)}


@contextlib.contextmanager
def _naming(source, kind: type[Exception]):
    """An error of `kind` raised within, its message led by the file it is about."""
    try:
        yield
    except kind as e:
        raise kind(f"{source}: {e}") from None


def _read(source, max_pixels: int, too_big: type[Exception]) -> bytes:
    """The bytes of the one input file, its errors naming it; one over `max_source_bytes` fails
    as an input that does not read (`too_big`: ImageError, BitstreamError)."""
    fs, path = storage.resolve(source)
    try:
        return storage.read_bytes(fs, path, max_source_bytes(max_pixels))
    except storage.FileTooBig as e:
        raise too_big(too_big_text(e, max_pixels)) from None  # named by the caller's `_naming`
    except FileNotFoundError:  # on a store, says when the bucket is what is missing
        raise not_found(fs, path, f"no such file: {source}") from None
    except ValueError as e:  # not a regular file
        raise ValueError(f"{source}: {e}") from None
    except OSError as e:
        raise OSError(f"{source}: cannot read the file: {e.strerror or e}") from None


