-- gnomon schema, version 12: the keyed fast claim (V011) counts each key's running jobs through the key's index
-- (docs/design.md, "The claim, hard and cheap").
--
-- V011 counted a key's running jobs with `state = 'running' AND concurrency_key = k AND lease_expires_at > at`, and
-- the planner read them through jobs_running_lease (the lease condition) and filtered on the key: every running job
-- of the cluster, once per key of the batch. Measured (auto_explain, 64 keys, 128 jobs running, after 250 claims):
-- 8,192 rows read and ~2.4-2.8 ms per call for that count alone, where the key's index reads 2 rows a key. The lease
-- is now tested on the key's rows only (count(*) FILTER), so no index on the lease can serve the statement and the
-- count reads jobs_running_concurrency for the key. Same decision, same locks.
--
-- And that index no longer deduplicates. With deduplication (PostgreSQL 13+, on by default) the entries of one key
-- are merged into posting lists, and an index scan can mark an entry dead (so that later scans skip it without a
-- visit to the table) only when every row of its posting list is dead: a key's list mixes finished jobs with running
-- ones, so until VACUUM every count visited the table row of every job of the key that had finished (the same run:
-- 6,983 buffers for the 64 keys' counts, ~2.6 ms). Without it each entry is marked dead on its own, the first time a
-- scan finds its row dead to everyone: 384 buffers (6 a key), 0.24 ms. The index holds running jobs only, so the
-- space deduplication saved is small. Posting lists built before this migration stay until their jobs have all
-- finished and VACUUM has removed them; nothing is rebuilt here (a REINDEX would block writes to jobs while it
-- reads the whole table).

CREATE OR REPLACE FUNCTION gnomon_claim_fast_keyed(ckeys text[], climits integer[], queues text[], n integer,
                                                   at timestamptz, stripes integer, share integer)
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
        WHERE (SELECT count(*) FILTER (WHERE r.lease_expires_at > at) FROM jobs AS r
               WHERE r.state = 'running' AND r.concurrency_key = k.key) > k.lim - stripes * share) THEN
        RAISE EXCEPTION USING ERRCODE = 'GN001';
    END IF;
    RETURN true;
EXCEPTION WHEN SQLSTATE 'GN001' THEN
    RETURN false;
END $$;

ALTER INDEX jobs_running_concurrency SET (deduplicate_items = off);
