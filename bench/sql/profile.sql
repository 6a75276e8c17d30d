-- Queries of `make profile` (bench/profile.py): where the time of one Stripe event goes in PostgreSQL
-- (pg_stat_statements, plprofiler, the function statistics), read in the profile's own PostgreSQL 15
-- cluster, whose shared_preload_libraries load pg_stat_statements and plprofiler.

-- name: profile_create_pg_stat_statements
-- The view and functions of pg_stat_statements in the profiled database (its library is preloaded).
CREATE EXTENSION IF NOT EXISTS pg_stat_statements;

-- name: profile_create_plprofiler
-- plprofiler's pl_profiler_* functions in the profiled database (its library is preloaded).
CREATE EXTENSION IF NOT EXISTS plprofiler;

-- name: profile_settings
-- The settings a profile depends on: the libraries loaded, what pg_stat_statements tracks.
SELECT
    current_setting('server_version') AS server_version,
    current_setting('shared_preload_libraries') AS shared_preload_libraries,
    current_setting('pg_stat_statements.track') AS pg_stat_statements_track,
    current_setting('track_functions') AS track_functions,
    current_setting('track_wal_io_timing') AS track_wal_io_timing,
    current_setting('synchronous_commit') AS synchronous_commit,
    current_setting('shared_buffers') AS shared_buffers;

-- name: profile_reset_statements
-- Forget the statements and function statistics gathered so far (seeding, checks), before a measured pass.
SELECT
    public.pg_stat_statements_reset() IS null AS statements_reset,
    pg_stat_reset() IS null AS stats_reset,
    pg_stat_reset_shared('wal') IS null AS wal_reset;

-- name: profile_wal
-- WAL written and flushed since the last reset (track_wal_io_timing = on gives the times, in ms): a commit
-- waits for its WAL to be flushed (fsync), and one flush may cover several commits.
SELECT
    w.wal_records,
    w.wal_bytes,
    w.wal_write,
    w.wal_sync,
    w.wal_write_time,
    w.wal_sync_time
FROM pg_catalog.pg_stat_wal AS w;

-- name: profile_top_statements
-- The statements of this database by total execution time. With pg_stat_statements.track = all a
-- statement run inside a PL/pgSQL function is counted as well (toplevel false), so a nested
-- statement's time is also part of the time of the statement that called it.
SELECT
    s.toplevel,
    s.calls,
    s.total_exec_time AS total_ms,
    s.mean_exec_time AS mean_ms,
    s.rows,
    s.shared_blks_hit + s.shared_blks_read AS blocks,
    s.wal_bytes,
    regexp_replace(s.query, '\s+', ' ', 'g') AS query
FROM public.pg_stat_statements AS s
INNER JOIN pg_catalog.pg_database AS d ON s.dbid = d.oid
WHERE d.datname = current_database()
ORDER BY s.total_exec_time DESC
LIMIT %(top)s;

-- name: profile_toplevel_total
-- The execution time of every top-level statement of this database: what the shares are taken of.
SELECT
    coalesce(sum(s.total_exec_time), 0) AS total_ms,
    coalesce(sum(s.calls), 0) AS calls
FROM public.pg_stat_statements AS s
INNER JOIN pg_catalog.pg_database AS d ON s.dbid = d.oid
WHERE d.datname = current_database() AND s.toplevel;

-- name: profile_function_stats
-- PL/pgSQL functions by their own time (track_functions = pl): self time leaves out the functions
-- they call; both include the SQL they run.
SELECT
    f.schemaname || '.' || f.funcname AS function,
    f.calls,
    f.total_time AS total_ms,
    f.self_time AS self_ms
FROM pg_catalog.pg_stat_user_functions AS f
ORDER BY f.self_time DESC
LIMIT %(top)s;

-- name: profile_plprofiler_on
-- Profile this session's PL/pgSQL into its own memory, from nothing (plprofiler 4.2 has no GUC for it;
-- its collect interval, 0 by default, stays 0: nothing is copied to shared memory).
SELECT
    public.pl_profiler_reset_local() IS null AS reset,
    public.pl_profiler_set_enabled_local(true) AS enabled;

-- name: profile_plprofiler_off
-- Stop profiling this session (what was gathered stays readable).
SELECT public.pl_profiler_set_enabled_local(false) AS enabled;

-- name: profile_plprofiler_callgraph
-- This session's call graph: each distinct stack of PL/pgSQL functions (outermost first), named,
-- with its calls and its total and self microseconds (self: the time not spent in a PL/pgSQL callee).
SELECT
    c.call_count AS calls,
    c.us_total,
    c.us_self,
    (
        SELECT array_agg(n.nspname || '.' || p.proname ORDER BY o.i)
        FROM unnest(c.stack) WITH ORDINALITY AS o (func_oid, i)
        INNER JOIN pg_catalog.pg_proc AS p ON o.func_oid = p.oid
        INNER JOIN pg_catalog.pg_namespace AS n ON p.pronamespace = n.oid
    ) AS stack
FROM public.pl_profiler_callgraph_local() AS c
ORDER BY c.us_total DESC;

-- name: profile_plprofiler_lines
-- Every source line of the functions this session profiled, with its statistics: a line with an
-- execution count starts a statement, whose microseconds include the statements nested in it and
-- the functions it calls. Line 0 is the whole function.
SELECT
    n.nspname || '.' || p.proname AS function,
    s.line_number,
    coalesce(l.exec_count, 0) AS exec_count,
    coalesce(l.total_time, 0) AS us_total,
    coalesce(l.longest_time, 0) AS us_longest,
    s.source
FROM public.pl_profiler_funcs_source(public.pl_profiler_func_oids_local()) AS s
INNER JOIN pg_catalog.pg_proc AS p ON s.func_oid = p.oid
INNER JOIN pg_catalog.pg_namespace AS n ON p.pronamespace = n.oid
LEFT JOIN public.pl_profiler_linestats_local() AS l
    ON s.func_oid = l.func_oid AND s.line_number = l.line_number
ORDER BY n.nspname, p.proname, s.line_number;
