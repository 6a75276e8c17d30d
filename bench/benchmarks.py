"""What ``make bench`` measures: a list of Benchmark entries.

Each entry names the database it runs in, how it is driven (a pgbench built-in,
a pgbench script from ``bench/scripts/``, or its own ``measure`` function),
what to do before each run (``setup``), a one-call sanity check, the baseline
its figure is divided by and the target ratio. The CLI runs the entries in
list order, baselines first, at every client count (or the entry's own).

To add a benchmark (issue 4, for instance), append an entry::

    Benchmark(
        name="process_stripe_event",
        label="process_stripe_event, events/s",
        database="billingdb",
        script="process_stripe_event.sql",
        setup=setup_events,             # e.g. link customers, set plans
        requires=("process_stripe_event",),
        baseline="tpcb_like", target=0.5, target_source="issue 4",
        clients=(4,),                   # measured at 4 clients only
    )

and for something pgbench cannot drive (the HTTP intake), give ``measure`` a
function ``(ctx, benchmark, clients, seconds) -> Measurement`` (p50/p99 in
``extra``, shown in the table's result column and kept in the JSON).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.rows import dict_row

from bench import http_intake, sqlfiles, stripe_events
from bench.errors import BenchError
from bench.pgbench import Measurement
from bench.server import log

__all__ = ["Benchmark", "Context", "BENCHMARKS", "by_name"]

#: Seeded users are bench_user_1 .. bench_user_N (distinct-user runs pick one at
#: random); bench_user_0 is the hot user every client of the hot-user run hits.
USER_PREFIX = "bench_user_"
HOT_USER = f"{USER_PREFIX}0"
PRICE_ID = "price_bench"
BALANCE = 1_000_000  # credits per user: far more than a run deducts
HOT_BALANCE = 1_000_000_000  # the hot user takes every deduction of its runs
CACHE_TTL_HITS = 86_400  # seconds: nothing expires during a run
CACHE_TTL_MISSES = 0  # every read recomputes, but a read racing a concurrent miss's commit (see cache_reads)


@dataclass
class Options:
    clients: tuple[int, ...] = (1, 4)
    duration: float = 10.0
    users: int = 10_000
    scale: int = 10
    protocol: str = "prepared"
    repeat: int = 3
    warmup: float = 2.0  # seconds, once per benchmark before its runs; 0: none
    replay_events: int = 20_000  # events per events_replay run (its duration is this, not --duration)


@dataclass
class Context:
    """What setups, checks and measures get: the databases, pgbench and the options."""

    pgbench: str
    urls: dict[str, str]
    options: Options
    done: set[str] = field(default_factory=set)
    #: The latest (round's) measurement of each (benchmark, clients): what a rate relative to a baseline reads.
    measured: dict[tuple[str, int], Measurement] = field(default_factory=dict)

    def connect(self, database: str) -> psycopg.Connection[dict[str, Any]]:
        return psycopg.connect(self.urls[database], autocommit=True, row_factory=dict_row)

    def migrate_to_head(self, what: str) -> None:
        """``alembic upgrade head`` on the billingdb database; its failure is a BenchError naming ``what``."""
        from alembic import command

        from billingdb.migrate import alembic_config

        log("alembic upgrade head")
        try:
            command.upgrade(alembic_config(url=self.urls["billingdb"]), "head")
        except Exception as exc:
            raise BenchError(f"migrating {what} to head failed: {exc}") from exc

    def once(self, key: str, action: Callable[[Context], None]) -> None:
        """Run ``action`` the first time ``key`` is asked for in this run."""
        if key not in self.done:
            action(self)
            self.done.add(key)

    @property
    def variables(self) -> dict[str, Any]:
        """pgbench -D variables every script may use."""
        return {"users": self.options.users}


@dataclass(frozen=True)
class Benchmark:
    name: str  # key in the JSON and for --only
    label: str  # shown in the table
    database: str  # "pgbench" or "billingdb"
    builtin: str | None = None  # pgbench -b NAME
    script: str | None = None  # pgbench -f bench/scripts/NAME (with -n)
    setup: Callable[[Context], None] | None = None  # before every run
    check: Callable[[Context], None] | None = None  # after setup: one call behaves as assumed
    counter: str | None = None  # bench query whose value grows by exactly one per transaction
    requires: tuple[str, ...] = ()  # public functions that must exist at head
    baseline: str | None = None  # name of the entry this one is divided by
    baseline_clients: int | None = None  # the baseline's client count to divide by (default: the same)
    target: float | None = None  # minimum ratio to baseline
    target_source: str | None = None  # where the target comes from
    clients: tuple[int, ...] | None = None  # fixed client counts (default: --clients)
    measure: Callable[[Context, Benchmark, int, float], Measurement] | None = None  # (ctx, self, clients, s)


# -- setups and checks --------------------------------------------------------


def _seed(ctx: Context) -> None:
    """Plan, customers, active subscriptions and balances, all through billingdb's functions."""
    params = {
        "users": ctx.options.users,
        "prefix": USER_PREFIX,
        "price_id": PRICE_ID,
        "balance": BALANCE,
        "hot_balance": HOT_BALANCE,
    }
    with ctx.connect("billingdb") as conn:
        for query in ("seed_plan", "seed_customers", "seed_subscriptions", "seed_credits"):
            sqlfiles.run(conn, query, params)
        row = sqlfiles.run(conn, "seed_check", params)[0]
        if row["usable"] != row["total"]:
            raise BenchError(
                f"seeding: {row['total'] - row['usable']} of {row['total']} users cannot use credits "
                f"(first such state: {row['sample']})"
            )
        sqlfiles.run(conn, "vacuum_analyze")


