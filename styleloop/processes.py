"""Child processes that never outlive whoever started them.

:func:`spawn` starts a process in its own session (a Ctrl-C in the terminal reaches only
the parent, which stops its children in order) and asks the kernel to send it SIGTERM
when the parent dies, however it dies — SIGKILL included (Linux ``PR_SET_PDEATHSIG``).
:func:`stop` ends one politely, then firmly. :func:`stop_on_signals` turns SIGTERM and
SIGHUP into :class:`Terminated` (a ``KeyboardInterrupt``), so the ``finally`` blocks that
stop children on Ctrl-C run for a process manager's SIGTERM and a closed terminal too.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from typing import Any


class Terminated(KeyboardInterrupt):
    """SIGTERM, SIGHUP or SIGINT arrived; handled like Ctrl-C."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def spawn(args: Sequence[str], **popen: Any) -> subprocess.Popen[Any]:
    """``subprocess.Popen`` in a new session, terminated when this process dies.

    The death signal is asked for by :mod:`styleloop.orphan`, a small launcher that then
    ``exec``s ``args`` (the request survives ``exec``). Nothing runs between fork and exec
    but C: a ``preexec_fn`` would run Python in a child forked from a process with threads
    (gRPC, torch, a test runner), where a lock another thread held at fork time — malloc's,
    the dynamic loader's — is never released and the child hangs before it ever execs (it
    did, in CI). The kernel ties the death signal to the *thread* that forks: call this
    from a thread that lives as long as the child should (the main thread, in practice)."""
    launcher = [sys.executable, "-m", "styleloop.orphan", str(os.getpid()), "--"]
    return subprocess.Popen([*launcher, *args], start_new_session=True, **popen)


def stop(process: subprocess.Popen[Any] | None, grace_s: float = 15.0) -> None:
    """SIGTERM, up to ``grace_s`` to exit, then SIGKILL; always reaped."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextlib.contextmanager
def stop_on_signals(*signums: int) -> Iterator[None]:
    """Inside the block, the first SIGTERM/SIGHUP/SIGINT (or the given signals) raises
    :class:`Terminated` in the main thread; later ones are ignored, so a second signal
    cannot cut the ordered stop short. The previous handlers come back afterwards.

    SIGINT is handled here too, not left to Python: a process started in the background
    of a non-interactive shell inherits SIGINT ignored, and Ctrl-C (or ``kill -INT``)
    must still stop it."""
    wanted = signums or (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)
    received: list[int] = []

    def handler(signum: int, _frame: object) -> None:
        if received:
            return
        received.append(signum)
        raise Terminated(signum)

    previous = {s: signal.signal(s, handler) for s in wanted}
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)
