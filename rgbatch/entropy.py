"""Entropy coders: turn the bits of each iteration into one chunk of bytes, and back.

A coder sees the codes of a whole image as one bool array per tile, shaped
(iterations, bits, rows, cols), and returns one chunk per iteration. Chunk t may depend on
iterations < t (the decoder has them), never on later ones, so that a stream cut to depth
k decodes. The coder id is stored in every bitstream header.

| id | coder   | notes |
|----|---------|-------|
| 0  | raw     | plain bit packing, as the paper's released encoder |
| 1  | context | range coding with probabilities from counted contexts (docs/ENTROPY.md) |
| 2  | adaptive | the context coder's tables refined as it codes, by context states and adaptive maps fresh at every step (`rgbatch/adapt.py`; the default from session 11 to 25) |
| 3  | mixing  | coder id 2 with its first 4 iterations' bits coded by a logistic mix of its entry, the table's, two block-history and two same-step pattern models (`rgbatch/mix.py`; the default in session 26) |
| 4  | mixing2 | coder id 3 with a group model (what the blocks of equal bits one iteration back sent on each channel) mixed in too, in its first 8 iterations (`rgbatch/mix.py`; the default since session 27) |

The context coder's parameters ship inside the weight file (`rgbatch fit-entropy`), so
they are part of the model id: a stream decodes only with the tables that coded it.
"""

from __future__ import annotations

from importlib import import_module
from functools import lru_cache, partial
from typing import Protocol, runtime_checkable

import numpy as np

# constriction's Bernoulli model warns unless `perfect` is given; False is its recommended mode
import constriction

from . import adapt, mix
from .options import OptionError
from .context import (CONTEXT_PROBABILITIES, MAX_LOOKBACK, PROBABILITY_BITS, Canvas, ContextModel,
                      ContextModelError, context_index, reads_step)

MAX_SYMBOL_BITS = 24  # a bit costs at most 15 bits at the tables' 1/2**15 (measured: 15.0); room for quantizing


class EntropyError(ValueError):
    """A chunk that does not decode to the size the header promises, or a coder that cannot
    run (unknown, or its model missing from the weights)."""


@runtime_checkable
class Coder(Protocol):
    """What every entropy coder implements (and `register_coder` expects).

    Codes are one bool array per tile, (iterations, bits, rows, cols); chunk t may depend on
    iterations < t, never on later ones. `decode` raises EntropyError for a chunk that does
    not decode to `shapes`. `steps` (coders with `partial`): the last chunk holds only the first
    `steps` of its iteration's 2 x bits coding steps (0: all; docs/FORMAT.md, "Partial last chunk")."""

    coder_id: int  # stored in every header: never reuse one
    name: str  # what users ask for (--coder)
    partial: bool  # whether it can code the first steps of an iteration alone (a partial last chunk)

    def __init__(self, extra: dict | None = None): ...  # the weights' extra tensors (its model, if any)

    def encode(self, codes: list[np.ndarray]) -> list[bytes]: ...

    def encode_iteration(self, codes: list[np.ndarray], t: int, steps: int = 0) -> bytes: ...  # chunk t of `encode`, alone

    # (fewest, most, multiple of) bytes one chunk of these tile shapes can have: `decode` refuses
    # other sizes before any work (`check_chunks`; docs/FORMAT.md, "Limits")
    def chunk_bytes(self, shapes: list[tuple[int, int, int]]) -> tuple[int, int, int]: ...

    def decode(self, chunks: list[bytes], shapes: list[tuple[int, int, int]], steps: int = 0) -> list[np.ndarray]: ...


def symbols(shapes) -> int:
    """Bits one iteration codes: of every tile, bits x rows x columns."""
    return sum(b * r * c for b, r, c in shapes)


def check_chunks(coder, chunks: list[bytes], shapes):
    """Refuses, before decoding, a chunk whose size the coder cannot have written for these shapes."""
    fewest, most, multiple = coder.chunk_bytes(shapes)
    for t, chunk in enumerate(chunks):
        if not fewest <= len(chunk) <= most or len(chunk) % multiple:
            sizes = f"exactly {fewest}" if fewest == most else f"{fewest} to {most} in whole {8 * multiple}-bit words"
            raise EntropyError(f"iteration {t + 1} holds {len(chunk)} bytes; the {coder.name} coder writes "
                               f"{sizes} for {symbols(shapes)} bits")


