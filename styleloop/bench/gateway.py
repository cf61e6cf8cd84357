"""`styleloop bench gateway`: what the HTTP gateway adds to a request, measured beside the
same request sent to the service over gRPC directly.

Against a running stack (`make up`, started with ``SERVICE_TOKEN`` set so this process can
call the services too): for text search (``POST /v1/search/text`` vs the recommender's
``SearchByText``), photo search (``POST /v1/search/image``, a multipart upload of a catalog
photo, vs ``SearchByImage`` with the same bytes) and recommendations
(``POST /v1/recommendations`` vs ``GetRecommendations``), at each ``--concurrency`` level,
the two paths alternate for ``--rounds`` rounds of ``--requests`` requests each (the same
request bodies, asyncio clients in this process, loopback only). Printed per path and
level: requests/s and p50 / p99 latency; and the overhead ratio gateway p50 / direct p50,
the median over rounds. Goal (issue 18): gateway <= 1.5x the direct gRPC time at
concurrency 8.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from styleloop.bench import report
from styleloop.bench.load import Call, closed_loop, quantiles
from styleloop.bench.report import report_argument
from styleloop.commands import add_command, gateway_argument

QUERIES = (
    "black leather shoes",
    "red floral summer dress",
    "blue denim jeans",
    "white cotton shirt",
    "brown leather bag",
    "sports watch",
    "grey hoodie",
    "running shoes for men",
)


async def drive(call: Call, requests: int, concurrency: int) -> dict[str, float]:
    """``requests`` calls, ``concurrency`` at a time: requests/s and latency percentiles."""
    wall, latencies = await closed_loop(call, requests, concurrency)
    seconds = quantiles(latencies)
    return {
        "requests_per_s": len(latencies) / wall,
        "p50_ms": seconds["p50"] * 1000,
        "p99_ms": seconds["p99"] * 1000,
    }


def _image_type(data: bytes) -> str:
    if data[:3] == b"\xff\xd8\xff":
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return "image/png"


def _paths(
    client: Any, stub: Any, user: str, images: Sequence[bytes]
) -> dict[str, dict[str, Call]]:
    from styleloop.v1 import recommender_pb2

    async def http_search(i: int) -> None:
        body = {"query": QUERIES[i % len(QUERIES)], "page_size": 10}
        (await client.post("/v1/search/text", json=body)).raise_for_status()

    async def grpc_search(i: int) -> None:
        request = recommender_pb2.SearchByTextRequest(query=QUERIES[i % len(QUERIES)], page_size=10)
        await stub.SearchByText(request, timeout=30)

    async def http_recommend(_: int) -> None:
        body = {"user_id": user, "page_size": 10}
        (await client.post("/v1/recommendations", json=body)).raise_for_status()

    async def grpc_recommend(_: int) -> None:
        request = recommender_pb2.GetRecommendationsRequest(user_id=user, page_size=10)
        await stub.GetRecommendations(request, timeout=30)

    async def http_photo(i: int) -> None:
        data = images[i % len(images)]
        files = {"image": ("photo", data, _image_type(data))}
        (await client.post("/v1/search/image?page_size=10", files=files)).raise_for_status()

    async def grpc_photo(i: int) -> None:
        request = recommender_pb2.SearchByImageRequest(image=images[i % len(images)], page_size=10)
        await stub.SearchByImage(request, timeout=30)

    return {
        "text search": {"gateway": http_search, "direct gRPC": grpc_search},
        "photo search": {"gateway": http_photo, "direct gRPC": grpc_photo},
        "recommendations": {"gateway": http_recommend, "direct gRPC": grpc_recommend},
    }


async def measure(
    gateway: str,
    recommender: str,
    token: str,
    concurrencies: Sequence[int],
    requests: int,
    rounds: int,
    images: Sequence[bytes],
) -> list[dict[str, Any]]:
    import httpx

    from styleloop.runtime.auth import aio_channel
    from styleloop.v1 import recommender_pb2, recommender_pb2_grpc

    limits = httpx.Limits(max_connections=max(concurrencies), max_keepalive_connections=64)
    rows: list[dict[str, Any]] = []
    async with (
        httpx.AsyncClient(base_url=gateway, timeout=30, limits=limits) as client,
        aio_channel(recommender, token) as channel,
    ):
        stub = recommender_pb2_grpc.RecommenderServiceStub(channel)
        # A shopper with some history, so that recommendations have something to work from.
        page = await stub.SearchByText(
            recommender_pb2.SearchByTextRequest(query=QUERIES[0], page_size=3), timeout=30
        )
        user = f"bench-gateway-{os.getpid()}"
        liked = [r.item.item_id for r in page.results]
        if not liked:
            raise RuntimeError("the recommender has no items: ingest a catalog first (make up)")
        events = [{"user_id": user, "item_id": item_id, "kind": "like"} for item_id in liked]
        (await client.post("/v1/feedback", json={"events": events})).raise_for_status()
        paths = _paths(client, stub, user, images)
        for calls in paths.values():  # one untimed pass of each path
            for call in calls.values():
                await drive(call, 16, 4)
        for operation, calls in paths.items():
            for concurrency in concurrencies:
                for round_number in range(rounds):
                    for path, call in calls.items():
                        figures = await drive(call, requests, concurrency)
                        rows.append(
                            {
                                "operation": operation,
                                "path": path,
                                "concurrency": concurrency,
                                "round": round_number,
                                "requests": requests,
                                **figures,
                            }
                        )
    return rows


def overheads(rows: Sequence[dict[str, Any]]) -> dict[tuple[str, int], list[float]]:
    """Gateway p50 over direct p50, one ratio per (operation, concurrency) and round."""
    by_key: dict[tuple[str, int, int], dict[str, float]] = {}
    for row in rows:
        key = (row["operation"], row["concurrency"], row["round"])
        by_key.setdefault(key, {})[row["path"]] = row["p50_ms"]
    ratios: dict[tuple[str, int], list[float]] = {}
    for (operation, concurrency, _), paths in sorted(by_key.items()):
        if {"gateway", "direct gRPC"} <= set(paths):
            ratios.setdefault((operation, concurrency), []).append(
                paths["gateway"] / paths["direct gRPC"]
            )
    return ratios


def _median(rows: Sequence[dict[str, Any]], name: str) -> float:
    return float(statistics.median(row[name] for row in rows))


def main(args: argparse.Namespace) -> int:
    from styleloop.bench.encoder import load_images
    from styleloop.catalog import configured_catalog

    token = os.environ.get("SERVICE_TOKEN", "")
    images = load_images(configured_catalog(args.catalog), 32)
    try:
        rows = asyncio.run(
            measure(
                args.gateway,
                args.recommender,
                token,
                args.concurrency,
                args.requests,
                args.rounds,
                images,
            )
        )
    except Exception as exc:  # noqa: BLE001 - one line for any failure to reach the stack
        sys.stderr.write(
            f"styleloop bench gateway: {type(exc).__name__}: {exc} (is `make up` running, "
            "with SERVICE_TOKEN set for both?)\n"
        )
        return 2
    out = sys.stdout
    out.write(
        f"gateway {args.gateway} vs recommender {args.recommender} over gRPC, "
        f"{os.cpu_count()} CPUs, {args.requests} requests x {args.rounds} rounds per level, "
        "medians over rounds\n"
    )
    out.write(f"{'operation':<16}{'path':<13}{'conc':>5}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}\n")
    groups: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["operation"], row["path"], row["concurrency"]), []).append(row)
    medians: list[dict[str, Any]] = []
    for (operation, path, concurrency), group in groups.items():
        median: dict[str, Any] = {
            "operation": operation,
            "path": path,
            "concurrency": concurrency,
            **{k: _median(group, k) for k in ("requests_per_s", "p50_ms", "p99_ms")},
        }
        medians.append(median)
        out.write(
            f"{operation:<16}{path:<13}{concurrency:>5}{median['requests_per_s']:>9.1f}"
            f"{median['p50_ms']:>9.2f}{median['p99_ms']:>9.2f}\n"
        )
    headline = []
    ratios = overheads(rows)
    for (operation, concurrency), values in ratios.items():
        goal = " (goal <= 1.5x at concurrency 8)" if concurrency == 8 else ""
        line = (
            f"{operation}, concurrency {concurrency}: gateway p50 / direct gRPC p50 = "
            f"{statistics.median(values):.2f}x (rounds {min(values):.2f}-{max(values):.2f}){goal}"
        )
        headline.append(line)
        out.write(line + "\n")
    if args.results is not None:
        labels = sorted({(m["operation"], m["concurrency"]) for m in medians})
        written = report.write(
            args.results,
            "gateway",
            {
                "rows": rows,
                "medians": medians,
                "overheads": {f"{k[0]} c={k[1]}": v for k, v in ratios.items()},
            },
            headline,
            report.Chart(
                "p50 latency: gateway vs recommender over gRPC",
                "ms",
                [f"{op} c={c}" for op, c in labels],
                {
                    path: [
                        next(
                            (
                                m["p50_ms"]
                                for m in medians
                                if (m["operation"], m["concurrency"], m["path"]) == (*k, path)
                            ),
                            None,
                        )
                        for k in labels
                    ]
                    for path in ("gateway", "direct gRPC")
                },
            ),
        )
        out.write(f"wrote {written}\n")
    return 0


def register(commands: Any) -> None:
    """``styleloop bench gateway``."""
    from styleloop.cli import counts, positive

    parser = add_command(
        commands,
        "gateway",
        __doc__,
        help="HTTP gateway vs direct gRPC: requests/s, p50/p99 at concurrency 1, 8, 32",
    )
    gateway_argument(parser)
    parser.add_argument(
        "--recommender", default="127.0.0.1:50052", help="recommender gRPC address (up: base+1)"
    )
    parser.add_argument(
        "--concurrency",
        type=counts,
        default=[1, 8, 32],
        help="levels, comma-separated (default 1,8,32)",
    )
    parser.add_argument("--requests", type=positive, default=200, help="per level and round")
    parser.add_argument("--rounds", type=positive, default=3, help="alternating rounds (3)")
    parser.add_argument(
        "--catalog",
        type=Path,
        help="sample data folder whose photos photo search uploads "
        "(default: $STYLELOOP_DATA_DIR; drawn images when absent)",
    )
    report_argument(parser)
    parser.set_defaults(func=main)
