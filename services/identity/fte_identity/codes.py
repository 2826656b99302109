"""One-time verification codes: generated here, stored only as a keyed, salted hash."""

from __future__ import annotations

import hashlib
import hmac
import secrets

CODE_DIGITS = 6


def new_code() -> str:
    return f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"


def new_salt() -> bytes:
    return secrets.token_bytes(16)


def code_hash(code: str, salt: bytes, key: bytes) -> bytes:
    # The identifier row is bound by the code's own row; the salt keeps equal codes apart.
    return hmac.new(key + salt, code.strip().encode(), hashlib.sha256).digest()


def matches(code: str, salt: bytes, key: bytes, stored: bytes) -> bool:
    return hmac.compare_digest(code_hash(code, salt, key), stored)
