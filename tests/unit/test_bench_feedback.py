"""The latency estimates `styleloop bench feedback` prints."""

from __future__ import annotations

import math

import pytest

from styleloop.bench.feedback import histogram_quantile
from styleloop.bench.load import quantiles


def test_histogram_quantiles_interpolate_within_the_bucket_as_prometheus_does():
    # 10 observations: 4 under 0.1 s, 4 more under 0.5 s, 2 under 1 s.
    cumulative = [(0.1, 4.0), (0.5, 8.0), (1.0, 10.0), (float("inf"), 10.0)]
    assert histogram_quantile(0.4, cumulative) == pytest.approx(0.1)
    assert histogram_quantile(0.5, cumulative) == pytest.approx(0.2)  # 1 of 4 into (0.1, 0.5]
    assert histogram_quantile(0.99, cumulative) == pytest.approx(0.975)
    assert math.isnan(histogram_quantile(0.5, [(0.1, 0.0), (float("inf"), 0.0)]))
    # Past the last finite bound, the estimate is that bound (as Prometheus answers).
    assert histogram_quantile(0.99, [(1.0, 1.0), (float("inf"), 10.0)]) == 1.0


def test_sample_quantiles():
    values = [float(v) for v in range(1, 101)]
    assert quantiles(values) == {"p50": 51.0, "p95": 96.0, "p99": 100.0, "max": 100.0}
    assert quantiles([]) == {}


@pytest.mark.parametrize(
    ("status", "body", "said"),
    [
        (429, {"reason": "RATE_LIMITED", "message": "too many"}, "RATE_LIMIT_PER_MINUTE="),
        (503, {"reason": "RECOMMENDER_UNAVAILABLE", "message": "down"}, "RECOMMENDER_UNAVAILABLE"),
    ],
)
def test_a_refused_call_is_a_clear_error_not_a_key_error(status: int, body: dict, said: str):
    """A rate-limited poll once surfaced as KeyError: 'results' with a traceback."""
    import httpx

    from styleloop.bench.feedback import BenchError, call

    transport = httpx.MockTransport(lambda request: httpx.Response(status, json=body))
    with (
        httpx.Client(transport=transport, base_url="http://gateway") as client,
        pytest.raises(BenchError, match=said),
    ):
        call(client, "/v1/search/text", {"query": "x"})


def test_buckets_and_sums_read_a_services_metrics_page():
    """`scrape` (one parser for bench feedback, simulate and the stack test) against a real
    /metrics endpoint."""
    from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

    from styleloop.bench.feedback import HISTOGRAM, buckets
    from styleloop.simulate import metric_sum
    from tests.conftest import free_ports

    registry = CollectorRegistry()
    histogram = Histogram(HISTOGRAM, "effect", buckets=(0.1, 1.0), registry=registry)
    rounds = Counter("trainer_rounds", "rounds", ["outcome"], registry=registry)
    for value in (0.05, 0.5, 0.7):
        histogram.observe(value)
    rounds.labels("kept").inc(2)
    rounds.labels("published").inc()
    port = free_ports(1)[0]
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        assert buckets(url) == [(0.1, 1.0), (1.0, 3.0), (float("inf"), 3.0)]
        assert metric_sum(url, "trainer_rounds_total") == 3.0
        assert metric_sum(url, "trainer_rounds_total", outcome="kept") == 2.0
    finally:
        server.shutdown()
        thread.join(5)
