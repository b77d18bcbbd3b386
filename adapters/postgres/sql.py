"""Every SQL statement of the PostgreSQL adapters, as named constants with %(name)s parameters.

Batches travel as one JSON array of rows (`json_populate_recordset(NULL::jobs, ...)` turns it into typed
records), so a batch of any size is one statement and one round trip. Shared column lists are joined by
plain concatenation of literals: no statement is ever built from runtime values.
"""

from __future__ import annotations

from typing import Final, LiteralString

# -- jobs -----------------------------------------------------------------------------------------------------

JOB_COLUMNS: Final[LiteralString] = (
    "id, task, payload, queue, priority, run_at, state, attempt, max_attempts, backoff, timeout_seconds,"
    " idempotency_key, schedule_id, scheduled_for, concurrency_key, concurrency_limit, result, last_error,"
    " created_at, updated_at, started_at, finished_at, dispatched_at, lease_worker, lease_token,"
    " lease_expires_at, version, held_at, held_for"
)
_JOB_SET: Final[LiteralString] = (
    "task = new.task, payload = new.payload, queue = new.queue, priority = new.priority, run_at = new.run_at,"
    " state = new.state, attempt = new.attempt, max_attempts = new.max_attempts, backoff = new.backoff,"
    " timeout_seconds = new.timeout_seconds, idempotency_key = new.idempotency_key,"
    " schedule_id = new.schedule_id, scheduled_for = new.scheduled_for, concurrency_key = new.concurrency_key,"
    " concurrency_limit = new.concurrency_limit, result = new.result, last_error = new.last_error,"
    " created_at = new.created_at, updated_at = new.updated_at, started_at = new.started_at,"
    " finished_at = new.finished_at, dispatched_at = new.dispatched_at, lease_worker = new.lease_worker,"
    " lease_token = new.lease_token, lease_expires_at = new.lease_expires_at, version = new.version,"
    " held_at = new.held_at, held_for = new.held_for"
)
_RUN_COLUMNS: Final[LiteralString] = "job_id, attempt, worker_id, started_at, finished_at, outcome, error"
_NEW_JOBS: Final[LiteralString] = "SELECT * FROM json_populate_recordset(NULL::jobs, %(jobs)s::json)"
# Runs of the written jobs only, in the order given (the identity keeps the history in order).
_INSERT_RUNS_OF_WRITTEN: Final[LiteralString] = (
    "ran AS (INSERT INTO runs (" + _RUN_COLUMNS + ") SELECT " + _RUN_COLUMNS
    + " FROM json_populate_recordset(NULL::runs, %(runs)s::json) WITH ORDINALITY AS r"
    " WHERE r.job_id IN (SELECT id FROM written) ORDER BY r.ordinality) "
)

# New jobs; a repeated idempotency key (even inside the batch) is skipped and looked up afterwards. The
# ON CONFLICT clauses repeat the predicates of the partial unique indexes they mean (V002).
INSERT_JOBS: Final[LiteralString] = (
    "INSERT INTO jobs (" + JOB_COLUMNS + ") SELECT " + JOB_COLUMNS
    + " FROM json_populate_recordset(NULL::jobs, %(jobs)s::json) WITH ORDINALITY ORDER BY ordinality"
    " ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING RETURNING id"
)
# New jobs without idempotency keys (what nearly every batch is): COPY, the cheapest way in on both sides.
COPY_JOBS: Final[LiteralString] = "COPY jobs (" + JOB_COLUMNS + ") FROM STDIN"
# Jobs fired by schedules: the unique (schedule_id, scheduled_for) is the exactly-once backstop.
INSERT_FIRED_JOBS: Final[LiteralString] = (
    "INSERT INTO jobs (" + JOB_COLUMNS + ") SELECT " + JOB_COLUMNS
    + " FROM json_populate_recordset(NULL::jobs, %(jobs)s::json) WITH ORDINALITY ORDER BY ordinality"
    " ON CONFLICT (schedule_id, scheduled_for) WHERE schedule_id IS NOT NULL AND scheduled_for IS NOT NULL"
    " DO NOTHING RETURNING id"
)
JOBS_BY_IDEMPOTENCY_KEY: Final = "SELECT * FROM jobs WHERE idempotency_key = ANY(%(keys)s::text[])"
JOBS_OF_OCCURRENCES: Final = (
    "SELECT id, scheduled_for FROM jobs WHERE schedule_id = %(schedule_id)s"
    " AND scheduled_for = ANY(%(times)s::timestamptz[])"
)
GET_JOB: Final = "SELECT * FROM jobs WHERE id = %(id)s"
JOB_EXISTS: Final = "SELECT 1 FROM jobs WHERE id = %(id)s"
JOBS_BY_IDS_FOR_UPDATE: Final = "SELECT * FROM jobs WHERE id = ANY(%(ids)s::uuid[]) ORDER BY id FOR UPDATE"
JOBS_BY_IDS: Final = "SELECT * FROM jobs WHERE id = ANY(%(ids)s::uuid[])"

