"""The Ray pipeline: reading, encoding on actors, resuming, and surviving a dead node."""

from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from conftest import damage_page, smooth_image
from rgbatch import pipeline, storage
from rgbatch.codec import Codec
from rgbatch.manifest import Archive
from rgbatch.row import Row
from rgbatch.metrics import msssim
from rgbatch.options import OptionError
from rgbatch.pipeline import CompressOptions, EncodeWorker, compress, plan, plan_workers, ray_session
from rgbatch.ratecontrol import Target


def write_images(folder, rng, names, size=(32, 48)):
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(smooth_image(rng, *size)).save(folder / name)


def options(weights, **changes):
    return CompressOptions(**{"iterations": 2, "weights": str(weights), "tile_size": 32, "batch_size": 4,
                              "workers": 1, **changes})


def all_rows(archive) -> int:
    return sum(pq.ParquetFile(p).metadata.num_rows for p in Archive(archive).parts)


def test_encode_worker_rows_and_a_bad_image_fails_alone(tiny_weights, rng):
    options = CompressOptions(iterations=3, tile_size=32, batch_size=4, coder="raw", decoding="exact-loop")
    worker = EncodeWorker(str(tiny_weights), "cpu", options)  # measuring what the (exact) decoder returns
    image = smooth_image(rng, 40, 48)
    infos = [Row(p, f"/src/{p}", source_hash="h", source_bytes=1, width=w, height=h, mode="RGB", read_seconds=0.0)
             for p, w, h in (("a", 48, 40), ("b", 0, 0))]
    good, bad = worker.encode(infos, image, np.zeros((0, 0, 3), np.uint8))
    assert good.status == "ok" and good.iterations == 3 and len(good.bytes) == len(good.msssim) == 3
    assert good.model_id == worker.model_id() and good.coder == "raw" and good.tile_size == 32
    codec = Codec.load(tiny_weights, device="cpu")
    assert msssim(image, codec.decode(good.blob)) == pytest.approx(good.msssim[-1], abs=1e-6)
    assert bad.status == "error" and bad.error.startswith("encoding failed") and bad.blob is None and bad.source_hash == "h"

    # with a quality target each image keeps only the iterations it needs
    target = Target(msssim=good.msssim[0])
    capped = EncodeWorker(str(tiny_weights), "cpu", replace(options, target=target)).encode(infos[:1], image)[0]
    assert capped.iterations == 1 and capped.bytes == good.bytes[:1] and len(capped.blob) == good.bytes[0]

    # without measuring: the same stream, no quality columns
    unmeasured = EncodeWorker(str(tiny_weights), "cpu", replace(options, measure=False)).encode(infos[:1], image)[0]
    assert unmeasured.blob == good.blob and unmeasured.msssim == unmeasured.psnr == []


def test_an_encoder_running_two_calls_at_once_answers_each_as_alone(tiny_weights, rng):
    # CompressOptions.overlap: two calls on two threads of one encoder; a bad image still fails alone
    from concurrent.futures import ThreadPoolExecutor

    worker = EncodeWorker(str(tiny_weights), "cpu", CompressOptions(iterations=3, tile_size=32, batch_size=4))
    calls = []
    for n, (h, w) in enumerate([(40, 48), (0, 0), (70, 33), (32, 32), (50, 90)]):
        info = Row(f"{n}", f"/src/{n}", source_hash="h", source_bytes=1, width=w, height=h, mode="RGB")
        calls.append(([info], smooth_image(rng, h, w) if h else np.zeros((0, 0, 3), np.uint8)))
    calls[2] = ([calls[2][0][0], calls[0][0][0]], calls[2][1], calls[0][1])  # two images in one call

    def comparable(rows):
        return [replace(r, encode_seconds=None) for r in rows]

    sequential = [comparable(worker.encode(*call)) for call in calls]
    with ThreadPoolExecutor(2) as pool:
        overlapped = [comparable(rows) for rows in pool.map(lambda call: worker.encode(*call), calls)]
    assert overlapped == sequential
    assert [r.status for rows in overlapped for r in rows] == ["ok", "error", "ok", "ok", "ok", "ok"]
    assert worker.progress() == []  # between calls


def test_an_encoder_call_holds_batch_size_tiles_and_one_network_batch_of_pixels():
    """A CPU gets 16 thumbnails a call (1.5x the speed of one at a time) but one big image a call
    (rows are written per call, and big batches run slower there); a GPU keeps 8 tiles a call."""
    from types import SimpleNamespace

    from rgbatch.pipeline import _Run

    def calls(device, sizes, batch_size=0):
        sent = []
        encode = SimpleNamespace(remote=lambda infos, *refs: sent.append([i.path for i in infos]) or object())
        ray = SimpleNamespace(remote=lambda f: SimpleNamespace(options=lambda **k: None))
        run = _Run(ray, CompressOptions(device=device, batch_size=batch_size or {"cpu": 16, "cuda": 8}[device]),
                   [], Archive.empty_done(), [SimpleNamespace(encode=encode)], None, None, None, None)
        run.calls_per_worker = len(sizes)
        for n, (h, w) in enumerate(sizes):
            run.read_done(Row(path=str(n), height=h, width=w), None)
        run.start_calls()
        return [len(call) for call in sent]

    assert calls("cpu", [(64, 64)] * 40) == [16, 16, 8]
    assert calls("cpu", [(128, 128)] * 9) == [4, 4, 1]  # 2^16 pixels a call on a CPU
    assert calls("cpu", [(512, 768)] * 3) == [1, 1, 1]  # one image over the budget goes alone
    assert calls("cpu", [(64, 64)] * 5, batch_size=2) == [2, 2, 1]
    assert calls("cuda", [(512, 768)] * 9) == [5, 4]  # 8 tiles or 2 MP a call on a GPU
    assert calls("cuda", [(64, 64)] * 9) == [8, 1]


def test_reading_ahead_holds_a_call_of_small_images_but_few_big_ones():
    from types import SimpleNamespace

    from rgbatch.pipeline import _Run

    ray = SimpleNamespace(remote=lambda f: SimpleNamespace(options=lambda **k: None))

    def ahead(height, width):
        run = _Run(ray, CompressOptions(device="cpu", batch_size=16), [], Archive.empty_done(), [None], None, None,
                   None, None)
        while run.reading_ahead():
            run.read_done(Row(height=height, width=width), None)
        return len(run.ready)

    assert ahead(4000, 3000) == 5  # `prefetch`: two calls queued and one more, as before
    assert ahead(64, 64) == 16  # a whole call of thumbnails


def test_compress_then_reruns_add_only_what_is_new(ray_cluster, tiny_weights, tmp_path, rng):
    source, archive = tmp_path / "photos", tmp_path / "archive"
    write_images(source, rng, ["a.png", "b.png", "sub/c.png"])
    first = compress([str(source)], str(archive), options(tiny_weights, decoding="exact-loop"))
    assert (first.ok, first.failed, first.skipped) == (3, 0, 0) and len(first.parts) == 1
    table = Archive(archive).table()
    assert table["path"].to_pylist() == ["a.png", "b.png", "sub/c.png"]
    assert set(table["status"].to_pylist()) == {"ok"} and set(table["iterations"].to_pylist()) == {2}

    # the recorded stats are the decoder's truth (the exact decoder in the encoder's loop)
    row = next(Archive(archive).rows(paths={"sub/c.png"}))
    decoded = Codec.load(tiny_weights, device="cpu").decode(row.blob)
    assert msssim(np.asarray(Image.open(source / "sub/c.png")), decoded) == pytest.approx(row.msssim[-1], abs=1e-6)

    again = compress([str(source)], str(archive), options(tiny_weights, decoding="exact-loop"))
    assert (again.ok, again.skipped, again.parts) == (0, 3, [])  # nothing redone, nothing written

    write_images(source, rng, ["b.png", "d.png"])  # b changes, d is new
    third = compress([str(source)], str(archive), options(tiny_weights))
    assert (third.ok, third.skipped) == (2, 2)
    current = {r["path"]: r["source_hash"] for r in Archive(archive).table().to_pylist()}
    assert current["b.png"] == hashlib.sha256((source / "b.png").read_bytes()).hexdigest()
    assert len(current) == 4 and all_rows(archive) == 5  # b's old row stays, superseded


