"""Fuzz the archive commands with damaged manifest parts (docs/ARCHIVE.md, "Damaged or foreign
manifests"): bits flipped, ranges overwritten or zeroed, parts cut short or extended, in one part
of a small archive (two parts, rows in row groups of two), then `report`, `restore`, `verify`,
`compact` and `restore` again, as the CLI calls them.

    OMP_NUM_THREADS=1 python benchmarks/fuzz_manifest.py [--cases 200] [--seed 0] [--footer-flips 3000]

Every command must end as the CLI would end it: done (exit 0 or 1: failures listed) or refused
with a worded error (ValueError, OSError, RuntimeError: exit 2). Any other exception is an
escape, and every image a restore writes must be, pixel for pixel, the image the undamaged
archive restores under that name (never a wrong image; a damaged row is a failure). Prints the
count of each outcome.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import tempfile
import traceback
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from rgbatch import archive as ra
from rgbatch.cli import USER_ERRORS
from rgbatch.imageio import read_image
from rgbatch.manifest import Archive, PartWriter
from rgbatch.pipeline import CompressOptions, EncodeWorker
from rgbatch.row import Row

SOURCE = Path(__file__).parent.parent / "tests" / "data" / "kodim05_crop192.png"
MUTATIONS = ("flip", "flips", "overwrite", "zero", "cut", "extend")


def build(folder: Path, weights: str | None, images: int = 8):
    """An archive of `images` crops of SOURCE at depth 3, in two parts of row groups of two rows;
    the second and the last also under a second path in the second part, whose rows share their
    blobs (`Row.shared_blob`: one held in the other part, one in the same)."""
    worker = EncodeWorker(weights, "cpu", CompressOptions(iterations=3, tile_size=32, batch_size=4))
    pixels = read_image(SOURCE)[0]
    crops = [np.ascontiguousarray(pixels[16 * i:16 * i + 40, 8 * i:8 * i + 56]) for i in range(images)]
    infos = [Row(f"folder/image {i}.png", f"/src/image {i}.png", source_hash=str(i), source_bytes=1,
                 width=56, height=40, mode="RGB", read_seconds=0.0) for i in range(images)]
    rows = worker.encode(infos, *crops)
    copies = [replace(rows[i], path=f"folder/copy {i}.png", source=f"/src/copy {i}.png") for i in (1, images - 1)]
    for half in (rows[: images // 2], rows[images // 2:] + copies):
        held = Archive(folder).held_blobs() if folder.exists() else None
        with PartWriter(folder, worker.model_id(), row_group_rows=2, held=held) as writer:
            for row in half:
                writer.add(row)


def mutate(data: bytes, rng: np.random.Generator) -> tuple[str, bytes]:
    kind = str(rng.choice(MUTATIONS))
    out = bytearray(data)
    at = int(rng.integers(0, len(data)))
    if kind in ("flip", "flips"):
        for _ in range(1 if kind == "flip" else int(rng.integers(2, 9))):
            spot = int(rng.integers(0, len(data)))
            out[spot] ^= 1 << int(rng.integers(0, 8))
    elif kind == "overwrite":
        size = min(int(rng.integers(1, 64)), len(data) - at)
        out[at:at + size] = rng.bytes(size)
    elif kind == "zero":
        size = min(int(rng.integers(1, 64)), len(data) - at)
        out[at:at + size] = bytes(size)
    elif kind == "cut":
        del out[at:]
    else:
        out += rng.bytes(int(rng.integers(1, 256)))
    return kind, bytes(out)


def restored(result, reference: dict | None) -> dict:
    """{path: pixels} written by a restore; with `reference`, each checked against it."""
    images = {}
    for written in result.written:
        images[written["path"]] = np.asarray(Image.open(written["file"]).convert("RGB"))
        if reference is not None and (written["path"] not in reference
                                      or not np.array_equal(images[written["path"]], reference[written["path"]])):
            raise WrongImage(written["path"])
    return images


class WrongImage(Exception):
    pass


def _read_images(report: dict) -> dict:
    report["images"].read_all()
    return report


def run_case(folder: Path, out: Path, weights, reference: dict) -> dict[str, str]:
    """Each command's outcome: "ok", "failures" (exit 1), "refused: why" (exit 2), "escape: ..." or
    "WRONG IMAGE: ..."."""
    outcomes = {}
    commands = {
        "report": lambda: _read_images(ra.report(folder)),  # as --json: its images sorted and read
        "restore": lambda: ra.restore(folder, out / "first", weights=weights, device="cpu"),
        "verify": lambda: ra.verify(folder, weights=weights, device="cpu", sample=0),
        "compact": lambda: ra.compact(folder),
        "restore after compact": lambda: ra.restore(folder, out / "second", weights=weights, device="cpu"),
    }
    for name, command in commands.items():
        try:
            result = command()
            if name.startswith("restore"):
                restored(result, reference)
            failed = (result["summary"]["failed"] if name == "report" else result.exit_code)
            outcomes[name] = "failures" if failed else "ok"
        except WrongImage as e:
            outcomes[name] = f"WRONG IMAGE: {e}"
        except USER_ERRORS as e:
            outcomes[name] = f"refused: {' '.join(str(e).split())[:160]}" if str(e).strip() else "escape: an empty message"
        except Exception:
            outcomes[name] = "escape: " + traceback.format_exc(limit=3).replace("\n", " | ")
    return outcomes


def fuzz(cases: int, seed: int, weights, tmp: Path):
    """Run `cases` damaged copies of one archive built under `tmp`: (Counter of (command, outcome),
    [(case, mutation, command, escape or wrong image)], Counter of refusals' reasons)."""
    rng = np.random.default_rng(seed)
    good = tmp / "good"
    build(good, weights)
    reference = restored(ra.restore(good, tmp / "reference", weights=weights, device="cpu"), None)
    assert len(reference) == 10, "the undamaged archive must restore every image (8, and 2 copies)"
    parts = sorted(p.name for p in good.iterdir() if p.name.startswith("part-"))
    counts, escapes, refusals = collections.Counter(), [], collections.Counter()
    for case in range(cases):
        folder, out = tmp / f"case{case}", tmp / f"out{case}"
        shutil.copytree(good, folder)
        part = folder / parts[int(rng.integers(0, len(parts)))]
        kind, data = mutate(part.read_bytes(), rng)
        part.write_bytes(data)
        for command, outcome in run_case(folder, out, weights, reference).items():
            counts[command, outcome.split(":")[0]] += 1
            if outcome.startswith("refused"):
                refusals[outcome.split(": ", 1)[1].replace(str(folder), "ARCHIVE")] += 1
            elif outcome.startswith(("escape", "WRONG")):
                escapes.append((case, kind, command, outcome))
        shutil.rmtree(folder)
        shutil.rmtree(out, ignore_errors=True)
    return counts, escapes, refusals


def footer_flips(flips: int, seed: int, weights, tmp: Path) -> collections.Counter:
    """One bit flipped in one part's footer (Parquet's footer has no checksum), `flips` times, each
    archive read whole (its table and every row): Counter of "read as written", "part left out",
    "refused: why" (worded, exit 2) and "escape: ...". What the footer's damage does, fast."""
    rng = np.random.default_rng(seed)
    good = tmp / "footer-good"
    build(good, weights)
    expected = [(r.path, r.blob) for r in Archive(good).rows()]
    parts = sorted(p.name for p in good.iterdir() if p.name.startswith("part-"))
    outcomes = collections.Counter()
    for case in range(flips):
        folder = tmp / "footer-case"
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(good, folder)
        part = folder / parts[case % len(parts)]
        data = bytearray(part.read_bytes())
        length = int.from_bytes(data[-8:-4], "little")
        data[len(data) - 8 - length + int(rng.integers(0, length))] ^= 1 << int(rng.integers(0, 8))
        part.write_bytes(bytes(data))
        try:
            archive = Archive(folder)
            archive.table()
            rows = [(r.path, r.blob) for r in archive.rows()]
            if archive.unreadable:
                outcomes["part left out"] += 1
            else:
                outcomes["read as written" if rows == expected else "escape: read as another value"] += 1
        except USER_ERRORS as e:
            outcomes[f"refused: {' '.join(str(e).split())[:120]}".replace(str(folder), "ARCHIVE")] += 1
        except Exception as e:
            outcomes[f"escape: {type(e).__name__}: {e}"] += 1
    return outcomes


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--weights", default=None)
    parser.add_argument("--footer-flips", type=int, default=0, help="also flip one bit of a footer this many times")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        counts, escapes, refusals = fuzz(args.cases, args.seed, args.weights, Path(tmp))
        footer = footer_flips(args.footer_flips, args.seed, args.weights, Path(tmp)) if args.footer_flips else {}
    for (command, outcome), n in sorted(counts.items()):
        print(f"{command:22s} {outcome:12s} {n}")
    for why, n in refusals.most_common(10):  # exit 2: a part the commands must not read past
        print(f"refused {n}x: {why}")
    for escape in escapes[:20]:
        print("ESCAPE", *escape)
    print(f"{args.cases} cases, seed {args.seed}: {len(escapes)} escapes or wrong images")
    for outcome, n in sorted(footer.items(), key=lambda item: -item[1]):
        print(f"footer flips: {outcome}: {n}")
    escaped = sum(n for outcome, n in footer.items() if outcome.startswith("escape"))
    raise SystemExit(1 if escapes or escaped else 0)


if __name__ == "__main__":
    main()
