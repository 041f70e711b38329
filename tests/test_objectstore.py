"""Archives and sources in a real S3-compatible server (moto's, started on 127.0.0.1 by the test),
reached through pyarrow.fs both by AWS_ENDPOINT_URL and by the URI's own query
(`s3://bucket/src?endpoint_override=127.0.0.1:PORT&scheme=http`); the errors of a missing bucket,
a wrong endpoint and refused credentials are one line each, exit 2.

The commands run as subprocesses, as a user runs them: `compress` starts its own Ray, whose
workers read the sources with the environment given here.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from typer.testing import CliRunner

from conftest import smooth_image
from rgbatch.cli import app
from rgbatch.objectstore import split_query, with_query, worded
from rgbatch.row import Row
from test_cli_archive import archive_images

BUCKET = "photos"
PATHS = ["a.png", "sub/b.png"]
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def test_a_uri_query_is_kept_apart_from_the_path():
    uri = "s3://b/src?endpoint_override=127.0.0.1:9000&scheme=http"
    assert split_query(uri) == ("s3://b/src", "?endpoint_override=127.0.0.1:9000&scheme=http")
    assert split_query("photos/what?.png") == ("photos/what?.png", "")  # local paths keep their '?'
    assert with_query("s3://b/src/a.png", split_query(uri)[1]) == "s3://b/src/a.png?endpoint_override=127.0.0.1:9000&scheme=http"


def test_a_source_recorded_with_another_endpoint_is_not_followed(monkeypatch):
    """An archive's rows named any host in a source's query, which `verify` and `report --html` sent
    signed requests to (a helper's round, session 63): only the archive's endpoint, AWS_ENDPOINT_URL's
    or --sources' are reached."""
    from rgbatch.archive import SourceUnreachable, _source_image
    from rgbatch.objectstore import named_endpoints

    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://minio.local:9000/")
    assert named_endpoints("s3://b/archive?endpoint_override=http://127.0.0.1:9/&scheme=http", "local/archive") == {
        "127.0.0.1:9", "minio.local:9000"}  # as host:port, however written
    monkeypatch.setenv("AWS_ENDPOINT_URL", "https://store.example")  # the scheme's port (until session 64 not)
    assert named_endpoints("s3://b/a?endpoint_override=Store.example:443", "s3://b/c?endpoint_override=h&scheme=http",
                           "s3://b/d?endpoint_override=[::1]") == {"store.example:443", "h:80", "[::1]:443"}
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://minio.local:9000/")
    row = Row(path="a.png", source="s3://b/a.png?endpoint_override=attacker.example:80&scheme=http",
              source_hash="0" * 64, source_bytes=10)
    with pytest.raises(SourceUnreachable, match="its endpoint attacker.example:80 is neither the archive's"):
        _source_image(row, None, endpoints=named_endpoints("archive"))
    twice = Row(path="a.png", source="s3://b/a.png?endpoint_override=attacker.example:80&endpoint_override=good:9&"
                                     "scheme=http", source_hash="0" * 64, source_bytes=10)  # pyarrow takes the first
    with pytest.raises(SourceUnreachable, match="its endpoint attacker.example:80 is neither"):
        _source_image(twice, None, endpoints=frozenset({"good:9"}))
    monkeypatch.setattr("rgbatch.storage.resolve", lambda location: (_ for _ in ()).throw(OSError("reached")))
    with pytest.raises(SourceUnreachable, match="reached"):  # the archive's own endpoint: followed
        _source_image(row, None, endpoints=frozenset({"attacker.example:80"}))


def test_store_errors_are_worded_without_request_ids():
    bucket = OSError("When listing objects under key 'x/' in bucket 'nobucket': AWS Error NO_SUCH_BUCKET during "
                     "ListObjectsV2 operation: The specified bucket does not exist (Request ID: abc)")
    assert worded(bucket).startswith("no bucket 'nobucket' at this endpoint") and "abc" not in worded(bucket)
    denied = OSError("When getting information for key 'src' in bucket 'b': AWS Error ACCESS_DENIED during HeadObject")
    assert "AWS_ACCESS_KEY_ID" in worded(denied)
    assert worded(ValueError("plain")) == "plain"
    # a system error names its file first, without Python's [Errno N] and quotes
    assert worded(OSError(30, "Read-only file system", "/mnt/ro/archive")) == "/mnt/ro/archive: Read-only file system"
    assert worded(OSError("no errno")) == "no errno"
    stalled = OSError("When getting information for key 'x' in bucket 'b': AWS Error NETWORK_CONNECTION during "
                      "HeadObject operation: curlCode: 28, Timeout was reached; Details: Operation too slow. Less "
                      "than 1 bytes/sec transferred the last 60 seconds")
    assert worded(stalled).startswith("cannot reach bucket 'b': it stopped answering (not a byte for 60 s")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(env: dict | None = None) -> tuple[subprocess.Popen, int]:
    port = free_port()
    server = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, **(env or {})})
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return server, port
        except OSError:
            time.sleep(0.1)
    server.kill()
    pytest.fail("moto_server did not start")


