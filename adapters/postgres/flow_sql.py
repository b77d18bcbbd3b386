"""The SQL of flow control (docs/design.md "Flow control"), named as in sql.py. Only jobs with a concurrency key,
or of a queue whose settings limit starts, ever meet these statements: an unlimited deployment runs none of them.

Locks. Each concurrency key and each queue has one transaction-scoped advisory lock (a hash of its name; a collision
only serializes a little more). Those who may HOLD jobs (the claim, dispatch gating at submit, promote and firing)
take it exclusively; those who WAKE held jobs because they free a slot (finish, cancel, rescue, the sweep) take it
shared, so wakers never wait for each other. A claim of a queue far below its max_running takes the queue's lock
shared too, plus one of the queue's 8 stripe locks (V006): it holds no job for its queue, and the stripes bound how
many such claims decide at once (docs/design.md, "The claim, hard and cheap"). A claim of keys far below their
limits likewise takes their locks shared, plus one of 8 key stripes (V011): it holds no job either. Each takes its
locks before the statements that count and decide: under READ COMMITTED a statement sees what was committed when it
began, so a decision taken after the lock sees every decision taken before it - a holder sees the slot a waker
freed, a waker sees the job a holder held. The claim and the wake do it inside a VOLATILE PL/pgSQL function (V005),
whose statements each take a fresh snapshot: one statement for the client, which is what a statement costs most.
Locks are taken in one order (sorted ids), so two transactions never deadlock on them. A waker may write the rows it
frees before it locks (a finish's rows are running: no holder touches them); a cancel locks first (the job it
cancels may be a claim's).
"""

from __future__ import annotations

from typing import Final

from adapters.postgres.sql import CLAIMED_COLUMNS

# Dispatch gating's bounds (V016): what each key may have in flight at most. A dispatch of held jobs (a wake, a save
# that queues keyed jobs) adds them to a row of its backend (stripes 8-15; the fast gating adds to 0-7); only an exact
# gating, the key locked exclusively, lowers a bound: to what it counted in flight plus what it admitted.
_BUMP_FROM: Final = """
    INSERT INTO gate_bounds AS g (key, stripe, admitted)
    SELECT concurrency_key, 8 + mod(pg_backend_pid(), 8), count(*) FROM """
_BUMP_REST: Final = """
    WHERE concurrency_key IS NOT NULL GROUP BY concurrency_key ORDER BY concurrency_key
    ON CONFLICT (key, stripe) DO UPDATE SET admitted = g.admitted + excluded.admitted"""
BUMP: Final = _BUMP_FROM + "unnest(%(keys)s::text[]) AS dispatched (concurrency_key)" + _BUMP_REST
# An exact gating's reset (the keys locked exclusively): one row per key with what it counted, in one statement that
# locks the rows it replaces in (key, stripe) order - the order every addition locks them in - and touches no other
# (review s4: a reset locking in plan order, or deleting rows added after a separate lock statement, deadlocked with
# the additions of manual retries and queue wakes). A row added since its snapshot stays: the bound is only higher.
RESET_BOUNDS: Final = """
WITH locked AS (
    SELECT key, stripe FROM gate_bounds WHERE key = ANY(%(keys)s::text[]) ORDER BY key, stripe FOR UPDATE),
gone AS (
    DELETE FROM gate_bounds AS g USING locked AS l WHERE g.key = l.key AND g.stripe = l.stripe AND l.stripe <> 0)
INSERT INTO gate_bounds AS g (key, stripe, admitted)
SELECT key, 0, n FROM unnest(%(keys)s::text[], %(counts)s::bigint[]) AS c (key, n) ORDER BY key
ON CONFLICT (key, stripe) DO UPDATE SET admitted = excluded.admitted"""

# The gated claim and the wake lock, then decide: functions of V005 and V006 (one statement for the client, a fresh
# snapshot for each statement inside). The claim: the queued jobs among the ids that their key and queue let start
# start, the others are held. The wake: held jobs of the keys and queues that have room (held before
# %(held_before)s, NULL: any).
CLAIM_GATED: Final = (
    "SELECT " + CLAIMED_COLUMNS + " FROM gnomon_claim_gated(%(ids)s::uuid[], %(limited)s::text[], %(worker)s, %(now)s,"
    " %(expires_at)s) AS jobs")
WAKE: Final = """
WITH woken AS (
    SELECT * FROM gnomon_wake(%(keys)s::text[], %(queues)s::text[], %(now)s, %(limit)s, %(held_before)s::timestamptz)),
bumped AS (""" + _BUMP_FROM + "woken" + _BUMP_REST + """)
SELECT * FROM woken"""

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

# Dispatch gating far below every key's limit (V013): the keys locked shared plus a gate stripe, then each key's in
# flight checked against the smallest limit of its jobs here; true: admit them all, holding none (the locks stay).
# False: nothing is left locked, gate exactly (LOCK_FOR_HOLDING, IN_FLIGHT). One entry per job in keys/limits.
GATE_FAST: Final = """
SELECT gnomon_gate_fast(%(keys)s::text[], %(limits)s::integer[], %(now)s, %(deciding)s::uuid[], %(stripes)s,
                        %(share)s) AS fast"""

# Promoted jobs that gating holds back.
HOLD: Final = """
UPDATE jobs SET held_at = %(now)s, held_for = 'key'
WHERE id = ANY(%(ids)s::uuid[]) AND state = 'queued' AND held_for IS NULL
RETURNING id"""

# The queues whose settings limit starts, among those given.
LIMITING_QUEUES: Final = """
SELECT queue FROM queue_settings WHERE queue = ANY(%(queues)s::text[]) AND (paused OR max_running IS NOT NULL)"""

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

# Held jobs per queue and reason (the held gauge), each arm within its partial held index (jobs_held_key,
# jobs_held_queue): nothing held, two empty probes.
HELD_COUNTS: Final = """
SELECT queue, 'key' AS reason, count(*) AS n FROM jobs WHERE state = 'queued' AND held_for = 'key' GROUP BY queue
UNION ALL
SELECT queue, 'queue', count(*) FROM jobs WHERE state = 'queued' AND held_for = 'queue' GROUP BY queue"""

# -- queue settings -------------------------------------------------------------------------------------------

ALL_QUEUE_SETTINGS: Final = "SELECT * FROM queue_settings ORDER BY queue"
QUEUE_SETTINGS: Final = "SELECT * FROM queue_settings WHERE queue = %(queue)s"
UPSERT_QUEUE_SETTINGS: Final = """
INSERT INTO queue_settings (queue, max_running, max_per_second, paused, updated_at)
VALUES (%(queue)s, %(max_running)s, %(max_per_second)s, %(paused)s, %(updated_at)s)
ON CONFLICT (queue) DO UPDATE SET max_running = excluded.max_running, max_per_second = excluded.max_per_second,
    paused = excluded.paused, updated_at = excluded.updated_at"""
