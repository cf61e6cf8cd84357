"""The one closed-loop load generator every benchmark drives its calls with."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence

Call = Callable[[int], Awaitable[object]]


async def closed_loop(call: Call, requests: int, concurrency: int) -> tuple[float, list[float]]:
    """``requests`` calls ``call(0..requests-1)``, ``concurrency`` in flight at a time.

    Returns the wall time in seconds and each call's latency in seconds.
    """
    latencies: list[float] = []
    issued = 0

    async def worker() -> None:
        nonlocal issued
        while issued < requests:
            index = issued
            issued += 1
            started = time.perf_counter()
            await call(index)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started, latencies


def quantiles(values: Sequence[float]) -> dict[str, float]:
    """p50, p95, p99 and max of a sample (nearest rank); empty for no values."""
    ordered = sorted(values)
    if not ordered:
        return {}

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {"p50": at(0.5), "p95": at(0.95), "p99": at(0.99), "max": ordered[-1]}
