"""One way to build a service: what it opens, what it serves, what runs in the background.

A service subclasses `Service` and declares, in `open()`, the resources it opens (each closed,
in reverse order, by `close()`), the gRPC servicers it registers, and its background jobs. The
runtime does the rest the same way for every service:

- `start()` opens everything, serves gRPC and starts the jobs; when any step fails, whatever was
  already opened is closed again, so a failed start leaks nothing.
- each job is supervised: one that fails is logged and restarted with back-off, never left dead
  and never taking the server down with it.
- `stop()` turns health NOT_SERVING, drains in-flight calls, lets graceful jobs finish what they
  started, cancels the rest, then closes the resources in reverse order.
- `serve()` does all of it for the process, until SIGTERM or SIGINT, with logging, metrics and
  traces (exported over OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set) set up first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

import asyncpg
import grpc

from fte_runtime.backoff import Backoff
from fte_runtime.grpc_server import GrpcServer, ServiceRegistration
from fte_runtime.logs import configure_logging
from fte_runtime.metrics import serve_metrics
from fte_runtime.quota import QuotaStore
from fte_runtime.settings import GrpcServerSettings
from fte_runtime.tasks import cancel_all
from fte_runtime.tracing import configure_tracing, shutdown_tracing

log = logging.getLogger("fte.service")

T = TypeVar("T")
S = TypeVar("S", bound=GrpcServerSettings)
JobFactory = Callable[[], Coroutine[Any, Any, None]]


@dataclass(frozen=True)
class Job:
    """A background job. A `graceful` one watches the service's `stopping` event and finishes
    what it started by itself; `stop()` waits for it (up to `Service.stop_wait_seconds`) before
    cancelling it."""

    name: str
    run: JobFactory
    graceful: bool = False


async def supervise(job: Job, stopping: asyncio.Event, backoff: Backoff | None = None) -> None:
    """Run `job` until it returns or `stopping` is set; a failure is logged and the job restarted
    after a back-off (reset once a run got going again)."""
    delays = backoff or Backoff(1.0, 30.0)
    while not stopping.is_set():
        try:
            await job.run()
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("background job failed; restarting it", extra={"job": job.name})
            if not await delays.wait(stopping):
                return


class Service(Generic[S]):
    """Base of every gRPC service. Subclasses set `name` (logs, the process) and `domain` (error
    domain) and implement `open()` with `resource()`, `on_close()`, `register()` and `background()`."""

    name: ClassVar[str]
    domain: ClassVar[str]
    # How long `stop()` waits for graceful jobs to finish before cancelling them.
    stop_wait_seconds: ClassVar[float] = 10.0

    def __init__(self, settings: S) -> None:
        self.settings = settings
        self.stopping = asyncio.Event()
        self._resources = contextlib.AsyncExitStack()
        self._registrations: list[ServiceRegistration] = []
        self._jobs: list[Job] = []
        self._tasks: list[tuple[Job, asyncio.Task[None]]] = []
        self._grpc: GrpcServer | None = None
        self._quota_store: QuotaStore | None = None
        self._opened = False

    # -- what each service declares -------------------------------------------------------------
    async def open(self) -> None:
        raise NotImplementedError

    async def resource(self, opening: Awaitable[T], close: Callable[[T], Awaitable[object]]) -> T:
        """Await `opening` and have `close(value)` called when the service closes."""
        return self.closing(await opening, close)

    def closing(self, value: T, close: Callable[[T], Awaitable[object]]) -> T:
        """Have `close(value)` called when the service closes; `value`."""
        self.on_close(lambda: close(value))
        return value

    def on_close(self, close: Callable[[], Awaitable[object]]) -> None:
        """Call `close` when the service closes (in reverse order of declaration); a failure is
        logged and the rest still run."""

        async def run() -> None:
            try:
                await close()
            except Exception:
                log.exception("closing a resource failed", extra={"service": self.name})

        self._resources.push_async_callback(run)

    def register(
        self,
        full_name: str,
        servicer: object,
        add_to_server: Callable[[Any, grpc.aio.Server], None],
        method_scopes: Mapping[str, str],
    ) -> None:
        self._registrations.append(ServiceRegistration(full_name, servicer, add_to_server, method_scopes))

    def keep_quotas(self, pool: asyncpg.Pool) -> None:
        """Count the principals' quotas (fte_runtime.quota) in `pool`'s schema: the service's
        migrations create its `quota_usage` table."""
        self._quota_store = QuotaStore(pool)

    def background(self, name: str, run: JobFactory, *, graceful: bool = False) -> None:
        self._jobs.append(Job(name, run, graceful))

    # -- the one lifecycle -----------------------------------------------------------------------
    @property
    def grpc(self) -> GrpcServer:
        if self._grpc is None:
            raise RuntimeError(f"{self.name} is not set up")
        return self._grpc

    @property
    def jobs(self) -> list[Job]:
        return list(self._jobs)

    async def setup(self) -> None:
        """Open every resource and build the gRPC server (nothing served or started yet). A
        failure closes what was opened and re-raises."""
        if self._opened:
            return
        self._opened = True
        try:
            await self.open()
            self._grpc = GrpcServer(self.settings, self.domain, self._registrations, quota_store=self._quota_store)
        except BaseException:
            await self.close()
            raise

    async def start(self) -> int:
        """Set up, serve gRPC and start the background jobs; the bound port."""
        await self.setup()
        try:
            port = await self.grpc.start()
        except BaseException:
            await self.close()
            raise
        self._tasks = [
            (job, asyncio.create_task(supervise(job, self.stopping), name=f"{self.name}:{job.name}"))
            for job in self._jobs
        ]
        return port

    async def stop(self) -> None:
        """Health NOT_SERVING and drain, graceful jobs finish, the rest are cancelled, resources close."""
        self.stopping.set()
        if self._grpc is not None:
            await self._grpc.stop()
        graceful = [task for job, task in self._tasks if job.graceful]
        if graceful:
            await asyncio.wait(graceful, timeout=self.stop_wait_seconds)
        await cancel_all(task for _, task in self._tasks)
        self._tasks = []
        await self.close()

    async def close(self) -> None:
        """Close every opened resource, last opened first."""
        self.stopping.set()
        await self._resources.aclose()

    async def serve(self) -> None:
        """The process: start, run until SIGTERM or SIGINT, stop."""
        configure_logging(self.name, self.settings.log_level, self.settings.log_json)
        # Before anything opens: channels and the server take their tracing interceptors at creation.
        configure_tracing(self.name)
        serve_metrics(self.settings.metrics_port, self.settings.grpc_host)
        signalled = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, signalled.set)
        await self.start()
        try:
            await signalled.wait()
        finally:
            await self.stop()
            shutdown_tracing()
