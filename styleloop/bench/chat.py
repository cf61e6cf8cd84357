"""`styleloop bench chat`: grounded chat's time to first token and tokens/s through the
gateway, beside the llm service called over gRPC directly, at concurrency 1, 4 and 8.

Against a running stack (`make up`, started with ``SERVICE_TOKEN`` set so this process can
call the llm service too): ``--requests`` grounded questions at each ``--concurrency``
level, ``--tokens`` new tokens each (greedy), ``POST /v1/chat`` (server-sent events) and
the llm's streaming ``Chat`` alternating level by level (asyncio clients in this process,
loopback only). Printed per path and level: time to first token p50 / p99, tokens/s of one
stream (p50: its tokens after the first over its time after the first), and the aggregate
tokens/s of all streams together with its ratio to the same path at the lowest level.
Answers that say "nothing in the catalog fits" (no generation) are counted, not timed.
Goal (issue 18): aggregate at 8 >= 3x one stream.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

from styleloop.bench import report
from styleloop.bench.load import closed_loop, quantiles
from styleloop.bench.report import report_argument
from styleloop.commands import add_command, gateway_argument

#: Questions the sample catalog can answer (a "nothing fits" answer is left out of the
#: timing and counted).
QUESTIONS = (
    "Can you recommend clothes based on Puma fall 2011?",
    "What goes with a white cotton shirt?",
    "Nike sports shoes for men",
    "a black watch for men",
    "casual blue jeans for men",
    "a red tshirt for women",
    "formal shoes for men",
    "a handbag for women",
)


#: One chat: seconds to the first text, seconds in all, tokens the answer had, and whether
#: the model wrote it (False: a "nothing in the catalog fits" answer, no generation).
Stream = tuple[float, float, int, bool]


def paths_of(client: Any, stub: Any, user: str, tokens: int) -> dict[str, Any]:
    """The two ways to ask a question, each returning one :data:`Stream`."""
    from styleloop.v1 import llm_pb2

    async def http_chat(i: int) -> Stream:
        body = {
            "user_id": user,
            "messages": [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}],
            "max_new_tokens": tokens,
        }
        started = time.perf_counter()
        first, completion, event, generated = 0.0, -1, "", True
        async with client.stream("POST", "/v1/chat", json=body, timeout=300) as reply:
            reply.raise_for_status()
            async for line in reply.aiter_lines():
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    if event == "text" and not first:
                        first = time.perf_counter() - started
                    elif event == "finish":
                        finish = json.loads(line[6:])
                        completion = int(finish.get("completion_tokens", 0))
                        generated = finish.get("finish_reason") != "no_items"
                    elif event == "error":
                        raise RuntimeError(f"the chat failed: {line[6:]}")
        if completion < 0:
            raise RuntimeError("the chat stream ended without a finish event")
        return first, time.perf_counter() - started, completion, generated

    async def grpc_chat(i: int) -> Stream:
        request = llm_pb2.ChatRequest(
            messages=[
                llm_pb2.ChatMessage(
                    role=llm_pb2.CHAT_ROLE_USER, content=QUESTIONS[i % len(QUESTIONS)]
                )
            ],
            user_id=user,
            max_new_tokens=tokens,
        )
        started = time.perf_counter()
        first, completion, generated = 0.0, -1, True
        async for message in stub.Chat(request, timeout=300):
            kind = message.WhichOneof("chunk")
            if kind == "text_delta" and not first:
                first = time.perf_counter() - started
            elif kind == "finish":
                completion = message.finish.completion_tokens
                generated = message.finish.finish_reason != llm_pb2.FINISH_REASON_NO_ITEMS
        if completion < 0:
            raise RuntimeError("the chat stream ended without a finish")
        return first, time.perf_counter() - started, completion, generated

    return {"gateway": http_chat, "direct gRPC": grpc_chat}


async def drive(call: Any, requests: int, concurrency: int) -> dict[str, float]:
    """``requests`` chats, ``concurrency`` at a time: time to first token, tokens/s of one
    stream (its tokens after the first over the time after the first), aggregate tokens/s."""
    streams: list[Stream] = []

    async def one(i: int) -> None:
        streams.append(await call(i))

    wall, _ = await closed_loop(one, requests, concurrency)
    written = [s for s in streams if s[3]]  # "nothing fits" answers have no first token
    if not written:
        raise RuntimeError("every answer was 'nothing in the catalog fits': no generation")
    ttft = quantiles([s[0] for s in written])
    per_stream = [(s[2] - 1) / (s[1] - s[0]) for s in written if s[2] > 1 and s[1] > s[0]]
    return {
        "ttft_p50_ms": ttft["p50"] * 1000,
        "ttft_p99_ms": ttft["p99"] * 1000,
        "stream_tokens_per_s": statistics.median(per_stream) if per_stream else 0.0,
        "aggregate_tokens_per_s": sum(s[2] for s in streams) / wall,
        "tokens": float(sum(s[2] for s in streams)),
        "not_generated": float(len(streams) - len(written)),
    }


async def measure(
    gateway: str,
    llm: str,
    token: str,
    concurrencies: Sequence[int],
    requests: int,
    tokens: int,
) -> list[dict[str, Any]]:
    """Chat at each level, gateway and direct alternating (one untimed chat each first)."""
    import httpx

    from styleloop.runtime.auth import aio_channel
    from styleloop.v1 import llm_pb2_grpc

    limits = httpx.Limits(max_connections=max(concurrencies) + 4)
    rows: list[dict[str, Any]] = []
    async with (
        httpx.AsyncClient(base_url=gateway, timeout=300, limits=limits) as client,
        aio_channel(llm, token) as channel,
    ):
        stub = llm_pb2_grpc.LlmServiceStub(channel)
        paths = paths_of(client, stub, f"bench-chat-{os.getpid()}", tokens)
        for call in paths.values():
            await drive(call, 1, 1)
        for concurrency in concurrencies:
            for path, call in paths.items():
                figures = await drive(call, max(requests, concurrency), concurrency)
                rows.append({"path": path, "concurrency": concurrency, **figures})
    return rows


def scaling_of(rows: Sequence[dict[str, Any]]) -> dict[tuple[str, int], float]:
    """Aggregate tokens/s at each level over the same path's at the lowest level."""
    base: dict[str, float] = {}
    for row in sorted(rows, key=lambda r: r["concurrency"]):
        base.setdefault(row["path"], row["aggregate_tokens_per_s"])
    return {
        (row["path"], row["concurrency"]): row["aggregate_tokens_per_s"] / base[row["path"]]
        for row in rows
        if base[row["path"]] > 0
    }


