"""`styleloop up`: the local stack on 127.0.0.1 — prepared models (with StyleLoop's heads
trained on the catalog when the preset needs them), the Kafka-protocol broker (Tansu),
the encoder, captioner, recommender, llm, trainer and gateway as processes, and the catalog
then a search to show it works.

Why not honcho/a Procfile: the services must start in order, each only once the one it
needs reports healthy (gRPC health, the gateway's /readyz), and the catalog is ingested
between the services and the gateway; a Procfile runner starts everything at once and
knows no readiness. This module stays a thin ordered start / health wait / ordered stop.

Service logs go to ``STATE_DIR/logs/<service>.log``; Ctrl-C, SIGTERM, SIGHUP (or
``--once``) stop every process it started, in reverse order, and each of them also dies
when ``up`` is killed outright (:mod:`styleloop.processes`).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from styleloop.broker import TansuBroker
from styleloop.processes import spawn, stop, stop_on_signals

ROOT = Path(__file__).resolve().parents[1]


class StackError(RuntimeError):
    """The stack could not start; the message says why and where the logs are."""


@dataclass
class Service:
    name: str
    module: str
    port: int
    metrics_port: int
    env: dict[str, str]
    log: Path
    http: bool = False  # an HTTP service (the gateway): HTTP_PORT, ready on /readyz
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        ports = (
            {
                "HTTP_HOST": "127.0.0.1",
                "HTTP_PORT": str(self.port),
                "METRICS_PORT": str(self.metrics_port),
            }
            if self.http
            else {
                "GRPC_HOST": "127.0.0.1",
                "GRPC_PORT": str(self.port),
                "METRICS_PORT": str(self.metrics_port),
            }
        )
        env = {**os.environ, **self.env, **ports}
        with self.log.open("ab") as handle:
            # Its own session (Ctrl-C reaches `up`, which stops us in order), and it dies
            # with `up` even when `up` is killed outright.
            self.process = spawn(
                [sys.executable, "-m", self.module],
                cwd=ROOT,
                env=env,
                stdout=handle,
                stderr=subprocess.STDOUT,
            )

    def _http_ready(self) -> bool:
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://{self.address}/readyz", timeout=2) as reply:
                return bool(reply.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def wait_ready(self, timeout_s: float) -> None:
        """Until gRPC health says SERVING (or /readyz answers 200); fails early when the
        process exits."""
        deadline = time.monotonic() + timeout_s
        if self.http:
            while time.monotonic() < deadline:
                self._check_alive()
                if self._http_ready():
                    return
                time.sleep(0.3)
            raise StackError(f"{self.name} was not ready after {timeout_s:.0f} s; see {self.log}")
        with grpc.insecure_channel(self.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                self._check_alive()
                try:
                    reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                time.sleep(0.3)
        raise StackError(f"{self.name} was not ready after {timeout_s:.0f} s; see {self.log}")

    def _check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise StackError(
                f"{self.name} exited with code {self.process.returncode}; "
                f"see {self.log}:\n{tail(self.log)}"
            )

    def stop(self, grace_s: float = 15.0) -> None:
        stop(self.process, grace_s)


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def plan(
    models_dir: Path,
    state_dir: Path,
    image_root: Path | None,
    base_port: int,
    gateway_port: int,
    kafka_bootstrap: str,
    service_token: str = "",
    catalog: Path | None = None,
) -> list[Service]:
    """The gRPC services in start order — encoder, recommender, captioner on ``base_port``
    + 0, 1, 2 (metrics on +100, 101, 102), the llm on + 5 (metrics + 104), the trainer on
    + 6 (metrics + 105) — then the gateway on ``gateway_port`` (metrics on ``base_port`` +
    103); every service asks for (and sends) ``service_token``."""
    logs = state_dir / "logs"
    encoder = Service(
        "encoder",
        "services.encoder",
        base_port,
        base_port + 100,
        {"MODELS_DIR": str(models_dir)},
        logs / "encoder.log",
    )
    captioner = Service(
        "captioner",
        "services.captioner",
        base_port + 2,
        base_port + 102,
        {"MODELS_DIR": str(models_dir)},
        logs / "captioner.log",
    )
    recommender_env = {
        "ENCODER_ADDR": encoder.address,
        "DATA_DIR": str(state_dir / "recommender"),
        # `up` trains the outfit scorer here; the recommender falls back (and says why) when
        # there is none for the encoder's model version.
        "OUTFIT_SCORER_DIR": str(models_dir / "outfits"),
    }
    if image_root is not None:
        recommender_env["IMAGE_ROOT"] = str(image_root)
    recommender = Service(
        "recommender",
        "services.recommender",
        base_port + 1,
        base_port + 101,
        recommender_env,
        logs / "recommender.log",
    )
    llm = Service(
        "llm",
        "services.llm",
        base_port + 5,
        base_port + 104,
        {
            "MODELS_DIR": str(models_dir),
            "RECOMMENDER_ADDR": recommender.address,
            "CAPTIONER_ADDR": captioner.address,
            "KAFKA_BOOTSTRAP": kafka_bootstrap,
            "SPOOL_DIR": str(state_dir / "llm-spool"),
            "ADAPTERS_DIR": str(state_dir / "adapters"),
            # Written by `up` once the catalog is in (styleloop.calibrate); read on change.
            "CALIBRATION_FILE": str(state_dir / "calibration.json"),
        },
        logs / "llm.log",
    )
    trainer = Service(
        "trainer",
        "services.trainer",
        base_port + 6,
        base_port + 105,
        {
            "KAFKA_BOOTSTRAP": kafka_bootstrap,
            "RECOMMENDER_ADDR": recommender.address,
            "STATE_DIR": str(state_dir / "trainer"),
            "SPOOL_DIR": str(state_dir / "trainer-spool"),
            # DPO rounds on the chat model, published into the llm's registry.
            "MODELS_DIR": str(models_dir),
            "ADAPTERS_DIR": str(state_dir / "adapters"),
            "LLM_ADDR": llm.address,
            # What a round's candidate is asked before it serves (the chat evaluation).
            **({"CATALOG": str(catalog)} if catalog is not None else {}),
        },
        logs / "trainer.log",
    )
    gateway = Service(
        "gateway",
        "services.gateway",
        gateway_port,
        base_port + 103,
        {
            "RECOMMENDER_ADDR": recommender.address,
            "LLM_ADDR": llm.address,
            "KAFKA_BOOTSTRAP": kafka_bootstrap,
            "SPOOL_DIR": str(state_dir / "gateway-spool"),
            # The local stack listens on 127.0.0.1 only; its curl examples carry no key.
            "ALLOW_ANONYMOUS": "true",
        },
        logs / "gateway.log",
        http=True,
    )
    services = [encoder, captioner, recommender, llm, trainer, gateway]
    if service_token:
        for service in services:
            service.env["SERVICE_TOKEN"] = service_token
    return services


def plan_for_catalog(
    models_dir: Path,
    state_dir: Path,
    catalog: Path,
    source: Path,
    base_port: int,
    gateway_port: int,
    kafka_bootstrap: str,
    service_token: str,
) -> list[Service]:
    """:func:`plan` for a catalog at ``catalog`` read from ``source`` (its products file
    or folder): the recommender serves photos from the folder the catalog is in."""
    image_root = source.parent if source.is_file() else source
    return plan(
        models_dir,
        state_dir,
        image_root.resolve(),
        base_port,
        gateway_port,
        kafka_bootstrap,
        service_token,
        catalog=catalog.resolve(),
    )


def run_stack(
    services: list[Service],
    after_start: Callable[[], None],
    *,
    once: bool,
    broker: TansuBroker | None = None,
    ready_timeout_s: float = 300.0,
) -> None:
    """Start the broker, then each service in order, waiting for each; run
    ``after_start``; then wait for Ctrl-C, SIGTERM or SIGHUP (or stop at once with
    ``once``). Everything started is stopped on the way out, in reverse order; each
    service also dies with this process if it is killed outright (SIGKILL)."""
    with stop_on_signals():
        _run_stack(services, after_start, once=once, broker=broker, ready_timeout_s=ready_timeout_s)


def _run_stack(
    services: list[Service],
    after_start: Callable[[], None],
    *,
    once: bool,
    broker: TansuBroker | None,
    ready_timeout_s: float,
) -> None:
    try:
        if broker is not None:
            broker.start()
        for service in services:
            service.start()
            service.wait_ready(ready_timeout_s)
        after_start()
        if once:
            return
        while all(s.process is not None and s.process.poll() is None for s in services):
            time.sleep(1)
        gone = next(s for s in services if s.process is not None and s.process.poll() is not None)
        raise StackError(f"{gone.name} stopped; see {gone.log}:\n{tail(gone.log)}")
    finally:
        for service in reversed(services):
            service.stop()
        if broker is not None:
            broker.stop()
