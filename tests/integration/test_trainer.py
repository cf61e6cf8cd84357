"""The trainer against a real Tansu broker and a real recommender (tiny encoder, Qdrant
Edge): events applied once, poison dead-lettered, nothing lost through a recommender
outage, a broker restart or a kill -9 mid-batch, and chat answers paired with the
feedback that names them.

Waits are event-based (a condition polled until it holds; the deadline only turns a hang
into a failure)."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

from services.recommender.config import RecommenderSettings
from services.trainer.config import TrainerSettings
from services.trainer.consumer import LAG
from services.trainer.ledger import Ledger
from services.trainer.service import TrainerService, build_service
from styleloop.broker import LocalS3, TansuBroker
from styleloop.processes import spawn, stop
from styleloop.runtime.errors import Unavailable
from styleloop.runtime.server import GrpcServer
from styleloop.v1 import common_pb2, events_pb2, recommender_pb2, recommender_pb2_grpc
from tests.conftest import catalog_images, encode_png, free_ports
from tests.integration.test_up import wait_for
from tests.unit.encoder.conftest import encoder_settings, start_encoder
from tests.unit.recommender.conftest import start_recommender

FEEDBACK, CHAT, DLQ = "styleloop.feedback.v1", "styleloop.chat.v1", "styleloop.feedback.dlq.v1"
ROOT = Path(__file__).resolve().parents[2]
ITEMS = [f"item-{n}" for n in range(8)]
KIND = {"like": common_pb2.INTERACTION_KIND_LIKE, "reject": common_pb2.INTERACTION_KIND_REJECT}


async def until(condition: Callable[[], Any], timeout_s: float = 60.0, every_s: float = 0.1) -> Any:
    """The first truthy value of ``condition`` (sync or async); fails after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s")
        await asyncio.sleep(every_s)


@dataclass
class Recommender:
    port: int
    settings: RecommenderSettings
    server: GrpcServer | None = None
    servicer: Any = None
    channel: grpc.aio.Channel | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.server, self.servicer = await start_recommender(self.settings)
        self.channel = grpc.aio.insecure_channel(self.address)

    @property
    def stub(self) -> recommender_pb2_grpc.RecommenderServiceStub:
        return recommender_pb2_grpc.RecommenderServiceStub(self.channel)

    async def stop(self) -> None:
        if self.channel is not None:
            await self.channel.close()
        if self.server is not None:
            await self.server.stop(grace=0)
            await self.servicer.core.close()
        self.server = None

    async def state(self, user: str) -> dict[str, set[str]]:
        reply = await self.stub.GetUserState(
            recommender_pb2.GetUserStateRequest(user_id=user), timeout=10
        )
        return {
            "like": {i.item_id for i in reply.liked_items},
            "reject": {i.item_id for i in reply.rejected_items},
        }


@pytest.fixture
async def recommender(tiny_models: Path, tmp_path: Path) -> AsyncIterator[Recommender]:
    """A recommender holding ITEMS, on a fixed port (a test may stop and restart it)."""
    enc_server, encoder = await start_encoder(encoder_settings(tiny_models))
    settings = RecommenderSettings(
        encoder_addr=f"127.0.0.1:{enc_server.port}",
        grpc_host="127.0.0.1",
        grpc_port=free_ports(1)[0],
        metrics_port=-1,
        data_dir=tmp_path / "edge",
        encoder_timeout_s=5,
        encoder_wait_s=5,
    )
    rec = Recommender(settings.grpc_port, settings)
    await rec.start()
    images = catalog_images(len(ITEMS))
    await rec.stub.UpsertItems(
        recommender_pb2.UpsertItemsRequest(
            items=[
                recommender_pb2.UpsertItem(
                    item=common_pb2.Item(
                        item_id=i, title=f"Puma Men Tshirt {n}", category="Topwear"
                    ),
                    image=encode_png(im),
                )
                for n, (i, im) in enumerate(zip(ITEMS, images, strict=True))
            ]
        ),
        timeout=120,
    )
    try:
        yield rec
    finally:
        await rec.stop()
        await enc_server.stop(grace=0)
        await encoder.stop()


