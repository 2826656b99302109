"""Staff accounts, sessions and the audit trail, in the console's own schema.

Passwords are hashed with Argon2id (argon2-cffi's defaults). An account is locked for a while
after `max_failures` wrong passwords in a row; a locked account is refused before its password is
checked. Session tokens are random; only their SHA-256 digest is stored, with the session's CSRF
token.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import asyncpg
from argon2 import PasswordHasher
from argon2.exceptions import VerificationError

SCHEMA = "console"
_hasher = PasswordHasher()
# Checked when the username is unknown, so an unknown name costs as long as a wrong password.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))
MIN_PASSWORD = 12
USERNAME = re.compile(r"^[a-z0-9._@-]{1,100}$")
EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}$")


class Role(StrEnum):
    AGENT = "agent"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class User:
    id: uuid.UUID
    username: str
    role: Role

    @classmethod
    def from_record(cls, row: asyncpg.Record) -> User:
        return cls(row["id"], row["username"], Role(row["role"]))


@dataclass(frozen=True, slots=True)
class Session:
    user: User
    csrf_token: str
    expire_time: datetime


class AccountError(ValueError):
    """A user that cannot be created as asked (the message says why)."""


class SignIn(StrEnum):
    OK = "ok"
    WRONG = "wrong"
    LOCKED = "locked"


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class Accounts:
    def __init__(self, pool: asyncpg.Pool, *, max_failures: int, lockout: timedelta, session_ttl: timedelta) -> None:
        self.pool = pool
        self.max_failures = max_failures
        self.lockout = lockout
        self.session_ttl = session_ttl

    async def add_user(self, username: str, password: str, role: Role, email: str | None = None) -> User:
        if len(password) < MIN_PASSWORD:
            raise AccountError(f"a password has at least {MIN_PASSWORD} characters")
        return await self._insert(username, await asyncio.to_thread(_hasher.hash, password), role, email)

    async def provision(self, email: str) -> User:
        """An `agent` account for an OIDC sign-in, named by its email. Its password is random and
        never shown: the account signs in through the provider only."""
        hashed = await asyncio.to_thread(_hasher.hash, secrets.token_urlsafe(32))
        return await self._insert(email, hashed, Role.AGENT, email)

    async def user_by_email(self, email: str) -> User | None:
        row = await self.pool.fetchrow(
            "SELECT id, username, role FROM staff_users WHERE email = $1", email.strip().lower()
        )
        return None if row is None else User.from_record(row)

    async def _insert(self, username: str, hashed: str, role: Role, email: str | None) -> User:
        name = username.strip().lower()
        if not USERNAME.match(name):
            raise AccountError("a username is 1 to 100 letters, digits and . - _ @")
        address = email.strip().lower() if email else None
        if address is not None and not EMAIL.match(address):
            raise AccountError(f"{address!r} is not an email address")
        try:
            row = await self.pool.fetchrow(
                """INSERT INTO staff_users (id, username, password_hash, role, email) VALUES ($1, $2, $3, $4, $5)
                   RETURNING id, username, role""",
                uuid.uuid4(),
                name,
                hashed,
                role.value,
                address,
            )
        except asyncpg.UniqueViolationError as exc:
            raise AccountError(f"the username {name!r} or the email {address!r} is taken") from exc
        assert row is not None
        return User.from_record(row)

    async def sign_in(self, username: str, password: str) -> tuple[SignIn, User | None]:
        row = await self.pool.fetchrow(
            """SELECT id, username, role, password_hash, locked_until > now() AS locked
               FROM staff_users WHERE username = $1""",
            username.strip().lower(),
        )
        if row is None:
            await asyncio.to_thread(_verify, _DUMMY_HASH, password)
            return SignIn.WRONG, None
        if row["locked"]:
            return SignIn.LOCKED, None
        if not await asyncio.to_thread(_verify, row["password_hash"], password):
            locked = await self.pool.fetchval(
                """UPDATE staff_users SET failed_logins = failed_logins + 1,
                          locked_until = CASE WHEN failed_logins + 1 >= $2 THEN now() + $3 END
                   WHERE id = $1 RETURNING locked_until IS NOT NULL""",
                row["id"],
                self.max_failures,
                self.lockout,
            )
            return (SignIn.LOCKED if locked else SignIn.WRONG), None
        await self.pool.execute(
            "UPDATE staff_users SET failed_logins = 0, locked_until = NULL WHERE id = $1", row["id"]
        )
        return SignIn.OK, User.from_record(row)

    async def open_session(self, user: User) -> tuple[str, Session]:
        token = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        async with self.pool.acquire() as conn, conn.transaction():
            # Expired sessions go when a new one opens: the table holds only live ones.
            await conn.execute("DELETE FROM staff_sessions WHERE expire_time <= now()")
            expire = await conn.fetchval(
                """INSERT INTO staff_sessions (token_digest, user_id, csrf_token, expire_time)
                   VALUES ($1, $2, $3, now() + $4) RETURNING expire_time""",
                _digest(token),
                user.id,
                csrf,
                self.session_ttl,
            )
        return token, Session(user, csrf, expire)

    async def session(self, token: str) -> Session | None:
        if not token or len(token) > 200:
            return None
        row = await self.pool.fetchrow(
            """SELECT u.id, u.username, u.role, s.csrf_token, s.expire_time
               FROM staff_sessions s JOIN staff_users u ON u.id = s.user_id
               WHERE s.token_digest = $1 AND s.expire_time > now()""",
            _digest(token),
        )
        return None if row is None else Session(User.from_record(row), row["csrf_token"], row["expire_time"])

    async def close_session(self, token: str) -> None:
        await self.pool.execute("DELETE FROM staff_sessions WHERE token_digest = $1", _digest(token))

    async def audit(self, actor: str, action: str, target: str = "", **detail: Any) -> None:
        await self.pool.execute(
            "INSERT INTO audit_log (actor, action, target, detail) VALUES ($1, $2, $3, $4::jsonb)",
            actor,
            action,
            target,
            json.dumps(detail),
        )

    async def usernames(self) -> list[str]:
        """Every staff member a ticket can be assigned to, by name."""
        rows = await self.pool.fetch("SELECT username FROM staff_users ORDER BY username")
        return [r["username"] for r in rows]

    async def audit_trail(self, target: str, limit: int = 50) -> list[tuple[str, str, datetime]]:
        rows = await self.pool.fetch(
            "SELECT actor, action, create_time FROM audit_log WHERE target = $1 ORDER BY id DESC LIMIT $2",
            target,
            limit,
        )
        return [(r["actor"], r["action"], r["create_time"]) for r in rows]


def _verify(hashed: str, password: str) -> bool:
    try:
        return _hasher.verify(hashed, password)
    except VerificationError:
        return False
