-- gnomon schema, version 4: flow control (SPEC §6, docs/design.md "Flow control").
--
-- * A queued job may be held: kept out of dispatch (not in Redis) because its concurrency key has its limit of
--   jobs dispatched or running (held_for = 'key'), or its queue is paused or has max_running jobs running
--   (held_for = 'queue'). It stays `queued`; whoever frees a slot wakes the next held jobs in the same
--   transaction, and the scheduler's sweep wakes any that a lost wake-up left behind.
-- * queue_settings holds the runtime limits of a queue; a queue without a row has none.
--
-- Index writes: a job without a concurrency key that is never held enters no new index. The re-dispatch index
-- leaves out held jobs (they are not in Redis, so there is nothing to re-send), which keeps the sweep a range scan
-- of stale dispatches however many jobs wait held.

ALTER TABLE jobs ADD COLUMN held_at timestamptz, ADD COLUMN held_for text;
ALTER TABLE jobs ADD CONSTRAINT jobs_held CHECK ((held_at IS NULL) = (held_for IS NULL)
                                                 AND (held_for IS NULL OR state = 'queued')
                                                 AND (held_for IS NULL OR held_for IN ('key', 'queue')));

DROP INDEX jobs_queued_dispatched;
CREATE INDEX jobs_queued_dispatched ON jobs (dispatched_at) WHERE state = 'queued' AND held_for IS NULL;

-- Dispatched jobs of a key (with jobs_running_concurrency: what a key has in flight).
CREATE INDEX jobs_dispatched_concurrency ON jobs (concurrency_key)
    WHERE state = 'queued' AND held_for IS NULL AND concurrency_key IS NOT NULL;
-- Held jobs in the order they are woken, per key and per queue.
CREATE INDEX jobs_held_key ON jobs (concurrency_key, priority DESC, run_at, id) WHERE state = 'queued' AND held_for = 'key';
CREATE INDEX jobs_held_queue ON jobs (queue, priority DESC, run_at, id) WHERE state = 'queued' AND held_for = 'queue';

CREATE TABLE queue_settings (
    queue          text             PRIMARY KEY,
    max_running    integer,
    max_per_second double precision,
    paused         boolean          NOT NULL DEFAULT false,
    updated_at     timestamptz      NOT NULL,
    CONSTRAINT queue_settings_max_running CHECK (max_running IS NULL OR max_running >= 1),
    CONSTRAINT queue_settings_max_per_second CHECK (max_per_second IS NULL OR max_per_second > 0)
);
