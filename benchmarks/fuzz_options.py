"""Fuzz the command line's options (docs/ARCHIVE.md, "Exit codes"): every option of the archive
and single-file commands, found by asking the CLI itself (so a new option is fuzzed without a
word here), given each odd value of its type in turn (0, -1, integers past 64 bits, nan, inf,
blank text, globs, control characters; for a file to read: missing, a folder, an empty file,
/dev/null, a FIFO with no writer; for a file to write: a folder, a file already there, a name
ending in '/'), then `--pairs N` random draws of a command and two of its options (a command of
one option drawn is passed over), in process (typer's CliRunner) on a small
archive and stream file made first (`bench` on one image at depth 1, no classical codec; `train`
two steps of a tiny model on tests/data, 20 s at most; `pack` crops of 64 px; since session 55
`export`, `slim`, `widen` and `delta` on a tiny model's checkpoint and weight file made first;
since session 56 `fit-entropy` (64 px crops of tests/data) and `fit-refiner` (2 steps on 58
noise images) with that weight file).

    OMP_NUM_THREADS=1 python benchmarks/fuzz_options.py [--pairs 200] [--seed 0] [--commands report,decode]

Every command must end as the CLI promises: exit 0, 1 or 2 (130/143 are for signals), with no
traceback and no exception escaping; a case still running after --timeout seconds is a hang
(the process prints where it is and exits 3); `report`, `restore` and `verify` leave the
archive as they found it; and nothing appears in the current folder (a fresh one per case)
that no relative value of the case names (an empty `--out` taken for it, a default output).
Prints the exit codes counted per command and every finding.
`compress` runs for real on a Ray started once (a few seconds a case); `--commands` leaves it out.
"""

from __future__ import annotations

import argparse
import collections
import faulthandler
import itertools
import os
import shutil
import sys
import tempfile
import traceback
from pathlib import Path

import numpy as np
import typer.main
from PIL import Image
from typer.testing import CliRunner

from _common import TINY_TRAINING
from rgbatch.cli import app

DATA = Path(__file__).parent.parent / "tests" / "data"
COMMANDS = ("info", "report", "restore", "verify", "compact", "encode", "decode", "compress", "bench", "train", "pack",
            "export", "slim", "widen", "delta", "fit-entropy", "fit-refiner")
READ_ONLY = ("report", "restore", "verify")  # must leave the archive as they found it
NUMBERS = {"integer": ["0", "-1", "1", "2", "65536", "99999999999999999999", "1e3", "abc", ""],
           "float": ["0", "-1", "nan", "inf", "-inf", "1e400", "1e-300", "0.5", "1.5", "abc", ""]}
TEXTS = ["", " ", "abc", "0", "-1", "nan", "none", "auto", "*", "[", "**/*", "a\nb", "\x1b[31m", "é/ü", "../x",
         "--help"]


CASE = "{case}"  # in a value to write: the case's own folder, so that every case may succeed


def path_values(folder: Path) -> dict[str, list[str]]:
    """Odd values of path options: "read" for a file to read (made once in `folder`), "write" for
    one to write (in each case's own folder, `CASE`: until session 56 one folder for all, where
    the first `slim --out .../new/out.bin` to succeed left every later one "already there")."""
    folder.mkdir(parents=True)
    (folder / "empty").write_bytes(b"")
    (folder / "text").write_text("not what it should be\n")
    os.mkfifo(folder / "fifo")
    return {"write": [f"{CASE}/new/out.bin", CASE, f"{CASE}/there", f"{CASE}/folder/", "", f"{CASE}/missing/.."],
            "read": [str(folder / "missing"), str(folder), str(folder / "empty"), str(folder / "text"), "/dev/null",
                     str(folder / "fifo"), ""]}


WRITES = {("restore", "--out"), ("compress", "--out"), ("encode", "--out"), ("decode", "--out"),
          ("report", "--html"), ("bench", "--out"), ("bench", "--manifest"), ("bench", "--classical-cache"),
          ("train", "--out"), ("pack", "--out"), ("export", "--out"), ("slim", "--out"), ("widen", "--out"),
          ("delta", "--out"), ("fit-entropy", "--out"), ("fit-entropy", "--cache"), ("fit-refiner", "--out"),
          ("fit-refiner", "--state")}
SKIPPED = {"--help", "--version", "--address"}  # an address that answers nothing takes 20 s to be refused


def options(command: str) -> list[tuple[str, str]]:
    """(flag, its type's name: integer, float, text, path...) of each option of the CLI's
    `command` (as typer builds it for click) that takes a value."""
    params = typer.main.get_command(app).commands[command].params
    return [(param.opts[0], param.type.name) for param in params
            if param.param_type_name == "option" and not param.is_flag and param.opts[0] not in SKIPPED]


