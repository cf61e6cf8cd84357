"""StyleLoop's benchmarks (``styleloop bench NAME``, ``make bench``): one module each, every
one printing ratios or percentiles measured side by side in one run and writing
``NAME.json``, ``NAME.png`` and a shared ``SUMMARY.md`` under ``--results``
(:mod:`styleloop.bench.report`).

- ``encoder``: served images/s and latency, micro-batching off vs on, beside ONNX Runtime
  alone (starts the encoder on 127.0.0.1 itself);
- ``recommender``: Qdrant Edge vs NumPy brute force on synthetic vectors (in-process);
- ``llm``: the in-process LLM backend by dtype, chats one at a time vs together;
- ``gateway``: the HTTP gateway beside direct gRPC calls to the same service: text and
  photo search, recommendations (running stack);
- ``chat``: time to first token and tokens/s through the gateway beside the llm over gRPC
  at concurrency 1, 4, 8 (running stack);
- ``ingest``: feedback events/s through the gateway into Kafka beside a direct producer,
  every event id read back (running stack);
- ``feedback``: event -> effect latency through a running stack (``make up``).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

#: What ``styleloop bench all`` runs, in order; those that need a running stack only with
#: ``--gateway``.
SELF_CONTAINED = ("encoder", "recommender", "llm")
# feedback before ingest: the trainer works through ingest's 60,000 events for a while after.
AGAINST_A_STACK = ("gateway", "chat", "feedback", "ingest")


def run_all(args: argparse.Namespace) -> int:
    """Each benchmark with its defaults, writing to the same results folder; the exit
    status is the worst of theirs, and one that fails does not stop the rest."""
    from styleloop.cli import main

    names = list(SELF_CONTAINED) + (list(AGAINST_A_STACK) if args.gateway else [])
    codes = {}
    for name in names:
        sys.stdout.write(f"\n=== styleloop bench {name}\n")
        sys.stdout.flush()
        argv = ["bench", name, "--results", str(args.results)]
        if name in AGAINST_A_STACK:
            argv += ["--gateway", args.gateway]
        codes[name] = main(argv)
    failed = [name for name, code in codes.items() if code != 0]
    sys.stdout.write(
        f"\nwrote {args.results / 'SUMMARY.md'}; "
        + (f"failed: {', '.join(failed)}\n" if failed else "all benchmarks ran\n")
    )
    return max(codes.values(), default=0)


def register(commands: Any) -> None:
    """Every ``styleloop bench`` target, added to the bench group by :mod:`styleloop.cli`."""
    from styleloop.bench import chat, encoder, feedback, gateway, ingest, llm, recommender
    from styleloop.bench.report import report_argument

    for module in (encoder, recommender, llm, gateway, chat, ingest, feedback):
        module.register(commands)
    everything = commands.add_parser(
        "all",
        help=f"{', '.join(SELF_CONTAINED)} (and {', '.join(AGAINST_A_STACK)} with --gateway)",
        description="Runs every benchmark with its defaults into one results folder and "
        "rebuilds its SUMMARY.md (make bench).",
    )
    report_argument(everything)
    everything.add_argument(
        "--gateway",
        help="a running stack's gateway URL (make up): adds " + ", ".join(AGAINST_A_STACK),
    )
    everything.set_defaults(func=run_all)
