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
  then started again;
- ``spool-full``: the gateway's spool sits on a size-limited tmpfs (``--spool-mib``,
  mounted by the drill; needs root, else this fault is reported as not run); its free space
  is taken and the broker stopped until the spool has used the room its file already had
  (at most 120 s) and ``--down-s`` seconds more: feedback that cannot be made durable must
  be refused with 503 ``FEEDBACK_NOT_DURABLE``, never accepted and lost; then the space is
  given back and the broker started;
- ``soak``: ``--soak-s`` seconds of the same mixed traffic with no fault, the resident
  memory (RSS) of every process sampled every ``--sample-s`` seconds: each must stay
  bounded (its peak in the second half at most 10% + 32 MiB over its peak in the first)
  and the error rate must not grow (second half at most one point over the first). The
  samples are charted into ``--results``/soak.png (with soak.json and SUMMARY.md).

Then every accepted event id is read back from the topic. Printed per fault: requests
sent, answers by status, 500s, hangs (no answer within ``--deadline-s``), events accepted,
delivered, lost. The promises: while something is down the gateway answers 503/504 with a
JSON reason — never 500, never a hang past its deadline — serves again after the restart,
and loses no accepted event. Exit status 1 when one is broken.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import subprocess
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
SPOOL_FULL, SOAK = "spool-full", "soak"
FAULTS = (*KILLED, "broker", SPOOL_FULL, SOAK)


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
    reasons: Counter[str] = field(default_factory=Counter)  # 5xx JSON reasons
    started: float = field(default_factory=time.monotonic)
    answers: list[tuple[float, bool]] = field(default_factory=list)  # (when, an error?)


class Load:
    """Open-loop traffic at ``rate`` a second, charged to the current window."""

    def __init__(self, client: Any, items: list[str], rate: float, deadline_s: float) -> None:
        self.client, self.items, self.rate, self.deadline_s = client, items, rate, deadline_s
        self.window = Window("start")
        self.windows: list[Window] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._n = 0
        # Every request that is neither a search nor a recommendation is feedback; during
        # the soak only one in ``feedback_every`` is (the rest: text searches).
        self.feedback_every = 1

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
        window.answers.append((time.monotonic() - window.started, reply.status_code >= 400))
        if reply.status_code >= 500:
            try:
                reason = reply.json().get("reason")
            except ValueError:
                reason = None
            if reply.status_code == 500 or not reason:
                window.server_errors += 1
            else:
                window.reasons[f"{reply.status_code} {reason}"] += 1
        if path == "/v1/feedback" and reply.status_code == 202:
            window.accepted += reply.json()["event_ids"]
        return int(reply.status_code)

    async def _one(self) -> None:
        n, window = self._n, self.window
        self._n += 1
        if n % 4 == 3:
            body = {"user_id": f"drill-{n % 50}", "page_size": 5}
            await self.request(window, "POST", "/v1/recommendations", json=body)
            return
        if n % 2 or (n // 2) % self.feedback_every:
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


def rss_mib(pid: int) -> float | None:
    """A process's resident memory (MiB), from /proc; None once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        return None
    return None


def fill(folder: Path) -> Path:
    """Take every free byte of the filesystem ``folder`` is on; returns the filler."""
    filler = folder / "filler"
    with filler.open("wb", buffering=0) as out:
        try:
            while True:
                out.write(b"\0" * 65536)
        except OSError:
            pass
        try:  # the last partial block
            while True:
                out.write(b"\0" * 512)
        except OSError:
            pass
    return filler


def mount_small_disk(folder: Path, mib: int) -> str | None:
    """A size-limited tmpfs at ``folder``: None when mounted, else why not (it needs root)."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={mib}m,mode=0700", "tmpfs", str(folder)],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"mount: {exc}"
    return None if done.returncode == 0 else (done.stderr.strip() or "mount failed")


def unmount(folder: Path) -> None:
    subprocess.run(["umount", "-l", str(folder)], capture_output=True, check=False, timeout=30)


