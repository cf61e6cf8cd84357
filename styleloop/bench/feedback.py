"""`styleloop bench feedback`: how long a rejection takes to change the shopper's answers.

Against a running stack (`make up`): ``--events`` rejections of real catalog items, each for
a shopper of its own, are sent through ``POST /v1/feedback`` at ``--rate`` a second. Two
latencies are reported, p50 / p95 / p99 / max:

- **visible**: from the moment the gateway accepted the event until a text search for the
  item's own title, personalised for that shopper, no longer returns it (polled every
  ``--poll-ms``; what a shopper would see);
- **trainer**: the trainer's ``trainer_event_to_effect_seconds`` (gateway receipt → the
  recommender applied it) over the same events, read from its ``/metrics`` before and after
  (a histogram: quantiles interpolated within its buckets, as Prometheus'
  ``histogram_quantile`` does).

Measure the trainer's path with the gateway's own apply switched off
(``APPLY_FEEDBACK_NOW=false make up``); with it on, "visible" is the gateway's path and the
trainer finds the events already applied. Goal (issue 14): p99 < 1 s on this machine.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from collections.abc import Sequence
from typing import Any

from styleloop.bench import report as results
from styleloop.bench.load import quantiles
from styleloop.bench.report import report_argument
from styleloop.commands import add_command, gateway_argument

HISTOGRAM = "trainer_event_to_effect_seconds"


def buckets(metrics_url: str) -> list[tuple[float, float]]:
    """(upper bound, cumulative count) of the trainer's effect-latency histogram."""
    from styleloop.runtime.metrics import scrape

    return sorted(
        (float(s.labels["le"]), s.value) for s in scrape(metrics_url, HISTOGRAM + "_bucket")
    )


def histogram_quantile(q: float, cumulative: Sequence[tuple[float, float]]) -> float:
    """Prometheus' estimate: linear within the bucket the q-th observation falls in."""
    total = cumulative[-1][1] if cumulative else 0.0
    if total <= 0:
        return float("nan")
    rank, lower, below = q * total, 0.0, 0.0
    for bound, count in cumulative:
        if count >= rank:
            if bound == float("inf"):
                return lower
            inside = count - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = bound, count
    return lower


class BenchError(RuntimeError):
    """The stack refused a call the benchmark needs; the message says what to change."""


