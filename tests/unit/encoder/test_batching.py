"""The micro-batcher: gathers concurrent items, splits rows back, refuses overload."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from styleloop.runtime.batching import MicroBatcher
from styleloop.runtime.errors import ResourceExhausted, Unavailable


def recording_runner(calls: list[list[int]]):
    def run(items: list[int]) -> np.ndarray:
        calls.append(list(items))
        return np.asarray([[item, item * 10] for item in items], dtype=np.float32)

    return run


async def test_concurrent_items_share_a_batch_and_get_their_own_rows():
    calls: list[list[int]] = []
    batcher = MicroBatcher(
        "encoder",
        "test",
        recording_runner(calls),
        max_batch_size=8,
        max_wait_s=0.05,
        max_queue_items=100,
    )
    batcher.start()
    try:
        results = await asyncio.gather(*(batcher.submit([i]) for i in range(16)))
    finally:
        await batcher.stop()
    for i, rows in enumerate(results):
        assert len(rows) == 1
        np.testing.assert_array_equal(rows[0], [i, i * 10])
    assert max(len(c) for c in calls) == 8
    assert sum(len(c) for c in calls) == 16


async def test_multi_item_requests_keep_their_order():
    calls: list[list[int]] = []
    batcher = MicroBatcher(
        "encoder",
        "test",
        recording_runner(calls),
        max_batch_size=4,
        max_wait_s=0.01,
        max_queue_items=100,
    )
    batcher.start()
    try:
        first, second = await asyncio.gather(batcher.submit([1, 2, 3]), batcher.submit([7, 8, 9]))
    finally:
        await batcher.stop()
    assert [int(r[0]) for r in first] == [1, 2, 3]
    assert [int(r[0]) for r in second] == [7, 8, 9]


async def test_batch_size_one_runs_items_alone():
    calls: list[list[int]] = []
    batcher = MicroBatcher(
        "encoder",
        "test",
        recording_runner(calls),
        max_batch_size=1,
        max_wait_s=0.0,
        max_queue_items=100,
    )
    batcher.start()
    try:
        await asyncio.gather(*(batcher.submit([i]) for i in range(5)))
    finally:
        await batcher.stop()
    assert all(len(c) == 1 for c in calls) and len(calls) == 5


async def test_full_queue_refuses_at_once():
    release = threading.Event()

    def blocked(items: list[int]) -> np.ndarray:
        release.wait(5)
        return np.zeros((len(items), 1), np.float32)

    batcher = MicroBatcher(
        "encoder", "test", blocked, max_batch_size=2, max_wait_s=0.0, max_queue_items=3
    )
    batcher.start()
    try:
        running = asyncio.ensure_future(batcher.submit([1, 2]))  # taken by the worker
        await asyncio.sleep(0.05)
        waiting = asyncio.ensure_future(batcher.submit([3, 4, 5]))  # fills the queue
        await asyncio.sleep(0.01)
        with pytest.raises(ResourceExhausted) as err:
            await batcher.submit([6])
        assert err.value.reason == "ENCODER_QUEUE_FULL"
        release.set()
        assert len(await running) == 2 and len(await waiting) == 3
    finally:
        release.set()
        await batcher.stop()


async def test_a_failing_batch_fails_its_callers_and_the_batcher_goes_on():
    def flaky(items: list[int]) -> np.ndarray:
        if -1 in items:
            raise RuntimeError("backend crashed")
        return np.ones((len(items), 1), np.float32)

    batcher = MicroBatcher(
        "encoder", "test", flaky, max_batch_size=4, max_wait_s=0.0, max_queue_items=10
    )
    batcher.start()
    try:
        with pytest.raises(Unavailable):
            await batcher.submit([-1])
        assert len(await batcher.submit([1, 2])) == 2
    finally:
        await batcher.stop()


async def test_a_runner_giving_the_wrong_number_of_rows_fails_that_batch_only():
    calls: list[list[int]] = []
    good = recording_runner(calls)

    def runner(items: list[int]) -> np.ndarray:
        rows = good(items)
        return rows[:-1] if 13 in items else rows  # one row short for the batch with 13

    batcher = MicroBatcher(
        "encoder", "test", runner, max_batch_size=4, max_wait_s=0.001, max_queue_items=100
    )
    batcher.start()
    try:
        with pytest.raises(Unavailable):
            await asyncio.wait_for(batcher.submit([13]), 5)
        later = await asyncio.wait_for(batcher.submit([2, 3]), 5)  # the worker lives on
    finally:
        await batcher.stop()
    assert [int(r[0]) for r in later] == [2, 3]
