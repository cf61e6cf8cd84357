"""`python -m services.gateway`: serve the HTTP API until SIGTERM (uvicorn)."""

from __future__ import annotations

import sys

import uvicorn

from services.gateway.app import create_app
from services.gateway.config import GatewaySettings
from styleloop.runtime.logging import configure
from styleloop.runtime.settings import load_settings


def main() -> int:
    settings = load_settings(GatewaySettings)
    configure(settings.service_name, settings.log_level)
    try:
        app = create_app(settings)
    except ValueError as exc:
        sys.stderr.write(f"configuration error: {exc}\n")
        return 2
    uvicorn.run(
        app,
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,  # our JSON logging
        access_log=False,  # requests are counted in /metrics
        timeout_graceful_shutdown=10,
        http="httptools",  # C parser (the gateway extra installs it); h11 is pure Python
        loop="uvloop",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
