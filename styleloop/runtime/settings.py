"""Settings from the environment, parsed once at start.

Every service subclasses :class:`ServiceSettings` in its own ``config.py`` and calls
:func:`load_settings` once; a missing or malformed setting stops the process with a
message that names the environment variable.
"""

from __future__ import annotations

import sys
from typing import Literal, TypeVar

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    """Knobs every service shares, under the same environment names everywhere."""

    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    service_name: str = Field(default="styleloop", description="Name used in logs and metrics.")
    grpc_host: str = Field(
        default="127.0.0.1",
        description="Address the gRPC server binds (0.0.0.0 in a container, with SERVICE_TOKEN).",
    )
    grpc_port: int = Field(default=50051, ge=0, le=65535, description="gRPC port; 0 picks one.")
    metrics_port: int = Field(
        default=9090, ge=-1, le=65535, description="Prometheus /metrics port; 0 picks one, -1 off."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    environment: Literal["development", "production"] = Field(
        default="development", description="Reflection is served outside production only."
    )
    shutdown_grace_s: float = Field(
        default=10.0, ge=0, description="Seconds in-flight RPCs get to finish after SIGTERM."
    )
    grpc_max_message_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    service_token: SecretStr = Field(
        default=SecretStr(""),
        description="Shared token every RPC but health must carry (authorization: Bearer); "
        "required in production.",
    )
    grpc_max_concurrent_rpcs: int = Field(
        default=256, ge=1, description="RPCs served at once; more are RESOURCE_EXHAUSTED."
    )

    @model_validator(mode="after")
    def _token_in_production(self) -> ServiceSettings:
        if self.environment == "production" and not self.service_token.get_secret_value():
            raise ValueError("SERVICE_TOKEN must be set in production (service-to-service auth)")
        return self


class SettingsError(SystemExit):
    """Raised when the environment does not hold a valid configuration."""


S = TypeVar("S", bound=BaseSettings)


def env_name(settings_cls: type[BaseSettings], field: str) -> str:
    """The environment variable that sets ``field`` of ``settings_cls``."""
    prefix = str(settings_cls.model_config.get("env_prefix") or "")
    return f"{prefix}{field}".upper()


def describe_validation_error(settings_cls: type[BaseSettings], error: ValidationError) -> str:
    """One line per bad setting, naming the environment variable."""
    lines = []
    for item in error.errors():
        field = str(item["loc"][0]) if item["loc"] else "?"
        name = env_name(settings_cls, field)
        if item["type"] == "missing":
            lines.append(f"missing required setting {name}")
        else:
            lines.append(f"invalid setting {name}: {item['msg']} (got {item.get('input')!r})")
    return "configuration error: " + "; ".join(lines)


def load_settings(settings_cls: type[S]) -> S:
    """Parse ``settings_cls`` from the environment, or stop the process naming what is wrong."""
    try:
        return settings_cls()
    except ValidationError as exc:
        message = describe_validation_error(settings_cls, exc)
        sys.stderr.write(message + "\n")
        raise SettingsError(message) from None