class RawCoder:
    """Every bit stored as is, tile after tile, in (bits, rows, cols) order per iteration."""

    coder_id = 0
    name = "raw"
    partial = False

    def __init__(self, extra=None):
        pass

    def encode(self, codes: list[np.ndarray]) -> list[bytes]:
        return [self.encode_iteration(codes, t) for t in range(codes[0].shape[0])]

    def encode_iteration(self, codes: list[np.ndarray], t: int, steps: int = 0) -> bytes:
        """Chunk t alone (an encoder that stops as soon as a size is reached codes as it goes)."""
        _whole_only(self, steps)
        return np.packbits(np.concatenate([c[t].ravel() for c in codes])).tobytes()

    def code_lengths(self, codes: list[np.ndarray]) -> list[np.ndarray]:
        """Bits each code bit costs: 1 (per tile, shaped like its codes; for `benchmarks/bitmaps.py`)."""
        return [np.ones(c.shape) for c in codes]

    def chunk_bytes(self, shapes) -> tuple[int, int, int]:
        """(fewest, most, multiple of) bytes of one chunk for these tile shapes: exactly the bits."""
        size = (symbols(shapes) + 7) // 8
        return size, size, 1

    def decode(self, chunks: list[bytes], shapes: list[tuple[int, int, int]], steps: int = 0) -> list[np.ndarray]:
        _whole_only(self, steps)
        check_chunks(self, chunks, shapes)
        sizes = [int(np.prod(s)) for s in shapes]
        total = sum(sizes)
        out = [np.empty((len(chunks), *s), bool) for s in shapes]
        for t, chunk in enumerate(chunks):
            flat = np.unpackbits(np.frombuffer(chunk, np.uint8), count=total).astype(bool)
            for tile, piece in zip(out, np.split(flat, np.cumsum(sizes)[:-1])):
                tile[t] = piece.reshape(tile.shape[1:])
        return out


def _whole_only(coder, steps: int):
    if steps:
        raise EntropyError(f"the {coder.name} coder codes whole iterations, not the first {steps} steps of one")


