"""``make profile`` (``python -m bench.profile``): where the time of one Stripe event goes.

Before changing anything for speed, measure where the time goes (docs/benchmarks.md, "Where the
time goes"). One run, short passes one after the other, on a PostgreSQL 15 cluster of its own:

1. **Cluster.** Debian's PostgreSQL 15 (``pg_createcluster 15 billingdb_prof --port 55490``, on
   127.0.0.1 with a password made for the run) with ``shared_preload_libraries = 'plprofiler,
   pg_stat_statements'`` (in that order: the other one does not start), ``pg_stat_statements.track
   = all``, ``track_functions = pl`` and ``track_wal_io_timing = on``; durability settings left at
   their defaults, as ``make bench``'s server has them. A database migrated to head (Alembic) and
   seeded as ``make bench`` seeds it (users, plan, subscriptions, balances, the renewal event
   templates of bench/stripe_events.py). The cluster is dropped however the run ends (a cluster of
   that name left by a killed run is dropped at the start); CI's cluster is never touched.
2. **Statements** (``--seconds``, default 10): pgbench runs bench/scripts/process_stripe_event.sql
   at 4 clients, as ``make bench`` does; then pg_stat_statements' statements by total time (nested
   statements of PL/pgSQL included, so times nest: a statement's time includes the ones it called),
   the PL/pgSQL functions by self time (``pg_stat_user_functions``), the WAL written and flushed
   per event (``pg_stat_wal``) and the CPU the PostgreSQL processes used per event (/proc).
3. **PL/pgSQL lines** (``--calls``, default 2000): one session with plprofiler on
   (``pl_profiler_set_enabled_local``) calls ``process_stripe_event`` that many times (kinds and
   users in turn); then its functions by self time, its call tree, and its statements by own time,
   each named by function, line and source text: a statement's own time leaves out the PL/pgSQL
   functions it names, and blocks (IF, LOOP, BEGIN ... EXCEPTION) are left out, so these rows do
   not nest; a last table lists statements by total time, blocks and calls included.
4. **HTTP intake** (``--http-seconds``, default 12; 0 skips it): ``billingdb serve --workers 1``
   against the seeded database, ``--senders`` threads (default 16) posting signed renewal events
   in a closed loop, while two ``py-spy record --nonblocking`` sample the server side by side:
   ``--idle`` (every thread, waiting or not: where a request's worker thread spends its time) and
   ``--gil`` (only the thread holding the GIL: what Python spends its CPU on, grouped as JSON,
   signature check, psycopg, pool, starlette, uvicorn, asyncio, thread hand-offs, ...). Also: the
   CPU of the server, of PostgreSQL, of the senders and of the whole machine per request (/proc),
   and the database's execution time per request (pg_stat_statements).
5. **Worker processes** (``--workers 1,2,1,2``, ``--workers-seconds``, default 6 each): the same
   webhook load without a profiler against ``billingdb serve --workers N`` for each N in turn
   (alternating, so that a change of the machine's other load shows as scatter, not as a trend):
   events/s, latency, CPU of the server's processes and of PostgreSQL per event.
6. **State route** (``--state-seconds``, default 10; 0 skips it): the same as 4 for ``GET
   /stripe/subscription/state`` with a JWT (4 readers, cache hits, as ``make bench``).

The report (Markdown tables) is printed and written to ``bench/results/profile.md``; py-spy's raw
samples (collapsed stacks, for a flame graph tool) and every statement of the PostgreSQL passes
(``pg_stat_statements.tsv``, ``plprofiler_statements.tsv``) to ``bench/results/profile/``. ``make profile``
installs what this needs first: Debian's postgresql-15 and postgresql-15-plprofiler (apt-get, as
root) and py-spy (pip, into .venv); ``make profile PROFILE_ARGS='--http-seconds 0'`` passes options.
Runs as root (pg_createcluster, py-spy attaching to a process). About a minute and a half in all.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from bench import benchmarks, http_api, pgbench, sqlfiles, stripe_events
from bench.benchmarks import Context, Options
from bench.errors import BenchError, run_command
from bench.http_intake import prime
from bench.report import RESULTS_DIR
from bench.server import log

__all__ = ["main"]

PG_VERSION = "15"
PG_BIN = Path(f"/usr/lib/postgresql/{PG_VERSION}/bin")
PLPROFILER_LIB = Path(f"/usr/lib/postgresql/{PG_VERSION}/lib/plprofiler.so")
CLUSTER = "billingdb_prof"
PORT = 55490
#: Clusters this tool never creates, starts or drops (CI's and Debian's default).
FOREIGN_CLUSTERS = frozenset({"billingdb_ci", "main"})
CLUSTER_CONF = """\
# billingdb make profile (bench/profile.py): a throwaway cluster, dropped at the end of the run.
listen_addresses = '127.0.0.1'
max_connections = 100
# plprofiler first: with pg_stat_statements loaded before it, Debian's plprofiler 4.2.1 on PostgreSQL 15 stops the
# server from starting (FATAL: requested tranche is not registered).
shared_preload_libraries = 'plprofiler, pg_stat_statements'
pg_stat_statements.track = all
pg_stat_statements.max = 5000
pg_stat_statements.track_utility = off
track_functions = pl
track_wal_io_timing = on
"""
TOP = 15  # rows per table
MAX_EVENTS = 60_000  # event numbers reserved for one HTTP pass
REQUEST_TIMEOUT = 10.0
STATE_CLIENTS = 4  # as make bench's http_state
WEBHOOK_PATH = "/stripe/webhook"
#: request(i) -> (method, path, body, headers) of a load's i-th request.
Request = Callable[[int], tuple[str, str, bytes | None, dict[str, str]]]
#: Samples per second of each py-spy recording: --idle unwinds every thread's stack each time (costly: about half
#: a core at 200/s for billingdb serve's 17 threads here), --gil only the one holding the GIL.
PY_SPY_RATES = {"--idle": 50, "--gil": 200}


# -- small helpers -------------------------------------------------------------------


def _command(args: list[str], what: str, timeout: float = 120, env: dict[str, str] | None = None) -> str:
    return run_command(args, what, timeout, env, missing=" (make profile installs it)")


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    """A Markdown table (pipes escaped in cells)."""
    def cell(v: Any) -> str:
        return str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:.1f} %" if whole else "-"


def _short(text: str, width: int = 90) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def _percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(p / 100 * len(ordered)) - 1))] if ordered else 0.0


# -- CPU time from /proc -------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _proc_cpu(pid: int) -> tuple[int, float, float]:
    """(parent pid, user seconds, kernel seconds) of a process, its children that ended and were waited for
    included (a postmaster's ended backends, pgbench's connections), from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    user = int(fields[11]) + int(fields[13])
    kernel = int(fields[12]) + int(fields[14])
    return int(fields[1]), user / _TICK, kernel / _TICK


