"""Hostile streams for the decoder: real streams forged, cut, extended and flipped, and what
decoding each one did. `tests/test_fuzz.py` runs a few hundred cases, `benchmarks/fuzz.py`
tens of thousands (docs/FORMAT.md, "Guarantees").

A forged stream has its checksums recomputed after a change (`build`): CRC-32s are no
signature, anyone can make one. Every case must end one of two ways: decoded to the image its
bits say (the reference decoding where the bits are a real stream's, an image of the declared
size otherwise, and with a context coder chunks that are, byte for byte, what the encoder
writes for the codes decoded), or refused with `BitstreamError`. Anything else is an escape.

    seeds = [Seed.of(codec, blob) for blob in blobs]
    for case in cases(seeds, np.random.default_rng(0), 1000):
        outcome = run(codec, case, max_pixels=2**14)
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, replace

import numpy as np

from . import bitstream, imageio
from .bitstream import BitstreamError
from .entropy import CODERS, get_coder
from .limits import layout
from .options import OptionError
from .resample import SCALES

FIELDS = ("magic", "version", "coder_id", "iterations", "bits", "model_id", "width", "height", "tile_size",
          "scale", "steps")  # the fixed header, in the order of bitstream's struct
_MAX = {"version": 255, "coder_id": 255, "iterations": 255, "bits": 255, "width": 2**32 - 1,
        "height": 2**32 - 1, "tile_size": 2**16 - 1, "scale": 255, "steps": 255}
_CODER_IDS = sorted(k for k in CODERS if isinstance(k, int))  # CODERS also holds each coder under its name
# every header field at zero, small, typical, huge and maximum values
VALUES = {
    "magic": [b"\0\0\0\0", b"RGBD", b"\x89PNG"],
    "model_id": [bytes(8), b"\xff" * 8],
    "version": [0, 2, 255],
    # every coder (coder id 4 was missing until session 29), the first unknown id and the largest
    "coder_id": [*_CODER_IDS, _CODER_IDS[-1] + 1, 255],
    "iterations": [0, 1, 2, 15, 16, 17, 32, 255],
    "bits": [0, 1, 16, 31, 33, 64, 255],
    "width": [0, 1, 2, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 129, 255, 256, 1000, 4095, 4096, 9460,
              65535, 65536, 2**20, 2**31 - 1, 2**31, 2**32 - 1],
    "tile_size": [0, 1, 16, 31, 32, 33, 48, 64, 96, 128, 256, 512, 1024, 4096, 8192, 32768, 65504, 65535],
    "scale": [1, 2, 3, 255],  # both scales, the first unknown code and the largest
    "steps": [1, 63, 64, 255],  # steps of a partial last chunk: the fewest and most, the first too many, the largest
}
VALUES["height"] = VALUES["width"]
LENGTHS = [0, 1, 2, 3, 4, 5, 8, 2**16, 2**31, 2**32 - 1]  # chunk lengths, besides the true one +-1, +-4, x2


@dataclass
class Parts:
    """A stream taken apart: header fields (any value their bytes hold), the chunk table's
    lengths (any number of them) and the bytes after the table."""

    fields: dict
    lengths: list[int]
    payload: bytes

    @classmethod
    def of(cls, blob: bytes) -> "Parts":
        values = bitstream._FIXED.unpack_from(blob)
        fields = dict(zip(FIELDS, values))
        k = fields["iterations"]
        lengths = [bitstream._CHUNK.unpack_from(blob, bitstream._FIXED.size + 8 * i)[0] for i in range(k)]
        return cls(fields, lengths, blob[bitstream.header_size(k):])

    def build(self, iterations: int | None = None) -> bytes:
        """The stream these parts make, every checksum recomputed over the bytes each covers
        (a chunk cut short gets the CRC of what is there). The iterations field is the number
        of lengths unless given."""
        fields = dict(self.fields, iterations=len(self.lengths) if iterations is None else iterations)
        head = bitstream._FIXED.pack(*(fields[f] for f in FIELDS))
        offset = 0
        for n in self.lengths[:fields["iterations"]]:
            head += bitstream._CHUNK.pack(n, zlib.crc32(self.payload[offset:offset + n]))
            offset += n
        head += bytes(8 * max(0, fields["iterations"] - len(self.lengths)))
        return head + bitstream._CRC.pack(zlib.crc32(head)) + self.payload


@dataclass
class Seed:
    """A real stream, and its decoding at every depth (the images its bits say)."""

    blob: bytes
    images: list[np.ndarray]  # depth 1..k

    @classmethod
    def of(cls, codec, blob: bytes) -> "Seed":
        k = bitstream.read_header(blob).iterations
        return cls(blob, [codec.decode(blob, d) for d in range(1, k + 1)])

    @classmethod
    def partial(cls, codec, image: np.ndarray, depth: int, steps: int) -> "Seed":
        """A real stream of `codec` (a context coder) whose last chunk holds the first `steps`
        coding steps of iteration `depth` (docs/FORMAT.md, "Partial last chunk")."""
        enc = codec.encode(image, depth, keep_codes=True, measure=False)
        _, chunks = bitstream.unpack(enc.blob)
        codes = enc.codes.partial(depth, steps)
        last = codec.frame(codes, [codec.coder.encode_iteration(enc.codes.tiles, depth - 1, steps)], depth - 1)
        return cls.of(codec, codec.pack(codes, chunks[:-1] + last))

    @property
    def parts(self) -> Parts:
        return Parts.of(self.blob)

    def boundary(self, depth: int) -> int:
        """Bytes of the stream up to the end of chunk `depth`."""
        return len(self.blob) - sum(self.parts.lengths[depth:])


@dataclass
class Case:
    kind: str
    blob: bytes
    iterations: int | None = None  # the depth asked for
    expected: np.ndarray | None = None  # the image its bits say, where known
    must_refuse: bool = False  # a stream no decoder may accept (damaged, cut, extended, foreign)


def field_cases(seed: Seed):
    """Every header field of a seed at each of its test values, checksums recomputed."""
    for name, values in VALUES.items():
        for value in values:
            yield from (_iteration_cases(seed, value) if name == "iterations" else [field_case(seed, name, value)])


def field_case(seed: Seed, name: str, value) -> Case:
    parts = seed.parts
    same = value == parts.fields[name]
    foreign = (name in ("magic", "version", "model_id") or (name == "bits" and value != 32)
               or (name == "scale" and value not in SCALES)
               or (name == "steps" and (value >= 64 or parts.fields["coder_id"] == bitstream.RAW_CODER_ID)))
    return Case(f"field {name}={value!r}", replace(parts, fields={**parts.fields, name: value}).build(),
                expected=seed.images[-1] if same else None, must_refuse=foreign and not same)


def _iteration_cases(seed: Seed, k: int):
    parts, stored = seed.parts, len(seed.images)
    # the field alone: the table keeps k entries (zero ones added), the payload stays: chunks
    # after the k-th are then bytes after the last chunk, added ones are empty
    yield Case(f"field iterations={k}", parts.build(iterations=k),
               expected=seed.images[-1] if k == stored else None, must_refuse=k != stored)
    # a consistent cut or extension: k lengths, the payload cut to them or grown
    if 1 <= k <= stored:  # as `bitstream.truncate` cuts: a partial last chunk goes with the last iteration
        cut = replace(parts, lengths=parts.lengths[:k], payload=parts.payload[:sum(parts.lengths[:k])],
                      fields={**parts.fields, "steps": parts.fields["steps"] if k == stored else 0})
        yield Case(f"iterations cut to {k}", cut.build(), expected=seed.images[k - 1])
    elif k > stored:
        last = parts.lengths[-1]
        grown = replace(parts, lengths=parts.lengths + [last] * (k - stored),
                        payload=parts.payload + parts.payload[-last:] * (k - stored) if last else parts.payload)
        yield Case(f"iterations grown to {k} (last chunk repeated)", grown.build())


def length_cases(seed: Seed):
    """Each chunk's length at test values (the payload as it is), checksums recomputed."""
    parts = seed.parts
    for i, n in enumerate(parts.lengths):
        for value in sorted({*LENGTHS, max(0, n - 1), n + 1, max(0, n - 4), n + 4, 2 * n}):
            lengths = list(parts.lengths)
            lengths[i] = value
            # the chunk cut short or grown by the next one's bytes: no coder writes it (a context
            # coder's chunks are prefix-free, the raw coder's of one size)
            yield Case(f"length of chunk {i + 1}={value}", replace(parts, lengths=lengths).build(),
                       expected=seed.images[-1] if value == n else None, must_refuse=value != n)


