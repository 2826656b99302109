"""Domain errors and the one place they become canonical gRPC statuses.

Servicers raise these; the server runtime turns them into a `google.rpc.Status` with an
`ErrorInfo` (reason UPPER_SNAKE, domain = the service) and, for validation failures, a
`BadRequest` with field violations. Anything else becomes INTERNAL with no internals leaked.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta

import grpc
from fte_client.v1.errors import status_details
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2


@dataclass(frozen=True, slots=True)
class FieldViolation:
    field: str
    description: str


class FteError(Exception):
    """Base of every domain error. `reason` is a stable UPPER_SNAKE identifier."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN
    default_reason: str = "ERROR"

    def __init__(self, message: str, *, reason: str | None = None, metadata: Mapping[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.metadata = dict(metadata or {})


class InvalidArgument(FteError):
    code = grpc.StatusCode.INVALID_ARGUMENT
    default_reason = "INVALID_ARGUMENT"

    def __init__(
        self,
        message: str,
        *,
        violations: list[FieldViolation] | None = None,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ):
        super().__init__(message, reason=reason, metadata=metadata)
        self.violations = list(violations or [])


class NotFound(FteError):
    code = grpc.StatusCode.NOT_FOUND
    default_reason = "NOT_FOUND"


class AlreadyExists(FteError):
    code = grpc.StatusCode.ALREADY_EXISTS
    default_reason = "ALREADY_EXISTS"


class FailedPrecondition(FteError):
    code = grpc.StatusCode.FAILED_PRECONDITION
    default_reason = "FAILED_PRECONDITION"


class Aborted(FteError):
    """A concurrency conflict, e.g. a stale etag: the caller should re-read and retry."""

    code = grpc.StatusCode.ABORTED
    default_reason = "ABORTED"


class PermissionDenied(FteError):
    code = grpc.StatusCode.PERMISSION_DENIED
    default_reason = "PERMISSION_DENIED"


class Unauthenticated(FteError):
    code = grpc.StatusCode.UNAUTHENTICATED
    default_reason = "UNAUTHENTICATED"


class ResourceExhausted(FteError):
    """A quota or rate limit ran out; `retry_delay` (seconds), when known, goes to the caller as a
    `google.rpc.RetryInfo`."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    default_reason = "RESOURCE_EXHAUSTED"
    retry_delay: float | None = None

    @classmethod
    def retry_after(
        cls, seconds: float, message: str, *, reason: str | None = None, metadata: Mapping[str, str] | None = None
    ) -> ResourceExhausted:
        error = cls(message, reason=reason, metadata=metadata)
        error.retry_delay = seconds
        return error


class Unavailable(FteError):
    code = grpc.StatusCode.UNAVAILABLE
    default_reason = "UNAVAILABLE"


@dataclass
class Violations:
    """Collects field violations, then raises them together."""

    items: list[FieldViolation] = field(default_factory=list)

    def add(self, field_path: str, description: str) -> None:
        self.items.append(FieldViolation(field_path, description))

    def check(self, ok: bool, field_path: str, description: str) -> None:
        if not ok:
            self.add(field_path, description)

    def require(self, value: object, field_path: str) -> None:
        self.check(bool(value), field_path, "is required")

    def raise_if_any(self, message: str = "the request is invalid") -> None:
        if self.items:
            detail = "; ".join(f"{v.field}: {v.description}" for v in self.items)
            raise InvalidArgument(f"{message}: {detail}", violations=self.items)


def to_rpc_status(error: FteError, domain: str) -> status_pb2.Status:
    """The `google.rpc.Status` for a domain error."""
    details: list[any_pb2.Any] = []
    info = any_pb2.Any()
    info.Pack(error_details_pb2.ErrorInfo(reason=error.reason, domain=domain, metadata=error.metadata))
    details.append(info)
    if isinstance(error, InvalidArgument) and error.violations:
        bad = any_pb2.Any()
        bad.Pack(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                    for v in error.violations
                ]
            )
        )
        details.append(bad)
    if isinstance(error, ResourceExhausted) and error.retry_delay is not None:
        delay = duration_pb2.Duration()
        delay.FromTimedelta(timedelta(seconds=error.retry_delay))
        retry = any_pb2.Any()
        retry.Pack(error_details_pb2.RetryInfo(retry_delay=delay))
        details.append(retry)
    return status_pb2.Status(code=error.code.value[0], message=error.message, details=details)


def internal_status(domain: str) -> status_pb2.Status:
    """The status of an unexpected failure: no exception text reaches the caller."""
    info = any_pb2.Any()
    info.Pack(error_details_pb2.ErrorInfo(reason="INTERNAL", domain=domain))
    return status_pb2.Status(code=code_pb2.INTERNAL, message="internal error", details=[info])


def error_info(err: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo | None:
    """The ErrorInfo a failed call carries, if any (for clients and tests)."""
    return status_details(err).error_info


def field_violations(err: grpc.aio.AioRpcError) -> list[tuple[str, str]]:
    """(field path, description) of each violation in the BadRequest a failed call carries."""
    return status_details(err).field_violations
