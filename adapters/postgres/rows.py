"""Between rows and domain values: `_x_from_row` builds values from rows, `x_record` turns values into the
JSON rows that `json_populate_recordset` reads. Rows never leave the adapter."""

from __future__ import annotations

import functools
import json
import re
import uuid
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any, Final

from psycopg.types.json import Json

from application.ports import Finished
from domain.errors import InvalidInput
from domain.job import Hold, Job, JobSpec, Lease, Outcome, Run, State
from domain.retry import Backoff
from domain.schedule import Fate, MisfirePolicy, Occurrence, OverlapPolicy, Schedule, ScheduleSpec

Row = dict[str, Any]


def as_uuid(value: str) -> uuid.UUID | None:
    """The id as a UUID, or None when it cannot be one (and so names nothing stored)."""
    try:
        return uuid.UUID(value)
    except (ValueError, TypeError, AttributeError):
        return None


_CANONICAL_UUID: Final = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def uuid_texts(job_ids: Iterable[str]) -> list[str]:
    """Distinct ids in the order given, as canonical uuid text; strings that cannot be ids name no job and are
    dropped. Ids already canonical (those gnomon hands out) are taken as they are: parsing and printing each as a
    uuid.UUID cost more than the rest of a claim's Python."""
    seen: dict[str, None] = {}
    for job_id in job_ids:
        if not (isinstance(job_id, str) and _CANONICAL_UUID.fullmatch(job_id)):
            key = as_uuid(job_id)
            if key is None:
                continue
            job_id = str(key)
        seen[job_id] = None
    return list(seen)


def cursor_uuid(cursor: str | None) -> uuid.UUID | None:
    if cursor is None:
        return None
    if (value := as_uuid(cursor)) is None:
        raise InvalidInput({"cursor": "not a cursor this listing handed out"})
    return value


def _utc(value: datetime | None) -> datetime | None:
    return None if value is None else value.astimezone(UTC)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _str(value: object) -> str | None:
    return None if value is None else str(value)


# -- jobs -----------------------------------------------------------------------------------------------------

_BACKOFFS: dict[tuple[tuple[str, Any], ...], Backoff] = {}


def _backoff(value: dict[str, Any]) -> Backoff:
    """Jobs share a handful of backoff settings: each is validated and built once (Backoff is frozen, so one
    value can serve every job), which is a fifth of the cost of reading a batch of jobs."""
    key = tuple(value.items())  # jsonb hands the keys back in one canonical order
    found = _BACKOFFS.get(key)
    if found is None:
        found = Backoff(**value)
        if len(_BACKOFFS) < 1024:
            _BACKOFFS[key] = found
    return found


_STATES: Final = {str(state): state for state in State}


def _job_from_row(row: Row) -> Job:
    """The stored job; the table's types and CHECK constraints hold what the validators would check, so the
    row is not validated again (Job.stored)."""
    lease = None
    if row["lease_token"] is not None:
        lease = Lease(worker_id=row["lease_worker"], token=row["lease_token"],
                      expires_at=row["lease_expires_at"].astimezone(UTC))
    held_for = row["held_for"]
    return Job.stored(
        id=str(row["id"]), task=row["task"], payload=row["payload"], queue=row["queue"],
        priority=row["priority"], run_at=row["run_at"].astimezone(UTC), state=_STATES[row["state"]],
        attempt=row["attempt"], max_attempts=row["max_attempts"], backoff=_backoff(row["backoff"]),
        timeout_seconds=row["timeout_seconds"], idempotency_key=row["idempotency_key"],
        schedule_id=_str(row["schedule_id"]), scheduled_for=_utc(row["scheduled_for"]),
        concurrency_key=row["concurrency_key"], concurrency_limit=row["concurrency_limit"],
        result=row["result"], last_error=row["last_error"], created_at=row["created_at"].astimezone(UTC),
        updated_at=row["updated_at"].astimezone(UTC), started_at=_utc(row["started_at"]),
        finished_at=_utc(row["finished_at"]), dispatched_at=_utc(row["dispatched_at"]), lease=lease,
        version=row["version"], held_at=_utc(row["held_at"]),
        held_for=None if held_for is None else Hold(held_for),
    )


_BACKOFF_TEXTS: dict[str, Backoff] = {}


def _backoff_of_text(text: str) -> Backoff:
    """The backoff of a jsonb's text (jsonb prints equal values alike), each distinct text decoded once."""
    found = _BACKOFF_TEXTS.get(text)
    if found is None:
        found = _backoff(json.loads(text))
        if len(_BACKOFF_TEXTS) < 1024:
            _BACKOFF_TEXTS[text] = found
    return found


