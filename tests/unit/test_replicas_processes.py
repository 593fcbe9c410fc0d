"""Streamed: a real child process's output, exit code and stderr, exactly; a caller that
stops early leaves no process behind."""

from __future__ import annotations

import os
import shutil
import signal
import sys

import pytest

from reconciler.providers.process import CHUNK, KilledBySignal, Streamed

SH = shutil.which("sh")


def test_output_comes_back_byte_for_byte_with_exit_code_and_stderr():
    payload = bytes(range(256)) * 1024  # every byte value, several chunks
    run = Streamed(SH, ["-c", 'cat; printf "d\\303\\251j\\303\\240 vu\\n" >&2; exit 7'], stdin=payload)
    assert b"".join(run.chunks()) == payload
    assert run.exit_code == 7
    assert run.stderr == ["déjà vu"]


def test_arguments_reach_the_program_as_exact_bytes(tmp_path):
    name = b"caf\xe9 -n\nx"  # not UTF-8, a space, a dash, a newline
    run = Streamed(SH, ["-c", 'printf "%s" "$1"', "sh", name], cwd=str(tmp_path))
    assert b"".join(run.chunks()) == name and run.exit_code == 0


def test_a_caller_stopping_early_terminates_and_reaps_the_process():
    run = Streamed(SH, ["-c", 'echo $$; exec yes'])
    chunks = run.chunks()
    pid = int(next(chunks).split(b"\n")[0])
    chunks.close()  # what happens when the caller raises or stops iterating
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # gone, and reaped (a zombie would still answer)


def test_a_process_killed_by_a_signal_raises_here_and_nowhere_else(capfd):
    run = Streamed(SH, ["-c", "kill -TERM $$"])
    with pytest.raises(KilledBySignal) as raised:
        list(run.chunks())
    assert raised.value.number == signal.SIGTERM
    assert capfd.readouterr().err == ""  # no traceback from a thread of sh's


def test_large_output_is_read_in_chunks_as_it_comes():
    run = Streamed(SH, ["-c", f"head -c {CHUNK * 8} /dev/zero"])
    sizes = [len(chunk) for chunk in run.chunks()]
    assert sum(sizes) == CHUNK * 8 and max(sizes) <= CHUNK and run.exit_code == 0


def test_output_written_a_line_at_a_time_is_read_in_few_chunks():
    # rsync prints each transferred name with a write of its own; reading each as it comes
    # cost a read and a callback per file, taken from the rsyncs' CPU on a small machine.
    writer = ("import os, time\n"
              "for index in range(200):\n"
              "    os.write(1, b'line%d\\n' % index)\n"
              "    time.sleep(0.0005)\n")
    run = Streamed(sys.executable, ["-c", writer])
    chunks = list(run.chunks())
    assert b"".join(chunks) == b"".join(b"line%d\n" % index for index in range(200))
    assert len(chunks) < 100, len(chunks)  # read as written: about 200