def test_a_folder_of_the_same_paths_does_not_replace_another_folders_images(ray_cluster, tiny_weights, tmp_path, rng):
    """`compress A --out ar` then `compress B --out ar` stores both folders' files under paths
    relative to each run's root: B's a.png replaced A's a.png without a word (found by session
    57's exploratory testing), lost for good after a compact. Now a source with other bytes does
    not replace an image archived from another file that is still there: it fails (exit 1), no
    row written; a library moved away and then edited still replaces its images."""
    a, b, archive = tmp_path / "A", tmp_path / "B", tmp_path / "archive"
    write_images(a, rng, ["a.png", "b.png"])
    write_images(b, rng, ["a.png"])
    assert compress([str(a)], str(archive), options(tiny_weights)).ok == 2
    held = {r["path"]: (r["source"], r["source_hash"]) for r in Archive(archive).table().to_pylist()}
    for _ in range(2):  # again: still refused, nothing flips
        other = compress([str(b)], str(archive), options(tiny_weights))
        assert (other.ok, other.failed, other.parts, other.exit_code) == (0, 1, [], 1)
        [(path, why)] = other.failures
        assert path == "a.png" and why.startswith(f"not replaced: the archive holds this path's image from {a / 'a.png'}")
        assert {r["path"]: (r["source"], r["source_hash"]) for r in Archive(archive).table().to_pylist()} == held
        assert compress([str(a)], str(archive), options(tiny_weights)).skipped == 2
    # told so, it replaces it (a library copied to a new disk, the old one kept, then edited there)
    told = tmp_path / "told"
    shutil.copytree(archive, told)
    replaced = compress([str(b)], str(told), options(tiny_weights, replace_others=True))
    assert (replaced.ok, replaced.failed) == (1, 0)
    assert next(Archive(told).rows(paths={"a.png"})).source == str(b / "a.png")
    # the same folder by another spelling (a link to it), its image edited: replaced as before
    (tmp_path / "link").symlink_to(a)
    write_images(a, rng, ["b.png"])
    edited = compress([str(tmp_path / "link")], str(archive), options(tiny_weights))
    assert (edited.ok, edited.failed, edited.skipped) == (1, 0, 1)
    # A moved away (the library moved, then B's a.png is its new version): replaced
    shutil.move(a, tmp_path / "elsewhere")
    moved = compress([str(b)], str(archive), options(tiny_weights))
    assert (moved.ok, moved.failed) == (1, 0)
    assert next(Archive(archive).rows(paths={"a.png"})).source == str(b / "a.png")


def test_the_run_s_ratio_counts_the_alpha_channels_it_stored_as_report_does(ray_cluster, tiny_weights, tmp_path, rng):
    """`compress` left the alpha channels it stored out of its ratio, which `report` counts (104.1x
    against 76.5x for one archive; found by session 57's exploratory testing)."""
    from rgbatch.archive import report

    src = tmp_path / "src"
    write_images(src, rng, ["photo.png"])
    alpha = rng.integers(0, 256, (32, 48), np.uint8)
    Image.fromarray(np.dstack([smooth_image(rng, 32, 48), alpha]), "RGBA").save(src / "logo.png")
    result = compress([str(src)], str(tmp_path / "archive"), options(tiny_weights))
    rows = {r["path"]: r for r in Archive(tmp_path / "archive").table().to_pylist()}
    assert result.alpha_bytes == rows["logo.png"]["alpha_bytes"] > 0
    assert result.archive_bytes == sum(r["bytes"][-1] for r in rows.values())
    summary = report(tmp_path / "archive")["summary"]
    assert result.compression_ratio == pytest.approx(summary["compression_ratio"])
    again = compress([str(src)], str(tmp_path / "archive"), options(tiny_weights))
    assert again.compression_ratio is None  # nothing stored: no ratio (it said 0.0x)


def test_a_rerun_skips_sources_of_the_archived_size_and_time_unread(ray_cluster, tiny_weights, tmp_path, rng):
    """Sources older than RACY_SECONDS have their time recorded; a rerun trusts an unchanged size
    and time (it misses other bytes of the same size written back with the same time, which
    `rehash` finds); sources written just now have none recorded and are hashed."""
    source, archive = tmp_path / "src", tmp_path / "archive"
    write_images(source, rng, ["a.png", "b.png", "c.png"])
    for name in ("a.png", "b.png"):
        os.utime(source / name, (1_700_000_000, 1_700_000_000))
    counts = ("unchanged", "to_hash", "new", "unreadable", "not_listed")
    planned = plan([str(source)], str(archive), options(tiny_weights))  # a dry run: the archive not made
    assert [getattr(planned, c) for c in counts] == [0, 0, 3, 0, 0] and not archive.exists()
    assert planned.new_bytes == planned.source_bytes == sum(f.stat().st_size for f in source.iterdir())
    first = compress([str(source)], str(archive), options(tiny_weights))
    assert first.ok == 3
    planned = plan([str(source)], str(archive), options(tiny_weights))  # c's time was not recorded: hashed
    assert [getattr(planned, c) for c in counts] == [2, 1, 0, 0, 0]
    assert [getattr(plan([str(source)], str(archive), options(tiny_weights, rehash=True)), c)
            for c in counts] == [0, 3, 0, 0, 0]
    times = {r["path"]: r["source_mtime"] for r in Archive(archive).table(["path", "source_mtime"]).to_pylist()}
    assert [times[n] and times[n].timestamp() for n in ("a.png", "b.png", "c.png")] == [1_700_000_000] * 2 + [None]
    data = bytearray((source / "a.png").read_bytes())
    data[-5] ^= 1  # other bytes, the same size and time
    (source / "a.png").write_bytes(bytes(data))
    os.utime(source / "a.png", (1_700_000_000, 1_700_000_000))
    again = compress([str(source)], str(archive), options(tiny_weights))
    assert (again.ok, again.skipped) == (0, 3)
    rehashed = compress([str(source)], str(archive), options(tiny_weights, rehash=True))
    assert (rehashed.ok, rehashed.skipped) == (1, 2)
    hashes = {r["path"]: r["source_hash"] for r in Archive(archive).done().to_pylist()}
    assert hashes["a.png"] == hashlib.sha256(bytes(data)).hexdigest()
    (source / "c.png").unlink()
    write_images(source, rng, ["d.png"])
    planned = plan([str(source)], str(archive), options(tiny_weights))
    assert [getattr(planned, c) for c in counts] == [2, 0, 1, 0, 1]  # a's new row holds its time; c not listed
    assert planned.examples == {"new": ["d.png"], "to_hash": [], "not_listed": ["c.png"]}
    os.mkfifo(source / "pipe.png")  # listed (an image's name) and failed by reading: never new
    assert plan([str(source)], str(archive), options(tiny_weights)).unreadable == 1


def test_an_archive_that_cannot_be_written_is_refused_before_any_work(tiny_weights, tmp_path, rng, monkeypatch):
    """`compress` and its dry run refuse the same way (exit 2 in the CLI) an archive whose folder
    cannot be written or made: a file in the way here, a read-only file system elsewhere."""
    source = tmp_path / "src"
    write_images(source, rng, ["a.png"])
    (tmp_path / "a-file").write_bytes(b"")
    for run in (plan, compress):
        with pytest.raises(OSError, match="the archive cannot be written: .*a-file is a file, not a folder"):
            run([str(source)], str(tmp_path / "a-file" / "archive"), options(tiny_weights))
    monkeypatch.setattr(os, "statvfs", lambda path: SimpleNamespace(f_flag=os.ST_RDONLY))
    for run in (plan, compress):
        with pytest.raises(OSError, match=f"{tmp_path} is on a read-only file system"):
            run([str(source)], str(tmp_path / "archive"), options(tiny_weights))
    assert not (tmp_path / "archive").exists()


def ray_reports(task: str):
    """What Ray's listen_error_messages thread does with an error its cluster reports (a line
    repeated is held back by Ray's deduplication: each call names another task)."""
    from ray._private.worker import print_to_stdstream

    print_to_stdstream({"lines": [f"Task {task} failed. There are infinite retries remaining"], "pid": "raylet",
                        "is_err": False}, ignore_prefix=False)


def test_options_of_another_kind_are_worded_before_any_work(tmp_path):
    from rgbatch.archive import restore
    from rgbatch.options import OptionError

    with pytest.raises(OptionError, match=r"options is a dict: give CompressOptions\(...\)"):
        compress([str(tmp_path)], str(tmp_path / "archive"), {"iterations": 2})
    with pytest.raises(OptionError, match=r"options is a dict"):
        pipeline.plan([str(tmp_path)], str(tmp_path / "archive"), {"iterations": 2})
    with pytest.raises(OptionError, match="select must be a glob or globs, not 5"):
        restore(str(tmp_path / "archive"), str(tmp_path / "out"), select=5)
    assert not (tmp_path / "archive").exists() and not (tmp_path / "out").exists()


def test_what_ray_reports_to_the_driver_goes_to_stderr_in_the_cli_alone(ray_cluster, capsys, monkeypatch, tmp_path):
    """Ray's driver prints its cluster's error reports (session 41: "Task EncodeWorker.progress failed.
    There are infinite retries remaining ...", an actor killed under a progress call) to sys.stdout
    (`print_to_stdstream`), whatever log_to_driver says; `compress --json` printed it before its JSON.
    The CLI sends them to stderr; the library leaves a program's stdout as it is (until session 61
    `ray_session` sent every thread's output to stderr meanwhile)."""
    from typer.testing import CliRunner

    from rgbatch.cli import app

    with ray_session():
        ray_reports("X")
    assert "Task X failed" in capsys.readouterr().out

    def reporting(sources, archive, options, progress=None, log=None):
        ray_reports("Y")
        return pipeline.CompressResult(archive=str(archive))

    monkeypatch.setattr(pipeline, "compress", reporting)
    (tmp_path / "src").mkdir()
    Image.fromarray(smooth_image(np.random.default_rng(0), 32, 32)).save(tmp_path / "src" / "a.png")
    result = CliRunner().invoke(app, ["compress", str(tmp_path / "src"), "--out", str(tmp_path / "archive"), "--json"])
    assert result.exit_code == 0, result.output
    said = json.loads(result.stdout)
    assert "Task Y failed" in result.stderr and said["ok"] == 0 and said["bpp"] is None  # the table's bpp: none stored