@pytest.fixture
def broker() -> AsyncIterator[TansuBroker]:
    broker = TansuBroker(free_ports(1)[0])
    broker.start()
    yield broker
    broker.stop()


def settings_for(bootstrap: str, rec: Recommender, state: Path, **kw: Any) -> TrainerSettings:
    return TrainerSettings(
        kafka_bootstrap=bootstrap,
        recommender_addr=rec.address,
        state_dir=state,
        grpc_port=0,
        metrics_port=-1,
        retry_initial_s=0.05,
        retry_max_s=0.5,
        lag_interval_s=0.1,
        kafka_timeout_s=2,
        **kw,
    )


@pytest.fixture
async def trainer_factory() -> AsyncIterator[Callable[[TrainerSettings], Any]]:
    started: list[TrainerService] = []

    async def make(settings: TrainerSettings) -> TrainerService:
        service = build_service(settings)
        await service.start()
        started.append(service)
        return service

    yield make
    for service in started:
        await service.stop()


def feedback(user: str, item: str, kind: str, answer_id: str = "", **kw: Any) -> bytes:
    event = events_pb2.FeedbackEvent(
        event_id=kw.pop("event_id", uuid.uuid4().hex),
        user_id=user,
        item_id=item,
        kind=KIND[kind] if kind in KIND else kw.pop("kind_value"),
        context=events_pb2.FeedbackContext(answer_id=answer_id),
    )
    event.receive_time.GetCurrentTime()
    return event.SerializeToString()


def produce(bootstrap: str, topic: str, values: list[bytes], key: bytes = b"u") -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        for value in values:
            producer.send(topic, key=key, value=value)
        producer.flush(timeout=20)
    finally:
        producer.close()


def outcomes(state: Path) -> dict[str, int]:
    with sqlite3.connect(state / "trainer.sqlite3") as db:
        return {o: n for o, n in db.execute("SELECT outcome, COUNT(*) FROM events GROUP BY 1")}


def expected_state(events: list[tuple[str, str, str]]) -> dict[str, dict[str, set[str]]]:
    """What the recommender must hold after these (user, item, kind) events, in order."""
    users: dict[str, dict[str, set[str]]] = {}
    for user, item, kind in events:
        state = users.setdefault(user, {"like": set(), "reject": set()})
        state[kind].add(item)
        state["reject" if kind == "like" else "like"].discard(item)
    return users