# Compare-and-set writes of transitioned jobs (plus the runs that ended), returning the ids written.
SAVE_JOBS: Final[LiteralString] = (
    "WITH new AS (" + _NEW_JOBS + "), "
    "written AS (UPDATE jobs SET " + _JOB_SET + " FROM new"
    " WHERE jobs.id = new.id AND jobs.version = new.version - 1 RETURNING jobs.id), "
    + _INSERT_RUNS_OF_WRITTEN + "SELECT id FROM written"
)
# An outcome (Job.succeed/fail/release) changes only these columns, so only they travel, with the run it closed.
# A column that can't be null may be left out when it holds what another one holds (rows.outcomes_json): a missing
# updated_at is finished_at, a missing run instant or attempt the job's.
_OUTCOME_COLUMNS: Final[LiteralString] = (
    "id uuid, version bigint, state text, attempt integer, run_at timestamptz, result jsonb, last_error text,"
    " updated_at timestamptz, started_at timestamptz, finished_at timestamptz, lease_worker text,"
    " lease_token bigint, lease_expires_at timestamptz, run_attempt integer, run_worker text,"
    " run_started_at timestamptz, run_finished_at timestamptz, run_outcome text, run_error text"
)
# The fencing rule: still running under the lease the claim gave (token = version while running), unexpired.
# A lease is set only while running (CHECK jobs_lease_running), so the token match implies `running`. Leaving
# the state unnamed keeps the planner off the partial index jobs_running_lease (a walk over every running
# job; likewise in RENEW), and the ids, also given as an array, make it look the rows up by primary key: it
# cannot know how many rows json_to_recordset yields, and would otherwise scan the table when it is small. The
# token is compared by two inequalities, not `=`: two equalities to `new.version - 1` would let the planner derive
# `jobs.version = jobs.lease_token`, a filter on jobs it estimates at 0.5 % of the rows (~1 row of the batch's),
# and without statistics (a fresh table) it then joined a few hundred outcomes to their jobs by a nested loop over
# the records, each job compared with every record: 0.2-0.75 s for 650-800 outcomes of 20,000 jobs, against
# 20-30 ms by a hash join.
FINISH_JOBS: Final[LiteralString] = (
    "WITH new AS (SELECT * FROM json_to_recordset(%(jobs)s::json) AS n (" + _OUTCOME_COLUMNS + ")), "
    "written AS (UPDATE jobs SET state = new.state, attempt = new.attempt, run_at = new.run_at,"
    " result = new.result, last_error = new.last_error, updated_at = coalesce(new.updated_at, new.finished_at),"
    " started_at = new.started_at, finished_at = new.finished_at, lease_worker = new.lease_worker,"
    " lease_token = new.lease_token, lease_expires_at = new.lease_expires_at, version = new.version FROM new"
    " WHERE jobs.id = ANY(%(ids)s::uuid[]) AND jobs.id = new.id AND jobs.version = new.version - 1"
    " AND jobs.lease_token >= new.version - 1 AND jobs.lease_token <= new.version - 1"
    " AND jobs.lease_expires_at > %(now)s RETURNING jobs.id), "
    "ran AS (INSERT INTO runs (" + _RUN_COLUMNS + ") SELECT id, coalesce(run_attempt, attempt), run_worker,"
    " coalesce(run_started_at, started_at), coalesce(run_finished_at, updated_at, finished_at), run_outcome,"
    " run_error FROM new"
    " WHERE run_outcome IS NOT NULL AND id IN (SELECT id FROM written)) "
    "SELECT id FROM written"
)