TWO_AT_ONCE = """
import os, sys, threading, time, faulthandler
from rgbatch.archive import restore
from rgbatch.pipeline import CompressOptions, compress

src, weights, out = sys.argv[1:]
said, inside = {}, threading.Event()

def job(k):
    if k:
        inside.wait(120)  # the first call's Ray runs: this one waits for it, then starts its own
    options = CompressOptions(iterations=2, weights=weights, tile_size=32, batch_size=4, workers=1, threads=1)
    try:
        said[k] = compress([src], f"{out}/{k}", options, progress=lambda *_: inside.set()).ok
    except BaseException as e:
        said[k] = f"{type(e).__name__}: {e}"

threads = [threading.Thread(target=job, args=(k,)) for k in range(2)]
for t in threads:
    t.start()
for t in threads:
    t.join(timeout=300)

def stopping(*_):
    raise ValueError("the caller's progress stops it")

try:  # an exception kept (its traceback holds the call's frames): the call's Ray ended all the same
    restore(f"{out}/0", f"{out}/restored", weights=weights, workers=1, progress=stopping)
except ValueError as e:
    kept = e
import ray
import logging
print(said[0], said[1], ray.is_initialized(), os.environ.get("PYTHONBREAKPOINT"), faulthandler.is_enabled(),
      logging.getLogger("ray").level == logging.ERROR)
"""


@pytest.mark.slow
def test_two_compress_calls_at_once_in_one_program_each_run_whole(tiny_weights, tmp_path, rng):
    """A program's two threads compressing at once: the second borrowed the Ray the first had
    started, which the first then shut down under it (a lost actor, or Ray's "ray.init twice"),
    until session 61; now the second waits for the first's Ray to end and starts its own. Ray's
    changes to the process (PYTHONBREAKPOINT: a caller's breakpoint() went to Ray's debugger;
    faulthandler; the `ray` logger's level, until session 63) are undone after each, the waiting one's too. A restore on workers stopped by
    an exception the caller keeps ends its Ray (the next call waited for it forever)."""
    write_images(tmp_path / "src", rng, ["a.png", "b.png"])
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_") and k != "PYTHONBREAKPOINT"}  # not this
    done = subprocess.run([sys.executable, "-c", TWO_AT_ONCE, str(tmp_path / "src"), str(tiny_weights), str(tmp_path)],
                          capture_output=True, text=True, timeout=400, env={**env, "OMP_NUM_THREADS": "1"})  # Ray's
    assert done.stdout.split() == ["2", "2", "False", "None", "False", "False"], done.stdout + done.stderr[-3000:]


ACTORS_ENDED = """
import sys, time
from rgbatch.pipeline import end_actors, ray_session

class Killed:
    def nap(self):
        time.sleep(120)

class Ended(Killed):
    pass

with ray_session(num_cpus=2) as ray:
    import psutil  # Ray's own copy, on the path once ray is imported

    actors = [ray.remote(cls).options(num_cpus=1, max_restarts=1, max_task_retries=-1).remote() for cls in (Killed, Ended)]
    naps = [actor.nap.remote() for actor in actors]
    ray.wait(naps, timeout=3.0)
    ray.kill(actors[0])
    time.sleep(2)
    started = [p.pid for p in psutil.Process().children(recursive=True)]
    end_actors(ray, actors[1:])
print("ended", *started)
"""


@pytest.mark.slow
def test_the_actors_of_a_ray_of_its_own_end_with_it_without_rays_retry_reports():
    """A command's actors killed with calls in flight (its `finally` on a Ctrl-C) made Ray print
    "(raylet) Task EncodeWorker.encode failed. There are infinite retries remaining ..." for each
    (session 60): in a Ray of the command's own, `end_actors` leaves them to `ray.shutdown`. The
    actor killed in the program shows that Ray still reports such a kill."""
    import ray  # noqa: F401  (a dependency; it puts its own copy of psutil on the path)
    import psutil

    done = subprocess.run([sys.executable, "-c", ACTORS_ENDED], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    said = done.stdout + done.stderr
    assert done.returncode == 0 and "ended" in done.stdout, said
    assert "Task Killed.nap failed" in said and "Task Ended.nap" not in said, said
    started = []  # the processes the program's Ray ran (its workers among them): gone with it
    for pid in map(int, done.stdout.split("ended", 1)[1].split()):
        with contextlib.suppress(psutil.NoSuchProcess):
            started.append(psutil.Process(pid))
    _, alive = psutil.wait_procs(started, timeout=30)
    assert not alive, alive


def test_in_a_callers_ray_end_actors_kills_them(ray_cluster):
    """The borrowed side of `end_actors`: actors in a Ray the caller started are killed (`ray.kill`
    acts a moment later: a call made at once may still be answered)."""
    from ray.exceptions import RayActorError

    from rgbatch.pipeline import end_actors

    with ray_session() as ray:
        actor = ray.remote(collections.Counter).options(num_cpus=0).remote()  # a class the workers can import
        assert ray.get(actor.total.remote()) == 0
        end_actors(ray, [actor])
        deadline = time.monotonic() + 60
        while True:
            try:
                ray.get(actor.total.remote(), timeout=10)
            except RayActorError:
                break
            assert time.monotonic() < deadline, "the actor still answers a minute after end_actors"
            time.sleep(0.2)


def test_a_cluster_address_where_no_ray_answers_is_refused_at_once(ray_cluster, tmp_path):
    """Ray retries such an address for ever, deaf to SIGTERM: `compress --address HOST:PORT` with a
    wrong port, or the dashboard's, hung (session 44); now one line and exit 2."""
    import socket
    import socketserver

    from rgbatch.pipeline import check_cluster_address

    # servers on every interface: for a loopback address ray.init, and so the probe, connect to
    # this node's address instead
    with socket.socket() as s:  # a port nothing listens at once closed
        s.bind(("", 0))
        closed = s.getsockname()[1]
    for address in (f"127.0.0.1:{closed}", f"ray://127.0.0.1:{closed}", f"[::1]:{closed}"):
        with pytest.raises(ConnectionError, match=f"nothing answers at .* port {closed}"):
            check_cluster_address(address)
    with pytest.raises(ConnectionError, match=r"this node's address, which Ray connects to for 127\.0\.0\.1\) port"):
        check_cluster_address(f"127.0.0.1:{closed}")  # the address given named beside the one tried

    class Http(socketserver.StreamRequestHandler):  # an HTTP/1 server: a dashboard, say
        def handle(self):
            self.rfile.readline()
            self.wfile.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")

    with socketserver.TCPServer(("", 0), Http) as server:
        threading.Thread(target=server.handle_request, daemon=True).start()
        with pytest.raises(ConnectionError, match="answers, but not as a Ray cluster does"):
            check_cluster_address(f"127.0.0.1:{server.server_address[1]}")
    with socket.socket() as s:  # one that accepts and says nothing
        s.bind(("", 0))
        s.listen()
        with pytest.raises(ConnectionError, match="answers nothing within 0.5 s"):
            check_cluster_address(f"127.0.0.1:{s.getsockname()[1]}", timeout=0.5)
        with pytest.MonkeyPatch.context() as patch:  # Ray's TLS on: only that something listens
            patch.setenv("RAY_USE_TLS", "1")
            check_cluster_address(f"127.0.0.1:{s.getsockname()[1]}", timeout=0.5)
    check_cluster_address(ray_cluster.address)  # a Ray cluster's head passes
    check_cluster_address("auto")  # other forms are Ray's to read
    check_cluster_address(f"http://127.0.0.1:{closed}")

    # a cluster that asks for a token (Ray 2.60's `ray start` does by default) says what to set
    from rgbatch.pipeline import _ray_hint

    try:
        try:
            raise RuntimeError("Failed to connect to GCS. ... Unauthenticated: RPC error: InvalidAuthToken")
        except RuntimeError as e:
            raise ConnectionError("Failed to connect to Ray cluster at 10.0.0.1:6379") from e
    except ConnectionError as e:
        assert "RAY_AUTH_MODE=token" in _ray_hint(e)
        assert _ray_hint(ConnectionError("Failed to connect")) == ""

    (tmp_path / "src").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "src" / "a.png")
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "rgbatch.cli", "compress", str(tmp_path / "src"), "--out",
                           str(tmp_path / "archive"), "--address", f"127.0.0.1:{closed}"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"cannot start or reach Ray at 127.0.0.1:{closed}: nothing answers" in " ".join(done.stderr.split())
    assert time.monotonic() - start < 60


