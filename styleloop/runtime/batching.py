"""Dynamic micro-batching, the way Triton's dynamic batcher does it.

Concurrent callers submit items; a worker gathers them until ``max_batch_size`` items
are waiting or the oldest has waited ``max_wait_s``, runs the batch once in a worker
thread, and hands each caller exactly its own rows; a batch that fails (or whose runner
returns the wrong number of rows) fails only its own callers, and the worker goes on. The
queue is bounded: past ``max_queue_items`` waiting items a submission is refused at once
(RESOURCE_EXHAUSTED) instead of growing without limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from prometheus_client import Counter, Gauge, Histogram

from styleloop.runtime.errors import ResourceExhausted, Unavailable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchMetrics:
    """One service's batching metrics, labelled by modality (image, text …)."""

    batch_size: Histogram
    queue_wait: Histogram
    inference: Histogram
    queue_depth: Gauge
    refused: Counter


_METRICS: dict[str, BatchMetrics] = {}


def batch_metrics(service: str) -> BatchMetrics:
    """``<service>_batch_size``, ``_queue_wait_seconds``, ``_inference_seconds``,
    ``_queue_items`` and ``_queue_refused_items_total``; created once per process."""
    if service not in _METRICS:
        _METRICS[service] = BatchMetrics(
            Histogram(
                f"{service}_batch_size",
                "Items per inference batch.",
                ["modality"],
                buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            ),
            Histogram(
                f"{service}_queue_wait_seconds",
                "Time an item waited in the batching queue, in seconds.",
                ["modality"],
                buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
            ),
            Histogram(
                f"{service}_inference_seconds",
                "Time one inference batch took, in seconds.",
                ["modality"],
                buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            ),
            Gauge(f"{service}_queue_items", "Items waiting to be batched.", ["modality"]),
            Counter(
                f"{service}_queue_refused_items_total",
                "Items refused because the queue was full.",
                ["modality"],
            ),
        )
    return _METRICS[service]


class Admission:
    """A bound on items in one stage (decoding, say) over all requests at once: a request
    that would pass it is refused at once (RESOURCE_EXHAUSTED) instead of queueing."""

    def __init__(self, service: str, stage: str, limit: int) -> None:
        self.service, self.stage, self.limit = service, stage, limit
        self.inside = 0
        self.refused = _refused_counter(service)

    @contextlib.contextmanager
    def take(self, count: int) -> Iterator[None]:
        if self.inside + count > self.limit:
            self.refused.labels(self.stage).inc(count)
            raise ResourceExhausted(
                f"the {self.service} has {self.inside} items {self.stage}; retry with backoff",
                reason=f"{self.service.upper()}_BUSY",
            )
        self.inside += count
        try:
            yield
        finally:
            self.inside -= count


_REFUSED: dict[str, Counter] = {}


def _refused_counter(service: str) -> Counter:
    if service not in _REFUSED:
        _REFUSED[service] = Counter(
            f"{service}_admission_refused_items_total",
            "Items refused because a stage was full.",
            ["stage"],
        )
    return _REFUSED[service]


In = TypeVar("In")
Out = TypeVar("Out")


@dataclass
class _Pending(Generic[In, Out]):
    item: In
    future: asyncio.Future[Out]
    enqueued: float = field(default_factory=time.perf_counter)


class MicroBatcher(Generic[In, Out]):
    """Gathers items of concurrent requests into batches for ``run_batch``.

    ``run_batch`` receives a list of items and returns one result (an array row, a
    caption …) per item; it runs in a dedicated thread, one batch at a time.
    """

    def __init__(
        self,
        service: str,
        modality: str,
        run_batch: Callable[[list[In]], Sequence[Out]],
        *,
        max_batch_size: int,
        max_wait_s: float,
        max_queue_items: int,
    ) -> None:
        self.service, self.modality = service, modality
        self.metrics = batch_metrics(service)
        self.run_batch = run_batch
        self.max_batch_size = max(1, max_batch_size)
        self.max_wait_s = max(0.0, max_wait_s)
        self.max_queue_items = max_queue_items
        self._queue: deque[_Pending[In, Out]] = deque()
        self._arrived = asyncio.Event()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"infer-{modality}")
        self._worker: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
            self._worker = None
        for pending in self._queue:
            if not pending.future.done():
                pending.future.set_exception(Unavailable(f"the {self.service} is shutting down"))
        self._queue.clear()
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def submit(self, items: Sequence[In]) -> list[Out]:
        """Queue ``items`` and wait for their rows, in order."""
        if not items:
            return []
        if len(self._queue) + len(items) > self.max_queue_items:
            self.metrics.refused.labels(self.modality).inc(len(items))
            raise ResourceExhausted(
                f"the {self.service}'s {self.modality} queue is full "
                f"({len(self._queue)} items waiting); retry with backoff",
                reason=f"{self.service.upper()}_QUEUE_FULL",
            )
        loop = asyncio.get_running_loop()
        pendings = [_Pending(item, loop.create_future()) for item in items]
        self._queue.extend(pendings)
        self.metrics.queue_depth.labels(self.modality).set(len(self._queue))
        self._arrived.set()
        return list(await asyncio.gather(*(p.future for p in pendings)))

    async def _next_batch(self) -> list[_Pending[In, Out]]:
        while not self._queue:
            self._arrived.clear()
            await self._arrived.wait()
        deadline = self._queue[0].enqueued + self.max_wait_s
        while len(self._queue) < self.max_batch_size:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                break
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                break
        count = min(self.max_batch_size, len(self._queue))
        batch = [self._queue.popleft() for _ in range(count)]
        self.metrics.queue_depth.labels(self.modality).set(len(self._queue))
        return [p for p in batch if not p.future.cancelled()]

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch()
            if not batch:
                continue
            started = time.perf_counter()
            for pending in batch:
                self.metrics.queue_wait.labels(self.modality).observe(started - pending.enqueued)
            self.metrics.batch_size.labels(self.modality).observe(len(batch))
            try:
                rows = await loop.run_in_executor(
                    self._executor, self.run_batch, [p.item for p in batch]
                )
                if len(rows) != len(batch):
                    raise RuntimeError(f"the runner gave {len(rows)} rows for {len(batch)} items")
            except Exception as exc:  # noqa: BLE001 - every caller of the batch is told
                log.error(
                    "inference failed",
                    exc_info=exc,
                    extra={"service": self.service, "modality": self.modality},
                )
                for pending in batch:
                    if not pending.future.done():
                        pending.future.set_exception(
                            Unavailable("inference failed; retry", reason="INFERENCE_FAILED")
                        )
                continue
            self.metrics.inference.labels(self.modality).observe(time.perf_counter() - started)
            for pending, row in zip(batch, rows, strict=True):  # lengths checked above
                if not pending.future.done():
                    pending.future.set_result(row)