# The due rows are locked first (jobs_waiting_run_at, in run_at order), then updated by their ctid (a TID scan,
# no index descent per row: ~10 % of the statement). An array leaves the planner no other way in; a join on the
# locked rows did: for a large batch, or a mid-sized table, or a generic plan of the prepared statement, it hashed
# the batch and scanned the whole table (about 1 s per statement with 1,000,000 future jobs), so the cost of
# promoting grew with what was NOT due. A row that another transaction changed after this statement's snapshot is
# locked at its new version, which the snapshot does not see: it is left alone, for the next tick. It returns what
# dispatching takes, not whole rows (decoding them and building 10,000 jobs cost the client more than the update
# cost the server), in run_at order; keyed jobs (flow control) are read in full afterwards, to be gated.
PROMOTE_DUE: Final = """
WITH promoted AS (
    UPDATE jobs SET state = 'queued', dispatched_at = %(now)s, updated_at = %(now)s, version = jobs.version + 1
    WHERE ctid = ANY(ARRAY(SELECT ctid FROM jobs WHERE state IN ('scheduled', 'retry') AND run_at <= %(now)s
                           ORDER BY run_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED))
    RETURNING id, queue, priority, run_at, concurrency_key IS NOT NULL AS keyed)
SELECT id::text, queue, priority, keyed FROM promoted ORDER BY promoted.run_at, promoted.id"""

# Job.start in one statement: the lease token is the version the claim produces. The ids are looked up by
# primary key first, and the rows updated by the ctid read there (a TID scan, not a second descent per id);
# comparing the state to the one read there (not to the literal 'queued') keeps the planner from scanning every
# queued job through a partial index, which it would do whenever its statistics say that few jobs are queued (a
# fresh table, or one analysed between bursts). The comparison is re-checked on the locked row's latest version,
# so a job claimed concurrently is skipped. Flow control: only jobs that no limit counts are ready here
# (no concurrency key, not held, of a queue the worker does not know to limit starts); the claim hands the others
# to the gated claim (flow_sql.CLAIM_GATED), so an unlimited deployment pays nothing for it.
# It returns only what the claim did not set itself (rows.claimed_jobs fills in the rest from its parameters:
# running, started and updated now, the lease; not held, as `ready` demands, and the gated claim too): whole
# rows cost the client ~3 us a job more to read, and the backend ~1-2 us more to print. `created_at` and
# `dispatched_at` come back as NULL when they equal `run_at` (a job submitted due: all three are its submit time;
# neither column can be null in a claimed row, CHECK jobs_queued_dispatched), the backoff as its text, which jobs
# mostly share (read once per claim, not decoded per job).
# What a claim returns of each job it started (rows.claimed_jobs reads them, in this order), of rows named `jobs`:
# sql.CLAIM's RETURNING and what the client selects of the gated claim's rows (flow_sql.CLAIM_GATED).
CLAIMED_COLUMNS: Final = """jobs.id, jobs.task, jobs.payload, jobs.queue, jobs.priority, jobs.run_at, jobs.attempt,
    jobs.max_attempts, jobs.backoff::text AS backoff, jobs.timeout_seconds, jobs.idempotency_key, jobs.schedule_id,
    jobs.scheduled_for, jobs.concurrency_key, jobs.concurrency_limit, jobs.result, jobs.last_error,
    nullif(jobs.created_at, jobs.run_at) AS created_apart, nullif(jobs.dispatched_at, jobs.run_at) AS dispatched_apart,
    jobs.version"""

CLAIM: Final = """
WITH wanted AS MATERIALIZED (
    SELECT ctid, state, state = 'queued' AND held_for IS NULL AND concurrency_key IS NULL
                        AND queue <> ALL(%(limited)s::text[]) AS ready
    FROM jobs WHERE id = ANY(%(ids)s::uuid[]))
UPDATE jobs SET state = 'running', attempt = attempt + 1, version = version + 1, updated_at = %(now)s,
    started_at = %(now)s, finished_at = NULL, lease_worker = %(worker)s, lease_token = version + 1,
    lease_expires_at = %(expires_at)s
FROM wanted
WHERE jobs.ctid = wanted.ctid AND jobs.state = wanted.state AND wanted.ready
RETURNING """ + CLAIMED_COLUMNS

# The jobs a worker's claim started although the worker never heard the answer (the connection died while the
# claim committed): running under that worker's lease, not yet expired.
ADOPT: Final = """
SELECT * FROM jobs
WHERE id = ANY(%(ids)s::uuid[]) AND state = 'running' AND lease_worker = %(worker)s AND lease_expires_at > %(now)s"""

RENEW: Final = """
UPDATE jobs SET lease_expires_at = %(expires_at)s
FROM unnest(%(ids)s::uuid[], %(tokens)s::bigint[]) AS held (id, token)
WHERE jobs.id = held.id AND jobs.lease_token = held.token AND jobs.lease_expires_at > %(now)s
RETURNING jobs.id"""

EXPIRED: Final = """
SELECT * FROM jobs WHERE state = 'running' AND lease_expires_at <= %(now)s
ORDER BY lease_expires_at LIMIT %(limit)s"""

