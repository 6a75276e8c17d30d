"""Options and the order of a run: server, databases, baselines, our calls, report.

    python -m bench [--clients 1,4] [--duration 10] [--quick] [--users N]
                    [--scale N] [--protocol prepared] [--warmup S] [--repeat N] [--only NAME,...]
                    [--output PATH]

Exit status 0 when every selected benchmark was measured (or skipped because
its functions do not exist yet), whether or not targets are met; 1 on errors.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench import pgbench, sqlfiles
from bench.benchmarks import BENCHMARKS, Benchmark, Context, Options, by_name
from bench.errors import BenchError
from bench.report import RESULTS_DIR, Report
from bench.server import databases, log, open_server

__all__ = ["main", "plan"]


def _client_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError("client counts must be positive integers")
    return tuple(dict.fromkeys(values))


def parse_args(argv: list[str] | None) -> tuple[Options, list[str] | None, Path]:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="billingdb benchmarks as ratios to pgbench on one server (make bench). "
        "Server: the embedded PostgreSQL in a temporary directory, or $BILLINGDB_BENCH_DSN.",
    )
    p.add_argument("--clients", type=_client_list, default=None, help="client counts (default 1,4)")
    p.add_argument("--duration", type=float, default=None, help="seconds per run (default 10)")
    p.add_argument("--quick", action="store_true", help="smoke run: 2 s per run, 1000 users, 2000 events replayed")
    p.add_argument("--replay-events", type=int, default=None,
                   help="events in the file of each events_replay run (default 20000)")
    p.add_argument("--users", type=int, default=None, help="seeded users (default 10000)")
    p.add_argument("--scale", type=int, default=None,
                   help="pgbench scale factor (default 10, at least the largest client count)")
    p.add_argument("--protocol", choices=("simple", "extended", "prepared"), default="prepared",
                   help="pgbench query mode for every run, baselines included (default prepared)")
    p.add_argument("--warmup", type=float, default=None,
                   help="seconds of unreported warm-up before each benchmark's runs (default 2, quick 1, 0: none)")
    p.add_argument("--repeat", type=int, default=None,
                   help="rounds of every run; median tps, ratio = median of the rounds' ratios (default 3, "
                   "quick 1: a single 10 s round on these machines scatters by 10-15%%, enough to flip a verdict)")
    p.add_argument("--only", default=None,
                   help="comma-separated benchmark names (their baselines run too): "
                   + ", ".join(b.name for b in BENCHMARKS))
    p.add_argument("--output", type=Path, default=RESULTS_DIR / "latest.json", help="JSON report path")
    a = p.parse_args(argv)
    opts = Options()
    opts.clients = a.clients or opts.clients
    opts.duration = a.duration if a.duration is not None else (2.0 if a.quick else opts.duration)
    opts.users = a.users if a.users is not None else (1000 if a.quick else opts.users)
    opts.replay_events = a.replay_events if a.replay_events is not None else (2000 if a.quick else opts.replay_events)
    if opts.replay_events < 1:
        p.error("--replay-events must be at least 1")
    opts.protocol = a.protocol
    opts.repeat = a.repeat if a.repeat is not None else (1 if a.quick else 3)
    opts.warmup = a.warmup if a.warmup is not None else (1.0 if a.quick else opts.warmup)
    if opts.duration < 1 or opts.users < 1 or opts.repeat < 1:
        p.error("--duration, --users and --repeat must be at least 1")
    if opts.warmup and opts.warmup < 1:
        p.error("--warmup must be 0 (none) or at least 1")
    only = [x.strip() for x in a.only.split(",") if x.strip()] if a.only else None
    if only:
        unknown = sorted(set(only) - set(by_name()))
        if unknown:
            p.error(f"unknown benchmark(s): {', '.join(unknown)}")
    opts.scale = a.scale if a.scale is not None else max(opts.scale, *opts.clients)
    return opts, only, a.output


def plan(options: Options, only: list[str] | None) -> list[tuple[Benchmark, tuple[int, ...]]]:
    """The selected benchmarks in list order with their client counts; a baseline runs at
    every client count something compares with it."""
    benches = by_name()
    selected = set(only) if only else set(benches)
    selected |= {benches[n].baseline for n in list(selected) if benches[n].baseline}  # type: ignore[misc]
    clients: dict[str, list[int]] = {}
    for b in BENCHMARKS:
        if b.name in selected:
            clients.setdefault(b.name, []).extend(b.clients or options.clients)
    for b in BENCHMARKS:
        if b.name in selected and b.baseline:
            clients[b.baseline].extend([b.baseline_clients] if b.baseline_clients else clients[b.name])
    return [(b, tuple(sorted(set(clients[b.name])))) for b in BENCHMARKS if b.name in selected]


def _prepare_pgbench(ctx: Context) -> None:
    log(f"pgbench -i -s {ctx.options.scale}")
    pgbench.initialize(ctx.pgbench, ctx.urls["pgbench"], ctx.options.scale)


def _prepare_billingdb(ctx: Context) -> None:
    ctx.migrate_to_head("the bench database")


PREPARE = {"pgbench": _prepare_pgbench, "billingdb": _prepare_billingdb}


def _checkpoint(ctx: Context, database: str) -> None:
    if "no-checkpoint" in ctx.done:
        return
    try:
        with ctx.connect(database) as conn:
            sqlfiles.run(conn, "checkpoint")
    except BenchError as exc:  # not allowed on a managed server: runs go on without it
        log(f"note: {exc}; runs go on without a checkpoint before each")
        ctx.done.add("no-checkpoint")


def _counter(ctx: Context, bench: Benchmark) -> int | None:
    if not bench.counter:
        return None
    with ctx.connect(bench.database) as conn:
        return int(sqlfiles.value(conn, bench.counter))


def _measure(ctx: Context, bench: Benchmark, clients: int, duration: float) -> pgbench.Measurement:
    if bench.measure:
        return bench.measure(ctx, bench, clients, duration)
    return pgbench.run(
        ctx.pgbench,
        ctx.urls[bench.database],
        clients=clients,
        duration=duration,
        protocol=ctx.options.protocol,
        builtin=bench.builtin,
        script=sqlfiles.SCRIPTS_DIR / bench.script if bench.script else None,
        variables=ctx.variables if bench.script else None,
        what=f"{bench.name} at {clients} clients",
    )


def _missing(ctx: Context, bench: Benchmark) -> list[str]:
    if not bench.requires:
        return []
    with ctx.connect(bench.database) as conn:
        return list(sqlfiles.value(conn, "missing_functions", {"names": list(bench.requires)}))


def _run_all(ctx: Context, runs: list[tuple[Benchmark, tuple[int, ...]]], report: Report) -> None:
    """Client count by client count, baselines then our calls, so that a figure and its baseline are
    measured minutes apart at most; with --repeat, the whole sequence again (rounds), medians reported."""
    ready: list[tuple[Benchmark, tuple[int, ...]]] = []
    for bench, client_counts in runs:
        missing = _missing(ctx, bench)
        if missing:
            reason = "not at head yet: " + ", ".join(f"public.{m}" for m in missing)
            log(f"{bench.name}: skipped, {reason}")
            for clients in client_counts:
                report.skip(bench, clients, reason)
        else:
            ready.append((bench, client_counts))
    measured: dict[tuple[str, int], list[pgbench.Measurement]] = {}
    warmed: set[str] = set()
    try:
        for _ in range(ctx.options.repeat):
            for clients in sorted({c for _, counts in ready for c in counts}):
                for bench, client_counts in ready:
                    if clients not in client_counts:
                        continue
                    if ctx.options.warmup and bench.name not in warmed:
                        _run_once(ctx, bench, clients, warmup=True)
                        warmed.add(bench.name)
                    result = _run_once(ctx, bench, clients)  # first: a failed run leaves no empty entry
                    measured.setdefault((bench.name, clients), []).append(result)
    finally:  # what was measured is reported, also when a later run fails
        for bench, client_counts in ready:
            for clients in client_counts:
                if (bench.name, clients) in measured:
                    report.add(bench, clients, measured[(bench.name, clients)])


def _run_once(ctx: Context, bench: Benchmark, clients: int, warmup: bool = False) -> pgbench.Measurement:
    """Setup, check, checkpoint, one timed run, and the counter check (a warm-up run is not reported)."""
    if bench.setup:
        bench.setup(ctx)
    if bench.check:
        bench.check(ctx)
    duration = ctx.options.warmup if warmup else ctx.options.duration
    if warmup:
        log(f"{bench.label}: warm-up, {clients} client{'s' if clients != 1 else ''}, {duration:g} s")
        return _measure(ctx, bench, clients, duration)
    if bench.database == "billingdb":
        with ctx.connect(bench.database) as conn:
            sqlfiles.run(conn, "vacuum")
    _checkpoint(ctx, bench.database)
    before = _counter(ctx, bench)
    log(f"{bench.label}: {clients} client{'s' if clients != 1 else ''}, {duration:g} s")
    result = _measure(ctx, bench, clients, duration)
    after = _counter(ctx, bench)
    if before is not None and after is not None and after - before != result.transactions:
        raise BenchError(
            f"{bench.name} at {clients} clients: pgbench counted {result.transactions} transactions "
            f"but {bench.counter} grew by {after - before} (refused, doubled or mis-routed calls?)"
        )
    log(f"  {result.tps:.1f} tps")
    ctx.measured[(bench.name, clients)] = result
    return result


def _load() -> float | None:
    """The 1-minute load average: other work on the machine skews every figure."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def _header(options: Options, server: Any, pgbench_version: str, info: dict[str, Any]) -> dict[str, Any]:
    return {
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "server": {"source": server.source, "embedded": server.embedded, **info},
        "machine": {
            "cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "load_average_at_start": _load(),
        },
        "pgbench": pgbench_version,
        "options": {
            "clients": list(options.clients), "duration": options.duration, "users": options.users,
            "scale": options.scale, "protocol": options.protocol, "repeat": options.repeat,
            "warmup": options.warmup,
        },
    }


def main(argv: list[str] | None = None) -> int:
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
    options, only, output = parse_args(argv)
    runs = plan(options, only)
    started = time.monotonic()
    report: Report | None = None
    try:
        with open_server() as server:
            binary, version = pgbench.find_pgbench(external_server=not server.embedded)
            needed = list(dict.fromkeys(b.database for b, _ in runs))
            with databases(server, needed) as urls:
                ctx = Context(binary, urls, options)
                with ctx.connect(needed[0]) as conn:
                    info = sqlfiles.run(conn, "server_info")[0]
                report = Report(_header(options, server, version, info))
                for name in needed:
                    PREPARE[name](ctx)
                _run_all(ctx, runs, report)
    except BenchError as exc:
        if report is None:
            print(f"bench: error: {exc}", file=sys.stderr)
            return 1
        report.error = str(exc)
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130
    assert report is not None
    report.compare(by_name())
    report.header["elapsed_seconds"] = round(time.monotonic() - started, 1)
    report.header["machine"]["load_average_at_end"] = _load()
    report.write(output)
    print(report.table())
    print(f"\nJSON: {output}")
    if report.error:
        print(f"bench: error: {report.error}", file=sys.stderr)
        return 1
    return 0
