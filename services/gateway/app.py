"""The gateway's HTTP API (FastAPI): versioned JSON endpoints over the gRPC services.

Every error is JSON ``{reason, message, request_id}`` with a fitting status; every gRPC
call has a deadline and carries the request id; ``/healthz``, ``/readyz``, ``/metrics``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import math
import os
import re
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, get_args, get_origin

import grpc
from fastapi import APIRouter, Depends, FastAPI, File, Query, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.dependencies.utils import get_flat_params
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.security import APIKeyHeader
from fastapi.staticfiles import StaticFiles
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import Counter, Histogram
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.gateway.config import GatewaySettings
from services.gateway.limits import BodyLimit, RateLimiter
from services.gateway.schemas import (
    ChatFinishOut,
    ChatReference,
    ChatRequest,
    ChatRetrieved,
    ChatText,
    ErrorBody,
    FacetField,
    Facets,
    FeedbackAccepted,
    FeedbackBatch,
    Item,
    ItemFilter,
    OutfitCompletion,
    OutfitPage,
    Page,
    RecommendationRequest,
    ScoredItem,
    TextSearch,
)
from styleloop.runtime.auth import aio_channel
from styleloop.runtime.logging import request_id_var
from styleloop.runtime.metrics import start_metrics_server
from styleloop.runtime.producer import DurableProducer
from styleloop.runtime.server import REQUEST_ID_METADATA_KEY, status_reason
from styleloop.v1 import (
    common_pb2,
    events_pb2,
    llm_pb2,
    llm_pb2_grpc,
    recommender_pb2,
    recommender_pb2_grpc,
)

log = logging.getLogger(__name__)

REQUESTS = Counter(
    "gateway_http_requests_total", "HTTP requests handled.", ["method", "route", "status"]
)
LATENCY = Histogram(
    "gateway_http_request_seconds",
    "HTTP request latency, in seconds.",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

NOT_APPLIED = Counter(
    "gateway_feedback_not_applied_total",
    "Feedback events the recommender did not take at once (applied later by the trainer).",
    ["code"],
)
APPLIED_KINDS = frozenset(
    {
        common_pb2.INTERACTION_KIND_LIKE,
        common_pb2.INTERACTION_KIND_REJECT,
        common_pb2.INTERACTION_KIND_PURCHASE,
    }
)

HTTP_BY_GRPC = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.UNIMPLEMENTED: 501,
}
IMAGE_TYPES = {"image/jpeg", "image/png", "image/webp"}
NOT_FOUND: dict[str, Any] = {"model": ErrorBody, "description": "No such item"}
UNSUPPORTED: dict[str, Any] = {"model": ErrorBody, "description": "Not a JPEG, PNG or WebP"}


async def query_filter(  # async: FastAPI runs a plain def in its thread pool
    category: Annotated[list[str], Query(max_length=50)] = [],  # noqa: B006
    article_type: Annotated[list[str], Query(max_length=50)] = [],  # noqa: B006
    colour: Annotated[list[str], Query(max_length=50)] = [],  # noqa: B006
    brand: Annotated[list[str], Query(max_length=50)] = [],  # noqa: B006
    season: Annotated[list[str], Query(max_length=10)] = [],  # noqa: B006
    usage: Annotated[list[str], Query(max_length=20)] = [],  # noqa: B006
    gender: Annotated[list[str], Query(max_length=10)] = [],  # noqa: B006
    year: Annotated[list[str], Query(max_length=20)] = [],  # noqa: B006
    min_price: Annotated[float | None, Query(ge=0, le=1e9)] = None,
    max_price: Annotated[float | None, Query(ge=0, le=1e9)] = None,
    in_stock_only: bool = False,
) -> ItemFilter:
    return ItemFilter(
        categories=category,
        article_types=article_type,
        colours=colour,
        brands=brand,
        seasons=season,
        usages=usage,
        genders=gender,
        years=year,
        min_price=min_price,
        max_price=max_price,
        in_stock_only=in_stock_only,
    )


FilterQuery = Annotated[ItemFilter, Depends(query_filter)]


def single_valued(route: Any) -> frozenset[str]:
    """The query parameters of ``route`` that take one value (not a list), its
    dependencies' included; worked out once per route."""
    names = getattr(route, "styleloop_single_valued", None)
    if names is None:
        names = frozenset(
            p.alias
            for p in get_flat_params(route.dependant)
            if p.field_info.in_.value == "query"  # type: ignore[attr-defined]
            and not any(
                get_origin(a) is list
                for a in (p.field_info.annotation, *get_args(p.field_info.annotation))
            )
        )
        route.styleloop_single_valued = names
    return names  # type: ignore[no-any-return]