# A range scan of jobs_queued_dispatched from the oldest dispatch: it reads the stale jobs only (a queued job
# always has dispatched_at, CHECK jobs_queued_dispatched, V003; held jobs are not dispatched and not in the index,
# V004), then updates them by primary key. A job of a paused queue is held instead of sent again: no worker pops a
# paused queue, and its resume wakes what it holds.
REDISPATCH: Final = """
UPDATE jobs SET dispatched_at = %(now)s,
    held_at = CASE WHEN queue = ANY(ARRAY(SELECT queue FROM queue_settings WHERE paused))
                   THEN %(now)s::timestamptz END,
    held_for = CASE WHEN queue = ANY(ARRAY(SELECT queue FROM queue_settings WHERE paused)) THEN 'queue' END
WHERE id = ANY(ARRAY(SELECT id FROM jobs WHERE state = 'queued' AND held_for IS NULL
                     AND dispatched_at < %(older_than)s
                     ORDER BY dispatched_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED))
RETURNING *"""

NEXT_JOB_DUE_AT: Final = "SELECT min(run_at) AS due FROM jobs WHERE state IN ('scheduled', 'retry')"

RUNS_OF_JOB: Final = """
SELECT jobs.id AS known, runs.* FROM jobs LEFT JOIN runs ON runs.job_id = jobs.id
WHERE jobs.id = %(id)s ORDER BY runs.id"""

QUEUE_STATS: Final = """
SELECT queue, state, count(*) AS n,
       min(run_at) FILTER (WHERE state = 'queued') AS oldest_queued_at,
       count(*) FILTER (WHERE state IN ('succeeded', 'failed', 'cancelled') AND finished_at >= %(since)s)
           AS finished
FROM jobs GROUP BY queue, state"""

# The gauges' frequent refresh (queue_stats without totals): the jobs in flight (jobs_state_id, one range per state)
# and those finished in the last minute (jobs_terminal_finished), never the whole table.
QUEUE_IN_FLIGHT: Final = """
SELECT queue, state, count(*) AS n, min(run_at) FILTER (WHERE state = 'queued') AS oldest_queued_at, 0 AS finished
FROM jobs WHERE state IN ('queued', 'running') GROUP BY queue, state
UNION ALL
SELECT queue, NULL, 0, NULL, count(*) FROM jobs
WHERE state IN ('succeeded', 'failed', 'cancelled') AND finished_at >= %(since)s GROUP BY queue"""

# Finished jobs per queue, final state and bucket; buckets start at %(since)s (jobs_terminal_finished serves it).
THROUGHPUT: Final = """
SELECT queue, state, date_bin(%(bucket)s::interval, finished_at, %(since)s) AS start, count(*) AS n
FROM jobs WHERE state IN ('succeeded', 'failed', 'cancelled') AND finished_at >= %(since)s
GROUP BY queue, state, start ORDER BY start, queue, state"""

PRUNE: Final = """
DELETE FROM jobs WHERE id IN (
    SELECT id FROM jobs WHERE state IN ('succeeded', 'failed', 'cancelled') AND finished_at < %(before)s
    ORDER BY finished_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED)"""

# Listing: a fixed set of filter fragments, AND-ed together by psycopg.sql composition.
LIST_JOBS: Final = "SELECT * FROM jobs WHERE {where} ORDER BY id DESC LIMIT %(limit)s"
# A state other than `succeeded` also names the predicate of jobs_state_id (V002), so that even a generic plan
# of the prepared statement (where the state is a parameter) can prove the partial index covers the rows.
JOB_FILTERS: Final[dict[str, LiteralString]] = {
    "state": "state = %(state)s AND state <> 'succeeded'",
    "succeeded": "state = %(state)s",
    "queue": "queue = %(queue)s",
    "task": "task = %(task)s",
    "schedule_id": "schedule_id = %(schedule_id)s",
    "cursor": "id < %(cursor)s",
}
NO_FILTER: Final = "true"

# -- schedules ------------------------------------------------------------------------------------------------

