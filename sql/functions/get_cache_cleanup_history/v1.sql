-- get_cache_cleanup_history v1 (revision 0004).
CREATE OR REPLACE FUNCTION public.get_cache_cleanup_history(n integer DEFAULT 10)
RETURNS TABLE (started_at timestamptz, rows_deleted integer, duration_ms numeric)
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = ''
AS $function$
DECLARE
    v_n constant integer := get_cache_cleanup_history.n;
BEGIN
    -- A positive count is required.
    IF v_n IS NULL OR v_n < 1 THEN
        RAISE EXCEPTION 'get_cache_cleanup_history: n must be a positive integer (n=%)', coalesce(v_n::text, 'NULL')
            USING ERRCODE = '22023', HINT = 'Ask for the last n runs, e.g. get_cache_cleanup_history(10).';
    END IF;

    -- The last n runs, newest first.
    RETURN QUERY
    SELECT r.started_at, r.rows_deleted, r.duration_ms
    FROM public.cache_cleanup_runs AS r
    ORDER BY r.started_at DESC, r.id DESC
    LIMIT v_n;
END
$function$;

COMMENT ON FUNCTION public.get_cache_cleanup_history(integer) IS
'Contract: the last n runs of clear_expired_subscription_cache (default 10), newest first, as rows (started_at, '
'rows_deleted, duration_ms); the history keeps 7 days. Use as SELECT * FROM public.get_cache_cleanup_history(10). '
'Errors: 22023 when n is null or below 1.';

REVOKE ALL ON FUNCTION public.get_cache_cleanup_history(integer) FROM public, anon, authenticated;
GRANT EXECUTE ON FUNCTION public.get_cache_cleanup_history(integer) TO service_role;