@dataclass
class Soak:
    """RSS samples of every process, and the verdicts on memory and error rate."""

    seconds: list[float] = field(default_factory=list)
    rss: dict[str, list[float | None]] = field(default_factory=dict)

    def sample(self, at: float, pids: dict[str, int]) -> None:
        self.seconds.append(at)
        for name, pid in pids.items():
            self.rss.setdefault(name, [None] * (len(self.seconds) - 1)).append(rss_mib(pid))

    def unbounded(self) -> dict[str, tuple[float, float]]:
        """Processes whose RSS peak in the second half is over 10% + 32 MiB above their
        peak in the first: name -> (first-half peak, second-half peak)."""
        out = {}
        half = len(self.seconds) // 2
        for name, values in self.rss.items():
            first = [v for v in values[:half] if v is not None]
            second = [v for v in values[half:] if v is not None]
            if first and second and max(second) > max(first) * 1.10 + 32:
                out[name] = (max(first), max(second))
        return out


def error_rates(window: Window, seconds: float) -> tuple[float, float]:
    """The share of answers that were errors in the first and the second half."""
    halves: list[list[bool]] = [[], []]
    for at, error in window.answers:
        halves[0 if at < seconds / 2 else 1].append(error)
    return tuple(sum(h) / len(h) if h else 0.0 for h in halves)  # type: ignore[return-value]


async def soak(args: argparse.Namespace, load: Load, pids: dict[str, int]) -> Soak:
    """``--soak-s`` seconds of mixed traffic, RSS sampled; the verdicts go into the window."""
    from tqdm import tqdm

    window = load.begin(f"soak {args.soak_s:.0f} s")
    # Feedback at a tenth of the fault windows' rate: each accepted batch is read back by
    # id at the end, and on Tansu's S3 storage (a Python S3 emulator here) reading ~30,000
    # events back stalled at 6,035 (the emulator at 100% of a core); ~3,000 read back.
    load.feedback_every = 10
    samples = Soak()
    started = time.monotonic()
    with tqdm(total=int(args.soak_s), desc="soak", unit="s", disable=None) as bar:
        while (elapsed := time.monotonic() - started) < args.soak_s:
            samples.sample(elapsed, pids)
            await asyncio.sleep(min(args.sample_s, max(0.0, args.soak_s - elapsed)))
            bar.update(int(time.monotonic() - started) - bar.n)
    samples.sample(time.monotonic() - started, pids)
    for name, (first, second) in samples.unbounded().items():
        window.server_errors += 1
        window.notes.append(f"RSS GREW: {name} {first:.0f} -> {second:.0f} MiB")
    peaks = ", ".join(
        f"{name} {max(v for v in values if v is not None):.0f}"
        for name, values in samples.rss.items()
        if any(v is not None for v in values)
    )
    window.notes.append(f"RSS peaks (MiB): {peaks}")
    first, second = error_rates(window, args.soak_s)
    window.notes.append(f"error rate {first:.1%} first half, {second:.1%} second half")
    if second > first + 0.01:
        window.server_errors += 1
        window.notes.append("ERROR RATE GREW")
    return samples


