"""The `rgbatch` command (and `python -m rgbatch`): `rgbatch.cli`, started so that a Ctrl-C
before a command's own handling is in place ends it quietly.

Python turns SIGINT into a KeyboardInterrupt raised wherever the program is, and a command
spends its first second or two importing: there the exception printed a traceback, and inside
Ray's extension module it was printed and swallowed, the command going on with all its work
(found by benchmarks/fuzz_kill.py, session 55). Until `cli.user_errors` takes over, SIGINT
therefore has the system's default action, as SIGTERM has: the process ends at once (a shell
reports 130), writing nothing (every write is atomic)."""

import signal


def start_quietly():
    """SIGINT's default action until a command's own handling takes over (`cli.user_errors`);
    left ignored where it is (a shell's background job)."""
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, signal.SIG_DFL)


def main():
    start_quietly()
    from .cli import main as cli

    cli()


if __name__ == "__main__":
    main()
