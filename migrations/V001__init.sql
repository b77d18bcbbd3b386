-- gnomon schema, version 1: jobs, their execution history, schedules and the occurrence ledger.
-- Columns mirror the domain values (domain/job.py, domain/schedule.py); ids are UUIDv7 (time-ordered),
-- so keyset paging by id is paging by creation time.

CREATE TABLE schedules (
    id                    uuid        PRIMARY KEY,
    name                  text        NOT NULL,
    -- ScheduleSpec
    cron                  text,
    interval_seconds      integer,
    timezone              text        NOT NULL DEFAULT 'UTC',
    job                   jsonb       NOT NULL,          -- the JobSpec template
    misfire_policy        text        NOT NULL DEFAULT 'run_once',
    misfire_grace_seconds integer     NOT NULL DEFAULT 60,
    max_catchup           integer     NOT NULL DEFAULT 100,
    overlap_policy        text        NOT NULL DEFAULT 'allow',
    jitter_seconds        integer     NOT NULL DEFAULT 0,
    start_at              timestamptz,
    end_at                timestamptz,
    max_runs              integer,
    -- runtime
    next_fire_at          timestamptz,
    last_fired_at         timestamptz,
    last_job_id           uuid,                          -- no FK: the job may be pruned, the schedule stays
    fired_count           integer     NOT NULL DEFAULT 0,
    paused                boolean     NOT NULL DEFAULT false,
    pause_note            text,
    paused_at             timestamptz,
    paused_until          timestamptz,
    buffered_for          timestamptz,
    recheck_at            timestamptz,
    due_at                timestamptz,                   -- = Schedule.due_at, stored so it can be indexed
    created_at            timestamptz NOT NULL,
    updated_at            timestamptz NOT NULL,
    version               bigint      NOT NULL DEFAULT 0,
    CONSTRAINT schedules_name_key UNIQUE (name),
    CONSTRAINT schedules_one_rule CHECK ((cron IS NULL) <> (interval_seconds IS NULL)),
    CONSTRAINT schedules_interval CHECK (interval_seconds IS NULL OR interval_seconds >= 1),
    CONSTRAINT schedules_misfire_policy CHECK (misfire_policy IN ('skip', 'run_once', 'run_all')),
    CONSTRAINT schedules_overlap_policy CHECK (overlap_policy IN ('allow', 'skip', 'buffer_one', 'cancel_other')),
    CONSTRAINT schedules_counts CHECK (misfire_grace_seconds >= 0 AND max_catchup >= 1 AND jitter_seconds >= 0
                                       AND fired_count >= 0 AND (max_runs IS NULL OR max_runs >= 1))
);

CREATE INDEX schedules_due ON schedules (due_at) WHERE due_at IS NOT NULL;


CREATE TABLE jobs (
    id                uuid             PRIMARY KEY,
    task              text             NOT NULL,
    payload           jsonb            NOT NULL DEFAULT '{}',
    queue             text             NOT NULL DEFAULT 'default',
    priority          smallint         NOT NULL DEFAULT 0,
    run_at            timestamptz      NOT NULL,
    state             text             NOT NULL,
    attempt           integer          NOT NULL DEFAULT 0,
    max_attempts      integer          NOT NULL DEFAULT 3,
    backoff           jsonb            NOT NULL,
    timeout_seconds   double precision NOT NULL DEFAULT 300,
    idempotency_key   text,
    schedule_id       uuid             REFERENCES schedules (id) ON DELETE SET NULL,
    scheduled_for     timestamptz,
    concurrency_key   text,
    concurrency_limit integer          NOT NULL DEFAULT 1,
    result            jsonb,
    last_error        text,
    created_at        timestamptz      NOT NULL,
    updated_at        timestamptz      NOT NULL,
    started_at        timestamptz,
    finished_at       timestamptz,
    dispatched_at     timestamptz,
    lease_worker      text,
    lease_token       bigint,
    lease_expires_at  timestamptz,
    version           bigint           NOT NULL DEFAULT 0,
    CONSTRAINT jobs_idempotency_key_key UNIQUE (idempotency_key),
    -- the exactly-once backstop of schedules: one job per occurrence, whatever the replicas do
    CONSTRAINT jobs_schedule_occurrence_key UNIQUE (schedule_id, scheduled_for),
    CONSTRAINT jobs_state CHECK (state IN ('scheduled', 'queued', 'running', 'succeeded', 'failed', 'retry',
                                           'cancelled')),
    CONSTRAINT jobs_priority CHECK (priority BETWEEN 0 AND 9),
    CONSTRAINT jobs_attempts CHECK (attempt >= 0 AND max_attempts >= 1 AND attempt <= max_attempts),
    CONSTRAINT jobs_timeout CHECK (timeout_seconds > 0),
    CONSTRAINT jobs_concurrency_limit CHECK (concurrency_limit >= 1),
    -- a lease is all three columns or none, and only a running job holds one
    CONSTRAINT jobs_lease_whole CHECK ((lease_worker IS NULL) = (lease_token IS NULL)
                                       AND (lease_token IS NULL) = (lease_expires_at IS NULL)),
    CONSTRAINT jobs_lease_running CHECK (state = 'running' OR lease_token IS NULL)
);

