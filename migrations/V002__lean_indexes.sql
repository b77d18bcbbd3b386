-- gnomon schema, version 2: fewer index writes per job.
--
-- A job's row is written three times (insert queued, claim running, finish) and every write changes `state`,
-- which the partial indexes name in their predicates, so no write is a HOT update: each new row version goes
-- into every index whose predicate it meets. V001 had eight such indexes on a queued job and seven on a
-- running or finished one (24 index writes per job); V002 leaves eight (3 at insert, 3 at claim, 2 at finish).
--
-- * The unique keys become partial unique indexes: NULLs never collide, so uniqueness is unchanged, but jobs
--   without an idempotency key or schedule (nearly all of them) no longer put a NULL entry in each. Their
--   names stay, so errors still name `jobs_idempotency_key_key` / `jobs_schedule_occurrence_key`. An
--   ON CONFLICT naming these columns must repeat the index predicate (adapters/postgres/sql.py does).
-- * Listing by queue or by task walks the primary key newest first and filters: fine when the filter matches
--   many jobs, a long walk when it matches few among many. No hot path reads by queue or task.
-- * jobs_queued_order served no query (dispatch order lives in Redis).
-- * Listing by state keeps an index for every state but `succeeded`, the state nearly all jobs end in: a
--   listing of succeeded jobs walks the primary key newest first, which finds them at once in the usual table,
--   and the finish of a successful job skips this index.

ALTER TABLE jobs DROP CONSTRAINT jobs_idempotency_key_key;
CREATE UNIQUE INDEX jobs_idempotency_key_key ON jobs (idempotency_key) WHERE idempotency_key IS NOT NULL;

ALTER TABLE jobs DROP CONSTRAINT jobs_schedule_occurrence_key;
CREATE UNIQUE INDEX jobs_schedule_occurrence_key ON jobs (schedule_id, scheduled_for)
    WHERE schedule_id IS NOT NULL AND scheduled_for IS NOT NULL;

DROP INDEX jobs_queue_id;
DROP INDEX jobs_task_id;
DROP INDEX jobs_queued_order;

DROP INDEX jobs_state_id;
CREATE INDEX jobs_state_id ON jobs (state, id) WHERE state <> 'succeeded';