def seed(ctx: Context) -> None:
    ctx.once("seed", _seed)


def _set_ttl(ctx: Context, seconds: int) -> None:
    with ctx.connect("billingdb") as conn:
        sqlfiles.run(conn, "set_cache_ttl", {"ttl": str(seconds)})
        sqlfiles.run(conn, "clear_cache")


def setup_deductions(ctx: Context) -> None:
    seed(ctx)


def setup_cache_hits(ctx: Context) -> None:
    """A long TTL and every user's state cached before the run."""
    seed(ctx)
    _set_ttl(ctx, CACHE_TTL_HITS)
    with ctx.connect("billingdb") as conn:
        sqlfiles.run(conn, "warm_cache", {"users": ctx.options.users, "prefix": USER_PREFIX})


def setup_cache_misses(ctx: Context) -> None:
    """TTL 0 and an empty cache: every read recomputes the state."""
    seed(ctx)
    _set_ttl(ctx, CACHE_TTL_MISSES)


def _state(conn: psycopg.Connection[Any], user_id: str) -> dict[str, Any]:
    state = sqlfiles.value(conn, "sample_state", {"user_id": user_id})
    if not isinstance(state, dict):
        raise BenchError(f"get_user_subscription_state({user_id!r}) returned {state!r}")
    return state


def _check_cached(expected: bool) -> Callable[[Context], None]:
    def check(ctx: Context) -> None:
        user_id = f"{USER_PREFIX}1"
        with ctx.connect("billingdb") as conn:
            _state(conn, user_id)
            state = _state(conn, user_id)
        if state.get("cached") is not expected:
            raise BenchError(
                f"a cache-{'hit' if expected else 'miss'} run needs cached={expected} on a repeated read, "
                f"got {state!r}"
            )

    return check


def _check_deduction(user_id: str) -> Callable[[Context], None]:
    def check(ctx: Context) -> None:
        with ctx.connect("billingdb") as conn:
            result = sqlfiles.value(conn, "sample_deduction", {"user_id": user_id})
        if not isinstance(result, dict) or result.get("success") is not True:
            raise BenchError(f"use_credits_validated({user_id!r}, 1, ...) did not succeed: {result!r}")

    return check


# -- the list -------------------------------------------------------------------

BENCHMARKS: list[Benchmark] = [
    Benchmark(name="select_only", label="pgbench -S", database="pgbench", builtin="select-only"),
    Benchmark(name="tpcb_like", label="pgbench tpcb-like", database="pgbench", builtin="tpcb-like"),
    Benchmark(
        name="deduct_distinct",
        label="use_credits_validated, distinct users",
        database="billingdb",
        script="deduct_distinct.sql",
        setup=setup_deductions,
        check=_check_deduction(f"{USER_PREFIX}1"),
        counter="usage_count",
        requires=("use_credits_validated", "set_plan", "apply_subscription_change", "grant_credits"),
        baseline="tpcb_like",
        target=0.7,
        target_source="issue 3",
    ),
    Benchmark(
        name="deduct_hot",
        label="use_credits_validated, one hot user",
        database="billingdb",
        script="deduct_hot.sql",
        setup=setup_deductions,
        check=_check_deduction(HOT_USER),
        counter="usage_count",
        requires=("use_credits_validated", "set_plan", "apply_subscription_change", "grant_credits"),
        baseline="tpcb_like",
    ),
    Benchmark(
        name="state_cache_hit",
        label="get_user_subscription_state, cache hits",
        database="billingdb",
        script="state_read.sql",
        setup=setup_cache_hits,
        check=_check_cached(True),
        counter="cache_hits",
        requires=("get_user_subscription_state", "clear_all_subscription_cache", "get_subscription_cache_status"),
        baseline="select_only",
        target=0.6,
        target_source="issue 3",
    ),
    Benchmark(
        name="state_cache_miss",
        label="get_user_subscription_state, cache misses",
        database="billingdb",
        script="state_read.sql",
        setup=setup_cache_misses,
        check=_check_cached(False),
        counter="cache_reads",
        requires=("get_user_subscription_state", "clear_all_subscription_cache", "get_subscription_cache_status"),
        baseline="select_only",
    ),
]


