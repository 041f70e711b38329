"""`compress` on Ray: sources read by tasks, encoded by actors, written by one writer.

    driver                      Ray tasks (num_cpus=0)        Ray actors (one model each)
    list sources, skip done --> read, hash, decode image  --> tile + batch several images,
    PartWriter  <---------------------------------------------- encode, cut to target depth

Read tasks return a small description and the pixels as two objects, so the pixels go from
the reader to an encoder through the object store without passing the driver. Reads ask for
no CPU: they can never be starved by encoders holding every CPU, and the driver bounds how
many run at once. They live in rgbatch.sources, which does not import torch, so the worker
processes running them start light. A read still running `read_timeout` seconds after it was
sent is cancelled, its worker process killed, and its source fails (`_Run.cancel_late`): a
decoder stuck on a hostile file cannot hold up the run; so is a rerun's check of archived
sources, whose sources are then read one by one. Each encoder actor loads the model
once (`Codec.load`) and encodes the tiles of several images per batch. The driver is the only writer: it commits Parquet parts
atomically as results stream in, so an interrupted run leaves only complete parts and a
rerun skips every image whose current row is ok with the same source hash.

Actors restart and their calls are retried when a node dies; the driver writes each image
once, whatever ran twice.

With `overlap` (by default on a GPU) an encoder runs two calls at once on two threads that share
its model: the codec gives its device to one call's network at a time, so that one call's
entropy coder runs on the CPU while the next call's network runs on the device (rgbatch.codec).
Each call still returns its own rows, those of the calls run one after the other.
"""

from __future__ import annotations

import contextlib
import faulthandler
import json
import logging
import os
import re
import shutil
import signal
import socket
import sys
import threading
import time
import warnings
from collections import deque
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import raywatch, signalwatch
from .codec import (DECODINGS, DEVICES, MAX_SEARCH_STEPS, PRECISIONS, Codec, batch_pixels, release_freed_memory,
                    resolve_device, resolve_partial)
from .entropy import get_coder
from .imageio import MAX_PIXELS, max_source_bytes
from .options import OptionError, check_choice, check_count, check_range
from .manifest import TIMES_FOLD, Archive, check_writable
from .ratecontrol import Target, check_measured
from .resample import candidates
from .row import OK, UNCHANGED, Row, hash_keys
from .sources import (GLOB_CHARS, NOT_UTF8, Source, archive_name, as_archived, expand_sources, name_clashes,
                      read_source, source_row, unchanged)
from .storage import READ_TIMEOUT, file_stat, is_local, kind, resolve, utf8_name
from .tiling import check_tile_size, tile_grid, tile_size_for
from .weights import DEFAULT_WEIGHTS, load_weights, trained_iterations

ACTOR_RESTARTS = 4  # a node may die this many times under one encoder
SETTLE_SECONDS = 10.0  # at most this long for encoders' last progress answers at the end of a run
TIMES_NOTES = 1 << 16  # notes of touched sources a times file holds at most (`PartWriter.write_times`)
CALLS_PER_WORKER = 2  # calls queued per encoder: one running, one ready behind it (overlap: one more running)
# archived sources a rerun checks in one task (`sources.unchanged`): at least the first, at most the
# second, else a share of them that keeps every reader busy: Ray's cost per task (about 3 ms)
# outweighs a check by size and time (about 10 us a source); 200,000 sources 13.6 -> 8.7 s
CHECK_SOURCES = (64, 1024)
# Tiles per batch and per encoder call by default; a call also holds at most one network batch's
# pixels (codec.BATCH_PIXELS), unless one image alone has more. A GPU wants many tiles; a CPU one
# big tile at a time (9-20 % faster on Kodak, benchmarks/pipeline_overhead.py: plain loop vs
# batched loop) but small images many at a time (64 px thumbnails: 1.5x as fast 16 a batch).
BATCH_SIZE = {"cuda": 8, "cpu": 16}
# Encoders sharing one GPU by default. The network is a small part of an encoder's time on a
# GPU: the context coder runs on the CPU (an H200 ran the shipped network at 34 MP/s at depth 16,
# the whole encoder at 3.3 with the coder and MS-SSIM then on the CPU; README, "Speed of the
# network"), so several encoders, each with its own CPU core, keep one GPU busy.
ENCODERS_PER_GPU = 4


@dataclass
class CompressOptions:
    iterations: int | None = None  # None: the depth the model was trained to (weights.trained_iterations)
    target: Target = field(default_factory=Target)
    tile_size: int | None = None  # None: per image, whole up to 2 MP padded, else tiles of 1024 (tiling.tile_size_for)
    batch_size: int = 0  # tiles per network batch and per encoder call; 0: 8 on a GPU, 16 on a CPU
    workers: int = 0  # encoder actors; 0: one per GPU, or one per two CPUs
    device: str = "auto"  # auto | cpu | cuda
    weights: str | None = None  # default: the shipped model
    coder: str = "auto"  # entropy coder: auto (the weights' default: mixing2), raw, context, adaptive, mixing, mixing2
    max_pixels: int = MAX_PIXELS  # decompression-bomb guard
    metadata: bool = True  # keep each source's ICC profile, EXIF, XMP, notes (rgbatch.imageio.Metadata) for restore
    address: str | None = None  # an existing Ray cluster (default: RAY_ADDRESS, else a local one)
    threads: int = 0  # torch threads per CPU encoder; 0: the CPUs shared out between encoders
    precision: str = "auto"  # network arithmetic: auto (bf16 where native), fp32, bf16
    # the decoder's arithmetic (Codec, rgbatch.exact): "exact" (the encoder's loop in float),
    # "exact-loop" (it measures exactly what decoding returns, 1.3-2.2x slower on a CPU) or "float"
    decoding: str = "exact"
    # MS-SSIM and PSNR at every depth (the manifest's quality columns, --target-msssim). Off,
    # large images encode up to 2x faster (docs/ARCHIVE.md, --no-measure)
    measure: bool = True
    search_steps: int = 0  # encoder-side search of the bits (Codec): better quality, encoding ~7x slower at 3
    post_filter: bool = True  # a colour post-filter per tile and depth (Codec; False: format v1 streams)
    resample: str = "none"  # resampled coding (Codec.encode_many): none | auto | 0.75 | 0.5
    # with a target, a partial last iteration where it lands nearer (Codec.encode_many); None: where
    # the target, measuring and the coder allow it (codec.resolve_partial), False: whole iterations
    partial: bool | None = None
    # two calls in flight per encoder, one's coder overlapping the other's network (module
    # docstring); None: on a GPU, where the device would otherwise wait for the coder, not on a CPU
    overlap: bool | None = None
    worker_resources: dict | None = None  # custom Ray resources each encoder asks for (pins them to nodes)
    # hash every archived source again, not trusting an unchanged size and modification time (sources.unchanged)
    rehash: bool = False
    # seconds one source may take to be read (fetched, hashed, decoded: `read_source`; counted from
    # its dispatch to Ray, the start of a worker process included) before its read is cancelled and
    # it fails, so that a decoder stuck on a hostile file or a store that stopped answering cannot
    # hold up the run; 0: no limit
    read_timeout: float = READ_TIMEOUT
    # a changed source replaces its path's image even where that one was read from another file
    # that is still there (`_Run.claimed`: by default it fails, the archived image kept)
    replace_others: bool = False

    def check(self):
        """Every option a compression reads, checked before any work starts (the model's own
        limits, iterations and tile size, once it is loaded: `compress`)."""
        if self.iterations is not None:  # at most the model's (`resolve_options`: "1..16 for this model")
            check_count("iterations", self.iterations, 1)
        check_tile_size(self.tile_size)  # its multiple is the model's: checked once it is loaded
        check_count("batch_size", self.batch_size, 0, what=" (0: automatic)")
        check_count("workers", self.workers, 0, what=" (0: automatic)")
        check_count("threads", self.threads, 0, what=" (0: the CPUs shared out)")  # until session 58 unchecked
        check_choice("device", self.device, DEVICES)
        check_count("max_pixels", self.max_pixels, 1)
        check_range("read_timeout", self.read_timeout, 0, what=" seconds (0: no limit)")
        check_choice("precision", self.precision, PRECISIONS)
        check_choice("decoding", self.decoding, DECODINGS)
        check_count("search_steps", self.search_steps, 0, MAX_SEARCH_STEPS)
        check_measured(self.target, self.measure)
        candidates(self.resample, bool(self.target), self.measure)
        resolve_partial(self.partial, self.target, self.measure, self.coder)

    def shaping(self, coder: str) -> str:
        """The options that shape an image's row (blob, depth, stats, metadata) as one text, the
        manifest's `options` column: a source of the same bytes as an archived one takes its row
        where this text and the model are the same (`_Run.archived_origin`). With `coder` the
        coder's name, once `compress` has resolved the iterations and partial; how the network
        computes (precision, device, batches) is left out: it changes no choice of the user's."""
        return json.dumps({"iterations": self.iterations, "target": asdict(self.target), "tile_size": self.tile_size,
                           "coder": coder, "metadata": self.metadata, "measure": self.measure,
                           "search_steps": self.search_steps, "post_filter": self.post_filter,
                           "resample": self.resample, "partial": self.partial, "decoding": self.decoding},
                          sort_keys=True, separators=(",", ":"))