def _tree_cpu(root: int) -> tuple[float, float]:
    """(user, kernel) CPU seconds of a process and its children (the postmaster and its backends)."""
    user = kernel = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ppid, u, k = _proc_cpu(int(entry))
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
        if int(entry) == root or ppid == root:
            user += u
            kernel += k
    return user, kernel


def _context_switches(pid: int) -> int:
    """Context switches (voluntary and not) of all the threads of a process so far."""
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/status") as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                        total += int(line.split()[1])
        except (OSError, ValueError):
            continue
    return total


def _machine() -> tuple[float, float]:
    """(busy, kernel) CPU seconds of the whole machine since boot, all CPUs (/proc/stat: kernel = system, irq,
    softirq)."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]
    return (sum(values[:8]) - idle) / _TICK, (values[2] + values[5] + values[6]) / _TICK


@dataclass
class CpuMeter:
    """CPU seconds (user, kernel) used between start() and stop() by a server process, PostgreSQL, this process and
    the whole machine; the server's context switches."""

    server_pid: int | None
    postmaster_pid: int
    start_values: dict[str, tuple[float, float]] = field(default_factory=dict)
    used: dict[str, tuple[float, float]] = field(default_factory=dict)
    wall: float = 0.0
    switches: int = 0

    def _read(self) -> dict[str, tuple[float, float]]:
        own = os.times()
        values = {"postgres": _tree_cpu(self.postmaster_pid), "harness": (own.user, own.system),
                  "children": (own.children_user, own.children_system),
                  "machine": _machine(), "wall": (time.monotonic(), 0.0)}
        if self.server_pid is not None:
            values["server"] = _tree_cpu(self.server_pid)
            values["switches"] = (float(_context_switches(self.server_pid)), 0.0)
        return values

    def start(self) -> None:
        self.start_values = self._read()

    def stop(self) -> None:
        end = self._read()
        self.used = {k: (end[k][0] - self.start_values[k][0], end[k][1] - self.start_values[k][1]) for k in end}
        self.wall = self.used.pop("wall")[0]
        self.switches = int(self.used.pop("switches", (0.0, 0.0))[0])

    def total(self, key: str) -> float:
        return sum(self.used[key]) if key != "machine" else self.used[key][0]


def _cpu_rows(meter: CpuMeter, per: int, harness: str) -> list[list[Any]]:
    """CPU per request (ms; how much of it in the kernel) and as cores over the window, for each part and the
    whole machine."""
    cpus = os.cpu_count() or 1
    rows: list[list[Any]] = []
    names = [("server", "billingdb serve (one process)"), ("postgres", "PostgreSQL (all its processes)"),
             ("harness", harness), ("children", "py-spy (the recordings, when they ran)")]
    for key, label in names:
        if key in meter.used:
            user, kernel = meter.used[key]
            rows.append([label, f"{1000 * (user + kernel) / per:.2f}", f"{1000 * kernel / per:.2f}",
                         f"{(user + kernel) / meter.wall:.2f}"])
    busy, kernel = meter.used["machine"]
    known = sum(meter.total(k) for k, _ in names if k in meter.used)
    rows.append(["anything else on the machine (CI, ...)", f"{1000 * (busy - known) / per:.2f}", "",
                 f"{(busy - known) / meter.wall:.2f}"])
    rows.append([f"the machine ({cpus} CPUs)", f"{1000 * busy / per:.2f}", f"{1000 * kernel / per:.2f}",
                 f"{busy / meter.wall:.2f}"])
    return rows


# -- the cluster ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Cluster:
    url: str  # the maintenance database, without the password (PGPASSWORD holds it)
    postmaster_pid: int
    data_directory: str


def _clusters() -> dict[str, str]:
    """{name: data directory} of the PostgreSQL 15 clusters (pg_lsclusters)."""
    found: dict[str, str] = {}
    for line in _command(["pg_lsclusters", "-h"], "pg_lsclusters").splitlines():
        parts = line.split()
        if len(parts) >= 6 and parts[0] == PG_VERSION:
            found[parts[1]] = parts[5]
    return found


def _conf_file(name: str) -> Path:
    """The configuration this tool writes into a cluster it made (and looks for before dropping one)."""
    return Path(f"/etc/postgresql/{PG_VERSION}/{name}/conf.d/billingdb_profile.conf")


def _remove_conf(name: str) -> None:
    """After pg_dropcluster, which leaves the files it did not write: this tool's file, then the emptied folders."""
    path = _conf_file(name)
    path.unlink(missing_ok=True)
    for folder in (path.parent, path.parent.parent):
        try:
            folder.rmdir()
        except OSError:
            break  # not empty (someone else's files) or gone


