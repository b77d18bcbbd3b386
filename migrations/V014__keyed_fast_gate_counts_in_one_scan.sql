-- gnomon schema, version 14: dispatch gating's fast check (V013) counts what the keys have in flight in one
-- statement over all of them, as the exact gating does (flow_sql.IN_FLIGHT), instead of two subqueries per key
-- (docs/design.md, "The claim, hard and cheap").
--
-- V013 counted each key's running and dispatched jobs in subqueries run once per key. With the statistics as a burst
-- finds them (the table analysed while few jobs were queued), the planner read the dispatched ones through
-- jobs_queued_dispatched, every dispatched job of the cluster, filtered on the key, once per key: measured during
-- `e2e.py --limits` (auto_explain), 64 loops of ~1,170 rows, and gnomon_gate_fast took 65 ms per submit of 1,000 jobs
-- (track_functions), about 4 times what the exact gating's IN_FLIGHT costs. (Counting through the key's index alone,
-- forced, was no faster: 75 ms a call, the dead entries of claimed jobs.) Now one statement counts the keys' running
-- (live lease) and dispatched jobs, IN_FLIGHT's, planned as it is (bitmap scans allowed, as for IN_FLIGHT): at worst
-- every dispatched job once, not once per key. Same decision, same locks.

CREATE OR REPLACE FUNCTION gnomon_gate_fast(ckeys text[], climits integer[], at timestamptz, deciding uuid[],
                                            stripes integer, share integer)
RETURNS boolean LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    taken boolean := false;
    keys text[];
BEGIN
    keys := ARRAY(SELECT DISTINCT k FROM unnest(ckeys) AS k);
    PERFORM pg_advisory_xact_lock_shared(l.lock) FROM (
        SELECT DISTINCT hashtextextended('gnomon:key:' || k, 0) AS lock FROM unnest(keys) AS k ORDER BY lock) AS l;
    FOR i IN 0 .. stripes - 1 LOOP
        taken := pg_try_advisory_xact_lock(hashtextextended('gnomon:gate-stripe:' || (pg_backend_pid() + i) % stripes, 0));
        EXIT WHEN taken;
    END LOOP;
    IF NOT taken THEN
        RAISE EXCEPTION USING ERRCODE = 'GN001';
    END IF;
    IF EXISTS (
        SELECT 1 FROM (SELECT c.key, count(*) AS n, min(c.lim) AS lim FROM unnest(ckeys, climits) AS c(key, lim)
                       GROUP BY c.key) AS k
        LEFT JOIN (SELECT j.concurrency_key AS key, count(*) AS busy FROM jobs AS j
                   WHERE j.concurrency_key = ANY(keys)
                     AND ((j.state = 'running' AND j.lease_expires_at > at)
                          OR (j.state = 'queued' AND j.held_for IS NULL AND j.id <> ALL(deciding)))
                   GROUP BY j.concurrency_key) AS b ON b.key = k.key
        WHERE k.n > share OR coalesce(b.busy, 0) > k.lim - stripes * share) THEN
        RAISE EXCEPTION USING ERRCODE = 'GN001';
    END IF;
    RETURN true;
EXCEPTION WHEN SQLSTATE 'GN001' THEN
    RETURN false;
END $$;
