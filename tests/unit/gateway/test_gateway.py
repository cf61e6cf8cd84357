"""The gateway's HTTP API against a real recommender + encoder (tiny) and a real Tansu
broker on 127.0.0.1: search, items, outfits, errors, limits, and feedback into Kafka that
survives a broker outage."""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest
from fastapi import FastAPI
from kafka import KafkaConsumer

from services.gateway.app import create_app
from services.gateway.config import GatewaySettings
from services.recommender.config import RecommenderSettings
from styleloop.broker import TansuBroker
from styleloop.v1 import events_pb2, recommender_pb2_grpc
from tests.conftest import free_ports
from tests.unit.encoder.conftest import encoder_settings, start_encoder
from tests.unit.recommender.conftest import start_recommender
from tests.unit.recommender.test_recommender import catalog, upsert_request

KEY = "test-key-1"
CHAT = {"user_id": "u", "messages": [{"role": "user", "content": "m"}]}


@dataclass
class Gateway:
    client: httpx.AsyncClient
    broker: TansuBroker
    rows: list
    settings: GatewaySettings
    app: FastAPI
    servicer_image_root: Path


@pytest.fixture
async def gateway(tiny_models: Path, tmp_path: Path) -> AsyncIterator[Gateway]:
    enc_server, encoder = await start_encoder(encoder_settings(tiny_models))
    images = tmp_path / "images"
    images.mkdir()
    rec_server, servicer = await start_recommender(
        RecommenderSettings(
            encoder_addr=f"127.0.0.1:{enc_server.port}",
            grpc_host="127.0.0.1",
            grpc_port=0,
            metrics_port=-1,
            data_dir=tmp_path / "edge",
            image_root=images,
        )
    )
    # Every photo but the last is a file under the recommender's IMAGE_ROOT.
    rows = catalog(24)
    for item, image in rows[:-1]:
        (images / f"{item['item_id']}.img").write_bytes(image)
        item["image_uri"] = f"{item['item_id']}.img"
    async with grpc.aio.insecure_channel(f"127.0.0.1:{rec_server.port}") as channel:
        stub = recommender_pb2_grpc.RecommenderServiceStub(channel)
        await stub.UpsertItems(upsert_request(rows), timeout=60)
    broker = TansuBroker(free_ports(1)[0])
    broker.start()
    settings = GatewaySettings(
        recommender_addr=f"127.0.0.1:{rec_server.port}",
        api_key_sha256=[hashlib.sha256(KEY.encode()).hexdigest()],
        rate_limit_per_minute=6000,
        rate_limit_burst=1000,
        max_body_bytes=4096,
        max_upload_bytes=2 * 1024 * 1024,
        kafka_bootstrap=broker.bootstrap,
        kafka_timeout_s=2,
        spool_dir=tmp_path / "spool",
        spool_replay_interval_s=0.5,
        metrics_port=0,
    )
    app = create_app(settings)
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://gateway", headers={"X-API-Key": KEY}
            ) as client:
                yield Gateway(client, broker, rows, settings, app, images)
    finally:
        broker.stop()
        await rec_server.stop(grace=0)
        await servicer.core.close()
        await enc_server.stop(grace=0)
        await encoder.stop()


