"""Group commit: publishes that arrive while one is in flight share the next produce, in
arrival order, and a caller that goes away does not take its records with it. (The real
broker paths — order under a flaky broker, kill -9 — are in test_spool.py.)"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from styleloop.runtime.producer import DurableProducer


class Broker:
    """The broker's side of the producer: each produce is recorded, then held until the
    test releases it, so what queues behind it is decided by the test, not by timing."""

    def __init__(self) -> None:
        self.calls: list[list[bytes]] = []
        self.entered = threading.Event()
        self.release = threading.Event()

    def produce(self, records: list[tuple[bytes, bytes]]) -> None:
        self.calls.append([value for _, value in records])
        self.entered.set()
        if not self.release.wait(30):  # only a broken test waits this long
            raise TimeoutError("the test never released the produce")


def recording_producer(tmp_path: Path, group_max: int = 5000) -> tuple[DurableProducer, Broker]:
    producer = DurableProducer("127.0.0.1:1", "t", tmp_path, 1.0, 1.0, group_max=group_max)
    broker = Broker()
    producer._produce = broker.produce  # type: ignore[method-assign]
    return producer, broker


async def test_concurrent_publishes_share_a_produce_in_arrival_order(tmp_path: Path):
    producer, broker = recording_producer(tmp_path)
    first = asyncio.create_task(producer.publish([(b"u", b"0")]))
    await asyncio.to_thread(broker.entered.wait, 30)  # the first is at the broker
    rest = [asyncio.create_task(producer.publish([(b"u", str(n).encode())])) for n in range(1, 9)]
    await asyncio.sleep(0)  # each of them queued behind it
    broker.release.set()
    assert await asyncio.gather(first, *rest) == [False] * 9
    assert broker.calls == [[b"0"], [str(n).encode() for n in range(1, 9)]]
    await producer.stop()


async def test_a_group_is_bounded(tmp_path: Path):
    producer, broker = recording_producer(tmp_path, group_max=3)
    broker.release.set()
    tasks = [asyncio.create_task(producer.publish([(b"u", b"%d" % n)] * 2)) for n in range(4)]
    await asyncio.gather(*tasks)
    assert [len(c) for c in broker.calls] == [2, 2, 2, 2]  # 2 + 2 > 3: one publish a produce
    await producer.stop()


async def test_a_cancelled_caller_does_not_cancel_its_records(tmp_path: Path):
    producer, broker = recording_producer(tmp_path)
    first = asyncio.create_task(producer.publish([(b"u", b"a")]))
    await asyncio.to_thread(broker.entered.wait, 30)
    second = asyncio.create_task(producer.publish([(b"u", b"b")]))
    await asyncio.sleep(0)  # queued behind the first
    second.cancel()  # the client went away while its records waited
    broker.release.set()
    assert await first is False
    await producer.stop()  # waits for the flusher
    assert [v for call in broker.calls for v in call] == [b"a", b"b"]


async def test_a_spool_failure_reaches_every_caller_of_the_group(tmp_path: Path):
    producer, _ = recording_producer(tmp_path)

    def broken(records):
        raise ConnectionError("broker down")

    def disk_full(records):
        raise OSError(28, "No space left on device")

    producer._produce = broken  # type: ignore[method-assign]
    producer.spool.append = disk_full  # type: ignore[method-assign]
    results = await asyncio.gather(
        *(producer.publish([(b"u", b"x")]) for _ in range(3)), return_exceptions=True
    )
    assert all(isinstance(r, OSError) for r in results), results
    await producer.stop()
