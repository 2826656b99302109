"""python -m fte_console serve | migrate | users add USERNAME [--role agent|admin] [--email ADDRESS] | users first-admin

`users add` reads the password from standard input (one line); with --generate it makes one and
prints it once.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
from datetime import timedelta
from pathlib import Path

from fte_runtime.db import create_pool, migrate, print_applied

from fte_console.accounts import SCHEMA, AccountError, Accounts, Role
from fte_console.settings import ConsoleSettings


async def _add_user(
    settings: ConsoleSettings, username: str, role: Role, password: str, email: str | None = None
) -> None:
    await migrate(settings, SCHEMA, "fte_console")
    pool = await create_pool(settings, SCHEMA, application_name="fte-console-cli")
    try:
        accounts = Accounts(pool, max_failures=1, lockout=timedelta(0), session_ttl=timedelta(0))
        user = await accounts.add_user(username, password, role, email)
        await accounts.audit("cli", "user_added", f"users/{user.username}", role=role.value)
    finally:
        await pool.close()


def _write_secret(path: Path, secret: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(secret + "\n")


async def _first_admin(settings: ConsoleSettings, password_file: Path) -> int:
    await migrate(settings, SCHEMA, "fte_console")
    pool = await create_pool(settings, SCHEMA, application_name="fte-console-cli")
    try:
        if await pool.fetchval("SELECT EXISTS (SELECT 1 FROM staff_users WHERE role = 'admin')"):
            return 0
    finally:
        await pool.close()
    password = secrets.token_urlsafe(18)
    await _add_user(settings, "admin", Role.ADMIN, password)
    await asyncio.to_thread(_write_secret, password_file, password)
    print(f"console admin created: username admin, password in {password_file}: {password}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fte_console", description="The staff console.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="serve HTTP (uvicorn)")
    sub.add_parser("migrate", help="apply the console schema's migrations")
    users = sub.add_parser("users", help="staff accounts").add_subparsers(dest="users_command", required=True)
    add = users.add_parser("add", help="create a staff account")
    add.add_argument("username")
    add.add_argument("--role", choices=[r.value for r in Role], default=Role.AGENT.value)
    add.add_argument("--generate", action="store_true", help="generate the password and print it once")
    add.add_argument("--email", help="the address OIDC sign-in matches this account by")
    first = users.add_parser("first-admin", help="create the admin account 'admin' unless an admin exists")
    first.add_argument("--password-file", type=Path, required=True, help="where its password is written, once")
    args = parser.parse_args(argv)
    settings = ConsoleSettings()
    if args.command == "serve":
        from fte_console.server import serve

        serve(settings)
        return 0
    if args.command == "migrate":
        print_applied(asyncio.run(migrate(settings, SCHEMA, "fte_console")))
        return 0
    if args.users_command == "first-admin":
        return asyncio.run(_first_admin(settings, args.password_file))
    password = secrets.token_urlsafe(18) if args.generate else sys.stdin.readline().rstrip("\n")
    try:
        asyncio.run(_add_user(settings, args.username, Role(args.role), password, args.email))
    except AccountError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"created {args.username.strip().lower()} ({args.role})" + (f"; password: {password}" if args.generate else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
