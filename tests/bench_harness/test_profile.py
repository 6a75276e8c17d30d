"""``make profile`` (bench/profile.py): its readers of py-spy and plprofiler output, and its guards.

The profile itself needs root, Debian's PostgreSQL 15 with plprofiler and py-spy (``make profile``
installs them); these tests need none of that.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from billingdb.paths import ROOT

if str(ROOT) not in sys.path:  # bench/ is the repository's harness, not an installed package
    sys.path.insert(0, str(ROOT))

from bench import profile, sqlfiles  # noqa: E402
from bench.errors import BenchError  # noqa: E402

WORKER = ("thread (101): AnyIO worker thread;Thread._bootstrap (threading.py:1002);"
          "WorkerThread.run (anyio/_backends/_asyncio.py:1124)")
LOOP = ("thread (100): MainThread;_run_module_as_main (<frozen runpy>:198);"
        "BaseEventLoop._run_once (asyncio/base_events.py:1898)")


def _raw(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "raw.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_wall_states(tmp_path: Path) -> None:
    path = _raw(tmp_path, [
        f"{LOOP};EpollSelector.select (selectors.py:468) 10",
        f"{LOOP};Handle._run (asyncio/events.py:80) 5",
        f"{WORKER};handle (billingdb/webhooks.py:194);Connection.wait (psycopg/connection.py:495) 7",
        f"{WORKER};handle (billingdb/webhooks.py:192);ConnectionPool.getconn (psycopg_pool/pool.py:214);"
        "ConnectionPool.check_connection (psycopg_pool/pool.py:565);Connection.wait (psycopg/connection.py:495) 3",
        f"{WORKER};handle (billingdb/webhooks.py:192);ConnectionPool.getconn (psycopg_pool/pool.py:214);"
        "Condition.wait (threading.py:327) 2",
        f"{WORKER};Queue.get (queue.py:171);Condition.wait (threading.py:327) 20",
        f"{WORKER};handle (billingdb/webhooks.py:190);parse_json (billingdb/jsonbody.py:40) 4",
        "not a stack line",
    ])
    wall = profile.read_wall(path)
    assert wall.samples == 51
    assert wall.rounds == 15
    assert wall.states == {
        "event loop: idle, waiting in epoll": 10,
        "event loop: running Python": 5,
        "worker: waiting on PostgreSQL (the query)": 7,
        "worker: the pool's connection check (a round trip before the query)": 3,
        "worker: waiting for a pool connection": 2,
        "worker: idle, waiting for a request": 20,
        "worker: running Python (or waiting for the GIL)": 4,
    }


def test_gil_groups_and_totals(tmp_path: Path) -> None:
    path = _raw(tmp_path, [
        f"{WORKER};handle (billingdb/webhooks.py:190);parse_json (billingdb/jsonbody.py:40);"
        "JSONDecoder.raw_decode (json/decoder.py:353) 6",
        f"{WORKER};handle (billingdb/webhooks.py:188);verify_header (stripe/_webhook.py:60);"
        "HMAC._init_hmac (hmac.py:67) 2",
        f"{LOOP};RequestResponseCycle.run_asgi (uvicorn/protocols/http/h11_impl.py:403);"
        "Route.handle (starlette/routing.py:288) 2",
    ])
    gil = profile.read_gil(path)
    assert gil.samples == 10
    assert gil.groups["JSON (json, billingdb.jsonbody)"] == 6
    assert gil.groups["signature check (stripe library, hmac, hashlib)"] == 2
    assert gil.groups["starlette (routing, requests, responses)"] == 2
    assert gil.by_thread == {"worker threads": 8, "event loop thread": 2}
    assert gil.total_by["handle (billingdb/webhooks.py)"] == 8
    assert gil.total_by["parse_json (billingdb/jsonbody.py)"] == 6
    assert any(k.startswith("the ASGI app") for k in gil.total_by)
    # Only billingdb, the libraries it calls and the named layers: no thread bootstrap frames.
    assert not any("threading.py" in k for k in gil.total_by)
    report = profile._python_tables(profile.read_wall(path), gil, requests=10, seconds=1)
    assert "| JSON (json, billingdb.jsonbody) | 60.0 % |" in report


def _line(function: str, number: int, source: str, count: int = 0, us: int = 0) -> dict[str, object]:
    return {"function": function, "line_number": number, "exec_count": count, "us_total": us, "source": source}


def test_statements_text_callees_and_blocks() -> None:
    f = "billingdb._dispatch"
    lines = [
        _line(f, 0, "", 1, 100),
        _line(f, 1, "BEGIN", 1, 99),
        _line(f, 2, "    v_x := billingdb._apply(", 1, 60),
        _line(f, 3, "        v_event -- a comment; not the end"),
        _line(f, 4, "    );"),
        _line(f, 5, "    IF v_x IS NULL THEN", 1, 5),
        _line(f, 6, "        INSERT INTO t (a) VALUES (1);", 1, 30),
    ]
    found = {s.line: s for s in profile._statements(lines, {f, "billingdb._apply"})}
    assert sorted(found) == [1, 2, 5, 6]  # line 0 (the whole function) and unexecuted lines left out
    assert found[2].text == "v_x := billingdb._apply( v_event );"
    assert found[2].callees == ["billingdb._apply"]
    assert not found[2].block
    assert found[1].block and found[5].block
    assert found[6].callees == [] and not found[6].block


def test_foreign_clusters_are_refused_before_anything() -> None:
    for name in ("billingdb_ci", "main"):
        with pytest.raises(BenchError, match="not this tool's"):
            with profile.cluster(name, 55490):
                pass


def test_a_cluster_it_did_not_make_is_never_dropped(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    dropped: list[list[str]] = []
    monkeypatch.setattr(profile, "_check_tools", lambda: None)
    monkeypatch.setattr(profile, "_clusters", lambda: {"someone_elses": "/var/lib/postgresql/15/someone_elses"})
    monkeypatch.setattr(profile, "_conf_file", lambda name: tmp_path / "absent.conf")
    monkeypatch.setattr(profile, "_command", lambda args, *a, **k: dropped.append(args) or "")
    with pytest.raises(BenchError, match="not made by make profile"):
        with profile.cluster("someone_elses", 55490):
            pass
    assert dropped == []


def test_queries_exist() -> None:
    names = {"profile_create_pg_stat_statements", "profile_create_plprofiler", "profile_settings",
             "profile_reset_statements", "profile_top_statements", "profile_toplevel_total",
             "profile_function_stats", "profile_wal", "profile_plprofiler_on", "profile_plprofiler_off",
             "profile_plprofiler_callgraph", "profile_plprofiler_lines", "sample_event", "reserve_events"}
    assert names <= set(sqlfiles.queries())


def test_help_names_the_make_target() -> None:
    with pytest.raises(SystemExit) as done:
        profile.parse_args(["--help"])
    assert done.value.code == 0