def _port_in_use(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _check_tools() -> None:
    missing = [str(p) for p in (PG_BIN / "postgres", PG_BIN / "pgbench", PLPROFILER_LIB) if not p.exists()]
    missing += [t for t in ("pg_createcluster", "pg_ctlcluster", "pg_dropcluster", "pg_lsclusters")
                if shutil.which(t) is None]
    if missing:
        raise BenchError("missing: " + ", ".join(missing) + " (make profile installs postgresql-15 and "
                         "postgresql-15-plprofiler with apt-get)")
    if os.geteuid() != 0:
        raise BenchError("make profile runs as root (pg_createcluster, py-spy attaching to billingdb serve)")


@contextmanager
def cluster(name: str, port: int) -> Iterator[Cluster]:
    """A new PostgreSQL 15 cluster on 127.0.0.1:port with pg_stat_statements and plprofiler; always dropped."""
    if name in FOREIGN_CLUSTERS:
        raise BenchError(f"cluster {name!r} is not this tool's: choose another --cluster")
    _check_tools()
    if name in _clusters():
        # Only a cluster this tool made (its configuration file says so) is dropped; any other is left alone.
        if not _conf_file(name).exists():
            raise BenchError(f"cluster {PG_VERSION}/{name} exists and was not made by make profile: choose another "
                             "--cluster")
        log(f"dropping cluster {PG_VERSION}/{name}, left by an earlier run")
        _command(["pg_dropcluster", "--stop", PG_VERSION, name], f"pg_dropcluster {name}")
        _remove_conf(name)
    if _port_in_use(port):
        raise BenchError(f"port {port} is in use: choose another --port")
    password = secrets.token_urlsafe(24)
    created = False
    with tempfile.TemporaryDirectory(prefix="billingdb-profile-") as tmp:
        pwfile = Path(tmp) / "pw"
        pwfile.write_text(password + "\n")
        shutil.chown(tmp, "postgres")
        shutil.chown(pwfile, "postgres")
        try:
            log(f"pg_createcluster {PG_VERSION} {name} --port {port}")
            _command(["pg_createcluster", PG_VERSION, name, "--port", str(port), "--",
                      f"--pwfile={pwfile}", "--auth-host=scram-sha-256", "--auth-local=peer"],
                     "pg_createcluster", timeout=300)
            created = True  # from here on, dropped at the end
            data = _clusters().get(name)
            if data is None:
                raise BenchError(f"pg_createcluster did not create {PG_VERSION}/{name}")
            _conf_file(name).parent.mkdir(parents=True, exist_ok=True)
            _conf_file(name).write_text(CLUSTER_CONF)  # also the mark of a cluster this tool made
            _command(["pg_ctlcluster", PG_VERSION, name, "start"], f"starting {PG_VERSION}/{name}", timeout=120)
            pid = int(Path(data, "postmaster.pid").read_text().split()[0])
            os.environ["PGPASSWORD"] = password  # libpq reads it: psycopg, pgbench and billingdb serve
            yield Cluster(f"postgresql://postgres@127.0.0.1:{port}/postgres", pid, data)
        finally:
            os.environ.pop("PGPASSWORD", None)
            if created:
                log(f"pg_dropcluster --stop {PG_VERSION} {name}")
                try:
                    _command(["pg_dropcluster", "--stop", PG_VERSION, name], f"pg_dropcluster {name}", timeout=120)
                    _remove_conf(name)
                except BenchError as exc:
                    log(f"warning: {exc}")


# -- preparing the database -------------------------------------------------------------


def prepare(ctx: Context) -> None:
    """Head, the profilers' extensions, make bench's seed and event templates, one event of each kind checked."""
    ctx.migrate_to_head("the profile database")
    with ctx.connect("billingdb") as conn:
        sqlfiles.run(conn, "profile_create_pg_stat_statements")
        sqlfiles.run(conn, "profile_create_plprofiler")
    log(f"seeding {ctx.options.users} users as make bench does")
    started = time.monotonic()
    benchmarks.setup_events(ctx)
    stripe_events.check_events(ctx)
    log(f"  seeded in {time.monotonic() - started:.1f} s")


# -- pass 1: pg_stat_statements under pgbench -------------------------------------------


def _wal(wal: dict[str, Any], per: int, what: str) -> str:
    """One sentence on the WAL of a pass (pg_stat_wal; its counters may miss a backend's last second)."""
    syncs = int(wal["wal_sync"] or 0)
    text = (f"WAL: {int(wal['wal_bytes']) / max(per, 1):,.0f} bytes and {int(wal['wal_records']) / max(per, 1):.1f} "
            f"records per {what}; {syncs} flushes (fsync)")
    if syncs:
        text += (f", one per {per / syncs:.1f} {what}s, {float(wal['wal_sync_time']) / syncs:.2f} ms each on "
                 f"average ({float(wal['wal_sync_time']) / max(per, 1):.3f} ms per {what})")
    return text + "."


def _write_tsv(path: Path, headers: list[str], rows: list[list[Any]]) -> None:
    """Every row of a table, tab-separated, for reading beyond the report's top rows."""
    def cell(v: Any) -> str:
        return " ".join(str(v).split())

    path.write_text("\n".join("\t".join(cell(v) for v in row) for row in [headers, *rows]) + "\n")


def profile_statements(ctx: Context, cl: Cluster, seconds: float, clients: int, raw_dir: Path) -> str:
    with ctx.connect("billingdb") as conn:
        sqlfiles.run(conn, "vacuum")
        sqlfiles.run(conn, "checkpoint")
        sqlfiles.run(conn, "profile_reset_statements")
    log(f"pgbench: process_stripe_event.sql, {clients} clients, {seconds:g} s (pg_stat_statements.track = all)")
    meter = CpuMeter(None, cl.postmaster_pid)
    meter.start()
    result = pgbench.run(ctx.pgbench, ctx.urls["billingdb"], clients=clients, duration=seconds,
                         protocol="prepared", script=sqlfiles.SCRIPTS_DIR / "process_stripe_event.sql",
                         variables=ctx.variables, what="process_stripe_event under pgbench")
    meter.stop()
    log(f"  {result.transactions} events, {result.tps:.0f}/s")
    with ctx.connect("billingdb") as conn:
        every = sqlfiles.run(conn, "profile_top_statements", {"top": 1000})
        total = sqlfiles.run(conn, "profile_toplevel_total")[0]
        functions = sqlfiles.run(conn, "profile_function_stats", {"top": TOP})
        wal = sqlfiles.run(conn, "profile_wal")[0]
    whole = float(total["total_ms"])
    events = result.transactions
    _write_tsv(raw_dir / "pg_stat_statements.tsv",
               ["level", "calls_per_event", "total_ms", "share", "mean_ms", "rows", "blocks", "wal_bytes", "query"],
               [["top" if r["toplevel"] else "nested", f"{r['calls'] / max(events, 1):.2f}", f"{r['total_ms']:.1f}",
                 _pct(r["total_ms"], whole), f"{r['mean_ms']:.4f}", r["rows"], r["blocks"], r["wal_bytes"], r["query"]]
                for r in every])
    out = ["### process_stripe_event under pgbench: pg_stat_statements (track = all)\n",
           f"pgbench -M prepared, {clients} clients, {seconds:g} s: {events} events, {result.tps:.0f} events/s, "
           f"mean latency {result.latency_ms} ms. Top-level statements executed for {whole / 1000:.2f} s "
           f"({whole / max(events, 1):.3f} ms per event); shares below are of that. A nested statement "
           "(level 'nested') runs inside a PL/pgSQL function: its time is part of its caller's.\n"]
    out.append(_table(
        ["level", "calls", "per event", "total ms", "share", "mean ms", "statement"],
        [["top" if r["toplevel"] else "nested", r["calls"], f"{r['calls'] / max(events, 1):.2f}",
          f"{r['total_ms']:.0f}", _pct(r["total_ms"], whole), f"{r['mean_ms']:.3f}", _short(r["query"], 100)]
         for r in every[:TOP]]))
    out.append("\nPL/pgSQL functions by self time (pg_stat_user_functions; self leaves out the PL/pgSQL "
               "functions a function calls, and includes the SQL it runs):\n")
    out.append(_table(
        ["function", "calls", "total ms", "self ms", "self share", "self us per call"],
        [[f["function"], f["calls"], f"{f['total_ms']:.0f}", f"{f['self_ms']:.0f}", _pct(f["self_ms"], whole),
          f"{1000 * f['self_ms'] / max(f['calls'], 1):.1f}"] for f in functions]))
    pg_user, pg_kernel = meter.used["postgres"]
    out.append(f"\nCPU over the run ({meter.wall:.1f} s): PostgreSQL {pg_user + pg_kernel:.2f} s = "
               f"{1000 * (pg_user + pg_kernel) / max(events, 1):.3f} ms per event, "
               f"{1000 * pg_kernel / max(events, 1):.3f} ms of it in the kernel "
               f"({(pg_user + pg_kernel) / meter.wall:.2f} cores); the machine "
               f"{meter.total('machine') / meter.wall:.2f} of {os.cpu_count()} cores busy (pgbench and anything else "
               "included). " + _wal(wal, events, "event"))
    return "\n".join(out)


# -- pass 2: plprofiler, one session -----------------------------------------------------

_BLOCK = re.compile(r"^\s*(IF|ELSIF|ELSE|CASE|WHEN|LOOP|FOR|FOREACH|WHILE|BEGIN|DECLARE|EXCEPTION|<<)\b",
                    re.IGNORECASE)


@dataclass
class _Line:
    function: str
    line: int
    count: int
    us: int
    text: str  # the statement's text, from its first line to its first ';'
    block: bool
    callees: list[str] = field(default_factory=list)
    us_own: float = 0.0


def _statements(lines: list[dict[str, Any]], functions: set[str]) -> list[_Line]:
    """The executed statements (line 0, the whole function, left out) with their text and the profiled
    functions they name."""
    by_function: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in lines:
        by_function[row["function"]].append(row)
    found: list[_Line] = []
    names = {f: re.compile(r"\b" + re.escape(f.split(".", 1)[1]) + r"\s*\(", re.IGNORECASE) for f in functions}
    for function, rows in by_function.items():
        rows.sort(key=lambda r: r["line_number"])
        for i, row in enumerate(rows):
            if row["line_number"] == 0 or not row["exec_count"]:
                continue
            text = []
            for nxt in rows[i:]:
                if nxt is not row and nxt["exec_count"]:
                    break
                source = (nxt["source"] or "").split("--", 1)[0]
                text.append(source)
                if ";" in source:
                    break
            statement = " ".join(" ".join(text).split())
            callees = [f for f, pattern in names.items() if f != function and pattern.search(statement)]
            found.append(_Line(function, int(row["line_number"]), int(row["exec_count"]), int(row["us_total"]),
                               statement, bool(_BLOCK.match(statement)), callees))
    return found


def profile_plpgsql(ctx: Context, calls: int, raw_dir: Path, top_function: str = "public.process_stripe_event"
                    ) -> str:
    users = ctx.options.users
    kinds = len(stripe_events.KINDS)
    log(f"plprofiler: {calls} process_stripe_event calls in one session")
    with ctx.connect("billingdb") as conn:
        sqlfiles.run(conn, "profile_plprofiler_on")
        started = time.monotonic()
        for i in range(calls):
            result = sqlfiles.value(conn, "sample_event", {"kind": 1 + i % kinds, "uid": 1 + i % users})
            if not isinstance(result, dict) or result.get("status") != "processed":
                raise BenchError(f"plprofiler pass: event {i} was not processed: {result!r}")
        elapsed = time.monotonic() - started
        sqlfiles.run(conn, "profile_plprofiler_off")
        graph = sqlfiles.run(conn, "profile_plprofiler_callgraph")
        lines = sqlfiles.run(conn, "profile_plprofiler_lines")
    if not graph:
        raise BenchError("plprofiler gathered nothing (is plprofiler in shared_preload_libraries?)")
    functions = {name for g in graph for name in g["stack"]}
    statements = _statements(lines, functions)
    # The whole: process_stripe_event's own total (bench.next_event, the harness, is left out).
    whole = sum(g["us_total"] for g in graph if g["stack"] == [top_function])
    if not whole:
        raise BenchError(f"plprofiler: no call of {top_function} was profiled")
    # Callee time by (caller, callee), to subtract from the statements that name the callee.
    child: dict[tuple[str, str], float] = defaultdict(float)
    for g in graph:
        if len(g["stack"]) >= 2:
            child[(g["stack"][-2], g["stack"][-1])] += g["us_total"]
    naming: dict[tuple[str, str], list[_Line]] = defaultdict(list)
    for s in statements:
        for callee in s.callees:
            naming[(s.function, callee)].append(s)
    for s in statements:
        s.us_own = float(s.us)
        for callee in s.callees:
            peers = naming[(s.function, callee)]
            share = s.count / sum(p.count for p in peers)
            s.us_own -= child.get((s.function, callee), 0.0) * share
    # Only stacks under the function profiled (the harness's own bench.next_event is left out).
    selves: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0.0])
    for g in graph:
        if g["stack"][0] != top_function:
            continue
        entry = selves[g["stack"][-1]]
        entry[0] += g["calls"]
        entry[1] += g["us_self"]
        entry[2] += g["us_total"]
    out = [f"### process_stripe_event under plprofiler: one session, {calls} events\n",
           f"{calls} events in {elapsed:.2f} s ({calls / elapsed:.0f}/s with the profiler on), "
           f"{top_function} {whole / 1000:.0f} ms in all, {whole / calls:.0f} us per event: the shares below "
           "are of that. The profiler's own cost is in these times.\n"]
    out.append("Functions by self time (the call graph; self leaves out the PL/pgSQL functions called, and "
               "includes the SQL run, the triggers' and CHECKs' own SQL excepted):\n")
    rows = sorted(selves.items(), key=lambda kv: -kv[1][1])
    out.append(_table(["function", "calls per event", "self us per event", "self share", "total share"],
                      [[f, f"{v[0] / calls:.2f}", f"{v[1] / calls:.1f}", _pct(v[1], whole), _pct(v[2], whole)]
                       for f, v in rows[:TOP]]))
    tree = [g for g in graph if g["stack"][0] == top_function]
    out.append("\nCall tree (stacks by total time):\n")
    out.append(_table(["stack", "calls per event", "total us per event", "total share", "self share"],
                      [[" > ".join(n.split(".", 1)[1] for n in g["stack"]), f"{g['calls'] / calls:.2f}",
                        f"{g['us_total'] / calls:.1f}", _pct(g["us_total"], whole), _pct(g["us_self"], whole)]
                       for g in tree[:TOP]]))
    under = {name for g in tree for name in g["stack"]}
    mine = [s for s in statements if s.function in under]
    _write_tsv(raw_dir / "plprofiler_statements.tsv",
               ["function", "line", "runs_per_event", "own_us_per_event", "total_us_per_event", "block", "statement"],
               [[s.function, s.line, f"{s.count / calls:.2f}", f"{s.us_own / calls:.1f}", f"{s.us / calls:.1f}",
                 s.block, s.text] for s in sorted(mine, key=lambda s: (s.function, s.line))])
    leaves = sorted((s for s in mine if not s.block), key=lambda s: -s.us_own)
    out.append("\nStatements by own time (a block statement left out; the PL/pgSQL functions a statement names "
               "subtracted; a write's triggers and CHECK functions stay in it):\n")
    out.append(_table(["function:line", "runs per event", "own us per event", "share", "statement"],
                      [[f"{s.function.split('.', 1)[1]}:{s.line}", f"{s.count / calls:.2f}",
                        f"{s.us_own / calls:.1f}", _pct(s.us_own, whole), _short(s.text, 100)]
                       for s in leaves[:TOP]]))
    listed = sum(s.us_own for s in leaves[:TOP])
    out.append(f"\nThese {min(TOP, len(leaves))} statements: {_pct(listed, whole)} of the time; all "
               f"{len(leaves)} executed simple statements: {_pct(sum(s.us_own for s in leaves), whole)}.")
    out.append("\nStatements by total time (nesting: a block's and a call's time include what they run):\n")
    inclusive = sorted(mine, key=lambda s: -s.us)
    out.append(_table(["function:line", "runs per event", "us per event", "share", "statement"],
                      [[f"{s.function.split('.', 1)[1]}:{s.line}", f"{s.count / calls:.2f}", f"{s.us / calls:.1f}",
                        _pct(s.us, whole), _short(s.text, 100)] for s in inclusive[:10]]))
    return "\n".join(out)


