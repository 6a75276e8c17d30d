"""Missed Stripe events recovered from Stripe's Events API, and events fed in batches.

``billingdb stripe sync-events`` pages ``GET /v1/events`` (``created >= since``, the
types billingdb handles), then feeds the events oldest first through
``process_stripe_events``: the same path as a webhook, many events per
transaction. An event already received is a ``duplicate`` and changes nothing,
so a second run changes nothing. Each batch moves the cursor (the newest event
synced) in the transaction that applied it: a run that dies half-way continues
from the cursor. ``billingdb events replay`` uses the same batches.

Stripe lists events newest first and keeps them 30 days; all the events of the
window are fetched before the first is applied (about 3-10 kB each).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import stripe

from billingdb import db
from billingdb.errors import BillingError
from billingdb.stripe_api import HANDLED_EVENT_TYPES

__all__ = [
    "BATCH_SIZE",
    "DEFAULT_WINDOW",
    "RETENTION",
    "SyncBusy",
    "SyncReport",
    "batches",
    "check_since",
    "fetch_events",
    "process_batches",
    "sync_events",
]

#: Events per transaction (process_stripe_events takes at most 1000).
BATCH_SIZE = 200
#: How far back Stripe's Events API goes.
RETENTION = timedelta(days=30)
#: Where a first sync starts when no --since is given.
DEFAULT_WINDOW = timedelta(days=3)


class SyncBusy(BillingError):
    """Another session is syncing (the sync's advisory lock is held)."""


@dataclass
class SyncReport:
    """What a sync found and did."""

    since: datetime
    fetched: int = 0
    skipped_types: Counter[str] = field(default_factory=Counter)
    by_type: Counter[str] = field(default_factory=Counter)
    new_by_type: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    results: list[dict[str, Any]] = field(default_factory=list)
    remaining: int = 0
    cursor_too_old: bool = False
    cursor: dict[str, Any] = field(default_factory=dict)

    def counts(self) -> dict[str, Any]:
        return {"fetched": self.fetched, "outcomes": dict(self.outcomes), "by_type": dict(self.by_type),
                "remaining": self.remaining}


def batches(items: Iterable[Any], size: int = BATCH_SIZE) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def process_batches(
    conn: psycopg.Connection[Any],
    events: Sequence[Any],
    *,
    batch_size: int = BATCH_SIZE,
    advance_cursor: bool = False,
    on_batch: Callable[[int], None] | None = None,
) -> list[dict[str, Any]]:
    """Feed events through process_stripe_events, ``batch_size`` per transaction; their results, in order.

    ``conn`` must be in autocommit mode: each batch is one transaction. An element the database
    refuses as malformed comes back with status ``invalid``.
    """
    results: list[dict[str, Any]] = []
    for chunk in batches(events, batch_size):
        answer = db.query(conn, "process_stripe_events",
                          {"events": json.dumps(chunk), "advance_cursor": advance_cursor})
        if not isinstance(answer, list) or len(answer) != len(chunk):
            raise BillingError(f"process_stripe_events returned {str(answer)[:200]}")
        results.extend(answer)
        if on_batch is not None:
            on_batch(len(chunk))
    return results


def fetch_events(
    client: stripe.StripeClient,
    since: datetime,
    *,
    types: Sequence[str] = HANDLED_EVENT_TYPES,
    on_event: Callable[[int], None] | None = None,
) -> tuple[list[dict[str, Any]], Counter[str]]:
    """The handled events created at or after ``since``, oldest first, and a count of the other types skipped.

    Stripe lists newest first; the list is reversed once complete. Raises ``stripe.StripeError``.
    """
    wanted = frozenset(types)
    events: list[dict[str, Any]] = []
    skipped: Counter[str] = Counter()
    listing = client.v1.events.list(params={"created": {"gte": int(since.timestamp())}, "limit": 100})
    for n, event in enumerate(listing.auto_paging_iter(), 1):
        data = event.to_dict()
        kind = data.get("type")
        if kind in wanted:
            events.append(data)
        else:
            skipped[str(kind)] += 1
        if on_event is not None:
            on_event(n)
    events.reverse()
    return events, skipped


def sync_events(
    conn: psycopg.Connection[Any],
    client: stripe.StripeClient,
    *,
    since: datetime | None = None,
    limit: int | None = None,
    dry_run: bool = False,
    batch_size: int = BATCH_SIZE,
    now: datetime | None = None,
    on_fetch: Callable[[int], None] | None = None,
    on_start: Callable[[int], None] | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> SyncReport:
    """One sync: from ``since`` (else the cursor, else 3 days ago), at most ``limit`` events, oldest first.

    Holds the sync's lock for the whole run (:class:`SyncBusy` when another runs). A dry run applies
    nothing and records nothing; it counts what is new. A Stripe failure is recorded as the run's
    error and raised.
    """
    started = datetime.now(UTC)
    now = now or started
    if since is not None:
        check_since(since, now)
    begun = db.query(conn, "begin_stripe_event_sync")
    if not begun.get("started"):
        raise SyncBusy(f"another Events API sync is running ({begun.get('reason')}); nothing was done")
    report = SyncReport(since=since or now - DEFAULT_WINDOW)
    if since is None and begun.get("cursor_created"):
        report.since = datetime.fromisoformat(str(begun["cursor_created"]))
        if report.since < now - RETENTION:
            report.since, report.cursor_too_old = now - RETENTION, True
    error: str | None = None
    try:
        try:
            events, report.skipped_types = fetch_events(client, report.since, on_event=on_fetch)
        except stripe.StripeError as exc:
            error = f"Stripe {type(exc).__name__}: {str(exc.user_message or exc)[:200]}"
            raise
        report.fetched = len(events)
        report.by_type = Counter(str(e.get("type")) for e in events)
        if limit is not None and len(events) > limit:
            report.remaining = len(events) - limit
            events = events[:limit]
        known = {r["stripe_event_id"] for r in db.run(conn, "stripe_event_statuses",
                                                        {"event_ids": [e.get("id") for e in events]})}
        report.new_by_type = Counter(str(e.get("type")) for e in events if e.get("id") not in known)
        if not dry_run:
            if on_start is not None:
                on_start(len(events))
            report.results = process_batches(conn, events, batch_size=batch_size, advance_cursor=True,
                                             on_batch=on_batch)
            report.outcomes = _final_outcomes(conn, report.results)
    except BaseException as exc:
        error = error or f"stopped: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
        try:
            _finish(conn, started, report, dry_run, error)
        except psycopg.Error:
            pass  # the connection is gone: its session lock went with it
        raise
    _finish(conn, started, report, dry_run, None)
    return report


def check_since(since: datetime, now: datetime) -> None:
    """ValueError when ``since`` is older than Stripe's 30 days of events."""
    oldest = now - RETENTION
    if since < oldest:
        raise ValueError(
            f"Stripe keeps events for 30 days: {since:%Y-%m-%d %H:%M} UTC is older (the oldest available are from "
            f"{oldest:%Y-%m-%d %H:%M} UTC); replay older events from files with billingdb events replay"
        )


def _finish(conn: psycopg.Connection[Any], started: datetime, report: SyncReport, dry_run: bool,
            error: str | None) -> None:
    counts = None if dry_run else json.dumps(report.counts())
    report.cursor = db.query(conn, "finish_stripe_event_sync",
                             {"started_at": started, "counts": counts, "error": error})


def _final_outcomes(conn: psycopg.Connection[Any], results: list[dict[str, Any]]) -> Counter[str]:
    """Where each event ended: a pending one may have been applied by a later event of the run."""
    waiting = [r["event_id"] for r in results if r.get("status") in ("pending", "failed") and r.get("event_id")]
    final = {r["stripe_event_id"]: r["status"]
             for r in db.run(conn, "stripe_event_statuses", {"event_ids": waiting})} if waiting else {}
    return Counter(final.get(r.get("event_id"), r.get("status")) for r in results)