def committed(bootstrap: str, topic: str, group: str = "styleloop-trainer") -> int | None:
    """The group's committed offsets summed over the topic's partitions (None: none)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        offsets = [
            consumer.committed(TopicPartition(topic, p))
            for p in consumer.partitions_for_topic(topic) or ()
        ]
        found = [o for o in offsets if o is not None]
        return sum(found) if found else None
    finally:
        consumer.close()


def dead_letters(bootstrap: str, count: int) -> list[tuple[bytes, dict[str, str]]]:
    consumer = KafkaConsumer(
        DLQ, bootstrap_servers=bootstrap, auto_offset_reset="earliest", consumer_timeout_ms=8000
    )
    got = []
    try:
        for message in consumer:
            got.append((message.value, {k: v.decode() for k, v in message.headers}))
            if len(got) >= count:
                break
    finally:
        consumer.close()
    return got


async def committed_at(bootstrap: str, topic: str) -> int | None:
    return await asyncio.to_thread(committed, bootstrap, topic)


def lag(topic: str = FEEDBACK) -> float:
    return float(LAG.labels(topic)._value.get())


# ---------------------------------------------------------------------- the tests


async def test_events_are_applied_once_and_a_redelivered_one_changes_nothing(
    broker: TansuBroker, recommender: Recommender, trainer_factory, tmp_path: Path
):
    events = [("ann", ITEMS[0], "reject"), ("ann", ITEMS[1], "like"), ("bob", ITEMS[0], "like")]
    values = [feedback(u, i, k) for u, i, k in events]
    await asyncio.to_thread(produce, broker.bootstrap, FEEDBACK, values + [values[0]])
    state = tmp_path / "trainer"
    await trainer_factory(settings_for(broker.bootstrap, recommender, state))
    await until(lambda: committed_at(broker.bootstrap, FEEDBACK), every_s=0.3)
    assert await committed_at(broker.bootstrap, FEEDBACK) == 4
    for user, want in expected_state(events).items():
        assert await recommender.state(user) == want
    # The duplicate was dropped by id before reaching the recommender.
    assert outcomes(state) == {"applied": 3}


async def test_poison_is_dead_lettered_with_its_reason_and_the_consumer_keeps_going(
    broker: TansuBroker, recommender: Recommender, trainer_factory, tmp_path: Path
):
    poison = [
        b"\xff\xfe this is not protobuf",
        feedback("ann", ITEMS[0], "", kind_value=42),
        events_pb2.FeedbackEvent(user_id="ann", item_id=ITEMS[0], kind=4).SerializeToString(),
        feedback("ann", "no-such-item", "reject"),
    ]
    good = feedback("ann", ITEMS[2], "reject")
    await asyncio.to_thread(produce, broker.bootstrap, FEEDBACK, [*poison, good])
    await asyncio.to_thread(produce, broker.bootstrap, CHAT, [b"\x08\x96\x01 not a turn"])
    state = tmp_path / "trainer"
    await trainer_factory(settings_for(broker.bootstrap, recommender, state))

    async def all_committed() -> bool:
        return (
            await committed_at(broker.bootstrap, FEEDBACK),
            await committed_at(broker.bootstrap, CHAT),
        ) == (5, 1)

    await until(all_committed, every_s=0.3)
    assert (await recommender.state("ann"))["reject"] == {ITEMS[2]}
    letters = await asyncio.to_thread(dead_letters, broker.bootstrap, 5)
    reasons = sorted(headers["reason"] for _, headers in letters)
    assert len(reasons) == 5, reasons
    assert any(r.startswith("not a FeedbackEvent") for r in reasons)
    assert any(r.startswith("not a ChatTurnEvent") or r.startswith("missing") for r in reasons)
    assert "unknown interaction kind 42" in reasons
    assert "missing event_id" in reasons
    assert any(r.startswith("unknown item") for r in reasons)
    assert {h["source_topic"] for _, h in letters} == {FEEDBACK, CHAT}
    assert poison[0] in [value for value, _ in letters]  # the original bytes, unchanged
    assert lag(FEEDBACK) == 0 or await until(lambda: lag(FEEDBACK) == 0)


async def test_a_recommender_outage_keeps_events_uncommitted_until_applied(
    broker: TansuBroker, recommender: Recommender, trainer_factory, tmp_path: Path
):
    await recommender.stop()
    events = [("cid", ITEMS[n], "reject") for n in range(3)]
    await asyncio.to_thread(produce, broker.bootstrap, FEEDBACK, [feedback(*e) for e in events])
    state = tmp_path / "trainer"
    await trainer_factory(settings_for(broker.bootstrap, recommender, state))
    # Retried, not committed, and the lag says so.
    await until(lambda: lag() == 3, timeout_s=30)
    assert outcomes(state) == {}
    assert await asyncio.to_thread(committed, broker.bootstrap, FEEDBACK) in (None, 0)
    await recommender.start()
    await until(lambda: lag() == 0 and outcomes(state) == {"applied": 3})
    assert await recommender.state("cid") == expected_state(events)["cid"]


async def test_lag_is_the_high_watermark_minus_the_commit_not_tansus_end_offsets(
    broker: TansuBroker,
):
    """Why the consumer does not use end_offsets(): Tansu's ListOffsets answers 1 here."""
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    admin.create_topics([NewTopic("lag.probe", num_partitions=1, replication_factor=1)])
    admin.close()
    await asyncio.to_thread(produce, broker.bootstrap, "lag.probe", [b"x"] * 5)

    def probe() -> tuple[int, int | None]:
        consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False)
        tp = TopicPartition("lag.probe", 0)
        try:
            consumer.assign([tp])
            consumer.seek_to_beginning(tp)
            consumer.poll(timeout_ms=5000)
            return consumer.end_offsets([tp])[tp], consumer.highwater(tp)
        finally:
            consumer.close()

    end, high = await asyncio.to_thread(probe)
    assert high == 5
    assert end != 5, "Tansu's end_offsets() now agrees: it could be used for lag"


