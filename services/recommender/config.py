"""The recommender's settings: the only place it reads the environment."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from styleloop.runtime.settings import ServiceSettings


class RecommenderSettings(ServiceSettings):
    service_name: str = "recommender"
    encoder_addr: str = Field(description="host:port of the encoder service.")
    encoder_timeout_s: float = Field(default=10.0, gt=0)
    encoder_wait_s: float = Field(default=60.0, ge=0, description="How long start-up waits.")
    store_backend: Literal["edge", "qdrant"] = "edge"
    data_dir: Path = Field(default=Path(".data/recommender"), description="Qdrant Edge shards.")
    qdrant_url: str = Field(
        default=":memory:", description="Qdrant server URL, or ':memory:' / a path (local mode)."
    )
    default_page_size: int = Field(default=20, ge=1)
    max_page_size: int = Field(default=100, ge=1)
    max_upsert_items: int = Field(default=256, ge=1)
    near_duplicate_threshold: float = Field(default=0.95, gt=0, le=1)
    max_user_items: int = Field(
        default=1000, ge=1, description="Newest likes, rejections and purchases kept per user."
    )
    personalise: bool = Field(
        default=True,
        description="Searches, similar items and outfits use the shopper's state (rejected "
        "and bought items and near-duplicates of rejected ones never come back, likes pull); "
        "false still records every interaction (GetUserState, the chat's shopper history) "
        "but retrieves as for anyone: how `styleloop simulate` measures what the chat model "
        "learnt. GetRecommendations is personalised either way.",
    )
    max_query_examples: int = Field(
        default=64, ge=1, description="Newest likes and rejections a recommendation query uses."
    )
    hnsw_ef: int = Field(default=64, ge=1, description="Search-time HNSW ef (Edge and server).")
    full_scan_threshold_kb: int | None = Field(
        default=None,
        ge=1,
        description="New collections (Edge and server): below this many KB of matching "
        "vectors a filtered "
        "query scans them instead of walking HNSW; unset keeps Qdrant's default (10 MB).",
    )
    quantize: bool = Field(
        default=True,
        description="int8 scalar quantization with rescoring for new collections (Edge and "
        "server).",
    )
    reindex_on_model_change: bool = Field(
        default=True,
        description="When the encoder's model has no collection yet, re-embed the catalog of "
        "the previous model's collection (images from image_uri) before serving.",
    )
    image_root: Path | None = Field(
        default=None, description="Folder that relative image_uri values are resolved against."
    )
    outfit_scorer_dir: Path | None = Field(
        default=None,
        description="Folder of the trained outfit compatibility scorer (`styleloop train "
        "outfits`, MODELS_DIR/outfits); CompleteOutfit ranks with it when it was trained for "
        "the encoder's model version, else by summed image-vector similarity.",
    )
    fusion_depth: int = Field(default=100, ge=1, description="Candidates per vector before RRF.")