def assert_error(response: httpx.Response, status: int, reason: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["reason"] == reason and body["message"]
    assert body["request_id"] == response.headers["X-Request-ID"]


async def test_search_by_uploaded_photo_finds_that_item_first(gateway: Gateway):
    item, image = gateway.rows[3]
    response = await gateway.client.post(
        "/v1/search/image",
        files={"image": ("photo.png", image, "image/png")},
        params={"page_size": 5},
    )
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert results[0]["item"]["item_id"] == item["item_id"]
    assert results[0]["item"]["title"] == item["title"]


async def test_an_items_photo_is_served_with_a_validator_and_a_size_limit(gateway: Gateway):
    item, image = gateway.rows[2]
    response = await gateway.client.get(f"/v1/items/{item['item_id']}/image")
    assert response.status_code == 200, response.text
    assert response.content == image
    assert response.headers["content-type"] in ("image/jpeg", "image/png")
    assert response.headers["content-type"] == (
        "image/jpeg" if image.startswith(b"\xff\xd8") else "image/png"
    )
    etag = response.headers["etag"]
    assert etag.startswith('"') and "max-age" in response.headers["cache-control"]
    again = await gateway.client.get(
        f"/v1/items/{item['item_id']}/image", headers={"If-None-Match": etag}
    )
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
    # The last item's photo is no file under IMAGE_ROOT; an unknown item is no item.
    last = gateway.rows[-1][0]["item_id"]
    assert_error(await gateway.client.get(f"/v1/items/{last}/image"), 404, "IMAGE_NOT_FOUND")
    assert_error(await gateway.client.get("/v1/items/nope/image"), 404, "ITEM_NOT_FOUND")
    # A file over the 10 MiB limit is not read, let alone sent.
    big = gateway.rows[4][0]
    path = Path(gateway.servicer_image_root) / big["image_uri"]
    path.write_bytes(b"\xff\xd8\xff" + b"0" * (10 * 1024 * 1024 + 1))
    assert_error(
        await gateway.client.get(f"/v1/items/{big['item_id']}/image"), 404, "IMAGE_NOT_FOUND"
    )


async def test_the_web_page_and_its_assets_are_served_without_a_key(gateway: Gateway):
    anonymous = {"X-API-Key": ""}
    page = await gateway.client.get("/", headers=anonymous)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for asset in ("/static/app.js", "/static/style.css"):
        assert asset in page.text
        response = await gateway.client.get(asset, headers=anonymous)
        assert response.status_code == 200 and response.content
    # The page itself calls only /v1, which still needs the key.
    assert (await gateway.client.get("/v1/facets", headers=anonymous)).status_code == 401
    app_js = (await gateway.client.get("/static/app.js")).text
    assert set(re.findall(r'"(/v1/[a-z/]+)', app_js)) <= {
        "/v1/items/",
        "/v1/feedback",
        "/v1/facets",
        "/v1/search/text",
        "/v1/search/image",
        "/v1/outfits/complete",
        "/v1/chat",
    }


async def test_facets_count_each_value_under_the_filter(gateway: Gateway):
    from collections import Counter

    response = await gateway.client.get("/v1/facets", params={"fields": ["category", "colour"]})
    assert response.status_code == 200, response.text
    facets = {f["field"]: f["values"] for f in response.json()["facets"]}
    assert set(facets) == {"category", "colour"}
    expected = Counter(row["category"] for row, _ in gateway.rows)
    assert {v["value"]: v["count"] for v in facets["category"]} == dict(expected)
    counts = [v["count"] for v in facets["category"]]
    assert counts == sorted(counts, reverse=True)
    category = expected.most_common(1)[0][0]
    narrowed = await gateway.client.get(
        "/v1/facets", params={"fields": "colour", "category": category}
    )
    colours = Counter(
        row["colour"]
        for row, _ in gateway.rows
        if row["category"] == category and row.get("colour")
    )
    values = narrowed.json()["facets"][0]["values"]
    assert {v["value"]: v["count"] for v in values} == dict(colours)


async def test_text_search_filters_and_outfit_completion(gateway: Gateway):
    category = gateway.rows[0][0]["category"]
    response = await gateway.client.post(
        "/v1/search/text",
        json={"query": "a black shirt", "filter": {"categories": [category]}, "page_size": 50},
    )
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert results and all(r["item"]["category"] == category for r in results)

    others = [row for row, _ in gateway.rows if row["category"] != category]
    response = await gateway.client.post(
        "/v1/outfits/complete",
        json={"item_ids": [gateway.rows[0][0]["item_id"]], "category": others[0]["category"]},
    )
    assert response.status_code == 200, response.text
    assert all(r["item"]["category"] == others[0]["category"] for r in response.json()["results"])
    # No outfit scorer is configured here: the page says it fell back, and why.
    assert response.json()["method"] == "vector_sum"
    assert "OUTFIT_SCORER_DIR" in response.json()["fallback_reason"]

    item_id = gateway.rows[1][0]["item_id"]
    item = await gateway.client.get(f"/v1/items/{item_id}")
    assert item.status_code == 200 and item.json()["item_id"] == item_id
    similar = await gateway.client.get(f"/v1/items/{item_id}/similar", params={"page_size": 3})
    assert similar.status_code == 200 and len(similar.json()["results"]) == 3


async def test_bad_requests_get_documented_statuses_and_json_errors(gateway: Gateway):
    client = gateway.client
    wrong_key = await client.post(
        "/v1/search/text", json={"query": "x"}, headers={"X-API-Key": "nope"}
    )
    assert_error(wrong_key, 401, "UNAUTHENTICATED")
    no_key = await client.get("/v1/items/x", headers={"X-API-Key": ""})
    assert_error(no_key, 401, "UNAUTHENTICATED")
    assert_error(await client.get("/v1/items/no-such-item"), 404, "ITEM_NOT_FOUND")
    malformed = await client.post(
        "/v1/search/text", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert_error(malformed, 400, "MALFORMED_JSON")
    assert_error(await client.post("/v1/search/text", json={"query": ""}), 400, "INVALID_REQUEST")
    assert_error(
        await client.post("/v1/search/text", json={"query": "x", "surprise": 1}),
        400,
        "INVALID_REQUEST",
    )
    too_large = await client.post("/v1/search/text", json={"query": "x" * 5000})
    assert_error(too_large, 413, "BODY_TOO_LARGE")
    wrong_type = await client.post(
        "/v1/search/image", files={"image": ("a.gif", b"GIF89a....", "image/gif")}
    )
    assert_error(wrong_type, 415, "UNSUPPORTED_MEDIA_TYPE")
    not_an_image = await client.post(
        "/v1/search/image", files={"image": ("a.png", b"not really", "image/png")}
    )
    assert_error(not_an_image, 400, "IMAGE_UNREADABLE")  # the encoder's own reason
    assert_error(await client.get("/v1/nowhere"), 404, "NOT_FOUND")
    chat = await client.post(
        "/v1/chat", json={"user_id": "u1", "messages": [{"role": "user", "content": "hi"}]}
    )
    assert_error(chat, 503, "LLM_UNAVAILABLE")
    given = await client.get("/v1/items/no-such-item", headers={"X-Request-ID": "abc-123"})
    assert given.json()["request_id"] == "abc-123"


@asynccontextmanager
async def lone_gateway(tmp_path: Path, **overrides) -> AsyncIterator[httpx.AsyncClient]:
    """A gateway with nothing behind it (no recommender, no broker)."""
    settings = GatewaySettings(
        recommender_addr="127.0.0.1:1",
        spool_dir=tmp_path / "spool",
        kafka_bootstrap="127.0.0.1:1",
        **{"allow_anonymous": True, "metrics_port": -1, **overrides},
    )
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://gateway"
        ) as client,
    ):
        client.app = app  # type: ignore[attr-defined] - for tests that reach inside
        yield client


