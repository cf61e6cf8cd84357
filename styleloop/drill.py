"""`styleloop drill` (`make drill`): the stack's promises under faults, on loopback.

Starts a stack of its own (the broker on durable storage, every service, the gateway) on
ports apart from `make up`'s, ingests ``--items`` catalog items, and keeps a steady,
bounded load on the gateway (``--rate`` requests a second, half text searches and half
feedback batches of 5 events; at most 64 in flight) while, one after another:

- each of encoder, recommender, captioner, llm and trainer is killed with SIGKILL, left
  down ``--down-s`` seconds (the llm window also sends a chat, which must be refused),
  restarted, and timed until a search answers 200 again;
- the recommender's answers for a shopper with history are compared before its kill and
  after its restart (catalog and user state intact);
- the broker is stopped for ``--broker-down-s`` seconds (feedback goes to the spool),
  then started again.

Then every accepted event id is read back from the topic. Printed per fault: requests
sent, answers by status, 500s, hangs (no answer within ``--deadline-s``), events accepted,
delivered, lost. The promises: while something is down the gateway answers 503/504 with a
JSON reason — never 500, never a hang past its deadline — serves again after the restart,
and loses no accepted event. Exit status 1 when one is broken.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from styleloop.commands import add_command

TOPIC = "styleloop.feedback.v1"
QUERIES = ("black leather shoes", "red summer dress", "blue jeans", "white shirt", "watch")
KILLED = ("encoder", "recommender", "captioner", "llm", "trainer")


@dataclass
class Window:
    """What the load saw during one fault."""

    fault: str
    sent: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    server_errors: int = 0  # 500s, or a 5xx without the JSON reason
    hangs: int = 0
    accepted: list[str] = field(default_factory=list)
    recovery_s: float | None = None
    notes: list[str] = field(default_factory=list)


class Load:
    """Open-loop traffic at ``rate`` a second, charged to the current window."""

    def __init__(self, client: Any, items: list[str], rate: float, deadline_s: float) -> None:
        self.client, self.items, self.rate, self.deadline_s = client, items, rate, deadline_s
        self.window = Window("start")
        self.windows: list[Window] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._n = 0

    def begin(self, fault: str) -> Window:
        self.window = Window(fault)
        self.windows.append(self.window)
        return self.window

    async def request(self, window: Window, method: str, path: str, **kwargs: Any) -> int:
        import httpx

        window.sent += 1
        try:
            reply = await asyncio.wait_for(
                self.client.request(method, path, **kwargs), self.deadline_s
            )
        except (TimeoutError, httpx.TimeoutException):
            window.hangs += 1
            window.statuses["hang"] += 1
            return 0
        except httpx.HTTPError as exc:  # the gateway itself unreachable
            window.statuses[type(exc).__name__] += 1
            window.server_errors += 1
            return 0
        window.statuses[str(reply.status_code)] += 1
        if reply.status_code >= 500:
            try:
                reason = reply.json().get("reason")
            except ValueError:
                reason = None
            if reply.status_code == 500 or not reason:
                window.server_errors += 1
        if path == "/v1/feedback" and reply.status_code == 202:
            window.accepted += reply.json()["event_ids"]
        return int(reply.status_code)

    async def _one(self) -> None:
        n, window = self._n, self.window
        self._n += 1
        if n % 2:
            body = {"query": QUERIES[n % len(QUERIES)], "page_size": 5}
            await self.request(window, "POST", "/v1/search/text", json=body)
            return
        events = [
            {"user_id": f"drill-{n % 50}", "item_id": self.items[(n + i) % len(self.items)],
             "kind": "reject" if i == 0 else "impression"}
            for i in range(5)
        ]  # fmt: skip
        await self.request(window, "POST", "/v1/feedback", json={"events": events})

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            if len(self._tasks) < 64:
                task = asyncio.create_task(self._one())
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            await asyncio.sleep(1 / self.rate)
        await asyncio.gather(*self._tasks)


async def serving_again(load: Load, window: Window, timeout_s: float) -> float | None:
    """Seconds until a text search answers 200 (None: not within ``timeout_s``)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        status = await load.request(
            window, "POST", "/v1/search/text", json={"query": QUERIES[0], "page_size": 5}
        )
        if status == 200:
            return time.monotonic() - started
        await asyncio.sleep(0.2)
    return None


async def answers_for(client: Any, user: str) -> list[str]:
    reply = await client.post("/v1/recommendations", json={"user_id": user, "page_size": 10})
    reply.raise_for_status()
    return [r["item"]["item_id"] for r in reply.json()["results"]]


