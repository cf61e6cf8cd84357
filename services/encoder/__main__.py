"""`python -m services.encoder`: serve EncoderService until SIGTERM."""

from __future__ import annotations

from services.encoder.config import EncoderSettings
from services.encoder.core import build_encoder
from services.encoder.servicer import SERVICE_NAME, register
from styleloop.runtime.logging import configure
from styleloop.runtime.server import run, serve
from styleloop.runtime.settings import load_settings


async def main() -> None:
    settings = load_settings(EncoderSettings)
    configure(settings.service_name, settings.log_level)
    encoder = build_encoder(settings)
    try:
        await serve(settings, register(encoder), [SERVICE_NAME], encoder.start)
    finally:
        await encoder.stop()


if __name__ == "__main__":
    run(main)