async def test_rate_limit_answers_429_with_retry_after(tmp_path: Path):
    async with lone_gateway(tmp_path, rate_limit_per_minute=60, rate_limit_burst=2) as client:
        statuses = [(await client.post("/v1/chat", json=CHAT)).status_code for _ in range(3)]
        assert statuses[:2] == [503, 503]
        limited = await client.post("/v1/chat", json=CHAT)
        assert_error(limited, 429, "RATE_LIMITED")
        assert int(limited.headers["Retry-After"]) >= 1
        assert (await client.get("/healthz")).status_code == 200  # health is not limited
        assert_error(await client.get("/readyz"), 503, "RECOMMENDER_UNAVAILABLE")


def read_events(bootstrap: str, topic: str, want: list[str]) -> list[events_pb2.FeedbackEvent]:
    """Events from the start of the topic until every id in ``want`` was seen (delivery is
    at least once: duplicates may come first) or 8 s pass without a message."""
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=8000,
    )
    events = []
    try:
        for message in consumer:
            event = events_pb2.FeedbackEvent.FromString(message.value)
            assert message.key == event.user_id.encode()
            events.append(event)
            if set(want) <= {e.event_id for e in events}:
                break
    finally:
        consumer.close()
    return events


def feedback(user: str, item: str, kind: str) -> dict:
    return {"user_id": user, "item_id": item, "kind": kind, "context": {"source": "search_by_text"}}


