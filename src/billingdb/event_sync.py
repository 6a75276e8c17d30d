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
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import stripe

from billingdb import db, stripe_api
from billingdb.errors import BillingError, InvalidArgument
from billingdb.stripe_api import HANDLED_EVENT_TYPES, describe_error

__all__ = [
    "BATCH_SIZE",
    "DEFAULT_WINDOW",
    "RETENTION",
    "SyncBusy",
    "SyncNotDue",
    "SyncReport",
    "batches",
    "check_since",
    "fetch_events",
    "final_statuses",
    "process_batches",
    "sync_events",
]

#: Events per transaction (process_stripe_events takes at most 1000). Each event opens two
#: subtransactions (the batch's and its own apply block): 30 events stay under PostgreSQL's cache of 64
#: subtransactions per backend, past which every other session's snapshots slow down while the batch
#: runs. A commit per 30 events already takes the per-commit cost out of the way.
BATCH_SIZE = 30
#: How far back Stripe's Events API goes.
RETENTION = timedelta(days=30)
#: Events per page of Stripe's list (its maximum).
PAGE_SIZE = 100
#: Where a first sync starts when no --since is given.
DEFAULT_WINDOW = timedelta(days=3)
#: A 429 (Stripe's rate limit) waits 0.5 s, 1 s, 2 s ... before resuming, this many times.
RATE_LIMIT_RETRIES = 5
RATE_LIMIT_BACKOFF = 0.5


