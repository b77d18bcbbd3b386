-- gnomon schema, version 16: dispatch gating far below a key's limit reads a bound of what the key has in flight
-- instead of counting it (docs/design.md, "Dispatch gating reads a bound").
--
-- V013-V015's fast gating counted each key's jobs in flight (running under a live lease, or dispatched) at every
-- gated submit, promotion and firing: a read of every such row of the batch's keys, which grows with the backlog.
-- Measured (a submit-only run, 64 keys with limit 100,000, batches of 1,000): gnomon_gate_fast took 41 ms per batch
-- on average with up to 40,000 jobs dispatched, more than the COPY of the batch itself; keyed submits ran at 7,000-
-- 11,000 jobs/s against 17,000 unkeyed.
--
-- gate_bounds holds, per key, an upper bound of what it has in flight, in rows (key, stripe) that only grow: a fast
-- gating adds what it admits to the row of its gate stripe (0-7, the stripe lock it holds, so fast gatings never
-- wait for each other's rows), whoever dispatches held jobs (a wake, flow.bump) adds them to a row 8-15 (of its
-- backend), and an exact gating - the key locked exclusively, its in-flight jobs counted - sets the bound back to
-- what it counted plus what it admitted. Jobs leaving flight (finished, held, cancelled) are not subtracted: the
-- bound drifts up, and the first gating that finds it near the limit takes the exact path, which resets it. A key far
-- below its limit is counted about once per (limit - in flight) jobs admitted, instead of at every batch.
--
-- The rule of the fast path becomes: bound_k + stripes * share <= min_k (V013 had in_flight_k), with at most share
-- jobs of k in the batch and none of k held (V015). Safe as before: the bound is at least what is in flight among
-- committed jobs (every way into flight adds to it under the key's lock, shared or exclusive; the reset holds it
-- exclusively), and concurrent fast gatings are at most `stripes`, each adding at most `share` the others do not see.
-- A way into flight that does not add (a job queued by a version of gnomon before this one, during a rolling upgrade)
-- can only let more than the limit be dispatched; the claim still keeps what runs within the limit, as it always did.

CREATE TABLE gate_bounds (
    key text NOT NULL,
    stripe integer NOT NULL,
    admitted bigint NOT NULL,
    PRIMARY KEY (key, stripe)
);

-- What is in flight now, as the exact gating counts it (flow_sql.IN_FLIGHT, leases not checked: a bound).
INSERT INTO gate_bounds (key, stripe, admitted)
SELECT concurrency_key, 0, count(*) FROM jobs
WHERE concurrency_key IS NOT NULL AND (state = 'running' OR (state = 'queued' AND held_for IS NULL))
GROUP BY concurrency_key;

CREATE OR REPLACE FUNCTION gnomon_gate_fast(ckeys text[], climits integer[], at timestamptz, deciding uuid[],
                                            stripes integer, share integer)
RETURNS boolean LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    taken boolean := false;
    mine integer;
    keys text[];
BEGIN
    keys := ARRAY(SELECT DISTINCT k FROM unnest(ckeys) AS k);
    PERFORM pg_advisory_xact_lock_shared(l.lock) FROM (
        SELECT DISTINCT hashtextextended('gnomon:key:' || k, 0) AS lock FROM unnest(keys) AS k ORDER BY lock) AS l;
    FOR i IN 0 .. stripes - 1 LOOP
        mine := (pg_backend_pid() + i) % stripes;
        taken := pg_try_advisory_xact_lock(hashtextextended('gnomon:gate-stripe:' || mine, 0));
        EXIT WHEN taken;
    END LOOP;
    IF NOT taken THEN
        RAISE EXCEPTION USING ERRCODE = 'GN001';
    END IF;
    IF EXISTS (
        SELECT 1 FROM (SELECT c.key, count(*) AS n, min(c.lim) AS lim FROM unnest(ckeys, climits) AS c(key, lim)
                       GROUP BY c.key) AS k
        LEFT JOIN (SELECT g.key, sum(g.admitted) AS bound FROM gate_bounds AS g WHERE g.key = ANY(keys)
                   GROUP BY g.key) AS b ON b.key = k.key
        WHERE k.n > share OR coalesce(b.bound, 0) > k.lim - stripes * share
           OR EXISTS (SELECT 1 FROM jobs AS h WHERE h.state = 'queued' AND h.held_for = 'key'
                      AND h.concurrency_key = k.key)) THEN
        RAISE EXCEPTION USING ERRCODE = 'GN001';
    END IF;
    INSERT INTO gate_bounds AS g (key, stripe, admitted)
    SELECT c.key, mine, count(*) FROM unnest(ckeys) AS c(key) GROUP BY c.key ORDER BY c.key
    ON CONFLICT (key, stripe) DO UPDATE SET admitted = g.admitted + excluded.admitted;
    RETURN true;
EXCEPTION WHEN SQLSTATE 'GN001' THEN
    RETURN false;
END $$;
