"""The gateway's HTTP API (FastAPI): versioned JSON endpoints over the gRPC services.

Every error is JSON ``{reason, message, request_id}`` with a fitting status; every gRPC
call has a deadline and carries the request id; ``/healthz``, ``/readyz``, ``/metrics``.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

import grpc
from fastapi import APIRouter, Depends, FastAPI, File, Query, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.gateway.config import GatewaySettings
from services.gateway.feedback import FeedbackSink
from services.gateway.schemas import (
    ChatRequest,
    ErrorBody,
    FeedbackAccepted,
    FeedbackBatch,
    Item,
    ItemFilter,
    OutfitCompletion,
    Page,
    RecommendationRequest,
    TextSearch,
)
from styleloop.runtime.auth import aio_channel
from styleloop.runtime.logging import request_id_var
from styleloop.runtime.server import REQUEST_ID_METADATA_KEY, status_reason
from styleloop.v1 import common_pb2, events_pb2, recommender_pb2, recommender_pb2_grpc

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


def query_filter(
    category: Annotated[list[str], Query(max_length=50)] = [],  # noqa: B006
    colour: Annotated[list[str], Query(max_length=50)] = [],  # noqa: B006
    brand: Annotated[list[str], Query(max_length=50)] = [],  # noqa: B006
    min_price: Annotated[float | None, Query(ge=0, le=1e9)] = None,
    max_price: Annotated[float | None, Query(ge=0, le=1e9)] = None,
    in_stock_only: bool = False,
) -> ItemFilter:
    return ItemFilter(
        categories=category,
        colours=colour,
        brands=brand,
        min_price=min_price,
        max_price=max_price,
        in_stock_only=in_stock_only,
    )


FilterQuery = Annotated[ItemFilter, Depends(query_filter)]
PageSize = Annotated[int, Query(ge=1, le=100)]
PageToken = Annotated[str, Query(max_length=200)]
REQUEST_ID = re.compile(r"^[A-Za-z0-9._\-]{1,64}$")
KINDS = {
    "impression": common_pb2.INTERACTION_KIND_IMPRESSION,
    "click": common_pb2.INTERACTION_KIND_CLICK,
    "like": common_pb2.INTERACTION_KIND_LIKE,
    "reject": common_pb2.INTERACTION_KIND_REJECT,
    "purchase": common_pb2.INTERACTION_KIND_PURCHASE,
}


class ApiError(Exception):
    def __init__(self, status: int, reason: str, message: str, **headers: str) -> None:
        super().__init__(message)
        self.status, self.reason, self.message, self.headers = status, reason, message, headers


def error_response(status: int, reason: str, message: str, **headers: str) -> JSONResponse:
    body = ErrorBody(reason=reason, message=message, request_id=request_id_var.get() or "")
    return JSONResponse(body.model_dump(), status_code=status, headers=headers or None)


class RateLimiter:
    """A token bucket per caller: ``rate`` per minute, bursts of ``burst``."""

    def __init__(self, per_minute: float, burst: int) -> None:
        self.rate, self.burst = per_minute / 60.0, burst
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, caller: str) -> float:
        """0 when allowed; otherwise the seconds until a token is free."""
        now = time.monotonic()
        tokens, last = self._buckets.get(caller, (float(self.burst), now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens >= 1:
            self._buckets[caller] = (tokens - 1, now)
            return 0.0
        self._buckets[caller] = (tokens, now)
        return (1 - tokens) / self.rate


@dataclass
class Backends:
    channel: grpc.aio.Channel
    recommender: recommender_pb2_grpc.RecommenderServiceStub
    feedback: FeedbackSink


def create_app(settings: GatewaySettings) -> FastAPI:
    limiter = RateLimiter(settings.rate_limit_per_minute, settings.rate_limit_burst)
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
        sink = FeedbackSink(
            settings.kafka_bootstrap,
            settings.feedback_topic,
            settings.spool_dir,
            settings.kafka_timeout_s,
            settings.spool_replay_interval_s,
            settings.spool_replay_chunk,
        )
        sink.start()
        app.state.backends = Backends(
            channel, recommender_pb2_grpc.RecommenderServiceStub(channel), sink
        )
        try:
            yield
        finally:
            await sink.stop()
            await channel.close()

    app = FastAPI(
        title="StyleLoop API",
        version="1.0.0",
        description="Multimodal fashion recommendation for mobile apps. Authenticate with "
        "`X-API-Key`. Errors are JSON `{reason, message, request_id}`.",
        lifespan=lifespan,
        responses={
            400: {"model": ErrorBody},
            401: {"model": ErrorBody},
            413: {"model": ErrorBody},
            429: {"model": ErrorBody},
            503: {"model": ErrorBody},
        },
    )
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["X-API-Key", "Content-Type", "X-Request-ID"],
            expose_headers=["X-Request-ID", "Retry-After"],
        )

    @app.middleware("http")
    async def envelope(request: Request, call_next: Callable[[Request], Awaitable[Response]]):  # type: ignore[no-untyped-def]
        given = request.headers.get("x-request-id", "")
        request_id = given if REQUEST_ID.match(given) else uuid.uuid4().hex
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        try:
            length = request.headers.get("content-length")
            limit = (
                settings.max_upload_bytes
                if "multipart" in request.headers.get("content-type", "")
                else settings.max_body_bytes
            )
            if length is not None and length.isdigit() and int(length) > limit:
                response: Response = error_response(
                    413, "BODY_TOO_LARGE", f"the body is {length} bytes; the limit is {limit}"
                )
            else:
                response = await call_next(request)
        finally:
            request_id_var.reset(token)
        route = getattr(request.scope.get("route"), "path", "unmatched")
        REQUESTS.labels(request.method, route, str(response.status_code)).inc()
        LATENCY.labels(request.method, route).observe(time.perf_counter() - started)
        response.headers["X-Request-ID"] = request_id
        return response

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
        reason = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}.get(exc.status_code, "HTTP_ERROR")
        return error_response(exc.status_code, reason, str(exc.detail))

    @app.exception_handler(grpc.aio.AioRpcError)
    async def upstream(_: Request, exc: grpc.aio.AioRpcError) -> JSONResponse:
        status = HTTP_BY_GRPC.get(exc.code(), 502)
        reason = status_reason(exc) or exc.code().name
        message = exc.details() or exc.code().name
        if status == 502 or exc.code() == grpc.StatusCode.UNAVAILABLE:
            log.warning("upstream failure", extra={"code": exc.code().name, "reason": reason})
        if status == 502:
            message = "an upstream service failed"
        return error_response(status, reason, message)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return error_response(500, "INTERNAL", "internal error")

    def caller(request: Request) -> str:
        """Authenticate (constant-time against every configured hash) and rate-limit."""
        key = request.headers.get("x-api-key", "")
        if key_hashes:
            digest = hashlib.sha256(key.encode()).digest()
            matched = False
            for expected in key_hashes:
                matched |= hmac.compare_digest(digest, expected)
            if not key or not matched:
                raise ApiError(401, "UNAUTHENTICATED", "a valid X-API-Key header is required")
            identity = "key:" + digest.hex()[:16]
        else:
            identity = "ip:" + (request.client.host if request.client else "unknown")
        wait = limiter.take(identity)
        if wait:
            raise ApiError(
                429,
                "RATE_LIMITED",
                "too many requests; retry later",
                **{"Retry-After": str(math.ceil(wait))},
            )
        return identity

    v1 = APIRouter(prefix="/v1", dependencies=[Depends(caller)])

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

    @app.get("/metrics", tags=["health"], include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @v1.post("/search/image", tags=["search"])
    async def search_by_image(
        request: Request,
        image: Annotated[UploadFile, File(description="A JPEG, PNG or WebP photo.")],
        flt: FilterQuery,
        page_size: PageSize = 10,
        page_token: PageToken = "",
    ) -> Page:
        """Items that look like the uploaded photo."""
        if (image.content_type or "") not in IMAGE_TYPES:
            raise ApiError(
                415, "UNSUPPORTED_MEDIA_TYPE", "upload a JPEG, PNG or WebP image (Content-Type)"
            )
        data = await image.read(settings.max_upload_bytes + 1)
        if len(data) > settings.max_upload_bytes:
            raise ApiError(413, "BODY_TOO_LARGE", "the image is over the upload limit")
        return await page(
            backends(request).recommender.SearchByImage,
            recommender_pb2.SearchByImageRequest(
                image=data, filter=flt.to_proto(), page_size=page_size, page_token=page_token
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
            ),
        )

    @v1.get("/items/{item_id}", tags=["items"], responses={404: {"model": ErrorBody}})
    async def get_item(
        request: Request, item_id: Annotated[str, PathParam(max_length=128)]
    ) -> Item:
        """One catalog item."""
        response = await call(
            backends(request).recommender.GetItem, recommender_pb2.GetItemRequest(item_id=item_id)
        )
        return Item.from_proto(response.item)

    @v1.get("/items/{item_id}/similar", tags=["items"], responses={404: {"model": ErrorBody}})
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

    @v1.post("/outfits/complete", tags=["outfits"])
    async def complete_outfit(request: Request, body: OutfitCompletion) -> Page:
        """Candidates of ``category`` that go with the whole partial outfit, best first."""
        return await page(
            backends(request).recommender.CompleteOutfit,
            recommender_pb2.CompleteOutfitRequest(
                item_ids=body.item_ids,
                wanted_category=body.category,
                filter=body.filter.to_proto(),
                page_size=body.page_size,
                page_token=body.page_token,
            ),
        )

    @v1.post("/recommendations", tags=["recommendations"])
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

    @v1.post("/chat", tags=["chat"], responses={503: {"model": ErrorBody}})
    async def chat(body: ChatRequest) -> Response:  # noqa: ARG001 - validated, then refused
        """Grounded chat, streamed as server-sent events (the llm service is not built yet:
        503 ``LLM_UNAVAILABLE``)."""
        raise ApiError(
            503,
            "LLM_UNAVAILABLE",
            "chat is not available yet: the llm service is not deployed",
            **{"Retry-After": "3600"},
        )

    @v1.post("/feedback", tags=["feedback"], status_code=202)
    async def feedback(request: Request, body: FeedbackBatch) -> FeedbackAccepted:
        """A batch of feedback events. Each gets an id and goes to Kafka topic
        ``styleloop.feedback.v1`` keyed by user id; while the broker is unreachable they
        are kept in a durable spool and delivered later (``spooled: true``)."""
        now = datetime.now(UTC)
        records, ids = [], []
        for event in body.events:
            event_id = uuid.uuid4().hex
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
            ids.append(event_id)
        spooled = await backends(request).feedback.publish(records)
        return FeedbackAccepted(accepted=len(ids), event_ids=ids, spooled=spooled)

    app.include_router(v1)
    return app
