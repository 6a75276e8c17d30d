"""``billingdb serve``: the HTTP service (webhooks, and the application API when a JWT key is set)."""

from __future__ import annotations

import os
from datetime import timedelta
from enum import Enum
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperCommand

from billingdb import stripe_api, webhooks
from billingdb.cli.events import parse_duration
from billingdb.cli.options import DatabaseUrl, EnvName, choose
from billingdb.cli.stripe import MAX_NETWORK_RETRIES
from billingdb.errors import ConfigurationError

if TYPE_CHECKING:
    from billingdb.service.background import EventSyncSettings

#: The shortest background sync period: Stripe's rate limits are per account, shared with the app.
MIN_SYNC_PERIOD = timedelta(minutes=1)
#: Seconds a stop waits for requests in progress (uvicorn's timeout_graceful_shutdown): less than the
#: 30 s a container platform usually allows between SIGTERM and SIGKILL.
DEFAULT_GRACEFUL_TIMEOUT = 25

__all__ = ["serve_command", "ServeCommand"]


#: click's UsageError, from whichever click typer uses (newer typers carry their own copy).
UsageError: type[Exception] = typer.BadParameter.__base__  # type: ignore[assignment]


class OneLineUsageError(UsageError):  # type: ignore[misc,valid-type]
    """A bad option of ``billingdb serve`` as one line, ``error: ...`` (click's own is four)."""

    def show(self, file: Any = None) -> None:
        typer.echo(f"error: {self.format_message().rstrip('.')}; see billingdb serve --help", err=True)