def claimed_jobs(rows: Iterable[tuple[Any, ...]], *, worker_id: str, now: datetime,
                 expires_at: datetime) -> list[Job]:
    """The jobs a claim started (sql.CLAIM, or the gated claim: flow_sql.CLAIM_GATED), from sql.CLAIMED_COLUMNS
    (tuples, in that order) and what the claim set itself: running, updated and started `now`, not finished, not
    held, under `worker_id`'s lease until `expires_at` with the new version as its token. The claims of a batch
    mostly share a version, so they share a Lease (frozen) too."""
    now, expires_at = now.astimezone(UTC), expires_at.astimezone(UTC)
    leases: dict[int, Lease] = {}
    jobs = []
    for (job_id, task, payload, queue, priority, run_at, attempt, max_attempts, backoff, timeout_seconds,
         idempotency_key, schedule_id, scheduled_for, concurrency_key, concurrency_limit, result, last_error,
         created_at, dispatched_at, version) in rows:
        lease = leases.get(version)
        if lease is None:
            lease = leases[version] = Lease(worker_id=worker_id, token=version, expires_at=expires_at)
        run_at = run_at.astimezone(UTC)
        jobs.append(Job.stored(
            id=job_id, task=task, payload=payload, queue=queue, priority=priority, run_at=run_at,
            state=State.RUNNING, attempt=attempt, max_attempts=max_attempts, backoff=_backoff_of_text(backoff),
            timeout_seconds=timeout_seconds, idempotency_key=idempotency_key, schedule_id=schedule_id,
            scheduled_for=_utc(scheduled_for), concurrency_key=concurrency_key, concurrency_limit=concurrency_limit,
            result=result, last_error=last_error,
            created_at=run_at if created_at is None else created_at.astimezone(UTC), updated_at=now,
            started_at=now, finished_at=None,
            dispatched_at=run_at if dispatched_at is None else dispatched_at.astimezone(UTC), lease=lease,
            version=version, held_at=None, held_for=None,
        ))
    return jobs


def job_record(job: Job) -> Row:
    lease = job.lease
    return {
        "id": job.id, "task": job.task, "payload": job.payload, "queue": job.queue, "priority": job.priority,
        "run_at": _iso(job.run_at), "state": str(job.state), "attempt": job.attempt,
        "max_attempts": job.max_attempts, "backoff": job.backoff.as_dict(), "timeout_seconds": job.timeout_seconds,
        "idempotency_key": job.idempotency_key, "schedule_id": job.schedule_id,
        "scheduled_for": _iso(job.scheduled_for), "concurrency_key": job.concurrency_key,
        "concurrency_limit": job.concurrency_limit, "result": job.result, "last_error": job.last_error,
        "created_at": _iso(job.created_at), "updated_at": _iso(job.updated_at), "started_at": _iso(job.started_at),
        "finished_at": _iso(job.finished_at), "dispatched_at": _iso(job.dispatched_at),
        "lease_worker": lease.worker_id if lease else None, "lease_token": lease.token if lease else None,
        "lease_expires_at": _iso(lease.expires_at) if lease else None, "version": job.version,
        "held_at": _iso(job.held_at), "held_for": _str(job.held_for),
    }


def job_copy_rows(jobs: Iterable[Job]) -> Iterator[tuple[Any, ...]]:
    """The jobs as COPY rows, in the order of sql.JOB_COLUMNS: jsonb columns as JSON text, timestamps as ISO
    text (the driver's own timestamp dumper costs five times as much)."""
    iso = _Instants()
    for job in jobs:
        lease = job.lease
        yield (
            job.id, job.task, json.dumps(job.payload), job.queue, job.priority, iso(job.run_at), str(job.state),
            job.attempt, job.max_attempts, _backoff_json(job.backoff), job.timeout_seconds, job.idempotency_key,
            job.schedule_id, iso(job.scheduled_for), job.concurrency_key, job.concurrency_limit,
            None if job.result is None else json.dumps(job.result), job.last_error, iso(job.created_at),
            iso(job.updated_at), iso(job.started_at), iso(job.finished_at), iso(job.dispatched_at),
            lease.worker_id if lease else None, lease.token if lease else None,
            iso(lease.expires_at) if lease else None, job.version, iso(job.held_at), _str(job.held_for),
        )