LONG = ("train", "pack", "fit-refiner")  # where 65536 (steps, a batch, threads) is a valid job of hours, not a finding


def values(command: str, flag: str, kind, paths: dict[str, list[str]]) -> list[str]:
    if (command, flag) in WRITES:
        return paths["write"]
    if kind == "path" or flag in ("--weights", "--sources"):
        return paths["read"]
    return [v for v in NUMBERS.get(kind, TEXTS) if not (command in LONG and v == "65536")]


class Scene:
    """The scratch folder: sources, an archive of them, a stream file, fresh outputs per case."""

    def __init__(self, root: Path, weights: str | None):
        self.root, self.weights = root, weights
        self.sources = root / "sources"
        (self.sources / "sub").mkdir(parents=True)
        shutil.copy(DATA / "kodim05_crop192.png", self.sources / "a.png")
        shutil.copy(DATA / "kodim23_crop192.png", self.sources / "sub" / "b.png")
        self.archive, self.stream = root / "archive", root / "a.rgb"
        made = [self.invoke(["compress", str(self.sources), "--out", str(self.archive), "--iterations", "3"]),
                self.invoke(["encode", str(self.sources / "a.png"), "--out", str(self.stream), "--iterations", "3"])]
        # a tiny model's checkpoint and weight file, for the commands that write model files
        self.checkpoint, self.model = root / "run.pt", root / "model.safetensors"
        made += [self.invoke(["train", str(DATA), "--out", str(self.checkpoint), "--steps", "2", *TINY_TRAINING]),
                 self.invoke(["export", str(self.checkpoint), "--out", str(self.model)])]
        for result in made:
            assert result.exit_code == 0, result.output
        # enough crops for the refiner's training (2 an image, more than 112): noise, coded by the tiny model
        self.crops = root / "crops"
        self.crops.mkdir()
        rng = np.random.default_rng(0)
        for i in range(58):
            Image.fromarray(rng.integers(0, 256, (192, 192, 3), dtype=np.uint8)).save(self.crops / f"{i}.png")
        self.scratch = root / "scratch"
        self.paths = path_values(root / "paths")
        self.case = 0

    def invoke(self, args: list[str]):
        # the codec's weights, for the commands that take them (not train, pack and the model-file commands)
        takes = args[0] != "info" and "--weights" in {flag for flag, _ in options(args[0])}
        weights = ["--weights", self.weights] if self.weights and takes and "--weights" not in args else []
        return CliRunner().invoke(app, args + weights)

    def base(self, command: str, out: Path) -> list[str]:
        """The command's own arguments, before the option fuzzed; writes go under `out`."""
        return {"info": ["info"],
                "report": ["report", str(self.archive)],
                "restore": ["restore", str(self.archive), "--out", str(out / "restored")],
                "verify": ["verify", str(self.archive), "--sample", "1"],
                "compact": ["compact", str(out / "archive")],
                "encode": ["encode", str(self.sources / "a.png"), "--out", str(out / "a.rgb"), "--iterations", "1"],
                "decode": ["decode", str(self.stream), "--out", str(out / "a.png")],
                "compress": ["compress", str(self.sources), "--out", str(out / "archive"), "--iterations", "1"],
                "bench": ["bench", str(self.sources), "--out", str(out / "bench"), "--manifest", str(out / "b.parquet"),
                          "--limit", "1", "--iterations", "1", "--classical", "none", "--speed-images", "0",
                          "--no-cache"],
                "train": ["train", str(DATA), "--out", str(out / "run.pt"), "--steps", "2", *TINY_TRAINING,
                          "--checkpoint-every", "1", "--time-limit", "20"],  # huge --steps: valid
                "pack": ["pack", str(DATA), "--out", str(out / "pack.npy"), "--crop", "64"],
                "export": ["export", str(self.checkpoint), "--out", str(out / "w.safetensors")],
                "slim": ["slim", str(self.checkpoint), "--out", str(out / "slim.pt")],
                "widen": ["widen", str(self.checkpoint), "--out", str(out / "wide.pt"), "--width", "0.25"],
                "delta": ["delta", str(self.model), "--base", str(out / "default.safetensors"),
                          "--out", str(out / "model.delta")],
                "fit-entropy": ["fit-entropy", str(self.model), "--data", str(DATA), "--out", str(out / "e.safetensors"),
                                "--crop", "64"],
                "fit-refiner": ["fit-refiner", str(self.model), "--data", str(self.crops), "--out",
                                str(out / "r.safetensors"), "--state", str(out / "refiner.pt"), "--steps", "2",
                                "--threads", "1", "--time-limit", "20"]}[command]  # huge --steps: valid

    def run(self, command: str, given: list[tuple[str, str]]):
        """Run `command` with the (flag, value) pairs `given` (a base argument of the same flag
        dropped); returns (exit code, finding or None)."""
        self.case += 1
        out = self.scratch / f"case{self.case}"
        out.mkdir(parents=True)
        if command == "compact":
            shutil.copytree(self.archive, out / "archive")
        if command == "delta":  # the base a delta file names lies beside it
            shutil.copy(self.model, out / "default.safetensors")
        writes = out / "writes"  # CASE: a folder of its own, with a file already there
        writes.mkdir()
        (writes / "there").write_bytes(b"x")
        given = [(flag, value.replace(CASE, str(writes))) for flag, value in given]
        args = self.base(command, out)
        for flag, _ in given:  # a base `--out X` or `--iterations 1` makes way for the fuzzed one
            if flag in args:
                del args[args.index(flag):args.index(flag) + 2]
        for flag, value in given:
            args += [flag, value]
        before = snapshot(self.archive) if command in READ_ONLY else None
        here, cwd = os.getcwd(), out / "cwd"  # a fresh current folder: what a command writes there is seen
        cwd.mkdir()
        os.chdir(cwd)
        try:
            result = self.invoke(args)
        finally:
            os.chdir(here)
        finding = None
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            finding = "".join(traceback.format_exception(*result.exc_info, limit=-4)).strip()
        elif result.exit_code not in (0, 1, 2):
            finding = f"exit code {result.exit_code}"
        elif "Traceback" in (result.output or ""):
            finding = "a traceback in its output"
        elif before is not None and snapshot(self.archive) != before:
            finding = "the archive changed"
        elif strays(cwd, given):
            finding = f"wrote into the current folder: {strays(cwd, given)}"
        shutil.rmtree(out, ignore_errors=True)
        return result.exit_code, finding