async def drills(args: argparse.Namespace, services: dict[str, Any], broker: Any) -> list[Window]:
    import httpx

    gateway = services["gateway"]
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(
        base_url=f"http://{gateway.address}", timeout=args.deadline_s, limits=limits
    ) as client:
        found = await client.post("/v1/search/text", json={"query": "shirt", "page_size": 50})
        found.raise_for_status()
        items = [r["item"]["item_id"] for r in found.json()["results"]]
        if not items:
            raise RuntimeError("the drill's recommender has no items after ingest")
        # A shopper with history, whose answers must survive the recommender's restart.
        likes = [{"user_id": "drill-keeper", "item_id": i, "kind": "like"} for i in items[:3]]
        (await client.post("/v1/feedback", json={"events": likes})).raise_for_status()
        load = Load(client, items, args.rate, args.deadline_s)
        stop = asyncio.Event()
        runner = asyncio.create_task(load.run(stop))
        try:
            load.begin("none (baseline)")
            await asyncio.sleep(args.down_s)
            for name in args.faults:
                if name == "broker":
                    window = load.begin(f"broker stopped {args.broker_down_s:.0f} s")
                    await asyncio.to_thread(broker.stop)
                    await asyncio.sleep(args.broker_down_s)
                    # Started from this (the main) thread, not a worker thread: what we spawn
                    # dies with the thread that spawned it (PR_SET_PDEATHSIG).
                    broker.start()
                    window.recovery_s = await serving_again(load, window, 60)
                    await asyncio.sleep(args.down_s)
                    continue
                service = services[name]
                before = await answers_for(client, "drill-keeper") if name == "recommender" else []
                window = load.begin(f"kill -9 {name}")
                service.process.send_signal(signal.SIGKILL)
                await asyncio.to_thread(service.process.wait)
                if name == "llm":  # a chat while the llm is down: refused, not hung
                    chat = {"user_id": "drill", "messages": [{"role": "user", "content": "hi"}]}
                    status = await load.request(window, "POST", "/v1/chat", json=chat)
                    window.notes.append(f"chat while down: {status or 'no answer'}")
                await asyncio.sleep(args.down_s)
                service.start()
                await asyncio.to_thread(service.wait_ready, 300)
                window.recovery_s = await serving_again(load, window, 60)
                if name == "recommender":
                    after = await answers_for(client, "drill-keeper")
                    intact = before == after
                    window.notes.append(
                        "catalog and user state intact" if intact else "ANSWERS CHANGED"
                    )
                    if not intact:
                        window.server_errors += 1
                await asyncio.sleep(args.down_s)
        finally:
            stop.set()
            await runner
    return load.windows


def run(args: argparse.Namespace) -> int:
    from pydantic import SecretStr

    from styleloop.bench.ingest import read_back
    from styleloop.broker import LocalS3, TansuBroker
    from styleloop.catalog import read_catalog
    from styleloop.cli import _ingest_catalog
    from styleloop.ingest import IngestSettings, ingest
    from styleloop.processes import stop_on_signals
    from styleloop.stack import plan_for_catalog

    catalog_path = _ingest_catalog(args.catalog)
    if catalog_path is None:
        sys.stderr.write("styleloop drill: no catalog (set STYLELOOP_DATA_DIR or --catalog)\n")
        return 2
    from styleloop.models.manifest import load_manifest

    manifest = load_manifest(args.models_dir)
    if manifest is None or (manifest.captioner is None and manifest.attributes is None):
        sys.stderr.write(
            f"styleloop drill: no complete models in {args.models_dir} (no captioner yet); "
            "run `make up` once (it prepares them and trains StyleLoop's heads)\n"
        )
        return 2
    catalog = read_catalog(catalog_path)
    state: Path = args.state_dir
    logs = state / "logs"
    token = os.urandom(18).hex()
    s3 = LocalS3(args.s3_port)
    broker = TansuBroker(args.kafka_port, logs / "broker.log", s3=s3)
    started = plan_for_catalog(
        args.models_dir,
        state,
        catalog_path,
        catalog.source,
        args.base_port,
        args.gateway_port,
        broker.bootstrap,
        token,
    )
    services = {s.name: s for s in started}
    services["gateway"].env.update(RATE_LIMIT_PER_MINUTE="1000000", RATE_LIMIT_BURST="10000")
    out = sys.stdout
    with stop_on_signals():
        try:
            s3.start()
            broker.start()
            for service in started:
                out.write(f"starting {service.name} on {service.address}\n")
                out.flush()
                service.start()
                service.wait_ready(300)
            recommender, captioner = services["recommender"], services["captioner"]
            ingest(
                catalog,
                IngestSettings(
                    recommender_addr=recommender.address,
                    captioner_addr=captioner.address,
                    service_token=SecretStr(token),
                ),
                state=state / "ingest" / "journal.jsonl",
                limit=args.items,
                progress=True,
            )
            windows = asyncio.run(drills(args, services, broker))
            wanted = {i for w in windows for i in w.accepted}
            seen, _ = read_back(broker.bootstrap, TOPIC, {}, wanted, 120)
        finally:
            for service in reversed(started):
                service.stop()
            broker.stop()
            s3.stop()
    return table(windows, seen, out)