async def test_a_broker_restart_resumes_from_the_committed_offsets(
    recommender: Recommender, trainer_factory, tmp_path: Path
):
    s3 = LocalS3(free_ports(1)[0])
    s3.start()
    broker = TansuBroker(free_ports(1)[0], s3=s3)
    try:
        broker.start()
        first = [("dee", ITEMS[n], "reject") for n in range(3)]
        await asyncio.to_thread(produce, broker.bootstrap, FEEDBACK, [feedback(*e) for e in first])
        state = tmp_path / "trainer"
        await trainer_factory(settings_for(broker.bootstrap, recommender, state))
        await until(lambda: outcomes(state) == {"applied": 3})
        await until(lambda: committed_at(broker.bootstrap, FEEDBACK), every_s=0.3)
        assert await committed_at(broker.bootstrap, FEEDBACK) == 3
        broker.stop()
        await asyncio.sleep(1.0)  # the trainer polls a broker that is not there
        broker.start()
        second = [("dee", ITEMS[n], "like") for n in range(3, 6)]
        await asyncio.to_thread(produce, broker.bootstrap, FEEDBACK, [feedback(*e) for e in second])
        await until(lambda: outcomes(state) == {"applied": 6}, timeout_s=90)
        # Resumed at offset 3: nothing was delivered again (no duplicates seen).
        assert await recommender.state("dee") == expected_state(first + second)["dee"]

        async def six() -> bool:
            return await committed_at(broker.bootstrap, FEEDBACK) == 6

        await until(six, every_s=0.3)
    finally:
        broker.stop()
        s3.stop()


def turn_event(answer_id: str, user: str, items: list[str]) -> bytes:
    turn = events_pb2.ChatTurnEvent(
        event_id=uuid.uuid4().hex,
        answer_id=answer_id,
        user_id=user,
        prompt=[
            events_pb2.ChatTurnMessage(role="system", content="You are StyleLoop's stylist."),
            events_pb2.ChatTurnMessage(role="user", content="Cards:\n[1] …\n\nQuestion: tees?"),
        ],
        cards=[
            events_pb2.ChatCard(
                number=n, item=common_pb2.Item(item_id=i, title=f"Puma Men Tshirt {n}")
            )
            for n, i in enumerate(items, 1)
        ],
        text="Try the Puma Men Tshirt 1 [1].",
        cited_item_ids=[items[0]],
        adapter_id="stylist-1",
        model_id="qwen",
    )
    return turn.SerializeToString()


