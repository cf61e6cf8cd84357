"""The gateway's settings: the only place it reads the environment."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class GatewaySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    service_name: str = "gateway"
    http_host: str = Field(
        default="127.0.0.1", description="Address the HTTP server binds (0.0.0.0 in a pod)."
    )
    http_port: int = Field(default=8080, ge=0, le=65535)
    metrics_port: int = Field(
        default=9090, ge=-1, le=65535, description="Prometheus /metrics on its own port; -1 off."
    )
    enable_docs: bool | None = Field(
        default=None,
        description="Serve /docs and /openapi.json; default: yes outside production, no in it.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    environment: Literal["development", "production"] = "development"
    recommender_addr: str = Field(description="host:port of the recommender service.")
    llm_addr: str = Field(default="", description="host:port of the llm service; empty: none.")
    rpc_timeout_s: float = Field(default=10.0, gt=0, description="Deadline of every gRPC call.")
    chat_timeout_s: float = Field(
        default=120.0, gt=0, description="Deadline of a whole chat answer (streamed)."
    )
    service_token: SecretStr = Field(
        default=SecretStr(""), description="Shared token sent to the gRPC services."
    )
    api_key_sha256: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated sha256 hex digests of the accepted API keys.",
    )
    allow_anonymous: bool = Field(
        default=False,
        description="Accept /v1 calls without a key when no keys are configured (a local "
        "stack only; refused in production).",
    )
    rate_limit_per_minute: float = Field(default=600, gt=0, description="Per key (or client).")
    rate_limit_burst: int = Field(default=60, ge=1)
    rate_limit_max_callers: int = Field(
        default=100_000, ge=1, description="Rate-limit buckets kept at most (idle ones go first)."
    )
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024, description="JSON bodies.")
    max_upload_bytes: int = Field(default=10 * 1024 * 1024, ge=1024, description="Image uploads.")
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Comma-separated origins."
    )
    kafka_bootstrap: str = Field(default="127.0.0.1:9092", description="Kafka bootstrap servers.")
    feedback_topic: str = "styleloop.feedback.v1"
    kafka_timeout_s: float = Field(default=5.0, gt=0)
    spool_dir: Path = Field(
        default=Path(".styleloop/gateway/spool"),
        description="Durable spool for feedback events while Kafka is unreachable.",
    )
    spool_replay_interval_s: float = Field(default=2.0, gt=0)
    apply_feedback_now: bool = Field(
        default=True,
        description="Also apply likes, rejections and purchases to the recommender right "
        "after Kafka took them (best effort; the trainer applies every event from Kafka "
        "either way): false leaves it to the trainer alone.",
    )
    spool_replay_chunk: int = Field(
        default=1000, ge=1, le=100_000, description="Spooled events sent per acknowledged chunk."
    )

    @field_validator("api_key_sha256", "cors_origins", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    @field_validator("api_key_sha256")
    @classmethod
    def _hex(cls, value: list[str]) -> list[str]:
        for digest in value:
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest.lower()):
                raise ValueError("each entry must be a sha256 hex digest (64 hex characters)")
        return [d.lower() for d in value]