class _Instants:
    """ISO text of instants, each distinct one formatted once: the jobs of a batch share their creation time,
    the outcomes of a batch their start, and an outcome's job and run their end."""

    def __init__(self) -> None:
        self._formatted: dict[datetime, str] = {}

    def __call__(self, value: datetime | None) -> str | None:
        if value is None:
            return None
        text = self._formatted.get(value)
        if text is None:
            text = self._formatted[value] = value.isoformat()
        return text


@functools.lru_cache(maxsize=256)
def _backoff_json(backoff: Backoff) -> str:
    return json.dumps(backoff.as_dict())


def outcomes_json(outcomes: Iterable[Finished]) -> Json:
    """The outcomes as the JSON array of records that sql.FINISH_JOBS reads (sql._OUTCOME_COLUMNS): what each
    changes in its job (Job.succeed, fail and release change nothing else) and the run it closed, if any. Written
    out here rather than built as dicts for json.dumps, which cost twice as much: the instants, enums, numbers and
    ids (stored uuid text) need no escaping, free text goes through json.dumps, and a null field is left out
    (json_to_recordset reads a missing key as NULL). A column that can't be null and holds what another one holds
    (`updated_at` = `finished_at`, the run's instants and attempt = the job's) is left out too, and FINISH_JOBS
    takes the other: json_to_recordset parses every key it is given, ~1.8 us per instant."""
    iso = _Instants()
    quoted: dict[str, str] = {}  # worker ids: one or two per batch
    records = []
    for item in outcomes:
        job, run, lease = item.job, item.run, item.job.lease
        fields = [f'{{"id":"{job.id}","version":{job.version},"state":"{job.state}",'
                  f'"attempt":{job.attempt},"run_at":"{iso(job.run_at)}"']
        if job.updated_at != job.finished_at:
            fields.append(f',"updated_at":"{iso(job.updated_at)}"')
        if job.started_at is not None:
            fields.append(f',"started_at":"{iso(job.started_at)}"')
        if job.finished_at is not None:
            fields.append(f',"finished_at":"{iso(job.finished_at)}"')
        if job.result is not None:
            fields.append(f',"result":{json.dumps(job.result)}')
        if job.last_error is not None:
            fields.append(f',"last_error":{json.dumps(job.last_error)}')
        if lease is not None:
            fields.append(f',"lease_worker":{_quoted(quoted, lease.worker_id)},"lease_token":{lease.token},'
                          f'"lease_expires_at":"{iso(lease.expires_at)}"')
        if run is not None:
            fields.append(f',"run_worker":{_quoted(quoted, run.worker_id)},"run_outcome":"{run.outcome}"')
            if run.attempt != job.attempt:
                fields.append(f',"run_attempt":{run.attempt}')
            if run.started_at != job.started_at:
                fields.append(f',"run_started_at":"{iso(run.started_at)}"')
            if run.finished_at != job.updated_at:
                fields.append(f',"run_finished_at":"{iso(run.finished_at)}"')
            if run.error is not None:
                fields.append(f',"run_error":{json.dumps(run.error)}')
        fields.append("}")
        records.append("".join(fields))
    return Json("[" + ",".join(records) + "]", dumps=_as_is)


def uuid_array(ids: Iterable[str]) -> str:
    """Stored ids (uuid text) as the text of an array, for a parameter cast to uuid[]: the driver's list dumper
    costs a few microseconds per element."""
    return "{" + ",".join(ids) + "}"


def _quoted(known: dict[str, str], text: str) -> str:
    found = known.get(text)
    if found is None:
        found = known[text] = json.dumps(text)
    return found


def _as_is(text: str) -> str:
    return text


def _run_from_row(row: Row) -> Run:
    return Run(job_id=str(row["job_id"]), attempt=row["attempt"], worker_id=row["worker_id"],
               started_at=row["started_at"].astimezone(UTC), finished_at=row["finished_at"].astimezone(UTC),
               outcome=Outcome(row["outcome"]), error=row["error"])


def run_record(run: Run) -> Row:
    return {"job_id": run.job_id, "attempt": run.attempt, "worker_id": run.worker_id,
            "started_at": _iso(run.started_at), "finished_at": _iso(run.finished_at),
            "outcome": str(run.outcome), "error": run.error}


# -- schedules ------------------------------------------------------------------------------------------------