class TopicTail:
    """Every feedback event id on the topic, read while the drill runs by a consumer thread
    that follows the log's end. Reading them all back only at the end is slow on Tansu's S3
    storage, where a fetch costs in proportion to the log's length (measured: 9,036 of
    10,000 events in 120 s); at the tail, each fetch brings everything new at once."""

    def __init__(self, bootstrap: str) -> None:
        import threading

        self.bootstrap = bootstrap
        self.seen: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="topic-tail", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        from kafka import KafkaConsumer, TopicPartition

        from styleloop.v1 import events_pb2

        # The broker's outage is the drill's own doing: its reconnect warnings are noise.
        logging.getLogger("kafka").setLevel(logging.ERROR)
        consumer = KafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
        try:
            partitions: list[Any] = []
            while not partitions and not self._stop.wait(0.5):  # until the topic exists
                found = consumer.partitions_for_topic(TOPIC) or set()
                partitions = [TopicPartition(TOPIC, p) for p in sorted(found)]
            if not partitions:
                return
            consumer.assign(partitions)
            consumer.seek_to_beginning(*partitions)
            while not self._stop.is_set():
                try:
                    batch = consumer.poll(timeout_ms=1000, max_records=50_000)
                except Exception as exc:  # noqa: BLE001 - e.g. while the broker is stopped
                    sys.stderr.write(f"drill: reading the topic: {exc!r}; retrying\n")
                    self._stop.wait(1)
                    continue
                ids = [
                    events_pb2.FeedbackEvent.FromString(m.value).event_id
                    for messages in batch.values()
                    for m in messages
                ]
                with self._lock:
                    self.seen.update(ids)
        finally:
            consumer.close()

    def wait_for(self, wanted: set[str], idle_s: float = 60.0, cap_s: float = 1800.0) -> set[str]:
        """The ids of ``wanted`` seen, waiting while more keep arriving (at most ``cap_s``)."""
        from tqdm import tqdm

        started = last_growth = time.monotonic()
        found = 0
        with tqdm(total=len(wanted), desc="read back", unit="event", disable=None) as bar:
            while time.monotonic() - started < cap_s:
                with self._lock:
                    now = len(wanted & self.seen)
                if now > found:
                    bar.update(now - found)
                    found, last_growth = now, time.monotonic()
                if found == len(wanted) or time.monotonic() - last_growth > idle_s:
                    break
                time.sleep(1)
        with self._lock:
            return wanted & self.seen


async def answers_for(client: Any, user: str) -> list[str]:
    reply = await client.post("/v1/recommendations", json={"user_id": user, "page_size": 10})
    reply.raise_for_status()
    return [r["item"]["item_id"] for r in reply.json()["results"]]


async def spool_full(args: argparse.Namespace, load: Load, broker: Any) -> None:
    """The spool's disk full while the broker is down: feedback refused, never lost."""
    window = load.begin("spool disk full")
    if args.spool_disk_error:
        window.notes.append(f"not run: no size-limited disk ({args.spool_disk_error})")
        return
    filler = await asyncio.to_thread(fill, args.spool_disk)
    await asyncio.to_thread(broker.stop)
    # The spool first fills the room it already has (pages an earlier outage freed inside
    # its file); refusals start once that is gone. Then --down-s more of them.
    waited = time.monotonic()
    while not window.reasons["503 FEEDBACK_NOT_DURABLE"] and time.monotonic() - waited < 120:
        await asyncio.sleep(0.2)
    await asyncio.sleep(args.down_s)
    refused = window.reasons["503 FEEDBACK_NOT_DURABLE"]
    window.notes.append(f"feedback refused while full: {refused} (503 FEEDBACK_NOT_DURABLE)")
    if not refused:  # the fault never took hold: nothing here was proved
        window.server_errors += 1
        window.notes.append("NO FEEDBACK WAS REFUSED")
    filler.unlink()
    broker.start()  # from the main thread, as in the broker drill
    window.recovery_s = await serving_again(load, window, 60)
    if window.recovery_s is None:
        window.server_errors += 1
        window.notes.append("NOT SERVING AGAIN after the space came back")
    await asyncio.sleep(args.down_s)


async def drills(
    args: argparse.Namespace, services: dict[str, Any], broker: Any
) -> tuple[list[Window], Soak | None]:
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
        soaked = None
        try:
            load.begin("none (baseline)")
            await asyncio.sleep(args.down_s)
            for name in args.faults:
                if name == SPOOL_FULL:
                    await spool_full(args, load, broker)
                    continue
                if name == SOAK:
                    pids = {n: s.process.pid for n, s in services.items() if s.process}
                    if broker.process is not None:
                        pids["broker"] = broker.process.pid
                    soaked = await soak(args, load, pids)
                    continue
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
    return load.windows, soaked


