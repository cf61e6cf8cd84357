"""LoRA adapters: a registry folder of versioned adapters, and which one serves.

Layout of ``ADAPTERS_DIR``::

    <adapter_id>/adapter_config.json, adapter_model.safetensors   (PEFT's files)
    <adapter_id>/styleloop_adapter.json   id, base model id and version, parent, metrics,
                                          creation time
    active.json                           {"adapter_id": "..."}; "" serves the base model

An adapter id names one set of weights forever: :func:`publish` refuses an id that
exists, and a folder appears whole (written beside, then renamed). The service polls
``active.json`` (``ADAPTER_POLL_S``) so that an adapter the trainer publishes and
activates is picked up without a restart; ``SetActiveAdapter`` writes the same file.
Switching never breaks a stream in flight: each generation carries the adapter it
started with and every loaded adapter stays loaded. An adapter that fails to load
leaves the current one serving (a log line and ``llm_adapter_load_failures_total``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import Counter, Gauge

from styleloop.runtime.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound

log = logging.getLogger(__name__)

META = "styleloop_adapter.json"
ACTIVE = "active.json"
LOAD_FAILURES = Counter(
    "llm_adapter_load_failures_total", "Adapters that failed to load (the current one serves on)."
)
SWITCHES = Counter("llm_adapter_switches_total", "Times the active adapter changed.")
LOADED = Gauge("llm_adapters_loaded", "Adapters loaded in the model.")
ADAPTER_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_.")


@dataclass(frozen=True)
class AdapterInfo:
    adapter_id: str
    base_model_id: str
    base_model_version: str = ""
    parent: str = ""
    metrics: Mapping[str, float] = field(default_factory=dict)
    create_time: float = 0.0
    path: Path = Path()

    def to_json(self) -> dict[str, Any]:
        return {
            "adapter_id": self.adapter_id,
            "base_model_id": self.base_model_id,
            "base_model_version": self.base_model_version,
            "parent": self.parent,
            "metrics": dict(self.metrics),
            "create_time": self.create_time,
        }


def check_adapter_id(adapter_id: str) -> str:
    if (
        not adapter_id
        or len(adapter_id) > 64
        or set(adapter_id) - ADAPTER_ID_CHARS
        or adapter_id[0] in "._-"
    ):
        raise InvalidArgument(
            f"adapter id {adapter_id[:80]!r}: 1-64 of a-z 0-9 - _ . starting with a letter or "
            "digit",
            reason="BAD_ADAPTER_ID",
        )
    return adapter_id


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class AdapterRegistry:
    def __init__(self, root: Path) -> None:
        self.root = root

    def list(self) -> list[AdapterInfo]:
        """Every complete adapter, newest first."""
        found = []
        if self.root.is_dir():
            for folder in self.root.iterdir():
                info = self._read(folder)
                if info is not None:
                    found.append(info)
        return sorted(found, key=lambda a: (-a.create_time, a.adapter_id))

    def _read(self, folder: Path) -> AdapterInfo | None:
        meta = folder / META
        if folder.name.startswith(".") or not meta.is_file():
            return None
        try:
            data = json.loads(meta.read_text(encoding="utf-8"))
            return AdapterInfo(
                adapter_id=str(data["adapter_id"]),
                base_model_id=str(data["base_model_id"]),
                base_model_version=str(data.get("base_model_version", "")),
                parent=str(data.get("parent", "")),
                metrics={str(k): float(v) for k, v in dict(data.get("metrics", {})).items()},
                create_time=float(data.get("create_time", 0.0)),
                path=folder,
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("unreadable adapter", extra={"path": str(folder), "error": str(exc)})
            return None

    def get(self, adapter_id: str) -> AdapterInfo:
        info = self._read(self.root / check_adapter_id(adapter_id))
        if info is None:
            raise NotFound(f"no adapter {adapter_id!r}", reason="ADAPTER_NOT_FOUND")
        return info

    def read_active(self) -> str:
        """The adapter ``active.json`` names; "" when it names none or is absent."""
        try:
            return str(json.loads((self.root / ACTIVE).read_text(encoding="utf-8"))["adapter_id"])
        except (OSError, ValueError, KeyError, TypeError):
            return ""

    def withdraw(self, adapter_id: str) -> None:
        """Take a published adapter that never served out of the registry (a candidate that
        failed its chat evaluation); the active one is refused."""
        info = self.get(adapter_id)
        if self.read_active() == adapter_id:
            raise FailedPrecondition(
                f"adapter {adapter_id!r} serves; activate another first",
                reason="ADAPTER_ACTIVE",
            )
        hidden = self.root / f".withdrawn-{adapter_id}-{os.getpid()}"
        os.replace(info.path, hidden)  # unlisted at once, whole
        _fsync_dir(self.root)
        shutil.rmtree(hidden, ignore_errors=True)

    def write_active(self, adapter_id: str) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        temp = self.root / f".{ACTIVE}.{os.getpid()}"
        temp.write_text(json.dumps({"adapter_id": adapter_id}), encoding="utf-8")
        os.replace(temp, self.root / ACTIVE)
        _fsync_dir(self.root)


def publish(root: Path, source: Path, info: AdapterInfo, activate: bool = False) -> AdapterInfo:
    """Copy a PEFT adapter folder into the registry under a new id, whole or not at all."""
    check_adapter_id(info.adapter_id)
    target = root / info.adapter_id
    if target.exists():
        raise AlreadyExists(f"adapter {info.adapter_id!r} exists", reason="ADAPTER_EXISTS")
    root.mkdir(parents=True, exist_ok=True)
    staging = root / f".staging-{info.adapter_id}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(source, staging)
    created = AdapterInfo(**{**info.__dict__, "create_time": info.create_time or time.time()})
    (staging / META).write_text(json.dumps(created.to_json(), indent=2), encoding="utf-8")
    os.replace(staging, target)
    _fsync_dir(root)
    if activate:
        AdapterRegistry(root).write_active(info.adapter_id)
    return AdapterInfo(**{**created.__dict__, "path": target})


LoadAdapter = Callable[[str, Path], Awaitable[None]]
BASE_MODEL = "base"  # asked for by name: the base model, whatever adapter serves


class AdapterManager:
    """Which adapter serves new chats, switched safely."""

    def __init__(
        self,
        registry: AdapterRegistry,
        base_model_id: str,
        load: LoadAdapter,
        poll_s: float = 5.0,
    ) -> None:
        self.registry = registry
        self.base_model_id = base_model_id
        self.load = load
        self.poll_s = poll_s
        self.active: AdapterInfo | None = None
        self._loaded: set[str] = set()
        self._lock = asyncio.Lock()
        self._watcher: asyncio.Task[None] | None = None
        self._last_failed: str | None = None  # what active.json named when it last failed

    def active_id(self) -> str:
        return self.active.adapter_id if self.active else ""

    async def _ready(self, adapter_id: str) -> AdapterInfo:
        """``adapter_id``'s registry entry, loaded into the backend (under the lock)."""
        info = self.registry.get(adapter_id)
        if info.base_model_id != self.base_model_id:
            raise FailedPrecondition(
                f"adapter {adapter_id!r} was trained on {info.base_model_id}; this "
                f"service serves {self.base_model_id}",
                reason="ADAPTER_BASE_MISMATCH",
            )
        if adapter_id not in self._loaded:
            try:
                await self.load(adapter_id, info.path)
            except Exception as exc:
                LOAD_FAILURES.inc()
                log.error(
                    "adapter failed to load; the current one serves on",
                    extra={"adapter_id": adapter_id, "serving": self.active_id()},
                    exc_info=exc,
                )
                raise FailedPrecondition(
                    f"adapter {adapter_id!r} could not be loaded; "
                    f"{self.active_id() or 'the base model'} serves on",
                    reason="ADAPTER_LOAD_FAILED",
                ) from None
            self._loaded.add(adapter_id)
            LOADED.set(len(self._loaded))
        return info

    async def activate(self, adapter_id: str, persist: bool = True) -> AdapterInfo | None:
        """Serve ``adapter_id`` ("" for the base model) for chats that start from now on."""
        async with self._lock:
            info = await self._ready(adapter_id) if adapter_id else None
            if persist:
                self.registry.write_active(adapter_id)
            if (info.adapter_id if info else "") != self.active_id():
                SWITCHES.inc()
                log.info("adapter active", extra={"adapter_id": adapter_id or "(base)"})
            self.active = info
            return info

    async def answering(self, requested: str = "") -> str:
        """The adapter a new chat answers with: the serving one, or ``requested`` (a
        published adapter, loaded beside the serving one and not switched to; ``base``:
        the base model) — how a candidate is evaluated before it serves."""
        if not requested:
            return self.active_id()
        if requested == BASE_MODEL:
            return ""
        async with self._lock:
            return (await self._ready(requested)).adapter_id

    async def sync(self) -> None:
        """Follow ``active.json``: a newly published and activated adapter serves now."""
        wanted = self.registry.read_active()
        if wanted == self.active_id() or wanted == self._last_failed:
            return
        try:
            await self.activate(wanted, persist=False)
            self._last_failed = None
        except (NotFound, FailedPrecondition, InvalidArgument) as exc:
            self._last_failed = wanted  # logged once, tried again when the file changes
            log.error("active adapter not switched", extra={"wanted": wanted, "error": str(exc)})

    def start(self) -> None:
        async def loop() -> None:
            while True:
                await asyncio.sleep(self.poll_s)
                try:
                    await self.sync()
                except Exception as exc:  # noqa: BLE001 - the watcher lives on
                    log.error("adapter watch failed", exc_info=exc)

        self._watcher = asyncio.create_task(loop(), name="adapter-watcher")

    async def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None
