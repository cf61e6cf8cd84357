"""Prometheus metrics shared by every service, and the ``/metrics`` endpoint.

Labels are bounded: gRPC service, method and status code only — never user, item or
query ids. Domain metrics live with their service as ``<svc>_<thing>_<unit>``.
"""

from __future__ import annotations

import logging
import urllib.request
from dataclasses import dataclass
from threading import Thread
from wsgiref.simple_server import WSGIServer

from prometheus_client import Counter, Gauge, Histogram, start_http_server
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

log = logging.getLogger(__name__)

LATENCY_BUCKETS_S = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)

RPC_HANDLED = Counter(
    "grpc_server_handled_total",
    "RPCs completed on the server, by method and status code.",
    ["grpc_service", "grpc_method", "grpc_code"],
)
RPC_LATENCY = Histogram(
    "grpc_server_handling_seconds",
    "Time from receiving an RPC to completing it, in seconds.",
    ["grpc_service", "grpc_method"],
    buckets=LATENCY_BUCKETS_S,
)
RPC_IN_FLIGHT = Gauge(
    "grpc_server_in_flight",
    "RPCs being handled right now.",
    ["grpc_service", "grpc_method"],
)


@dataclass
class MetricsServer:
    """A running ``/metrics`` HTTP endpoint."""

    httpd: WSGIServer
    thread: Thread

    @property
    def port(self) -> int:
        return int(self.httpd.server_port)

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def start_metrics_server(host: str, port: int) -> MetricsServer | None:
    """Serve the default registry on ``http://host:port/metrics``; port -1 disables it."""
    if port < 0:
        return None
    httpd, thread = start_http_server(port, addr=host)
    server = MetricsServer(httpd, thread)
    log.info("metrics endpoint listening", extra={"metrics_port": server.port})
    return server


def scrape(metrics_url: str, name: str, timeout_s: float = 10.0) -> list[Sample]:
    """The samples named ``name`` (``_bucket``/``_total`` suffix included) that a running
    service's ``/metrics`` shows now: how the CLI's benchmarks and tests read a service."""
    with urllib.request.urlopen(metrics_url, timeout=timeout_s) as reply:
        text = reply.read().decode()
    return [
        sample
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    ]