def run(args: argparse.Namespace) -> int:
    from pydantic import SecretStr

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
    args.spool_disk, args.spool_disk_error = state / "small-disk", None
    out = sys.stdout
    with stop_on_signals():
        try:
            if SPOOL_FULL in args.faults:
                args.spool_disk_error = mount_small_disk(args.spool_disk, args.spool_mib)
                if args.spool_disk_error is None:
                    services["gateway"].env["SPOOL_DIR"] = str(args.spool_disk / "spool")
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
            tail = TopicTail(broker.bootstrap)
            tail.start()
            try:
                windows, soaked = asyncio.run(drills(args, services, broker))
                seen = tail.wait_for({i for w in windows for i in w.accepted})
            finally:
                tail.stop()
        finally:
            for service in reversed(started):
                service.stop()
            broker.stop()
            s3.stop()
            if SPOOL_FULL in args.faults and args.spool_disk_error is None:
                unmount(args.spool_disk)
    if soaked is not None:
        chart_soak(soaked, windows, args.results, out)
    return table(windows, seen, out)


def chart_soak(soaked: Soak, windows: list[Window], results: Path, out: Any) -> None:
    """soak.json and soak.png (RSS of every process over the soak) under ``results``."""
    from styleloop.bench import report

    window = next(w for w in windows if w.fault.startswith("soak"))
    path = report.write(
        results,
        "soak",
        {"seconds": soaked.seconds, "rss_mib": soaked.rss, "statuses": dict(window.statuses)},
        [f"soak: {note}" for note in window.notes]
        + [f"soak: {window.sent} requests, {window.server_errors} broken promises"],
        report.Chart(
            "resident memory of every process during the soak",
            "RSS, MiB",
            [f"{s:.0f} s" for s in soaked.seconds],
            soaked.rss,
            lines=True,
        ),
    )
    out.write(f"wrote {path}\n")


def table(windows: list[Window], seen: set[str], out: Any) -> int:
    out.write(
        f"\n{'fault':<26}{'sent':>6}  {'answers by status':<34}{'500s':>5}{'hangs':>6}"
        f"{'accepted':>9}{'delivered':>10}{'lost':>7}{'back in':>9}\n"
    )
    broken = 0
    for w in windows:
        delivered = sum(i in seen for i in w.accepted)
        lost = len(w.accepted) - delivered
        statuses = " ".join(f"{k}:{v}" for k, v in sorted(w.statuses.items()))
        back = f"{w.recovery_s:.1f} s" if w.recovery_s is not None else "-"
        out.write(
            f"{w.fault:<26}{w.sent:>6}  {statuses:<34}{w.server_errors:>5}{w.hangs:>6}"
            f"{len(w.accepted):>9}{delivered:>10}{lost:>7}{back:>9}\n"
        )
        reasons = ", ".join(f"{k} x{v}" for k, v in w.reasons.most_common())
        for note in [*w.notes, *([f"5xx reasons: {reasons}"] if reasons else [])]:
            out.write(f"{'':<28}{note}\n")
        broken += lost + w.server_errors + w.hangs
        if w.fault.startswith(("kill", "broker")) and w.recovery_s is None:
            broken += 1
    out.write("all promises held\n" if not broken else f"{broken} broken promises\n")
    return 0 if not broken else 1


def main(args: argparse.Namespace) -> int:
    unknown = set(args.faults) - set(FAULTS)
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
    from styleloop.bench.report import report_argument
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
    parser.add_argument("--spool-mib", type=positive, default=16, help="spool disk (16 MiB)")
    parser.add_argument("--soak-s", type=float, default=600.0, help="soak length (600)")
    parser.add_argument("--sample-s", type=float, default=5.0, help="RSS sampling (5)")
    report_argument(parser)
    parser.add_argument(
        "--faults",
        type=lambda text: [f.strip() for f in text.split(",") if f.strip()],
        default=list(FAULTS),
        help=f"in order, comma-separated (default {','.join(FAULTS)})",
    )
    parser.set_defaults(func=main)
