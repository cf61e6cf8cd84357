"""Feedback events into Kafka with nothing lost.

Events are produced with ``acks=all``, keyed by user id. When the broker cannot take
them, they are appended to a durable spool (fsynced) and the caller still succeeds; a
background task replays the spool, in order, once the broker is back. While the spool
holds anything, new events join its end, so order per producer is kept. Delivery is
at least once: consumers de-duplicate by ``event_id``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from prometheus_client import Counter, Gauge

log = logging.getLogger(__name__)

PRODUCED = Counter("gateway_feedback_produced_total", "Feedback events the broker acknowledged.")
SPOOLED = Counter("gateway_feedback_spooled_total", "Feedback events written to the spool.")
SPOOL_DEPTH = Gauge("gateway_feedback_spool_events", "Feedback events waiting in the spool.")

Record = tuple[bytes, bytes]  # (key, value)


class FeedbackSink:
    def __init__(
        self, bootstrap: str, topic: str, spool_dir: Path, timeout_s: float, interval_s: float
    ) -> None:
        self.bootstrap, self.topic, self.timeout_s, self.interval_s = (
            bootstrap,
            topic,
            timeout_s,
            interval_s,
        )
        spool_dir.mkdir(parents=True, exist_ok=True)
        self.spool = spool_dir / "feedback.spool"
        self._producer: Any = None
        self._lock = asyncio.Lock()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="kafka")
        self._replayer: asyncio.Task[None] | None = None
        SPOOL_DEPTH.set(len(self._read_spool()))

    # ---------------------------------------------------------------- broker side (thread)

    def _connect(self) -> Any:
        from kafka import KafkaAdminClient, KafkaProducer
        from kafka.admin import NewTopic
        from kafka.errors import TopicAlreadyExistsError

        timeout_ms = int(self.timeout_s * 1000)
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
            linger_ms=0,
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

    # ---------------------------------------------------------------- spool

    def _read_spool(self) -> list[Record]:
        if not self.spool.is_file():
            return []
        records = []
        with self.spool.open(encoding="ascii") as handle:
            for line in handle:
                try:
                    entry = json.loads(line)
                    records.append((base64.b64decode(entry["k"]), base64.b64decode(entry["v"])))
                except (ValueError, KeyError):
                    continue  # a line cut by a crash mid-write: it was never acknowledged
        return records

    def _append_spool(self, records: list[Record]) -> None:
        with self.spool.open("a", encoding="ascii") as handle:
            for key, value in records:
                entry = {"k": base64.b64encode(key).decode(), "v": base64.b64encode(value).decode()}
                handle.write(json.dumps(entry) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        SPOOLED.inc(len(records))
        SPOOL_DEPTH.inc(len(records))

    # ---------------------------------------------------------------- async API

    async def publish(self, records: list[Record]) -> bool:
        """Returns True when the records went to the spool instead of the broker."""
        loop = asyncio.get_running_loop()
        async with self._lock:
            if self.spool.is_file() and self.spool.stat().st_size > 0:
                await loop.run_in_executor(self._executor, self._append_spool, records)
                return True
            try:
                await loop.run_in_executor(self._executor, self._produce, records)
            except Exception as exc:  # noqa: BLE001 - any broker failure: keep the events
                log.warning("broker unavailable; spooling feedback", extra={"error": repr(exc)})
                await loop.run_in_executor(self._executor, self._append_spool, records)
                return True
        PRODUCED.inc(len(records))
        return False

    async def replay_once(self) -> int:
        """Deliver the whole spool in order; returns how many were delivered (0 on failure)."""
        loop = asyncio.get_running_loop()
        async with self._lock:
            records = await loop.run_in_executor(self._executor, self._read_spool)
            if not records:
                return 0
            try:
                await loop.run_in_executor(self._executor, self._produce, records)
            except Exception:  # noqa: BLE001 - still down; try again later
                return 0
            self.spool.unlink(missing_ok=True)
        PRODUCED.inc(len(records))
        SPOOL_DEPTH.set(0)
        log.info("spooled feedback delivered", extra={"events": len(records)})
        return len(records)

    def start(self) -> None:
        async def loop() -> None:
            while True:
                await asyncio.sleep(self.interval_s)
                await self.replay_once()

        self._replayer = asyncio.get_running_loop().create_task(loop())

    async def stop(self) -> None:
        if self._replayer is not None:
            self._replayer.cancel()
            await asyncio.gather(self._replayer, return_exceptions=True)
        if self._producer is not None:
            producer = self._producer
            await asyncio.get_running_loop().run_in_executor(
                self._executor, lambda: producer.close(timeout=self.timeout_s)
            )
        self._executor.shutdown(wait=False)