def main(args: argparse.Namespace) -> int:
    try:
        rows = asyncio.run(
            measure(
                args.gateway,
                args.llm,
                os.environ.get("SERVICE_TOKEN", ""),
                args.concurrency,
                args.requests,
                args.tokens,
            )
        )
    except Exception as exc:  # noqa: BLE001 - one line for any failure to reach the stack
        sys.stderr.write(
            f"styleloop bench chat: {type(exc).__name__}: {exc} (is `make up` running with its "
            "llm, and SERVICE_TOKEN set for both?)\n"
        )
        return 2
    out = sys.stdout
    headline: list[str] = []
    scaling = scaling_of(rows)
    out.write(
        f"chat: gateway {args.gateway} vs llm {args.llm} over gRPC, {os.cpu_count()} CPUs, "
        f"{args.tokens} new tokens per answer, at least {args.requests} answers per level\n"
        f"{'path':<13}{'conc':>5}{'TTFT p50':>10}{'p99':>9}{'tok/s 1 stream':>16}"
        f"{'tok/s all':>11}{'vs lowest':>11}{'nothing fits':>14}\n"
    )
    for row in rows:
        out.write(
            f"{row['path']:<13}{row['concurrency']:>5}{row['ttft_p50_ms'] / 1000:>9.2f}s"
            f"{row['ttft_p99_ms'] / 1000:>8.2f}s{row['stream_tokens_per_s']:>16.1f}"
            f"{row['aggregate_tokens_per_s']:>11.1f}"
            f"{scaling.get((row['path'], row['concurrency']), 0):>10.2f}x"
            f"{row['not_generated']:>14.0f}\n"
        )
    by_level = {(r["path"], r["concurrency"]): r for r in rows}
    for concurrency in args.concurrency:
        gw = by_level.get(("gateway", concurrency))
        direct = by_level.get(("direct gRPC", concurrency))
        if gw is None or direct is None:
            continue
        goal = " (goal >= 3x at concurrency 8)" if concurrency == 8 else ""
        line = (
            f"chat through the gateway, concurrency {concurrency}: aggregate "
            f"{gw['aggregate_tokens_per_s']:.1f} tokens/s = "
            f"{scaling.get(('gateway', concurrency), 0):.2f}x concurrency "
            f"{min(args.concurrency)}{goal}; TTFT p50 {gw['ttft_p50_ms'] / 1000:.2f} s = "
            f"{gw['ttft_p50_ms'] / max(direct['ttft_p50_ms'], 1e-9):.2f}x direct gRPC's"
        )
        headline.append(line)
        out.write(line + "\n")
    if args.results is not None:
        levels = sorted({r["concurrency"] for r in rows})
        written = report.write(
            args.results,
            "chat",
            {
                "tokens": args.tokens,
                "rows": rows,
                "scaling": {f"{k[0]} c={k[1]}": v for k, v in scaling.items()},
            },
            headline,
            report.Chart(
                "chat: aggregate tokens/s of all streams together",
                "tokens/s",
                [f"concurrency {c}" for c in levels],
                {
                    path: [
                        by_level[(path, c)]["aggregate_tokens_per_s"]
                        if (path, c) in by_level
                        else None
                        for c in levels
                    ]
                    for path in ("gateway", "direct gRPC")
                },
            ),
        )
        out.write(f"wrote {written}\n")
    return 0


def register(commands: Any) -> None:
    """``styleloop bench chat``."""
    from styleloop.cli import counts, positive

    parser = add_command(
        commands,
        "chat",
        __doc__,
        help="chat TTFT and tokens/s through the gateway vs the llm over gRPC at 1, 4, 8",
    )
    gateway_argument(parser)
    parser.add_argument("--llm", default="127.0.0.1:50056", help="llm gRPC address (up: base+5)")
    parser.add_argument(
        "--concurrency", type=counts, default=[1, 4, 8], help="levels (default 1,4,8)"
    )
    parser.add_argument(
        "--requests",
        type=positive,
        default=8,
        help="answers per level and path, at least the level (default 8)",
    )
    parser.add_argument(
        "--tokens", type=positive, default=32, help="new tokens per answer (default 32)"
    )
    report_argument(parser)
    parser.set_defaults(func=main)