async def one_value_each(request: Request) -> None:
    """400 for a one-value query parameter given more than once (``?max_price=1&max_price=2``):
    the schema says it is a number, not a list, and FastAPI would quietly keep the last."""
    if not request.scope.get("query_string"):
        return
    params = request.query_params
    for name in single_valued(request.scope["route"]):
        given = len(params.getlist(name))
        if given > 1:
            raise ApiError(400, "INVALID_REQUEST", f"{name}: one value expected, given {given}")


PageSize = Annotated[int, Query(ge=1, le=100)]
PageToken = Annotated[str, Query(max_length=200)]
UserQuery = Annotated[str, Query(max_length=128, pattern=r"^[A-Za-z0-9._:\-]*$")]
REQUEST_ID = re.compile(r"^[A-Za-z0-9._\-]{1,64}$")
KINDS = {
    "impression": common_pb2.INTERACTION_KIND_IMPRESSION,
    "click": common_pb2.INTERACTION_KIND_CLICK,
    "like": common_pb2.INTERACTION_KIND_LIKE,
    "reject": common_pb2.INTERACTION_KIND_REJECT,
    "purchase": common_pb2.INTERACTION_KIND_PURCHASE,
}


STATIC = Path(__file__).parent / "static"


class ApiError(Exception):
    def __init__(self, status: int, reason: str, message: str, **headers: str) -> None:
        super().__init__(message)
        self.status, self.reason, self.message, self.headers = status, reason, message, headers


def error_response(status: int, reason: str, message: str, **headers: str) -> JSONResponse:
    body = ErrorBody(reason=reason, message=message, request_id=request_id_var.get() or "")
    return JSONResponse(body.model_dump(), status_code=status, headers=headers or None)


class Envelope:
    """ASGI middleware around every request: its id (the caller's ``X-Request-ID`` when
    well-formed, else a new one) set for the logs and echoed in the response, the request
    counted and timed (to the start of its response) by route and status, and an unhandled
    error answered 500 ``INTERNAL`` with that id. Plain ASGI rather than
    ``@app.middleware("http")``, whose task and stream per request cost the gateway a
    measurable share of a short request."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v for k, v in scope["headers"] if k == b"x-request-id"), b"")
        text = given.decode("latin-1")
        request_id = text if REQUEST_ID.match(text) else uuid.uuid4().hex
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status = 0

        async def stamped(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [*message.get("headers", ()), (b"x-request-id", request_id.encode())]
                message = {**message, "headers": headers}
                route = getattr(scope.get("route"), "path", "unmatched")
                REQUESTS.labels(scope["method"], route, str(status)).inc()
                LATENCY.labels(scope["method"], route).observe(time.perf_counter() - started)
            await send(message)

        try:
            await self.app(scope, receive, stamped)
        except Exception as exc:
            log.exception("unhandled error", exc_info=exc)
            if status:  # the response had started: nothing more can be said on it
                raise
            await error_response(500, "INTERNAL", "internal error")(scope, receive, stamped)
        finally:
            request_id_var.reset(token)


@dataclass
class Backends:
    channel: grpc.aio.Channel
    recommender: recommender_pb2_grpc.RecommenderServiceStub
    feedback: DurableProducer
    llm_channel: grpc.aio.Channel | None = None
    llm: llm_pb2_grpc.LlmServiceStub | None = None


FINISH_NAMES = {
    llm_pb2.FINISH_REASON_STOP: "stop",
    llm_pb2.FINISH_REASON_LENGTH: "length",
    llm_pb2.FINISH_REASON_NO_ITEMS: "no_items",
}
CHAT_ROLES = {"user": llm_pb2.CHAT_ROLE_USER, "assistant": llm_pb2.CHAT_ROLE_ASSISTANT}
SSE_DOC = """Server-sent events, in this order: one `retrieved` (`{"items": [ScoredItem]}`,
the cards the answer is grounded on), then `text` (`{"text": "..."}`) pieces of the answer
interleaved with a `reference` (`{"item_id", "reason"}`) each time the answer cites one of
the retrieved items (never any other), then one `finish` (`{"finish_reason": "stop" |
"length" | "no_items", "answer_id", "adapter_id", "prompt_tokens", "completion_tokens"}`).
An error once the stream has started is an `error` event (`{"reason", "message",
"request_id"}`) and ends it; errors before it are the usual JSON error responses."""


SSE_EVENTS: dict[str, type[Any]] = {
    "retrieved": ChatRetrieved,
    "text": ChatText,
    "reference": ChatReference,
    "finish": ChatFinishOut,
    "error": ErrorBody,
}


def sse_schema(components: dict[str, Any]) -> dict[str, Any]:
    """One server-sent event of a chat, as OpenAPI 3.1 describes an event stream's items:
    its name, and its ``data`` as JSON of that event's schema."""
    variants = []
    for name, model in SSE_EVENTS.items():
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(schema.pop("$defs", {}))
        components.setdefault(model.__name__, schema)
        variants.append(
            {
                "type": "object",
                "required": ["event", "data"],
                "properties": {
                    "event": {"const": name},
                    "data": {
                        "type": "string",
                        "contentMediaType": "application/json",
                        "contentSchema": {"$ref": f"#/components/schemas/{model.__name__}"},
                    },
                },
            }
        )
    return {"oneOf": variants}