@pytest.fixture(scope="module")
def s3():
    """A moto S3 server with a bucket of two images under src/; yields its port."""
    pytest.importorskip("moto.server", reason="moto[server] is a test extra: pip install -e .[test]")
    import pyarrow.fs as pafs

    server, port = start_server()
    try:
        fs = pafs.S3FileSystem(endpoint_override=f"127.0.0.1:{port}", scheme="http", access_key="testing",
                               secret_key="testing", region="us-east-1", allow_bucket_creation=True)
        fs.create_dir(BUCKET)
        rng = np.random.default_rng(3)
        for i, path in enumerate(PATHS):
            with fs.open_output_stream(f"{BUCKET}/src/{path}") as f:
                Image.fromarray(smooth_image(rng, 32 + 8 * i, 48)).save(f, format="PNG")
        yield port
    finally:
        server.terminate()
        server.wait(10)


@pytest.fixture
def clean_env(monkeypatch):
    """No AWS settings but those a test gives (none from the machine's files or metadata service)."""
    for name in [k for k in os.environ if k.startswith("AWS_")] + ["RAY_ADDRESS"]:
        monkeypatch.delenv(name, raising=False)
    for name, value in {"AWS_SHARED_CREDENTIALS_FILE": "/nonexistent", "AWS_CONFIG_FILE": "/nonexistent",
                        "AWS_EC2_METADATA_DISABLED": "true"}.items():
        monkeypatch.setenv(name, value)


def rgbatch(*args, env: dict, cwd: Path, code: int | None = 0, own_process: bool = False):
    """Run a command with `env` added: in a process of its own (as `compress` needs, for its Ray
    workers to get the environment), or in this one (the others, faster)."""
    if own_process:
        done = subprocess.run([sys.executable, "-m", "rgbatch.cli", *map(str, args)], cwd=cwd, capture_output=True,
                              text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1",
                                                           "RAY_USAGE_STATS_ENABLED": "0", **env})
        stdout, stderr, returncode = done.stdout, done.stderr, done.returncode
    else:
        cwd_before = os.getcwd()
        os.chdir(cwd)
        try:
            done = CliRunner().invoke(app, list(map(str, args)), env=env, catch_exceptions=False)
        finally:
            os.chdir(cwd_before)
        stdout, stderr, returncode = done.stdout, done.stderr, done.exit_code
    if code is not None:
        assert returncode == code, stdout + stderr
    return stdout, stderr


def round_trip(src: str, archive: str, restored: str, env: dict, weights, tmp_path):
    """compress, report, restore (to the store and to a local folder), verify and compact."""
    options = ["--weights", weights]
    stdout, _ = rgbatch("compress", src, "--out", archive, "--iterations", "2", "--workers", "1", "--tile-size", "32",
                        "--coder", "raw", "--json", *options, env=env, cwd=tmp_path, own_process=True)
    assert (json.loads(stdout)["ok"], json.loads(stdout)["failed"]) == (2, 0)
    report = json.loads(rgbatch("report", archive, "--json", env=env, cwd=tmp_path)[0])
    assert sorted(r["path"] for r in report["images"]) == PATHS
    written = json.loads(rgbatch("restore", archive, "--out", restored, "--iterations", "1", "--json", *options,
                                 env=env, cwd=tmp_path)[0])["written"]
    # each file named as it is reached: with the URI's query (the endpoint), until session 59 left off
    assert sorted(w["file"] for w in written) == [f"{split_query(restored)[0]}/{p}{split_query(restored)[1]}"
                                                  for p in PATHS]
    rgbatch("restore", archive, "--out", "local", *options, env=env, cwd=tmp_path)
    assert Image.open(tmp_path / "local" / "sub" / "b.png").size == (48, 40)
    verified = rgbatch("verify", archive, *options, env=env, cwd=tmp_path)[0]
    assert "2 MS-SSIM value(s) re-measured" in verified and "archive verified" in verified
    rgbatch("compact", archive, "--depth", "1", env=env, cwd=tmp_path)
    report = json.loads(rgbatch("report", archive, "--json", env=env, cwd=tmp_path)[0])
    assert [r["iterations"] for r in report["images"]] == [1, 1]
    return report


