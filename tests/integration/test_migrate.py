"""The migration runner on a real PostgreSQL, and the constraints of the schema it builds."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg import errors

from adapters.postgres.migrate import MigrationError, discover, migrate

NOW = "2026-01-01T00:00:00Z"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A copy of the shipped migrations that a test may tamper with."""
    for migration in discover():
        (tmp_path / migration.script).write_bytes(migration.sql)
    return tmp_path


async def history(url: str) -> list[tuple[str, str, bool]]:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cur = await conn.execute("SELECT version, script, success FROM gnomon_schema_history ORDER BY version")
        return await cur.fetchall()


async def tables(url: str) -> set[str]:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cur = await conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {row[0] for row in await cur.fetchall()}


async def test_a_fresh_database_gets_every_migration(empty_pg_url: str) -> None:
    applied = await migrate(empty_pg_url)

    assert applied == [m.version for m in discover()]
    assert applied[0] == "001"
    assert {"jobs", "runs", "schedules", "occurrences", "gnomon_schema_history"} <= await tables(empty_pg_url)
    assert await history(empty_pg_url) == [(m.version, m.script, True) for m in discover()]
    assert (await history(empty_pg_url))[0] == ("001", "V001__init.sql", True)


async def test_running_again_is_a_no_op(empty_pg_url: str) -> None:
    await migrate(empty_pg_url)
    before = await history(empty_pg_url)

    assert await migrate(empty_pg_url) == []
    assert await history(empty_pg_url) == before


async def test_concurrent_runs_apply_each_migration_once(empty_pg_url: str) -> None:
    results = await asyncio.gather(*(migrate(empty_pg_url) for _ in range(3)))

    assert sorted(results, key=len) == [[], [], [m.version for m in discover()]]
    assert len(await history(empty_pg_url)) == len(discover())


async def test_a_new_file_is_applied_on_the_next_run(empty_pg_url: str, folder: Path) -> None:
    await migrate(empty_pg_url, directory=folder)
    (folder / "V900__add_notes.sql").write_text("CREATE TABLE notes (id int PRIMARY KEY);")

    assert await migrate(empty_pg_url, directory=folder) == ["900"]
    assert "notes" in await tables(empty_pg_url)


async def test_an_edited_applied_file_is_refused_by_name(empty_pg_url: str, folder: Path) -> None:
    await migrate(empty_pg_url, directory=folder)
    with (folder / "V001__init.sql").open("a") as script:
        script.write("\n-- a harmless looking edit\n")

    with pytest.raises(MigrationError, match=r"V001__init\.sql .*checksum"):
        await migrate(empty_pg_url, directory=folder)


async def test_a_missing_applied_file_is_refused_by_name(empty_pg_url: str, folder: Path) -> None:
    (folder / "V900__add_notes.sql").write_text("CREATE TABLE notes (id int PRIMARY KEY);")
    await migrate(empty_pg_url, directory=folder)
    (folder / "V900__add_notes.sql").unlink()

    with pytest.raises(MigrationError, match=r"V900__add_notes\.sql .*missing"):
        await migrate(empty_pg_url, directory=folder)


async def test_a_failing_migration_rolls_back_entirely(empty_pg_url: str, folder: Path) -> None:
    await migrate(empty_pg_url, directory=folder)
    (folder / "V900__half_done.sql").write_text(
        "CREATE TABLE half_done (id int);\nINSERT INTO half_done VALUES (1);\nSELECT * FROM no_such_table;\n")

    with pytest.raises(MigrationError, match=r"V900__half_done\.sql failed"):
        await migrate(empty_pg_url, directory=folder)

    assert "half_done" not in await tables(empty_pg_url)
    assert [row[0] for row in await history(empty_pg_url)] == [m.version for m in discover()]
    (folder / "V900__half_done.sql").write_text("CREATE TABLE half_done (id int);")
    assert await migrate(empty_pg_url, directory=folder) == ["900"]


async def test_an_out_of_order_file_is_refused(empty_pg_url: str, folder: Path) -> None:
    (folder / "V905__later.sql").write_text("SELECT 1;")  # after every real migration
    await migrate(empty_pg_url, directory=folder)
    (folder / "V903__forgotten.sql").write_text("SELECT 1;")  # before the last one applied

    with pytest.raises(MigrationError, match=r"V903__forgotten\.sql"):
        await migrate(empty_pg_url, directory=folder)


