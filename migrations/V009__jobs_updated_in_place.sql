-- gnomon schema, version 9: fewer writes per job on the hot path (docs/design.md, "The hot path").
--
-- A job's row is written three times on its way through (the submit, the claim, the outcome), each time as a new
-- row version. Filled to the brim by COPY, a page had no room for them, so every claim and every outcome put the
-- new version on another page: PostgreSQL then first marks the old version locked in a WAL record of its own
-- (pg_waldump of an S1 run: one Heap LOCK record per claimed job, and one per finished job on top of the foreign
-- key check's), looks for room through the free space map and dirties a second page. With half of each page
-- left free on insert, the claim's version fits beside the submitted one, and the outcome's takes the room of the
-- submitted one once it is pruned. The price: the jobs table takes up to twice the room of its rows. Only pages
-- written from now on are affected.
ALTER TABLE jobs SET (fillfactor = 50);

-- A run row entered two indexes: its identity (runs_pkey) and (job_id, id) for its job's history and the
-- cascade. The primary key (job_id, id) serves both: the identity stays generated, so still unique on its own.
ALTER TABLE runs DROP CONSTRAINT runs_pkey;
ALTER TABLE runs ADD CONSTRAINT runs_pkey PRIMARY KEY (job_id, id);
DROP INDEX runs_job;
