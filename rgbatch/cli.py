"""The `rgbatch` command line: thin typer commands over the library functions.

Each command parses its options and calls one library function. User errors (bad paths,
bad options, unusable weights) print one line and exit 2; never a traceback.
Exit codes: 0 all good, 1 some images failed (the rest done), 2 usage or set-up error.
"""

from __future__ import annotations

import codecs
import contextlib
import errno
import io
import json
import os
import re
import signal
import sys
import threading
import warnings
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.text import Text

from . import signalwatch
from .objectstore import worded
from .options import OptionError, check_range, figure, shown

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode="markdown",
                  context_settings={"help_option_names": ["-h", "--help"]},
                  help="Compress whole image archives with the Residual-GRU learned codec.")
EXIT_READER_GONE = 141  # 128 + SIGPIPE, as shells report a program that wrote into a closed pipe


def _quiet_stdout():
    """stdout onto /dev/null, so that Python's own flush of it on the way out raises nothing."""
    _onto_null(sys.stdout)


def _onto_null(stream):
    """`stream`'s file descriptor onto /dev/null (where it has one)."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, stream.fileno())
        os.close(null)


def _stderr():
    """sys.stderr, or the stream behind rich's proxy of it while a progress bar shows (the proxy
    prints into `err`: writing into it from `err` fed itself for ever, a hang on a terminal)."""
    return getattr(sys.stderr, "rich_proxied_file", sys.stderr)


class _Diagnostics(io.TextIOBase):
    """`err`'s stream: stderr, as best it can be written. Where it cannot be (a full disk under a
    log, `2>/dev/full`) it goes onto /dev/null and the command goes on: stderr holds diagnostics
    alone (until session 63 compress stopped at its first line, exit 1, the error said nowhere)."""

    def write(self, text: str) -> int:
        self._best_effort("write", text)
        return len(text)

    def flush(self):
        self._best_effort("flush")

    @staticmethod
    def _best_effort(method: str, *args):
        try:
            getattr(_stderr(), method)(*args)
        except OSError:
            _onto_null(_stderr())

    def isatty(self) -> bool:  # asked when the module loads, before `_standard_streams` (sys.stderr may be None)
        return bool(_stderr() and _stderr().isatty())

    def fileno(self) -> int:
        return _stderr().fileno()

    @property
    def encoding(self):
        return getattr(_stderr(), "encoding", None)


class _Closed(io.TextIOBase):
    """stdout where the command was started without one (`>&-`): each write fails, as on a closed
    file descriptor (`main`: "writing the output: Bad file descriptor", exit 2, as `cat` says it)."""

    def write(self, text: str) -> int:
        raise OSError(errno.EBADF, os.strerror(errno.EBADF))

    def fileno(self) -> int:
        return 1


def _standard_streams():
    """File descriptors 0-2 the command was started without, opened on /dev/null: no file the
    command opens takes their numbers (a library's writes to stdout or stderr would land in it),
    and Ray, which needs a stderr, starts (compress refused to with `2>&-` until session 63).
    Python's missing stdin or stderr reads or writes /dev/null; its stdout is `_Closed` (with
    `--json`, a traceback until session 63)."""
    for fd, name in enumerate(("stdin", "stdout", "stderr")):
        try:
            os.fstat(fd)
            continue
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
        if null != fd:
            os.dup2(null, fd)
            os.close(null)
        if getattr(sys, name) is None:
            setattr(sys, name, _Closed() if fd == 1 else open(fd, "w" if fd else "r", closefd=False))


def _reader_gone(console: Console):
    """The reader of our output stopped (`rgbatch report A | head -1`): a quiet exit, 141 (rich
    exits 1, the code of failed images here)."""
    _quiet_stdout()
    raise SystemExit(EXIT_READER_GONE)


# every rich console of the command: ours, and typer's for its help (`-h | head` exited 1 until session 62)
Console.on_broken_pipe = _reader_gone
# no console markup: names, paths and the library's messages print as they are ("x[/b].png" is a
# file name, not a style); the CLI's few colours are given as styles (`_red`)
err = Console(file=_Diagnostics(), markup=False)
out = Console(markup=False, soft_wrap=True)  # a result line stays one line in a pipe or file (a script reads it)

# the errors of a failed write, which `main` says are the output's (stdout on a full disk, or closed: `_Closed`)
OUTPUT_ERRORS = (errno.ENOSPC, errno.EIO, errno.EFBIG, errno.EDQUOT, errno.EBADF)
USER_ERRORS = (ValueError, OSError, RuntimeError)  # worded by the library; OSError: missing, unreadable, unwritable files
# the library's parameter names (OptionError.option) whose flag is not "--" + the name with dashes
FLAGS = {"classical_names": "--classical", "target.msssim": "--target-msssim", "target.bpp": "--target-bpp",
         "target.max_bytes": "--max-bytes",
         "archive": "--out", "iterations": "--depth"}  # compress's archive (the other commands take theirs as an argument)


def stdout_kept():
    """Around a command's library call: what prints to stdout meanwhile goes to stderr, so that
    stdout holds the command's own output alone (`--json`). Ray's driver prints the errors its
    cluster reports there ("Task X failed. There are infinite retries remaining", session 41),
    whatever `log_to_driver` says. Here, not in the library: until session 61 `ray_session` did
    it, and a program calling `compress` had every thread's output sent to stderr meanwhile."""
    return contextlib.redirect_stdout(sys.stderr)


# the endings of library messages that name a parameter (storage.ALREADY_THERE, limits.layout), and the
# CLI's flag for it: at the end only, never in the names a message holds before
ENDINGS = ((re.compile(r"\(the overwrite option replaces (it|a file)\)$"), r"(--overwrite replaces \1)"),
           (re.compile(r"(the limit of \d+ pixels) \(max_pixels\)$"), r"\1 (--max-pixels)"),
           (re.compile(r"\(decompression-bomb guard\); refused$"), "(decompression-bomb guard: --max-pixels); refused"),
           (re.compile(r"replace_others( replaces it \(docs/ARCHIVE\.md, \"Two sources, one path\"\))$"),
            r"--replace-others\1"))


def cli_words(text) -> str:
    """A library message as a command says it: shown (`shown`), a parameter it ends on as its flag."""
    return flagged(shown(text))


def flagged(text: str) -> str:
    """A library message with a parameter it ends on named as the command's flag (`ENDINGS`)."""
    for ending, flag in ENDINGS:
        text = ending.sub(flag, text)
    return text


def _flag_reasons(result: dict) -> dict:
    """A command's JSON result with the reasons of its (path, reason) lists `flagged`, as its table
    says them (until session 64 JSON named `max_pixels` where the table said --max-pixels)."""
    for key in ("failures", "problems", "unreachable"):
        if isinstance(result.get(key), list):
            result[key] = [(path, flagged(reason)) for path, reason in result[key]]
    return result


def _note(text: str):
    """A line the library logs (it may name files), on stderr: one line in a file or pipe (hard
    wrapped at 80 columns until session 64), wrapped by the terminal on one."""
    err.print(cli_words(text), highlight=False, soft_wrap=True)


def _cluster(address: str | None, used: bool) -> str | None:
    """`--address` as given, and a line where a command `used` Ray takes RAY_ADDRESS instead: a
    variable exported for other work sent the command to that cluster unsaid (until session 63)."""
    if used and address is None and os.environ.get("RAY_ADDRESS"):
        _note(f"on the Ray cluster at {os.environ['RAY_ADDRESS']} (RAY_ADDRESS; --address names another)")
    return address


def _red(word: str, rest: str = "") -> Text:
    """`word` in red, then `rest` as it is."""
    return Text.assemble((word, "red"), rest)


def flag(option: str) -> str:
    """The command-line flag of a library parameter."""
    return FLAGS.get(option, "--" + option.replace("_", "-"))


