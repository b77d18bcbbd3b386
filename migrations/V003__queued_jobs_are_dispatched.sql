-- gnomon schema, version 3: a queued job always carries the instant it was handed to dispatch.
--
-- Every way into `queued` stamps dispatched_at (Job.create when due, promote, manual retry). Saying so in the
-- schema lets the re-dispatch sweep ask only `dispatched_at < $older_than` of the partial index
-- jobs_queued_dispatched, an ordered range scan that reads the stale jobs and nothing else. With the former
-- `OR dispatched_at IS NULL` the planner, multiplying the share of queued jobs by the share of NULL
-- dispatched_at (nearly every waiting job), expected thousands of rows and scanned the whole table.
-- A row that broke the rule (none should) is stamped first, so the sweep re-sends it after the timeout.

UPDATE jobs SET dispatched_at = updated_at WHERE state = 'queued' AND dispatched_at IS NULL;

ALTER TABLE jobs ADD CONSTRAINT jobs_queued_dispatched CHECK (state <> 'queued' OR dispatched_at IS NOT NULL);