async def test_feedback_reaches_kafka_and_survives_a_broker_outage(gateway: Gateway):
    client, broker, topic = gateway.client, gateway.broker, gateway.settings.feedback_topic
    first = await client.post(
        "/v1/feedback",
        json={"events": [feedback("u1", "i1", "like"), feedback("u1", "i2", "reject")]},
    )
    assert first.status_code == 202, first.text
    assert first.json()["spooled"] is False
    events = await asyncio.to_thread(
        read_events, broker.bootstrap, topic, first.json()["event_ids"]
    )
    assert [e.event_id for e in events] == first.json()["event_ids"]
    assert [e.kind for e in events] == [3, 4]  # LIKE, REJECT
    assert events[0].context.source == events_pb2.FEEDBACK_SOURCE_SEARCH_BY_TEXT

    broker.stop()
    during = await client.post(
        "/v1/feedback",
        json={"events": [feedback("u2", "i3", "reject"), feedback("u2", "i4", "click")]},
    )
    assert during.status_code == 202 and during.json()["spooled"] is True
    later = await client.post("/v1/feedback", json={"events": [feedback("u3", "i5", "like")]})
    assert later.json()["spooled"] is True  # joins the spool: order is kept
    broker.start()  # memory storage: a fresh, empty broker
    wanted = during.json()["event_ids"] + later.json()["event_ids"]
    events = await asyncio.to_thread(read_events, broker.bootstrap, topic, wanted)
    seen = [e.event_id for e in events]
    assert list(dict.fromkeys(seen)) == wanted  # every spooled event, in order, once by id


async def test_openapi_health_and_metrics(gateway: Gateway):
    spec = (await gateway.client.get("/openapi.json")).json()
    assert {"/v1/search/image", "/v1/search/text", "/v1/feedback", "/v1/chat"} <= set(spec["paths"])
    assert (await gateway.client.get("/readyz")).json() == {"status": "ready"}
    await gateway.client.get("/v1/items/no-such-item")
    assert (await gateway.client.get("/metrics")).status_code == 404  # not on the API port
    port = gateway.app.state.metrics_port
    metrics = (await asyncio.to_thread(httpx.get, f"http://127.0.0.1:{port}/metrics")).text
    assert 'gateway_http_requests_total{method="GET",route="/v1/items/{item_id}",status="404"}' in (
        metrics
    )


async def test_cors_allows_only_configured_origins(tmp_path: Path):
    async with lone_gateway(tmp_path, cors_origins=["https://app.example"]) as client:
        headers = {"Access-Control-Request-Method": "POST"}
        allowed = await client.options(
            "/v1/search/text", headers={**headers, "Origin": "https://app.example"}
        )
        assert allowed.headers["access-control-allow-origin"] == "https://app.example"
        refused = await client.options(
            "/v1/search/text", headers={**headers, "Origin": "https://evil.example"}
        )
        assert "access-control-allow-origin" not in refused.headers


