"""The SQL of flow control (docs/design.md "Flow control"), named as in sql.py. Only jobs with a concurrency key,
or of a queue whose settings limit starts, ever meet these statements: an unlimited deployment runs none of them.

Locks. Each concurrency key and each queue has one transaction-scoped advisory lock (a hash of its name; a
collision only serializes a little more). Those who may HOLD jobs (the claim, dispatch gating at submit, promote
and firing) take it exclusively; those who WAKE held jobs because they free a slot (finish, cancel, rescue) take it
shared, so wakers never wait for each other. Each takes it in a statement of its own, before the statements that
count and decide: under READ COMMITTED a statement sees what was committed when it began, so a decision taken
after the lock sees every decision taken before it - a holder sees the slot a waker freed, a waker sees the job a
holder held. Locks are taken in one order (sorted ids), so two transactions never deadlock on them.
"""

from __future__ import annotations

from typing import Final

# The candidates of a gated claim: queued jobs among the ids whose key or queue has to be counted. Locks their keys
# and the queues that limit starts (in the settings, or as the worker knows them), for holding.
CLAIM_LOCKS: Final = """
WITH cand AS MATERIALIZED (
    SELECT concurrency_key, queue FROM jobs WHERE id = ANY(%(ids)s::uuid[]) AND state = 'queued'),
locks AS MATERIALIZED (
    SELECT hashtextextended('gnomon:key:' || concurrency_key, 0) AS lock FROM cand WHERE concurrency_key IS NOT NULL
    UNION
    SELECT hashtextextended('gnomon:queue:' || c.queue, 0) FROM cand AS c
    WHERE c.queue = ANY(%(limited)s::text[])
       OR EXISTS (SELECT 1 FROM queue_settings AS s WHERE s.queue = c.queue AND (s.paused OR s.max_running IS NOT NULL))
    ORDER BY lock),
taken AS MATERIALIZED (SELECT pg_advisory_xact_lock(lock) FROM locks)
SELECT (SELECT count(*) FROM cand) AS candidates, (SELECT count(*) FROM taken) AS locked"""

# The rule of domain/flow.py in one statement, under the locks of CLAIM_LOCKS: in start order, a keyed job starts
# while its key's running jobs (live leases: a lost worker's slot frees itself when its lease expires) plus those of
# its key ranked before it stay within its limit; then, in a queue that limits starts, while the queue's room lasts
# (counted among the jobs their key admitted). The others are held, with the reason.
CLAIM_GATED: Final = """
WITH cand AS MATERIALIZED (
    SELECT id, queue, concurrency_key, concurrency_limit, priority, run_at FROM jobs
    WHERE id = ANY(%(ids)s::uuid[]) AND state = 'queued'),
key_busy AS MATERIALIZED (  -- one pass over the running jobs of these keys, not one per key
    SELECT r.concurrency_key AS key, count(*) AS busy FROM jobs AS r
    WHERE r.state = 'running' AND r.lease_expires_at > %(now)s
      AND r.concurrency_key = ANY(ARRAY(SELECT DISTINCT concurrency_key FROM cand WHERE concurrency_key IS NOT NULL))
    GROUP BY r.concurrency_key),
queue_room AS MATERIALIZED (
    SELECT s.queue, CASE WHEN s.paused THEN 0 ELSE s.max_running - (
        SELECT count(*) FROM jobs AS r WHERE r.state = 'running' AND r.queue = s.queue
        AND r.lease_expires_at > %(now)s) END AS room
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
                          PARTITION BY b.queue, b.fits ORDER BY b.priority DESC, b.run_at, b.id) > qr.room THEN 'queue'
                 END AS hold
    FROM by_key AS b LEFT JOIN queue_room AS qr ON qr.queue = b.queue),
held AS (
    UPDATE jobs SET held_at = %(now)s, held_for = verdict.hold FROM verdict
    WHERE jobs.id = verdict.id AND verdict.hold IS NOT NULL AND jobs.state = 'queued' RETURNING jobs.id)
UPDATE jobs SET state = 'running', attempt = attempt + 1, version = version + 1, updated_at = %(now)s,
    started_at = %(now)s, finished_at = NULL, lease_worker = %(worker)s, lease_token = version + 1,
    lease_expires_at = %(expires_at)s, held_at = NULL, held_for = NULL
FROM verdict
WHERE jobs.id = verdict.id AND verdict.hold IS NULL AND jobs.state = 'queued'
RETURNING jobs.*"""

_LOCKS: Final = """
    SELECT hashtextextended('gnomon:key:' || k, 0) AS lock FROM unnest(%(keys)s::text[]) AS k
    UNION
    SELECT hashtextextended('gnomon:queue:' || q, 0) FROM unnest(%(queues)s::text[]) AS q
    ORDER BY lock"""
LOCK_FOR_HOLDING: Final = "SELECT count(pg_advisory_xact_lock(lock)) AS n FROM (" + _LOCKS + ") AS locks"
LOCK_FOR_WAKING: Final = "SELECT count(pg_advisory_xact_lock_shared(lock)) AS n FROM (" + _LOCKS + ") AS locks"

# What each key has in flight - running under a live lease, or dispatched - leaving out the jobs being decided on.
IN_FLIGHT: Final = """
SELECT concurrency_key AS key, count(*) AS busy FROM jobs
WHERE concurrency_key = ANY(%(keys)s::text[])
  AND ((state = 'running' AND lease_expires_at > %(now)s)
       OR (state = 'queued' AND held_for IS NULL AND id <> ALL(%(deciding)s::uuid[])))
GROUP BY concurrency_key"""

# Promoted jobs that gating holds back.
HOLD: Final = """
UPDATE jobs SET held_at = %(now)s, held_for = 'key'
WHERE id = ANY(%(ids)s::uuid[]) AND state = 'queued' AND held_for IS NULL
RETURNING id"""

