"""The trainer's Kafka side: one kafka-python consumer in the ``GROUP_ID`` group on the
feedback and chat-turn topics, with ``enable_auto_commit=False``.

A batch is handled event by event (:meth:`TrainerCore.handle` returns once an event's
effects are durable); a dead-lettered event is produced to ``DLQ_TOPIC`` (``acks=all``,
the reason and its origin in headers) before it counts as handled; then the offsets of
every handled event are committed. A crash anywhere before the commit re-delivers the
batch, and the ledger and the recommender both drop event ids they have seen. While the
broker is away the loop reconnects with backoff and resumes from the committed offsets.

Lag is exported per topic as the broker's high watermark minus the committed offset. The
high watermark is the one each fetch response carries (``KafkaConsumer.highwater``): on
Tansu, ``end_offsets()`` (ListOffsets, latest) answers 1 for a partition holding 5
records (tests/integration/test_trainer.py checks both), so it is not used.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from prometheus_client import Counter, Gauge

from services.trainer.core import Outcome, Stopping, TrainerCore
from styleloop.runtime.producer import reachable

log = logging.getLogger(__name__)

LAG = Gauge(
    "trainer_consumer_lag_events",
    "Events in the broker not yet committed by the trainer (high watermark - committed).",
    ["topic"],
)
DEAD_LETTERED = Counter(
    "trainer_dead_lettered_total",
    "Events sent to the dead-letter topic, by source topic.",
    ["topic"],
)
KAFKA_ERRORS = Counter(
    "trainer_kafka_errors_total", "Broker failures the consumer recovered from, by step.", ["step"]
)


class EventConsumer:
    def __init__(
        self,
        core: TrainerCore,
        *,
        bootstrap: str,
        group_id: str,
        dlq_topic: str,
        timeout_s: float,
        poll_max_records: int,
        poll_timeout_s: float,
        retry_initial_s: float,
        retry_max_s: float,
        lag_interval_s: float = 2.0,
    ) -> None:
        self.core = core
        self.bootstrap, self.group_id, self.dlq_topic = bootstrap, group_id, dlq_topic
        self.topics = [core.feedback_topic, core.chat_topic]
        self.timeout_s = timeout_s
        self.poll_max_records, self.poll_timeout_s = poll_max_records, poll_timeout_s
        self.retry_initial_s, self.retry_max_s = retry_initial_s, retry_max_s
        self._kafka = ThreadPoolExecutor(1, thread_name_prefix="kafka-consumer")
        self._consumer: Any = None
        self._producer: Any = None
        self._committed: dict[Any, int] = {}
        self.lag_interval_s = lag_interval_s
        self.batches = 0  # batches committed (for tests and logs)

    # ---------------------------------------------------------------- broker side (thread)

    def _connect(self) -> None:
        from kafka import KafkaAdminClient, KafkaConsumer
        from kafka.admin import NewTopic
        from kafka.errors import TopicAlreadyExistsError

        if not reachable(self.bootstrap, self.timeout_s):
            raise ConnectionError(f"no Kafka broker reachable at {self.bootstrap}")
        timeout_ms = int(self.timeout_s * 1000)
        admin = KafkaAdminClient(
            bootstrap_servers=self.bootstrap, request_timeout_ms=timeout_ms, client_id="trainer"
        )
        try:
            for topic in [*self.topics, self.dlq_topic]:
                with contextlib.suppress(TopicAlreadyExistsError):
                    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
        finally:
            admin.close()
        self._producer = self._make_producer()
        consumer = KafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=self.group_id,
            client_id="trainer",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=self.poll_max_records,
            request_timeout_ms=max(timeout_ms, 31000),
        )
        consumer.subscribe(self.topics)
        self._consumer = consumer
        self._committed = {}

    def _make_producer(self) -> Any:
        from kafka import KafkaProducer

        timeout_ms = int(self.timeout_s * 1000)
        return KafkaProducer(
            bootstrap_servers=self.bootstrap,
            acks="all",
            retries=3,
            request_timeout_ms=timeout_ms,
            max_block_ms=timeout_ms,
            client_id="trainer-dlq",
        )

    def _close(self) -> None:
        if self._consumer is not None:
            with contextlib.suppress(Exception):  # closing a broken client
                self._consumer.close(autocommit=False)
        if self._producer is not None:
            with contextlib.suppress(Exception):
                self._producer.close(timeout=0)
        self._consumer = self._producer = None

    def _poll(self) -> dict[Any, list[Any]]:
        if self._consumer is None:
            self._connect()
        records: dict[Any, list[Any]] = self._consumer.poll(
            timeout_ms=int(self.poll_timeout_s * 1000), max_records=self.poll_max_records
        )
        return records

    def _dead_letter(self, message: Any, reason: str) -> None:
        headers = [
            ("reason", reason.encode()[:1000]),
            ("source_topic", message.topic.encode()),
            ("source_partition", str(message.partition).encode()),
            ("source_offset", str(message.offset).encode()),
        ]
        if self._producer is None:
            if not reachable(self.bootstrap, self.timeout_s):
                raise ConnectionError(f"no Kafka broker reachable at {self.bootstrap}")
            self._producer = self._make_producer()
        future = self._producer.send(
            self.dlq_topic, key=message.key, value=message.value or b"", headers=headers
        )
        self._producer.flush(timeout=self.timeout_s)
        future.get(timeout=self.timeout_s)

    def _commit(self, offsets: dict[Any, int]) -> None:
        from kafka.structs import OffsetAndMetadata

        self._consumer.commit({tp: OffsetAndMetadata(o, "", -1) for tp, o in offsets.items()})
        self._committed.update(offsets)

    def _lag(self) -> dict[str, int]:
        lag: dict[str, int] = {}
        if self._consumer is None:
            return lag
        for tp in self._consumer.assignment():
            high = self._consumer.highwater(tp)
            if high is None:
                continue
            done = self._committed.get(tp)
            if done is None:
                done = self._consumer.committed(tp) or 0
                self._committed[tp] = done
            lag[tp.topic] = lag.get(tp.topic, 0) + max(0, high - done)
        return lag

    # ---------------------------------------------------------------- async loop

    async def _run(self, call: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._kafka, call, *args)

    async def run(self) -> None:
        """Until ``core.stopping`` is set; the batch in hand is committed as far as it
        was handled."""
        lag = asyncio.get_running_loop().create_task(self._lag_loop())
        try:
            await self._consume()
        finally:
            lag.cancel()
            await asyncio.gather(lag, return_exceptions=True)

    async def _consume(self) -> None:
        wait = self.retry_initial_s
        while not self.core.stopping.is_set():
            try:
                batch = await self._run(self._poll)
            except Exception as exc:  # noqa: BLE001 - broker away: reconnect with backoff
                KAFKA_ERRORS.labels("poll").inc()
                log.warning("broker unavailable; reconnecting", extra={"error": repr(exc)})
                await self._run(self._close)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.core.stopping.wait(), wait)
                wait = min(self.retry_max_s, wait * 2)
                continue
            wait = self.retry_initial_s
            if batch:
                await self._handle(batch)

    async def _handle(self, batch: dict[Any, list[Any]]) -> None:
        """Each event in turn, then one commit of what was handled. When an event fails
        unexpectedly, the consumer is closed after the commit, so that the next poll
        resumes from it (after a pause)."""
        offsets: dict[Any, int] = {}
        failed = False
        try:
            for tp, messages in batch.items():
                for message in messages:
                    outcome = await self.core.handle(tp.topic, message.value)
                    if outcome.dead_letter:
                        await self._send_dead_letter(message, outcome)
                    offsets[tp] = message.offset + 1
        except Stopping:
            log.info("stopping: the event in hand stays uncommitted")
        except Exception as exc:  # noqa: BLE001 - not applied: resume from the commit later
            KAFKA_ERRORS.labels("handle").inc()
            log.error("event handling failed; it will be retried", exc_info=exc)
            failed = True
        finally:
            if offsets:
                try:
                    await self._run(self._commit, offsets)
                    self.batches += 1
                except Exception as exc:  # noqa: BLE001 - re-delivered later, then dropped by id
                    KAFKA_ERRORS.labels("commit").inc()
                    log.warning(
                        "offset commit failed; the batch will be re-delivered",
                        extra={"error": repr(exc)},
                    )
                    await self._run(self._close)
            if failed:
                await self._run(self._close)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.core.stopping.wait(), self.retry_max_s)

    async def _send_dead_letter(self, message: Any, outcome: Outcome) -> None:
        wait = self.retry_initial_s
        while True:
            try:
                await self._run(self._dead_letter, message, outcome.reason)
                DEAD_LETTERED.labels(message.topic).inc()
                log.warning(
                    "event dead-lettered",
                    extra={
                        "reason": outcome.reason,
                        "topic": message.topic,
                        "offset": message.offset,
                    },
                )
                return
            except Exception as exc:  # noqa: BLE001 - the event must reach the DLQ first
                KAFKA_ERRORS.labels("dead_letter").inc()
                log.warning("dead-letter produce failed; retrying", extra={"error": repr(exc)})
            if self.core.stopping.is_set():
                raise Stopping()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.core.stopping.wait(), wait)
            wait = min(self.retry_max_s, wait * 2)

    async def _lag_loop(self) -> None:
        """Also while an event waits for the recommender (the consumer thread is free
        then: the wait happens on the event loop)."""
        while True:
            await asyncio.sleep(self.lag_interval_s)
            try:
                lag = await self._run(self._lag)
            except Exception:  # noqa: BLE001 - a metric must not stop consumption
                continue
            for topic in self.topics:
                if topic in lag:
                    LAG.labels(topic).set(lag[topic])

    async def close(self) -> None:
        await self._run(self._close)
        self._kafka.shutdown(wait=False)