# -- py-spy ----------------------------------------------------------------------------------

#: What Python is doing when it holds the GIL, by the file of the innermost frame (first match wins).
_GROUPS: list[tuple[str, tuple[str, ...]]] = [
    ("JSON (json, billingdb.jsonbody)", ("json/", "jsonbody.py")),
    ("signature check (stripe library, hmac, hashlib)", ("stripe/", "hmac.py", "hashlib.py")),
    ("JWT (PyJWT, cryptography)", ("jwt/", "cryptography/")),
    ("psycopg (sending queries, reading results)", ("psycopg/", "psycopg_binary/")),
    ("psycopg_pool (taking and returning connections)", ("psycopg_pool/",)),
    ("billingdb (its own code)", ("billingdb/",)),
    ("starlette (routing, requests, responses)", ("starlette/",)),
    ("uvicorn, h11, httptools (HTTP)", ("uvicorn/", "h11/", "httptools/")),
    ("asyncio event loop (sockets, callbacks)", ("asyncio/", "selectors.py")),
    ("anyio and threading (thread pool hand-offs)", ("anyio/", "threading.py", "queue.py", "concurrent/",
                                                     "sniffio/")),
    ("logging", ("logging/",)),
]
#: Frames that only run the rest (entry points, loops, thread bootstraps), left out of the total-time table.
_TOTALS = ("billingdb/", "psycopg/", "psycopg_pool/", "json/", "stripe/", "jwt/", "cryptography/", "hmac.py")
#: ... and these whole layers, named by their outermost frame.
_LAYERS = {"RequestResponseCycle.run_asgi": "the ASGI app, all of it (uvicorn's h11 cycle)",
           "run_sync": "anyio's hand-off to a worker thread (on the event loop)",
           "WorkerThread.run": "everything run in worker threads"}