class ServeCommand(TyperCommand):
    """``billingdb serve``, whose usage errors (an option's value out of range, an unknown log level,
    an unknown option) are one line and exit 2, as its other start-up errors are."""

    def make_context(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().make_context(*args, **kwargs)
        except UsageError as exc:
            raise OneLineUsageError(exc.format_message()) from None


class LogLevel(str, Enum):
    """uvicorn's log levels (its own names, lower case)."""

    critical = "critical"
    error = "error"
    warning = "warning"
    info = "info"
    debug = "debug"
    trace = "trace"


def serve_command(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    webhook_secret: Annotated[
        list[str] | None,
        typer.Option("--webhook-secret", help="Stripe endpoint secret (whsec_...); repeat during a rotation. "
                     "Default: $STRIPE_WEBHOOK_SECRET (comma-separated).", show_default=False),
    ] = None,
    max_body: Annotated[int, typer.Option(min=1, help="Largest accepted webhook body in bytes (413 above).")] =
        webhooks.DEFAULT_MAX_BODY,
    workers: Annotated[int | None, typer.Option(
        min=1, max=64, metavar="N", show_default=False,
        help="Worker processes sharing the port, each with its own pool. Default: $BILLINGDB_WORKERS, else "
             "the number of CPUs.")] = None,
    pool_size: Annotated[int, typer.Option(min=1, help="Most database connections (per worker).")] = 10,
    max_in_flight: Annotated[int | None, typer.Option(
        min=1, metavar="N", show_default=False,
        help="Webhook deliveries handled at once; past it a delivery is answered 503 with Retry-After at once "
             "(Stripe delivers it again later). Default: twice --pool-size.")] = None,
    graceful_timeout: Annotated[int | None, typer.Option(
        min=1, metavar="SECONDS", show_default=False,
        help="On SIGTERM or SIGINT, stop accepting connections and wait at most SECONDS for the requests in "
             "progress (a slow client's too), then cancel them and exit 0. Default: $BILLINGDB_GRACEFUL_TIMEOUT, "
             f"else {DEFAULT_GRACEFUL_TIMEOUT}.")] = None,
    log_level: Annotated[LogLevel, typer.Option(
        case_sensitive=False, help="uvicorn log level (any case).")] = LogLevel.info,
    jwt_jwks_url: Annotated[str | None, typer.Option(
        help="Application API: JWKS URL of the JWT issuer (Clerk: https://<frontend-api>/.well-known/jwks.json). "
             "Default: $BILLINGDB_JWT_JWKS_URL.", show_default=False)] = None,
    jwt_public_key: Annotated[str | None, typer.Option(
        help="Application API: the issuer's RSA public key, PEM text or a file. Default: $BILLINGDB_JWT_PUBLIC_KEY.",
        show_default=False)] = None,
    jwt_issuer: Annotated[str | None, typer.Option(
        help="Required iss of the JWTs. Default: $BILLINGDB_JWT_ISSUER.", show_default=False)] = None,
    jwt_audience: Annotated[str | None, typer.Option(
        help="Accepted aud of the JWTs, comma-separated. Default: $BILLINGDB_JWT_AUDIENCE.", show_default=False)] = None,
    generator: Annotated[str | None, typer.Option(
        help="The story generator, module:function. Default: $BILLINGDB_GENERATOR or billingdb.service.generation:echo.",
        show_default=False)] = None,
    sync_events_every: Annotated[str | None, typer.Option(
        "--sync-events-every", metavar="PERIOD", show_default=False,
        help="Also run `billingdb stripe sync-events` in the background every PERIOD (5m, 1h; at least 1m), "
             "one sync at a time across every process; needs STRIPE_SECRET_KEY. Default: "
             "$BILLINGDB_SYNC_EVENTS_EVERY, else off.")] = None,
    database_url: DatabaseUrl = None,
    env: EnvName = None,
) -> None:
    """Run the HTTP service: POST /stripe/webhook and GET /healthz; with a JWT key configured, also the
    application API (POST /stripe/checkout/session, GET /stripe/subscription/state,
    POST /stories/generate-with-credits, GET /openapi.json).

    Exits 0 after a graceful stop (SIGTERM or SIGINT; see --graceful-timeout); bad input is one line,
    exit 2."""
    from billingdb import service
    from billingdb.service import api, auth, generation

    secrets = tuple(webhook_secret or ()) or webhooks.secrets_from_env(os.environ.get("STRIPE_WEBHOOK_SECRET"))
    if not secrets:
        raise ConfigurationError("no webhook secret: set STRIPE_WEBHOOK_SECRET or pass --webhook-secret")
    choice = choose(database_url, env)
    if sync_events_every is not None:
        event_sync = _event_sync_settings(sync_events_every, "--sync-events-every")
    else:
        event_sync = _event_sync_settings(os.environ.get("BILLINGDB_SYNC_EVENTS_EVERY") or None,
                                          "BILLINGDB_SYNC_EVENTS_EVERY")
    settings = service.ServiceSettings(
        database_url=choice.url,
        webhook=webhooks.WebhookConfig(secrets=secrets, max_body=max_body),
        pool_max=pool_size,
        max_in_flight=max_in_flight,
        event_sync=event_sync,
    )
    auth_config = auth.AuthConfig.from_env(
        jwks_url=jwt_jwks_url, public_key=jwt_public_key, issuer=jwt_issuer, audience=jwt_audience
    )
    api_settings = None if auth_config is None else api.ApiSettings(
        auth=auth_config,
        stripe=stripe_api.StripeConfig.from_env(),
        generation=generation.GenerationConfig.from_env(generator=generator),
    )
    level = log_level.value
    workers = workers or _workers_from_env()
    graceful = graceful_timeout or _graceful_timeout_from_env()
    typer.echo(f"billingdb serve: http://{host}:{port}  database: {choice.source}  "
               f"webhook secrets: {len(secrets)}  workers: {workers}", err=True)
    if api_settings is None:
        typer.echo("application API: off (set BILLINGDB_JWT_JWKS_URL or BILLINGDB_JWT_PUBLIC_KEY)", err=True)
    else:
        typer.echo(f"application API: on (issuer {auth_config.issuer}, "  # type: ignore[union-attr]
                   f"stripe {'configured' if api_settings.stripe else 'not configured'}, "
                   f"generator {api_settings.generation.generator_name})", err=True)
    if event_sync is not None:
        typer.echo(f"stripe sync-events: every {sync_events_every or os.environ.get('BILLINGDB_SYNC_EVENTS_EVERY')}"
                   " in the background", err=True)
    if workers == 1:
        service.serve(settings, host=host, port=port, log_level=level, timeout_graceful_shutdown=graceful,
                      routes=api.routes(api_settings) if api_settings else ())
    else:
        from billingdb.service.workers import serve_workers

        serve_workers(settings, api_settings, workers=workers, host=host, port=port, log_level=level,
                      timeout_graceful_shutdown=graceful)


def _workers_from_env() -> int:
    """``BILLINGDB_WORKERS``, else the CPUs this process may use."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return _count_from_env("BILLINGDB_WORKERS", "a number of worker processes from 1 to 64", 64, max(1, cpus))


def _graceful_timeout_from_env() -> int:
    """``BILLINGDB_GRACEFUL_TIMEOUT``, else :data:`DEFAULT_GRACEFUL_TIMEOUT`."""
    return _count_from_env("BILLINGDB_GRACEFUL_TIMEOUT", "a number of seconds, at least 1", None,
                           DEFAULT_GRACEFUL_TIMEOUT)


def _count_from_env(name: str, expected: str, most: int | None, default: int) -> int:
    """A whole number from 1 (to ``most``) in environment variable ``name``, else ``default``; any other
    value is refused, saying what was ``expected``."""
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    if not value.isdigit() or int(value) < 1 or (most is not None and int(value) > most):
        raise ConfigurationError(f"{name}={value!r}: give {expected}")
    return int(value)


def _event_sync_settings(every: str | None, source: str = "--sync-events-every") -> EventSyncSettings | None:
    """The background sync's settings from ``--sync-events-every`` or the variable (None: off); bad values
    are refused naming ``source``, where the value came from. The service package (starlette) is imported
    only when serving."""
    from billingdb.service.background import EventSyncSettings

    if every is None or every.strip().lower() in ("", "off", "0"):
        return None
    given = f"{source}={every!r}" if not source.startswith("--") else f"{source} {every!r}"
    try:
        period = parse_duration(every)
    except typer.BadParameter:
        period = None
    if period is None or period < MIN_SYNC_PERIOD:
        raise ConfigurationError(f"{given}: give a period of at least 1m (5m, 1h, 1d)")
    config = stripe_api.StripeConfig.from_env(max_network_retries=MAX_NETWORK_RETRIES)
    if config is None:
        raise ConfigurationError(f"{source} needs a Stripe API key: set STRIPE_SECRET_KEY")
    return EventSyncSettings(stripe=config, every=period)
