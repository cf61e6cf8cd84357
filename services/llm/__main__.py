"""`python -m services.llm`: serve LlmService until SIGTERM."""

from __future__ import annotations

from services.llm.config import LlmSettings
from services.llm.service import build_service
from services.llm.servicer import SERVICE_NAME, register
from styleloop.runtime.logging import configure
from styleloop.runtime.server import run, serve
from styleloop.runtime.settings import load_settings


async def main() -> None:
    settings = load_settings(LlmSettings)
    configure(settings.service_name, settings.log_level)
    service = build_service(settings)
    try:
        await serve(
            settings, register(service.core, service.adapters), [SERVICE_NAME], service.start
        )
    finally:
        await service.stop()


if __name__ == "__main__":
    run(main)