@contextlib.contextmanager
def user_errors(failures: tuple = (), kept: str = ""):
    """Turn the library's worded errors into one red line and exit code 2; those of `failures`
    (the one image of `encode` or `decode` failed) into one red line and exit code 1; Ctrl-C
    into "interrupted", exit 130 (SIGINT raises KeyboardInterrupt within the block; outside it,
    as the command starts and on its way out, it has the default action: `rgbatch.__main__`),
    and SIGTERM into "terminated (SIGTERM)", exit 143, SIGHUP likewise, exit 129 (`kept` says what
    stays; until session 64 `encode`, `decode`, `info` and `bench` died of SIGTERM without a word,
    and every command of SIGHUP, what was finished but not committed lost)."""
    try:
        with _interruptible(), _terminable():  # a signal held while they are set is taken at once, here
            yield
    except typer.Exit:
        raise
    except BaseException as e:
        if _interrupting(e):  # an error raised while unwinding from Ctrl-C or SIGTERM is the signal
            said = f": {kept}" if kept else ""
            if not _terminated:
                err.print(_red("interrupted", said))
                raise typer.Exit(130) from None
            err.print(_red("terminated", f" ({signal.Signals(_terminated[0]).name}){said}"))
            raise typer.Exit(128 + _terminated[0]) from None
        if isinstance(e, BrokenPipeError):  # the reader of our output stopped (`--html /dev/stdout | head`)
            out.on_broken_pipe()
        if isinstance(e, failures):
            err.print(_red("error:", f" {cli_words(e or type(e).__name__)}"), highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        if isinstance(e, OptionError):  # named in the library's terms: say the flags
            err.print(_red("error:", f" {cli_words(e.worded(flag))}"), highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        if isinstance(e, USER_ERRORS):
            err.print(_red("error:", f" {cli_words(worded(e))}"), highlight=False, soft_wrap=True)  # one line
            raise typer.Exit(2) from None
        raise


@contextlib.contextmanager
def _interruptible():
    """SIGINT as Python's KeyboardInterrupt within the block (in the main thread), and as before
    after; ignored where it was (a shell's background job: `rgbatch compress ... &` in a script)."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        yield
        return
    previous = signal.signal(signal.SIGINT, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@signalwatch.counted
def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


@contextlib.contextmanager
def _terminable():
    """SIGTERM and SIGHUP (the terminal gone: an ssh session dropped) as `Terminated` (a
    KeyboardInterrupt) within the block, in the main thread, so that a command ends as Ctrl-C ends
    it (what is finished committed, Ray shut down); as before after. An ignored SIGHUP (`nohup`)
    stays ignored: the command goes on."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _terminated.clear()  # a command's own signal (one run in a process that ran others: the tests)
    taken = [signal.SIGTERM] + [signal.SIGHUP] * (signal.getsignal(signal.SIGHUP) != signal.SIG_IGN)
    previous = {s: signal.getsignal(s) for s in taken}
    try:
        for s in taken:  # a signal between the two is raised here, in the block, and said (it ended `info`
            signal.signal(s, _raise_terminated)  # with 130 and no word)
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _print_version(value: bool):
    if not value:
        return
    from . import __version__
    from .weights import DEFAULT_WEIGHTS, read_weight_file

    with user_errors():
        mid = read_weight_file()[1]
    out.print(f"rgbatch {__version__}, default model {mid} ({DEFAULT_WEIGHTS})", highlight=False)
    raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                       help="Print the version and the default model's id, and exit.")):
    """Compress whole image archives with the Residual-GRU learned codec."""
    for stream in (sys.stdout, sys.stderr):  # see `_writes_unicode`
        with contextlib.suppress(AttributeError, ValueError):
            stream.reconfigure(errors="backslashreplace")


def _writes_unicode(stream) -> bool:
    """Whether `stream` encodes every character. Under a locale of another encoding (latin-1) a
    path it cannot hold (a Japanese file name) ended a command in a UnicodeEncodeError traceback
    until session 53; now the streams write such characters as backslash escapes (`_root`), and
    JSON for them as \\u escapes, which JSON readers read back as the characters."""
    try:
        return codecs.lookup(getattr(stream, "encoding", None) or "utf-8").name.startswith("utf")
    except LookupError:
        return False


def path(value) -> Path:
    """A file or folder option's value: refused where empty (`--out ""`, a shell variable that is
    not set), which `Path` would take for the current folder: until session 55 `bench --out ""`
    wrote its outputs there."""
    if str(value) == "":
        raise typer.BadParameter("is empty: give a file or folder name ('.' for the current folder)")
    return Path(value)


# -- options several commands take: one definition each ------------------------------------------
WEIGHTS = typer.Option(None, parser=path, help="Weight file (default: the shipped model).")
DEVICE = typer.Option("auto", help="auto | cpu | cuda")
TRAINING_DATA = typer.Option(..., "--data", parser=path, help="Folder of training images (never a benchmark set); repeat it "
                             "for several folders together.")
TRAINED_WEIGHTS = typer.Argument(..., parser=path, help="Weight file of the trained model.")
PRECISION = typer.Option("auto", help="Network arithmetic: auto (bf16 where the hardware computes it natively, "
                                      "else fp32) | fp32 | bf16.")
DECODING = typer.Option("exact", help="The decoder's arithmetic: exact (integer arithmetic in decoding, the same "
                                     "pixels on every machine and device, 1.7-3.3x the fp32 float decoder's time on a CPU, up to 8.6x a bf16 one; "
                                     "the encoder's loop in float) | exact-loop (the encoder's loop exact too: it "
                                     "records exactly the quality decoding returns; encoding 1.3-2.2x slower on a CPU) | "
                                     "float (the networks' precision throughout: fastest, pixels may differ by a "
                                     "level between machines).")
SEARCH_STEPS = typer.Option(0, help="Encoder-side search of the bits, in gradient steps per iteration: the same "
                                    "stream format and decoder, better quality at every depth (most at low depths), "
                                    "encoding 7-13x slower at 3 (weights/MODEL_CARD.md). 0: off.")
POST_FILTER = typer.Option(True, "--post-filter/--no-post-filter",
                           help="Send a colour post-filter per tile and depth where it pays (format v2: 0.2 "
                                "BD-rate points against AVIF on Kodak, 2 on high-resolution photos; images under "
                                "256 x 256 pixels get none, docs/BENCH.md); --no-post-filter writes format v1 streams, "
                                "which rgbatch before session 30 reads.")
RESAMPLE = typer.Option("none", help="Resampled coding: none | 0.75 | 0.5 (code the image downscaled by that, "
                                      "decoded back to full size) | auto (with a target: try each scale, keep "
                                      "the one the target prefers; README, Resampled coding).")
PARTIAL = typer.Option(None, "--partial/--whole-iterations",
                       show_default="--partial with a target, measuring on and a context coder, else whole iterations",
                       help="With a target, a stream may end with part of an iteration (the first 1/8 .. 7/8 of "
                            "its coding steps) where that lands nearer the target: smaller streams, about 2-2.5x "
                            "the encoding time; --whole-iterations keeps whole ones. Without a target it changes "
                            "nothing (README, Partial last iteration).")
TARGET_MSSSIM = typer.Option(None, help="Per image, keep the fewest bytes reaching this MS-SSIM (whole iterations, "
                                         "the last one partial where that is fewer: --partial).")
TARGET_BPP = typer.Option(None, help="Per image, keep the most iterations within this bpp, and part of the next "
                                      "where that measures better (--partial).")
MAX_BYTES = typer.Option(None, help="Per image, keep the most iterations within this many bytes, and part of the "
                                     "next where that measures better (--partial).")
# restore's and compact's targets cut stored streams at whole iterations (compress's and encode's code them)
CUT_MSSSIM = typer.Option(None, "--target-msssim", help="Per image, the first stored depth whose recorded MS-SSIM "
                                                         "reaches this (else its stored depth).")
CUT_BPP = typer.Option(None, "--target-bpp", help="Per image, the most stored iterations within this bpp (one at "
                                                  "least).")
CUT_BYTES = typer.Option(None, "--max-bytes", help="Per image, the most stored iterations within this many bytes (one "
                                                   "at least).")
WORKERS_ADDRESS = typer.Option(None, "--address", help="Ray cluster for --workers (default: RAY_ADDRESS, else a "
                                                        "local Ray).")
TILE_SIZE = typer.Option(None, help="Tile size in pixels (multiple of 32; 0: whole image; default: whole images up "
                                     "to 2 MP (and 2.25 MP padded to 32: not thin strips), tiles of 1024 beyond; "
                                     "docs/TILING.md).")
CODER = typer.Option("auto", help="Entropy coder: auto (the weights' default: mixing2 where they carry context tables), "
                                  "raw, context, adaptive (the context coder's tables refined per image: 2 % smaller on "
                                  "Kodak, 9 % on photos in BD-rate), mixing (adaptive, its first 4 iterations mixed "
                                  "with block-history and neighbour models: 1-2 % smaller again, 0.7x its coding "
                                  "speed), mixing2 (mixing with a group model, its first 8 iterations: 0.4 % smaller "
                                  "again). The shipped model is trained for the context coders: raw bits cost it 2.8x "
                                  "the rate at MS-SSIM 0.90.")
PIXEL_LIMIT = typer.Option(None, help="Refuse images (streams: of images) with more pixels (decompression-bomb "
                                      "guard; default 89,478,485, Pillow's).")
AS_JSON = typer.Option(False, "--json", help="Print the result as JSON.")


def pixel_limit(max_pixels: Optional[int]) -> int:
    """`--max-pixels`: the decompression-bomb guard, Pillow's limit when not given."""
    from .imageio import MAX_PIXELS

    return MAX_PIXELS if max_pixels is None else max_pixels


def _target(target_msssim, target_bpp, max_bytes):
    """The `Target` of the target options (checked there: an OptionError names the parameter)."""
    from .ratecontrol import Target

    return Target(target_msssim, target_bpp, max_bytes)


@app.command()
def info(weights: Optional[Path] = WEIGHTS):
    """Show the model: id, width, iterations, parameters, FLOPs per pixel, training notes."""
    from .model import flops_per_pixel, parameter_count
    from .weights import load_weights

    with user_errors():
        model, mid, extra, meta = load_weights(weights)
    cfg = model.cfg
    facts = {"model_id": mid, **json.loads(cfg.to_json()), "parameters": parameter_count(model),
             "encode_flops_per_pixel_per_iteration": flops_per_pixel(cfg),
             "decode_flops_per_pixel_per_iteration": flops_per_pixel(cfg, part="decode"),
             "entropy_model_tensors": sorted(extra), "training": meta}
    _print_json(facts)  # \u escapes where stdout is not UTF-8 (rich's printer wrote Python's \U and \x)


