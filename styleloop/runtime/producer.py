"""Events into Kafka with nothing lost (the gateway's feedback, the llm's chat turns).

Events are produced with ``acks=all``, keyed by user id. When the broker cannot take
them, they are appended to a durable spool (:mod:`styleloop.runtime.spool`, SQLite with
every append fsynced) and the caller still succeeds; a background task replays the spool
in bounded chunks, in order, once the broker is back, forgetting each chunk only once it
was acknowledged. While the spool holds anything, new events join its end, so order per
user is kept. Delivery is at least once (a crash mid-chunk re-sends that chunk):
consumers de-duplicate by ``event_id``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from prometheus_client import Counter, Gauge

from styleloop.runtime.spool import Record, Spool

log = logging.getLogger(__name__)

PRODUCED = Counter("styleloop_events_produced_total", "Events the broker acknowledged.", ["topic"])
SPOOLED = Counter("styleloop_events_spooled_total", "Events written to the spool.", ["topic"])
SPOOL_DEPTH = Gauge("styleloop_events_spool_events", "Events waiting in the spool.", ["topic"])


def reachable(bootstrap: str, timeout_s: float) -> bool:
    """Whether any bootstrap server accepts a TCP connection. kafka-python's bootstrap
    waits ~30 s for an unreachable broker whatever the timeouts say; a plain connect
    answers at once."""
    for server in bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            socket.create_connection((host, int(port)), timeout=timeout_s).close()
            return True
        except (OSError, ValueError):
            continue
    return False


class DurableProducer:
    def __init__(
        self,
        bootstrap: str,
        topic: str,
        spool_dir: Path,
        timeout_s: float,
        interval_s: float,
        chunk_size: int = 1000,
        name: str = "feedback",
        group_max: int = 5000,
    ) -> None:
        self.bootstrap, self.topic, self.timeout_s, self.interval_s = (
            bootstrap,
            topic,
            timeout_s,
            interval_s,
        )
        self.chunk_size = chunk_size
        self.spool = Spool(spool_dir, name)
        self._producer: Any = None
        # Serialises the decision "spool or produce" of the flusher and the replayer.
        self._lock = asyncio.Lock()
        # Publishes waiting for the flusher (group commit), in arrival order.
        self._queue: collections.deque[tuple[list[Record], asyncio.Future[bool]]] = (
            collections.deque()
        )
        self._flusher: asyncio.Task[None] | None = None
        self.group_max = group_max
        self._kafka = ThreadPoolExecutor(1, thread_name_prefix="kafka")
        self._disk = ThreadPoolExecutor(1, thread_name_prefix="spool")
        self._replayer: asyncio.Task[None] | None = None
        depth = self.spool.count()
        self._pending = depth > 0  # new events join the spool's end while it holds any
        SPOOL_DEPTH.labels(self.topic).set(depth)

    # ---------------------------------------------------------------- broker side (thread)

    def _connect(self) -> Any:
        from kafka import KafkaAdminClient, KafkaProducer
        from kafka.admin import NewTopic
        from kafka.errors import TopicAlreadyExistsError

        timeout_ms = int(self.timeout_s * 1000)
        if not reachable(self.bootstrap, self.timeout_s):
            raise ConnectionError(f"no Kafka broker reachable at {self.bootstrap}")
        admin = KafkaAdminClient(
            bootstrap_servers=self.bootstrap,
            request_timeout_ms=timeout_ms,
            client_id="styleloop-gateway",
        )
        try:
            admin.create_topics([NewTopic(self.topic, num_partitions=1, replication_factor=1)])
        except TopicAlreadyExistsError:
            pass
        finally:
            admin.close()
        return KafkaProducer(
            bootstrap_servers=self.bootstrap,
            acks="all",
            retries=3,
            # Every publish ends in flush(), which sends at once whatever linger says; a
            # long linger only keeps the sender thread from waking (and cutting a new
            # record batch) on each send() of a group.
            linger_ms=1000,
            batch_size=512 * 1024,  # a group of feedback in a few record batches, not 80s
            request_timeout_ms=timeout_ms,
            max_block_ms=timeout_ms,
            client_id="styleloop-gateway",
        )

    def _produce(self, records: list[Record]) -> None:
        """Every record acknowledged, or an exception (and a fresh connection next time)."""
        try:
            if self._producer is None:
                self._producer = self._connect()
            futures = [self._producer.send(self.topic, key=k, value=v) for k, v in records]
            self._producer.flush(timeout=self.timeout_s)
            for future in futures:
                future.get(timeout=self.timeout_s)
        except Exception:
            if self._producer is not None:
                with contextlib.suppress(Exception):  # closing a broken producer
                    self._producer.close(timeout=0)
            self._producer = None
            raise

    # ---------------------------------------------------------------- async API

    async def _spool(self, call: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._disk, call, *args)

    async def _append(self, records: list[Record]) -> None:
        await self._spool(self.spool.append, records)
        SPOOLED.labels(self.topic).inc(len(records))
        SPOOL_DEPTH.labels(self.topic).inc(len(records))

    async def publish(self, records: list[Record]) -> bool:
        """Returns True when the records went to the spool instead of the broker.

        Group commit: publishes that arrive while one is in flight wait in a queue, and
        the one flusher task sends everything queued in one produce (one round trip,
        one ``acks=all`` wait) once the broker has answered the previous group. Groups go
        strictly one after another, in arrival order, so one user's events reach Kafka
        in the order accepted. A caller that goes away (a cancelled request) does not
        cancel the flush its records are part of."""
        waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._queue.append((records, waiter))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush())
        return await asyncio.shield(waiter)

    async def _flush(self) -> None:
        while self._queue:
            batch: list[Record] = []
            group: list[asyncio.Future[bool]] = []
            while self._queue and (
                not group or len(batch) + len(self._queue[0][0]) <= self.group_max
            ):
                records, waiter = self._queue.popleft()
                batch.extend(records)
                group.append(waiter)
            try:
                spooled = await self._publish_group(batch)
            except asyncio.CancelledError:  # stopping: nobody is told "accepted"
                for waiter in group:
                    waiter.cancel()
                raise
            except Exception as exc:  # noqa: BLE001 - the spool failed: every caller hears it
                for waiter in group:
                    if not waiter.done():
                        waiter.set_exception(exc)
                continue
            for waiter in group:
                if not waiter.done():
                    waiter.set_result(spooled)

    async def _publish_group(self, records: list[Record]) -> bool:
        """The whole decision — behind earlier spooled events, or straight to the broker
        and spooled if it fails — under one lock shared with the replayer."""
        loop = asyncio.get_running_loop()
        async with self._lock:
            if self._pending:  # behind earlier events: keep the order
                await self._append(records)
                return True
            try:
                # Bounded: a request never waits on the broker for long. A late success
                # after the spool took the events only means a duplicate, which consumers
                # drop by id; it still comes before anything spooled after it.
                await asyncio.wait_for(
                    loop.run_in_executor(self._kafka, self._produce, records), 3 * self.timeout_s
                )
            except Exception as exc:  # noqa: BLE001 - any broker failure: keep the events
                log.warning("broker unavailable; spooling feedback", extra={"error": repr(exc)})
                await self._append(records)
                self._pending = True
                return True
        PRODUCED.labels(self.topic).inc(len(records))
        return False

    async def replay_once(self) -> int:
        """Deliver the oldest chunk of the spool, in order; returns how many (0 when the
        spool is empty or the broker still unreachable). New events keep joining the
        spool meanwhile; a chunk is forgotten only once the broker acknowledged all of it."""
        chunk = await self._spool(self.spool.head, self.chunk_size)
        if not chunk:
            async with self._lock:  # nothing spooled arrived since the read: direct again
                if not await self._spool(self.spool.head, 1):
                    self._pending = False
                    SPOOL_DEPTH.labels(self.topic).set(0)
            return 0
        records = [(e.key, e.value) for e in chunk]
        try:
            await asyncio.get_running_loop().run_in_executor(self._kafka, self._produce, records)
        except Exception:  # noqa: BLE001 - still down; try again later
            return 0
        await self._spool(self.spool.delete_through, chunk[-1].seq)
        SPOOL_DEPTH.labels(self.topic).dec(len(records))
        PRODUCED.labels(self.topic).inc(len(records))
        log.info("spooled feedback delivered", extra={"events": len(records)})
        return len(records)

    async def drain(self) -> None:
        """Replay chunk after chunk until the spool is empty or the broker fails."""
        while await self.replay_once():
            pass

    def start(self) -> None:
        async def loop() -> None:
            while True:
                await asyncio.sleep(self.interval_s)
                try:
                    await self.drain()
                except Exception as exc:  # noqa: BLE001 - the replayer must never die
                    log.error("spool replay failed; retrying", exc_info=exc)

        self._replayer = asyncio.get_running_loop().create_task(loop())

    async def stop(self) -> None:
        if self._flusher is not None:  # what was accepted for publishing gets its answer
            await asyncio.gather(self._flusher, return_exceptions=True)
        if self._replayer is not None:
            self._replayer.cancel()
            await asyncio.gather(self._replayer, return_exceptions=True)
        if self._producer is not None:
            producer = self._producer
            await asyncio.get_running_loop().run_in_executor(
                self._kafka, lambda: producer.close(timeout=self.timeout_s)
            )
        self._kafka.shutdown(wait=False)
        await self._spool(self.spool.close)
        self._disk.shutdown(wait=False)
