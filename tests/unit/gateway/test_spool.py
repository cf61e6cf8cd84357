"""The feedback spool is a durable log: nothing accepted is lost — not to a torn write, a
garbage record, a long outage, concurrent publishers with a flaky broker, or kill -9 at
any step of a replay. Against a real Tansu broker on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import random
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from kafka import KafkaConsumer

from services.gateway.app import create_app
from services.gateway.config import GatewaySettings
from styleloop.broker import TansuBroker
from styleloop.drill import fill, mount_small_disk, unmount
from styleloop.runtime.producer import DurableProducer
from styleloop.runtime.spool import QUARANTINED, Spool
from styleloop.v1 import events_pb2
from tests.conftest import ROOT, free_ports

TOPIC = "styleloop.feedback.v1"


def record(n: int, user: str = "u") -> tuple[bytes, bytes]:
    event = events_pb2.FeedbackEvent(event_id=f"e{n}", user_id=user, item_id=f"i{n}")
    return user.encode(), event.SerializeToString()


def legacy_line(key: bytes, value: bytes) -> bytes:
    entry = {"k": base64.b64encode(key).decode(), "v": base64.b64encode(value).decode()}
    return json.dumps(entry).encode() + b"\n"


def topic_ids(bootstrap: str, want: set[str], idle_ms: int = 8000) -> list[str]:
    """Event ids from the start of the topic, until all of ``want`` were seen (or idle)."""
    consumer = KafkaConsumer(
        TOPIC,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=idle_ms,
        max_poll_records=5000,
    )
    ids: list[str] = []
    seen: set[str] = set()
    try:
        for message in consumer:
            event_id = events_pb2.FeedbackEvent.FromString(message.value).event_id
            ids.append(event_id)
            seen.add(event_id)
            if want <= seen:
                break
    finally:
        consumer.close()
    return ids


def quarantined(what: str) -> float:
    return QUARANTINED.labels(what)._value.get()


@pytest.fixture
def broker() -> AsyncIterator[TansuBroker]:
    """A broker on a reserved port, not started: each test decides when it is up."""
    broker = TansuBroker(free_ports(1)[0])
    yield broker
    broker.stop()


def spooling_gateway(broker: TansuBroker, spool_dir: Path) -> GatewaySettings:
    """A gateway with no recommender, spooling to ``spool_dir`` whenever ``broker`` is down."""
    return GatewaySettings(
        recommender_addr="127.0.0.1:1",
        kafka_bootstrap=broker.bootstrap,
        kafka_timeout_s=1,
        spool_dir=spool_dir,
        spool_replay_interval_s=0.3,
        allow_anonymous=True,
        metrics_port=-1,
    )


def sink_for(broker: TansuBroker, spool_dir: Path, chunk: int = 1000) -> DurableProducer:
    return DurableProducer(broker.bootstrap, TOPIC, spool_dir, 2.0, 0.2, chunk)


async def test_a_torn_tail_through_the_http_api_delivers_every_accepted_event(
    tmp_path: Path, broker: TansuBroker
):
    """The reproduction from the issue: a crash left a torn record at the end of the old
    spool; with Kafka down five events are accepted; once a broker is up all five (and
    the intact spooled ones) arrive."""
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    old = [record(n, "old") for n in range(2)]
    torn = legacy_line(*record(99, "old"))[:-20]  # cut mid-write: no newline
    (spool_dir / "feedback.spool").write_bytes(b"".join(legacy_line(*r) for r in old) + torn)
    before = quarantined("line")
    settings = spooling_gateway(broker, spool_dir)
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client,
    ):
        accepted = []
        for n in range(5):
            event = {"user_id": "u1", "item_id": f"i{n}", "kind": "reject"}
            reply = await client.post("/v1/feedback", json={"events": [event]})
            assert reply.status_code == 202 and reply.json()["spooled"] is True, reply.text
            accepted += reply.json()["event_ids"]
        assert quarantined("line") == before + 1  # the torn line: logged and counted
        assert (spool_dir / "feedback.spool.corrupt").read_bytes() == torn + b"\n"
        broker.start()
        ids = await asyncio.to_thread(topic_ids, broker.bootstrap, {"e0", "e1", *accepted})
    first_seen = list(dict.fromkeys(ids))
    assert first_seen == ["e0", "e1", *accepted]  # every one, in order
    assert stat.S_IMODE((spool_dir / "feedback.sqlite3").stat().st_mode) == 0o600
    assert stat.S_IMODE(spool_dir.stat().st_mode) == 0o700


async def test_garbage_records_and_files_are_quarantined_never_fatal(
    tmp_path: Path, broker: TansuBroker
):
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    # Old spool: valid JSON that is no object, non-UTF-8 bytes, then an intact record.
    (spool_dir / "feedback.replaying").write_bytes(b"[1, 2]\n" + legacy_line(*record(0)))
    (spool_dir / "feedback.spool").write_bytes(b"\xff\xfe\x00garbage\n" + legacy_line(*record(1)))
    spool = Spool(spool_dir)
    spool.append([record(2), record(3)])
    spool.close()
    # A record whose bytes changed on disk after it was written.
    with sqlite3.connect(spool_dir / "feedback.sqlite3") as db:
        last_but_one = "(SELECT max(seq) - 1 FROM records)"
        db.execute(f"UPDATE records SET value = X'00' WHERE seq = {last_but_one}")
    before = quarantined("record")
    sink = sink_for(broker, spool_dir)
    broker.start()
    await sink.drain()
    await sink.stop()
    assert quarantined("record") == before + 1
    ids = await asyncio.to_thread(topic_ids, broker.bootstrap, {"e0", "e1", "e3"})
    assert list(dict.fromkeys(ids)) == ["e0", "e1", "e3"]
    assert len((spool_dir / "feedback.spool.corrupt").read_bytes().splitlines()) == 2

    # A spool file that is not a database at all: moved aside, the gateway still starts.
    (spool_dir / "feedback.sqlite3").write_bytes(b"this is not a database" * 300)
    for suffix in ("-wal", "-shm"):
        Path(f"{spool_dir / 'feedback.sqlite3'}{suffix}").unlink(missing_ok=True)
    files_before = quarantined("file")
    again = Spool(spool_dir)
    assert again.count() == 0
    again.append([record(4)])
    assert [e.key for e in again.head(10)] == [b"u"]
    again.close()
    assert quarantined("file") == files_before + 1
    assert any(p.name.startswith("feedback.sqlite3.corrupt-") for p in spool_dir.iterdir())


async def test_a_long_outage_drains_in_chunks_with_bounded_duplicates(
    tmp_path: Path, broker: TansuBroker
):
    """250k events spooled during an outage reach a real broker; a replay killed (-9)
    half-way re-sends at most one chunk."""
    spool_dir, chunk, total = tmp_path / "spool", 5000, 250_000
    spool = Spool(spool_dir)
    for start in range(0, total, 50_000):
        spool.append([record(n, f"u{n % 97}") for n in range(start, start + 50_000)])
    spool.close()
    broker.start()
    # A replayer in its own process, killed once part of the spool is delivered.
    child = subprocess.Popen(
        [sys.executable, "-c", DRAIN_SCRIPT, broker.bootstrap, str(spool_dir), str(chunk)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        for line in child.stdout:
            if int(line) >= 60_000:  # delivered and forgotten so far
                break
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    finally:
        child.kill()
    left = Spool(spool_dir).count()
    assert 0 < left < total - 60_000 + chunk
    sink = sink_for(broker, spool_dir, chunk)
    await sink.drain()
    assert sink.spool.count() == 0
    await sink.stop()
    ids = await asyncio.to_thread(topic_ids, broker.bootstrap, {f"e{n}" for n in range(total)})
    assert set(ids) == {f"e{n}" for n in range(total)}
    assert len(ids) - total <= chunk  # duplicates: at most the chunk in flight at the kill


DRAIN_SCRIPT = """
import asyncio, sys
from pathlib import Path
from styleloop.runtime.producer import DurableProducer

