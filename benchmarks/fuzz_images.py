"""Fuzz the source reader with damaged and hostile image files (README, "Inputs"; docs/ARCHIVE.md,
"What happens to each bad input"): small real files of every format rgbatch reads (PNG, JPEG,
WebP, AVIF, JPEG XL, HEIF, TIFF, GIF, BMP, PNM, TGA, PCX), bits flipped, bytes overwritten, runs
cut out or repeated, files cut short or spliced onto another's tail, the integers of their headers
raised, a PNG's chunks given back valid CRCs, then read as `compress` reads a source
(`sources.read_source`: `decode_image_and_metadata`, then `encode_alpha`).

    python benchmarks/fuzz_images.py [--cases 3000] [--seed 0] [--max-pixels 1048576] [--timeout 20] [--memory-mb 3000]

Each case is read in a child process (restarted after a crash, a hang or a memory failure) with
its address space limited to `--memory-mb` and a pixel limit of `--max-pixels`, so that any file
that reads does so in a few MB. Every case must end one of two ways: read (an 8-bit RGB picture
of at most the pixel limit, its alpha channel the same size), or refused with `ImageError` (the
worded reason an archive records). An escape (any other exception: `compress` would record it
as `cannot decode the image: <kind>: ...`), a crash (the child killed by a signal: a read task's
worker lost), a hang (over `--timeout` seconds: `compress` would wait for it) or a memory failure
(MemoryError or the limit hit: a bomb past the pixel guard) is a finding. Prints the count of
each outcome per format and mutation, and the first findings.
"""

from __future__ import annotations

import argparse
import collections
import io
import multiprocessing
import os
import platform
import queue
import resource
import struct
import time
import traceback
import warnings
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

MUTATIONS = ("flip", "flips", "overwrite", "zero", "cut", "drop", "repeat", "integer", "splice")
FINDINGS = ("escape", "crash", "hang", "memory")
REFUSED_SEEDS = {"jxl-animated-3-frames"}  # an animated JPEG XL: refused unread (rgbatch.imageio._check_jxl)