def test_a_name_that_is_not_utf8_fails_alone(ray_cluster, tiny_weights, tmp_path, rng):
    """Parquet strings are UTF-8: such a name once made the whole batch's commit fail (exit 2, nothing
    written). Now it is one error row, its name escaped, and the others are archived."""
    source, archive = tmp_path / "photos", tmp_path / "archive"
    write_images(source, rng, ["a.png", os.fsdecode(b"b\xe9.png")])
    result = compress([str(source)], str(archive), options(tiny_weights))
    assert (result.ok, result.failed) == (1, 1)
    assert result.failures == [("b\\xe9.png", result.failures[0][1])] and "UTF-8" in result.failures[0][1]
    table = Archive(archive).table()
    assert dict(zip(table["path"].to_pylist(), table["status"].to_pylist())) == {"a.png": "ok", "b\\xe9.png": "error"}
    again = compress([str(source)], str(archive), options(tiny_weights))
    assert (again.ok, again.skipped, again.failed) == (0, 1, 1)


def test_a_name_that_is_not_utf8_never_takes_the_row_of_the_file_named_as_it_is_shown(
        ray_cluster, tiny_weights, tmp_path, rng):
    """`b\\xe9.png` spelt with a backslash and `b<0xE9>.png` once gave one row, whichever came back
    first: the readable image was neither archived nor counted, on every run."""
    source, archive = tmp_path / "photos", tmp_path / "archive"
    names = ["b\\xe9.png", os.fsdecode(b"b\xe9.png"), os.fsdecode(b"b\xe9\\xe9.png"), os.fsdecode(b"b\xe9\xe9.png")]
    write_images(source, rng, names)  # the last two not UTF-8, and shown alike as each other
    planned = plan([str(source)], str(archive), options(tiny_weights))  # counted new until session 62
    assert (planned.clashing, planned.not_utf8, planned.new, planned.unreadable) == (2, 1, 1, 0)  # the readable one new
    for _ in range(2):
        result = compress([str(source)], str(archive), options(tiny_weights))
        assert result.failed == 3 and result.ok + result.skipped == 1
        assert {path for path, _ in result.failures} == {"b\\xe9.png", "b\\xe9\\xe9.png"}
        assert sum("another file's name reads the same" in why for _, why in result.failures) == 2
        table = Archive(archive).table()
        assert dict(zip(table["path"].to_pylist(), table["status"].to_pylist())) == {
            "b\\xe9.png": "ok", "b\\xe9\\xe9.png": "error"}
    # the readable file gone from the sources, its archived row stays (another file's failure replaced it)
    assert (plan([str(source)], str(archive), options(tiny_weights)).clashing, planned.sources) == (2, 4)
    (source / "b\\xe9.png").unlink()
    assert plan([str(source)], str(archive), options(tiny_weights)).clashing == 2  # one of them the archived path's form
    result = compress([str(source)], str(archive), options(tiny_weights))
    assert result.failed == 3 and Archive(archive).done()["path"].to_pylist() == ["b\\xe9.png"]


def test_a_read_past_the_read_timeout_is_cancelled_and_its_source_fails(ray_cluster, tiny_weights, tmp_path):
    """A read that does not end (a decoder stuck on a hostile file, a store that stopped answering)
    held up the whole run: it is cancelled after --read-timeout, its source fails, and a rerun tries
    it again. Here the stuck decoder is a slow one: 36 MP of lossless JPEG XL of one colour (44 KB)
    take about 3 s to decode on a 2-core AMD EPYC (libjxl uses every core: a fraction of a second
    on many), the worker's start before it, against a limit of 0.2 s."""
    import pillow_jxl  # noqa: F401  (registers the JPEG XL writer)

    source, archive = tmp_path / "photos", tmp_path / "archive"
    source.mkdir()
    Image.new("RGB", (6000, 6000), (9, 99, 199)).save(source / "slow.jxl", lossless=True)
    for attempt in range(2):
        result = compress([str(source)], str(archive), options(tiny_weights, read_timeout=0.2))
        assert (result.ok, result.failed, result.skipped) == (0, 1, 0)  # tried again, not skipped
        assert result.failures == [("slow.jxl", "reading took more than 0.2 s: cancelled (a decoder stuck on a "
                                                 "damaged file, or a store that stopped answering; the limit is "
                                                 "--read-timeout)")]
    assert Archive(archive).table()["status"].to_pylist() == ["error"]
    with pytest.raises(OptionError, match="read_timeout must be at least 0 seconds"):
        options(tiny_weights, read_timeout=-1).check()


def test_a_check_past_the_read_timeout_is_cancelled_and_its_sources_read_instead(
        ray_cluster, tiny_weights, tmp_path, rng, monkeypatch):
    """A rerun checks archived sources in tasks of many (`sources.unchanged`: a stat each, and a
    hash with --rehash); until session 53 nothing bounded those, so a mount or store that stopped
    answering held up the rerun for ever. Now a check past --read-timeout is cancelled and its
    sources read one by one, each under the same limit: here the check never ends, and the reads
    find the sources unchanged by their hashes."""
    source, archive = tmp_path / "photos", tmp_path / "archive"
    write_images(source, rng, ["a.png", "b.png"])
    assert compress([str(source)], str(archive), options(tiny_weights)).ok == 2

    def stuck(sources, *_):  # sent to Ray by value: a check that never ends
        time.sleep(600)
        return [True] * len(sources)

    monkeypatch.setattr(pipeline, "unchanged", stuck)
    start = time.monotonic()
    again = compress([str(source)], str(archive), options(tiny_weights, read_timeout=5))
    assert (again.ok, again.skipped, again.failed) == (0, 2, 0)
    assert time.monotonic() - start < 300  # long before the check would have ended
    assert all_rows(archive) == 2


def test_a_damaged_part_leaves_the_others_usable_and_compress_encodes_its_images_again(
        ray_cluster, tiny_weights, tmp_path, rng):
    """A part file cut short (a copy interrupted, a disk's damage) once made every command exit 2:
    now its images are failures of each reading command, and compress archives them again."""
    from rgbatch import archive as ra

    source, archive = tmp_path / "photos", tmp_path / "archive"
    write_images(source, rng, ["a.png"])
    compress([str(source)], str(archive), options(tiny_weights))
    write_images(source, rng, ["b.png"])
    compress([str(source)], str(archive), options(tiny_weights))
    first = next(p for p in Archive(archive).parts if pq.read_table(p)["path"].to_pylist() == ["a.png"])
    name = first.rsplit("/", 1)[-1]
    damaged = open(first, "rb").read()[:100]
    open(first, "wb").write(damaged)

    summary = ra.report(archive)["summary"]
    assert (summary["ok"], summary["unreadable_parts"]) == (1, 1)
    assert [f["path"] for f in summary["failures"]] == [name] and "damaged manifest part" in summary["failures"][0]["error"]
    restored = ra.restore(archive, tmp_path / "out", weights=tiny_weights, device="cpu")
    assert [w["path"] for w in restored.written] == ["b.png"] and restored.exit_code == 1
    assert [p for p, _ in restored.failures] == [name]
    checked = ra.verify(archive, weights=tiny_weights, device="cpu", sample=0)
    assert checked.decoded == 1 and [p for p, _ in checked.problems] == [name] and checked.exit_code == 1

    again = compress([str(source)], str(archive), options(tiny_weights))
    assert (again.ok, again.skipped) == (1, 1)  # a.png again; b.png was archived
    compacted = ra.compact(archive)
    assert [p for p, _ in compacted.problems] == [name] and compacted.exit_code == 1
    assert open(archive / "damaged" / name, "rb").read() == damaged  # set aside, never deleted or rewritten
    assert set(Archive(archive).table()["path"].to_pylist()) == {"a.png", "b.png"}
    assert ra.compact(archive).exit_code == 0 and Archive(archive).unreadable == []


def test_a_part_damaged_inside_gives_what_reads_and_the_documented_steps_recover_the_rest(
        ray_cluster, tiny_weights, tmp_path, rng):
    """docs/ARCHIVE.md, "Damaged or foreign manifests": restore and verify give what reads and name
    the rest (exit 1); compact copies what reads and sets the part aside; compress then encodes the
    rest again (it reads no blobs: until session 34 the part had to be moved out by hand)."""
    from rgbatch import archive as ra

    source, archive = tmp_path / "photos", tmp_path / "archive"
    names = [f"{i}.png" for i in range(4)]
    write_images(source, rng, names)
    compress([str(source)], str(archive), options(tiny_weights))
    (part,) = Archive(archive).parts
    pq.write_table(pq.read_table(part), part, row_group_size=2)  # two row groups
    # the rows are in the order the encoder returned them, not always the paths' (reads finish in any order)
    order = pq.read_table(part, columns=["path"])["path"].to_pylist()
    kept, lost = order[:2], order[2:]
    damage_page(part, 1, "blob")
    damaged = open(part, "rb").read()

    assert ra.report(archive)["summary"]["ok"] == 4  # report reads no blobs
    restored = ra.restore(archive, tmp_path / "out", weights=tiny_weights, device="cpu")
    assert [w["path"] for w in restored.written] == kept and restored.exit_code == 1
    assert [p for p, _ in restored.failures] == lost and "row group 2 of 2 (2 rows) does not read" in restored.failures[0][1]
    checked = ra.verify(archive, weights=tiny_weights, device="cpu", sample=0)
    assert checked.decoded == 2 and [p for p, _ in checked.problems] == lost and checked.exit_code == 1

    compacted = ra.compact(archive)
    assert [p for p, _ in compacted.problems] == [os.path.basename(part)] + lost and compacted.rows == 2
    aside = archive / "damaged" / os.path.basename(part)
    assert compacted.set_aside == [str(aside)] and open(aside, "rb").read() == damaged  # kept as it is
    again = compress([str(source)], str(archive), options(tiny_weights))
    assert (again.ok, again.skipped) == (2, 2)
    assert ra.verify(archive, weights=tiny_weights, device="cpu", sample=0).exit_code == 0


