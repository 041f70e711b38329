"""Kill the archive's writers (and training) at random moments and check what docs/ARCHIVE.md
promises about interruptions ("Resuming": a rerun neither redoes nor duplicates committed images;
"compact": safe to interrupt; "restore": resumable, files written whole or not at all), and
docs/TRAINING.md ("Resuming": a killed run loses at most the steps since its checkpoint, and
`--resume` continues bit for bit).

    OMP_NUM_THREADS=1 python benchmarks/fuzz_kill.py [--cases 10] [--seed 0] [--images 16] [--keep DIR]
                                                     [--address HOST:PORT]

Each case runs `rgbatch compress` (a Ray of its own, or the cluster at --address), `restore`,
`compact` (`--depth 1`) and `train` as the command line runs them, each in a process of its own
sent SIGKILL, SIGTERM or SIGINT 1-3 times at random moments of its work (drawn over the time an
uninterrupted run takes), then run to its end. The writers commit
every 0.3 s in parts of at most 3 rows (`Archive.writer`'s sizes, set by the process that runs
the command) so that kills land between many commits. A finding:

- an interrupted command that ends other than as the signal says (killed by SIGKILL; exit 143 for
  SIGTERM, 130 for SIGINT, or killed by the signal itself, which a shell reports the same; or its own
  end where it finished first, or was exiting: its uninterrupted exit code within `EXITING` seconds
  of the signal), or with a traceback; the final run's exit not the uninterrupted one's;
- after any kill, an archive whose current rows are not whole (`Row.problem`) or are not what an
  uninterrupted run wrote at some stage of that command (an image lost, a wrong blob), or a
  temporary file in the archive or restore's folder (the files have no name until whole, since
  session 55 the archive's parts too: `storage.NewFile`; a file system without O_TMPFILE fails this);
- after the final compress: an image whose blob is not the uninterrupted run's, an image encoded
  twice (two `ok` rows of one path and source hash: committed work redone), a temporary part left;
- after the final restore: a PNG not pixel for pixel the uninterrupted restore's, or a temporary file
  left in its folder; after the final compact: its blobs not an uninterrupted compact's;
- `train` (since session 55: a tiny model, 360 steps, a checkpoint every 48 (24 steps, a checkpoint
  every step, until session 56), rerun with --resume where a checkpoint is there, as a user would):
  after any kill a checkpoint that does not load or a temporary file beside it, or (since session
  56) a run stopped by Ctrl-C or SIGTERM whose checkpoint is not at the step it said it stopped at;
  at the end a model not bit for bit the uninterrupted run's.

Prints each case's signals and the counts of the outcomes. The images are encoded with
--batch-size 1 and --precision fp32, so that an image's codes do not depend on which others share
its batch (an interrupted run's rerun batches fewer images).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from PIL import Image

from _common import TINY_TRAINING
from rgbatch.manifest import Archive
from rgbatch.storage import TEMP_PREFIX
from rgbatch.train import TrainingError, load_training_state

# the command line, with the writers' parts small and frequent (argv: the command's arguments)
LAUNCH = """import sys
from rgbatch.__main__ import main, start_quietly
start_quietly()  # as the rgbatch script starts
from rgbatch import manifest
writer = manifest.Archive.writer
manifest.Archive.writer = lambda self, model_id, held=None, **sizes: writer(
    self, model_id, held=held, **{"commit_seconds": 0.3, "part_rows": 3, "row_group_rows": 2, **sizes})
