-- gnomon schema, version 11: a claim of keys far below their limits no longer excludes the other claims and the
-- finishes of those keys (docs/design.md, "The claim, hard and cheap").
--
-- Since V007 a batch with concurrency keys took the exact path: every key's lock exclusively, then the ranking
-- statement. A claim of noop jobs of 64 keys touches most of them, and every finish of a keyed job locks its key
-- shared to look for held jobs, so the claims and finishes of all workers took turns on the keys (bench/README.md,
-- "Flow control": -42 % end to end with keys + max_running + max_per_second not binding, the time in lock waits).
-- Now a keyed batch first tries gnomon_claim_fast_keyed: its keys' locks SHARED, plus one of `stripes` exclusive
-- key-stripe locks (tried, never waited for; one per claim, whatever its keys), and for each limited queue what
-- V006's fast path takes (the lock shared, a stripe of the queue); then, in a fresh snapshot, it checks each key
-- (live leases counted through jobs_running_concurrency) and each queue (as V006 does):
--
--     running_k + stripes * share <= min_k  and  candidates of k <= share,   share = 8 (a constant, not per key)
--
-- where min_k is the smallest concurrency_limit among the batch's candidates of key k. If every key and queue
-- passes, every candidate is started by a plain UPDATE (no ranking statement), nothing held. Otherwise the attempt's
-- locks are released (a subtransaction rolled back) and the claim takes the exact path, unchanged.
--
-- Why each job's limit still holds, with any mix of limits on a key. Order the claims by their decision snapshot
-- (the statement that counts: on the exact path the ranking statement, on the fast path the count). Take a claim X
-- and a job j of key k that X starts, with limit L_j >= min_k(X). A claim ordered before X either committed before X's
-- snapshot (its jobs are counted in X's running_k, unless they ended or their lease expired since, which only lowers
-- what runs) or was between its snapshot and its commit when X took its snapshot. Such a Y cannot be exact: from
-- before its snapshot to its commit an exact claim holds k's lock exclusively, and X held it shared then; so Y is
-- fast, held a key stripe other than X's (at most stripes - 1 such Y) and started at most `share` jobs of k. If X is
-- exact it holds k exclusively, so no such Y exists and it counts every earlier start. So when X starts j, what of k
-- runs from claims ordered before X, plus X's own jobs of k, is at most running_k + (stripes - 1) * share + share <=
-- min_k <= L_j: X started only what the exact path would start if the claims ran one at a time in that order. The
-- share must be one constant for every claim of the key: a share derived from each claim's own limit would let a
-- concurrent claim of a bigger limit start more than X's bound allows (the design notes, Known limits, say what that
-- costs). Counts are of live leases, as before: a lost worker's slot frees when its lease expires, and nothing is
-- stored that could leak.
--
-- Why no wake-up is lost. Only the exact path (and dispatch gating) holds jobs, and they still take the key's lock
-- exclusively, which excludes the wakers (shared). A fast keyed claim holds nothing: it starts its whole batch or
-- gives up the fast path.
--
-- Deadlocks. A fast attempt waits only for its shared key and queue locks, taken in one statement in the order
-- every transaction takes them (sorted ids); it takes the stripes only after them and never waits for a stripe. The
-- key stripes are named `gnomon:key-stripe:<i>`, a name no key or queue lock takes ('gnomon:key:' and 'gnomon:queue:'
-- prefixes), so nobody ever waits for one. A failed attempt releases everything before the exact path locks.
--
-- Locks per claim: on the fast path, one per key plus one stripe (plus two per limited queue), about what the exact
-- path takes (one per key and queue); a failed attempt's locks are released before the exact path takes its own.

CREATE FUNCTION gnomon_claim_fast_keyed(ckeys text[], climits integer[], queues text[], n integer, at timestamptz,
                                        stripes integer, share integer)
RETURNS boolean LANGUAGE plpgsql VOLATILE SET enable_bitmapscan = off AS $$
DECLARE
    queue_name text;
    cap integer;
    is_paused boolean;
    qshare integer;
    taken boolean;
    running bigint;
