"""``make bench`` keeps working: a 1-second smoke run of every benchmark.

The harness runs as ``python -m bench`` against this session's server
(BILLINGDB_BENCH_DSN) with tiny settings; figures are not checked, only that
every benchmark was measured (none skipped, none failed its sanity checks:
each deduction and each cache hit or miss counted once per pgbench
transaction) and that the JSON report is complete.
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
         "--users", "20", "--scale", "2", "--output", str(output)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(output.read_text())
    assert report["error"] is None
    rows = {(r["name"], r["clients"]): r for r in report["results"]}
    names = {"select_only", "tpcb_like", "deduct_distinct", "deduct_hot", "state_cache_hit", "state_cache_miss"}
    assert set(rows) == {(n, c) for n in names for c in (1, 2)}
    for row in rows.values():
        assert row["skipped"] is None, row
        assert row["tps"] > 0 and row["transactions"] > 0
    compared = [r for r in rows.values() if r["baseline"]]
    assert all(r["ratio"] is not None for r in compared)
    assert {(t["benchmark"], t["clients"]) for t in report["targets"]} == {
        (n, c) for n in ("deduct_distinct", "state_cache_hit") for c in (1, 2)
    }
    assert "targets:" in done.stdout