async def test_chat_answers_and_their_feedback_become_preference_pairs_once(
    broker: TansuBroker, recommender: Recommender, trainer_factory, tmp_path: Path
):
    cards = ITEMS[:3]
    # One answer's feedback arrives before its turn, the other's after.
    early = [feedback("eve", cards[0], "like", "a1"), feedback("eve", cards[1], "reject", "a1")]
    turns = [turn_event("a1", "eve", cards), turn_event("a2", "eve", cards)]
    late = [feedback("eve", cards[2], "like", "a2"), feedback("eve", cards[0], "reject", "a2")]
    await asyncio.to_thread(produce, broker.bootstrap, FEEDBACK, early)
    await asyncio.to_thread(produce, broker.bootstrap, CHAT, turns)
    await asyncio.to_thread(produce, broker.bootstrap, FEEDBACK, late)
    # Everything delivered twice: still one pair per (answer, chosen, rejected).
    await asyncio.to_thread(produce, broker.bootstrap, FEEDBACK, early + late)
    await asyncio.to_thread(produce, broker.bootstrap, CHAT, turns)
    state = tmp_path / "trainer"
    service = await trainer_factory(settings_for(broker.bootstrap, recommender, state))

    async def all_committed() -> bool:
        return (
            await committed_at(broker.bootstrap, FEEDBACK),
            await committed_at(broker.bootstrap, CHAT),
        ) == (8, 4)

    await until(all_committed, every_s=0.3)
    assert sum(outcomes(state).values()) == 6
    pairs = {p.answer_id: p for p in await asyncio.to_thread(service.ledger.pairs)}
    assert sorted(pairs) == ["a1", "a2"]
    a1, a2 = pairs["a1"], pairs["a2"]
    assert (a1.chosen, a1.rejected) == (
        "Try the Puma Men Tshirt 1 [1].",
        "Try the Puma Men Tshirt 2 [2].",
    )
    assert (a2.chosen, a2.rejected) == (
        "Try the Puma Men Tshirt 3 [3].",
        "Try the Puma Men Tshirt 1 [1].",
    )
    assert a1.prompt == [
        ("system", "You are StyleLoop's stylist."),
        ("user", "Cards:\n[1] …\n\nQuestion: tees?"),
    ]
    assert a1.adapter_id == "stylist-1" and a1.provenance["user_id"] == "eve"
    assert {a1.provenance["chosen_event_id"], a1.provenance["rejected_event_id"]} == {
        events_pb2.FeedbackEvent.FromString(v).event_id for v in early
    }
    assert a1.split in ("train", "eval")


# ---------------------------------------------------------------------- kill -9


