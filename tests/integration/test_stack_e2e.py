"""End to end through the HTTP API only, against the real multi-process stack: one `gnomon stack` (migrate,
1 API, 2 schedulers, 2 workers, each its own process) on a database and a Redis prefix of this module.

Every route of SPEC §4 is used the way a user would use it; nothing here reads the database or Redis.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import httpx
import pytest

from tests.integration.cluster import free_port
from tests.integration.http_stack import (
    TERMINAL,
    TOKEN,
    Api,
    delete_prefix,
    eventually,
    own_database,
    redis_base_url,
    running_stack,
)
from tests.integration.processes import gnomon, gnomon_env

QUICK = {"base_seconds": 0.1, "factor": 1, "max_seconds": 0.1, "jitter": False}


@pytest.fixture(scope="module")
def stack_db() -> Iterator[str]:
    with own_database() as url:
        yield url


@pytest.fixture(scope="module")
def api(stack_db: str) -> Iterator[Api]:
    with running_stack(stack_db, redis_base_url(), "--schedulers", "2", "--workers", "2") as (_, client):
        yield client


def unique(word: str) -> str:
    return f"{word}-{secrets.token_hex(4)}"


def parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_an_immediate_and_a_delayed_job_run_and_never_early(api: Api) -> None:
    now = api.submit(task="noop", payload={"hello": "now"})
    later = api.submit(task="noop", delay_seconds=2)
    assert now["state"] in ("queued", "running", "succeeded")
    assert later["state"] == "scheduled"
    assert api.until(now["id"], "succeeded")["attempt"] == 1
    done = api.until(later["id"], *TERMINAL)
    assert done["state"] == "succeeded"
    assert parse(done["started_at"]) >= parse(later["run_at"])
    [run] = api.runs(later["id"])
    assert run["outcome"] == "succeeded" and run["attempt"] == 1


def test_a_failing_job_is_retried_then_failed_with_its_history(api: Api) -> None:
    job = api.submit(task="fail", payload={"message": "boom"}, max_attempts=3, backoff=QUICK)
    done = api.until(job["id"], "failed")
    assert done["attempt"] == 3 and "boom" in done["last_error"]
    runs = api.runs(job["id"])
    assert [r["attempt"] for r in runs] == [1, 2, 3]
    assert {r["outcome"] for r in runs} == {"failed"}


def test_cancel_a_scheduled_and_a_running_job(api: Api) -> None:
    waiting = api.submit(task="noop", delay_seconds=3600)
    assert api.post(f"/v1/jobs/{waiting['id']}/cancel")["state"] == "cancelled"
    assert api.runs(waiting["id"]) == []
    api.post(f"/v1/jobs/{waiting['id']}/cancel", status=409)

    busy = api.submit(task="sleep", payload={"seconds": 60})
    api.until(busy["id"], "running")
    assert api.post(f"/v1/jobs/{busy['id']}/cancel")["state"] == "cancelled"
    [run] = api.runs(busy["id"])
    assert run["outcome"] == "cancelled"
    retried = api.post(f"/v1/jobs/{waiting['id']}/retry")
    assert retried["state"] == "queued"
    assert api.until(waiting["id"], "succeeded")["id"] == waiting["id"]


def test_the_same_idempotency_key_gives_the_same_job(api: Api) -> None:
    key = unique("order")
    first = api.submit(task="noop", idempotency_key=key, delay_seconds=3600)
    again = api.submit(status=200, task="noop", idempotency_key=key, delay_seconds=3600)
    assert again["id"] == first["id"]
    assert [j["id"] for j in api.all_jobs(task="noop") if j.get("idempotency_key") == key] == [first["id"]]


def test_batch_submit_is_all_or_nothing(api: Api) -> None:
    queue = unique("batch")
    good = [{"task": "noop", "queue": queue, "delay_seconds": 3600, "payload": {"n": n}} for n in range(3)]
    ids = api.post("/v1/jobs/batch", {"jobs": good}, status=201)["ids"]
    assert len(set(ids)) == 3
    bad_queue = unique("batch")
    bad = [{"task": "noop", "queue": bad_queue}, {"task": "noop", "queue": bad_queue, "priority": 42}]
    problem = api.check(api.http.post("/v1/jobs/batch", json={"jobs": bad}), 422)
    assert "priority" in json.dumps(problem)
    unknown = [{"task": "noop", "queue": bad_queue}, {"task": "no-such-task", "queue": bad_queue}]
    api.check(api.http.post("/v1/jobs/batch", json={"jobs": unknown}), 422)
    assert api.all_jobs(queue=bad_queue) == []
    assert sorted(j["id"] for j in api.all_jobs(queue=queue)) == sorted(ids)


def test_pages_through_250_jobs_newest_first(api: Api) -> None:
    queue = unique("paging")
    jobs = [{"task": "noop", "queue": queue, "delay_seconds": 3600} for _ in range(250)]
    ids = api.post("/v1/jobs/batch", {"jobs": jobs}, status=201)["ids"]
    seen, sizes, cursor = [], [], None
    while True:
        page = api.get("/v1/jobs", queue=queue, limit=100, **({"cursor": cursor} if cursor else {}))
        seen += [j["id"] for j in page["items"]]
        sizes.append(len(page["items"]))
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sizes[:3] == [100, 100, 50] and sum(sizes) == 250
    assert seen == sorted(ids, reverse=True)
    for bad in ({"queue": queue, "cursor": "not-a-cursor"}, {"limit": 1001}, {"limit": 0}):
        assert api.http.get("/v1/jobs", params=bad).status_code in (400, 422), bad


def test_every_route_wants_the_token(api: Api) -> None:
    routes = [("GET", "/v1/jobs"), ("POST", "/v1/jobs"), ("POST", "/v1/jobs/batch"), ("GET", "/v1/queues"),
              ("GET", "/v1/schedules"), ("POST", "/v1/schedules"), ("GET", "/v1/jobs/0/runs"),
              ("POST", "/v1/schedules/x/trigger")]
    wrong = httpx.Client(base_url=str(api.http.base_url), headers={"Authorization": "Bearer wrong"})
    try:
        for method, path in routes:
            assert api.anonymous.request(method, path, json={}).status_code == 401, path
            assert wrong.request(method, path, json={}).status_code == 401, path
    finally:
        wrong.close()
    assert api.anonymous.get("/healthz").status_code == 200
    assert api.anonymous.get("/readyz").json()["checks"] == {"postgresql": True, "redis": True}


def test_an_interval_schedule_fires_one_job_per_occurrence(api: Api) -> None:
    name = unique("every-second")
    made = api.post("/v1/schedules", {"name": name, "interval_seconds": 1, "job": {"task": "noop"}}, status=201)
    eventually(lambda: api.all_jobs(schedule_id=made["id"], state="succeeded"), lambda jobs: len(jobs) >= 3,
               "three firings of the 1 s schedule", timeout=30)
    api.post(f"/v1/schedules/{name}/pause", {"note": "enough"})
    jobs = api.all_jobs(schedule_id=made["id"])
    fired = [o for o in api.get(f"/v1/schedules/{name}/occurrences", limit=1000)["items"] if o["fate"] == "fired"]
    times = sorted(parse(j["scheduled_for"]) for j in jobs)
    assert len(times) == len(set(times)) == len(fired)
    assert {o["job_id"]: parse(o["scheduled_for"]) for o in fired} == \
        {j["id"]: parse(j["scheduled_for"]) for j in jobs}
    assert all((t - times[0]) % timedelta(seconds=1) == timedelta(0) for t in times)


def test_a_cron_schedule_with_seconds_fires_on_the_wall_clock_of_its_zone(api: Api) -> None:
    zone = ZoneInfo("Asia/Kathmandu")  # UTC+05:45: a zone mistake cannot land on the same hours
    hour = datetime.now(zone).hour
    hours = f"{hour},{(hour + 1) % 24}"
    name = unique("cron-seconds")
    body = {"name": name, "cron": f"*/2 * {hours} * * *", "timezone": "Asia/Kathmandu", "job": {"task": "noop"}}
    made = api.post("/v1/schedules", body, status=201)
    assert parse(made["next_fire_at_local"]).utcoffset() == timedelta(hours=5, minutes=45)
    jobs = eventually(lambda: api.all_jobs(schedule_id=made["id"], state="succeeded"), lambda js: len(js) >= 2,
                      "two firings of the cron schedule", timeout=30)
    api.post(f"/v1/schedules/{name}/pause")
    jobs = api.all_jobs(schedule_id=made["id"])
    local = [parse(j["scheduled_for"]).astimezone(zone) for j in jobs]
    assert len(set(local)) == len(local)
    assert all(t.second % 2 == 0 and t.microsecond == 0 and t.hour in (hour, (hour + 1) % 24) for t in local)


def test_schedule_operations(api: Api) -> None:
    name = unique("hourly")
    made = api.post("/v1/schedules", {"name": name, "cron": "0 * * * *", "job": {"task": "noop"}}, status=201)
    api.post("/v1/schedules", {"name": name, "cron": "0 * * * *", "job": {"task": "noop"}}, status=409)
    assert api.get(f"/v1/schedules/{name}")["id"] == made["id"]
    preview = api.get(f"/v1/schedules/{made['id']}/preview", count=5)
    starts = [parse(p["utc"]) for p in preview]
    assert len(starts) == 5 and all(b - a == timedelta(hours=1) for a, b in pairwise(starts))

    paused = api.post(f"/v1/schedules/{name}/pause", {"note": "maintenance"})
    assert paused["paused"] is True and paused["pause_note"] == "maintenance"
    triggered = api.post(f"/v1/schedules/{name}/trigger", status=201)
    assert triggered["schedule_id"] == made["id"]
    assert api.until(triggered["id"], "succeeded")["schedule_id"] == made["id"]
    assert api.post(f"/v1/schedules/{name}/resume")["paused"] is False

    top = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    window = {"start": (top - timedelta(hours=3)).isoformat(), "end": (top - timedelta(seconds=1)).isoformat()}
    first = api.post(f"/v1/schedules/{name}/backfill", window)["ids"]
    assert len(first) == 3
    assert api.post(f"/v1/schedules/{name}/backfill", window)["ids"] == []  # each occurrence at most once
    ledger = api.get(f"/v1/schedules/{name}/occurrences")["items"]
    assert {o["job_id"] for o in ledger if o["fate"] == "fired"} >= set(first)

    patched = api.check(api.http.patch(f"/v1/schedules/{name}", json={"cron": "30 * * * *"}), 200)
    assert parse(patched["next_fire_at"]).minute == 30
    api.check(api.http.delete(f"/v1/schedules/{name}"), 204)
    api.get(f"/v1/schedules/{name}", status=404)
    assert api.job(first[0])["id"] == first[0]  # its past jobs stay


def test_queues_overview(api: Api) -> None:
    queue = unique("overview")
    api.post("/v1/jobs/batch", {"jobs": [{"task": "noop", "queue": queue, "delay_seconds": 3600}] * 2}, status=201)
    api.until(api.submit(task="noop")["id"], "succeeded")
    items = {q["queue"]: q for q in api.get("/v1/queues")["items"]}
    assert items[queue]["counts"].get("scheduled") == 2
    assert items["default"]["counts"].get("succeeded", 0) >= 1


@pytest.mark.parametrize("command", [("api",), ("scheduler",), ("worker",), ("api", "--workers", "2")])
def test_each_service_logs_json_and_exits_0_on_sigterm(stack_db: str, command: tuple[str, ...]) -> None:
    prefix = unique("sigterm")
    env = gnomon_env(stack_db, redis_base_url(), prefix=prefix, api_tokens=TOKEN, port=free_port())
    try:  # a flag, not the environment: `api --workers 2` must hand it to its uvicorn processes
        with gnomon(*command, "--log-format", "json", env=env) as process:
            process.wait_for_log("ready", timeout=60)
            assert process.terminate(60) == 0, process.log[-3000:]
            lines = [line for line in process.log.splitlines() if line.strip()]
    finally:
        delete_prefix(redis_base_url(), prefix)
    records = [json.loads(line) for line in lines]
    assert all(isinstance(r, dict) and {"ts", "level", "service", "msg"} <= set(r) for r in records)
    assert any(r["msg"].startswith("ready") for r in records)
    assert any(r["msg"].startswith("stopping") or "Shutting down" in r["msg"] for r in records)