BEGIN
    PERFORM pg_advisory_xact_lock_shared(l.lock) FROM (
        SELECT hashtextextended('gnomon:key:' || k, 0) AS lock FROM unnest(ckeys) AS k
        UNION
        SELECT hashtextextended('gnomon:queue:' || q, 0) FROM unnest(queues) AS q
        ORDER BY lock) AS l;
    taken := false;
    FOR i IN 0 .. stripes - 1 LOOP
        taken := pg_try_advisory_xact_lock(hashtextextended('gnomon:key-stripe:' || (pg_backend_pid() + i) % stripes, 0));
        EXIT WHEN taken;
    END LOOP;
    IF NOT taken THEN
        RAISE EXCEPTION USING ERRCODE = 'GN001';
    END IF;
    FOREACH queue_name IN ARRAY queues LOOP  -- V006's check of each limited queue
        SELECT s.max_running, s.paused INTO cap, is_paused FROM queue_settings AS s WHERE s.queue = queue_name;
        CONTINUE WHEN NOT FOUND OR NOT is_paused AND cap IS NULL;
        qshare := cap / (2 * stripes);
        IF is_paused OR n > qshare THEN
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
        IF running > cap - stripes * qshare THEN
            RAISE EXCEPTION USING ERRCODE = 'GN001';
        END IF;
    END LOOP;
    IF EXISTS (
        SELECT 1 FROM (SELECT c.key, min(c.lim) AS lim FROM unnest(ckeys, climits) AS c(key, lim) GROUP BY c.key) AS k
        WHERE (SELECT count(*) FROM jobs AS r WHERE r.state = 'running' AND r.concurrency_key = k.key
               AND r.lease_expires_at > at) > k.lim - stripes * share) THEN
        RAISE EXCEPTION USING ERRCODE = 'GN001';
    END IF;
    RETURN true;
EXCEPTION WHEN SQLSTATE 'GN001' THEN
    RETURN false;
END $$;

CREATE OR REPLACE FUNCTION gnomon_claim_gated(ids uuid[], limited text[], worker text, at timestamptz,
                                              expires timestamptz)
RETURNS SETOF jobs LANGUAGE plpgsql VOLATILE SET enable_bitmapscan = off AS $$
DECLARE
    stripes constant integer := 8;
    key_share constant integer := 8;
    cands uuid[];
    keys text[];
    ckeys text[];
    climits integer[];
    queues text[];
    hopeless boolean;
    fast boolean := false;
BEGIN
    -- The candidates, their keys (one entry per keyed candidate, with its limit) and their limited queues, read before
    -- the locks: the decision is made on these candidates only (a job that became queued since was neither locked for
    -- nor checked; it is left, as if stale). Hopeless for the fast path: a paused queue, or a batch bigger than a
    -- stripe's share of a queue's limit; for a keyed batch also a key with more than key_share candidates, or with a
    -- candidate whose limit is below stripes * key_share.
    SELECT coalesce(array_agg(c.id), '{}'),
           coalesce(array_agg(DISTINCT c.concurrency_key) FILTER (WHERE c.concurrency_key IS NOT NULL), '{}'),
           coalesce(array_agg(c.concurrency_key) FILTER (WHERE c.concurrency_key IS NOT NULL), '{}'),
           coalesce(array_agg(c.concurrency_limit) FILTER (WHERE c.concurrency_key IS NOT NULL), '{}'),
           coalesce(array_agg(DISTINCT c.queue) FILTER (WHERE c.queue = ANY(limited) OR s.queue IS NOT NULL), '{}'),
           coalesce(bool_or(s.paused), false) OR count(*) > coalesce(min(s.max_running) / (2 * stripes), count(*))
    INTO cands, keys, ckeys, climits, queues, hopeless
    FROM (SELECT j.id, j.queue, j.concurrency_key, j.concurrency_limit, j.state FROM jobs AS j
          WHERE j.id = ANY(ids) OFFSET 0) AS c
    LEFT JOIN queue_settings AS s ON s.queue = c.queue AND (s.paused OR s.max_running IS NOT NULL)
    WHERE c.state = 'queued';
    IF keys <> '{}' THEN
        IF NOT hopeless AND NOT EXISTS (
            SELECT 1 FROM unnest(ckeys, climits) AS c(key, lim) GROUP BY c.key
            HAVING count(*) > key_share OR min(c.lim) < stripes * key_share) THEN
            fast := gnomon_claim_fast_keyed(ckeys, climits, queues, cardinality(cands), at, stripes, key_share);
        END IF;
    ELSIF queues <> '{}' AND NOT hopeless THEN
        fast := gnomon_claim_fast(keys, queues, cardinality(cands), at, stripes);
    END IF;
    IF fast THEN  -- every key and queue far below its limit: start them all
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
    PERFORM pg_advisory_xact_lock(l.lock) FROM (
        SELECT hashtextextended('gnomon:key:' || k, 0) AS lock FROM unnest(keys) AS k
        UNION
        SELECT hashtextextended('gnomon:queue:' || q, 0) FROM unnest(queues) AS q
        ORDER BY lock) AS l;
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
        WHERE s.queue IN (SELECT queue FROM cand) AND (s.paused OR s.max_running IS NOT NULL)),
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
