-- gnomon schema, version 7: a batch with concurrency keys takes the exact path of the gated claim again, as in V005
-- (docs/design.md, "The claim, hard and cheap").
--
-- V006's fast path saves a claim the queue's exclusive lock, but a keyed batch still locks its keys exclusively (a
-- claim of noop jobs of 64 keys touches most of them, so such claims serialize on the keys anyway) and still needs the
-- full ranking statement: the fast attempt (a subtransaction, a settings read, a stripe, a count of the queue) only
-- came on top. Measured end to end with keys + max_running + max_per_second not binding: V006 behind V005 in 4
-- rounds of 5 (bench/README.md, "Flow control"). Unkeyed batches keep the fast path.

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
    FROM jobs AS c LEFT JOIN queue_settings AS s ON s.queue = c.queue AND (s.paused OR s.max_running IS NOT NULL)
    WHERE c.id = ANY(ids) AND c.state = 'queued';
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
        UPDATE jobs SET state = 'running', attempt = jobs.attempt + 1, version = jobs.version + 1, updated_at = at,
            started_at = at, finished_at = NULL, lease_worker = worker, lease_token = jobs.version + 1,
            lease_expires_at = expires, held_at = NULL, held_for = NULL
        WHERE jobs.id = ANY(cands) AND jobs.state = 'queued'
        RETURNING jobs.*;
        RETURN;
    END IF;
    RETURN QUERY
    WITH cand AS MATERIALIZED (
        SELECT c.id, c.queue, c.concurrency_key, c.concurrency_limit, c.priority, c.run_at FROM jobs AS c
        WHERE c.id = ANY(cands) AND c.state = 'queued'),
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
        SELECT c.id, c.queue, c.priority, c.run_at,
               c.concurrency_key IS NULL OR coalesce(kb.busy, 0) + row_number() OVER (
                   PARTITION BY c.concurrency_key ORDER BY c.priority DESC, c.run_at, c.id) <= c.concurrency_limit AS fits
        FROM cand AS c LEFT JOIN key_busy AS kb ON kb.key = c.concurrency_key),
    verdict AS MATERIALIZED (
        SELECT b.id, CASE WHEN NOT b.fits THEN 'key'
                          WHEN qr.room IS NOT NULL AND row_number() OVER (
                              PARTITION BY b.queue, b.fits ORDER BY b.priority DESC, b.run_at, b.id) > qr.room
                          THEN 'queue' END AS hold
        FROM by_key AS b LEFT JOIN queue_room AS qr ON qr.queue = b.queue),
    held AS (
        UPDATE jobs SET held_at = at, held_for = verdict.hold FROM verdict
        WHERE jobs.id = verdict.id AND verdict.hold IS NOT NULL AND jobs.state = 'queued' RETURNING jobs.id),
    started AS (
        UPDATE jobs SET state = 'running', attempt = jobs.attempt + 1, version = jobs.version + 1, updated_at = at,
            started_at = at, finished_at = NULL, lease_worker = worker, lease_token = jobs.version + 1,
            lease_expires_at = expires, held_at = NULL, held_for = NULL
        FROM verdict
        WHERE jobs.id = verdict.id AND verdict.hold IS NULL AND jobs.state = 'queued'
        RETURNING jobs.*)
    SELECT * FROM started;
END $$;