def _template_from_json(raw: Row) -> JobSpec:
    run_at = raw.get("run_at")
    return JobSpec(
        task=raw["task"], payload=raw.get("payload", {}), queue=raw.get("queue", "default"),
        priority=raw.get("priority", 0), run_at=datetime.fromisoformat(run_at) if run_at else None,
        max_attempts=raw.get("max_attempts", 3), backoff=Backoff(**raw.get("backoff", {})),
        timeout_seconds=raw.get("timeout_seconds", 300.0), idempotency_key=raw.get("idempotency_key"),
        concurrency_key=raw.get("concurrency_key"), concurrency_limit=raw.get("concurrency_limit", 1),
    )


def template_json(spec: JobSpec) -> Row:
    return {"task": spec.task, "payload": spec.payload, "queue": spec.queue, "priority": spec.priority,
            "run_at": _iso(spec.run_at), "max_attempts": spec.max_attempts, "backoff": spec.backoff.as_dict(),
            "timeout_seconds": spec.timeout_seconds, "idempotency_key": spec.idempotency_key,
            "concurrency_key": spec.concurrency_key, "concurrency_limit": spec.concurrency_limit}


def _schedule_from_row(row: Row) -> Schedule:
    spec = ScheduleSpec(
        name=row["name"], job=_template_from_json(row["job"]), cron=row["cron"],
        interval_seconds=row["interval_seconds"], timezone=row["timezone"],
        misfire_policy=MisfirePolicy(row["misfire_policy"]), misfire_grace_seconds=row["misfire_grace_seconds"],
        max_catchup=row["max_catchup"], overlap_policy=OverlapPolicy(row["overlap_policy"]),
        jitter_seconds=row["jitter_seconds"], start_at=_utc(row["start_at"]), end_at=_utc(row["end_at"]),
        max_runs=row["max_runs"],
    )
    return Schedule(
        id=str(row["id"]), spec=spec, created_at=row["created_at"].astimezone(UTC),
        updated_at=row["updated_at"].astimezone(UTC), next_fire_at=_utc(row["next_fire_at"]),
        last_fired_at=_utc(row["last_fired_at"]), last_job_id=_str(row["last_job_id"]),
        fired_count=row["fired_count"], paused=row["paused"], pause_note=row["pause_note"],
        paused_at=_utc(row["paused_at"]), paused_until=_utc(row["paused_until"]),
        buffered_for=_utc(row["buffered_for"]), recheck_at=_utc(row["recheck_at"]), version=row["version"],
    )


def schedule_record(schedule: Schedule) -> Row:
    spec = schedule.spec
    return {
        "id": schedule.id, "name": spec.name, "cron": spec.cron, "interval_seconds": spec.interval_seconds,
        "timezone": spec.timezone, "job": template_json(spec.job), "misfire_policy": str(spec.misfire_policy),
        "misfire_grace_seconds": spec.misfire_grace_seconds, "max_catchup": spec.max_catchup,
        "overlap_policy": str(spec.overlap_policy), "jitter_seconds": spec.jitter_seconds,
        "start_at": _iso(spec.start_at), "end_at": _iso(spec.end_at), "max_runs": spec.max_runs,
        "next_fire_at": _iso(schedule.next_fire_at), "last_fired_at": _iso(schedule.last_fired_at),
        "last_job_id": schedule.last_job_id, "fired_count": schedule.fired_count, "paused": schedule.paused,
        "pause_note": schedule.pause_note, "paused_at": _iso(schedule.paused_at),
        "paused_until": _iso(schedule.paused_until), "buffered_for": _iso(schedule.buffered_for),
        "recheck_at": _iso(schedule.recheck_at), "due_at": _iso(schedule.due_at),
        "created_at": _iso(schedule.created_at), "updated_at": _iso(schedule.updated_at),
        "version": schedule.version,
    }


def _occurrence_from_row(row: Row) -> Occurrence:
    return Occurrence(schedule_id=str(row["schedule_id"]), scheduled_for=row["scheduled_for"].astimezone(UTC),
                      fate=Fate(row["fate"]), recorded_at=row["recorded_at"].astimezone(UTC),
                      job_id=_str(row["job_id"]), count=row["count"], until=_utc(row["until"]))


def occurrence_record(entry: Occurrence) -> Row:
    return {"schedule_id": entry.schedule_id, "scheduled_for": _iso(entry.scheduled_for), "fate": str(entry.fate),
            "job_id": entry.job_id, "count": entry.count, "until": _iso(entry.until),
            "recorded_at": _iso(entry.recorded_at)}
