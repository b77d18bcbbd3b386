-- gnomon schema, version 5: the two flow-control operations that must lock before they decide, as functions.
--
-- A holder (the gated claim) and a waker (a write that frees slots) take advisory locks on the keys and queues they
-- count, and only then count and decide (docs/design.md, "Flow control"). Under READ COMMITTED a statement sees what
-- was committed when it began, so the decision cannot be in the statement that waited for the lock. A VOLATILE
-- PL/pgSQL function runs each of its statements with a fresh snapshot: one call locks, then decides on what the lock
-- waited for, in a single statement from the client (each statement costs a client more than the work here).
-- Lock ids: hashtextextended('gnomon:key:' || key, 0) and hashtextextended('gnomon:queue:' || queue, 0), taken in
-- sorted order by every transaction, so none deadlock on them.

-- Start the queued jobs among `ids` that their limits allow and hold the others (domain/flow.py's rule): the keys
-- of the candidates and their queues that limit starts (per the settings, or `limited`) are locked exclusively,
-- then running jobs (live leases) are counted per key and per limited queue, candidates ranked in start order
-- (priority, run_at, id), admitted by key, then by queue room among those their key admitted.
CREATE FUNCTION gnomon_claim_gated(ids uuid[], limited text[], worker text, at timestamptz, expires timestamptz)
RETURNS SETOF jobs LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(l.lock) FROM (
        SELECT hashtextextended('gnomon:key:' || j.concurrency_key, 0) AS lock FROM jobs AS j
        WHERE j.id = ANY(ids) AND j.state = 'queued' AND j.concurrency_key IS NOT NULL
        UNION
        SELECT hashtextextended('gnomon:queue:' || j.queue, 0) FROM jobs AS j
        WHERE j.id = ANY(ids) AND j.state = 'queued'
          AND (j.queue = ANY(limited) OR EXISTS (SELECT 1 FROM queue_settings AS s WHERE s.queue = j.queue
                                                 AND (s.paused OR s.max_running IS NOT NULL)))
        ORDER BY lock) AS l;
    RETURN QUERY
    WITH cand AS MATERIALIZED (
        SELECT c.id, c.queue, c.concurrency_key, c.concurrency_limit, c.priority, c.run_at FROM jobs AS c
        WHERE c.id = ANY(ids) AND c.state = 'queued'),
    key_busy AS MATERIALIZED (
        SELECT r.concurrency_key AS key, count(*) AS busy FROM jobs AS r
        WHERE r.state = 'running' AND r.lease_expires_at > at
          AND r.concurrency_key = ANY(ARRAY(SELECT DISTINCT concurrency_key FROM cand WHERE concurrency_key IS NOT NULL))
        GROUP BY r.concurrency_key),
    queue_room AS MATERIALIZED (
        SELECT s.queue, CASE WHEN s.paused THEN 0 ELSE s.max_running - (
            SELECT count(*) FROM jobs AS r WHERE r.state = 'running' AND r.queue = s.queue
            AND r.lease_expires_at > at) END AS room
        FROM queue_settings AS s
        WHERE s.queue IN (SELECT queue FROM cand) AND (s.paused OR s.max_running IS NOT NULL)),
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

-- After a write that freed slots of these keys and queues (in the caller's transaction), or from the sweep: lock
-- them shared (wakers never wait for each other, only for holders), then wake the held jobs that have room - a key's
-- room is the limit of its first held job minus what it has in flight (running under a live lease, or dispatched),
-- a queue's is max_running minus its running jobs (up to max_wake when it no longer limits, none while it is paused)
-- - in start order, held before held_before (NULL: any), skipping rows another waker has just locked. They come
-- back unheld, stamped dispatched at `at`, at most max_wake of them.
CREATE FUNCTION gnomon_wake(keys text[], queues text[], at timestamptz, max_wake bigint, held_before timestamptz)
RETURNS SETOF jobs LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    before constant timestamptz := coalesce(held_before, 'infinity');
BEGIN
    PERFORM pg_advisory_xact_lock_shared(l.lock) FROM (
        SELECT hashtextextended('gnomon:key:' || k, 0) AS lock FROM unnest(keys) AS k
        UNION
        SELECT hashtextextended('gnomon:queue:' || q, 0) FROM unnest(queues) AS q
        ORDER BY lock) AS l;
    RETURN QUERY
    WITH key_room AS MATERIALIZED (
        SELECT k.key, head.concurrency_limit
            - (SELECT count(*) FROM jobs AS r WHERE r.state = 'running' AND r.concurrency_key = k.key
               AND r.lease_expires_at > at)
            - (SELECT count(*) FROM jobs AS d WHERE d.state = 'queued' AND d.held_for IS NULL
               AND d.concurrency_key = k.key) AS room
        FROM (SELECT DISTINCT key FROM unnest(keys) AS key) AS k
        CROSS JOIN LATERAL (
            SELECT h.concurrency_limit FROM jobs AS h
            WHERE h.state = 'queued' AND h.held_for = 'key' AND h.concurrency_key = k.key AND h.held_at < before
            ORDER BY h.priority DESC, h.run_at, h.id LIMIT 1) AS head),
    key_woken AS MATERIALIZED (
        SELECT w.id FROM key_room CROSS JOIN LATERAL (
            SELECT h.id FROM jobs AS h
            WHERE h.state = 'queued' AND h.held_for = 'key' AND h.concurrency_key = key_room.key
              AND h.held_at < before
            ORDER BY h.priority DESC, h.run_at, h.id LIMIT greatest(key_room.room, 0)
            FOR UPDATE SKIP LOCKED) AS w),
    queue_room AS MATERIALIZED (
        SELECT q.queue, CASE WHEN s.paused THEN 0 WHEN s.max_running IS NULL THEN max_wake
                             ELSE s.max_running - (SELECT count(*) FROM jobs AS r WHERE r.state = 'running'
                                                   AND r.queue = q.queue AND r.lease_expires_at > at) END AS room
        FROM (SELECT DISTINCT queue FROM unnest(queues) AS queue) AS q
        LEFT JOIN queue_settings AS s ON s.queue = q.queue
        WHERE EXISTS (SELECT 1 FROM jobs AS h WHERE h.state = 'queued' AND h.held_for = 'queue' AND h.queue = q.queue
                      AND h.held_at < before)),
    queue_woken AS MATERIALIZED (
        SELECT w.id FROM queue_room CROSS JOIN LATERAL (
            SELECT h.id FROM jobs AS h
            WHERE h.state = 'queued' AND h.held_for = 'queue' AND h.queue = queue_room.queue AND h.held_at < before
            ORDER BY h.priority DESC, h.run_at, h.id LIMIT greatest(queue_room.room, 0)
            FOR UPDATE SKIP LOCKED) AS w),
    woken AS (
        UPDATE jobs SET held_at = NULL, held_for = NULL, dispatched_at = at
        WHERE jobs.id = ANY(ARRAY(SELECT id FROM key_woken UNION ALL SELECT id FROM queue_woken LIMIT max_wake))
        RETURNING jobs.*)
    SELECT * FROM woken;
END $$;
