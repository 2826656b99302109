"""Version 1 of the client, for the `fte.*.v1` contracts.

from fte_client import v1

async with v1.connect("127.0.0.1:9000", token=TOKEN) as client:
    reply = await client.knowledge.SearchKnowledge(SearchKnowledgeRequest(query="reset password"))
"""

from fte_client.v1 import errors
from fte_client.v1.client import DEFAULT_TARGET, DEFAULT_TIMEOUT_SECONDS, Client, connect
from fte_client.v1.errors import (
    AbortedError,
    AlreadyExistsError,
    DeadlineExceededError,
    FailedPreconditionError,
    FteRpcError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    QuotaExceededError,
    RateLimitedError,
    ResourceExhaustedError,
    UnauthenticatedError,
    UnavailableError,
)
from fte_client.v1.pagination import pages, paginate

__all__ = [
    "DEFAULT_TARGET",
    "DEFAULT_TIMEOUT_SECONDS",
    "AbortedError",
    "AlreadyExistsError",
    "Client",
    "DeadlineExceededError",
    "FailedPreconditionError",
    "FteRpcError",
    "InternalError",
    "InvalidArgumentError",
    "NotFoundError",
    "PermissionDeniedError",
    "QuotaExceededError",
    "RateLimitedError",
    "ResourceExhaustedError",
    "UnauthenticatedError",
    "UnavailableError",
    "connect",
    "errors",
    "pages",
    "paginate",
]
