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


def test_the_watchdog_kills_what_the_watched_processes_started_after_it_began():
    """The raylet starts its agents seconds after `ray.init` returns, later under load: they were not
    among the processes given, and outlived a killed run by a minute (a helper's round, session 64)."""
    import ray  # noqa: F401
    import psutil

    parent = subprocess.Popen([sys.executable, "-c", "import subprocess, sys, time; time.sleep(0.5); "
                               "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
                               "print(child.pid, flush=True); time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    watchdog = raywatch.start([psutil.Process(parent.pid)])  # before the child is there
    child = psutil.Process(int(parent.stdout.readline()))
    watchdog.close()
    assert parent.wait(raywatch.GRACE_SECONDS + 10) == -9
    gone, alive = psutil.wait_procs([child], timeout=10)
    assert gone and not alive