async def main():
    sink = DurableProducer(sys.argv[1], "styleloop.feedback.v1", Path(sys.argv[2]), 5.0, 1.0,
                        int(sys.argv[3]))
    total = sink.spool.count()
    while await sink.replay_once():
        print(total - sink.spool.count(), flush=True)

asyncio.run(main())
"""


async def test_concurrent_publishers_with_a_flaky_broker_keep_each_users_order(
    tmp_path: Path, broker: TansuBroker
):
    broker.start()
    sink = DurableProducer(broker.bootstrap, TOPIC, tmp_path / "spool", 2.0, 0.05)
    real, rng = sink._produce, random.Random(7)

    def flaky(records):  # a slow broker that refuses about a third of the produce calls
        time.sleep(0.01)
        if rng.random() < 0.35:
            raise ConnectionError("broker hiccup")
        real(records)

    sink._produce = flaky  # type: ignore[method-assign]
    accepted: dict[str, list[str]] = {"a": [], "b": []}
    answered: dict[str, list[str]] = {"a": [], "b": []}
    counter = iter(range(10_000))

    async def publisher(user: str) -> None:
        for _ in range(15):
            n = next(counter)
            accepted[user].append(f"e{n}")  # the order the requests arrived in
            await sink.publish([record(n, user)])
            answered[user].append(f"e{n}")

    sink.start()
    await asyncio.gather(*(publisher(u) for u in ("a", "a", "b", "b")))
    for _ in range(100):
        if sink.spool.count() == 0:
            break
        await asyncio.sleep(0.2)
    await sink.stop()
    want = {i for ids in accepted.values() for i in ids}
    consumer_ids = await asyncio.to_thread(topic_ids, broker.bootstrap, want)
    first_seen = list(dict.fromkeys(consumer_ids))
    for user, ids in accepted.items():
        assert answered[user] == ids, user  # answered in arrival order, too
        assert [i for i in first_seen if i in set(ids)] == ids, user


KILL_SCRIPT = """
import asyncio, os, signal, sys
from pathlib import Path
from styleloop.runtime import producer, spool
from styleloop.runtime.producer import DurableProducer