class SyncNotDue(BillingError):
    """The last sync (of any process) started less than the period ago: this turn is skipped."""


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
    refuses as malformed comes back with status ``invalid`` and detail {sqlstate, error}; so does one
    that PostgreSQL cannot even store as JSON (a NUL character), its batch being fed again one by one.
    """
    results: list[dict[str, Any]] = []
    for chunk in batches(events, batch_size):
        try:
            answer = db.query(conn, "process_stripe_events",
                              {"events": json.dumps(chunk), "advance_cursor": advance_cursor})
        except (psycopg.DataError, InvalidArgument) as exc:
            if len(chunk) > 1:
                answer = process_batches(conn, chunk, batch_size=1, advance_cursor=advance_cursor)
            else:
                event_id = chunk[0].get("id") if isinstance(chunk[0], dict) else None
                answer = [{"event_id": event_id if isinstance(event_id, str) else None, "status": "invalid",
                           "detail": {"sqlstate": getattr(exc, "sqlstate", None),
                                      "error": str(exc).splitlines()[0] if str(exc) else type(exc).__name__}}]
        if not isinstance(answer, list) or len(answer) != len(chunk):
            raise BillingError(f"process_stripe_events returned {str(answer)[:200]}")
        results.extend(answer)
        if on_batch is not None:
            on_batch(len(chunk))
    return results


def final_statuses(conn: psycopg.Connection[Any], results: list[dict[str, Any]]) -> list[str]:
    """Where each event ended, in order: a pending or failed one may since have been applied by a later
    event of the same run (its customer linked)."""
    waiting = [r["event_id"] for r in results if r.get("status") in ("pending", "failed") and r.get("event_id")]
    final = {r["stripe_event_id"]: r["status"]
             for r in db.run(conn, "stripe_event_statuses", {"event_ids": waiting})} if waiting else {}
    return [final.get(r.get("event_id"), r.get("status")) for r in results]


def fetch_events(
    client: stripe.StripeClient,
    since: datetime,
    *,
    types: Sequence[str] = HANDLED_EVENT_TYPES,
    on_event: Callable[[int], None] | None = None,
) -> tuple[list[dict[str, Any]], Counter[str]]:
    """The handled events created at or after ``since``, oldest first, and a count of the other types skipped.

    Pages with ``starting_after``, checking each page's shape. Stripe lists newest first: the events are put
    oldest first once all are fetched (by ``created``; within one second in Stripe's order, which billingdb's
    ordering rules do not need). A 429 backs off and asks again for the page after the last event received
    (the library retries network errors and 5xx itself). Raises ``stripe.StripeError``, or
    :class:`stripe_api.MalformedAnswer` when an answer is not a list page (``data`` missing or not an array, a body that
    is not an object) or an element of a page is not an event.
    """
    wanted = frozenset(types)
    events: list[dict[str, Any]] = []
    skipped: Counter[str] = Counter()
    params: dict[str, Any] = {"created": {"gte": int(since.timestamp())}, "limit": PAGE_SIZE}
    last_id: str | None = None
    ids: set[str] = set()
    seen = 0
    rate_limited = 0
    while True:
        page_params = {**params, "starting_after": last_id} if last_id else params
        try:
            answer = client.v1.events.list(params=page_params)
        except stripe.RateLimitError:
            rate_limited += 1
            if rate_limited > RATE_LIMIT_RETRIES:
                raise
            time.sleep(RATE_LIMIT_BACKOFF * 2 ** (rate_limited - 1))
            continue
        rate_limited = 0
        page = answer.to_dict(for_json=True) if isinstance(answer, stripe.StripeObject) else answer
        data, has_more = stripe_api.list_page(page, "/v1/events", "event list")
        for item in data:
            event = _event_dict(item)
            if event["id"] in ids:  # a page served again: stop rather than page forever
                raise stripe_api.MalformedAnswer(f"Stripe's event list repeats {event['id'][:80]}")
            ids.add(event["id"])
            last_id = event["id"]
            seen += 1
            if event["type"] in wanted:
                events.append(event)
            else:
                skipped[event["type"]] += 1
            if on_event is not None:
                on_event(seen)
        if not has_more:
            break
    events.reverse()
    events.sort(key=lambda e: e["created"])
    return events, skipped


def _event_dict(event: Any) -> dict[str, Any]:
    """A listed event as a dict as Stripe sent it (the library makes Decimals of decimal strings: back to
    strings); stripe_api.MalformedAnswer when it is not an event (no id, type or integer created)."""
    data = event.to_dict(for_json=True) if isinstance(event, stripe.StripeObject) else event
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("id"), str)
        or not isinstance(data.get("type"), str)
        or not isinstance(data.get("created"), int)
        or isinstance(data.get("created"), bool)
    ):
        raise stripe_api.MalformedAnswer(f"Stripe's event list holds something that is not an event: {str(data)[:120]}")
    return data


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
    not_within: timedelta | None = None,
) -> SyncReport:
    """One sync: from ``since`` (else the cursor, else 3 days ago), applying at most ``limit`` events, oldest first.

    ``fetched``, ``by_type`` and ``new_by_type`` count every event fetched (the limit does not cut them);
    ``outcomes`` counts the events applied and ``remaining`` those the limit left for the next run.
    Holds the sync's lock for the whole run (:class:`SyncBusy` when another runs). A dry run applies
    nothing and records nothing; it counts what is new. A Stripe failure is recorded as the run's
    error and raised. With ``not_within``: :class:`SyncNotDue` (nothing done or recorded) when the last
    recorded run, by any process, started less than that long ago (one schedule for many workers).
    """
    started = datetime.now(UTC)
    now = now or started
    if since is not None:
        check_since(since, now)
    begun = db.query(conn, "begin_stripe_event_sync")
    if not begun.get("started"):
        raise SyncBusy(f"another Events API sync is running ({begun.get('reason')}); nothing was done")
    if not_within is not None and begun.get("last_started_at"):
        last = datetime.fromisoformat(str(begun["last_started_at"])).astimezone(UTC)
        if started - last < not_within:
            db.query(conn, "finish_stripe_event_sync", {"started_at": started, "counts": None, "error": None})
            raise SyncNotDue(f"the last Events API sync started {(started - last).total_seconds():.0f} s ago")
    report = SyncReport(since=since or now - DEFAULT_WINDOW)
    if since is None and begun.get("cursor_created"):
        report.since = datetime.fromisoformat(str(begun["cursor_created"])).astimezone(UTC)
        if report.since < now - RETENTION:
            report.since, report.cursor_too_old = now - RETENTION, True
    error: str | None = None
    try:
        try:
            events, report.skipped_types = fetch_events(client, report.since, on_event=on_fetch)
        except stripe.StripeError as exc:
            error = describe_error(exc)[:500]
            raise
        except stripe_api.MalformedAnswer as exc:
            error = str(exc)
            raise
        report.fetched = len(events)
        report.by_type = Counter(str(e.get("type")) for e in events)
        # What was found is counted over every event fetched, whatever the limit: by_type and new_by_type
        # describe the same events; the limit only cuts what is applied (outcomes, remaining).
        known = {r["stripe_event_id"] for r in db.run(conn, "stripe_event_statuses",
                                                        {"event_ids": [e.get("id") for e in events]})}
        report.new_by_type = Counter(str(e.get("type")) for e in events if e.get("id") not in known)
        if limit is not None and len(events) > limit:
            report.remaining = len(events) - limit
            events = events[:limit]
        if not dry_run:
            if on_start is not None:
                on_start(len(events))
            report.results = process_batches(conn, events, batch_size=batch_size, advance_cursor=True,
                                             on_batch=on_batch)
            report.outcomes = Counter(final_statuses(conn, report.results))
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
    """ValueError when ``since`` is in the future or older than Stripe's 30 days of events (``now`` minus
    exactly 30 days is accepted); the times in the message are shown in UTC whatever offset they came with."""
    shown = since.astimezone(UTC)
    if since > now:
        raise ValueError(f"{shown:%Y-%m-%d %H:%M} UTC is in the future: there are no events to sync yet")
    oldest = now - RETENTION
    if since < oldest:
        raise ValueError(
            f"Stripe keeps events for 30 days: {shown:%Y-%m-%d %H:%M} UTC is older (the oldest available are from "
            f"{oldest.astimezone(UTC):%Y-%m-%d %H:%M} UTC); replay older events from files with billingdb events replay"
        )


def _finish(conn: psycopg.Connection[Any], started: datetime, report: SyncReport, dry_run: bool,
            error: str | None) -> None:
    counts = None if dry_run else json.dumps(report.counts())
    report.cursor = db.query(conn, "finish_stripe_event_sync",
                             {"started_at": started, "counts": counts, "error": error})
