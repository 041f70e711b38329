"""The `rgbatch` command (and `python -m rgbatch`): `rgbatch.cli`, started so that a Ctrl-C
before a command's own handling is in place ends it quietly.

Python turns SIGINT into a KeyboardInterrupt raised wherever the program is, and a command
spends its first second or two importing: there the exception printed a traceback, and inside
Ray's extension module it was printed and swallowed, the command going on with all its work
(found by benchmarks/fuzz_kill.py, session 55). Until `cli.user_errors` takes over, SIGINT
therefore has the system's default action, as SIGTERM has: the process ends at once (a shell
reports 130), writing nothing (every write is atomic)."""

import codecs
import os
import signal
import sys


def in_utf8_mode():
    """Python's UTF-8 mode, where the locale's encoding is another (LC_ALL=C with
    PYTHONCOERCECLOCALE=0 and PYTHONUTF8=0, a Latin-1 locale): the command runs itself again in
    it, PYTHONUTF8=1 passing it on to the run's Ray workers, so that a file name's bytes are read
    as the UTF-8 an archive keeps names in (until session 63 such a locale refused valid UTF-8
    names as "not valid UTF-8", or kept a Latin-1 reading of them)."""
    if (sys.flags.utf8_mode or codecs.lookup(sys.getfilesystemencoding()).name == "utf-8" or not sys.executable
            or os.environ.get(AGAIN)):  # run again already: never twice
        return
    os.environ["PYTHONUTF8"], os.environ[AGAIN] = "1", "1"
    try:  # the interpreter's own options kept (-W, -X dev, -I: sys.orig_argv), -X utf8 added
        os.execv(sys.executable, [sys.executable, "-X", "utf8", *sys.orig_argv[1:]])
    except OSError:  # not where it was started from: as it is
        pass


AGAIN = "RGBATCH_UTF8_RERUN"


def start_quietly():
    """SIGINT's default action until a command's own handling takes over (`cli.user_errors`);
    left ignored where it is (a shell's background job)."""
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, signal.SIG_DFL)


def main():
    in_utf8_mode()
    start_quietly()
    from .cli import main as cli

    cli()


if __name__ == "__main__":
    main()