def table(windows: list[Window], seen: set[str], out: Any) -> int:
    out.write(
        f"\n{'fault':<26}{'sent':>6}  {'answers by status':<34}{'500s':>5}{'hangs':>6}"
        f"{'accepted':>9}{'delivered':>10}{'lost':>5}{'back in':>9}\n"
    )
    broken = 0
    for w in windows:
        delivered = sum(i in seen for i in w.accepted)
        lost = len(w.accepted) - delivered
        statuses = " ".join(f"{k}:{v}" for k, v in sorted(w.statuses.items()))
        back = f"{w.recovery_s:.1f} s" if w.recovery_s is not None else "-"
        out.write(
            f"{w.fault:<26}{w.sent:>6}  {statuses:<34}{w.server_errors:>5}{w.hangs:>6}"
            f"{len(w.accepted):>9}{delivered:>10}{lost:>5}{back:>9}\n"
        )
        for note in w.notes:
            out.write(f"{'':<28}{note}\n")
        broken += lost + w.server_errors + w.hangs
        if w.fault.startswith(("kill", "broker")) and w.recovery_s is None:
            broken += 1
    out.write("all promises held\n" if not broken else f"{broken} broken promises\n")
    return 0 if not broken else 1


def main(args: argparse.Namespace) -> int:
    unknown = set(args.faults) - {*KILLED, "broker"}
    if unknown:
        sys.stderr.write(f"styleloop drill: unknown faults {sorted(unknown)}\n")
        return 2
    from styleloop.stack import StackError

    try:
        return run(args)
    except StackError as exc:  # a service would not start (again); its log says why
        sys.stderr.write(f"styleloop drill: {exc}\n")
        return 1
    except KeyboardInterrupt:  # Ctrl-C, SIGTERM or SIGHUP: everything was stopped
        return 130


def register(commands: Any) -> None:
    """``styleloop drill``."""
    from styleloop.cli import DEFAULT_MODELS_DIR, positive

    parser = add_command(commands, "drill", __doc__, help="fault drills under load, on loopback")
    parser.add_argument("--models-dir", type=Path, default=DEFAULT_MODELS_DIR / "offline")
    parser.add_argument("--catalog", type=Path, help="catalog (default $STYLELOOP_DATA_DIR)")
    parser.add_argument("--state-dir", type=Path, default=Path(".styleloop/drill"))
    # Below Linux's ephemeral range (32768-60999): a service's port freed by its kill could
    # be taken by any outgoing connection before its restart binds it again.
    parser.add_argument("--base-port", type=positive, default=30051, help="(+0..6, +100..105)")
    parser.add_argument("--gateway-port", type=positive, default=8181)
    parser.add_argument("--kafka-port", type=positive, default=9193)
    parser.add_argument("--s3-port", type=positive, default=9194, help="the broker's storage")
    parser.add_argument("--items", type=positive, default=300, help="catalog items (300)")
    parser.add_argument("--rate", type=float, default=20.0, help="requests a second (20)")
    parser.add_argument("--down-s", type=float, default=5.0, help="each service down (5)")
    parser.add_argument("--broker-down-s", type=float, default=30.0, help="broker down (30)")
    parser.add_argument("--deadline-s", type=float, default=20.0, help="a hang, past this (20)")
    parser.add_argument(
        "--faults",
        type=lambda text: [f.strip() for f in text.split(",") if f.strip()],
        default=[*KILLED, "broker"],
        help="in order, comma-separated (default encoder,recommender,captioner,llm,trainer,broker)",
    )
    parser.set_defaults(func=main)