_NOT_TOTALS = ("billingdb/cli/", "billingdb/__main__.py", "billingdb/service/app.py")
_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")

#: Where a thread of billingdb serve is, from the --idle recording (first match wins): (state, test on the stack).
_STATES: list[tuple[str, Callable[[list[tuple[str, str]]], bool]]] = [
    ("event loop: idle, waiting in epoll", lambda fs: fs[-1][0] == "EpollSelector.select"),
    ("worker: the pool's connection check (a round trip before the query)",
     lambda fs: any(f == "ConnectionPool.check_connection" for f, _ in fs) and fs[-1][0] == "Connection.wait"),
    ("worker: waiting on PostgreSQL (the query)", lambda fs: fs[-1][0] == "Connection.wait"),
    ("worker: waiting for a pool connection",
     lambda fs: any(f == "ConnectionPool.getconn" for f, _ in fs) and fs[-1][0].endswith(".wait")),
    ("worker: idle, waiting for a request", lambda fs: fs[-1][0] == "Condition.wait"
     and any(f == "Queue.get" for f, _ in fs) and not any(m.startswith("billingdb/") for _, m in fs)),
]


def _group(path: str) -> str:
    for label, needles in _GROUPS:
        if any(n in path for n in needles):
            return label
    return "other (standard library, typing, ...)"


def _frames(stack: str) -> tuple[str, list[tuple[str, str]]]:
    """(thread name, [(function, file), ...] outermost first) of a collapsed py-spy stack."""
    parts = stack.split(";")
    thread = "?"
    if parts and parts[0].startswith("thread ("):
        thread = parts[0].split(":", 1)[1].strip() if ":" in parts[0] else parts[0]
        parts = parts[1:]
    frames = []
    for part in parts:
        m = _FRAME.match(part)
        frames.append((m.group("func"), m.group("file")) if m else (part, "?"))
    return thread, frames


def _read(path: Path) -> Iterator[tuple[str, list[tuple[str, str]], int]]:
    """(thread, frames, count) of each line of py-spy's raw output (``--format raw --threads``)."""
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            thread, frames = _frames(stack)
            if frames:
                yield thread, frames, int(count)


@dataclass
class WallTime:
    """The --idle recording: every thread's every sample, by state."""

    samples: int = 0
    rounds: int = 0  # the event loop thread's samples: one per round of sampling
    states: Counter[str] = field(default_factory=Counter)


def read_wall(path: Path) -> WallTime:
    wall = WallTime()
    for thread, frames, count in _read(path):
        wall.samples += count
        loop = thread == "MainThread"
        wall.rounds += count if loop else 0
        for state, test in _STATES:
            if test(frames):
                break
        else:
            state = "event loop: running Python" if loop else "worker: running Python (or waiting for the GIL)"
        wall.states[state] += count
    return wall


@dataclass
class GilTime:
    """The --gil recording: only the thread holding the GIL, sampled: where Python spends its CPU."""

    samples: int = 0
    groups: Counter[str] = field(default_factory=Counter)
    self_by: Counter[str] = field(default_factory=Counter)
    total_by: Counter[str] = field(default_factory=Counter)
    by_thread: Counter[str] = field(default_factory=Counter)


def read_gil(path: Path) -> GilTime:
    gil = GilTime()
    for thread, frames, count in _read(path):
        gil.samples += count
        gil.by_thread["event loop thread" if thread == "MainThread" else "worker threads"] += count
        func, file = frames[-1]
        gil.groups[_group(file)] += count
        gil.self_by[f"{func} ({file})"] += count
        keys = {f"{f} ({m})" for f, m in frames if m.startswith(_TOTALS) and not m.startswith(_NOT_TOTALS)}
        keys |= {f"{_LAYERS[f]}: {f} ({m})" for f, m in frames if f in _LAYERS}
        keys |= {f"{f} ({m})" for f, m in frames if (f, m) == ("stripe_webhook", "billingdb/service/app.py")}
        for key in keys:
            gil.total_by[key] += count
    return gil


def _py_spy_binary() -> str:
    binary = Path(sys.executable).with_name("py-spy")
    found = str(binary) if binary.exists() else shutil.which("py-spy")
    if not found:
        raise BenchError("py-spy not found (make profile installs it into .venv)")
    return found


