"""`python -m services.recommender`: serve RecommenderService until SIGTERM."""

from __future__ import annotations

from services.recommender.config import RecommenderSettings
from services.recommender.core import build_recommender
from services.recommender.servicer import SERVICE_NAME, RecommenderServicer
from styleloop.runtime.logging import configure
from styleloop.runtime.server import run, serve
from styleloop.runtime.settings import load_settings


async def main() -> None:
    settings = load_settings(RecommenderSettings)
    configure(settings.service_name, settings.log_level)
    servicer = RecommenderServicer()

    async def on_ready() -> None:
        # Waits for the encoder (up to ENCODER_WAIT_S), then opens its model's collections.
        servicer.attach(await build_recommender(settings))

    try:
        await serve(settings, servicer.register, [SERVICE_NAME], on_ready)
    finally:
        if servicer._core is not None:
            await servicer._core.close()


if __name__ == "__main__":
    run(main)
