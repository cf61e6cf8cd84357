"""The one gRPC server bootstrap every service uses.

It builds an asyncio gRPC server with its interceptors (request id, Prometheus metrics,
the shared service token when ``SERVICE_TOKEN`` is set, domain-error mapping), a bound on
concurrent RPCs (``GRPC_MAX_CONCURRENT_RPCS``), the library health servicer (NOT_SERVING until the
service says it is ready), reflection outside production, a ``/metrics`` endpoint, and
graceful shutdown on SIGTERM: health flips to NOT_SERVING, new RPCs are refused, and
in-flight RPCs get ``SHUTDOWN_GRACE_S`` seconds to finish.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from grpc_status import rpc_status

from styleloop.runtime.auth import OPEN_SERVICES, token_matches
from styleloop.runtime.errors import ERROR_DOMAIN, ErrorKind, StyleLoopError
from styleloop.runtime.logging import request_id_var
from styleloop.runtime.metrics import (
    RPC_HANDLED,
    RPC_IN_FLIGHT,
    RPC_LATENCY,
    MetricsServer,
    start_metrics_server,
)
from styleloop.runtime.settings import ServiceSettings

log = logging.getLogger(__name__)

REQUEST_ID_METADATA_KEY = "x-request-id"

# The one mapping from domain errors to canonical gRPC status codes.
GRPC_STATUS_BY_KIND: dict[ErrorKind, grpc.StatusCode] = {
    ErrorKind.INVALID_ARGUMENT: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorKind.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ErrorKind.ALREADY_EXISTS: grpc.StatusCode.ALREADY_EXISTS,
    ErrorKind.FAILED_PRECONDITION: grpc.StatusCode.FAILED_PRECONDITION,
    ErrorKind.RESOURCE_EXHAUSTED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorKind.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    ErrorKind.DEADLINE_EXCEEDED: grpc.StatusCode.DEADLINE_EXCEEDED,
    ErrorKind.UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
    ErrorKind.PERMISSION_DENIED: grpc.StatusCode.PERMISSION_DENIED,
}

Behavior = Callable[[Any, grpc.aio.ServicerContext], Any]


def _split_method(full_method: str) -> tuple[str, str]:
    service, _, method = full_method.lstrip("/").partition("/")
    return service or "unknown", method or "unknown"


class WrappingInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Base of the runtime's interceptors: runs every RPC of every kind inside :meth:`around`."""

    def around(
        self, method: str, context: grpc.aio.ServicerContext
    ) -> AbstractAsyncContextManager[None]:
        raise NotImplementedError

    def _wrap(self, method: str, behavior: Behavior, streaming: bool) -> Behavior:
        if streaming:

            async def stream_behavior(request: Any, context: grpc.aio.ServicerContext) -> Any:
                async with self.around(method, context):
                    async for response in behavior(request, context):
                        yield response

            return stream_behavior

        async def unary_behavior(request: Any, context: grpc.aio.ServicerContext) -> Any:
            async with self.around(method, context):
                return await behavior(request, context)

        return unary_behavior

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        kwargs = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary:
            wrapped = self._wrap(method, handler.unary_unary, False)
            return grpc.unary_unary_rpc_method_handler(wrapped, **kwargs)
        if handler.unary_stream:
            wrapped = self._wrap(method, handler.unary_stream, True)
            return grpc.unary_stream_rpc_method_handler(wrapped, **kwargs)
        if handler.stream_unary:
            wrapped = self._wrap(method, handler.stream_unary, False)
            return grpc.stream_unary_rpc_method_handler(wrapped, **kwargs)
        wrapped = self._wrap(method, handler.stream_stream, True)
        return grpc.stream_stream_rpc_method_handler(wrapped, **kwargs)