# -- issue 4: Stripe events (bench/stripe_events.py, bench/http_intake.py) ------


def setup_events(ctx: Context) -> None:
    """The seed, then schema bench: event templates, bench.event_seq, bench.next_event."""
    seed(ctx)
    ctx.once("stripe_events", lambda c: stripe_events.install(c, PRICE_ID, USER_PREFIX))


def setup_duplicates(ctx: Context) -> None:
    """As setup_events, and the pool of events delivered once (bench.delivered)."""
    setup_events(ctx)
    ctx.once("stripe_duplicates", stripe_events.seed_duplicates)


_EVENTS_REQUIRE = ("process_stripe_event", "set_plan", "apply_subscription_change", "link_stripe_customer")

BENCHMARKS += [
    Benchmark(
        name="process_stripe_event",
        label="process_stripe_event, events/s",
        database="billingdb",
        script="process_stripe_event.sql",
        setup=setup_events,
        check=stripe_events.check_events,
        counter="events_processed",
        requires=_EVENTS_REQUIRE,
        baseline="tpcb_like",
        target=0.5,
        target_source="issue 4",
        clients=(4,),
    ),
    Benchmark(
        name="process_stripe_event_duplicate",
        label="process_stripe_event, duplicates/s",
        database="billingdb",
        script="process_stripe_event_duplicate.sql",
        setup=setup_duplicates,
        check=stripe_events.check_duplicates,
        requires=_EVENTS_REQUIRE,
        baseline="tpcb_like",
        clients=(4,),
    ),
    *(
        Benchmark(
            name=f"http_intake_x{factor:g}",
            label=f"billingdb serve, {factor:g}x tpcb-like offered, events/s",
            database="billingdb",
            setup=setup_events,
            check=stripe_events.check_events,
            counter="events_done",
            requires=_EVENTS_REQUIRE,
            baseline="tpcb_like",
            baseline_clients=http_intake.BASELINE_CLIENTS,
            target=http_intake.SATURATION_TARGET if factor == 1 else None,
            target_source="issue 19" if factor == 1 else None,
            clients=(http_intake.SENDERS,),
            measure=http_intake.measure_relative(factor, PRICE_ID, USER_PREFIX),
        )
        for factor in http_intake.OFFERED
    ),
]


def by_name() -> dict[str, Benchmark]:
    return {b.name: b for b in BENCHMARKS}


# -- issue 6: credit holds and the application API (bench/http_api.py) ----------

from bench import http_api  # noqa: E402  (kept with the entries that use it)


def _check_hold_commit(ctx: Context) -> None:
    user_id = f"{USER_PREFIX}1"
    with ctx.connect("billingdb") as conn:
        result = sqlfiles.value(conn, "sample_hold_commit", {"user_id": user_id})
    if not isinstance(result, dict) or result.get("status") != "committed":
        raise BenchError(f"reserve_credits + commit_credit_hold of {user_id!r} did not commit: {result!r}")


BENCHMARKS += [
    Benchmark(
        name="hold_commit",
        label="reserve_credits + commit_credit_hold, pairs/s",
        database="billingdb",
        script="hold_commit.sql",
        setup=setup_deductions,
        check=_check_hold_commit,
        counter="committed_holds",
        requires=("reserve_credits", "commit_credit_hold", "set_plan", "grant_credits"),
        baseline="tpcb_like",
        clients=(4,),
    ),
    Benchmark(
        name="http_state",
        label="GET /stripe/subscription/state (JWT), requests/s",
        database="billingdb",
        setup=setup_cache_hits,
        check=_check_cached(True),
        requires=("get_user_subscription_state", "reserve_credits"),
        baseline="select_only",
        clients=(4,),
        measure=http_api.measure_state_reads(USER_PREFIX),
    ),
]


# -- issue 17: the batch path (bench/replay.py) -----------------------------------

from bench import replay  # noqa: E402  (kept with the entry that uses it)

BENCHMARKS += [
    Benchmark(
        name="events_replay",
        label="billingdb events replay of a file, events/s",
        database="billingdb",
        setup=setup_events,
        check=stripe_events.check_events,
        counter="events_processed",
        requires=(*_EVENTS_REQUIRE, "process_stripe_events"),
        baseline="tpcb_like",
        target=3.0,
        target_source="issue 17",
        clients=(1,),  # one connection, as the command runs
        measure=replay.measure_replay(PRICE_ID, USER_PREFIX),
    ),
]
