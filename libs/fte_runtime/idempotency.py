"""The one `request_id` rule of every mutation (README, "Contracts"): an idempotency key the
caller chooses, at most 200 characters (a UUID is a good choice), blank meaning none. A retry
with the same key has its effect once; what a retry returns is each method's, in its proto."""

from __future__ import annotations

import uuid

from fte_runtime.errors import FieldViolation, InvalidArgument

MAX_REQUEST_ID = 200
# Names the ids derived from request ids (events, deliveries), so a retry derives the same id.
_NAMESPACE = uuid.UUID("6f0c1e0a-5b8e-4d6e-9a53-3c1f0a7e2b41")


def _invalid(field: str, message: str, reason: str) -> InvalidArgument:
    return InvalidArgument(f"{field}: {message}", violations=[FieldViolation(field, message)], reason=reason)


def check_request_id(
    value: str, field: str = "request_id", *, required: bool = False, max_length: int = MAX_REQUEST_ID
) -> str:
    """`value` when it follows the rule, "" for none; INVALID_ARGUMENT (REQUEST_ID_REQUIRED,
    REQUEST_ID_TOO_LONG) otherwise. `max_length` is lower where a key is derived from it."""
    if not value.strip():
        if required:
            raise _invalid(field, "is required", "REQUEST_ID_REQUIRED")
        return ""
    if len(value) > max_length:
        raise _invalid(field, f"must be at most {max_length} characters", "REQUEST_ID_TOO_LONG")
    return value


def derived_id(*parts: str) -> str:
    """A stable UUID for what one request produced (e.g. the event a retried mutation publishes
    again), so the retry's copy carries the same id and consumers drop it."""
    return str(uuid.uuid5(_NAMESPACE, "\x1f".join(parts)))
