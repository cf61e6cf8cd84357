"""The trainer's parts, built from settings and started and stopped together."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field

from services.trainer.clients.llm import LlmAdapters
from services.trainer.clients.recommender import RecommenderInteractions
from services.trainer.config import TrainerSettings
from services.trainer.consumer import EventConsumer
from services.trainer.core import TrainerCore
from services.trainer.ledger import Ledger
from services.trainer.scheduler import RoundScheduler, round_settings
from styleloop.catalog import CatalogError, read_catalog
from styleloop.chat_questions import Question, build_questions
from styleloop.runtime.errors import FailedPrecondition
from styleloop.runtime.producer import DurableProducer

log = logging.getLogger(__name__)


@dataclass
class TrainerService:
    settings: TrainerSettings
    ledger: Ledger
    interactions: RecommenderInteractions
    core: TrainerCore
    consumer: EventConsumer
    rounds: RoundScheduler | None = None
    _task: asyncio.Task[None] | None = field(default=None, repr=False)

    async def start(self) -> None:
        forgotten = await asyncio.to_thread(
            self.ledger.forget_before, time.time() - self.settings.dedup_retention_s
        )
        if forgotten:
            log.info("forgot old event ids", extra={"events": forgotten})
        self._task = asyncio.get_running_loop().create_task(self._consume())
        if self.rounds is not None:
            if self.rounds.events is not None:
                self.rounds.events.start()
            self.rounds.start()

    async def _consume(self) -> None:
        try:
            await self.consumer.run()
        except Exception as exc:  # the loop recovers from everything it expects
            log.error("consumer stopped", exc_info=exc)
            raise

    async def stop(self) -> None:
        """Finish the event in hand (or leave it uncommitted while it waits to be retried),
        commit, close."""
        self.core.stopping.set()
        if self.rounds is not None:
            await self.rounds.stop()
            if self.rounds.llm is not None:
                await self.rounds.llm.close()
            if self.rounds.events is not None:
                await self.rounds.events.stop()
        if self._task is not None:
            with contextlib.suppress(Exception):
                await self._task
        await self.consumer.close()
        await self.interactions.close()
        await asyncio.to_thread(self.ledger.close)


def build_service(settings: TrainerSettings) -> TrainerService:
    ledger = Ledger(settings.state_dir)
    interactions = RecommenderInteractions(
        settings.recommender_addr,
        settings.recommender_timeout_s,
        settings.service_token.get_secret_value(),
    )
    core = TrainerCore(
        ledger,
        interactions,
        feedback_topic=settings.feedback_topic,
        chat_topic=settings.chat_topic,
        immediate=settings.immediate,
        eval_percent=settings.eval_percent,
        retry_initial_s=settings.retry_initial_s,
        retry_max_s=settings.retry_max_s,
    )
    consumer = EventConsumer(
        core,
        bootstrap=settings.kafka_bootstrap,
        group_id=settings.group_id,
        dlq_topic=settings.dlq_topic,
        timeout_s=settings.kafka_timeout_s,
        poll_max_records=settings.poll_max_records,
        poll_timeout_s=settings.poll_timeout_s,
        retry_initial_s=settings.retry_initial_s,
        retry_max_s=settings.retry_max_s,
        lag_interval_s=settings.lag_interval_s,
    )
    rounds = None
    if settings.models_dir is not None:
        token = settings.service_token.get_secret_value()
        rounds = RoundScheduler(
            ledger,
            settings.models_dir,
            settings.adapters_dir,
            round_settings(settings),
            min_pairs=settings.round_min_pairs,
            interval_s=settings.round_interval_s,
            check_s=settings.round_check_s,
            llm=LlmAdapters(settings.llm_addr, settings.llm_timeout_s, token)
            if settings.llm_addr
            else None,
            events=DurableProducer(
                settings.kafka_bootstrap,
                settings.models_topic,
                settings.spool_dir,
                settings.kafka_timeout_s,
                2.0,
                name="models",
            ),
            questions=evaluation_questions(settings),
            precision_tolerance=settings.round_precision_tolerance,
        )
    return TrainerService(settings, ledger, interactions, core, consumer, rounds)


def evaluation_questions(settings: TrainerSettings) -> list[Question]:
    """The chat evaluation's questions (its eval split) from CATALOG; none when unset."""
    if settings.catalog is None or not settings.round_chat_questions_per_kind:
        return []
    try:
        rows = [r.item for r in read_catalog(settings.catalog).rows]
    except CatalogError as exc:
        raise FailedPrecondition(f"CATALOG: {exc}", reason="BAD_CATALOG") from None
    return build_questions(rows, "eval", per_kind=settings.round_chat_questions_per_kind)
