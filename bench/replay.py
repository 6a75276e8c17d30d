"""The replay benchmark: ``billingdb events replay`` of a file of realistic Stripe events.

For each run, ``--replay-events`` new events (20,000 by default) (:mod:`bench.stripe_events`'s renewal mix, both API
shapes, the seeded users in turn, numbers from ``bench.event_seq`` so that every event is real work)
are written to a JSON-lines file, then ``billingdb events replay FILE`` runs as a child process on
one connection, many events per transaction (the batch path ``billingdb stripe sync-events`` uses
too). Reported: events/s over the command's whole run, start-up and file parsing included. Its
baseline is pgbench tpcb-like at the same number of connections (one).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from bench import sqlfiles, stripe_events
from bench.errors import BenchError
from bench.pgbench import Measurement

if TYPE_CHECKING:
    from bench.benchmarks import Benchmark, Context

__all__ = ["measure_replay"]

TIMEOUT = 600.0


def measure_replay(price_id: str, user_prefix: str):  # type: ignore[no-untyped-def]
    """A Benchmark ``measure``: one ``events replay`` of ``--replay-events`` events (the duration is not used)."""

    def measure(ctx: Context, bench: Benchmark, clients: int, seconds: float) -> Measurement:
        if clients != 1:
            raise BenchError("the replay benchmark runs on one connection (clients=1)")
        count = ctx.options.replay_events
        users = ctx.options.users
        templates = stripe_events.templates(price_id, user_prefix)
        with ctx.connect("billingdb") as conn:
            first = int(sqlfiles.run(conn, "reserve_events", {"count": count})[0]["first"])
        kinds = [1 + (i + i // users) % len(stripe_events.KINDS) for i in range(count)]
        with tempfile.TemporaryDirectory(prefix="billingdb-replay-") as tmp:
            path = Path(tmp) / "events.jsonl"
            with path.open("w", encoding="utf-8") as out:
                for i in range(count):
                    out.write(stripe_events.render(templates[kinds[i]], uid=1 + i % users, n=first + i))
                    out.write("\n")
            env = {**os.environ, "DATABASE_URL": ctx.urls["billingdb"]}
            started = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "billingdb", "events", "replay", str(path)],
                                  env=env, capture_output=True, text=True, timeout=TIMEOUT, check=False)
            elapsed = time.perf_counter() - started
            size_mb = path.stat().st_size / 1e6
        summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
        processed = re.search(r"(\d+) processed", summary)
        if done.returncode != 0 or not processed or int(processed.group(1)) != count:
            raise BenchError(f"events replay of {count} new events: exit {done.returncode}, {summary!r}\n"
                             f"{done.stderr.strip()[-2000:]}")
        return Measurement(tps=count / elapsed, transactions=count, latency_ms=None,
                           extra={"events": count, "file_mb": round(size_mb, 1), "seconds": round(elapsed, 2)})

    return measure
