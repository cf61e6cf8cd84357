"""The trainer's settings: the only place it reads the environment."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from styleloop.runtime.settings import ServiceSettings


class TrainerSettings(ServiceSettings):
    service_name: str = "trainer"
    kafka_bootstrap: str = Field(description="Kafka bootstrap servers (host:port,…).")
    feedback_topic: str = "styleloop.feedback.v1"
    chat_topic: str = "styleloop.chat.v1"
    dlq_topic: str = Field(
        default="styleloop.feedback.dlq.v1",
        description="Events that cannot be decoded or refer to nothing go here, with the "
        "reason in the `reason` header.",
    )
    group_id: str = Field(default="styleloop-trainer", description="The Kafka consumer group.")
    kafka_timeout_s: float = Field(default=5.0, gt=0)
    poll_max_records: int = Field(
        default=200, ge=1, description="Events handled per batch (one offset commit each)."
    )
    poll_timeout_s: float = Field(default=0.2, gt=0)
    recommender_addr: str = Field(description="host:port of the recommender service.")
    recommender_timeout_s: float = Field(default=5.0, gt=0)
    immediate: bool = Field(
        default=True,
        description="Apply likes, rejections and purchases to the shopper's state in the "
        "recommender (false only to measure what the chat model learnt by itself).",
    )
    retry_initial_s: float = Field(
        default=0.2, gt=0, description="First wait before an event is retried (then doubled)."
    )
    retry_max_s: float = Field(default=5.0, gt=0)
    state_dir: Path = Field(
        default=Path(".styleloop/trainer"),
        description="The ledger (applied event ids, chat turns, preference pairs).",
    )
    eval_percent: int = Field(
        default=20, ge=0, le=90, description="Share of answers whose pairs are held out."
    )
    dedup_retention_s: float = Field(
        default=7 * 24 * 3600.0,
        gt=0,
        description="How long applied event ids are remembered for de-duplication.",
    )
    lag_interval_s: float = Field(default=2.0, gt=0, description="How often lag is exported.")

    # ---------------------------------------------------------------- DPO rounds
    models_dir: Path | None = Field(
        default=None,
        description="A folder written by `styleloop models prepare` (the chat model); "
        "unset: no DPO rounds, feedback is still applied.",
    )
    adapters_dir: Path = Field(
        default=Path(".styleloop/adapters"),
        description="The llm's adapter registry: rounds start from its active adapter and "
        "publish into it.",
    )
    llm_addr: str = Field(
        default="",
        description="host:port of the llm service: a published adapter is served through "
        "its SetActiveAdapter; empty: active.json is written directly.",
    )
    llm_timeout_s: float = Field(default=10.0, gt=0)
    models_topic: str = Field(
        default="styleloop.models.v1", description="Where each round's outcome is published."
    )
    spool_dir: Path = Field(
        default=Path(".styleloop/trainer/spool"),
        description="Durable spool for round events while Kafka is unreachable.",
    )
    round_min_pairs: int = Field(
        default=32, ge=1, description="A round starts once this many new training pairs arrived…"
    )
    round_interval_s: float = Field(
        default=3600.0, gt=0, description="…or this long after the last round, with any new."
    )
    round_check_s: float = Field(default=10.0, gt=0, description="How often that is checked.")
    round_steps: int = Field(default=8, ge=1, description="DPO optimizer steps per round.")
    round_batch_size: int = Field(default=2, ge=1, description="Pairs per step.")
    round_rank: int = Field(default=8, ge=1, description="LoRA rank of a fresh adapter.")
    round_learning_rate: float = Field(default=1e-4, gt=0)
    round_beta: float = Field(default=0.1, gt=0, description="DPO's beta.")
    round_max_length: int = Field(
        default=512,
        ge=16,
        description="Tokens per pair (prompt + answer; a 10-card prompt with history is "
        "up to ~400); longer pairs sit the round out.",
    )
    round_max_minutes: float = Field(default=20.0, gt=0, description="A round stops by then.")
    round_min_gain: float = Field(
        default=0.05,
        ge=0,
        description="Held-out preference accuracy must rise by this much to publish.",
    )
    round_min_margin_gain: float = Field(
        default=1.0,
        ge=0,
        description="At the accuracy ceiling (within ROUND_MIN_GAIN of 1): the mean held-out "
        "log-likelihood margin (nats) must rise by this much instead.",
    )
    round_max_held_out: int = Field(
        default=40,
        ge=1,
        description="Held-out pairs a round is measured on (a fixed sample by pair id when "
        "there are more): each costs ~4 forward passes.",
    )
    catalog: Path | None = Field(
        default=None,
        description="The catalog (file or folder) the chat evaluation's questions come from: "
        "a published candidate answers them beside the serving adapter before it serves. "
        "Unset: no chat evaluation (logged for every round).",
    )
    round_chat_questions_per_kind: int = Field(
        default=2, ge=0, description="Chat evaluation questions per kind (0: none)."
    )
    round_precision_tolerance: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="How far the candidate's constraint precision may fall below the "
        "serving adapter's (grounding must stay 100%).",
    )
