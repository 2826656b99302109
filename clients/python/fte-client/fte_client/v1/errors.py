"""Failed calls as typed exceptions carrying what the service said: the status code, the
`google.rpc.ErrorInfo` reason and domain, field violations, and the retry delay of a rate limit
or a quota.

Each exception is a `grpc.aio.AioRpcError`, so code that already catches that keeps working."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status


@dataclass(frozen=True)
class StatusDetails:
    """The details of a failed call's `google.rpc.Status` the services attach."""

    reason: str | None = None
    domain: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    # (field path, description) of each BadRequest field violation.
    field_violations: list[tuple[str, str]] = field(default_factory=list)
    # Seconds to wait before trying again (google.rpc.RetryInfo), when the service said.
    retry_delay: float | None = None
    error_info: error_details_pb2.ErrorInfo | None = None


def status_details(err: grpc.aio.AioRpcError) -> StatusDetails:
    """What a failed call's trailing `google.rpc.Status` carries (empty when it has none)."""
    status: status_pb2.Status | None = rpc_status.from_call(err)
    info: error_details_pb2.ErrorInfo | None = None
    violations: list[tuple[str, str]] = []
    retry_delay: float | None = None
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations += [(v.field, v.description) for v in bad.field_violations]
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            retry_delay = retry.retry_delay.ToTimedelta().total_seconds()
    return StatusDetails(
        reason=info.reason if info else None,
        domain=info.domain if info else None,
        metadata=dict(info.metadata) if info else {},
        field_violations=violations,
        retry_delay=retry_delay,
        error_info=info,
    )


class FteRpcError(grpc.aio.AioRpcError):
    """A call the service refused or could not serve."""

    def __init__(self, err: grpc.aio.AioRpcError, details: StatusDetails) -> None:
        super().__init__(
            err.code(), err.initial_metadata(), err.trailing_metadata(), err.details(), err.debug_error_string()
        )
        self.status = details
        # The ErrorInfo reason (UPPER_SNAKE), e.g. ARTICLE_NOT_FOUND; the code's name when the
        # failure did not come from a service (e.g. a deadline that ran out in the client).
        self.reason: str = details.reason or err.code().name
        self.domain = details.domain
        self.metadata = details.metadata
        self.field_violations = details.field_violations

    def __str__(self) -> str:
        return f"{self.code().name} {self.reason}: {self.details()}"


class InvalidArgumentError(FteRpcError):
    pass


class NotFoundError(FteRpcError):
    pass


class AlreadyExistsError(FteRpcError):
    pass


class FailedPreconditionError(FteRpcError):
    pass


class AbortedError(FteRpcError):
    """A concurrency conflict (e.g. a stale etag): read again, then retry."""


class UnauthenticatedError(FteRpcError):
    pass


class PermissionDeniedError(FteRpcError):
    pass


class ResourceExhaustedError(FteRpcError):
    """Over a rate limit or quota; `retry_delay` says how long to wait, when the service said."""

    def __init__(self, err: grpc.aio.AioRpcError, details: StatusDetails) -> None:
        super().__init__(err, details)
        self.retry_delay = details.retry_delay


class RateLimitedError(ResourceExhaustedError):
    """Over the principal's rate limit (reason RATE_LIMITED): the next call is served after
    `retry_delay` seconds, usually well under a second."""


class QuotaExceededError(ResourceExhaustedError):
    """The principal's daily or monthly quota is used up (reason QUOTA_EXCEEDED): no call is served
    before `resets_at` (the next UTC midnight, or the 1st of next month), `retry_delay` seconds away."""

    def __init__(self, err: grpc.aio.AioRpcError, details: StatusDetails) -> None:
        super().__init__(err, details)
        # "day" or "month", and its limit in calls.
        self.window: str | None = details.metadata.get("window")
        limit = details.metadata.get("limit", "")
        self.limit: int | None = int(limit) if limit.isdigit() else None
        resets_at = details.metadata.get("resets_at")
        self.resets_at: datetime | None = datetime.fromisoformat(resets_at) if resets_at else None


class DeadlineExceededError(FteRpcError):
    pass


class UnavailableError(FteRpcError):
    pass


class InternalError(FteRpcError):
    pass


_BY_CODE: dict[grpc.StatusCode, type[FteRpcError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExistsError,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPreconditionError,
    grpc.StatusCode.ABORTED: AbortedError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.INTERNAL: InternalError,
}


# RESOURCE_EXHAUSTED by what ran out (the ErrorInfo reason); another reason stays ResourceExhaustedError.
_BY_REASON: dict[str, type[ResourceExhaustedError]] = {
    "RATE_LIMITED": RateLimitedError,
    "QUOTA_EXCEEDED": QuotaExceededError,
}


def from_rpc_error(err: grpc.aio.AioRpcError) -> FteRpcError:
    """The typed exception for a failed call."""
    if isinstance(err, FteRpcError):
        return err
    details = status_details(err)
    kind = _BY_CODE.get(err.code(), FteRpcError)
    if kind is ResourceExhaustedError and details.reason in _BY_REASON:
        kind = _BY_REASON[details.reason]
    return kind(err, details)