SCHEDULE_COLUMNS: Final[LiteralString] = (
    "id, name, cron, interval_seconds, timezone, job, misfire_policy, misfire_grace_seconds, max_catchup,"
    " overlap_policy, jitter_seconds, start_at, end_at, max_runs, next_fire_at, last_fired_at, last_job_id,"
    " fired_count, paused, pause_note, paused_at, paused_until, buffered_for, recheck_at, due_at, created_at,"
    " updated_at, version"
)
_SCHEDULE_SET: Final[LiteralString] = (
    "name = new.name, cron = new.cron, interval_seconds = new.interval_seconds, timezone = new.timezone,"
    " job = new.job, misfire_policy = new.misfire_policy, misfire_grace_seconds = new.misfire_grace_seconds,"
    " max_catchup = new.max_catchup, overlap_policy = new.overlap_policy, jitter_seconds = new.jitter_seconds,"
    " start_at = new.start_at, end_at = new.end_at, max_runs = new.max_runs, next_fire_at = new.next_fire_at,"
    " last_fired_at = new.last_fired_at, last_job_id = new.last_job_id, fired_count = new.fired_count,"
    " paused = new.paused, pause_note = new.pause_note, paused_at = new.paused_at,"
    " paused_until = new.paused_until, buffered_for = new.buffered_for, recheck_at = new.recheck_at,"
    " due_at = new.due_at, created_at = new.created_at, updated_at = new.updated_at, version = new.version"
)

INSERT_SCHEDULE: Final[LiteralString] = (
    "INSERT INTO schedules (" + SCHEDULE_COLUMNS + ") SELECT " + SCHEDULE_COLUMNS
    + " FROM json_populate_record(NULL::schedules, %(schedule)s::json)"
)
# Compare-and-set on version for a batch of schedules; returns the ids written.
SAVE_SCHEDULES: Final[LiteralString] = (
    "UPDATE schedules SET " + _SCHEDULE_SET
    + " FROM json_populate_recordset(NULL::schedules, %(schedules)s::json) AS new"
    " WHERE schedules.id = new.id AND schedules.version = new.version - 1 RETURNING schedules.id"
)
SCHEDULE_BY_ID_OR_NAME: Final = """
SELECT * FROM schedules WHERE id = %(id)s OR name = %(name)s ORDER BY id = %(id)s DESC LIMIT 1"""
SCHEDULE_BY_NAME: Final = "SELECT * FROM schedules WHERE name = %(name)s"
SCHEDULE_EXISTS: Final = "SELECT 1 FROM schedules WHERE id = %(id)s"
LIST_SCHEDULES: Final = "SELECT * FROM schedules ORDER BY id DESC LIMIT %(limit)s"
LIST_SCHEDULES_AFTER: Final = "SELECT * FROM schedules WHERE id < %(cursor)s ORDER BY id DESC LIMIT %(limit)s"
DELETE_SCHEDULE: Final = "DELETE FROM schedules WHERE id = %(id)s"
NEXT_SCHEDULE_DUE_AT: Final = "SELECT min(due_at) AS due FROM schedules"

# A firing recorded outside the tick (trigger, resume, backfill) locks its schedule first, as the tick does, and
# only then the flow locks of its jobs and cancels: one order for both, so that they never deadlock.
LOCK_SCHEDULE: Final = "SELECT 1 FROM schedules WHERE id = %(id)s FOR UPDATE"

# One replica per schedule: the others skip the locked rows and take the next due ones.
LOCK_DUE_SCHEDULES: Final = """
SELECT * FROM schedules WHERE due_at <= %(now)s
ORDER BY due_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED"""

INSERT_OCCURRENCES: Final = """
INSERT INTO occurrences (schedule_id, scheduled_for, fate, job_id, count, until, recorded_at)
SELECT schedule_id, scheduled_for, fate, job_id, count, until, recorded_at
FROM json_populate_recordset(NULL::occurrences, %(entries)s::json) WITH ORDINALITY ORDER BY ordinality"""
OCCURRENCES: Final = """
SELECT * FROM occurrences WHERE schedule_id = %(schedule_id)s ORDER BY id DESC LIMIT %(limit)s"""
OCCURRENCES_AFTER: Final = """
SELECT * FROM occurrences WHERE schedule_id = %(schedule_id)s AND id < %(cursor)s
ORDER BY id DESC LIMIT %(limit)s"""
# An occurrence counts as fired when a job exists for it, or the ledger says so (its job may be pruned).
FIRED_FOR: Final = """
SELECT scheduled_for FROM jobs
WHERE schedule_id = %(schedule_id)s AND scheduled_for BETWEEN %(start)s AND %(end)s
UNION
SELECT scheduled_for FROM occurrences
WHERE schedule_id = %(schedule_id)s AND fate = 'fired' AND scheduled_for BETWEEN %(start)s AND %(end)s"""

# -- sessions -------------------------------------------------------------------------------------------------

GENERIC_PLANS: Final = "SET plan_cache_mode = force_generic_plan"

# -- wake-ups -------------------------------------------------------------------------------------------------

LISTEN_WAKEUP: Final = "LISTEN gnomon_wakeup"
NOTIFY_WAKEUP: Final = "SELECT pg_notify('gnomon_wakeup', '')"
