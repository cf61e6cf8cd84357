"""`styleloop up --once`: the stack as processes on 127.0.0.1, catalog ingested, a search
shown, everything stopped again (tiny preset, drawn catalog)."""

from __future__ import annotations

import random
import socket
from pathlib import Path

from tests.conftest import run_cli


def free_block() -> int:
    """A base port with base..base+2 and base+100..base+102 all free a moment ago."""
    for _ in range(50):
        base = random.randrange(20000, 40000)
        sockets = []
        try:
            for port in (base, base + 1, base + 2, base + 100, base + 101, base + 102):
                sock = socket.socket()
                sockets.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise AssertionError("no free block of ports")


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_up_starts_ingests_searches_and_stops(
    tiny_models: Path, drawn_catalog: Path, tmp_path: Path
):
    base = free_block()
    args = ["up", "--preset", "tiny", "--models-dir", str(tiny_models)]
    args += ["--catalog", str(drawn_catalog), "--state-dir", str(tmp_path / "stack")]
    args += ["--base-port", str(base), "--once", "--no-progress", "--query", "red t-shirt"]
    result = run_cli(*args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "80 items in the recommender (80 new this run)" in result.stdout
    search = result.stdout.split('search "red t-shirt":')[1].splitlines()[1:6]
    assert len(search) == 5 and all("number" in line for line in search)  # drawn titles
    assert f"recommender 127.0.0.1:{base + 1}" in result.stdout
    for name in ("encoder", "captioner", "recommender"):
        assert (tmp_path / "stack" / "logs" / f"{name}.log").stat().st_size > 0
    assert all(port_is_free(p) for p in (base, base + 1, base + 2))  # all stopped

    again = run_cli(*args)  # resumes: nothing new to ingest
    assert again.returncode == 0, again.stderr
    assert "80 items in the recommender (0 new this run)" in again.stdout
