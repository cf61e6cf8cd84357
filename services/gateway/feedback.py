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
import socket
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
        # The batch a replay is delivering; it comes before the spool (a crash mid-replay
        # leaves it, and it is delivered first next time).
        self.replaying = spool_dir / "feedback.replaying"
        self._producer: Any = None
        self._lock = asyncio.Lock()  # guards the two files, never held while producing
        self._kafka = ThreadPoolExecutor(1, thread_name_prefix="kafka")
        self._replayer: asyncio.Task[None] | None = None
        SPOOL_DEPTH.set(len(self._read(self.replaying)) + len(self._read(self.spool)))

    # ---------------------------------------------------------------- broker side (thread)

    def _connect(self) -> Any:
        from kafka import KafkaAdminClient, KafkaProducer
        from kafka.admin import NewTopic
        from kafka.errors import TopicAlreadyExistsError

        timeout_ms = int(self.timeout_s * 1000)
        # kafka-python's bootstrap waits ~30 s for an unreachable broker whatever the
        # timeouts say; a plain connect answers at once.
        for server in self.bootstrap.split(","):
            host, _, port = server.strip().rpartition(":")
            try:
                socket.create_connection((host, int(port)), timeout=self.timeout_s).close()
                break
            except OSError:
                continue
        else:
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

    @staticmethod
    def _read(path: Path) -> list[Record]:
        if not path.is_file():
            return []
        records = []
        with path.open(encoding="ascii") as handle:
            for line in handle:
                try:
                    entry = json.loads(line)
                    records.append((base64.b64decode(entry["k"]), base64.b64decode(entry["v"])))
                except (ValueError, KeyError):
                    continue  # a line cut by a crash mid-write: it was never acknowledged
        return records

    @staticmethod
    def _write(path: Path, records: list[Record], mode: str = "a") -> None:
        with path.open(mode, encoding="ascii") as handle:
            for key, value in records:
                entry = {"k": base64.b64encode(key).decode(), "v": base64.b64encode(value).decode()}
                handle.write(json.dumps(entry) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def _pending(self) -> bool:
        return self.replaying.exists() or (self.spool.exists() and self.spool.stat().st_size > 0)

    async def _append(self, records: list[Record]) -> None:
        await asyncio.to_thread(self._write, self.spool, records)
        SPOOLED.inc(len(records))
        SPOOL_DEPTH.inc(len(records))

    # ---------------------------------------------------------------- async API

    async def publish(self, records: list[Record]) -> bool:
        """Returns True when the records went to the spool instead of the broker."""
        async with self._lock:
            if self._pending():  # behind earlier events: keep the order
                await self._append(records)
                return True
        loop = asyncio.get_running_loop()
        try:
            # Bounded: a request never waits on the broker for long. A late success after
            # the spool took the events only means a duplicate, which consumers drop by id.
            await asyncio.wait_for(
                loop.run_in_executor(self._kafka, self._produce, records), 3 * self.timeout_s
            )
        except Exception as exc:  # noqa: BLE001 - any broker failure: keep the events
            log.warning("broker unavailable; spooling feedback", extra={"error": repr(exc)})
            async with self._lock:
                await self._append(records)
            return True
        PRODUCED.inc(len(records))
        return False

    async def replay_once(self) -> int:
        """Deliver what is spooled, in order; returns how many (0 when the broker is
        still unreachable). New events keep joining the spool meanwhile."""
        async with self._lock:
            if not self.replaying.exists():
                if not (self.spool.exists() and self.spool.stat().st_size > 0):
                    return 0
                os.replace(self.spool, self.replaying)  # take the batch; the spool restarts
            records = await asyncio.to_thread(self._read, self.replaying)
        try:
            await asyncio.get_running_loop().run_in_executor(self._kafka, self._produce, records)
        except Exception:  # noqa: BLE001 - still down; try again later
            return 0
        async with self._lock:
            self.replaying.unlink(missing_ok=True)
            SPOOL_DEPTH.set(len(await asyncio.to_thread(self._read, self.spool)))
        PRODUCED.inc(len(records))
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
                self._kafka, lambda: producer.close(timeout=self.timeout_s)
            )
        self._kafka.shutdown(wait=False)
