"""``billingdb events ...`` and ``billingdb serve``: the webhook side of the command line.

- ``events list [--failed | --pending] [--since 2h|2026-01-01]``: the log of
  received events (the seed's runbook query), newest first;
- ``events show ID``: one event with its payload and processing record;
- ``events retry ID | --all-failed``: ``retry_stripe_event`` from the stored
  payload;
- ``events replay FILE...``: JSON event files (an event, an array of events, or
  JSON lines) through ``process_stripe_event``, as a webhook would, for
  backfills; every file is read first, and a file that is not UTF-8 JSON
  replays nothing;
- ``serve``: the HTTP service (webhook intake and health check) under uvicorn.

Exit codes: 0 when everything ended processed (or duplicate, ignored, stale,
pending), 1 when an event failed or was refused, 2 when an event file is not
UTF-8 JSON (each malformed line named, nothing replayed) or the database cannot
be chosen or reached (as every billingdb command).
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer

from billingdb import db, event_sync
from billingdb.cli.options import AsJson, DatabaseUrl, EnvName, choose, print_json

__all__ = ["events_app", "MalformedEventFiles", "read_event_files", "parse_since", "parse_duration"]

events_app = typer.Typer(rich_markup_mode=None, 
    help="Stripe webhook events: list, show, retry, replay (process_stripe_event).", no_args_is_help=True
)

_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
#: Statuses that mean the event needs no more work.
OK_STATUSES = frozenset({"processed", "duplicate", "ignored", "stale", "pending"})


def parse_duration(value: str) -> timedelta | None:
    """``30s``, ``15m``, ``2h``, ``7d``, ``1w`` as a timedelta; None when it is not a duration."""
    match = _DURATION.match(value)
    if not match:
        return None
    try:
        return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    except OverflowError:
        raise typer.BadParameter(f"{value!r} is too long a duration") from None


def parse_since(value: str | None, now: datetime | None = None) -> datetime | None:
    """``30m``, ``2h``, ``7d``, ``1w`` (ago) or an ISO date/time (UTC when no offset), in UTC."""
    if value is None:
        return None
    delta = parse_duration(value)
    if delta is not None:
        try:
            return (now or datetime.now(UTC)) - delta
        except OverflowError:
            raise typer.BadParameter(f"{value!r} reaches before year 1") from None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise typer.BadParameter(f"{value!r} is neither a duration (30m, 2h, 7d) nor an ISO date") from None
    return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _short(text: Any, width: int) -> str:
    s = "" if text is None else str(text).replace("\n", " ")
    return s if len(s) <= width else s[: width - 1] + "…"


@events_app.command("list")
def list_events(
    failed: Annotated[bool, typer.Option("--failed", help="Only events whose processing failed.")] = False,
    pending: Annotated[bool, typer.Option("--pending", help="Only events waiting for their customer's link.")] = False,
    since: Annotated[str | None, typer.Option(help="Received since: 30m, 2h, 7d or an ISO date.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many rows.")] = 50,
    as_json: AsJson = False,
    database_url: DatabaseUrl = None,
    env: EnvName = None,
) -> None:
    """List received events, newest first (the runbook's `SELECT ... FROM stripe_events`)."""
    if failed and pending:
        raise typer.BadParameter("--failed and --pending exclude each other")
    status = "failed" if failed else "pending" if pending else None
    with db.connect(choose(database_url, env).url) as conn:
        rows = db.run(conn, "list_stripe_events",
                      {"status": status, "since": parse_since(since), "max_rows": limit})
    if as_json:
        print_json(rows)
        return
    if not rows:
        typer.echo("no events")
        return
    typer.echo(f"{'received':<19}  {'event':<30}  {'type':<32}  {'status':<9}  {'tries':>5}  error")
    for r in rows:
        typer.echo(
            f"{r['created_at']:%Y-%m-%d %H:%M:%S}  {_short(r['stripe_event_id'], 30):<30}  "
            f"{_short(r['event_type'], 32):<32}  {r['status']:<9}  {r['retry_count']:>5}  {_short(r['error'], 60)}"
        )


@events_app.command("show")
def show_event(
    event_id: Annotated[str, typer.Argument(metavar="ID", help="The Stripe event id (evt_...).")],
    as_json: AsJson = False,
    database_url: DatabaseUrl = None,
    env: EnvName = None,
) -> None:
    """Show one event: its processing record and payload."""
    with db.connect(choose(database_url, env).url) as conn:
        rows = db.run(conn, "get_stripe_event", {"event_id": event_id})
    if not rows:
        typer.echo(f"error: no event {event_id}", err=True)
        raise typer.Exit(1)
    row = rows[0]
    if as_json:
        print_json(row)
        return
    for key, value in row.items():
        if key != "payload":
            typer.echo(f"{key:<16} {'' if value is None else value}")
    typer.echo("payload:")
    typer.echo(json.dumps(row["payload"], indent=2))


def _report(result: dict[str, Any]) -> str:
    detail = result.get("detail") or {}
    extra = f": {detail.get('error')}" if isinstance(detail, dict) and detail.get("error") else ""
    return f"{result.get('event_id')}  {result.get('status')}{extra}"


@events_app.command("retry")
def retry_events(
    event_id: Annotated[str | None, typer.Argument(metavar="[ID]", help="The event to retry.")] = None,
    all_failed: Annotated[bool, typer.Option("--all-failed", help="Retry every failed event, oldest first.")] = False,
    database_url: DatabaseUrl = None,
    env: EnvName = None,
) -> None:
    """Re-process a failed or pending event from its stored payload (retry_stripe_event)."""
    if (event_id is None) == (not all_failed):
        raise typer.BadParameter("give an event ID or --all-failed (not both)")
    with db.connect(choose(database_url, env).url) as conn:
        if event_id is not None:
            result = db.query(conn, "retry_stripe_event", {"event_id": event_id})
            typer.echo(_report(result))
            raise typer.Exit(0 if result["status"] in OK_STATUSES else 1)
        ids = [r["stripe_event_id"] for r in db.run(conn, "failed_stripe_event_ids")]
        counts: Counter[str] = Counter()
        with typer.progressbar(ids, label=f"retrying {len(ids)} failed events", file=sys.stderr) as bar:
            for eid in bar:
                result = db.query(conn, "retry_stripe_event", {"event_id": eid})
                counts[result["status"]] += 1
                if result["status"] not in OK_STATUSES:
                    typer.echo("\n" + _report(result), err=True)
    typer.echo(_summary(counts, len(ids)))
    raise typer.Exit(0 if counts["failed"] == 0 else 1)


_ORDER = ("processed", "duplicate", "ignored", "stale", "pending", "failed", "invalid")


def _summary(counts: Counter[str], total: int) -> str:
    keys = sorted(counts, key=lambda k: (_ORDER.index(k) if k in _ORDER else len(_ORDER), k))
    parts = ", ".join(f"{counts[k]} {k}" for k in keys)
    return f"{total} events: {parts or 'nothing to do'}"


class MalformedEventFiles(Exception):
    """Event files that are not UTF-8 JSON: ``problems`` names each (file:line:column: the error)."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def read_event_files(paths: list[Path]) -> list[tuple[str, Any]]:
    """(where, event) for each event in the files: an object, an array of objects, or JSON lines.

    Every file is read before anything is returned: :class:`MalformedEventFiles` names every problem
    found (a file that is not UTF-8 text, a JSON line that does not parse, or a document that is neither
    JSON nor JSON lines, reported once at its first error). A UTF-8 byte order mark is accepted.
    """
    found: list[tuple[str, Any]] = []
    problems: list[str] = []
    for path in paths:
        try:
            text = path.read_bytes().decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            problems.append(f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})")
            continue
        except OSError as exc:
            problems.append(f"{path}: {exc.strerror or exc}")
            continue
        try:
            data = json.loads(text)
        except json.JSONDecodeError as whole:
            lines = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
            first_ok = False
            if lines:
                try:
                    json.loads(lines[0][1])
                    first_ok = True
                except json.JSONDecodeError:
                    pass
            if not first_ok:
                # Not JSON lines either (a pretty-printed document with a typo): its own error, once.
                problems.append(f"{path}:{whole.lineno}:{whole.colno}: {whole.msg}")
                continue
            for n, line in lines:  # JSON lines: one event per non-blank line
                try:
                    found.append((f"{path}:{n}", json.loads(line)))
                except json.JSONDecodeError as exc:
                    problems.append(f"{path}:{n}:{exc.colno}: {exc.msg}")
            continue
        if isinstance(data, list):
            found.extend((f"{path}[{n}]", event) for n, event in enumerate(data))
        else:
            found.append((str(path), data))
    if problems:
        raise MalformedEventFiles(problems)
    return found


@events_app.command("replay")
def replay_events(
    files: Annotated[list[Path], typer.Argument(exists=True, dir_okay=False, readable=True, metavar="FILE...",
                                                help="UTF-8 JSON files: an event, an array of events, or JSON lines. "
                                                     "A malformed file replays nothing.")],
    database_url: DatabaseUrl = None,
    env: EnvName = None,
) -> None:
    """Feed event files through process_stripe_event, in file order, 30 events per transaction (no
    signature check: trusted input). An event already received is a duplicate: replaying twice is safe.

    Every file is read first: when one is not UTF-8 JSON (an object, an array, or JSON lines), each
    problem is one line (file:line:column and the JSON error), nothing is replayed and the exit code is 2.
    """
    try:
        events = read_event_files(files)
    except MalformedEventFiles as exc:
        for problem in exc.problems:
            typer.echo(f"error: {problem}", err=True)
        raise typer.Exit(2) from None
    counts: Counter[str] = Counter()
    problems: list[str] = []
    with db.connect(choose(database_url, env).url) as conn:
        with typer.progressbar(length=len(events), label=f"replaying {len(events)} events", file=sys.stderr) as bar:
            results = event_sync.process_batches(conn, [e for _, e in events], on_batch=bar.update)
        final = event_sync.final_statuses(conn, results)
    resolved = 0
    for (where, _), result, status in zip(events, results, final, strict=True):
        resolved += status != result["status"]
        counts[status] += 1
        if status not in OK_STATUSES:
            problems.append(f"{where}: {_report({**result, 'status': status})}")
    for line in problems:
        typer.echo(line, err=True)
    note = f" ({resolved} of them pending on delivery, applied when their customer was linked)" if resolved else ""
    typer.echo(_summary(counts, len(events)) + note)
    raise typer.Exit(0 if not problems else 1)
