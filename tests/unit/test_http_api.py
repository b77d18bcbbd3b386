"""The HTTP API (SPEC §4) on the memory adapters: jobs, queues, health, docs, auth and errors.

Schedules are in test_http_schedules.py, bad input in test_http_bad_input.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, NoReturn
from zoneinfo import ZoneInfo

import pytest
from dependency_injector import providers

from adapters.http.app import create_app
from domain.errors import Unavailable
from entrypoints.container import MemoryAdapters
from tests.unit.http_support import (
    PROBLEM,
    RFC3339_Z,
    T0,
    TOKEN,
    Api,
    KnownTasks,
    create_schedule,
    job_body,
    running_api,
    submit,
)


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    async with running_api() as running:
        yield running


# -- jobs ---------------------------------------------------------------------------------------------------


async def test_submit_returns_201_and_the_job_with_every_field(api: Api) -> None:
    job = await submit(api, priority=7, queue="high", max_attempts=5, timeout_seconds=30,
                       backoff={"base_seconds": 2, "factor": 3, "max_seconds": 60, "jitter": False})

    assert job["state"] == "queued"  # due now: straight to its queue
    assert (job["task"], job["payload"], job["queue"], job["priority"]) == ("noop", {"n": 1}, "high", 7)
    assert (job["attempt"], job["max_attempts"], job["timeout_seconds"]) == (0, 5, 30)
    assert job["backoff"] == {"base_seconds": 2, "factor": 3, "max_seconds": 60, "jitter": False}
    assert job["run_at"] == job["created_at"] == job["updated_at"] == "2026-03-02T12:00:00Z"
    for name in ("idempotency_key", "schedule_id", "scheduled_for", "result", "last_error", "lease",
                 "started_at", "finished_at", "concurrency_key"):
        assert job[name] is None
    assert api.jobs.rows[job["id"]].priority == 7


async def test_run_at_in_any_offset_comes_back_in_utc_with_z(api: Api) -> None:
    job = await submit(api, run_at="2026-03-02T15:30:00+02:00")

    assert job["run_at"] == "2026-03-02T13:30:00Z"
    assert job["state"] == "scheduled"


async def test_timestamps_are_utc_with_z_even_when_the_clock_is_not(api: Api) -> None:
    api.clock.at = T0.astimezone(ZoneInfo("America/New_York"))
    job = await submit(api, delay_seconds=90)

    assert job["created_at"] == "2026-03-02T12:00:00Z"
    assert job["run_at"] == "2026-03-02T12:01:30Z"
    assert all(RFC3339_Z.match(job[k]) for k in ("run_at", "created_at", "updated_at"))


async def test_a_repeated_idempotency_key_answers_200_with_the_first_job(api: Api) -> None:
    first = await api.client.post("/v1/jobs", json=job_body(idempotency_key="order-42"))
    again = await api.client.post("/v1/jobs", json=job_body(idempotency_key="order-42", payload={"n": 2}))

    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["payload"] == {"n": 1}
    assert len(api.jobs.rows) == 1


async def test_batch_stores_all_and_answers_their_ids(api: Api) -> None:
    response = await api.client.post("/v1/jobs/batch", json={"jobs": [job_body(payload={"i": i}) for i in range(3)]})

    assert response.status_code == 201
    ids = response.json()["ids"]
    assert len(ids) == 3 and set(ids) == set(api.jobs.rows)
    listed = (await api.client.get("/v1/jobs")).json()["items"]
    assert {j["id"] for j in listed} == set(ids)


async def test_batch_with_one_bad_job_stores_nothing(api: Api) -> None:
    jobs = [job_body(), job_body(), job_body(priority=12), job_body()]

    response = await api.client.post("/v1/jobs/batch", json={"jobs": jobs})

    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM
    assert {"field": "jobs[2].priority", "message": "must be between 0 and 9"} in response.json()["errors"]
    assert (await api.client.get("/v1/jobs")).json() == {"items": [], "next_cursor": None}


async def test_every_bad_job_of_a_batch_is_listed_and_the_detail_stays_short(api: Api) -> None:
    jobs = [job_body(priority=10 + i) for i in range(20)]

    problem = (await api.client.post("/v1/jobs/batch", json={"jobs": jobs})).json()

    assert [e["field"] for e in problem["errors"]] == [f"jobs[{i}].priority" for i in range(20)]
    assert problem["detail"].endswith("and 15 more")


async def test_get_job_and_unknown_or_malformed_ids(api: Api) -> None:
    job = await submit(api)

    assert (await api.client.get(f"/v1/jobs/{job['id']}")).json() == job
    assert (await api.client.get(f"/v1/jobs/{job['id'].upper()}")).json()["id"] == job["id"]
    for missing in ("0190e1a2-0000-7000-8000-000000000000", "not-a-uuid", "'; drop table jobs; --"):
        response = await api.client.get(f"/v1/jobs/{missing}")
        assert response.status_code == 404
        assert response.headers["content-type"] == PROBLEM


async def test_list_filters_by_state_queue_task_and_schedule(api: Api) -> None:
    queued = await submit(api)
    later = await submit(api, task="sleep", queue="slow", delay_seconds=60)
    schedule = await create_schedule(api)
    fired = (await api.client.post(f"/v1/schedules/{schedule['id']}/trigger")).json()

    async def ids(query: str) -> set[str]:
        response = await api.client.get(f"/v1/jobs?{query}")
        assert response.status_code == 200, response.text
        return {j["id"] for j in response.json()["items"]}

    assert await ids("state=scheduled") == {later["id"]}
    assert await ids("state=queued") == {queued["id"], fired["id"]}
    assert await ids("queue=slow") == {later["id"]}
    assert await ids("task=sleep&state=scheduled") == {later["id"]}
    assert await ids(f"schedule_id={schedule['id']}") == {fired["id"]}
    assert await ids("") == {queued["id"], later["id"], fired["id"]}


async def test_keyset_paging_walks_250_jobs_newest_first_without_gaps(api: Api) -> None:
    for minute in range(5):  # five creation instants, so ordering crosses timestamps too
        api.clock.advance(60)
        body = {"jobs": [job_body(payload={"m": minute, "i": i}) for i in range(50)]}
        assert (await api.client.post("/v1/jobs/batch", json=body)).status_code == 201

    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        query = {"limit": 100} | ({"cursor": cursor} if cursor else {})
        page = (await api.client.get("/v1/jobs", params=query)).json()
        seen += [j["id"] for j in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break

    assert pages == 3
    assert len(seen) == len(set(seen)) == 250
    assert seen == sorted(api.jobs.rows, reverse=True)


async def test_runs_cancel_and_retry(api: Api) -> None:
    job = await submit(api)
    await api.jobs.claim([job["id"]], worker_id="w1", now=T0, lease_seconds=30)

    cancelled = await api.client.post(f"/v1/jobs/{job['id']}/cancel")
    again = await api.client.post(f"/v1/jobs/{job['id']}/cancel")
    runs = await api.client.get(f"/v1/jobs/{job['id']}/runs")
    retried = await api.client.post(f"/v1/jobs/{job['id']}/retry")
    retried_again = await api.client.post(f"/v1/jobs/{job['id']}/retry")

    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
    assert cancelled.json()["finished_at"] == "2026-03-02T12:00:00Z"
    assert again.status_code == 409 and again.headers["content-type"] == PROBLEM
    assert runs.status_code == 200
    assert runs.json() == [{"job_id": job["id"], "attempt": 1, "worker_id": "w1",
                            "started_at": "2026-03-02T12:00:00Z", "finished_at": "2026-03-02T12:00:00Z",
                            "duration_seconds": 0.0, "outcome": "cancelled", "error": "cancelled"}]
    assert retried.status_code == 200 and retried.json()["state"] == "queued"
    assert retried_again.status_code == 409


async def test_runs_of_an_unknown_job_is_404(api: Api) -> None:
    response = await api.client.get("/v1/jobs/0190e1a2-0000-7000-8000-000000000000/runs")
    assert response.status_code == 404


# -- queues, health, docs -----------------------------------------------------------------------------------


async def test_queues_count_by_state_and_age_the_oldest(api: Api) -> None:
    await submit(api)
    await submit(api, delay_seconds=60)
    await submit(api, queue="high")
    api.clock.advance(30)

    items = {q["queue"]: q for q in (await api.client.get("/v1/queues")).json()["items"]}

    assert set(items) == {"default", "high"}
    assert (items["default"]["counts"]["queued"], items["default"]["counts"]["scheduled"]) == (1, 1)
    assert items["default"]["oldest_queued_at"] == "2026-03-02T12:00:00Z"
    assert items["default"]["oldest_queued_age_seconds"] == 30
    assert items["high"]["finished_last_minute"] == 0


async def test_health_and_readiness() -> None:
    async def checks() -> dict[str, bool]:
        return state

    state = {"postgres": True, "redis": True}
    async with running_api(readiness=checks) as api:
        api.client.headers.pop("Authorization")
        assert (await api.client.get("/healthz")).json() == {"status": "ok", "checks": {}}
        ready = await api.client.get("/readyz")
        state["redis"] = False
        unready = await api.client.get("/readyz")

    assert ready.status_code == 200 and ready.json()["checks"] == {"postgres": True, "redis": True}
    assert unready.status_code == 503
    assert unready.json() == {"status": "unavailable", "checks": {"postgres": True, "redis": False}}


async def test_a_readiness_check_that_raises_means_not_ready() -> None:
    async def broken() -> NoReturn:
        raise ConnectionError("no route to host")

    async with running_api(readiness=broken) as api:
        response = await api.client.get("/readyz")

    assert response.status_code == 503


async def test_openapi_document_is_3_1_and_lists_every_route(api: Api) -> None:
    api.client.headers.pop("Authorization")
    response = await api.client.get("/schema/openapi.json")

    assert response.status_code == 200
    doc = response.json()
    assert doc["openapi"].startswith("3.1")
    assert {"/v1/jobs", "/v1/jobs/batch", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/runs", "/v1/jobs/{job_id}/cancel",
            "/v1/jobs/{job_id}/retry", "/v1/schedules", "/v1/schedules/{key}", "/v1/schedules/{key}/pause",
            "/v1/schedules/{key}/resume", "/v1/schedules/{key}/trigger", "/v1/schedules/{key}/preview",
            "/v1/schedules/{key}/occurrences", "/v1/schedules/{key}/backfill", "/v1/queues", "/healthz",
            "/readyz"} <= set(doc["paths"])
    assert "JobBody" in doc["components"]["schemas"]


# -- auth and errors ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("header", [None, f"Basic {TOKEN}", "Bearer", "Bearer wrong-token", f"Bearer {TOKEN}x",
                                    f"Token {TOKEN}"])
async def test_v1_needs_a_valid_bearer_token(api: Api, header: str | None) -> None:
    api.client.headers.pop("Authorization")
    headers = {} if header is None else {"Authorization": header}

    for method, path in (("GET", "/v1/jobs"), ("POST", "/v1/jobs"), ("GET", "/v1/queues"),
                         ("DELETE", "/v1/schedules/nightly")):
        response = await api.client.request(method, path, headers=headers, json=job_body())
        assert response.status_code == 401, (method, path)
        assert response.headers["content-type"] == PROBLEM
        assert response.headers["www-authenticate"].startswith("Bearer")
    assert api.jobs.rows == {}


async def test_every_configured_token_is_accepted(api: Api) -> None:
    response = await api.client.get("/v1/jobs", headers={"Authorization": "bearer another-token"})
    assert response.status_code == 200


async def test_unknown_routes_and_methods_are_problems(api: Api) -> None:
    missing = await api.client.get("/v1/nothing-here")
    wrong_method = await api.client.put("/v1/jobs", json={})

    assert (missing.status_code, wrong_method.status_code) == (404, 405)
    assert missing.headers["content-type"] == wrong_method.headers["content-type"] == PROBLEM
    assert missing.json()["status"] == 404 and missing.json()["title"] == "Not Found"


class _Failing:
    """A job store whose every call raises `error`."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def __getattr__(self, name: str) -> Any:
        async def fail(*args: Any, **kwargs: Any) -> NoReturn:
            raise self.error
        return fail


@pytest.mark.parametrize(("error", "status"), [(Unavailable("postgres is down"), 503),
                                               (RuntimeError("a bug"), 500)])
async def test_storage_down_is_503_and_a_bug_is_a_logged_500(error: Exception, status: int,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    adapters = MemoryAdapters(tasks=providers.Object(KnownTasks()), jobs=providers.Object(_Failing(error)))

    async with running_api(adapters=adapters) as api:
        response = await api.client.get("/v1/jobs")

    assert response.status_code == status
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["status"] == status
    assert str(error) not in response.text  # internals (hosts, tracebacks) stay in the log
    assert any(r.name == "gnomon.http" for r in caplog.records)


def test_an_app_without_tokens_is_refused() -> None:
    with pytest.raises(ValueError, match="token"):
        create_app(object(), tokens=[])