@app.command()
def train(
    data_dirs: list[Path] = typer.Argument(..., parser=path, help="Folders of training images (recursive) or .npy packs of "
                                           "crops; several are sampled together, every pixel equally likely."),
    out_path: Path = typer.Option(..., "--out", parser=path, help="Checkpoint file to write (and resume from)."),
    resume: bool = typer.Option(False, help="Continue the run in --out exactly where it stopped."),
    width: float = typer.Option(0.25, help="Channel multiplier; 1.0 is the paper's model (0.375 ships since session 14, 0.25 before: weights/MODEL_CARD.md)."),
    reconstruction: str = typer.Option("scaled-additive", help="one-shot | additive | scaled-additive"),
    iterations: int = typer.Option(8, "--iterations", "--depth", help="Iterations unrolled per training step (the depth trained)."),
    max_iterations: int = typer.Option(16, help="Iterations the model supports at inference."),
    batch_size: int = typer.Option(32),
    patch: int = typer.Option(32, help="Training patch size in pixels (a multiple of 16, the block)."),
    steps: int = typer.Option(100_000, help="Length of the learning-rate schedule."),
    lr: float = typer.Option(5e-4),
    hard_fraction: float = typer.Option(0.0, help="Share of each batch drawn as the busiest of 4x candidates."),
    turns: bool = typer.Option(True, help="Draw patches with random quarter turns as well as left-right flips "
                               "(--no-turns: flips alone, photos the way up they are taken)."),
    loss_weighting: str = typer.Option("uniform", help="uniform | gain"),
    msssim_weight: float = typer.Option(0.0, help="Weight of (1 - MS-SSIM) added to the L1 loss."),
    msssim_loss: str = typer.Option("linear", help="linear: the weight times 1 - MS-SSIM | db: times "
                                    "log10(1 - MS-SSIM), every depth counted in dB as the bench's BD-rate does."),
    stop_fraction: float = typer.Option(0.0, help="Share of patches whose 16x16 blocks stop at random "
                                        "iterations, so that the decoder learns to take stopped blocks."),
    rate_weight: float = typer.Option(0.0, help="Weight of the context coder's code length in the loss "
                                      "(1: each bit priced by the run's own rate-distortion slope; 0: off)."),
    rate_tables: Optional[Path] = typer.Option(None, parser=path, help="Weights whose context model starts the rate term "
                                               "(default: the shipped model)."),
    train_part: str = typer.Option("all", help="all | encoder: the encoder and binarizer alone, through the "
                                   "decoder as it is | decoder: the decoder alone, on codes of the encoder as "
                                   "it is | display: a decoder for display alone, on codes of the model as the "
                                   "run started (no rate term; docs/TRAINING.md, \"Decoder alone\")."),
    binarize: str = typer.Option("stochastic", help="stochastic: train on random bits, +1 with probability "
                                 "(1 + x) / 2 (the paper) | sign: on the signs inference sends."),
    precision: str = PRECISION,
    threads: int = typer.Option(0, help="Torch threads (0: torch's default, the cores it sees)."),
    device: str = DEVICE,
    seed: int = typer.Option(0),
    checkpoint_every: int = typer.Option(500),
    time_limit: float = typer.Option(0.0, help="Stop at a checkpoint after this many seconds of training "
                                          "(0: run to --steps)."),
    snapshot_every: int = typer.Option(0, help="Also keep the model every N steps (OUT.stepN.pt beside --out) for "
                                               "`rgbatch export --average`; 0: never."),
    eval_dir: Optional[Path] = typer.Option(None, "--eval", parser=path, help="Folder to evaluate on (e.g. Kodak)."),
    eval_every: int = typer.Option(2000),
    eval_images: int = typer.Option(6),
):
    """Train a model on random patches of DATA_DIR (resumable; see docs/TRAINING.md).

    Ctrl-C or SIGTERM stops it after the step under way, that step's checkpoint written (a second
    signal: at once)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from .train import TrainConfig, train as run_training

    with archive_errors(kept="the last checkpoint stays; --resume goes on from it"):
        cfg = TrainConfig(
            data_dir=[str(d) for d in data_dirs] if len(data_dirs) > 1 else str(data_dirs[0]),
            out=str(out_path), steps=steps, batch_size=batch_size, patch=patch,
            iterations=iterations, lr=lr, hard_fraction=hard_fraction, turns=turns, loss_weighting=loss_weighting,
            msssim_weight=msssim_weight, msssim_loss=msssim_loss, stop_fraction=stop_fraction, precision=precision,
            rate_weight=rate_weight,
            rate_tables=str(rate_tables) if rate_tables else None, train_part=train_part,
            binarize=binarize, threads=threads, device=device, seed=seed, checkpoint_every=checkpoint_every,
            time_limit=time_limit, snapshot_every=snapshot_every,
            eval_dir=str(eval_dir) if eval_dir else None, eval_every=eval_every, eval_images=eval_images,
            codec=dict(width=width, reconstruction=reconstruction, max_iterations=max_iterations))
        columns = [TextColumn("step {task.completed}/{task.total}"), BarColumn(),
                   TextColumn("loss {task.fields[loss]:.5f}  {task.fields[rate]:.2f} steps/s"), TimeRemainingColumn()]

        # the bar starts with the steps: an option refused before is one line alone
        bar, task = Progress(*columns, console=err, transient=False), []

        def progress(step, loss, rate):
            if not task:
                bar.start()
                task.append(bar.add_task("train", total=steps, loss=0.0, rate=0.0))
            if loss is None:  # the step the run starts from (a resumed run's): not a speed
                bar.reset(task[0], completed=step)
            else:
                bar.update(task[0], completed=step, loss=loss, rate=rate)

        stop = threading.Event()
        try:
            with _stopping(stop, bar.console) as signals:
                state = run_training(cfg, resume=resume, log=bar.console.print, progress=progress, stop=stop)
        finally:
            if task:
                bar.stop()
        if signals:
            _exit_stopped(signals[0], f"stopped at step {state['step']}, its checkpoint written; --resume goes on "
                                      f"from it" if out_path.exists() else "stopped before its first step: nothing written")


# -- archives: compress, report, restore, verify (docs/ARCHIVE.md) ------------------------------------


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised where the program is, so that it ends as Ctrl-C does."""


_terminated = []  # the SIGTERM or SIGHUP that came (Ray turns an exception raised in its waits into a plain
# KeyboardInterrupt)


@signalwatch.counted
def _raise_terminated(signum, frame):
    if signum == signal.SIGHUP:  # a hang-up comes twice (the shell's and the kernel's): the second would
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # cut the commit short; the terminal is gone anyway
    _terminated.append(signum)
    raise Terminated()


@contextlib.contextmanager
def _stopping(stop: threading.Event, console, said: str = "stopping after the step under way, its checkpoint "
                                                          "written (again: at once, losing the steps since the last "
                                                          "checkpoint)"):
    """Ctrl-C, SIGTERM and SIGHUP set `stop` (`train` ends after the step under way, its checkpoint
    written), `said` after the signal's name, and a second one ends the command at once, as they
    do elsewhere (a hang-up's own second, the kernel's after the shell's, ignored). Yields the list
    of signals received. A signal the command was started ignoring stays ignored."""
    received = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    @signalwatch.counted(patient=True)  # the step under way may be one long C++ call: never cut short
    def ask(signum, frame):
        if received:  # the second: at once
            if signum != signal.SIGINT:
                _raise_terminated(signum, frame)
            raise KeyboardInterrupt
        received.append(signum)
        if signum == signal.SIGHUP:  # the terminal is gone: its second SIGHUP is no second signal
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
        stop.set()
        console.print(f"{signal.Signals(signum).name}: {said}", style="yellow", highlight=False)

    previous = {s: signal.signal(s, ask) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
                if signal.getsignal(s) != signal.SIG_IGN}
    try:
        yield received
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _exit_stopped(signum: int, said: str):
    """End a command that `_stopping`'s first signal stopped at a safe point: "interrupted", exit
    130, for Ctrl-C; "terminated (SIGTERM)", 143, or (SIGHUP), 129; `said` says where it stopped."""
    if signum != signal.SIGINT:
        err.print(_red("terminated", f" ({signal.Signals(signum).name}): {said}"))
        raise typer.Exit(128 + signum)
    err.print(_red("interrupted", f": {said}"))
    raise typer.Exit(130)