-- "What is due" costs what is due: each hot query has a partial index over just its state.
CREATE INDEX jobs_waiting_run_at ON jobs (run_at) WHERE state IN ('scheduled', 'retry');
CREATE INDEX jobs_queued_order ON jobs (queue, priority DESC, run_at) WHERE state = 'queued';
CREATE INDEX jobs_queued_dispatched ON jobs (dispatched_at) WHERE state = 'queued';
CREATE INDEX jobs_running_lease ON jobs (lease_expires_at) WHERE state = 'running';
CREATE INDEX jobs_terminal_finished ON jobs (finished_at) WHERE state IN ('succeeded', 'failed', 'cancelled');
CREATE INDEX jobs_running_concurrency ON jobs (concurrency_key)
    WHERE state = 'running' AND concurrency_key IS NOT NULL;
-- Listing filters, newest first (keyset by id). schedule_id also serves ON DELETE SET NULL.
CREATE INDEX jobs_state_id ON jobs (state, id);
CREATE INDEX jobs_queue_id ON jobs (queue, id);
CREATE INDEX jobs_task_id ON jobs (task, id);
CREATE INDEX jobs_schedule_id ON jobs (schedule_id, id) WHERE schedule_id IS NOT NULL;


CREATE TABLE runs (
    id               bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id           uuid        NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    attempt          integer     NOT NULL,
    worker_id        text        NOT NULL,
    started_at       timestamptz NOT NULL,
    finished_at      timestamptz NOT NULL,
    outcome          text        NOT NULL,
    error            text,
    duration_seconds double precision GENERATED ALWAYS AS (extract(epoch FROM finished_at - started_at)) STORED,
    CONSTRAINT runs_outcome CHECK (outcome IN ('succeeded', 'failed', 'timeout', 'lost', 'cancelled')),
    CONSTRAINT runs_attempt CHECK (attempt >= 0)
);

CREATE INDEX runs_job ON runs (job_id, id);


CREATE TABLE occurrences (
    id            bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    schedule_id   uuid        NOT NULL REFERENCES schedules (id) ON DELETE CASCADE,
    scheduled_for timestamptz NOT NULL,
    fate          text        NOT NULL,
    job_id        uuid,                                  -- no FK: the ledger outlives pruned jobs
    count         integer,                               -- NULL: more than could be counted
    until         timestamptz,
    recorded_at   timestamptz NOT NULL,
    CONSTRAINT occurrences_fate CHECK (fate IN ('fired', 'skipped_overlap', 'missed', 'coalesced', 'buffered',
                                                'paused')),
    CONSTRAINT occurrences_count CHECK (count IS NULL OR count >= 0)
);

CREATE INDEX occurrences_schedule ON occurrences (schedule_id, id DESC);