def test_badly_named_or_duplicate_files_are_refused(tmp_path: Path) -> None:
    (tmp_path / "V1_missing_underscore.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match=r"V1_missing_underscore\.sql"):
        discover(tmp_path)
    (tmp_path / "V1_missing_underscore.sql").unlink()
    (tmp_path / "V1__one.sql").write_text("SELECT 1;")
    (tmp_path / "V001__also_one.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="same version"):
        discover(tmp_path)


def test_the_shipped_files_are_found_without_a_directory() -> None:
    assert discover() == discover(Path(__file__).parents[2] / "migrations")
    assert discover()[0].script == "V001__init.sql"


# -- the schema's constraints bite --------------------------------------------------------------------

INSERT_JOB = """
INSERT INTO jobs (id, task, run_at, state, backoff, created_at, updated_at, idempotency_key, schedule_id,
                  scheduled_for, priority, attempt, lease_worker, lease_token, lease_expires_at)
VALUES (%(id)s, 'noop', %(now)s, %(state)s, '{}', %(now)s, %(now)s, %(key)s, %(schedule_id)s,
        %(scheduled_for)s, %(priority)s, %(attempt)s, %(worker)s, %(token)s, %(expires)s)"""
INSERT_SCHEDULE = """
INSERT INTO schedules (id, name, interval_seconds, job, created_at, updated_at)
VALUES (%(id)s, %(name)s, 60, '{"task": "noop"}', %(now)s, %(now)s)"""


async def insert_job(conn: psycopg.AsyncConnection, **fields: object) -> str:
    row = {"id": str(uuid.uuid4()), "now": NOW, "state": "scheduled", "key": None, "schedule_id": None,
           "scheduled_for": None, "priority": 0, "attempt": 0, "worker": None, "token": None, "expires": None}
    row.update(fields)
    await conn.execute(INSERT_JOB, row)
    return str(row["id"])


@pytest.fixture
async def conn(pg_url: str):
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as connection:
        yield connection


async def test_a_well_formed_job_is_accepted(conn: psycopg.AsyncConnection) -> None:
    await insert_job(conn, state="running", attempt=1, worker="w1", token=1, expires=NOW)

    cur = await conn.execute("SELECT count(*) FROM jobs")
    assert await cur.fetchone() == (1,)


@pytest.mark.parametrize(("fields", "constraint"), [
    ({"state": "exploded"}, "jobs_state"),
    ({"priority": 10}, "jobs_priority"),
    ({"attempt": 4}, "jobs_attempts"),
    ({"worker": "w1", "token": 1, "expires": NOW}, "jobs_lease_running"),
    ({"state": "running", "worker": "w1", "token": None, "expires": NOW}, "jobs_lease_whole"),
])
async def test_illegal_job_rows_are_refused(conn: psycopg.AsyncConnection, fields: dict[str, object],
                                            constraint: str) -> None:
    with pytest.raises(errors.CheckViolation, match=constraint):
        await insert_job(conn, **fields)


async def test_an_idempotency_key_is_unique(conn: psycopg.AsyncConnection) -> None:
    await insert_job(conn, key="order-17")
    with pytest.raises(errors.UniqueViolation, match="jobs_idempotency_key_key"):
        await insert_job(conn, key="order-17")


async def test_one_job_per_schedule_occurrence(conn: psycopg.AsyncConnection) -> None:
    schedule_id = str(uuid.uuid4())
    await conn.execute(INSERT_SCHEDULE, {"id": schedule_id, "name": "hourly", "now": NOW})
    await insert_job(conn, schedule_id=schedule_id, scheduled_for=NOW)
    await insert_job(conn, schedule_id=schedule_id, scheduled_for="2026-01-01T01:00:00Z")

    with pytest.raises(errors.UniqueViolation, match="jobs_schedule_occurrence_key"):
        await insert_job(conn, schedule_id=schedule_id, scheduled_for=NOW)


async def test_a_job_cannot_name_a_missing_schedule(conn: psycopg.AsyncConnection) -> None:
    with pytest.raises(errors.ForeignKeyViolation):
        await insert_job(conn, schedule_id=str(uuid.uuid4()), scheduled_for=NOW)


async def test_a_run_needs_its_job_and_goes_with_it(conn: psycopg.AsyncConnection) -> None:
    insert_run = """INSERT INTO runs (job_id, attempt, worker_id, started_at, finished_at, outcome)
                    VALUES (%s, 1, 'w1', %s, %s::timestamptz + interval '1.5 s', %s)"""
    with pytest.raises(errors.ForeignKeyViolation):
        await conn.execute(insert_run, (str(uuid.uuid4()), NOW, NOW, "succeeded"))
    job_id = await insert_job(conn)
    with pytest.raises(errors.CheckViolation, match="runs_outcome"):
        await conn.execute(insert_run, (job_id, NOW, NOW, "vanished"))
    await conn.execute(insert_run, (job_id, NOW, NOW, "succeeded"))

    cur = await conn.execute("SELECT duration_seconds FROM runs")
    assert await cur.fetchone() == (1.5,)
    await conn.execute("DELETE FROM jobs WHERE id = %s", (job_id,))
    cur = await conn.execute("SELECT count(*) FROM runs")
    assert await cur.fetchone() == (0,)


async def test_schedule_names_are_unique_and_deleting_one_keeps_its_jobs(conn: psycopg.AsyncConnection) -> None:
    schedule_id = str(uuid.uuid4())
    await conn.execute(INSERT_SCHEDULE, {"id": schedule_id, "name": "nightly", "now": NOW})
    with pytest.raises(errors.UniqueViolation, match="schedules_name_key"):
        await conn.execute(INSERT_SCHEDULE, {"id": str(uuid.uuid4()), "name": "nightly", "now": NOW})
    job_id = await insert_job(conn, schedule_id=schedule_id, scheduled_for=NOW)
    await conn.execute("""INSERT INTO occurrences (schedule_id, scheduled_for, fate, job_id, recorded_at)
                          VALUES (%s, %s, 'fired', %s, %s)""", (schedule_id, NOW, job_id, NOW))

    await conn.execute("DELETE FROM schedules WHERE id = %s", (schedule_id,))

    cur = await conn.execute("SELECT schedule_id FROM jobs WHERE id = %s", (job_id,))
    assert await cur.fetchone() == (None,)
    cur = await conn.execute("SELECT count(*) FROM occurrences")
    assert await cur.fetchone() == (0,)