@contextmanager
def py_spy(pid: int, seconds: float, outputs: dict[str, Path]) -> Iterator[None]:
    """``py-spy record`` of a process for ``seconds``, one recording per {flag: output} (``--idle``: every
    thread's every sample; ``--gil``: only the thread holding the GIL), side by side; waited for (killed if
    one hangs) however the block ends."""
    binary = _py_spy_binary()
    procs: list[tuple[subprocess.Popen[bytes], Path]] = []
    try:
        for flag, output in outputs.items():
            command = [binary, "record", "--pid", str(pid), "--rate", str(PY_SPY_RATES[flag]), "--duration",
                       str(max(1, round(seconds))), "--format", "raw", "--threads", "--nonblocking", flag,
                       "--output", str(output)]
            procs.append((subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                           stderr=subprocess.STDOUT), output))
        yield
    except BaseException:
        for proc, _ in procs:  # interrupted: no recording is read, stop them now
            proc.kill()
        raise
    finally:
        for proc, _ in procs:
            try:
                proc.wait(timeout=seconds + 30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    for proc, output in procs:
        if proc.returncode != 0 or not output.exists():
            said = proc.stdout.read().decode("utf-8", "replace") if proc.stdout else ""
            raise BenchError(f"py-spy record exited with status {proc.returncode}:\n{said.strip()[-800:]}")


def _python_tables(wall: WallTime, gil: GilTime, requests: int, seconds: float) -> str:
    """``requests``: the requests answered during the recordings' ``seconds``. A busy machine makes py-spy sample
    less often than asked: the rounds the --idle recording took (its event loop thread's samples) are its clock,
    and the --gil recording is taken to have kept the same fraction of its own rate."""
    asked_idle, asked_gil = PY_SPY_RATES["--idle"], PY_SPY_RATES["--gil"]
    rate = wall.rounds / seconds if wall.rounds else float(asked_idle)
    gil_rate = asked_gil * rate / asked_idle

    def ms(samples: int, per_second: float = rate) -> str:
        return f"{1000 * samples / per_second / max(requests, 1):.3f}"

    out = [f"py-spy `--idle` asked for {asked_idle} samples/s for {seconds:g} s and took {rate:.0f}/s, `--gil` "
           f"asked for {asked_gil}/s; about {requests} requests in that time.\n",
           "Where the server's threads are (`--idle`: every thread's every sample; thread-milliseconds per "
           "request, so the worker rows add up to the time a request holds a worker thread):\n"]
    out.append(_table(["state", "share of thread samples", "thread-ms per request"],
                      [[s, _pct(n, wall.samples), ms(n)] for s, n in wall.states.most_common()]))
    held = gil.samples / (gil_rate * seconds)
    out.append(f"\nWho holds the GIL (`--gil`): held in {_pct(gil.samples, gil_rate * seconds)} of the sampling "
               f"rounds ({held:.2f} of one core at most: one process runs Python on one core at a time), "
               f"{ms(gil.samples, gil_rate)} ms per request; "
               + ", ".join(f"{k} {_pct(v, gil.samples)}" for k, v in gil.by_thread.most_common())
               + ". By the innermost frame's module:\n")
    out.append(_table(["group", "share of GIL samples", "ms per request"],
                      [[g, _pct(n, gil.samples), ms(n, gil_rate)] for g, n in gil.groups.most_common()]))
    out.append("\nFunctions holding the GIL, by self time:\n")
    out.append(_table(["function (module)", "self share"],
                      [[k, _pct(n, gil.samples)] for k, n in gil.self_by.most_common(TOP)]))
    out.append("\nFunctions holding the GIL, by total time (on the stack: billingdb and the libraries it calls, "
               "and three layers as a whole):\n")
    out.append(_table(["function (module)", "total share"],
                      [[k, _pct(n, gil.samples)] for k, n in gil.total_by.most_common(TOP)]))
    return "\n".join(out)


# -- the HTTP passes -------------------------------------------------------------------------


@dataclass
class Load:
    ok: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    elapsed: float = 0.0


def _closed_loop(port: int, clients: int, seconds: float, request: Request, limit: int,
                 ok: Callable[[int, bytes], bool]) -> Load:
    """``clients`` threads, one keep-alive connection each, sending request(i) for i = 0, 1, ... in a closed loop
    until ``seconds`` have passed or ``limit`` requests were sent."""
    load = Load()
    lock = threading.Lock()
    order = itertools.count()
    stop_at = time.monotonic() + seconds

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT)
        mine: list[float] = []
        try:
            while time.monotonic() < stop_at:
                with lock:
                    i = next(order)
                if i >= limit:
                    return
                method, path, body, headers = request(i)
                sent = time.monotonic()
                try:
                    conn.request(method, path, body, headers)
                    response = conn.getresponse()
                    answer = response.read()
                except (OSError, http.client.HTTPException) as exc:
                    with lock:
                        load.errors[type(exc).__name__] += 1
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT)
                    continue
                if ok(response.status, answer):
                    mine.append((time.monotonic() - sent) * 1000)
                else:
                    with lock:
                        load.errors[f"HTTP {response.status} {answer[:80]!r}"] += 1
        finally:
            conn.close()
            with lock:
                load.latencies += mine

    started = time.monotonic()
    threads = [threading.Thread(target=client, daemon=True, name=f"profile-client-{c}") for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=seconds + REQUEST_TIMEOUT + 5)
    load.elapsed = time.monotonic() - started
    load.ok = len(load.latencies)
    return load


@contextmanager
def _served(env: dict[str, str], unset: tuple[str, ...] = (), workers: int = 1) -> Iterator[tuple[int, int, IO[bytes]]]:
    """``billingdb serve --workers N`` (bench.service, with the child's pid): (port, pid, its output)."""
    from billingdb.testing.child import ServeDidNotStart
    from billingdb.testing.child import serve as serve_child

    from bench.service import tail

    with tempfile.TemporaryFile() as output:
        try:
            with serve_child(env, args=("--workers", str(workers)), unset=unset, output=output) as served:
                yield served.port, served.pid, output
        except ServeDidNotStart as exc:
            raise BenchError(f"{exc}:\n{tail(output)}") from exc


def _record(ctx: Context, cl: Cluster, pid: int, port: int, seconds: float, raw: dict[str, Path], clients: int,
            request: Request, limit: int,
            ok: Callable[[int, bytes], bool], output: IO[bytes]) -> tuple[Load, CpuMeter, dict[str, Any]]:
    """Load for ``seconds`` + 1 while py-spy records the server for ``seconds`` (from 0.5 s in); the CPU meter and
    pg_stat_statements cover the load's whole window."""
    from bench.service import tail

    with ctx.connect("billingdb") as conn:
        sqlfiles.run(conn, "profile_reset_statements")
    meter = CpuMeter(pid, cl.postmaster_pid)
    result: dict[str, Load] = {}

    def drive() -> None:
        result["load"] = _closed_loop(port, clients, seconds + 1.0, request, limit, ok)

    meter.start()
    driver = threading.Thread(target=drive, daemon=True)
    driver.start()
    time.sleep(0.5)
    with py_spy(pid, seconds, raw):
        pass
    driver.join(timeout=seconds + REQUEST_TIMEOUT + 10)
    meter.stop()
    load = result.get("load")
    if load is None:
        raise BenchError("the load did not finish in time")
    if load.errors:
        summary = "; ".join(f"{n} x {e}" for e, n in load.errors.most_common(5))
        raise BenchError(f"{sum(load.errors.values())} requests failed: {summary}\n{tail(output)}")
    if not load.ok:
        raise BenchError("no request succeeded")
    with ctx.connect("billingdb") as conn:
        database = sqlfiles.run(conn, "profile_toplevel_total")[0]
        database["wal"] = sqlfiles.run(conn, "profile_wal")[0]
    return load, meter, database