sys.argv[0] = "rgbatch"
main()
"""
# a tiny model's training, a checkpoint every 48 steps (`train --resume` goes on from the last one; a
# Ctrl-C or SIGTERM writes one where it stops), most of its run in the steps (7 s of 10 here)
DATA = Path(__file__).parent.parent / "tests" / "data"
TRAIN = ["--steps", "360", "--checkpoint-every", "48", *TINY_TRAINING]
SIGNALS = (signal.SIGKILL, signal.SIGKILL, signal.SIGTERM, signal.SIGINT)
# how a command sent each signal may end: its own exit code, or killed by the signal itself (before
# its handlers are in place, or once Python has put the defaults back on its way out), which a shell
# reports as the same 128 + the signal's number
ENDS = {signal.SIGKILL: {-signal.SIGKILL}, signal.SIGTERM: {143, -signal.SIGTERM}, signal.SIGINT: {130, -signal.SIGINT}}


def sources(folder: Path, images: int, rng: np.random.Generator):
    """`images` smooth PNGs of 40-72 px a side, two copies of the first (the same bytes under new
    paths: rows copied, not encoded) and a file that is no image (an error row every run)."""
    y, x = np.mgrid[0:72, 0:72]
    for i in range(images):
        h, w = (int(v) for v in rng.integers(40, 73, 2))
        phase = rng.uniform(0, 6, 3)
        base = np.stack([128 + 100 * np.sin(x / 13 + p) * np.cos(y / 19 - p) for p in phase], -1)[:h, :w]
        pixels = np.clip(base + rng.normal(0, 5, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:03d}.png")
    (folder / "copies").mkdir()
    for name in ("a.png", "b.png"):
        shutil.copyfile(folder / "000.png", folder / "copies" / name)
    (folder / "broken.png").write_bytes(b"no image here")


def command(args: list[str]) -> list[str]:
    return [sys.executable, "-c", LAUNCH, *map(str, args)]


def run(args: list[str], kill_at: float | None = None, sig=signal.SIGKILL) -> tuple[int, str, float, float | None]:
    """(exit code, stderr, seconds, seconds it ran after the signal: None where none was sent) of
    one command, sent `sig` after `kill_at` seconds if still running. SIGINT is delivered as a
    terminal's Ctrl-C would be, to a process that does not ignore it."""
    start, signalled = time.monotonic(), None
    process = subprocess.Popen(command(args), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        if kill_at is not None:
            try:
                process.wait(kill_at)
            except subprocess.TimeoutExpired:
                process.send_signal(sig)
                if process.returncode is None:  # not sent to a process that had ended (Popen polls first)
                    signalled = time.monotonic()
        _, err = process.communicate(timeout=600)
    except BaseException:
        process.kill()
        raise
    end = time.monotonic()
    return process.returncode, err, end - start, None if signalled is None else end - signalled


def current(archive: Path) -> dict[str, tuple]:
    """{path: (status, blob)} of an archive's current rows; raises where a row is not whole."""
    rows = {}
    for row in Archive(archive).rows():
        problem = row.problem()
        if problem:
            raise AssertionError(f"{row.path}: {problem}")
        rows[row.path] = (row.status, row.blob if row.ok else None)
    return rows


def encodings(archive: Path) -> collections.Counter:
    """(path, source hash) of every ok row in every part, superseded ones included."""
    counts = collections.Counter()
    for part in Archive(archive).parts:
        table = pq.read_table(part, columns=["path", "source_hash", "status"])
        for path, digest, status in zip(*(table[c].to_pylist() for c in ("path", "source_hash", "status"))):
            if status == "ok":
                counts[path, digest] += 1
    return counts


def whole_rows(archive: Path, log: list[str]) -> dict[str, tuple]:
    """`current(archive)`, or {} with a finding where a row is not whole."""
    try:
        return current(archive)
    except AssertionError as e:
        log.append(f"FINDING: a row not whole at the end: {e}")
    except (ValueError, OSError) as e:  # no archive there at all (seed 21 of session 57, once)
        log.append(f"FINDING: no archive at the end: {e}")
    return {}


def temporaries(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob(f"{TEMP_PREFIX}*"))


def no_temporaries(folder: Path):
    assert not temporaries(folder), f"temporary files left: {temporaries(folder)}"


def pngs(folder: Path) -> dict[str, np.ndarray]:
    return {str(p.relative_to(folder)): np.asarray(Image.open(p).convert("RGBA"))
            for p in sorted(folder.rglob("*.png")) if not p.name.startswith(TEMP_PREFIX)}


# a command that ends as uninterrupted this soon after a signal was sent was exiting already: Popen
# polls before it signals, but a process may end between the two, or be in the kernel's exit then
# (seed 9 of session 55: a restore "sent SIGKILL ended 0"); a SIGTERM or SIGINT handled and then
# ignored would run on for longer
EXITING = 0.5


def interrupted(args, rng: np.random.Generator, seconds: float, log: list[str],
                after_kill=None, own_end: int = 0) -> tuple[int, str]:
    """Run `args` (a list, or a function giving it each time) killed 1-3 times at random moments
    within `seconds`, checking `after_kill(stderr)` after each, then to its end: the final (exit
    code, stderr). `own_end`: its uninterrupted exit code. Findings are added to `log`."""
    command_of = args if callable(args) else lambda: args
    for _ in range(int(rng.integers(1, 4))):
        sig = SIGNALS[int(rng.integers(0, len(SIGNALS)))]
        at = float(rng.uniform(0.2, seconds))
        args = command_of()
        code, err, _, after = run(args, at, sig)
        log.append(f"{signal.Signals(sig).name}@{at:.1f}s->{code}")
        exiting = code == own_end and after is not None and after < EXITING
        if after is not None and code not in ENDS[sig] and not exiting:
            log.append(f"FINDING: {args[0]} sent {signal.Signals(sig).name} ended {code}: {err.strip()[-300:]}")
        if "Traceback" in err:
            log.append(f"FINDING: {args[0]} traceback: {err.strip()[-300:]}")
        if after_kill is not None:
            try:
                after_kill(err)
            except (AssertionError, ValueError, OSError) as e:  # the last two: no archive there
                log.append(f"FINDING: {args[0]} after {signal.Signals(sig).name}: {e}")
    args = command_of()
    code, err, _, _ = run(args)
    if "Traceback" in err:
        log.append(f"FINDING: {args[0]} traceback: {err.strip()[-300:]}")
    elif code != own_end:  # the run to the end did not end as an uninterrupted one: say why
        log.append(f"FINDING: {args[0]} run to its end ended {code}: {err.strip()[-300:]}")
    return code, err


def same_models(a: Path, b: Path) -> bool:
    """Whether two training checkpoints hold the same step and model, bit for bit."""
    x, y = (load_training_state(p) for p in (a, b))
    return x["step"] == y["step"] and x["model"].keys() == y["model"].keys() and all(
        torch.equal(x["model"][k], y["model"][k]) for k in x["model"])


def fuzz(cases: int, seed: int, images: int, tmp: Path, address: str | None = None
         ) -> tuple[collections.Counter, list[str]]:
    rng = np.random.default_rng(seed)
    src = tmp / "src"
    src.mkdir()
    sources(src, images, rng)
    encode = ["--iterations", "3", "--tile-size", "32", "--batch-size", "1", "--precision", "fp32",
              "--workers", "1", *(["--address", address] if address else [])]
    decode = ["--iterations", "2", "--precision", "fp32"]

    # the uninterrupted runs: what every case must end with
    reference = tmp / "reference"
    code, err, compress_seconds, _ = run(["compress", src, "--out", reference, *encode])
    assert code == 1 and "Traceback" not in err, err  # broken.png fails
    want = current(reference)
    code, err, restore_seconds, _ = run(["restore", reference, "--out", tmp / "restored", *decode])
    assert code == 0, err
    restored = pngs(tmp / "restored")
    compacted = tmp / "compacted"
    shutil.copytree(reference, compacted)
    code, err, compact_seconds, _ = run(["compact", compacted, "--depth", "1"])
    assert code == 0, err  # broken.png's error row kept as it is
    cut = current(compacted)
    assert len(want) == len(cut) == images + 3 and len(restored) == images + 2
    trained = tmp / "reference.pt"
    code, err, train_seconds, _ = run(["train", DATA, "--out", trained, *TRAIN])
    assert code == 0, err
    print(f"uninterrupted: compress {compress_seconds:.1f} s, restore {restore_seconds:.1f} s, "
          f"compact {compact_seconds:.1f} s, train {train_seconds:.1f} s", flush=True)

    counts, findings = collections.Counter(), []
    for case in range(cases):
        log: list[str] = []
        archive, out = tmp / f"archive{case}", tmp / f"out{case}"

        def same_or_fewer(_err, archive=archive):
            rows = current(archive) if archive.exists() and Archive(archive, create=True).parts else {}
            wrong = [p for p, r in rows.items() if p not in want or (r[0] == "ok" and r != want[p])]
            assert not wrong, f"rows unlike the uninterrupted run's: {wrong[:3]}"
            no_temporaries(archive)

        code, _ = interrupted(["compress", src, "--out", archive, *encode], rng, compress_seconds, log, same_or_fewer,
                              own_end=1)
        got = whole_rows(archive, log)
        if code != 1 or got != want:
            log.append(f"FINDING: compress ended {code}; images unlike the uninterrupted run's: "
                       f"{sorted(p for p in set(got) | set(want) if got.get(p) != want.get(p))[:5]}")
        twice = [key for key, n in encodings(archive).items() if n > 1]
        if twice:
            log.append(f"FINDING: encoded twice: {twice[:3]}")
        if temporaries(archive):
            log.append(f"FINDING: temporary files left in the archive: {temporaries(archive)}")

        code, _ = interrupted(["restore", archive, "--out", out, *decode], rng, restore_seconds, log,
                              lambda _err, out=out: no_temporaries(out))
        written = pngs(out)
        wrong = [p for p in set(written) | set(restored)
                 if p not in written or p not in restored or not np.array_equal(written[p], restored[p])]
        if code != 0 or wrong or temporaries(out):
            log.append(f"FINDING: restore ended {code}; PNGs unlike the uninterrupted restore's: {sorted(wrong)[:5]}; "
                       f"temporary files: {temporaries(out)}")

        def whole(_err, archive=archive):
            rows = current(archive)
            wrong = [p for p in want if rows.get(p) not in (want[p], cut[p])]
            assert set(rows) == set(want) and not wrong, f"images lost or wrong: {wrong[:3]}"
            no_temporaries(archive)

        code, _ = interrupted(["compact", archive, "--depth", "1"], rng, compact_seconds, log, whole)
        if code != 0 or whole_rows(archive, log) != cut or temporaries(archive):
            log.append(f"FINDING: compact ended {code}; not the uninterrupted compact's rows, or temporary "
                       f"files: {temporaries(archive)}")
        run_folder = tmp / f"train{case}"
        run_folder.mkdir()
        checkpoint = run_folder / "run.pt"

        def readable(err, checkpoint=checkpoint, run_folder=run_folder):
            """The checkpoint loads, nothing beside it, and one that the run said it wrote as it
            stopped (Ctrl-C or SIGTERM, since session 56) holds that step."""
            no_temporaries(run_folder)
            said = re.search(r"stopped at step (\d+), its checkpoint written", " ".join(err.split()))
            if checkpoint.exists():
                try:
                    step = load_training_state(checkpoint)["step"]
                except TrainingError as e:
                    raise AssertionError(f"a checkpoint that does not load: {e}") from None
                assert not said or step == int(said[1]), f"said it stopped at step {said[1]}; the checkpoint holds {step}"
            else:
                assert not said, f"said it stopped at step {said[1]}; no checkpoint"

        code, _ = interrupted(lambda: ["train", DATA, "--out", checkpoint, *TRAIN,
                                       *(["--resume"] if checkpoint.exists() else [])],
                              rng, train_seconds, log, readable)
        if code != 0 or temporaries(run_folder) or not same_models(checkpoint, trained):
            log.append(f"FINDING: train ended {code}; its model not the uninterrupted run's, or temporary files: "
                       f"{temporaries(run_folder)}")
        case_findings = [line for line in log if line.startswith("FINDING")]
        findings += [f"case {case}: {line}" for line in case_findings]
        counts["cases with findings" if case_findings else "cases clean"] += 1
        counts["kills"] += sum("@" in line for line in log)
        print(f"case {case}: {' '.join(line for line in log if '@' in line)}"
              f"{'; ' + str(len(case_findings)) + ' finding(s)' if case_findings else ''}", flush=True)
        shutil.rmtree(out)
    return counts, findings


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--keep", type=Path, help="work in this (new) folder and keep it")
    parser.add_argument("--address", help="compress on this Ray cluster (its drivers killed) instead of a Ray "
                                          "of its own each run")
    args = parser.parse_args()
    if args.keep:
        args.keep.mkdir(parents=True)
    with (tempfile.TemporaryDirectory() if not args.keep else contextlib.nullcontext(args.keep)) as tmp:
        counts, findings = fuzz(args.cases, args.seed, args.images, Path(tmp), args.address)
    for line in findings:
        print(line)
    print(f"{args.cases} cases, seed {args.seed}: {counts['kills']} kills, {len(findings)} findings")
    sys.exit(1 if findings else 0)


if __name__ == "__main__":
    main()