def test_restore_on_ray_workers_writes_what_restore_in_process_writes(ray_cluster, tiny_weights, tmp_path, rng):
    """`restore --workers`: the same files, pixels and failures as in one process; an interrupted
    run's files are skipped by the rerun, as in one process."""
    from rgbatch import archive as ra

    source, archive = tmp_path / "photos", tmp_path / "archive"
    names = [f"{i:02d}.png" for i in range(11)]
    write_images(source, rng, names)
    for copy in ("copy/00.png", "copy/07.png"):  # copies: decoded once, or read back from the first's file
        (source / "copy").mkdir(exist_ok=True)
        shutil.copyfile(source / copy.split("/")[1], source / copy)
    names = sorted(names + ["copy/00.png", "copy/07.png"])
    compress([str(source)], str(archive), options(tiny_weights))
    here = ra.restore(archive, tmp_path / "here", weights=tiny_weights, device="cpu", iterations=1)
    on_ray = ra.restore(archive, tmp_path / "ray", weights=tiny_weights, device="cpu", iterations=1, workers=2)
    for result in (here, on_ray):
        assert sorted(w["path"] for w in result.written) == names and result.failures == [] and result.exit_code == 0
    for name in names:
        assert (tmp_path / "here" / name).read_bytes() == (tmp_path / "ray" / name).read_bytes()
    (tmp_path / "ray" / "03.png").unlink()  # as if interrupted before it was written
    again = ra.restore(archive, tmp_path / "ray", weights=tiny_weights, device="cpu", iterations=1, workers=1)
    assert [w["path"] for w in again.written] == ["03.png"] and len(again.skipped) == 12
    # a file an actor wrote where this command does not see it (on a cluster, its node's own disk) fails its image
    fs, root = storage.resolve(str(tmp_path / "ray"))
    (tmp_path / "ray" / "04.png").unlink()
    written = [{"path": name, "file": name, "depth": 1} for name in ("03.png", "04.png")]
    seen, failed = ra._seen_here(fs, root, {name: name for name in names}, written, [("05.png", "why")])
    assert seen == written[:1] and failed == [("05.png", "why"), ("04.png", f"04.png: {ra.NOT_SEEN}")]
    # an actor that fails (here: its codec does not load) takes no more groups; their images fail, worded
    work = [[(row, 1, None, f"{row.path}") for row in Archive(archive).rows()]] * 2
    codec_options = dict(weights=str(tmp_path / "gone.safetensors"), device="cpu", batch_size=4, precision="fp32",
                         decoding="exact")
    results = list(ra._on_ray(lambda size: iter(work), 26, 1, None, codec_options, "restore", str(tmp_path / "broken"),
                              False, 10**6))
    assert [(len(group), done) for group, done, _ in results] == [(13, None), (13, None)]
    assert all(why.startswith("restore worker failed") for _, _, why in results)
    assert not (tmp_path / "broken").exists()


def test_verify_on_ray_workers_finds_what_verify_in_process_finds(ray_cluster, tiny_weights, tmp_path, rng,
                                                                 monkeypatch):
    """`verify --workers`: the same counts, re-measurements and problems as in one process, from a
    relative --sources too (an actor's working folder is not the caller's)."""
    from rgbatch import archive as ra

    source, archive = tmp_path / "photos", tmp_path / "archive"
    names = [f"{i:02d}.png" for i in range(11)]
    write_images(source, rng, names)
    compress([str(source)], str(archive), options(tiny_weights))
    (source / "04.png").write_bytes((source / "05.png").read_bytes())  # changed since: not re-measured
    monkeypatch.chdir(tmp_path)
    kwargs = dict(weights=tiny_weights, device="cpu", sample=11, sources="photos")
    here = ra.verify(archive, **kwargs)
    on_ray = ra.verify(archive, workers=2, **kwargs)
    assert (on_ray.checked, on_ray.decoded, on_ray.exit_code) == (here.checked, here.decoded, here.exit_code) == (11, 11, 0)
    assert sorted(on_ray.remeasured, key=lambda r: r["path"]) == sorted(here.remeasured, key=lambda r: r["path"])
    assert len(here.remeasured) == 10 and on_ray.unmeasured == here.unmeasured == [("04.png", on_ray.unmeasured[0][1])]
    assert "changed since it was archived" in on_ray.unmeasured[0][1]
    # an actor that fails (here: its codec does not load) takes no more groups; `verify` lists
    # their images as not checked (`unreachable`, exit 1)
    work = [[(row, False) for row in Archive(archive).rows()]]
    codec_options = dict(weights=str(tmp_path / "gone.safetensors"), device="cpu", batch_size=4, precision="fp32",
                         decoding="exact")
    ((group, done, why),) = ra._on_ray(lambda size: iter(work), 11, 1, None, codec_options, "verify", None, 10**6, 600.0)
    assert len(group) == 11 and done is None and why.startswith("verify worker failed")


def test_overlapped_encoders_write_the_rows_of_sequential_ones(ray_cluster, tiny_weights, tmp_path, rng):
    source = tmp_path / "photos"
    write_images(source, rng, [f"{n}.png" for n in range(5)], size=(40, 70))
    (source / "broken.png").write_bytes(b"not an image")
    tables = []
    for overlap in (False, True):
        reports = []
        result = compress([str(source)], str(tmp_path / f"archive-{overlap}"),
                          options(tiny_weights, overlap=overlap, batch_size=2), progress=lambda *a: reports.append(a))
        assert (result.ok, result.failed) == (5, 1) and reports[-1][:2] == (6, 6)
        timing = ["read_seconds", "encode_seconds", "written_at", "source_mtime"]  # the time: when older than 2 s
        tables.append(Archive(tmp_path / f"archive-{overlap}").table().drop(timing).sort_by("path"))
    assert tables[0].equals(tables[1])


def test_workers_and_devices_must_fit_the_cluster(ray_cluster):
    import ray

    with pytest.raises(ValueError, match="the Ray cluster has"):
        plan_workers(ray, "cpu", 64)
    if not ray.cluster_resources().get("GPU"):
        with pytest.raises(ValueError, match="no GPU"):
            plan_workers(ray, "cuda")
        assert plan_workers(ray, "auto", 1)[:2] == ("cpu", 1)


class _FakeCluster:
    def __init__(self, **resources):
        self.resources = resources

    def cluster_resources(self):
        return self.resources


@pytest.mark.parametrize("gpus, cpus, workers, expected", [
    (1, 16, 0, (4, 4, 0.25)),     # four encoders share the GPU, each with a quarter of the CPUs
    (1, 2, 0, (2, 1, 0.5)),       # as many as there are CPUs
    (2, 16, 0, (8, 2, 0.25)),
    (1, 16, 3, (3, 5, 0.3333)),   # rounded down: three shares must fit in one GPU
    (4, 16, 2, (2, 8, 1.0)),      # fewer encoders than GPUs: a whole GPU each
])
def test_encoders_share_a_gpu(gpus, cpus, workers, expected):
    plan = plan_workers(_FakeCluster(GPU=gpus, CPU=cpus), "auto", workers)
    assert plan == ("cuda", *expected)
    assert plan[1] * plan[3] <= gpus


@pytest.mark.slow
def test_a_worker_node_killed_mid_run_loses_nothing(ray_cluster, tiny_weights, tmp_path, rng):
    """The encoder lives on a node of its own (a custom resource pins it there); that node is
    killed while calls are in flight and a replacement node joins, as an autoscaler would."""
    names = [f"{i:02d}.png" for i in range(8)]
    write_images(tmp_path / "src", rng, names)
    doomed = ray_cluster.add_node(num_cpus=1, resources={"encoder": 1})
    killed, replacements = threading.Event(), []

    def kill_after_first_image(done, total, pixels, tiles):
        if done >= 1 and not killed.is_set():  # the driver blocks here while calls are in flight
            ray_cluster.remove_node(doomed, allow_graceful=False)
            replacements.append(ray_cluster.add_node(num_cpus=1, resources={"encoder": 1}))
            killed.set()

    try:
        result = compress([str(tmp_path / "src")], str(tmp_path / "archive"),
                          options(tiny_weights, batch_size=1, worker_resources={"encoder": 1}),
                          progress=kill_after_first_image)
    finally:
        for node in replacements:
            ray_cluster.remove_node(node)
    assert killed.is_set()
    assert (result.ok, result.failed) == (8, 0), result.failures
    table = Archive(tmp_path / "archive").table()
    assert table["path"].to_pylist() == names and set(table["status"].to_pylist()) == {"ok"}
    assert all_rows(tmp_path / "archive") == 8  # every image exactly once