def call(client: Any, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST ``body``; the gateway's ``{reason, message}`` as a BenchError when refused."""
    response = client.post(path, json=body)
    if response.status_code == 429:
        raise BenchError(
            f"the gateway rate-limited the benchmark on {path} (RATE_LIMITED): every poll "
            "is a search; start the stack with a higher limit "
            "(RATE_LIMIT_PER_MINUTE=100000 RATE_LIMIT_BURST=1000 make up) or lower --rate"
        )
    if response.status_code >= 400:
        try:
            error = response.json()
            why = f"{error.get('reason')}: {error.get('message')}"
        except ValueError:
            why = response.text[:200]
        raise BenchError(f"{path} answered HTTP {response.status_code} ({why})")
    return dict(response.json())


def run(
    client: Any, metrics_url: str, events: int, rate: float, poll_s: float, timeout_s: float
) -> dict[str, Any]:
    found = call(client, "/v1/search/text", {"query": "shirt", "page_size": 100})
    catalog = [r["item"] for r in found["results"]]
    if not catalog:
        raise BenchError("the stack's catalog is empty")
    before = buckets(metrics_url) if metrics_url else []
    run_id = uuid.uuid4().hex[:8]
    visible: list[float] = []
    unseen = 0

    def shown(item: dict[str, Any], user: str) -> bool:
        query = {"query": item["title"], "user_id": user, "page_size": 20}
        found = call(client, "/v1/search/text", query)["results"]
        return item["item_id"] in {r["item"]["item_id"] for r in found}

    # Only items their own title finds: their disappearance is the rejection's doing.
    catalog = [i for i in catalog if shown(i, f"bench-{run_id}-probe")]
    if not catalog:
        raise BenchError("no item is found by its own title")
    for n in range(events):
        started = time.monotonic()
        item = catalog[n % len(catalog)]
        user = f"bench-{run_id}-{n}"
        event = {"user_id": user, "item_id": item["item_id"], "kind": "reject"}
        call(client, "/v1/feedback", {"events": [event]})
        accepted = time.monotonic()
        while True:
            if not shown(item, user):
                visible.append(time.monotonic() - accepted)
                break
            if time.monotonic() - accepted > timeout_s:
                unseen += 1
                break
            time.sleep(poll_s)
        time.sleep(max(0.0, 1.0 / rate - (time.monotonic() - started)))
    report: dict[str, Any] = {"events": events, "visible_s": quantiles(visible), "not_seen": unseen}
    if metrics_url:
        deadline = time.monotonic() + timeout_s
        after = buckets(metrics_url)
        while after and after[-1][1] - (before[-1][1] if before else 0) < events:
            if time.monotonic() > deadline:
                break
            time.sleep(0.5)
            after = buckets(metrics_url)
        delta = [(bound, count - dict(before).get(bound, 0.0)) for bound, count in after]
        report["trainer_observed"] = delta[-1][1] if delta else 0
        report["trainer_s"] = {
            f"p{int(q * 100)}": histogram_quantile(q, delta) for q in (0.5, 0.95, 0.99)
        }
    return report


def register(commands: Any) -> None:
    parser = add_command(
        commands,
        "feedback",
        __doc__,
        help="event -> effect latency of rejections through a running stack",
    )
    gateway_argument(parser)
    parser.add_argument(
        "--trainer-metrics",
        default="http://127.0.0.1:50156/metrics",
        help="the trainer's /metrics ('' skips the trainer's histogram)",
    )
    parser.add_argument("--events", type=int, default=100, help="rejections to send (100)")
    parser.add_argument("--rate", type=float, default=10.0, help="events a second at most (10)")
    parser.add_argument("--poll-ms", type=float, default=10.0, help="search polling interval")
    parser.add_argument("--timeout-s", type=float, default=30.0, help="per event, at most")
    report_argument(parser)

    def main(args: argparse.Namespace) -> int:
        import httpx

        if not 1 <= args.events <= 10_000 or args.rate <= 0:
            sys.stderr.write("styleloop bench feedback: --events 1..10000, --rate > 0\n")
            return 2
        with httpx.Client(base_url=args.gateway, timeout=30) as client:
            try:
                client.get("/healthz").raise_for_status()
                if args.trainer_metrics:
                    buckets(args.trainer_metrics)
            except (httpx.HTTPError, OSError) as exc:
                sys.stderr.write(f"styleloop bench feedback: stack not reachable ({exc})\n")
                return 2
            try:
                report = run(
                    client,
                    args.trainer_metrics,
                    args.events,
                    args.rate,
                    args.poll_ms / 1000,
                    args.timeout_s,
                )
            except (BenchError, httpx.HTTPError) as exc:
                sys.stderr.write(f"styleloop bench feedback: {exc}\n")
                return 1
        for name in ("visible_s", "trainer_s"):
            if name in report:
                figures = "  ".join(f"{k} {v * 1000:.0f} ms" for k, v in report[name].items())
                sys.stdout.write(f"{name[:-2]:8} {figures}\n")
        sys.stdout.write(
            f"events {report['events']}, not seen within the timeout {report['not_seen']}, "
            f"trainer observed {report.get('trainer_observed', '-')}\n"
        )
        if args.results is not None:
            headline = [
                f"rejection -> gone from the same shopper's search ({name[:-2]}): "
                + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in report[name].items())
                for name in ("visible_s", "trainer_s")
                if name in report
            ]
            headline.append(
                f"{report['events']} events, {report['not_seen']} not seen within "
                f"{args.timeout_s:g} s"
            )
            seen = report.get("visible_s", {})
            path = results.write(
                args.results,
                "feedback",
                report,
                headline,
                results.Chart(
                    "event -> effect latency",
                    "ms",
                    list(seen),
                    {"visible in search": [v * 1000 for v in seen.values()]},
                ),
            )
            sys.stdout.write(f"wrote {path}\n")
        return 0

    parser.set_defaults(func=main)
