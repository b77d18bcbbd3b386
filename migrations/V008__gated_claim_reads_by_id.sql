-- gnomon schema, version 8: the gated claim reads its candidates by primary key, whatever the statistics say
-- (docs/design.md, "The claim, hard and cheap").
--
-- V005-V007 looked the candidates up with `id = ANY(ids) AND state = 'queued'`. When the statistics say that few
-- jobs are queued (a fresh table, or one analysed between bursts: in bench/e2e.py, after the warm-up's 200 jobs had
-- succeeded), the planner scans every queued job through jobs_state_id on `state = 'queued'` alone and filters on
-- the ids: with 20,000 queued jobs, ~18 ms per statement, twice per claim (the candidates, then the UPDATE), where
-- the lookups by id take ~0.2 ms. That was most of what max_running cost end to end (bench/README.md, "Flow
-- control"). The one-statement claim (sql.CLAIM) has avoided it since its start; the gated claim now does as it
-- does: the ids are looked up alone behind an optimization fence (OFFSET 0: no condition on the state is pushed
-- into the scan, so no index on the state can serve it), and the state is compared afterwards - in the UPDATEs,
-- to the state read there (re-checked on the locked row), never to the literal 'queued', so the planner derives no
-- condition on the state of the updated table either. Decisions, locks and results are V007's.

CREATE OR REPLACE FUNCTION gnomon_claim_gated(ids uuid[], limited text[], worker text, at timestamptz,
                                              expires timestamptz)
RETURNS SETOF jobs LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    stripes constant integer := 8;
    cands uuid[];
    keys text[];
    queues text[];
    hopeless boolean;
    fast boolean := false;
BEGIN
    -- The candidates, their keys and their limited queues, read before the locks: the decision is made on these
    -- candidates only (a job that became queued since was neither locked for nor checked; it is left, as if stale).
    -- Hopeless for the fast path: a paused queue, or a batch bigger than a stripe's share of a queue's limit. A
    -- batch with keys takes the exact path (V007).
    SELECT coalesce(array_agg(c.id), '{}'),
           coalesce(array_agg(DISTINCT c.concurrency_key) FILTER (WHERE c.concurrency_key IS NOT NULL), '{}'),
           coalesce(array_agg(DISTINCT c.queue) FILTER (WHERE c.queue = ANY(limited) OR s.queue IS NOT NULL), '{}'),
           coalesce(bool_or(s.paused), false) OR count(*) > coalesce(min(s.max_running) / (2 * stripes), count(*))
    INTO cands, keys, queues, hopeless
    FROM (SELECT j.id, j.queue, j.concurrency_key, j.state FROM jobs AS j WHERE j.id = ANY(ids) OFFSET 0) AS c
    LEFT JOIN queue_settings AS s ON s.queue = c.queue AND (s.paused OR s.max_running IS NOT NULL)
    WHERE c.state = 'queued';
    IF queues <> '{}' AND keys = '{}' AND NOT hopeless THEN
        fast := gnomon_claim_fast(keys, queues, cardinality(cands), at, stripes);
    END IF;
    IF NOT fast THEN
        PERFORM pg_advisory_xact_lock(l.lock) FROM (
            SELECT hashtextextended('gnomon:key:' || k, 0) AS lock FROM unnest(keys) AS k
            UNION
            SELECT hashtextextended('gnomon:queue:' || q, 0) FROM unnest(queues) AS q
            ORDER BY lock) AS l;
    ELSIF keys = '{}' THEN  -- nothing left to count: start them all
        RETURN QUERY
        WITH wanted AS MATERIALIZED (
            SELECT j.id, j.state, j.state = 'queued' AS ready FROM jobs AS j WHERE j.id = ANY(cands))
        UPDATE jobs SET state = 'running', attempt = jobs.attempt + 1, version = jobs.version + 1, updated_at = at,
            started_at = at, finished_at = NULL, lease_worker = worker, lease_token = jobs.version + 1,
            lease_expires_at = expires, held_at = NULL, held_for = NULL
        FROM wanted
        WHERE jobs.id = wanted.id AND jobs.state = wanted.state AND wanted.ready
        RETURNING jobs.*;
        RETURN;
    END IF;
    RETURN QUERY
    WITH cand AS MATERIALIZED (
        SELECT c.id, c.queue, c.concurrency_key, c.concurrency_limit, c.priority, c.run_at, c.state
        FROM (SELECT j.* FROM jobs AS j WHERE j.id = ANY(cands) OFFSET 0) AS c
        WHERE c.state = 'queued'),
    key_busy AS MATERIALIZED (
        SELECT r.concurrency_key AS key, count(*) AS busy FROM jobs AS r
        WHERE r.state = 'running' AND r.lease_expires_at > at AND r.concurrency_key = ANY(keys)
        GROUP BY r.concurrency_key),
    queue_room AS MATERIALIZED (
        SELECT s.queue, CASE WHEN s.paused THEN 0 ELSE s.max_running - (
            SELECT count(*) FROM jobs AS r WHERE r.state = 'running' AND r.queue = s.queue
            AND r.lease_expires_at > at) END AS room
        FROM queue_settings AS s
        WHERE NOT fast AND s.queue IN (SELECT queue FROM cand) AND (s.paused OR s.max_running IS NOT NULL)),
    by_key AS (
        SELECT c.id, c.queue, c.priority, c.run_at, c.state,
               c.concurrency_key IS NULL OR coalesce(kb.busy, 0) + row_number() OVER (
                   PARTITION BY c.concurrency_key ORDER BY c.priority DESC, c.run_at, c.id) <= c.concurrency_limit AS fits
        FROM cand AS c LEFT JOIN key_busy AS kb ON kb.key = c.concurrency_key),
    verdict AS MATERIALIZED (
        SELECT b.id, b.state, CASE WHEN NOT b.fits THEN 'key'
                                   WHEN qr.room IS NOT NULL AND row_number() OVER (
                                       PARTITION BY b.queue, b.fits ORDER BY b.priority DESC, b.run_at, b.id) > qr.room
                                   THEN 'queue' END AS hold
        FROM by_key AS b LEFT JOIN queue_room AS qr ON qr.queue = b.queue),
    held AS (
        UPDATE jobs SET held_at = at, held_for = verdict.hold FROM verdict
        WHERE jobs.id = verdict.id AND verdict.hold IS NOT NULL AND jobs.state = verdict.state RETURNING jobs.id),
    started AS (
        UPDATE jobs SET state = 'running', attempt = jobs.attempt + 1, version = jobs.version + 1, updated_at = at,
            started_at = at, finished_at = NULL, lease_worker = worker, lease_token = jobs.version + 1,
            lease_expires_at = expires, held_at = NULL, held_for = NULL
        FROM verdict
        WHERE jobs.id = verdict.id AND verdict.hold IS NULL AND jobs.state = verdict.state
        RETURNING jobs.*)
    SELECT * FROM started;
END $$;