@dataclass
class CompressResult:
    archive: str
    sources: int = 0  # found
    skipped: int = 0  # already in the archive
    ok: int = 0
    copied: int = 0  # of the ok: sources of the bytes of another of the run or of an image archived alike: a row copied
    failed: int = 0
    pixels: int = 0  # of the ok images of this run
    copied_pixels: int = 0  # of those, the copied ones' (not encoded)
    shared: int = 0  # of the ok: rows whose blob another row holds (`PartWriter`: not stored again)
    stored_pixels: int = 0  # of the ok: the pixels of the rows that stored their blob (`bpp`)
    source_bytes: int = 0
    archive_bytes: int = 0  # the blobs this run stored (none for a row sharing another's)
    alpha_bytes: int = 0  # the alpha channels its rows stored beside them (docs/ARCHIVE.md, alpha)
    seconds: float = 0.0
    workers: int = 0
    device: str = ""
    parts: list[str] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)  # (path, error)

    @property
    def megapixels_per_second(self) -> float:
        """Of the images encoded (not copied)."""
        return (self.pixels - self.copied_pixels) / 1e6 / self.seconds if self.seconds else 0.0

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0

    @property
    def bpp(self) -> float | None:
        """Of the streams this run stored, each once: `report`'s bpp as stored (until session 61
        the pixels of rows sharing a stream counted too); None where it stored none."""
        return 8 * self.archive_bytes / self.stored_pixels if self.stored_pixels else None

    @property
    def compression_ratio(self) -> float | None:
        """The source bytes of this run's images over what it stored for them (blobs and alpha
        channels: `report`'s ratio, for the archive); None where it stored nothing."""
        stored = self.archive_bytes + self.alpha_bytes
        return self.source_bytes / stored if stored else None


@dataclass
class CompressPlan:
    """What `compress` would do with the same sources, archive and options (`plan`), from the
    sources' listing and file metadata and the archive's rows alone: no image read or hashed."""
    archive: str
    sources: int = 0  # found
    source_bytes: int = 0  # theirs, as listed
    unchanged: int = 0  # archived, their size and time as recorded: skipped unread
    to_hash: int = 0  # archived, their size or time moved or none recorded (all with `rehash`): read and hashed,
    to_hash_bytes: int = 0  # skipped where their bytes are the same, else encoded again
    new: int = 0  # not archived (or their row failed): read and encoded, or copied where the same bytes are
    new_bytes: int = 0
    unreadable: int = 0  # no size and time to be had (gone since listed, no permission): they fail
    clashing: int = 0  # names that are not UTF-8 and read as another's (`sources.name_clashes`): they fail
    not_utf8: int = 0  # the other names that are not UTF-8: they fail too (counted unreadable until session 62)
    not_listed: int = 0  # images the archive holds whose paths are not among the sources: kept as they are
    # the first few paths of `new`, `to_hash` and `not_listed` (PLAN_EXAMPLES each), to look at
    examples: dict[str, list[str]] = field(default_factory=lambda: {"new": [], "to_hash": [], "not_listed": []})


PLAN_EXAMPLES = 5


def some_of(shown: list[str], total: int) -> str:
    """The first few of `total` things in words: "a, b, c and 12 more"."""
    more = total - len(shown)
    return ", ".join(shown) + (f" and {more:,} more" if more > 0 else "")


def plan(sources: list[str], archive: str | None = None, options: CompressOptions | None = None,
         log=None) -> CompressPlan:
    """What `compress(sources, archive, options)` would do (`compress --dry-run`): each source
    checked against the archive's rows by its size and modification time, as a rerun checks it
    (`sources.as_archived`), without reading, encoding or writing anything (a missing archive is
    not made). The options are checked as `compress` checks them, weights included. `log(text)`
    gets a note as each stage starts (a million sources take about half a minute)."""
    options = _options(options)
    root, found = _expand(sources, archive)
    resolve_options(options)
    archive = Archive(archive or default_archive(root), create=True)  # a missing one holds nothing, and stays so
    check_writable(archive.fs, archive.root, archive.location)  # as taking the lock checks it
    if log:
        log(f"{len(found):,} source(s); reading the archive's rows")
    done = archive.done()
    if log:
        log(f"the archive holds {done.num_rows} image(s); checking the sources' sizes and times")
    result = CompressPlan(archive=archive.location, sources=len(found))
    clashing = _clashing(found, done)
    if clashing:
        result.clashing = len(clashing)
        found = [s for s in found if s not in clashing]
    at = _archived_at(found, done)
    sizes, times = done["source_bytes"].to_pylist(), done["source_mtime"].to_pylist()
    for source, index in zip(found, at):
        if utf8_name(source.path) != source.path:  # `read_source` refuses such a name, whatever the file
            result.not_utf8 += 1
            continue
        try:
            stat = source.listed or file_stat(*resolve(source.location), regular=True)  # a FIFO: reading fails
        except (OSError, ValueError):
            result.unreadable += 1
            continue
        size = stat[0] or 0
        result.source_bytes += size
        if index < 0:
            result.new, result.new_bytes, kind = result.new + 1, result.new_bytes + size, "new"
        elif not options.rehash and as_archived(stat, sizes[index], times[index]):
            result.unchanged, kind = result.unchanged + 1, None
        else:
            result.to_hash, result.to_hash_bytes, kind = result.to_hash + 1, result.to_hash_bytes + size, "to_hash"
        if kind and len(result.examples[kind]) < PLAN_EXAMPLES:
            result.examples[kind].append(source.path)
    unlisted = np.ones(done.num_rows, dtype=bool)
    unlisted[[index for index in at if index >= 0]] = False
    result.not_listed = int(unlisted.sum())
    result.examples["not_listed"] = done["path"].filter(unlisted)[:PLAN_EXAMPLES].to_pylist()
    return result


def _options(options: CompressOptions | None) -> CompressOptions:
    """`options` (None: the defaults), checked."""
    options = CompressOptions() if options is None else options
    if not isinstance(options, CompressOptions):  # a dict of them failed as an AttributeError until session 61
        raise OptionError("options", f"is a {type(options).__name__}: give CompressOptions(...)")
    options.check()
    return options


def _clashing(found: list[Source], done: pa.Table) -> list[Source]:
    """The sources whose names are not UTF-8 and read as another's when so shown, this run's or an
    archived image's (`sources.name_clashes`): they fail without a row."""
    forms = {form for s in found if (form := utf8_name(s.path)) != s.path}  # few, if any
    archived = set(done["path"].filter(pc.is_in(done["path"], pa.array(forms, pa.large_string()))).to_pylist()
                   ) if forms and done.num_rows else set()
    return name_clashes(found, archived)


def _archived_at(found: list[Source], done: pa.Table) -> list[int]:
    """Each source's row in `done` (-1: not archived), found in one vectorized search."""
    at = pc.index_in(pa.array([_utf8(s.path) for s in found], pa.large_string()),
                     value_set=done["path"].combine_chunks(), skip_nulls=True)
    return pc.fill_null(at, -1).to_numpy(zero_copy_only=False).tolist()


