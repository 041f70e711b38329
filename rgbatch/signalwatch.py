"""The command line's last resort: a Ctrl-C or SIGTERM that the program cannot take ends it anyway.

Python runs a signal's handler in the main thread, between two of its bytecodes. While that thread
is blocked inside a C++ call, the signal waits: pyarrow waiting on an object store that accepts
the connection and never answers held every command for minutes (for good until session 59, when
`storage.STORE_STALL_SECONDS` came), Ctrl-C and SIGTERM doing nothing, however often sent.

    signalwatch.watch()          # cli.main: the signals' bytes go to a thread of this module

    @signalwatch.counted         # every handler of rgbatch's: it says when it ran
    def handler(signum, frame): ...

`watch` has a thread read the number of every signal as it comes (`signal.set_wakeup_fd`). A
SIGINT or SIGTERM whose handler is one of rgbatch's (`counted`) and that no handler took within
GRACE_SECONDS, or a second one while the first waits, ends the process at once: one line on
stderr, and the exit code the signal has elsewhere (130, 143; SIGHUP's 129, since session 64). A `patient` handler's first signal
is waited for without a limit: `train` stops after the step under way, and one step on a CPU is
one long C++ call (a backward pass of 2-50 s) that no handler can interrupt; a second signal
still ends it at once, as it does anyway. What was committed stays (every
write is atomic: a file half written is one no reader sees; a rerun goes on), and a local Ray goes
with the process, as after a kill (`raywatch`). A signal handled otherwise (Python's default, Ray's
own, ignored) is left alone: the library used from Python never has this thread.
"""

from __future__ import annotations

import functools
import os
import select
import signal
import threading
import time

GRACE_SECONDS = 5.0  # a handler runs within milliseconds of a signal unless the main thread is blocked
WATCHED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGHUP: 129}

_taken = [0]  # how many signals the handlers of `counted` took (written by the main thread only)
_inside = [False]  # a counted handler is running: one calling another takes one signal, not two


def counted(handler=None, *, patient: bool = False):
    """A signal handler that tells the watch it ran (before doing what it does); `patient`: its
    first signal is not ended after GRACE_SECONDS (the module's text). A direct call (frame None:
    a held signal handed on) or one from within another counted handler takes no signal."""
    if handler is None:
        return functools.partial(counted, patient=patient)

    @functools.wraps(handler)
    def take(signum, frame):
        if frame is None or _inside[0]:
            return handler(signum, frame)
        _taken[0] += 1
        _inside[0] = True
        try:
            return handler(signum, frame)
        finally:
            _inside[0] = False

    take.counted, take.patient = True, patient
    return take


def watch(grace: float = GRACE_SECONDS) -> bool:
    """Start the watch (once; in the main thread only, where signals are set). True if it runs."""
    if threading.current_thread() is not threading.main_thread() or getattr(watch, "running", False):
        return getattr(watch, "running", False)
    read, write = os.pipe()
    os.set_blocking(write, False)
    try:
        signal.set_wakeup_fd(write, warn_on_full_buffer=False)
    except (ValueError, OSError):  # not possible here: the command goes on without the watch
        os.close(read)
        os.close(write)
        return False
    threading.Thread(target=_watch, args=(read, grace), name="rgbatch signal watch", daemon=True).start()
    watch.running = True
    return True


def _watched(signum: int) -> bool:
    return signum in WATCHED and getattr(signal.getsignal(signum), "counted", False)


def _came(data: bytes) -> list[int]:
    """The watched signals among those `data` numbers, a hang-up once: it comes twice at once (the
    shell's SIGHUP and the kernel's), which read as "sent again" ended every hang-up at once, its
    finished work uncommitted (a helper's review, session 64)."""
    came = [s for s in data if _watched(s)]
    return [s for i, s in enumerate(came) if s != signal.SIGHUP or signal.SIGHUP not in came[:i]]


def _watch(read: int, grace: float):
    seen = _taken[0]
    while True:
        came = _came(os.read(read, 64))
        if not came:  # another signal, or one whose handler is no longer rgbatch's: what it took is past
            seen = _taken[0]
            continue
        if len(came) > 1 and _taken[0] == seen:
            _end(came[-1], "sent again before the first was taken")
        patient = getattr(signal.getsignal(came[0]), "patient", False)
        deadline = float("inf") if patient else time.monotonic() + grace
        while _taken[0] == seen:  # not taken yet: wait, and end at once on another signal meanwhile
            left = deadline - time.monotonic()
            if left <= 0:
                _end(came[0], f"not taken within {grace:g} s")
            if select.select([read], [], [], min(left, 0.05))[0]:
                again = [s for s in _came(os.read(read, 64)) if s != signal.SIGHUP]
                if again and _taken[0] == seen:
                    _end(again[0], "sent again before the first was taken")
        seen = _taken[0]


def _end(signum: int, why: str):
    name = signal.Signals(signum).name
    said = "interrupted" if signum == signal.SIGINT else f"terminated ({name})"
    line = (f"{said}: {name} {why}: the command is blocked in a call that does not return (an object "
            f"store that stopped answering?); ended at once: what was committed stays, a rerun goes on\n")
    try:
        if os.isatty(2):
            line = "\x1b[?25h\n" + line  # the cursor a progress bar hid, shown again, on a line of its own
        os.write(2, line.encode())
    except OSError:
        pass
    os._exit(EXIT_CODES[signum])


__all__ = ["GRACE_SECONDS", "counted", "watch"]