def test_an_archive_of_post_filtered_streams_restores_what_was_measured(ray_cluster, tiny_weights, tmp_path, rng):
    """An image from postfilter.MIN_PIXELS up is stored as a format v2 stream (post-filter records,
    docs/FORMAT.md); restoring it at a depth writes exactly what the decoder gives for the stream
    cut there, and the recorded MS-SSIM is that image's (the exact decoder in the encoder's loop)."""
    from rgbatch import bitstream, postfilter
    from rgbatch.archive import restore

    side = int(postfilter.MIN_PIXELS ** 0.5)
    source, archive = tmp_path / "big", tmp_path / "archive"
    write_images(source, rng, ["big.png"], size=(side, side))
    done = compress([str(source)], str(archive), options(tiny_weights, decoding="exact-loop", tile_size=256))
    assert done.ok == 1
    row = next(Archive(archive).rows())
    assert bitstream.read_header(row.blob).version == 2
    original = np.asarray(Image.open(source / "big.png"))
    restored = restore(archive, tmp_path / "out", iterations=1, weights=str(tiny_weights), device="cpu")
    assert restored.failures == []
    image = np.asarray(Image.open(tmp_path / "out" / "big.png"))
    assert np.array_equal(image, Codec.load(tiny_weights, device="cpu").decode(row.cut(1).blob))
    assert msssim(original, image) == pytest.approx(row.msssim[0], abs=1e-6)


def test_sources_of_the_same_bytes_are_encoded_once(ray_cluster, tiny_weights, tmp_path, rng):
    """A source whose bytes another source of the run has is not encoded: the row of the one
    encoded is copied under its path, source and times (docs/ARCHIVE.md, "Sources of the same
    bytes"); each decodes as its own source would."""
    source, archive = tmp_path / "src", tmp_path / "archive"
    write_images(source, rng, ["a.png", "b.png", "c.png"])
    for copy, of in (("sub/a.png", "a.png"), ("x/a.png", "a.png"), ("x/b.png", "b.png")):
        (source / copy).parent.mkdir(exist_ok=True)
        shutil.copyfile(source / of, source / copy)
    result = compress([str(source)], str(archive), options(tiny_weights))
    assert (result.ok, result.copied, result.failed) == (6, 3, 0)
    assert result.pixels == 6 * 32 * 48 and result.copied_pixels == 3 * 32 * 48
    rows = {r.path: r for r in Archive(archive).rows()}
    assert sorted(rows) == ["a.png", "b.png", "c.png", "sub/a.png", "x/a.png", "x/b.png"]
    for copy, of in (("sub/a.png", "a.png"), ("x/a.png", "a.png"), ("x/b.png", "b.png")):
        copied, encoded = rows[copy], rows[of]
        assert (copied.blob, copied.msssim, copied.source_hash) == (encoded.blob, encoded.msssim, encoded.source_hash)
        assert copied.source == str(source / copy) and copied.encode_seconds == 0.0 and encoded.encode_seconds > 0
    # each blob stored once: the copies' rows hold its digest alone (`Row.shared_blob`)
    assert result.shared == 3 and result.archive_bytes == sum(len(rows[p].blob) for p in ("a.png", "b.png", "c.png"))
    stored = Archive(archive).table(["path", "shared_blob", "blob_sha256"])
    shared = dict(zip(stored["path"].to_pylist(), stored["shared_blob"].to_pylist()))
    assert {p for p, s in shared.items() if s} == {"sub/a.png", "x/a.png", "x/b.png"}
    assert len(set(stored["blob_sha256"].to_pylist())) == 3
    # its bpp is of the streams it stored, as report's as stored (until session 61 over every row's pixels)
    from rgbatch.archive import report

    assert result.stored_pixels == 3 * 32 * 48
    assert result.bpp == pytest.approx(report(str(archive))["summary"]["stored"]["bpp"])
    again = compress([str(source)], str(archive), options(tiny_weights))
    assert (again.ok, again.skipped) == (0, 6)


def test_a_source_of_the_bytes_of_an_image_archived_alike_takes_its_row(ray_cluster, tiny_weights, tmp_path, rng):
    """A later run's source of the same bytes as an image archived by the same model and options
    (a folder renamed, an export of an archived photo) takes that row, as if archived in one run
    (docs/ARCHIVE.md, "Sources of the same bytes"); with other options it is encoded."""
    source, archive = tmp_path / "src", tmp_path / "archive"
    write_images(source, rng, ["a.png", "b.png"])
    first = compress([str(source)], str(archive), options(tiny_weights))
    assert (first.ok, first.copied) == (2, 0)
    (source / "renamed").mkdir()
    shutil.copyfile(source / "a.png", source / "renamed/a.png")
    shutil.copyfile(source / "b.png", source / "renamed/b.png")
    shutil.copyfile(source / "b.png", source / "renamed/b2.png")
    write_images(source, rng, ["new.png"])
    second = compress([str(source)], str(archive), options(tiny_weights))
    assert (second.ok, second.copied, second.skipped, second.failed) == (4, 3, 2, 0)
    rows = {r.path: r for r in Archive(archive).rows()}
    for copy, of in (("renamed/a.png", "a.png"), ("renamed/b.png", "b.png"), ("renamed/b2.png", "b.png")):
        assert (rows[copy].blob, rows[copy].msssim, rows[copy].options) == (rows[of].blob, rows[of].msssim,
                                                                           rows[of].options)
        assert rows[copy].source == str(source / copy) and rows[copy].encode_seconds == 0.0
    expected = replace(options(tiny_weights), partial=False).shaping("raw")
    assert {r.options for r in rows.values()} == {expected}
    assert json.loads(expected)["iterations"] == 2 and json.loads(expected)["tile_size"] == 32

    shutil.copyfile(source / "a.png", source / "deeper.png")  # another depth: encoded
    third = compress([str(source)], str(archive), options(tiny_weights, iterations=3))
    assert (third.ok, third.copied) == (1, 0)
    assert next(Archive(archive).rows({"deeper.png"})).iterations == 3


def test_a_copy_takes_the_archived_row_of_its_bytes_even_where_that_path_changed(ray_cluster, tiny_weights, tmp_path,
                                                                                  rng):
    """a.png rewritten and its former bytes moved to b.png in one go: b.png takes a.png's row as
    archived before (read from the parts listed at the start), a.png is encoded again."""
    source, archive = tmp_path / "src", tmp_path / "archive"
    write_images(source, rng, ["a.png"])
    compress([str(source)], str(archive), options(tiny_weights))
    before = next(Archive(archive).rows({"a.png"}))
    shutil.move(source / "a.png", source / "b.png")
    write_images(source, rng, ["a.png"])
    second = compress([str(source)], str(archive), options(tiny_weights))
    assert (second.ok, second.copied, second.failed) == (2, 1, 0)
    rows = {r.path: r for r in Archive(archive).rows()}
    assert rows["b.png"].blob == before.blob and rows["b.png"].source_hash == before.source_hash
    assert rows["a.png"].source_hash != before.source_hash and rows["a.png"].blob != before.blob


def test_archived_digests_are_found_by_their_first_bytes_then_whole(tmp_path):
    """`_alike_keys`: rows not made alike, and hashes that are no sha256, are left out; two hashes
    sharing their first 8 bytes are told apart by the whole."""
    import pyarrow as pa

    from rgbatch.pipeline import _alike_keys, _Run

    hashes = ["ab" * 8 + "01" * 24, "ab" * 8 + "02" * 24, "00" * 32, "ff" * 32, "not a hash", None]
    done = pa.table({"path": [f"{i}.png" for i in range(6)], "source_hash": pa.array(hashes, pa.large_string()),
                     "alike": [True, True, False, True, True, True]})
    run = _Run.__new__(_Run)
    run.done, run.alike, run.unread = done, None, set()
    assert [run.archived_origin(h) for h in ("ab" * 8 + "02" * 24, "ab" * 8 + "01" * 24, "ff" * 32)] == [
        "1.png", "0.png", "3.png"]
    assert run.archived_origin("00" * 32) is None and run.archived_origin("ab" * 8 + "03" * 24) is None
    assert sorted(run.alike[1].tolist()) == [0, 1, 3]
    in_chunks = _alike_keys(done, chunk=2)  # made a few rows at a time: the same
    assert [a.tolist() for a in in_chunks] == [a.tolist() for a in run.alike]