# -- work done on the cluster -------------------------------------------------------------------
class EncodeWorker:
    """One encoder (a Ray actor): the model loaded once, batches of images in, manifest rows out."""

    def __init__(self, weights: str, device: str, options: CompressOptions, threads: int = 0):
        import torch

        if threads:
            torch.set_num_threads(min(threads, os.cpu_count() or threads))
        self.codec = Codec.load(weights, device=device, tile_size=options.tile_size,
                                batch_size=options.batch_size or BATCH_SIZE[resolve_device(device).type],
                                coder=options.coder, precision=options.precision, search_steps=options.search_steps,
                                decoding=options.decoding, post_filter=options.post_filter)
        self.iterations = options.iterations
        self.target = options.target
        self.measure = options.measure
        self.resample = options.resample
        self.partial = resolve_partial(options.partial, options.target, options.measure, self.codec.coder.name)
        self.shaping = options.shaping(self.codec.coder.name)  # each row's `options`
        self.working = {}  # thread -> (paths, tiles done, tiles, pixels done) of the call it encodes

    def model_id(self) -> str:
        return self.codec.model_id

    def progress(self) -> list:
        """How far the calls being encoded are: (their images' paths, tiles done, tiles, pixels of
        the tiles done) each, none between calls. The driver asks while calls run: the method
        runs in a concurrency group of its own (`_compress_locked`), beside `encode`."""
        return list(self.working.values())

    def _row(self, read: Row, encoded, seconds: float) -> Row:
        return read.from_encoded(encoded, self.codec.model_id, encoded.tile_size, self.codec.coder.name, seconds,
                                 self.shaping)

    def encode(self, infos: list[Row], *images: np.ndarray) -> list[Row]:
        """Rows of the images: tiles of all of them share batches; one bad image fails alone."""
        start = time.perf_counter()
        paths = tuple(info.path for info in infos)
        call = threading.get_ident()  # two calls run at once with overlap, each on its own thread

        def progress(*done):  # after each batch of tiles (the codec trims its heap then)
            self.working[call] = (paths, *done)

        try:
            encoded = self.codec.encode_many(list(images), self.iterations, self.measure, target=self.target,
                                             progress=progress, resample=self.resample, partial=self.partial)
        except Exception:  # find out which image it was: encode them one by one
            return [self._encode_one(info, image) for info, image in zip(infos, images)]
        finally:
            self.working.pop(call, None)
            release_freed_memory()
        seconds = time.perf_counter() - start
        pixels = sum(im.shape[0] * im.shape[1] for im in images)
        return [self._row(info, enc, seconds * im.shape[0] * im.shape[1] / pixels)
                for info, enc, im in zip(infos, encoded, images)]

    def _encode_one(self, info: Row, image: np.ndarray) -> Row:
        start = time.perf_counter()
        try:
            encoded = self.codec.encode(image, self.iterations, self.measure, target=self.target,
                                        resample=self.resample, partial=self.partial)
            return self._row(info, encoded, time.perf_counter() - start)
        except Exception as e:  # a worded refusal as it is; anything else (MemoryError, torch's) with its kind
            return info.failed(f"encoding failed: {e}" if isinstance(e, ValueError) and str(e)
                               else f"encoding failed: {type(e).__name__}: {e}")


# -- Ray session ----------------------------------------------------------------------------------
@contextlib.contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None):
    """Use the Ray already initialised in this process, the cluster at `address` / RAY_ADDRESS,
    or start a local one for the duration of the block (quietly: no dashboard, no worker logs).

    A Ray this module starts or connects to is one call's at a time: a call on another thread
    waits for it to end, then starts its own (until session 61 it borrowed the first call's Ray,
    which the first then shut down under it). Ray's driver prints the errors its cluster reports
    (a task to be retried, an actor lost) to sys.stdout; the CLI sends them to stderr
    (`cli.stdout_kept`), a library caller's stdout is left as it is."""
    # a KeyboardInterrupt raised into Ray's extension module as it loads was printed there and
    # swallowed, the command going on (benchmarks/fuzz_kill.py, session 55): the signals wait
    first, excepthook = "ray" not in sys.modules, sys.excepthook  # before Ray's import, which sets its own
    with _signals_held():
        import ray

    me = threading.current_thread()
    with _OWN.state:  # whose Ray is running, read together with whether one is
        borrowed = ray.is_initialized() and _OWN.thread in (None, me)  # the caller's, or this thread's own
    if borrowed:
        with _session(owned=False):
            yield ray
        return
    with _OWN.turn:  # another thread's Ray of its own: wait for it to end
        with _OWN.state:
            _OWN.thread = me
        hooks = _process_hooks()  # once the Ray before has ended and put back what it changed
        if first:
            hooks["excepthook"] = excepthook
        try:
            with _own_ray(ray, address, num_cpus, hooks):
                yield ray
        finally:
            with _OWN.state:
                _OWN.thread = None


# the Ray this module started or connected to (`ray_session`): `turn` held while it runs, `thread` its
# call's thread (None: none), read and set under `state`
_OWN = SimpleNamespace(turn=threading.Lock(), state=threading.Lock(), thread=None)


@contextlib.contextmanager
def _own_ray(ray, address: str | None, num_cpus: int | None, hooks: dict):
    address = address or os.environ.get("RAY_ADDRESS")
    quiet = dict(log_to_driver=False, logging_level=logging.ERROR)
    watchdog = None
    hooks["files"] = _files_for_ray()
    try:
        if address:
            check_cluster_address(address)  # an answer within 20 s, signals not held
            with _signals_held(ray):
                ray.init(address=address, **quiet)
        else:
            import psutil  # Ray's own copy, on the path once ray is imported

            before = set(psutil.Process().children(recursive=True))
            with _signals_held(ray):
                try:
                    # Ray renices its workers (+15) to keep its daemons responsive; here the workers are
                    # the job, so they keep the priority the command was given (on a shared machine the
                    # default makes encoders 5x slower than a plain loop)
                    # address "local": a new Ray of our own, never a cluster someone left running here
                    ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), include_dashboard=False,
                             _system_config={"worker_niceness": 0}, **quiet)
                finally:  # what it started dies with this process, even if killed or stopped half-way (rgbatch.raywatch)
                    watchdog = raywatch.start(set(psutil.Process().children(recursive=True)) - before)
    except BaseException as e:  # a Ray that did not start (or a signal meanwhile): what it started goes
        session = None if address or isinstance(e, Exception) else _session_folder(ray)  # an interrupt's: no logs
        _teardown(ray, watchdog, hooks, session, quiet=True)  # to keep (a Ray failure's are kept)
        # Ray's words, whatever the kind: a bare Exception ("The current node timed out during
        # startup") went through as it was until session 58
        if isinstance(e, Exception):
            where = f" at {address}" if address else ""
            said = " ".join(str(e).split())  # Ray's lines as one (a "\n\n" was shown as such until session 62)
            raise RuntimeError(f"cannot start or reach Ray{where}: {said}{_ray_hint(e, own=not address)}") from None
        raise
    hooks["ray"] = _process_hooks()  # as Ray set them: what the block changes of them meanwhile is the caller's
    session = None if address else _session_folder(ray)
    failed = True
    try:
        with _session(owned=True):
            yield ray
        failed = False
    except (KeyboardInterrupt, SystemExit):  # an interrupt: no failure whose logs may tell more
        failed = False
        raise
    finally:
        _teardown(ray, watchdog, hooks, None if failed else session)


def _teardown(ray, watchdog, hooks: dict, session: str | None, quiet: bool = False):
    """Shut a call's own Ray down, then its watchdog, the process's hooks (`_restore_hooks`) and
    its session folder (None: kept), each step whatever a signal raises in the one before (Ray's
    shutdown takes seconds). `quiet`: Ray's errors in shutting down left out (a start that failed:
    its own error is the one to say)."""
    try:
        with contextlib.suppress(Exception) if quiet else contextlib.nullcontext():
            ray.shutdown()
    finally:
        try:
            if watchdog:
                watchdog.close()
            _restore_hooks(hooks)
        finally:
            _remove_session(session)