def sse(event: str, payload: Any) -> bytes:
    data = payload.model_dump_json() if hasattr(payload, "model_dump_json") else json.dumps(payload)
    return f"event: {event}\ndata: {data}\n\n".encode()


def chat_event(message: llm_pb2.ChatResponse) -> bytes:
    kind = message.WhichOneof("chunk")
    if kind == "retrieved":
        items = [ScoredItem.from_proto(r) for r in message.retrieved.items]
        return sse("retrieved", ChatRetrieved(items=items))
    if kind == "text_delta":
        return sse("text", ChatText(text=message.text_delta))
    if kind == "item_reference":
        ref = message.item_reference
        return sse("reference", ChatReference(item_id=ref.item_id, reason=ref.reason))
    finish = message.finish
    return sse(
        "finish",
        ChatFinishOut(
            finish_reason=FINISH_NAMES.get(finish.finish_reason, "stop"),  # type: ignore[arg-type]
            answer_id=finish.answer_id,
            adapter_id=finish.adapter_id,
            prompt_tokens=finish.prompt_tokens,
            completion_tokens=finish.completion_tokens,
        ),
    )


# Routes that take an image upload; every other body is JSON, held to MAX_BODY_BYTES.
UPLOAD_ROUTES = frozenset({"/v1/search/image"})
# What a caller may learn when a service fails without a StyleLoop reason of its own (the
# transport's details name internal addresses).
GENERIC_UPSTREAM = {
    grpc.StatusCode.UNAVAILABLE: "a service is unavailable; retry later",
    grpc.StatusCode.DEADLINE_EXCEEDED: "a service did not answer in time; retry later",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "a service is overloaded; retry later",
    grpc.StatusCode.UNAUTHENTICATED: "the gateway could not authenticate to a service",
}


# Declared in the OpenAPI document as the API's security scheme; checked in caller().
API_KEY_HEADER = APIKeyHeader(
    name="X-API-Key",
    auto_error=False,
    description="An API key (anonymous calls only where ALLOW_ANONYMOUS is set).",
)
ApiKey = Annotated[str | None, Depends(API_KEY_HEADER)]


