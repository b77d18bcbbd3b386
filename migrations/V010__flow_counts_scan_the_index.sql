-- gnomon schema, version 10: the gated claim's counts of running jobs read their index with a plain index scan,
-- which lets go of the entries of jobs that finished (docs/design.md, "The claim, hard and cheap").
--
-- A finish moves a job out of the partial indexes of running jobs (jobs_running_lease, jobs_running_concurrency),
-- but its entry stays until VACUUM; during an S1 run of 20,000 jobs autovacuum does not keep up. The planner counted
-- a queue's running jobs with a bitmap scan of jobs_running_lease, and a bitmap scan reads every dead entry, every
-- time: measured in an e2e run with max_running (pg_stat_user_indexes), 322 scans read 3.18 million entries, ~10,000
-- for the ~128 jobs running, and gnomon_claim_fast, which is little more than that count, took 3.2 ms per call. A
-- plain index scan marks an entry dead the first time it finds its row dead to everyone, later scans skip it
-- without going to the table, and an insert into a full page removes them. So the two functions that count plan
-- without bitmap scans; every statement in them reads through an index anyway (ids, keys, queues, held indexes).

ALTER FUNCTION gnomon_claim_fast(text[], text[], integer, timestamptz, integer) SET enable_bitmapscan = off;
ALTER FUNCTION gnomon_claim_gated(uuid[], text[], text, timestamptz, timestamptz) SET enable_bitmapscan = off;