# -- the context coder ---------------------------------------------------------------------------
class ContextCoder:
    """Binary range coding (constriction) of every bit with a probability looked up from
    fixed tables: P(bit | iteration, colour, channel, K context bits). See docs/ENTROPY.md.

    Within an iteration the bits are coded in 2 x bits steps, checkerboard colour 0 then 1,
    channel 0..bits-1 inside; a step is one channel of one colour at every position of every
    tile, with contexts from bits coded in earlier steps. The decoder takes the steps one
    vectorised call at a time; the encoder, which knows every bit, computes all contexts of an
    iteration at once and codes it in one call (the same stream, 30 % less time).

    engine "compiled" codes with `rgbatch/fastcoder.py`'s kernels, which compute the contexts
    and run the same range coder as constriction in one loop: the same bytes, several times
    faster (README, "Speed of the entropy coder"). engine "constriction" is the numpy + constriction
    implementation above, kept as the reference the kernels are tested against. "auto" (the
    default) is "compiled" where numba imports, else "constriction": streams do not depend on it.
    """

    coder_id = 1
    name = "context"
    partial = True
    adaptive = False  # coder id 2 (AdaptiveCoder) refines each table entry as it codes
    design = None  # coder ids 3 and 4 (`mix.Design`) mix coder id 2's entries in their first iterations
    ENGINES = ("auto", "compiled", "constriction")

    def __init__(self, extra=None, engine: str = "auto", model: ContextModel | None = None):
        if engine not in self.ENGINES:
            raise ValueError(f"engine must be one of {self.ENGINES}, not {engine!r}")
        self.kernels = None if engine == "constriction" else _import_kernels()
        if engine == "compiled" and self.kernels is None:
            raise EntropyError("the compiled context coder needs numba (pip install numba)")
        self.engine = "compiled" if self.kernels else "constriction"
        try:
            model = model or ContextModel.from_tensors(extra)
        except ContextModelError as e:
            raise EntropyError(str(e)) from None
        self.features = model.features
        # int64 q, what both engines code with: the kernels in integers, the reference engine as
        # q / 2**15, exact in float64, which constriction quantizes the same way on every machine
        self.table = model.table
        if self.kernels:
            # where the features read, per canvas plane and width (`_steps`; 85 kB each for the shipped
            # model): images of one size share them
            self._offsets = lru_cache(maxsize=16)(partial(self.kernels.step_offsets, self.features, model.bits))
        self.bits = model.bits

    @property
    def max_iterations(self) -> int:
        return self.table.shape[0]

    def _check(self, shapes, iterations: int, steps: int = 0):
        if not 0 <= steps < 2 * self.bits:
            raise EntropyError(f"an iteration has {2 * self.bits} coding steps: a partial chunk holds 1..{2 * self.bits - 1}, "
                               f"not {steps}")
        if any(s[0] != self.bits for s in shapes):
            raise EntropyError(f"the context model codes {self.bits} bits per position, not {shapes[0][0]}")
        if iterations > self.max_iterations:
            raise EntropyError(f"the context model covers {self.max_iterations} iterations, not {iterations}")

    def encode(self, codes: list[np.ndarray]) -> list[bytes]:
        layout = Canvas(tuple(c.shape[1:] for c in codes))
        self._check(layout.shapes, codes[0].shape[0])
        canvas = layout.paint(codes)
        steps = self._steps(layout)
        return [self._code_iteration(layout, canvas, steps, t) for t in range(codes[0].shape[0])]

    def encode_iteration(self, codes: list[np.ndarray], t: int, steps: int = 0) -> bytes:
        """Chunk t alone, from iterations 0..t of `codes` (the same bytes as `encode`'s); with
        `steps`, of its first `steps` coding steps only (a partial last chunk)."""
        codes = [c[:t + 1] for c in codes]
        layout = Canvas(tuple(c.shape[1:] for c in codes))
        self._check(layout.shapes, t + 1, steps)
        return self._code_iteration(layout, layout.paint(codes), self._steps(layout), t, steps)

    def _steps(self, layout: Canvas):
        """The kernels' offsets of every iteration on this canvas (`fastcoder.step_offsets`), or None."""
        if self.kernels:
            return self._offsets(layout.height * layout.width, layout.width)

    def _code_iteration(self, layout: Canvas, canvas: np.ndarray, offsets, t: int, steps: int = 0) -> bytes:
        """Chunk t of a painted canvas: its first `steps` coding steps (0: all of them)."""
        steps = steps or 2 * self.bits
        if self.kernels:
            reads, own = offsets
            return self.kernels.encode_chunk(canvas, layout.positions, reads[t], own[t], self.table[t], self.adaptive,
                                             steps=steps, **self._mix_args(t, layout))
        # every bit is known: one call codes the iteration in the decoder's order (colour,
        # then channel, then position), the same stream as one call per step
        channels = [min(max(steps - s * self.bits, 0), self.bits) for s in (0, 1)]  # of each colour, coded
        symbols = [canvas[MAX_LOOKBACK + t][:n, positions].ravel() for n, positions in zip(channels, layout.positions)]
        entries = np.concatenate([e[:n].ravel() for n, e in zip(channels, self._coded_entries(layout, canvas, t))])
        encoder = constriction.stream.queue.RangeEncoder()
        encoder.encode(np.concatenate(symbols).astype(np.int32), BERNOULLI, entries / 2.0 ** PROBABILITY_BITS)
        return encoder.get_compressed().astype("<u4").tobytes()

    def _mixes(self, t: int) -> bool:
        """Whether this coder mixes iteration t (coder ids 3 and 4, their design's first iterations)."""
        return self.design is not None and t < self.design.iterations

    def _mix_args(self, t: int, layout: Canvas) -> dict:
        """The kernels' mixer arguments for iteration t: the starting weights (a copy: the kernels
        move them; None where it is not mixed), the canvas's width, and the group model or not."""
        mixed = self._mixes(t)
        return dict(mix_weights=self.design.start[t].copy() if mixed else None, width=layout.width,
                    grouped=mixed and self.design.group)

    def _mixer(self, layout: Canvas, canvas: np.ndarray, t: int):
        """The reference engine's mixer of iteration t (`mix.IterationMixer`), or None."""
        return mix.IterationMixer(canvas, layout.positions, t, layout.width, self.design) if self._mixes(t) else None

    def _coded_entries(self, layout: Canvas, canvas: np.ndarray, t: int) -> list[np.ndarray]:
        """The table entry q each bit of iteration t is coded with, per colour (bits, positions),
        by the reference engine: the context's entry, or for coder id 2 what its adaptation
        makes of it (`adapt.refine`, per step), and for coder id 3 in its mixed iterations what
        the mixer makes of both, bit by bit in coding order. A context reads only bits coded
        before it: earlier steps, and its own step's rows above."""
        channels = np.arange(self.bits)[:, None]
        out, tables = [], []
        for s, positions in enumerate(layout.positions):
            contexts = context_index(canvas, layout.width, t, self.features[t, s], positions)  # (bits, n)
            tables.append(self.table[t, s, channels, contexts])
            if self.adaptive:
                ones, k = canvas[MAX_LOOKBACK + t][:, positions], self.features.shape[3]
                out.append(np.stack([adapt.refine(self.table[t, s, c], contexts[c], ones[c], k)
                                     for c in range(self.bits)]))
            else:
                out.append(tables[-1])
        mixer = self._mixer(layout, canvas, t)
        if mixer:
            for s, positions in enumerate(layout.positions):
                for c in range(self.bits):
                    mixer.start_step()
                    for i, position in enumerate(positions.tolist()):
                        out[s][c, i] = mixer.entry(position, c, out[s][c, i], tables[s][c, i])
                        mixer.learn(canvas[MAX_LOOKBACK + t, c, position])
        return out

    def code_lengths(self, codes: list[np.ndarray]) -> list[np.ndarray]:
        """The ideal code length -log2 P(bit) of every code bit under this model, per tile shaped
        like its codes (iterations, bits, rows, cols): where the bits of a stream go, position by
        position (`benchmarks/bitmaps.py`). A chunk's bytes exceed its sum by the range coder's
        rounding to 32-bit words and its quantization of the probabilities (a few bytes)."""
        layout, canvas, entries = self._entries(codes, range(codes[0].shape[0]))
        p_one = entries / 2.0 ** PROBABILITY_BITS
        return layout.cut(-np.log2(np.where(canvas, p_one, 1 - p_one)))

    def probabilities(self, codes: list[np.ndarray], t: int) -> list[np.ndarray]:
        """P(bit = 1) each bit of iteration t would be coded with, from iterations 0..t of
        `codes`, per tile (bits, rows, cols), for the tiles coded together as given: what a
        rate-aware choice of the bits weighs (`benchmarks/rate_aware_bits.py`)."""
        layout, _, entries = self._entries([c[:t + 1] for c in codes], [t])
        return [p[t] / 2.0 ** PROBABILITY_BITS for p in layout.cut(entries)]

    def _entries(self, codes: list[np.ndarray], iterations) -> tuple[Canvas, np.ndarray, np.ndarray]:
        """The painted canvas of `codes` and the q every bit of `iterations` is coded with (1 elsewhere)."""
        layout = Canvas(tuple(c.shape[1:] for c in codes))
        self._check(layout.shapes, codes[0].shape[0])
        canvas = layout.paint(codes)
        entries = np.ones(canvas.shape, np.int64)  # q of every bit, as coded
        steps = self._steps(layout)
        for t in iterations:
            if self.kernels:  # the kernels record what they code with
                reads, own = steps
                self.kernels.encode_chunk(canvas, layout.positions, reads[t], own[t], self.table[t], self.adaptive,
                                          entries, **self._mix_args(t, layout))
                continue
            for positions, coded in zip(layout.positions, self._coded_entries(layout, canvas, t)):
                entries[MAX_LOOKBACK + t][:, positions] = coded
        return layout, canvas, entries

    def chunk_bytes(self, shapes) -> tuple[int, int, int]:
        """(fewest, most, multiple of) bytes of one chunk for these tile shapes: whole 32-bit words,
        at least one when there are bits; at most MAX_SYMBOL_BITS a bit and two words more."""
        bits = symbols(shapes)
        return (4 if bits else 0), 4 * (-(-bits * MAX_SYMBOL_BITS // 32) + 2), 4

    def decode(self, chunks: list[bytes], shapes: list[tuple[int, int, int]], steps: int = 0) -> list[np.ndarray]:
        """The codes of these chunks, the last one holding its first `steps` coding steps (0: all);
        the bits of the steps it does not hold are False."""
        layout = Canvas(tuple(tuple(s) for s in shapes))
        self._check(layout.shapes, len(chunks), steps)
        check_chunks(self, chunks, shapes)
        canvas = layout.empty(len(chunks), self.bits)
        offsets = self._steps(layout)
        for t, chunk in enumerate(chunks):
            coded = steps if steps and t == len(chunks) - 1 else 2 * self.bits
            if self.kernels:
                reads, own = offsets
                status = self.kernels.decode_chunk(canvas, layout.positions, reads[t], own[t], self.table[t], chunk,
                                                   self.adaptive, steps=coded, **self._mix_args(t, layout))
                if status:
                    raise EntropyError(f"iteration {t + 1} {UNSEALED[status]}")
                continue
            decoder = constriction.stream.queue.RangeDecoder(np.frombuffer(chunk, "<u4").astype(np.uint32))
            plane = canvas[MAX_LOOKBACK + t]
            mixer = self._mixer(layout, canvas, t)
            # step by step: a step's contexts read the channels decoded before it
            for s, positions in enumerate(layout.positions):
                for c in range(min(max(coded - s * self.bits, 0), self.bits)):
                    features, table_row = self.features[t, s, c], self.table[t, s, c]
                    # a step whose contexts read its own bits in the row above goes row by row
                    runs = layout.rows(s) if reads_step(features, c).any() else [slice(None)]
                    state = adapt.StepState(table_row, features.shape[0]) if self.adaptive else None
                    if mixer:
                        mixer.start_step()
                    for run in runs:
                        contexts = context_index(canvas, layout.width, t, features, positions[run])
                        try:
                            plane[c, positions[run]] = self._decode_step(decoder, table_row, contexts, state, mixer, c,
                                                                         positions[run])
                        except AssertionError:  # constriction's "invalid data": a point no encoder writes
                            raise EntropyError(f"iteration {t + 1} {UNSEALED[2]}") from None
            # accepted only if these are the bytes the encoder writes for the bits decoded (its words
            # and its seal): the compiled decoder checks the same from its final state
            sealed = self._code_iteration(layout, canvas, None, t, coded)
            if chunk != sealed:
                status = 1 if len(chunk) > len(sealed) else 3 if len(chunk) < len(sealed) else 2
                raise EntropyError(f"iteration {t + 1} {UNSEALED[status]}")
        return layout.cut(canvas)

    def _decode_step(self, decoder, table_row: np.ndarray, contexts: np.ndarray, maps=None, mixer=None, c: int = 0,
                     positions=()) -> np.ndarray:
        """The reference engine's bits of one step (or of a run of its positions), from its table
        row and their contexts: all at once, or for coder id 2 one at a time, each entry refined
        by `maps`, the step's `adapt.StepState`, from what the step decoded before, and for coder
        id 3 mixed by `mixer`, the iteration's `mix.IterationMixer` (channel c at `positions`)."""
        if not self.adaptive:
            return decoder.decode(BERNOULLI, table_row[contexts] / 2.0 ** PROBABILITY_BITS)
        bits = np.empty(len(contexts), bool)
        for i, ctx in enumerate(contexts.tolist()):
            coded = maps.entry(ctx)
            if mixer:
                coded = mixer.entry(int(positions[i]), c, coded, int(table_row[ctx]))
            bits[i] = decoder.decode(BERNOULLI, np.array([coded / 2.0 ** PROBABILITY_BITS]))[0]
            maps.learn(bits[i])
            if mixer:
                mixer.learn(bits[i])
        return bits


class AdaptiveCoder(ContextCoder):
    """Coder id 2: the context coder with each bit's probability learned, step by step, from the
    bits already coded: context states that start at the table entries, and adaptive maps
    (`rgbatch.adapt`). The same tables and the same range coder, fewer bytes where an image's
    bits are more or less predictable than the tables' training images (docs/ENTROPY.md, "The
    adaptive coder"). The default for new encodings since session 11; coder id 1's streams
    still decode with `ContextCoder`."""

    coder_id = 2
    name = "adaptive"
    adaptive = True


class MixingCoder(AdaptiveCoder):
    """Coder id 3: coder id 2 with the bits of its first 4 iterations coded
    with a logistic mix of coder id 2's entry, the bare table entry, two block-history models and
    two same-step pattern models (`rgbatch.mix`, docs/ENTROPY.md, "The mixing coder"): 1.3-2.3 %
    fewer bytes. The same tables,
    no more parameters in the weights (the mixer's starting weights are the format's)."""

    coder_id = 3
    name = "mixing"
    design = mix.MIXING

    def __init__(self, extra=None, engine: str = "auto", model: ContextModel | None = None):
        try:
            mix.check_tables()
        except mix.MixingError as e:
            raise EntropyError(str(e)) from None
        super().__init__(extra, engine, model)


class GroupedMixingCoder(MixingCoder):
    """Coder id 4: coder id 3 with a seventh model mixed in, a cell per channel for each group of
    blocks that held the same 32 bits one iteration back, in its first 8 iterations
    (`mix.GROUPED`, docs/ENTROPY.md, "The mixing coder"): 0.4 % fewer bytes than coder id 3 on
    Kodak, 0.4 % on photos/val. The default for new encodings since session 27."""

    coder_id = 4
    name = "mixing2"
    design = mix.GROUPED


BERNOULLI = constriction.stream.model.Bernoulli(perfect=False)
# why a context-coded chunk is refused, by `fastcoder.decode_iteration`'s status: a chunk is accepted
# only if it is, word for word, what the encoder writes for the bits it decodes to
UNSEALED = {1: "holds more bytes than its bits need",
            2: "is not a chunk of the context coder",
            3: "ends before its bits are decoded (cut short or forged)"}


def _import_kernels():
    """rgbatch.fastcoder, imported on first use (numba takes 0.3 s to import), or None where numba
    is missing, or cannot keep its machine code (a read-only package folder and home: numba's
    RuntimeError "cannot cache function", a command's set-up error until session 63; NUMBA_CACHE_DIR
    names a folder it can): the constriction engine then codes the same bytes, slower."""
    try:
        return import_module(".fastcoder", __package__)
    except ImportError:
        return None
    except RuntimeError as e:
        if "cannot cache" not in str(e):
            raise
        return None


# -- the registry: coder id (from a header) and name (from a user) -> coder class -----------------
CODERS: dict[int | str, type[Coder]] = {}


def register_coder(cls: type[Coder]) -> type[Coder]:
    """Make a coder known by its id and its name (usable as a class decorator)."""
    for key in (cls.coder_id, cls.name):
        if key in CODERS and CODERS[key] is not cls:
            raise ValueError(f"entropy coder {key!r} is taken by {CODERS[key].__name__}")
        CODERS[key] = cls
    return cls


register_coder(RawCoder)
register_coder(ContextCoder)
register_coder(AdaptiveCoder)
register_coder(MixingCoder)
register_coder(GroupedMixingCoder)


def default_coder_name(extra=None) -> str:
    """The coder for new encodings: the mixing context coder with the group model (coder id 4,
    since session 27; coder id 3 in session 26) when the weights carry its model."""
    extra = extra or {}
    return GroupedMixingCoder.name if CONTEXT_PROBABILITIES in extra else RawCoder.name


def get_coder(key, extra=None):
    """The coder for an id (from a header) or a name (from the user; "auto" = the default)."""
    if key == "auto":
        key = default_coder_name(extra)
    try:
        cls = CODERS[key]
    except KeyError:
        known = sorted(k for k in CODERS if isinstance(k, str)) + ["auto"]
        if isinstance(key, str):  # the caller's `coder`, named as a parameter (until session 61 as a stream's id)
            raise OptionError("coder", f"must be one of {', '.join(known)}, not {key!r}") from None
        raise EntropyError(f"unknown entropy coder {key!r} (this rgbatch knows {known})") from None
    return cls(extra)