step = sys.argv[3]

def die():
    os.kill(os.getpid(), signal.SIGKILL)

def wrap(cls, name, when):
    real = getattr(cls, name)
    def wrapped(self, *args):
        if when == "before":
            die()
        result = real(self, *args)
        die()
    setattr(cls, name, wrapped)

if step == "after-read":
    wrap(spool.Spool, "head", "after")
elif step == "before-produce":
    wrap(DurableProducer, "_produce", "before")
elif step == "after-produce":
    wrap(DurableProducer, "_produce", "after")
elif step == "after-delete":
    wrap(spool.Spool, "delete_through", "after")
elif step == "mid-append":
    real_insert = spool.Spool._insert
    def torn(db, records):
        db.execute("BEGIN IMMEDIATE")
        db.executemany("INSERT INTO records (key, value, crc) VALUES (?, ?, ?)",
                       [(k, v, spool.checksum(k, v)) for k, v in records[:1]])
        die()
    spool.Spool._insert = staticmethod(torn)

async def main():
    sink = DurableProducer(sys.argv[1], "styleloop.feedback.v1", Path(sys.argv[2]), 5.0, 1.0, 3)
    if step == "mid-append":
        sink.spool.append([(b"u", b"never-accepted"), (b"u", b"never-accepted")])
    await sink.drain()

asyncio.run(main())
"""


@pytest.mark.parametrize(
    "step", ["after-read", "before-produce", "after-produce", "after-delete", "mid-append"]
)
async def test_kill_9_at_any_step_of_a_replay_loses_nothing(
    tmp_path: Path, broker: TansuBroker, step: str
):
    spool_dir = tmp_path / "spool"
    spool = Spool(spool_dir)
    spool.append([record(n) for n in range(10)])
    spool.close()
    broker.start()
    done = subprocess.run(
        [sys.executable, "-c", KILL_SCRIPT, broker.bootstrap, str(spool_dir), step],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    sink = sink_for(broker, spool_dir, chunk=3)
    await sink.drain()
    assert sink.spool.count() == 0
    assert sink.spool.quarantined() == 0
    await sink.stop()
    want = {f"e{n}" for n in range(10)}
    ids = await asyncio.to_thread(topic_ids, broker.bootstrap, want)
    assert [i for i in dict.fromkeys(ids)] == [f"e{n}" for n in range(10)]  # all, in order
    assert len(ids) - 10 <= 3  # at most the chunk in flight was sent twice
    assert "never-accepted" not in "".join(ids)


def test_the_spool_is_private_and_its_folder_synced(tmp_path: Path, monkeypatch):
    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    spool_dir = tmp_path / "new" / "spool"
    Spool(spool_dir).close()
    assert str(spool_dir) in synced  # the new file's directory entry is durable
    assert stat.S_IMODE((spool_dir / "feedback.sqlite3").stat().st_mode) == 0o600


@pytest.fixture
def full_disk(tmp_path: Path) -> AsyncIterator[Path]:
    """A 1 MiB tmpfs: a real filesystem that runs out of space (needs root to mount)."""
    mount = tmp_path / "small"
    why = mount_small_disk(mount, 1)
    if why is not None:
        pytest.skip(f"cannot mount a size-limited tmpfs here: {why}")
    try:
        yield mount
    finally:
        unmount(mount)


async def test_feedback_that_cannot_be_made_durable_is_refused_never_accepted_and_lost(
    full_disk: Path, broker: TansuBroker
):
    """Broker down and the spool's disk full: 503 with its reason, nothing accepted; space
    back: accepted again and, once the broker is up, delivered — exactly those."""
    spool_dir = full_disk / "spool"
    settings = spooling_gateway(broker, spool_dir)
    app = create_app(settings)
    big = {"query": "q" * 500, "recommended_item_ids": [f"item-{n:05d}" for n in range(100)]}
    events = [
        {"user_id": "u1", "item_id": f"i{n}", "kind": "impression", "context": big}
        for n in range(100)
    ]
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client,
    ):
        filler = fill(full_disk)
        refused = await client.post("/v1/feedback", json={"events": events})
        assert refused.status_code == 503, refused.text
        assert refused.json()["reason"] == "FEEDBACK_NOT_DURABLE"
        assert refused.headers["retry-after"] == "5"
        filler.unlink()  # space again: the same spool takes events
        accepted = await client.post("/v1/feedback", json={"events": events[:3]})
        assert accepted.status_code == 202 and accepted.json()["spooled"] is True, accepted.text
        ids = accepted.json()["event_ids"]
        broker.start()
        delivered = await asyncio.to_thread(topic_ids, broker.bootstrap, set(ids))
    assert delivered == ids  # what was accepted, in order, and nothing of the refused batch
