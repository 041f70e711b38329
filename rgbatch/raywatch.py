"""Takes the local Ray of a `compress` run down with the run, however the run ends.

`ray.shutdown()` stops the Ray a run started when the run ends, on Ctrl-C or on SIGTERM. Killed
with SIGKILL, the run cannot: its Ray workers still exit within seconds, but the node's agents
(dashboard and runtime-env agents) were measured living on for minutes (Ray 2.60). So a run
that starts a Ray of its own also starts this watchdog, a small process (no torch, no Ray)
that holds the read end of a pipe whose write end only the run holds: when the run ends,
however, the pipe closes, and after a grace period the watchdog kills whatever is left of
the Ray processes it was given (each checked by its start time, so a reused pid is spared) and
of what they started since (the raylet's agents, started after `ray.init` returned).

    watchdog = raywatch.start(ray_processes)   # psutil.Process objects
    ...
    watchdog.close()                           # normal end: the same check, after ray.shutdown()
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time

GRACE_SECONDS = 5.0  # Ray's own shutdown gets this long before the watchdog steps in


def start(processes) -> object:
    """Start the watchdog over `processes` (psutil.Process); returns the pipe's write end."""
    import psutil  # Ray's own copy is on the path once ray is imported

    watched = []
    for process in processes:
        with contextlib.suppress(psutil.Error):  # one that has ended already needs no watching
            watched.append(f"{process.pid}:{process.create_time()!r}")
    read, write = os.pipe()  # not inherited by any other child: only the watchdog gets `read`
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [os.path.dirname(os.path.dirname(psutil.__file__)), os.environ.get("PYTHONPATH", "")])}
    watchdog = subprocess.Popen([sys.executable, "-m", "rgbatch.raywatch", *watched],
                                stdin=read, env=env, start_new_session=True,  # Ctrl-C in the terminal is the run's
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(read)
    # reaped when it ends (a program calling `compress` again and again kept one zombie until session 59)
    threading.Thread(target=watchdog.wait, name="raywatch reaper", daemon=True).start()
    return os.fdopen(write, "wb")


def main(args: list[str]):
    import psutil

    sys.stdin.buffer.read()  # returns when the run has ended, however it ended
    time.sleep(GRACE_SECONDS)
    left = []
    for arg in args:
        pid, created = arg.split(":")
        with contextlib.suppress(psutil.Error):  # gone already
            process = psutil.Process(int(pid))
            if process.create_time() == float(created):
                left.append(process)
    for process in list(left):  # and what they started since (the raylet's agents start seconds after
        with contextlib.suppress(psutil.Error):  # it, later under load: left alive for a minute until session 64)
            left += process.children(recursive=True)
    for process in left:
        with contextlib.suppress(psutil.Error):
            process.kill()


if __name__ == "__main__":
    main(sys.argv[1:])
