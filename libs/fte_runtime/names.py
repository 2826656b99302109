"""Resource names ("articles/{id}", "customers/{id}/...") parsed in one place."""

from __future__ import annotations

from fte_runtime.errors import FieldViolation, InvalidArgument


def parse_name(name: str, collection: str, field: str = "name") -> str:
    """The id in "collection/{id}"; INVALID_ARGUMENT for anything else."""
    prefix = f"{collection}/"
    resource_id = name[len(prefix) :] if name.startswith(prefix) else ""
    if not resource_id or "/" in resource_id or len(name) > 300:
        raise InvalidArgument(
            f"{field} must look like '{collection}/{{id}}'",
            violations=[FieldViolation(field, f"must look like '{collection}/{{id}}'")],
            reason="INVALID_NAME",
        )
    return resource_id


def make_name(collection: str, resource_id: object) -> str:
    return f"{collection}/{resource_id}"
