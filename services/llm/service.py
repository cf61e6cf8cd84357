"""The llm service's parts, built from settings and started and stopped together."""

from __future__ import annotations

from dataclasses import dataclass

from services.llm.adapters import AdapterManager, AdapterRegistry
from services.llm.backends import Backend
from services.llm.backends.local import LocalBackend
from services.llm.clients.captioner import PhotoCaptioner
from services.llm.clients.recommender import RecommenderCatalog
from services.llm.config import LlmSettings
from services.llm.core import ChatCore
from styleloop.models.manifest import load_manifest
from styleloop.runtime.errors import FailedPrecondition
from styleloop.runtime.producer import DurableProducer


def build_backend(settings: LlmSettings) -> Backend:
    manifest = load_manifest(settings.models_dir)
    if settings.backend == "openai":
        from services.llm.backends.openai import OpenAIBackend

        local = settings.models_dir / manifest.llm.path if manifest and manifest.llm else None
        return OpenAIBackend(settings, settings.openai_tokenizer or local)
    if manifest is None or manifest.llm is None:
        raise FailedPrecondition(
            f"no LLM in {settings.models_dir}; run `styleloop models prepare --out "
            f"{settings.models_dir}`",
            reason="NO_MODELS",
        )
    return LocalBackend(
        settings.models_dir / manifest.llm.path,
        model_id=manifest.llm.model_id,
        model_version=manifest.llm.model_version,
        device=settings.llm_device,
        dtype=settings.llm_dtype,
        max_batch_size=settings.max_batch_size,
        max_waiting=settings.max_waiting,
        max_prompt_tokens=settings.max_prompt_tokens,
        repetition_penalty=settings.repetition_penalty,
        threads=settings.llm_threads,
        require_citation=settings.require_citation,
    )


@dataclass
class LlmService:
    settings: LlmSettings
    core: ChatCore
    adapters: AdapterManager
    catalog: RecommenderCatalog
    producer: DurableProducer | None
    captioner: PhotoCaptioner | None = None

    async def start(self) -> None:
        """Wait for the recommender, load the model, serve the active adapter."""
        await self.catalog.wait_ready(self.settings.recommender_wait_s)
        await self.core.refresh_vocabulary()
        await self.core.backend.start()
        if self.producer is not None:
            self.producer.start()
        await self.adapters.sync()
        self.adapters.start()

    async def stop(self) -> None:
        await self.adapters.stop()
        await self.core.backend.stop()
        if self.producer is not None:
            await self.producer.stop()
        await self.catalog.close()
        if self.captioner is not None:
            await self.captioner.close()


def build_service(settings: LlmSettings, backend: Backend | None = None) -> LlmService:
    from services.llm.clients.events import ChatEvents

    backend = backend or build_backend(settings)
    catalog = RecommenderCatalog(
        settings.recommender_addr,
        settings.recommender_timeout_s,
        settings.service_token.get_secret_value(),
    )
    producer = None
    publish = None
    if settings.kafka_bootstrap:
        producer = DurableProducer(
            settings.kafka_bootstrap,
            settings.chat_topic,
            settings.spool_dir,
            settings.kafka_timeout_s,
            settings.spool_replay_interval_s,
            name="chat",
        )
        publish = ChatEvents(producer).publish
    load = getattr(backend, "load_adapter", None)
    if load is None:

        async def load(adapter_id: str, path: object) -> None:  # noqa: ARG001
            raise FailedPrecondition("this backend serves adapters by name only")

    adapters = AdapterManager(
        AdapterRegistry(settings.adapters_dir), backend.model_id, load, settings.adapter_poll_s
    )
    captioner = None
    if settings.captioner_addr:
        captioner = PhotoCaptioner(
            settings.captioner_addr,
            settings.captioner_timeout_s,
            settings.service_token.get_secret_value(),
        )
    core = ChatCore(settings, catalog, backend, publish, adapters.answering, captioner)
    return LlmService(settings, core, adapters, catalog, producer, captioner)
