"""The HTTP service: ``POST /stripe/webhook`` and ``GET /healthz``.

Why Starlette: the service is a thin shell around SQL functions, so the
framework should be small and stay out of the way. Starlette is ASGI (served by
uvicorn, many concurrent slow clients cost little), gives raw request bytes
(needed: the Stripe signature covers the exact body), has no ORM or validation
layer to bypass, and ships a test client, so tests drive the real app in
process. FastAPI would add pydantic and OpenAPI generation that the webhook does
not need (it is built on Starlette, so routes can move there later if the
application API wants it); Flask/Django are WSGI and bring more than we use.

Database access is blocking psycopg through a small connection pool
(``psycopg_pool``), run in Starlette's thread pool: every request is one call
of a SQL function in autocommit mode, so there is nothing to gain from an async
driver. :func:`create_app` takes extra ``routes`` so that other endpoints can
share the same process, pool and settings.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from billingdb import db, webhooks
from billingdb.errors import DatabaseUnavailable, first_line
from billingdb.service.background import EventSyncJob, EventSyncSettings

__all__ = ["ServiceSettings", "create_app", "serve", "WEBHOOK_PATH"]

log = logging.getLogger("billingdb.service")

WEBHOOK_PATH = "/stripe/webhook"


@dataclass(frozen=True)
class ServiceSettings:
    """Everything the service needs: the database, the webhook checks, the pool size."""

    database_url: str
    webhook: webhooks.WebhookConfig
    pool_min: int = 1
    pool_max: int = 10
    pool_timeout: float = 10.0
    health_timeout: float = 2.0
    #: Webhook deliveries being handled at once (waiting for a connection included); past it a
    #: delivery is answered 503 with Retry-After at once, and Stripe delivers it again later.
    #: None: twice pool_max.
    max_in_flight: int | None = None
    #: Seconds a webhook body may take to arrive: a slower sender is answered 408 (Stripe sends at once).
    body_timeout: float = 10.0
    #: Sync Stripe's Events API in the background (off when None): see billingdb.service.background.
    event_sync: EventSyncSettings | None = None


async def _read_body(request: Request, limit: int) -> bytes:
    """The raw body, refused with 413 as soon as it is known to exceed ``limit`` bytes."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise webhooks.EventRejected(413, "payload_too_large", f"the body exceeds {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise webhooks.EventRejected(413, "payload_too_large", f"the body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _json(outcome: webhooks.Outcome) -> JSONResponse:
    return JSONResponse(outcome.body, status_code=outcome.status_code)


#: Seconds a delivery refused for overload is told to wait (Stripe keeps its own retry schedule).
RETRY_AFTER_SECONDS = 5


async def stripe_webhook(request: Request) -> JSONResponse:
    """Verify, validate and process one Stripe event (see billingdb.webhooks); 503 at once when
    ``max_in_flight`` deliveries are being handled already (a bounded queue, not a growing one).

    The body is read first, within ``body_timeout`` (408 after it), and only a delivery whose body has
    arrived counts against ``max_in_flight``: slow or stalled senders, signed or not, cannot take the
    slots of Stripe's deliveries."""
    settings: ServiceSettings = request.app.state.settings
    pool: ConnectionPool = request.app.state.pool
    try:
        body = await asyncio.wait_for(_read_body(request, settings.webhook.max_body), settings.body_timeout)
    except webhooks.EventRejected as exc:
        return _json(exc.outcome())
    except TimeoutError:
        return JSONResponse({"error": "body_timeout",
                             "message": f"the body did not arrive within {settings.body_timeout:g} s"},
                            status_code=408)
    limit = settings.max_in_flight or 2 * settings.pool_max
    if request.app.state.in_flight >= limit:
        return JSONResponse(
            {"error": "overloaded", "message": f"{limit} deliveries are being processed; deliver again later"},
            status_code=503, headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
    # The handler runs on the event loop: the counter needs no lock.
    request.app.state.in_flight += 1
    try:
        outcome = await run_in_threadpool(
            webhooks.handle, pool.connection, body, request.headers.get("stripe-signature"), settings.webhook
        )
        return _json(outcome)
    finally:
        request.app.state.in_flight -= 1


class SchemaMissing(Exception):
    """The database answers, but billingdb's schema is not there (every webhook would fail)."""


def _check_database(pool: ConnectionPool, database_url: str, timeout: float) -> str:
    """The server's version; SchemaMissing without billingdb's schema. When the pool has no connection
    within ``timeout``, one direct connection attempt says why (refused, no such database, bad password)
    instead of the pool's "couldn't get a connection"."""
    try:
        with pool.connection(timeout=timeout) as conn:
            found = db.run(conn, "service_health")[0]
    except PoolTimeout:
        with db.connect(database_url, connect_timeout=max(1, round(timeout))):  # DatabaseUnavailable: the cause
            pass
        raise DatabaseUnavailable(f"no pooled connection was free within {timeout:g} s (the pool is busy)") from None
    if not found["schema"]:
        raise SchemaMissing("billingdb's schema is not installed in this database: run `billingdb db upgrade`")
    return str(found["version"])


async def healthz(request: Request) -> JSONResponse:
    """200 when the database answers and holds billingdb's schema, 503 otherwise (with the reason)."""
    settings: ServiceSettings = request.app.state.settings
    try:
        version = await run_in_threadpool(
            _check_database, request.app.state.pool, settings.database_url, settings.health_timeout
        )
    except Exception as exc:  # any failure means unhealthy; say which
        return JSONResponse({"status": "unavailable", "database": first_line(exc)}, status_code=503)
    return JSONResponse({"status": "ok", "database": version.split(" on ")[0]})


#: A pooled connection idle for longer than this is checked (one round trip) before it is handed out;
#: one returned more recently is not: under load that check was one extra round trip per request. A
#: connection that broke meanwhile (the server restarted) fails its one request (503, Stripe retries)
#: and the pool discards it.
CHECK_IDLE_SECONDS = 5.0


class _RecentUse:
    """When each pooled connection was last returned (the pool's reset callback), for the check."""

    def __init__(self) -> None:
        self.returned: dict[int, float] = {}

    def reset(self, conn: Any) -> None:
        self.returned[id(conn)] = time.monotonic()

    def check(self, conn: Any) -> None:
        if time.monotonic() - self.returned.pop(id(conn), float("-inf")) > CHECK_IDLE_SECONDS:
            ConnectionPool.check_connection(conn)


def create_app(settings: ServiceSettings, routes: Sequence[BaseRoute] = ()) -> Starlette:
    """The ASGI app; the connection pool opens at startup and closes at shutdown."""
    recent = _RecentUse()
    pool = ConnectionPool(
        settings.database_url,
        min_size=settings.pool_min,
        max_size=settings.pool_max,
        kwargs={"autocommit": True, "row_factory": dict_row},
        check=recent.check,
        reset=recent.reset,
        timeout=settings.pool_timeout,
        open=False,
        name="billingdb",
    )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # Open without waiting: the service starts (and /healthz says 503) while the database is down.
        pool.open(wait=False)
        job = EventSyncJob(settings.database_url, settings.event_sync) if settings.event_sync else None
        app.state.event_sync = job
        if job is not None:
            job.start()
        try:
            yield
        finally:
            if job is not None:
                job.stop()
            pool.close()

    app = Starlette(
        routes=[
            Route(WEBHOOK_PATH, stripe_webhook, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            *routes,
        ],
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.pool = pool
    app.state.in_flight = 0
    return app


def serve(
    settings: ServiceSettings,
    host: str = "127.0.0.1",
    port: int = 8000,
    routes: Sequence[BaseRoute] = (),
    **uvicorn_options: Any,
) -> None:
    """Run the service (and any extra ``routes``, e.g. billingdb.api's) with uvicorn until interrupted.

    A graceful stop (SIGTERM, SIGINT) returns, so the command exits 0 as ``--workers N``'s supervisor
    does; ``uvicorn.run`` would raise the signal again once stopped (SIGTERM: killed, exit 143).
    Otherwise as ``uvicorn.run`` with one process: exit 3 when the server never started.
    """
    import sys
    from collections.abc import Iterator
    from contextlib import contextmanager

    import uvicorn
    from uvicorn.config import STARTUP_FAILURE

    class Server(uvicorn.Server):
        @contextmanager
        def capture_signals(self) -> Iterator[None]:
            with super().capture_signals():
                try:
                    yield
                finally:
                    getattr(self, "_captured_signals", []).clear()  # handled: a graceful stop, not raised again

    server = Server(uvicorn.Config(create_app(settings, routes), host=host, port=port, **uvicorn_options))
    try:
        server.run()
    except KeyboardInterrupt:  # as uvicorn.run
        pass
    if not server.started:
        sys.exit(STARTUP_FAILURE)