def _http_summary(title: str, load: Load, meter: CpuMeter, database: dict[str, Any], clients: int,
                  harness: str) -> list[str]:
    rate = load.ok / load.elapsed
    db_ms = float(database["total_ms"]) / load.ok
    out = [f"### {title}\n",
           f"{clients} clients in a closed loop for {load.elapsed:.1f} s: {load.ok} requests answered, "
           f"{rate:.0f}/s; latency p50 {_percentile(load.latencies, 50):.1f} ms, "
           f"p99 {_percentile(load.latencies, 99):.1f} ms, mean {statistics.fmean(load.latencies):.1f} ms. "
           f"PostgreSQL executed the top-level statements for {db_ms:.3f} ms per request "
           f"(pg_stat_statements; {database['calls']} statements). {_wal(database['wal'], load.ok, 'request')}\n"]
    out.append(f"CPU per request, and in cores over the window ({meter.wall:.1f} s; /proc):\n")
    out.append(_table(["who", "CPU ms per request", "of it in the kernel", "cores"],
                      _cpu_rows(meter, load.ok, harness)))
    out.append(f"\nbillingdb serve's threads switched context {meter.switches / load.ok:.1f} times per request.")
    return out


def _webhooks(ctx: Context) -> tuple[str, Request, Callable[[int, bytes], bool]]:
    """(a webhook secret, request(i): signed renewal event i, ok(status, answer)): new event numbers, users and
    kinds in turn, as make bench's HTTP intake sends them."""
    from billingdb.testing.stripe import sign

    templates = stripe_events.templates(benchmarks.PRICE_ID, benchmarks.USER_PREFIX)
    users, kinds = ctx.options.users, len(stripe_events.KINDS)
    with ctx.connect("billingdb") as conn:
        first = int(sqlfiles.run(conn, "reserve_events", {"count": MAX_EVENTS})[0]["first"])
    secret = f"whsec_profile_{secrets.token_hex(16)}"

    def request(i: int) -> tuple[str, str, bytes | None, dict[str, str]]:
        kind = 1 + (i + i // users) % kinds
        body = stripe_events.render(templates[kind], uid=1 + i % users, n=first + i).encode()
        return "POST", WEBHOOK_PATH, body, {"Content-Type": "application/json",
                                             "Stripe-Signature": sign(body, secret)}

    def ok(status: int, answer: bytes) -> bool:
        if status != 200:
            return False
        try:
            return json.loads(answer).get("status") in ("processed", "stale")
        except ValueError:
            return False

    return secret, request, ok


def profile_intake(ctx: Context, cl: Cluster, seconds: float, senders: int, raw_dir: Path) -> str:
    secret, request, ok = _webhooks(ctx)
    raw = {"--idle": raw_dir / "webhook.idle.txt", "--gil": raw_dir / "webhook.gil.txt"}
    log(f"billingdb serve --workers 1 under {senders} webhook senders for {seconds:g} s, py-spy recording")
    with _served({"DATABASE_URL": ctx.urls["billingdb"], "STRIPE_WEBHOOK_SECRET": secret}) as (port, pid, output):
        prime(port, senders)
        load, meter, database = _record(ctx, cl, pid, port, seconds, raw, senders, request, MAX_EVENTS, ok, output)
    log(f"  {load.ok} events, {load.ok / load.elapsed:.0f}/s")
    out = _http_summary("POST /stripe/webhook: billingdb serve --workers 1 under py-spy", load, meter, database,
                        senders, f"the {senders} senders (this process: render, sign, HTTP)")
    out.append("")
    out.append(_python_tables(read_wall(raw["--idle"]), read_gil(raw["--gil"]),
                              round(load.ok * seconds / load.elapsed), seconds))
    return "\n".join(out)


def profile_workers(ctx: Context, cl: Cluster, seconds: float, senders: int, counts: tuple[int, ...]) -> str:
    """The same webhook load without a profiler, billingdb serve --workers N for each N in turn."""
    from bench.service import tail

    rows: list[list[Any]] = []
    for workers in counts:
        secret, request, ok = _webhooks(ctx)
        log(f"billingdb serve --workers {workers} under {senders} webhook senders for {seconds:g} s, no profiler")
        env = {"DATABASE_URL": ctx.urls["billingdb"], "STRIPE_WEBHOOK_SECRET": secret}
        with _served(env, workers=workers) as (port, pid, output):
            prime(port, senders * 2)
            meter = CpuMeter(pid, cl.postmaster_pid)
            meter.start()
            load = _closed_loop(port, senders, seconds, request, MAX_EVENTS, ok)
            meter.stop()
            if load.errors or not load.ok:
                summary = "; ".join(f"{n} x {e}" for e, n in load.errors.most_common(5))
                raise BenchError(f"--workers {workers}: {sum(load.errors.values())} requests failed: {summary}\n"
                                 f"{tail(output)}")
        log(f"  {load.ok} events, {load.ok / load.elapsed:.0f}/s")
        rows.append([workers, f"{load.ok / load.elapsed:.0f}", f"{_percentile(load.latencies, 50):.1f}",
                     f"{_percentile(load.latencies, 99):.1f}", f"{1000 * meter.total('server') / load.ok:.2f}",
                     f"{meter.total('server') / meter.wall:.2f}", f"{1000 * meter.total('postgres') / load.ok:.2f}",
                     f"{meter.total('machine') / meter.wall:.2f}"])
    out = ["### POST /stripe/webhook: one worker process or several (no profiler)\n",
           f"{senders} senders in a closed loop for {seconds:g} s against billingdb serve --workers N, one N after "
           "the other (each worker has its own pool of 10 connections).\n"]
    out.append(_table(["workers", "events/s", "p50 ms", "p99 ms", "server CPU ms per event", "server cores",
                       "PostgreSQL CPU ms per event", f"machine cores busy (of {os.cpu_count()})"], rows))
    return "\n".join(out)


def profile_state(ctx: Context, cl: Cluster, seconds: float, raw_dir: Path) -> str:
    import jwt

    log("state route: cache hits (a long TTL, every state cached)")
    benchmarks.setup_cache_hits(ctx)
    private_pem, public_pem = http_api._keys()
    now = int(time.time())
    users = min(ctx.options.users, http_api.TOKENS)
    tokens = [jwt.encode({"iss": http_api.ISSUER, "aud": http_api.AUDIENCE, "sub": f"{benchmarks.USER_PREFIX}{u}",
                          "iat": now, "exp": now + int(seconds) + 600}, private_pem, algorithm="RS256")
              for u in range(1, users + 1)]

    def request(i: int) -> tuple[str, str, bytes | None, dict[str, str]]:
        return "GET", http_api.PATH, None, {"Authorization": f"Bearer {tokens[(i * 7919) % users]}"}

    env = {"DATABASE_URL": ctx.urls["billingdb"], "STRIPE_WEBHOOK_SECRET": f"whsec_profile_{secrets.token_hex(8)}",
           "BILLINGDB_JWT_PUBLIC_KEY": public_pem, "BILLINGDB_JWT_ISSUER": http_api.ISSUER,
           "BILLINGDB_JWT_AUDIENCE": http_api.AUDIENCE}
    raw = {"--idle": raw_dir / "state.idle.txt", "--gil": raw_dir / "state.gil.txt"}
    log(f"billingdb serve --workers 1 under {STATE_CLIENTS} state readers for {seconds:g} s, py-spy recording")
    with _served(env, unset=("BILLINGDB_JWT_JWKS_URL",)) as (port, pid, output):
        from bench.service import get

        if get(port, http_api.PATH, {"Authorization": f"Bearer {tokens[0]}"}) != 200:
            raise BenchError(f"GET {http_api.PATH} did not answer 200")
        load, meter, database = _record(ctx, cl, pid, port, seconds, raw, STATE_CLIENTS, request, 10**9,
                                        lambda status, _: status == 200, output)
    log(f"  {load.ok} reads, {load.ok / load.elapsed:.0f}/s")
    out = _http_summary("GET /stripe/subscription/state (JWT, cache hits): billingdb serve --workers 1 under py-spy",
                        load, meter, database, STATE_CLIENTS, f"the {STATE_CLIENTS} readers (this process)")
    out.append("")
    out.append(_python_tables(read_wall(raw["--idle"]), read_gil(raw["--gil"]),
                              round(load.ok * seconds / load.elapsed), seconds))
    return "\n".join(out)


# -- main ---------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.profile",
        description="Where the time goes (make profile): process_stripe_event in PostgreSQL 15 "
        "(pg_stat_statements with track = all, plprofiler's lines and call graph) and billingdb serve "
        "--workers 1 in Python (py-spy), on a throwaway Debian PostgreSQL 15 cluster seeded as make bench "
        "seeds. Needs root, postgresql-15, postgresql-15-plprofiler and py-spy (make profile installs them). "
        "Report: stdout and bench/results/profile.md; py-spy's raw stacks: bench/results/profile/.",
    )
    p.add_argument("--cluster", default=CLUSTER,
                   help=f"name of the throwaway PostgreSQL 15 cluster (default {CLUSTER})")
    p.add_argument("--port", type=int, default=PORT, help=f"its port on 127.0.0.1 (default {PORT})")
    p.add_argument("--users", type=int, default=10_000, help="seeded users (default 10000, as make bench)")
    p.add_argument("--seconds", type=float, default=10.0,
                   help="pgbench run for pg_stat_statements, 4 clients (default 10)")
    p.add_argument("--calls", type=int, default=2000, help="process_stripe_event calls under plprofiler (default 2000)")
    p.add_argument("--http-seconds", type=float, default=12.0,
                   help="webhook load under py-spy, seconds (default 12; 0: skip)")
    p.add_argument("--senders", type=int, default=16,
                   help="webhook senders, closed loop (default 16; at most the service's in-flight limit, 20)")
    p.add_argument("--workers", default="1,2,1,2",
                   help="webhook load without a profiler for billingdb serve --workers N, each N of this "
                   "comma-separated list in turn, --workers-seconds each (default 1,2,1,2; empty: skip)")
    p.add_argument("--workers-seconds", type=float, default=6.0, help="seconds of each --workers run (default 6)")
    p.add_argument("--state-seconds", type=float, default=10.0,
                   help="state route load under py-spy, seconds (default 10; 0: skip)")
    p.add_argument("--output", type=Path, default=RESULTS_DIR / "profile.md", help="the report (Markdown)")
    a = p.parse_args(argv)
    if a.users < 1 or a.calls < 1 or a.seconds < 1 or a.senders < 1:
        p.error("--users, --calls, --seconds and --senders must be at least 1")
    try:
        a.workers = tuple(int(w) for w in a.workers.split(",") if w.strip())
    except ValueError:
        p.error(f"--workers: not a comma-separated list of integers: {a.workers!r}")
    if any(not 1 <= w <= 8 for w in a.workers):
        p.error("--workers: counts from 1 to 8")
    if max(a.seconds, a.http_seconds, a.state_seconds, a.workers_seconds) > 60:
        p.error("keep each load short: at most 60 s")
    return a