def test_a_source_of_the_same_bytes_as_a_failed_one_fails_with_it(tmp_path):
    """Where the row of the source encoded failed, those of its bytes get its failure (a rerun
    tries error rows again); where it does not read back, they say so."""
    from types import SimpleNamespace

    from rgbatch.manifest import PartWriter
    from rgbatch.pipeline import CompressResult, _Run

    archive = tmp_path / "archive"
    ray = SimpleNamespace(remote=lambda f: SimpleNamespace(options=lambda **k: None))
    with PartWriter(archive, "00112233aabbccdd") as writer:
        writer.add(Row("a.png", "src/a.png", source_hash="aa" * 32).failed("encoder failed: out of memory"))
        result = CompressResult(archive=str(archive))
        run = _Run(ray, CompressOptions(), [], Archive.empty_done(), [None], None, writer, result, None,
                   SimpleNamespace(location=str(archive)))
        for path, digest in (("b.png", "aa"), ("c.png", "aa"), ("d.png", "bb")):
            run.first.setdefault(bytes.fromhex(digest * 32), {"aa": "a.png", "bb": "gone.png"}[digest])
            run.same_bytes.setdefault(bytes.fromhex(digest * 32), []).append(
                (Row(path, f"src/{path}", source_hash=digest * 32), None))
        assert run.copy_same_bytes() is False
    rows = {r.path: r for r in Archive(archive).rows()}
    assert rows["b.png"].error == rows["c.png"].error == ("not encoded: the same bytes as a.png, whose encoding "
                                                          "failed: encoder failed: out of memory")
    assert rows["d.png"].error == "not encoded: the same bytes as gone.png, whose row does not read back"
    assert (result.failed, result.ok) == (3, 0) and run.same_bytes == {}


def test_copies_of_an_archived_image_whose_row_does_not_read_back_are_encoded(ray_cluster, tiny_weights, tmp_path,
                                                                               rng, monkeypatch):
    """An archived row that `done` finds ok but that does not read back when copied (its blob
    damaged: compress reads no blobs) gives no row: its copies are read again and encoded, once
    (the second of them a copy of the first)."""
    from rgbatch import pipeline

    source, archive = tmp_path / "src", tmp_path / "archive"
    write_images(source, rng, ["a.png"])
    compress([str(source)], str(archive), options(tiny_weights))
    for copy in ("b.png", "c.png"):
        shutil.copyfile(source / "a.png", source / copy)
    rows = Archive.rows

    def unread(self, paths=None):  # a.png's row, as listed before this run, does not read back
        return (r for r in rows(self, paths) if not (r.path == "a.png" and len(self.parts) == 1))

    monkeypatch.setattr(pipeline.Archive, "rows", unread)
    result = compress([str(source)], str(archive), options(tiny_weights))
    assert (result.ok, result.copied, result.failed, result.skipped) == (2, 1, 0, 1)
    monkeypatch.undo()
    got = {r.path: r for r in Archive(archive).rows()}
    assert got["b.png"].encode_seconds + got["c.png"].encode_seconds > 0 and got["b.png"].blob == got["c.png"].blob


def test_a_touched_source_is_hashed_once_then_skipped_by_its_new_time(ray_cluster, tiny_weights, tmp_path, rng,
                                                                      monkeypatch):
    """An archived source found unchanged by its hash, its time moved (touched, copied without
    its times), is noted in a times file with its size and time now; the next rerun trusts those
    (`Archive.done`), as it trusts a row's (docs/ARCHIVE.md, "Resuming"); the files fold into one."""
    from rgbatch import pipeline

    source, archive = tmp_path / "src", tmp_path / "archive"
    write_images(source, rng, ["a.png", "b.png"])
    for name in ("a.png", "b.png"):
        os.utime(source / name, (1_700_000_000, 1_700_000_000))
    assert compress([str(source)], str(archive), options(tiny_weights)).ok == 2
    os.utime(source / "a.png", (1_700_000_100, 1_700_000_100))  # touched
    again = compress([str(source)], str(archive), options(tiny_weights))
    assert (again.ok, again.skipped, again.parts) == (0, 2, [])
    times = [p.name for p in archive.iterdir() if p.name.startswith("times-")]
    assert len(times) == 1
    done = {r["path"]: r["source_mtime"].timestamp() for r in Archive(archive).done().to_pylist()}
    assert done == {"a.png": 1_700_000_100, "b.png": 1_700_000_000}
    data = bytearray((source / "a.png").read_bytes())
    data[-5] ^= 1  # other bytes of the same size at the noted time: trusted, as a row's time is
    (source / "a.png").write_bytes(bytes(data))
    os.utime(source / "a.png", (1_700_000_100, 1_700_000_100))
    third = compress([str(source)], str(archive), options(tiny_weights))
    assert (third.ok, third.skipped) == (0, 2) and len(list(archive.glob("times-*"))) == 1
    assert compress([str(source)], str(archive), options(tiny_weights, rehash=True)).ok == 1
    # a run that notes once there are TIMES_FOLD times files folds them into one (here 2)
    monkeypatch.setattr(pipeline, "TIMES_FOLD", 2)
    os.utime(source / "b.png", (1_700_000_200, 1_700_000_200))
    assert compress([str(source)], str(archive), options(tiny_weights)).skipped == 2
    assert len(list(archive.glob("times-*"))) == 1
    done = {r["path"]: r["source_mtime"].timestamp() for r in Archive(archive).done().to_pylist()}
    assert done["b.png"] == 1_700_000_200


def test_signals_are_held_while_ray_starts_then_handed_to_the_callers_handlers(monkeypatch):
    """`_signals_held`: a SIGTERM or SIGINT while Ray starts is held (an exception raised inside
    `ray.init` left its core worker half made: SIGSEGV or SIGABRT on the way out), then handed to
    the caller's handler once Ray is up; a second is handed on at once, and so is the first once
    held HOLD_SECONDS (a start that hangs or retries); Ray's own SIGTERM handler
    (a bare sys.exit) and its C++ stack dumps are left out meanwhile, and everything put back."""
    import signal

    class Stop(Exception):
        pass

    def stop(signum, frame):
        raise Stop(signum)

    def ray_sets(handler):
        raise AssertionError("Ray's SIGTERM handler set")

    ray = SimpleNamespace(_private=SimpleNamespace(utils=SimpleNamespace(set_sigterm_handler=ray_sets),
                                                   ray_constants=SimpleNamespace(RAY_DISABLE_FAILURE_SIGNAL_HANDLER=False)))
    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        for signum in (signal.SIGTERM, signal.SIGINT):
            started = []
            with pytest.raises(Stop) as stopped:
                with pipeline._signals_held(ray):
                    ray._private.utils.set_sigterm_handler(lambda *a: None)  # as ray.init does: left out
                    assert ray._private.ray_constants.RAY_DISABLE_FAILURE_SIGNAL_HANDLER is True
                    os.kill(os.getpid(), signum)
                    time.sleep(0.05)  # the handler runs: held, nothing raised here
                    started.append(True)
            assert started and stopped.value.args == (signum,)
            assert ray._private.utils.set_sigterm_handler is ray_sets
            assert ray._private.ray_constants.RAY_DISABLE_FAILURE_SIGNAL_HANDLER is False
            assert signal.getsignal(signal.SIGTERM) is stop and signal.getsignal(signal.SIGINT) is stop
        with pytest.raises(Stop):  # a second signal is handed on at once
            with pipeline._signals_held(ray):
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.05)
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.05)
                raise AssertionError("the second signal was held too")
        monkeypatch.setattr(pipeline, "HOLD_SECONDS", 0.2)
        with pytest.raises(Stop):  # held long enough: handed on while Ray is still starting
            with pipeline._signals_held(ray):
                os.kill(os.getpid(), signal.SIGINT)
                for _ in range(500):
                    time.sleep(0.01)
                raise AssertionError("held for ever")
        with pipeline._signals_held(ray):  # no signal: nothing happens
            time.sleep(0.3)
        held = []
        with pytest.raises(Stop):  # without Ray: the signals alone (while Ray's module loads)
            with pipeline._signals_held():
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.05)
                held.append(True)
        assert held
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a caller without a handler of its own: Ray's, as before
        with pytest.raises(AssertionError, match="Ray's SIGTERM handler set"):
            with pipeline._signals_held(ray):
                ray._private.utils.set_sigterm_handler(lambda *a: None)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def test_a_hang_ups_two_sighups_are_held_as_one_while_ray_starts(monkeypatch):
    """A hang-up's second SIGHUP (the kernel's after the shell's) was handed on at once as a second
    signal, raising inside `ray.init` (a review, session 64); held long enough, it still goes on."""
    import signal

    class Stop(Exception):
        pass

    def stop(signum, frame):
        raise Stop(signum)

    previous = signal.signal(signal.SIGHUP, stop)
    try:
        finished = []
        with pytest.raises(Stop):
            with pipeline._signals_held():
                os.kill(os.getpid(), signal.SIGHUP)
                time.sleep(0.05)
                os.kill(os.getpid(), signal.SIGHUP)
                time.sleep(0.05)
                finished.append(True)
        assert finished  # the start went on to its end, then the hang-up was handed on
        monkeypatch.setattr(pipeline, "HOLD_SECONDS", 0.2)
        with pytest.raises(Stop):  # held long enough: handed on while Ray is still starting
            with pipeline._signals_held():
                os.kill(os.getpid(), signal.SIGHUP)
                for _ in range(500):
                    time.sleep(0.01)
                raise AssertionError("held for ever")
    finally:
        signal.signal(signal.SIGHUP, previous)


