-- gnomon schema, version 15: dispatch gating's fast check (V013, V014) is not taken for a key that has jobs held
-- behind it (docs/design.md, "The claim, hard and cheap").
--
-- V013 let a fast gating run beside a wake of the same key: both take the key's lock shared. The wake dispatches held
-- jobs up to the key's room, the gating admits its own, and neither sees the other's uncommitted jobs; V013's bound
-- only allowed for the other fast gatings (stripes x share), not for a wake, so together they could put more than the
-- limit in flight (a review's test, tests/integration/test_pg_gate_review.py: limit 300, 300 held, leases expired, a
-- wake and a submit of 32: 332 dispatched; 8 submits racing one wake: up to 556). Up to V012 gating took the key
-- exclusively and waited for wakes.
--
-- Now a key with a job held for its key takes the exact path. Why that is enough: only a holder (the exact gating or
-- claim, cancel_other) holds jobs, under the key's exclusive lock, which cannot overlap the fast gating's shared one;
-- so any held job a concurrent wake could dispatch was committed before the fast gating's count, which sees it and
-- gives up. What a wake dispatches while no job is held: nothing. Far below a limit keys seldom have held jobs, so the
-- fast path keeps its use. Same decision otherwise, same locks.

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
        WHERE k.n > share OR coalesce(b.busy, 0) > k.lim - stripes * share
           OR EXISTS (SELECT 1 FROM jobs AS h WHERE h.state = 'queued' AND h.held_for = 'key'
                      AND h.concurrency_key = k.key)) THEN
        RAISE EXCEPTION USING ERRCODE = 'GN001';
    END IF;
    RETURN true;
EXCEPTION WHEN SQLSTATE 'GN001' THEN
    RETURN false;
END $$;
