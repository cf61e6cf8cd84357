"""The gateway's bounds: request bodies counted while they stream in, and per-caller rate
limits whose memory is bounded too."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.exceptions import HTTPException

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class BodyTooLarge(HTTPException):
    """413 while the body is still arriving (FastAPI passes HTTP exceptions through)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the body is over the limit of {limit} bytes")


class BodyLimit:
    """ASGI middleware: every request body is counted as it is received, chunked or not,
    and reading stops with 413 once it passes ``limit_for(path, headers)`` bytes; a declared
    ``Content-Length`` over the limit is refused before a byte is read."""

    def __init__(self, app: ASGIApp, limit_for: Callable[[str, dict[bytes, bytes]], int]) -> None:
        self.app, self.limit_for = app, limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or ())  # parsed once per request
        limit = self.limit_for(str(scope.get("path", "")), headers)
        declared = headers.get(b"content-length", b"")
        received = 0

        async def counted() -> Message:
            nonlocal received
            if declared.isdigit() and int(declared) > limit:
                raise BodyTooLarge(limit)
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, counted, send)


class RateLimiter:
    """A token bucket per caller: ``rate`` per minute, bursts of ``burst``.

    Memory is bounded: a bucket idle long enough to be full again is the same as no
    bucket and is dropped, and past ``max_callers`` the least recently seen go first."""

    def __init__(self, per_minute: float, burst: int, max_callers: int = 100_000) -> None:
        self.rate, self.burst, self.max_callers = per_minute / 60.0, burst, max_callers
        self.refill_s = burst / self.rate  # from empty to full
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, caller: str) -> float:
        """0 when allowed; otherwise the seconds until a token is free."""
        now = time.monotonic()
        tokens, last = self._buckets.pop(caller, (float(self.burst), now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        self._evict(now)
        if tokens >= 1:
            self._buckets[caller] = (tokens - 1, now)
            return 0.0
        self._buckets[caller] = (tokens, now)
        return (1 - tokens) / self.rate

    def _evict(self, now: float) -> None:
        while self._buckets:
            _, (_, last) = next(iter(self._buckets.items()))
            if now - last < self.refill_s and len(self._buckets) < self.max_callers:
                return
            self._buckets.popitem(last=False)