def oversize_cases(seed: Seed, max_pixels: int, sides=VALUES["width"][1:]):
    """The seed declaring each width x height of `sides`, at tile sizes 0, 32, 512 and the
    largest, where the bounds refuse it at this pixel limit (checksums recomputed): every one
    must be refused, before any work."""
    parts = seed.parts
    sizes = [(w, h) for w in sides for h in sides]
    for width, height in sizes + [(1, 8_000_000), (8_000_000, 1), (2, 6_000_000)]:  # thin: mostly padding
        for tile in (0, 32, 512, 65504):
            try:
                layout(width, height, tile, max_pixels)
                continue
            except ValueError:
                pass
            fields = {**parts.fields, "width": width, "height": height, "tile_size": tile}
            yield Case(f"oversize {width}x{height}, tile {tile}", replace(parts, fields=fields).build(),
                       must_refuse=True)


def random_case(seeds: list[Seed], rng: np.random.Generator) -> Case:
    """One mutation of a random seed, of a random kind."""
    seed = seeds[rng.integers(len(seeds))]
    parts, blob, k = seed.parts, seed.blob, len(seed.images)
    kind = KINDS[rng.integers(len(KINDS))]
    if kind == "field":
        name = list(VALUES)[rng.integers(len(VALUES))]
        values = VALUES[name] + ([int(rng.integers(0, _MAX[name] + 1))] if name in _MAX else [])
        value = values[rng.integers(len(values))]
        if name == "iterations":
            options = list(_iteration_cases(seed, value))
            return options[rng.integers(len(options))]
        return field_case(seed, name, value)
    if kind == "forged bits":  # bits of the chunks flipped, checksums recomputed
        payload = bytearray(parts.payload)
        for _ in range(rng.integers(1, 9)):
            payload[rng.integers(len(payload))] ^= 1 << int(rng.integers(8))
        return Case(kind, replace(parts, payload=bytes(payload)).build())
    if kind == "forged chunk":  # one chunk replaced by random bytes of a random length
        i = int(rng.integers(k))
        start, n = sum(parts.lengths[:i]), parts.lengths[i]
        size = int(rng.choice([0, 1, 3, 4, 8, n, n + 4, max(0, n - 4), rng.integers(0, 2 * n + 8)]))
        new = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
        lengths = list(parts.lengths)
        lengths[i] = size
        return Case(kind, replace(parts, lengths=lengths,
                                  payload=parts.payload[:start] + new + parts.payload[start + n:]).build())
    if kind == "cut chunk":  # one chunk cut short (by a word, several, to nothing), checksums recomputed
        i = int(rng.integers(k))
        start, n = sum(parts.lengths[:i]), parts.lengths[i]
        cut = min(n, int(rng.choice([1, 4, 8, 4 * rng.integers(1, n // 4 + 2)])))
        rest = parts.lengths[i + 1:] if rng.random() < 0.5 else []  # the chunks after it, or none
        payload = parts.payload[:start + n - cut] + parts.payload[start + n:start + n + sum(rest)]
        # a whole chunk made the last of a partial stream is read for fewer steps: it may be theirs
        read_as_coded = rest or i == k - 1 or not parts.fields["steps"]
        return Case(kind, replace(parts, lengths=[*parts.lengths[:i], n - cut, *rest], payload=payload).build(),
                    must_refuse=read_as_coded)
    if kind == "steps":  # the steps of the last chunk (byte 27), raised above what it holds or any
        held = parts.fields["steps"]
        value = int(rng.integers(held + 1, 64) if held and rng.random() < 0.5 else rng.integers(1, 64))
        return field_case(seed, "steps", value)
    if kind == "flipped":  # plain damage: a checksum no longer matches
        damaged = bytearray(blob)
        damaged[rng.integers(len(damaged))] ^= 1 << int(rng.integers(8))
        return Case(kind, bytes(damaged), must_refuse=True)
    if kind == "truncated":
        cut = int(rng.integers(len(blob)))
        depth = int(rng.integers(1, k + 1)) if rng.random() < 0.5 else None
        if depth is not None and cut >= seed.boundary(depth):  # a progressive reader's prefix
            return Case(kind, blob[:cut], depth, expected=seed.images[depth - 1])
        return Case(kind, blob[:cut], depth, must_refuse=True)
    if kind == "extended":  # bytes after the last chunk, at any depth asked
        extra = rng.integers(0, 256, int(rng.integers(1, 65)), dtype=np.uint8).tobytes()
        depth = int(rng.integers(1, k + 1)) if rng.random() < 0.5 else None
        return Case(kind, blob + extra, depth, must_refuse=True)
    if kind == "trailer":  # a metadata trailer after the last chunk: intact, damaged, cut or forged
        return trailer_case(seed, rng)
    if kind == "spliced":  # the header of one seed over the chunks of another
        other = seeds[rng.integers(len(seeds))].parts
        return Case(kind, replace(parts, lengths=other.lengths, payload=other.payload).build())
    if kind == "depth":  # a depth asked for that the stream has, or not
        depth = int(rng.choice([-1, 0, k + 1, 255, rng.integers(1, k + 1)]))
        if 1 <= depth <= k:
            return Case(kind, blob, depth, expected=seed.images[depth - 1])
        return Case(kind, blob, depth, must_refuse=True)
    if kind == "garbage":  # random bytes, with and without a valid start
        data = rng.integers(0, 256, int(rng.integers(0, 300)), dtype=np.uint8).tobytes()
        return Case(kind, (blob[:5] + data) if rng.random() < 0.5 else data, must_refuse=True)
    # "random header": every field random from its test values, checksums recomputed
    fields = {name: values[rng.integers(len(values))] for name, values in VALUES.items()
              if name not in ("magic", "version", "model_id", "steps", "iterations")}
    lengths = [int(rng.choice(LENGTHS[:8])) if rng.random() < 0.3 else n for n in parts.lengths]
    return Case(kind, replace(parts, fields={**parts.fields, **fields}, lengths=lengths).build())


KINDS = ("field", "forged bits", "forged chunk", "cut chunk", "steps", "flipped", "truncated", "extended", "trailer",
         "spliced", "depth", "garbage", "random header")


def trailer_case(seed: Seed, rng: np.random.Generator) -> Case:
    """The seed with a metadata trailer (docs/FORMAT.md, "Metadata trailer") of random fields, an
    alpha channel's in half of them, an XMP packet's in a third (`RGBX`, since session 63), notes
    in a quarter (`RGBN`, since session 64): as written (it decodes to the seed's image, at any
    depth asked), or with a byte flipped, cut short, grown, or its lengths changed with its
    checksum recomputed (refused)."""
    fields = [rng.integers(0, 256, int(rng.choice([0, 1, 40, rng.integers(0, 600)])), dtype=np.uint8).tobytes()
              for _ in range(4)]
    alpha = fields.pop(2)  # the bytes of a stream's alpha channel (read as a PNG by `decode`, not here)
    alpha = alpha if rng.random() < 0.5 else None
    fields[2] = (fields[2] or b"x").decode("latin-1").encode() if rng.random() < 1 / 3 else b""  # an XMP packet: UTF-8
    text = {"Comment": fields[1].decode("latin-1")} if fields[1] else {}  # notes: valid JSON (others are refused)
    fields.append(imageio.pack_notes(text, (72, 72) if rng.random() < 0.5 else None) if rng.random() < 0.25 else b"")
    if not any(fields) and alpha is None:
        fields[0] = b"\0"
    blob = bitstream.with_metadata(seed.blob, bitstream.Metadata(*fields), alpha)
    layout = (bitstream._NOTES_TRAILER if fields[3] else bitstream._XMP_TRAILER if fields[2]
              else bitstream._TRAILER if alpha is None else bitstream._ALPHA_TRAILER)
    depth = int(rng.integers(1, len(seed.images) + 1)) if rng.random() < 0.5 else None
    start = len(seed.blob)  # where the trailer begins
    how = ("intact", "flipped", "cut", "grown", "lengths")[rng.integers(5)]
    if how == "intact":
        return Case("trailer intact", blob, depth, expected=seed.images[(depth or len(seed.images)) - 1])
    if how == "flipped":
        damaged = bytearray(blob)
        damaged[rng.integers(start, len(blob))] ^= 1 << int(rng.integers(8))
        return Case("trailer flipped", bytes(damaged), depth, must_refuse=True)
    if how == "cut":
        return Case("trailer cut", blob[:rng.integers(start + 1, len(blob))], depth, must_refuse=True)
    if how == "grown":
        return Case("trailer grown", blob + bytes(int(rng.integers(1, 9))), depth, must_refuse=True)
    # a length field changed, the checksum recomputed over the same bytes: they no longer add up
    magic, *lengths = layout.unpack_from(blob, start)
    i = int(rng.integers(len(lengths)))
    if lengths[i] == bitstream.NO_ALPHA:  # RGBX, RGBN without an alpha channel: one of some length (0, opaque, adds up)
        lengths[i] = int(rng.choice([1, 2**20 + 1]))
    else:
        opaque_rgbx = len(lengths) > 3 and i == 2 and not lengths[i]  # 2^32 - 1 there: none, adds up
        lengths[i] = int(rng.choice([lengths[i] + 1, max(0, lengths[i] - 1) if lengths[i] else 2, 2**20 + 1,
                                     *([] if opaque_rgbx else [2**32 - 1])]))
    body = layout.pack(magic, *lengths) + blob[start + layout.size:-bitstream._CRC.size]
    return Case("trailer lengths", seed.blob + body + bitstream._CRC.pack(zlib.crc32(body)), depth, must_refuse=True)


def cases(seeds: list[Seed], rng: np.random.Generator, n: int, systematic: bool = True):
    """Every field and chunk length of every seed at its test values (when `systematic`), then
    `n` random mutations. (Until session 37 `n` counted the systematic cases too, so a run asking
    for fewer cases than the 3049 systematic ones of `benchmarks/fuzz.py` made no random one.)"""
    if systematic:
        for seed in seeds:
            yield from (*field_cases(seed), *length_cases(seed))
    for _ in range(n):
        yield random_case(seeds, rng)


def run(codec, case: Case, max_pixels: int) -> str:
    """What decoding a case did: 'decoded ...', 'refused: <reason>', or 'WRONG ...' / 'ESCAPED ...'
    (a test fails on those two)."""
    try:
        image = codec.decode(case.blob, case.iterations, max_pixels=max_pixels)
    except BitstreamError as e:
        return f"refused: {reason(e)}"
    except OptionError as e:  # a depth under 1 is the caller's mistake, not the stream's (an OptionError since session 61)
        if case.iterations is not None and case.iterations < 1:
            return f"refused: {reason(e)}"
        return f"ESCAPED OptionError: {str(e)[:200]}"
    except Exception as e:  # anything else is what this module is here to find
        return f"ESCAPED {type(e).__name__}: {str(e)[:200]}"
    if case.must_refuse:
        return f"WRONG: decoded a stream that must be refused ({case.kind})"
    if case.expected is not None:
        if image.shape == case.expected.shape and np.array_equal(image, case.expected):
            return "decoded: the stream's own image"
        return f"WRONG: decoded another image than the stream's ({case.kind})"
    header = bitstream.read_header(case.blob)
    if image.shape != (header.height, header.width, 3) or image.dtype != np.uint8:
        return f"WRONG: decoded {image.shape} from a header of {header.width}x{header.height}"
    if header.coder_id == bitstream.RAW_CODER_ID:  # its chunks are the bits (the last byte's padding aside)
        return "decoded: forged bits, the declared size (raw coder)"
    if not sealed(codec, case, max_pixels):
        return f"WRONG: decoded chunks the encoder does not write for their codes ({case.kind})"
    return "decoded: forged bits, the declared size (a context coder's own chunks of other codes)"


def sealed(codec, case: Case, max_pixels: int) -> bool:
    """Whether a decoded context-coded stream's chunks are, byte for byte, what its coder (id 1 or
    2) writes for the codes they decode to, the last one of its steps, after the post-filter record the
    encoder writes for the filters they decode to (format v2) (docs/FORMAT.md, "Errors")."""
    header, chunks = bitstream.unpack(case.blob, case.iterations)
    codes = codec.read_codes(case.blob, case.iterations, max_pixels)
    coder = get_coder(header.coder_id, codec.extra)
    last = len(chunks) - 1

    def written(t: int) -> bytes:
        payload = coder.encode_iteration(codes.tiles, t, codes.steps if t == last else 0)
        return codec.frame(codes, [payload], t)[0]  # the payload alone in v1

    return all(written(t) == chunk for t, chunk in enumerate(chunks))


def reason(error: Exception) -> str:
    """An error message as a category: numbers and hex words as N, the first clause only."""
    text = re.sub(r"\b[0-9a-f]{16}\b|\d+", "N", str(error))
    return re.split(r"[;(]", text)[0].strip()


__all__ = ["Case", "FIELDS", "KINDS", "Parts", "Seed", "VALUES", "cases", "field_case", "field_cases", "length_cases",
           "oversize_cases", "random_case", "reason", "run", "sealed", "trailer_case"]
