"""`styleloop bench llm`: the in-process backend's speed, options side by side in one run.

For each weight type (``--dtypes``) the served model is loaded once and asked the same
grounded prompts (5 catalog cards, the serving prompt): first one chat at a time, then
``--concurrency`` chats at once sharing the step batcher. Reported per row: time to first
token (p50), prefill of one prompt, decode tokens/s of one chat, and the aggregate tokens/s
of all chats together, with each row's ratio to the first row — measured in this run, on
this machine, side by side. Answers of each dtype are compared with the first one's
(same greedy text?), which is what "keeps answer quality" means here at a glance; the
quality figures that matter come from `styleloop eval chat`.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

from styleloop.bench import report
from styleloop.bench.report import report_argument
from styleloop.commands import add_command

QUESTIONS = (
    "Can you recommend clothes based on Puma fall 2011?",
    "Nike sports shoes for men",
    "any black jeans?",
    "formal shirts for men",
    "a red dress for a summer party",
    "what goes with white sneakers?",
    "ADIDAS t-shirts for women",
    "casual watches for men",
)


def prompts(catalog: Path | None) -> list[Any]:
    from services.llm.backends import GenerationRequest
    from services.llm.cards import CardItem, build_messages

    rows: list[dict[str, Any]] = []
    if catalog is not None:
        from styleloop.catalog import read_catalog

        rows = [r.item for r in read_catalog(catalog).rows[:200]]
    out = []
    for n, question in enumerate(QUESTIONS):
        chosen = rows[n * 5 : n * 5 + 5] or [
            {"item_id": str(i), "title": f"Item {i} {question}", "brand": "Puma"} for i in range(5)
        ]
        cards = [CardItem.from_mapping(r) for r in chosen]
        out.append(partial(GenerationRequest, build_messages(question, cards), len(cards)))
    return out


async def _one(backend: Any, request: Any) -> dict[str, Any]:
    from services.llm.backends import Finished

    started = time.perf_counter()
    first = None
    text: list[str] = []
    async for piece in backend.generate(request):
        if isinstance(piece, Finished):
            done = time.perf_counter()
            decode = done - (first or done)
            return {
                "ttft": (first or done) - started,
                "tokens": piece.completion_tokens,
                "decode_tps": (piece.completion_tokens - 1) / decode if decode > 0 else 0.0,
                "seconds": done - started,
                "text": "".join(text),
            }
        if first is None:
            first = time.perf_counter()
        text.append(piece)
    raise RuntimeError("no finish")


async def measure(
    model_dir: Path, dtype: str, requests: list[Any], tokens: int, concurrency: int
) -> dict[str, Any]:
    from services.llm.backends.local import PREFILL_SECONDS, LocalBackend

    backend = LocalBackend(
        model_dir, model_id="bench", model_version="bench", dtype=dtype, require_citation=True
    )
    await backend.start()
    try:
        await _one(backend, requests[0](4))  # warm-up (and the system prefix cache)
        before_sum, before_n = PREFILL_SECONDS._sum.get(), _count(PREFILL_SECONDS)
        alone = [await _one(backend, r(tokens)) for r in requests[:concurrency]]
        prefill = (PREFILL_SECONDS._sum.get() - before_sum) / max(
            1, _count(PREFILL_SECONDS) - before_n
        )
        started = time.perf_counter()
        together = await asyncio.gather(*(_one(backend, r(tokens)) for r in requests[:concurrency]))
        wall = time.perf_counter() - started
    finally:
        await backend.stop()
    return {
        "dtype": dtype,
        "ttft_p50_s": statistics.median(a["ttft"] for a in alone),
        "prefill_s": prefill,
        "decode_tps_one_chat": statistics.mean(a["decode_tps"] for a in alone),
        "aggregate_tps_alone": sum(a["tokens"] for a in alone) / sum(a["seconds"] for a in alone),
        "aggregate_tps_together": sum(t["tokens"] for t in together) / wall,
        "texts": [a["text"] for a in alone],
    }


def _count(histogram: Any) -> float:
    return float(sum(b.get() for b in histogram._buckets))


def main(
    models_dir: Path,
    catalog: Path | None,
    dtypes: list[str],
    tokens: int,
    concurrency: int,
    results_dir: Path | None,
) -> int:
    from styleloop.models.manifest import load_manifest

    manifest = load_manifest(models_dir)
    if manifest is None or manifest.llm is None:
        sys.stderr.write(f"styleloop bench llm: no LLM in {models_dir}\n")
        return 2
    requests = prompts(catalog)
    rows = [
        asyncio.run(measure(models_dir / manifest.llm.path, d, requests, tokens, concurrency))
        for d in dtypes
    ]
    base = rows[0]
    out = sys.stdout
    out.write(
        f"{manifest.llm.model_id}: {concurrency} prompts, {tokens} new tokens each; "
        f"ratios against {base['dtype']}\n"
    )
    out.write(
        f"{'dtype':10s} {'TTFT p50':>10s} {'prefill':>9s} {'tok/s 1 chat':>13s} "
        f"{'tok/s alone':>12s} {f'tok/s x{concurrency}':>12s} {'batching':>9s} {'same text':>10s}\n"
    )
    for row in rows:
        same = sum(a == b for a, b in zip(row["texts"], base["texts"], strict=True))
        out.write(
            f"{row['dtype']:10s} {row['ttft_p50_s']:9.2f}s {row['prefill_s']:8.2f}s "
            f"{row['decode_tps_one_chat']:13.1f} {row['aggregate_tps_alone']:12.1f} "
            f"{row['aggregate_tps_together']:12.1f} "
            f"{row['aggregate_tps_together'] / row['aggregate_tps_alone']:8.2f}x "
            f"{same:>5d}/{len(row['texts'])}\n"
        )
        if row is not base:
            out.write(
                f"{'':10s} {base['ttft_p50_s'] / row['ttft_p50_s']:9.2f}x "
                f"{base['prefill_s'] / row['prefill_s']:8.2f}x "
                f"{row['decode_tps_one_chat'] / base['decode_tps_one_chat']:13.2f}x "
                f"{row['aggregate_tps_alone'] / base['aggregate_tps_alone']:12.2f}x "
                f"{row['aggregate_tps_together'] / base['aggregate_tps_together']:12.2f}x\n"
            )
    headline = [
        f"{row['dtype']}: aggregate tokens/s with {concurrency} chats at once "
        f"{row['aggregate_tps_together']:.1f} = "
        f"{row['aggregate_tps_together'] / row['aggregate_tps_alone']:.2f}x the same chats one "
        f"at a time; time to first token p50 {row['ttft_p50_s']:.2f} s"
        for row in rows
    ]
    if results_dir is not None:
        path = report.write(
            results_dir,
            "llm",
            {"model_id": manifest.llm.model_id, "concurrency": concurrency, "rows": rows},
            headline,
            report.Chart(
                f"{manifest.llm.model_id}: decode tokens/s",
                "tokens/s",
                ["one chat", "chats one at a time", f"{concurrency} chats at once"],
                {
                    row["dtype"]: [
                        row["decode_tps_one_chat"],
                        row["aggregate_tps_alone"],
                        row["aggregate_tps_together"],
                    ]
                    for row in rows
                },
            ),
        )
        out.write(f"wrote {path}\n")
    return 0


def register(commands: Any) -> None:
    """``styleloop bench llm``: added to the bench group by :mod:`styleloop.cli`."""
    parser = add_command(
        commands,
        "llm",
        __doc__,
        help="the in-process LLM backend: TTFT, prefill, tokens/s by dtype, batching on",
    )
    parser.add_argument("--models-dir", type=Path, default=Path(".models/offline"))
    parser.add_argument("--catalog", type=Path, help="real cards from this catalog (optional)")
    parser.add_argument("--dtypes", default="float32,bfloat16", help="comma-separated")
    parser.add_argument("--tokens", type=int, default=32, help="new tokens per chat (32)")
    parser.add_argument("--concurrency", type=int, default=4, help="chats at once (4)")
    report_argument(parser)

    def run(args: argparse.Namespace) -> int:
        dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
        bad = [d for d in dtypes if d not in ("float32", "bfloat16", "float16", "int8")]
        if bad or not dtypes:
            sys.stderr.write("styleloop bench llm: --dtypes of float32, bfloat16, float16, int8\n")
            return 2
        if args.tokens < 2 or not 1 <= args.concurrency <= len(QUESTIONS):
            sys.stderr.write(
                f"styleloop bench llm: --tokens >= 2, --concurrency 1..{len(QUESTIONS)}\n"
            )
            return 2
        return main(
            args.models_dir, args.catalog, dtypes, args.tokens, args.concurrency, args.results
        )

    parser.set_defaults(func=run)