async def test_bodies_are_limited_while_they_stream_in(tmp_path: Path):
    consumed: list[int] = []

    async def chunks(count: int, size: int):
        for n in range(count):
            consumed.append(n)
            yield b"x" * size

    async with lone_gateway(tmp_path, max_body_bytes=4096, max_upload_bytes=64 * 1024) as client:
        # A chunked JSON body (no Content-Length) of 3 MB against a 4 KB limit.
        chunked = await client.post(
            "/v1/search/text",
            content=chunks(3000, 1024),
            headers={"Content-Type": "application/json"},
        )
        assert_error(chunked, 413, "BODY_TOO_LARGE")
        assert len(consumed) <= 6  # reading stopped at the limit
        # "multipart" in the content type does not buy a JSON route the upload limit.
        consumed.clear()
        sneaky = await client.post(
            "/v1/search/text",
            content=chunks(20, 1024),
            headers={"Content-Type": "application/json; multipart=yes"},
        )
        assert_error(sneaky, 413, "BODY_TOO_LARGE")
        # A 60 MB chunked upload is refused as it arrives, not parsed to a temp file first.
        consumed.clear()
        boundary = "b0undary"

        async def upload():
            yield (
                f'--{boundary}\r\nContent-Disposition: form-data; name="image"; '
                f'filename="a.png"\r\nContent-Type: image/png\r\n\r\n'
            ).encode()
            async for chunk in chunks(60, 1024 * 1024):
                yield chunk

        huge = await client.post(
            "/v1/search/image",
            content=upload(),
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
        assert_error(huge, 413, "BODY_TOO_LARGE")
        assert len(consumed) <= 2
        declared = await client.post(
            "/v1/feedback",
            content=b"{}",
            headers={"Content-Type": "application/json", "Content-Length": "999999999"},
        )
        assert_error(declared, 413, "BODY_TOO_LARGE")


async def test_contract_details_an_app_relies_on(tmp_path: Path):
    async with lone_gateway(tmp_path) as client:
        empty = await client.post("/v1/search/image", files={"image": ("a.png", b"", "image/png")})
        assert_error(empty, 400, "IMAGE_EMPTY")
        empty_untyped = await client.post(
            "/v1/search/image", files={"image": ("a", b"", "application/octet-stream")}
        )
        assert_error(empty_untyped, 400, "IMAGE_EMPTY")
        trace = await client.request("TRACE", "/v1/search/text")
        assert_error(trace, 405, "METHOD_NOT_ALLOWED")
        assert trace.headers["Allow"] == "POST"
        for bad in (1700000000, -1, "2026-12-01T19:23:41", "9999-12-31T23:59:59-23:59"):
            event = {"user_id": "u", "item_id": "i", "kind": "like", "event_time": bad}
            reply = await client.post("/v1/feedback", json={"events": [event]})
            assert_error(reply, 400, "INVALID_REQUEST")
        flag = {"user_id": "u", "item_id": "i", "kind": "like", "context": {"position": False}}
        assert_error(
            await client.post("/v1/feedback", json={"events": [flag]}), 400, "INVALID_REQUEST"
        )
        in_stock = {"query": "x", "filter": {"in_stock_only": 0, "max_price": False}}
        assert_error(await client.post("/v1/search/text", json=in_stock), 400, "INVALID_REQUEST")
        blank = await client.post("/v1/search/text", json={"query": "   "})
        assert_error(blank, 400, "INVALID_REQUEST")
        # A one-value parameter given twice is refused, not quietly read as its last value
        # (a schemathesis find); list parameters repeat as documented and reach the service.
        for query in ("max_price=null&max_price=0.0", "brand=&max_values=1&max_values=2"):
            twice = await client.get(f"/v1/facets?{query}")
            assert_error(twice, 400, "INVALID_REQUEST")
            assert "one value expected, given 2" in twice.json()["message"]
        repeated_list = await client.get("/v1/facets?brand=Puma&brand=Nike&max_price=9")
        assert_error(repeated_list, 503, "UNAVAILABLE")
        page_twice = await client.get("/v1/items/x/similar?page_size=1&page_size=2")
        assert_error(page_twice, 400, "INVALID_REQUEST")
        # A service that cannot be reached: no internal address reaches the app.
        unreachable = await client.get("/v1/items/x")
        assert_error(unreachable, 503, "UNAVAILABLE")
        assert "127.0.0.1" not in unreachable.text and "ipv4" not in unreachable.text
        spec = (await client.get("/openapi.json")).json()
        for path, method, status in [
            ("/v1/outfits/complete", "post", "404"),
            ("/v1/recommendations", "post", "404"),
            ("/v1/search/image", "post", "415"),
            ("/v1/search/image", "post", "400"),
        ]:
            assert status in spec["paths"][path][method]["responses"], (path, status)


async def test_an_unexpected_error_is_a_counted_500_with_its_request_id(tmp_path: Path):
    from services.gateway.app import REQUESTS

    async with lone_gateway(tmp_path) as client:

        async def broken(*_args, **_kwargs):
            raise RuntimeError("secret internal detail")

        client.app.state.backends.recommender.GetItem = broken
        before = REQUESTS.labels("GET", "/v1/items/{item_id}", "500")._value.get()
        reply = await client.get("/v1/items/x", headers={"X-Request-ID": "req-500"})
        assert_error(reply, 500, "INTERNAL")
        assert reply.json()["request_id"] == "req-500" and "secret" not in reply.text
        assert REQUESTS.labels("GET", "/v1/items/{item_id}", "500")._value.get() == before + 1


async def test_safe_defaults_no_anonymous_calls_docs_off_in_production(tmp_path: Path):
    with pytest.raises(ValueError, match="ALLOW_ANONYMOUS"):
        create_app(GatewaySettings(recommender_addr="127.0.0.1:1"))
    assert GatewaySettings(recommender_addr="x:1").http_host == "127.0.0.1"
    digest = hashlib.sha256(KEY.encode()).hexdigest()
    production = {"environment": "production", "api_key_sha256": [digest], "allow_anonymous": False}
    async with lone_gateway(tmp_path, **production) as client:
        for path in ("/docs", "/openapi.json", "/metrics"):
            assert (await client.get(path, headers={"X-API-Key": KEY})).status_code == 404, path
    async with lone_gateway(tmp_path, **production, enable_docs=True) as client:
        assert (await client.get("/openapi.json")).status_code == 200


async def test_failed_key_checks_are_rate_limited(tmp_path: Path):
    digest = hashlib.sha256(KEY.encode()).hexdigest()
    async with lone_gateway(
        tmp_path, api_key_sha256=[digest], rate_limit_per_minute=60, rate_limit_burst=3
    ) as client:
        statuses = [
            (await client.get("/v1/items/x", headers={"X-API-Key": f"guess-{n}"})).status_code
            for n in range(5)
        ]
        assert statuses == [401, 401, 401, 429, 429]


def test_rate_limit_buckets_are_bounded_and_idle_ones_dropped(monkeypatch):
    from services.gateway import limits

    now = [1000.0]
    monkeypatch.setattr(limits.time, "monotonic", lambda: now[0])
    limiter = limits.RateLimiter(per_minute=60, burst=10, max_callers=1000)
    for n in range(200_000):
        limiter.take(f"ip:{n}")
    assert len(limiter) <= 1000
    now[0] += 11  # every bucket is full again: as good as none
    limiter.take("ip:new")
    assert len(limiter) == 1
    for _ in range(10):
        assert limiter.take("ip:busy") == 0
    assert limiter.take("ip:busy") > 0  # a busy caller is still limited


async def test_the_gateway_benchmark_drives_both_paths_of_each_search(gateway: Gateway):
    """`styleloop bench gateway`'s calls answer 200 through the gateway and over gRPC: a
    photo upload (with its content type from the bytes) and a text query."""
    from styleloop.bench.gateway import _image_type, _paths, drive

    images = [image for _, image in gateway.rows[:4]]
    assert _image_type(b"\x89PNG\r\n\x1a\nrest") == "image/png"
    assert _image_type(b"\xff\xd8\xff\xe0rest") == "image/jpeg"
    assert _image_type(b"RIFF\0\0\0\0WEBPrest") == "image/webp"
    async with grpc.aio.insecure_channel(gateway.settings.recommender_addr) as channel:
        stub = recommender_pb2_grpc.RecommenderServiceStub(channel)
        paths = _paths(gateway.client, stub, "bench-u", images)
        for operation in ("text search", "photo search"):
            for path, call in paths[operation].items():
                figures = await drive(call, 6, 2)
                assert figures["requests_per_s"] > 0, (operation, path)
                assert 0 < figures["p50_ms"] <= figures["p99_ms"], (operation, path)