# The queues whose settings limit starts, among those given.
LIMITING_QUEUES: Final = """
SELECT queue FROM queue_settings WHERE queue = ANY(%(queues)s::text[]) AND (paused OR max_running IS NOT NULL)"""

# Wake held jobs of the given keys and queues that have room now (the same count as at dispatch for a key, as at
# the claim for a queue), in start order; only those held before %(held_before)s (NULL: all). A queue that no
# longer limits starts wakes up to %(limit)s. Skips rows another waker has just locked.
WAKE: Final = """
WITH key_room AS MATERIALIZED (
    SELECT k.key, head.concurrency_limit
        - (SELECT count(*) FROM jobs AS r WHERE r.state = 'running' AND r.concurrency_key = k.key
           AND r.lease_expires_at > %(now)s)
        - (SELECT count(*) FROM jobs AS d WHERE d.state = 'queued' AND d.held_for IS NULL
           AND d.concurrency_key = k.key) AS room
    FROM (SELECT DISTINCT key FROM unnest(%(keys)s::text[]) AS key) AS k
    CROSS JOIN LATERAL (
        SELECT h.concurrency_limit FROM jobs AS h
        WHERE h.state = 'queued' AND h.held_for = 'key' AND h.concurrency_key = k.key
          AND h.held_at < coalesce(%(held_before)s::timestamptz, 'infinity')
        ORDER BY h.priority DESC, h.run_at, h.id LIMIT 1) AS head),
key_woken AS MATERIALIZED (
    SELECT w.id FROM key_room CROSS JOIN LATERAL (
        SELECT h.id FROM jobs AS h
        WHERE h.state = 'queued' AND h.held_for = 'key' AND h.concurrency_key = key_room.key
          AND h.held_at < coalesce(%(held_before)s::timestamptz, 'infinity')
        ORDER BY h.priority DESC, h.run_at, h.id LIMIT greatest(key_room.room, 0)
        FOR UPDATE SKIP LOCKED) AS w),
queue_room AS MATERIALIZED (
    SELECT q.queue, CASE WHEN s.paused THEN 0 WHEN s.max_running IS NULL THEN %(limit)s
                         ELSE s.max_running - (SELECT count(*) FROM jobs AS r WHERE r.state = 'running'
                                               AND r.queue = q.queue AND r.lease_expires_at > %(now)s) END AS room
    FROM (SELECT DISTINCT queue FROM unnest(%(queues)s::text[]) AS queue) AS q
    LEFT JOIN queue_settings AS s ON s.queue = q.queue
    WHERE EXISTS (SELECT 1 FROM jobs AS h WHERE h.state = 'queued' AND h.held_for = 'queue' AND h.queue = q.queue
                  AND h.held_at < coalesce(%(held_before)s::timestamptz, 'infinity'))),
queue_woken AS MATERIALIZED (
    SELECT w.id FROM queue_room CROSS JOIN LATERAL (
        SELECT h.id FROM jobs AS h
        WHERE h.state = 'queued' AND h.held_for = 'queue' AND h.queue = queue_room.queue
          AND h.held_at < coalesce(%(held_before)s::timestamptz, 'infinity')
        ORDER BY h.priority DESC, h.run_at, h.id LIMIT greatest(queue_room.room, 0)
        FOR UPDATE SKIP LOCKED) AS w)
UPDATE jobs SET held_at = NULL, held_for = NULL, dispatched_at = %(now)s
WHERE id = ANY(ARRAY(SELECT id FROM key_woken UNION ALL SELECT id FROM queue_woken LIMIT %(limit)s))
RETURNING *"""

# Every key and every queue that has held jobs (the sweep's look for lost wake-ups): a skip scan of the held
# indexes, one probe per name however many jobs wait.
HELD_NAMES: Final = """
WITH RECURSIVE keys AS (
    (SELECT concurrency_key AS name FROM jobs WHERE state = 'queued' AND held_for = 'key'
     ORDER BY concurrency_key LIMIT 1)
    UNION ALL
    SELECT (SELECT concurrency_key FROM jobs WHERE state = 'queued' AND held_for = 'key'
            AND concurrency_key > keys.name ORDER BY concurrency_key LIMIT 1)
    FROM keys WHERE keys.name IS NOT NULL),
queues AS (
    (SELECT queue AS name FROM jobs WHERE state = 'queued' AND held_for = 'queue' ORDER BY queue LIMIT 1)
    UNION ALL
    SELECT (SELECT queue FROM jobs WHERE state = 'queued' AND held_for = 'queue' AND queue > queues.name
            ORDER BY queue LIMIT 1)
    FROM queues WHERE queues.name IS NOT NULL)
(SELECT 'key' AS kind, name FROM keys WHERE name IS NOT NULL LIMIT %(limit)s)
UNION ALL
(SELECT 'queue', name FROM queues WHERE name IS NOT NULL LIMIT %(limit)s)"""

# -- queue settings -------------------------------------------------------------------------------------------

ALL_QUEUE_SETTINGS: Final = "SELECT * FROM queue_settings ORDER BY queue"
QUEUE_SETTINGS: Final = "SELECT * FROM queue_settings WHERE queue = %(queue)s"
UPSERT_QUEUE_SETTINGS: Final = """
INSERT INTO queue_settings (queue, max_running, max_per_second, paused, updated_at)
VALUES (%(queue)s, %(max_running)s, %(max_per_second)s, %(paused)s, %(updated_at)s)
ON CONFLICT (queue) DO UPDATE SET max_running = excluded.max_running, max_per_second = excluded.max_per_second,
    paused = excluded.paused, updated_at = excluded.updated_at"""