def _remove_session(session: str | None):
    """Remove a Ray's session folder (`_session_folder`) and Ray's `session_latest` link to it,
    which Ray would not replace once dangling (a helper's round, session 64)."""
    if not session:
        return
    shutil.rmtree(session, ignore_errors=True)
    latest = os.path.join(os.path.dirname(session), "session_latest")
    with contextlib.suppress(OSError):
        if os.readlink(latest) == session:
            os.unlink(latest)


def _session_folder(ray) -> str | None:
    """The session folder (logs, sockets) of the Ray this call started: removed when it ends unless
    the call failed, whose logs may tell why (200-800 KB a run were left in /tmp/ray for ever until
    session 64). None where Ray does not say it, or it is not named as Ray names them."""
    try:
        folder = ray._private.worker._global_node.get_session_dir_path()
    except Exception:  # Ray's private API moved
        return None
    return folder if os.path.basename(folder).startswith("session_") and os.path.isdir(folder) else None


class _Sessions(threading.local):
    """Per thread, the `ray_session`s open, innermost last: whether each is the command's own Ray
    (one it started or connected to) or the caller's."""

    def __init__(self):
        self.open: list[SimpleNamespace] = []


_SESSIONS = _Sessions()


@contextlib.contextmanager
def _session(owned: bool):
    mine = SimpleNamespace(owned=owned)
    _SESSIONS.open.append(mine)
    try:
        yield
    finally:  # this one, wherever it is (a generator's session may close out of order, or elsewhere)
        _SESSIONS.open[:] = [s for s in _SESSIONS.open if s is not mine]


def end_actors(ray, actors):
    """End a command's actors as its `ray_session` closes. In a Ray of the command's own,
    `ray.shutdown` ends them with its job: killing them first made Ray print every call in
    flight as a task failed and retried, twice on a Ctrl-C (session 60). In the caller's Ray,
    or where this thread has no session open (a generator closed elsewhere), they are killed here."""
    if not (_SESSIONS.open and _SESSIONS.open[-1].owned):
        for actor in actors:
            ray.kill(actor)


RAY_FILES = 4096  # file descriptors asked for a Ray (the soft limit raised so far where the hard one allows)
RAY_MIN_FILES = 128  # fewer: a driver on a cluster died of SIGABRT, a Ray of its own timed out starting


def _files_for_ray() -> tuple[tuple[int, int], int] | None:
    """Raise the soft open-file limit (`ulimit -n`) to RAY_FILES where the hard limit allows (the
    Ray a run starts inherits it; `_restore_hooks` puts it back where it is still so), and return
    (the limits as they were, the soft limit set), None where not raised; refuse, worded, a limit
    under RAY_MIN_FILES. Under 40 a driver joining a cluster died of SIGABRT (boost's "epoll: Too
    many open files"), under 64 a Ray of its own timed out starting, until session 62."""
    try:
        import resource
    except ImportError:  # not a POSIX system: no such limit to read
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = RAY_FILES if hard == resource.RLIM_INFINITY else min(RAY_FILES, hard)
    if soft != resource.RLIM_INFINITY and wanted < RAY_MIN_FILES:
        raise RuntimeError(f"the open-file limit is {soft} (ulimit -n; its hard limit {hard}): Ray needs at least "
                           f"{RAY_MIN_FILES}: raise it")
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return None
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    except (ValueError, OSError):  # refused: Ray starts with the limit as it is
        return None
    return (soft, hard), wanted


def _process_hooks() -> dict:
    """The process-wide settings Ray's driver changes and leaves changed after `shutdown`:
    SIGTERM's handler and `sys.excepthook` (a program calling `compress` found them Ray's after
    it returned, until session 58); its environment variables (`RAY_*`, and PYTHONBREAKPOINT, with
    which a caller's `breakpoint()` went to Ray's debugger), faulthandler and the warnings
    filters (until session 61), the `ray` logger's level (`logging_level`: until session 63). Taken
    before Ray starts and once it has (`hooks["ray"]`), so that `_restore_hooks` puts back what is
    still as Ray set it."""
    hooks = {"excepthook": sys.excepthook, "environ": _rays_variables(), "faulthandler": faulthandler.is_enabled(),
             "warnings": list(warnings.filters), "log_level": logging.getLogger("ray").level}
    if threading.current_thread() is threading.main_thread():
        hooks["sigterm"] = signal.getsignal(signal.SIGTERM)
    return hooks


def _rays_variables() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith("RAY_") or k == "PYTHONBREAKPOINT"}


def _restore_hooks(hooks: dict):
    """Each setting of `hooks` back where it is still as Ray set it (`hooks["ray"]`; without it,
    Ray having failed to start, every one): what the program changed meanwhile stays."""
    ray = hooks.get("ray") or _process_hooks()
    if hooks.get("files"):  # the open-file limit `_files_for_ray` raised, where the program left it so
        import resource

        before, raised = hooks["files"]
        if resource.getrlimit(resource.RLIMIT_NOFILE)[0] == raised:
            with contextlib.suppress(ValueError, OSError):
                resource.setrlimit(resource.RLIMIT_NOFILE, before)
    if sys.excepthook is ray["excepthook"]:
        sys.excepthook = hooks["excepthook"]
    if hooks.get("sigterm") is not None and signal.getsignal(signal.SIGTERM) == ray.get("sigterm"):
        signal.signal(signal.SIGTERM, hooks["sigterm"])
    for variable, value in ray["environ"].items():
        if hooks["environ"].get(variable) != value and os.environ.get(variable) == value:
            before = hooks["environ"].get(variable)
            if before is None:
                del os.environ[variable]
            else:
                os.environ[variable] = before
    if ray["faulthandler"] and not hooks["faulthandler"]:
        faulthandler.disable()
    if logging.getLogger("ray").level == ray["log_level"]:
        logging.getLogger("ray").setLevel(hooks["log_level"])
    added = [f for f in ray["warnings"] if f not in hooks["warnings"]]
    warnings.filters[:] = [f for f in warnings.filters if f not in added]
    warnings._filters_mutated()  # warnings already shown under Ray's filters are shown again under these


HELD_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)  # held while Ray starts (`_signals_held`)
HOLD_SECONDS = 10.0  # at most this long: a local Ray starts in 2-4 s, a cluster that refuses may retry for 20+


@contextlib.contextmanager
def _signals_held(ray=None):
    """Hold SIGTERM, SIGINT and SIGHUP while Ray starts, then hand the first that came to the caller's
    handler (the CLI's: end as Ctrl-C does, what is done committed, exit 143, 130 or 129); a second one
    meanwhile, or the first once held HOLD_SECONDS, is handed on at once (a user who insists, a
    start that hangs or retries: a cluster that refuses the driver's token). `ray.init` makes
    SIGTERM a bare `sys.exit(15)` for the whole of its start (a head node's: a drain, then
    `sys.exit(1)`), so a command terminated then exited 15 or 1, or, where the exit was raised
    inside a finalizer, printed a traceback and went on; and an exception raised while its core
    worker connects left that half made, so that the command, having said "terminated", died of
    SIGSEGV or SIGABRT on its way out (found by benchmarks/fuzz_kill.py, session 54). Ray's setting
    of the SIGTERM handler is left out meanwhile. A signal whose handler is not the caller's own
    (the default, ignored, or the command not in the main thread) is left as it was: Ray's, as before.
    Without `ray`, the signals are held alone (while Ray is imported)."""
    main_thread = threading.current_thread() is threading.main_thread()
    handlers = {s: signal.getsignal(s) for s in HELD_SIGNALS} if main_thread else {}
    handlers = {s: h for s, h in handlers.items() if callable(h)}
    utils = getattr(getattr(ray, "_private", None), "utils", None)
    setter = getattr(utils, "set_sigterm_handler", None) if signal.SIGTERM in handlers else None
    constants = getattr(getattr(ray, "_private", None), "ray_constants", None)
    dumps_disabled = getattr(constants, "RAY_DISABLE_FAILURE_SIGNAL_HANDLER", None) if setter else None
    came, timer, expired = [], None, []

    @signalwatch.counted
    def held(signum, frame):
        nonlocal timer
        if signum == signal.SIGHUP and signal.SIGHUP in came and not expired:
            return  # a hang-up's second SIGHUP (the kernel's after the shell's) is no second signal
        if came:
            handlers[signum](signum, frame)
        came.append(signum)
        # held long enough: the same signal again, now handed on (a handler runs in the main thread)
        timer = threading.Timer(HOLD_SECONDS, lambda: (expired.append(signum), os.kill(os.getpid(), signum)))
        timer.daemon = True
        timer.start()

    for s in handlers:
        signal.signal(s, held)
    if setter:
        utils.set_sigterm_handler = lambda handler: None
    if dumps_disabled is False:  # the core worker's C++ handler would print a stack for the signal held
        constants.RAY_DISABLE_FAILURE_SIGNAL_HANDLER = True
    try:
        yield
    finally:
        if timer:
            timer.cancel()
        if setter:
            utils.set_sigterm_handler = setter
        if dumps_disabled is False:
            constants.RAY_DISABLE_FAILURE_SIGNAL_HANDLER = False
        for s, handler in handlers.items():
            signal.signal(s, handler)
        if came:  # the command ends now, as asked, Ray up (or not started) and no longer half made
            handlers[came[0]](came[0], None)


