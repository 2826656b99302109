"""Identity's identifier normalization: the mesh's one canonical form per kind, kept in the
runtime (fte_runtime.identifiers) so that every service keys an identifier the way identity
stores it."""

from __future__ import annotations

from fte_runtime.identifiers import (
    MAX_VALUE_LENGTH,
    InvalidIdentifier,
    Kind,
    Normalized,
    normalize,
    normalize_bsuid,
    normalize_email,
    normalize_phone,
)

__all__ = [
    "MAX_VALUE_LENGTH",
    "InvalidIdentifier",
    "Kind",
    "Normalized",
    "normalize",
    "normalize_bsuid",
    "normalize_email",
    "normalize_phone",
]
