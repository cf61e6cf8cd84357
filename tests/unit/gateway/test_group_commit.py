"""Group commit: publishes that arrive while one is in flight share the next produce, in
arrival order, and a caller that goes away does not take its records with it. (The real
broker paths — order under a flaky broker, kill -9 — are in test_spool.py.)"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from styleloop.runtime.producer import DurableProducer


def recording_producer(tmp_path: Path, group_max: int = 5000) -> tuple[DurableProducer, list]:
    producer = DurableProducer("127.0.0.1:1", "t", tmp_path, 1.0, 1.0, group_max=group_max)
    calls: list[list[bytes]] = []
    release = threading.Event()

    def produce(records):  # the broker's side: slow enough that others queue up
        release.wait(0.05)
        calls.append([value for _, value in records])

    producer._produce = produce  # type: ignore[method-assign]
    return producer, calls


async def test_concurrent_publishes_share_a_produce_in_arrival_order(tmp_path: Path):
    producer, calls = recording_producer(tmp_path)
    first = asyncio.create_task(producer.publish([(b"u", b"0")]))
    await asyncio.sleep(0.01)  # the first is in flight; these queue behind it
    rest = [asyncio.create_task(producer.publish([(b"u", str(n).encode())])) for n in range(1, 9)]
    assert await asyncio.gather(first, *rest) == [False] * 9
    assert calls == [[b"0"], [str(n).encode() for n in range(1, 9)]]
    await producer.stop()


async def test_a_group_is_bounded(tmp_path: Path):
    producer, calls = recording_producer(tmp_path, group_max=3)
    tasks = [asyncio.create_task(producer.publish([(b"u", b"%d" % n)] * 2)) for n in range(4)]
    await asyncio.gather(*tasks)
    assert [len(c) for c in calls] == [2, 2, 2, 2]  # 2 + 2 > 3: one publish per produce
    await producer.stop()


async def test_a_cancelled_caller_does_not_cancel_its_records(tmp_path: Path):
    producer, calls = recording_producer(tmp_path)
    first = asyncio.create_task(producer.publish([(b"u", b"a")]))
    second = asyncio.create_task(producer.publish([(b"u", b"b")]))
    await asyncio.sleep(0.01)
    second.cancel()  # the client went away while its records waited
    assert await first is False
    await producer.stop()  # waits for the flusher
    assert [v for call in calls for v in call] == [b"a", b"b"]


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
