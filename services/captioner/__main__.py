"""`python -m services.captioner`: serve CaptionerService until SIGTERM."""

from __future__ import annotations

from services.captioner.config import CaptionerSettings
from services.captioner.core import build_captioner
from services.captioner.servicer import SERVICE_NAME, register
from styleloop.runtime.logging import configure
from styleloop.runtime.server import run, serve
from styleloop.runtime.settings import load_settings


async def main() -> None:
    settings = load_settings(CaptionerSettings)
    configure(settings.service_name, settings.log_level)
    core = build_captioner(settings)
    try:
        await serve(settings, register(core), [SERVICE_NAME], core.start)
    finally:
        await core.stop()


if __name__ == "__main__":
    run(main)
