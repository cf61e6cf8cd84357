"""``python -m styleloop.orphan PARENT_PID -- COMMAND [ARG ...]``: run COMMAND so that it
receives SIGTERM when PARENT_PID dies, however it dies (Linux ``PR_SET_PDEATHSIG``, which
``exec`` keeps). Started by :func:`styleloop.processes.spawn` as the child itself — a fresh
single-threaded process — so that no Python code runs between ``fork`` and ``exec`` in a
parent that has threads. Exits 143 at once when the parent is already gone."""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--" or not argv[0].isdigit():
        sys.stderr.write("usage: python -m styleloop.orphan PARENT_PID -- COMMAND [ARG ...]\n")
        return 2
    parent, command = int(argv[0]), argv[2:]
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            sys.stderr.write(f"prctl(PR_SET_PDEATHSIG): {os.strerror(ctypes.get_errno())}\n")
            return 1
    if os.getppid() != parent:  # the parent died before the request was made
        return 128 + signal.SIGTERM
    try:
        os.execvp(command[0], command)
    except OSError as error:
        sys.stderr.write(f"cannot run {command[0]}: {error.strerror}\n")
        return 127
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