def create_app(settings: GatewaySettings) -> FastAPI:
    limiter = RateLimiter(
        settings.rate_limit_per_minute, settings.rate_limit_burst, settings.rate_limit_max_callers
    )
    key_hashes = [bytes.fromhex(h) for h in settings.api_key_sha256]
    if settings.environment == "production" and not key_hashes:
        raise ValueError("API_KEY_SHA256 must be set in production")
    if not key_hashes and not settings.allow_anonymous:
        raise ValueError(
            "no API keys: set API_KEY_SHA256 (sha256 digests of the accepted keys), or "
            "ALLOW_ANONYMOUS=true for a local stack that accepts calls without a key"
        )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        channel = aio_channel(settings.recommender_addr, settings.service_token.get_secret_value())
        sink = DurableProducer(
            settings.kafka_bootstrap,
            settings.feedback_topic,
            settings.spool_dir,
            settings.kafka_timeout_s,
            settings.spool_replay_interval_s,
            settings.spool_replay_chunk,
        )
        sink.start()
        llm_channel = (
            aio_channel(settings.llm_addr, settings.service_token.get_secret_value())
            if settings.llm_addr
            else None
        )
        app.state.backends = Backends(
            channel,
            recommender_pb2_grpc.RecommenderServiceStub(channel),
            sink,
            llm_channel,
            llm_pb2_grpc.LlmServiceStub(llm_channel) if llm_channel is not None else None,
        )
        metrics_server = start_metrics_server(settings.http_host, settings.metrics_port)
        app.state.metrics_port = metrics_server.port if metrics_server else -1
        try:
            yield
        finally:
            if metrics_server is not None:
                metrics_server.stop()
            await sink.stop()
            await channel.close()
            if llm_channel is not None:
                await llm_channel.close()

    docs = (
        settings.enable_docs
        if settings.enable_docs is not None
        else settings.environment != "production"
    )
    app = FastAPI(
        docs_url="/docs" if docs else None,
        redoc_url=None,
        openapi_url="/openapi.json" if docs else None,
        title="StyleLoop API",
        version="1.0.0",
        description="Multimodal fashion recommendation for mobile apps. Authenticate with "
        "`X-API-Key`. Errors are JSON `{reason, message, request_id}`.",
        lifespan=lifespan,
        responses={
            400: {
                "model": ErrorBody,
                "description": "Invalid request: it breaks this document, or a rule the "
                "document cannot state (reason BAD_PAGE_TOKEN: a page_token this service did "
                "not issue for this call; BAD_FILTER: min_price above max_price; IMAGE_EMPTY, "
                "IMAGE_UNREADABLE, IMAGE_CORRUPT, IMAGE_FORMAT_UNSUPPORTED, "
                "IMAGE_TOO_MANY_PIXELS: the photo's bytes; EMPTY_MESSAGE, LAST_NOT_USER: a chat's "
                "last message must be the shopper's and not blank; PROMPT_TOO_LONG: a "
                "conversation over the model's prompt budget).",
            },
            401: {"model": ErrorBody, "description": "No valid X-API-Key"},
            413: {"model": ErrorBody, "description": "Body over the limit"},
            429: {"model": ErrorBody, "description": "Rate limited (Retry-After)"},
            500: {"model": ErrorBody, "description": "Internal error"},
            502: {"model": ErrorBody, "description": "A service failed"},
            503: {"model": ErrorBody, "description": "A service is unavailable"},
            504: {"model": ErrorBody, "description": "A service did not answer in time"},
        },
    )

    def body_limit(path: str, headers: dict[bytes, bytes]) -> int:
        content_type = headers.get(b"content-type", b"")
        upload = path in UPLOAD_ROUTES and content_type.lower().startswith(b"multipart/form-data")
        return settings.max_upload_bytes if upload else settings.max_body_bytes

    app.add_middleware(BodyLimit, limit_for=body_limit)  # inside the envelope below
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["X-API-Key", "Content-Type", "X-Request-ID"],
            expose_headers=["X-Request-ID", "Retry-After"],
        )

    app.add_middleware(Envelope)  # outermost

    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.reason, exc.message, **exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        reason = "MALFORMED_JSON" if first.get("type") == "json_invalid" else "INVALID_REQUEST"
        return error_response(400, reason, f"{where or 'request'}: {first.get('msg', 'invalid')}")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        reason = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 413: "BODY_TOO_LARGE"}.get(
            exc.status_code, "HTTP_ERROR"
        )
        # e.g. 405's Allow header, which RFC 9110 requires
        return error_response(exc.status_code, reason, str(exc.detail), **(exc.headers or {}))

    @app.exception_handler(grpc.aio.AioRpcError)
    async def upstream(_: Request, exc: grpc.aio.AioRpcError) -> JSONResponse:
        return error_response(*upstream_error(exc))

    def upstream_error(exc: grpc.aio.AioRpcError) -> tuple[int, str, str]:
        """The HTTP status, reason and message a failed gRPC call becomes."""
        status = HTTP_BY_GRPC.get(exc.code(), 502)
        own_reason = status_reason(exc)  # a StyleLoop service's own error: its message is ours
        reason = own_reason or exc.code().name
        message = exc.details() or exc.code().name
        if status >= 500 or own_reason is None:
            log.warning(
                "upstream failure",
                extra={"code": exc.code().name, "reason": reason, "details": exc.details()},
            )
        if status == 401:  # the gateway's own credentials, not the caller's
            status = 502
        if own_reason is None:
            message = GENERIC_UPSTREAM.get(exc.code(), "an upstream service failed")
        elif status == 502:
            message = "an upstream service failed"
        return status, reason, message

    def limit(identity: str) -> None:
        wait = limiter.take(identity)
        if wait:
            raise ApiError(
                429,
                "RATE_LIMITED",
                "too many requests; retry later",
                **{"Retry-After": str(math.ceil(wait))},
            )

    async def caller(request: Request, key: ApiKey) -> str:
        """Authenticate (constant-time against every configured hash) and rate-limit;
        failed key checks are rate-limited per client address too. Async, though it never
        waits: FastAPI would run a plain function in its thread pool, a thread hop per
        request."""
        key = key or ""
        address = request.client.host if request.client else "unknown"
        if key_hashes:
            digest = hashlib.sha256(key.encode()).digest()
            matched = False
            for expected in key_hashes:
                matched |= hmac.compare_digest(digest, expected)
            if not key or not matched:
                limit("failed:" + address)
                raise ApiError(401, "UNAUTHENTICATED", "a valid X-API-Key header is required")
            identity = "key:" + digest.hex()[:16]
        else:
            identity = "ip:" + address
        limit(identity)
        return identity

    v1 = APIRouter(prefix="/v1", dependencies=[Depends(caller), Depends(one_value_each)])

    def backends(request: Request) -> Backends:
        return request.app.state.backends  # type: ignore[no-any-return]

    def metadata() -> tuple[tuple[str, str], ...]:
        return ((REQUEST_ID_METADATA_KEY, request_id_var.get() or ""),)

    async def call(method: Any, request: Any) -> Any:
        return await method(request, timeout=settings.rpc_timeout_s, metadata=metadata())

    async def page(method: Any, request: Any) -> Page:
        return Page.from_proto(await call(method, request))

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        """Liveness: the process serves HTTP."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], responses={503: {"model": ErrorBody}})
    async def readyz(request: Request) -> Any:
        """Readiness: the recommender reports SERVING."""
        stub = health_pb2_grpc.HealthStub(backends(request).channel)
        try:
            reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
        except grpc.aio.AioRpcError as exc:
            return error_response(503, "RECOMMENDER_UNAVAILABLE", exc.code().name)
        if reply.status != health_pb2.HealthCheckResponse.SERVING:
            return error_response(503, "RECOMMENDER_NOT_READY", "the recommender is starting")
        return {"status": "ready"}

    @v1.post("/search/image", tags=["search"], responses={415: UNSUPPORTED})
    async def search_by_image(
        request: Request,
        image: Annotated[UploadFile, File(description="A JPEG, PNG or WebP photo.")],
        flt: FilterQuery,
        page_size: PageSize = 10,
        page_token: PageToken = "",
        user_id: UserQuery = "",
    ) -> Page:
        """Items that look like the uploaded photo (personalised with ``user_id``: that
        shopper's rejected items and their near-duplicates never come back)."""
        data = await image.read(settings.max_upload_bytes + 1)
        if not data:
            raise ApiError(400, "IMAGE_EMPTY", "the uploaded image is empty (0 bytes)")
        if len(data) > settings.max_upload_bytes:
            raise ApiError(413, "BODY_TOO_LARGE", "the image is over the upload limit")
        if (image.content_type or "") not in IMAGE_TYPES:
            raise ApiError(
                415, "UNSUPPORTED_MEDIA_TYPE", "upload a JPEG, PNG or WebP image (Content-Type)"
            )
        return await page(
            backends(request).recommender.SearchByImage,
            recommender_pb2.SearchByImageRequest(
                image=data,
                filter=flt.to_proto(),
                page_size=page_size,
                page_token=page_token,
                user_id=user_id,
            ),
        )

    @v1.post("/search/text", tags=["search"])
    async def search_by_text(request: Request, body: TextSearch) -> Page:
        """Items matching a text query (image and caption rankings fused)."""
        return await page(
            backends(request).recommender.SearchByText,
            recommender_pb2.SearchByTextRequest(
                query=body.query,
                filter=body.filter.to_proto(),
                page_size=body.page_size,
                page_token=body.page_token,
                user_id=body.user_id,
            ),
        )

    @v1.get("/items/{item_id}", tags=["items"], responses={404: NOT_FOUND})
    async def get_item(
        request: Request, item_id: Annotated[str, PathParam(max_length=128)]
    ) -> Item:
        """One catalog item."""
        response = await call(
            backends(request).recommender.GetItem, recommender_pb2.GetItemRequest(item_id=item_id)
        )
        return Item.from_proto(response.item)

    @v1.get(
        "/items/{item_id}/image",
        tags=["items"],
        response_class=Response,
        responses={
            200: {"content": {"image/jpeg": {}, "image/png": {}, "image/webp": {}}},
            304: {"description": "the photo has not changed (If-None-Match)"},
            404: NOT_FOUND,
        },
    )
    async def item_image(
        request: Request, item_id: Annotated[str, PathParam(max_length=128)]
    ) -> Response:
        """An item's product photo (at most 10 MiB), with an ETag: cache it for a day, then
        ask again with If-None-Match (304 when unchanged). 404 ``IMAGE_NOT_FOUND`` when the
        item has no photo the catalog may serve."""
        response = await call(
            backends(request).recommender.GetItemImage,
            recommender_pb2.GetItemImageRequest(item_id=item_id),
        )
        etag = f'"{response.etag}"'
        headers = {"ETag": etag, "Cache-Control": "private, max-age=86400"}
        wanted = request.headers.get("if-none-match", "")
        if etag in [t.strip() for t in wanted.split(",")]:
            return Response(status_code=304, headers=headers)
        return Response(response.image, media_type=response.content_type, headers=headers)

    @v1.get("/facets", tags=["items"])
    async def facets(
        request: Request,
        flt: FilterQuery,
        fields: Annotated[list[FacetField] | None, Query(max_length=8)] = None,
        max_values: Annotated[int, Query(ge=0, le=1000)] = 50,
    ) -> Facets:
        """How many items have each value of the filterable fields (category, article_type,
        brand, season, colour, usage, gender, year), most frequent first, under the filter:
        what a client's filter chips offer."""
        response = await call(
            backends(request).recommender.GetFacets,
            recommender_pb2.GetFacetsRequest(
                fields=fields or [], filter=flt.to_proto(), max_values=max_values
            ),
        )
        return Facets.from_proto(response)

    @v1.get("/items/{item_id}/similar", tags=["items"], responses={404: NOT_FOUND})
    async def similar_items(
        request: Request,
        item_id: Annotated[str, PathParam(max_length=128)],
        flt: FilterQuery,
        page_size: PageSize = 10,
        page_token: PageToken = "",
    ) -> Page:
        """Items similar to a catalog item."""
        return await page(
            backends(request).recommender.GetSimilarItems,
            recommender_pb2.GetSimilarItemsRequest(
                item_id=item_id, filter=flt.to_proto(), page_size=page_size, page_token=page_token
            ),
        )

    @v1.post("/outfits/complete", tags=["outfits"], responses={404: NOT_FOUND})
    async def complete_outfit(request: Request, body: OutfitCompletion) -> OutfitPage:
        """Candidates of ``category`` that go with the whole partial outfit, best first,
        ranked by the trained compatibility scorer where one serves (``method`` says)."""
        return OutfitPage.from_proto(
            await call(
                backends(request).recommender.CompleteOutfit,
                recommender_pb2.CompleteOutfitRequest(
                    item_ids=body.item_ids,
                    wanted_category=body.category,
                    filter=body.filter.to_proto(),
                    page_size=body.page_size,
                    page_token=body.page_token,
                ),
            )
        )

    @v1.post("/recommendations", tags=["recommendations"], responses={404: NOT_FOUND})
    async def recommendations(request: Request, body: RecommendationRequest) -> Page:
        """Personalised recommendations from the user's history and explicit examples."""
        return await page(
            backends(request).recommender.GetRecommendations,
            recommender_pb2.GetRecommendationsRequest(
                user_id=body.user_id,
                positive_item_ids=body.positive_item_ids,
                negative_item_ids=body.negative_item_ids,
                filter=body.filter.to_proto(),
                page_size=body.page_size,
                page_token=body.page_token,
            ),
        )

    @v1.post(
        "/chat",
        tags=["chat"],
        response_class=StreamingResponse,
        responses={
            200: {
                "description": SSE_DOC,
                "content": {"text/event-stream": {"schema": {"type": "string"}}},
            },
            503: {"model": ErrorBody, "description": "The llm service is unavailable"},
        },
    )
    async def chat(request: Request, body: ChatRequest) -> Response:
        """Grounded chat: the answer cites only retrieved catalog items, streamed as
        server-sent events; says so plainly (``no_items``) when the catalog has nothing
        that fits. A rejected item never comes back in that user's answers."""
        stub = backends(request).llm
        if stub is None:
            raise ApiError(
                503,
                "LLM_UNAVAILABLE",
                "chat is not available: this gateway has no llm service (LLM_ADDR)",
                **{"Retry-After": "60"},
            )
        image = b""
        if body.image_base64:
            try:
                image = base64.b64decode(body.image_base64, validate=True)
            except (binascii.Error, ValueError):
                raise ApiError(
                    400, "IMAGE_UNREADABLE", "image_base64 is not valid base64"
                ) from None
            if len(image) > settings.max_upload_bytes:
                raise ApiError(413, "BODY_TOO_LARGE", "the image is over the upload limit")
        call = stub.Chat(
            llm_pb2.ChatRequest(
                messages=[
                    llm_pb2.ChatMessage(role=CHAT_ROLES[m.role], content=m.content)
                    for m in body.messages
                ],
                user_id=body.user_id,
                conversation_id=body.conversation_id,
                image=image,
                filter=body.filter.to_proto(),
                max_items=body.max_items,
                max_new_tokens=body.max_new_tokens,
                temperature=body.temperature,
            ),
            timeout=settings.chat_timeout_s,
            metadata=metadata(),
        )
        try:  # errors before the first event are ordinary JSON errors
            first = await call.read()
        except BaseException:
            call.cancel()
            raise
        if first is grpc.aio.EOF:
            raise ApiError(502, "UPSTREAM_FAILED", "the llm service ended the chat early")
        request_id = request_id_var.get() or ""

        async def events() -> AsyncIterator[bytes]:
            try:
                message = first
                while message is not grpc.aio.EOF:
                    yield chat_event(message)
                    message = await call.read()
            except grpc.aio.AioRpcError as exc:
                status, reason, text = upstream_error(exc)
                yield sse("error", ErrorBody(reason=reason, message=text, request_id=request_id))
            finally:
                call.cancel()  # the client went away: the llm stops generating

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @v1.post("/feedback", tags=["feedback"], status_code=202)
    async def feedback(request: Request, body: FeedbackBatch) -> FeedbackAccepted:
        """A batch of feedback events. Each gets an id and goes to Kafka topic
        ``styleloop.feedback.v1`` keyed by user id; while the broker is unreachable they
        are kept in a durable spool and delivered later (``spooled: true``)."""
        now = datetime.now(UTC)
        records, ids, protos = [], [], []
        # Random (version 4) UUIDs from one read of the OS's randomness for the batch, not
        # one system call per event (a tenth of the gateway's time on a full batch).
        random = os.urandom(16 * len(body.events))
        for n, event in enumerate(body.events):
            event_id = uuid.UUID(bytes=random[16 * n : 16 * n + 16], version=4).hex
            proto = events_pb2.FeedbackEvent(
                event_id=event_id,
                user_id=event.user_id,
                session_id=event.session_id,
                request_id=request_id_var.get() or "",
                item_id=event.item_id,
                kind=KINDS[event.kind],
                context=events_pb2.FeedbackContext(
                    source=events_pb2.FeedbackSource.Value(  # type: ignore[arg-type]
                        f"FEEDBACK_SOURCE_{(event.context.source or 'unspecified').upper()}"
                    ),
                    query=event.context.query,
                    recommended_item_ids=event.context.recommended_item_ids,
                    position=event.context.position,
                    answer_id=event.context.answer_id,
                    adapter_id=event.context.adapter_id,
                    reason=event.context.reason,
                ),
            )
            proto.event_time.FromDatetime(event.event_time or now)
            proto.receive_time.FromDatetime(now)
            records.append((event.user_id.encode(), proto.SerializeToString()))
            protos.append(proto)
            ids.append(event_id)
        try:
            spooled = await backends(request).feedback.publish(records)
        except (OSError, sqlite3.Error) as exc:  # the broker is down and the spool is full
            log.error("feedback refused: cannot be made durable", extra={"error": repr(exc)})
            raise ApiError(
                503,
                "FEEDBACK_NOT_DURABLE",
                "the event broker is unreachable and the gateway's spool cannot store the "
                "events (its disk is full?); none of them was accepted: retry later",
                **{"Retry-After": "5"},
            ) from exc
        if settings.apply_feedback_now:
            await apply_now(backends(request), protos)
        return FeedbackAccepted(accepted=len(ids), event_ids=ids, spooled=spooled)

    async def apply_now(backends_: Backends, events: list[events_pb2.FeedbackEvent]) -> None:
        """Likes, rejections and purchases change the shopper's next answers at once: each
        is applied to their state in the recommender right after it is safe in Kafka (or
        the spool). Best effort: the trainer applies every event again from Kafka, and
        the recommender ignores an event id it has seen."""
        for event in events:
            if event.kind not in APPLIED_KINDS:
                continue
            try:
                await backends_.recommender.RecordInteraction(
                    recommender_pb2.RecordInteractionRequest(
                        user_id=event.user_id,
                        item_id=event.item_id,
                        kind=event.kind,
                        event_time=event.event_time,
                        event_id=event.event_id,
                    ),
                    timeout=settings.rpc_timeout_s,
                    metadata=metadata(),
                )
            except grpc.aio.AioRpcError as exc:
                NOT_APPLIED.labels(exc.code().name).inc()
                log.warning(
                    "feedback not applied now (the trainer applies it from Kafka)",
                    extra={"code": exc.code().name, "event_id": event.event_id},
                )

    app.include_router(v1)

    # The web page: static files from this package, calling only the /v1 API above.
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def web_page() -> FileResponse:
        """StyleLoop's web page (services/gateway/static)."""
        return FileResponse(
            STATIC / "index.html",
            headers={
                "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; "
                "style-src 'self'; script-src 'self'; connect-src 'self'; "
                "frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
                "Cache-Control": "no-cache",
            },
        )

    def openapi() -> dict[str, Any]:
        """FastAPI's document, plus what it cannot say itself: the photo upload is a
        non-empty JPEG, PNG or WebP part."""
        if app.openapi_schema is None:
            spec = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            body = spec["paths"]["/v1/search/image"]["post"]["requestBody"]["content"]
            body["multipart/form-data"]["encoding"] = {
                "image": {"contentType": ", ".join(sorted(IMAGE_TYPES))}
            }
            ref = body["multipart/form-data"]["schema"]["$ref"].rsplit("/", 1)[-1]
            spec["components"]["schemas"][ref]["properties"]["image"]["minLength"] = 1
            stream = spec["paths"]["/v1/chat"]["post"]["responses"]["200"]["content"]
            stream["text/event-stream"]["schema"] = sse_schema(spec["components"]["schemas"])
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
