"""``make bench`` keeps working: a 1-second smoke run of every benchmark.

The harness runs as ``python -m bench`` against this session's server
(BILLINGDB_BENCH_DSN) with tiny settings; figures are not checked, only that
every benchmark was measured (none skipped, none failed its sanity checks:
each deduction, cache hit or miss and processed Stripe event counted once per
pgbench transaction or HTTP request) and that the JSON report is complete.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from billingdb.paths import ROOT


def test_make_bench_smoke(pg_server_url: str, tmp_path: Path) -> None:
    output = tmp_path / "bench.json"
    env = {**os.environ, "BILLINGDB_BENCH_DSN": pg_server_url}
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--duration", "1", "--warmup", "0", "--clients", "1,2",
         "--users", "20", "--scale", "2", "--repeat", "1", "--replay-events", "300",
         "--output", str(output)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(output.read_text())
    assert report["error"] is None
    rows = {(r["name"], r["clients"]): r for r in report["results"]}
    names = {"select_only", "tpcb_like", "deduct_distinct", "deduct_hot", "state_cache_hit", "state_cache_miss"}
    # issue 4: process_stripe_event (and its tpcb-like baseline) at 4 clients, the HTTP intake with 8 senders
    fixed = {("tpcb_like", 4), ("process_stripe_event", 4), ("process_stripe_event_duplicate", 4)}
    # issue 19: the HTTP intake offered 0.1x .. 1x tpcb-like (4 clients), from 64 sender threads
    fixed |= {(f"http_intake_x{f}", 64) for f in ("0.1", "0.25", "0.5", "1")}
    # issue 6: reserve+commit pairs and authenticated state reads at 4 clients (and their baselines)
    fixed |= {("hold_commit", 4), ("http_state", 4), ("select_only", 4)}
    # issue 17: the batch path, one connection
    fixed |= {("events_replay", 1)}
    assert set(rows) == {(n, c) for n in names for c in (1, 2)} | fixed
    for row in rows.values():
        assert row["skipped"] is None, row
        assert row["tps"] > 0 and row["transactions"] > 0
    compared = [r for r in rows.values() if r["baseline"] and not r["skipped"]]
    assert all(r["ratio"] is not None for r in compared)
    assert {(t["benchmark"], t["clients"]) for t in report["targets"]} == {
        (n, c) for n in ("deduct_distinct", "state_cache_hit") for c in (1, 2)
    } | {("process_stripe_event", 4), ("events_replay", 1), ("http_intake_x1", 64)}
    assert rows[("events_replay", 1)]["extra"]["events"] == 300
    for factor in ("0.1", "0.25", "0.5", "1"):
        row = rows[(f"http_intake_x{factor}", 64)]
        extra = row["extra"]
        assert extra["offered"].startswith(f"{factor}x = ") and row["baseline"] == "tpcb_like"
        assert row["ratio"] is not None and row["baseline_tps"] == rows[("tpcb_like", 4)]["tps"]
        assert extra["p50_ms"] <= extra["p95_ms"] <= extra["p99_ms"] and extra["alloc_p99_ms"] is not None
        assert extra["webhook_p99<2s"] in ("pass", "miss") and extra["alloc_p99<500ms"] in ("pass", "miss")
    assert rows[("http_intake_x0.25", 64)]["extra"]["p99<50ms"] in ("pass", "miss")
    state = rows[("http_state", 4)]["extra"]
    assert state["p50_ms"] <= state["p99_ms"] and state["api_p99<200ms"] in ("pass", "miss")
    assert "targets:" in done.stdout
