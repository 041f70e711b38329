"""rgbatch.raywatch: the watchdog of a run's own Ray."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from rgbatch import raywatch


def test_the_watchdog_kills_what_it_watches_once_the_run_ends_and_is_reaped():
    import ray  # noqa: F401  (a dependency; it puts its own copy of psutil on the path)
    import psutil

    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    before = {p.pid for p in psutil.Process().children()}
    watchdog = raywatch.start([psutil.Process(sleeper.pid)])
    (started,) = {p.pid for p in psutil.Process().children()} - before
    time.sleep(1)
    assert sleeper.poll() is None  # the run goes on: the watchdog waits
    watchdog.close()  # the run ended
    assert sleeper.wait(raywatch.GRACE_SECONDS + 10) == -9
    deadline = time.monotonic() + 10
    while psutil.pid_exists(started) and time.monotonic() < deadline:
        time.sleep(0.1)
    # gone, not left a zombie until the next subprocess (until session 59)
    assert not psutil.pid_exists(started)
