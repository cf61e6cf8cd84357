"""POST /v1/chat through the gateway: server-sent events from a real llm service (tiny
model) over a real recommender; errors before the stream are JSON, and a rejection sent
as feedback keeps that item out of the shopper's next answer."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from services.gateway.app import create_app
from services.gateway.config import GatewaySettings
from styleloop.broker import TansuBroker
from tests.conftest import free_ports
from tests.unit.llm.test_chat_service import TOKEN, Chat, chat  # noqa: F401 - the llm stack

PUMA = "Can you recommend clothes based on Puma fall 2011?"


@pytest.fixture
async def client(chat: Chat, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:  # noqa: F811
    broker = TansuBroker(free_ports(1)[0])
    broker.start()
    settings = GatewaySettings(
        recommender_addr=chat.recommender_address,
        llm_addr=chat.address,
        service_token=TOKEN,
        allow_anonymous=True,
        kafka_bootstrap=broker.bootstrap,
        kafka_timeout_s=2,
        spool_dir=tmp_path / "spool",
        metrics_port=-1,
    )
    app = create_app(settings)
    try:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://gateway", timeout=60
            ) as http,
        ):
            yield http
    finally:
        broker.stop()


def body(text: str, user: str = "u1", **extra) -> dict:  # type: ignore[no-untyped-def]
    return {"user_id": user, "messages": [{"role": "user", "content": text}], **extra}


async def events(client: httpx.AsyncClient, payload: dict) -> list[tuple[str, dict]]:
    """The SSE events of one chat, parsed."""
    out = []
    async with client.stream("POST", "/v1/chat", json=payload) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        kind = None
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                out.append((kind, json.loads(line[6:])))
    return out


async def test_chat_streams_items_text_references_and_finish(client: httpx.AsyncClient):
    got = await events(client, body(PUMA))
    kinds = [k for k, _ in got]
    assert kinds[0] == "retrieved" and kinds[-1] == "finish" and "text" in kinds
    items = got[0][1]["items"]
    assert items and all(
        (i["item"]["brand"], i["item"]["season"], i["item"]["year"]) == ("Puma", "Fall", "2011")
        for i in items
    )
    refs = [d["item_id"] for k, d in got if k == "reference"]
    assert refs and set(refs) <= {i["item"]["item_id"] for i in items}
    finish = got[-1][1]
    assert finish["finish_reason"] in ("stop", "length") and finish["answer_id"]


async def test_what_the_catalog_lacks_finishes_with_no_items(client: httpx.AsyncClient):
    got = await events(client, body("Can you recommend clothes based on Prada fw23?"))
    assert got[0] == ("retrieved", {"items": []})
    assert "Prada" in "".join(d["text"] for k, d in got if k == "text")
    assert got[-1][0] == "finish" and got[-1][1]["finish_reason"] == "no_items"


async def test_a_rejection_sent_as_feedback_keeps_the_item_out_of_the_next_answer(
    client: httpx.AsyncClient,
):
    first = await events(client, body(PUMA, user="shopper"))
    rejected = first[0][1]["items"][0]["item"]["item_id"]
    sent = await client.post(
        "/v1/feedback",
        json={
            "events": [
                {
                    "user_id": "shopper",
                    "item_id": rejected,
                    "kind": "reject",
                    "context": {"source": "chat", "answer_id": first[-1][1]["answer_id"]},
                }
            ]
        },
    )
    assert sent.status_code == 202, sent.text
    again = await events(client, body(PUMA, user="shopper"))
    assert rejected not in {i["item"]["item_id"] for i in again[0][1]["items"]}
    assert rejected not in {d["item_id"] for k, d in again if k == "reference"}


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ({"user_id": "u", "messages": []}, "INVALID_REQUEST"),
        (body("   "), "EMPTY_MESSAGE"),
        (body("x" * 2001), "INVALID_REQUEST"),
        (
            {
                "user_id": "u",
                "messages": [
                    {"role": "user", "content": "puma tee"},
                    {"role": "assistant", "content": "here"},
                ],
            },
            "LAST_NOT_USER",
        ),
        ({"user_id": "u", "messages": [{"role": "system", "content": "x"}]}, "INVALID_REQUEST"),
        (body("what goes with this?", image_base64="%%%not base64"), "IMAGE_UNREADABLE"),
        (body("what goes with this?", image_base64="bm90IGFuIGltYWdl"), "IMAGE_UNREADABLE"),
    ],
)
async def test_bad_chats_are_json_errors_before_any_event(
    client: httpx.AsyncClient, payload: dict, reason: str
):
    response = await client.post("/v1/chat", json=payload)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["reason"] == reason


async def test_openapi_documents_the_event_stream(client: httpx.AsyncClient):
    spec = (await client.get("/openapi.json")).json()
    chat_op = spec["paths"]["/v1/chat"]["post"]
    assert "text/event-stream" in chat_op["responses"]["200"]["content"]
    assert "reference" in chat_op["responses"]["200"]["description"]


async def test_the_chat_benchmark_times_both_paths_from_their_own_streams(
    client: httpx.AsyncClient,
    chat: Chat,  # noqa: F811
):
    """`styleloop bench chat`'s two paths: the gateway's SSE and the llm's gRPC stream, each
    timed from its own first text and counted from its own finish."""
    from styleloop.bench.chat import drive, paths_of, scaling_of

    paths = paths_of(client, chat.stub, "bench-u", 12)
    answers = {}
    for path, call in paths.items():
        first, total, tokens, generated = await call(0)
        assert 0 < first < total, path
        assert generated and 0 < tokens <= 12, path
        answers[path] = tokens
    assert answers["gateway"] == answers["direct gRPC"]  # the same greedy answer either way
    rows = []
    for concurrency in (1, 2):
        figures = await drive(paths["gateway"], 4, concurrency)
        assert 0 < figures["ttft_p50_ms"] <= figures["ttft_p99_ms"]
        assert figures["tokens"] > 0 and figures["aggregate_tokens_per_s"] > 0
        rows.append({"path": "gateway", "concurrency": concurrency, **figures})
    scaling = scaling_of(rows)
    assert scaling[("gateway", 1)] == 1.0
    assert scaling[("gateway", 2)] == pytest.approx(
        rows[1]["aggregate_tokens_per_s"] / rows[0]["aggregate_tokens_per_s"]
    )
