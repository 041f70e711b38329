"""rgbatch.signalwatch: a Ctrl-C or SIGTERM that the blocked main thread cannot take ends the process."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading
import time

# a script: the watch, a counted handler, and a main thread blocked in pyarrow's C++ code on a port
# that takes connections and never answers (as a hung object store), or sleeping in Python
SCRIPT = textwrap.dedent("""
    import os, signal, sys, time
    import pyarrow.fs as pafs
    from rgbatch import signalwatch

    grace, blocked, patient = float(sys.argv[1]), sys.argv[2] != "-", sys.argv[3] == "patient"
    signalwatch.watch(grace)
    take = signalwatch.counted(lambda signum, frame: print("taken", flush=True), patient=patient)
    signal.signal(signal.SIGINT, take)
    take(signal.SIGINT, None)  # a direct call (a held signal handed on) takes no signal
    print("ready", flush=True)
    if blocked:  # for 3 s with a patient handler, else for good
        fs = pafs.S3FileSystem(endpoint_override=sys.argv[2], scheme="http", region="us-east-1", access_key="a",
                               secret_key="b", request_timeout=3 if patient else -1,
                               retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=1))
        try:
            fs.get_file_info("bucket/key")
        except OSError:
            pass
    else:
        time.sleep(grace + 2)
    print("went on", flush=True)
""")


def start(grace: float, endpoint: str = "-", patient: bool = False) -> subprocess.Popen:
    script = subprocess.Popen([sys.executable, "-c", SCRIPT, str(grace), endpoint, "patient" if patient else "-"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert script.stdout.readline() == "taken\n" and script.stdout.readline() == "ready\n"
    return script


def test_a_signal_its_handler_takes_goes_on_as_the_handler_says():
    script = start(grace=1.0)
    script.send_signal(signal.SIGINT)
    stdout, stderr = script.communicate(timeout=30)
    assert script.returncode == 0 and stdout == "taken\nwent on\n" and not stderr


def test_a_signal_no_handler_can_take_ends_the_process_after_the_grace(silent_port):
    script = start(grace=2.0, endpoint=silent_port)
    time.sleep(1)
    started = time.monotonic()
    script.send_signal(signal.SIGINT)
    stdout, stderr = script.communicate(timeout=30)
    assert script.returncode == 130 and stdout == ""  # the handler never ran: the main thread never came back
    assert stderr.startswith("interrupted: SIGINT not taken within 2 s: the command is blocked"), stderr
    assert 2.0 <= time.monotonic() - started < 10


def test_a_patient_handlers_first_signal_waits_for_the_call_under_way(silent_port):
    """`train`'s first Ctrl-C stops after the step under way: one long C++ call on a CPU (a review
    found the watch cutting it short after 5 s); a second signal still ends it at once."""
    script = start(grace=1.0, endpoint=silent_port, patient=True)
    time.sleep(0.5)
    script.send_signal(signal.SIGINT)  # blocked 3 s more: three times the grace
    stdout, stderr = script.communicate(timeout=30)
    assert script.returncode == 0 and stdout == "taken\nwent on\n" and not stderr
    script = start(grace=1.0, endpoint=silent_port, patient=True)
    time.sleep(0.5)
    script.send_signal(signal.SIGINT)
    time.sleep(0.5)
    script.send_signal(signal.SIGINT)
    stdout, stderr = script.communicate(timeout=30)
    assert script.returncode == 130 and "sent again before the first was taken" in stderr


def test_a_second_signal_while_the_first_waits_ends_it_at_once(silent_port):
    script = start(grace=60.0, endpoint=silent_port)
    time.sleep(1)
    started = time.monotonic()
    script.send_signal(signal.SIGINT)
    time.sleep(0.5)
    script.send_signal(signal.SIGINT)
    stdout, stderr = script.communicate(timeout=30)
    assert script.returncode == 130 and "SIGINT sent again before the first was taken" in stderr, stderr
    assert time.monotonic() - started < 10


def test_the_watch_runs_in_the_main_thread_only():
    from rgbatch import signalwatch

    done = []
    thread = threading.Thread(target=lambda: done.append(signalwatch.watch()))
    thread.start()
    thread.join()
    assert done == [False]  # signals are set in the main thread alone


def test_a_hang_ups_two_sighups_are_one():
    """Closing a terminal sends SIGHUP twice within milliseconds (the shell's, then the kernel's):
    read as "sent again before the first was taken", every hang-up ended the command at once,
    nothing finished committed (a helper's review, session 64). Two Ctrl-C are still two."""
    from rgbatch import signalwatch

    take = signalwatch.counted(lambda signum, frame: None)
    before = {s: signal.signal(s, take) for s in (signal.SIGHUP, signal.SIGINT)}
    try:
        hup, sigint = int(signal.SIGHUP), int(signal.SIGINT)
        assert signalwatch._came(bytes([hup, hup, sigint, sigint])) == [hup, sigint, sigint]
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as the command sets it once one is taken
        assert signalwatch._came(bytes([hup])) == []
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)


HANG_UP = textwrap.dedent("""
    import os, signal, time, typer
    from rgbatch import cli, signalwatch

    signalwatch.watch()
    try:
        with cli.user_errors(kept="what was finished is committed"):
            os.kill(os.getpid(), signal.SIGHUP)  # the shell's
            os.kill(os.getpid(), signal.SIGHUP)  # the kernel's
            time.sleep(10)
    except typer.Exit as e:
        raise SystemExit(e.exit_code)
""")


def test_a_hang_up_ends_a_command_as_sigterm_does():
    done = subprocess.run([sys.executable, "-c", HANG_UP], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stderr.strip()) == (129, "terminated (SIGHUP): what was finished is committed")
