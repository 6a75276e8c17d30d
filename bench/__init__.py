"""``make bench``: billingdb's calls measured as ratios to pgbench on the same server.

One run, one server (docs/benchmarks.md): the embedded PostgreSQL started in a
temporary directory, or the server named by ``BILLINGDB_BENCH_DSN``. First the
pgbench baselines (``pgbench -S`` and the default tpcb-like), then our calls,
each driven by pgbench with a custom script from ``bench/scripts/`` in a
database migrated to head, at the same client counts. Every figure is printed
with its ratio to the matching baseline and the issue's target, and written as
JSON to ``bench/results/latest.json``.

Modules: ``benchmarks`` (the list of Benchmark entries: add new ones there),
``pgbench`` (running pgbench, parsing its output), ``server`` (the server and
its databases), ``sqlfiles`` (named queries from ``bench/sql/*.sql``),
``report`` (table and JSON), ``cli`` (options and the run order),
``stripe_events`` (issue 4's Stripe events: templates, bench helpers in the
database, checks) and ``http_intake`` (``billingdb serve`` as a child process
under signed events at a fixed rate).
"""