def _stop_on_signal() -> None:
    """SIGTERM and SIGHUP unwind like Ctrl-C, so the server stops and the cluster is dropped."""
    def handler(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, handler)


def main(argv: list[str] | None = None) -> int:
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
    args = parse_args(argv)
    _stop_on_signal()
    raw_dir = args.output.parent / "profile"
    raw_dir.mkdir(parents=True, exist_ok=True)
    import psycopg

    from billingdb.errors import BillingError
    from billingdb.schema import temporary_database

    sections: list[str] = []
    started = time.monotonic()
    load_at_start = os.getloadavg()[0]
    try:
        with cluster(args.cluster, args.port) as cl, temporary_database(cl.url) as url:
            ctx = Context(str(PG_BIN / "pgbench"), {"billingdb": url}, Options(users=args.users))
            prepare(ctx)
            with ctx.connect("billingdb") as conn:
                settings = sqlfiles.run(conn, "profile_settings")[0]
            sections.append(profile_statements(ctx, cl, args.seconds, 4, raw_dir))
            sections.append(profile_plpgsql(ctx, args.calls, raw_dir))
            if args.http_seconds > 0:
                sections.append(profile_intake(ctx, cl, args.http_seconds, args.senders, raw_dir))
            if args.workers and args.workers_seconds > 0:
                sections.append(profile_workers(ctx, cl, args.workers_seconds, args.senders, args.workers))
            if args.state_seconds > 0:
                sections.append(profile_state(ctx, cl, args.state_seconds, raw_dir))
    except (BenchError, BillingError, psycopg.Error) as exc:
        print(f"profile: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("profile: interrupted", file=sys.stderr)
        return 130
    header = (f"## make profile: {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC\n\n"
              f"PostgreSQL {settings['server_version']} (cluster {PG_VERSION}/{args.cluster}, shared_buffers "
              f"{settings['shared_buffers']}, synchronous_commit {settings['synchronous_commit']}, "
              f"shared_preload_libraries '{settings['shared_preload_libraries']}', pg_stat_statements.track "
              f"{settings['pg_stat_statements_track']}, track_functions {settings['track_functions']}); "
              f"{args.users} seeded users; {os.cpu_count()} CPUs, load average {load_at_start:.2f} at start, "
              f"{os.getloadavg()[0]:.2f} at end; {time.monotonic() - started:.0f} s in all.\n")
    report = "\n\n".join([header, *sections]) + "\n"
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(report)
    print(report)
    print(f"report: {args.output}; py-spy raw stacks: {raw_dir}/", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
