"""`styleloop.processes.spawn`: children die with their parent, and nothing but C runs
between fork and exec (a ``preexec_fn`` once hung a CI run: a child forked from a process
with threads deadlocked on a lock held at fork time, before it could exec)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from styleloop import processes


def test_spawn_runs_no_python_between_fork_and_exec(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[dict[str, Any]] = []
    real = subprocess.Popen

    def recording(args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs)
        return real(args, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", recording)
    child = processes.spawn(["true"])
    assert child.wait(30) == 0
    assert seen and seen[0].get("preexec_fn") is None
    assert seen[0]["start_new_session"] is True


def test_spawned_child_keeps_its_arguments_environment_and_pid(tmp_path: Path) -> None:
    out = tmp_path / "out"
    child = processes.spawn(
        [sys.executable, "-c", "import os,sys; print(os.getpid(), os.environ['X'], sys.argv[1:])",
         "a b", "--c"],
        env={**os.environ, "X": "y"},
        stdout=out.open("w"),
    )  # fmt: skip
    assert child.wait(30) == 0
    assert out.read_text().split(" ", 2) == [str(child.pid), "y", "['a b', '--c']\n"]


def test_a_child_gets_sigterm_when_its_parent_is_killed() -> None:
    """The parent (a Python process with busy threads) spawns a child, then is SIGKILLed:
    the kernel sends the child SIGTERM, which it reports on the pipe it shares with the
    parent before exiting. The child is the pipe's last writer, so reading to the end
    waits exactly until it has exited — no clock involved (pytest's timeout bounds it)."""
    child_code = textwrap.dedent("""
        import signal, sys, threading
        def done(*_):
            # Linux may send PDEATHSIG once per reparenting while a threaded parent dies:
            # the child reports the first and exits.
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            print("SIGTERM", flush=True)
            sys.exit(0)
        signal.signal(signal.SIGTERM, done)
        # One write per line: print() writes the text and its newline apart when stdout
        # is unbuffered (PYTHONUNBUFFERED), and the other process's line could land between.
        sys.stdout.write("ready\\n")
        sys.stdout.flush()
        threading.Event().wait()
    """)
    parent_code = textwrap.dedent(f"""
        import sys, threading
        from styleloop.processes import spawn
        def churn():
            while True:
                [bytearray(1000) for _ in range(100)]
        for _ in range(4):
            threading.Thread(target=churn, daemon=True).start()
        child = spawn([sys.executable, "-c", {child_code!r}])
        sys.stdout.write(str(child.pid) + "\\n")
        sys.stdout.flush()
        threading.Event().wait()
    """)
    parent = subprocess.Popen(
        [sys.executable, "-c", parent_code], stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout is not None
        # The child's pid (from the parent) and "ready" (from the child, once its handler
        # is in) share the pipe, in either order.
        lines = {parent.stdout.readline().strip() for _ in range(2)}
        assert "ready" in lines, lines
        assert next(line for line in lines if line != "ready").isdigit()
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        assert parent.stdout.read().split() == ["SIGTERM"]  # EOF: the child has exited
    finally:
        parent.kill()
        parent.wait()


def test_the_launcher_refuses_to_start_a_child_whose_parent_is_already_gone() -> None:
    # Its parent is this test, not pid 1: as if the parent had died before the request.
    done = subprocess.run(
        [sys.executable, "-m", "styleloop.orphan", "1", "--", "true"], capture_output=True
    )
    assert done.returncode == 128 + signal.SIGTERM


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        ([], 2, "usage"),
        (["x", "--", "true"], 2, "usage"),
        ([str(os.getpid()), "--", "/no/such/program"], 127, "cannot run /no/such/program"),
    ],
)
def test_the_launcher_explains_bad_use(argv: list[str], code: int, message: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "styleloop.orphan", *argv], capture_output=True, text=True
    )
    assert done.returncode == code
    assert message in done.stderr
