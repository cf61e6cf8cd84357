"""Service-to-service authentication: one shared token (``SERVICE_TOKEN``).

Servers built by :class:`styleloop.runtime.server.GrpcServer` refuse every RPC that does
not carry ``authorization: Bearer <token>`` when a token is configured — all but gRPC
health, which Kubernetes' native probes call without metadata. Clients get the header on
every call from :func:`aio_channel`. In Kubernetes the
token comes from a Secret; with ``ENVIRONMENT=production`` a service refuses to start
without one.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Sequence
from typing import Any

import grpc

AUTH_METADATA_KEY = "authorization"
# Called by probes and load balancers with no metadata: never behind the token.
OPEN_SERVICES = ("/grpc.health.v1.Health/",)


def bearer(token: str) -> tuple[str, str]:
    return (AUTH_METADATA_KEY, f"Bearer {token}")


def token_matches(metadata: Sequence[tuple[str, Any]] | None, token: str) -> bool:
    """Constant-time check of the caller's bearer token."""
    given = dict(metadata or ()).get(AUTH_METADATA_KEY, "")
    if isinstance(given, bytes):
        given = given.decode("latin-1")
    return hmac.compare_digest(str(given).encode(), f"Bearer {token}".encode())


class _Token:
    def __init__(self, token: str) -> None:
        self.header = bearer(token)

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = [*(details.metadata or ()), self.header]
        return grpc.aio.ClientCallDetails(
            details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
        )


# One class per call kind: a grpc.aio channel files each interceptor under the first kind
# it is an instance of, so one class of all four kinds would only see unary-unary calls.
class _UnaryUnaryToken(_Token, grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    async def intercept_unary_unary(self, continuation: Callable, details, request):  # type: ignore[no-untyped-def, type-arg]
        return await continuation(self._details(details), request)


class _UnaryStreamToken(_Token, grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[misc]
    async def intercept_unary_stream(self, continuation: Callable, details, request):  # type: ignore[no-untyped-def, type-arg]
        return await continuation(self._details(details), request)


class _StreamUnaryToken(_Token, grpc.aio.StreamUnaryClientInterceptor):  # type: ignore[misc]
    async def intercept_stream_unary(self, continuation: Callable, details, iterator):  # type: ignore[no-untyped-def, type-arg]
        return await continuation(self._details(details), iterator)


class _StreamStreamToken(_Token, grpc.aio.StreamStreamClientInterceptor):  # type: ignore[misc]
    async def intercept_stream_stream(self, continuation: Callable, details, iterator):  # type: ignore[no-untyped-def, type-arg]
        return await continuation(self._details(details), iterator)


def aio_channel(address: str, token: str = "", **options: Any) -> grpc.aio.Channel:
    """An asyncio channel that sends ``token`` (when set) on every call."""
    kinds = (_UnaryUnaryToken, _UnaryStreamToken, _StreamUnaryToken, _StreamStreamToken)
    interceptors = [kind(token) for kind in kinds] if token else None
    return grpc.aio.insecure_channel(address, interceptors=interceptors, **options)