@pytest.mark.slow
def test_the_archive_commands_by_aws_endpoint_url(s3, clean_env, tiny_weights, tmp_path):
    env = {**CREDENTIALS, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{s3}"}
    archive = f"s3://{BUCKET}/env-archive"
    report = round_trip(f"s3://{BUCKET}/src", archive, f"s3://{BUCKET}/env-restored", env, tiny_weights, tmp_path)
    assert report["summary"]["archive"] == archive
    # on Ray actors (their own Ray, as `compress` above): the archive, its sources and the output in the store
    stdout, _ = rgbatch("verify", archive, "--workers", "1", "--weights", tiny_weights, env=env, cwd=tmp_path,
                        own_process=True)
    assert "2 MS-SSIM value(s) re-measured" in stdout and "archive verified" in stdout
    stdout, _ = rgbatch("restore", archive, "--out", f"s3://{BUCKET}/ray-restored", "--workers", "1", "--json",
                        "--weights", tiny_weights, env=env, cwd=tmp_path, own_process=True)
    assert len(json.loads(stdout)["written"]) == 2
    _, stderr = rgbatch("report", f"s3://{BUCKET}/env-restored", env=env, cwd=tmp_path, code=2)
    assert "holds no manifest parts" in stderr  # the restored PNGs are there, not an archive
    page = f"s3://{BUCKET}/pages/report.html"  # an output file in the store: replaced only with --overwrite
    for code, more in ((0, []), (2, []), (0, ["--overwrite"])):
        stdout, stderr = rgbatch("report", archive, "--html", page, "--show", "1", "--weights", tiny_weights, *more,
                                 env=env, cwd=tmp_path, code=code)
        assert f"wrote {page}" in stdout if code == 0 else "already there: not overwritten" in stderr


def test_a_listing_gives_the_sizes_and_times_a_rerun_checks_without_a_request_per_object(s3, clean_env,
                                                                                          monkeypatch):
    from rgbatch import sources as rs

    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    query = f"?endpoint_override=127.0.0.1:{s3}&scheme=http"
    for src in (f"s3://{BUCKET}/src{query}", f"s3://{BUCKET}/src/**/*.png{query}"):  # a folder, a glob
        _, found = rs.expand_sources([src])
        assert [s.path for s in found] == PATHS and all(s.listed[0] > 0 and s.listed[1] for s in found)
    # a glob matches in a store as on a disk (until session 57 `*` crossed folders there, and
    # `**/*.png` missed the top-level files): `*` within a name, `**` any number of folders
    for pattern, paths in (("*.png", ["a.png"]), ("*/*.png", ["sub/b.png"]), ("**.png", ["a.png"])):
        _, globbed = rs.expand_sources([f"s3://{BUCKET}/src/{pattern}{query}"])
        assert [s.path for s in globbed] == paths, pattern
    monkeypatch.setattr(rs, "RACY_SECONDS", -60)  # the objects were put a moment ago
    rows = [rs.read_source(source, None, 10**8)[0] for source in found]
    assert [(row.source_bytes, row.source_mtime) for row in rows] == [source.listed for source in found]

    def no_request(*args):
        raise AssertionError("a request for one object")

    monkeypatch.setattr(rs, "read_bytes", no_request)
    monkeypatch.setattr(rs, "file_stat", no_request)
    assert rs.unchanged(found, Row.to_arrow(rows).select(rs.KNOWN)) == [True] * 2


def test_a_moved_source_is_seen_gone_in_a_store(s3, clean_env, monkeypatch):
    """`compact --drop-moved` asks a store whether a row's source is there (`_source_gone`): a
    missing object is gone, a present one not, a store that cannot answer never says gone."""
    from rgbatch.archive import _source_gone

    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    query = f"?endpoint_override=127.0.0.1:{s3}&scheme=http"
    assert not _source_gone(f"s3://{BUCKET}/src/{PATHS[0]}{query}")
    assert _source_gone(f"s3://{BUCKET}/src/moved-away.png{query}")
    with socket.socket() as sock:  # a port nothing listens at once closed: no answer
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    assert not _source_gone(f"s3://{BUCKET}/src/moved-away.png?endpoint_override=127.0.0.1:{closed}&scheme=http"
                            "&connect_timeout=1&request_timeout=1")


@pytest.mark.slow
def test_the_archive_commands_by_the_uri_query_through_a_glob(s3, clean_env, tiny_weights, tmp_path):
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    query = f"?endpoint_override=127.0.0.1:{s3}&scheme=http"
    # a glob with the query: the '?' of the query is not a glob character
    round_trip(f"s3://{BUCKET}/src/**/*.png{query}", f"s3://{BUCKET}/query-archive{query}",
               f"s3://{BUCKET}/query-restored{query}", CREDENTIALS, tiny_weights, tmp_path)
    # the query is stored with each source, so later reads go to the same endpoint
    fs = pafs.S3FileSystem(endpoint_override=f"127.0.0.1:{s3}", scheme="http", access_key="testing",
                           secret_key="testing", region="us-east-1")
    [part] = [i.path for i in fs.get_file_info(pafs.FileSelector(f"{BUCKET}/query-archive")) if "part-" in i.path]
    sources = pq.read_table(fs.open_input_file(part), columns=["source"])["source"].to_pylist()
    assert sorted(sources) == [f"s3://{BUCKET}/src/{p}{query}" for p in PATHS]
    assert fs.get_file_info(f"{BUCKET}/query-restored/sub/b.png").type == pafs.FileType.File


@pytest.mark.slow
def test_verify_never_calls_an_archive_verified_whose_sources_it_could_not_reach(s3, clean_env, tiny_weights,
                                                                                 tmp_path, monkeypatch):
    for name, value in {**CREDENTIALS, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{s3}"}.items():
        monkeypatch.setenv(name, value)
    archive_images(f"s3://{BUCKET}/src", tmp_path / "archive", tiny_weights, iterations=1)
    wrong = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}"}  # nothing listens there
    stdout, _ = rgbatch("verify", "archive", "--weights", tiny_weights, env=wrong, cwd=tmp_path, code=1)
    assert "archive verified" not in stdout
    assert "could not check" in stdout and "could not reach source" in stdout


@pytest.mark.slow
def test_a_missing_bucket_a_wrong_endpoint_and_refused_credentials_are_one_line_each(s3, clean_env, tmp_path):
    env = {**CREDENTIALS, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{s3}"}
    for args, env_, says in [
        (["compress", "s3://no-such-bucket/src"], env, "no bucket 'no-such-bucket' at this endpoint"),
        (["report", "s3://no-such-bucket/archive"], env, "no bucket 'no-such-bucket' at this endpoint"),
        # an archive or restore folder in a missing bucket: refused before any work (until session 57
        # compress encoded every image, then failed writing its first part)
        (["compress", f"s3://{BUCKET}/src", "--out", "s3://no-such-bucket/archive", "--dry-run"], env,
         "no bucket 'no-such-bucket' at this endpoint"),
        (["compress", f"s3://{BUCKET}/src", "--out", "s3://no-such-bucket/archive"], env,
         "no bucket 'no-such-bucket' at this endpoint"),
        (["compress", f"s3://{BUCKET}/src?endpoint_override=127.0.0.1:{free_port()}&scheme=http"], CREDENTIALS,
         "cannot reach bucket 'photos'"),
    ]:
        _, stderr = rgbatch(*args, env=env_, cwd=tmp_path, code=2)
        assert says in stderr and len(stderr.strip().splitlines()) == 1, stderr
    server, port = start_server({"INITIAL_NO_AUTH_ACTION_COUNT": "0"})  # this one checks credentials
    try:
        endpoint = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
        for credentials in (CREDENTIALS, {}):  # unknown to the server; none at all
            _, stderr = rgbatch("report", f"s3://{BUCKET}/archive", env={**credentials, **endpoint}, cwd=tmp_path,
                                code=2)
            assert "AWS_ACCESS_KEY_ID" in stderr and len(stderr.strip().splitlines()) == 1, stderr
    finally:
        server.terminate()
        server.wait(10)


@pytest.mark.slow
def test_compact_sets_a_damaged_part_aside_in_a_store(s3, clean_env, tiny_weights, tmp_path, monkeypatch):
    import pyarrow.fs as pafs

    for name, value in {**CREDENTIALS, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{s3}"}.items():
        monkeypatch.setenv(name, value)
    archive = f"s3://{BUCKET}/aside-archive"
    for _ in range(2):  # two parts holding the same two images
        archive_images(f"s3://{BUCKET}/src", archive, tiny_weights, iterations=1)
    fs = pafs.S3FileSystem(endpoint_override=f"127.0.0.1:{s3}", scheme="http", access_key="testing",
                           secret_key="testing", region="us-east-1")
    part = sorted(i.path for i in fs.get_file_info(pafs.FileSelector(f"{BUCKET}/aside-archive")))[-1]
    with fs.open_input_file(part) as f:
        cut = f.read()[:-20]  # its footer gone
    with fs.open_output_stream(part) as f:
        f.write(cut)
    stdout, _ = rgbatch("compact", archive, "--json", env={}, cwd=tmp_path, code=1)
    name = part.rsplit("/", 1)[1]
    assert json.loads(stdout)["set_aside"] == [f"{archive}/damaged/{name}"]
    with fs.open_input_file(f"{BUCKET}/aside-archive/damaged/{name}") as f:
        assert f.read() == cut  # whole, as it was
    summary = json.loads(rgbatch("report", archive, "--json", env={}, cwd=tmp_path)[0])["summary"]
    assert (summary["images"], summary["failed"], summary["set_aside_parts"]) == (2, 0, 1)
    rgbatch("compact", archive, env={}, cwd=tmp_path)  # exit 0: the archive reads whole
    [part] = [i.path for i in fs.get_file_info(pafs.FileSelector(f"{BUCKET}/aside-archive")) if "part-" in i.path]
    with fs.open_output_stream(part) as f:
        f.write(b"not Parquet")
    rgbatch("compact", archive, env={}, cwd=tmp_path, code=1)
    summary = json.loads(rgbatch("report", archive, "--json", env={}, cwd=tmp_path)[0])["summary"]
    assert (summary["images"], summary["set_aside_parts"]) == (0, 2)  # every part aside: an empty archive


@pytest.mark.slow
def test_copies_and_touched_sources_in_a_store(s3, clean_env, tiny_weights, tmp_path, monkeypatch):
    """Sources of the same bytes are encoded once (their rows read back from the store's archive),
    in a run and across runs, and restored into the store; an object put again with the same
    bytes is noted in a times file there (docs/ARCHIVE.md)."""
    import pyarrow.fs as pafs

    env = {**CREDENTIALS, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{s3}"}
    fs = pafs.S3FileSystem(endpoint_override=f"127.0.0.1:{s3}", scheme="http", access_key="testing",
                           secret_key="testing", region="us-east-1")
    data = fs.open_input_file(f"{BUCKET}/src/a.png").read()
    for path in ("a.png", "copy/a.png"):
        with fs.open_output_stream(f"{BUCKET}/dup-src/{path}") as f:
            f.write(data)
    options = ["--iterations", "2", "--workers", "1", "--tile-size", "32", "--weights", tiny_weights, "--json"]
    archive = f"s3://{BUCKET}/dup-archive"
    first = json.loads(rgbatch("compress", f"s3://{BUCKET}/dup-src", "--out", archive, *options, env=env,
                               cwd=tmp_path, own_process=True)[0])
    assert (first["ok"], first["copied"], first["shared"]) == (2, 1, 1)  # its blob stored once
    time.sleep(2.5)  # the put below must be RACY_SECONDS old at the rerun to be noted
    with fs.open_output_stream(f"{BUCKET}/dup-src/a.png") as f:  # the same bytes, put again
        f.write(data)
    time.sleep(2.5)
    again = json.loads(rgbatch("compress", f"s3://{BUCKET}/dup-src", "--out", archive, *options, env=env,
                               cwd=tmp_path, own_process=True)[0])
    assert (again["ok"], again["skipped"]) == (0, 2)
    listed = [i.base_name for i in fs.get_file_info(pafs.FileSelector(f"{BUCKET}/dup-archive"))]
    assert sum(name.startswith("times-") for name in listed) == 1
    with fs.open_output_stream(f"{BUCKET}/dup-src/renamed/a.png") as f:  # a later run's copy: its row copied
        f.write(data)
    third = json.loads(rgbatch("compress", f"s3://{BUCKET}/dup-src", "--out", archive, *options, env=env,
                               cwd=tmp_path, own_process=True)[0])
    assert (third["ok"], third["copied"], third["skipped"], third["shared"]) == (1, 1, 2, 1)  # read back from the store
    # restored into the store in groups of one: the first copy decoded, the others read back from its file
    from rgbatch import archive as archive_module
    decoded, decode = [], archive_module._decode_by_model
    monkeypatch.setattr(archive_module, "DECODE_GROUP", 1)
    monkeypatch.setattr(archive_module, "_decode_by_model", lambda codec, work, *a: decoded.append(work) or decode(
        codec, work, *a))
    stdout, _ = rgbatch("restore", archive, "--out", f"s3://{BUCKET}/dup-restored", "--weights", tiny_weights,
                        "--json", env=env, cwd=tmp_path)
    assert sorted(w["path"] for w in json.loads(stdout)["written"]) == ["a.png", "copy/a.png", "renamed/a.png"]
    pixels = {path: np.asarray(Image.open(fs.open_input_file(f"{BUCKET}/dup-restored/{path}")))
              for path in ("a.png", "copy/a.png", "renamed/a.png")}
    assert all(np.array_equal(image, pixels["a.png"]) for image in pixels.values()) and len(decoded) == 1


def test_object_keys_with_a_uri_s_characters_are_read_as_themselves(s3, clean_env, tiny_weights, tmp_path,
                                                                      monkeypatch):
    """Each listed key was read back through a URI string: `pct%41.png` as `pctA.png` and `h#x.png`
    as `h`, both archived with the other object's pixels and verified without a word, and a space or
    a non-ASCII letter did not parse (a helper's round, session 58). Now each key is its own object."""
    import hashlib
    import io

    import pyarrow.fs as pafs

    from rgbatch.manifest import Archive

    fs = pafs.S3FileSystem(endpoint_override=f"127.0.0.1:{s3}", scheme="http", access_key="testing",
                           secret_key="testing", region="us-east-1")
    rng = np.random.default_rng(8)
    objects = {}
    for key in ["pct%41.png", "pctA.png", "h#x.png", "h", "a b.png", "日本.png", "q?x.png", "plus+1.png"]:
        png = io.BytesIO()
        Image.fromarray(smooth_image(rng, 32, 32)).save(png, format="PNG")
        objects[key] = png.getvalue()
        with fs.open_output_stream(f"{BUCKET}/odd/{key}") as f:
            f.write(objects[key])
    del objects["h"]  # what h#x.png was read as; no image name: not listed
    env = {**CREDENTIALS, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{s3}"}
    archive = f"s3://{BUCKET}/odd-archive"
    stdout, _ = rgbatch("compress", f"s3://{BUCKET}/odd", "--out", archive, "--weights", tiny_weights, "--depth", "2",
                        "--workers", "1", "--json", env=env, cwd=tmp_path, own_process=True)
    result = json.loads(stdout)
    assert (result["sources"], result["ok"], result["copied"], result["failures"]) == (7, 7, 0, [])
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert {row.path: row.source_hash for row in Archive(archive).rows()} == {
        key: hashlib.sha256(data).hexdigest() for key, data in objects.items()}  # each key read as itself
    rgbatch("restore", archive, "--out", tmp_path / "restored", "--weights", tiny_weights, env=env, cwd=tmp_path)
    assert sorted(p.name for p in (tmp_path / "restored").iterdir()) == sorted(objects)
    stdout, _ = rgbatch("verify", archive, "--sources", f"s3://{BUCKET}/odd", "--sample", "7", "--weights",
                        tiny_weights, "--json", env=env, cwd=tmp_path)
    verified = json.loads(stdout)
    assert len(verified["remeasured"]) == 7 and verified["unmeasured"] == verified["problems"] == []


def test_a_typed_uri_names_the_key_as_typed(s3, clean_env, monkeypatch):
    """pyarrow reads a URI by RFC 3986: `s3://b/arch#2` was the archive `s3://b/arch` (a compress wrote
    there and said `arch#2`), and a space or an `é` did not parse (a helper's round, session 62). A
    `%XX` escape stays one (the manifest's locations are written so); a `%` that starts none is a `%`."""
    import boto3  # pyarrow writes no key with an empty segment (`dbl//a.png`)

    from rgbatch import storage
    from rgbatch.sources import expand_sources

    for name, value in {**CREDENTIALS, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{s3}"}.items():
        monkeypatch.setenv(name, value)
    client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{s3}")
    for key in ["arch#2/x", "arch/x", "my photos/été.png", "100%.png", "pctA.png", "dbl/a.png", "dbl//a.png"]:
        client.put_object(Bucket=BUCKET, Key=f"typed/{key}", Body=key.encode())
    for typed, key in [("arch#2/x", "arch#2/x"), ("my photos/été.png", "my photos/été.png"),
                       ("100%.png", "100%.png"), ("pct%41.png", "pctA.png")]:
        assert storage.read_bytes(*storage.resolve(f"s3://{BUCKET}/typed/{typed}")) == key.encode(), typed
    # keys apart by a double slash are two paths (`src//a.png` was archived as `a.png`, `src/a.png` lost)
    _, found = expand_sources([f"s3://{BUCKET}/typed/dbl"])
    assert sorted(s.path for s in found) == ["/a.png", "a.png"]
    with pytest.raises(ValueError, match=r"^all sources must be on one file system, not on local and s3$"):
        expand_sources([f"s3://{BUCKET}/typed/dbl", str(Path(__file__).parent / "data")])


@pytest.fixture
def silent_endpoint(silent_port):
    """A URI query of an endpoint that never answers (conftest's `silent_port`)."""
    return f"endpoint_override={silent_port}&scheme=http&region=us-east-1"


def test_a_store_that_never_answers_is_given_up_on(silent_endpoint, clean_env, tmp_path, monkeypatch):
    # pyarrow sets no limit: until session 59 every command waited for good (deaf to signals too)
    from rgbatch import storage

    fs, _ = storage.resolve(f"s3://{BUCKET}/archive?{silent_endpoint}")
    assert fs.__reduce__()[1][0]["request_timeout"] == storage.STORE_STALL_SECONDS
    monkeypatch.setattr(storage, "STORE_STALL_SECONDS", 1.0)
    started = time.monotonic()
    _, stderr = rgbatch("report", f"s3://{BUCKET}/archive?{silent_endpoint}", env=CREDENTIALS, cwd=tmp_path, code=2)
    assert "it stopped answering (not a byte for 1 s" in stderr and len(stderr.strip().splitlines()) == 1, stderr
    assert time.monotonic() - started < 30


@pytest.mark.parametrize("signum, code, said", [(signal.SIGINT, 130, "interrupted"),
                                                (signal.SIGTERM, 143, "terminated (SIGTERM)")])
def test_a_signal_ends_a_command_blocked_on_a_store_that_never_answers(silent_endpoint, clean_env, tmp_path,
                                                                       signum, code, said):
    # Python runs a handler between bytecodes: blocked in pyarrow's C++ call, the command did not
    # see Ctrl-C or SIGTERM at all (rgbatch.signalwatch)
    from rgbatch.signalwatch import GRACE_SECONDS

    # SIGINT as a terminal gives it (a test run in the background inherits it ignored, and the command
    # leaves an ignored SIGINT ignored, as a shell's background job expects)
    command = subprocess.Popen([sys.executable, "-m", "rgbatch.cli", "report", f"s3://{BUCKET}/a?{silent_endpoint}"],
                               cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, **CREDENTIALS},
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    time.sleep(4)  # imported, and waiting on the store
    started = time.monotonic()
    command.send_signal(signum)
    stdout, stderr = command.communicate(timeout=60)
    assert command.returncode == code, stderr
    assert time.monotonic() - started < GRACE_SECONDS + 5
    assert stderr.startswith(f"{said}: {signal.Signals(signum).name} not taken within"), stderr
    assert "what was committed stays" in stderr and not stdout
