-- gnomon schema, version 6: a claim of a queue far below its max_running no longer excludes the others
-- (docs/design.md, "The claim, hard and cheap").
--
-- V005's gnomon_claim_gated took every limited queue's lock exclusively: one decider per queue across the cluster,
-- and every finish of the queue (a waker, which takes the lock shared) waited for it. Now a claim first tries the
-- fast path, which takes the queue's lock SHARED plus one of `stripes` exclusive stripe locks of the queue (tried,
-- never waited for), then, in a fresh snapshot, checks that the queue is far from its limit:
--
--     running + stripes * share <= max_running  and  candidates of the queue <= share,
--     share = max_running / (2 * stripes)  (integer division: with max_running < 2 * stripes, never fast)
--
-- and if so starts its candidates without counting the queue again (keys are still counted, under their exclusive
-- locks). Otherwise (paused, near the limit, no stripe free, a batch too big) the fast attempt's locks are released
-- (a subtransaction rolled back) and the claim takes V005's exact path: the queue's lock exclusively, then counts.
--
-- Why the limit still holds. Take any moment t and, among the claims committed by t, the one X whose decision
-- snapshot is the latest. A claim committed by t is either visible to X (counted in X's `running`, or no longer
-- running) or X itself, or a claim Y that took its snapshot before X's and committed after it: Y was deciding while
-- X's snapshot was taken, holding its locks. If X was exact, it held the queue exclusively, so no such Y exists and
-- X started at most max_running - running. If X was fast, every such Y was fast too (an exact claim excludes X's
-- shared lock), each held a stripe other than X's (at most stripes - 1 of them) and started at most `share`. So
-- what runs at t is at most running + share + (stripes - 1) * share <= max_running. The count is of live leases, as
-- before: a lost worker's slot frees when its lease expires, and nothing is stored that could leak.
--
-- Why no wake-up is lost. Only the exact path holds jobs for their queue, and it still excludes the wakers (shared);
-- the fast path holds jobs only for their key, whose lock it takes exclusively as before.
--
-- Also: a fast batch without keys starts through a plain UPDATE (no ranking to plan), and gnomon_wake looks for held
-- jobs with one probe per key and queue before its full statement (at the end of this file).

CREATE FUNCTION gnomon_claim_fast(keys text[], queues text[], n integer, at timestamptz, stripes integer)
RETURNS boolean LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    queue_name text;
    cap integer;
    is_paused boolean;
    share integer;
    taken boolean;
    running bigint;
BEGIN
    IF keys = '{}' AND cardinality(queues) = 1 THEN
        PERFORM pg_advisory_xact_lock_shared(hashtextextended('gnomon:queue:' || queues[1], 0));
    ELSE
        PERFORM CASE WHEN l.shared THEN pg_advisory_xact_lock_shared(l.lock) ELSE pg_advisory_xact_lock(l.lock) END
        FROM (SELECT hashtextextended('gnomon:key:' || k, 0) AS lock, false AS shared FROM unnest(keys) AS k
              UNION ALL
              SELECT hashtextextended('gnomon:queue:' || q, 0), true FROM unnest(queues) AS q
              ORDER BY lock, shared) AS l;
    END IF;
    FOREACH queue_name IN ARRAY queues LOOP
        SELECT s.max_running, s.paused INTO cap, is_paused FROM queue_settings AS s WHERE s.queue = queue_name;
        CONTINUE WHEN NOT FOUND OR NOT is_paused AND cap IS NULL;
        share := cap / (2 * stripes);
        IF is_paused OR n > share THEN
            RAISE EXCEPTION USING ERRCODE = 'GN001';
        END IF;
        taken := false;
        FOR i IN 0 .. stripes - 1 LOOP
            taken := pg_try_advisory_xact_lock(
                hashtextextended('gnomon:queue:' || queue_name || ':' || (pg_backend_pid() + i) % stripes, 0));
            EXIT WHEN taken;
        END LOOP;
        IF NOT taken THEN
            RAISE EXCEPTION USING ERRCODE = 'GN001';
        END IF;
        SELECT count(*) INTO running FROM jobs AS r
        WHERE r.state = 'running' AND r.queue = queue_name AND r.lease_expires_at > at;
        IF running > cap - stripes * share THEN
            RAISE EXCEPTION USING ERRCODE = 'GN001';
        END IF;
    END LOOP;
    RETURN true;
EXCEPTION WHEN SQLSTATE 'GN001' THEN
    RETURN false;
END $$;

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
    -- Hopeless for the fast path: a paused queue, or a batch bigger than a stripe's share of a queue's limit.
    SELECT coalesce(array_agg(c.id), '{}'),
           coalesce(array_agg(DISTINCT c.concurrency_key) FILTER (WHERE c.concurrency_key IS NOT NULL), '{}'),
           coalesce(array_agg(DISTINCT c.queue) FILTER (WHERE c.queue = ANY(limited) OR s.queue IS NOT NULL), '{}'),
           coalesce(bool_or(s.paused), false) OR count(*) > coalesce(min(s.max_running) / (2 * stripes), count(*))
    INTO cands, keys, queues, hopeless
    FROM jobs AS c LEFT JOIN queue_settings AS s ON s.queue = c.queue AND (s.paused OR s.max_running IS NOT NULL)
    WHERE c.id = ANY(ids) AND c.state = 'queued';
    IF queues <> '{}' AND NOT hopeless THEN
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

-- The wake, as in V005, with a look for held jobs first (after the lock, so it is as good as the full look): a
-- finish of a limited queue or of keyed jobs usually finds nothing held, and this probe of the two held indexes is
-- cheap to plan and run, where the full statement cost PostgreSQL about half a millisecond per call to plan alone.
CREATE OR REPLACE FUNCTION gnomon_wake(keys text[], queues text[], at timestamptz, max_wake bigint, held_before timestamptz)
RETURNS SETOF jobs LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    before constant timestamptz := coalesce(held_before, 'infinity');
BEGIN
    PERFORM pg_advisory_xact_lock_shared(l.lock) FROM (
        SELECT hashtextextended('gnomon:key:' || k, 0) AS lock FROM unnest(keys) AS k
        UNION
        SELECT hashtextextended('gnomon:queue:' || q, 0) FROM unnest(queues) AS q
        ORDER BY lock) AS l;
    IF NOT EXISTS (
        SELECT 1 FROM unnest(keys) AS k CROSS JOIN LATERAL (
            SELECT 1 FROM jobs AS h WHERE h.state = 'queued' AND h.held_for = 'key' AND h.concurrency_key = k
            AND h.held_at < before ORDER BY h.priority DESC, h.run_at, h.id LIMIT 1) AS held
        UNION ALL
        SELECT 1 FROM unnest(queues) AS q CROSS JOIN LATERAL (
            SELECT 1 FROM jobs AS h WHERE h.state = 'queued' AND h.held_for = 'queue' AND h.queue = q
            AND h.held_at < before ORDER BY h.priority DESC, h.run_at, h.id LIMIT 1) AS held) THEN
        RETURN;
    END IF;
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
