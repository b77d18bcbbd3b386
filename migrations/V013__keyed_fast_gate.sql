-- gnomon schema, version 13: dispatch gating of keys far below their limits no longer excludes the claims and the
-- finishes of those keys (docs/design.md, "The claim, hard and cheap" and "Holding instead of re-queueing").
--
-- Dispatch gating (a submit, a promotion of due jobs, a schedule's firing: adapters/postgres/flow.py) locked every
-- key of its batch exclusively, counted what each key has in flight (running under a live lease, or dispatched) and
-- held the jobs beyond the limit. A submit holds those locks until it commits, after it has written its jobs: with
-- V011/V012 the claims and finishes of keys far below their limits share the keys' locks, and the submits were what
-- they still waited for (measured during `e2e.py --limits`: the only holders of exclusive key locks were the
-- submit's statements, while claims and wakes waited on advisory locks). Now gating first tries gnomon_gate_fast:
-- the keys' locks SHARED plus one of `stripes` exclusive gate stripes `gnomon:gate-stripe:<i>` (tried, never waited
-- for; a namespace of its own, apart from the claims' key stripes), then, in a fresh snapshot, for each key:
--
--     in_flight_k + stripes * share <= min_k  and  jobs of k in the batch <= share
--
-- (min_k: the smallest limit among the batch's jobs of k; in flight: as flow_sql.IN_FLIGHT counts it, leaving out the
-- jobs being decided). If every key passes, every job is admitted (dispatched) and nothing is held; otherwise the
-- attempt's locks are released (a subtransaction rolled back) and the caller gates exactly, as before.
--
-- The bound is the claim's (V011), for what is in flight instead of what runs: gating deciders ordered by their
-- snapshot; an earlier one is either visible or was fast and held another gate stripe (an exact one holds the key
-- exclusively); so a fast gating admits only what an exact one would in that order. Dispatch gating was never the
-- hard limit (the claim is), and wakers, which take the locks shared, already overlap each other; this changes
-- neither. No wake-up can be lost: a fast gating holds no job; whoever holds still locks exclusively.
--
-- Also: jobs_dispatched_concurrency no longer deduplicates, for the reason V012 gives for jobs_running_concurrency
-- (a claimed job's entry is marked dead on its own instead of being visited until VACUUM).

CREATE FUNCTION gnomon_gate_fast(ckeys text[], climits integer[], at timestamptz, deciding uuid[], stripes integer,
                                 share integer)
RETURNS boolean LANGUAGE plpgsql VOLATILE SET enable_bitmapscan = off AS $$
DECLARE
    taken boolean := false;
BEGIN
    PERFORM pg_advisory_xact_lock_shared(l.lock) FROM (
        SELECT DISTINCT hashtextextended('gnomon:key:' || k, 0) AS lock FROM unnest(ckeys) AS k ORDER BY lock) AS l;
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
        WHERE k.n > share
           OR (SELECT count(*) FILTER (WHERE r.lease_expires_at > at) FROM jobs AS r
               WHERE r.state = 'running' AND r.concurrency_key = k.key)
              + (SELECT count(*) FILTER (WHERE d.id <> ALL(deciding)) FROM jobs AS d
                 WHERE d.state = 'queued' AND d.held_for IS NULL AND d.concurrency_key = k.key)
              > k.lim - stripes * share) THEN
        RAISE EXCEPTION USING ERRCODE = 'GN001';
    END IF;
    RETURN true;
EXCEPTION WHEN SQLSTATE 'GN001' THEN
    RETURN false;
END $$;

ALTER INDEX jobs_dispatched_concurrency SET (deduplicate_items = off);