def strays(cwd: Path, given: list[tuple[str, str]]) -> list[str]:
    """What a case left in its current folder that none of its values names (a relative value
    such as `--out abc` may write there): until session 54 `restore --out ""` wrote its PNGs
    into the current folder, which this fuzzer did not see."""
    named = {Path(value).parts[0] for _, value in given if value and not os.path.isabs(value) and Path(value).parts}
    return sorted(p.name for p in cwd.iterdir() if p.name not in named)


def snapshot(folder: Path) -> list:
    return sorted((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*"))


def fuzz(scene: Scene, commands: tuple[str, ...], pairs: int, seed: int, timeout: float, log=print):
    """Every (command, option, odd value) once, then `pairs` random pairs; returns (exit codes
    counted per command, findings)."""
    table = {c: options(c) for c in commands}
    single = [(c, [(flag, v)]) for c in commands for flag, kind in table[c]
              for v in values(c, flag, kind, scene.paths)]
    rng = np.random.default_rng(seed)
    double = []
    for _ in range(pairs):
        c = commands[rng.integers(len(commands))]
        if len(table[c]) < 2:
            continue
        picked = rng.choice(len(table[c]), 2, replace=False)
        double.append((c, [(table[c][i][0], str(rng.choice(values(c, *table[c][i], scene.paths))))
                           for i in picked]))
    counts, findings = collections.Counter(), []
    for n, (command, given) in enumerate(itertools.chain(single, double)):
        faulthandler.dump_traceback_later(timeout, exit=True)  # a hang: where it is, then exit
        print(f"case {n}: {command} {given!r}", file=sys.stderr, flush=True)
        code, finding = scene.run(command, given)
        faulthandler.cancel_dump_traceback_later()
        counts[command, code] += 1
        if finding:
            findings.append((command, given, finding))
            log(f"FINDING {command} {given!r}: {finding}")
    return counts, findings


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=200, help="random pairs of odd values after the single ones")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--commands", default=",".join(COMMANDS))
    parser.add_argument("--weights", default=None)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds a case may take before it is a hang")
    args = parser.parse_args()
    commands = tuple(args.commands.split(","))
    if "compress" in commands:  # one Ray for every case (the CLI uses the one it finds)
        import ray

        # a Ray of its own: a plain ray.init() joins any cluster running on the machine (a test run's), and
        # refuses num_cpus there (session 61)
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    with tempfile.TemporaryDirectory() as tmp:
        counts, findings = fuzz(Scene(Path(tmp), args.weights), commands, args.pairs, args.seed, args.timeout)
    for command in commands:
        codes = {code: n for (c, code), n in sorted(counts.items()) if c == command}
        print(f"{command:10s} " + ", ".join(f"exit {code}: {n}" for code, n in codes.items()))
    print(f"{sum(counts.values())} cases, seed {args.seed}: {len(findings)} findings")
    raise SystemExit(1 if findings else 0)


if __name__ == "__main__":
    main()
