"""`billingdb events list | show | retry | replay` and `billingdb serve` options, against a real database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from events.event_helpers import event_row, setup_plans, world_state
from typer.testing import CliRunner

from billingdb.cli import app
from billingdb.cli.events import parse_since, read_event_files
from billingdb.testing.stripe import StripeWorld

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]


def _run(database_url: str, *args: str):  # type: ignore[no-untyped-def]
    return runner.invoke(app, [*args, "--database-url", database_url])


def _write(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data))
    return path


def test_replay_files_then_list_show(conn, database_url: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    setup_plans(conn)
    w = StripeWorld()
    events = w.new_subscription()
    single = _write(tmp_path / "one.json", events[0])
    array = _write(tmp_path / "many.json", events[1:3])
    lines = tmp_path / "rest.jsonl"
    lines.write_text("\n".join(json.dumps(e) for e in events[3:]) + "\n")
    result = _run(database_url, "events", "replay", str(single), str(array), str(lines))
    assert result.exit_code == 0, result.output
    assert "5 events: 5 processed (4 of them pending on delivery, applied when their customer was linked)" in result.output
    state = world_state(conn, w.user_id, w.customer_id)
    assert state["balance"] == 30 and state["events_not_done"] == 0

    # Replaying again: all duplicates, nothing changes.
    again = _run(database_url, "events", "replay", str(single), str(array), str(lines))
    assert again.exit_code == 0 and "5 duplicate" in again.output

    listed = _run(database_url, "events", "list", "--json")
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.output)
    assert {r["stripe_event_id"] for r in rows} == {e["id"] for e in events}
    assert {r["status"] for r in rows} == {"processed"}
    table = _run(database_url, "events", "list", "--since", "1h")
    assert table.exit_code == 0 and events[0]["id"] in table.output
    assert "no events" in _run(database_url, "events", "list", "--failed").output
    assert "no events" in _run(database_url, "events", "list", "--since", "2999-01-01").output

    shown = _run(database_url, "events", "show", events[1]["id"], "--json")
    assert shown.exit_code == 0
    detail = json.loads(shown.output)
    assert detail["payload"] == events[1] and detail["status"] == "processed"
    text = _run(database_url, "events", "show", events[1]["id"])
    assert "invoice.paid" in text.output and '"object": "invoice"' in text.output
    missing = _run(database_url, "events", "show", "evt_nope")
    assert missing.exit_code == 1


def test_retry_failed_one_and_all(conn, database_url: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    setup_plans(conn)
    w = StripeWorld(price_id="price_later_test")
    conn.execute("SELECT public.link_stripe_customer(%s, %s)", (w.user_id, w.customer_id))
    events = w.new_subscription() + w.renewal()
    result = _run(database_url, "events", "replay", str(_write(tmp_path / "e.json", events)))
    assert result.exit_code == 1  # unknown price: invoice events failed
    assert "failed" in result.output
    failed = json.loads(_run(database_url, "events", "list", "--failed", "--json").output)
    assert len(failed) == 4 and {r["retry_count"] for r in failed} == {1}
    assert all(r["error"].startswith("[BD003]") for r in failed)
    assert _run(database_url, "events", "list", "--failed", "--pending").exit_code != 0

    # Still unknown: a retry fails again (exit 1) and counts.
    one = _run(database_url, "events", "retry", failed[0]["stripe_event_id"])
    assert one.exit_code == 1 and "failed" in one.output

    conn.execute("SELECT public.set_plan('price_later_test', 'Later', 30)")
    one = _run(database_url, "events", "retry", failed[0]["stripe_event_id"])
    assert one.exit_code == 0 and "processed" in one.output
    everything = _run(database_url, "events", "retry", "--all-failed")
    assert everything.exit_code == 0, everything.output
    assert "3 events: 3 processed" in everything.output
    assert world_state(conn, w.user_id, w.customer_id)["balance"] == 60
    assert "no events" in _run(database_url, "events", "list", "--failed").output
    # Nothing left to retry; a done event retried is a duplicate.
    assert "0 events: nothing to do" in _run(database_url, "events", "retry", "--all-failed").output
    dup = _run(database_url, "events", "retry", failed[0]["stripe_event_id"])
    assert dup.exit_code == 0 and "duplicate" in dup.output
    assert _run(database_url, "events", "retry").exit_code != 0


def test_replay_reports_invalid_events(conn, database_url: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bad = _write(tmp_path / "bad.json", [{"id": "evt_x"}, "not an event"])
    result = _run(database_url, "events", "replay", str(bad))
    assert result.exit_code == 1
    assert "2 events: 2 invalid" in result.output
    assert conn.execute("SELECT count(*) AS n FROM public.stripe_events").fetchone()["n"] == 0


#: A database nothing listens on: a malformed file must not get as far as connecting.
NOWHERE = "postgresql://nobody@127.0.0.1:1/x"


def _replay_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    return subprocess.run([sys.executable, "-m", "billingdb", "events", "replay", *args, "--database-url", NOWHERE],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_a_malformed_json_line_replays_nothing_and_names_every_bad_line(
    conn, database_url: str, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    setup_plans(conn)
    w = StripeWorld()
    events = w.new_subscription()
    lines = tmp_path / "e.jsonl"
    lines.write_text(json.dumps(events[0]) + "\nnot json\n" + json.dumps(events[1]) + "\n{\"id\": \n")
    result = _run(database_url, "events", "replay", str(lines))
    assert result.exit_code == 2, result.output
    assert result.output.splitlines() == [f"error: {lines}:2:1: Expecting value",
                                          f"error: {lines}:4:8: Expecting value"]
    assert conn.execute("SELECT count(*) AS n FROM public.stripe_events").fetchone()["n"] == 0
    # Read before connecting: an unreachable database is not even tried.
    proc = _replay_cli(str(lines))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.splitlines()[0] == f"error: {lines}:2:1: Expecting value"


def test_a_pretty_printed_file_with_a_typo_is_one_error_at_its_line_and_column(tmp_path: Path) -> None:
    doc = tmp_path / "event.json"
    doc.write_text(json.dumps({"id": "evt_1", "type": "invoice.paid", "data": {"object": {"id": "in_1"}}},
                              indent=2).replace('"type"', '"type" "x"'))
    proc = _replay_cli(str(doc))
    assert proc.returncode == 2
    assert proc.stderr == f"error: {doc}:3:10: Expecting ':' delimiter\n"


def test_a_file_that_is_not_utf8_is_one_line_and_a_bom_is_accepted(
    conn, database_url: str, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    utf16 = tmp_path / "utf16.json"
    utf16.write_bytes('{"id": "evt_1"}'.encode("utf-16"))  # \xff\xfe...
    proc = _replay_cli(str(utf16))
    assert proc.returncode == 2
    assert proc.stderr == f"error: {utf16}: not UTF-8 text (byte 0xff at offset 0)\n"

    e = StripeWorld().event("plan.created", {"id": "price_bom", "object": "plan"})
    bom = tmp_path / "bom.json"
    bom.write_bytes(b"\xef\xbb\xbf" + json.dumps(e).encode())
    result = _run(database_url, "events", "replay", str(bom))
    assert result.exit_code == 0, result.output
    assert event_row(conn, e["id"])["status"] == "ignored"


def test_retry_unknown_event_exits_1_with_its_sqlstate(database_url: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    proc = subprocess.run(
        [sys.executable, "-m", "billingdb", "events", "retry", "evt_never", "--database-url", database_url],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 1
    assert "[BD030]" in proc.stderr and proc.stderr.count("\n") == 1


def test_serve_needs_a_secret(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "STRIPE_WEBHOOK_SECRET"}}
    proc = subprocess.run(
        [sys.executable, "-m", "billingdb", "serve", "--database-url", "postgresql://nobody@127.0.0.1:1/x"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert "STRIPE_WEBHOOK_SECRET" in proc.stderr


def test_parse_since() -> None:
    now = datetime(2026, 1, 2, 12, 0, tzinfo=UTC)
    assert parse_since("30m", now) == now - timedelta(minutes=30)
    assert parse_since("2h", now) == now - timedelta(hours=2)
    assert parse_since("7d", now) == now - timedelta(days=7)
    assert parse_since("2026-01-01", now) == datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_since(None) is None
    with pytest.raises(Exception):
        parse_since("last tuesday")


def test_read_event_files(tmp_path: Path) -> None:
    one = _write(tmp_path / "a.json", {"id": "evt_a"})
    many = _write(tmp_path / "b.json", [{"id": "evt_b"}, {"id": "evt_c"}])
    got = [(where.split("/")[-1], e["id"]) for where, e in read_event_files([one, many])]
    assert got == [("a.json", "evt_a"), ("b.json[0]", "evt_b"), ("b.json[1]", "evt_c")]


def test_event_rows_after_cli_match_sql(conn, database_url: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    w = StripeWorld()
    e = w.event("plan.created", {"id": "price_q", "object": "plan"})
    assert _run(database_url, "events", "replay", str(_write(tmp_path / "p.json", e))).exit_code == 0
    assert event_row(conn, e["id"])["status"] == "ignored"


def test_customers_list_unlinked_then_link_and_show(conn, database_url: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    setup_plans(conn)
    w = StripeWorld()  # no user in the metadata: the events wait for a link
    events = [e for e in w.new_subscription() if e["type"] != "checkout.session.completed"]
    assert _run(database_url, "events", "replay", str(_write(tmp_path / "e.json", events))).exit_code == 0
    waiting = _run(database_url, "customers", "list", "--unlinked")
    assert waiting.exit_code == 1 and w.customer_id in waiting.output, waiting.output
    linked = _run(database_url, "customers", "link", w.user_id, w.customer_id)
    assert linked.exit_code == 0 and f"linked {w.user_id} to {w.customer_id}" in linked.output
    assert "no customer is waiting" in _run(database_url, "customers", "list", "--unlinked").output
    shown = _run(database_url, "customers", "show", w.customer_id)
    assert shown.exit_code == 0 and w.user_id in shown.output and "events not done   0" in shown.output
    assert world_state(conn, w.user_id, w.customer_id)["balance"] == 30
    assert _run(database_url, "customers", "show", "cus_nobody").exit_code == 1