def _ray_hint(error: Exception, own: bool = False) -> str:
    """What Ray's "Failed to connect to Ray cluster" leaves in the exception it chains, and, for a
    Ray of its own (`own`), a file-size limit (`ulimit -f`), under which it timed out starting,
    unsaid, until session 62 (its processes die writing their logs and session files)."""
    cause = str(error.__cause__ or "")
    if "Unauthenticated" in cause or "AuthToken" in cause:  # Ray 2.60's `ray start` enables token auth by default
        return ("; the cluster asks for a token (Ray's token authentication): run with RAY_AUTH_MODE=token, the "
                "token in RAY_AUTH_TOKEN or ~/.ray/auth_token, as for any driver of that cluster")
    if not own:
        return ""
    try:
        import resource
    except ImportError:  # not a POSIX system: no such limit
        return ""
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if limit != resource.RLIM_INFINITY:
        return f"; files are limited to {limit:,} bytes here (ulimit -f), which Ray's own files may outgrow: lift it"
    return ""


HEAD_CHECK_SECONDS = 5.0  # how often a run asks whether its cluster's head still answers (`HeadWatch`)
HEAD_ANSWER_SECONDS = 5.0  # how long it waits for the answer


class ClusterGone(ConnectionError):
    """The Ray cluster a run works on stopped answering: what is committed stays."""


class HeadWatch:
    """Whether the cluster's head (its GCS) still takes connections, asked every
    HEAD_CHECK_SECONDS by a driver waiting on its work. A head that died, or was stopped (`ray
    stop`), left a driver waiting for Ray's own verdict: a minute of Ray's logs, then Ray ended the
    process, exit 1, no line of ours, no summary (session 57). Now the run ends within seconds,
    what it committed kept (`ClusterGone`). A head that does not answer for `patience` seconds (a
    network gone) counts as gone too. Only the head is asked: `ray stop` kills a cluster's nodes
    some 20 s before its head, and a node lost under a head that answers is a node lost (an
    encoder's calls wait for its restart elsewhere; `restore --workers` fails the images of its
    actor)."""

    def __init__(self, ray, kept: str = "", patience: float = 30.0):
        self.address, self.kept = ray.get_runtime_context().gcs_address, kept  # what stays, said on the way out
        self.patience, self.next, self.silent_since = patience, time.monotonic() + HEAD_CHECK_SECONDS, None

    def check(self):
        """Raise ClusterGone if the head is gone (asked at most every HEAD_CHECK_SECONDS)."""
        now = time.monotonic()
        if now < self.next:
            return
        self.next = now + HEAD_CHECK_SECONDS
        host, port = self.address.rsplit(":", 1)
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=HEAD_ANSWER_SECONDS).close()
            self.silent_since = None
            return
        except ConnectionRefusedError as e:
            why = e.strerror
        except OSError as e:  # a timeout, a network unreachable: gone once it lasts
            self.silent_since = self.silent_since or now
            if now - self.silent_since < self.patience:
                return
            why = f"no answer for {now - self.silent_since:.0f} s ({e.strerror or e})"
        raise ClusterGone(f"the Ray cluster stopped answering (its head at {self.address}: {why})"
                          + (f": {self.kept}" if self.kept else ""))


# an HTTP/2 client's first bytes (RFC 9113 3.4): the preface, then an empty SETTINGS frame
_HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])


def check_cluster_address(address: str, timeout: float = 20.0):
    """Refuse at once a cluster address (HOST:PORT, or ray://HOST:PORT) where no Ray answers:
    Ray's own connection retries it for ever, deaf to SIGTERM (a mistyped port, or the
    dashboard's, hung `compress` until session 44). A Ray cluster's head (its GCS) and a Ray
    Client server speak gRPC, so they answer an HTTP/2 preface with a SETTINGS frame; anything
    else is refused (with Ray's TLS on, RAY_USE_TLS, only that something listens). "auto" and
    other forms are left to Ray."""
    where = re.fullmatch(r"(?:ray://)?([^/]+):(\d+)", address)  # another scheme (http://...) is Ray's to refuse
    if not where:
        return
    host, port = where.group(1).strip("[]"), int(where.group(2))  # an IPv6 host in brackets
    shown = host
    if host in ("localhost", "127.0.0.1", "::1") and not address.startswith("ray://"):
        import ray.util  # ray.init connects to this node's address instead of the loopback's: so does the probe

        host = ray.util.get_node_ip_address()
        shown = f"{host} (this node's address, which Ray connects to for {shown})"
    try:
        with socket.create_connection((host, port), timeout=timeout) as connection:
            if os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true"):
                return
            connection.sendall(_HTTP2_PREFACE)
            reply = b""
            while len(reply) < 9 and (more := connection.recv(9 - len(reply))):
                reply += more
    except socket.timeout:
        raise ConnectionError(f"{shown} port {port} answers nothing within {timeout:g} s: no Ray cluster "
                              f"there") from None
    except OSError as e:
        raise ConnectionError(f"nothing answers at {shown} port {port} ({e.strerror or e})") from None
    if len(reply) < 9 or reply[3] != 4:  # a frame header's type byte: 4 = SETTINGS
        raise ConnectionError(f"{shown} port {port} answers, but not as a Ray cluster does (no gRPC): a cluster's "
                              f"address is its head's GCS port (6379 by default; not the dashboard's, 8265), or "
                              f"ray://HOST:10001 for a Ray Client server")


