"""Bad input: every kind is a 4xx problem+json naming what is wrong, and stores or changes nothing."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any, Final

import pytest
from attrs import frozen
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar.testing import TestClient

from adapters.http.bodies import JobBody, JobTemplateBody, ScheduleBody
from tests.unit.http_support import AUTH, PROBLEM, Api, build_app, job_body, running_api, schedule_body

MAX_BODY: Final = 1024 * 1024  # small enough to test 413 cheaply, big enough for a 256 KiB payload
UNSET: Final = object()
NIGHTLY: Final = "/v1/schedules/nightly"


@frozen
class Bad:
    method: str
    path: str
    body: Any = UNSET  # sent as JSON
    raw: bytes | None = None  # sent as is, with `content_type`
    content_type: str = "application/json"
    status: int = 422
    field: str | None = None  # must be named in `errors`
    detail: str | None = None  # must appear in `detail`


def job(status: int = 422, field: str | None = None, **fields: Any) -> Bad:
    return Bad("POST", "/v1/jobs", job_body(**fields), status=status, field=field)


def batch(jobs: Any, field: str | None) -> Bad:
    return Bad("POST", "/v1/jobs/batch", {"jobs": jobs}, field=field)


def schedule(field: str | None, status: int = 422, **fields: Any) -> Bad:
    return Bad("POST", "/v1/schedules", schedule_body(name="another", **fields), status=status, field=field)


def get(path: str, field: str | None, status: int = 422) -> Bad:
    return Bad("GET", path, status=status, field=field)


def deep(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = [value]
    return value


CASES: Final = {
    # POST /v1/jobs
    "unknown field": job(field="colour", colour="red"),
    "task not a string": job(field="task", task=5),
    "task missing": Bad("POST", "/v1/jobs", {"payload": {}}, field="task"),
    "unknown task": job(field="task", task="mine_bitcoin"),
    "priority as a string": job(field="priority", priority="5"),
    "priority 10": job(field="priority", priority=10),
    "priority -1": job(field="priority", priority=-1),
    "priority a fraction": job(field="priority", priority=1.5),
    "priority beyond any integer column": job(field="priority", priority=2**70),
    "max_attempts 0": job(field="max_attempts", max_attempts=0),
    "max_attempts a boolean": job(field="max_attempts", max_attempts=True),
    "timeout 0": job(field="timeout_seconds", timeout_seconds=0),
    "timeout of a year": job(field="timeout_seconds", timeout_seconds=366 * 86400),
    "payload not an object": job(field="payload", payload=[1, 2, 3]),
    "payload over 256 KiB": job(field="payload", payload={"blob": "x" * (257 * 1024)}),
    "payload nested too deep": job(field=None, payload={"a": deep(100)}),
    "NUL in the payload": job(field="payload.note", payload={"note": "a\u0000b"}),
    "run_at naive": job(field="run_at", run_at="2026-03-02T12:00:00"),
    "run_at not a time": job(field="run_at", run_at="tomorrow"),
    "run_at in year 9999": job(field="run_at", run_at="9999-12-31T23:59:59-14:00"),
    "run_at and delay_seconds both": job(field="delay_seconds", run_at="2026-03-02T12:00:00Z", delay_seconds=5),
    "delay negative": job(field="delay_seconds", delay_seconds=-1),
    "delay of a century": job(field="delay_seconds", delay_seconds=100 * 366 * 86400),
    "queue with spaces": job(field="queue", queue="high priority"),
    "empty idempotency key": job(field="idempotency_key", idempotency_key=""),
    "concurrency_limit 0": job(field="concurrency_limit", concurrency_limit=0),
    "backoff unknown field": job(field="backoff.jiter", backoff={"jiter": False}),
    "backoff factor below 1": job(field="backoff.factor", backoff={"factor": 0.5}),
    "backoff negative base": job(field="backoff.base_seconds", backoff={"base_seconds": -1}),
    "empty body": Bad("POST", "/v1/jobs", raw=b"", status=400, detail="body"),
    "invalid JSON": Bad("POST", "/v1/jobs", raw=b'{"task": "noop",', status=400, detail="json"),
    "not UTF-8": Bad("POST", "/v1/jobs", raw=b'{"task": "\xff"}', status=400, detail="json"),
    "JSON array instead of object": Bad("POST", "/v1/jobs", [{"task": "noop"}], field="body"),
    "JSON null": Bad("POST", "/v1/jobs", None, field="body"),
    "wrong content type": Bad("POST", "/v1/jobs", raw=b'{"task": "noop"}', content_type="text/plain", status=415,
                              detail="application/json"),
    "form content type": Bad("POST", "/v1/jobs", raw=b"task=noop", content_type="application/x-www-form-urlencoded",
                             status=415, detail="application/json"),
    "body too large": Bad("POST", "/v1/jobs", raw=b'{"task": "noop", "payload": {"x": "' + b"x" * MAX_BODY + b'"}}',
                          status=413),
    # POST /v1/jobs/batch
    "batch empty": batch([], "jobs"),
    "batch of 10,001": batch([{"task": "noop"}] * 10_001, "jobs"),
    "batch with one bad job": batch([job_body(), job_body(), job_body(priority=10)], "jobs[2].priority"),
    "batch with an unknown field in one job": batch([job_body(), job_body(when="now")], "jobs[1].when"),
    "batch with an unknown task": batch([job_body(), job_body(task="nope")], "jobs[1].task"),
    "batch of the wrong type": batch({"task": "noop"}, "jobs"),
    "batch without jobs": Bad("POST", "/v1/jobs/batch", {}, field="jobs"),
    # POST /v1/schedules
    "bad cron": schedule("cron", cron="61 * * * *"),
    "cron of 7 fields": schedule("cron", cron="0 0 3 * * * 2026"),
    "cron of words": schedule("cron", cron="every day at noon"),
    "cron that never fires": schedule("cron", cron="0 0 30 2 *"),
    "both cron and interval": schedule("cron", cron="0 3 * * *", interval_seconds=60),
    "neither cron nor interval": schedule("cron", cron=None),
    "interval 0": schedule("interval_seconds", cron=None, interval_seconds=0),
    "unknown timezone": schedule("timezone", timezone="Mars/Olympus_Mons"),
    "misfire policy bogus": schedule("misfire_policy", misfire_policy="whenever"),
    "overlap policy bogus": schedule("overlap_policy", overlap_policy="maybe"),
    "max_catchup 0": schedule("max_catchup", max_catchup=0),
    "jitter negative": schedule("jitter_seconds", jitter_seconds=-5),
    "end_at before start_at": schedule("end_at", start_at="2026-05-01T00:00:00Z", end_at="2026-04-01T00:00:00Z"),
    "start_at naive": schedule("start_at", start_at="2026-05-01T00:00:00"),
    "max_runs 0": schedule("max_runs", max_runs=0),
    "template with run_at": schedule("job.run_at", job={"task": "noop", "run_at": "2026-05-01T00:00:00Z"}),
    "template with an unknown task": schedule("job.task", job={"task": "nope"}),
    "template with priority 10": schedule("job.priority", job={"task": "noop", "priority": 10}),
    "schedule without a job": Bad("POST", "/v1/schedules", {"name": "x", "cron": "* * * * *"}, field="job"),
    "schedule name empty": Bad("POST", "/v1/schedules", schedule_body(name=""), field="name"),
    "duplicate schedule name": Bad("POST", "/v1/schedules", schedule_body(), status=409, detail="nightly"),
    # query parameters
    "limit 0": get("/v1/jobs?limit=0", "limit"),
    "limit 1001": get("/v1/jobs?limit=1001", "limit"),
    "limit abc": get("/v1/jobs?limit=abc", "limit"),
    "bad cursor": get("/v1/jobs?cursor=not-a-cursor", "cursor"),
    "forged cursor": get("/v1/jobs?cursor=ZzE", "cursor"),
    "bad state filter": get("/v1/jobs?state=sleeping", "state"),
    "schedule_id filter not a UUID": get("/v1/jobs?schedule_id=nightly", "schedule_id"),
    "schedules limit 0": get("/v1/schedules?limit=0", "limit"),
    "occurrences bad cursor": get(f"{NIGHTLY}/occurrences?cursor=%%%", "cursor"),
    "preview count 0": get(f"{NIGHTLY}/preview?count=0", "count"),
    "preview count 5000": get(f"{NIGHTLY}/preview?count=5000", "count"),
    # schedule operations
    "backfill end in the future": Bad("POST", f"{NIGHTLY}/backfill",
                                      {"start": "2026-03-01T00:00:00Z", "end": "2026-03-09T00:00:00Z"}, field="end"),
    "backfill start after end": Bad("POST", f"{NIGHTLY}/backfill",
                                    {"start": "2026-03-02T00:00:00Z", "end": "2026-03-01T00:00:00Z"}, field="end"),
    "backfill naive": Bad("POST", f"{NIGHTLY}/backfill",
                          {"start": "2026-03-01T00:00:00", "end": "2026-03-02T00:00:00Z"}, field="start"),
    "backfill without end": Bad("POST", f"{NIGHTLY}/backfill", {"start": "2026-03-01T00:00:00Z"}, field="end"),
    "PATCH with an unknown field": Bad("PATCH", NIGHTLY, {"colour": "red"}, field="colour"),
    "PATCH with an unknown job field": Bad("PATCH", NIGHTLY, {"job": {"colour": "red"}}, field="job.colour"),
    "PATCH priority 10": Bad("PATCH", NIGHTLY, {"job": {"priority": 10}}, field="job.priority"),
    "PATCH name null": Bad("PATCH", NIGHTLY, {"name": None}, field="name"),
    "PATCH bad cron": Bad("PATCH", NIGHTLY, {"cron": "* *"}, field="cron"),
    "PATCH both cron and interval": Bad("PATCH", NIGHTLY, {"interval_seconds": 60}, field="cron"),
    "PATCH unknown schedule": Bad("PATCH", "/v1/schedules/nope", {"max_runs": 3}, status=404),
    "pause with until in the past": Bad("POST", f"{NIGHTLY}/pause", {"until": "2026-03-01T00:00:00Z"}, field="until"),
    "pause with an unknown field": Bad("POST", f"{NIGHTLY}/pause", {"reason": "x"}, field="reason"),
    "pause with a note too long": Bad("POST", f"{NIGHTLY}/pause", {"note": "x" * 5000}, field="note"),
    "resume a running schedule": Bad("POST", f"{NIGHTLY}/resume", status=409, detail="not paused"),
    "trigger an unknown schedule": Bad("POST", "/v1/schedules/nope/trigger", status=404),
    "delete an unknown schedule": Bad("DELETE", "/v1/schedules/nope", status=404),
    # job operations
    "cancel of a finished job": Bad("POST", "/v1/jobs/{done}/cancel", status=409),
    "retry of a queued job": Bad("POST", "/v1/jobs/{queued}/retry", status=409),
    "cancel of an unknown job": Bad("POST", "/v1/jobs/0190e1a2-0000-7000-8000-000000000000/cancel", status=404),
    "malformed job id": Bad("GET", "/v1/jobs/12%20OR%201=1", status=404),
    "malformed job id on retry": Bad("POST", "/v1/jobs/xyz/retry", status=404),
    # routing
    "unknown route": Bad("GET", "/v1/jobz", status=404),
    "unknown method": Bad("PUT", "/v1/schedules/nightly", {"cron": "* * * * *"}, status=405),
}


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    async with running_api(max_body_bytes=MAX_BODY) as running:
        created = await running.client.post("/v1/schedules", json=schedule_body())
        done = await running.client.post("/v1/jobs", json=job_body())
        queued = await running.client.post("/v1/jobs", json=job_body())
        cancelled = await running.client.post(f"/v1/jobs/{done.json()['id']}/cancel")
        assert {created.status_code, done.status_code, queued.status_code, cancelled.status_code} <= {200, 201}
        running.ids.update(done=done.json()["id"], queued=queued.json()["id"])
        yield running


def test_there_are_at_least_40_kinds() -> None:
    assert len(CASES) >= 40


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
async def test_bad_input_is_a_4xx_problem_that_stores_nothing(api: Api, case: Bad) -> None:
    before = api.snapshot()

    response = await send(api, case)

    assert response.status_code == case.status, response.text
    assert response.headers["content-type"] == PROBLEM
    problem = response.json()
    assert problem["status"] == case.status
    assert problem["title"] and problem["type"] and problem["detail"]
    if case.field is not None:
        named = {e["field"]: e["message"] for e in problem["errors"]}
        assert case.field in named, problem
        assert named[case.field]
        assert case.field in problem["detail"]
    if case.detail is not None:
        assert case.detail.lower() in problem["detail"].lower()
    assert api.snapshot() == before


async def send(api: Api, case: Bad) -> Any:
    path = case.path.format(**api.ids)
    headers = {"content-type": case.content_type}
    if case.raw is not None:
        return await api.client.request(case.method, path, content=case.raw, headers=headers)
    if case.body is UNSET:
        return await api.client.request(case.method, path)
    return await api.client.request(case.method, path, content=json.dumps(case.body).encode(), headers=headers)


# -- whatever arrives, never a 5xx --------------------------------------------------------------------------

TIMES: Final = ["2026-03-02T12:00:00Z", "2026-03-02T12:00:00", "2026-03-09T00:00:00+01:00", "1969-12-31T23:59:59Z",
                "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "2026-02-30T00:00:00Z", ""]
PLAUSIBLE: Final[dict[str, list[Any]]] = {
    "task": ["noop", "sleep", "nope", ""], "queue": ["default", "a b", "x" * 65], "priority": [0, 9, 10, -1],
    "cron": ["* * * * *", "0 3 * * *", "*/0 * * * *", "0 0 * * * * *", "60 * * * *", "@daily", "0 0 29 2 *"],
    "interval_seconds": [1, 0, 86400, 31622401], "timezone": ["UTC", "Europe/Paris", "Nowhere/Land", "utc"],
    "misfire_policy": ["skip", "run_all", "nope"], "overlap_policy": ["buffer_one", "cancel_other", "x"],
    "max_catchup": [1, 0, 10_001], "jitter_seconds": [0, 86400, 86401], "max_runs": [1, 0, None],
    "name": ["nightly", "other", "", "a/b", "fuzz", "fuzzed"], "delay_seconds": [0, 1e9, -1],
    "timeout_seconds": [0.001, 0, 1e12],
}
QUERY: Final = ["limit", "cursor", "state", "queue", "task", "schedule_id", "count"]
scalars = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
           | st.text(max_size=8) | st.sampled_from(TIMES))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=6)


def value_for(name: str) -> st.SearchStrategy[Any]:
    return st.sampled_from(PLAUSIBLE.get(name, [None])) | json_values


def objects(base: dict[str, Any], names: list[str], nested: dict[str, st.SearchStrategy[Any]] | None = None,
            ) -> st.SearchStrategy[Any]:
    """Mostly a valid `base` with a field or two changed or dropped, sometimes any JSON at all."""
    values = {n: value_for(n) for n in names} | (nested or {})
    changes = st.lists(st.sampled_from(names).flatmap(lambda n: st.tuples(st.just(n), values[n])), max_size=2)
    dropped = st.sets(st.sampled_from(sorted(base)), max_size=1) if base else st.just(set())
    mutated = st.builds(lambda c, d: {k: v for k, v in (base | dict(c)).items() if k not in d}, changes, dropped)
    return st.one_of(mutated, mutated, mutated, json_values)


job_objects = objects(job_body(), [*JobBody.__struct_fields__, "junk"])
template_objects = objects({"task": "noop"}, [*JobTemplateBody.__struct_fields__, "run_at"])
schedule_objects = st.uuids().flatmap(lambda u: objects(schedule_body(name=f"fuzz-{u}"),
                                                         [*ScheduleBody.__struct_fields__, "paused"],
                                                         {"job": template_objects}))
pause_objects = objects({"note": "n"}, ["note", "until"])
window_objects = objects({"start": "2026-03-01T00:00:00Z", "end": "2026-03-02T00:00:00Z"}, ["start", "end"])


def test_no_input_causes_a_5xx() -> None:
    """Random bodies and query strings, plausible and not, on every route that reads input."""
    app, *_ = build_app()
    with TestClient(app) as client:
        client.headers.update(AUTH)
        key = client.post("/v1/schedules", json=schedule_body(name="fuzzed")).json()["id"]

        @settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(job=job_objects, schedule=schedule_objects, pause=pause_objects, window=window_objects,
               query=st.dictionaries(st.sampled_from(QUERY), st.text(max_size=12)))
        def check(job: Any, schedule: Any, pause: Any, window: Any, query: dict[str, str]) -> None:
            for method, path, body in (
                    ("POST", "/v1/jobs", job), ("POST", "/v1/jobs/batch", {"jobs": [job]}),
                    ("POST", "/v1/schedules", schedule), ("PATCH", f"/v1/schedules/{key}", schedule),
                    ("POST", f"/v1/schedules/{key}/pause", pause), ("POST", f"/v1/schedules/{key}/backfill", window)):
                response = client.request(method, path, json=body)
                assert response.status_code < 500, (method, path, body, response.text)
                if response.status_code >= 400:
                    assert response.headers["content-type"] == PROBLEM
            for path in ("/v1/jobs", f"/v1/schedules/{key}/preview", f"/v1/schedules/{key}/occurrences"):
                response = client.get(path, params=query)
                assert response.status_code < 500, (path, query, response.text)

        check()
