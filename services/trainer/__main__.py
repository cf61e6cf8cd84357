"""`python -m services.trainer`: consume feedback and chat turns until SIGTERM.

The trainer serves no RPCs of its own: its gRPC server carries health (SERVING once the
consumer runs) and reflection, and ``/metrics`` its counters and lag."""

from __future__ import annotations

from services.trainer.config import TrainerSettings
from services.trainer.service import build_service
from styleloop.runtime.logging import configure
from styleloop.runtime.server import run, serve
from styleloop.runtime.settings import load_settings


def no_rpcs(server: object) -> None:
    """Health and reflection only (the runtime adds them)."""


async def main() -> None:
    settings = load_settings(TrainerSettings)
    configure(settings.service_name, settings.log_level)
    service = build_service(settings)
    try:
        await serve(settings, no_rpcs, [], service.start)
    finally:
        await service.stop()


if __name__ == "__main__":
    run(main)
