"""Domain errors: raised by core code, which never imports grpc.

The gRPC runtime maps each :class:`ErrorKind` to a canonical status code in one place
(:mod:`styleloop.runtime.server`), with a ``google.rpc.ErrorInfo`` carrying ``reason``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar

ERROR_DOMAIN = "styleloop.v1"


class ErrorKind(StrEnum):
    """The canonical error classes StyleLoop uses; names follow gRPC status codes."""

    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    NOT_FOUND = "NOT_FOUND"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    UNAVAILABLE = "UNAVAILABLE"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    PERMISSION_DENIED = "PERMISSION_DENIED"


class StyleLoopError(Exception):
    """Base of every error that is meant to reach a caller.

    ``reason`` is a stable UPPER_SNAKE_CASE identifier clients can branch on;
    ``message`` is for people; ``metadata`` holds small machine-readable details.
    """

    kind: ClassVar[ErrorKind] = ErrorKind.FAILED_PRECONDITION

    def __init__(
        self, message: str, *, reason: str | None = None, metadata: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.kind.value
        self.metadata = dict(metadata or {})


class InvalidArgument(StyleLoopError):
    kind = ErrorKind.INVALID_ARGUMENT


class NotFound(StyleLoopError):
    kind = ErrorKind.NOT_FOUND


class AlreadyExists(StyleLoopError):
    kind = ErrorKind.ALREADY_EXISTS


class FailedPrecondition(StyleLoopError):
    kind = ErrorKind.FAILED_PRECONDITION


class ResourceExhausted(StyleLoopError):
    kind = ErrorKind.RESOURCE_EXHAUSTED


class Unavailable(StyleLoopError):
    kind = ErrorKind.UNAVAILABLE


class DeadlineExceeded(StyleLoopError):
    kind = ErrorKind.DEADLINE_EXCEEDED


class Unauthenticated(StyleLoopError):
    kind = ErrorKind.UNAUTHENTICATED


class PermissionDenied(StyleLoopError):
    kind = ErrorKind.PERMISSION_DENIED


@dataclass(frozen=True)
class ItemFailure:
    """Why one item of a batch could not be processed; the rest of the batch goes on.

    ``reason`` is a stable UPPER_SNAKE_CASE identifier (``IMAGE_CORRUPT``), ``message`` is
    for people. It travels as ``styleloop.v1.ItemError``.
    """

    reason: str
    message: str