def test_a_head_that_stops_answering_ends_the_run_with_what_stays(monkeypatch):
    """A cluster whose head died (`ray stop`) left a driver waiting on Ray: a minute of its logs,
    then Ray ended the process (exit 1, no line of ours, no summary). `HeadWatch` asks every few
    seconds; a refused connection ends the run at once, a head that does not answer once it lasts."""
    import socket

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    ray = SimpleNamespace(get_runtime_context=lambda: SimpleNamespace(gcs_address=f"127.0.0.1:{port}"))
    monkeypatch.setattr(pipeline, "HEAD_CHECK_SECONDS", 0.0)
    watch = pipeline.HeadWatch(ray, kept="what was finished is committed")
    watch.check()  # it answers
    listener.close()
    with pytest.raises(pipeline.ClusterGone, match=rf"^the Ray cluster stopped answering \(its head at 127.0.0.1:"
                                                   rf"{port}: Connection refused\): what was finished is committed$"):
        watch.check()

    def silent(*args, **kwargs):
        raise TimeoutError("timed out")

    monkeypatch.setattr(socket, "create_connection", silent)
    patient = pipeline.HeadWatch(ray, patience=0.2)
    patient.check()  # silent once: a network's hiccup
    time.sleep(0.3)
    with pytest.raises(pipeline.ClusterGone, match=r"no answer for 0 s \(timed out\)\)$"):
        patient.check()


def test_a_run_whose_cluster_goes_away_keeps_what_it_committed(ray_cluster, tiny_weights, tmp_path, rng, monkeypatch):
    """The head gone half-way (`HeadWatch.check` raising as it would): compress ends with
    ClusterGone, one line and exit 2 from the CLI, the rows written so far committed; the rerun
    encodes only the rest."""
    from typer.testing import CliRunner

    from rgbatch.cli import app

    source, archive = tmp_path / "photos", tmp_path / "archive"
    write_images(source, rng, [f"{i:02d}.png" for i in range(6)])
    written, write = [], pipeline._Run.write

    def counted(self, row, *args, **kwargs):
        written.append(row.path)
        return write(self, row, *args, **kwargs)

    def check(self):
        if len(written) >= 2:  # two rows in: the head goes
            raise pipeline.ClusterGone(f"the Ray cluster stopped answering: {self.kept}")

    monkeypatch.setattr(pipeline._Run, "write", counted)
    monkeypatch.setattr(pipeline.HeadWatch, "check", check)
    result = CliRunner().invoke(app, ["compress", str(source), "--out", str(archive), "--weights", str(tiny_weights),
                                      "--depth", "1", "--tile-size", "32", "--workers", "1", "--batch-size", "1"])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().splitlines()[-1] == ("error: the Ray cluster stopped answering: what was finished is "
                                                      "committed; a rerun goes on")
    kept = len(Archive(archive).table())
    assert 1 <= kept < 6
    monkeypatch.undo()
    again = compress([str(source)], str(archive), options(tiny_weights, iterations=1))
    assert (again.skipped, again.ok) == (kept, 6 - kept)


HOOKS = """
import signal, sys
from rgbatch.pipeline import CompressOptions, compress
def mine(signum, frame): pass
signal.signal(signal.SIGTERM, mine)
before = (signal.getsignal(signal.SIGTERM), sys.excepthook)
result = compress([sys.argv[1]], sys.argv[2], CompressOptions(iterations=1, workers=1, weights=sys.argv[3]))
print(result.ok, (signal.getsignal(signal.SIGTERM), sys.excepthook) == before)
"""


def test_a_program_calling_compress_gets_its_own_hooks_back(tiny_weights, tmp_path, rng):
    """Ray's import and start replace sys.excepthook and SIGTERM's handler; a program calling
    `compress` (its own Ray started and shut down) found them Ray's after it returned. Its Ray's
    session folder (logs, sockets: 200-800 KB) is gone with it (left in /tmp/ray until session 64)."""
    write_images(tmp_path / "src", rng, ["a.png"])
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:  # short: Ray's socket paths are at most 107 bytes
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")} | {"TMPDIR": tmp}
        done = subprocess.run([sys.executable, "-c", HOOKS, str(tmp_path / "src"), str(tmp_path / "archive"),
                               str(tiny_weights)], capture_output=True, text=True, timeout=300, env=env)
        assert done.stdout.split() == ["1", "True"], done.stderr[-2000:]
        assert Path(tmp, "ray").is_dir() and not list(Path(tmp, "ray").glob("session_*"))  # its link too


SHUTDOWN_INTERRUPTED = """
import ray, sys
from rgbatch.pipeline import ray_session
shutdown = ray.shutdown
def interrupted(*args, **kwargs):  # a signal while Ray shuts down (it takes seconds)
    shutdown(*args, **kwargs)
    raise KeyboardInterrupt
ray.shutdown = interrupted
try:
    with ray_session(num_cpus=1):
        pass
except KeyboardInterrupt:
    print("interrupted")
"""


def test_a_signal_while_its_ray_shuts_down_still_takes_its_session_folder_away():
    """A signal during `ray.shutdown` skipped the rest of the teardown: the session folder stayed
    (a helper's round, session 64)."""
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")} | {"TMPDIR": tmp}
        done = subprocess.run([sys.executable, "-c", SHUTDOWN_INTERRUPTED], capture_output=True, text=True,
                              timeout=300, env=env)
        assert done.stdout.split() == ["interrupted"], done.stderr[-2000:]
        assert Path(tmp, "ray").is_dir() and not list(Path(tmp, "ray").glob("session_*"))


def test_a_folder_within_the_archived_one_is_said_to_archive_its_files_again(ray_cluster, tiny_weights, tmp_path, rng):
    """An archive of folder A compressed again from A/2019 stored 2019/x.png again as x.png
    without a word (the archive's paths are relative to the folder compressed). It still does
    (a copy, its stream shared), and the run says so."""
    source, archive = tmp_path / "A", tmp_path / "archive"
    write_images(source, rng, ["top.png", "2019/x.png", "2019/y.png"])
    compress([str(source)], str(archive), options(tiny_weights))
    notes = []
    again = compress([str(source / "2019")], str(archive), options(tiny_weights), log=notes.append)
    assert (again.ok, again.copied) == (2, 2)  # rows copied, not encoded
    assert notes[1].startswith("2 source(s) are files the archive holds under another path (x.png as 2019/x.png, "
                               "y.png as 2019/y.png): its paths are relative to the folder compressed")
    notes = []
    compress([str(source)], str(archive), options(tiny_weights), log=notes.append)  # the same folder: nothing to say
    assert len(notes) == 1


def test_some_of_a_list_is_said_with_how_many_more():
    from rgbatch.pipeline import some_of

    assert some_of(["a", "b"], 2) == "a, b"
    assert some_of(["a", "b"], 1002) == "a, b and 1,000 more"


def test_ray_gets_the_open_files_it_needs_or_a_worded_refusal(monkeypatch):
    """Under `ulimit -n 16` a driver joining a cluster died of SIGABRT (boost's "epoll: Too many
    open files") and a Ray of its own timed out starting (a helper's round, session 62): the soft
    limit is raised as far as the hard one allows, and put back after; below RAY_MIN_FILES, refused."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = pipeline.RAY_FILES if hard == resource.RLIM_INFINITY else min(pipeline.RAY_FILES, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (pipeline.RAY_MIN_FILES, hard))
    try:
        files = pipeline._files_for_ray()
        assert files == ((pipeline.RAY_MIN_FILES, hard), wanted)
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == wanted
        pipeline._restore_hooks({**pipeline._process_hooks(), "files": files})
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == pipeline.RAY_MIN_FILES
        files = pipeline._files_for_ray()
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted - 1, hard))  # the program's own change meanwhile: kept
        pipeline._restore_hooks({**pipeline._process_hooks(), "files": files})
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == wanted - 1
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    unlimited = resource.RLIM_INFINITY
    monkeypatch.setattr(resource, "getrlimit", lambda which: (unlimited, unlimited))
    assert pipeline._ray_hint(Exception("timed out"), own=True) == ""  # no file-size limit: nothing to say
    monkeypatch.setattr(resource, "getrlimit", lambda which: (16, 16))  # under `ulimit -f`, Ray's start timed out
    assert pipeline._ray_hint(Exception("timed out"), own=True) == (
        "; files are limited to 16 bytes here (ulimit -f), which Ray's own files may outgrow: lift it")
    assert pipeline._ray_hint(Exception("cannot connect")) == ""  # a cluster's: not this machine's files
    with pytest.raises(RuntimeError, match=r"^the open-file limit is 16 \(ulimit -n; its hard limit 16\): Ray needs "
                                           r"at least 128: raise it$"):
        pipeline._files_for_ray()
