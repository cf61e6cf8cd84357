"""What every ``styleloop`` subcommand module shares: its parser, described by its own
module docstring (everything after the first paragraph, laid out as written)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any


def add_command(commands: Any, name: str, doc: str | None, **kw: Any) -> argparse.ArgumentParser:
    """``commands.add_parser(name, …)`` whose ``--help`` shows ``doc`` after its summary."""
    parser: argparse.ArgumentParser = commands.add_parser(
        name,
        description=doc.split("\n\n", 1)[1] if doc else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        **kw,
    )
    return parser


def bootstrap_argument(parser: argparse.ArgumentParser) -> None:
    """``--bootstrap``: the Kafka servers, from ``$KAFKA_BOOTSTRAP`` by default."""
    parser.add_argument(
        "--bootstrap",
        default=os.environ.get("KAFKA_BOOTSTRAP", "127.0.0.1:9092"),
        help="Kafka bootstrap servers (default $KAFKA_BOOTSTRAP or 127.0.0.1:9092)",
    )


def gateway_argument(parser: argparse.ArgumentParser) -> None:
    """``--gateway``: a running stack's gateway URL (`make up`'s by default)."""
    parser.add_argument(
        "--gateway",
        default="http://127.0.0.1:8080",
        help="a running stack's gateway (default http://127.0.0.1:8080, make up's)",
    )


def adapters_dir_argument(parser: argparse.ArgumentParser) -> None:
    """``--adapters-dir``: the llm's LoRA adapter registry (the local stack's by default)."""
    parser.add_argument(
        "--adapters-dir",
        type=Path,
        default=Path(".styleloop/stack/adapters"),
        help="the adapter registry the llm serves from (default: the local stack's)",
    )


def trainer_state_argument(parser: argparse.ArgumentParser, flag: str = "--state-dir") -> None:
    """The trainer's ``STATE_DIR``, which holds its ledger of pairs (the local stack's by
    default)."""
    parser.add_argument(
        flag,
        type=Path,
        default=Path(".styleloop/stack/trainer"),
        help="the trainer's STATE_DIR, its ledger of pairs (default: the local stack's)",
    )