def seeds() -> dict[str, bytes]:
    """A small real file of each format and kind rgbatch reads, made here (deterministic), and the
    JPEG XL and AVIF files of tests/fixtures that Pillow cannot write (an animation, extra channels,
    more than 8 bits a sample: tests/fixtures/README.md)."""
    from rgbatch import imageio  # noqa: F401  (registers the JPEG XL and HEIF plugins)

    y, x = np.mgrid[0:40, 0:48]
    rgb = np.stack([x * 5, y * 6, (x + y) * 3], -1).astype(np.uint8)
    rgb[10:20, 12:30] = (200, 30, 90)
    alpha = ((x * 5) % 256).astype(np.uint8)
    image, rgba = Image.fromarray(rgb), Image.fromarray(np.dstack([rgb, alpha]), "RGBA")
    exif = Image.Exif()
    exif[0x0112], exif[0x010F] = 6, "a camera"
    palette = image.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    palette.info["transparency"] = 3
    frames = [image, image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    made = {}

    def save(name, picture, fmt, **options):
        buffer = io.BytesIO()
        picture.save(buffer, fmt, **options)
        made[name] = buffer.getvalue()

    from PIL import ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    save("png-rgb", image, "PNG")
    save("png-icc", image, "PNG", icc_profile=icc)
    save("jpeg-icc", image, "JPEG", icc_profile=icc)
    save("png-rgba", rgba, "PNG", exif=exif.tobytes())
    save("png-palette-trns", palette, "PNG")
    save("png-16bit-grey", Image.fromarray((y * 1500 + x).astype(np.uint16)), "PNG")
    # grey keys and a 16-bit PGM, which rgbatch reads itself since session 60 (imageio._grey_key, _white)
    save("png-1bit-trns", Image.fromarray(((x + y) % 3 == 0)).convert("1"), "PNG", transparency=1)
    save("png-16bit-grey-trns", Image.fromarray((y * 1500 + x).astype(np.uint16)), "PNG", transparency=1501)
    save("pgm-16bit", Image.fromarray((y * 3 + x).astype(np.uint16)), "PPM")
    save("jpeg", image, "JPEG", quality=90, exif=exif.tobytes())
    save("jpeg-progressive", image, "JPEG", quality=80, progressive=True)
    save("jpeg-cmyk", image.convert("CMYK"), "JPEG")
    save("webp", image, "WEBP", quality=80)
    save("webp-lossless-alpha", rgba, "WEBP", lossless=True)
    save("webp-animated", frames[0], "WEBP", save_all=True, append_images=frames[1:])
    save("avif", image, "AVIF", quality=60)
    save("jxl", image, "JXL", quality=80)
    save("jxl-lossless-exif", rgba, "JXL", lossless=True, exif=exif.tobytes())
    save("heif", image, "HEIF", quality=60)
    save("tiff", image, "TIFF")
    save("tiff-lzw-pages", frames[0], "TIFF", compression="tiff_lzw", save_all=True, append_images=frames[1:])
    save("tiff-deflate-rgba", rgba, "TIFF", compression="tiff_adobe_deflate")
    save("gif-animated", frames[0], "GIF", save_all=True, append_images=frames[1:])
    save("bmp", image, "BMP")
    save("ppm", image, "PPM")
    save("tga", rgba, "TGA", compression="tga_rle")
    save("pcx", image, "PCX")
    big = Image.fromarray(np.tile(rgb, (7, 7, 1))[:280, :300])  # several of the codecs' blocks and groups
    for fmt in ("JPEG", "WEBP", "AVIF", "JXL", "HEIF"):
        save(f"{fmt.lower()}-300x280", big, fmt, quality=70)
    # colours described otherwise than by an RGB profile (rgbatch.colour), a float image's NaN, and
    # an EXIF block as ImageMagick writes it into a PNG (since session 62)
    data = Path(__file__).parents[1] / "tests" / "fixtures"
    cmyk_icc = (data / "icc" / "cmyk-lut.icc").read_bytes()
    save("heif-nclx-p3", image, "HEIF", quality=60, color_primaries=12, transfer_characteristics=13,
         matrix_coefficients=6, full_range_flag=1)
    save("jpeg-cmyk-icc", image.convert("CMYK"), "JPEG", icc_profile=cmyk_icc)
    save("tiff-cmyk-icc", image.convert("CMYK"), "TIFF", icc_profile=cmyk_icc)
    values = (x * y / (47 * 39)).astype(np.float32)
    values[::7, ::5] = np.nan
    save("tiff-float-nan", Image.fromarray(values), "TIFF")
    from PIL import PngImagePlugin

    text = PngImagePlugin.PngInfo()
    text.add_text("Raw profile type exif", f"\nexif\n{len(exif.tobytes()):8d}\n{exif.tobytes().hex()}\n", zip=True)
    save("png-raw-profile-exif", image, "PNG", pnginfo=text)
    for path in sorted([*data.glob("jxl/*.jxl"), *data.glob("avif/*.avif")]):
        made[f"{path.parent.name}-{path.stem}"] = path.read_bytes()
    return made


def png_with_crcs(data: bytes) -> bytes:
    """A PNG's chunks with their CRCs made right again (as far as the chunk list parses), so that
    a mutation reaches the decoder behind the checksums."""
    out, at = bytearray(data), 8
    while at + 12 <= len(out):
        length = int.from_bytes(out[at:at + 4], "big")
        end = at + 12 + length
        if end > len(out):
            break
        out[end - 4:end] = struct.pack(">I", zlib.crc32(out[at + 4:end - 4]))
        at = end
    return bytes(out)


def mutate(name: str, data: bytes, rng: np.random.Generator, other: bytes = b"") -> tuple[str, bytes]:
    """One mutation of the file `data` (`other`: another seed, whose tail a splice takes)."""
    kind = str(rng.choice(MUTATIONS))
    out = bytearray(data)
    at = int(rng.integers(0, len(out)))
    if kind in ("flip", "flips"):
        for _ in range(1 if kind == "flip" else int(rng.integers(2, 16))):
            i = int(rng.integers(0, len(out)))
            out[i] ^= 1 << int(rng.integers(0, 8))
    elif kind in ("overwrite", "zero"):
        run = int(rng.integers(1, 17))
        out[at:at + run] = bytes(run) if kind == "zero" else rng.integers(0, 256, run, dtype=np.uint8).tobytes()
    elif kind == "cut":
        del out[at:]
    elif kind == "drop":
        del out[at:at + int(rng.integers(1, 64))]
    elif kind == "repeat":
        run = bytes(out[at:at + int(rng.integers(1, 256))])
        out[at:at] = run * int(rng.integers(1, 64))
    elif kind == "splice":  # the head of this file, the tail of another (of the same format or not)
        out[at:] = other[int(rng.integers(0, len(other))):] if other else b""
    else:  # an integer of the header (sizes, counts, offsets) raised: 16 or 32 bits, either byte order
        at = int(rng.integers(0, min(len(out), 96)))
        width = int(rng.choice([2, 4]))
        value = int(rng.choice([2 ** (8 * width) - 1, 2 ** (8 * width - 1), 2 ** (8 * width - 1) - 1, 30000, 65535]))
        out[at:at + width] = value.to_bytes(width, str(rng.choice(["big", "little"])))[:len(out) - at]
    if name.startswith("png") and rng.random() < 0.5:
        out, kind = bytearray(png_with_crcs(bytes(out))), kind + "+crc"
    return kind, bytes(out)


def _child(cases, answers, max_pixels: int, memory_mb: int):
    """Read each (case number, bytes) as `compress` does and answer (case number, outcome, detail)."""
    resource.setrlimit(resource.RLIMIT_AS, (memory_mb << 20, memory_mb << 20))
    os.dup2(os.open(os.devnull, os.O_WRONLY), 2)  # libtiff's and the plugins' complaints: the outcome says
    warnings.simplefilter("ignore")
    from rgbatch.imageio import ImageError, decode_image_and_metadata, encode_alpha

    while (case := cases.get()) is not None:
        number, data = case
        try:
            decoded = decode_image_and_metadata(data, max_pixels)
            encode_alpha(decoded.alpha)
            pixels = decoded.pixels
            height, width = pixels.shape[:2]
            if pixels.dtype != np.uint8 or pixels.shape[2:] != (3,) or not 0 < width * height <= max_pixels:
                answers.put((number, "escape", f"read as {pixels.dtype} {pixels.shape}"))
            elif decoded.alpha is not None and decoded.alpha.shape != (height, width):
                answers.put((number, "escape", f"alpha {decoded.alpha.shape} for {height}x{width}"))
            else:
                answers.put((number, "read", ""))
        except ImageError as e:
            answers.put((number, "refused", str(e)[:80]))
        except MemoryError:
            answers.put((number, "memory", "MemoryError"))
        except Exception as e:  # noqa: BLE001  (what the fuzzer is looking for)
            answers.put((number, "escape", "".join(traceback.format_exception_only(e)).strip()[-300:]))


class Reader:
    """A child process reading cases, started again after one dies or hangs."""

    def __init__(self, max_pixels: int, memory_mb: int):
        self.context = multiprocessing.get_context("spawn")
        self.args = (max_pixels, memory_mb)
        self.process = None

    def start(self):
        self.cases, self.answers = self.context.Queue(), self.context.Queue()
        self.process = self.context.Process(target=_child, args=(self.cases, self.answers, *self.args), daemon=True)
        self.process.start()

    def read(self, number: int, data: bytes, timeout: float) -> tuple[str, str]:
        if self.process is None or not self.process.is_alive():
            self.start()
        self.cases.put((number, data))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                answer = self.answers.get(timeout=0.2)
            except queue.Empty:  # still reading, or dead
                if not self.process.is_alive():
                    code = self.process.exitcode
                    self.process = None
                    return ("crash", f"exit code {code}") if code and code < 0 else ("memory", f"exit code {code}")
                continue
            if answer[0] == number:
                return answer[1], answer[2]
        self.process.kill()
        self.process.join()
        self.process = None
        return "hang", f"over {timeout:g} s"

    def close(self):
        if self.process is not None and self.process.is_alive():
            self.cases.put(None)
            self.process.join(5)
            self.process.kill()


def fuzz(cases: int, seed: int, max_pixels: int = 1 << 20, timeout: float = 20.0, memory_mb: int = 3000):
    """Run `cases` mutated files: (counts by (seed name, mutation, outcome), findings [(seed name,
    mutation, outcome, detail, file bytes)])."""
    made = seeds()
    names = sorted(made)
    rng = np.random.default_rng(seed)
    reader = Reader(max_pixels, memory_mb)
    counts, findings = collections.Counter(), []
    try:
        for name in names:  # the seeds themselves must read, those refused by design be refused
            outcome, detail = reader.read(-1, made[name], timeout)
            if outcome != ("refused" if name in REFUSED_SEEDS else "read"):
                findings.append((name, "none", outcome, detail, made[name]))
        for number in range(cases):
            name = names[number % len(names)]
            kind, data = mutate(name, made[name], rng, made[names[int(rng.integers(0, len(names)))]])
            outcome, detail = reader.read(number, data, timeout)
            counts[name, kind.split("+")[0], outcome] += 1
            if outcome in FINDINGS:
                findings.append((name, kind, outcome, detail, data))
    finally:
        reader.close()
    return counts, findings


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-pixels", type=int, default=1 << 20)
    parser.add_argument("--timeout", type=float, default=20.0, help="seconds a case may take")
    parser.add_argument("--memory-mb", type=int, default=3000, help="the child's address space")
    parser.add_argument("--keep", default=None, help="write the files of the findings into this folder")
    args = parser.parse_args()
    start = time.perf_counter()
    counts, findings = fuzz(args.cases, args.seed, args.max_pixels, args.timeout, args.memory_mb)
    outcomes = collections.Counter()
    for (_, _, outcome), n in counts.items():
        outcomes[outcome] += n
    print(f"{args.cases} cases, seed {args.seed}, {time.perf_counter() - start:.0f} s, {platform.processor() or platform.machine()}")
    print("outcomes:", dict(sorted(outcomes.items())))
    for key in ("name", "kind"):
        table = collections.defaultdict(collections.Counter)
        for (name, kind, outcome), n in counts.items():
            table[name if key == "name" else kind][outcome] += n
        for row, seen in sorted(table.items()):
            print(f"  {row:22} " + "  ".join(f"{o} {seen[o]}" for o in ("read", "refused", *FINDINGS) if seen[o]))
    print(f"findings: {len(findings)}")
    for i, (name, kind, outcome, detail, data) in enumerate(findings):
        if i < 30:
            print(f"  {outcome:7} {name:22} {kind:12} {detail}")
        if args.keep:
            Path(args.keep).mkdir(parents=True, exist_ok=True)
            (Path(args.keep) / f"{i:04d}-{outcome}-{name}-{kind}.bin").write_bytes(data)


if __name__ == "__main__":
    main()