def _interrupting(error: BaseException) -> bool:
    """Whether `error` is a KeyboardInterrupt, or was raised while one was being handled (its
    context, or its context's, ...)."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, KeyboardInterrupt):
            return True
        seen.add(id(error))
        error = error.__context__
    return False


@contextlib.contextmanager
def archive_errors(kept: str = ""):
    """`user_errors` for the archive commands and the long jobs (`train`, `fit-refiner`), and more:
    Ctrl-C and SIGTERM say what stays (`kept`), and even an unexpected exception is one line on
    stderr (exit 2), never a traceback."""
    with user_errors(kept=kept):
        try:
            yield
        except typer.Exit:
            raise
        except Exception as e:
            # raised while unwinding from Ctrl-C or SIGTERM (a writer closed on a closed file: "I/O
            # operation on closed file", exit 2, until session 57; benchmarks/fuzz_kill.py): the
            # signal, which `user_errors` says
            if _interrupting(e) or isinstance(e, USER_ERRORS):  # BrokenPipeError included: `main`
                raise
            raise RuntimeError(f"unexpected {type(e).__name__}: {e}") from None  # a bug, a library's surprise


PROGRESS_LOG_SECONDS = 60.0  # where stderr is no terminal: a line this often (`_image_progress`)


@contextlib.contextmanager
def _image_progress(label: str, megapixels: bool = False):
    """Yields `progress(done, total[, pixels[, tiles]])`, drawing a rich bar on stderr from its
    first call on, so that a command failing before any work prints its error line alone. With
    `megapixels`, MP/s and the tiles (done/all) of the images being worked on; the bar then
    moves with their tiles too, so that one large image shows its progress. Where stderr is no
    terminal (a CI log, cron's mail), rich draws the bar once, at the end: a plain line says how
    far the work is as it goes, at most one every PROGRESS_LOG_SECONDS (a log was silent for hours
    until session 64)."""
    import time

    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    columns = [TextColumn(label), BarColumn(), TextColumn("{task.fields[done]}/{task.total:.0f} images")]
    if megapixels:
        columns += [TextColumn("{task.fields[tiles]}"), TextColumn("{task.fields[rate]:.3g} MP/s")]
    bar = Progress(*columns, TimeRemainingColumn(), console=err, transient=False)
    task = start = logged = None

    def update(done, total, pixels=0, tiles=(0, 0)):
        nonlocal task, start, logged
        if task is None:
            bar.start()
            task, start = bar.add_task(label, total=total, rate=0.0, done=0, tiles=""), time.perf_counter()
            logged = start
        tiles_done, tiles_all = tiles
        now = time.perf_counter()
        rate = pixels / 1e6 / max(now - start, 1e-9)
        bar.update(task, completed=done + (tiles_done / tiles_all if tiles_all else 0), total=total, done=done,
                   tiles=f"{tiles_done}/{tiles_all} tiles" if tiles_all else "", rate=rate)
        if not err.is_terminal and now - logged >= PROGRESS_LOG_SECONDS:
            logged = now
            err.print(f"{label}: {done}/{total:.0f} images" + (f", {rate:.3g} MP/s" if megapixels else "") +
                      f", {now - start:.0f} s", highlight=False, soft_wrap=True)
    try:
        yield update
    finally:
        if task is not None:
            bar.stop()


def _print_failures(title: str, failures: list, limit: int = 20):
    from rich.table import Table

    if not failures:
        return
    table = Table(title=f"{title} ({len(failures)})", title_justify="left")
    table.add_column("path", overflow="fold")
    table.add_column("reason", overflow="fold")
    for path, reason in failures[:limit]:
        table.add_row("(no path)" if path is None else shown(path), cli_words(reason))
    if len(failures) > limit:
        table.add_row(f"... {len(failures) - limit} more", "")
    out.print(table)
    if not out.is_terminal:  # a log of stderr alone (CI) said nothing of them until session 64
        err.print(f"{title}: {len(failures)} (listed on stdout)", highlight=False, soft_wrap=True)


def _json(value, indent=None, ascii: bool = False) -> str:
    return json.dumps(value, indent=indent, default=str, ensure_ascii=ascii)


def _beside(written: str):
    """The console for a command's own text beside the output file it `written`: stdout, or
    stderr where that file is its stdout (`--out /dev/stdout`), so that stdout holds the file alone."""
    from . import storage

    return err if not storage.is_uri(written) and storage.is_stdout(*storage.resolve(written)) else out


def _print_json(obj: dict, file=None):
    """`obj` as indented JSON on stdout (or `file`). A reader of record batches among its values
    (a report's images) is written as it is read, a row a line, so that memory stays flat in its rows."""
    file = file or sys.stdout
    try:
        _write_json(obj, file)
        file.flush()
    except BrokenPipeError:
        out.on_broken_pipe()


def _write_json(obj: dict, file):
    write, ascii = file.write, not _writes_unicode(file)
    write("{")
    for n, (key, value) in enumerate(obj.items()):
        write(("," if n else "") + "\n  " + _json(key, ascii=ascii) + ": ")
        if hasattr(value, "read_next_batch"):  # a pyarrow.RecordBatchReader
            write("[")
            m = 0
            for row in (row for batch in value for row in batch.to_pylist()):
                write(("," if m else "") + "\n    " + _json(row, ascii=ascii))
                m += 1
            write("\n  ]" if m else "]")
        else:
            write(_json(value, indent=2, ascii=ascii).replace("\n", "\n  "))
    write("\n}\n")


@app.command()
def compress(
    sources: list[str] = typer.Argument(..., help="Folders (searched recursively), globs, or .txt files listing paths."),
    archive: Optional[str] = typer.Option(None, "--out", help="Archive folder or URI (default: manifests/NAME/, NAME the folder name of the sources' common root)."),
    iterations: Optional[int] = typer.Option(
        None, "--depth", "--iterations", help="Iterations encoded per image (0.125 bpp each before entropy coding); default: the depth the "
                   "model was trained to (16 for the shipped model: weights/MODEL_CARD.md)."),
    target_msssim: Optional[float] = TARGET_MSSSIM,
    target_bpp: Optional[float] = TARGET_BPP,
    max_bytes: Optional[int] = MAX_BYTES,
    tile_size: Optional[int] = TILE_SIZE,
    batch_size: int = typer.Option(0, help="Tiles per network batch and encoder call, shared by several images, "
                                           "within 2 MP on a GPU, 65536 pixels on a CPU (0: 8 on a GPU, 16 on a "
                                           "CPU)."),
    workers: int = typer.Option(0, help="Encoder actors (0: four sharing each GPU, or one per two CPUs)."),
    device: str = DEVICE,
    weights: Optional[Path] = WEIGHTS,
    coder: str = CODER,
    max_pixels: Optional[int] = PIXEL_LIMIT,
    measure: bool = typer.Option(True, help="Record MS-SSIM and PSNR at every depth; --no-measure writes the same "
                                            "streams about 1.5x faster for large images, in a third of the memory "
                                            "(README, Inputs), without quality columns or --target-msssim."),
    precision: str = PRECISION,
    decoding: str = DECODING,
    search_steps: int = SEARCH_STEPS,
    post_filter: bool = POST_FILTER,
    resample: str = RESAMPLE,
    partial: Optional[bool] = PARTIAL,
    overlap: Optional[bool] = typer.Option(
        None, "--overlap/--no-overlap", help="Two calls at once per encoder, one's entropy coding beside the "
                                             "other's network (default: on a GPU; on a CPU it gains nothing: README, "
                                             "Speed of the network)."),
    metadata: bool = typer.Option(True, "--metadata/--strip-metadata",
                                  help="Keep each image's ICC colour profile, EXIF block (capture time, camera, "
                                       "location...), XMP packet (ratings, keywords...), text chunks, comment and "
                                       "resolution in the archive, written back by restore; --strip-metadata keeps "
                                       "none, so an image of another profile than sRGB (Display P3, Adobe RGB) is "
                                       "restored with its colours shifted (docs/ARCHIVE.md). An alpha channel is "
                                       "kept either way."),
    rehash: bool = typer.Option(False, help="Read and hash every archived source again to find those that changed; "
                                            "by default one whose size and modification time are as archived is "
                                            "skipped unread (docs/ARCHIVE.md, Resuming)."),
    replace_others: bool = typer.Option(False, "--replace-others", help="Let a changed source replace its path's "
                                        "image where that image was read from another file that is still there "
                                        "(by default it fails, the archived image kept: a second folder with the "
                                        "same relative paths; docs/ARCHIVE.md, Two sources, one path)."),
    read_timeout: Optional[float] = typer.Option(
        None, help="Seconds one source may take to be read (fetched, hashed, decoded) before its read is cancelled "
                   "and it fails, so that a decoder stuck on a damaged file or a store that stopped answering "
                   "cannot hold up the run (default 600; 0: no limit). A rerun's check of archived sources "
                   "past it is cancelled and its sources read one by one."),
    address: Optional[str] = typer.Option(None, help="Ray cluster to use (default: RAY_ADDRESS, else a local Ray)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Say what the command would do, from the sources' "
                                                          "sizes and times and the archive's rows: how many "
                                                          "sources it would skip, hash, encode; no image read, "
                                                          "nothing written, no Ray."),
    as_json: bool = AS_JSON,
):
    """Compress images into an archive of Parquet manifests; reruns add only what is missing."""
    from rich.table import Table

    from .pipeline import CompressOptions, compress as run_compress, plan
    from .storage import READ_TIMEOUT

    with archive_errors(kept="what was finished is committed"):
        options = CompressOptions(
            iterations=iterations, target=_target(target_msssim, target_bpp, max_bytes),
            tile_size=tile_size,
            batch_size=batch_size, workers=workers, device=device, weights=str(weights) if weights else None,
            coder=coder, max_pixels=pixel_limit(max_pixels), address=_cluster(address, not dry_run),
            measure=measure, precision=precision, decoding=decoding,
            search_steps=search_steps, post_filter=post_filter, resample=resample, partial=partial, overlap=overlap,
            metadata=metadata, rehash=rehash, read_timeout=READ_TIMEOUT if read_timeout is None else read_timeout,
            replace_others=replace_others)
        if dry_run:
            planned = plan(sources, archive, options, log=_note)
        else:
            with _image_progress("compress", megapixels=True) as progress, stdout_kept():
                result = run_compress(sources, archive, options, progress=progress, log=_note)
    if dry_run:  # printed outside archive_errors: a failed write is main's "writing the output" (until session 64 not)
        _print_plan(planned, as_json)
        return
    if as_json:
        from dataclasses import asdict

        _print_json(_flag_reasons({**asdict(result), "bpp": result.bpp, "compression_ratio": result.compression_ratio,
                                   "megapixels_per_second": result.megapixels_per_second}))
    else:
        table = Table(title=f"archive {shown(result.archive)}", title_justify="left", show_header=False)
        for name, value in [("sources found", result.sources), ("already archived", result.skipped),
                            ("compressed", result.ok if not result.copied else
                             f"{result.ok} ({result.copied} copied: the same bytes as another image"
                             f"{f'; {result.shared} sharing its stream, stored once' if result.shared else ''})"),
                            ("failed", result.failed),
                            ("source bytes", f"{result.source_bytes:,}"),
                            ("archive bytes", f"{result.archive_bytes:,}" + (f" (+{result.alpha_bytes:,} in alpha channels)"
                                                                          if result.alpha_bytes else "")),
                            ("ratio", f"{result.compression_ratio:.1f}x" if result.compression_ratio else "-"),
                            ("bpp", f"{result.bpp:.3f}" if result.bpp else "-"),
                            ("time", f"{result.seconds:.1f} s"),
                            ("speed", f"{result.megapixels_per_second:.3g} MP/s on {result.workers} {result.device} "
                                      f"encoder(s), over the whole run (Ray's start, reading, writing)"),
                            ("parts written", len(result.parts))]:
            table.add_row(name, str(value))
        out.print(table)
        _print_failures("failed", result.failures)
    raise typer.Exit(result.exit_code)


def _print_plan(result, as_json: bool):
    """`compress --dry-run`'s answer (`pipeline.CompressPlan`)."""
    from dataclasses import asdict

    from rich.table import Table

    from .pipeline import some_of

    if as_json:
        _print_json(asdict(result))
        return
    table = Table(title=f"archive {shown(result.archive)}: a dry run, nothing read or written", title_justify="left",
                  show_header=False)
    for name, key, value in [
            ("sources found", None, f"{result.sources:,} ({result.source_bytes:,} bytes)"),
            ("unchanged", None, f"{result.unchanged:,}: skipped unread (their size and time as archived)"),
            ("to hash", "to_hash", f"{result.to_hash:,} ({result.to_hash_bytes:,} bytes): archived, their size or "
                                   "time moved or none recorded: read and hashed, encoded again only where their "
                                   "bytes changed"),
            ("new", "new", f"{result.new:,} ({result.new_bytes:,} bytes): read and encoded, or their row copied "
                           "where an image of the same bytes is archived or among them"),
            ("unreadable", None, f"{result.unreadable:,}: missing, no regular file (a FIFO, a device) or no size or "
                                 "time to be had: they would fail"),
            ("clashing names", None, f"{result.clashing:,}: names that are not UTF-8 and read as another's when "
                                     "shown (\\xNN): they would fail"),
            ("names not UTF-8", None, f"{result.not_utf8:,}: the others whose names are not valid UTF-8: they would "
                                      "fail"),
            ("archived, not listed", "not_listed", f"{result.not_listed:,}: images of the archive whose paths are "
                                                   "not among these sources: kept as they are")]:
        if key and result.examples[key]:
            value += "\ne.g. " + some_of([shown(p) for p in result.examples[key]], getattr(result, key))
        table.add_row(name, value)
    out.print(table)


FOLDERS_SHOWN = 20  # `report --folders`: the largest this many in the table


@app.command()
def report(
    archive: str = typer.Argument(..., help="Archive folder or URI."),
    depth: Optional[int] = typer.Option(None, "--depth", "--iterations", help="Also show what the archive costs cut to "
                                                                              "this depth."),
    min_msssim: Optional[float] = typer.Option(None, help="Also show what it costs at this MS-SSIM per image."),
    worst: int = typer.Option(5, help="How many of the worst images (lowest MS-SSIM) to list."),
    folders: Optional[int] = typer.Option(None, help="Also show what the images of each folder this many levels "
                                                     "deep store (1: the top-level folders), largest first."),
    as_json: bool = typer.Option(False, "--json", help="Print {images, summary} as JSON."),
    html_out: Optional[str] = typer.Option(None, "--html", help="Write one self-contained HTML page instead: "
                                           "tables, the rate-quality curve, and images side by side."),
    show: Optional[int] = typer.Option(None, show_default="3", help="With --html: images shown beside their "
                                                                    "originals at several depths (the worst ones, "
                                                                    "unless --select)."),
    select: list[str] = typer.Option([], help="With --html: show the archived paths matching this glob (repeat it: "
                                              "those matching any)."),
    weights: Optional[Path] = typer.Option(None, parser=path, help="With --html: weight file to decode with (default: the "
                                                      "shipped model)."),
    overwrite: bool = typer.Option(False, help="With --html: replace the page if there is one (default: refuse, "
                                               "exit 2)."),
):
    """Sizes and qualities of an archive: per depth, worst images, failures (or an HTML page of them)."""
    from rich.table import Table

    from .archive import depth_text, report as make_report, summary_facts

    if html_out is None and (show is not None or select or weights is not None or overwrite):  # ignored until session 61
        err.print(_red("error:", " --show, --select, --weights and --overwrite are the HTML page's: give --html "
                                 "FILE too"), soft_wrap=True)
        raise typer.Exit(2)
    if html_out is not None:
        from .htmlreport import SHOWN, write_html_report

        if depth is not None or min_msssim is not None or folders is not None or as_json:
            err.print(_red("error:", " --html writes the page alone: drop --depth, --min-msssim, --folders and "
                                     "--json, or run report twice"), soft_wrap=True)
            raise typer.Exit(2)
        with archive_errors():
            page = write_html_report(archive, html_out, show=SHOWN if show is None else show, select=select,
                                     worst=worst, weights=weights, overwrite=overwrite)
        _beside(page["out"]).print(f"wrote {shown(page['out'])}: {page['summary']['images']} image(s), "
                                   f"{len(page['shown'])} shown", highlight=False)
        return
    with archive_errors():
        result = make_report(archive, depth=depth, min_msssim=min_msssim, worst=worst, images=as_json,
                             folders=folders)
    if as_json:  # the errors as the archive holds them, in the rows and in the summary alike
        _print_json(result)
        return
    s = result["summary"]
    head = Table(title=f"archive {shown(s['archive'])}", title_justify="left", show_header=False)
    for name, value in summary_facts(s):  # model ids and coders as a manifest holds them: escaped (a crafted
        head.add_row(name, shown(value))  # part's ESC bytes cleared the terminal until session 63)
    out.print(head)
    if s["set_aside_parts"]:
        out.print(f"{s['set_aside_parts']} damaged part(s) set aside in damaged/ by compact: not read", highlight=False)

    shared = s["copies"]["shared"]  # rows whose stream is another's: left out of the costs
    costs = Table(title="cost and quality" + (f" (each stream once: {shared:,} image(s) share another's)" if shared else ""),
                  title_justify="left")
    for column in ("depth", "images", "bytes", "bpp", "mean MS-SSIM", "mean PSNR"):  # a figure folds where the
        costs.add_column(column, justify="right", overflow="fold")  # table is narrow, never cut (`4,0…` until session 64)
    for row in s["by_depth"]:
        costs.add_row(str(row["depth"]), str(row["images"]), f"{row['bytes']:,}", figure(row["bpp"], ".4f"),
                      figure(row["mean_msssim"], ".4f"), figure(row["mean_psnr"], ".2f"))
    for key, label in (("stored", "as stored"), ("at_depth", "at --depth"), ("at_msssim", "at --min-msssim")):
        if key in s and s[key]["images"]:
            row = s[key]
            costs.add_row(label, str(row["images"]), f"{row['bytes']:,}", figure(row["bpp"], ".4f"),
                          figure(row["mean_msssim"], ".4f"), figure(row["mean_psnr"], ".2f"), style="bold")
    out.print(costs)
    if "at_depth" in s and s["at_depth"]["shallower"]:
        out.print(f"{s['at_depth']['shallower']} image(s) are stored shallower than depth {depth}: counted at their depth")
    if "at_msssim" in s and s["ok"]:
        streams = "stream(s)" if shared else "image(s)"  # the costs' count: each stream once
        out.print(f"{s['at_msssim']['not_reached']} {streams} do not reach MS-SSIM {min_msssim} at their stored depth")
        if s["at_msssim"]["unmeasured"]:
            out.print(f"{s['at_msssim']['unmeasured']} image(s) have no MS-SSIM recorded (--no-measure): not counted")
    if s["worst"]:
        table = Table(title="worst images (MS-SSIM as stored)", title_justify="left")
        for column in ("path", "MS-SSIM", "bpp", "depth"):  # a long path whole (two sharing a prefix differ)
            table.add_column(column, overflow="fold")
        for row in s["worst"]:
            table.add_row(shown(row["path"]), figure(row["msssim"], ".4f"), figure(row["bpp"], ".4f"),
                          depth_text(row["iterations"], row["last_steps"], row["scale"]))
        out.print(table)
    if "folders" in s:
        table = Table(title=f"by folder, {folders} level(s) deep, largest first", title_justify="left")
        for column in ("folder", "images", "source bytes", "stored bytes", "bpp", "mean MS-SSIM"):
            table.add_column(column, overflow="fold", **({} if column == "folder" else {"justify": "right"}))
        for row in s["folders"][:FOLDERS_SHOWN]:
            table.add_row(shown(row["folder"]) if row["folder"] else "(top level)", f"{row['images']:,}",
                          f"{row['source_bytes']:,}", f"{row['bytes']:,}", figure(row["bpp"], ".4f"),
                          figure(row["mean_msssim"], ".4f"))
        out.print(table)
        if len(s["folders"]) > FOLDERS_SHOWN:
            out.print(f"{len(s['folders']) - FOLDERS_SHOWN:,} more folder(s): --json lists them all", highlight=False)
    _print_failures("failed", [(f["path"], f["error"]) for f in s["failures"]])


@app.command()
def restore(
    archive: str = typer.Argument(..., help="Archive folder or URI."),
    out_dir: str = typer.Option(..., "--out", help="Folder (or URI) to write the PNGs under."),
    iterations: Optional[int] = typer.Option(None, "--depth", "--iterations", help="Depth to decode (at most what each image stores)."),
    target_msssim: Optional[float] = CUT_MSSSIM,
    select: list[str] = typer.Option([], help="Only the archived paths matching this glob (repeat it: those "
                                              "matching any)."),
    weights: Optional[Path] = WEIGHTS,
    device: str = DEVICE,
    batch_size: int = typer.Option(8, help="Tiles per network batch."),
    precision: str = PRECISION,
    decoding: str = DECODING,
    overwrite: bool = typer.Option(False, help="Replace files already in --out (default: refuse, per image)."),
    max_pixels: Optional[int] = PIXEL_LIMIT,
    workers: int = typer.Option(0, help="Decode on this many Ray actors (0: in this process). On a cluster "
                                        "(--address) --out must be a store every node reaches."),
    address: Optional[str] = WORKERS_ADDRESS,
    as_json: bool = AS_JSON,
):
    """Write archived images back as PNGs under their relative paths, with the colour profile, EXIF,
    XMP, text and resolution the archive kept (names: docs/ARCHIVE.md)."""
    from .archive import restore as run_restore

    with archive_errors(kept="the images written so far are whole"):
        with _image_progress("restore") as progress, stdout_kept():
            result = run_restore(archive, out_dir, iterations=iterations, target_msssim=target_msssim, select=select,
                                 weights=weights, device=device, batch_size=batch_size, precision=precision,
                                 decoding=decoding, overwrite=overwrite, progress=progress,
                                 max_pixels=pixel_limit(max_pixels), workers=workers,
                                 address=_cluster(address, workers > 0))
    if as_json:
        from dataclasses import asdict

        _print_json(_flag_reasons(asdict(result)))
    else:
        skipped = f"; {len(result.skipped)} restored there before, skipped" if result.skipped else ""
        shallower = iterations and sum(w["depth"] < iterations for w in result.written + result.skipped)
        shallower = f"; {shallower} of them stored shallower than --depth {iterations}: at their depth" if shallower else ""
        out.print(f"{len(result.written)} image(s) written under {shown(result.out)}{skipped}{shallower}", highlight=False)
        if result.not_archived:  # not failures of this command: `report` lists them
            out.print(f"{result.not_archived} image(s) failed at compress time and are not archived: nothing to "
                      f"restore (`rgbatch report` lists them)", highlight=False)
        _print_failures("not restored", result.failures)
    raise typer.Exit(result.exit_code)


@app.command()
def encode(
    image: str = typer.Argument(..., help="Image file (or URI)."),
    out_path: str = typer.Option(..., "--out", help="Stream file to write (e.g. photo.rgb)."),
    iterations: Optional[int] = typer.Option(None, "--depth", "--iterations", help="Iterations to encode (default: the model's trained depth)."),
    target_msssim: Optional[float] = TARGET_MSSSIM,
    target_bpp: Optional[float] = TARGET_BPP,
    max_bytes: Optional[int] = MAX_BYTES,
    weights: Optional[Path] = WEIGHTS,
    device: str = DEVICE,
    precision: str = PRECISION,
    decoding: str = DECODING,
    search_steps: int = SEARCH_STEPS,
    post_filter: bool = POST_FILTER,
    resample: str = RESAMPLE,
    partial: Optional[bool] = PARTIAL,
    tile_size: Optional[int] = TILE_SIZE,
    coder: str = CODER,
    max_pixels: Optional[int] = PIXEL_LIMIT,
    metadata: bool = typer.Option(True, "--metadata/--strip-metadata",
                                  help="Keep the image's ICC colour profile, EXIF block, XMP packet, text chunks "
                                       "and resolution in the stream file's trailer, written back by decode; "
                                       "--strip-metadata keeps none, so an image of another profile than sRGB is "
                                       "decoded with its colours shifted (docs/FORMAT.md, Metadata trailer). An alpha "
                                       "channel is kept either way."),
    overwrite: bool = typer.Option(False, help="Replace the --out file if there is one (default: refuse, exit 2)."),
    as_json: bool = AS_JSON,
):
    """Encode one image into one progressive stream file (no archive; docs/FORMAT.md). An image
    that cannot be read exits 1 (the image failed), a bad option or missing file 2."""
    from .codec import Codec, resolve_partial
    from .files import encode_file
    from .imageio import READING_WORDS, ImageError, reading_losses
    from .resample import candidates

    with user_errors():
        target = _target(target_msssim, target_bpp, max_bytes)
        candidates(resample, bool(target), measure=True)
        codec = Codec.load(weights, device=device, precision=precision, search_steps=search_steps, decoding=decoding,
                           post_filter=post_filter, tile_size=tile_size, coder=coder)
        partial = resolve_partial(partial, target, True, codec.coder.name)
        limit = pixel_limit(max_pixels)
    with user_errors(failures=(ImageError, MemoryError)):
        result = encode_file(image, out_path, iterations, target, codec, limit, resample=resample, partial=partial,
                             metadata=metadata, overwrite=overwrite)
    if as_json:
        _print_json(result, _beside(result["out"]).file)
    else:
        scale = "" if result["scale"] == 1 else f" coded at scale {result['scale']:g},"
        steps = f" (the last one partial: its first {result['last_steps']} coding steps)" if result["last_steps"] else ""
        _beside(result["out"]).print(
                  f"{shown(result['out'])}: {result['width']}x{result['height']},{scale} {result['iterations']} iterations{steps}, "
                  f"{result['bytes']:,} bytes ({result['bpp']:.3f} bpp), MS-SSIM {result['msssim']:.4f}, "
                  f"PSNR {result['psnr']:.2f} dB" + (f"; {result['metadata_bytes']:,} bytes of them the trailer (colour "
                                                      f"profile, EXIF, XMP, notes, alpha channel)" if result["metadata_bytes"] else "")
                  + (f"; only the first of its {result['frames']} frames or pages" if result["frames"] > 1 else "")
                  + "".join(f"; the source ({shown(result['mode'])}) {READING_WORDS[loss]}"
                            for loss in reading_losses(result["mode"])))  # until session 62 unsaid


@app.command()
def decode(
    stream: str = typer.Argument(..., help="Stream file (or URI) written by `rgbatch encode`."),
    out_path: str = typer.Option(..., "--out", help="PNG file to write."),
    iterations: Optional[int] = typer.Option(None, "--depth", "--iterations", help="Depth to decode (default: all stored)."),
    weights: Optional[Path] = WEIGHTS,
    device: str = DEVICE,
    precision: str = PRECISION,
    decoding: str = DECODING,
    max_pixels: Optional[int] = PIXEL_LIMIT,
    overwrite: bool = typer.Option(False, help="Replace the --out file if there is one (default: refuse, exit 2)."),
    allow_truncated: bool = typer.Option(False, "--allow-truncated",
                                         help="Decode a file cut short (an interrupted download or copy) at the "
                                              "depth of the iterations it holds whole, each checked by its "
                                              "checksum, without its colour profile, EXIF or alpha channel "
                                              "(default: refuse it, exit 1)."),
    as_json: bool = AS_JSON,
):
    """Decode a stream file into a PNG, at any depth up to the one stored. A bad or refused
    stream exits 1 (the image failed), a bad option or missing file 2 (docs/FORMAT.md)."""
    from .bitstream import BitstreamError
    from .codec import Codec
    from .files import decode_file

    with user_errors():
        codec = Codec.load(weights, device=device, precision=precision, decoding=decoding)
    with user_errors(failures=(BitstreamError, MemoryError)):
        result = decode_file(stream, out_path, iterations, codec, pixel_limit(max_pixels), overwrite=overwrite,
                             allow_truncated=allow_truncated)
    if as_json:
        _print_json(result, _beside(result["out"]).file)
    else:
        steps = f" (the last one partial: its first {result['last_steps']} coding steps)" if result["last_steps"] else ""
        cut = (f"; the file is cut short: its first {result['whole_iterations']} iterations are whole"
               if result["whole_iterations"] < result["stored_iterations"] else "")
        _beside(result["out"]).print(f"{shown(result['out'])}: {result['width']}x{result['height']} at depth "
                                     f"{result['iterations']} of {result['stored_iterations']}{steps}{cut}")


@app.command()
def verify(
    archive: str = typer.Argument(..., help="Archive folder or URI."),
    weights: Optional[Path] = WEIGHTS,
    device: str = DEVICE,
    sample: int = typer.Option(8, help="Images whose MS-SSIM is re-measured against their source."),
    sources: Optional[str] = typer.Option(None, help="Folder holding the sources now (default: where they were)."),
    seed: int = typer.Option(0, help="Seed of the sample."),
    precision: str = PRECISION,
    decoding: str = DECODING,
    max_pixels: Optional[int] = PIXEL_LIMIT,
    workers: int = typer.Option(0, help="Decode and re-measure on this many Ray actors (0: in this process). On "
                                        "a cluster (--address) the sources must be where every node reaches them."),
    address: Optional[str] = WORKERS_ADDRESS,
    quick: bool = typer.Option(False, help="Decode the sample alone: every blob's checksums, header and model "
                                           "are checked, in seconds where decoding every image takes hours."),
    read_timeout: Optional[float] = typer.Option(
        None, help="Seconds one sampled source may take to be read before verify gives up on it as unreachable "
                   "(exit 1), so that a store or mount that stopped answering cannot hold it up (default 600; "
                   "0: no limit)."),
    as_json: bool = AS_JSON,
):
    """Check an archive: blob checksums, decoding, and MS-SSIM re-measured on a sample."""
    from .archive import verify as run_verify
    from .storage import READ_TIMEOUT

    with archive_errors():
        with _image_progress("verify") as progress, stdout_kept():
            result = run_verify(archive, weights=weights, device=device, sample=sample, sources=sources, seed=seed,
                                precision=precision, decoding=decoding, progress=progress,
                                max_pixels=pixel_limit(max_pixels), workers=workers,
                                address=_cluster(address, workers > 0), quick=quick,
                                read_timeout=READ_TIMEOUT if read_timeout is None else read_timeout)
    if as_json:
        from dataclasses import asdict

        _print_json(_flag_reasons(asdict(result)))
    else:
        out.print(f"{result.checked} blob(s) checked, {result.decoded} decoded, "
                  f"{len(result.remeasured)} MS-SSIM value(s) re-measured against their sources")
        for path, why in result.unmeasured:
            out.print(f"  not re-measured: {shown(path)}: {shown(why)}")
        _print_failures("problems", result.problems)
        _print_failures("could not check (a source unreachable, a worker lost)", result.unreachable)
        if not result.problems and not result.unreachable:
            out.print("archive verified", style="green")
    raise typer.Exit(result.exit_code)


@app.command()
def compact(
    archive: str = typer.Argument(..., help="Archive folder or URI."),
    depth: Optional[int] = typer.Option(None, "--depth", "--iterations", help="Cut every blob to at most this many iterations, for good."),
    target_msssim: Optional[float] = CUT_MSSSIM,
    target_bpp: Optional[float] = CUT_BPP,
    max_bytes: Optional[int] = CUT_BYTES,
    drop: list[str] = typer.Option([], help="Leave out, for good, the archived paths matching this glob "
                                            "(repeatable; one matching nothing is refused, exit 2). A later "
                                            "compress of their sources encodes them again."),
    drop_failed: bool = typer.Option(False, "--drop-failed", help="Leave out the images whose current row is a "
                                                                  "failure."),
    drop_moved: bool = typer.Option(False, "--drop-moved", help="Leave out the images whose source file is gone "
                                                                "while another image of the same bytes still has "
                                                                "its source (the old paths of a renamed or moved "
                                                                "folder); none where every such source is gone."),
    as_json: bool = AS_JSON,
):
    """Rewrite an archive as its current rows only (one set of parts per model), optionally
    cutting every image to a smaller depth or dropping images for good; damaged parts are set
    aside in its damaged/ folder, their readable rows copied. Nothing else may write to it meanwhile."""
    from .archive import compact as run_compact

    with archive_errors(kept="what was finished is committed"):
        target = _target(target_msssim, target_bpp, max_bytes)
        with _image_progress("compact") as progress:
            result = run_compact(archive, depth=depth, target=target, progress=progress, drop=tuple(drop),
                                 drop_failed=drop_failed, drop_moved=drop_moved)
    if as_json:
        from dataclasses import asdict

        _print_json(_flag_reasons(asdict(result)))
    else:
        out.print(f"{shown(result.archive)}: {result.rows_before} rows in {result.parts_before} part(s), "
                  f"{result.bytes_before:,} bytes -> {result.rows} rows in {result.parts} part(s), "
                  f"{result.bytes:,} bytes; {result.cut} image(s) cut to a smaller depth"
                  + (f", {result.dropped} dropped" if result.dropped else ""))
        _print_failures("not cut", result.problems)  # each reason says: kept as is, or left out
        if result.set_aside:
            out.print(f"{len(result.set_aside)} damaged part(s) set aside (their readable rows copied; "
                      f"`compress` encodes the rest again): " + ", ".join(map(shown, result.set_aside)))
    raise typer.Exit(result.exit_code)


# bench's options that measure: none reads a manifest summarized again
MEASURING = ("manifest", "weights", "iterations", "limit", "speed_images", "device", "precision", "decoding",
             "search_steps", "classical_cache", "no_cache", "classical_names")


@app.command("bench")
def bench_command(
    ctx: typer.Context,
    source: Path = typer.Argument(..., parser=path, help="Folder of images (searched recursively), or a bench manifest "
                                            "(.parquet) to summarize again without measuring."),
    out_dir: Optional[Path] = typer.Option(None, "--out", parser=path, help="Folder for summary.json and the plots "
                                                               "(default: bench-FOLDER, FOLDER the source's name)."),
    manifest: Optional[Path] = typer.Option(None, parser=path, help="Where to write the per-image Parquet manifest "
                                                       "(default: manifests/bench-FOLDER/bench.parquet)."),
    weights: Optional[Path] = WEIGHTS,
    iterations: Optional[int] = typer.Option(None, "--depth", "--iterations", help="Deepest rgbatch depth measured (default: the model's)."),
    limit: Optional[int] = typer.Option(None, help="Only the first N images, in path order."),
    speed_images: int = typer.Option(2, help="Images on which rgbatch is timed at depths 1, 2, 4, 8, 16."),
    device: str = DEVICE,
    precision: str = PRECISION,
    decoding: str = DECODING,
    search_steps: int = SEARCH_STEPS,
    classical_cache: Path = typer.Option(Path("runs/classical-cache.jsonl"), parser=path, help="File of classical codec "
                                         "results, read and added to: re-benching encodes only rgbatch again "
                                         "(a name ending in .xz: xz-compressed)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Measure every classical codec again, no cache."),
    classical_names: str = typer.Option("all", "--classical", help="Classical settings to measure, comma-separated "
                                        "(e.g. avif,jxl), `all` or `none` (rgbatch alone: comparing models)."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON instead of tables."),
    overwrite: bool = typer.Option(False, help="Replace an earlier run's manifest, summary.json and plots (default: "
                                   "refuse before measuring, exit 2)."),
):
    """Rate, quality and speed of rgbatch against JPEG, WebP, AVIF and JPEG XL on your images (docs/BENCH.md)."""
    from .bench import bench, read_manifest, summarize, summary_tables, write_outputs

    # the options given (typer's own click's ParameterSource, by name)
    given = {name for name in ctx.params if getattr(ctx.get_parameter_source(name), "name", "DEFAULT") != "DEFAULT"}
    with user_errors():
        if not source.exists():
            raise FileNotFoundError(f"no such file or folder: {source}")
        if {"no_cache", "classical_cache"} <= given:
            raise OptionError("no_cache", "measures without a cache: drop {classical_cache}", ("classical_cache",))
        if source.is_file():
            rows = read_manifest(source)
            # what measures, taken and ignored on a manifest until session 61
            unused = [flag(name) for name in MEASURING if name in given]
            if unused:
                raise ValueError(f"{shown(source)} is a bench manifest, summarized again without measuring: "
                                 f"{', '.join(unused)} {'change' if len(unused) > 1 else 'changes'} nothing there; "
                                 f"drop {'them' if len(unused) > 1 else 'it'}")
            summary = write_outputs(rows, out_dir, overwrite=overwrite).summary if out_dir else summarize(rows)
        else:
            with _image_progress("bench") as progress:  # drawn from the first image on: an error line stands alone
                name = f"bench-{source.resolve().name}"
                summary = bench(source, out_dir or Path(name), manifest or Path("manifests", name, "bench.parquet"),
                                weights=weights, iterations=iterations, limit=limit, speed_images=speed_images,
                                device=device, precision=precision, decoding=decoding, search_steps=search_steps,
                                classical_cache=None if no_cache else classical_cache, log=_note,
                                classical_sweeps=classical_sweeps(classical_names), progress=progress,
                                overwrite=overwrite).summary
    if as_json:
        _print_json(summary)
    else:
        for table in summary_tables(summary):
            out.print(table)
    if not source.is_file() and (skipped := summary["run"].get("skipped")):  # a run that measured, not a re-summary
        err.print(_red("error:", f" {len(skipped)} image(s) skipped (named above): the figures are of the other "
                                 f"{summary['images']}"), highlight=False)
        raise typer.Exit(1)  # some images failed: exit 0 until session 60


def classical_sweeps(names: str) -> dict | None:
    """`--classical`: None (every available setting), {} (none) or the named settings' sweeps."""
    from .classical import CLASSICAL_CODECS, get_codec

    if names == "all":
        return None
    chosen = [n.strip() for n in names.split(",") if n.strip() and n.strip() != "none"]
    unknown = sorted(set(chosen) - set(CLASSICAL_CODECS))
    if unknown:
        raise typer.BadParameter(f"unknown classical setting(s) {', '.join(unknown)}; "
                                 f"known: {', '.join(CLASSICAL_CODECS)}", param_hint="--classical")
    return {n: get_codec(n).qualities for n in chosen}


@app.command("fit-entropy")
def fit_entropy_command(
    weights: Path = TRAINED_WEIGHTS,
    data: list[Path] = TRAINING_DATA,
    out_path: Path = typer.Option(..., "--out", parser=path, help="Weight file to write: the model plus its context model."),
    images: int = typer.Option(0, help="Training images to code (one centre crop each; 0: all)."),
    crop: int = typer.Option(512, help="Crop size in pixels (at most; smaller images are coded whole)."),
    context_bits: int = typer.Option(10, help="Context bits per coded bit (table size 2**bits)."),
    device: str = typer.Option("auto", help="auto | cpu | cuda, for coding the crops."),
    seed: int = typer.Option(0),
    cache: Optional[Path] = typer.Option(None, parser=path, help="Folder keeping the crops' codes by model id, the images' files and the crop choice, "
                                         "so that a refit with other options skips the network."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a file at --out other than the weights read "
                                   "(writing the tables into them, --out WEIGHTS, needs none)."),
):
    """Fit the context entropy coder on the codes of training images (docs/ENTROPY.md)."""
    from .entropy_fit import fit_entropy
    from .weights import check_new_file

    with user_errors():
        # the weights read may be replaced (the documented refit in place); any other file only when asked
        check_new_file(out_path, overwrite or out_path.resolve() == Path(weights).resolve())
        mid = fit_entropy(weights, [str(d) for d in data], out_path, images=images, crop=crop, context_bits=context_bits,
                          device=device, seed=seed, cache=cache, log=_note)
    out.print(f"wrote {shown(out_path)} (model id {mid})")


@app.command("fit-refiner")
def fit_refiner_command(
    weights: Path = TRAINED_WEIGHTS,
    data: list[Path] = TRAINING_DATA,
    out_path: Path = typer.Option(..., "--out", parser=path, help="Weight file to write: the model plus its refiner."),
    state: Path = typer.Option(Path("runs/refiner.pt"), parser=path, help="Training state, resumed when it exists; the "
                               "training pairs are kept beside it (STATE with the suffix .pairs)."),
    steps: int = typer.Option(8000, help="Steps of the run (its learning-rate schedule ends there)."),
    time_limit: float = typer.Option(0, help="Stop (resumably) after this many seconds; 0: run to --steps."),
    threads: int = typer.Option(0, help="CPU threads (0: torch's default)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a file at --out."),
):
    """Train a decoder-side refiner and write the weights with it (docs/TRAINING.md, "Refiner"):
    the codes stay the same, each depth's image is refined. Measured so far: no gain.

    Ctrl-C or SIGTERM stops the pair-making after its batch or the training after its step, what
    they made kept (--out not written; the same command goes on); a second signal: at once."""
    from .refine_fit import fit_refiner

    # each number checked before the pairs are made (until session 53: a traceback, or after them)
    with archive_errors(kept=f"the last state saved in {state} stays; the same command goes on from it"):
        check_range("threads", threads, 0, what=" (0: torch's default)")
        check_range("steps", steps, 1)
        check_range("time_limit", time_limit, 0, what=" seconds (0: run to --steps)")
        if threads:
            import torch

            torch.set_num_threads(threads)
        stop = threading.Event()
        with _stopping(stop, err, "stopping after the batch of crops or the step under way, what it made kept "
                                  "(again: at once, losing what was made since)") as signals:
            mid = fit_refiner(weights, [str(d) for d in data], out_path, state, steps=steps, time_limit=time_limit,
                              log=_note, stop=stop, overwrite=overwrite)
        if signals:
            made = f"{state}, and its pairs beside it" if state.is_file() else f"the pairs made, beside {state}"
            _exit_stopped(signals[0], f"what it made is kept ({made}), {out_path} not written; the same command "
                                      f"goes on from it")
    out.print(f"wrote {shown(out_path)} (model id {mid})")


@app.command("pack")
def pack_training_set(
    data_dir: Path = typer.Argument(..., parser=path, help="Folder of training images."),
    out_path: Path = typer.Option(Path(".pack/train-crops.npy"), "--out", parser=path, help="The .npy file to write."),
    crop: int = typer.Option(128, help="Crop size in pixels."),
    per_image: int = typer.Option(1, help="Random crops per image."),
    jpeg_quality: int = typer.Option(0, help="0: one uint8 .npy array; else a folder --out of JPEG crops "
                                             "at this quality (4:4:4), a fifth the size at 95."),
    max_mib: float = typer.Option(0.0, help="JPEG packs: at most this many MiB, the crops taken in a random "
                                            "order until the next would not fit (0: every crop)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a .npy file at --out."),
):
    """Pack random crops of a training folder (to carry to a GPU machine): a .npy array, or a
    folder of JPEG crops. Either is a training source for `rgbatch train`."""
    from .train import pack_crops

    # SIGTERM as Ctrl-C: a JPEG pack's hidden folder removed (a SIGTERM left it, until session 60)
    with archive_errors(kept="--out holds what it held until the pack is whole; the same command makes it again"):
        shape = pack_crops(data_dir, out_path, crop, per_image, jpeg_quality=jpeg_quality, max_mib=max_mib,
                           overwrite=overwrite)
    size = sum(p.stat().st_size for p in out_path.rglob("*")) if out_path.is_dir() else out_path.stat().st_size
    out.print(f"wrote {shown(out_path)}: {shape[0]} crops of {shape[1]}x{shape[2]}, {size / 2**20:.1f} MiB")


@app.command("export")
def export_checkpoint(
    checkpoint: Path = typer.Argument(..., parser=path, help="Training checkpoint (.pt)."),
    out_path: Path = typer.Option(..., "--out", parser=path, help="Weight file to write (the shipped model is "
                                                    "rgbatch/models/default.safetensors in the repository)."),
    average: list[Path] = typer.Option([], parser=path, help="More checkpoints or snapshots of the same run (repeat the "
                                                "option): write the mean of all their weights."),
    tables_from: Optional[Path] = typer.Option(
        None, parser=path, help="Weight file whose entropy model (the context tables) to write with the network: for a run "
                   "that trained the decoder alone, whose codes keep their statistics (docs/TRAINING.md, Signs)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a file at --out (the shipped model, say)."),
):
    """Write a checkpoint's model as an fp16 safetensors weight file (what rgbatch ships).

    The entropy model is fitted to a model's codes: run `rgbatch fit-entropy` after this, or give
    the tables of the file it was trained from with --tables-from."""
    from .train import export_weights
    from .refine import PREFIX
    from .weights import check_new_file, load_weights

    with user_errors():
        check_new_file(out_path, overwrite)
        # its tables alone: a refiner was copied with them until session 60
        extra = {k: v for k, v in load_weights(tables_from)[2].items() if not k.startswith(PREFIX)} if tables_from else None
        mid = export_weights(checkpoint, out_path, extra=extra, average=average,
                             log=_note)  # the file was read once, not again
    out.print(f"wrote {shown(out_path)} (model id {mid})")


@app.command("widen")
def widen_checkpoint(
    checkpoint: Path = typer.Argument(..., parser=path, help="Training checkpoint (.pt) of a Residual-GRU run."),
    width: float = typer.Option(0.5, help="The new channel multiplier, larger than the run's."),
    out_path: Path = typer.Option(..., "--out", parser=path, help="Training state to write (must not exist)."),
    seed: int = typer.Option(0, help="Draws which units are copied and how weights are split."),
    spread: float = typer.Option(0.2, help="Each split weight's parts are 1/2 +- up to this (0..0.25): "
                                           "the copies train apart, the function stays."),
    noise: float = typer.Option(0.0, help="Gaussian noise on the copies' incoming weights, times each "
                                          "weight tensor's deviation (0: the function stays exactly)."),
):
    """Widen a training run's model (Net2WiderNet): a new state with the same codes and images at
    a larger width, resumed by `rgbatch train --width W --resume` (docs/TRAINING.md, "Widening")."""
    from .widen import widen_state

    with user_errors():
        state = widen_state(checkpoint, out_path, width, noise=noise, seed=seed, spread=spread)
    out.print(f"wrote {shown(out_path)}: width {width:g} at step {state['step']}; Adam starts again "
              f"(resume with --width {width:g})", highlight=False)


@app.command("slim")
def slim_checkpoint_command(
    checkpoint: Path = typer.Argument(..., parser=path, help="Training checkpoint (.pt)."),
    out_path: Path = typer.Option(..., "--out", parser=path, help="Checkpoint to write (must not exist)."),
    half: bool = typer.Option(False, "--half", help="The model in fp16, as shipped: half the size again "
                                                    "(what weights/train-state.pt holds since session 20)."),
    base: Optional[Path] = typer.Option(None, parser=path, help="A packaged weight file (rgbatch/models/): store the model as "
                                                   "its difference from it, compressed (with --half, a run trained "
                                                   "on from it keeps a fifth of the size)."),
):
    """Write a checkpoint without Adam's moments (a third of its size); `rgbatch train --resume`
    continues it with Adam started again and warmed up (docs/TRAINING.md, "Widening")."""
    from .train import slim_checkpoint

    with user_errors():
        slim_checkpoint(checkpoint, out_path, half, base)
    out.print(f"wrote {shown(out_path)} ({out_path.stat().st_size / 2**20:.1f} MiB)", highlight=False)


@app.command("delta")
def delta_command(
    weights: Path = typer.Argument(..., parser=path, help="Weight file to store."),
    base: Path = typer.Option(..., parser=path, help="Weight or delta file to store it against, in the folder of --out."),
    out_path: Path = typer.Option(..., "--out", parser=path, help="Delta file to write (MODEL_ID.delta, how rgbatch "
                                                    "packages its earlier default models); never the base."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a file at --out."),
):
    """Write a weight file as a compressed difference from another (docs/TRAINING.md, "Shipping a
    model"): reading it rebuilds the same model id, with the base found beside it."""
    from .weights import write_delta

    with user_errors():
        mid, size = write_delta(weights, base, out_path, overwrite)
    out.print(f"wrote {shown(out_path)} (model {mid}, {size / 2**20:.1f} MiB)", highlight=False)


def main():
    from .__main__ import in_utf8_mode, start_quietly

    in_utf8_mode()  # where started as `python -m rgbatch.cli` or from an older installation's script
    start_quietly()
    _standard_streams()
    # the image readers' warnings about the files they read (a damaged tag skipped, a possible bomb
    # rgbatch refuses itself): the command words what matters (the library sets no filter, since
    # session 63: a host program's filters are its own)
    warnings.filterwarnings("ignore", module=r"(PIL|pillow_heif|pillow_jxl)(\.|$)")
    signalwatch.watch()  # a signal the main thread cannot take (blocked in a store's C++ code) ends it anyway
    try:
        app()
    except OSError as e:  # typer lets a failed write of the output through: stdout on a full disk
        _quiet_stdout()  # and the system's failures outside a command's own handling (no file descriptor
        # left: `ulimit -n`), which were said to be the output's until session 62
        said = f"writing the output: {e.strerror or e}" if e.errno in OUTPUT_ERRORS else cli_words(worded(e))
        err.print(_red("error:", f" {said}"), highlight=False, soft_wrap=True)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
