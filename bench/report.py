"""The report: one row per (benchmark, client count), ratios to baselines, targets.

Printed as a table on stdout and written as JSON (``bench/results/latest.json``).
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.benchmarks import Benchmark
from bench.pgbench import Measurement

__all__ = ["Row", "Report", "RESULTS_DIR"]

RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass
class Row:
    name: str
    label: str
    clients: int
    tps: float | None = None
    transactions: int | None = None
    latency_ms: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    baseline: str | None = None
    baseline_label: str | None = None
    baseline_tps: float | None = None
    ratio: float | None = None
    target: float | None = None
    target_source: str | None = None
    result: str | None = None  # "pass" / "miss" when there is a target
    skipped: str | None = None  # why the row was not measured
    runs: list[float] | None = None  # every round's tps with --repeat
    round_ratios: list[float] | None = None  # every round's ratio with --repeat (ratio is their median)


@dataclass
class Report:
    header: dict[str, Any]
    rows: list[Row] = field(default_factory=list)
    error: str | None = None

    def add(self, bench: Benchmark, clients: int, runs: list[Measurement]) -> None:
        """The run with the median tps (the lower middle one for an even count); every round's tps kept."""
        m = sorted(runs, key=lambda r: r.tps)[(len(runs) - 1) // 2]
        row = Row(bench.name, bench.label, clients, round(m.tps, 1), m.transactions, m.latency_ms, dict(m.extra))
        if len(runs) > 1:
            row.runs = [round(r.tps, 1) for r in runs]
        self.rows.append(row)

    def skip(self, bench: Benchmark, clients: int, reason: str) -> None:
        self.rows.append(Row(bench.name, bench.label, clients, skipped=reason))

    def compare(self, benches: dict[str, Benchmark]) -> None:
        """Order rows as the benchmark list, then by clients; fill baseline figures, ratios, pass/miss."""
        order = {name: i for i, name in enumerate(benches)}
        self.rows.sort(key=lambda r: (order[r.name], r.clients))
        measured = {(r.name, r.clients): r for r in self.rows if r.tps is not None}
        for row in self.rows:
            bench = benches[row.name]
            if bench.baseline is None:
                continue
            row.baseline = bench.baseline
            row.baseline_label = benches[bench.baseline].label
            row.target, row.target_source = bench.target, bench.target_source
            base = measured.get((bench.baseline, bench.baseline_clients or row.clients))
            if base is None or row.tps is None or not base.tps:
                continue
            row.baseline_tps = base.tps
            row.ratio = round(row.tps / base.tps, 3)
            if row.runs and base.runs and len(row.runs) == len(base.runs):
                # --repeat: the median of the rounds' ratios (a run and its baseline share a round)
                row.round_ratios = [round(a / b, 3) for a, b in zip(row.runs, base.runs, strict=True)]
                row.ratio = round(statistics.median(row.round_ratios), 3)
            if row.target is not None:
                row.result = "pass" if row.ratio >= row.target else "miss"

    def targets(self) -> list[dict[str, Any]]:
        return [
            {
                "benchmark": r.name, "label": r.label, "clients": r.clients, "baseline": r.baseline,
                "ratio": r.ratio, "target": r.target, "source": r.target_source, "result": r.result,
            }
            for r in self.rows
            if r.target is not None
        ]

    # -- output -------------------------------------------------------------------

    def table(self) -> str:
        h = self.header
        lines = [
            f"billingdb bench: {h['server']['source']}, PostgreSQL {h['server'].get('server_version', '?')}, "
            f"{h['machine']['cpus']} CPUs, load average {h['machine'].get('load_average_at_start')} at start, "
            f"{h['machine'].get('load_average_at_end')} at end",
            f"{h['options']['duration']:g} s per run, pgbench -M {h['options']['protocol']}, "
            f"pgbench scale {h['options']['scale']}, {h['options']['users']} seeded users, {h['pgbench']}"
            + (f", median of {h['options']['repeat']} rounds (ratio: median of the rounds' ratios)"
               if h["options"]["repeat"] > 1 else ""),
            "",
        ]
        head = ("benchmark", "clients", "tps", "lat ms", "baseline", "base tps", "ratio", "target", "result")
        body: list[tuple[str, ...]] = []
        for r in self.rows:
            if r.skipped:
                body.append((r.label, str(r.clients), "-", "", r.baseline_label or "", "", "",
                             f">= {r.target:.2f}x" if r.target is not None else "", "skipped"))
                continue
            body.append((
                r.label,
                str(r.clients),
                f"{r.tps:.1f}" if r.tps is not None else "-",
                f"{r.latency_ms:.3f}" if r.latency_ms is not None else "",
                r.baseline_label or "",
                f"{r.baseline_tps:.1f}" if r.baseline_tps is not None else "",
                f"{r.ratio:.2f}x" if r.ratio is not None else "",
                f">= {r.target:.2f}x" if r.target is not None else "",
                (r.result or "") + "".join(f" {k}={v}" for k, v in r.extra.items()),
            ))
        widths = [max(len(x[i]) for x in [head, *body]) for i in range(len(head))]
        right = {1, 2, 3, 5, 6}

        def fmt(cells: tuple[str, ...]) -> str:
            return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                             for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

        lines.append(fmt(head))
        lines.append("  ".join("-" * w for w in widths))
        lines.extend(fmt(b) for b in body)

        targets = [r for r in self.rows if r.target is not None]
        if targets:
            lines += ["", "targets:"]
            seen: dict[str, list[Row]] = {}
            for r in targets:
                seen.setdefault(r.name, []).append(r)
            for rows in seen.values():
                first = rows[0]
                parts = [
                    f"{r.clients} client{'s' if r.clients != 1 else ''} "
                    + (f"{r.ratio:.2f}x {r.result}" if r.ratio is not None else (r.skipped and "skipped") or "n/a")
                    for r in rows
                ]
                lines.append(f"  {first.label} >= {first.target:.2f}x {first.baseline_label} "
                             f"({first.target_source}): " + "; ".join(parts))
        skipped = {r.name: r.skipped for r in self.rows if r.skipped}
        if skipped:
            lines += ["", "skipped:"]
            lines += [f"  {name}: {reason}" for name, reason in skipped.items()]
        if self.error:
            lines += ["", f"error: {self.error}"]
        return "\n".join(lines)

    def as_json(self) -> dict[str, Any]:
        return {
            **self.header,
            "results": [asdict(r) for r in self.rows],
            "targets": self.targets(),
            "error": self.error,
        }

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.as_json(), indent=2) + "\n")