def start_trainer_process(bootstrap: str, rec: Recommender, state: Path, log: Path) -> Any:
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP": bootstrap,
        "RECOMMENDER_ADDR": rec.address,
        "STATE_DIR": str(state),
        "GRPC_PORT": "0",
        "METRICS_PORT": "-1",
        # One batch holds every event: a kill before its end is a kill mid-batch.
        "POLL_MAX_RECORDS": "1000",
    }
    with log.open("ab") as out:
        return spawn(
            [sys.executable, "-m", "services.trainer"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def ledger_count(state: Path) -> int:
    try:
        return sum(outcomes(state).values())
    except sqlite3.Error:
        return 0


async def test_kill_9_mid_batch_loses_nothing_and_applies_nothing_twice(
    broker: TansuBroker, recommender: Recommender, tmp_path: Path
):
    users = [f"shopper-{n}" for n in range(4)]
    events = [
        (users[n % 4], ITEMS[(n * 3) % len(ITEMS)], ("like", "reject")[(n // 4) % 2])
        for n in range(400)
    ]
    await asyncio.to_thread(produce, broker.bootstrap, FEEDBACK, [feedback(*e) for e in events])
    state, log = tmp_path / "trainer", tmp_path / "trainer.log"
    # The kill lands mid-batch by construction, not by timing: after 40 interactions the
    # recommender answers UNAVAILABLE, so the trainer retries the 41st and commits nothing.
    record, calls = recommender.servicer.core.record, [0]

    def record_40_then_unavailable(*args: Any) -> bool:
        calls[0] += 1
        if calls[0] > 40:
            raise Unavailable("held by the test", reason="HELD")
        return bool(record(*args))

    recommender.servicer.core.record = record_40_then_unavailable
    process = start_trainer_process(broker.bootstrap, recommender, state, log)
    try:
        await until(lambda: calls[0] > 41, timeout_s=120, every_s=0.01)  # retrying the 41st
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        recommender.servicer.core.record = record
        done = ledger_count(state)
        assert 0 < done < 400, "the kill landed mid-batch"
        assert await asyncio.to_thread(committed, broker.bootstrap, FEEDBACK) in (None, 0)
        process = start_trainer_process(broker.bootstrap, recommender, state, log)
        await until(lambda: ledger_count(state) == 400, timeout_s=120)

        async def all_committed() -> bool:
            return await committed_at(broker.bootstrap, FEEDBACK) == 400

        await until(all_committed, timeout_s=60, every_s=0.3)
    finally:
        stop(process, 10)
    # Every event once in the ledger; at the recommender each applied exactly once (an
    # event applied there but not yet in the ledger when killed comes back
    # already_applied).
    counted = outcomes(state)
    assert set(counted) <= {"applied", "already_applied"} and sum(counted.values()) == 400
    assert counted.get("already_applied", 0) <= 1
    for user, want in expected_state(events).items():
        assert await recommender.state(user) == want, user


def test_the_ledger_refuses_an_event_id_twice(tmp_path: Path):
    ledger = Ledger(tmp_path)
    assert ledger.record_event("e1", FEEDBACK, "dead_lettered")
    assert not ledger.record_event("e1", FEEDBACK, "dead_lettered")
    assert ledger.seen("e1") and not ledger.seen("e2")
    ledger.close()
    reopened = Ledger(tmp_path)
    assert reopened.seen("e1"), "durable across a restart"
    reopened.close()


def test_kill_9_mid_round_leaves_the_serving_adapter_until_a_round_completes(
    broker: TansuBroker, tiny_models: Path, tmp_path: Path
):
    from services.llm.adapters import AdapterRegistry
    from services.trainer.rounds import RoundSettings, run_round
    from tests.unit.trainer.test_rounds import ledger_with_pairs, pairs

    adapters, state = tmp_path / "adapters", tmp_path / "trainer"
    serving = run_round(
        tiny_models, adapters, pairs(12, 0), pairs(8, 1, 100),
        RoundSettings(steps=2, learning_rate=1e-3, min_gain=-1.0), activate=True,
    )  # fmt: skip
    registry = AdapterRegistry(adapters)
    assert registry.read_active() == serving.adapter_id
    ledger_with_pairs(state, pairs(12, 2, 200), pairs(8, 3, 300)).close()
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP": broker.bootstrap,
        "RECOMMENDER_ADDR": "127.0.0.1:1",
        "STATE_DIR": str(state),
        "SPOOL_DIR": str(tmp_path / "spool"),
        "GRPC_PORT": "0",
        "METRICS_PORT": "-1",
        "MODELS_DIR": str(tiny_models),
        "ADAPTERS_DIR": str(adapters),
        "ROUND_MIN_PAIRS": "1",
        "ROUND_CHECK_S": "0.2",
        "ROUND_LEARNING_RATE": "1e-2",
        "ROUND_MIN_GAIN": "0.05",
    }
    log = tmp_path / "trainer.log"

    def start(steps: int) -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            return spawn(
                [sys.executable, "-m", "services.trainer"],
                cwd=ROOT,
                env={**env, "ROUND_STEPS": str(steps)},
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    process = start(1_000_000)  # a round that would not end by itself
    try:
        wait_for(lambda: "DPO round starts" in log.read_text(), 120)
        time.sleep(2)  # well into training (a step takes milliseconds here)
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        assert [a.adapter_id for a in registry.list()] == [serving.adapter_id]
        assert registry.read_active() == serving.adapter_id, "unchanged mid-round"
        process = start(40)  # after the restart a round completes and serves its adapter
        wait_for(lambda: registry.read_active() != serving.adapter_id, 180)
    finally:
        stop(process, 10)
    published = registry.get(registry.read_active())
    assert published.parent == serving.adapter_id
    assert (
        published.metrics["preference_accuracy_after"]
        > published.metrics["preference_accuracy_before"]
    )
    assert "DPO round done" in log.read_text()
