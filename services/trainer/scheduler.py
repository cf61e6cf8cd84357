"""When DPO rounds run, and what happens after one.

Every ``ROUND_CHECK_S`` the ledger is asked how many training pairs no round has used
yet; at ``ROUND_MIN_PAIRS`` of them, or ``ROUND_INTERVAL_S`` after the last round with at
least one, a round (:func:`services.trainer.rounds.run_round`) trains on every training
pair, from the adapter that serves now, in a worker thread (the consumer keeps applying
feedback meanwhile). A published adapter then answers the chat evaluation
(:mod:`services.trainer.chat_gate`) beside the serving one; when it passes it is made to
serve through the llm's ``SetActiveAdapter``, when it fails it is withdrawn from the
registry; every round's outcome goes to ``styleloop.models.v1``; the pairs it
used are marked with its id only once it finished. A round that fails or does not beat
the serving adapter leaves it untouched, and says why in the log and
``trainer_rounds_total{outcome}``. Killed mid-round, nothing is published (an adapter
appears in the registry whole, by rename, or not at all) and the next start trains again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client import Counter, Gauge

from services.llm.adapters import AdapterRegistry
from services.trainer.chat_gate import chat_gate
from services.trainer.clients.llm import LlmAdapters
from services.trainer.ledger import Ledger
from services.trainer.rounds import RoundResult, RoundSettings, run_round
from styleloop.chat_questions import Question
from styleloop.runtime.producer import DurableProducer
from styleloop.v1 import events_pb2

log = logging.getLogger(__name__)

ROUNDS = Counter(
    "trainer_rounds_total", "DPO rounds, by outcome (published, kept, failed).", ["outcome"]
)
ROUND_PREFERENCE = Gauge(
    "trainer_round_preference_accuracy",
    "Held-out preference accuracy of the last round, before and after training.",
    ["when"],
)
ROUND_TRAINING = Gauge(
    "trainer_round_training",
    "TRL's figures of the round in progress (rewards/accuracies, rewards/margins, loss).",
    ["name"],
)
ROUND_RUNNING = Gauge("trainer_round_running", "1 while a DPO round trains.")
LOGGED = {"rewards/accuracies", "rewards/margins", "loss"}


class RoundScheduler:
    def __init__(
        self,
        ledger: Ledger,
        models_dir: Path,
        adapters_dir: Path,
        settings: RoundSettings,
        *,
        min_pairs: int,
        interval_s: float,
        check_s: float,
        llm: LlmAdapters | None,
        events: DurableProducer | None,
        questions: Sequence[Question] = (),
        precision_tolerance: float = 0.0,
    ) -> None:
        self.ledger, self.models_dir, self.adapters_dir = ledger, models_dir, adapters_dir
        self.settings = settings
        self.min_pairs, self.interval_s, self.check_s = min_pairs, interval_s, check_s
        self.llm, self.events = llm, events
        # The chat evaluation a candidate passes before it serves (needs the llm).
        self.questions, self.precision_tolerance = list(questions), precision_tolerance
        self.registry = AdapterRegistry(adapters_dir)
        self.last_round = time.monotonic()
        self.results: list[RoundResult] = []
        self._task: asyncio.Task[None] | None = None
        self.cancelled = threading.Event()  # set on stop: a round in progress ends early

    def due(self, new_pairs: int, now: float) -> bool:
        return new_pairs >= self.min_pairs or (
            new_pairs > 0 and now - self.last_round >= self.interval_s
        )

    async def run_once(self) -> RoundResult | None:
        """A round when one is due; None otherwise."""
        unused = await asyncio.to_thread(self.ledger.pairs, "train", True)
        if not self.due(len(unused), time.monotonic()):
            return None
        if not await asyncio.to_thread(self.ledger.pairs, "eval"):
            log.debug("a round is due but no pair is held out yet")
            return None
        return await self.train_now()

    async def train_now(self) -> RoundResult:
        train = [p.as_json() for p in await asyncio.to_thread(self.ledger.pairs, "train")]
        held = [p.as_json() for p in await asyncio.to_thread(self.ledger.pairs, "eval")]
        parent = self.registry.read_active()
        log.info(
            "DPO round starts",
            extra={"train_pairs": len(train), "held_out_pairs": len(held), "parent": parent},
        )
        ROUND_RUNNING.set(1)
        try:
            result = await asyncio.to_thread(
                run_round,
                self.models_dir,
                self.adapters_dir,
                train,
                held,
                self.settings,
                parent=parent,
                on_log=self._on_log,
                cancelled=self.cancelled,
            )
        except Exception as exc:  # noqa: BLE001 - a failed round leaves the adapter serving
            ROUNDS.labels("failed").inc()
            log.error("DPO round failed; the serving adapter stays", exc_info=exc)
            self.last_round = time.monotonic()
            raise
        finally:
            ROUND_RUNNING.set(0)
        self.last_round = time.monotonic()
        for when in ("before", "after"):
            value = result.metrics.get(f"preference_accuracy_{when}")
            if value is not None:
                ROUND_PREFERENCE.labels(when).set(value)
        if result.published:
            result = await self._chat_gate(result)
        if result.published:
            await self._serve(result.adapter_id)
        ROUNDS.labels("published" if result.published else "kept").inc()
        log.info(
            "DPO round done: %s",
            result.reason,
            extra={"round_id": result.round_id, "metrics": result.metrics},
        )
        if result.pair_ids and not self.cancelled.is_set():
            await asyncio.to_thread(self.ledger.mark_used, result.pair_ids, result.round_id)
        await self._report(result)
        self.results.append(result)
        return result

    async def _chat_gate(self, result: RoundResult) -> RoundResult:
        """The published candidate answers the chat evaluation beside the serving adapter;
        withdrawn when it fails."""
        if self.llm is None or not self.questions:
            log.warning(
                "no chat evaluation of the candidate (%s)",
                "no llm service" if self.llm is None else "no catalog to ask about",
                extra={"adapter_id": result.adapter_id},
            )
            return result
        gate = await chat_gate(
            self.llm.ask, self.questions, result.parent, result.adapter_id, self.precision_tolerance
        )
        result.metrics.update(gate.metrics())
        if gate.passed:
            result.reason = f"{result.reason}; {gate.reason}"
            return result
        await asyncio.to_thread(self.registry.withdraw, result.adapter_id)
        result.published, result.adapter_id = False, ""
        result.reason = f"{result.reason}, then withdrawn: {gate.reason}; the serving adapter stays"
        return result

    def _on_log(self, numbers: Mapping[str, float]) -> None:
        for name in LOGGED & set(numbers):
            ROUND_TRAINING.labels(name).set(numbers[name])

    async def _serve(self, adapter_id: str) -> None:
        if self.llm is None:
            self.registry.write_active(adapter_id)
            return
        try:
            await self.llm.activate(adapter_id)
        except Exception as exc:  # noqa: BLE001 - published; the llm may be restarting
            log.warning(
                "SetActiveAdapter failed; writing active.json for the llm to pick up",
                extra={"error": str(exc)},
            )
            self.registry.write_active(adapter_id)

    async def _report(self, result: RoundResult) -> None:
        if self.events is None:
            return
        info = None
        if result.published:
            with contextlib.suppress(Exception):
                info = self.registry.get(result.adapter_id)
        event = events_pb2.ModelRoundEvent(
            event_id=uuid.uuid4().hex,
            round_id=result.round_id,
            parent_adapter_id=result.parent,
            published=result.published,
            adapter_id=result.adapter_id,
            reason=result.reason,
            base_model_id=info.base_model_id if info else "",
            base_model_version=info.base_model_version if info else "",
            metrics={k: float(v) for k, v in result.metrics.items()},
            pairs_used=len(result.pair_ids),
        )
        event.event_time.FromDatetime(datetime.now(UTC))
        await self.events.publish([(result.round_id.encode(), event.SerializeToString())])

    def start(self) -> None:
        async def loop() -> None:
            while True:
                await asyncio.sleep(self.check_s)
                with contextlib.suppress(Exception):  # logged in train_now; try later
                    await self.run_once()

        self._task = asyncio.get_running_loop().create_task(loop())

    async def stop(self) -> None:
        self.cancelled.set()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


def round_settings(values: Any) -> RoundSettings:
    """RoundSettings from TrainerSettings' ``round_*`` fields."""
    fields = asdict(RoundSettings())
    return RoundSettings(**{k: getattr(values, f"round_{k}") for k in fields if k != "seed"})