def plan_workers(ray, device: str = "auto", workers: int = 0, threads: int = 0,
                 worker_resources: dict | None = None) -> tuple[str, int, int, float]:
    """(device, workers, torch threads each, GPUs each) for the cluster's resources: `workers`
    0 is four sharing each GPU, or one per two CPUs; each worker takes one CPU."""
    resources = ray.cluster_resources()
    gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 0))
    if device == "auto":
        device = "cuda" if gpus else "cpu"
    if device == "cuda" and not gpus:
        raise OptionError("device", "cuda was asked for, but the Ray cluster has no GPU")
    if device == "cuda":
        workers = workers or max(gpus, min(gpus * ENCODERS_PER_GPU, cpus))
        # more workers than GPUs share them; Ray keeps 4 decimals of a fractional GPU, so round down
        gpu_share = 1.0 if workers <= gpus else int(gpus / workers * 10_000) / 10_000
    else:
        workers, gpu_share = workers or max(1, cpus // 2), 0.0
    if not worker_resources and workers > cpus:
        raise OptionError("workers", f"{workers} needs {workers} CPUs (one each); the Ray cluster has {cpus}")
    return device, workers, threads or max(1, cpus // workers), gpu_share


# -- the driver ------------------------------------------------------------------------------------
def default_archive(root: str) -> str:
    return os.path.join("manifests", archive_name(root))


def _expand(sources: list[str], archive: str | None):
    """`expand_sources`, its error worded as a usage slip where the last of several sources is
    what failed and no archive was given: `compress photos/ out/` for `compress photos/ --out out/`
    (a new archive folder is not there yet; an existing one holds no images). An archive named
    by an empty string (`--out "$UNSET"`) is refused: until session 54 it meant the default."""
    if archive is not None and not str(archive):
        raise OptionError("archive", "is empty: give the archive's folder, or leave it out for the default "
                                     "(manifests/NAME/)")
    try:
        return expand_sources(sources)
    except (ValueError, FileNotFoundError) as e:
        last = sources[-1] if archive is None and len(sources) > 1 else None
        if last is None or getattr(e, "source", None) != last or any(c in last for c in GLOB_CHARS):
            raise  # another source failed, or a glob that matches nothing: no archive folder
        raise OptionError("archive", f"not given, and the last source fails: {e}; if {last} is meant for the "
                                     f"archive, pass it as {{archive}}", ("archive",)) from None


def compress(sources: list[str], archive: str | None = None, options: CompressOptions | None = None,
             progress=None, log=None) -> CompressResult:
    """Archive the images of `sources` (folders, globs, list files) into `archive`.

    `progress(done, total, pixels, tiles)` is called as images finish and, while images are
    being encoded, about once a second: `pixels` counts the tiles already encoded of those
    images too, `tiles` is (done, all) of their tiles. `log(text)` gets notes.
    """
    options = _options(options)
    root, found = _expand(sources, archive)
    archive = archive or default_archive(root)
    options, weights, model_id, shaping = resolve_options(options)
    archive = Archive(archive, create=True)
    with archive.locked("compress") as lock:
        if lock.removed and log:
            log(f"removed {len(lock.removed)} temporary part file(s) left by an interrupted run")
        return _compress_locked(found, archive, options, weights, model_id, progress, log, shaping)


def resolve_options(options: CompressOptions) -> tuple[CompressOptions, str, str, str]:
    """(the options with the model's depth and `partial` resolved, the weights' absolute path,
    their model id, the rows' `options` text: `CompressOptions.shaping`), checked against the
    model: unusable weights, an unknown coder, a depth or tile size the model cannot give are
    refused here, worded, before any work."""
    weights = str(Path(options.weights or DEFAULT_WEIGHTS).resolve())  # workers may run elsewhere
    model, model_id, extra, info = load_weights(weights)
    iterations = trained_iterations(model.cfg, info) if options.iterations is None else options.iterations
    check_count("iterations", iterations, 1, model.cfg.max_iterations, " for this model")
    coder = get_coder(options.coder, extra)
    # partial resolved against the weights' own coder ("auto" is raw without context tables), so
    # that `--partial` the coder cannot give is a usage error here, not every image's in a worker
    options = replace(options, iterations=iterations,
                      partial=resolve_partial(options.partial, options.target, options.measure, coder.name))
    check_tile_size(options.tile_size, model.cfg.align)  # a multiple of what the model's network needs
    return options, weights, model_id, options.shaping(coder.name)


def _compress_locked(found, archive: Archive, options, weights, model_id, progress, log, shaping: str
                     ) -> CompressResult:
    done = archive.done((model_id, shaping))  # reading the current rows finds the parts damaged inside too
    for part, why in archive.unreadable if log else []:
        log(f"{part}: {why}")
    result = CompressResult(archive=archive.location, sources=len(found))
    start = time.perf_counter()
    with ray_session(options.address) as ray:
        device, workers, threads, gpu_share = plan_workers(ray, options.device, options.workers, options.threads,
                                                           options.worker_resources)
        overlap = device == "cuda" if options.overlap is None else options.overlap
        options = replace(options, device=device, batch_size=options.batch_size or BATCH_SIZE[device],
                          overlap=overlap)
        result.device, result.workers = device, workers
        if log:
            log(f"{len(found):,} source(s); the archive holds {done.num_rows} image(s); {workers} {device} encoder(s)")
        # a concurrency group of its own lets EncodeWorker.progress answer while encode runs
        # with overlap, two `encode` calls at once in its default group
        actor_class = ray.remote(concurrency_groups={"progress": 1})(EncodeWorker).options(
            num_cpus=1, num_gpus=gpu_share, resources=options.worker_resources or {},
            max_concurrency=2 if overlap else 1,
            max_restarts=ACTOR_RESTARTS, max_task_retries=-1)  # calls wait out restarts
        make_actor = lambda: actor_class.remote(weights, device, options, threads)  # noqa: E731
        actors = [make_actor() for _ in range(workers)]
        try:
            with archive.writer(model_id, held=archive.held_blobs()) as writer:  # a copy refers to its blob
                run = _Run(ray, options, found, done, actors, make_actor, writer, result, progress, archive)
                if log and (elsewhere := run.held_elsewhere()):
                    shown = some_of([f"{new} as {old}" for new, old in elsewhere[:PLAN_EXAMPLES]], len(elsewhere))
                    log(f"{len(elsewhere)} source(s) are files the archive holds under another path ({shown}): "
                        f"its paths are relative to the folder compressed, so these are archived again under the "
                        f"new paths (their streams shared); to go on with the archived paths, compress the folder "
                        f"they were archived from")
                run.run()
            result.parts = writer.parts
            if writer.times_written and len(archive.times_files) + len(writer.times_written) >= TIMES_FOLD:
                archive.fold_times(writer.times_written)
        finally:
            end_actors(ray, actors)
    result.seconds = time.perf_counter() - start
    return result


class _Run:
    """The driver's streaming loop: keep reads and encoder calls in flight, write what comes back."""

    def __init__(self, ray, options, found, done, actors, make_actor, writer, result, progress, archive=None):
        self.ray, self.options, self.done, self.archive = ray, options, done, archive  # the archive as listed at the start
        self.actors, self.make_actor = actors, make_actor
        self.writer, self.result, self.progress = writer, result, progress
        self.read_task = ray.remote(read_source).options(num_cpus=0, num_returns=2)
        self.check_task = ray.remote(unchanged).options(num_cpus=0)
        self.clashing = _clashing(found, done)  # failed by `run` without a row
        found = [s for s in found if s not in self.clashing] if self.clashing else found
        # sources archived before are checked `check_size` to a task; those that changed are read.
        # Each goes with its row's index in `done` (-1: not archived)
        at = _archived_at(found, done)
        self.to_check = deque((s, i) for s, i in zip(found, at) if i >= 0)
        self.pending = deque((s, i) for s, i in zip(found, at) if i < 0)  # sources to read, and their index
        self.checks = {}  # check ref -> (its (source, index) pairs, when it was started)
        self.reads = {}  # info ref -> (image ref, source, its index, when it was started)
        self.ready = deque()  # (info, image ref, its `size`): read, waiting for an encoder
        self.ready_size = np.zeros(2, dtype=np.int64)  # theirs together
        self.calls = {}  # rows ref -> (actor index, infos)
        self.busy = [0] * len(actors)  # calls in flight per actor
        self.calls_per_worker = CALLS_PER_WORKER + (1 if options.overlap else 0)
        self.prefetch = 2 * len(actors) * self.calls_per_worker + 1  # images read ahead (`reading_ahead`)
        self.limit = np.array([options.batch_size, batch_pixels(options.device)])  # of a call (`size`)
        # reads at once: each needs a worker process, and a burst of new processes starting
        # costs more CPU than the reads themselves
        self.max_reads = 2 * len(actors)
        # with --rehash a check reads and hashes its sources: the fewest to a task, so that a healthy
        # but slow store stays well within --read-timeout a check (`cancel_late`)
        self.check_size = (CHECK_SOURCES[0] if options.rehash
                           else int(np.clip(len(self.to_check) // (4 * self.max_reads), *CHECK_SOURCES)))
        self.written = set()
        # sources of the same bytes (sha256) as one this run sends to an encoder, or as an image
        # archived alike (`archived_origin`), are not encoded: the path of the one encoded by its
        # digest, and the others' read rows, given its row at the end
        self.first: dict[bytes, str] = {}
        self.archived = set()  # the digests of `first` whose path is an archived image's (not this run's)
        self.unread = set()  # archived paths whose row did not read back: no copy takes it (`copy_same_bytes`)
        self.alike = None  # `_alike_keys(done)`, once a source is new
        self.times = []  # (path, sha256, size, time) of archived sources unchanged but touched: `write_times`
        self.same_bytes: dict[bytes, list[tuple[Row, Source]]] = {}  # (read row, source) of each copy
        self.total = len(found) + len(self.clashing)
        self.unwritten = 0  # sources failed without a row (`clashing`)
        self.polls = {}  # progress ref -> actor index: questions to busy encoders
        self.head = None  # `HeadWatch`, from `run` on
        self.working = {}  # actor index -> its last answer (EncodeWorker.progress: its running calls)

    def held_elsewhere(self) -> list[tuple[str, str]]:
        """(path, archived path) of each source not archived at its path whose file the archive
        holds under another (its recorded `source`): an archive of folder A compressed again from
        A/2019 stored 2019/x.png again as x.png without a word (a copy, its stream shared), until
        session 58; now the run says so (`_compress_locked`)."""
        if not self.pending or not self.done.num_rows:
            return []
        at = pc.index_in(pa.array([_utf8(s.location) for s, _ in self.pending], pa.large_string()),
                         value_set=self.done["source"].combine_chunks(), skip_nulls=True)
        paths = self.done["path"].combine_chunks()
        return [(s.path, paths[i].as_py()) for (s, _), i in zip(self.pending, at.to_pylist()) if i is not None]

    def run(self):
        self.head = HeadWatch(self.ray, kept="what was finished is committed; a rerun goes on")
        for source in self.clashing:
            self.unwritten += 1
            self.count(source_row(source).failed(f"{NOT_UTF8}; not archived, as another file's name reads the same "
                                                 f"when so shown"))
        self.report()
        while True:
            while self.pending or self.reads or self.ready or self.calls or self.to_check or self.checks:
                self.step()
            self.write_times()
            if not self.copy_same_bytes():  # else: copies to encode after all, their archived row unread
                break
        # progress questions still in flight are answered before the actors are killed: one the
        # kill cuts off is retried on a dead actor, which Ray reports as an error
        if self.polls:
            self.ray.wait(list(self.polls), num_returns=len(self.polls), timeout=SETTLE_SECONDS)

    def step(self):
        """Start what may start, and take what has finished (waiting a second at most)."""
        from ray.exceptions import RayError

        self.start_checks()
        self.start_reads()
        self.start_calls()
        finished, _ = self.ray.wait(list(self.checks) + list(self.reads) + list(self.calls), num_returns=1,
                                    timeout=min(1.0, max(0.0, self.next_deadline() - time.monotonic())))
        if self.head:
            self.head.check()
        self.writer.commit_if_due()  # a slow run commits on time, not only when a row comes
        self.poll_encoders()
        for ref in finished:
            if ref in self.checks:
                self.check_done(self.checks.pop(ref)[0], ref)
            elif ref in self.reads:
                image_ref, source, index, _ = self.reads.pop(ref)
                try:
                    self.read_done(self.ray.get(ref), image_ref, source, index)
                except RayError as e:
                    self.write(source_row(source).failed(f"reading failed: {_reason(e)}"))
            else:
                index, infos = self.calls.pop(ref)
                self.busy[index] -= 1
                try:
                    rows = self.ray.get(ref)
                except RayError as e:
                    # the actor is gone for good (its restarts used up): record its images, replace it
                    rows = [info.failed(f"encoder failed: {_reason(e)}") for info in infos]
                    self.ray.kill(self.actors[index])
                    self.actors[index] = self.make_actor()
                for row in rows:
                    self.write(row)
        self.cancel_late()

    def next_deadline(self) -> float:
        """When the oldest read or check in flight runs out of `read_timeout` (monotonic seconds;
        inf: never)."""
        started = [read[-1] for read in self.reads.values()] + [check[-1] for check in self.checks.values()]
        if not started or not self.options.read_timeout:
            return float("inf")
        return min(started) + self.options.read_timeout

    def cancel_late(self):
        """Cancel every read or check in flight for longer than `read_timeout` (its worker process
        killed, so that a decoder looping on a hostile file, or a read from a store or mount that
        stopped answering, stops). A late read's source fails; a late check's sources are read one
        by one instead, each under the same limit (a read finds one unchanged by its hash)."""
        timeout, now = self.options.read_timeout, time.monotonic()
        if not timeout:
            return
        for ref in [ref for ref, (*_, started) in self.reads.items() if now - started > timeout]:
            _, source, _, _ = self.reads.pop(ref)
            self.ray.cancel(ref, force=True)
            self.write(source_row(source).failed(
                f"reading took more than {timeout:g} s: cancelled (a decoder stuck on a damaged file, or a store "
                f"that stopped answering; the limit is --read-timeout)"))
        for ref in [ref for ref, (_, started) in self.checks.items() if now - started > timeout]:
            batch, _ = self.checks.pop(ref)
            self.ray.cancel(ref, force=True)
            self.pending.extend(batch)

    def start_checks(self):
        while self.to_check and len(self.checks) < self.max_reads:
            batch = [self.to_check.popleft() for _ in range(min(self.check_size, len(self.to_check)))]
            known = self.done.take([i for _, i in batch])  # their rows' sha256, size and time, read by the task
            ref = self.check_task.remote([s for s, _ in batch], known, self.options.rehash,
                                         max_source_bytes(self.options.max_pixels))
            self.checks[ref] = (batch, time.monotonic())

    def check_done(self, batch, ref):
        """Count the unchanged sources as skipped; read the others (`read_source` hashes them
        again, and says why one that does not read fails)."""
        from ray.exceptions import RayError

        try:
            same = self.ray.get(ref)
        except RayError:  # the task was lost: read them one by one
            same = [False] * len(batch)
        self.result.skipped += sum(map(bool, same))
        self.pending.extend(item for item, kept in zip(batch, same) if not kept)
        for (source, index), now in zip(batch, same):
            if isinstance(now, tuple):  # unchanged by its hash, its size or time moved: noted
                self.times.append((source.path, self.done["source_hash"][index].as_py(), *now))
        self.write_times(TIMES_NOTES)
        self.report()

    def write_times(self, least: int = 0):
        """Write the notes of touched sources (`PartWriter.write_times`) once there are `least`."""
        if self.times and len(self.times) >= least:
            self.writer.write_times(self.times)
            self.times = []

    def start_reads(self):
        while self.pending and len(self.reads) < self.max_reads and self.reading_ahead():
            source, index = self.pending.popleft()
            known_hash = self.done["source_hash"][index].as_py() if index >= 0 else None
            info_ref, image_ref = self.read_task.remote(source, known_hash, self.options.max_pixels,
                                                          self.options.metadata)
            self.reads[info_ref] = (image_ref, source, index, time.monotonic())

    def reading_ahead(self) -> bool:
        """Whether to read one more image: up to `prefetch` ahead, and while the images read hold
        less than a call's pixels, up to a full call more (a call of thumbnails holds 16 of them;
        of big images, one)."""
        ahead = len(self.reads) + len(self.ready)
        return ahead < self.prefetch or (ahead < self.prefetch + self.limit[0] - 1
                                         and self.ready_size[1] < self.limit[1])

    def size(self, info: Row) -> np.ndarray:
        """(tiles, pixels) of an image: what an encoder call holds at most `batch_size` and one
        network batch (`codec.batch_pixels`) of."""
        grid = tile_grid(info.height, info.width, tile_size_for(self.options.tile_size, info.height, info.width))
        return np.array([len(grid), info.height * info.width])

    def start_calls(self):
        """Send each encoder a full call (`size`), or whatever is ready when it is idle or no more
        reads are coming."""
        while self.ready:
            index = min(range(len(self.actors)), key=self.busy.__getitem__)
            if self.busy[index] >= self.calls_per_worker:
                return
            more_coming = self.pending or self.reads
            if all(self.ready_size < self.limit) and self.busy[index] and more_coming:
                return
            group, count = [], 0
            while self.ready and (not group or all(count + self.ready[0][2] <= self.limit)):
                group.append(self.ready.popleft())
                count += group[-1][2]
            self.ready_size -= count
            infos = [info for info, _, _ in group]
            self.calls[self.actors[index].encode.remote(infos, *[ref for _, ref, _ in group])] = (index, infos)
            self.busy[index] += 1

    def read_done(self, info: Row, image_ref, source=None, index: int = -1):
        if info.status == UNCHANGED:
            self.result.skipped += 1
            self.report()
        elif info.status is not None:  # failed
            self.write(info)
        elif index >= 0 and (why := self.claimed(source, index)):
            self.refuse(info.path, why)
        else:
            digest = bytes.fromhex(info.source_hash) if info.source_hash else None
            if digest and digest not in self.first and (origin := self.archived_origin(info.source_hash)):
                self.first[digest] = origin
                self.archived.add(digest)
            if digest in self.first:  # the same bytes as an image archived or of this run: its row is copied at the end
                self.same_bytes.setdefault(digest, []).append((info, source))
                return
            if digest:
                self.first[digest] = info.path
            size = self.size(info)
            self.ready.append((info, image_ref, size))
            self.ready_size += size

    def claimed(self, source: Source, index: int) -> str | None:
        """Why a source with other bytes than its path's archived image does not replace it: that
        image was read from another file, which is still there (two folders with the same
        relative paths compressed into one archive in separate runs); None where it may (the same
        file, or the archived one gone: a library moved, then edited)."""
        archived = self.done["source"][index].as_py()
        if self.options.replace_others or not archived or archived == source.location:
            return None
        try:
            fs, path = resolve(archived)
            if kind(fs, path) != "file":
                return None
            if is_local(fs) and os.path.samefile(path, resolve(source.location)[1]):  # another spelling
                return None
        except (OSError, ValueError):
            return None
        return (f"not replaced: the archive holds this path's image from {archived}, still there and another "
                f"file, and this source ({source.location}) has other bytes; paths are relative to the sources' "
                f"common root: compress both folders in one run (their paths apart), or into another archive; "
                f"replace_others replaces it (docs/ARCHIVE.md, \"Two sources, one path\")")

    def refuse(self, path: str, why: str):
        """Count a source as failed without a row: the path's archived row stays current."""
        self.written.add(path)
        self.result.failed += 1
        self.result.failures.append((path, why))
        self.report()

    def archived_origin(self, source_hash: str) -> str | None:
        """The path of an image archived before this run from a source of these bytes by this
        model and options (`done`'s `alike`), or None."""
        if self.alike is None:
            self.alike = _alike_keys(self.done)
        keys, rows = self.alike
        key = np.uint64(int(source_hash[:16], 16))
        for index in rows[np.searchsorted(keys, key, "left"):np.searchsorted(keys, key, "right")].tolist():
            path = self.done["path"][index].as_py()
            if self.done["source_hash"][index].as_py() == source_hash and path not in self.unread:
                return path
        return None

    def copy_same_bytes(self) -> bool:
        """Write the rows of the sources whose bytes an image archived before or another source
        of this run has: its row with their path, source and times, read back from the archive
        (as listed at the start, or once this run's rows are committed); where its row failed,
        theirs fail with it (a rerun tries error rows again). Where an archived row does not
        read back (its blob damaged: `done` reads no blobs), its copies are queued to be read and
        encoded after all: True then (`run` goes on)."""
        if not self.same_bytes:
            return False
        self.writer.commit()
        archived = {self.first[d]: d for d in self.same_bytes if d in self.archived}
        this_run = {self.first[d]: d for d in self.same_bytes if d not in self.archived}
        for wanted, listed_again in ((archived, False), (this_run, True)):  # a path may be in both (changed)
            if wanted:
                archive = Archive(self.archive.location) if listed_again else self.archive
                for row in archive.rows(set(wanted)):
                    self.copy(row, self.same_bytes.pop(wanted.pop(row.path)))
        for path, digest in archived.items():  # not read back: encoded after all
            self.unread.add(path)
            del self.first[digest]
            self.archived.discard(digest)
            self.pending.extend((source, -1) for _, source in self.same_bytes.pop(digest))
        for path, digest in this_run.items():  # not read back: its part damaged since
            for info, _ in self.same_bytes.pop(digest):
                self.write(info.failed(f"not encoded: the same bytes as {path}, whose row does not read back"))
        return bool(archived)

    def copy(self, row: Row, copies: list[tuple[Row, Source]]):
        """Write `row` under the path, source and times of each of `copies` ((read row, source) of
        sources of its bytes)."""
        for info, _ in copies:
            if row.status == OK and row.source_hash == info.source_hash:
                self.write(replace(row, path=info.path, source=info.source, source_mtime=info.source_mtime,
                                   read_seconds=info.read_seconds, encode_seconds=0.0), copied=True)
            else:
                self.write(info.failed(f"not encoded: the same bytes as {row.path}, whose encoding failed: "
                                       f"{row.error}"))

    def write(self, row: Row, copied: bool = False):
        if row.path in self.written:  # a retried call answered twice: keep the first
            return
        self.written.add(row.path)
        self.count(row, copied, self.writer.add(row, archived=copied))  # none where the blob is another row's (a copy's)

    def count(self, row: Row, copied: bool = False, stored: int = 0):
        """Add a row written (or, failed, not written) to the run's result."""
        result = self.result
        if row.status == OK:
            result.ok += 1
            result.copied += copied
            result.pixels += row.width * row.height
            result.copied_pixels += row.width * row.height if copied else 0
            result.source_bytes += row.source_bytes
            result.archive_bytes += stored
            result.alpha_bytes += len(row.alpha or b"")
            result.shared += not stored  # its blob another row's, stored once
            result.stored_pixels += row.width * row.height if stored else 0
        else:
            result.failed += 1
            result.failures.append((row.path, row.error))
        self.report()

    def poll_encoders(self):
        """Ask every busy encoder how far its call is (one question in flight each), and take the
        answers that have come: the progress of images while they are being encoded."""
        from ray.exceptions import RayError

        if not self.progress:
            return
        for index, actor in enumerate(self.actors):
            if self.busy[index] and index not in self.polls.values():
                self.polls[actor.progress.options(concurrency_group="progress").remote()] = index
        answered, _ = self.ray.wait(list(self.polls), num_returns=len(self.polls), timeout=0)
        for ref in answered:
            index = self.polls.pop(ref)
            try:
                self.working[index] = self.ray.get(ref)
            except RayError:  # the actor died; its calls report it
                self.working.pop(index, None)
        if answered:
            self.report()

    def report(self):
        if self.progress:
            running = {tuple(i.path for i in infos) for _, infos in self.calls.values()}
            now = [w for calls in self.working.values() for w in calls if w[0] in running]  # of calls still running
            self.progress(len(self.written) + self.unwritten + self.result.skipped, self.total,
                          self.result.pixels + sum(w[3] for w in now), (sum(w[1] for w in now), sum(w[2] for w in now)))


def _alike_keys(done: pa.Table, chunk: int = 1 << 16) -> tuple[np.ndarray, np.ndarray]:
    """The first 8 bytes of the source hashes of `done`'s `alike` rows, sorted, and those rows'
    indices in the same order: a digest is found by a binary search in 16 MB a million rows, where
    a dictionary of hashes held 200 MB. Made `chunk` rows at a time (1M rows: 0.9 s)."""
    alike = np.flatnonzero(done["alike"].to_numpy(zero_copy_only=False))
    keys, rows = [np.zeros(0, np.uint64)], [alike[:0]]
    for start in range(0, len(alike), chunk):
        part = alike[start:start + chunk]
        heads, sha256 = hash_keys(done["source_hash"].take(part))
        keys.append(heads)
        rows.append(part[sha256])
    keys, rows = np.concatenate(keys), np.concatenate(rows)
    order = np.argsort(keys, kind="stable")
    return keys[order], rows[order]


def _utf8(path: str) -> str | None:
    """The path, or None for a name that is not UTF-8 (no archived path: it fails when read)."""
    try:
        path.encode()
        return path
    except UnicodeEncodeError:
        return None


def _reason(error: Exception) -> str:
    """The first line of a Ray error: its kind and cause, without the remote traceback."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")