class RequestIdInterceptor(WrappingInterceptor):
    """Takes the caller's ``x-request-id`` (or makes one) and puts it in the log context."""

    @asynccontextmanager
    async def around(self, _method: str, context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
        metadata = dict(context.invocation_metadata() or ())
        request_id_var.set(str(metadata.get(REQUEST_ID_METADATA_KEY) or uuid.uuid4().hex))
        yield


class TokenInterceptor(WrappingInterceptor):
    """Refuses RPCs without the shared ``SERVICE_TOKEN`` (health stays open)."""

    def __init__(self, token: str) -> None:
        self.token = token

    @asynccontextmanager
    async def around(self, method: str, context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
        if not method.startswith(OPEN_SERVICES) and not token_matches(
            context.invocation_metadata(), self.token
        ):
            status = rich_status(
                grpc.StatusCode.UNAUTHENTICATED,
                "this service needs the shared service token (authorization: Bearer)",
                "UNAUTHENTICATED",
            )
            await context.abort(status.code, status.details, status.trailing_metadata)
        yield


class MetricsInterceptor(WrappingInterceptor):
    """Counts RPCs by method and status code and records their latency in seconds."""

    @asynccontextmanager
    async def around(self, method: str, context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
        service, name = _split_method(method)
        in_flight = RPC_IN_FLIGHT.labels(service, name)
        in_flight.inc()
        started = time.perf_counter()
        code_name = "OK"
        try:
            yield
        except asyncio.CancelledError:
            code_name = "CANCELLED"
            raise
        except BaseException:
            code_name = "UNKNOWN"
            raise
        finally:
            code = context.code()
            if isinstance(code, grpc.StatusCode):
                code_name = code.name
            in_flight.dec()
            RPC_LATENCY.labels(service, name).observe(time.perf_counter() - started)
            RPC_HANDLED.labels(service, name, code_name).inc()


def rich_status(code: grpc.StatusCode, message: str, reason: str, **metadata: str) -> grpc.Status:
    """A ``grpc.Status`` carrying a ``google.rpc.Status`` with one ``ErrorInfo``."""
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN, metadata=metadata))
    return rpc_status.to_status(
        status_pb2.Status(code=code.value[0], message=message, details=[detail])
    )


def model_info(info: object) -> Any:
    """A ``styleloop.v1.ModelInfo`` from a service's info dataclass: every field the
    message has is copied; the rest stay unset."""
    import dataclasses

    from styleloop.v1 import common_pb2

    names = {f.name for f in common_pb2.ModelInfo.DESCRIPTOR.fields}
    values = dataclasses.asdict(info)  # type: ignore[call-overload]
    return common_pb2.ModelInfo(**{k: v for k, v in values.items() if k in names})


def status_reason(error: grpc.aio.AioRpcError) -> str | None:
    """The ``ErrorInfo.reason`` a StyleLoop service attached to a failed RPC, if any."""
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            info = error_details_pb2.ErrorInfo()
            for detail in status_pb2.Status.FromString(value).details:
                if detail.Unpack(info):
                    return str(info.reason)
    return None


class ErrorMappingInterceptor(WrappingInterceptor):
    """Turns domain errors into canonical status codes, and anything else into INTERNAL.

    The INTERNAL message is generic; the full exception goes to the log only.
    """

    @asynccontextmanager
    async def around(self, method: str, context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
        try:
            yield
        except StyleLoopError as exc:
            status = rich_status(
                GRPC_STATUS_BY_KIND[exc.kind], exc.message, exc.reason, **exc.metadata
            )
            log.info(
                "rpc failed", extra={"rpc": method, "code": status.code.name, "reason": exc.reason}
            )
            await context.abort(status.code, status.details, status.trailing_metadata)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            log.error("unhandled error in %s", method, exc_info=exc)
            status = rich_status(grpc.StatusCode.INTERNAL, "internal error", "INTERNAL")
            await context.abort(status.code, status.details, status.trailing_metadata)


Registrar = Callable[[grpc.aio.Server], None]


class GrpcServer:
    """An asyncio gRPC server with health, reflection, metrics and graceful shutdown.

    ``service_names`` are the full names of the services ``register`` adds (for health
    and reflection), e.g. ``encoder_pb2.DESCRIPTOR.services_by_name["EncoderService"]
    .full_name``.
    """

    def __init__(
        self, settings: ServiceSettings, register: Registrar, service_names: Sequence[str]
    ) -> None:
        self.settings = settings
        self.service_names = list(service_names)
        self.health = health.aio.HealthServicer()
        options = [
            ("grpc.max_receive_message_length", settings.grpc_max_message_bytes),
            ("grpc.max_send_message_length", settings.grpc_max_message_bytes),
        ]
        token = settings.service_token.get_secret_value()
        interceptors: list[grpc.aio.ServerInterceptor] = [
            RequestIdInterceptor(),
            MetricsInterceptor(),
            *([TokenInterceptor(token)] if token else []),
            ErrorMappingInterceptor(),
        ]
        self.server = grpc.aio.server(
            interceptors=interceptors,
            options=options,
            maximum_concurrent_rpcs=settings.grpc_max_concurrent_rpcs,
        )
        register(self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        if settings.environment != "production":
            reflection.enable_server_reflection(
                [*self.service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], self.server
            )
        self.port = 0
        self.metrics: MetricsServer | None = None
        self._stopped = asyncio.Event()

    async def start(self) -> int:
        """Bind and start; every service reports NOT_SERVING until :meth:`set_ready`."""
        for name in ["", *self.service_names]:
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        address = f"{self.settings.grpc_host}:{self.settings.grpc_port}"
        self.port = self.server.add_insecure_port(address)
        await self.server.start()
        self.metrics = start_metrics_server(self.settings.grpc_host, self.settings.metrics_port)
        log.info(
            "grpc server started",
            extra={"grpc_port": self.port, "services": self.service_names},
        )
        return self.port

    async def set_ready(self, ready: bool = True) -> None:
        """Report SERVING (or NOT_SERVING) for the server and each of its services."""
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if ready
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ["", *self.service_names]:
            await self.health.set(name, status)

    async def stop(self, grace: float | None = None) -> None:
        """Flip health to NOT_SERVING, refuse new RPCs, let in-flight ones finish."""
        if self._stopped.is_set():
            return
        grace = self.settings.shutdown_grace_s if grace is None else grace
        log.info("graceful shutdown", extra={"grace_s": grace})
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
        if self.metrics is not None:
            self.metrics.stop()
        self._stopped.set()
        log.info("grpc server stopped")

    async def run_until_signal(self) -> None:
        """Serve until SIGTERM or SIGINT, then stop gracefully."""
        loop = asyncio.get_running_loop()
        stop_requested = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop_requested.set)
        waiter = asyncio.ensure_future(stop_requested.wait())
        terminated = asyncio.ensure_future(self.server.wait_for_termination())
        await asyncio.wait({waiter, terminated}, return_when=asyncio.FIRST_COMPLETED)
        await self.stop()
        for task in (waiter, terminated):
            task.cancel()


async def serve(
    settings: ServiceSettings,
    register: Registrar,
    service_names: Sequence[str],
    on_ready: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """The whole life of a service process: start, get ready, serve, shut down on SIGTERM.

    ``on_ready`` loads models and connects clients; health says SERVING only after it
    returns, and a failure there stops the process.
    """
    server = GrpcServer(settings, register, service_names)
    await server.start()
    try:
        if on_ready is not None:
            await on_ready()
        await server.set_ready()
        await server.run_until_signal()
    finally:
        await server.stop()


def run(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run a service's ``main`` coroutine: the entry point of ``python -m services.<svc>``.

    A domain error while starting (say, no models where the settings point) ends the
    process with one log line and exit code 2 instead of a traceback.
    """
    try:
        asyncio.run(main())
    except StyleLoopError as exc:
        log.error("cannot start: %s", exc.message, extra={"reason": exc.reason})
        raise SystemExit(2) from None
