"""`styleloop bench ingest`: feedback events a second through the gateway into Kafka, and
proof that none was lost.

Against a running stack (`make up`, with a rate limit that lets the load through, e.g.
``RATE_LIMIT_PER_MINUTE=10000000 RATE_LIMIT_BURST=100000``): at each ``--concurrency``
level, ``--events`` impressions (a kind the gateway does not apply to shopper state, so
only ingest is measured) are POSTed to ``/v1/feedback`` in batches of ``--batch`` (the
endpoint's maximum is 100). The gateway answers 202 only once the broker acknowledged
every event with ``acks=all`` (or, if it could not, once they are fsynced in its spool,
counted as ``spooled``). Then every accepted event id is read back from the topic: lost =
accepted ids never seen; duplicates are counted but allowed (delivery is at least once).

Side by side in the same run, the same serialized events are produced straight to the
broker with kafka-python (``acks=all``, one flush per batch of ``--batch``): the broker's
own ceiling for this pattern on this machine, so the ratio gateway / direct shows what
the gateway costs. Goal (issue 18): >= 20,000 events/s through the gateway with zero loss.
The load generator runs on the same cores as the stack; its own CPU time is reported.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from collections.abc import Sequence
from typing import Any

from styleloop.bench import report
from styleloop.bench.load import closed_loop, quantiles
from styleloop.bench.report import report_argument
from styleloop.commands import add_command, bootstrap_argument, gateway_argument

TOPIC = "styleloop.feedback.v1"


class BenchError(RuntimeError):
    """The stack refused or lost something; the message says what."""


def _event(run_id: str, n: int) -> dict[str, Any]:
    return {
        "user_id": f"bench-ingest-{run_id}-{n % 1000}",
        "item_id": f"item-{n % 5000}",
        "kind": "impression",
        "context": {"source": "search_by_text", "query": "black leather shoes", "position": n % 10},
    }


async def through_gateway(
    gateway: str, run_id: str, events: int, batch: int, concurrency: int
) -> dict[str, Any]:
    """POST ``events`` in batches; the accepted ids and how many batches were spooled."""
    import httpx

    batches = (events + batch - 1) // batch
    bodies = [
        {"events": [_event(run_id, b * batch + i) for i in range(min(batch, events - b * batch))]}
        for b in range(batches)
    ]
    ids: list[str] = []
    spooled = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=gateway, timeout=60, limits=limits) as client:

        async def post(index: int) -> None:
            nonlocal spooled
            response = await client.post("/v1/feedback", json=bodies[index])
            if response.status_code == 429:
                raise BenchError(
                    "the gateway rate-limited the benchmark (RATE_LIMITED): start the stack "
                    "with RATE_LIMIT_PER_MINUTE=10000000 RATE_LIMIT_BURST=100000"
                )
            if response.status_code != 202:
                raise BenchError(
                    f"/v1/feedback answered HTTP {response.status_code}: {response.text[:200]}"
                )
            accepted = response.json()
            ids.extend(accepted["event_ids"])
            spooled += bool(accepted["spooled"])

        cpu = time.process_time()
        wall, latencies = await closed_loop(post, batches, concurrency)
        cpu = time.process_time() - cpu
    seconds = quantiles(latencies)
    return {
        "path": "gateway",
        "concurrency": concurrency,
        "events": len(ids),
        "events_per_s": len(ids) / wall,
        "batch_p50_ms": seconds["p50"] * 1000,
        "batch_p99_ms": seconds["p99"] * 1000,
        "spooled_batches": spooled,
        "generator_cpu_s": cpu,
        "wall_s": wall,
        "ids": ids,
    }


def direct(bootstrap: str, topic: str, run_id: str, events: int, batch: int) -> dict[str, Any]:
    """The same events produced straight to the broker: acks=all, a flush per batch."""
    from kafka import KafkaProducer

    from styleloop.v1 import events_pb2

    records = []
    for n in range(events):
        event = _event(run_id, n)
        proto = events_pb2.FeedbackEvent(
            event_id=uuid.uuid4().hex, user_id=event["user_id"], item_id=event["item_id"]
        )
        records.append((event["user_id"].encode(), proto.SerializeToString()))
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    try:
        started = time.perf_counter()
        for start in range(0, events, batch):
            futures = [producer.send(topic, key=k, value=v) for k, v in records[start:][:batch]]
            producer.flush()
            for future in futures:
                future.get(timeout=30)
        wall = time.perf_counter() - started
    finally:
        producer.close(timeout=5)
    return {"path": "direct Kafka", "events": events, "events_per_s": events / wall}


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        offsets = consumer.end_offsets([TopicPartition(topic, p) for p in partitions])
        return {tp.partition: offset for tp, offset in offsets.items()}
    finally:
        consumer.close()


def read_back(
    bootstrap: str, topic: str, since: dict[int, int], wanted: set[str], timeout_s: float
) -> tuple[set[str], int]:
    """Event ids of ``wanted`` found on the topic after ``since``; and duplicates seen."""
    from kafka import KafkaConsumer, TopicPartition

    from styleloop.v1 import events_pb2

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, consumer_timeout_ms=2000
    )
    seen: set[str] = set()
    duplicates = 0
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        consumer.assign(partitions)
        for tp in partitions:
            consumer.seek(tp, since.get(tp.partition, 0))
        deadline = time.monotonic() + timeout_s
        while seen != wanted and time.monotonic() < deadline:
            batch = consumer.poll(timeout_ms=1000, max_records=10_000)
            for messages in batch.values():
                for message in messages:
                    event_id = events_pb2.FeedbackEvent.FromString(message.value).event_id
                    if event_id in wanted:
                        duplicates += event_id in seen
                        seen.add(event_id)
    finally:
        consumer.close()
    return seen, duplicates


def measure(
    gateway: str,
    bootstrap: str,
    concurrencies: Sequence[int],
    events: int,
    batch: int,
    timeout_s: float,
) -> list[dict[str, Any]]:
    run_id = uuid.uuid4().hex[:8]
    # One untimed batch first: the topic exists and the gateway's producer is connected.
    asyncio.run(through_gateway(gateway, run_id, batch, batch, 1))
    rows: list[dict[str, Any]] = []
    for concurrency in concurrencies:
        since = end_offsets(bootstrap, TOPIC)
        row = asyncio.run(through_gateway(gateway, run_id, events, batch, concurrency))
        wanted = set(row.pop("ids"))
        started = time.perf_counter()
        seen, duplicates = read_back(bootstrap, TOPIC, since, wanted, timeout_s)
        row.update(
            delivered=len(seen),
            lost=len(wanted - seen),
            duplicates=duplicates,
            read_back_s=time.perf_counter() - started,
        )
        rows.append(row)
        # The broker's ceiling, measured right after, on the same topic and cores.
        rows.append({**direct(bootstrap, TOPIC, run_id, events, batch), "concurrency": concurrency})
    return rows


def main(args: argparse.Namespace) -> int:
    try:
        rows = measure(
            args.gateway,
            args.bootstrap,
            args.concurrency,
            args.events,
            args.batch,
            args.timeout_s,
        )
    except BenchError as exc:
        sys.stderr.write(f"styleloop bench ingest: {exc}\n")
        return 2
    except Exception as exc:  # noqa: BLE001 - one line for any failure to reach the stack
        sys.stderr.write(
            f"styleloop bench ingest: {type(exc).__name__}: {exc} (is `make up` running, "
            f"its gateway at {args.gateway} and its broker at {args.bootstrap}?)\n"
        )
        return 2
    out = sys.stdout
    out.write(
        f"feedback ingest, {os.cpu_count()} CPUs, {args.events} events per level in batches "
        f"of {args.batch}, acks=all\n"
    )
    out.write(
        f"{'path':<14}{'conc':>5}{'events/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'spooled':>8}"
        f"{'delivered':>10}{'lost':>6}{'dup':>5}{'gen cpu s':>10}\n"
    )
    for row in rows:
        if row["path"] == "gateway":
            out.write(
                f"{row['path']:<14}{row['concurrency']:>5}{row['events_per_s']:>10.0f}"
                f"{row['batch_p50_ms']:>9.1f}{row['batch_p99_ms']:>9.1f}"
                f"{row['spooled_batches']:>8}{row['delivered']:>10}{row['lost']:>6}"
                f"{row['duplicates']:>5}{row['generator_cpu_s']:>10.1f}\n"
            )
        else:
            out.write(f"{row['path']:<14}{row['concurrency']:>5}{row['events_per_s']:>10.0f}\n")
    gateway_rows = [r for r in rows if r["path"] == "gateway"]
    direct_rows = [r for r in rows if r["path"] != "gateway"]
    best = max(gateway_rows, key=lambda r: r["events_per_s"])
    lost = sum(r["lost"] for r in gateway_rows)
    headline = [
        f"gateway batch endpoint: {best['events_per_s']:,.0f} events/s at concurrency "
        f"{best['concurrency']} (goal >= 20,000), {lost} lost of "
        f"{sum(r['events'] for r in gateway_rows):,} accepted (goal 0)",
    ]
    for g, d in zip(gateway_rows, direct_rows, strict=True):
        headline.append(
            f"concurrency {g['concurrency']}: gateway / direct Kafka producer = "
            f"{g['events_per_s'] / d['events_per_s']:.2f}x "
            f"({g['events_per_s']:,.0f} vs {d['events_per_s']:,.0f} events/s)"
        )
    for line in headline:
        out.write(line + "\n")
    if args.results is not None:
        written = report.write(
            args.results,
            "ingest",
            {"rows": rows, "batch": args.batch},
            headline,
            report.Chart(
                "feedback events/s: gateway vs direct Kafka producer",
                "events/s",
                [f"c={r['concurrency']}" for r in gateway_rows],
                {
                    "gateway /v1/feedback": [r["events_per_s"] for r in gateway_rows],
                    "direct Kafka producer": [r["events_per_s"] for r in direct_rows],
                },
            ),
        )
        out.write(f"wrote {written}\n")
    return 0 if lost == 0 else 1


def register(commands: Any) -> None:
    """``styleloop bench ingest``."""
    from styleloop.cli import counts, positive

    parser = add_command(
        commands,
        "ingest",
        __doc__,
        help="feedback events/s through the gateway into Kafka (acks=all), every id read back",
    )
    gateway_argument(parser)
    bootstrap_argument(parser)
    parser.add_argument(
        "--concurrency",
        type=counts,
        default=[1, 8, 32],
        help="batches in flight, comma-separated levels (default 1,8,32)",
    )
    parser.add_argument("--events", type=positive, default=20_000, help="per level (20000)")
    parser.add_argument(
        "--batch", type=lambda t: min(100, positive(t)), default=100, help="per POST (100)"
    )
    parser.add_argument(
        "--timeout-s", type=float, default=60.0, help="reading the ids back, at most (60)"
    )
    report_argument(parser)
    parser.set_defaults(func=main)
